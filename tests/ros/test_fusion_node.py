from collections import deque

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node
from rclpy.parameter import Parameter
from ros_status import latest_status
from sensor_msgs.msg import CameraInfo, Image
from simrig import TimedRig

from iphd.errors import ConfigError
from iphd.ros import qos
from iphd.ros.conversions import array_to_image, intrinsics_to_camera_info, stamp_to_ns
from iphd.ros.fusion_node import FusionNode

T0 = 1_700_000_000_000_000_000
DEPTH_PERIOD = 33_333_333
THERMAL_PERIOD = 115_000_000


class Feeder(Node):
    """Publishes rig frames like the drivers do and records what the fusion node publishes."""

    def __init__(self, context):
        super().__init__("feeder", context=context)
        self.rig = TimedRig(seed=3)
        self.depth = self.create_publisher(Image, "depth/image_raw", qos.SENSOR_PUB)
        self.depth_info = self.create_publisher(CameraInfo, "depth/camera_info", qos.SENSOR_PUB)
        self.thermal = self.create_publisher(Image, "thermal/image_raw", qos.SENSOR_PUB)
        self.registered: list[Image] = []
        self.diagnostics: list[DiagnosticArray] = []
        self.create_subscription(
            Image, "thermal/registered", self.registered.append, qos.SENSOR_SUB
        )
        self.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)

    def send_info(self):
        self.depth_info.publish(
            intrinsics_to_camera_info(self.rig.depth_intrinsics, T0, "depth_optical_frame")
        )

    def send_depth(self, stamp_ns, image=None):
        image = self.rig.render_depth((stamp_ns - T0) / 1e9) if image is None else image
        self.depth.publish(
            image
            if isinstance(image, Image)
            else array_to_image(image, "16UC1", stamp_ns, "depth_optical_frame")
        )

    def send_thermal(self, stamp_ns, image=None):
        image = self.rig.render_thermal((stamp_ns - T0) / 1e9) if image is None else image
        self.thermal.publish(
            image
            if isinstance(image, Image)
            else array_to_image(image, "16UC1", stamp_ns, "thermal_optical_frame")
        )


@pytest.fixture
def graph(executor, ros_context, spin_until):
    def make(**params):
        fusion = FusionNode(
            context=ros_context,
            parameter_overrides=[
                Parameter(k, value=v)
                for k, v in {"diagnostics_period": 0.2, "registered_scale": 1.0, **params}.items()
            ],
        )
        feeder = Feeder(ros_context)
        executor.add_node(fusion)
        executor.add_node(feeder)
        assert spin_until(
            executor,
            lambda: (
                feeder.depth.get_subscription_count() > 0
                and feeder.thermal.get_subscription_count() > 0
                and fusion.count_subscribers("thermal/registered") > 0
            ),
        )
        return fusion, feeder

    return make


def _stream(feeder, executor, spin_for, n_depth=9, thermal_at=(1, 4, 7), jitter_ns=3_000_000,
            t0=T0):
    for i in range(n_depth):
        feeder.send_depth(t0 + i * DEPTH_PERIOD)
        if i in thermal_at:
            feeder.send_thermal(t0 + i * DEPTH_PERIOD - jitter_ns)
        spin_for(executor, 0.01)


def _paired(graph, executor, spin_for, spin_until, **params):
    """A fusion node (``params``) that has paired and registered its first frames."""
    fusion, feeder = graph(**params)
    feeder.send_info()
    spin_for(executor, 0.1)
    _stream(feeder, executor, spin_for)
    assert spin_until(executor, lambda: len(feeder.registered) >= 2)
    return fusion, feeder


def test_registered_thermal_has_the_paired_depth_stamp_frame_and_size(
    graph, executor, spin_for, spin_until
):
    fusion, feeder = _paired(graph, executor, spin_for, spin_until)
    stamps = [stamp_to_ns(m.header.stamp) for m in feeder.registered]
    assert stamps[:2] == [T0 + 1 * DEPTH_PERIOD, T0 + 4 * DEPTH_PERIOD]
    msg = feeder.registered[0]
    assert (msg.encoding, msg.width, msg.height) == ("16UC1", 212, 120)
    assert msg.header.frame_id == "depth_optical_frame"
    assert "errors_depth_frame_id" not in fusion.stats()  # the calibration's frames.depth
    kelvin = np.frombuffer(bytes(msg.data), np.uint16).reshape(120, 212) / 100.0
    valid = kelvin[kelvin > 0]
    # The holes stay in by default (the shipped detector was trained with them): this rig's
    # Lepton covers less than half of the depth view.
    assert 0.3 * kelvin.size < valid.size < 0.5 * kelvin.size
    # People (>= 303 K) and the room (<= 296 K) both land in the registered image.
    assert (valid > 302.0).any() and (valid < 297.0).any()


