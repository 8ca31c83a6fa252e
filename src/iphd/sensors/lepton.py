"""FLIR Lepton 3.5 radiometric thermal driver for the PureThermal board (flirpy + OpenCV, Y16)."""

from __future__ import annotations

import logging
import struct
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import cv2
import numpy as np

from iphd.errors import (
    ConfigError,
    DeviceNotFoundError,
    FrameError,
    RadiometryError,
    SensorError,
)
from iphd.sensors.clock import HARDWARE_CLOCK, Backoff, ClockMapper
from iphd.sensors.frames import ThermalFrame

logger = logging.getLogger(__name__)

LEPTON_WIDTH = 160
LEPTON_HEIGHT = 120
TELEMETRY_ROWS = 2
TELEMETRY_LINE_WORDS = 80
CENTI = 100.0

# FFC state (telemetry status bits 4-5) of Lepton 3.x.
FFC_NEVER_COMMANDED = 0
FFC_IMMINENT = 1
FFC_IN_PROGRESS = 2
FFC_COMPLETE = 3

_FFC_SHIFT, _FFC_MASK = 4, 0b11
_STATUS_BITS = {
    "ffc_desired": 3,
    "agc_enabled": 12,
    "shutter_lockout": 15,
    "overtemp_shutdown_imminent": 20,
}
# (name, telemetry line, first word, number of 16-bit words); 32-bit values are sent low word
# first. Line A is words 0-79 of the footer, line B 80-159, line C 160-239 (Lepton 3.x
# engineering datasheet, telemetry rows A-C; PureThermal packs the three 80-word lines into two
# 160-pixel rows).
_FIELDS: tuple[tuple[str, str, int, int], ...] = (
    ("telemetry_revision", "A", 0, 1),
    ("time_counter_ms", "A", 1, 2),
    ("status", "A", 3, 2),
    ("frame_counter", "A", 20, 2),
    ("frame_mean", "A", 22, 1),
    ("fpa_temp_counts", "A", 23, 1),
    ("fpa_temp_ck", "A", 24, 1),
    ("fpa_temp_last_ffc_ck", "A", 29, 1),
    ("time_counter_last_ffc_ms", "A", 30, 2),
    ("agc_clip_high", "A", 38, 1),
    ("agc_clip_low", "A", 39, 1),
    ("video_format", "A", 72, 2),
    ("gain_mode", "C", 5, 1),
    ("effective_gain_mode", "C", 6, 1),
    ("tlinear_enabled", "C", 48, 1),
    ("tlinear_resolution", "C", 49, 1),
)
_ALL_ZERO = (
    "thermal frame is all zero: the Lepton sends no image data (still booting, or the "
    "PureThermal lost VoSPI sync); reopen the device or power-cycle the PureThermal"
)
_LINE_START = {"A": 0, "B": TELEMETRY_LINE_WORDS, "C": 2 * TELEMETRY_LINE_WORDS}


