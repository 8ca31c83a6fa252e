"""The parameters file as rcl hands it to the nodes under ros2 launch, and as they declare it."""

import importlib
from pathlib import Path

import numpy as np
import pytest
import rclpy
from rclpy.context import Context
from rclpy.node import Node
from rclpy.parameter import Parameter

from iphd.errors import ConfigError
from iphd.graph import SOURCES, build_graph, load_params_file, parameters_for
from iphd.ros import detector_node, tracker_node
from iphd.ros.common import declare, warn_unknown_parameters

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "launch" / "iphd_params.yaml"
# Parameters every rclpy node has, whatever the file says.
BUILT_IN = ("use_sim_time", "start_type_description_service")
# What each node lets `ros2 param set` change while it runs.
DYNAMIC = {
    "detector": detector_node.DYNAMIC_PARAMETERS,
    "tracker": tracker_node.DYNAMIC_TRACKER_PARAMETERS | tracker_node.DYNAMIC_OUTPUT_PARAMETERS,
}


def _graph_nodes():
    """Every node any source's graph starts, by name."""
    specs = {}
    for source in SOURCES:
        for spec in build_graph(source, bag="x.db3" if source == "bag" else ""):
            specs[spec.name] = spec
    return specs


def _rcl_parameters(params_file, names, namespaces):
    """What rclpy gives each ``(name, namespace)`` node from ``--ros-args --params-file``."""
    context = Context()
    rclpy.init(context=context, args=["iphd", "--ros-args", "--params-file", str(params_file)])
    found = {}
    try:
        for namespace in namespaces:
            for name in names:
                node = Node(
                    name, namespace=namespace, context=context,
                    automatically_declare_parameters_from_overrides=True,
                )
                found[name, namespace] = {
                    k: p.value for k, p in node.get_parameters_by_prefix("").items()
                    if k not in BUILT_IN
                }
                node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
    return found


def test_shipped_file_reaches_each_node_in_any_namespace_as_the_runner_reads_it():
    names = list(_graph_nodes())
    params = load_params_file(SHIPPED)
    namespaces = ("", "robot1", "fleet/robot1")
    rcl = _rcl_parameters(SHIPPED, names, namespaces)
    for (name, namespace), values in rcl.items():
        assert values == parameters_for(params, name, namespace), (name, namespace)
        assert values == rcl[name, ""], (name, namespace)
    # The shipped detector runs one inference thread.
    assert rcl["detector", "robot1"]["threads"] == 1