def test_fix_zero_patches_fills_the_registration_holes_when_asked(
    graph, executor, spin_for, spin_until
):
    _, feeder = _paired(graph, executor, spin_for, spin_until, fix_zero_patches=True)
    thermal = np.frombuffer(bytes(feeder.registered[0].data), np.uint16)
    assert np.count_nonzero(thermal) > 0.5 * thermal.size


def test_depth_that_beats_its_camera_info_is_held_and_registered_when_it_comes(
    graph, executor, spin_for, spin_until
):
    fusion, feeder = graph()
    _stream(feeder, executor, spin_for, n_depth=5, thermal_at=(1, 3))
    spin_for(executor, 0.2)
    assert feeder.registered == []
    stats = fusion.stats()
    assert stats["depth_held_for_camera_info"] == 5
    assert stats["depth_dropped_before_camera_info"] == 0
    assert "errors_no_depth_camera_info" not in stats
    feeder.send_info()
    assert spin_until(executor, lambda: len(feeder.registered) == 2)
    assert [stamp_to_ns(m.header.stamp) for m in feeder.registered] == [
        T0 + DEPTH_PERIOD, T0 + 3 * DEPTH_PERIOD
    ]
    assert fusion.stats()["depth_held_for_camera_info"] == 0


def test_a_lasting_absence_of_camera_info_is_an_error_and_the_node_recovers(
    graph, executor, spin_for, spin_until
):
    fusion, feeder = graph()
    _stream(feeder, executor, spin_for, n_depth=40, thermal_at=(1, 20))
    spin_for(executor, 0.2)
    assert feeder.registered == []
    # The newest 30 are held, the 10 before them dropped.
    assert fusion.stats()["depth_held_for_camera_info"] == 30
    assert fusion.stats()["depth_dropped_before_camera_info"] == 10
    assert fusion.stats()["errors_no_depth_camera_info"] >= 1
    feeder.send_info()
    assert spin_until(executor, lambda: len(feeder.registered) == 1)
    assert stamp_to_ns(feeder.registered[0].header.stamp) == T0 + 20 * DEPTH_PERIOD
    _stream(feeder, executor, spin_for, n_depth=9)
    assert spin_until(executor, lambda: len(feeder.registered) >= 2)
    # Those drops are past: once their window is over the status is no longer WARN for them.
    assert fusion._warn_drop.current(fusion._errors)
    fusion._warn_drop.last_drop_s -= 60.0
    assert not fusion._warn_drop.current(fusion._errors)


def test_a_rejected_camera_info_is_named_as_rejected_not_as_missing(
    graph, executor, spin_for, spin_until
):
    fusion, feeder = graph()
    info = intrinsics_to_camera_info(feeder.rig.depth_intrinsics, T0, "depth_optical_frame")
    info.k = [0.0] * 9  # a driver without its calibration
    feeder.depth_info.publish(info)
    spin_for(executor, 0.1)
    _stream(feeder, executor, spin_for, n_depth=9, thermal_at=(4,))
    level, message = fusion._status(fusion.stats())
    assert level == "ERROR" and message.startswith("depth/camera_info received but rejected: ")
    assert "check the topic name" not in message
    # A usable one clears it, and the held frames are registered.
    feeder.send_info()
    assert spin_until(executor, lambda: len(feeder.registered) == 1)
    # (the rejected ones stay counted, a WARN for the input-error window)
    assert fusion._status(fusion.stats())[0] == "WARN"


def test_a_frame_stamped_0_is_dropped_and_resets_nothing(graph, executor, spin_for, spin_until):
    fusion, feeder = graph()
    feeder.send_info()
    _stream(feeder, executor, spin_for, n_depth=9, thermal_at=(4,))
    assert spin_until(executor, lambda: len(feeder.registered) == 1)
    # A publisher that never set the stamp: dropped as malformed, not a clock jump to 1970.
    feeder.send_depth(0, feeder.rig.render_depth(0.0))
    spin_for(executor, 0.2)
    stats = fusion.stats()
    assert stats["errors_bad_depth"] == 1 and stats["sync_resets"] == 0
    assert "header.stamp is 0" in fusion._last_error


