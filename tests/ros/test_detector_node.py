import math

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from iphd_msgs.msg import PersonDetectionArray
from rclpy.node import Node
from rclpy.parameter import Parameter
from ros_status import latest_status
from sensor_msgs.msg import CameraInfo, Image

from iphd.ros import qos
from iphd.ros.conversions import array_to_image, intrinsics_to_camera_info, stamp_to_ns
from iphd.ros.detector_node import DetectorNode
from iphd.sensors.frames import CameraIntrinsics

T0 = 1_700_000_000_000_000_000
PERIOD = 33_333_333
FRAME = "depth_optical_frame"
INTR = CameraIntrinsics(width=212, height=120, fx=110.0, fy=110.0, cx=105.5, cy=59.5)


def _depth_mm():
    depth = np.full((120, 212), 5000, np.uint16)
    depth[20:110, 90:130] = 2000
    depth[:, :20] = 0  # no valid depth on the left
    return depth


def _thermal_ck():
    thermal = np.zeros((30, 53), np.uint16)
    thermal[:, 8:] = 29_500
    thermal[5:28, 22:33] = 30_900
    return thermal


class Feeder(Node):
    """Publishes depth and registered thermal like the fusion node; records the detector."""

    def __init__(self, context):
        super().__init__("feeder", context=context)
        self.depth = self.create_publisher(Image, "depth/image_raw", qos.SENSOR_PUB)
        self.info = self.create_publisher(CameraInfo, "depth/camera_info", qos.SENSOR_PUB)
        self.registered = self.create_publisher(Image, "thermal/registered", qos.SENSOR_PUB)
        self.detections: list[PersonDetectionArray] = []
        self.diagnostics: list[DiagnosticArray] = []
        self.debug: list[Image] = []
        self.create_subscription(PersonDetectionArray, "detections", self.detections.append, 10)
        self.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)

    def subscribe_debug(self):
        self.create_subscription(Image, "debug/image", self.debug.append, 10)

    def send_info(self):
        self.info.publish(intrinsics_to_camera_info(INTR, T0, FRAME))

    def send_pair(self, depth_stamp, registered_stamp=None, depth=None, thermal=None):
        depth = array_to_image(_depth_mm(), "16UC1", depth_stamp, FRAME) if depth is None else depth
        self.depth.publish(depth)
        stamp = depth_stamp if registered_stamp is None else registered_stamp
        thermal = _thermal_ck() if thermal is None else thermal
        self.registered.publish(array_to_image(thermal, "16UC1", stamp, FRAME))


@pytest.fixture
def graph(executor, ros_context, spin_until, tiny_detector):
    def make(info=True, **params):
        values = {
            # The box verifier judges a trained detector's boxes; the tiny untrained one's
            # would be left out or not by chance (the verifier's own tests give it a file).
            "checkpoint": str(tiny_detector), "score_threshold": 0.0, "threads": 1,
            "diagnostics_period": 0.1, "verifier": "none", **params,
        }
        node = DetectorNode(
            context=ros_context,
            parameter_overrides=[Parameter(k, value=v) for k, v in values.items()],
        )
        feeder = Feeder(ros_context)
        executor.add_node(node)
        executor.add_node(feeder)
        assert spin_until(
            executor,
            lambda: feeder.registered.get_subscription_count() > 0
            and feeder.depth.get_subscription_count() > 0
            and node.count_subscribers("detections") > 0,
        )
        if info:
            feeder.send_info()
            assert spin_until(executor, lambda: node._depth_info is not None)
        return node, feeder

    return make


def test_a_depth_and_registered_pair_gives_one_detection_array_with_its_stamp(
    graph, executor, spin_until, spin_for
):
    node, feeder = graph()
    feeder.send_pair(T0)
    assert spin_until(executor, lambda: len(feeder.detections) == 1)
    spin_for(executor, 0.1)
    assert len(feeder.detections) == 1
    msg = feeder.detections[0]
    assert stamp_to_ns(msg.header.stamp) == T0 and msg.header.frame_id == FRAME
    assert (msg.image_width, msg.image_height) == (212, 120)
    scores = [d.score for d in msg.detections]
    assert scores and scores == sorted(scores, reverse=True)
    for d in msg.detections:
        xyz = (d.position.x, d.position.y, d.position.z)
        assert all(map(math.isfinite, xyz)) or all(map(math.isnan, xyz))
        if math.isfinite(d.position.z):
            assert 1.9 <= d.position.z <= 5.1
        assert math.isnan(d.temperature_k) or 294.0 <= d.temperature_k <= 310.0
    assert node.stats()["pairs"] == 1
    # Nothing on debug/image without a subscriber.
    assert feeder.debug == [] and node.stats()["published"] == 1


