"""Articulated people built from primitives: per-identity body shape, clothing and poses.

World frame: metres, y up, the floor at y = 0. A body stands at floor point (x, z) facing
``heading`` radians (0 = +z, positive turns towards +x). Limbs hang along the body's down axis and
rotate by joint angles in the sagittal plane (flexion, forward positive) plus shoulder abduction.
Proportions follow standard anthropometric fractions of the height.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from iphd.sim.raycast import PrimitiveBuilder

SKIN_K = (306.0, 308.0)  # surface temperature of exposed skin (face, hands)


@dataclass(frozen=True)
class BodyShape:
    """Per-identity body measurements.

    Attributes:
        height_m: standing height.
        girth: width/thickness scale of torso and limbs (1 = average build).
        leg_ratio: hip height as a fraction of the height.
        arm_ratio: arm length (shoulder to wrist) as a fraction of the height.
        shoulder_ratio: shoulder width as a fraction of the height.
    """

    height_m: float
    girth: float
    leg_ratio: float
    arm_ratio: float
    shoulder_ratio: float


@dataclass(frozen=True)
class Clothing:
    """Per-identity clothing: colours (RGB 0..1) and thermal insulation (0 = skin, 1 = ambient).

    Attributes:
        top_rgb: main colour of the upper garment.
        top_rgb2: second colour (pattern).
        top_pattern: 0 solid, 1 horizontal stripes, 2 checks.
        bottom_rgb: trousers / skirt colour.
        shoes_rgb: shoe colour.
        hair_rgb: hair colour.
        skin_rgb: skin colour.
        top_insulation: fraction of the skin-ambient difference the top hides.
        bottom_insulation: same for the lower garment.
        short_sleeves: forearms are bare skin.
        dark_top: the top is dark/absorbing in the infrared (more depth dropouts).
    """

    top_rgb: tuple[float, float, float]
    top_rgb2: tuple[float, float, float]
    top_pattern: int
    bottom_rgb: tuple[float, float, float]
    shoes_rgb: tuple[float, float, float]
    hair_rgb: tuple[float, float, float]
    skin_rgb: tuple[float, float, float]
    top_insulation: float
    bottom_insulation: float
    short_sleeves: bool
    dark_top: bool


@dataclass(frozen=True)
class Identity:
    """A simulated person: identity id, body shape, clothing and skin temperature."""

    pid: int
    shape: BodyShape
    clothing: Clothing
    skin_k: float


def _colour(rng: np.random.Generator) -> tuple[float, float, float]:
    hue = rng.uniform(0, 6)
    sat = rng.uniform(0.1, 0.9)
    val = rng.uniform(0.1, 0.95)
    c = val * sat
    x = c * (1 - abs(hue % 2 - 1))
    r, g, b = [(c, x, 0), (x, c, 0), (0, c, x), (0, x, c), (x, 0, c), (c, 0, x)][int(hue) % 6]
    m = val - c
    return (round(r + m, 4), round(g + m, 4), round(b + m, 4))


def make_identity(pid: int, seed: int) -> Identity:
    """Return identity ``pid`` of a population drawn from ``seed`` (same inputs, same person)."""
    rng = np.random.default_rng([seed, pid, 0x1D])
    shape = BodyShape(
        height_m=float(np.clip(rng.normal(1.72, 0.10), 1.48, 1.98)),
        girth=float(rng.uniform(0.85, 1.3)),
        leg_ratio=float(rng.uniform(0.45, 0.50)),
        arm_ratio=float(rng.uniform(0.42, 0.46)),
        shoulder_ratio=float(rng.uniform(0.21, 0.25)),
    )
    skin_tones = [(0.95, 0.8, 0.7), (0.85, 0.65, 0.5), (0.6, 0.42, 0.3), (0.4, 0.28, 0.2)]
    hair = [(0.1, 0.07, 0.05), (0.35, 0.22, 0.1), (0.75, 0.6, 0.35), (0.6, 0.6, 0.6)]
    top = _colour(rng)
    clothing = Clothing(
        top_rgb=top,
        top_rgb2=_colour(rng),
        top_pattern=int(rng.choice(3, p=[0.6, 0.25, 0.15])),
        bottom_rgb=_colour(rng),
        shoes_rgb=_colour(rng),
        hair_rgb=hair[int(rng.integers(len(hair)))],
        skin_rgb=skin_tones[int(rng.integers(len(skin_tones)))],
        top_insulation=float(rng.uniform(0.35, 0.75)),
        bottom_insulation=float(rng.uniform(0.45, 0.8)),
        short_sleeves=bool(rng.random() < 0.35),
        dark_top=bool(max(top) < 0.25),
    )
    return Identity(pid, shape, clothing, float(rng.uniform(*SKIN_K)))


@dataclass(frozen=True)
class Pose:
    """Joint angles in radians (flexion forward positive) and the pelvis height offset.

    Attributes:
        hip: (left, right) hip flexion.
        knee: (left, right) knee flexion (bends the shin backwards).
        shoulder: (left, right) shoulder flexion (raises the arm forwards; pi = straight up).
        abduction: (left, right) shoulder abduction (raises the arm sideways).
        elbow: (left, right) elbow flexion.
        torso_pitch: forward bend of the trunk.
        pelvis_m: pelvis height above the floor; None = standing height from the leg angles.
    """

    hip: tuple[float, float] = (0.0, 0.0)
    knee: tuple[float, float] = (0.0, 0.0)
    shoulder: tuple[float, float] = (0.0, 0.0)
    abduction: tuple[float, float] = (0.08, 0.08)
    elbow: tuple[float, float] = (0.15, 0.15)
    torso_pitch: float = 0.0
    pelvis_m: float | None = None


def walking_pose(phase: float, amplitude: float = 1.0) -> Pose:
    """Gait at ``phase`` radians of the stride cycle (2 pi = two steps)."""
    swing = 0.42 * amplitude * np.sin(phase)
    knee_l = 0.5 * amplitude * max(0.0, np.sin(phase + 1.2)) + 0.05
    knee_r = 0.5 * amplitude * max(0.0, np.sin(phase + np.pi + 1.2)) + 0.05
    arm = 0.35 * amplitude * np.sin(phase)
    return Pose(
        hip=(swing, -swing), knee=(knee_l, knee_r), shoulder=(-arm, arm),
        elbow=(0.3 + 0.2 * amplitude, 0.3 + 0.2 * amplitude), torso_pitch=0.04 * amplitude,
    )


def sitting_pose(seat_height_m: float) -> Pose:
    """Seated on a seat of ``seat_height_m``."""
    return Pose(
        hip=(1.45, 1.45), knee=(1.45, 1.45), shoulder=(0.5, 0.4), elbow=(1.1, 1.2),
        torso_pitch=-0.08, pelvis_m=seat_height_m + 0.08,
    )


def arms_raised_pose(amount: float = 1.0) -> Pose:
    """Standing with both arms raised (amount 1 = straight up)."""
    return Pose(shoulder=(2.9 * amount, 2.7 * amount), abduction=(0.25, 0.25), elbow=(0.2, 0.3))


def bending_pose(amount: float = 1.0) -> Pose:
    """Bending forward at the hips (amount 1 = trunk about 70 degrees forward)."""
    return Pose(
        hip=(0.25 * amount, 0.25 * amount), knee=(0.2 * amount, 0.2 * amount),
        shoulder=(1.1 * amount, 1.0 * amount), elbow=(0.2, 0.2), torso_pitch=1.2 * amount,
    )


def standing_pose(sway: float = 0.0) -> Pose:
    """Idle standing with a small weight shift ``sway`` in [-1, 1]."""
    return Pose(hip=(0.04 * sway, -0.04 * sway), shoulder=(0.05, -0.03), elbow=(0.2, 0.35))


@dataclass(frozen=True)
class Materials:
    """Material rows of one body in the scene's material table."""

    skin: int
    hair: int
    top: int
    sleeves: int
    bottom: int
    shoes: int