def test_runner_matches_node_names_and_wildcards_as_rcl_does(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(
        "/**:\n  ros__parameters:\n    a: 0\n    w: 1\n"
        "/**/fusion:\n  ros__parameters:\n    a: 1\n    b: 1\n"
        "fusion:\n  ros__parameters:\n    a: 2\n    c: 2\n"
        "/robot1/fusion:\n  ros__parameters:\n    d: 3\n"
        "/*/fusion:\n  ros__parameters:\n    e: 4\n"
        "/fleet/**:\n  ros__parameters:\n    w: 5\n"
        "robot1/detector:\n  ros__parameters:\n    a: 6\n"
    )
    params = load_params_file(path)
    namespaces = ("", "robot1", "fleet/robot1")
    rcl = _rcl_parameters(path, ("fusion", "detector"), namespaces)
    for (name, namespace), values in rcl.items():
        assert values == parameters_for(params, name, namespace), (name, namespace)
    # Later entries win; a bare name is the node outside any namespace only.
    assert rcl["fusion", ""] == {"a": 2, "b": 1, "c": 2, "w": 1}
    assert rcl["fusion", "robot1"] == {"a": 1, "b": 1, "d": 3, "e": 4, "w": 1}
    assert rcl["fusion", "fleet/robot1"] == {"a": 1, "b": 1, "w": 5}
    assert rcl["detector", "robot1"] == {"a": 6, "w": 1}


def test_namespaces_written_as_nested_keys_are_read_as_rcl_reads_them(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(
        "/**:\n  ros__parameters:\n    a: 0\n"
        "robot1:\n  fusion:\n    ros__parameters:\n      a: 1\n      n:\n        m: 2\n"
        "  detector:\n    ros__parameters:\n      a: 3\n"
        "fleet:\n  robot1:\n    fusion:\n      ros__parameters:\n        a: 4\n"
    )
    params = load_params_file(path)
    assert list(params) == ["/**", "robot1/fusion", "robot1/detector", "fleet/robot1/fusion"]
    namespaces = ("", "robot1", "fleet/robot1")
    rcl = _rcl_parameters(path, ("fusion", "detector"), namespaces)
    for (name, namespace), values in rcl.items():
        assert values == parameters_for(params, name, namespace), (name, namespace)
    assert rcl["fusion", "robot1"] == {"a": 1, "n.m": 2}
    assert rcl["fusion", "fleet/robot1"] == {"a": 4}
    # A key with neither parameters nor nodes under it is refused, naming the path.
    path.write_text("robot1:\n  fusion:\n    params:\n      a: 1\n")
    with pytest.raises(ConfigError, match="'robot1/fusion/params' has no 'ros__parameters'"):
        load_params_file(path)


def test_every_parameter_of_the_shipped_file_is_declared_by_its_node(ros_context, tmp_path):
    from iphd.calibration import load_calibration
    from iphd.data.rosbag import RigBagWriter
    from iphd.sensors.frames import CameraIntrinsics

    bag = tmp_path / "bag"
    intrinsics = CameraIntrinsics(32, 24, 20.0, 20.0, 15.5, 11.5)
    with RigBagWriter(bag, load_calibration(), intrinsics) as writer:
        writer.write_depth(1_000_000_000, np.full((24, 32), 1000, np.uint16))
    # Enough for each node to declare its parameters without a device or a model.
    cheap = {
        "d435": {"playback_file": str(tmp_path / "missing.db3")},
        "lepton": {"device": "/dev/null"},
        "bag_player": {"bag": str(bag)},
        "detector": {"checkpoint": str(tmp_path / "missing.pt"), "verifier": "none"},
        "tracker": {"reid_checkpoint": "none", "query_checkpoint": "none"},
    }
    params = load_params_file(SHIPPED)
    specs = _graph_nodes()
    assert set(params) == {"/**"} | {f"/**/{name}" for name in specs}
    declared, writable, defaults = {}, {}, {}
    for name, spec in specs.items():
        cls = getattr(importlib.import_module(spec.module), spec.node_class)
        node = cls(
            context=ros_context,
            parameter_overrides=[Parameter(k, value=v) for k, v in cheap.get(name, {}).items()],
        )
        try:
            # Started with the shipped file, as ros2 launch starts it: nothing unknown in it.
            argv = [name, "--ros-args", "--params-file", str(SHIPPED)]
            assert warn_unknown_parameters(node, argv) == []
            declared[name] = set(node.get_parameters_by_prefix(""))
            defaults[name] = {k: p.value for k, p in node.get_parameters_by_prefix("").items()
                              if k not in cheap.get(name, {})}
            writable[name] = {
                d.name for d in node.describe_parameters(sorted(declared[name]))
                if not d.read_only
            } - set(BUILT_IN)
        finally:
            close = getattr(node, "close", None)
            if callable(close):
                close()
            node.destroy_node()
    for name in specs:
        undeclared = set(params[f"/**/{name}"]) - declared[name]
        assert not undeclared, f"{name} does not declare {sorted(undeclared)}"
    for key in params["/**"]:
        assert any(key in names for names in declared.values()), key
    # A node's own defaults are the file's: a params_file of your own replaces the shipped one
    # (as in nav2), and what it leaves out must not fall back to something else.
    for name in specs:
        shipped = {**params["/**"], **params[f"/**/{name}"]}
        differ = {k: (v, shipped[k]) for k, v in defaults[name].items()
                  if k in shipped and v != shipped[k]}
        assert not differ, f"{name}: (code default, file value) {differ}"
    # Only the parameters a node applies at run time can be set while it runs; the others
    # are read-only, so `ros2 param set` refuses them instead of being silently ignored.
    assert writable == {
        name: set(DYNAMIC.get(name, ())) for name in specs
    }


@pytest.mark.parametrize(
    "default, given, says",
    [
        (1.0, 1, "a number with a decimal point (a whole number needs one too"),
        (3, 3.0, "a whole number"),
        (True, "yes", "true or false"),
        ("auto", 1, "a string (quote one that looks like a number: '2', not 2)"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_with_what_to_write(
    ros_context, default, given, says
):
    node = Node(
        "typed", context=ros_context, parameter_overrides=[Parameter("value", value=given)]
    )
    try:
        with pytest.raises(ConfigError, match="parameter 'value' must be") as caught:
            declare(node, "value", default, "a typed parameter")
        assert says in str(caught.value) and repr(default) in str(caught.value)
        # A value of the right type is taken as it is.
        assert declare(node, "other", default, "a typed parameter") == default
    finally:
        node.destroy_node()


def _wrong_type(value):
    return 1 if isinstance(value, str) else "not a number"


def test_every_node_stops_cleanly_on_a_parameter_of_the_wrong_type(tmp_path):
    # As `ros2 run` does: the node's constructor raises ConfigError (spin_node prints it and
    # exits 2), then rclpy's shutdown destroys the half-built node, which must not fail.
    params = load_params_file(SHIPPED)
    for name, spec in _graph_nodes().items():
        cls = getattr(importlib.import_module(spec.module), spec.node_class)
        values = {k: v for k, v in params[f"/**/{name}"].items() if v is not None and v != []}
        context = Context()
        rclpy.init(context=context)
        try:
            with pytest.raises(ConfigError, match="must be") as caught:
                cls(
                    context=context,
                    parameter_overrides=[
                        Parameter(k, value=_wrong_type(v)) for k, v in values.items()
                    ],
                )
            # The traceback keeps the half-built node alive, as spin_node's handler does.
            assert caught.traceback
            rclpy.try_shutdown(context=context)
        finally:
            rclpy.try_shutdown(context=context)


def test_an_unexpected_error_while_applying_a_change_refuses_it_and_the_node_goes_on(
    ros_context, executor, spin_until, set_remote_parameters
):
    from iphd.ros.common import on_parameters_set

    node = Node("changing", context=ros_context)
    client = Node("client", context=ros_context)
    declare(node, "gain", 1.0, "a run-time parameter", dynamic=True)
    applied = []

    def apply(changes):
        if changes["gain"] < 0:
            raise ZeroDivisionError("a bug in the node")
        applied.append(changes)

    on_parameters_set(node, ["gain"], apply)
    executor.add_node(node)
    executor.add_node(client)
    result = set_remote_parameters(executor, client, "changing", gain=-1.0)
    assert not result.successful and "ZeroDivisionError: a bug in the node" in result.reason
    assert node.get_parameter("gain").value == 1.0
    assert set_remote_parameters(executor, client, "changing", gain=2.0).successful
    assert applied == [{"gain": 2.0}] and node.get_parameter("gain").value == 2.0


def test_a_key_the_node_does_not_have_is_warned_of_as_ros2_launch_starts_it(
    ros_context, tmp_path
):
    from iphd.ros.fusion_node import FusionNode

    path = tmp_path / "mine.yaml"
    path.write_text("/**/fusion:\n  ros__parameters:\n    calibraton_file: my_rig.yaml\n")
    node = FusionNode(context=ros_context)
    try:
        argv = ["fusion_node", "--ros-args", "--params-file", str(path), "-r", "a:=b"]
        assert warn_unknown_parameters(node, argv) == [
            "the parameters file sets 'calibraton_file' for fusion (under '/**/fusion'), which "
            "fusion does not have: it is ignored; did you mean 'calibration_file'?"
        ]
        # A file that does not read is rcl's to report.
        assert warn_unknown_parameters(node, ["--params-file", str(tmp_path / "none")]) == []
    finally:
        node.destroy_node()


def test_the_runner_warns_of_a_key_the_node_does_not_have(ros_context, capfd):
    from iphd.ros.processes import make_nodes

    (spec,) = [s for s in build_graph("sim_live", detector=False) if s.name == "fusion"]
    params = {"/**/fusion": {"input_reliabilty": "reliable"}}
    (node,) = make_nodes((spec,), params, context=ros_context).values()
    node.destroy_node()
    assert "sets 'input_reliabilty' for fusion" in capfd.readouterr().err


_LOGGER_LEVELS = """
import sys
import rclpy
from rclpy.node import Node

rclpy.init(args=sys.argv)
logger = Node("name_in_code").get_logger()
print(logger.get_effective_level(), logger.get_child("x").get_effective_level(),
      rclpy.logging.get_logger("rcl").get_effective_level())
"""


def test_the_launch_log_level_reaches_the_node_logger_and_not_rcl_s():
    """``log_level:=debug`` under ros2 launch: the node's lines, without rcl's and the rmw's."""
    import subprocess
    import sys

    from iphd.graph import log_level_argument

    # launch_ros starts each node as its own process with these arguments.
    args = ["--ros-args", "-r", "__node:=detector", "-r", "__ns:=/robot1/left",
            "--log-level", log_level_argument("/robot1/left", "detector", "debug")]
    out = subprocess.run([sys.executable, "-c", _LOGGER_LEVELS, *args], capture_output=True,
                         text=True, timeout=60, check=True).stdout.split()
    debug, info = (int(rclpy.logging.LoggingSeverity[n]) for n in ("DEBUG", "INFO"))
    assert [int(v) for v in out] == [debug, debug, info]
    assert log_level_argument("", "tracker", "warn") == "tracker:=warn"
    with pytest.raises(ConfigError, match="'verbose': use one of debug, info, warn, error"):
        log_level_argument("", "tracker", "verbose")