def test_bad_frames_are_dropped_with_a_reason_and_nothing_wrong_is_published(
    graph, executor, spin_for, spin_until
):
    fusion, feeder = graph()
    feeder.send_info()
    spin_for(executor, 0.1)
    rgb = array_to_image(np.zeros((120, 212, 3), np.uint8), "rgb8", T0, "depth_optical_frame")
    feeder.send_depth(T0, rgb)
    feeder.send_depth(T0 + DEPTH_PERIOD, np.zeros((60, 80), np.uint16))
    feeder.send_thermal(T0, np.zeros((60, 80), np.uint16))
    # A well-formed depth frame next to an all-zero thermal frame: no output for it.
    feeder.send_depth(T0 + 2 * DEPTH_PERIOD)
    feeder.send_thermal(T0 + 2 * DEPTH_PERIOD, np.zeros((120, 160), np.uint16))
    feeder.send_depth(T0 + 3 * DEPTH_PERIOD, np.zeros((120, 212), np.uint16))
    assert spin_until(executor, lambda: fusion.stats().get("errors_bad_thermal", 0) >= 2)
    assert spin_until(executor, lambda: fusion.stats().get("errors_bad_depth", 0) >= 3)
    stats = fusion.stats()
    assert stats["errors_bad_depth"] == 3 and stats["errors_bad_thermal"] == 2
    assert feeder.registered == []
    # The node keeps working on good input.
    _stream(feeder, executor, spin_for, n_depth=12, thermal_at=(6, 9))
    assert spin_until(executor, lambda: len(feeder.registered) >= 1)
    level, message = fusion._status(fusion.stats())
    assert level == "WARN" and message.startswith("input errors: ")
    # 30 s after the last bad frame the status is OK again; the counts stay.
    fusion._warn_drop.last_drop_s -= 31.0
    assert fusion._status(fusion.stats()) == ("OK", "pairing and registering")
    assert fusion.stats()["errors_bad_depth"] == 3


def test_float_depth_in_metres_with_nans_is_accepted(graph, executor, spin_for, spin_until):
    fusion, feeder = graph()
    feeder.send_info()
    spin_for(executor, 0.1)
    for i in range(6):
        depth_m = feeder.rig.render_depth(i / 30).astype(np.float32) / 1000.0
        depth_m[depth_m == 0] = np.nan
        depth_m[:10, :10] = np.nan
        stamp = T0 + i * DEPTH_PERIOD
        feeder.send_depth(stamp, array_to_image(depth_m, "32FC1", stamp, "depth_optical_frame"))
        if i == 2:
            feeder.send_thermal(stamp)
        spin_for(executor, 0.01)
    assert spin_until(executor, lambda: len(feeder.registered) == 1)
    assert "errors_bad_depth" not in fusion.stats()


def test_missing_calibration_keeps_the_node_up_and_diagnostics_say_why(
    graph, executor, spin_until, tmp_path
):
    bad = tmp_path / "rig.yaml"
    bad.write_text("version: 1\nthermal: {width: 160}\n")
    fusion, feeder = graph(calibration_file=str(bad))
    assert fusion.pipeline is None

    def error_seen():
        return any(
            s.level == DiagnosticStatus.ERROR and "thermal.height" in s.message
            for d in feeder.diagnostics
            for s in d.status
        )

    assert spin_until(executor, error_seen)


def test_a_flat_field_pause_of_the_lepton_is_a_short_error_that_is_not_logged(
    graph, executor, spin_for, spin_until, capfd
):
    fusion, feeder = graph()
    feeder.send_info()
    spin_for(executor, 0.1)
    _stream(feeder, executor, spin_for, n_depth=30, thermal_at=range(1, 30, 3))
    assert spin_until(executor, lambda: fusion.diagnostics.level == "OK")
    # The Lepton pauses 1.1 s (an FFC); depth goes on.
    t = T0 + 30 * DEPTH_PERIOD
    for i in range(33):
        feeder.send_depth(t + i * DEPTH_PERIOD)
        spin_for(executor, 0.033)
        if i == 25:
            level, message = fusion._status(fusion.stats())
            assert level == "ERROR" and message.endswith(
                "(a Lepton's flat-field correction pauses it for about 1 s)")
    _stream(feeder, executor, spin_for, n_depth=12, thermal_at=range(1, 12, 3),
            t0=t + 33 * DEPTH_PERIOD)
    assert spin_until(executor, lambda: fusion.diagnostics.level == "OK")
    # On /diagnostics (ERROR, then OK), but not in the log every few minutes.
    assert "status ERROR" not in capfd.readouterr().err


def test_diagnostics_report_rates_pairs_and_stopped_thermal(
    graph, executor, spin_for, spin_until, spin_until_logged
):
    fusion, feeder = _paired(graph, executor, spin_for, spin_until)
    feeder.diagnostics.clear()

    def values():
        return latest_status(feeder.diagnostics, "fusion")

    assert spin_until(executor, lambda: values()[0] is not None)
    _, kv = values()
    assert int(kv["pairs"]) >= 2 and "process_ms_mean" in kv
    # No thermal for over a second: ERROR, in the log too (it had been working).
    spin_for(executor, 1.2)
    status, _ = values()
    assert status.level == DiagnosticStatus.ERROR and "thermal" in status.message
    spin_until_logged(executor, "status ERROR: no thermal/image_raw")
    # The stream returns: the log says so.
    _stream(feeder, executor, spin_for, t0=T0 + 10**9)
    spin_until_logged(executor, "status OK again")