def test_pairs_whose_depth_beat_the_camera_info_are_detected_when_it_comes(
    graph, executor, spin_until, spin_for
):
    node, feeder = graph(info=False, max_queue=5)  # all three are released at once
    for i in range(3):
        feeder.send_pair(T0 + i * PERIOD)
    spin_for(executor, 0.3)
    assert feeder.detections == [] and node.stats()["depth_held_for_camera_info"] == 3
    feeder.send_info()
    assert spin_until(executor, lambda: len(feeder.detections) == 3)
    assert [stamp_to_ns(m.header.stamp) for m in feeder.detections] == [
        T0 + i * PERIOD for i in range(3)
    ]
    stats = node.stats()
    assert stats["depth_held_for_camera_info"] == 0
    assert stats["depth_dropped_before_camera_info"] == 0


def test_registered_thermal_of_another_stamp_gives_nothing(graph, executor, spin_for):
    node, feeder = graph()
    feeder.send_pair(T0, registered_stamp=T0 + PERIOD)
    spin_for(executor, 0.5)
    assert feeder.detections == []
    assert node.stats()["pairs"] == 0


def test_registered_thermal_that_never_finds_its_depth_frame_is_an_error_that_says_why(
    graph, executor, spin_for, spin_until, spin_until_logged
):
    # The detector gets its depth images through a relay that re-stamps them (1 ms later):
    # every registered frame waits for a depth frame that never comes. After about 1 s of
    # them the diagnostics go to ERROR (and the log says it) with what to check.
    node, feeder = graph()
    for i in range(80):
        stamp = T0 + i * PERIOD
        feeder.depth.publish(array_to_image(_depth_mm(), "16UC1", stamp + 1_000_000, FRAME))
        if i % 4 == 0:
            feeder.registered.publish(array_to_image(_thermal_ck(), "16UC1", stamp, FRAME))
        spin_for(executor, 0.005)
    err = spin_until_logged(executor, "frames found the depth/image_raw frame with its stamp")
    assert "the nearest depth stamp was 1.000 ms off" in err
    assert feeder.detections == [] and node.stats()["registered_no_depth_run"] >= 9

    def detector_status():
        return latest_status(feeder.diagnostics, "detector")[0]

    assert spin_until(executor, lambda: detector_status() is not None
                      and detector_status().level == DiagnosticStatus.ERROR)
    message = detector_status().message
    assert message.startswith("none of the last ") and "remappings" in message


def test_wrong_encoding_is_dropped_and_the_node_keeps_working(graph, executor, spin_until):
    node, feeder = graph()
    rgb = array_to_image(np.zeros((120, 212, 3), np.uint8), "rgb8", T0, FRAME)
    feeder.send_pair(T0, depth=rgb)
    small = array_to_image(np.zeros((60, 80), np.uint16), "16UC1", T0 + PERIOD, FRAME)
    feeder.send_pair(T0 + PERIOD, depth=small)
    assert spin_until(executor, lambda: node.stats().get("errors_bad_depth", 0) == 1)
    assert spin_until(executor, lambda: node.stats().get("errors_depth_size_mismatch", 0) == 1)
    feeder.send_pair(T0 + 2 * PERIOD)
    assert spin_until(executor, lambda: len(feeder.detections) == 1)
    assert stamp_to_ns(feeder.detections[0].header.stamp) == T0 + 2 * PERIOD


def test_missing_checkpoint_keeps_the_node_up_and_diagnostics_name_the_file(
    graph, executor, spin_until, spin_for, tmp_path
):
    missing = tmp_path / "nowhere.pt"
    node, feeder = graph(checkpoint=str(missing))
    assert node.detector is None

    def error_seen():
        return any(
            s.level == DiagnosticStatus.ERROR and str(missing) in s.message
            for d in feeder.diagnostics
            for s in d.status
        )

    assert spin_until(executor, error_seen)
    feeder.send_pair(T0)
    spin_for(executor, 0.3)
    assert feeder.detections == []


@pytest.mark.parametrize("parameter, value", [("min_thermal_contrast_k", -1.0),
                                              ("precision", "half"),
                                              ("score_threshold", 1.5)])
def test_a_bad_parameter_is_refused_in_diagnostics_and_nothing_is_published(
    graph, executor, spin_until, spin_for, parameter, value
):
    node, feeder = graph(**{parameter: value})
    assert node.detector is None
    assert spin_until(
        executor,
        lambda: any(
            s.level == DiagnosticStatus.ERROR and parameter in s.message
            for d in feeder.diagnostics
            for s in d.status
        ),
    )
    # The value is the problem, not the model: the message does not send the user to it.
    messages = [s.message for d in feeder.diagnostics for s in d.status if parameter in s.message]
    assert all("fix the parameter" in m and "checkpoint" not in m for m in messages), messages
    feeder.send_pair(T0)
    spin_for(executor, 0.3)
    assert feeder.detections == []
    # What iphd-run stops on and prints as its last line.
    assert parameter in node.stats()["not_started"]