@dataclass(frozen=True)
class LeptonConfig:
    """Configuration of the Lepton driver.

    Attributes:
        device: video device: a path (``/dev/video2``), an index (``"2"``), or empty to find
            the PureThermal (USB 1e4e:0100) with flirpy.
        expect_telemetry: the stream is 160x122 with two telemetry rows at the bottom (the
            PureThermal Y16 mode with telemetry, which flirpy's ``grab`` assumes); False for a
            plain 160x120 stream (no FFC or frame-counter information then).
        min_valid_k: lowest plausible median scene temperature in kelvin.
        max_valid_k: highest plausible median scene temperature in kelvin.
        drop_ffc: drop frames while telemetry says a flat-field correction is in progress
            (the shutter is closed, about 1 s: the image is frozen, then re-normalised). Frames
            while it is only imminent (the 2 s or so before it starts) are normal images and
            kept.
        drop_repeated: drop frames whose telemetry frame counter equals the previous frame's
            (without telemetry: whose pixels are identical to the previous frame's).
        retry_initial_s: first reconnect delay in seconds after a device loss.
        retry_max_s: largest reconnect delay in seconds.
        frame_id: optical frame written into every ``ThermalFrame``.
    """

    device: str = ""
    expect_telemetry: bool = True
    min_valid_k: float = 200.0
    max_valid_k: float = 400.0
    drop_ffc: bool = True
    drop_repeated: bool = True
    retry_initial_s: float = 0.5
    retry_max_s: float = 8.0
    frame_id: str = "thermal_optical_frame"

    def __post_init__(self) -> None:
        """Reject values the driver cannot use, naming the field and the value."""
        if not isinstance(self.device, str):
            raise ConfigError(
                f"LeptonConfig.device must be a string (path, index or empty), got {self.device!r}"
            )
        if not 0 < self.min_valid_k < self.max_valid_k:
            raise ConfigError(
                "LeptonConfig needs 0 < min_valid_k < max_valid_k (kelvin), got "
                f"min_valid_k={self.min_valid_k!r}, max_valid_k={self.max_valid_k!r}"
            )
        if self.max_valid_k > np.iinfo(np.uint16).max / CENTI:
            raise ConfigError(
                f"LeptonConfig.max_valid_k={self.max_valid_k!r} K cannot occur in uint16 "
                "centi-kelvin (max 655.35 K)"
            )
        if not self.retry_initial_s > 0:
            raise ConfigError(
                f"LeptonConfig.retry_initial_s must be > 0 seconds, got {self.retry_initial_s!r}"
            )
        if not self.retry_max_s >= self.retry_initial_s:
            raise ConfigError(
                f"LeptonConfig.retry_max_s must be >= retry_initial_s ({self.retry_initial_s}), "
                f"got {self.retry_max_s!r}"
            )
        if not self.frame_id:
            raise ConfigError("LeptonConfig.frame_id must not be empty")

    @property
    def stream_shape(self) -> tuple[int, int]:
        """(rows, columns) of the Y16 frames the capture must deliver."""
        rows = LEPTON_HEIGHT + (TELEMETRY_ROWS if self.expect_telemetry else 0)
        return rows, LEPTON_WIDTH


@dataclass
class LeptonStats:
    """Running counters of a ``LeptonCamera``.

    Attributes:
        frames: frames returned by ``read``.
        dropped_ffc: frames dropped because a flat-field correction was running.
        dropped_repeated: frames dropped as repeats of the previous frame.
        read_failures: grabs that returned no frame.
        reconnects: device losses after which the driver closed the camera to reopen it.
        last_problem: the latest open failure or device loss, as logged; empty again once a
            frame comes.
        last_problem_s: when it happened (``time.monotonic``), 0.0 before any.
        last_ffc_s: when the last frame was dropped for a flat-field correction
            (``time.monotonic``), 0.0 before any.
    """

    frames: int = 0
    dropped_ffc: int = 0
    dropped_repeated: int = 0
    read_failures: int = 0
    reconnects: int = 0
    last_problem: str = ""
    last_problem_s: float = 0.0
    last_ffc_s: float = 0.0


def decode_telemetry(rows: np.ndarray) -> dict[str, int]:
    """Decode the Lepton telemetry rows of a PureThermal Y16 frame.

    Args:
        rows: (2, 160) uint16 telemetry rows (the last two rows of a 160x122 frame).

    Returns:
        Field name -> value: ``telemetry_revision``, ``time_counter_ms`` (ms since power-on),
        ``status`` (raw 32-bit status word) and its bits ``ffc_desired``, ``ffc_state``
        (0 never commanded, 1 imminent, 2 in progress, 3 complete), ``agc_enabled``,
        ``shutter_lockout``, ``overtemp_shutdown_imminent``; ``frame_counter``, ``frame_mean``,
        ``fpa_temp_counts``, ``fpa_temp_ck`` (focal-plane temperature, centi-kelvin),
        ``fpa_temp_last_ffc_ck``, ``time_counter_last_ffc_ms``, ``agc_clip_high``,
        ``agc_clip_low``, ``video_format``, ``gain_mode`` (0 high, 1 low, 2 auto),
        ``effective_gain_mode``, ``tlinear_enabled`` and ``tlinear_resolution``
        (0 = 0.1 K, 1 = 0.01 K per count).

    Raises:
        FrameError: when ``rows`` is not (2, 160) uint16.
    """
    if rows.shape != (TELEMETRY_ROWS, LEPTON_WIDTH) or rows.dtype != np.uint16:
        raise FrameError(
            f"telemetry must be ({TELEMETRY_ROWS}, {LEPTON_WIDTH}) uint16, "
            f"got shape {rows.shape} dtype {rows.dtype}"
        )
    words = rows.reshape(-1)
    out: dict[str, int] = {}
    for name, line, first, count in _FIELDS:
        start = _LINE_START[line] + first
        value = 0
        for k in range(count):
            value |= int(words[start + k]) << (16 * k)
        out[name] = value
    status = out["status"]
    out["ffc_state"] = (status >> _FFC_SHIFT) & _FFC_MASK
    for name, bit in _STATUS_BITS.items():
        out[name] = (status >> bit) & 1
    return out


