"""Fusion stage: validate a synchronised depth/thermal pair, register thermal, fix zero patches."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from iphd.calibration import RigCalibration
from iphd.errors import CameraInfoError, FrameError
from iphd.noise import fix_zero_patches
from iphd.registration import Registrar, check_image
from iphd.sensors.frames import CameraIntrinsics, DepthFrame, ThermalFrame

#: Output scale of the IPHD dataset's registered thermal images (213x120 from 1280x720).
IPHD_SCALE = 1.0 / 6.0
#: Depth image encodings ``depth_to_mm`` accepts.
DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")
#: Range of a thermal frame's median (its non-zero pixels) that reads as centi-kelvin: -73 to
#: 127 deg C. A Lepton at 0.1 K resolution gives about 2 950 for a room at 22 deg C, raw
#: counts about 8 000 and AGC 0-255, all far outside it.
CENTI_KELVIN_MEDIAN = (20_000, 40_000)


#: Beyond this median of its valid pixels a depth image is not millimetres: a D435 measures
#: about 0.3-10 m, and 0.1 mm depth units (or 32FC1 in millimetres) read 10x (1000x) too far.
DEPTH_MEDIAN_MAX_M = 15.0


def depth_image_units_problem(depth_mm: np.ndarray, step: int = 1) -> str | None:
    """``depth_units_problem`` of a depth image (every ``step``-th pixel each way).

    None without a valid pixel.
    """
    sample = depth_mm[::step, ::step]
    valid = sample[sample > 0]
    return depth_units_problem(float(np.median(valid)) / 1000.0) if valid.size else None


def depth_units_problem(median_m: float) -> str | None:
    """What is wrong with depth whose valid pixels have this median, in metres as read.

    None when it is within a D435's reach. The text follows the name of the frame or topic
    and a colon.
    """
    if median_m <= DEPTH_MEDIAN_MAX_M:
        return None
    return (
        f"median {median_m:.1f} m is beyond a D435's range (about 0.3-10 m), so the values are "
        "probably not millimetres (0.1 mm depth units read 10 times too far; 32FC1 must be "
        "metres): set the depth driver's units to 1 mm (realsense2_camera's Z16 default)"
    )


def centi_kelvin_problem(median: float) -> str | None:
    """What is wrong with thermal whose non-zero pixels have this median; None if nothing.

    The text follows the name of the frame or topic and a colon.
    """
    low, high = CENTI_KELVIN_MEDIAN
    if low <= median <= high:
        return None
    return (
        f"median {median:.0f} does not read as centi-kelvin (a 22 deg C room is about "
        "29 500): set the thermal driver to radiometric TLinear output at 0.01 K resolution "
        "(0.1 K gives about 2 950, raw or AGC counts are not temperatures)"
    )


@dataclass(frozen=True)
class FusionConfig:
    """Configuration of the fusion stage.

    Attributes:
        out_size: (width, height) of the registered thermal image; None = the depth image size
            times ``out_scale``.
        out_scale: scale of the registered image relative to the depth image when ``out_size``
            is None (``IPHD_SCALE`` for the IPHD format); 1.0 = the depth resolution, so the
            image lines up pixel for pixel with ``depth/image_raw``.
        occlusion_tolerance_m: absolute part of the registration's occlusion tolerance.
        occlusion_tolerance_rel: part of the occlusion tolerance proportional to the occluder's
            distance (absorbs depth noise and grazing surfaces).
        fix_zero_patches: fill the zero patches left by registration (paper A's noise fixing).
        noise_max_search_px: search range of the zero-patch fixing, in output pixels.
        noise_max_pair_difference_ck: largest difference between the two sides of a pair the
            zero-patch fixing may average, in centi-kelvin; None = no limit (see
            ``iphd.noise.fix_zero_patches``).
    """

    out_size: tuple[int, int] | None = None
    out_scale: float = 1.0
    occlusion_tolerance_m: float = 0.1
    occlusion_tolerance_rel: float = 0.05
    fix_zero_patches: bool = True
    noise_max_search_px: int = 16
    noise_max_pair_difference_ck: int | None = 150

    def __post_init__(self) -> None:
        """Reject values that cannot work."""
        if self.out_size is not None:
            if len(self.out_size) != 2 or any(
                isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in self.out_size
            ):
                raise ValueError(
                    f"FusionConfig.out_size must be (width, height) positive ints or None, "
                    f"got {self.out_size}"
                )
            if self.out_scale != 1.0:
                raise ValueError(
                    f"set either FusionConfig.out_size ({self.out_size}) or out_scale "
                    f"({self.out_scale}), not both"
                )
        if not 0.0 < self.out_scale <= 4.0:
            raise ValueError(f"FusionConfig.out_scale must be in (0, 4], got {self.out_scale}")
        if not self.occlusion_tolerance_m >= 0.0:
            raise ValueError(
                f"FusionConfig.occlusion_tolerance_m must be >= 0 m, got "
                f"{self.occlusion_tolerance_m}"
            )
        if not self.occlusion_tolerance_rel >= 0.0:
            raise ValueError(
                f"FusionConfig.occlusion_tolerance_rel must be >= 0, got "
                f"{self.occlusion_tolerance_rel}"
            )
        if isinstance(self.noise_max_search_px, bool) or self.noise_max_search_px < 1:
            raise ValueError(
                f"FusionConfig.noise_max_search_px must be >= 1, got {self.noise_max_search_px}"
            )
        if self.noise_max_pair_difference_ck is not None and self.noise_max_pair_difference_ck < 0:
            raise ValueError(
                "FusionConfig.noise_max_pair_difference_ck must be >= 0 or None, got "
                f"{self.noise_max_pair_difference_ck}"
            )

    def output_size(self, depth_intrinsics: CameraIntrinsics) -> tuple[int, int]:
        """Return the (width, height) of the registered image for this depth camera."""
        if self.out_size is not None:
            return self.out_size
        return (
            max(1, round(depth_intrinsics.width * self.out_scale)),
            max(1, round(depth_intrinsics.height * self.out_scale)),
        )


def depth_to_mm(array: np.ndarray, encoding: str) -> np.ndarray:
    """Convert a depth image in a ROS image encoding to (H, W) uint16 millimetres.

    Args:
        array: (H, W) image as decoded from the message.
        encoding: ``16UC1`` / ``mono16`` (uint16 millimetres, returned as is) or ``32FC1``
            (float metres: rounded to millimetres; NaN, inf, <= 0 and > 65.535 m become 0).

    Returns:
        (H, W) uint16 depth in millimetres, 0 = invalid.

    Raises:
        FrameError: an unsupported encoding, or an array that does not match the encoding.
    """
    if not isinstance(array, np.ndarray) or array.ndim != 2:
        raise FrameError(
            f"depth image must be a 2-D array, got shape {getattr(array, 'shape', None)}"
        )
    if encoding in ("16UC1", "mono16"):
        if array.dtype.kind != "u" or array.dtype.itemsize != 2:
            raise FrameError(
                f"depth encoding {encoding!r} needs uint16 data, got dtype {array.dtype}"
            )
        return array if array.dtype == np.uint16 else array.astype(np.uint16)
    if encoding == "32FC1":
        if array.dtype.kind != "f":
            raise FrameError(f"depth encoding '32FC1' needs float data, got dtype {array.dtype}")
        metres = array.astype(np.float32, copy=False)
        with np.errstate(invalid="ignore", over="ignore"):
            valid = (metres > 0.0) & (metres <= np.float32(65.535))
            mm = np.rint(np.where(valid, metres, np.float32(0.0)) * np.float32(1000.0))
        return mm.astype(np.uint16)
    raise FrameError(
        f"unsupported depth encoding {encoding!r}; accepted encodings are "
        f"{', '.join(DEPTH_ENCODINGS)} (uint16 millimetres or float32 metres)"
    )


class FusionPipeline:
    """Turns a synchronised (depth, thermal) pair into registered, zero-fixed thermal.

    Nothing is silently published wrong: every frame is validated first and a bad one raises.

    Attributes:
        calibration: the rig calibration.
        config: the stage configuration.
        last_timings_ms: per-stage wall time of the last ``process`` call (``validate``,
            ``register``, ``fix``, ``total``) in milliseconds.
        last_zero_fraction: fraction of zero pixels after registration and after fixing.
    """

    def __init__(self, calibration: RigCalibration, config: FusionConfig | None = None) -> None:
        self.calibration = calibration
        self.config = config if config is not None else FusionConfig()
        self.last_timings_ms: dict[str, float] = {}
        self.last_zero_fraction: tuple[float, float] = (0.0, 0.0)
        self._registrar: Registrar | None = None

    def registrar(self, depth_intrinsics: CameraIntrinsics) -> Registrar:
        """Return the registrar for this depth camera model (rebuilt when the model changes)."""
        registrar = self._registrar
        if registrar is None or registrar.depth_intrinsics != depth_intrinsics:
            registrar = Registrar(
                depth_intrinsics,
                self.calibration,
                self.config.output_size(depth_intrinsics),
                self.config.occlusion_tolerance_m,
                self.config.occlusion_tolerance_rel,
            )
            self._registrar = registrar
        return registrar

    def check_depth(self, depth: DepthFrame) -> CameraIntrinsics:
        """Check one depth frame on its own and return its intrinsics.

        Raises:
            CameraInfoError: no depth intrinsics yet.
            FrameError: wrong dtype, dimensionality or size, or an all-zero image.
        """
        intr = depth.intrinsics
        if intr is None:
            raise CameraInfoError(
                "depth camera_info has not been received yet: the fusion stage needs the depth "
                "intrinsics to register thermal; check that depth/camera_info is published and "
                "remapped next to depth/image_raw"
            )
        check_image(
            depth.depth_mm,
            "depth image",
            (intr.height, intr.width),
            "depth camera_info",
            "the camera_info must describe the image it comes with (same resolution stream)",
        )
        if not depth.depth_mm.any():
            raise FrameError(
                f"depth frame stamped {depth.stamp_ns} ns is all zeros (no valid depth); the "
                "camera may be covered, starting up or misconfigured, so it is not fused"
            )
        return intr

    def check_thermal(self, thermal: ThermalFrame) -> None:
        """Check one thermal frame on its own against the rig calibration.

        Raises:
            CameraInfoError: thermal intrinsics whose size differs from the calibration's.
            FrameError: wrong dtype, dimensionality or size, an all-zero image, or values that
                are not centi-kelvin (``CENTI_KELVIN_MEDIAN``).
        """
        cal = self.calibration.thermal
        th_intr = thermal.intrinsics
        if th_intr is not None and (th_intr.width, th_intr.height) != (cal.width, cal.height):
            raise CameraInfoError(
                f"thermal camera_info says {th_intr.width}x{th_intr.height} but the rig "
                f"calibration is for {cal.width}x{cal.height}; use the calibration made for "
                "this thermal resolution"
            )
        check_image(
            thermal.thermal_ck,
            "thermal image",
            (cal.height, cal.width),
            "rig calibration",
            "strip the Lepton telemetry rows (160x122 -> 160x120) or use the calibration made "
            "for this thermal resolution",
        )
        if not thermal.thermal_ck.any():
            raise FrameError(
                f"thermal frame stamped {thermal.stamp_ns} ns is all zeros; the Lepton may be "
                "in flat-field correction or not streaming radiometric (TLinear) data"
            )
        problem = centi_kelvin_problem(float(np.median(thermal.thermal_ck[thermal.thermal_ck > 0])))
        if problem:
            raise FrameError(f"thermal frame stamped {thermal.stamp_ns} ns: {problem}")

    def validate(self, depth: DepthFrame, thermal: ThermalFrame) -> CameraIntrinsics:
        """Check a pair before processing and return the depth intrinsics.

        Raises:
            CameraInfoError: see ``check_depth`` and ``check_thermal``.
            FrameError: see ``check_depth`` and ``check_thermal``.
        """
        intr = self.check_depth(depth)
        self.check_thermal(thermal)
        return intr

    def process(self, depth: DepthFrame, thermal: ThermalFrame) -> np.ndarray:
        """Validate, register and (optionally) fix one pair.

        Returns:
            (out_h, out_w) uint16 centi-kelvin in the depth optical frame, 0 = no value; see
            ``FusionConfig.output_size`` for the size.

        Raises:
            CameraInfoError: see ``validate``.
            FrameError: see ``validate``.
        """
        t0 = time.perf_counter()
        registrar = self.registrar(self.validate(depth, thermal))
        t1 = time.perf_counter()
        registered = registrar.register(depth.depth_mm, thermal.thermal_ck)
        t2 = time.perf_counter()
        before = 1.0 - np.count_nonzero(registered) / registered.size
        if self.config.fix_zero_patches:
            registered = fix_zero_patches(
                registered,
                self.config.noise_max_search_px,
                self.config.noise_max_pair_difference_ck,
            )
        after = 1.0 - np.count_nonzero(registered) / registered.size
        t3 = time.perf_counter()
        self.last_zero_fraction = (before, after)
        self.last_timings_ms = {
            "validate": (t1 - t0) * 1e3,
            "register": (t2 - t1) * 1e3,
            "fix": (t3 - t2) * 1e3,
            "total": (t3 - t0) * 1e3,
        }
        return registered
