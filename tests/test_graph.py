import importlib.util
import sys
import types
from pathlib import Path

import pytest

from iphd.errors import ConfigError
from iphd.graph import (
    LOG_LEVELS,
    SENSOR_TOPICS,
    TOPIC_ARGUMENTS,
    build_graph,
    exclude_rig_transforms,
    graph_calibration_file,
    hold_player,
    load_params_file,
    parameters_for,
    params_calibration_file,
    unknown_parameters,
    wants_sim_time,
    with_camera_infos,
    with_overrides,
)

ROOT = Path(__file__).resolve().parents[1]
# What a bag player leaves out of a replay through the whole graph: the nodes' own outputs.
OUTPUTS = [
    "/diagnostics", "debug/image", "debug/tracks_image", "detections", "markers", "query/result",
    "rig_calibration", "thermal/registered", "tracks", "vision_tracks",
]
# The rig transforms the fusion node publishes with the package's calibration.
RIG_FRAMES = ["depth_optical_frame", "thermal_optical_frame"]


def test_sim_graph_loops_the_simulator_demo_bag_into_fusion(monkeypatch, tmp_path):
    monkeypatch.setenv("IPHD_CACHE_DIR", str(tmp_path))
    specs = {spec.name: spec for spec in build_graph("sim")}
    assert list(specs) == ["bag_player", "fusion", "detector", "tracker"]
    bag = Path(specs["bag_player"].parameters["bag"])
    assert bag.parent == tmp_path and bag.name.startswith("sim_demo_v")
    assert specs["bag_player"].parameters["loop"] is True
    assert wants_sim_time("sim")


def test_sim_live_graph_renders_the_simulator_in_real_time():
    names = [spec.name for spec in build_graph("sim_live")]
    assert names == ["sim_source", "fusion", "detector", "tracker"]
    assert not wants_sim_time("sim_live")


def test_live_graph_runs_both_drivers_and_passes_the_playback_file():
    specs = {spec.name: spec for spec in build_graph("live", playback_file="/data/rec.db3")}
    assert list(specs) == ["d435", "lepton", "fusion", "detector", "tracker"]
    assert specs["d435"].parameters == {"playback_file": "/data/rec.db3"}


def test_bag_graph_plays_the_bag_into_fusion_on_sim_time():
    specs = {spec.name: spec for spec in build_graph("bag", bag="/data/run1")}
    assert list(specs) == ["bag_player", "fusion", "detector", "tracker"]
    assert specs["bag_player"].parameters == {"bag": "/data/run1", "exclude_topics": OUTPUTS}
    assert specs["bag_player"].executable == "bag_player_node"
    assert wants_sim_time("bag") and not wants_sim_time("live")


def test_bag_replay_subscribes_reliably_and_live_sensors_with_sensor_qos(monkeypatch, tmp_path):
    monkeypatch.setenv("IPHD_CACHE_DIR", str(tmp_path))
    consumers = {"fusion", "detector", "tracker"}
    for source in ("bag", "sim", "live", "sim_live"):
        specs = build_graph(source, bag="/data/run1" if source == "bag" else "")
        replay = {s.name for s in specs if s.parameters.get("input_reliability") == "reliable"}
        assert replay == (consumers if source in ("bag", "sim") else set()), source
    specs = {s.name: s for s in build_graph("bag", bag="/b", calibration_file="/c.yaml")}
    assert specs["fusion"].parameters == {
        "calibration_file": "/c.yaml", "input_reliability": "reliable", "input_queue_depth": 30
    }


def test_bag_source_and_bag_path_go_together():
    with pytest.raises(ConfigError, match='bag:=.*iphd-run --bag PATH; make demo SOURCE=bag '
                       'ARGS="--bag PATH"'):
        build_graph("bag")
    with pytest.raises(ConfigError, match="only played with source:=bag"):
        build_graph("live", bag="/data/run1")


def test_calibration_file_reaches_every_node_that_reads_it():
    specs = build_graph("live", calibration_file="/rig/my.yaml")
    assert {s.name for s in specs if s.parameters.get("calibration_file") == "/rig/my.yaml"} == {
        "d435",
        "lepton",
        "fusion",
    }


def test_unknown_source_is_refused_with_the_choices():
    with pytest.raises(ConfigError, match="live, sim, sim_live, bag, external"):
        build_graph("camera")
    with pytest.raises(ConfigError, match="source:=live"):
        build_graph("sim", playback_file="x.db3")


