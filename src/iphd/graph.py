"""The product's node graph, described once for the launch file and the in-process runner."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from iphd.errors import ConfigError, IphdError
from iphd.resources import PACKAGE  # noqa: F401 - the launch file takes it from here
from iphd.transports import base_topic, transport_of

if TYPE_CHECKING:
    from iphd.calibration import RigCalibration

SOURCES = ("live", "sim", "sim_live", "bag", "external")
#: Log levels of the nodes (launch's ``log_level``, ``iphd-run --log-level``).
LOG_LEVELS = ("debug", "info", "warn", "error")
# Topics each kind of node publishes (relative names; /diagnostics left out), for RViz and docs.
SENSOR_TOPICS = (
    "depth/image_raw", "depth/camera_info", "thermal/image_raw", "thermal/camera_info"
)
#: Launch argument (``iphd-run`` option with dashes) -> the sensor topic it renames, so the graph
#: runs on other drivers' topics (``realsense2_camera``'s ``/camera/camera/depth/image_rect_raw``).
TOPIC_ARGUMENTS: Mapping[str, str] = {
    "depth_topic": "depth/image_raw",
    "depth_info_topic": "depth/camera_info",
    "thermal_topic": "thermal/image_raw",
    "thermal_info_topic": "thermal/camera_info",
}
#: The ones the offline tools take (``--depth-topic``, ...): thermal/camera_info is not read
#: offline, where thermal is registered with the rig calibration.
OFFLINE_TOPIC_ARGUMENTS: Mapping[str, str] = {
    k: v for k, v in TOPIC_ARGUMENTS.items() if k != "thermal_info_topic"
}
#: The depth camera's alone (tools that read only depth: ``import-mot``, ``bag_to_reid.py``).
DEPTH_TOPIC_ARGUMENTS: Mapping[str, str] = {
    k: v for k, v in TOPIC_ARGUMENTS.items() if k.startswith("depth_")
}
#: Each camera's info topic -> its image topic, for ``with_camera_infos``.
CAMERA_INFO_OF_IMAGE: Mapping[str, str] = {
    "depth/camera_info": "depth/image_raw",
    "thermal/camera_info": "thermal/image_raw",
    "color/camera_info": "color/image_raw",
}
# A ROS 2 topic name: absolute, relative or private (~/), tokens of letters, digits and
# underscores that do not start with a digit (no substitutions).
_TOPIC_NAME = re.compile(r"^(/|~/)?[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$")
FUSION_TOPICS = ("thermal/registered", "/tf_static", "rig_calibration")
DETECTOR_TOPICS = ("detections", "debug/image")
TRACKER_TOPICS = ("tracks", "markers", "query/result", "debug/tracks_image")
# Topics each kind of node subscribes (relative names).
FUSION_INPUTS = SENSOR_TOPICS
DETECTOR_INPUTS = ("depth/image_raw", "depth/camera_info", "thermal/registered")
TRACKER_INPUTS = ("detections", "depth/image_raw", "depth/camera_info", "query/image")
# Replaying a bag (sources ``bag`` and ``sim``), the consumers subscribe reliably and queue a
# second of depth frames: a node descheduled for a moment (a loaded machine, a first model
# export) then loses nothing, and an evaluation scores every frame of the bag. Live sources keep
# the sensor-data QoS (best effort, 5 deep): there a late frame is worth less than the next.
REPLAY_INPUT_QOS: Mapping[str, Any] = {"input_reliability": "reliable", "input_queue_depth": 30}


@dataclass(frozen=True)
class NodeSpec:
    """One node of the graph.

    Attributes:
        name: ROS node name (its block in the parameters file is ``/**/<name>``).
        executable: console script installed by the package (used by the launch file).
        module: Python module holding the node class (used by the in-process runner).
        node_class: class name of the node in ``module``.
        parameters: parameters set by the graph itself, on top of the parameters file.
        remappings: (from, to) topic remappings.
        publishes: topics the node publishes (before remapping; ``/diagnostics`` left out).
        subscribes: topics the node subscribes (before remapping).
    """

    name: str
    executable: str
    module: str
    node_class: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    remappings: tuple[tuple[str, str], ...] = ()
    publishes: tuple[str, ...] = ()
    subscribes: tuple[str, ...] = ()

    def topic(self, name: str) -> str:
        """``name`` as this node uses it, after its remappings."""
        return dict(self.remappings).get(name, name)

    @property
    def inputs(self) -> tuple[str, ...]:
        """The topics the node subscribes, after its remappings."""
        return tuple(self.topic(t) for t in self.subscribes)


def with_camera_infos(topics: Mapping[str, str] | None) -> dict[str, str]:
    """``topics`` (topic -> the name to use) with each renamed image's camera_info beside it.

    A camera driver publishes ``<namespace>/camera_info`` beside ``<namespace>/<image>``
    (image_transport's convention: realsense2_camera's ``/camera/camera/depth/image_rect_raw``
    and ``/camera/camera/depth/camera_info``), so an image given without its info takes that
    one, not another camera's found by name (``aligned_depth_to_color`` has the colour camera's
    model). An image given on a compressed transport (``.../image_rect_raw/compressedDepth``)
    has its camera_info beside the image it stands for. Empty names are left out; a
    camera_info given explicitly wins.
    """
    out = {topic: str(name).strip() for topic, name in (topics or {}).items()}
    out = {topic: name for topic, name in out.items() if name}
    for info, image in CAMERA_INFO_OF_IMAGE.items():
        if image in out and info not in out:
            head, slash, _ = base_topic(out[image]).rpartition("/")
            out[info] = f"{head}{slash}camera_info"
    return out


def sensor_remappings(topics: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    """Remappings from the graph's sensor topics to ``topics`` (sensor topic -> real name).

    Empty names, and names equal to the sensor topic, leave it as it is; an image renamed
    without its camera_info takes the one beside it (``with_camera_infos``).

    Raises:
        ConfigError: a key that is not a sensor topic, or a name that is not a ROS 2 topic name.
    """
    remappings = []
    for sensor, name in with_camera_infos(topics).items():
        if sensor not in SENSOR_TOPICS:
            raise ConfigError(
                f"'{sensor}' is not one of the graph's sensor topics ({', '.join(SENSOR_TOPICS)})"
            )
        if name == sensor:
            continue
        if not _TOPIC_NAME.match(name):
            argument = next(a for a, t in TOPIC_ARGUMENTS.items() if t == sensor)
            raise ConfigError(
                f"{argument}: '{name}' is not a ROS 2 topic name (letters, digits and "
                "underscores in '/'-separated parts that do not start with a digit, e.g. "
                "/camera/camera/depth/image_rect_raw)"
            )
        if transport_of(name) is not None:
            argument = next(a for a, t in TOPIC_ARGUMENTS.items() if t == sensor)
            raise ConfigError(
                f"{argument}: '{name}' is a compressed image_transport topic, and the nodes "
                f"take raw sensor_msgs/Image: give the raw topic ({base_topic(name)}). A "
                "driver on another computer that sends only compressed images can be decoded "
                "beside the nodes with image_transport's republish; a bag that holds only "
                "compressed images plays through source:=bag, whose player publishes them "
                "decoded under that raw name"
            )
        remappings.append((sensor, name))
    return tuple(remappings)


def add_topic_arguments(
    parser: argparse.ArgumentParser, arguments: Mapping[str, str], what: str
) -> None:
    """Options ``--depth-topic``, ... (``arguments``: option name -> the topic it renames).

    ``what`` says whose topic it is ("the drivers'", "the bag's"), for the help.
    """
    for argument, topic in arguments.items():
        parser.add_argument(
            "--" + argument.replace("_", "-"), default="", metavar="TOPIC",
            help=f"{what} topic to use as {topic}, under another driver's name (e.g. "
            f"realsense2_camera's); default: {topic}"
            + (", or the camera_info beside the image topic given" if "info" in argument else ""),
        )


def topics_from_args(
    args: argparse.Namespace, arguments: Mapping[str, str]
) -> dict[str, str]:
    """The topics ``add_topic_arguments``' options rename: {topic: the name given}."""
    return {
        topic: value
        for argument, topic in arguments.items()
        if (value := str(getattr(args, argument, "") or "").strip())
    }


