"""Tests of the Lepton driver through flirpy's grab path with a scripted VideoCapture."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest
from flirpy.camera.lepton import Lepton

from iphd.errors import ConfigError, DeviceNotFoundError, FrameError, RadiometryError, SensorError
from iphd.sensors.lepton import (
    FFC_COMPLETE,
    FFC_IMMINENT,
    FFC_IN_PROGRESS,
    LeptonCamera,
    LeptonConfig,
    decode_telemetry,
    encode_telemetry,
    find_purethermal,
)


class FakeCapture:
    """Behaves like cv2.VideoCapture on a PureThermal; a None in the script is a failed read."""

    def __init__(self, frames, opened=True):
        self.frames = list(frames)
        self.opened = opened
        self.props: dict[int, float] = {}
        self.released = 0

    def isOpened(self):  # noqa: N802 - OpenCV's name
        return self.opened

    def read(self):
        if not self.frames:
            return False, None
        frame = self.frames.pop(0)
        return (False, None) if frame is None else (True, frame)

    def set(self, prop, value):
        self.props[prop] = value
        return True

    def get(self, prop):
        return self.props.get(prop, 0.0)

    def release(self):
        self.released += 1


def scene_ck(seed: int = 0) -> np.ndarray:
    """A 20 degC room with a 34 degC person, noisy, in centi-kelvin."""
    rng = np.random.default_rng(seed)
    image = 29_315 + rng.integers(-30, 30, size=(120, 160))
    image[30:110, 60:90] = 30_715
    return image.astype(np.uint16)


def y16(image: np.ndarray, counter: int, ffc_state: int = FFC_COMPLETE, **telemetry) -> np.ndarray:
    rows = encode_telemetry(frame_counter=counter, ffc_state=ffc_state, **telemetry)
    return np.ascontiguousarray(np.vstack([image, rows]))


class Clock:
    def __init__(self):
        self.now = 1_000_000_000

    def __call__(self):
        self.now += 111_000_000
        return self.now


def read_all(camera: LeptonCamera, n: int):
    return [camera.read() for _ in range(n)]


def test_telemetry_round_trip_agrees_with_flirpy():
    frame = y16(
        scene_ck(),
        counter=70_000,
        ffc_state=FFC_IN_PROGRESS,
        time_counter_ms=123_456_789,
        fpa_temp_ck=30_512,
        ffc_desired=True,
    )
    fields = decode_telemetry(frame[120:])
    assert fields["frame_counter"] == 70_000
    assert fields["time_counter_ms"] == 123_456_789
    assert fields["ffc_state"] == FFC_IN_PROGRESS
    assert fields["ffc_desired"] == 1
    assert fields["agc_enabled"] == 0
    assert fields["fpa_temp_ck"] == 30_512
    assert fields["tlinear_enabled"] == 1
    assert fields["tlinear_resolution"] == 1
    lepton = Lepton()
    lepton.decode_telemetry(frame)
    assert lepton.frame_count == fields["frame_counter"]
    assert lepton.uptime_ms == fields["time_counter_ms"]
    assert lepton.status == fields["status"]
    assert lepton.fpa_temp_k == pytest.approx(305.12)


def test_read_returns_centi_kelvin_frame_with_seq_stamp_and_telemetry():
    images = [scene_ck(i) for i in range(3)]
    capture = FakeCapture([y16(img, counter=300 + 3 * i) for i, img in enumerate(images)])
    clock = Clock()
    with LeptonCamera(LeptonConfig(), capture=capture, clock_ns=clock) as camera:
        frames = read_all(camera, 3)
    assert capture.props[cv2.CAP_PROP_FOURCC] == cv2.VideoWriter.fourcc(*"Y16 ")
    assert capture.props[cv2.CAP_PROP_CONVERT_RGB] == 0
    assert (capture.props[cv2.CAP_PROP_FRAME_WIDTH], capture.props[cv2.CAP_PROP_FRAME_HEIGHT]) == (
        160,
        122,
    )
    assert capture.released == 1
    for i, frame in enumerate(frames):
        assert frame is not None
        assert frame.thermal_ck.shape == (120, 160)
        assert frame.thermal_ck.dtype == np.uint16
        np.testing.assert_array_equal(frame.thermal_ck, images[i])
        assert frame.seq == 300 + 3 * i
        assert frame.telemetry["frame_counter"] == frame.seq
        assert frame.frame_id == "thermal_optical_frame"
    assert [f.stamp_ns for f in frames] == [1_111_000_000, 1_222_000_000, 1_333_000_000]
    assert camera.stats.frames == 3


def test_ffc_frames_are_dropped_and_counted():
    # "Imminent" is the warning of the 2 s or so before the shutter closes: normal images,
    # kept (dropping them too made a 3 s gap at every correction, where 1 s is expected).
    frozen = scene_ck(1)
    script = [y16(scene_ck(0), counter=10)]
    script += [y16(scene_ck(2 + k), counter=13 + 3 * k, ffc_state=FFC_IMMINENT) for k in range(2)]
    script += [y16(frozen, counter=19 + 3 * k, ffc_state=FFC_IN_PROGRESS) for k in range(9)]
    script += [y16(scene_ck(3), counter=46), y16(scene_ck(4), counter=49)]
    camera = LeptonCamera(capture=FakeCapture(script))
    with camera:
        frames = read_all(camera, len(script))
    kept = [f for f in frames if f is not None]
    assert [f.seq for f in kept] == [10, 13, 16, 46, 49]
    assert camera.stats.dropped_ffc == 9 and camera.stats.last_ffc_s > 0
    assert camera.stats.dropped_repeated == 0
    assert camera.stats.frames == 5


def test_stamps_come_from_the_lepton_clock_so_buffered_frames_keep_their_capture_time():
    # Frames 115 ms apart on the Lepton's clock. Frames 3-5 waited in the capture's buffers
    # while the frame thread paused: read 1 s late, one right after the other.
    uptimes = [5_000 + 115 * k for k in range(8)]
    reads = [0, 118, 232, 1_350, 1_352, 1_354, 1_380, 1_497]  # host ms after the start
    script = [y16(scene_ck(k), counter=k + 1, time_counter_ms=u) for k, u in enumerate(uptimes)]
    host = iter(1_700_000_000_000_000_000 + r * 1_000_000 for r in reads)
    camera = LeptonCamera(capture=FakeCapture(script), clock_ns=lambda: next(host))
    with camera:
        stamps = [f.stamp_ns for f in read_all(camera, len(script))]
    start = 1_700_000_000_000_000_000
    # Each mapped with the least latency seen so far: frame 0's, 0 ms.
    assert [(s - start) / 1e6 for s in stamps] == [0, 115, 230, 345, 460, 575, 690, 805]
    # A counter that stops (or a stream that never fills it) gives the host time.
    stuck = [y16(scene_ck(k), counter=k + 1, time_counter_ms=7_000) for k in range(2)]
    host = iter([10**18, 10**18 + 2 * 10**8])
    with LeptonCamera(capture=FakeCapture(stuck), clock_ns=lambda: next(host)) as camera:
        assert [f.stamp_ns for f in read_all(camera, 2)] == [10**18 - 0, 10**18 + 2 * 10**8]


def test_ffc_frames_are_kept_when_dropping_is_off():
    script = [y16(scene_ck(k), counter=k, ffc_state=FFC_IN_PROGRESS) for k in range(3)]
    with LeptonCamera(LeptonConfig(drop_ffc=False), capture=FakeCapture(script)) as camera:
        assert all(f is not None for f in read_all(camera, 3))
    assert camera.stats.dropped_ffc == 0


def test_repeated_frame_counter_is_dropped():
    image = scene_ck(0)
    script = [
        y16(image, counter=5),
        y16(image, counter=5),
        y16(scene_ck(1), counter=5),
        y16(scene_ck(2), counter=8),
    ]
    with LeptonCamera(capture=FakeCapture(script)) as camera:
        frames = read_all(camera, 4)
    assert [f.seq if f else None for f in frames] == [5, None, None, 8]
    assert camera.stats.dropped_repeated == 2


def test_identical_pixels_are_dropped_without_telemetry():
    a, b = scene_ck(0), scene_ck(1)
    config = LeptonConfig(expect_telemetry=False)
    with LeptonCamera(config, capture=FakeCapture([a, a.copy(), b, b.copy(), a])) as camera:
        frames = read_all(camera, 5)
    assert [f is not None for f in frames] == [True, False, True, False, True]
    assert [f.seq for f in frames if f is not None] == [1, 2, 3]
    assert all(f.telemetry == {} for f in frames if f is not None)
    assert camera.stats.dropped_repeated == 2


def test_agc_stream_is_rejected_as_not_radiometric():
    agc = np.random.default_rng(0).integers(0, 256, size=(120, 160)).astype(np.uint16)
    capture = FakeCapture([y16(agc, counter=1, agc_enabled=True)])
    with LeptonCamera(capture=capture) as camera, pytest.raises(RadiometryError) as info:
        camera.read()
    message = str(info.value)
    assert "not TLinear centi-kelvin" in message
    assert "AGC is on" in message
    assert "AGC disabled" in message


def test_eight_bit_values_without_telemetry_are_recognised():
    agc = np.full((120, 160), 128, np.uint16)
    with LeptonCamera(LeptonConfig(expect_telemetry=False), capture=FakeCapture([agc])) as camera:
        with pytest.raises(RadiometryError, match="8-bit AGC video"):
            camera.read()


def test_deci_kelvin_stream_is_rejected_with_the_resolution_hint():
    deci = (scene_ck(0) // 10).astype(np.uint16)
    capture = FakeCapture([y16(deci, counter=1, tlinear_resolution=0)])
    with LeptonCamera(capture=capture) as camera:
        with pytest.raises(RadiometryError, match="TLinear resolution is 0.1 K"):
            camera.read()


def test_radiometry_range_is_configurable():
    hot = np.full((120, 160), 45_000, np.uint16)  # 450 K
    with LeptonCamera(capture=FakeCapture([y16(hot, counter=1)])) as camera:
        with pytest.raises(RadiometryError, match=r"450\.00 K"):
            camera.read()
    config = LeptonConfig(max_valid_k=500.0)
    with LeptonCamera(config, capture=FakeCapture([y16(hot, counter=1)])) as camera:
        assert camera.read() is not None


@pytest.mark.parametrize(
    ("frame", "config", "expected"),
    [
        (
            scene_ck(0),
            LeptonConfig(),
            r"\(120, 160\) dtype uint16, expected \(122, 160\).*enable Lepton telemetry",
        ),
        (
            y16(scene_ck(0), 1),
            LeptonConfig(expect_telemetry=False),
            r"set expect_telemetry to True",
        ),
        (np.zeros((120, 160, 3), np.uint8), LeptonConfig(), r"\(120, 160, 3\) dtype uint8.*'Y16 '"),
        (np.zeros((60, 80), np.uint16), LeptonConfig(), r"\(60, 80\).*not a Lepton 3.x"),
    ],
)
def test_wrong_shape_is_a_frame_error_saying_what_to_change(frame, config, expected):
    with LeptonCamera(config, capture=FakeCapture([frame])) as camera:
        with pytest.raises(FrameError, match=expected):
            camera.read()


def test_all_zero_frame_is_a_frame_error():
    with LeptonCamera(capture=FakeCapture([y16(np.zeros((120, 160), np.uint16), 1)])) as camera:
        with pytest.raises(FrameError, match="all zero"):
            camera.read()


FLIRPY_WARN = pytest.mark.filterwarnings("ignore:The 'warn' method is deprecated")


@FLIRPY_WARN
def test_failed_grab_is_a_sensor_error():
    with LeptonCamera(capture=FakeCapture([None])) as camera:
        with pytest.raises(SensorError, match="returned no frame"):
            camera.read()
    assert camera.stats.read_failures == 1


@FLIRPY_WARN
def test_frames_reconnects_after_a_lost_device_and_skips_drops():
    script = [
        y16(scene_ck(0), 1),
        None,
        y16(scene_ck(1), 4, ffc_state=FFC_IN_PROGRESS),
        y16(scene_ck(2), 7),
    ]
    sleeps: list[float] = []
    capture = FakeCapture(script)
    camera = LeptonCamera(capture=capture, sleep=sleeps.append)
    stream = camera.frames()
    assert [next(stream).seq for _ in range(2)] == [1, 7]
    assert camera.stats.reconnects == 1
    assert camera.stats.dropped_ffc == 1
    assert sleeps == [0.5]
    assert capture.released == 1


def test_frames_does_not_retry_radiometry_errors():
    agc = np.full((120, 160), 100, np.uint16)
    camera = LeptonCamera(capture=FakeCapture([y16(agc, 1)]), sleep=lambda s: None)
    with pytest.raises(RadiometryError):
        next(camera.frames())


def test_closed_capture_is_reported():
    with pytest.raises(SensorError, match="not open"):
        LeptonCamera(capture=FakeCapture([], opened=False)).open()


def test_missing_video_device_is_not_found():
    config = LeptonConfig(device="/dev/video_iphd_missing")
    with pytest.raises(DeviceNotFoundError, match="/dev/video_iphd_missing does not exist"):
        LeptonCamera(config).open()


@pytest.mark.filterwarnings("ignore:Video4Linux not found")
def test_auto_detection_without_a_purethermal_is_not_found():
    if find_purethermal() is not None:
        pytest.skip("a PureThermal is connected")
    with pytest.raises(DeviceNotFoundError, match="no PureThermal"):
        LeptonCamera().open()


@pytest.mark.parametrize(
    ("error", "message"),
    [
        # flirpy 0.3 lists /sys/class/video4linux and raises when the folder does not exist:
        # no video device at all, so no PureThermal.
        (FileNotFoundError("No such file or directory: '/sys/class/video4linux/'"),
         "no PureThermal"),
        (PermissionError("Permission denied: '/sys/class/video4linux/'"),
         "cannot search for the PureThermal.*Permission denied"),
    ],
)
def test_a_failed_device_search_says_what_was_found(monkeypatch, error, message):
    def search():
        raise error

    monkeypatch.setattr(Lepton, "find_video_device", staticmethod(search))
    with pytest.raises(DeviceNotFoundError, match=message):
        LeptonCamera().open()


def test_without_flirpy_only_the_live_lepton_stops():
    # The simulator shares this module's telemetry code and must not need flirpy.
    code = (
        "import sys; sys.modules['flirpy'] = None\n"
        "import iphd.sim.rig, iphd.sensors.lepton as lepton\n"
        "try:\n"
        "    lepton.LeptonCamera().open()\n"
        "except lepton.SensorError as exc:\n"
        "    print('refused:', exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "refused: flirpy does not import" in out.stdout
    assert "requirements-robot.txt" in out.stdout


def test_config_validation_names_the_bad_value():
    with pytest.raises(ConfigError, match="min_valid_k=500"):
        LeptonConfig(min_valid_k=500.0, max_valid_k=400.0)
    with pytest.raises(ConfigError, match="max_valid_k=700"):
        LeptonConfig(max_valid_k=700.0)
    with pytest.raises(ConfigError, match="retry_initial_s"):
        LeptonConfig(retry_initial_s=0.0)