def test_a_detector_that_did_not_start_keeps_naming_why_after_a_bad_camera_info(
    graph, executor, spin_until, spin_for
):
    # A rejected camera info (a driver's first, all-zero K) took over the ERROR message and kept
    # it after a good one came: the user fixed the camera info, not the missing model.
    node, feeder = graph(info=False, score_threshold=1.5)
    feeder.info.publish(CameraInfo(width=INTR.width, height=INTR.height))
    assert spin_until(executor, lambda: node.stats().get("errors_bad_depth_camera_info") == 1)
    feeder.send_info()
    assert spin_until(executor, lambda: node._depth_info is not None)
    feeder.diagnostics.clear()
    assert spin_until(executor, lambda: feeder.diagnostics)
    status = feeder.diagnostics[-1].status[0]
    assert status.level == DiagnosticStatus.ERROR
    assert "score_threshold" in status.message and "camera_info" not in status.message


def test_debug_image_is_published_only_while_subscribed(graph, executor, spin_until):
    node, feeder = graph()
    feeder.subscribe_debug()
    assert spin_until(executor, lambda: node.count_subscribers("debug/image") > 0)
    feeder.send_pair(T0)
    assert spin_until(executor, lambda: len(feeder.debug) == 1)
    image = feeder.debug[0]
    assert (image.encoding, image.width, image.height) == ("bgr8", 212, 120)
    assert stamp_to_ns(image.header.stamp) == T0


def test_diagnostics_report_model_latency_and_silent_thermal(graph, executor, spin_until):
    node, feeder = graph()
    feeder.send_pair(T0)
    assert spin_until(executor, lambda: len(feeder.detections) == 1)
    feeder.diagnostics.clear()

    def latest():
        return latest_status(feeder.diagnostics, "detector")

    assert spin_until(executor, lambda: latest()[0] is not None)
    status, kv = latest()
    assert kv["model"].endswith("tiny.pt") and kv["device"] == "cpu"
    assert "inference_ms_mean" in kv and "pairing_wait_ms_mean" in kv
    # Registered thermal silent for more than STREAM_TIMEOUT_S: ERROR.
    assert spin_until(
        executor,
        lambda: latest()[0].level == DiagnosticStatus.ERROR
        and "thermal/registered" in latest()[0].message,
        timeout_s=3.0,
    )


@pytest.mark.parametrize("check", [0.5, 0.0])
def test_boxes_no_warmer_than_the_room_are_not_published(graph, executor, spin_until, check):
    # Depth everywhere and the whole view at room temperature: whatever the model boxes is a
    # thing, not a person. With the check off (0) the same boxes are published.
    node, feeder = graph(min_thermal_contrast_k=check)
    depth = np.full((120, 212), 2000, np.uint16)
    noise = np.random.default_rng(0).normal(0.0, 5.0, (30, 53))  # the Lepton's 0.05 K
    room = np.round(29_500 + noise).astype(np.uint16)
    for i in range(3):
        stamp = T0 + i * PERIOD
        feeder.send_pair(stamp, depth=array_to_image(depth, "16UC1", stamp, FRAME), thermal=room)
        assert spin_until(executor, lambda n=i + 1: len(feeder.detections) == n)
    found = [d for m in feeder.detections for d in m.detections]
    rejected = node.stats()["detections_rejected_cold"]
    if check:
        # Only boxes without a position (hidden behind a better box: no evidence) get through.
        assert rejected > 0 and all(math.isnan(d.position.z) for d in found)
    else:
        assert rejected == 0 and any(math.isfinite(d.position.z) for d in found)


def _constant_verifier(path, probability_logit=0.0, threshold=0.5):
    """A verifier file giving every box sigmoid(probability_logit)."""
    from iphd.detection.verifier import FEATURE_NAMES, BoxVerifier

    n = len(FEATURE_NAMES)
    BoxVerifier(np.zeros(n), np.ones(n), ((np.zeros((n, 1)), np.zeros(1)),
                                          (np.zeros((1, 1)), np.array([probability_logit]))),
                threshold, "test").save(path)
    return str(path)


