"""The simulated rig: D435 depth (+ aligned colour) and a Lepton on its own clock, over a scene.

``RigSimulator`` renders one sequence. Depth frame ``j`` is captured at ``j / depth_rate_hz``
seconds of scene time; thermal frame ``k`` at ``phase + k * period`` on the Lepton's oscillator
(nominal 8.7 Hz, off by ``thermal_drift_ppm``). Stamps are what the drivers would publish:
nanoseconds since ``start_ns`` on the depth (host) clock, the thermal stamp shifted by the rig's
clock offset (``stamp = capture - offset``, as ``calibration/rig.yaml`` defines it) plus jitter.

Sensor models (all parameters in ``SensorConfig``):

- D435 depth: stereo noise ``sigma_z = subpixel * z^2 / (f * baseline)``, spatially correlated;
  invalid (0) pixels beyond range, below the minimum Z, in the occlusion shadow left of near
  objects (the left imager is the reference, the right imager cannot see there), in blobs on
  dark / glossy / glass materials, and increasingly at long range.
- Lepton: scene temperature rendered at 2x and area-averaged (mixed pixels at edges), Gaussian
  optical blur, radial vignetting, column fixed-pattern noise that drifts between flat-field
  corrections, white temporal noise (~50 mK), a per-sequence radiometric offset. Flat-field
  corrections (at start and every ``ffc_period_s``) freeze the image for ``ffc_duration_s``; those
  frames carry the FFC-in-progress state in their telemetry.
- RGB (re-ID only): the colour camera's view aligned to depth, Lambert shading with a
  per-sequence light, clothing patterns, sensor noise.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import cv2
import numba
import numpy as np
from scipy.special import ndtr

from iphd.calibration import (
    BASE_TO_OPTICAL_XYZW,
    RigCalibration,
    StaticTransform,
    quaternion_to_rotation,
    rotation_to_quaternion,
)
from iphd.data.truth import PersonTruth
from iphd.registration import undistort_normalized
from iphd.sensors.frames import CameraIntrinsics
from iphd.sensors.lepton import FFC_COMPLETE, FFC_IN_PROGRESS, encode_telemetry
from iphd.sim.body import Identity
from iphd.sim.raycast import (
    BOX,
    ELLIPSOID,
    HOLED_BOARD,
    N_ROOM_FACES,
    PrimitiveBuilder,
    PrimitiveSet,
    RayGrid,
    camera_aabbs,
    cast_primitives,
    cast_room,
    person_stats,
    pinhole_grid,
    to_camera,
)
from iphd.sim.scene import MAX_PEOPLE, Scene, SceneConfig, concat, generate_scene
from iphd.sim.target import CalibrationTarget

# D435 depth profiles: native depth (~87 x 58 deg) and depth aligned to the colour camera
# (~69 x 42 deg, what rs.align / realsense-ros align_depth publish, and the IPHD frame).
DEPTH_HFOV_DEG = {"depth": 87.0, "aligned": 69.4}
D435_SIZES = ("1280x720", "848x480", "640x360", "424x240")
PROFILES = tuple(f"{kind}_{size}" for kind in ("aligned", "depth") for size in D435_SIZES)
START_NS = 1_700_000_000_000_000_000  # stamps of a sequence start here unless told otherwise


def depth_profile(name: str) -> CameraIntrinsics:
    """Intrinsics of a D435 depth profile ``{aligned,depth}_{W}x{H}`` (rectified, square px).

    ``PROFILES`` are the D435's own modes; other sizes (at least 16x16, 16:9 or 4:3 style)
    are the same camera resampled, which tests use to stay small.
    """
    match = re.fullmatch(r"(aligned|depth)_(\d+)x(\d+)", name)
    if match is None or int(match.group(2)) < 16 or int(match.group(3)) < 16:
        raise ValueError(
            f"unknown depth profile '{name}'; choose one of {', '.join(PROFILES)} "
            "(or another {aligned,depth}_WxH of at least 16x16)"
        )
    kind = match.group(1)
    width, height = int(match.group(2)), int(match.group(3))
    fx = 0.5 * width / np.tan(np.deg2rad(DEPTH_HFOV_DEG[kind]) / 2)
    return CameraIntrinsics(width, height, fx, fx, (width - 1) / 2, (height - 1) / 2)


@dataclass(frozen=True)
class SensorConfig:
    """Sensor model parameters (defaults: D435 + Lepton 3.5 on a PureThermal).

    Attributes:
        depth_profile: one of ``PROFILES``.
        depth_rate_hz: depth frame rate.
        stereo_focal_px: focal length of the D435 stereo imagers at 1280 px width (noise model).
        baseline_m: D435 stereo baseline.
        subpixel: stereo matching subpixel accuracy in pixels (noise grows with it).
        min_z_m: D435 minimum measurable depth at 1280x720.
        max_z_m: no depth beyond this.
        far_dropout_start_m: beyond this range pixels start dropping out (15 % at ``max_z_m``).
        thermal_rate_hz: Lepton frame rate (< 9 Hz export limit).
        thermal_drift_ppm: Lepton oscillator error against the host clock.
        thermal_jitter_s: standard deviation of the thermal stamp jitter.
        thermal_clock_offset_s: ``capture - stamp`` of the thermal driver; None = the
            calibration's ``clock.thermal_offset_s`` (so the fusion node's correction is exact).
        thermal_noise_k: temporal noise standard deviation (NETD).
        thermal_fpn_k: column fixed-pattern noise right after a flat-field correction.
        thermal_blur_px: Gaussian blur sigma of the Lepton optics in thermal pixels.
        vignetting_k: (min, max) temperature drop at the image corners.
        radiometric_offset_k: standard deviation of a per-sequence radiometric offset.
        ffc_period_s: (min, max) seconds between automatic flat-field corrections.
        ffc_duration_s: how long an FFC freezes the image.
        rgb_scale: size of the RGB view relative to the depth image.
        pan_deg: the robot turning in place: the rig's yaw swings by up to this many degrees
            either side of the scene's camera yaw (0 = a static rig), about the vertical
            through the depth camera (``RigSimulator.yaw_offset_rad``).
        pan_period_s: seconds of one full swing (``pan_deg`` > 0).
    """

    depth_profile: str = "aligned_1280x720"
    depth_rate_hz: float = 30.0
    stereo_focal_px: float = 640.0
    baseline_m: float = 0.050
    subpixel: float = 0.08
    min_z_m: float = 0.28
    max_z_m: float = 10.0
    far_dropout_start_m: float = 6.0
    thermal_rate_hz: float = 8.7
    thermal_drift_ppm: float = 30.0
    thermal_jitter_s: float = 0.002
    thermal_clock_offset_s: float | None = None
    thermal_noise_k: float = 0.05
    thermal_fpn_k: float = 0.03
    thermal_blur_px: float = 0.6
    vignetting_k: tuple[float, float] = (0.1, 0.4)
    radiometric_offset_k: float = 0.3
    ffc_period_s: tuple[float, float] = (150.0, 210.0)
    ffc_duration_s: float = 1.0
    rgb_scale: float = 0.5
    pan_deg: float = 0.0
    pan_period_s: float = 12.0

    def __post_init__(self) -> None:
        """Reject impossible sensor settings with a message naming the field."""
        if not (math.isfinite(self.pan_deg) and 0 <= self.pan_deg <= 180):
            raise ValueError(f"pan_deg must be 0..180 degrees, got {self.pan_deg}")
        if not (math.isfinite(self.pan_period_s) and self.pan_period_s > 0):
            raise ValueError(f"pan_period_s must be > 0 seconds, got {self.pan_period_s}")
        depth_profile(self.depth_profile)
        if not 0 < self.thermal_rate_hz < 9.0:
            raise ValueError(
                "thermal_rate_hz must be in (0, 9) (Lepton export limit), "
                f"got {self.thermal_rate_hz}"
            )
        if self.depth_rate_hz <= 0:
            raise ValueError(f"depth_rate_hz must be positive, got {self.depth_rate_hz}")
        if not 0 < self.min_z_m < self.max_z_m:
            raise ValueError(f"need 0 < min_z_m < max_z_m, got {self.min_z_m}, {self.max_z_m}")
        if not 0 < self.rgb_scale <= 1:
            raise ValueError(f"rgb_scale must be in (0, 1], got {self.rgb_scale}")
        lo, hi = self.ffc_period_s
        if not 0 < lo <= hi:
            raise ValueError(f"ffc_period_s must be 0 < min <= max seconds, got {(lo, hi)}")
        if not 0 <= self.ffc_duration_s < lo:
            raise ValueError(
                f"ffc_duration_s must be >= 0 and shorter than the FFC period, "
                f"got {self.ffc_duration_s} with ffc_period_s {(lo, hi)}"
            )


@dataclass(frozen=True)
class DepthSample:
    """One simulated depth frame with its ground truth.

    Attributes:
        index: depth frame number in the sequence.
        t_s: scene time of the capture.
        stamp_ns: header stamp (host clock).
        depth_mm: (H, W) uint16 depth in millimetres, 0 = invalid.
        people: ground truth of every person with at least one visible pixel.
        rgb: (h, w, 3) uint8 RGB view (``rgb_scale`` of the depth size) when asked for.
    """

    index: int
    t_s: float
    stamp_ns: int
    depth_mm: np.ndarray
    people: tuple[PersonTruth, ...]
    rgb: np.ndarray | None = None


@dataclass(frozen=True)
class ThermalSample:
    """One simulated Lepton frame.

    Attributes:
        index: thermal frame number (the Lepton frame counter).
        t_s: scene time of the capture.
        stamp_ns: header stamp as the thermal driver would publish it.
        thermal_ck: (120, 160) uint16 centi-kelvin.
        frozen: True during a flat-field correction (the driver drops these).
        telemetry: (2, 160) uint16 telemetry rows (frame counter, FFC state, TLinear flags).
    """

    index: int
    t_s: float
    stamp_ns: int
    thermal_ck: np.ndarray
    frozen: bool
    telemetry: np.ndarray

    def raw_frame(self) -> np.ndarray:
        """(122, 160) uint16 as a PureThermal streams it: image rows then telemetry rows."""
        return np.vstack([self.thermal_ck, self.telemetry])


@dataclass
class _View:
    grid: RayGrid
    world_to_cam: np.ndarray
    cam_pos: np.ndarray


@dataclass
class _Render:
    z: np.ndarray
    ids: np.ndarray
    owners: np.ndarray
    params: np.ndarray
    kinds: np.ndarray
    id_material: np.ndarray
    id_owner: np.ndarray
    world_to_cam: np.ndarray
    cam_pos: np.ndarray
    grid: RayGrid


@dataclass
class RigSimulator:
    """Renders one sequence of the rig; see the module docstring.

    Args:
        calibration: the rig (thermal intrinsics and the depth->thermal extrinsic).
        identities: the people in this sequence (at most 15).
        duration_s: scene length in seconds.
        seed: sequence seed; same seed and arguments, same frames.
        sensors: sensor models.
        scene_config: scene ranges.
        start_ns: stamp of scene time 0.
        target: a calibration board moving in front of the rig (``iphd.sim.target``).
    """

    calibration: RigCalibration
    identities: list[Identity]
    duration_s: float
    seed: int
    sensors: SensorConfig = field(default_factory=SensorConfig)
    scene_config: SceneConfig = field(default_factory=SceneConfig)
    start_ns: int = START_NS
    target: CalibrationTarget | None = None

    def __post_init__(self) -> None:
        if self.duration_s < 0:
            raise ValueError(f"duration_s must be >= 0, got {self.duration_s}")
        rng = np.random.default_rng([self.seed, 0x5CE])
        self.scene: Scene = generate_scene(rng, self.scene_config, self.identities,
                                           self.duration_s)
        s = self.sensors
        self.depth_intrinsics = depth_profile(s.depth_profile)
        di = self.depth_intrinsics
        self._depth_grid = pinhole_grid(di.width, di.height, di.fx, di.fy, di.cx, di.cy)
        rgb_w = int(round(di.width * s.rgb_scale))
        rgb_h = int(round(di.height * s.rgb_scale))
        self.rgb_intrinsics = di.scaled(rgb_w, rgb_h)
        ri = self.rgb_intrinsics
        self._rgb_grid = pinhole_grid(ri.width, ri.height, ri.fx, ri.fy, ri.cx, ri.cy)
        self._thermal_grid = _distorted_grid(self.calibration.thermal, 2)
        # Thermal camera pose from the calibration: p_th = R p_depth + t.
        w2c = self.scene.world_to_camera()
        rot = np.asarray(self.calibration.rotation, dtype=np.float64)
        t = np.asarray(self.calibration.translation_m, dtype=np.float64)
        self._depth_view = (w2c, self.scene.camera_pos)
        self._thermal_view = (rot @ w2c, self.scene.camera_pos + w2c.T @ (-rot.T @ t))
        self._thermal_from_depth = (rot, t)
        srng = np.random.default_rng([self.seed, 0x7E5])
        offset = s.thermal_clock_offset_s
        if offset is None:
            offset = self.calibration.thermal_clock_offset_ns / 1e9
        self._thermal_offset_s = float(offset)
        self._thermal_phase_s = float(srng.uniform(0.0, 1.0 / s.thermal_rate_hz))
        self._thermal_period_s = (1.0 / s.thermal_rate_hz) * (1.0 + s.thermal_drift_ppm * 1e-6)
        self._vignetting_k = float(srng.uniform(*s.vignetting_k))
        self._radiometric_offset_k = float(srng.normal(0.0, s.radiometric_offset_k))
        self._fpa_k = float(srng.uniform(300.0, 310.0))
        ffc = [0.0]
        while ffc[-1] < self.duration_s + 10.0:
            ffc.append(ffc[-1] + float(srng.uniform(*s.ffc_period_s)))
        self._ffc_starts = np.asarray(ffc)
        th = self.calibration.thermal
        yy, xx = np.mgrid[0 : th.height, 0 : th.width].astype(np.float64)
        r2 = ((xx - th.cx) / (th.width / 2)) ** 2 + ((yy - th.cy) / (th.height / 2)) ** 2
        self._vignette = (r2 / r2.max()).astype(np.float64)
        self._static_cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._target_material = -1
        if self.target is not None:
            row = [self.scene.ambient_k + self.target.spec.temp_offset_k, 0.0, 0.85, 0.85, 0.8,
                   0.85, 0.85, 0.8, 0.0, 0.0]
            self.scene.materials = np.vstack([self.scene.materials, row])
            self._target_material = len(self.scene.materials) - 1
        di_h, di_w = self.depth_intrinsics.height, self.depth_intrinsics.width
        nrng = np.random.default_rng([self.seed, 0xBA4])
        # White noise bank, rolled per frame: drawing 1280x720 normals per frame costs more
        # than the rest of the depth model.
        self._white = nrng.standard_normal((di_h, di_w), dtype=np.float32)

    # ----------------------------------------------------------------------------- timing

    @property
    def n_depth(self) -> int:
        """Number of depth frames in the sequence."""
        return int(np.floor(self.duration_s * self.sensors.depth_rate_hz + 1e-9))

    @property
    def n_thermal(self) -> int:
        """Number of thermal frames in the sequence."""
        return max(0, int(np.floor((self.duration_s - self._thermal_phase_s)
                                   / self._thermal_period_s + 1e-9)))

    def depth_time(self, index: int) -> float:
        """Scene time of depth frame ``index``."""
        return index / self.sensors.depth_rate_hz

    def thermal_time(self, index: int) -> float:
        """Scene time of thermal frame ``index``."""
        return self._thermal_phase_s + index * self._thermal_period_s

    def depth_stamp_ns(self, index: int) -> int:
        """Header stamp of depth frame ``index``."""
        return self.start_ns + int(round(self.depth_time(index) * 1e9))

    def thermal_stamp_ns(self, index: int) -> int:
        """Header stamp of thermal frame ``index`` (thermal clock: offset and jitter)."""
        jitter = float(
            np.random.default_rng([self.seed, 0x717, index]).normal(0.0,
                                                                    self.sensors.thermal_jitter_s)
        )
        t = self.thermal_time(index) - self._thermal_offset_s + jitter
        return self.start_ns + int(round(t * 1e9))

    def nearest_depth_index(self, t_s: float) -> int:
        """Depth frame captured closest to scene time ``t_s``."""
        return int(np.clip(round(t_s * self.sensors.depth_rate_hz), 0, max(self.n_depth - 1, 0)))

    def thermal_index_at(self, t_s: float) -> int:
        """The thermal frame captured closest to scene time ``t_s``."""
        k = int(round((t_s - self._thermal_phase_s) / self._thermal_period_s))
        return int(np.clip(k, 0, max(self.n_thermal - 1, 0)))

    def ffc_active(self, t_s: float) -> bool:
        """True while a flat-field correction freezes the Lepton image."""
        k = int(np.searchsorted(self._ffc_starts, t_s, side="right")) - 1
        return k >= 0 and t_s - self._ffc_starts[k] < self.sensors.ffc_duration_s

    # ----------------------------------------------------------------------------- rig pose

    @property
    def moving(self) -> bool:
        """True when the rig turns (``SensorConfig.pan_deg``)."""
        return self.sensors.pan_deg > 0

    def yaw_offset_rad(self, t_s: float) -> float:
        """The rig's yaw at scene time ``t_s`` relative to the scene's camera yaw (0 static).

        ``pan_deg * sin(2 pi t / pan_period_s)``: a robot looking left and right in place.
        """
        if not self.moving:
            return 0.0
        s = self.sensors
        return math.radians(s.pan_deg) * math.sin(2.0 * math.pi * t_s / s.pan_period_s)

    def depth_view(self, t_s: float) -> tuple[np.ndarray, np.ndarray]:
        """``(world_to_camera, position)`` of the depth camera at scene time ``t_s``."""
        w2c, pos = self._depth_view
        if not self.moving:
            return w2c, pos
        # The rig turns about the world's vertical (y) through the depth camera.
        a = self.yaw_offset_rad(t_s)
        turn = np.array([[math.cos(a), 0.0, math.sin(a)], [0.0, 1.0, 0.0],
                         [-math.sin(a), 0.0, math.cos(a)]])
        return w2c @ turn.T, pos

    def thermal_view(self, t_s: float) -> tuple[np.ndarray, np.ndarray]:
        """``(world_to_camera, position)`` of the thermal camera at scene time ``t_s``."""
        if not self.moving:
            return self._thermal_view
        w2c, pos = self.depth_view(t_s)
        rot, t = self._thermal_from_depth
        return rot @ w2c, pos + w2c.T @ (-rot.T @ t)

    def odom_transform(self, t_s: float, odom_frame: str = "odom") -> StaticTransform:
        """The rig's pose at ``t_s`` in an odometry frame fixed where it started (``/tf``).

        ``odom_frame`` has REP 103 axes, gravity-aligned (z up, x the camera's heading at time
        0 on the floor plane) with its origin at the depth camera's start; the child is the
        calibration's ``frames.base`` (``camera_link``), or ``frames.depth`` where base is
        empty. A robot's odometry drifts; this one is exact.
        """
        w2c0, pos0 = self.depth_view(0.0)
        w2c, pos = self.depth_view(t_s)
        # Odom axes in world coordinates (world: y up): x the heading at time 0, z up.
        heading = w2c0[2] * np.array([1.0, 0.0, 1.0])
        x = heading / max(float(np.linalg.norm(heading)), 1e-9)
        z = np.array([0.0, 1.0, 0.0])
        odom_from_world = np.stack([x, np.cross(z, x), z])
        pose = odom_from_world @ w2c.T  # depth optical axes in odom
        frames = self.calibration.frames
        child = frames.base or frames.depth
        if frames.base:  # camera_link's axes: the optical frame's pose in base, undone
            pose = pose @ quaternion_to_rotation(np.asarray(BASE_TO_OPTICAL_XYZW)).T
        xyzw = rotation_to_quaternion(pose)
        translation = odom_from_world @ (pos - pos0)
        return StaticTransform(
            odom_frame, child, tuple(float(v) for v in translation),  # type: ignore[arg-type]
            tuple(float(v) for v in xyzw),  # type: ignore[arg-type]
        )

    # ----------------------------------------------------------------------------- rendering

    def _static(self, key: str, grid: RayGrid, w2c: np.ndarray,
                pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Room and static objects seen from a view, cast once (each frame when it turns)."""
        cached = None if self.moving else self._static_cache.get(key)
        if cached is None:
            h, w = grid.shape
            z = np.empty((h, w), np.float64)
            ids = np.empty((h, w), np.int32)
            cast_room(grid.x, grid.y, np.ascontiguousarray(w2c.T), pos - self.scene.room_centre,
                      self.scene.room_half, z, ids)
            static = self.scene.static
            if len(static):
                params = to_camera(static, w2c, pos)
                boxes = grid.pixel_boxes(camera_aabbs(static.kind, params))
                cast_primitives(grid.x, grid.y, static.kind, params, boxes, static.owner,
                                N_ROOM_FACES, z, ids, np.zeros((h, w), np.uint16))
            cached = (z, ids)
            if not self.moving:
                self._static_cache[key] = cached
        return cached

    def _dynamic(self, t_s: float) -> tuple[PrimitiveSet, list[Any]]:
        """Moving primitives at ``t_s``: people, the dog, and the calibration target if any."""
        dynamic, people = self.scene.dynamic_at(t_s)
        if self.target is None:
            return dynamic, people
        spec = self.target.spec
        rot_cam, origin_cam = self.target.board_pose(t_s)
        w2c, cam_pos = self._depth_view
        rot = w2c.T @ rot_cam  # board -> world
        gx, gy = spec.grid_extent_m
        centre = cam_pos + w2c.T @ (origin_cam + rot_cam @ np.array([gx / 2, gy / 2, 0.0]))
        pw, ph = spec.plate_size_m
        builder = PrimitiveBuilder()
        builder.holed_board(centre, rot, (pw / 2, ph / 2), spec.hole_radius_m, spec.spacing_m,
                            spec.pattern_size, (-gx / 2, -gy / 2),
                            material=self._target_material)
        return concat(dynamic, builder.build()), people

    def target_points_depth(self, t_s: float) -> np.ndarray:
        """(N, 3) true hole centres in the depth optical frame at ``t_s`` (metres)."""
        if self.target is None:
            raise ValueError("this simulator has no calibration target")
        rot, origin = self.target.board_pose(t_s)
        return self.target.spec.object_points() @ rot.T + origin

    def _render(self, key: str, grid: RayGrid, w2c: np.ndarray, pos: np.ndarray,
                dynamic: PrimitiveSet) -> _Render:
        static_z, static_ids = self._static(key, grid, w2c, pos)
        z = static_z.copy()
        ids = static_ids.copy()
        owners = np.zeros(z.shape, np.uint16)
        static = self.scene.static
        offset = N_ROOM_FACES + len(static)
        params = to_camera(dynamic, w2c, pos)
        boxes = grid.pixel_boxes(camera_aabbs(dynamic.kind, params))
        cast_primitives(grid.x, grid.y, dynamic.kind, params, boxes, dynamic.owner, offset,
                        z, ids, owners)
        id_material = np.concatenate(
            [np.arange(N_ROOM_FACES, dtype=np.int32), static.material, dynamic.material]
        )
        id_owner = np.concatenate(
            [np.full(N_ROOM_FACES, -1, np.int32), static.owner, dynamic.owner]
        )
        kinds = np.concatenate([static.kind, dynamic.kind])
        all_params = np.concatenate([to_camera(static, w2c, pos), params]) if len(static) else (
            params
        )
        return _Render(z, ids, owners, all_params, kinds, id_material, id_owner, w2c, pos, grid)

    def _truth(self, r: _Render, people: list, scale: float = 1.0) -> tuple[PersonTruth, ...]:
        slots = max(len(self.identities), 1)
        visible, alone, box = person_stats(r.ids, r.owners, r.id_owner, min(slots, MAX_PEOPLE))
        out = []
        for person in people:
            s = person.slot
            if visible[s] == 0:
                continue
            pos = r.world_to_cam @ (person.pelvis_m - r.cam_pos)
            vel = r.world_to_cam @ person.velocity_mps
            out.append(PersonTruth(
                pid=int(person.pid),
                box_xyxy=tuple(float(v) * scale for v in box[s]),  # type: ignore[arg-type]
                visibility=float(visible[s] / max(alone[s], 1)),
                position_m=tuple(round(float(v), 6) for v in pos),  # type: ignore[arg-type]
                velocity_mps=tuple(round(float(v), 6) for v in vel),  # type: ignore[arg-type]
            ))
        return tuple(out)

    def render_depth(self, index: int, *, rgb: bool = False) -> DepthSample:
        """Render depth frame ``index`` (and the aligned RGB view when ``rgb``)."""
        t_s = self.depth_time(index)
        dynamic, people = self._dynamic(t_s)
        w2c, pos = self.depth_view(t_s)
        r = self._render("depth", self._depth_grid, w2c, pos, dynamic)
        truth = self._truth(r, people)
        depth_mm = self._depth_sensor(r, index)
        colour = None
        if rgb:
            colour = self._rgb_sensor(
                self._render("rgb", self._rgb_grid, w2c, pos, dynamic), index
            )
        return DepthSample(index, t_s, self.depth_stamp_ns(index), depth_mm, truth, colour)

    def render_thermal(self, index: int) -> ThermalSample:
        """Render thermal frame ``index``.

        A frame inside a flat-field correction repeats the last frame captured before the FFC
        began (the first frame of the sequence for the FFC at start-up), so any frame can be
        rendered on its own, in any order.
        """
        t_s = self.thermal_time(index)
        frozen = self.ffc_active(t_s)
        source = index
        if frozen:
            k = int(np.searchsorted(self._ffc_starts, t_s, side="right")) - 1
            before = int(np.ceil((self._ffc_starts[k] - self._thermal_phase_s)
                                 / self._thermal_period_s)) - 1
            source = max(before, 0)
        t_src = self.thermal_time(source)
        dynamic, _ = self._dynamic(t_src)
        w2c, pos = self.thermal_view(t_src)
        image = self._thermal_sensor(
            self._render("thermal", self._thermal_grid, w2c, pos, dynamic), source, t_src
        )
        telemetry = encode_telemetry(
            frame_counter=index, time_counter_ms=int(t_s * 1000) & 0xFFFFFFFF,
            ffc_state=FFC_IN_PROGRESS if frozen else FFC_COMPLETE,
            fpa_temp_ck=int(round(self._fpa_k * 100)),
        )
        return ThermalSample(index, t_s, self.thermal_stamp_ns(index), image, frozen, telemetry)

    def _depth_sensor(self, r: _Render, index: int) -> np.ndarray:
        s = self.sensors
        h, w = r.z.shape
        rng = np.random.default_rng([self.seed, 0xDE7, index])
        smooth = _smooth_field(rng, h, w, 8, 1.0)
        blobs = _smooth_field(rng, h, w, 6, 1.2, uniform=True)
        far = _smooth_field(rng, h, w, 4, 1.0, uniform=True)
        shift = (int(rng.integers(h)), int(rng.integers(w)))
        id_dropout = self.scene.materials[:, 1][r.id_material]
        out = np.empty((h, w), np.uint16)
        _depth_model(
            r.z, r.ids, id_dropout, smooth, blobs, far, self._white, shift[0], shift[1],
            s.subpixel / (s.stereo_focal_px * s.baseline_m), s.min_z_m, s.max_z_m,
            s.far_dropout_start_m, out,
        )
        _occlusion_shadow(out, s.stereo_focal_px * w / 1280.0 * s.baseline_m * 1000.0)
        return out

    def _thermal_sensor(self, r: _Render, index: int, t_s: float) -> np.ndarray:
        s = self.sensors
        mats = self.scene.materials
        rows = r.id_material[r.ids]
        kelvin = mats[:, 0][rows]
        grad = mats[:, 9][rows]
        if np.any(grad):
            # World height of each hit: camera height + the up component of the hit point.
            up_cam = r.world_to_cam @ np.array([0.0, 1.0, 0.0])
            z = np.where(np.isfinite(r.z), r.z, 0.0)
            height = r.cam_pos[1] + z * (up_cam[0] * r.grid.x + up_cam[1] * r.grid.y + up_cam[2])
            kelvin = kelvin + grad * (height - 1.3)
        th = self.calibration.thermal
        image = cv2.resize(kelvin, (th.width, th.height), interpolation=cv2.INTER_AREA)
        image = cv2.GaussianBlur(image, (0, 0), s.thermal_blur_px)
        rng = np.random.default_rng([self.seed, 0x7E4, index])
        k = int(np.searchsorted(self._ffc_starts, t_s, side="right")) - 1
        fpn_rng = np.random.default_rng([self.seed, 0xF9, max(k, 0)])
        since_ffc = t_s - self._ffc_starts[max(k, 0)]
        fpn = fpn_rng.normal(0.0, s.thermal_fpn_k, th.width) * (1.0 + since_ffc / 120.0)
        image = (
            image - self._vignetting_k * self._vignette + fpn[None, :]
            + rng.normal(0.0, s.thermal_noise_k, image.shape) + self._radiometric_offset_k
        )
        return np.clip(np.rint(image * 100.0), 1, 65535).astype(np.uint16)

    def _rgb_sensor(self, r: _Render, index: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, 0xC01, index])
        light = np.random.default_rng([self.seed, 0x119])
        direction = np.array([light.uniform(-0.6, 0.6), light.uniform(-1.0, -0.3),
                              light.uniform(-0.8, 0.2)])
        direction /= np.linalg.norm(direction)
        light_cam = r.world_to_cam @ -direction
        gain = light.uniform(0.55, 1.25) * (1.0 + 0.02 * rng.standard_normal())
        tint = np.clip(1.0 + light.normal(0.0, 0.07, 3), 0.8, 1.2)
        ambient = light.uniform(0.3, 0.55)
        kinds = np.concatenate([np.full(N_ROOM_FACES, -1, np.int64), r.kinds.astype(np.int64)])
        params = np.concatenate([np.zeros((N_ROOM_FACES, r.params.shape[1])), r.params])
        face_normals = np.array([[-1, 0, 0], [1, 0, 0], [0, -1, 0], [0, 1, 0], [0, 0, -1],
                                 [0, 0, 1]], dtype=np.float64) @ r.world_to_cam.T
        mats = self.scene.materials
        rgb = _shade(
            r.grid.x, r.grid.y, r.z, r.ids, kinds, params, face_normals,
            np.ascontiguousarray(mats[:, 2:9][r.id_material]), np.ascontiguousarray(r.world_to_cam),
            r.cam_pos, light_cam, float(ambient),
        )
        rgb = rgb * (gain * tint)[None, None, :]
        rgb += rng.normal(0.0, 0.012, rgb.shape)
        return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def _distorted_grid(intr: CameraIntrinsics, supersample: int) -> RayGrid:
    """Rays of a distorted camera at ``supersample`` x its resolution (sub-pixel centres)."""
    w, h = intr.width * supersample, intr.height * supersample
    u = (np.arange(w) + 0.5) / supersample - 0.5
    v = (np.arange(h) + 0.5) / supersample - 0.5
    uu, vv = np.meshgrid(u, v)
    k = intr.k
    x, y = undistort_normalized((uu - k[0, 2]) / k[0, 0], (vv - k[1, 2]) / k[1, 1],
                                intr.distortion)
    return RayGrid(np.ascontiguousarray(x), np.ascontiguousarray(y))