def build_graph(
    source: str = "sim",
    *,
    calibration_file: str = "",
    playback_file: str = "",
    bag: str = "",
    detector: bool = True,
    detector_checkpoint: str = "",
    verifier: str = "",
    tracker: bool = True,
    reid_checkpoint: str = "",
    topics: Mapping[str, str] | None = None,
) -> tuple[NodeSpec, ...]:
    """Return the nodes to start for ``source``.

    Args:
        source: ``live`` (D435 + Lepton drivers), ``sim`` (the built-in simulator's demo bag,
            played in a loop: ``iphd.sim.demo``; the caller makes sure it exists), ``sim_live``
            (the simulator rendering in real time, ``sim_source``) or ``bag`` (a rosbag2
            played by ``bag_player``, which publishes the recorded depth, thermal, camera
            infos, TF and ground truth) or ``external`` (no source node: drivers started
            elsewhere, such as ``realsense2_camera``, publish the sensor topics).
        calibration_file: rig.yaml for every node that needs it; empty = the package default.
        playback_file: a librealsense recording the D435 driver plays instead of a camera
            (``live`` source only).
        bag: the rosbag2 folder (or .db3/.mcap file) to play (``bag`` source only).
        detector: start the person detector on fusion's output (off = fusion only).
        detector_checkpoint: the detector's checkpoint; empty = the shipped model (or the
            parameters file's ``checkpoint``).
        verifier: the detector's box verifier (.npz); empty = the shipped one (or the
            parameters file's ``verifier``), ``none`` = publish every detection above the
            score threshold.
        tracker: start the person tracker on the detector's output (needs ``detector``; off
            = no tracks). With ``detector`` off the tracker is left out as well.
        reid_checkpoint: the tracker's depth re-ID embedder; empty = the shipped one (or the
            parameters file's ``reid_checkpoint``), ``none`` = track without appearance.
        topics: sensor topic (``depth/image_raw``, ``depth/camera_info``, ``thermal/image_raw``,
            ``thermal/camera_info``) -> the name to use instead, in every node that publishes
            or subscribes it (``TOPIC_ARGUMENTS`` names the launch arguments).

    Raises:
        ConfigError: unknown source, a playback file with a non-live source, a bag source
            without a bag, a bag with another source, a detector checkpoint or verifier
            without the detector, a re-ID checkpoint without the tracker, or a bad topic name.
    """
    if source not in SOURCES:
        raise ConfigError(f"unknown source '{source}'; choose one of {', '.join(SOURCES)}")
    remap = sensor_remappings(topics)
    if playback_file and source != "live":
        raise ConfigError(
            "playback_file is a D435 recording and only makes sense with source:=live"
        )
    if source == "bag" and not bag:
        raise ConfigError(
            "source:=bag needs the bag to play: pass bag:=/path/to/bag (iphd-run --bag PATH; "
            'make demo SOURCE=bag ARGS="--bag PATH")'
        )
    if bag and source != "bag":
        raise ConfigError(f"a bag ({bag}) is only played with source:=bag, not source:={source}")
    if detector_checkpoint and not detector:
        raise ConfigError(
            f"a detector checkpoint ({detector_checkpoint}) needs the detector: drop "
            "detector:=false"
        )
    if verifier and not detector:
        raise ConfigError(
            f"a box verifier ({verifier}) is the detector's: drop detector:=false"
        )
    # The tracker only follows the detector: turning the detector off turns it off too.
    tracker = tracker and detector
    if reid_checkpoint and not tracker:
        raise ConfigError(
            f"a re-ID checkpoint ({reid_checkpoint}) is for the tracker: drop tracker:=false "
            "(and detector:=false)"
        )
    common: dict[str, Any] = {"calibration_file": calibration_file} if calibration_file else {}
    consumer: dict[str, Any] = dict(REPLAY_INPUT_QOS) if source in ("bag", "sim") else {}
    nodes: list[NodeSpec] = []
    if source == "live":
        d435_params: dict[str, Any] = dict(common)
        if playback_file:
            d435_params["playback_file"] = playback_file
        nodes.append(
            NodeSpec(
                "d435", "d435_node", "iphd.ros.d435_node", "D435Node", d435_params,
                publishes=SENSOR_TOPICS[:2],
            )
        )
        nodes.append(
            NodeSpec(
                "lepton", "lepton_node", "iphd.ros.lepton_node", "LeptonNode", common,
                publishes=SENSOR_TOPICS[2:],
            )
        )
    elif source in ("bag", "sim"):
        if source == "sim":
            from iphd.sim.demo import demo_bag_path  # light: no simulator imports

            player: dict[str, Any] = {"bag": str(demo_bag_path()), "loop": True}
        else:
            player = {"bag": bag}
            # Of a depth image recorded on both compressed transports, the player decodes
            # compressedDepth, as the offline tools do for --depth-topic.
            depth_image = dict(remap).get("depth/image_raw")
            if depth_image:
                player["depth_images"] = [depth_image]
        nodes.append(
            NodeSpec(
                "bag_player", "bag_player_node", "iphd.ros.bag_player_node", "BagPlayerNode",
                player, publishes=SENSOR_TOPICS,
            )
        )
    elif source == "sim_live":
        nodes.append(
            NodeSpec(
                "sim_source", "sim_source_node", "iphd.ros.sim_source_node", "SimSourceNode",
                common, publishes=SENSOR_TOPICS,
            )
        )
    nodes.append(
        NodeSpec(
            "fusion", "fusion_node", "iphd.ros.fusion_node", "FusionNode", {**common, **consumer},
            publishes=FUSION_TOPICS, subscribes=FUSION_INPUTS,
        )
    )
    if detector:
        detector_params = {"checkpoint": detector_checkpoint} if detector_checkpoint else {}
        if verifier:
            detector_params["verifier"] = verifier
        detector_params.update(consumer)
        nodes.append(
            NodeSpec(
                "detector", "detector_node", "iphd.ros.detector_node", "DetectorNode",
                detector_params, publishes=DETECTOR_TOPICS, subscribes=DETECTOR_INPUTS,
            )
        )
    if tracker:
        tracker_params = {"reid_checkpoint": reid_checkpoint} if reid_checkpoint else {}
        tracker_params.update(consumer)
        # Depth is only cropped for the re-ID model: without one the tracker subscribes none.
        tracker_inputs = tuple(
            t for t in TRACKER_INPUTS if reid_checkpoint != "none" or not t.startswith("depth/")
        )
        nodes.append(
            NodeSpec(
                "tracker", "tracker_node", "iphd.ros.tracker_node", "TrackerNode",
                tracker_params, publishes=TRACKER_TOPICS, subscribes=tracker_inputs,
            )
        )
    if nodes[0].name == "bag_player":
        nodes[0] = dataclasses.replace(
            nodes[0], parameters={**nodes[0].parameters, "exclude_topics": replayed_outputs(nodes)}
        )
    return tuple(
        dataclasses.replace(
            spec,
            remappings=tuple(
                (sensor, name) for sensor, name in remap
                if sensor in spec.publishes or sensor in spec.subscribes
            ),
        )
        for spec in nodes
    )