def encode_telemetry(
    *,
    frame_counter: int = 0,
    time_counter_ms: int = 0,
    ffc_state: int = FFC_COMPLETE,
    ffc_desired: bool = False,
    agc_enabled: bool = False,
    fpa_temp_ck: int = 30_000,
    tlinear_enabled: bool = True,
    tlinear_resolution: int = 1,
    telemetry_revision: int = 0x0E,
) -> np.ndarray:
    """Return (2, 160) uint16 telemetry rows as a radiometric Lepton 3.5 would send them.

    The inverse of ``decode_telemetry`` for the fields a driver acts on; the simulator and tests
    use it to build PureThermal-like 160x122 frames. Unlisted words are zero.
    """
    words = np.zeros(TELEMETRY_ROWS * LEPTON_WIDTH, dtype=np.uint16)
    status = ((ffc_state & _FFC_MASK) << _FFC_SHIFT) | (int(ffc_desired) << 3)
    status |= int(agc_enabled) << _STATUS_BITS["agc_enabled"]
    values = {
        "telemetry_revision": telemetry_revision,
        "time_counter_ms": time_counter_ms,
        "status": status,
        "frame_counter": frame_counter,
        "fpa_temp_ck": fpa_temp_ck,
        "tlinear_enabled": int(tlinear_enabled),
        "tlinear_resolution": tlinear_resolution,
    }
    for name, line, first, count in _FIELDS:
        if name in values:
            start = _LINE_START[line] + first
            for k in range(count):
                words[start + k] = (values[name] >> (16 * k)) & 0xFFFF
    return words.reshape(TELEMETRY_ROWS, LEPTON_WIDTH)


def check_shape(raw: np.ndarray, expect_telemetry: bool) -> None:
    """Check that a grabbed frame is the PureThermal Y16 stream the driver expects.

    Raises:
        FrameError: naming the shape and dtype got, the one expected, and what to change.
    """
    rows = LEPTON_HEIGHT + (TELEMETRY_ROWS if expect_telemetry else 0)
    if raw.shape == (rows, LEPTON_WIDTH) and raw.dtype == np.uint16:
        return
    if raw.dtype != np.uint16 or raw.ndim != 2:
        fix = (
            "the capture is not in raw Y16 mode: set CAP_PROP_FOURCC to 'Y16 ' and "
            "CAP_PROP_CONVERT_RGB to 0 (an 8-bit or colour frame is the PureThermal's AGC video)"
        )
    elif expect_telemetry and raw.shape == (LEPTON_HEIGHT, LEPTON_WIDTH):
        fix = (
            "the stream has no telemetry rows: enable Lepton telemetry (footer) in the PureThermal "
            "firmware/Y16 160x122 mode, or set expect_telemetry to False (FFC frames are then "
            "not detected)"
        )
    elif not expect_telemetry and raw.shape == (LEPTON_HEIGHT + TELEMETRY_ROWS, LEPTON_WIDTH):
        fix = "the stream carries telemetry rows: set expect_telemetry to True"
    else:
        fix = (
            "this is not a Lepton 3.x (160x120) stream; check the device setting points at the "
            "PureThermal and not another camera"
        )
    raise FrameError(
        f"thermal frame has shape {raw.shape} dtype {raw.dtype}, expected ({rows}, "
        f"{LEPTON_WIDTH}) uint16; {fix}"
    )