def test_a_depth_outage_is_reported_as_depth_stopping_not_as_two_clocks(
    graph, executor, spin_for, spin_until, capfd
):
    fusion, feeder = _paired(graph, executor, spin_for, spin_until)
    # Depth stops for 1.6 s; the Lepton goes on (its frames find no partner).
    t = T0 + 9 * DEPTH_PERIOD
    for k in range(14):
        feeder.send_thermal(t + k * THERMAL_PERIOD)
        spin_for(executor, 0.115)
    assert fusion.stats()["unpaired_run"] >= 9
    assert fusion._status(fusion.stats())[1].startswith("no depth/image_raw for over 0.6 s")
    # Depth comes back, in step with thermal again.
    _stream(feeder, executor, spin_for, n_depth=30, thermal_at=range(1, 30, 3),
            t0=t + 14 * THERMAL_PERIOD)
    assert spin_until(executor, lambda: fusion.stats()["unpaired_run"] == 0)
    level, message = fusion._status(fusion.stats())
    assert level == "WARN" and message.endswith("depth/image_raw stopped in that time"), message
    err = capfd.readouterr().err
    assert "two clocks" not in err, [line for line in err.splitlines() if "two clocks" in line]


def test_stamps_jumping_back_again_and_again_are_warned_of_once_a_second(
    graph, executor, spin_for, spin_until, capfd
):
    # Two drivers (a bag played beside the live one) on the same topics, 100 s apart.
    fusion, feeder = _paired(graph, executor, spin_for, spin_until)
    for i in range(20):
        t = T0 + 20 * DEPTH_PERIOD + i * DEPTH_PERIOD + (100 * 10**9 if i % 2 else 0)
        feeder.send_depth(t)
        spin_for(executor, 0.01)
    assert spin_until(executor, lambda: fusion.stats()["sync_resets"] >= 8)
    err = capfd.readouterr().err
    assert 1 <= err.count("sync buffers reset") <= 2, err
    assert "two publishers on these topics" in err


def test_thermal_stamped_on_another_clock_is_an_error_that_says_how_far_apart(
    graph, executor, spin_for, spin_until, spin_until_logged
):
    # A Lepton driver stamping with another host's clock: its frames come with the depth
    # frames but 3 s before them, so no pair is made. Diagnostics go to ERROR with how far
    # apart and what to do (the log says it too); a driver on the right clock recovers.
    fusion, feeder = graph()
    feeder.send_info()
    spin_for(executor, 0.1)
    behind = 3_000_000_000
    _stream(feeder, executor, spin_for, n_depth=36, thermal_at=range(1, 36, 3),
            jitter_ns=behind)
    err = spin_until_logged(executor, "drivers stamp on two clocks")
    assert "no thermal frame finds a depth frame within 20 ms" in err
    assert feeder.registered == []
    stats = fusion.stats()
    assert stats["unpaired_run"] >= 9 and stats["pairs"] == 0
    assert 2990 < stats["unpaired_skew_ms"] < 3010

    def fusion_status():
        return latest_status(feeder.diagnostics, "fusion")[0]

    assert spin_until(executor, lambda: fusion_status() is not None
                      and fusion_status().level == DiagnosticStatus.ERROR)
    status = fusion_status()
    assert "stamped 3.0" in status.message and "before the depth frame" in status.message
    assert "ROS time on one clock" in status.message
    # The driver fixed: pairs are made again and the error clears.
    start = T0 + 40 * DEPTH_PERIOD
    for i in range(12):
        feeder.send_depth(start + i * DEPTH_PERIOD)
        if i % 3 == 1:
            feeder.send_thermal(start + i * DEPTH_PERIOD - 3_000_000)
        spin_for(executor, 0.01)
    assert spin_until(executor, lambda: len(feeder.registered) >= 3)
    stats = fusion.stats()
    assert stats["unpaired_run"] == 0
    # What is left is a warning about the frames lost while the clocks were apart.
    level, message = fusion._status(stats)
    assert level == "WARN" and message.startswith(
        "more than 1 % of thermal frames in the last 30 s found no depth partner "
        "(12 none within the skew; ")
    # Once they are more than 30 s behind, pairing as it should is OK again.
    fusion._drop_window = deque((t - 31.0, n, d) for t, n, d in fusion._drop_window)
    feeder.send_depth(start + 12 * DEPTH_PERIOD)
    feeder.send_thermal(start + 12 * DEPTH_PERIOD - 3_000_000)
    feeder.send_depth(start + 13 * DEPTH_PERIOD)
    assert spin_until(executor, lambda: fusion.stats()["pairs"] > stats["pairs"])
    assert fusion._status(fusion.stats()) == ("OK", "pairing and registering")