def _limb(down: np.ndarray, fwd: np.ndarray, right: np.ndarray, flex: float, abd: float,
          side: float) -> np.ndarray:
    """Unit direction of a limb hanging along ``down``, flexed forward and abducted sideways."""
    ca = np.cos(abd)
    return np.cos(flex) * ca * down + np.sin(flex) * ca * fwd + side * np.sin(abd) * right


def add_body(
    builder: PrimitiveBuilder, shape: BodyShape, pose: Pose, x: float, z: float, heading: float,
    materials: Materials, owner: int,
) -> np.ndarray:
    """Add one body's primitives; return the pelvis centre (3,) in world coordinates."""
    h = shape.height_m
    g = shape.girth
    up = np.array([0.0, 1.0, 0.0])
    down = -up
    fwd = np.array([np.sin(heading), 0.0, np.cos(heading)])
    right = np.array([np.cos(heading), 0.0, -np.sin(heading)])
    thigh_len = 0.245 * h * shape.leg_ratio / 0.5
    shin_len = 0.246 * h * shape.leg_ratio / 0.5
    foot_h = 0.039 * h
    hip_w = 0.19 * h * (0.8 + 0.2 * g)
    hip_l, hip_r = pose.hip
    knee_l, knee_r = pose.knee
    if pose.pelvis_m is None:
        # Standing: the lower of the two legs touches the floor.
        reach = max(
            thigh_len * np.cos(hip_l) + shin_len * np.cos(hip_l - knee_l),
            thigh_len * np.cos(hip_r) + shin_len * np.cos(hip_r - knee_r),
        )
        pelvis_y = reach + foot_h
    else:
        pelvis_y = pose.pelvis_m
    pelvis = np.array([x, pelvis_y, z])
    # Trunk axis, bent forward by torso_pitch; the arms hang relative to the trunk.
    tp = pose.torso_pitch
    spine = np.cos(tp) * up + np.sin(tp) * fwd
    trunk_fwd = np.cos(tp) * fwd - np.sin(tp) * up
    trunk_len = (0.818 - shape.leg_ratio) * h + 0.02 * h
    neck_base = pelvis + trunk_len * spine
    rot_trunk = np.stack([right, spine, trunk_fwd], axis=1)  # local axes as columns

    m = materials
    # Trunk: pelvis and chest ellipsoids, flattened front to back.
    builder.ellipsoid(
        pelvis + 0.06 * h * spine, np.array([hip_w * 0.5 + 0.05 * g, 0.11 * h, 0.1 * g]),
        rot_trunk, owner=owner, material=m.bottom,
    )
    shoulder_w = shape.shoulder_ratio * h * (0.85 + 0.15 * g)
    builder.ellipsoid(
        pelvis + 0.6 * trunk_len * spine,
        np.array([shoulder_w * 0.5, 0.42 * trunk_len, 0.11 * g]),
        rot_trunk, owner=owner, material=m.top,
    )
    # Neck and head (hair on top and at the back).
    head_r = 0.065 * h
    neck_top = neck_base + 0.05 * h * spine
    builder.capsule(neck_base - 0.02 * h * spine, neck_top, 0.032 * h * (0.9 + 0.1 * g),
                    owner=owner, material=m.skin)
    head = neck_top + head_r * 0.95 * spine + 0.01 * h * trunk_fwd
    builder.ellipsoid(head, np.array([0.8 * head_r, head_r, 0.9 * head_r]), rot_trunk,
                      owner=owner, material=m.skin)
    builder.ellipsoid(head + 0.25 * head_r * spine - 0.12 * head_r * trunk_fwd,
                      np.array([0.85 * head_r, 0.85 * head_r, 0.92 * head_r]), rot_trunk,
                      owner=owner, material=m.hair)
    # Arms.
    upper = 0.186 / 0.44 * shape.arm_ratio * h
    fore = 0.146 / 0.44 * shape.arm_ratio * h
    spine_down = -spine
    for side, flex, abd, elbow in (
        (-1.0, pose.shoulder[0], pose.abduction[0], pose.elbow[0]),
        (1.0, pose.shoulder[1], pose.abduction[1], pose.elbow[1]),
    ):
        shoulder = neck_base - 0.035 * h * spine + side * 0.5 * shoulder_w * 0.92 * right
        elbow_p = shoulder + upper * _limb(spine_down, trunk_fwd, right, flex, abd, side)
        wrist = elbow_p + fore * _limb(spine_down, trunk_fwd, right, flex + elbow, abd, side)
        builder.capsule(shoulder, elbow_p, 0.047 * g * h / 1.75, owner=owner, material=m.top)
        builder.capsule(elbow_p, wrist, 0.038 * g * h / 1.75, owner=owner, material=m.sleeves)
        hand = wrist + 0.045 * _limb(spine_down, trunk_fwd, right, flex + elbow, abd, side)
        builder.ellipsoid(hand, np.array([0.03, 0.05, 0.045]) * h / 1.75, rot_trunk,
                          owner=owner, material=m.skin)
    # Legs.
    for side, flex, knee in ((-1.0, hip_l, knee_l), (1.0, hip_r, knee_r)):
        hip = pelvis + side * 0.5 * hip_w * 0.8 * right
        knee_p = hip + thigh_len * _limb(down, fwd, right, flex, 0.0, side)
        ankle = knee_p + shin_len * _limb(down, fwd, right, flex - knee, 0.0, side)
        builder.capsule(hip, knee_p, 0.075 * g * h / 1.75, owner=owner, material=m.bottom)
        builder.capsule(knee_p, ankle, 0.055 * g * h / 1.75, owner=owner, material=m.bottom)
        foot = ankle + np.array([0.0, -0.5 * foot_h, 0.0]) + 0.06 * h / 1.75 * fwd
        rot_foot = np.stack([right, up, fwd], axis=1)
        builder.ellipsoid(foot, np.array([0.045, 0.035, 0.12]) * h / 1.75, rot_foot,
                          owner=owner, material=m.shoes)
    return pelvis
