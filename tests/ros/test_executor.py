"""Which executor the iphd processes spin: IPHD_EXECUTOR and the fallback without one."""

import builtins
import time

import pytest
from rclpy.executors import SingleThreadedExecutor

from iphd.errors import ConfigError
from iphd.ros.common import make_executor


def _has_events_executor() -> bool:
    try:
        from rclpy.experimental import EventsExecutor  # noqa: F401
    except ImportError:
        return False
    return True


def _without_events_executor(monkeypatch):
    """Make ``from rclpy.experimental import EventsExecutor`` fail, as on Jazzy's rclpy."""
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("rclpy.experimental"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)


@pytest.mark.parametrize("value", ["", "auto", "events", " Events "])
def test_unset_auto_and_events_take_the_events_executor_where_rclpy_has_one(
    ros_context, monkeypatch, value
):
    if not _has_events_executor():
        pytest.skip("this rclpy has no events executor (Jazzy before rclpy 7.1.4)")
    monkeypatch.setenv("IPHD_EXECUTOR", value)
    executor = make_executor(ros_context)
    try:
        assert type(executor).__name__ == "EventsExecutor"
    finally:
        executor.shutdown()


def test_single_takes_the_single_threaded_executor(ros_context, monkeypatch):
    monkeypatch.setenv("IPHD_EXECUTOR", "single")
    executor = make_executor(ros_context)
    assert isinstance(executor, SingleThreadedExecutor)
    executor.shutdown()


def test_auto_falls_back_to_the_single_threaded_executor_without_an_events_executor(
    ros_context, monkeypatch
):
    monkeypatch.delenv("IPHD_EXECUTOR", raising=False)
    _without_events_executor(monkeypatch)
    executor = make_executor(ros_context)
    assert isinstance(executor, SingleThreadedExecutor)
    executor.shutdown()


def test_events_without_an_events_executor_is_a_config_error_that_says_what_to_do(
    ros_context, monkeypatch
):
    monkeypatch.setenv("IPHD_EXECUTOR", "events")
    _without_events_executor(monkeypatch)
    with pytest.raises(ConfigError, match="Kilted.*unset it or set it to single"):
        make_executor(ros_context)


def test_an_unknown_executor_is_a_config_error_naming_the_choices(ros_context, monkeypatch):
    monkeypatch.setenv("IPHD_EXECUTOR", "multi")
    with pytest.raises(ConfigError, match="IPHD_EXECUTOR='multi'.*auto, events, single"):
        make_executor(ros_context)


def test_the_events_executor_spins_a_node_under_pytest_capture(ros_context, monkeypatch, capsys):
    # rclpy's events executor enables faulthandler on sys.stderr, which capsys replaces with
    # an object without a file descriptor; make_executor must still build and spin it.
    import io

    with pytest.raises(io.UnsupportedOperation):
        __import__("sys").stderr.fileno()
    if not _has_events_executor():
        pytest.skip("this rclpy has no events executor (Jazzy before rclpy 7.1.4)")
    from rclpy.node import Node
    from std_msgs.msg import String

    monkeypatch.delenv("IPHD_EXECUTOR", raising=False)
    executor = make_executor(ros_context)
    node = Node("executor_probe", context=ros_context)
    got: list[str] = []
    node.create_subscription(String, "probe", lambda msg: got.append(msg.data), 10)
    pub = node.create_publisher(String, "probe", 10)
    executor.add_node(node)
    try:
        deadline = time.monotonic() + 5.0
        while not got and time.monotonic() < deadline:
            pub.publish(String(data="hello"))
            executor.spin_once(timeout_sec=0.05)
        assert got and got[0] == "hello"
    finally:
        executor.remove_node(node)
        node.destroy_node()
        executor.shutdown()


