"""Indoor scenes for the rig simulator: room, furniture, distractors, people and their motion.

A ``Scene`` is drawn once per sequence from a seed and is then a pure function of time:
``scene.at(t_s)`` returns every primitive (world frame, metres, y up, floor at y = 0) and where
each person is. Everything random is drawn at construction, so rendering any frame in any order
gives the same picture. People are planned one after another, each one's places and paths kept
``PERSON_GAP_M`` clear of everyone planned before, so nobody walks through anybody.

Materials are rows of one table (``MATERIAL_COLUMNS``): surface temperature in kelvin, the
probability that the D435 returns no depth on the surface (dark, glossy or glass), colours for
the RGB view, and a vertical temperature gradient for walls (warm air rises).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from iphd.sim.body import (
    Identity,
    Materials,
    Pose,
    add_body,
    arms_raised_pose,
    bending_pose,
    make_identity,
    sitting_pose,
    standing_pose,
    walking_pose,
)
from iphd.sim.raycast import N_ROOM_FACES, PrimitiveBuilder, PrimitiveSet

MATERIAL_COLUMNS = ("temp_k", "dropout", "r", "g", "b", "r2", "g2", "b2", "pattern", "grad_k_m")
MAX_PEOPLE = 15  # person slots are bits of a uint16 mask
PEOPLE_WEIGHTS = (0.06, 0.2, 0.24, 0.2, 0.14, 0.1, 0.06)  # P(0..6 people in a sequence)
# People keep this far apart on the floor (pelvis to pelvis): two people walking past each other
# shoulder to shoulder. Closer than that their bodies would pass through each other.
PERSON_GAP_M = 0.6
TRAFFIC_STEP_S = 0.1  # time step at which planned paths are checked against each other


@dataclass(frozen=True)
class SceneConfig:
    """Ranges the scene generator draws from.

    Attributes:
        room_width_m: (min, max) room width.
        room_depth_m: (min, max) room depth (along the camera's view).
        room_height_m: (min, max) ceiling height.
        ambient_k: (min, max) air temperature.
        camera_height_m: (min, max) height of the depth camera above the floor.
        people_weights: probabilities of 0, 1, 2, ... people in a sequence.
        distractor_scale: multiplies the number of furniture and distractor objects.
        people_in_view_deg: when set, people only go to places within this many degrees of the
            camera's optical axis (re-ID sessions, where everyone must be filmed).
    """

    room_width_m: tuple[float, float] = (4.0, 9.0)
    room_depth_m: tuple[float, float] = (6.0, 12.0)
    room_height_m: tuple[float, float] = (2.4, 3.2)
    ambient_k: tuple[float, float] = (291.0, 298.0)
    camera_height_m: tuple[float, float] = (0.7, 1.4)
    people_weights: tuple[float, ...] = PEOPLE_WEIGHTS
    distractor_scale: float = 1.0
    people_in_view_deg: float | None = None

    def __post_init__(self) -> None:
        """Reject ranges that cannot make a room."""
        for name in ("room_width_m", "room_depth_m", "room_height_m", "camera_height_m"):
            lo, hi = getattr(self, name)
            if not 0.0 < lo <= hi:
                raise ValueError(f"{name} must be 0 < min <= max, got {(lo, hi)}")
        if len(self.people_weights) > MAX_PEOPLE + 1 or min(self.people_weights) < 0:
            raise ValueError(
                f"people_weights needs 1..{MAX_PEOPLE + 1} non-negative entries, "
                f"got {self.people_weights}"
            )
        if sum(self.people_weights) <= 0:
            raise ValueError("people_weights must not be all zero")


class MaterialTable:
    """Growing table of materials; ``add`` returns the row index."""

    def __init__(self) -> None:
        self.rows: list[list[float]] = []

    def add(
        self, temp_k: float, rgb: tuple[float, float, float], *, dropout: float = 0.0,
        rgb2: tuple[float, float, float] | None = None, pattern: int = 0, grad_k_m: float = 0.0,
    ) -> int:
        """Add a material; see the module docstring for the columns."""
        self.rows.append(
            [temp_k, dropout, *rgb, *(rgb2 if rgb2 is not None else rgb), pattern, grad_k_m]
        )
        return len(self.rows) - 1

    def array(self) -> np.ndarray:
        """(M, 10) float64."""
        return np.asarray(self.rows, dtype=np.float64)


@dataclass(frozen=True)
class Segment:
    """One piece of an actor's timeline.

    Attributes:
        t0: start time in seconds.
        t1: end time in seconds.
        kind: ``walk``, ``stand``, ``arms``, ``bend`` or ``sit``.
        start: (x, z) floor position at t0.
        end: (x, z) floor position at t1 (= start except when walking).
        heading: facing direction in radians (0 = +z).
        phase0: gait phase at t0 (walking).
    """

    t0: float
    t1: float
    kind: str
    start: tuple[float, float]
    end: tuple[float, float]
    heading: float
    phase0: float = 0.0


@dataclass
class Actor:
    """A person in a scene: identity, person slot, materials and timeline."""

    identity: Identity
    slot: int
    materials: Materials
    segments: list[Segment]
    seat_height_m: float = 0.45

    def segment_at(self, t_s: float) -> Segment:
        """The segment active at ``t_s`` (the last one after the timeline ends)."""
        for seg in self.segments:
            if t_s < seg.t1:
                return seg
        return self.segments[-1]

    def state_at(self, t_s: float) -> tuple[float, float, float, Pose]:
        """(x, z, heading, pose) at ``t_s``."""
        seg = self.segment_at(t_s)
        dur = max(seg.t1 - seg.t0, 1e-9)
        a = float(np.clip((t_s - seg.t0) / dur, 0.0, 1.0))
        x = seg.start[0] + a * (seg.end[0] - seg.start[0])
        z = seg.start[1] + a * (seg.end[1] - seg.start[1])
        shape = self.identity.shape
        if seg.kind == "walk":
            dist = a * float(np.hypot(seg.end[0] - seg.start[0], seg.end[1] - seg.start[1]))
            stride = 0.82 * shape.height_m
            pose = walking_pose(seg.phase0 + 2 * np.pi * dist / stride)
        elif seg.kind == "sit":
            pose = sitting_pose(self.seat_height_m)
        elif seg.kind == "arms":
            pose = arms_raised_pose(float(np.clip(np.sin(np.pi * a) * 1.6, 0.0, 1.0)))
        elif seg.kind == "bend":
            pose = bending_pose(float(np.clip(np.sin(np.pi * a) * 1.6, 0.0, 1.0)))
        else:
            pose = standing_pose(float(np.sin(2 * np.pi * 0.3 * t_s + self.slot)))
        return x, z, seg.heading, pose


@dataclass(frozen=True)
class PersonState:
    """Where a person is at one instant (world frame)."""

    slot: int
    pid: int
    pelvis_m: np.ndarray
    velocity_mps: np.ndarray


@dataclass
class Scene:
    """A room with static objects and moving people; see the module docstring."""

    width_m: float
    depth_m: float
    height_m: float
    ambient_k: float
    camera_pos: np.ndarray
    camera_yaw: float
    camera_pitch: float
    camera_roll: float
    materials: np.ndarray
    static: PrimitiveSet
    actors: list[Actor]
    dog: tuple[int, np.ndarray, np.ndarray, float] | None
    warm_objects: list[np.ndarray] = field(default_factory=list)

    @property
    def room_centre(self) -> np.ndarray:
        """Centre of the room box in world coordinates."""
        return np.array([0.0, self.height_m / 2, 0.0])

    @property
    def room_half(self) -> np.ndarray:
        """Half extents of the room box."""
        return np.array([self.width_m / 2, self.height_m / 2, self.depth_m / 2])

    def world_to_camera(self) -> np.ndarray:
        """(3, 3) rotation from world vectors into the depth optical frame (x right, y down)."""
        cy, sy = np.cos(self.camera_yaw), np.sin(self.camera_yaw)
        cp, sp = np.cos(self.camera_pitch), np.sin(self.camera_pitch)
        # World: right-handed, y up; a camera looking along +z has its right along -x.
        fwd = np.array([sy * cp, sp, cy * cp])
        right = np.array([-cy, 0.0, sy])
        down = np.cross(fwd, right)
        cr, sr = np.cos(self.camera_roll), np.sin(self.camera_roll)
        right, down = cr * right + sr * down, -sr * right + cr * down
        return np.stack([right, down, fwd])

    def at(self, t_s: float) -> tuple[PrimitiveSet, list[PersonState]]:
        """All primitives at ``t_s`` (static first) and the state of every person."""
        dynamic, people = self.dynamic_at(t_s)
        return concat(self.static, dynamic), people

    def dynamic_at(self, t_s: float) -> tuple[PrimitiveSet, list[PersonState]]:
        """The moving primitives (people, dog) at ``t_s`` and the state of every person."""
        builder = PrimitiveBuilder()
        people = []
        for actor in self.actors:
            pelvis = self._pose_actor(builder, actor, t_s)
            before = self._pelvis(actor, t_s - 0.05)
            after = self._pelvis(actor, t_s + 0.05)
            people.append(
                PersonState(actor.slot, actor.identity.pid, pelvis, (after - before) / 0.1)
            )
        if self.dog is not None:
            material, start, end, period = self.dog
            a = 0.5 - 0.5 * np.cos(2 * np.pi * t_s / period)
            pos = start + a * (end - start)
            heading = float(np.arctan2(*(end - start)[[0, 1]])) if np.sin(
                2 * np.pi * t_s / period
            ) >= 0 else float(np.arctan2(*(start - end)[[0, 1]]))
            _add_dog(builder, pos, heading, material, t_s)
        return builder.build(), people

    def _pose_actor(self, builder: PrimitiveBuilder, actor: Actor, t_s: float) -> np.ndarray:
        x, z, heading, pose = actor.state_at(t_s)
        return add_body(
            builder, actor.identity.shape, pose, x, z, heading, actor.materials, actor.slot
        )

    def _pelvis(self, actor: Actor, t_s: float) -> np.ndarray:
        return self._pose_actor(PrimitiveBuilder(), actor, t_s)


def concat(a: PrimitiveSet, b: PrimitiveSet) -> PrimitiveSet:
    """The primitives of ``a`` followed by those of ``b``."""
    return PrimitiveSet(
        np.concatenate([a.kind, b.kind]), np.concatenate([a.params, b.params]),
        np.concatenate([a.owner, b.owner]), np.concatenate([a.material, b.material]),
    )


def _add_dog(builder: PrimitiveBuilder, pos: np.ndarray, heading: float, material: int,
             t_s: float) -> None:
    fwd = np.array([np.sin(heading), 0.0, np.cos(heading)])
    right = np.array([np.cos(heading), 0.0, -np.sin(heading)])
    up = np.array([0.0, 1.0, 0.0])
    rot = np.stack([right, up, fwd], axis=1)
    body = np.array([pos[0], 0.42, pos[1]])
    builder.ellipsoid(body, np.array([0.14, 0.15, 0.36]), rot, material=material)
    builder.ellipsoid(body + 0.38 * fwd + 0.14 * up, np.array([0.08, 0.09, 0.13]), rot,
                      material=material)
    for sx, sz in ((-1, 1), (1, 1), (-1, -1), (1, -1)):
        swing = 0.08 * np.sin(6.0 * t_s + (sx * sz > 0) * np.pi)
        top = body + sx * 0.08 * right + sz * 0.24 * fwd - 0.05 * up
        builder.capsule(top, top - 0.33 * up + swing * fwd, 0.035, material=material)


def _rgb(rng: np.random.Generator, lo: float = 0.2, hi: float = 0.9) -> tuple[float, float, float]:
    base = rng.uniform(lo, hi)
    tint = rng.normal(0.0, 0.08, 3)
    return tuple(float(np.clip(base + t, 0.02, 1.0)) for t in tint)  # type: ignore[return-value]


class _Traffic:
    """The planned floor positions of the people already placed, so later ones avoid them.

    People are planned one after the other: each move (or stay) of a new person is checked,
    every ``TRAFFIC_STEP_S``, against where every earlier person is at that instant.
    """

    def __init__(self, duration_s: float) -> None:
        self.times = np.arange(0.0, duration_s + 2.0 + TRAFFIC_STEP_S, TRAFFIC_STEP_S)
        self.paths: list[np.ndarray] = []  # (T, 2) x, z per earlier person

    def add(self, actor: Actor) -> None:
        self.paths.append(
            np.array([actor.state_at(float(t))[:2] for t in self.times], dtype=np.float64)
        )

    def clearance(self, t0: float, t1: float, start: tuple[float, float],
                  end: tuple[float, float]) -> float:
        """Smallest distance to an earlier person while moving start → end during [t0, t1]."""
        if not self.paths:
            return float("inf")
        lo, hi = np.searchsorted(self.times, [t0, t1])
        times = self.times[lo:max(hi, lo + 1)]
        if times.size == 0:
            return float("inf")
        a = np.clip((times - t0) / max(t1 - t0, 1e-9), 0.0, 1.0)[:, None]
        me = np.asarray(start) + a * (np.asarray(end) - np.asarray(start))
        others = np.stack([p[lo:lo + times.size] for p in self.paths])
        return float(np.linalg.norm(others - me[None], axis=-1).min())


class _Placer:
    """Keeps the floor footprints of placed objects so people's paths avoid them."""

    def __init__(self) -> None:
        self.footprints: list[tuple[float, float, float, float]] = []

    def add(self, x: float, z: float, hx: float, hz: float) -> None:
        self.footprints.append((x - hx, z - hz, x + hx, z + hz))

    def free(self, x: float, z: float, margin: float = 0.35) -> bool:
        return all(
            not (x0 - margin < x < x1 + margin and z0 - margin < z < z1 + margin)
            for x0, z0, x1, z1 in self.footprints
        )


def generate_scene(
    rng: np.random.Generator, config: SceneConfig, identities: list[Identity], duration_s: float
) -> Scene:
    """Draw a room, its objects and a timeline for each of ``identities`` (at most 15).

    Args:
        rng: the sequence's random generator.
        config: ranges to draw from.
        identities: the people of this sequence (the caller decides how many and who).
        duration_s: how long the timelines must last.
    """
    if len(identities) > MAX_PEOPLE:
        raise ValueError(f"at most {MAX_PEOPLE} people per scene, got {len(identities)}")
    w = float(rng.uniform(*config.room_width_m))
    d = float(rng.uniform(*config.room_depth_m))
    h = float(rng.uniform(*config.room_height_m))
    amb = float(rng.uniform(*config.ambient_k))
    mats = MaterialTable()
    wall_rgb = _rgb(rng, 0.55, 0.95)
    for face in range(N_ROOM_FACES):
        if face == 2:  # ceiling
            mats.add(amb + rng.uniform(0.5, 1.5), (0.92, 0.92, 0.9), grad_k_m=0.0)
        elif face == 3:  # floor
            floor = _rgb(rng, 0.25, 0.7)
            dark = (floor[0] * 0.85, floor[1] * 0.85, floor[2] * 0.85)
            mats.add(amb - rng.uniform(0.5, 1.5), floor, rgb2=dark,
                     pattern=2 if rng.random() < 0.3 else 0)
        else:
            mats.add(amb + rng.uniform(-0.8, 0.8), wall_rgb, grad_k_m=0.35)
    cam_z = -d / 2 + float(rng.uniform(0.3, 1.0))
    cam = np.array(
        [float(rng.uniform(-0.25, 0.25)) * w, float(rng.uniform(*config.camera_height_m)), cam_z]
    )
    yaw = float(rng.uniform(-0.3, 0.3))
    pitch = float(rng.uniform(-0.2, 0.03))
    roll = float(rng.normal(0.0, 0.015))

    b = PrimitiveBuilder()
    placer = _Placer()
    placer.add(cam[0], cam[2], 0.4, 0.4)  # the robot itself
    warm: list[np.ndarray] = []
    scale = config.distractor_scale

    def wall_spot(depth_off: float) -> tuple[float, float, float]:
        """A point along a side or back wall: (x, z, yaw facing into the room)."""
        side = int(rng.integers(3))
        if side == 0:
            return -w / 2 + depth_off, float(rng.uniform(cam_z + 1.0, d / 2 - 0.5)), np.pi / 2
        if side == 1:
            return w / 2 - depth_off, float(rng.uniform(cam_z + 1.0, d / 2 - 0.5)), -np.pi / 2
        return float(rng.uniform(-w / 2 + 0.5, w / 2 - 0.5)), d / 2 - depth_off, np.pi

    def count(mean: float) -> int:
        return int(rng.poisson(mean * scale * (w * d) / 50.0))

    # Cold windows and warm radiators on the walls.
    for _ in range(count(2.0)):
        x, z, yw = wall_spot(0.02)
        ww, wh = float(rng.uniform(0.8, 2.0)), float(rng.uniform(0.8, 1.4))
        m = mats.add(float(rng.uniform(279.0, 290.0)), (0.55, 0.7, 0.8), dropout=0.75)
        b.box(np.array([x, 1.0 + wh / 2, z]), np.array([ww / 2, wh / 2, 0.02]), yw, material=m)
        if rng.random() < 0.7:
            m = mats.add(float(rng.uniform(312.0, 333.0)), (0.9, 0.9, 0.88))
            x2, z2 = x + 0.09 * np.sin(yw), z + 0.09 * np.cos(yw)
            centre = np.array([x2, 0.45, z2])
            b.box(centre, np.array([ww / 2, 0.3, 0.05]), yw, material=m)
            warm.append(centre)
    # Furniture along the walls: cabinets, shelves, sofas.
    for _ in range(count(4.0)):
        x, z, yw = wall_spot(0.35)
        hx, hy, hz = rng.uniform(0.3, 1.0), rng.uniform(0.3, 1.0), rng.uniform(0.2, 0.45)
        m = mats.add(amb + rng.uniform(-0.3, 0.3), _rgb(rng, 0.15, 0.8),
                     dropout=0.25 if rng.random() < 0.15 else 0.0)
        b.box(np.array([x, hy, z]), np.array([hx, hy, hz]), yw, material=m)
        placer.add(x, z, max(hx, hz) + 0.1, max(hx, hz) + 0.1)
        if rng.random() < 0.35:  # a screen or TV on it
            sw = float(rng.uniform(0.25, 0.6))
            m = mats.add(float(rng.uniform(303.0, 312.0)), (0.05, 0.05, 0.06), dropout=0.55)
            centre = np.array([x, 2 * hy + sw * 0.35, z])
            b.box(centre, np.array([sw, sw * 0.6, 0.03]), yw, material=m)
            warm.append(centre)
    # Tables with hot drinks and laptops, chairs (some with coats).
    for _ in range(count(3.0)):
        x, z = float(rng.uniform(-w / 2 + 0.8, w / 2 - 0.8)), float(rng.uniform(cam_z + 1.5,
                                                                                 d / 2 - 0.8))
        if not placer.free(x, z, 0.6):
            continue
        yw = float(rng.uniform(0, np.pi))
        hx, hz, ht = rng.uniform(0.4, 0.9), rng.uniform(0.35, 0.6), rng.uniform(0.7, 0.78)
        m = mats.add(amb + rng.uniform(-0.3, 0.2), _rgb(rng, 0.2, 0.8))
        b.box(np.array([x, ht - 0.02, z]), np.array([hx, 0.02, hz]), yw, material=m)
        c, s = np.cos(yw), np.sin(yw)
        for lx, lz in ((-1, -1), (-1, 1), (1, -1), (1, 1)):
            ox, oz = lx * (hx - 0.05), lz * (hz - 0.05)
            b.box(np.array([x + c * ox + s * oz, ht / 2, z - s * ox + c * oz]),
                  np.array([0.025, ht / 2, 0.025]), yw, material=m)
        placer.add(x, z, max(hx, hz), max(hx, hz))
        if rng.random() < 0.6:
            m = mats.add(float(rng.uniform(328.0, 350.0)), _rgb(rng))
            centre = np.array([x + rng.uniform(-0.2, 0.2), ht + 0.05, z + rng.uniform(-0.1, 0.1)])
            b.capsule(centre - [0, 0.03, 0], centre + [0, 0.03, 0], 0.04, material=m)
            warm.append(centre)
        if rng.random() < 0.3:
            m = mats.add(float(rng.uniform(302.0, 308.0)), (0.1, 0.1, 0.12), dropout=0.5)
            centre = np.array([x, ht + 0.13, z])
            b.box(centre, np.array([0.17, 0.12, 0.01]), yw, material=m)
            warm.append(centre)
        for _ in range(int(rng.integers(0, 3))):
            ang = float(rng.uniform(0, 2 * np.pi))
            cx, cz = x + (hx + 0.3) * np.cos(ang), z + (hz + 0.3) * np.sin(ang)
            _add_chair(b, mats, placer, rng, amb, cx, cz, ang + np.pi / 2,
                       coat=rng.random() < 0.4)
    # Coat stands and mannequins: human-sized but at room temperature.
    for _ in range(count(1.5)):
        x, z, _ = wall_spot(0.5)
        m = mats.add(amb + 0.2, _rgb(rng, 0.1, 0.5))
        b.capsule(np.array([x, 0.05, z]), np.array([x, 1.75, z]), 0.025, material=m)
        b.ellipsoid(np.array([x, 0.02, z]), np.array([0.25, 0.02, 0.25]), material=m)
        for _ in range(int(rng.integers(1, 4))):
            mc = mats.add(amb + rng.uniform(0.0, 0.8), _rgb(rng, 0.05, 0.8))
            ang = float(rng.uniform(0, 2 * np.pi))
            off = 0.15 * np.array([np.cos(ang), 0.0, np.sin(ang)])
            b.ellipsoid(np.array([x, 1.3, z]) + off, np.array([0.2, 0.42, 0.13]),
                        material=mc)
        placer.add(x, z, 0.3, 0.3)
    for _ in range(count(0.8)):
        x, z, yw = wall_spot(0.6)
        shape = make_identity(int(rng.integers(1 << 30)), int(rng.integers(1 << 30))).shape
        plastic = mats.add(amb + rng.uniform(-0.2, 0.4), _rgb(rng, 0.6, 0.95))
        cloth = mats.add(amb + rng.uniform(0.0, 0.6), _rgb(rng, 0.05, 0.9))
        pose = arms_raised_pose(0.3) if rng.random() < 0.3 else standing_pose(0.0)
        add_body(b, shape, pose, x, z, yw, Materials(plastic, plastic, cloth, cloth, cloth,
                                                     plastic), owner=-1)
        placer.add(x, z, 0.3, 0.3)
    # Floor lamps.
    for _ in range(count(1.0)):
        x, z, _ = wall_spot(0.4)
        m = mats.add(amb + 1.0, (0.2, 0.2, 0.2))
        b.capsule(np.array([x, 0.02, z]), np.array([x, 1.5, z]), 0.02, material=m)
        m = mats.add(float(rng.uniform(312.0, 338.0)), (0.95, 0.9, 0.7))
        centre = np.array([x, 1.62, z])
        b.ellipsoid(centre, np.array([0.18, 0.14, 0.18]), material=m)
        warm.append(centre)
        placer.add(x, z, 0.25, 0.25)

    dog = None
    if rng.random() < 0.25 * scale:
        m = mats.add(float(rng.uniform(303.0, 307.5)), _rgb(rng, 0.1, 0.7))
        start = np.array(
            [rng.uniform(-w / 2 + 0.8, w / 2 - 0.8), rng.uniform(cam_z + 1.2, d / 2 - 1)]
        )
        end = start + rng.uniform(-1.5, 1.5, 2)
        end = np.clip(end, [-w / 2 + 0.6, cam_z + 1.0], [w / 2 - 0.6, d / 2 - 0.6])
        dog = (m, start, end, float(rng.uniform(6.0, 14.0)))

    actors = []
    traffic = _Traffic(duration_s)
    for slot, ident in enumerate(identities):
        actors.append(_make_actor(rng, mats, placer, traffic, b, ident, slot, w, d, cam,
                                  duration_s, amb, None if config.people_in_view_deg is None else
                                  (yaw, np.deg2rad(config.people_in_view_deg))))
        traffic.add(actors[-1])

    return Scene(
        width_m=w, depth_m=d, height_m=h, ambient_k=amb, camera_pos=cam, camera_yaw=yaw,
        camera_pitch=pitch, camera_roll=roll, materials=mats.array(), static=b.build(),
        actors=actors, dog=dog, warm_objects=warm,
    )


def _add_chair(b: PrimitiveBuilder, mats: MaterialTable, placer: _Placer,
               rng: np.random.Generator, amb: float, x: float, z: float, yaw: float,
               coat: bool, seat_h: float = 0.45) -> None:
    m = mats.add(amb + rng.uniform(-0.3, 0.3), _rgb(rng, 0.1, 0.8))
    fwd = np.array([np.sin(yaw), 0.0, np.cos(yaw)])
    right = np.array([np.cos(yaw), 0.0, -np.sin(yaw)])
    base = np.array([x, 0.0, z])
    b.box(base + [0, seat_h, 0], np.array([0.22, 0.025, 0.22]), yaw, material=m)
    b.box(base + [0, seat_h + 0.25, 0] - 0.21 * fwd, np.array([0.22, 0.22, 0.02]), yaw,
          material=m)
    for lx, lz in ((-1, -1), (-1, 1), (1, -1), (1, 1)):
        leg = base + lx * 0.19 * right + lz * 0.19 * fwd
        b.capsule(leg + [0, 0.02, 0], leg + [0, seat_h, 0], 0.018, material=m)
    if coat:
        mc = mats.add(amb + rng.uniform(0.0, 1.0), _rgb(rng, 0.05, 0.8))
        b.ellipsoid(base + [0, seat_h + 0.3, 0] - 0.25 * fwd, np.array([0.24, 0.33, 0.08]),
                    np.stack([right, np.array([0.0, 1.0, 0.0]), fwd], axis=1), material=mc)
    placer.add(x, z, 0.3, 0.3)


def _make_actor(
    rng: np.random.Generator, mats: MaterialTable, placer: _Placer, traffic: _Traffic,
    b: PrimitiveBuilder, ident: Identity, slot: int, w: float, d: float, cam: np.ndarray,
    duration_s: float, amb: float, view: tuple[float, float] | None = None,
) -> Actor:
    """A person's materials and timeline; their places and paths keep clear of ``traffic``."""
    cl = ident.clothing
    skin_k = ident.skin_k

    def garment(insulation: float) -> float:
        return amb + (skin_k - amb) * (1.0 - insulation)

    top = mats.add(garment(cl.top_insulation), cl.top_rgb, rgb2=cl.top_rgb2,
                   pattern=cl.top_pattern, dropout=0.25 if cl.dark_top else 0.0)
    materials = Materials(
        skin=mats.add(skin_k, cl.skin_rgb),
        hair=mats.add(skin_k - rng.uniform(2.0, 5.0), cl.hair_rgb, dropout=0.1),
        top=top,
        sleeves=mats.add(skin_k - 0.8, cl.skin_rgb) if cl.short_sleeves else top,
        bottom=mats.add(garment(cl.bottom_insulation), cl.bottom_rgb),
        shoes=mats.add(amb + rng.uniform(1.0, 3.0), cl.shoes_rgb, dropout=0.15),
    )
    x_lo, x_hi = -w / 2 + 0.45, w / 2 - 0.45
    # IPHD has people from about 0.5 m to 8 m: paths stay within 7.5 m of the camera.
    z_lo, z_hi = float(cam[2]) + 0.45, min(d / 2 - 0.45, float(cam[2]) + 7.5)

    def spot() -> tuple[float, float]:
        for _ in range(30):
            # Distance from the camera spread over the room, with some people close by.
            if rng.random() < 0.12:
                z = float(cam[2] + rng.uniform(0.5, 1.6))
            else:
                z = float(rng.uniform(z_lo, z_hi))
            x = float(rng.uniform(x_lo, x_hi))
            if view is not None:
                # Bearing from the camera; the camera looks along +z turned by its yaw.
                bearing = np.arctan2(x - cam[0], z - cam[2]) - view[0]
                if abs(bearing) > view[1]:
                    continue
            if placer.free(x, z):
                return x, float(np.clip(z, z_lo, z_hi))
        return float(rng.uniform(x_lo, x_hi)), float(rng.uniform(z_lo, z_hi))

    def free_spot(t0: float, t1: float) -> tuple[float, float]:
        """A spot no earlier person comes near during [t0, t1] (else the clearest of 30)."""
        best, best_gap = spot(), -1.0
        for _ in range(30):
            cand = spot()
            gap = traffic.clearance(t0, t1, cand, cand)
            if gap >= PERSON_GAP_M:
                return cand
            if gap > best_gap:
                best, best_gap = cand, gap
        return best

    kind = rng.choice(3, p=[0.65, 0.2, 0.15])
    segments: list[Segment] = []
    t = 0.0
    end_s = duration_s + 2.0
    pos = free_spot(0.0, 1.0 if kind == 0 else end_s)
    heading = float(rng.uniform(-np.pi, np.pi))
    seat = 0.45
    if kind == 2:  # sitter: a chair where they sit, facing roughly the camera
        heading = float(np.arctan2(cam[0] - pos[0], cam[2] - pos[1]) + rng.normal(0, 0.6))
        seat = float(rng.uniform(0.42, 0.5))
        fwd = np.array([np.sin(heading), np.cos(heading)])
        _add_chair(b, mats, placer, rng, amb, pos[0] - 0.05 * fwd[0], pos[1] - 0.05 * fwd[1],
                   heading, coat=False, seat_h=seat)
    phase = float(rng.uniform(0, 2 * np.pi))
    while t < duration_s + 1.0:
        if kind == 0:  # walker: walk to a spot, pause (idle, arms raised or bending)
            # The first goal whose path and pause keep clear of everyone placed before; with
            # none in 20 draws, wait a second where they are, or (if even that is not clear)
            # take the clearest.
            best: tuple[float, tuple[float, float], float, float] | None = None
            for _ in range(20):
                goal = spot()
                dist = float(np.hypot(goal[0] - pos[0], goal[1] - pos[1]))
                if dist < 0.3:
                    continue
                dur = dist / float(rng.uniform(0.7, 1.5))
                pause = float(rng.exponential(2.0))
                gap = min(traffic.clearance(t, t + dur, pos, goal),
                          traffic.clearance(t + dur, t + dur + pause, goal, goal))
                if best is None or gap > best[0]:
                    best = (gap, goal, dur, pause)
                if gap >= PERSON_GAP_M:
                    break
            if best is None or (best[0] < PERSON_GAP_M
                                and traffic.clearance(t, t + 1.0, pos, pos) >= PERSON_GAP_M):
                segments.append(Segment(t, t + 1.0, "stand", pos, pos, heading))
                t += 1.0
                continue
            _, goal, dur, pause = best
            dist = float(np.hypot(goal[0] - pos[0], goal[1] - pos[1]))
            heading = float(np.arctan2(goal[0] - pos[0], goal[1] - pos[1]))
            segments.append(Segment(t, t + dur, "walk", pos, goal, heading, phase))
            phase += 2 * np.pi * dist / (0.82 * ident.shape.height_m)
            t += dur
            pos = goal
            what = str(rng.choice(["stand", "arms", "bend"], p=[0.7, 0.15, 0.15]))
            segments.append(Segment(t, t + pause, what, pos, pos, heading))
            t += pause
        elif kind == 1:  # stander: stays, turns now and then, gestures
            dur = float(rng.uniform(2.0, 8.0))
            what = str(rng.choice(["stand", "arms", "bend"], p=[0.6, 0.2, 0.2]))
            segments.append(Segment(t, t + dur, what, pos, pos, heading))
            heading += float(rng.normal(0.0, 0.8))
            t += dur
        else:
            segments.append(Segment(t, t + duration_s + 2.0, "sit", pos, pos, heading))
            t += duration_s + 2.0
    return Actor(ident, slot, materials, segments, seat)