def _smooth_field(
    rng: np.random.Generator, h: int, w: int, step: int, sigma: float, uniform: bool = False
) -> np.ndarray:
    """(h, w) float32 spatially correlated field (blobs about ``step`` px).

    Standard normal marginals, or roughly uniform on [0, 1] with ``uniform``.
    """
    lh, lw = h // step + 2, w // step + 2
    white = rng.standard_normal((lh, lw), dtype=np.float32)
    # Renormalise: blurring white noise shrinks its variance by about 1 / (4 pi sigma^2).
    low = cv2.GaussianBlur(white, (0, 0), sigma) * np.float32(np.sqrt(4.0 * np.pi) * sigma)
    if uniform:
        low = np.asarray(ndtr(low), dtype=np.float32)
    return cv2.resize(low, (w, h), interpolation=cv2.INTER_LINEAR)


@numba.njit(cache=True)
def _depth_model(  # pragma: no cover - jitted
    z: np.ndarray, ids: np.ndarray, id_dropout: np.ndarray, smooth: np.ndarray,
    blobs: np.ndarray, far: np.ndarray, white: np.ndarray, dv: int, du: int, k_sigma: float,
    min_z: float, max_z: float, far_start: float, out: np.ndarray,
) -> None:
    """D435 depth in mm from true depth: stereo noise and dropouts (see the module docstring)."""
    h, w = z.shape
    for v in range(h):
        vw = (v + dv) % h
        for u in range(w):
            t = z[v, u]
            if not (min_z <= t <= max_z):
                out[v, u] = 0
                continue
            if blobs[v, u] < id_dropout[ids[v, u]]:
                out[v, u] = 0
                continue
            if t > far_start and far[v, u] < 0.15 * (t - far_start) / (max_z - far_start):
                out[v, u] = 0
                continue
            n = white[vw, (u + du) % w]
            if abs(n) > 3.3:  # the rare isolated speckle with no match
                out[v, u] = 0
                continue
            mm = (t + k_sigma * t * t * (0.8 * smooth[v, u] + 0.6 * n)) * 1000.0
            out[v, u] = np.uint16(min(max(mm + 0.5, 0.0), 65535.0))


