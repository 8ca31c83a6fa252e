"""Tests of the D435 driver: real librealsense recordings played back, pure helpers, recovery."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pyrealsense2 as rs
import pytest

from iphd.errors import (
    ConfigError,
    DeviceNotFoundError,
    EndOfStreamError,
    FrameError,
    FrameTimeoutError,
    SensorError,
)
from iphd.sensors.clock import Backoff, ClockMapper, ms_to_ns
from iphd.sensors.d435 import (
    D435Camera,
    D435Config,
    check_color_mode,
    check_depth_mode,
    color_modes,
    depth_modes,
    intrinsics_from_rs,
    intrinsics_to_rs,
    read_depth_units,
    select_serial,
    z16_to_mm,
)
from iphd.sensors.frames import CameraIntrinsics
from iphd.sensors.rs_recording import mm_to_raw, write_depth_recording

W, H = 64, 48
INTRINSICS = CameraIntrinsics(W, H, fx=50.0, fy=51.0, cx=31.5, cy=23.5)
PERIOD_MS = 1000.0 / 30.0


def _depth_frames(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    frames = []
    for i in range(n):
        frame = rng.integers(300, 10_000, size=(H, W), dtype=np.uint16)
        frame[0, 0] = 1000 + i
        frame[1, :5] = 0
        frames.append(frame)
    return frames


@pytest.fixture
def recording(tmp_path):
    frames = _depth_frames(8)
    stamps = [12_345.0 + PERIOD_MS * i for i in range(len(frames))]
    path = write_depth_recording(
        tmp_path / "depth.db3", frames, stamps, INTRINSICS, frame_numbers=range(40, 48)
    )
    return path, frames, stamps


def _software_device(units: float = 0.001, serial: str = "SW0001"):
    device = rs.software_device()
    device.register_info(rs.camera_info.name, "Intel RealSense D435 (software)")
    device.register_info(rs.camera_info.serial_number, serial)
    sensor = device.add_sensor("Stereo Module")
    for width, height, fps in ((848, 480, 30), (640, 480, 15), (640, 480, 30)):
        stream = rs.video_stream()
        stream.type = rs.stream.depth
        stream.index = 0
        stream.uid = width + fps
        stream.width, stream.height, stream.fps = width, height, fps
        stream.bpp = 2
        stream.fmt = rs.format.z16
        stream.intrinsics = intrinsics_to_rs(INTRINSICS.scaled(width, height))
        sensor.add_video_stream(stream)
    sensor.add_read_only_option(rs.option.depth_units, units)
    return device


# --- recording playback through librealsense ---------------------------------------------------


def test_recording_is_a_db3_file(recording):
    path, _, _ = recording
    assert path.suffix == ".db3"
    assert path.read_bytes()[:16] == b"SQLite format 3\x00"


def test_playback_returns_recorded_depth_intrinsics_and_sequence(recording):
    path, frames, _ = recording
    config = D435Config(playback_file=str(path), playback_realtime=False)
    with D435Camera(config) as camera:
        assert camera.intrinsics == INTRINSICS
        assert camera.depth_units_m == pytest.approx(0.001)
        assert camera.device_name == "Intel RealSense D435 (iphd recording)"
        got = [camera.read() for _ in frames]
        with pytest.raises(EndOfStreamError, match="end of recording"):
            camera.read()
        assert camera.is_finished
    for frame, expected in zip(got, frames, strict=True):
        assert frame.depth_mm.dtype == np.uint16
        np.testing.assert_array_equal(frame.depth_mm, expected)
        assert frame.intrinsics == INTRINSICS
        assert frame.frame_id == "depth_optical_frame"
    assert [f.seq for f in got] == list(range(40, 48))
    assert camera.stats.frames == len(frames)
    assert not camera.is_open
    assert camera.stats.skipped == 0


def test_gaps_in_the_frame_numbers_are_counted_as_skipped_frames(tmp_path):
    # Frames the camera numbered but the host never got (USB, a reader that fell behind).
    frames = _depth_frames(5)
    stamps = [12_345.0 + PERIOD_MS * n for n in (0, 1, 4, 5, 9)]
    path = write_depth_recording(
        tmp_path / "gaps.db3", frames, stamps, INTRINSICS, frame_numbers=[10, 11, 14, 15, 19]
    )
    config = D435Config(playback_file=str(path), playback_realtime=False)
    with D435Camera(config) as camera:
        got = list(camera.frames())
    assert [f.seq for f in got] == [10, 11, 14, 15, 19]
    assert camera.stats.skipped == 5
    assert camera.stats.frames == 5


def test_playback_stamps_are_rebased_to_now_with_recorded_spacing(recording):
    path, frames, stamps = recording
    before = time.time_ns()
    with D435Camera(D435Config(playback_file=str(path), playback_realtime=False)) as camera:
        got = list(camera.frames())
    after = time.time_ns()
    assert len(got) == len(frames)
    assert before <= got[0].stamp_ns <= after
    spacing = np.diff([f.stamp_ns for f in got])
    assert np.all(spacing > 0)
    np.testing.assert_array_equal(spacing, np.diff([ms_to_ns(s) for s in stamps]))


def test_playback_uses_injected_clock_for_the_first_stamp(recording):
    path, _, stamps = recording
    camera = D435Camera(
        D435Config(playback_file=str(path), playback_realtime=False), clock_ns=lambda: 10**18
    )
    with camera:
        first, second = camera.read(), camera.read()
    assert first.stamp_ns == 10**18
    assert second.stamp_ns - first.stamp_ns == ms_to_ns(stamps[1]) - ms_to_ns(stamps[0])


def test_playback_converts_fine_depth_units_to_mm(tmp_path):
    frames = [np.full((H, W), 1234, np.uint16), np.full((H, W), 6000, np.uint16)]
    frames[0][:, :8] = 0
    path = write_depth_recording(
        tmp_path / "fine.db3", frames, [0.0, PERIOD_MS], INTRINSICS, depth_units=0.0001
    )
    with D435Camera(D435Config(playback_file=str(path), playback_realtime=False)) as camera:
        assert camera.depth_units_m == pytest.approx(0.0001)
        got = list(camera.frames())
    np.testing.assert_array_equal(got[0].depth_mm, frames[0])
    np.testing.assert_array_equal(got[1].depth_mm, frames[1])


def test_realtime_playback_follows_frame_timestamps_without_drops(tmp_path):
    frames = _depth_frames(8)
    stamps = [PERIOD_MS * i for i in range(len(frames))]
    path = write_depth_recording(tmp_path / "rt.db3", frames, stamps, INTRINSICS)
    with D435Camera(D435Config(playback_file=str(path), playback_realtime=True)) as camera:
        got = []
        arrivals = []
        for frame in camera.frames():
            arrivals.append(time.monotonic_ns())
            got.append(frame)
    assert [f.seq for f in got] == list(range(len(frames)))
    span_ns = ms_to_ns(stamps[-1] - stamps[0])
    assert arrivals[-1] - arrivals[0] >= span_ns - 2_000_000
    assert arrivals[-1] - arrivals[0] < span_ns + 200_000_000


def test_realtime_playback_paces_with_the_injected_sleep(recording):
    path, frames, stamps = recording
    sleeps: list[float] = []
    camera = D435Camera(D435Config(playback_file=str(path)), sleep=sleeps.append)
    with camera:
        assert len(list(camera.frames())) == len(frames)
    # the fake sleep does not pass time, so each wait is the frame's offset from the first one
    assert len(sleeps) >= len(frames) // 2
    assert max(sleeps) == pytest.approx((stamps[-1] - stamps[0]) / 1000.0, abs=0.1)


def test_playback_missing_file_says_so(tmp_path):
    camera = D435Camera(D435Config(playback_file=str(tmp_path / "nope.db3")))
    with pytest.raises(SensorError, match=r"nope\.db3 does not exist"):
        camera.open()


def test_playback_of_a_non_recording_says_what_is_expected(tmp_path):
    path = tmp_path / "junk.db3"
    path.write_text("not a recording")
    with pytest.raises(SensorError, match="must be a librealsense recording"):
        D435Camera(D435Config(playback_file=str(path))).open()


def test_read_before_open_is_an_error():
    with pytest.raises(SensorError, match="not open"):
        D435Camera(D435Config(playback_file="x.db3")).read()


# --- live device selection and mode checks -------------------------------------------------------


def test_unknown_serial_with_no_device_says_none_found():
    connected = len(rs.context().query_devices())
    camera = D435Camera(D435Config(serial="000000000042"))
    with pytest.raises(DeviceNotFoundError, match="000000000042") as info:
        camera.open()
    if connected == 0:
        assert "no RealSense device found" in str(info.value)
        assert "udev" in str(info.value)


def test_select_serial_lists_what_was_found():
    found = [("111", "Intel RealSense D435"), ("222", "Intel RealSense D415")]
    assert select_serial(found, "") == "111"
    assert select_serial(found, "222") == "222"
    with pytest.raises(DeviceNotFoundError) as info:
        select_serial(found, "333")
    message = str(info.value)
    assert "'333' not found" in message
    assert "Intel RealSense D435 (serial 111)" in message
    assert "Intel RealSense D415 (serial 222)" in message
    with pytest.raises(DeviceNotFoundError, match="no RealSense device found"):
        select_serial([], "")


def test_check_depth_mode_lists_offered_modes():
    offered = [(640, 480, 30), (848, 480, 30), (848, 480, 30)]
    check_depth_mode(offered, 848, 480, 30)
    with pytest.raises(ConfigError) as info:
        check_depth_mode(offered, 1280, 720, 60)
    assert "1280x720@60" in str(info.value)
    assert "offered Z16 modes: 848x480@30, 640x480@30" in str(info.value)


def test_depth_modes_and_units_come_from_the_device():
    device = _software_device(units=0.0001)
    modes = depth_modes(device.first_depth_sensor())
    assert modes == [(848, 480, 30), (640, 480, 30), (640, 480, 15)]
    assert read_depth_units(device) == pytest.approx(0.0001)


class _Context:
    def __init__(self, devices):
        self.devices = devices

    def query_devices(self):
        return self.devices


def test_live_open_checks_serial_and_mode_on_real_device_objects():
    device = _software_device()
    context = _Context([device])
    with pytest.raises(DeviceNotFoundError, match=r"software\) \(serial SW0001\)"):
        D435Camera(D435Config(serial="SW9999"), context_factory=lambda: context).open()
    config = D435Config(serial="SW0001", width=1280, height=720, fps=30)
    with pytest.raises(ConfigError, match="offered Z16 modes: 848x480@30, 640x480@30, 640x480@15"):
        D435Camera(config, context_factory=lambda: context).open()


def test_config_validation_names_the_bad_value():
    with pytest.raises(ConfigError, match="width.*-1"):
        D435Config(width=-1)
    with pytest.raises(ConfigError, match="fps.*30.5"):
        D435Config(fps=30.5)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="retry_max_s"):
        D435Config(retry_initial_s=2.0, retry_max_s=1.0)
    with pytest.raises(ConfigError, match="frame_timeout_ms"):
        D435Config(frame_timeout_ms=0)


# --- the colour stream (off by default) ----------------------------------------------------------

COLOR_INTRINSICS = CameraIntrinsics(80, 60, fx=61.0, fy=61.5, cx=39.5, cy=29.5)


def _color_frames(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    frames = []
    for i in range(n):
        image = rng.integers(0, 256, size=(60, 80, 3), dtype=np.uint8)
        image[0, 0] = (i, 2 * i, 3 * i)
        frames.append(image)
    return frames


@pytest.fixture
def color_recording(tmp_path):
    depth, color = _depth_frames(8), _color_frames(8)
    stamps = [12_345.0 + PERIOD_MS * i for i in range(8)]
    rotation = np.array([[np.cos(0.1), -np.sin(0.1), 0.0], [np.sin(0.1), np.cos(0.1), 0.0],
                         [0.0, 0.0, 1.0]])
    path = write_depth_recording(
        tmp_path / "rgbd.db3", depth, stamps, INTRINSICS, frame_numbers=range(40, 48),
        color_frames=color, color_intrinsics=COLOR_INTRINSICS, color_delay_ms=2.0,
        depth_to_color=(rotation, np.array([0.015, 0.001, -0.002])),
    )
    return path, depth, color, rotation


def test_colour_playback_gives_each_depth_frame_once_and_every_colour_frame(color_recording):
    path, depth, color, rotation = color_recording
    config = D435Config(playback_file=str(path), playback_realtime=False, color=True)
    got_depth, got_color = [], []
    with D435Camera(config) as camera:
        assert camera.color_intrinsics == COLOR_INTRINSICS
        r, t = camera.depth_to_color
        np.testing.assert_allclose(r, rotation, atol=1e-6)  # librealsense stores it column-major
        np.testing.assert_allclose(t, [0.015, 0.001, -0.002], atol=1e-7)
        for frame in camera.frames():
            got_depth.append(frame)
            if (c := camera.take_color()) is not None:
                got_color.append(c)
        if (c := camera.take_color()) is not None:  # the last one, after the last depth frame
            got_color.append(c)
        assert camera.take_color() is None
    # The pipeline repeats the depth frame in the sets made for colour frames: not returned twice.
    assert [f.seq for f in got_depth] == list(range(40, 48))
    for frame, expected in zip(got_depth, depth, strict=True):
        np.testing.assert_array_equal(frame.depth_mm, expected)
    assert [c.seq for c in got_color] == list(range(40, 48))
    assert camera.stats.color_frames == 8
    depth_stamp = {f.seq: f.stamp_ns for f in got_depth}
    for c, expected in zip(got_color, color, strict=True):
        assert c.rgb.dtype == np.uint8 and c.rgb.shape == (60, 80, 3)
        np.testing.assert_array_equal(c.rgb, expected)
        assert c.frame_id == "color_optical_frame" and c.intrinsics == COLOR_INTRINSICS
        # One clock mapping for both streams keeps the recorded 2 ms between them.
        assert abs((c.stamp_ns - depth_stamp[c.seq]) - 2_000_000) < 2_000


def test_colour_stays_off_by_default_on_a_colour_recording(color_recording):
    path, depth, _color, _rotation = color_recording
    with D435Camera(D435Config(playback_file=str(path), playback_realtime=False)) as camera:
        frames = list(camera.frames())
        assert camera.take_color() is None
        assert camera.color_intrinsics is None and camera.depth_to_color is None
    assert [f.seq for f in frames] == list(range(40, 48))
    assert camera.stats.color_frames == 0


def test_colour_on_a_depth_only_recording_says_to_turn_it_off(recording):
    path, _, _ = recording
    config = D435Config(playback_file=str(path), playback_realtime=False, color=True)
    with pytest.raises(SensorError, match="colour stream is on: turn it off"):
        D435Camera(config).open()


def _software_rgbd_device():
    device = _software_device()
    sensor = device.add_sensor("RGB Camera")
    for width, height, fps in ((1280, 720, 30), (640, 480, 30)):
        stream = rs.video_stream()
        stream.type = rs.stream.color
        stream.index = 0
        stream.uid = 100 + width
        stream.width, stream.height, stream.fps = width, height, fps
        stream.bpp = 3
        stream.fmt = rs.format.rgb8
        stream.intrinsics = intrinsics_to_rs(COLOR_INTRINSICS.scaled(width, height))
        sensor.add_video_stream(stream)
    return device


def test_colour_modes_come_from_the_device_and_are_checked_before_streaming():
    device = _software_rgbd_device()
    color_sensor = device.query_sensors()[1]
    assert color_modes(color_sensor) == [(1280, 720, 30), (640, 480, 30)]
    assert color_modes(device.first_depth_sensor()) == []
    context = _Context([device])
    config = D435Config(serial="SW0001", color=True, color_width=1920, color_height=1080)
    with pytest.raises(ConfigError, match="offered RGB8 modes: 1280x720@30, 640x480@30"):
        D435Camera(config, context_factory=lambda: context).open()
    depth_only = _Context([_software_device()])
    with pytest.raises(ConfigError, match="no colour camera"):
        D435Camera(D435Config(color=True), context_factory=lambda: depth_only).open()


def test_check_color_mode_lists_offered_modes():
    check_color_mode([(640, 480, 30)], 640, 480, 30)
    with pytest.raises(ConfigError, match=r"640x480@15 .* offered RGB8 modes: 640x480@30"):
        check_color_mode([(640, 480, 30)], 640, 480, 15)


def test_colour_config_validation_names_the_bad_value():
    with pytest.raises(ConfigError, match="color_width.*0"):
        D435Config(color=True, color_width=0)
    with pytest.raises(ConfigError, match="color must be true or false"):
        D435Config(color="yes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="color_frame_id"):
        D435Config(color=True, color_frame_id="")


def test_write_depth_recording_checks_the_colour_frames(tmp_path):
    depth = _depth_frames(2)
    with pytest.raises(ValueError, match="need color_intrinsics"):
        write_depth_recording(tmp_path / "a.db3", depth, [0.0, 33.0], INTRINSICS,
                              color_frames=_color_frames(2))
    with pytest.raises(ValueError, match="2 depth frames but 1 colour"):
        write_depth_recording(tmp_path / "a.db3", depth, [0.0, 33.0], INTRINSICS,
                              color_frames=_color_frames(1), color_intrinsics=COLOR_INTRINSICS)
    with pytest.raises(ValueError, match=r"colour frame 0 has shape \(60, 80\)"):
        write_depth_recording(tmp_path / "a.db3", depth, [0.0, 33.0], INTRINSICS,
                              color_frames=[f[..., 0] for f in _color_frames(2)],
                              color_intrinsics=COLOR_INTRINSICS)


# --- pure helpers -------------------------------------------------------------------------------


def test_z16_to_mm_is_a_copy_at_millimetre_units():
    raw = np.array([[0, 1, 65535]], dtype=np.uint16)
    out = z16_to_mm(raw, 0.0010000000474974513)
    np.testing.assert_array_equal(out, raw)
    assert out is not raw and not np.shares_memory(out, raw)


def test_z16_to_mm_scales_and_invalidates_out_of_range():
    np.testing.assert_array_equal(
        z16_to_mm(np.array([[0, 15, 12345]], np.uint16), 0.0001), [[0, 2, 1234]]
    )
    np.testing.assert_array_equal(
        z16_to_mm(np.array([[100, 6553, 6554]], np.uint16), 0.01), [[1000, 65530, 0]]
    )
    with pytest.raises(FrameError, match="uint16"):
        z16_to_mm(np.zeros((2, 2), np.float32), 0.001)


def test_mm_to_raw_rejects_depths_that_do_not_fit():
    np.testing.assert_array_equal(mm_to_raw(np.array([[2]], np.uint16), 0.0005), [[4]])
    with pytest.raises(ValueError, match="does not fit"):
        mm_to_raw(np.array([[7000]], np.uint16), 0.0001)


def test_write_depth_recording_rejects_bad_arguments(tmp_path):
    frames = _depth_frames(2)
    with pytest.raises(ValueError, match=r"\.db3"):
        write_depth_recording(tmp_path / "x.bag", frames, [0.0, 1.0], INTRINSICS)
    with pytest.raises(ValueError, match="strictly increasing"):
        write_depth_recording(tmp_path / "x.db3", frames, [1.0, 1.0], INTRINSICS)
    with pytest.raises(ValueError, match="expected \\(48, 64\\)"):
        write_depth_recording(tmp_path / "x.db3", [np.zeros((4, 4), np.uint16)], [0.0], INTRINSICS)


def test_intrinsics_round_trip_through_librealsense():
    model = CameraIntrinsics(848, 480, 421.5, 421.0, 424.2, 239.8, (0.1, -0.2, 0.001, 0.002, 0.03))
    back = intrinsics_from_rs(intrinsics_to_rs(model))
    assert (back.width, back.height) == (848, 480)
    values = (back.fx, back.fy, back.cx, back.cy, *back.distortion)
    assert values == pytest.approx((model.fx, model.fy, model.cx, model.cy, *model.distortion))


def test_clock_mapper_uses_host_clock_domains_directly():
    mapper = ClockMapper()
    assert mapper.map(1_700_000_000_123.456, "global_time", host_ns=5) == 1_700_000_000_123_456_000
    assert mapper.map(2.5, "system_time", host_ns=99) == 2_500_000
    assert mapper.offset_ns is None


def test_clock_mapper_learns_hardware_clock_offset_at_first_frame():
    mapper = ClockMapper()
    host0 = 1_700_000_000_000_000_000
    assert mapper.map(1000.0, "hardware_clock", host_ns=host0) == host0
    assert mapper.offset_ns == host0 - 1_000_000_000
    # later frames keep the device spacing, not the host arrival jitter
    assert mapper.map(1033.3, "hardware_clock", host_ns=host0 + 50_000_000) == host0 + 33_300_000
    assert mapper.resyncs == 0


def test_clock_mapper_follows_a_drifting_device_clock():
    # A D435 crystal 50 ppm slow, 20 minutes at 30 Hz, 1-5 ms of USB latency: a fixed offset
    # would be 60 ms off by the end, three times the pairing's 20 ms.
    rng = np.random.default_rng(0)
    mapper = ClockMapper()
    host0 = 1_700_000_000_000_000_000
    worst = 0
    for k in range(36_000):
        capture_ns = host0 + k * 33_333_333
        device_ms = (capture_ns - host0) * (1 - 50e-6) / 1e6
        latency_ns = int(rng.uniform(1e6, 5e6))
        mapped = mapper.map(device_ms, "hardware_clock", host_ns=capture_ns + latency_ns)
        worst = max(worst, abs(mapped - capture_ns))
    assert worst < 5_000_000 and mapper.resyncs == 0  # within the lowest latency, about 1 ms


def test_clock_mapper_resyncs_when_the_device_clock_jumps():
    mapper = ClockMapper(max_skew_ns=500_000_000)
    mapper.map(1000.0, "hardware_clock", host_ns=10**18)
    assert mapper.map(5.0, "hardware_clock", host_ns=10**18 + 40_000_000) == 10**18 + 40_000_000
    assert mapper.resyncs == 1
    assert mapper.map(38.0, "hardware_clock", host_ns=10**18 + 90_000_000) == 10**18 + 73_000_000


def test_clock_mapper_rebases_playback_to_now():
    mapper = ClockMapper(rebase=True)
    now = 1_800_000_000_000_000_000
    assert mapper.map(1_600_000_000_000.0, "global_time", host_ns=now) == now
    assert mapper.map(1_600_000_000_100.0, "global_time", host_ns=now + 1) == now + 100_000_000
    mapper.reset()
    assert mapper.map(7.0, "hardware_clock", host_ns=now + 5) == now + 5


def test_clock_mapper_rejects_unknown_domain():
    with pytest.raises(ValueError, match="unknown timestamp domain 'gps'"):
        ClockMapper().map(1.0, "gps", host_ns=0)


def test_ms_to_ns_is_exact_at_microseconds():
    assert ms_to_ns(1_700_000_000_123.457) == 1_700_000_000_123_457_000


def test_backoff_doubles_up_to_the_cap_and_resets():
    backoff = Backoff(initial_s=0.5, max_s=8.0)
    assert [backoff.next_delay() for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    for _ in range(5000):
        backoff.next_delay()
    assert backoff.next_delay() == 8.0
    backoff.reset()
    assert backoff.next_delay() == 0.5


def test_backoff_rejects_bad_settings():
    with pytest.raises(ValueError, match="initial_s"):
        Backoff(initial_s=0.0)
    with pytest.raises(ValueError, match="max_s"):
        Backoff(initial_s=2.0, max_s=1.0)


# --- recovery from device loss ------------------------------------------------------------------


class _FakeDepth:
    def __init__(self, number: int):
        self.number = number

    def __bool__(self):
        return True

    def get_data(self):
        return np.full((H, W), 1000 + self.number, np.uint16)

    def get_frame_timestamp_domain(self):
        return SimpleNamespace(name="global_time")

    def get_timestamp(self):
        return 1_700_000_000_000.0 + PERIOD_MS * self.number

    def get_frame_number(self):
        return self.number


class _ScriptedPipeline:
    """Stands in for rs.pipeline: each step is a frame number, 'timeout' or 'lost'."""

    def __init__(self, steps):
        self.steps = list(steps)

    def try_wait_for_frames(self, timeout_ms):
        step = self.steps.pop(0)
        if step == "lost":
            raise RuntimeError("Frame didn't arrive: device disconnected")
        if step == "timeout":
            return False, None
        return True, SimpleNamespace(get_depth_frame=lambda: _FakeDepth(step))

    def stop(self):
        pass


class _ScriptedCamera(D435Camera):
    def __init__(self, config, sessions, sleeps):
        super().__init__(config, sleep=sleeps.append)
        self.sessions = list(sessions)

    def _open_live(self):
        session = self.sessions.pop(0)
        if session == "absent":
            raise DeviceNotFoundError("no RealSense device found")
        if session == "bad mode":
            raise ConfigError("depth mode not offered")
        self._pipeline = _ScriptedPipeline(session)
        self.intrinsics = INTRINSICS


def test_frames_reconnects_with_backoff_after_device_loss():
    sleeps: list[float] = []
    sessions = [
        [1, 2, "lost"],
        "absent",
        "absent",
        [3, "timeout", "timeout", "timeout"],
        [4, 5],
    ]
    camera = _ScriptedCamera(D435Config(reconnect_after_timeouts=3), sessions, sleeps)
    stream = camera.frames()
    got = [next(stream).seq for _ in range(5)]
    assert got == [1, 2, 3, 4, 5]
    assert camera.stats.reconnects == 2
    assert camera.stats.timeouts == 3
    assert camera.stats.frames == 5
    # loss -> 0.5, open fails -> 1.0, 2.0, then a frame resets; loss after timeouts -> 0.5
    assert sleeps == [0.5, 1.0, 2.0, 0.5]


class _FakeColor(_FakeDepth):
    def get_data(self):
        return np.full((4, 6, 3), self.number % 256, np.uint8)


class _StalledDepthPipeline:
    """Depth frame 1 repeated beside a new colour frame in every set, as when depth stalls."""

    def __init__(self):
        self.color = 0

    def try_wait_for_frames(self, timeout_ms):
        time.sleep(0.01)
        self.color += 1
        color = _FakeColor(self.color)
        return True, SimpleNamespace(
            get_depth_frame=lambda: _FakeDepth(1), get_color_frame=lambda: color
        )

    def stop(self):
        pass


def test_colour_frames_alone_do_not_hide_a_stalled_depth_stream():
    camera = D435Camera(D435Config(color=True, frame_timeout_ms=100))
    camera._pipeline = _StalledDepthPipeline()
    camera.intrinsics = INTRINSICS
    assert camera.read().seq == 1
    with pytest.raises(FrameTimeoutError, match="no depth frame within 100 ms"):
        camera.read()
    assert camera.stats.timeouts == 1
    assert camera.stats.color_frames >= 5  # kept coming, and were kept
    assert camera.take_color().rgb.shape == (4, 6, 3)


def test_frames_does_not_retry_configuration_errors():
    camera = _ScriptedCamera(D435Config(), ["bad mode"], [])
    with pytest.raises(ConfigError):
        next(camera.frames())
