import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from iphd_msgs.msg import PersonTrack, PersonTrackArray
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image

from iphd.errors import ConfigError
from iphd.ros import qos
from iphd.ros.conversions import image_to_array, stamp_to_ns
from iphd.ros.sim_source_node import SimSourceNode


class Listener(Node):
    def __init__(self, context):
        super().__init__("listener", context=context)
        self.msgs = {}
        for topic, kind in (
            ("depth/image_raw", Image),
            ("depth/camera_info", CameraInfo),
            ("thermal/image_raw", Image),
            ("ground_truth/people", PersonTrackArray),
        ):
            self.msgs[topic] = []
            self.create_subscription(kind, topic, self.msgs[topic].append, qos.SENSOR_SUB)
        self.diagnostics = []
        self.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)


def _start(executor, ros_context, **params):
    """A small simulator (212x120 depth) and a listener, both spinning on ``executor``."""
    listener = Listener(ros_context)
    sim = SimSourceNode(
        context=ros_context,
        parameter_overrides=[
            Parameter(k, value=v) for k, v in {"depth_profile": "depth_212x120", **params}.items()
        ],
    )
    executor.add_node(listener)
    executor.add_node(sim)
    return listener, sim


def test_sim_source_publishes_depth_thermal_and_ground_truth_in_real_time(
    executor, ros_context, spin_until
):
    listener, sim = _start(executor, ros_context, people=3, seed=4)
    got = listener.msgs
    assert spin_until(
        executor,
        lambda: len(got["thermal/image_raw"]) >= 5 and len(got["depth/image_raw"]) >= 30,
        15.0,
    ), {k: len(v) for k, v in got.items()}
    depth = image_to_array(got["depth/image_raw"][-1])
    assert depth.shape == (120, 212) and depth.dtype == np.uint16 and (depth > 0).mean() > 0.5
    thermal = image_to_array(got["thermal/image_raw"][-1])
    assert thermal.shape == (120, 160) and 27_000 < np.median(thermal) < 31_000
    info = got["depth/camera_info"][-1]
    assert (info.width, info.height) == (212, 120)
    # Ground truth rides with its depth frame: same stamps, people with their identities.
    depth_stamps = {stamp_to_ns(m.header.stamp) for m in got["depth/image_raw"]}
    truth = got["ground_truth/people"]
    assert truth and {stamp_to_ns(m.header.stamp) for m in truth} <= depth_stamps
    tracks = [t for m in truth for t in m.tracks]
    assert tracks and {t.id for t in tracks} <= {0, 1, 2}
    assert all(t.state == PersonTrack.STATE_CONFIRMED and 0 < t.score <= 1 for t in tracks)
    assert all(t.position.z > 0.3 and t.x2 > t.x1 for t in tracks)
    # Depth at 30 Hz, thermal below the Lepton's 9 Hz limit (the first second is an FFC).
    stamps = sorted(depth_stamps)
    assert np.median(np.diff(stamps)) / 1e6 < 40.0
    thermal_stamps = sorted(stamp_to_ns(m.header.stamp) for m in got["thermal/image_raw"])
    assert np.min(np.diff(thermal_stamps)) / 1e6 > 100.0
    # Stamps are capture instants on the rates' grids, however late the timer fired.
    depth_steps = np.diff(stamps) * 30.0 / 1e9
    assert np.allclose(depth_steps, np.round(depth_steps), atol=1e-3)
    thermal_steps = np.diff(thermal_stamps) * 8.7 / 1e9
    assert np.allclose(thermal_steps, np.round(thermal_steps), atol=1e-3)


def test_sim_source_reports_what_it_published_and_warns_when_it_falls_behind(
    executor, ros_context, spin_until
):
    listener, sim = _start(executor, ros_context, people=1, diagnostics_period=0.2)

    def status():
        found = [s for m in listener.diagnostics for s in m.status if s.name.endswith("sim_source")]
        return found[-1] if found else None

    assert spin_until(
        executor,
        lambda: status() is not None
        and int({v.key: v.value for v in status().values}.get("depth_published", 0)) > 0,
        10.0,
    )
    values = {v.key: v.value for v in status().values}
    assert values["depth_profile"] == "depth_212x120" and float(values["depth_rate_hz"]) == 30.0
    # A computer that cannot render at the rates skips frames: the status says what to change.
    counts = {"depth_published": 80, "thermal_published": 20, "frames_skipped": 20}
    level, message = sim._status(counts)
    assert level == "WARN" and "depth_rate_hz" in message and "20 of 120" in message
    assert sim._status({**counts, "frames_skipped": 5})[0] == "OK"
    assert status().level in (DiagnosticStatus.OK, DiagnosticStatus.WARN)


def test_a_bad_simulator_parameter_is_a_config_error_naming_it(ros_context):
    # spin_node turns a ConfigError into its message and exit status 2, not a traceback.
    with pytest.raises(ConfigError, match="sim_source parameters: depth_rate_hz must be positive"):
        SimSourceNode(context=ros_context,
                      parameter_overrides=[Parameter("depth_rate_hz", value=0.0)])


def test_on_sim_time_the_scene_waits_for_clock_and_says_so(executor, ros_context, spin_until):
    from rosgraph_msgs.msg import Clock

    listener, sim = _start(executor, ros_context, people=1, diagnostics_period=0.2,
                           use_sim_time=True)

    def status():
        found = [s for m in listener.diagnostics for s in m.status if s.name.endswith("sim_source")]
        return found[-1] if found else None

    # No /clock: nothing goes out, and the diagnostics (on the steady clock) say why.
    assert spin_until(executor, lambda: status() is not None, 5.0)
    assert status().level == DiagnosticStatus.ERROR
    assert "no /clock has come" in status().message and "use_sim_time false" in status().message
    assert not listener.msgs["depth/image_raw"]
    # A simulator's clock starts well after 0: the scene starts there, with nothing skipped.
    clock = Node("clock", context=ros_context)
    pub = clock.create_publisher(Clock, "/clock", 10)
    executor.add_node(clock)
    start_ns = 1_000 * 1_000_000_000
    ticks = iter(range(10_000))

    def advance() -> bool:
        t = start_ns + next(ticks) * 10_000_000  # 10 ms a tick
        pub.publish(Clock(clock=rclpy_time(t)))
        return len(listener.msgs["depth/image_raw"]) >= 5

    assert spin_until(executor, advance, 10.0)
    stamps = [stamp_to_ns(m.header.stamp) for m in listener.msgs["depth/image_raw"]]
    assert min(stamps) >= start_ns and max(stamps) < start_ns + 10**9
    # (counted from 0 it would be the 30 000 frames of the first 1 000 s; a few are skipped
    # because this clock steps faster than the timer ticks)
    assert sim.frames_skipped < 30
    assert spin_until(executor, lambda: status().level != DiagnosticStatus.ERROR, 5.0)


def rclpy_time(ns: int):
    from builtin_interfaces.msg import Time

    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)
