"""D435 depth driver, live or replayed; frames stamped with capture time on the ROS clock."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

import numpy as np
import pyrealsense2 as rs

from iphd.errors import (
    CameraInfoError,
    ConfigError,
    DeviceNotFoundError,
    EndOfStreamError,
    FrameError,
    FrameTimeoutError,
    SensorError,
)
from iphd.sensors.clock import Backoff, ClockMapper
from iphd.sensors.frames import CameraIntrinsics, ColorFrame, DepthFrame

logger = logging.getLogger(__name__)

MM_PER_M = 1000.0
# Playback waits in short slices so the end of a recording is noticed without a full timeout.
_PLAYBACK_POLL_MS = 50
_PLAYBACK_DRAIN_MS = 100
_HINT_NO_DEVICE = (
    "check the USB cable and port (USB 3), that the librealsense udev rules "
    "(99-realsense-libusb.rules) are installed, and that no other process holds the camera"
)


def _positive_int(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"D435Config.{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class D435Config:
    """Configuration of the D435 depth driver.

    Attributes:
        serial: serial number of the camera to open; empty = the first RealSense found.
        width: depth width in pixels (live only; playback uses the recorded mode).
        height: depth height in pixels (live only).
        fps: depth frame rate in Hz (live only).
        playback_file: librealsense recording (``.db3`` with librealsense 2.59) to play instead
            of opening a device; empty = live camera.
        playback_realtime: deliver recorded frames at the pace of their timestamps, like a live
            camera (True), or as fast as they are read (False). No frame is dropped either way.
        frame_timeout_ms: longest wait for one frame in milliseconds.
        retry_initial_s: first reconnect delay in seconds after a device loss.
        retry_max_s: largest reconnect delay in seconds (exponential back-off in between).
        reconnect_after_timeouts: consecutive frame timeouts that count as a device loss (live).
        frame_id: optical frame written into every ``DepthFrame``.
        color: also stream the RGB camera (rgb8 at ``fps``; off by default: colour images show
            who people are). Its frames are taken with ``D435Camera.take_color``.
        color_width: colour width in pixels (live only; playback uses the recorded mode).
        color_height: colour height in pixels (live only).
        color_frame_id: optical frame written into every ``ColorFrame``.
    """

    serial: str = ""
    width: int = 848
    height: int = 480
    fps: int = 30
    playback_file: str = ""
    playback_realtime: bool = True
    frame_timeout_ms: int = 1000
    retry_initial_s: float = 0.5
    retry_max_s: float = 8.0
    reconnect_after_timeouts: int = 3
    frame_id: str = "depth_optical_frame"
    color: bool = False
    color_width: int = 640
    color_height: int = 480
    color_frame_id: str = "color_optical_frame"

    def __post_init__(self) -> None:
        """Reject values the driver cannot use, naming the field and the value."""
        for name in ("width", "height", "fps", "frame_timeout_ms", "reconnect_after_timeouts",
                     "color_width", "color_height"):
            _positive_int(getattr(self, name), name)
        if not isinstance(self.serial, str):
            raise ConfigError(f"D435Config.serial must be a string, got {self.serial!r}")
        if not isinstance(self.playback_file, str):
            raise ConfigError(
                f"D435Config.playback_file must be a path string, got {self.playback_file!r}"
            )
        if not (isinstance(self.retry_initial_s, (int, float)) and self.retry_initial_s > 0):
            raise ConfigError(
                f"D435Config.retry_initial_s must be > 0 seconds, got {self.retry_initial_s!r}"
            )
        if not (
            isinstance(self.retry_max_s, (int, float)) and self.retry_max_s >= self.retry_initial_s
        ):
            raise ConfigError(
                f"D435Config.retry_max_s must be >= retry_initial_s ({self.retry_initial_s}), "
                f"got {self.retry_max_s!r}"
            )
        if not self.frame_id:
            raise ConfigError("D435Config.frame_id must not be empty")
        if not isinstance(self.color, bool):
            raise ConfigError(f"D435Config.color must be true or false, got {self.color!r}")
        if self.color and not self.color_frame_id:
            raise ConfigError("D435Config.color_frame_id must not be empty")

    @property
    def is_playback(self) -> bool:
        """True when frames come from a recording rather than a device."""
        return bool(self.playback_file)


@dataclass
class D435Stats:
    """Running counters of a ``D435Camera``.

    Attributes:
        frames: frames returned by ``read``.
        color_frames: colour frames received (``config.color``).
        timeouts: waits that ended without a frame.
        skipped: depth frames numbered by the camera (or the recording) but never returned: gaps
            in the frame numbers, frames dropped on the way (USB, a host that did not keep up).
        reconnects: device losses after which the driver closed the camera to reopen it.
        last_problem: the latest open failure or device loss, as logged; empty again once a
            frame comes.
        last_problem_s: when it happened (``time.monotonic``), 0.0 before any.
    """

    frames: int = 0
    color_frames: int = 0
    timeouts: int = 0
    skipped: int = 0
    reconnects: int = 0
    last_problem: str = ""
    last_problem_s: float = 0.0


def intrinsics_from_rs(intrinsics: Any) -> CameraIntrinsics:
    """Convert ``rs.intrinsics`` of a stream profile to ``CameraIntrinsics``.

    librealsense's Brown-Conrady coefficients are ordered like OpenCV's plumb_bob
    (k1, k2, p1, p2, k3). D435 depth is rectified, so its coefficients are all zero.

    Raises:
        CameraInfoError: for non-zero coefficients of a model that plumb_bob cannot express.
    """
    coeffs = tuple(float(c) for c in list(intrinsics.coeffs)[:5])
    coeffs = coeffs + (0.0,) * (5 - len(coeffs))
    if any(coeffs) and intrinsics.model != rs.distortion.brown_conrady:
        raise CameraInfoError(
            f"distortion model {intrinsics.model} with coefficients {coeffs} cannot be expressed "
            "as plumb_bob; D435 depth streams are rectified (all-zero coefficients), so this is "
            "probably not a depth stream"
        )
    return CameraIntrinsics(
        width=int(intrinsics.width),
        height=int(intrinsics.height),
        fx=float(intrinsics.fx),
        fy=float(intrinsics.fy),
        cx=float(intrinsics.ppx),
        cy=float(intrinsics.ppy),
        distortion=(coeffs[0], coeffs[1], coeffs[2], coeffs[3], coeffs[4]),
    )


def intrinsics_to_rs(intrinsics: CameraIntrinsics) -> Any:
    """Return ``rs.intrinsics`` (Brown-Conrady) equivalent to ``intrinsics``."""
    out = rs.intrinsics()
    out.width = intrinsics.width
    out.height = intrinsics.height
    out.fx = intrinsics.fx
    out.fy = intrinsics.fy
    out.ppx = intrinsics.cx
    out.ppy = intrinsics.cy
    out.model = rs.distortion.brown_conrady
    out.coeffs = [float(d) for d in intrinsics.distortion]
    return out


def z16_to_mm(raw: np.ndarray, depth_units_m: float) -> np.ndarray:
    """Return a (H, W) uint16 millimetre copy of a raw Z16 image whose unit is ``depth_units_m``.

    With the D435 default unit (0.001 m) this is a plain copy. Other units (e.g. 0.0001 m set
    for close range, or 0.01 m) are scaled and rounded to whole millimetres; a value beyond
    65535 mm cannot be represented and becomes 0 (invalid) rather than saturating into a
    plausible-looking wall.

    Raises:
        FrameError: when ``raw`` is not a 2-D uint16 image.
        ValueError: when ``depth_units_m`` is not a positive number.
    """
    if raw.ndim != 2 or raw.dtype != np.uint16:
        raise FrameError(
            f"expected a (H, W) uint16 Z16 depth image, got shape {raw.shape} dtype {raw.dtype}"
        )
    if not (math.isfinite(depth_units_m) and depth_units_m > 0):
        raise ValueError(f"depth units must be a positive number of metres, got {depth_units_m}")
    scale = depth_units_m * MM_PER_M
    if abs(scale - 1.0) < 1e-6:
        return np.array(raw, dtype=np.uint16, copy=True)
    depth_mm = np.rint(raw * scale)
    depth_mm[depth_mm > np.iinfo(np.uint16).max] = 0
    return depth_mm.astype(np.uint16)


def select_serial(found: Sequence[tuple[str, str]], wanted: str) -> str:
    """Return the serial to open among ``found`` (serial, name) pairs.

    Args:
        found: (serial, name) of every connected RealSense device.
        wanted: configured serial; empty selects the first device.

    Raises:
        DeviceNotFoundError: when nothing is connected or ``wanted`` is not among ``found``.
    """
    if not found:
        what = f"RealSense serial {wanted!r} not found: " if wanted else ""
        raise DeviceNotFoundError(f"{what}no RealSense device found; {_HINT_NO_DEVICE}")
    if not wanted:
        return found[0][0]
    if wanted not in {serial for serial, _ in found}:
        listing = ", ".join(f"{name} (serial {serial})" for serial, name in found)
        raise DeviceNotFoundError(
            f"RealSense serial {wanted!r} not found; connected: {listing}. Set serial to one of "
            "these, or leave it empty to open the first device"
        )
    return wanted


def depth_modes(sensor: Any) -> list[tuple[int, int, int]]:
    """Return the Z16 depth modes (width, height, fps) a librealsense sensor offers, sorted."""
    return _modes(sensor, rs.stream.depth, rs.format.z16)


def color_modes(sensor: Any) -> list[tuple[int, int, int]]:
    """Return the RGB8 colour modes (width, height, fps) a librealsense sensor offers, sorted."""
    return _modes(sensor, rs.stream.color, rs.format.rgb8)


def _modes(sensor: Any, stream: Any, fmt: Any) -> list[tuple[int, int, int]]:
    modes = set()
    for profile in sensor.get_stream_profiles():
        if profile.stream_type() == stream and profile.format() == fmt:
            video = profile.as_video_stream_profile()
            modes.add((int(video.width()), int(video.height()), int(profile.fps())))
    return sorted(modes, reverse=True)


def check_color_mode(
    offered: Iterable[tuple[int, int, int]], width: int, height: int, fps: int
) -> None:
    """Check that (width, height, fps) RGB8 is among the ``offered`` colour modes.

    Raises:
        ConfigError: listing the offered modes.
    """
    _check_mode(
        offered, (width, height, fps), "colour", "RGB8",
        "Set color_width/color_height (and fps, shared with depth) to one of them, or turn the "
        "colour stream off",
    )


def _check_mode(
    offered: Iterable[tuple[int, int, int]], wanted: tuple[int, int, int], stream: str,
    fmt: str, hint: str,
) -> None:
    modes = sorted(set(offered), reverse=True)
    if wanted in modes:
        return
    listing = ", ".join(f"{w}x{h}@{f}" for w, h, f in modes) or "none"
    width, height, fps = wanted
    raise ConfigError(
        f"{stream} mode {width}x{height}@{fps} {fmt} is not offered by this camera; offered "
        f"{fmt} modes: {listing}. {hint}"
    )


def extrinsics_from_rs(extrinsics: Any) -> tuple[np.ndarray, np.ndarray]:
    """(rotation (3, 3), translation (3,) m) of librealsense extrinsics: ``p_to = R p_from + t``.

    librealsense stores the rotation column-major.
    """
    rotation = np.asarray(extrinsics.rotation, dtype=np.float64).reshape(3, 3).T
    translation = np.asarray(extrinsics.translation, dtype=np.float64).reshape(3)
    return rotation, translation


def check_depth_mode(
    offered: Iterable[tuple[int, int, int]], width: int, height: int, fps: int
) -> None:
    """Check that (width, height, fps) Z16 is among the ``offered`` depth modes.

    Raises:
        ConfigError: listing the offered modes.
    """
    _check_mode(
        offered, (width, height, fps), "depth", "Z16",
        "Set width/height/fps to one of them (the D435 default is 848x480@30)",
    )


def read_depth_units(device: Any) -> float:
    """Return the depth unit in metres of a device's depth sensor (``rs.option.depth_units``).

    Raises:
        SensorError: when the device has no depth sensor or reports a non-positive unit.
    """
    try:
        sensor = device.first_depth_sensor()
        if sensor.supports(rs.option.depth_units):
            units = float(sensor.get_option(rs.option.depth_units))
        else:
            units = float(sensor.get_depth_scale())
    except RuntimeError as exc:
        raise SensorError(f"cannot read the depth unit of the device: {exc}") from exc
    if not (math.isfinite(units) and units > 0):
        raise SensorError(f"device reports an invalid depth unit {units} m")
    return units


def _info(device: Any, key: Any) -> str:
    try:
        return str(device.get_info(key)) if device.supports(key) else ""
    except RuntimeError:
        return ""


class D435Camera:
    """D435 depth camera, live through librealsense or played back from a recording.

    ``read`` returns one ``DepthFrame`` (uint16 millimetres, intrinsics from the stream profile,
    ``seq`` = librealsense frame number) or raises: ``FrameTimeoutError`` when no frame came
    within ``frame_timeout_ms``, ``EndOfStreamError`` once a recording is exhausted (also
    reported by ``is_finished``), ``SensorError`` for librealsense failures. ``frames`` wraps it
    in a loop that recovers from device loss.

    Stamps are capture times in ROS time (the host system clock): ``global_time`` and
    ``system_time`` stamps are used as they are, ``hardware_clock`` stamps get an offset learned
    at the first frame, and a replay is re-based so its first frame is stamped with the host time
    at which it was read and later frames keep the recorded spacing (see ``ClockMapper``). With
    ``playback_realtime`` a replay is also delivered at that spacing, so it looks live.

    With ``config.color`` the RGB camera streams too. librealsense's pipeline hands out a frame
    set whenever either stream has a new frame, repeating the other's last one; ``read`` returns
    each depth frame once, and the colour frames that came since the last call wait in
    ``take_color`` (the latest one; stamped on the depth frames' clock mapping, except a live
    ``hardware_clock`` colour stream, which has its own device clock and so its own offset).

    Args:
        config: driver configuration.
        clock_ns: host clock in ns used for receive times (injectable for tests).
        sleep: sleep function for reconnect back-off and real-time replay pacing (injectable).
        context_factory: returns the ``rs.context`` used to enumerate live devices.
    """

    def __init__(
        self,
        config: D435Config | None = None,
        *,
        clock_ns: Callable[[], int] = time.time_ns,
        sleep: Callable[[float], None] = time.sleep,
        context_factory: Callable[[], Any] = rs.context,
    ) -> None:
        self.config = config or D435Config()
        self.stats = D435Stats()
        self._clock_ns = clock_ns
        self._sleep = sleep
        self._context_factory = context_factory
        self._clock = ClockMapper(rebase=self.config.is_playback)
        self._color_clock = ClockMapper()  # a live colour sensor's own hardware clock
        self._last_depth_seq: int | None = None
        self._last_color_seq: int | None = None
        self._pending_color: ColorFrame | None = None
        self._pipeline: Any = None
        self._playback: Any = None
        self._finished = False
        self._consecutive_timeouts = 0
        self._pace_origin: tuple[int, int] | None = None
        self.depth_units_m = 0.001
        self.intrinsics: CameraIntrinsics | None = None
        self.color_intrinsics: CameraIntrinsics | None = None
        #: (rotation, translation m) taking depth-frame points into the colour frame, from the
        #: device (or recording); None without the colour stream.
        self.depth_to_color: tuple[np.ndarray, np.ndarray] | None = None
        self.device_name = ""
        self.device_serial = ""

    @property
    def is_open(self) -> bool:
        """True while a device or recording is streaming."""
        return self._pipeline is not None

    @property
    def is_playback(self) -> bool:
        """True when frames come from a recording."""
        return self.config.is_playback

    @property
    def is_finished(self) -> bool:
        """True once a played-back recording has delivered its last frame."""
        return self._finished

    def __enter__(self) -> D435Camera:
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
        """Start streaming from the configured device or recording (no-op when open).

        Raises:
            DeviceNotFoundError: the configured serial (or any RealSense) is not connected.
            ConfigError: the requested depth mode is not offered by the camera.
            SensorError: the recording is missing or unreadable, or librealsense failed.
        """
        if self._pipeline is not None:
            return
        if self.is_playback:
            self._open_playback()
        else:
            self._open_live()
        self._clock.reset()
        self._color_clock.reset()
        self._last_depth_seq = self._last_color_seq = None
        self._pending_color = None
        self._pace_origin = None
        self._finished = False
        self._consecutive_timeouts = 0
        logger.info(
            "D435 streaming from %s: %s (serial %s), depth unit %.6g m",
            self.config.playback_file or "device",
            self.device_name or "unnamed device",
            self.device_serial or "n/a",
            self.depth_units_m,
        )

    def _open_playback(self) -> None:
        path = Path(self.config.playback_file)
        if not path.is_file():
            raise SensorError(
                f"recording {path} does not exist; set playback_file to a librealsense recording "
                "(.db3 from the RealSense Viewer, rs-record or "
                "iphd.sensors.rs_recording.write_depth_recording)"
            )
        pipeline = rs.pipeline()
        rs_config = rs.config()
        rs_config.enable_device_from_file(str(path), repeat_playback=False)
        rs_config.enable_stream(rs.stream.depth)
        if self.config.color:
            rs_config.enable_stream(rs.stream.color)
        try:
            device = rs_config.resolve(pipeline).get_device()
            playback = device.as_playback()
            # librealsense's own real-time mode paces by the host time at which frames reached
            # the recorder and drops every frame the reader is late for; read() paces by the
            # frame timestamps instead. The pipeline reuses the device resolved here, so this is
            # set before any frame plays (after start() it would race with the first frames).
            playback.set_real_time(False)
            self.depth_units_m = read_depth_units(device)
            profile = pipeline.start(rs_config)
        except RuntimeError as exc:
            wanted = (
                "a depth and a colour stream (the colour stream is on: turn it off to play a "
                "depth-only recording)" if self.config.color else "a depth stream"
            )
            raise SensorError(
                f"cannot play {path} ({exc}); it must be a librealsense recording with {wanted}"
            ) from exc
        self._finish_open(pipeline, profile, device)
        self._playback = playback

    def _open_live(self) -> None:
        cfg = self.config
        try:
            context = self._context_factory()
            devices = list(context.query_devices())
        except RuntimeError as exc:
            raise SensorError(f"librealsense could not enumerate devices: {exc}") from exc
        found = [
            (_info(d, rs.camera_info.serial_number), _info(d, rs.camera_info.name)) for d in devices
        ]
        serial = select_serial(found, cfg.serial)
        device = devices[[s for s, _ in found].index(serial)]
        try:
            modes = depth_modes(device.first_depth_sensor())
        except RuntimeError as exc:
            raise SensorError(f"RealSense {serial} has no usable depth sensor: {exc}") from exc
        check_depth_mode(modes, cfg.width, cfg.height, cfg.fps)
        if cfg.color:
            try:
                offered = [m for sensor in device.query_sensors() for m in color_modes(sensor)]
            except RuntimeError as exc:
                raise SensorError(f"RealSense {serial}: cannot list its sensors: {exc}") from exc
            if not offered:
                raise ConfigError(
                    f"RealSense {serial} has no colour camera (no RGB8 stream); turn the colour "
                    "stream off"
                )
            check_color_mode(offered, cfg.color_width, cfg.color_height, cfg.fps)
        self.depth_units_m = read_depth_units(device)
        pipeline = rs.pipeline(context)
        rs_config = rs.config()
        rs_config.enable_device(serial)
        rs_config.enable_stream(rs.stream.depth, cfg.width, cfg.height, rs.format.z16, cfg.fps)
        if cfg.color:
            rs_config.enable_stream(
                rs.stream.color, cfg.color_width, cfg.color_height, rs.format.rgb8, cfg.fps
            )
        try:
            profile = pipeline.start(rs_config)
        except RuntimeError as exc:
            color = (
                f" and colour {cfg.color_width}x{cfg.color_height}" if cfg.color else ""
            )
            raise SensorError(
                f"cannot start depth {cfg.width}x{cfg.height}@{cfg.fps}{color} on RealSense "
                f"{serial}: {exc}; is another process using the camera?"
            ) from exc
        self._finish_open(pipeline, profile, device)

    def _finish_open(self, pipeline: Any, profile: Any, device: Any) -> None:
        try:
            stream = profile.get_stream(rs.stream.depth).as_video_stream_profile()
            self.intrinsics = intrinsics_from_rs(stream.get_intrinsics())
            if self.config.color:
                color = profile.get_stream(rs.stream.color).as_video_stream_profile()
                self.color_intrinsics = intrinsics_from_rs(color.get_intrinsics())
                self.depth_to_color = extrinsics_from_rs(stream.get_extrinsics_to(color))
        except RuntimeError as exc:
            pipeline.stop()
            raise SensorError(
                f"the depth (or colour) stream has no intrinsics or extrinsics: {exc}"
            ) from exc
        except CameraInfoError:
            pipeline.stop()
            raise
        self.device_name = _info(device, rs.camera_info.name)
        self.device_serial = _info(device, rs.camera_info.serial_number)
        self._pipeline = pipeline

    def close(self) -> None:
        """Stop streaming and release the device (safe to call twice)."""
        pipeline, self._pipeline, self._playback = self._pipeline, None, None
        if pipeline is None:
            return
        try:
            pipeline.stop()
        except RuntimeError as exc:
            logger.debug("ignoring librealsense error while stopping: %s", exc)

    def read(self) -> DepthFrame:
        """Wait for and return the next depth frame.

        Raises:
            EndOfStreamError: a played-back recording has no more frames.
            FrameTimeoutError: no frame within ``frame_timeout_ms`` (counted in ``stats``).
            SensorError: the camera is not open or librealsense failed (device loss).
        """
        if self._pipeline is None:
            raise SensorError("the D435 is not open; call open() or use 'with D435Camera(...)'")
        start = time.monotonic()
        try:
            while True:
                frameset = self._wait_for_frameset()
                host_ns = self._clock_ns()
                if self.config.color:
                    self._keep_color(frameset, host_ns)
                depth = frameset.get_depth_frame()
                seq = int(depth.get_frame_number()) if depth else -1
                if self.config.color and (not depth or seq == self._last_depth_seq):
                    # A set made for a new colour frame, depth repeated (or not yet there).
                    if (time.monotonic() - start) * 1000.0 > self.config.frame_timeout_ms:
                        self._timed_out()
                    continue
                if not depth:
                    raise SensorError("librealsense delivered a frame set without a depth frame")
                break
            if self._last_depth_seq is not None and seq > self._last_depth_seq + 1:
                self.stats.skipped += seq - self._last_depth_seq - 1
            self._last_depth_seq = seq
            depth_mm = z16_to_mm(np.asanyarray(depth.get_data()), self.depth_units_m)
            domain = depth.get_frame_timestamp_domain().name
            stamp_ns = self._clock.map(float(depth.get_timestamp()), domain, host_ns)
        except RuntimeError as exc:
            raise SensorError(f"librealsense error while reading depth: {exc}") from exc
        if self._playback is not None and self.config.playback_realtime:
            self._pace(stamp_ns)
        self.stats.frames += 1
        self._consecutive_timeouts = 0
        return DepthFrame(
            depth_mm=depth_mm,
            stamp_ns=stamp_ns,
            frame_id=self.config.frame_id,
            intrinsics=self.intrinsics,
            seq=seq,
        )

    def take_color(self) -> ColorFrame | None:
        """The latest colour frame received since the last call, or None (``config.color``)."""
        frame, self._pending_color = self._pending_color, None
        return frame

    def _keep_color(self, frameset: Any, host_ns: int) -> None:
        color = frameset.get_color_frame()
        if not color:
            return
        seq = int(color.get_frame_number())
        if seq == self._last_color_seq:
            return
        self._last_color_seq = seq
        domain = color.get_frame_timestamp_domain().name
        # One mapping with depth keeps the two streams' recorded or host-clock spacing; a live
        # colour sensor's hardware clock is its own, so it gets its own offset.
        clock = self._color_clock if domain == "hardware_clock" and not self.is_playback else (
            self._clock
        )
        stamp_ns = clock.map(float(color.get_timestamp()), domain, host_ns)
        rgb = np.array(np.asanyarray(color.get_data()), dtype=np.uint8, copy=True)
        self.stats.color_frames += 1
        self._pending_color = ColorFrame(
            rgb=rgb, stamp_ns=stamp_ns, frame_id=self.config.color_frame_id,
            intrinsics=self.color_intrinsics, seq=seq,
        )

    def _pace(self, stamp_ns: int) -> None:
        now = time.monotonic_ns()
        if self._pace_origin is None:
            self._pace_origin = (now, stamp_ns)
            return
        mono0, stamp0 = self._pace_origin
        ahead_ns = mono0 + (stamp_ns - stamp0) - now
        if ahead_ns > 0:
            self._sleep(ahead_ns / 1e9)

    def _wait_for_frameset(self) -> Any:
        timeout_ms = self.config.frame_timeout_ms
        if self._playback is None:
            ok, frameset = self._pipeline.try_wait_for_frames(timeout_ms)
            if ok:
                return frameset
            self._timed_out()
        deadline = time.monotonic() + timeout_ms / 1000.0
        while True:
            remaining_ms = int((deadline - time.monotonic()) * 1000.0)
            ok, frameset = self._pipeline.try_wait_for_frames(
                max(1, min(_PLAYBACK_POLL_MS, remaining_ms))
            )
            if ok:
                return frameset
            if self._playback.current_status() == rs.playback_status.stopped:
                # The last frame can still be on its way from the playback thread.
                ok, frameset = self._pipeline.try_wait_for_frames(_PLAYBACK_DRAIN_MS)
                if ok:
                    return frameset
                self._finished = True
                raise EndOfStreamError(
                    f"end of recording {self.config.playback_file} "
                    f"({self.stats.frames} frames read)"
                )
            if remaining_ms <= 0:
                self._timed_out()

    def _timed_out(self) -> NoReturn:
        self.stats.timeouts += 1
        self._consecutive_timeouts += 1
        raise FrameTimeoutError(
            f"no depth frame within {self.config.frame_timeout_ms} ms "
            f"({self._consecutive_timeouts} in a row); check the USB connection"
        )

    def frames(self) -> Iterator[DepthFrame]:
        """Yield depth frames, recovering from device loss; ends when a recording is exhausted.

        Live: a failed open, a librealsense error, or ``reconnect_after_timeouts`` consecutive
        timeouts is logged, the camera is closed and ``open`` is retried after exponential
        back-off delays (``retry_initial_s`` doubling up to ``retry_max_s``); each loss counts in
        ``stats.reconnects``. A ``ConfigError`` is not retried. Playback: errors propagate and the
        generator returns at the end of the recording.
        """
        backoff = Backoff(self.config.retry_initial_s, self.config.retry_max_s)
        while True:
            if self._pipeline is None:
                if self.is_playback:
                    self.open()
                else:
                    try:
                        self.open()
                    except ConfigError:
                        raise
                    except SensorError as exc:
                        self._wait_before_retry(backoff, f"D435 open failed: {exc}")
                        continue
            try:
                frame = self.read()
            except EndOfStreamError:
                return
            except FrameTimeoutError as exc:
                limit = self.config.reconnect_after_timeouts
                if self.is_playback or self._consecutive_timeouts < limit:
                    logger.warning("%s", exc)
                    continue
                self._lost(backoff, exc)
                continue
            except SensorError as exc:
                if self.is_playback:
                    raise
                self._lost(backoff, exc)
                continue
            backoff.reset()
            self.stats.last_problem = ""
            yield frame

    def _lost(self, backoff: Backoff, exc: Exception) -> None:
        self.stats.reconnects += 1
        self.close()
        self._wait_before_retry(backoff, f"D435 lost ({exc}); reconnecting")

    def _wait_before_retry(self, backoff: Backoff, message: str) -> None:
        delay = backoff.next_delay()
        logger.warning("%s; next attempt in %.1f s", message, delay)
        self.stats.last_problem, self.stats.last_problem_s = message, time.monotonic()
        self._sleep(delay)