@numba.njit(cache=True)
def _occlusion_shadow(depth_mm: np.ndarray, fb_mm_px: float) -> None:  # pragma: no cover
    """Zero the background the right imager cannot see, left of every near object's edge.

    The shadow width in pixels is ``f * B * (1/z_near - 1/z_far)``.
    """
    h, w = depth_mm.shape
    for v in range(h):
        for u in range(1, w):
            zn = float(depth_mm[v, u])
            zf = float(depth_mm[v, u - 1])
            if zn <= 0.0 or zf <= 0.0 or zf - zn < 60.0 + 0.02 * zn:
                continue
            width = int(fb_mm_px * (1.0 / zn - 1.0 / zf))
            lo = max(0, u - width)
            for k in range(lo, u):
                if float(depth_mm[v, k]) > zn + 60.0:
                    depth_mm[v, k] = 0


@numba.njit(cache=True)
def _shade(  # pragma: no cover - jitted
    rx: np.ndarray, ry: np.ndarray, z: np.ndarray, ids: np.ndarray, kinds: np.ndarray,
    params: np.ndarray, face_normals: np.ndarray, mat: np.ndarray, w2c: np.ndarray,
    cam_pos: np.ndarray, light: np.ndarray, ambient: float,
) -> np.ndarray:
    """Lambert shading with per-material colour and patterns (stripes, checks) in world space."""
    h, w = z.shape
    out = np.zeros((h, w, 3), np.float64)
    for v in range(h):
        for u in range(w):
            t = z[v, u]
            i = ids[v, u]
            if i < 0 or not np.isfinite(t):
                continue
            px = t * rx[v, u]
            py = t * ry[v, u]
            pz = t
            k = kinds[i]
            p = params[i]
            if k < 0:
                nx, ny, nz = face_normals[i, 0], face_normals[i, 1], face_normals[i, 2]
            elif k == ELLIPSOID:
                dx, dy, dz = px - p[0], py - p[1], pz - p[2]
                lx = p[3] * dx + p[4] * dy + p[5] * dz
                ly = p[6] * dx + p[7] * dy + p[8] * dz
                lz = p[9] * dx + p[10] * dy + p[11] * dz
                nx = p[3] * lx + p[6] * ly + p[9] * lz
                ny = p[4] * lx + p[7] * ly + p[10] * lz
                nz = p[5] * lx + p[8] * ly + p[11] * lz
            elif k == BOX:
                dx, dy, dz = px - p[0], py - p[1], pz - p[2]
                best = -1.0
                nx = ny = nz = 0.0
                for a in range(3):
                    loc = p[3 + 3 * a] * dx + p[4 + 3 * a] * dy + p[5 + 3 * a] * dz
                    ratio = abs(loc) / max(p[12 + a], 1e-9)
                    if ratio > best:
                        best = ratio
                        sgn = 1.0 if loc > 0 else -1.0
                        nx, ny, nz = sgn * p[3 + 3 * a], sgn * p[4 + 3 * a], sgn * p[5 + 3 * a]
            elif k == HOLED_BOARD:
                nx, ny, nz = p[9], p[10], p[11]
                if nx * px + ny * py + nz * pz > 0:  # the side facing the camera
                    nx, ny, nz = -nx, -ny, -nz
            else:
                bax, bay, baz = p[3] - p[0], p[4] - p[1], p[5] - p[2]
                dx, dy, dz = px - p[0], py - p[1], pz - p[2]
                den = max(bax * bax + bay * bay + baz * baz, 1e-12)
                s = min(max((dx * bax + dy * bay + dz * baz) / den, 0.0), 1.0)
                nx, ny, nz = dx - s * bax, dy - s * bay, dz - s * baz
            norm = np.sqrt(nx * nx + ny * ny + nz * nz) + 1e-12
            lam = max(0.0, (nx * light[0] + ny * light[1] + nz * light[2]) / norm)
            # World point for the pattern.
            wx = w2c[0, 0] * px + w2c[1, 0] * py + w2c[2, 0] * pz + cam_pos[0]
            wy = w2c[0, 1] * px + w2c[1, 1] * py + w2c[2, 1] * pz + cam_pos[1]
            wz = w2c[0, 2] * px + w2c[1, 2] * py + w2c[2, 2] * pz + cam_pos[2]
            m = mat[i]
            pat = m[6]
            second = False
            if pat == 1.0:
                second = int(np.floor(wy / 0.06)) % 2 == 1
            elif pat == 2.0:
                second = (int(np.floor(wy / 0.08)) + int(np.floor((wx + wz) / 0.08))) % 2 == 1
            shade = ambient + (1.0 - ambient) * lam
            for c in range(3):
                out[v, u, c] = (m[3 + c] if second else m[c]) * shade
    return out


def warm_object_boxes(sim: RigSimulator, size_m: float = 0.3) -> np.ndarray:
    """(M, 4) xyxy depth-image boxes around the scene's warm distractors in view at time 0."""
    w2c, pos = sim.depth_view(0.0)
    di = sim.depth_intrinsics
    out = []
    for centre in sim.scene.warm_objects:
        p = w2c @ (np.asarray(centre) - pos)
        if p[2] < 0.3:
            continue
        u = di.fx * p[0] / p[2] + di.cx
        v = di.fy * p[1] / p[2] + di.cy
        half = 0.5 * size_m * di.fx / p[2]
        if -half <= u <= di.width + half and -half <= v <= di.height + half:
            out.append((u - half, v - half, u + half, v + half))
    return np.asarray(out, dtype=np.float64).reshape(-1, 4)