def check_radiometry(
    thermal_ck: np.ndarray, min_valid_k: float, max_valid_k: float, telemetry: dict[str, int]
) -> float:
    """Return the median temperature in kelvin of the valid (non-zero) pixels of a TLinear frame.

    Raises:
        FrameError: when every pixel is zero.
        RadiometryError: when the median is outside [min_valid_k, max_valid_k], with the likely
            cause (AGC on, TLinear off, 0.1 K resolution) and how to fix it.
    """
    valid = thermal_ck[thermal_ck > 0]
    if valid.size == 0:
        raise FrameError(_ALL_ZERO)
    median_raw = float(np.median(valid))
    median_k = median_raw / CENTI
    if min_valid_k <= median_k <= max_valid_k:
        return median_k
    causes = []
    if telemetry.get("agc_enabled"):
        causes.append("telemetry says AGC is on")
    if telemetry and not telemetry.get("tlinear_enabled", 1):
        causes.append("telemetry says TLinear is disabled")
    if telemetry and telemetry.get("tlinear_enabled") and telemetry.get("tlinear_resolution") == 0:
        causes.append("telemetry says the TLinear resolution is 0.1 K")
    if not causes:
        if median_raw <= 255:
            causes.append("the values look like 8-bit AGC video")
        elif min_valid_k <= median_raw / 10.0 <= max_valid_k:
            causes.append(
                "the values look like deci-kelvin (TLinear resolution 0.1 K) or raw counts"
            )
        elif median_raw < 2**14:
            causes.append("the values look like raw 14-bit counts (TLinear disabled)")
        else:
            causes.append("the scene median is implausible for people-detection scenes")
    raise RadiometryError(
        f"thermal stream is not TLinear centi-kelvin: the median of the valid pixels is "
        f"{median_raw:.0f} ({median_k:.2f} K if centi-kelvin), outside [{min_valid_k}, "
        f"{max_valid_k}] K; {'; '.join(causes)}. Configure the Lepton (GetThermal, or the Lepton "
        "SDK through the PureThermal) with AGC disabled, radiometry TLinear enabled and TLinear "
        "resolution 0.01 K; a non-radiometric Lepton (2.x/3.0) cannot deliver kelvin"
    )


class _FrameTap:
    """VideoCapture proxy keeping the last frame read, so a frame flirpy fails on is still seen."""

    def __init__(self, capture: Any) -> None:
        self.capture = capture
        self.last: Any = None

    def read(self) -> tuple[bool, Any]:
        ok, frame = self.capture.read()
        self.last = frame if ok else None
        return ok, frame

    def __getattr__(self, name: str) -> Any:
        return getattr(self.capture, name)


def flirpy_lepton() -> Any:
    """Return flirpy's ``Lepton`` class, imported when a real Lepton is opened.

    The simulator and the offline tools share this module's telemetry code and never need
    flirpy, so a missing or broken flirpy only stops the live Lepton.

    Raises:
        SensorError: flirpy is not installed or does not import (flirpy 0.3 imports
            ``pkg_resources``, which setuptools 82 and later no longer have).
    """
    try:
        from flirpy.camera.lepton import Lepton
    except Exception as exc:  # any failure to import means the same to the user
        raise SensorError(
            f"flirpy does not import ({type(exc).__name__}: {exc}); install it as "
            "requirements-robot.txt says (flirpy 0.3.0 needs setuptools < 82 for pkg_resources)"
        ) from exc
    return Lepton


def find_purethermal() -> int | None:
    """Video device index of the PureThermal (USB 1e4e:0100), None when there is none.

    flirpy's search lists ``/sys/class/video4linux``; flirpy 0.3 (the version that keeps
    Ubuntu 24.04's NumPy 1.26) raises FileNotFoundError when that folder is missing, which
    only means that no video device exists at all.

    Raises:
        SensorError: flirpy does not import (``flirpy_lepton``).
        ImportError, OSError: the search itself failed (pyudev missing, sysfs unreadable).
    """
    lepton_class = flirpy_lepton()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            index = lepton_class.find_video_device()
    except FileNotFoundError:
        return None
    return None if index is None else int(index)