def test_the_verifier_leaves_out_boxes_and_says_so(graph, executor, spin_until, tmp_path):
    # Every box gets probability 0.5: a 0.6 threshold leaves all out, the file's 0.5 none.
    path = _constant_verifier(tmp_path / "v.npz")
    node, feeder = graph(verifier=path, min_verifier_probability=0.6)
    feeder.subscribe_debug()
    assert spin_until(executor, lambda: node.count_subscribers("debug/image") > 0)
    feeder.send_pair(T0)
    assert spin_until(executor, lambda: len(feeder.detections) == 1 and len(feeder.debug) == 1)
    assert list(feeder.detections[0].detections) == []
    stats = node.stats()
    assert stats["detections_rejected_verifier"] > 0
    assert stats["verifier"] == f"{path} (threshold 0.6)"


def test_the_verifier_files_own_threshold_applies_by_default(graph, executor, spin_until,
                                                             tmp_path):
    node, feeder = graph(verifier=_constant_verifier(tmp_path / "v.npz", threshold=0.5))
    feeder.send_pair(T0)
    assert spin_until(executor, lambda: len(feeder.detections) == 1)
    assert len(feeder.detections[0].detections) > 0
    assert node.stats()["detections_rejected_verifier"] == 0
    assert node.stats()["verifier"].endswith("(threshold 0.5)")


def test_a_bad_verifier_file_is_an_error_in_diagnostics_and_nothing_is_published(
    graph, executor, spin_until, spin_for, tmp_path
):
    (tmp_path / "bad.npz").write_bytes(b"not a verifier")
    node, feeder = graph(verifier=str(tmp_path / "bad.npz"))
    assert node.detector is None
    assert spin_until(
        executor,
        lambda: any(
            s.level == DiagnosticStatus.ERROR and "box verifier" in s.message
            and "train_verifier.py" in s.message
            for d in feeder.diagnostics
            for s in d.status
        ),
    )
    feeder.send_pair(T0)
    spin_for(executor, 0.3)
    assert feeder.detections == []


def test_thresholds_change_at_run_time_and_bad_values_are_refused(
    graph, executor, spin_until, set_remote_parameters
):
    node, feeder = graph()
    feeder.send_pair(T0)
    assert spin_until(executor, lambda: len(feeder.detections) == 1)
    scores = sorted(d.score for d in feeder.detections[0].detections)
    assert len(scores) >= 2
    # Half way between two scores: the lower ones are left out from the next pair on.
    threshold = float(scores[-2] + scores[-1]) / 2
    result = set_remote_parameters(executor, feeder, "detector", score_threshold=threshold)
    assert result.successful, result.reason
    assert node.config.score_threshold == threshold
    assert node.stats()["score_threshold"] == threshold  # what /diagnostics shows
    feeder.send_pair(T0 + PERIOD)
    assert spin_until(executor, lambda: len(feeder.detections) == 2)
    assert [d.score for d in feeder.detections[1].detections] == [scores[-1]]
    # A value the node cannot use, or a parameter read at start: refused, nothing changes.
    for values, says in (
        ({"score_threshold": 1.5}, "score_threshold must be in [0, 1]"),
        ({"score_threshold": 0.0, "thermal_min_coverage": 2.0}, "thermal_min_coverage"),
        ({"checkpoint": "other.pt"}, "read-only"),
        ({"threads": 4}, "read-only"),
    ):
        result = set_remote_parameters(executor, feeder, "detector", **values)
        assert not result.successful and says in result.reason, result.reason
    assert node.config.score_threshold == threshold
    assert node.get_parameter("score_threshold").value == threshold


def test_a_dumped_file_loaded_one_value_at_a_time_sets_the_writable_values_only(
    graph, executor, spin_until, set_remote_parameters
):
    node, feeder = graph()
    results = set_remote_parameters(
        executor, feeder, "detector", one_by_one=True,
        checkpoint=node.get_parameter("checkpoint").value, score_threshold=0.25,
        thermal_min_coverage=0.5,
    )
    assert [r.successful for r in results] == [False, True, True]
    assert "read-only" in results[0].reason
    assert (node.config.score_threshold, node.config.thermal_min_coverage) == (0.25, 0.5)


def test_an_internal_error_costs_one_pair_and_the_inference_thread_goes_on(
    graph, executor, spin_until, break_once
):
    node, feeder = graph()
    break_once(node, "_process", 1)
    feeder.send_pair(T0)
    assert spin_until(executor, lambda: node.stats().get("errors_internal") == 1)
    feeder.send_pair(T0 + PERIOD)
    assert spin_until(executor, lambda: len(feeder.detections) == 1)
    assert stamp_to_ns(feeder.detections[0].header.stamp) == T0 + PERIOD
    # A WARN for the input-error window after it, not for good.
    level, message = node._status(node.stats())
    assert level == "WARN" and "internal error" in message
    node._warn_drop.last_drop_s -= 31.0
    assert node._status(node.stats()) == ("OK", "detecting")