def replayed_outputs(specs: Sequence[NodeSpec]) -> list[str]:
    """The topics a bag player must not play because the graph's own nodes publish them.

    A ``ros2 bag record -a`` of a running graph holds its ``thermal/registered``,
    ``detections``, ``tracks``, ``rig_calibration`` and ``/diagnostics``: played again beside
    the nodes that make them anew, the detector would pair the recorded registered images too,
    the tracker would take each frame's detections twice and a recording of the replay would
    mix the two runs. ``/tf_static`` is still played: it also holds the robot's other static
    transforms (its rig transforms are the fusion node's own again, unless a
    ``calibration_file`` other than the bag's is given).
    """
    outputs = {topic for spec in specs[1:] for topic in spec.publishes} - {"/tf_static"}
    if any(spec.name == "tracker" for spec in specs):
        outputs.add("vision_tracks")  # published where vision_msgs is installed
    return sorted(outputs | {"/diagnostics"})


def rig_transform_frames(calibration_file: str = "") -> list[str]:
    """The child frames of the rig transforms the fusion node publishes on ``/tf_static``.

    Those of ``calibration_file`` (empty = the package's): the thermal optical frame, and the
    depth optical frame when the calibration names a ``frames.base``. Empty when the file does
    not load (the fusion node reports why).
    """
    from iphd.calibration import rig_static_transforms

    calibration = _graph_calibration(calibration_file)
    if calibration is None:
        return []
    return sorted(t.child for t in rig_static_transforms(calibration))