class LeptonCamera:
    """Lepton 3.5 on a PureThermal board, read through flirpy's ``Lepton.grab``.

    ``read`` grabs one frame and returns a ``ThermalFrame`` (``thermal_ck`` (120, 160) uint16
    centi-kelvin, ``stamp_ns`` = capture time, ``seq`` = telemetry frame counter,
    ``telemetry`` = ``decode_telemetry`` fields) or None when the frame was dropped (flat-field
    correction, repeat; ``stats`` says which).

    The stamp is the Lepton's own millisecond clock (telemetry ``time_counter_ms``) mapped to
    host time as the D435's hardware clock is (``ClockMapper``: the smallest host-minus-device
    offset over the last 10 s): the host time at which a frame arrives with the least USB and
    PureThermal latency seen. Frames that waited in the capture's buffers (after the frame
    thread paused, or under load) keep their capture time instead of the time they were read.
    The remaining constant latency is what the rig calibration's thermal clock offset
    corrects. Without telemetry, or while its counter does not advance, the stamp is the host
    time right after the grab.

    Args:
        config: driver configuration.
        capture: an object behaving like ``cv2.VideoCapture`` (``isOpened``, ``read``, ``set``,
            ``get``, ``release``) used instead of opening a device; it is handed to flirpy's
            ``Lepton`` as its capture, so flirpy's grab path runs unchanged. ``close`` releases
            it and a later ``open`` reuses the same object.
        clock_ns: host clock in ns used for stamps (injectable for tests).
        sleep: sleep function used between reconnect attempts (injectable for tests).
    """

    def __init__(
        self,
        config: LeptonConfig | None = None,
        *,
        capture: Any = None,
        clock_ns: Callable[[], int] = time.time_ns,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config or LeptonConfig()
        self.stats = LeptonStats()
        self._capture = capture
        self._clock_ns = clock_ns
        self._sleep = sleep
        self._lepton: Any = None
        self._tap: _FrameTap | None = None
        self._last_counter: int | None = None
        self._last_image: np.ndarray | None = None
        # Lepton uptime (ms) -> host time; a buffered frame may be up to about a second old.
        self._clock_map = ClockMapper(max_skew_ns=2_000_000_000)
        self._last_uptime_ms: int | None = None

    @property
    def is_open(self) -> bool:
        """True while a capture is open."""
        return self._lepton is not None

    def __enter__(self) -> LeptonCamera:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def open(self) -> None:
        """Open the PureThermal (or adopt the injected capture) in Y16 mode (no-op when open).

        Raises:
            DeviceNotFoundError: no PureThermal found, or the configured device does not exist.
            SensorError: the device exists but cannot be opened.
        """
        if self._lepton is not None:
            return
        lepton = flirpy_lepton()()
        capture = self._capture if self._capture is not None else self._open_device(lepton)
        if not capture.isOpened():
            capture.release()
            raise SensorError(
                f"thermal capture {self.config.device or '(auto)'} is not open; is another "
                "program using the PureThermal?"
            )
        rows, cols = self.config.stream_shape
        # flirpy's order: pixel format first, then disable RGB conversion to get raw uint16.
        capture.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*"Y16 "))
        capture.set(cv2.CAP_PROP_FRAME_WIDTH, cols)
        capture.set(cv2.CAP_PROP_FRAME_HEIGHT, rows)
        capture.set(cv2.CAP_PROP_CONVERT_RGB, 0)
        self._tap = _FrameTap(capture)
        lepton.cap = self._tap
        self._lepton = lepton
        self._last_counter = None
        self._last_image = None
        self._clock_map.reset()
        self._last_uptime_ms = None

    def _open_device(self, lepton: Any) -> Any:
        device = self.config.device
        hint = (
            "check the USB cable, that the board enumerates (v4l2-ctl --list-devices) and that "
            "your user may open /dev/video* (group 'video'), or set device explicitly"
        )
        if device and not device.isdigit():
            if not Path(device).exists():
                raise DeviceNotFoundError(f"thermal video device {device} does not exist; {hint}")
            return cv2.VideoCapture(device, cv2.CAP_V4L2)
        if device:
            index: int | None = int(device)
        else:
            try:
                index = find_purethermal()
            except (ImportError, OSError) as exc:
                raise DeviceNotFoundError(
                    f"cannot search for the PureThermal ({exc}); {hint}"
                ) from exc
            if index is None:
                raise DeviceNotFoundError(
                    f"no PureThermal (USB 1e4e:0100) video device found; {hint}"
                )
        try:
            lepton.setup_video(index)
        except (OSError, ValueError) as exc:
            raise SensorError(f"cannot open thermal video device {index}: {exc}; {hint}") from exc
        return lepton.cap

    def close(self) -> None:
        """Release the capture (safe to call twice)."""
        lepton, self._lepton, self._tap = self._lepton, None, None
        if lepton is not None:
            lepton.release()
            # flirpy's Lepton releases its capture again in __del__; detach it so that a reused
            # (injected) capture is not released behind a later open().
            lepton.cap = None

    def _grab(self) -> np.ndarray | None:
        assert self._tap is not None
        try:
            frame = self._lepton.grab(strip_telemetry=False)
        except (struct.error, TypeError, ValueError, IndexError):
            # flirpy decodes telemetry from the second-to-last row and fails on frames that are
            # not 160-wide uint16; the tap still has the frame so its shape can be reported.
            frame = self._tap.last
        return None if frame is None else np.asarray(frame)

    def read(self) -> ThermalFrame | None:
        """Grab one frame; return it, or None when it was dropped (see ``stats``).

        Raises:
            SensorError: the camera is not open or the grab returned no frame (device loss).
            FrameError: wrong frame shape or dtype, or an all-zero frame.
            RadiometryError: the values are not TLinear centi-kelvin.
        """
        if self._lepton is None:
            raise SensorError("the Lepton is not open; call open() or use 'with LeptonCamera(...)'")
        raw = self._grab()
        host_ns = self._clock_ns()
        if raw is None:
            self.stats.read_failures += 1
            raise SensorError(
                "the PureThermal returned no frame; it was unplugged or another program took it"
            )
        cfg = self.config
        check_shape(raw, cfg.expect_telemetry)
        image = raw[:LEPTON_HEIGHT]
        telemetry = decode_telemetry(raw[LEPTON_HEIGHT:]) if cfg.expect_telemetry else {}
        if not image.any():
            raise FrameError(_ALL_ZERO)
        counter = telemetry.get("frame_counter")
        if counter is not None:
            repeated = counter == self._last_counter
        else:
            repeated = self._last_image is not None and np.array_equal(image, self._last_image)
        self._last_counter = counter
        self._last_image = image
        if cfg.drop_ffc and telemetry.get("ffc_state") == FFC_IN_PROGRESS:
            self.stats.dropped_ffc += 1
            self.stats.last_ffc_s = time.monotonic()
            return None
        if cfg.drop_repeated and repeated:
            self.stats.dropped_repeated += 1
            return None
        check_radiometry(image, cfg.min_valid_k, cfg.max_valid_k, telemetry)
        self.stats.frames += 1
        return ThermalFrame(
            thermal_ck=np.array(image, dtype=np.uint16, copy=True),
            stamp_ns=self._stamp(host_ns, telemetry.get("time_counter_ms")),
            frame_id=cfg.frame_id,
            seq=counter if counter is not None else self.stats.frames,
            telemetry=telemetry,
        )

    def _stamp(self, host_ns: int, uptime_ms: int | None) -> int:
        """A returned frame's stamp: its Lepton uptime mapped to host time, else ``host_ns``.

        A counter that is absent, 0 or not past the last returned frame's (a stream without
        telemetry, a board that does not fill it) gives the host time and starts the mapping
        over.
        """
        last, self._last_uptime_ms = self._last_uptime_ms, uptime_ms
        if not uptime_ms or (last is not None and uptime_ms <= last):
            self._clock_map.reset()
            return host_ns
        return self._clock_map.map(uptime_ms, HARDWARE_CLOCK, host_ns)

    def frames(self) -> Iterator[ThermalFrame]:
        """Yield thermal frames forever, skipping dropped ones and recovering from device loss.

        A failed open or a grab without a frame is logged, the capture is closed and ``open``
        is retried after exponential back-off delays (``stats.reconnects`` counts losses).
        ``FrameError`` and ``RadiometryError`` (configuration problems) propagate.
        """
        backoff = Backoff(self.config.retry_initial_s, self.config.retry_max_s)
        while True:
            if self._lepton is None:
                try:
                    self.open()
                except SensorError as exc:
                    self._wait_before_retry(backoff, f"Lepton open failed: {exc}")
                    continue
            try:
                frame = self.read()
            except RadiometryError:
                raise
            except SensorError as exc:
                self.stats.reconnects += 1
                self.close()
                self._wait_before_retry(backoff, f"Lepton lost ({exc}); reconnecting")
                continue
            if frame is not None:
                backoff.reset()
                self.stats.last_problem = ""
                yield frame

    def _wait_before_retry(self, backoff: Backoff, message: str) -> None:
        delay = backoff.next_delay()
        logger.warning("%s; next attempt in %.1f s", message, delay)
        self.stats.last_problem, self.stats.last_problem_s = message, time.monotonic()
        self._sleep(delay)