@pytest.mark.parametrize("executor", ["auto", "single"])
def test_a_node_started_as_ros2_run_starts_it_stops_on_ctrl_c(tmp_path, executor):
    # ros2 launch stops a node with SIGINT; on the events executor, executor.spin() kept a core
    # busy after the context shut down instead of returning.
    import os
    import signal
    import subprocess
    import sys

    log = tmp_path / "node.log"
    env = {**os.environ, "IPHD_EXECUTOR": executor}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from iphd.ros.fusion_node import main; main()"],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )
        try:
            deadline = time.monotonic() + 60.0
            while "loaded rig calibration" not in log.read_text():
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            time.sleep(0.5)  # spinning
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=10.0) == 0, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_a_node_started_as_ros2_run_does_with_a_bad_executor_stops_with_the_reason(
    tmp_path,
):
    import os
    import subprocess
    import sys

    env = {**os.environ, "IPHD_EXECUTOR": "multi"}
    proc = subprocess.run(
        [sys.executable, "-c", "from iphd.ros.fusion_node import main; main()"],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "FusionNode: error: IPHD_EXECUTOR='multi' is not an executor" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_whole_number_for_a_decimal_parameter_stops_the_node_with_how_to_write_it(tmp_path):
    # rclpy types parameters by their default: `lost_timeout_s: 10` in a parameters file is an
    # integer, and the node would die with rclpy's traceback.
    import subprocess
    import sys

    params = tmp_path / "params.yaml"
    params.write_text("/**/tracker:\n  ros__parameters:\n    lost_timeout_s: 10\n")
    proc = subprocess.run(
        [sys.executable, "-c", "from iphd.ros.tracker_node import main; main()",
         "--ros-args", "--params-file", str(params)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "parameter 'lost_timeout_s' must be a number with a decimal point" in proc.stderr
    assert "2.0, not 2" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("kind", ["events", "single"])
def test_a_failing_callback_drops_its_message_and_the_node_goes_on(
    kind, monkeypatch, ros_context
):
    import rclpy
    from std_msgs.msg import String

    from iphd.ros.common import CallbackGuard

    if kind == "events" and not _has_events_executor():
        pytest.skip("this rclpy has no events executor")
    monkeypatch.setenv("IPHD_EXECUTOR", kind)
    executor = make_executor(ros_context)
    node = rclpy.create_node("fragile", context=ros_context)
    got, logged = [], []

    def on_message(msg):
        if msg.data.startswith("bad"):
            raise KeyError(f"a bug in {msg.data}")  # a message that differs each time
        got.append(msg.data)

    node.create_subscription(String, "chatter", on_message, 10)
    pub = node.create_publisher(String, "chatter", 10)
    executor.add_node(node)
    guard = CallbackGuard(logged.append)

    def spin_until(condition):
        deadline = time.monotonic() + 5.0
        while not condition() and time.monotonic() < deadline:
            guard.spin_once(executor, 0.02)
        return condition()

    try:
        for k in (1, 2):
            pub.publish(String(data=f"bad {k}"))
            assert spin_until(lambda k=k: guard.errors == k)
            pub.publish(String(data=f"good {k}"))
            assert spin_until(lambda k=k: len(got) == k)
        assert got == ["good 1", "good 2"] and guard.errors == 2
        # The traceback once, then (within 5 s) nothing more for the same error at the same
        # place, though its message differs.
        assert len(logged) == 1 and "KeyError: 'a bug in bad 1'" in logged[0]
        assert "Traceback" in logged[0] and "its message is dropped" in logged[0]
    finally:
        executor.remove_node(node)
        node.destroy_node()
        executor.shutdown()


def test_library_logs_reach_the_ros_logger_once_even_with_a_root_handler(ros_context):
    import logging

    import rclpy

    from iphd.ros.common import forward_library_logs

    node = rclpy.create_node("forwarding", context=ros_context)
    sent: list[str] = []
    node.get_logger().warning = sent.append  # type: ignore[method-assign]
    printed: list[logging.LogRecord] = []
    root_handler = logging.Handler()
    root_handler.emit = printed.append  # type: ignore[method-assign]
    logging.getLogger().addHandler(root_handler)  # as flirpy's logging.basicConfig adds one
    library = logging.getLogger("iphd.sensors.forwarding_test")
    try:
        undo = forward_library_logs(node, "iphd.sensors.forwarding_test")
        library.warning("Lepton open failed: no PureThermal")
        assert sent == ["Lepton open failed: no PureThermal"] and printed == []
        undo()
        library.warning("after")
        assert sent == ["Lepton open failed: no PureThermal"] and len(printed) == 1
    finally:
        logging.getLogger().removeHandler(root_handler)
        node.destroy_node()