def test_depth_that_does_not_read_as_millimetres_is_a_warning_and_still_registered(
    graph, executor, spin_for, spin_until
):
    # A D435 set to 0.1 mm depth units: the room reads ten times too far.
    fusion, feeder = graph()
    feeder.send_info()
    spin_for(executor, 0.1)
    for i in range(9):
        stamp = T0 + i * DEPTH_PERIOD
        depth = feeder.rig.render_depth(i * DEPTH_PERIOD / 1e9).astype(np.uint32) * 10
        feeder.send_depth(stamp, np.minimum(depth, 65535).astype(np.uint16))
        if i in (1, 4, 7):
            feeder.send_thermal(stamp - 3_000_000)
        spin_for(executor, 0.01)
    assert spin_until(executor, lambda: len(feeder.registered) >= 2)
    assert fusion.stats()["errors_depth_units"] == 1  # checked about once a second
    level, message = fusion._status(fusion.stats())
    assert level == "WARN" and "beyond a D435's range" in message and "1 mm" in message


def test_replay_qos_keeps_every_frame_sent_while_the_node_was_busy(
    graph, executor, spin_for, spin_until
):
    # Frames published while the executor is busy wait in the subscription's queue: sensor-data
    # QoS keeps the newest 5 (live: a late frame is worth less than the next), bag replay's
    # reliable 30-deep queue keeps them all.
    received = {}
    done = []
    for name, params in (
        ("sensor", {}),
        ("replay", {"input_reliability": "reliable", "input_queue_depth": 30}),
    ):
        fusion, feeder = graph(**params)
        feeder.send_info()
        spin_for(executor, 0.2)
        for i in range(20):
            feeder.send_depth(T0 + i * DEPTH_PERIOD)
        spin_until(executor, lambda f=fusion: f.stats()["depth_frames"] >= 20, timeout_s=2.0)
        spin_for(executor, 0.3)
        received[name] = fusion.stats()["depth_frames"]
        executor.remove_node(fusion)
        executor.remove_node(feeder)
        done += [fusion, feeder]
    # Destroyed only once nothing spins any more: the events executor may still hold a timer
    # event of a removed node, and a destroyed node's callback raises InvalidHandle.
    for node in done:
        node.destroy_node()
    assert received["sensor"] <= 5 and received["replay"] == 20, received


def test_bad_input_qos_parameters_are_refused_with_the_choices(ros_context):
    for name, value, match in (
        ("input_reliability", "best-effort", "best_effort, reliable"),
        ("input_queue_depth", 0, "input_queue_depth must be an integer >= 1"),
    ):
        with pytest.raises(ConfigError, match=match):
            FusionNode(context=ros_context, parameter_overrides=[Parameter(name, value=value)])


def test_a_diagnostics_period_that_is_not_above_zero_is_refused(ros_context):
    for value in (0.0, -1.0, float("nan")):
        with pytest.raises(ConfigError, match="diagnostics_period must be .* above 0"):
            FusionNode(context=ros_context,
                       parameter_overrides=[Parameter("diagnostics_period", value=value)])


def test_thermal_frames_wait_for_depth_that_queued_up_behind_them(
    graph, executor, spin_for, spin_until
):
    # A busy node can take 300 ms of thermal frames before the depth frames queued beside them:
    # every thermal frame still finds its depth partner.
    fusion, feeder = graph()
    feeder.send_info()
    spin_for(executor, 0.1)
    thermal_at = (1, 4, 7, 10)
    for i in thermal_at:
        feeder.send_thermal(T0 + i * DEPTH_PERIOD - 3_000_000)
    spin_for(executor, 0.2)
    for i in range(12):
        feeder.send_depth(T0 + i * DEPTH_PERIOD)
        spin_for(executor, 0.01)
    assert spin_until(executor, lambda: len(feeder.registered) == len(thermal_at))
    assert [stamp_to_ns(m.header.stamp) for m in feeder.registered] == [
        T0 + i * DEPTH_PERIOD for i in thermal_at
    ]
    assert "thermal_dropped_no_depth_within_skew" not in fusion.stats()


def test_camera_info_inputs_warn_on_an_incompatible_publisher(graph, executor, spin_until_logged):
    # A best-effort camera_info publisher cannot serve a reliable subscription: the node says
    # what to fix, as it does for the images.
    fusion, feeder = graph(input_reliability="reliable")
    assert {s.topic for s in fusion.subscriptions} >= {"depth/camera_info", "thermal/camera_info"}
    feeder.create_publisher(CameraInfo, "thermal/camera_info", qos.SENSOR_SUB)
    err = spin_until_logged(executor, "incompatible QoS on 'thermal/camera_info'")
    assert "input_reliability" in err
    assert fusion.stats()["incompatible_qos"] == "thermal/camera_info"


