import threading
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image
from simrig import TimedRig

from iphd.calibration import load_calibration
from iphd.ros import qos
from iphd.ros.conversions import camera_info_to_intrinsics, image_to_array, stamp_to_ns
from iphd.ros.d435_node import D435Node
from iphd.ros.fusion_node import FusionNode
from iphd.ros.lepton_node import LeptonNode
from iphd.sensors.lepton import FFC_IMMINENT, FFC_IN_PROGRESS, encode_telemetry
from iphd.sensors.rs_recording import write_depth_recording


class PacedLeptonCapture:
    """cv2.VideoCapture stand-in serving PureThermal 160x122 Y16 frames at the Lepton's rate."""

    def __init__(self, rig, period_s=1 / 8.7, ffc_frames=(), n=10_000):
        self.rig, self.period_s, self.ffc_frames, self.n = rig, period_s, set(ffc_frames), n
        self.index = 0
        self.lock = threading.Lock()

    def isOpened(self):  # noqa: N802 - OpenCV's name
        return True

    def set(self, prop, value):
        return True

    def get(self, prop):
        return 0.0

    def release(self):
        pass

    def read(self):
        time.sleep(self.period_s)
        with self.lock:
            i = self.index
            self.index += 1
        if i >= self.n:
            return False, None
        state = FFC_IN_PROGRESS if i in self.ffc_frames else 3
        if i + 1 in self.ffc_frames and i not in self.ffc_frames:
            state = FFC_IMMINENT
        image = self.rig.render_thermal(i * self.period_s)
        return True, np.vstack([image, encode_telemetry(frame_counter=i + 1, ffc_state=state)])


class Recorder(Node):
    def __init__(self, context):
        super().__init__("recorder", context=context)
        self.msgs: dict[str, list] = {}
        for topic, kind in (
            ("depth/image_raw", Image),
            ("depth/camera_info", CameraInfo),
            ("thermal/image_raw", Image),
            ("thermal/camera_info", CameraInfo),
            ("thermal/registered", Image),
        ):
            self.msgs[topic] = []
            self.create_subscription(kind, topic, self.msgs[topic].append, qos.SENSOR_SUB)
        self.msgs["/diagnostics"] = []
        self.create_subscription(
            DiagnosticArray, "/diagnostics", self.msgs["/diagnostics"].append, 10
        )


@pytest.fixture
def rig():
    return TimedRig(seed=5)


@pytest.fixture
def recording(tmp_path, rig):
    frames = [rig.render_depth(i / 30) for i in range(45)]
    stamps = [1000.0 + i * 1000 / 30 for i in range(45)]
    path = write_depth_recording(tmp_path / "depth.db3", frames, stamps, rig.depth_intrinsics)
    return path, frames


def _close(executor, *nodes):
    for node in nodes:
        node.close()


def test_d435_node_plays_a_recording_as_a_live_camera(
    executor, ros_context, spin_until, recording, rig
):
    path, frames = recording
    recorder = Recorder(ros_context)
    executor.add_node(recorder)
    d435 = D435Node(
        context=ros_context, parameter_overrides=[Parameter("playback_file", value=str(path))]
    )
    executor.add_node(d435)
    try:
        assert spin_until(executor, lambda: len(recorder.msgs["depth/image_raw"]) >= 20, 10.0)
        # Paced by the frame stamps, librealsense's playback waits for the reader: none lost.
        assert d435.status_values()["skipped_frames"] == 0
    finally:
        _close(executor, d435)
    images = recorder.msgs["depth/image_raw"]
    first = image_to_array(images[0])
    assert images[0].encoding == "16UC1" and images[0].header.frame_id == "depth_optical_frame"
    assert any(np.array_equal(first, f) for f in frames[:3])
    stamps = np.array([stamp_to_ns(m.header.stamp) for m in images])
    # Re-based to now, recorded 30 Hz spacing kept.
    assert abs(stamps[0] - time.time_ns()) < 10e9
    np.testing.assert_allclose(np.diff(stamps) / 1e6, 1000 / 30, atol=0.01)
    intr = camera_info_to_intrinsics(recorder.msgs["depth/camera_info"][0])
    assert (intr.width, intr.height) == (212, 120)
    assert intr.fx == pytest.approx(rig.depth_intrinsics.fx, rel=1e-5)


def test_d435_frame_id_comes_from_the_rig_calibration_unless_set(
    executor, ros_context, spin_until, recording, tmp_path
):
    from iphd.calibration import DEFAULT_CALIBRATION

    rig = tmp_path / "rig.yaml"
    text = DEFAULT_CALIBRATION.read_text()
    assert "depth: depth_optical_frame" in text
    rig.write_text(text.replace("depth: depth_optical_frame", "depth: front_depth_optical"))
    path, _ = recording
    recorder = Recorder(ros_context)
    executor.add_node(recorder)
    images = recorder.msgs["depth/image_raw"]
    for params, frame in (
        ({"calibration_file": str(rig)}, "front_depth_optical"),
        ({"calibration_file": str(rig), "frame_id": "my_depth"}, "my_depth"),
    ):
        d435 = D435Node(
            context=ros_context,
            parameter_overrides=[
                Parameter(k, value=v) for k, v in {"playback_file": str(path), **params}.items()
            ],
        )
        executor.add_node(d435)
        try:
            assert spin_until(
                executor, lambda f=frame: any(m.header.frame_id == f for m in images), 10.0
            ), {m.header.frame_id for m in images}
        finally:
            _close(executor, d435)


