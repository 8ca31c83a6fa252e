from types import SimpleNamespace

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image

from iphd.calib.simulate import simulate_capture
from iphd.calibration import load_calibration
from iphd.data.rosbag import BagReader
from iphd.ros import qos
from iphd.ros.calib_capture_node import CalibCaptureNode
from iphd.ros.conversions import array_to_image, intrinsics_to_camera_info


@pytest.fixture(scope="module")
def capture():
    return simulate_capture(load_calibration(), poses=5, seed=1, depth_profile="aligned_640x360")


class Feeder(Node):
    """Publishes a calibration recording like the drivers do, one message at a time."""

    def __init__(self, context):
        super().__init__("feeder", context=context)
        self.depth = self.create_publisher(Image, "depth/image_raw", qos.SENSOR_PUB)
        self.depth_info = self.create_publisher(CameraInfo, "depth/camera_info", qos.SENSOR_PUB)
        self.thermal = self.create_publisher(Image, "thermal/image_raw", qos.SENSOR_PUB)
        self.diagnostics: list[DiagnosticArray] = []
        self.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)


def waiter(executor, spin_until):
    return lambda predicate, timeout_s=5.0: spin_until(executor, predicate, timeout_s)


def play(feeder, node, rec, spin_until, bad_thermal_at=None,
         frames=("depth_optical_frame", "thermal_optical_frame")):
    """Publish ``rec`` in stamp order, waiting until the node has taken each message."""
    depth_frame, thermal_frame = frames
    events = [(int(t), 0, j) for j, t in enumerate(rec.depth_stamps_ns)]
    events += [(int(t), 1, k) for k, t in enumerate(rec.thermal_stamps_ns)]
    for n, (stamp_ns, kind, i) in enumerate(sorted(events)):
        if kind == 0:
            infos = node.depth_info_count
            feeder.depth_info.publish(
                intrinsics_to_camera_info(rec.depth_intrinsics, stamp_ns, depth_frame)
            )
            assert spin_until(lambda infos=infos: node.depth_info_count > infos)
            before = node.stats()["depth_frames"]
            feeder.depth.publish(
                array_to_image(rec.depth_mm[i], "16UC1", stamp_ns, depth_frame)
            )
            assert spin_until(lambda before=before: node.stats()["depth_frames"] > before)
        else:
            before = node.stats()["thermal_frames"]
            feeder.thermal.publish(
                array_to_image(rec.thermal_ck[i], "16UC1", stamp_ns, thermal_frame)
            )
            assert spin_until(lambda before=before: node.stats()["thermal_frames"] > before)
        if n == bad_thermal_at:
            before = node.stats()["thermal_frames"]
            small = np.full((60, 80), 30000, np.uint16)
            feeder.thermal.publish(
                array_to_image(small, "16UC1", stamp_ns, "thermal_optical_frame")
            )
            assert spin_until(lambda before=before: node.stats()["thermal_frames"] > before)


def test_capture_counts_views_records_the_bag_and_survives_bad_input(
    capture, tmp_path, ros_context, executor, spin_until
):
    rec = capture.recording
    bag = tmp_path / "capture"
    node = CalibCaptureNode(
        context=ros_context,
        parameter_overrides=[
            Parameter("out_bag", value=str(bag)),
            Parameter("min_views", value=3),
            Parameter("report_period_s", value=0.2),
        ],
    )
    feeder = Feeder(ros_context)
    executor.add_node(node)
    executor.add_node(feeder)
    wait = waiter(executor, spin_until)
    assert wait(lambda: node.count_subscribers("/diagnostics") >= 1 and
                      feeder.count_subscribers("thermal/image_raw") >= 1)

    play(feeder, node, rec, wait, bad_thermal_at=40)
    assert wait(lambda: any(
        kv.key == "enough" and kv.value == "True"
        for msg in feeder.diagnostics for s in msg.status for kv in s.values
    ), timeout_s=3.0)

    stats = node.stats()
    assert stats["views"] >= 3
    assert node.enough and stats["enough"]
    assert node.progress_line().endswith("enough")
    assert stats["errors_bad_thermal"] == 1
    assert stats["thermal_frames"] == len(rec.thermal_ck) + 1
    node.close()

    with BagReader(bag) as reader:
        topics = reader.topics
    assert topics["depth/image_raw"].count == len(rec.depth_mm)
    assert topics["depth/camera_info"].count == len(rec.depth_mm)
    assert topics["thermal/image_raw"].count == len(rec.thermal_ck)


def test_the_bag_keeps_the_frame_names_the_drivers_stamp(
    capture, tmp_path, ros_context, executor, spin_until
):
    # Written in the initial calibration's frame names, the bag made iphd-calibrate write
    # depth_optical_frame / thermal_optical_frame for a realsense2_camera rig.
    from iphd.calib.cli import read_bag

    rec = capture.recording
    bag = tmp_path / "capture"
    node = CalibCaptureNode(context=ros_context,
                            parameter_overrides=[Parameter("out_bag", value=str(bag))])
    feeder = Feeder(ros_context)
    executor.add_node(node)
    executor.add_node(feeder)
    wait = waiter(executor, spin_until)
    assert wait(lambda: feeder.count_subscribers("thermal/image_raw") >= 1)
    play(feeder, node, rec, wait, frames=("camera_depth_optical_frame", "lepton_optical_frame"))
    node.close()
    recorded = read_bag(bag, quiet=True)
    assert (recorded.depth_frame, recorded.thermal_frame) == (
        "camera_depth_optical_frame", "lepton_optical_frame"
    )
    # Held until the thermal frame's name was known, nothing was lost.
    assert len(recorded.depth_mm) == len(rec.depth_mm)
    assert len(recorded.thermal_ck) == len(rec.thermal_ck)


