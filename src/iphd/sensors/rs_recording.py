"""Write genuine librealsense depth recordings (.db3) from arrays, for tests, simulator and demo."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyrealsense2 as rs

from iphd.sensors.clock import HARDWARE_CLOCK, TIMESTAMP_DOMAINS
from iphd.sensors.d435 import MM_PER_M, intrinsics_to_rs
from iphd.sensors.frames import CameraIntrinsics

RECORDING_SUFFIX = ".db3"
DEFAULT_DEVICE_NAME = "Intel RealSense D435 (iphd recording)"
DEFAULT_SERIAL = "iphd-recording"


def mm_to_raw(depth_mm: np.ndarray, depth_units: float) -> np.ndarray:
    """Return the (H, W) uint16 Z16 values that encode ``depth_mm`` in units of ``depth_units`` m.

    Raises:
        ValueError: when a depth does not fit in 16 bits at that unit.
    """
    scale = 1.0 / (depth_units * MM_PER_M)
    if abs(scale - 1.0) < 1e-6:
        return np.array(depth_mm, dtype=np.uint16, copy=True)
    raw = np.rint(depth_mm * scale)
    if raw.size and raw.max() > np.iinfo(np.uint16).max:
        raise ValueError(
            f"depth {int(depth_mm.max())} mm does not fit in Z16 at a unit of {depth_units} m "
            f"(max {int(np.iinfo(np.uint16).max / scale)} mm); use a coarser depth unit"
        )
    return raw.astype(np.uint16)


def write_depth_recording(
    path: str | Path,
    frames_mm: Sequence[np.ndarray],
    stamps_ms: Sequence[float],
    intrinsics: CameraIntrinsics,
    depth_units: float = 0.001,
    *,
    frame_numbers: Sequence[int] | None = None,
    fps: int | None = None,
    domain: str = HARDWARE_CLOCK,
    name: str = DEFAULT_DEVICE_NAME,
    serial: str = DEFAULT_SERIAL,
    compress: bool = True,
    color_frames: Sequence[np.ndarray] | None = None,
    color_intrinsics: CameraIntrinsics | None = None,
    color_delay_ms: float = 2.0,
    depth_to_color: tuple[np.ndarray, np.ndarray] | None = None,
) -> Path:
    """Write a librealsense recording of a depth stream that ``D435Camera`` can play back.

    The frames go through ``rs.software_device`` (one depth ``software_sensor`` with a Z16 video
    stream, the intrinsics and a read-only ``depth_units`` option) into ``rs.recorder``, so the
    file is exactly what librealsense itself writes. librealsense 2.59 writes rosbag2-style SQLite
    files and insists on the ``.db3`` suffix; depth is stored as a ``compressedDepth`` image
    (lossless) unless ``compress`` is False. An existing file is overwritten.

    The frames are written back to back, so the host capture times librealsense stores are all
    about equal: librealsense's own real-time playback would drop nearly every frame, while
    ``D435Camera`` (which paces by the frame timestamps) replays them at the recorded rate.

    Args:
        path: output file, must end in ``.db3``.
        frames_mm: (H, W) uint16 depth images in millimetres, H and W as in ``intrinsics``.
        stamps_ms: strictly increasing frame timestamps in milliseconds in ``domain``.
        intrinsics: camera model of the depth stream.
        depth_units: metres per Z16 unit stored in the file (D435 default 0.001).
        frame_numbers: librealsense frame numbers; default 0, 1, 2, ...
        fps: nominal stream rate in Hz; default from the median stamp spacing.
        domain: timestamp domain (``hardware_clock``, ``system_time`` or ``global_time``).
        name: device name recorded in the file.
        serial: device serial recorded in the file.
        compress: store depth compressed (librealsense default, lossless).
        color_frames: optional (H, W, 3) uint8 RGB images, one per depth frame, written as the
            colour stream of a second sensor ("RGB Camera", RGB8); their size comes from
            ``color_intrinsics`` (required with them).
        color_intrinsics: camera model of the colour stream.
        color_delay_ms: each colour frame's timestamp after its depth frame's.
        depth_to_color: (rotation (3, 3), translation (3,) m) taking depth-frame points into
            the colour frame; default a 15 mm shift along x (the D435's depth-to-RGB offset).

    Returns:
        The path written.

    Raises:
        ValueError: naming the inconsistent argument.
    """
    path = Path(path)
    if path.suffix != RECORDING_SUFFIX:
        raise ValueError(
            f"librealsense 2.59 writes recordings only with the {RECORDING_SUFFIX} suffix, "
            f"got {path}"
        )
    if not path.parent.is_dir():
        raise ValueError(f"output directory {path.parent} does not exist")
    n = len(frames_mm)
    if n == 0:
        raise ValueError("frames_mm is empty; a recording needs at least one frame")
    if len(stamps_ms) != n:
        raise ValueError(f"got {n} frames but {len(stamps_ms)} stamps")
    stamps = np.asarray(stamps_ms, dtype=np.float64)
    if not np.all(np.isfinite(stamps)) or np.any(np.diff(stamps) <= 0):
        raise ValueError("stamps_ms must be finite and strictly increasing")
    numbers = list(range(n)) if frame_numbers is None else [int(k) for k in frame_numbers]
    if len(numbers) != n or min(numbers) < 0:
        raise ValueError(f"frame_numbers must be {n} non-negative integers, got {numbers!r:.80}")
    if domain not in TIMESTAMP_DOMAINS:
        raise ValueError(f"domain must be one of {', '.join(TIMESTAMP_DOMAINS)}, got {domain!r}")
    if not (math.isfinite(depth_units) and depth_units > 0):
        raise ValueError(f"depth_units must be a positive number of metres, got {depth_units}")
    shape = (intrinsics.height, intrinsics.width)
    for i, frame in enumerate(frames_mm):
        if frame.shape != shape or frame.dtype != np.uint16:
            raise ValueError(
                f"frame {i} has shape {frame.shape} dtype {frame.dtype}; expected {shape} uint16 "
                "millimetres (the size comes from the intrinsics)"
            )
    if fps is None:
        fps = max(1, round(1000.0 / float(np.median(np.diff(stamps))))) if n > 1 else 30
    if color_frames is not None:
        if color_intrinsics is None:
            raise ValueError("color_frames need color_intrinsics (their size and camera model)")
        if len(color_frames) != n:
            raise ValueError(f"got {n} depth frames but {len(color_frames)} colour frames")
        cshape = (color_intrinsics.height, color_intrinsics.width, 3)
        for i, image in enumerate(color_frames):
            if image.shape != cshape or image.dtype != np.uint8:
                raise ValueError(
                    f"colour frame {i} has shape {image.shape} dtype {image.dtype}; expected "
                    f"{cshape} uint8 RGB (the size comes from color_intrinsics)"
                )
    raws = [mm_to_raw(frame, depth_units) for frame in frames_mm]
    if path.exists():
        path.unlink()
    device = rs.software_device()
    device.register_info(rs.camera_info.name, name)
    device.register_info(rs.camera_info.serial_number, serial)
    sensor = device.add_sensor("Stereo Module")
    stream = _video_stream(rs.stream.depth, 0, intrinsics, fps, rs.format.z16, 2)
    profile = sensor.add_video_stream(stream).as_video_stream_profile()
    sensor.add_read_only_option(rs.option.depth_units, depth_units)
    color_sensor = color_profile = None
    if color_frames is not None and color_intrinsics is not None:
        color_sensor = device.add_sensor("RGB Camera")
        cstream = _video_stream(rs.stream.color, 1, color_intrinsics, fps, rs.format.rgb8, 3)
        color_profile = color_sensor.add_video_stream(cstream).as_video_stream_profile()
        rotation, translation = depth_to_color or (np.eye(3), np.array([0.015, 0.0, 0.0]))
        extrinsics = rs.extrinsics()
        extrinsics.rotation = [float(v) for v in np.asarray(rotation, dtype=np.float64).T.ravel()]
        extrinsics.translation = [float(v) for v in np.asarray(translation, dtype=np.float64)]
        profile.register_extrinsics_to(color_profile, extrinsics)
    recorder = rs.recorder(str(path), device, compress)
    rs_domain = getattr(rs.timestamp_domain, domain)
    sensor.open(profile)
    sensor.start(lambda _: None)
    if color_sensor is not None:
        color_sensor.open(color_profile)
        color_sensor.start(lambda _: None)
    try:
        for i, (raw, stamp, number) in enumerate(zip(raws, stamps, numbers, strict=True)):
            sw_frame = rs.software_video_frame()
            sw_frame.pixels = raw
            sw_frame.bpp = 2
            sw_frame.stride = 2 * intrinsics.width
            sw_frame.timestamp = float(stamp)
            sw_frame.domain = rs_domain
            sw_frame.frame_number = number
            sw_frame.profile = profile
            sw_frame.depth_units = depth_units
            sensor.on_video_frame(sw_frame)
            if color_sensor is not None and color_frames is not None and color_intrinsics:
                rgb = np.ascontiguousarray(color_frames[i])
                c_frame = rs.software_video_frame()
                c_frame.pixels = rgb
                c_frame.bpp = 3
                c_frame.stride = 3 * color_intrinsics.width
                c_frame.timestamp = float(stamp) + float(color_delay_ms)
                c_frame.domain = rs_domain
                c_frame.frame_number = number
                c_frame.profile = color_profile
                color_sensor.on_video_frame(c_frame)
    finally:
        sensor.stop()
        sensor.close()
        if color_sensor is not None:
            color_sensor.stop()
            color_sensor.close()
        # librealsense finalises the file when the recorder is destroyed.
        del recorder
    _make_times_deterministic(path)
    return path


def _video_stream(
    kind: Any, uid: int, intrinsics: CameraIntrinsics, fps: int, fmt: Any, bpp: int
) -> Any:
    """An ``rs.video_stream`` description of a software sensor's stream."""
    stream = rs.video_stream()
    stream.type = kind
    stream.index = 0
    stream.uid = uid
    stream.width = intrinsics.width
    stream.height = intrinsics.height
    stream.fps = fps
    stream.bpp = bpp
    stream.fmt = fmt
    stream.intrinsics = intrinsics_to_rs(intrinsics)
    return stream


def _make_times_deterministic(path: Path) -> None:
    """Replace the wall-clock write times librealsense stores with the write order.

    ``rs.recorder`` stamps each message (and the header inside it) with the nanoseconds since
    the recording started, which differ run to run; playback paces by the frames' own
    timestamps, so the write order carries everything the times did and the same frames give a
    byte-identical file.
    """
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT id, timestamp, data FROM messages ORDER BY id").fetchall()
        for order, (row_id, stamp, data) in enumerate(rows, start=1):
            data = bytearray(data)
            # CDR: 4-byte encapsulation, then a header stamp (int32 sec, uint32 nanosec) when the
            # message starts with one; only a stamp equal to the write time is rewritten.
            if len(data) >= 12 and int.from_bytes(data[4:8], "little") == stamp // 1_000_000_000:
                if int.from_bytes(data[8:12], "little") == stamp % 1_000_000_000:
                    data[4:8] = (order // 1_000_000_000).to_bytes(4, "little")
                    data[8:12] = (order % 1_000_000_000).to_bytes(4, "little")
            db.execute(
                "UPDATE messages SET timestamp = ?, data = ? WHERE id = ?",
                (order, bytes(data), row_id),
            )
    with sqlite3.connect(path) as db:
        db.execute("VACUUM")