def test_an_incompatible_publisher_of_a_remapped_topic_is_named_as_it_resolves(
    ros_context, executor, spin_until_logged
):
    fusion = FusionNode(
        context=ros_context, cli_args=["--ros-args", "-r", "thermal/image_raw:=/lepton/image_raw"],
        parameter_overrides=[Parameter("input_reliability", value="reliable")],
    )
    driver = Node("lepton_driver", context=ros_context)
    executor.add_node(fusion)
    executor.add_node(driver)
    driver.create_publisher(Image, "/lepton/image_raw", qos.SENSOR_SUB)
    spin_until_logged(executor, "incompatible QoS on '/lepton/image_raw (thermal/image_raw)'")
    assert fusion.stats()["incompatible_qos"] == "/lepton/image_raw (thermal/image_raw)"
    for node in (fusion, driver):
        executor.remove_node(node)
        node.destroy_node()


def _apply(tf, point):
    """A TransformStamped applied to a point of its child frame: the point in its parent."""
    r, t = tf.transform.rotation, tf.transform.translation
    u, w = np.array([r.x, r.y, r.z]), r.w
    p = np.asarray(point, dtype=np.float64)
    rotated = 2 * (u @ p) * u + (w * w - u @ u) * p + 2 * w * np.cross(u, p)
    return rotated + np.array([t.x, t.y, t.z])


def test_the_rig_static_tf_is_latched_on_tf_static_with_rep103_and_the_extrinsic(
    graph, executor, spin_until, ros_context, tf2_msgs
):
    from iphd.calibration import load_calibration

    fusion, _ = graph()
    # A listener that starts after the node published still gets it (transient local).
    late = Node("late_listener", context=ros_context)
    got = []
    late.create_subscription(tf2_msgs.TFMessage, "/tf_static", got.append, qos.STATIC_TF)
    executor.add_node(late)
    assert spin_until(executor, lambda: bool(got))
    transforms = {(t.header.frame_id, t.child_frame_id): t for t in got[0].transforms}
    assert set(transforms) == {
        ("camera_link", "depth_optical_frame"), ("depth_optical_frame", "thermal_optical_frame")
    }
    # REP 103: the optical frame looks along camera_link's x, its x is camera_link's -y and
    # its y (down) is camera_link's -z.
    optical = transforms["camera_link", "depth_optical_frame"]
    assert _apply(optical, (0, 0, 1)) == pytest.approx([1, 0, 0], abs=1e-9)
    assert _apply(optical, (1, 0, 0)) == pytest.approx([0, -1, 0], abs=1e-9)
    assert _apply(optical, (0, 1, 0)) == pytest.approx([0, 0, -1], abs=1e-9)
    # The thermal camera's pose in the depth frame undoes the calibration's extrinsic: a
    # point in thermal coordinates, moved into depth coordinates and back, is where it was.
    calibration = load_calibration()
    thermal = transforms["depth_optical_frame", "thermal_optical_frame"]
    for point in ((0.0, 0.0, 2.0), (0.3, -0.2, 4.0)):
        in_depth = _apply(thermal, point)
        back = np.asarray(calibration.rotation) @ in_depth + np.asarray(calibration.translation_m)
        assert back == pytest.approx(point, abs=1e-9)
    assert fusion.calibration is not None


def test_the_rig_calibration_is_latched_on_rig_calibration_for_recorders(
    graph, executor, spin_until, spin_for, ros_context, tmp_path
):
    from std_msgs.msg import String

    from iphd.calib.simulate import perturbed_calibration
    from iphd.calibration import calibration_from_yaml, load_calibration, save_calibration

    # A calibration that is not the package's, with a clock offset (not in TF or camera_info).
    rig = perturbed_calibration(load_calibration(), clock_offset_s=0.04)
    save_calibration(rig, tmp_path / "rig.yaml")
    fusion, _ = graph(calibration_file=str(tmp_path / "rig.yaml"))
    # A recorder started after the node published still gets it (transient local).
    late = Node("late_recorder", context=ros_context)
    got: list[String] = []
    late.create_subscription(String, "rig_calibration", got.append, qos.LATCHED)
    executor.add_node(late)
    assert spin_until(executor, lambda: bool(got))
    spin_for(executor, 0.2)
    assert len(got) == 1
    carried = calibration_from_yaml(got[0].data)
    assert carried.thermal == rig.thermal and carried.frames == rig.frames
    np.testing.assert_allclose(carried.rotation, rig.rotation, atol=1e-12)
    np.testing.assert_allclose(carried.translation_m, rig.translation_m, atol=1e-12)
    assert carried.thermal_clock_offset_s == pytest.approx(0.04)
    assert fusion.stats()["calibration"] == str(tmp_path / "rig.yaml")  # on /diagnostics too