def test_params_file_entries_match_node_names_as_rcl_does_later_ones_winning(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(
        "/**:\n  ros__parameters:\n    a: 1\n    b: 1\n"
        "/**/fusion:\n  ros__parameters:\n    b: 5\n    nested: {x: 3}\n"
        "fusion:\n  ros__parameters:\n    b: 2\n"
        "/robot/fusion:\n  ros__parameters:\n    b: 4\n"
        "/*/fusion:\n  ros__parameters:\n    c: 6\n"
    )
    params = load_params_file(path)
    # A bare name is the node outside any namespace; '/**/name' is the node in any namespace.
    assert parameters_for(params, "fusion") == {"a": 1, "b": 2, "nested.x": 3}
    assert parameters_for(params, "fusion", "robot") == {"a": 1, "b": 4, "nested.x": 3, "c": 6}
    assert parameters_for(params, "fusion", "/a/b/") == {"a": 1, "b": 5, "nested.x": 3}
    assert parameters_for(params, "d435", "robot") == {"a": 1, "b": 1}


def test_runner_overrides_win_over_the_params_file_in_any_namespace():
    params = {"/**": {"a": 1}, "/**/fusion": {"b": 2}, "/robot/fusion": {"c": 3}}
    for namespace in ("", "robot"):
        merged = with_overrides(params, {"fusion": {"b": 7, "c": 7}}, namespace)
        assert parameters_for(merged, "fusion", namespace) == {"a": 1, "b": 7, "c": 7}
    merged = with_overrides(params, {"fusion": {"b": 7}}, "robot")
    assert parameters_for(merged, "fusion", "robot") == {"a": 1, "b": 7, "c": 3}
    assert params["/robot/fusion"] == {"c": 3}  # the parsed file is left as it was


def test_shipped_params_file_reaches_every_node_in_any_namespace():
    params = load_params_file(ROOT / "launch" / "iphd_params.yaml")
    for source in ("sim", "sim_live", "live", "bag"):
        for spec in build_graph(source, bag="x" if source == "bag" else ""):
            for namespace in ("", "robot1"):
                own = parameters_for(params, spec.name, namespace).keys() - params["/**"].keys()
                assert own, (spec.name, namespace)


def test_bad_params_file_names_the_entry(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("fusion:\n  max_skew_ms: 3\n")
    with pytest.raises(ConfigError, match="'fusion' has no 'ros__parameters'"):
        load_params_file(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_params_file(tmp_path / "missing.yaml")


class _Recorder:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


def _stub_launch_modules(monkeypatch, share: Path) -> None:
    """Stand-ins for launch/launch_ros (not installable here) that record what the file builds."""
    launch = types.ModuleType("launch")
    launch.LaunchDescription = _Recorder
    actions = types.ModuleType("launch.actions")
    actions.DeclareLaunchArgument = _Recorder
    actions.OpaqueFunction = _Recorder
    subs = types.ModuleType("launch.substitutions")

    class LaunchConfiguration:
        def __init__(self, name):
            self.name = name

        def perform(self, context):
            return context[self.name]

    subs.LaunchConfiguration = LaunchConfiguration
    launch_ros = types.ModuleType("launch_ros")
    ros_actions = types.ModuleType("launch_ros.actions")
    ros_actions.Node = _Recorder
    ament = types.ModuleType("ament_index_python")
    packages = types.ModuleType("ament_index_python.packages")
    packages.get_package_share_directory = lambda name: str(share)
    # The installed share holds the package's parameters file.
    (share / "launch").mkdir(parents=True, exist_ok=True)
    (share / "launch" / "iphd_params.yaml").write_text(
        (ROOT / "launch" / "iphd_params.yaml").read_text()
    )
    for name, module in {
        "launch": launch,
        "launch.actions": actions,
        "launch.substitutions": subs,
        "launch_ros": launch_ros,
        "launch_ros.actions": ros_actions,
        "ament_index_python": ament,
        "ament_index_python.packages": packages,
    }.items():
        monkeypatch.setitem(sys.modules, name, module)


def test_launch_file_starts_the_same_graph_as_the_runner(monkeypatch, tmp_path):
    _stub_launch_modules(monkeypatch, tmp_path)
    spec = importlib.util.spec_from_file_location(
        "detect_launch", ROOT / "launch" / "detect.launch.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    entities = description.args[0]
    declared = {e.args[0] for e in entities if e.args and isinstance(e.args[0], str)}
    # launch refuses a log level the nodes would fail on, with the same choices as iphd-run.
    (log_level,) = (e for e in entities if e.args and e.args[0] == "log_level")
    assert log_level.kwargs["choices"] == ["debug", "info", "warn", "error"]
    assert list(LOG_LEVELS) == log_level.kwargs["choices"]
    assert {
        "use_sim_time",
        "namespace",
        "params_file",
        "source",
        "calibration_file",
        "playback_file",
        "bag",
        "detector",
        "detector_checkpoint",
        "verifier",
        "tracker",
        "reid_checkpoint",
        "log_level",
        "rviz",
    } <= declared
    opaque = next(e for e in entities if "function" in e.kwargs)
    context = {name: default for name, (default, _) in module.ARGUMENTS.items()}
    context.update(source="sim_live", namespace="robot1", use_sim_time="true")
    nodes = opaque.kwargs["function"](context)
    assert [n.kwargs["executable"] for n in nodes] == [
        s.executable for s in build_graph("sim_live")
    ]
    assert all(n.kwargs["namespace"] == "robot1" for n in nodes)
    # log_level sets each node's own logger (robot1.<name>), not rcl's and the rmw's default.
    assert [n.kwargs["arguments"] for n in nodes] == [
        ["--ros-args", "--log-level", f"robot1.{n.kwargs['name']}:=info"] for n in nodes
    ]
    assert all({"use_sim_time": True} in n.kwargs["parameters"] for n in nodes)
    assert nodes[0].kwargs["parameters"][0] == str(tmp_path / "launch" / "iphd_params.yaml")


def _launch_nodes(monkeypatch, tmp_path, **arguments):
    _stub_launch_modules(monkeypatch, tmp_path)
    spec = importlib.util.spec_from_file_location(
        "detect_launch", ROOT / "launch" / "detect.launch.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    entities = module.generate_launch_description().args[0]
    opaque = next(e for e in entities if "function" in e.kwargs)
    context = {name: default for name, (default, _) in module.ARGUMENTS.items()}
    context.update(arguments)
    return opaque.kwargs["function"](context)


def test_launch_file_plays_a_bag_on_sim_time_by_default(monkeypatch, tmp_path):
    nodes = _launch_nodes(monkeypatch, tmp_path, source="bag", bag="/data/run1")
    assert [n.kwargs["executable"] for n in nodes] == [
        "bag_player_node", "fusion_node", "detector_node", "tracker_node"
    ]
    # The player holds the bag until fusion, detector and tracker subscribe (as iphd-run's).
    assert {
        "bag": "/data/run1",
        "exclude_topics": OUTPUTS,
        "exclude_transforms": RIG_FRAMES,
        "wait_for_subscribers": [
            "depth/image_raw:3", "depth/camera_info:3", "thermal/image_raw:1",
            "thermal/camera_info:1",
        ],
    } in nodes[0].kwargs["parameters"]
    assert all({"use_sim_time": True} in n.kwargs["parameters"] for n in nodes)
    nodes = _launch_nodes(monkeypatch, tmp_path, source="bag", bag="/b", reid_checkpoint="none")
    assert nodes[0].kwargs["parameters"][1]["wait_for_subscribers"][:2] == [
        "depth/image_raw:2", "depth/camera_info:2"  # no re-ID model: the tracker needs no depth
    ]
    # The same from the parameters file alone (the player waited 30 s for the tracker's depth).
    own = tmp_path / "no_reid.yaml"
    own.write_text("/**/tracker:\n  ros__parameters:\n    reid_checkpoint: None\n")
    for namespace in ("", "robot1"):
        nodes = _launch_nodes(monkeypatch, tmp_path, source="bag", bag="/b",
                              params_file=str(own), namespace=namespace)
        assert nodes[0].kwargs["parameters"][1]["wait_for_subscribers"][:2] == [
            "depth/image_raw:2", "depth/camera_info:2"
        ]
    nodes = _launch_nodes(monkeypatch, tmp_path, source="bag", bag="/b", use_sim_time="false")
    assert all({"use_sim_time": False} in n.kwargs["parameters"] for n in nodes)
    nodes = _launch_nodes(monkeypatch, tmp_path, source="sim_live")
    assert all({"use_sim_time": False} in n.kwargs["parameters"] for n in nodes)
    # A mistyped switch stops the launch instead of meaning false (fusion alone).
    with pytest.raises(ValueError, match="detector:='ture' must be true or false"):
        _launch_nodes(monkeypatch, tmp_path, source="sim_live", detector="ture")
    # A robot in a simulator says so in its own parameters file, for every node: that counts
    # when the argument is not given (it is given after the file, so it would win).
    own = tmp_path / "gazebo.yaml"
    own.write_text("/**:\n  ros__parameters:\n    use_sim_time: true\n")
    nodes = _launch_nodes(monkeypatch, tmp_path, source="external", params_file=str(own))
    assert nodes and all({"use_sim_time": True} in n.kwargs["parameters"] for n in nodes)
    nodes = _launch_nodes(monkeypatch, tmp_path, source="external", params_file=str(own),
                          use_sim_time="false")
    assert all({"use_sim_time": False} in n.kwargs["parameters"] for n in nodes)


def test_launch_file_plays_the_existing_simulator_demo_bag(monkeypatch, tmp_path):
    from iphd.sim.demo import demo_bag_path

    monkeypatch.setenv("IPHD_CACHE_DIR", str(tmp_path / "cache"))
    demo = demo_bag_path()
    demo.mkdir(parents=True)
    (demo / "metadata.yaml").write_text("rosbag2_bagfile_information: {}\n")
    nodes = _launch_nodes(monkeypatch, tmp_path, source="sim", detector="false")
    assert [n.kwargs["executable"] for n in nodes] == ["bag_player_node", "fusion_node"]
    assert {
        "bag": str(demo),
        "loop": True,
        "exclude_topics": ["/diagnostics", "rig_calibration", "thermal/registered"],
        "exclude_transforms": RIG_FRAMES,
        "wait_for_subscribers": [
            "depth/image_raw:1", "depth/camera_info:1", "thermal/image_raw:1",
            "thermal/camera_info:1",
        ],
    } in nodes[0].kwargs["parameters"]
    assert all({"use_sim_time": True} in n.kwargs["parameters"] for n in nodes)
    with pytest.raises(ConfigError, match="bag:="):
        _launch_nodes(monkeypatch, tmp_path, source="bag")


def test_detector_and_tracker_run_after_fusion_by_default_and_can_be_turned_off():
    specs = build_graph("sim_live", detector_checkpoint="/m/det.pt", reid_checkpoint="/m/r.pt")
    assert [s.name for s in specs] == ["sim_source", "fusion", "detector", "tracker"]
    assert specs[2].executable == "detector_node" and specs[2].node_class == "DetectorNode"
    assert specs[2].parameters == {"checkpoint": "/m/det.pt"}
    assert specs[3].executable == "tracker_node" and specs[3].node_class == "TrackerNode"
    assert specs[3].parameters == {"reid_checkpoint": "/m/r.pt"}
    assert [s.parameters for s in build_graph("sim_live")[2:]] == [{}, {}]
    assert [s.name for s in build_graph("sim_live", tracker=False)] == [
        "sim_source", "fusion", "detector"
    ]
    # The tracker follows the detector's output: no detector, no tracker.
    assert [s.name for s in build_graph("sim_live", detector=False)] == ["sim_source", "fusion"]
    with pytest.raises(ConfigError, match="detector:=false"):
        build_graph("sim_live", detector=False, detector_checkpoint="/m/det.pt")
    assert build_graph("sim_live", verifier="none")[2].parameters == {"verifier": "none"}
    with pytest.raises(ConfigError, match="box verifier .* detector:=false"):
        build_graph("sim_live", detector=False, verifier="/m/v.npz")
    with pytest.raises(ConfigError, match="tracker:=false"):
        build_graph("sim_live", tracker=False, reid_checkpoint="/m/reid.pt")
    params = load_params_file(ROOT / "launch" / "iphd_params.yaml")
    assert parameters_for(params, "detector") and parameters_for(params, "tracker")


def test_launch_file_runs_the_detector_and_tracker_unless_turned_off(monkeypatch, tmp_path):
    nodes = _launch_nodes(
        monkeypatch, tmp_path, source="sim_live", detector_checkpoint="/m/d.pt",
        reid_checkpoint="/m/r.pt",
    )
    assert [n.kwargs["executable"] for n in nodes] == [
        "sim_source_node", "fusion_node", "detector_node", "tracker_node"
    ]
    assert {"checkpoint": "/m/d.pt"} in nodes[2].kwargs["parameters"]
    assert {"reid_checkpoint": "/m/r.pt"} in nodes[3].kwargs["parameters"]
    nodes = _launch_nodes(monkeypatch, tmp_path, source="sim_live", verifier="none")
    assert {"verifier": "none"} in nodes[2].kwargs["parameters"]
    nodes = _launch_nodes(monkeypatch, tmp_path, source="sim_live", tracker="false")
    assert [n.kwargs["executable"] for n in nodes][-1] == "detector_node"
    nodes = _launch_nodes(monkeypatch, tmp_path, source="sim_live", detector="false")
    assert [n.kwargs["executable"] for n in nodes] == ["sim_source_node", "fusion_node"]
    with pytest.raises(ConfigError, match="detector:=false"):
        _launch_nodes(
            monkeypatch, tmp_path, source="sim_live", detector="false",
            detector_checkpoint="/m/d.pt",
        )


def test_launch_file_starts_rviz_with_the_package_config_only_when_asked(monkeypatch, tmp_path):
    nodes = _launch_nodes(monkeypatch, tmp_path, source="sim_live")
    assert "rviz2" not in [n.kwargs["executable"] for n in nodes]
    nodes = _launch_nodes(
        monkeypatch, tmp_path, source="sim_live", rviz="true", namespace="robot1",
        use_sim_time="true",
    )
    rviz = nodes[-1].kwargs
    assert (rviz["package"], rviz["executable"]) == ("rviz2", "rviz2")
    assert rviz["arguments"] == [
        "-d", str(tmp_path / "launch" / "iphd.rviz"), "-f", "depth_optical_frame"
    ]
    assert rviz["namespace"] == "robot1" and {"use_sim_time": True} in rviz["parameters"]
    assert (ROOT / "launch" / "iphd.rviz").is_file()


def test_rviz_looks_from_the_depth_frame_of_the_calibration_in_use(monkeypatch, tmp_path):
    import yaml

    from iphd.calibration import DEFAULT_CALIBRATION

    data = yaml.safe_load(DEFAULT_CALIBRATION.read_text())
    data["frames"] = {"base": "", "depth": "camera_depth_optical_frame"}
    rig = tmp_path / "rig.yaml"
    rig.write_text(yaml.safe_dump(data))
    nodes = _launch_nodes(monkeypatch, tmp_path, source="external", rviz="true",
                          calibration_file=str(rig))
    assert nodes[-1].kwargs["arguments"][2:] == ["-f", "camera_depth_optical_frame"]
    # A calibration that does not load leaves the config's frame (fusion says what is wrong).
    nodes = _launch_nodes(monkeypatch, tmp_path, source="external", rviz="true",
                          calibration_file=str(tmp_path / "missing.yaml"))
    assert nodes[-1].kwargs["arguments"] == ["-d", str(tmp_path / "launch" / "iphd.rviz")]


def test_a_replayed_bag_is_registered_with_the_calibration_it_carries(monkeypatch, tmp_path):
    import yaml
    from transport_bags import write_calibration_recording

    from iphd.calib.simulate import perturbed_calibration
    from iphd.calibration import calibration_to_yaml, load_calibration

    monkeypatch.setenv("IPHD_CACHE_DIR", str(tmp_path / "cache"))
    data = perturbed_calibration(load_calibration()).to_dict()
    data["frames"] = {"base": "", "depth": "camera_depth_optical_frame", "thermal": "lepton"}
    text = yaml.safe_dump(data)
    bag = str(write_calibration_recording(tmp_path / "run1", {"/rig_calibration": [text]}))
    path = graph_calibration_file("bag", bag)
    assert Path(path).parent == tmp_path / "cache" / "calibrations"
    assert Path(path).name.startswith("run1-")
    assert load_calibration(path).thermal == perturbed_calibration(load_calibration()).thermal
    assert graph_calibration_file("bag", bag) == path  # written once
    # The launch file hands it to the nodes, and RViz looks from its depth frame.
    nodes = _launch_nodes(monkeypatch, tmp_path, source="bag", bag=bag, rviz="true")
    fusion = next(n for n in nodes if n.kwargs.get("executable") == "fusion_node")
    assert fusion.kwargs["parameters"][1]["calibration_file"] == path
    assert nodes[-1].kwargs["arguments"][2:] == ["-f", "camera_depth_optical_frame"]
    # A calibration given wins; other sources, a bag carrying none, or a bag that does not
    # open (the player then says why) leave the package's.
    assert graph_calibration_file("bag", bag, "/my/rig.yaml") == "/my/rig.yaml"
    # So does one the parameters file gives fusion: for the nodes, RViz and the player.
    mine = tmp_path / "mine.yaml"
    data["frames"] = {"base": "", "depth": "my_depth_frame", "thermal": "my_thermal_frame"}
    mine.write_text(yaml.safe_dump(data))
    params = tmp_path / "params.yaml"
    params.write_text(
        (ROOT / "launch" / "iphd_params.yaml").read_text().replace(
            'calibration_file: ""', f'calibration_file: "{mine}"', 1
        )
    )
    assert params_calibration_file(load_params_file(params)) == str(mine)
    assert params_calibration_file(load_params_file(ROOT / "launch" / "iphd_params.yaml")) == ""
    nodes = _launch_nodes(
        monkeypatch, tmp_path, source="bag", bag=bag, rviz="true", params_file=str(params)
    )
    fusion = next(n for n in nodes if n.kwargs.get("executable") == "fusion_node")
    assert fusion.kwargs["parameters"][1]["calibration_file"] == str(mine)
    assert nodes[-1].kwargs["arguments"][2:] == ["-f", "my_depth_frame"]
    assert nodes[0].kwargs["parameters"][1]["exclude_transforms"] == ["my_thermal_frame"]
    nodes = _launch_nodes(  # the argument still wins over the file
        monkeypatch, tmp_path, source="bag", bag=bag, params_file=str(params),
        calibration_file=path,
    )
    fusion = next(n for n in nodes if n.kwargs.get("executable") == "fusion_node")
    assert fusion.kwargs["parameters"][1]["calibration_file"] == path
    assert graph_calibration_file("live") == graph_calibration_file("sim_live") == ""
    other = write_calibration_recording(tmp_path / "other", {"/chatter": ["hi"]})
    assert graph_calibration_file("bag", str(other)) == ""
    assert graph_calibration_file("bag", str(tmp_path / "missing")) == ""
    nominal = calibration_to_yaml(load_calibration())
    same = write_calibration_recording(
        tmp_path / "same", {"/a/rig_calibration": [nominal], "/b/rig_calibration": [nominal]}
    )
    assert load_calibration(graph_calibration_file("bag", str(same))).frames == (
        load_calibration().frames
    )
    two = write_calibration_recording(
        tmp_path / "two", {"/a/rig_calibration": [nominal], "/b/rig_calibration": [text]}
    )
    with pytest.raises(ConfigError, match="different rig calibrations on 2 topics.*"
                       "calibration_file:="):
        graph_calibration_file("bag", str(two))
    # A cache folder that cannot be written is named, with the ways around it.
    monkeypatch.setenv("IPHD_CACHE_DIR", str(tmp_path / "file"))
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(ConfigError, match="cannot write.*IPHD_CACHE_DIR.*calibration_file:="):
        graph_calibration_file("bag", bag)


def test_the_simulator_demo_is_registered_with_the_calibration_it_was_rendered_with(
    monkeypatch, tmp_path
):
    import numpy as np

    from iphd.calib.simulate import perturbed_calibration
    from iphd.calibration import load_calibration
    from iphd.data.rosbag import RigBagWriter
    from iphd.sensors.frames import CameraIntrinsics
    from iphd.sim.demo import demo_bag_path

    # A demo bag made before the user replaced calibration/rig.yaml with their own rig's.
    monkeypatch.setenv("IPHD_CACHE_DIR", str(tmp_path / "cache"))
    rendered = perturbed_calibration(load_calibration())
    with RigBagWriter(demo_bag_path(), rendered, CameraIntrinsics(8, 6, 5.0, 5.0, 3.5, 2.5)) as w:
        w.write_depth(1_000_000_000, np.ones((6, 8), np.uint16))
    path = graph_calibration_file("sim")
    assert load_calibration(path).thermal == rendered.thermal
    assert graph_calibration_file("sim", calibration_file="/my/rig.yaml") == "/my/rig.yaml"


def test_package_xml_declares_every_package_the_launch_file_runs(monkeypatch, tmp_path):
    import xml.etree.ElementTree as ET

    root = ET.parse(ROOT / "package.xml").getroot()
    runs = {e.text for e in root if e.tag in ("depend", "exec_depend")}
    nodes = _launch_nodes(monkeypatch, tmp_path, source="sim_live", rviz="true")
    started = {n.kwargs["package"] for n in nodes} - {root.findtext("name")}
    assert started == {"rviz2"} and started | {"launch", "launch_ros"} <= runs


def test_shipped_params_file_sets_every_tracker_config_field():
    import dataclasses

    from iphd.tracking.tracker import TrackerConfig

    tracker = parameters_for(load_params_file(ROOT / "launch" / "iphd_params.yaml"), "tracker")
    defaults = TrackerConfig()
    for f in dataclasses.fields(TrackerConfig):
        assert tracker[f.name] == getattr(defaults, f.name), f.name
    assert tracker["reid_checkpoint"] == "" and tracker["publish_embeddings"] is False


def test_the_bag_player_can_be_told_to_wait_for_subscribers():
    specs = build_graph("bag", bag="/data/run")
    subscribed = ["depth/image_raw", "thermal/image_raw", "depth/image_raw", "detections"]
    held = {s.name: s for s in hold_player(specs, subscribed)}
    assert held["bag_player"].parameters == {
        "bag": "/data/run", "exclude_topics": OUTPUTS,
        "wait_for_subscribers": ["depth/image_raw:2", "thermal/image_raw:1"],
    }
    assert held["fusion"] == next(s for s in specs if s.name == "fusion")
    assert hold_player(specs, ["detections"]) == list(specs)  # no sensor topic: nothing to wait


def test_the_bag_player_leaves_out_the_rig_transforms_fusion_publishes(tmp_path):
    specs = build_graph("bag", bag="/data/run")
    params = load_params_file(ROOT / "launch" / "iphd_params.yaml")
    played = {s.name: s for s in exclude_rig_transforms(specs, params)}
    assert played["bag_player"].parameters == {
        "bag": "/data/run", "exclude_topics": OUTPUTS, "exclude_transforms": RIG_FRAMES,
    }
    assert played["fusion"] == next(s for s in specs if s.name == "fusion")
    # The frames of the calibration fusion uses: the graph's, else the parameters file's.
    rig = (ROOT / "calibration" / "rig.yaml").read_text()
    own = tmp_path / "own.yaml"
    own.write_text(rig.replace("base: camera_link", "base: ''").replace(
        "thermal: thermal_optical_frame", "thermal: lepton_optical_frame"))
    mine = {s.name: s for s in build_graph("bag", bag="/data/run", calibration_file=str(own))}
    frames = exclude_rig_transforms(list(mine.values()), params)[0].parameters
    assert frames["exclude_transforms"] == ["lepton_optical_frame"]
    in_file = with_overrides(params, {"fusion": {"calibration_file": str(own)}}, "robot1")
    assert exclude_rig_transforms(specs, in_file, "robot1")[0].parameters[
        "exclude_transforms"] == ["lepton_optical_frame"]
    # A fusion node that publishes no TF, or a calibration that does not load: all is played.
    quiet = with_overrides(params, {"fusion": {"publish_tf": False}})
    assert exclude_rig_transforms(specs, quiet) == list(specs)
    broken = with_overrides(params, {"fusion": {"calibration_file": str(tmp_path / "no.yaml")}})
    assert exclude_rig_transforms(specs, broken) == list(specs)
    assert exclude_rig_transforms(build_graph("sim_live"), params) == list(
        build_graph("sim_live"))


REALSENSE = {
    "depth/image_raw": "/camera/camera/depth/image_rect_raw",
    "depth/camera_info": "/camera/camera/depth/camera_info",
    "thermal/image_raw": "lepton/image_raw",
}
# thermal/camera_info, not given: the one beside the renamed image, as drivers publish it.
REMAPPED = {**REALSENSE, "thermal/camera_info": "lepton/camera_info"}


def test_external_graph_starts_no_source_and_listens_live():
    specs = {s.name: s for s in build_graph("external")}
    assert list(specs) == ["fusion", "detector", "tracker"]
    assert not any(s.parameters.get("input_reliability") for s in specs.values())
    assert not wants_sim_time("external")
    with pytest.raises(ConfigError, match="source:=live"):
        build_graph("external", playback_file="rec.bag")


def test_sensor_topics_are_renamed_in_every_node_that_uses_them():
    for source in ("external", "live", "bag", "sim_live"):
        specs = build_graph(source, bag="/b" if source == "bag" else "", topics=REALSENSE)
        for spec in specs:
            used = set(spec.subscribes) | set(spec.publishes)
            assert dict(spec.remappings) == {k: v for k, v in REMAPPED.items() if k in used}
    specs = {s.name: s for s in build_graph("external", topics=REALSENSE)}
    assert specs["fusion"].inputs == (
        "/camera/camera/depth/image_rect_raw", "/camera/camera/depth/camera_info",
        "lepton/image_raw", "lepton/camera_info",
    )
    assert specs["tracker"].topic("depth/image_raw") == "/camera/camera/depth/image_rect_raw"
    assert specs["tracker"].topic("detections") == "detections"
    # Empty or unchanged names leave the topic alone (the launch file passes every argument).
    blank = {t: "" for t in SENSOR_TOPICS} | {"thermal/image_raw": "thermal/image_raw"}
    assert all(not s.remappings for s in build_graph("external", topics=blank))


@pytest.mark.parametrize(
    ("topics", "match"),
    [
        ({"depth/image_raw": "/camera/depth image"}, "depth_topic: '/camera/depth image' is not"),
        ({"thermal/camera_info": "/lepton//info"}, "thermal_info_topic"),
        ({"depth/camera_info": "/2cam/info"}, "depth_info_topic"),
        ({"depth/image_raw": "/camera/depth/"}, "not a ROS 2 topic name"),
        ({"color/image_raw": "/x"}, "'color/image_raw' is not one of the graph's sensor topics"),
        # The nodes take raw images; a bag of compressed ones plays decoded on the raw name.
        ({"depth/image_raw": "/camera/camera/depth/image_rect_raw/compressedDepth"},
         r"depth_topic: .* is a compressed image_transport topic, and the nodes take raw "
         r"sensor_msgs/Image: give the raw topic \(/camera/camera/depth/image_rect_raw\)"),
        ({"thermal/image_raw": "/lepton/image_raw/compressed"}, "source:=bag, whose player"),
    ],
)
def test_bad_topic_names_are_refused_naming_the_argument(topics, match):
    with pytest.raises(ConfigError, match=match):
        build_graph("external", topics=topics)


def test_a_renamed_image_takes_the_camera_info_beside_it_unless_one_is_given():
    aligned = "/camera/camera/aligned_depth_to_color/image_raw"
    assert with_camera_infos({"depth/image_raw": aligned, "thermal/image_raw": "image"}) == {
        "depth/image_raw": aligned,
        # Not /camera/camera/depth/camera_info: the aligned image has the colour camera's model.
        "depth/camera_info": "/camera/camera/aligned_depth_to_color/camera_info",
        "thermal/image_raw": "image", "thermal/camera_info": "camera_info",
    }
    given = {"depth/image_raw": "/a/image", "depth/camera_info": "/b/info", "color/image_raw": ""}
    assert with_camera_infos(given) == {"depth/image_raw": "/a/image",
                                        "depth/camera_info": "/b/info"}
    assert with_camera_infos({"color/image_raw": "/c/image_raw"})["color/camera_info"] == (
        "/c/camera_info"
    )
    # An image on a compressed transport: the camera_info beside the image it stands for.
    compressed = {"depth/image_raw": "/cam/depth/image_rect_raw/compressedDepth",
                  "color/image_raw": "/cam/color/image_raw/compressed"}
    assert with_camera_infos(compressed) == compressed | {
        "depth/camera_info": "/cam/depth/camera_info",
        "color/camera_info": "/cam/color/camera_info",
    }


def test_the_bag_player_waits_for_the_renamed_topics():
    specs = build_graph("bag", bag="/data/rs", topics=REALSENSE)
    # As the launch file lists them (remapped names) and as iphd-run does (relative to the
    # namespace, so without the leading slash outside one).
    for subscribed in (
        [t for s in specs for t in s.inputs],
        [t.lstrip("/") for s in specs for t in s.inputs],
    ):
        held = {s.name: s for s in hold_player(specs, subscribed)}
        assert held["bag_player"].parameters["wait_for_subscribers"] == [
            "/camera/camera/depth/image_rect_raw:3", "/camera/camera/depth/camera_info:3",
            "lepton/image_raw:1", "lepton/camera_info:1",
        ]


def test_launch_file_passes_the_topic_arguments_to_every_node_and_rviz(monkeypatch, tmp_path):
    arguments = {a: REALSENSE.get(t, "") for a, t in TOPIC_ARGUMENTS.items()}
    nodes = _launch_nodes(monkeypatch, tmp_path, source="external", rviz="true", **arguments)
    assert [n.kwargs["executable"] for n in nodes] == [
        "fusion_node", "detector_node", "tracker_node", "rviz2"
    ]
    specs = build_graph("external", topics=REALSENSE)
    assert [n.kwargs["remappings"] for n in nodes[:3]] == [list(s.remappings) for s in specs]
    assert dict(nodes[3].kwargs["remappings"]) == REMAPPED
    assert all({"use_sim_time": False} in n.kwargs["parameters"] for n in nodes)


def test_a_parameter_the_node_does_not_have_is_named_with_the_nearest_it_has():
    params = {
        "/**": {"calibration_file": "", "anything": 1},  # wildcards serve several nodes
        "/**/detector": {"detector_checkpoint": "/m/d.pt", "score_threshold": 0.5},
        "detector": {"scor_threshold": 0.4},  # a bare name: only outside a namespace
        "/robot2/detector": {"nothing_like_it": 1},
        "/**/tracker": {"reid_checkpoint": "none"},
    }
    declared = ["checkpoint", "score_threshold", "verifier", "use_sim_time"]
    assert unknown_parameters(params, "detector", "", declared) == [
        "the parameters file sets 'detector_checkpoint' for detector (under '/**/detector'), "
        "which detector does not have: it is ignored; did you mean 'checkpoint'?",
        "the parameters file sets 'scor_threshold' for detector (under 'detector'), which "
        "detector does not have: it is ignored; did you mean 'score_threshold'?",
    ]
    assert unknown_parameters(params, "detector", "robot2", declared)[1:] == [
        "the parameters file sets 'nothing_like_it' for detector (under '/robot2/detector'), "
        "which detector does not have: it is ignored"
    ]
    assert unknown_parameters(load_params_file(ROOT / "launch" / "iphd_params.yaml"),
                              "detector", "", ["threads"])  # a check that can fail


def test_the_bag_player_is_told_which_image_is_the_depth_topic():
    specs = {s.name: s for s in build_graph(
        "bag", bag="/data/run", topics={"depth/image_raw": "/oak/stereo/image_raw"})}
    assert specs["bag_player"].parameters["depth_images"] == ["/oak/stereo/image_raw"]
    plain = {s.name: s for s in build_graph("bag", bag="/data/run")}
    assert "depth_images" not in plain["bag_player"].parameters


def test_a_namespace_rcl_would_refuse_is_refused_with_what_to_write(monkeypatch, tmp_path):
    from iphd.graph import check_namespace

    for good in ("", "robot1", "/robot1", "/ward_2/robot1"):
        assert check_namespace(good) == good
    for bad in ("my robot", "1robot", "robot1/", "a//b", "~/x", "robot-1"):
        with pytest.raises(ConfigError, match="is not a ROS 2 namespace: use letters, digits"):
            check_namespace(bad)
    with pytest.raises(ConfigError, match="namespace 'my robot' is not a ROS 2 namespace"):
        _launch_nodes(monkeypatch, tmp_path, source="sim_live", namespace="my robot")
    with pytest.raises(ConfigError, match=f"parameters file {tmp_path} is a folder"):
        load_params_file(tmp_path)