def _graph_calibration(calibration_file: str = "") -> RigCalibration | None:
    """``calibration_file`` (empty = the package's) loaded; None when it does not load."""
    from iphd.calibration import DEFAULT_CALIBRATION, load_calibration

    try:
        return load_calibration(calibration_file or DEFAULT_CALIBRATION)
    except (IphdError, OSError):
        return None


def exclude_rig_transforms(
    specs: Sequence[NodeSpec], params: Mapping[str, Mapping[str, Any]], namespace: str = ""
) -> list[NodeSpec]:
    """``specs`` with the bag player told not to play the rig transforms fusion publishes.

    A recording of a running graph, or of a robot that published its rig from the same
    calibration, holds those transforms on ``/tf_static``. Replayed with another
    ``calibration_file``, the recorded depth -> thermal transform and fusion's new one would
    both be static transforms of one frame, and tf2 keeps whichever arrives last: RViz could
    draw the thermal frame where the old calibration put it. The player leaves the recorded
    ones out (``exclude_transforms``) when fusion publishes its own: ``publish_tf`` as
    ``params`` (a parsed parameters file) and the graph's own parameters set it, with the
    calibration file they name. The robot's other static transforms still play.
    """
    fusion = next((s for s in specs if s.name == "fusion"), None)
    if fusion is None or not any(s.name == "bag_player" for s in specs):
        return list(specs)
    values = {**parameters_for(params, "fusion", namespace), **fusion.parameters}
    frames = (
        rig_transform_frames(str(values.get("calibration_file") or ""))
        if values.get("publish_tf", True) else []
    )
    if not frames:
        return list(specs)
    return [
        dataclasses.replace(s, parameters={**s.parameters, "exclude_transforms": frames})
        if s.name == "bag_player" else s
        for s in specs
    ]