def test_publish_calibration_false_publishes_no_rig_calibration(graph, spin_for, executor):
    fusion, feeder = graph(publish_calibration=False)
    spin_for(executor, 0.1)
    assert fusion.count_publishers("rig_calibration") == 0


def test_a_rig_beside_realsense2_camera_hangs_thermal_off_the_drivers_depth_frame(
    graph, executor, spin_for, spin_until, ros_context, tf2_msgs, tmp_path
):
    import yaml

    from iphd.calibration import DEFAULT_CALIBRATION

    data = yaml.safe_load(DEFAULT_CALIBRATION.read_text())
    # realsense2_camera places camera_depth_optical_frame under camera_link itself: the rig's
    # TF must not give that frame a second parent.
    data["frames"] = {
        "base": "", "depth": "camera_depth_optical_frame", "thermal": "thermal_optical_frame"
    }
    path = tmp_path / "rig.yaml"
    path.write_text(yaml.safe_dump(data))
    fusion, feeder = graph(calibration_file=str(path))
    late = Node("late_listener", context=ros_context)
    got = []
    late.create_subscription(tf2_msgs.TFMessage, "/tf_static", got.append, qos.STATIC_TF)
    executor.add_node(late)
    assert spin_until(executor, lambda: bool(got))
    assert [(t.header.frame_id, t.child_frame_id) for t in got[0].transforms] == [
        ("camera_depth_optical_frame", "thermal_optical_frame")
    ]
    # The feeder's depth images are in depth_optical_frame, not the calibration's frame: said
    # once, on /diagnostics too, and the frames are still registered.
    feeder.send_info()
    spin_for(executor, 0.1)
    _stream(feeder, executor, spin_for)
    assert spin_until(executor, lambda: len(feeder.registered) >= 2)
    stats = fusion.stats()
    assert stats["errors_depth_frame_id"] == 1
    assert spin_until(executor, lambda: any(
        "frames.depth: depth_optical_frame in rig.yaml" in s.message
        for d in feeder.diagnostics for s in d.status
    ))


def test_thermal_images_in_another_frame_than_the_calibrations_are_said_once(
    graph, executor, spin_for, spin_until, tmp_path
):
    from iphd.calibration import DEFAULT_CALIBRATION

    path = tmp_path / "rig.yaml"
    path.write_text(DEFAULT_CALIBRATION.read_text().replace(
        "thermal: thermal_optical_frame", "thermal: lepton"))
    fusion, feeder = graph(calibration_file=str(path))
    feeder.send_info()
    spin_for(executor, 0.1)
    _stream(feeder, executor, spin_for)  # thermal in thermal_optical_frame, three frames
    assert spin_until(executor, lambda: len(feeder.registered) >= 2)  # still registered
    assert fusion.stats()["errors_thermal_frame_id"] == 1
    assert "errors_depth_frame_id" not in fusion.stats()
    assert spin_until(executor, lambda: any(
        "frames.thermal: thermal_optical_frame in rig.yaml" in s.message
        for d in feeder.diagnostics for s in d.status
    ))


def test_other_static_transforms_of_the_rig_frames_are_said_once_each(
    graph, executor, spin_for, spin_until, ros_context, tf2_msgs
):
    from iphd.calibration import StaticTransform
    from iphd.ros.conversions import transforms_to_msgs

    fusion, feeder = graph()
    spin_for(executor, 0.3)  # its own latched transforms come back to it: no conflict
    assert "errors_tf_conflict" not in fusion.stats()
    # A depth driver that places the depth frame itself, and a played recording of another
    # calibration's thermal transform; both latched, sent twice.
    driver = StaticTransform("camera_depth_frame", "depth_optical_frame", (0.0, 0.0, 0.0),
                             (-0.5, 0.5, -0.5, 0.5))
    recorded = StaticTransform("depth_optical_frame", "thermal_optical_frame",
                               (0.02, -0.035, 0.0), (0.0, 0.0, 0.0, 1.0))
    other = Node("other_tf", context=ros_context)
    pub = other.create_publisher(tf2_msgs.TFMessage, "/tf_static", qos.STATIC_TF)
    executor.add_node(other)
    for _ in range(2):
        pub.publish(tf2_msgs.TFMessage(transforms=transforms_to_msgs([driver, recorded], T0)))
    assert spin_until(executor, lambda: fusion.stats().get("errors_tf_conflict") == 2)
    spin_for(executor, 0.3)
    assert fusion.stats()["errors_tf_conflict"] == 2
    assert fusion.stats()["tf_conflicts"] == (
        "depth_optical_frame under camera_depth_frame, and under camera_link here; "
        "thermal_optical_frame under depth_optical_frame, 2.0 cm and 0.0° from here"
    )
    # Its status, once the streams run: the last conflict, with what to do.
    feeder.send_info()
    spin_for(executor, 0.1)
    _stream(feeder, executor, spin_for)
    assert spin_until(executor, lambda: any(
        "another node publishes on /tf_static thermal_optical_frame under depth_optical_frame, "
        "2.0 cm and 0.0° from here" in s.message and "source:=bag" in s.message
        for d in feeder.diagnostics for s in d.status
    ))
    assert "depth_optical_frame under camera_depth_frame, and under camera_link here" in (
        fusion.tf_conflicts[0]
    )


