"""Frame and camera-model types that flow between drivers, fusion and the ROS edge."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from iphd.errors import CameraInfoError


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole camera with OpenCV ``plumb_bob`` distortion (k1, k2, p1, p2, k3).

    Attributes:
        width: image width in pixels.
        height: image height in pixels.
        fx: focal length along x in pixels.
        fy: focal length along y in pixels.
        cx: principal point x in pixels (pixel centres at integer coordinates).
        cy: principal point y in pixels.
        distortion: (k1, k2, p1, p2, k3), dimensionless; all zero for a rectified image.
    """

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion: tuple[float, float, float, float, float] = (0.0, 0.0, 0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        """Reject intrinsics that cannot describe a real camera."""
        if self.width <= 0 or self.height <= 0:
            raise CameraInfoError(
                f"camera size must be positive, got {self.width}x{self.height}; "
                "check the width/height fields of the camera info or calibration file"
            )
        values = (self.fx, self.fy, self.cx, self.cy, *self.distortion)
        if not all(np.isfinite(v) for v in values):
            raise CameraInfoError(f"camera intrinsics contain NaN or inf: {values}")
        if self.fx <= 0 or self.fy <= 0:
            raise CameraInfoError(
                f"focal lengths must be positive pixels, got fx={self.fx}, fy={self.fy}; "
                "an all-zero K matrix usually means the camera info was never filled in"
            )
        if len(self.distortion) != 5:
            raise CameraInfoError(
                f"expected 5 plumb_bob distortion coefficients (k1 k2 p1 p2 k3), "
                f"got {len(self.distortion)}"
            )

    @property
    def k(self) -> np.ndarray:
        """(3, 3) float64 camera matrix."""
        return np.array(
            [[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]], dtype=np.float64
        )

    @property
    def has_distortion(self) -> bool:
        """True when any distortion coefficient is non-zero."""
        return any(d != 0.0 for d in self.distortion)

    def scaled(self, width: int, height: int) -> CameraIntrinsics:
        """Return the intrinsics of the same camera resampled to ``width`` x ``height`` pixels.

        Pixel centres stay at integer coordinates, so the principal point maps as
        ``c' = (c + 0.5) * s - 0.5``.
        """
        sx = width / self.width
        sy = height / self.height
        return CameraIntrinsics(
            width=width,
            height=height,
            fx=self.fx * sx,
            fy=self.fy * sy,
            cx=(self.cx + 0.5) * sx - 0.5,
            cy=(self.cy + 0.5) * sy - 0.5,
            distortion=self.distortion,
        )


SUPPORTED_DISTORTION_MODELS = ("plumb_bob", "rational_polynomial", "brown_conrady", "none")


@dataclass(frozen=True)
class CameraInfoFields:
    """The calibration fields of a sensor_msgs/CameraInfo, matrices row-major.

    Attributes:
        distortion_model: ``plumb_bob``.
        d: (k1, k2, p1, p2, k3).
        k: 3x3 camera matrix.
        r: 3x3 rectification rotation (identity: the image is not rectified further).
        p: 3x4 projection matrix (K with a zero fourth column: a monocular camera).
    """

    distortion_model: str
    d: tuple[float, ...]
    k: tuple[float, ...]
    r: tuple[float, ...]
    p: tuple[float, ...]


def camera_info_fields(intr: CameraIntrinsics) -> CameraInfoFields:
    """Return the CameraInfo calibration fields (plumb_bob, no rectification) of ``intr``."""
    fx, fy, cx, cy = float(intr.fx), float(intr.fy), float(intr.cx), float(intr.cy)
    return CameraInfoFields(
        distortion_model="plumb_bob",
        d=tuple(float(v) for v in intr.distortion),
        k=(fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0),
        r=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
        p=(fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0),
    )


def intrinsics_from_camera_info(
    width: int, height: int, distortion_model: str, d: Sequence[float], k: Sequence[float]
) -> CameraIntrinsics:
    """Return the intrinsics described by the fields of a CameraInfo.

    Raises:
        CameraInfoError: unsupported distortion model, or an unfilled K matrix.
    """
    model = distortion_model or "plumb_bob"
    if model not in SUPPORTED_DISTORTION_MODELS:
        raise CameraInfoError(
            f"distortion model '{model}' is not supported; publish plumb_bob coefficients"
        )
    coeffs = [float(v) for v in d]
    if model == "rational_polynomial" and any(v != 0.0 for v in coeffs[5:]):
        raise CameraInfoError("rational_polynomial with k4..k6 != 0 is not supported")
    coeffs = coeffs[:5] + [0.0] * (5 - len(coeffs[:5]))
    kk = [float(v) for v in k]
    if len(kk) != 9:
        raise CameraInfoError(f"camera matrix K must have 9 values, got {len(kk)}")
    return CameraIntrinsics(
        width=int(width),
        height=int(height),
        fx=kk[0],
        fy=kk[4],
        cx=kk[2],
        cy=kk[5],
        distortion=(coeffs[0], coeffs[1], coeffs[2], coeffs[3], coeffs[4]),
    )


@dataclass(frozen=True)
class DepthFrame:
    """One depth image.

    Attributes:
        depth_mm: (H, W) uint16 depth along the optical axis in millimetres; 0 = invalid.
        stamp_ns: capture time in nanoseconds on the clock the driver maps to (ROS time).
        frame_id: optical frame of the depth camera.
        intrinsics: camera model of ``depth_mm``; None when not (yet) known.
        seq: driver frame counter, for drop accounting.
    """

    depth_mm: np.ndarray
    stamp_ns: int
    frame_id: str = "depth_optical_frame"
    intrinsics: CameraIntrinsics | None = None
    seq: int = 0


@dataclass(frozen=True)
class ColorFrame:
    """One colour image of the D435's RGB camera (off unless asked for: it shows people).

    Attributes:
        rgb: (H, W, 3) uint8, red-green-blue.
        stamp_ns: capture time in nanoseconds on the same clock as the depth frames.
        frame_id: optical frame of the colour camera.
        intrinsics: camera model of ``rgb``; None when not known.
        seq: driver frame counter.
    """

    rgb: np.ndarray
    stamp_ns: int
    frame_id: str = "color_optical_frame"
    intrinsics: CameraIntrinsics | None = None
    seq: int = 0


@dataclass(frozen=True)
class ThermalFrame:
    """One radiometric thermal image.

    Attributes:
        thermal_ck: (H, W) uint16 scene temperature in centi-kelvin (TLinear); 0 = no data.
        stamp_ns: capture time in nanoseconds on the thermal camera's clock mapping (see the
            rig calibration's clock offset for how it relates to the depth clock).
        frame_id: optical frame of the thermal camera.
        intrinsics: camera model of ``thermal_ck``; None when not (yet) known.
        seq: driver frame counter (Lepton frame counter from telemetry when available).
        telemetry: decoded telemetry fields, empty when the stream carries none.
    """

    thermal_ck: np.ndarray
    stamp_ns: int
    frame_id: str = "thermal_optical_frame"
    intrinsics: CameraIntrinsics | None = None
    seq: int = 0
    telemetry: dict[str, int] = field(default_factory=dict)
