"""The shipped RViz config shows topics the graph publishes, in the frame the nodes use."""

import importlib.util
import re
from pathlib import Path

import yaml

from iphd.calibration import RigFrames
from iphd.graph import SENSOR_TOPICS, SOURCES, build_graph

ROOT = Path(__file__).resolve().parents[1]
RVIZ = ROOT / "launch" / "iphd.rviz"


def _config():
    return yaml.safe_load(RVIZ.read_text())


def _displays(config):
    return config["Visualization Manager"]["Displays"]


def _display_topics(config):
    return [(d["Class"], d["Topic"]["Value"]) for d in _displays(config) if "Topic" in d]


def _published(source):
    specs = build_graph(source, bag="x" if source == "bag" else "")
    # Source external: drivers started elsewhere publish the sensor topics.
    outside = set(SENSOR_TOPICS) if source == "external" else set()
    return {topic for spec in specs for topic in spec.publishes} | outside


def test_rviz_config_is_an_rviz2_file_with_the_expected_displays():
    config = _config()
    assert {"Panels", "Visualization Manager"} <= set(config)
    shown = _display_topics(config)
    assert ("rviz_default_plugins/Image", "depth/image_raw") in shown
    assert ("rviz_default_plugins/Image", "debug/image") in shown
    assert ("rviz_default_plugins/Image", "debug/tracks_image") in shown
    assert ("rviz_default_plugins/MarkerArray", "markers") in shown
    assert "rviz_default_plugins/TF" in {d["Class"] for d in _displays(config)}
    assert all(d["Class"].startswith("rviz_default_plugins/") for d in _displays(config))


def test_every_rviz_topic_is_published_by_the_graph_of_every_source():
    topics = {topic for _, topic in _display_topics(_config())}
    for source in SOURCES:
        missing = topics - _published(source)
        assert not missing, (source, missing)


def test_rviz_topics_are_relative_so_namespaces_apply():
    assert all(not topic.startswith("/") for _, topic in _display_topics(_config()))


def test_graph_topic_lists_match_the_nodes_publishers():
    # The topics the graph claims are those the node modules really create publishers for.
    for spec in build_graph("sim_live"):
        path = Path(importlib.util.find_spec(spec.module).origin)
        created = set(re.findall(r'create_publisher\(\s*\w+,\s*"([^"]+)"', path.read_text()))
        assert set(spec.publishes) <= created, (spec.name, set(spec.publishes) - created)


def test_fixed_frame_is_the_depth_optical_frame_of_the_code():
    options = _config()["Visualization Manager"]["Global Options"]
    assert options["Fixed Frame"] == RigFrames().depth == "depth_optical_frame"


def test_rviz_config_is_installed_with_the_launch_files():
    setup = (ROOT / "setup.py").read_text()
    assert 'glob("launch/*.rviz")' in setup