def test_a_moving_transform_of_a_rig_frame_on_tf_is_said_too(
    graph, executor, spin_for, spin_until, ros_context, tf2_msgs
):
    from iphd.calibration import StaticTransform, transform_conflicts
    from iphd.ros.conversions import transforms_to_msgs

    fusion, feeder = graph()
    other = Node("robot_state", context=ros_context)
    pub = other.create_publisher(tf2_msgs.TFMessage, "/tf", qos.TF_LISTENER)
    executor.add_node(other)
    # The robot's other frames, and the rig's own transform as fusion places it: no conflict.
    wheel = StaticTransform("base_link", "wheel", (0.1, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))
    same = StaticTransform("camera_link", "depth_optical_frame", (0.0, 0.0, 0.0),
                           (-0.5, 0.5, -0.5, 0.5))
    assert spin_until(executor, lambda: pub.get_subscription_count() >= 1)
    pub.publish(tf2_msgs.TFMessage(transforms=transforms_to_msgs([wheel, same], T0)))
    spin_for(executor, 0.3)
    assert "errors_tf_conflict" not in fusion.stats()
    # A robot description that moves the camera (a joint that is not fixed).
    tilted = StaticTransform("camera_link", "depth_optical_frame", (0.0, 0.0, 0.0),
                             (-0.5, 0.5, -0.45, 0.55))
    for _ in range(3):
        pub.publish(tf2_msgs.TFMessage(transforms=transforms_to_msgs([wheel, tilted], T0)))
    assert spin_until(executor, lambda: fusion.stats().get("errors_tf_conflict") == 1)
    # A joint that keeps moving: one conflict, said once, its latest placement on /diagnostics.
    for k in range(30):
        turning = StaticTransform("camera_link", "depth_optical_frame", (0.0, 0.0, 0.0),
                                  (-0.5, 0.5, -0.45 + 0.001 * k, 0.55))
        pub.publish(tf2_msgs.TFMessage(transforms=transforms_to_msgs([turning], T0)))
    (last,) = transform_conflicts(fusion._rig_tf, [turning])
    assert spin_until(executor, lambda: fusion.stats()["tf_conflicts"] == last.describe())
    assert fusion.stats()["errors_tf_conflict"] == 1 and len(fusion.tf_conflicts) == 1
    pub.publish(tf2_msgs.TFMessage(transforms=transforms_to_msgs([wheel, tilted], T0)))
    assert spin_until(executor, lambda: fusion._tf_conflicts[
        ("depth_optical_frame", "camera_link", "/tf")].angle_deg > 5.0)
    assert fusion.tf_conflicts == [
        "another node publishes on /tf depth_optical_frame under camera_link, 0.0 cm and "
        f"{next(iter(fusion._tf_conflicts.values())).angle_deg:.1f}° from here "
        f"({fusion._calibration_path}): a "
        "moving transform of a rig frame fights the rig's static one: make the robot "
        "description's joint to the camera fixed, or keep its placement and set the fusion "
        "node's publish_tf: false"
    ]


def test_diagnostics_name_the_remapped_topics_that_do_not_come(ros_context, spin_for, executor):
    fusion = FusionNode(
        context=ros_context,
        cli_args=["--ros-args", "-r", "thermal/image_raw:=/lepton/image_raw"],
    )
    executor.add_node(fusion)
    spin_for(executor, 0.7)
    level, message = fusion._status(fusion.stats())
    assert level == "ERROR"
    assert message.startswith("no /lepton/image_raw (thermal/image_raw) for over")
    fusion._thermal_rate.tick()  # thermal comes: depth, not remapped, is named as it is
    assert fusion._status(fusion.stats())[1].startswith("no depth/image_raw for over")


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"max_skew_ms": -5.0}, "max_skew_ms (-5.0)"),
        ({"max_wait_ms": float("nan")}, "max_wait_ms (nan)"),
        ({"registered_scale": -0.25}, "registered_scale (-0.25)"),
        ({"registered_width": 212}, "registered_width and registered_height are set together"),
    ],
)
def test_a_value_fusion_cannot_run_with_stops_it_naming_the_parameter(ros_context, params,
                                                                     says):
    # Before, it was filed under 'calibration' on /diagnostics and nothing was ever registered.
    with pytest.raises(ConfigError) as caught:
        FusionNode(context=ros_context,
                   parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    assert says in str(caught.value)