def test_d435_colour_is_off_unless_enabled_then_published_with_its_transform(
    executor, ros_context, spin_until, tmp_path, rig, tf2_msgs
):
    from iphd.sensors.frames import CameraIntrinsics


    n = 20
    color_intr = CameraIntrinsics(96, 72, fx=70.0, fy=70.0, cx=47.5, cy=35.5)
    colors = [np.full((72, 96, 3), (i, 100, 200), np.uint8) for i in range(n)]
    path = write_depth_recording(
        tmp_path / "rgbd.db3", [rig.render_depth(i / 30) for i in range(n)],
        [1000.0 + i * 1000 / 30 for i in range(n)], rig.depth_intrinsics,
        color_frames=colors, color_intrinsics=color_intr, color_delay_ms=3.0,
    )
    recorder = Recorder(ros_context)
    for topic, kind in (("color/image_raw", Image), ("color/camera_info", CameraInfo)):
        recorder.msgs[topic] = []
        recorder.create_subscription(kind, topic, recorder.msgs[topic].append, qos.SENSOR_SUB)
    recorder.msgs["/tf_static"] = []
    recorder.create_subscription(
        tf2_msgs.TFMessage, "/tf_static", recorder.msgs["/tf_static"].append, qos.STATIC_TF
    )
    executor.add_node(recorder)
    depth_images = recorder.msgs["depth/image_raw"]
    off = D435Node(
        context=ros_context, parameter_overrides=[Parameter("playback_file", value=str(path))]
    )
    executor.add_node(off)
    try:
        assert spin_until(executor, lambda: len(depth_images) >= 10, 10.0)
        assert off.count_subscribers("color/image_raw") == 1  # the recorder listens ...
        assert off.count_publishers("color/image_raw") == 0  # ... and nobody publishes colour
    finally:
        _close(executor, off)
    assert recorder.msgs["color/image_raw"] == []
    depth_images.clear()
    on = D435Node(
        context=ros_context,
        parameter_overrides=[Parameter("playback_file", value=str(path)),
                             Parameter("enable_color", value=True)],
    )
    executor.add_node(on)
    try:
        assert spin_until(executor, lambda: len(recorder.msgs["color/image_raw"]) >= n - 2, 10.0)
        assert spin_until(executor, lambda: recorder.msgs["/tf_static"], 5.0)
    finally:
        _close(executor, on)
    images = recorder.msgs["color/image_raw"]
    assert images[0].encoding == "rgb8" and images[0].header.frame_id == "color_optical_frame"
    assert (images[0].width, images[0].height) == (96, 72)
    firsts = [int(image_to_array(m)[0, 0, 0]) for m in images]
    assert firsts == sorted(firsts) and len(set(firsts)) == len(firsts)  # in order, no repeats
    info = camera_info_to_intrinsics(recorder.msgs["color/camera_info"][0])
    assert info == color_intr
    depth_stamps = [stamp_to_ns(m.header.stamp) for m in depth_images]
    color_stamps = [stamp_to_ns(m.header.stamp) for m in images]
    # Each colour frame 3 ms after its depth frame, on the same (re-based) clock.
    for k, stamp in zip(firsts, color_stamps, strict=True):
        assert abs(stamp - depth_stamps[k] - 3_000_000) < 10_000
    # Once per camera open (the recording is played once), on the colour frame's stamp.
    assert len(recorder.msgs["/tf_static"]) == 1
    (tf,) = recorder.msgs["/tf_static"][0].transforms
    assert stamp_to_ns(tf.header.stamp) == color_stamps[0]
    assert (tf.header.frame_id, tf.child_frame_id) == ("depth_optical_frame", "color_optical_frame")
    # librealsense's default shift maps depth points 15 mm along x into the colour frame, so the
    # colour camera sits 15 mm along -x in the depth frame.
    t = tf.transform.translation
    assert (t.x, t.y, t.z) == pytest.approx((-0.015, 0.0, 0.0), abs=1e-7)
    assert tf.transform.rotation.w == pytest.approx(1.0)


