"""Ray-cast stand-in for the rig simulator: a room with walking people seen by D435 + Lepton.

It exists so that the demo and the graph tests run without hardware until the full rig simulator
(scenes, articulated people, sensor models, datasets) replaces it. Geometry is analytic: floor and
back wall planes, people as vertical cylinders (body + head), all in the depth optical frame
(x right, y down, z forward, metres).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from iphd.calibration import RigCalibration
from iphd.sensors.frames import CameraIntrinsics

FLOOR_Y_M = 1.2  # camera 1.2 m above the floor
BACK_WALL_Z_M = 7.0
FLOOR_K = 293.0
WALL_K = 295.5
BODY_K = 303.5  # clothed torso
HEAD_K = 307.0  # skin


def d435_intrinsics(width: int = 848, height: int = 480) -> CameraIntrinsics:
    """Nominal D435 depth intrinsics (~87 deg HFOV, rectified) at ``width`` x ``height``."""
    fx = 0.5 * width / np.tan(np.deg2rad(87.0 / 2))
    return CameraIntrinsics(width, height, fx, fx, (width - 1) / 2, (height - 1) / 2)


@dataclass(frozen=True)
class StandInConfig:
    """Scene and sensor settings of the stand-in.

    Attributes:
        width: depth image width in pixels.
        height: depth image height in pixels.
        people: number of people walking back and forth.
        seed: random seed of people placement and noise.
        depth_noise_mm_at_1m: depth noise standard deviation at 1 m; grows with Z squared.
        thermal_noise_ck: thermal temporal noise standard deviation in centi-kelvin.
    """

    width: int = 848
    height: int = 480
    people: int = 2
    seed: int = 0
    depth_noise_mm_at_1m: float = 2.0
    thermal_noise_ck: float = 5.0

    def __post_init__(self) -> None:
        """Reject sizes and counts that cannot be rendered."""
        if self.width < 16 or self.height < 16:
            raise ValueError(
                f"stand-in image size must be at least 16x16, got {self.width}x{self.height}"
            )
        if not 0 <= self.people <= 8:
            raise ValueError(f"stand-in people must be in [0, 8], got {self.people}")


class StandInRig:
    """Renders time-consistent depth (mm) and thermal (centi-kelvin) frames of a simple scene."""

    def __init__(self, calibration: RigCalibration, config: StandInConfig | None = None) -> None:
        self.config = config or StandInConfig()
        self.calibration = calibration
        self.depth_intrinsics = d435_intrinsics(self.config.width, self.config.height)
        rng = np.random.default_rng(self.config.seed)
        n = self.config.people
        self._x0 = rng.uniform(-1.5, 1.5, n)
        self._z = rng.uniform(2.0, 5.0, n)
        self._speed = rng.uniform(0.4, 1.2, n) * rng.choice([-1.0, 1.0], n)
        self._height = rng.uniform(1.55, 1.90, n)
        self._rng = np.random.default_rng(self.config.seed + 1)
        # A bank of noise images, rolled per frame: drawing fresh 848x480 normals costs more than
        # the whole render.
        shape = (self.config.height, self.config.width)
        self._noise_bank = self._rng.standard_normal((4, *shape), dtype=np.float32)
        self._dropout_bank = self._rng.random((4, *shape), dtype=np.float32) < 0.005
        self._frame = 0
        # Depth rendered at half resolution then upsampled: the stand-in must stay cheap.
        half = self.depth_intrinsics.scaled(self.config.width // 2, self.config.height // 2)
        self._depth_rays = _pixel_rays(half)
        th = calibration.thermal
        grid = np.stack(np.meshgrid(np.arange(th.width), np.arange(th.height)), -1).astype(
            np.float64
        )
        normalized = cv2.undistortPoints(
            grid.reshape(-1, 1, 2), th.k, np.asarray(th.distortion)
        ).reshape(th.height, th.width, 2)
        rays_th = np.dstack([normalized, np.ones((th.height, th.width))])
        rot_inv = calibration.rotation.T
        self._thermal_rays = (rays_th @ rot_inv.T).astype(np.float32)
        self._thermal_origin = (-rot_inv @ calibration.translation_m).astype(np.float32)

    def people_positions(self, t_s: float) -> np.ndarray:
        """(N, 2) person centre (x, z) in metres at time ``t_s``: back and forth along x."""
        span = 2.0
        phase = (self._x0 + self._speed * t_s + span) % (4 * span)
        x = np.where(phase < 2 * span, phase - span, 3 * span - phase)
        return np.stack([x, self._z], axis=1)

    def _cast(
        self, origin: np.ndarray, rays: np.ndarray, t_s: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return (hit parameter t along the ray, surface temperature K) per ray."""
        dx, dy, dz = rays[..., 0], rays[..., 1], rays[..., 2]
        ox, oy, oz = (float(v) for v in origin)
        with np.errstate(divide="ignore", invalid="ignore"):
            t_floor = np.where(dy > 1e-6, (FLOOR_Y_M - oy) / dy, np.inf)
            t_wall = np.where(dz > 1e-6, (BACK_WALL_Z_M - oz) / dz, np.inf)
        best = np.minimum(t_floor, t_wall).astype(np.float32)
        temp = np.where(t_floor < t_wall, FLOOR_K, WALL_K).astype(np.float32)
        a = dx * dx + dz * dz
        for (px_, pz_), h_ in zip(self.people_positions(t_s), self._height, strict=True):
            # Python floats keep the float32 arrays float32 (numpy scalars would upcast).
            px, pz, h = float(px_), float(pz_), float(h_)
            for radius, y_top, y_bottom, kelvin in (
                (0.22, FLOOR_Y_M - h + 0.25, FLOOR_Y_M, BODY_K),
                (0.10, FLOOR_Y_M - h, FLOOR_Y_M - h + 0.25, HEAD_K),
            ):
                b = 2 * (dx * (ox - px) + dz * (oz - pz))
                c = (ox - px) ** 2 + (oz - pz) ** 2 - radius**2
                disc = b * b - 4 * a * c
                with np.errstate(invalid="ignore", divide="ignore"):
                    t_hit = (-b - np.sqrt(disc)) / (2 * a)
                y_hit = oy + t_hit * dy
                hit = (
                    (disc > 0)
                    & (t_hit > 0)
                    & (y_hit >= y_top)
                    & (y_hit <= y_bottom)
                    & (t_hit < best)
                )
                best = np.where(hit, t_hit, best)
                temp = np.where(hit, kelvin, temp)
        return best, temp

    def render_depth(self, t_s: float) -> np.ndarray:
        """(H, W) uint16 depth in millimetres at time ``t_s``; 0 beyond 10 m and on dropouts."""
        z_m, _ = self._cast(np.zeros(3, np.float32), self._depth_rays, t_s)
        z_m = cv2.resize(
            z_m, (self.config.width, self.config.height), interpolation=cv2.INTER_NEAREST
        )
        self._frame += 1
        k = self._frame % len(self._noise_bank)
        shift = int(self._rng.integers(0, self.config.width))
        noise = np.roll(self._noise_bank[k], shift, axis=1)
        depth = z_m * 1000.0 + noise * (self.config.depth_noise_mm_at_1m * z_m * z_m)
        depth[(z_m > 10.0) | ~np.isfinite(z_m) | np.roll(self._dropout_bank[k], shift, axis=0)] = 0
        return np.clip(depth, 0, 65535).astype(np.uint16)

    def render_thermal(self, t_s: float) -> np.ndarray:
        """(120, 160) uint16 Lepton image in centi-kelvin at time ``t_s``."""
        _, kelvin = self._cast(self._thermal_origin, self._thermal_rays, t_s)
        image = cv2.GaussianBlur(kelvin, (3, 3), 0.7) * 100.0
        image += (
            self._rng.standard_normal(image.shape, dtype=np.float32) * self.config.thermal_noise_ck
        )
        return np.clip(image, 0, 65535).astype(np.uint16)


def _pixel_rays(intr: CameraIntrinsics) -> np.ndarray:
    """(H, W, 3) float32 rays with z = 1 through each pixel centre of a rectified camera."""
    u, v = np.meshgrid(np.arange(intr.width), np.arange(intr.height))
    return np.dstack([(u - intr.cx) / intr.fx, (v - intr.cy) / intr.fy, np.ones(u.shape)]).astype(
        np.float32
    )