def tracker_inputs(
    specs: Sequence[NodeSpec], params: Mapping[str, Mapping[str, Any]], namespace: str = ""
) -> list[NodeSpec]:
    """``specs`` with the tracker subscribing no depth when ``params`` turn its re-ID off.

    ``build_graph`` leaves the depth topics out of the tracker's inputs for a
    ``reid_checkpoint`` of ``none`` given to it; one set in the parameters file (``params``,
    parsed) does the same. Otherwise a bag player told to wait for the tracker's depth
    subscription (``hold_player``) would wait its whole ``wait_for_subscribers_s`` for it.
    """
    tracker = next((s for s in specs if s.name == "tracker"), None)
    if tracker is None:
        return list(specs)
    values = {**parameters_for(params, "tracker", namespace), **tracker.parameters}
    if str(values.get("reid_checkpoint", "")).strip().lower() != "none":
        return list(specs)
    inputs = tuple(t for t in tracker.subscribes if not t.startswith("depth/"))
    return [dataclasses.replace(s, subscribes=inputs) if s is tracker else s for s in specs]


def hold_player(specs: Sequence[NodeSpec], subscribed: Iterable[str]) -> list[NodeSpec]:
    """``specs`` with the bag player told to wait for the subscribers of its sensor topics.

    Nodes started at the same time in separate processes discover each other only after a
    second or two, and the consumers then load their models: the player's
    ``wait_for_subscribers`` holds its first message until each sensor topic has as many
    subscribers as ``subscribed`` (relative topic names, one entry per subscription) lists, so a
    one-shot bag loses nothing. ``detect.launch.py`` passes the graph's ``inputs`` (remapped
    ``subscribes``); ``iphd-run`` what its started nodes really subscribe. The player waits on
    the sensor topics under their remapped names (``build_graph``'s ``topics``).
    """
    counts = Counter(topic.lstrip("/") for topic in subscribed)
    player = next((s for s in specs if s.name == "bag_player"), None)
    names = [player.topic(topic) for topic in SENSOR_TOPICS] if player else []
    wait = [f"{name}:{counts[name.lstrip('/')]}" for name in names if counts[name.lstrip("/")]]
    return [
        dataclasses.replace(s, parameters={**s.parameters, "wait_for_subscribers": wait})
        if s.name == "bag_player" and wait else s
        for s in specs
    ]