def _tf_static(tf2_msgs, *edges):
    """A TFMessage of (parent, child) edges, as a driver latches on /tf_static."""
    from geometry_msgs.msg import TransformStamped

    transforms = []
    for parent, child in edges:
        tf = TransformStamped()
        tf.header.frame_id, tf.child_frame_id = parent, child
        tf.transform.translation.x = 0.015
        tf.transform.rotation.w = 1.0
        transforms.append(tf)
    return tf2_msgs.TFMessage(transforms=transforms)


def test_the_drivers_tf_static_is_recorded_so_iphd_calibrate_leaves_their_frame_alone(
    capture, tmp_path, ros_context, executor, spin_until, tf2_msgs
):
    # Without the driver's /tf_static in the bag, iphd-calibrate kept frames.base and the
    # fusion node gave realsense2_camera's depth frame a second parent.
    from iphd.calib.cli import read_bag
    from iphd.calib.solve import recorded_frames
    from iphd.data.rosbag import read_static_transforms

    rec = capture.recording
    bag = tmp_path / "capture"
    feeder = Feeder(ros_context)
    # realsense2_camera latches its frames before the capture starts ...
    driver = feeder.create_publisher(tf2_msgs.TFMessage, "/tf_static", qos.STATIC_TF)
    driver.publish(_tf_static(tf2_msgs, ("camera_link", "camera_depth_frame"),
                              ("camera_depth_frame", "camera_depth_optical_frame")))
    node = CalibCaptureNode(context=ros_context,
                            parameter_overrides=[Parameter("out_bag", value=str(bag))])
    executor.add_node(node)
    executor.add_node(feeder)
    wait = waiter(executor, spin_until)
    assert wait(lambda: feeder.count_subscribers("thermal/image_raw") >= 1)
    assert wait(lambda: len(node._static_tf) == 2)  # held until the bag opens
    play(feeder, node, rec, wait, frames=("camera_depth_optical_frame", "lepton_optical_frame"))
    # ... and another node latches one more while it runs (a repeated edge is kept once).
    other = feeder.create_publisher(tf2_msgs.TFMessage, "/tf_static", qos.STATIC_TF)
    other.publish(_tf_static(tf2_msgs, ("camera_link", "camera_depth_frame"),
                             ("camera_link", "camera_color_frame")))
    assert wait(lambda: len(node._static_tf) == 3)
    node._on_tf_static(SimpleNamespace(transforms=[SimpleNamespace(header=None)]))
    assert node.stats()["errors_tf_static"] == 1
    node.close()

    with BagReader(bag) as reader:
        edges = [(tf.parent, tf.child) for tf in read_static_transforms(reader)]
    # The rig's own two, then the drivers' three, each once.
    assert sorted(edges) == sorted([
        ("camera_link", "camera_depth_optical_frame"),
        ("camera_depth_optical_frame", "lepton_optical_frame"),
        ("camera_link", "camera_depth_frame"),
        ("camera_depth_frame", "camera_depth_optical_frame"),
        ("camera_link", "camera_color_frame"),
    ])
    recorded = read_bag(bag, quiet=True)
    assert "camera_depth_frame" in recorded.depth_parents
    frames, changes = recorded_frames(load_calibration().frames, recorded)
    assert frames.base == "" and frames.depth == "camera_depth_optical_frame"
    assert any("frames.base: ''" in c and "camera_depth_frame" in c for c in changes)


def test_capture_without_out_bag_records_nothing(capture, tmp_path, ros_context, executor,
                                                 spin_until):
    node = CalibCaptureNode(context=ros_context,
                            parameter_overrides=[Parameter("min_views", value=3)])
    feeder = Feeder(ros_context)
    executor.add_node(node)
    executor.add_node(feeder)
    wait = waiter(executor, spin_until)
    assert wait(lambda: feeder.count_subscribers("thermal/image_raw") >= 1)
    rec = capture.recording
    small = SimpleNamespace(depth_intrinsics=rec.depth_intrinsics,
                            depth_stamps_ns=rec.depth_stamps_ns[:30], depth_mm=rec.depth_mm[:30],
                            thermal_stamps_ns=rec.thermal_stamps_ns[:8],
                            thermal_ck=rec.thermal_ck[:8])
    play(feeder, node, small, wait)
    assert "recorded_depth/image_raw" not in node.stats()
    node.close()
    assert list(tmp_path.iterdir()) == []


def test_with_nothing_coming_the_log_says_which_stream_is_missing(
    ros_context, executor, spin_until_logged
):
    node = CalibCaptureNode(context=ros_context,
                            parameter_overrides=[Parameter("report_period_s", value=0.2)])
    executor.add_node(node)
    err = spin_until_logged(executor, "no thermal/image_raw for over 1 s")
    assert "check the driver and the topic names" in err
    executor.remove_node(node)
    node.close()
    node.destroy_node()