def test_lepton_node_drops_ffc_frames_and_publishes_calibrated_camera_info(
    executor, ros_context, spin_until, rig
):
    recorder = Recorder(ros_context)
    executor.add_node(recorder)
    capture = PacedLeptonCapture(rig, period_s=0.01, ffc_frames=range(5, 14), n=30)
    lepton = LeptonNode(capture=capture, context=ros_context)
    executor.add_node(lepton)
    try:
        assert spin_until(executor, lambda: lepton.camera.stats.frames >= 20, 10.0)
        assert spin_until(executor, lambda: len(recorder.msgs["thermal/image_raw"]) >= 20, 5.0)
    finally:
        _close(executor, lepton)
    assert lepton.camera.stats.dropped_ffc == 9  # in progress; the imminent one is kept
    images = recorder.msgs["thermal/image_raw"]
    assert (images[0].width, images[0].height, images[0].encoding) == (160, 120, "16UC1")
    kelvin = image_to_array(images[0]) / 100.0
    assert 290 < np.median(kelvin) < 300
    info = camera_info_to_intrinsics(recorder.msgs["thermal/camera_info"][0])
    assert info == load_calibration().thermal


def test_live_graph_from_a_recording_and_an_injected_lepton_registers_thermal(
    executor, ros_context, spin_until, recording, rig
):
    path, _ = recording
    recorder = Recorder(ros_context)
    fusion = FusionNode(context=ros_context)
    lepton = LeptonNode(capture=PacedLeptonCapture(rig), context=ros_context)
    d435 = D435Node(
        context=ros_context, parameter_overrides=[Parameter("playback_file", value=str(path))]
    )
    for node in (recorder, fusion, lepton, d435):
        executor.add_node(node)
    try:
        assert spin_until(executor, lambda: len(recorder.msgs["thermal/registered"]) >= 3, 10.0)
    finally:
        _close(executor, d435, lepton)
    depth_stamps = {stamp_to_ns(m.header.stamp) for m in recorder.msgs["depth/image_raw"]}
    for msg in recorder.msgs["thermal/registered"]:
        assert stamp_to_ns(msg.header.stamp) in depth_stamps
        assert (msg.width, msg.height) == (53, 30)  # default registered_scale 0.25 of 212x120


def test_driver_without_a_device_keeps_running_and_reports_the_error(
    executor, ros_context, spin_until, tmp_path
):
    recorder = Recorder(ros_context)
    executor.add_node(recorder)
    d435 = D435Node(
        context=ros_context,
        parameter_overrides=[Parameter("playback_file", value=str(tmp_path / "missing.db3"))],
    )
    executor.add_node(d435)

    def error_reported():
        return any(
            s.level == DiagnosticStatus.ERROR and "missing.db3" in s.message
            for d in recorder.msgs["/diagnostics"]
            for s in d.status
        )

    try:
        assert spin_until(executor, error_reported, 5.0)
    finally:
        _close(executor, d435)


def test_lepton_diagnostics_name_a_flat_field_correction_as_a_warning(
    executor, ros_context, spin_until, rig
):
    # Frames keep coming, all inside a flat-field correction (the shutter closed): the driver
    # says so, a WARN, instead of "no thermal frame" as an ERROR.
    recorder = Recorder(ros_context)
    executor.add_node(recorder)
    capture = PacedLeptonCapture(rig, period_s=0.02, ffc_frames=range(3, 10_000))
    lepton = LeptonNode(capture=capture, context=ros_context)
    executor.add_node(lepton)

    def levels():
        return [(s.level, s.message) for d in recorder.msgs["/diagnostics"] for s in d.status]

    try:
        assert spin_until(
            executor, lambda: any(level == DiagnosticStatus.WARN for level, _ in levels()), 5.0
        )
    finally:
        _close(executor, lepton)
    warned = [m for level, m in levels() if level == DiagnosticStatus.WARN]
    assert warned[0].startswith("flat-field correction in progress"), warned
    assert not any(level == DiagnosticStatus.ERROR for level, _ in levels()), levels()


class UnpluggedLeptonCapture(PacedLeptonCapture):
    """First an all-zero frame (a VoSPI sync loss the frame loop reports), then ``n`` good
    frames, then nothing: the PureThermal was unplugged."""

    def read(self):
        with self.lock:
            first = self.index == 0
        if not first:
            return super().read()
        self.index = 1
        zero = np.zeros((120, 160), np.uint16)
        return True, np.vstack([zero, encode_telemetry(frame_counter=1, ffc_state=3)])


def test_driver_diagnostics_name_the_latest_loss_not_an_error_it_recovered_from(
    executor, ros_context, spin_until, rig
):
    recorder = Recorder(ros_context)
    executor.add_node(recorder)
    lepton = LeptonNode(capture=UnpluggedLeptonCapture(rig, period_s=0.01, n=15),
                        context=ros_context)
    executor.add_node(lepton)
    lepton.loop._retry_s = 0.1  # the all-zero frame's retry

    def stale_error():
        return [s.message for d in recorder.msgs["/diagnostics"] for s in d.status
                if s.level == DiagnosticStatus.ERROR]

    try:
        assert spin_until(executor, lambda: lepton.camera.stats.reconnects >= 1, 10.0)
        assert lepton.published >= 10  # the stream ran between the two problems
        recorder.msgs["/diagnostics"].clear()  # what it says once the Lepton is gone
        assert spin_until(executor, stale_error, 5.0)
    finally:
        _close(executor, lepton)
    assert "Lepton lost" in stale_error()[0], stale_error()