def graph_calibration_file(
    source: str, bag: str = "", calibration_file: str = "",
    params: Mapping[str, Mapping[str, Any]] | None = None, namespace: str = "",
) -> str:
    """The rig.yaml for a graph's nodes: the one given, else a replayed bag's, else "".

    ``calibration_file`` wins, then the one ``params`` (a parsed parameters file) gives fusion
    in ``namespace`` (``params_calibration_file``); replaying a bag (``source`` ``bag``, or
    ``sim``: the simulator's demo bag, rendered with the ``rig.yaml`` of the day it was made)
    without either, the nodes get the calibration that bag carries; otherwise "" (the
    package's). So a bag's thermal is registered with the calibration of the rig that
    recorded it, as the offline tools do (``BagReader.calibration``: stored in its metadata,
    or recorded on its ``rig_calibration`` topic). It is written once to the cache folder
    (``calibrations/BAGNAME-HASH.yaml``), where the fusion node's log names it. A bag that
    does not open gives "", so the player's error says why.

    Raises:
        ConfigError: the calibration the bag carries is unusable, or it carries several that
            differ.
    """
    calibration_file = calibration_file or params_calibration_file(params or {}, namespace)
    if source == "sim" and not bag:
        from iphd.sim.demo import demo_bag_path

        bag = str(demo_bag_path())
    if calibration_file or source not in ("bag", "sim") or not bag:
        return calibration_file
    import hashlib

    from iphd.cache import cache_dir
    from iphd.calibration import calibration_to_yaml
    from iphd.data.rosbag import BagReader
    from iphd.errors import DatasetError

    try:
        reader = BagReader(bag)
    except DatasetError:
        return ""
    with reader:
        try:
            calibration = reader.calibration
        except DatasetError as exc:
            raise ConfigError(f"{exc} (calibration_file:=, iphd-run --calibration)") from exc
        origin = reader.calibration_origin
    if calibration is None:
        return ""
    text = f"# iphd rig calibration {origin} {bag}\n{calibration_to_yaml(calibration)}"
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    path = cache_dir() / "calibrations" / f"{Path(bag).name}-{digest}.yaml"
    if not path.is_file():
        partial = path.with_name(f".{path.stem}.{os.getpid()}.part")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial.write_text(text)
            partial.replace(path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                partial.unlink()
            raise ConfigError(
                f"cannot write the calibration {bag} carries to {path} ({exc}): set "
                "IPHD_CACHE_DIR to a writable folder, or pass the rig's file "
                "(calibration_file:=, iphd-run --calibration)"
            ) from exc
    return str(path)


def params_calibration_file(
    params: Mapping[str, Mapping[str, Any]], namespace: str = ""
) -> str:
    """The ``calibration_file`` a parsed parameters file gives fusion in ``namespace`` ("" if none).

    The graph's calibration argument (``calibration_file:=``, ``iphd-run --calibration``) wins
    over it, and it wins over a replayed bag's own: a rig file the user put in their parameters
    file is meant, even with ``source:=bag``. ``rviz_fixed_frame`` and the bag player's
    ``exclude_transforms`` follow the same choice.
    """
    return str(parameters_for(params, "fusion", namespace).get("calibration_file") or "")


def rviz_fixed_frame(calibration_file: str = "") -> str | None:
    """RViz's fixed frame for a rig: the calibration's ``frames.depth``, where the nodes' output is.

    ``launch/iphd.rviz`` names the nominal rig's frame; a rig calibrated with other frame names
    (``camera_depth_optical_frame`` beside realsense2_camera) would show nothing in it. None
    when the calibration does not load (the fusion node reports why).
    """
    calibration = _graph_calibration(calibration_file)
    return None if calibration is None else calibration.frames.depth


# A ROS 2 namespace: empty, or tokens of letters, digits and underscores that do not start with
# a digit, separated by "/" (a leading "/" is optional, as ros2 launch and rcl add it).
_NAMESPACE = re.compile(r"^/?([A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*)?$")


def check_namespace(namespace: str, option: str = "namespace") -> str:
    """Return ``namespace`` after checking rcl would take it.

    Raises:
        ConfigError: it holds other characters than letters, digits, ``_`` and ``/``, a token
            that starts with a digit, or an empty token (``//``, a trailing ``/``).
    """
    if not _NAMESPACE.match(namespace):
        raise ConfigError(
            f"{option} {namespace!r} is not a ROS 2 namespace: use letters, digits and _, in "
            "names that do not start with a digit, separated by / (e.g. robot1 or /ward/robot1)"
        )
    return namespace


def log_level_argument(namespace: str, node_name: str, level: str) -> str:
    """``--log-level`` value that sets one node's logger, not the process's default.

    A bare ``--log-level debug`` also sets the default that rcl's and the middleware's own
    loggers follow, which buries the node's debug lines under theirs. A node's logger is named
    after its namespace and name with dots (``/robot1`` + ``detector`` -> ``robot1.detector``),
    and the node's child loggers follow it.
    """
    if level not in LOG_LEVELS:
        raise ConfigError(f"log level {level!r}: use one of {', '.join(LOG_LEVELS)}")
    parts = [p for p in namespace.split("/") if p] + [node_name]
    return f"{'.'.join(parts)}:={level}"


def wants_sim_time(source: str) -> bool:
    """Whether the nodes of ``source``'s graph should follow ``/clock`` by default.

    A bag (``bag``, and ``sim``, which plays the simulator's bag) carries its own time, which
    the player publishes on ``/clock``; live sensors and ``sim_live`` stamp with the system
    clock.
    """
    return source in ("bag", "sim")


def default_sim_time(source: str, params: Mapping[str, Mapping[str, Any]]) -> bool:
    """``use_sim_time`` when none is given.

    The parameters file's for every node (under ``/**``), else the source's
    (``wants_sim_time``). A robot in a simulator (Gazebo) sets ``use_sim_time: true`` under
    ``/**`` in its own parameters file and runs ``source:=external``; that value counts.
    """
    value = params.get("/**", {}).get("use_sim_time")
    return value if isinstance(value, bool) else wants_sim_time(source)


def load_params_file(path: Path | str) -> dict[str, dict[str, Any]]:
    """Read a ROS 2 parameters YAML file into ``{node key: {param: value}}``.

    Keys are as written in the file (``/**``, ``/**/fusion``, ``/ns/fusion``); namespaces
    written as nested keys (``robot1: {fusion: {ros__parameters: ...}}``) are joined with
    ``/`` as rcl joins them (``robot1/fusion``); nested parameter mappings are flattened with
    dots as ROS does.

    Raises:
        ConfigError: when the file is missing or is not a ROS 2 parameters file.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"parameters file {path} is a folder; give the YAML file in it")
    if not path.is_file():
        raise ConfigError(f"parameters file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected '<node>: {{ros__parameters: {{...}}}}' entries")
    result: dict[str, dict[str, Any]] = {}

    def read(entries: Mapping[Any, Any], prefix: str) -> None:
        for key, entry in entries.items():
            name = f"{prefix}{key}"
            if isinstance(entry, dict) and "ros__parameters" in entry:
                result[name] = _flatten(entry["ros__parameters"] or {}, "")
            elif isinstance(entry, dict) and entry and all(
                isinstance(value, dict) for value in entry.values()
            ):  # a namespace of nodes
                read(entry, f"{name.rstrip('/')}/")
            else:
                raise ConfigError(f"{path}: entry '{name}' has no 'ros__parameters' mapping")

    read(data, "")
    return result


def _flatten(mapping: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def parameters_for(
    params: Mapping[str, Mapping[str, Any]], node: str, namespace: str = ""
) -> dict[str, Any]:
    """Merge the entries of a parsed parameters file that apply to ``node`` in ``namespace``.

    Entries match as rcl matches them for ``ros2 launch`` (checked against rclpy): a key is a
    fully qualified node name, ``/`` prepended when missing, so a bare ``fusion`` is the node
    outside any namespace only; ``*`` stands for one name token and ``**`` for any number of
    them (``/**`` is every node, ``/**/fusion`` a ``fusion`` node in any namespace). Matching
    entries apply in file order, a later one winning, as in rclpy.
    """
    ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
    name = f"{ns}/{node}"
    merged: dict[str, Any] = {}
    for key, values in params.items():
        if _key_pattern(key).fullmatch(name):
            merged.update(values)
    return merged


def unknown_parameters(
    params: Mapping[str, Mapping[str, Any]],
    node: str,
    namespace: str,
    declared: Iterable[str],
) -> list[str]:
    """What a parameters file gives ``node`` by its name that the node does not have.

    rcl hands a node every parameter its entries name and the node ignores those it does not
    declare, without a word: a misspelt key, or a launch argument's name
    (``detector_checkpoint``) where the node's is ``checkpoint``, leaves the default in use.
    Only entries that name the node (``/**/detector``, ``detector``, ``/robot1/detector``)
    are checked; a wildcard entry (``/**``) serves several nodes. One message per key, with
    the nearest name the node has.
    """
    import difflib

    ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
    name = f"{ns}/{node}"
    have = sorted(set(declared))
    messages = []
    for key, values in params.items():
        if key.rstrip("/").rpartition("/")[2] != node or not _key_pattern(key).fullmatch(name):
            continue
        for param in values:
            if param in have:
                continue
            near = difflib.get_close_matches(param, have, n=1)
            messages.append(
                f"the parameters file sets '{param}' for {node} (under '{key}'), which {node} "
                "does not have: it is ignored"
                + (f"; did you mean '{near[0]}'?" if near else "")
            )
    return messages


def with_overrides(
    params: Mapping[str, Mapping[str, Any]],
    overrides: Mapping[str, Mapping[str, Any]],
    namespace: str = "",
) -> dict[str, dict[str, Any]]:
    """``params`` with ``overrides`` (``{node: {param: value}}``) winning for ``namespace``'s nodes.

    Each override goes into its node's fully qualified entry, moved to the end of the file
    order, where it wins over every wildcard entry.
    """
    ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
    result = {key: dict(values) for key, values in params.items()}
    for node, values in overrides.items():
        key = f"{ns}/{node}"
        result[key] = {**result.pop(key, {}), **values}
    return result


def _key_pattern(key: str) -> re.Pattern[str]:
    """The node names a parameters-file key matches, as a regular expression."""
    parts = []
    for token in key.strip("/").split("/"):
        if token == "**":
            parts.append("(?:/[^/]+)*")
        elif token == "*":
            parts.append("/[^/]+")
        else:
            parts.append("/" + re.escape(token))
    return re.compile("".join(parts))
