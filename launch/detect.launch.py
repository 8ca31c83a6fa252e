"""Launch the iphd graph: drivers, rig source or bag player, fusion, detector, tracker.

    ros2 launch iphd_bringup detect.launch.py source:=live
    ros2 launch iphd_bringup detect.launch.py source:=sim namespace:=robot1
    ros2 launch iphd_bringup detect.launch.py source:=bag bag:=/data/run1
    ros2 launch iphd_bringup detect.launch.py source:=sim rviz:=true
    ros2 launch iphd_bringup detect.launch.py source:=sim tracker:=false
    ros2 launch iphd_bringup detect.launch.py source:=sim detector:=false   # fusion only
    ros2 launch iphd_bringup detect.launch.py source:=external \
        depth_topic:=/camera/camera/depth/image_rect_raw \
        depth_info_topic:=/camera/camera/depth/camera_info   # drivers started elsewhere

The node list comes from ``iphd.graph.build_graph``, the same description the in-process runner
(``iphd-run``) uses, so both start the same graph.
"""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from iphd.graph import (
    LOG_LEVELS,
    PACKAGE,
    TOPIC_ARGUMENTS,
    build_graph,
    check_namespace,
    default_sim_time,
    exclude_rig_transforms,
    graph_calibration_file,
    hold_player,
    load_params_file,
    log_level_argument,
    rviz_fixed_frame,
    tracker_inputs,
)
from launch import LaunchDescription

ARGUMENTS = {
    "use_sim_time": (
        "", "follow /clock: true or false; empty = the params_file's use_sim_time under /**, "
        "else true for sources bag and sim"
    ),
    "namespace": ("", "namespace of every node and topic"),
    "params_file": ("", "ROS 2 parameters YAML; empty = the package's launch/iphd_params.yaml"),
    "source": (
        "live",
        "live | sim | sim_live | bag | external: D435 + Lepton drivers, the simulator's demo "
        "bag, the simulator in real time, a rosbag2, or drivers started elsewhere (no source "
        "node; see depth_topic ...)",
    ),
    "calibration_file": (
        "", "rig.yaml; empty = the params file's, else a replayed bag's own (source:=bag or "
        "sim), else the package's"
    ),
    "playback_file": ("", "librealsense recording played by the D435 driver (source live)"),
    "bag": ("", "rosbag2 folder (or .db3/.mcap file) played by bag_player (source bag)"),
    "log_level": ("info", "debug, info, warn or error"),
    "detector": ("true", "false = no person detector (and no tracker): fusion only"),
    "detector_checkpoint": ("", "detector checkpoint (.pt); empty = the shipped model"),
    "verifier": (
        "", "detector's box verifier (.npz); empty = the shipped one, none = off (every box "
        "above the score threshold is published)"
    ),
    "tracker": ("true", "false = no person tracker on the detector's output"),
    "reid_checkpoint": (
        "", "tracker's depth re-ID embedder (.pt); empty = the shipped one, none = no appearance"
    ),
    "rviz": ("false", "true = also start rviz2 with the package's launch/iphd.rviz"),
    **{
        argument: (
            "", f"topic to use instead of {topic} (e.g. another driver's); empty = {topic}"
            + (", or the camera_info beside the image topic given" if "info" in argument else "")
        )
        for argument, topic in TOPIC_ARGUMENTS.items()
    },
}
TRUE = ("true", "1", "yes")
FALSE = ("false", "0", "no")


def _flag(value: dict, name: str) -> bool:
    """A true/false launch argument; anything else (``detector:=ture``) stops the launch."""
    word = value[name].strip().lower()
    if word not in TRUE + FALSE:
        raise ValueError(f"launch argument {name}:={value[name]!r} must be true or false")
    return word in TRUE


#: Arguments launch checks before any node starts (a bad log level fails in every node).
CHOICES = {"log_level": {"choices": list(LOG_LEVELS)}}


def _nodes(context, *_args, **_kwargs):
    value = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    share = Path(get_package_share_directory(PACKAGE))
    params_file = value["params_file"] or str(share / "launch" / "iphd_params.yaml")
    if value["source"] == "sim":  # the simulator's demo bag, generated on first use
        from iphd.sim.demo import ensure_demo_bag

        ensure_demo_bag()
    check_namespace(value["namespace"])
    params = load_params_file(params_file)
    sim_time = value["use_sim_time"].strip().lower()
    use_sim_time = (_flag(value, "use_sim_time") if sim_time
                    else default_sim_time(value["source"], params))
    # A bag is registered with the calibration it carries, unless one is given: as an
    # argument, or to fusion in the parameters file.
    calibration_file = graph_calibration_file(
        value["source"], value["bag"], value["calibration_file"], params, value["namespace"]
    )
    specs = build_graph(
        value["source"],
        calibration_file=calibration_file,
        playback_file=value["playback_file"],
        bag=value["bag"],
        detector=_flag(value, "detector"),
        detector_checkpoint=value["detector_checkpoint"],
        verifier=value["verifier"],
        tracker=_flag(value, "tracker"),
        reid_checkpoint=value["reid_checkpoint"],
        topics={topic: value[argument] for argument, topic in TOPIC_ARGUMENTS.items()},
    )
    # A bag player holds its first message until fusion, detector and tracker subscribe (they
    # load models first), as iphd-run's does: a one-shot bag loses none of its start.
    # A tracker without re-ID (reid_checkpoint none, given or in the parameters file)
    # subscribes no depth, and the player must not wait for it to.
    specs = tracker_inputs(specs, params, value["namespace"])
    specs = hold_player(specs, [topic for spec in specs for topic in spec.inputs])
    # Nor does it play the recorded rig transforms that fusion publishes anew (from the
    # calibration in use, which may not be the recording's).
    specs = exclude_rig_transforms(specs, params, value["namespace"])
    # RViz shows the depth image: under the same name as the nodes use.
    sensor_remappings = sorted({pair for spec in specs for pair in spec.remappings})
    nodes = [
        Node(
            package=PACKAGE,
            executable=spec.executable,
            name=spec.name,
            namespace=value["namespace"],
            parameters=[params_file, dict(spec.parameters), {"use_sim_time": use_sim_time}],
            remappings=list(spec.remappings),
            # The node's own logger: rcl's and the middleware's stay at their default.
            arguments=[
                "--ros-args", "--log-level",
                log_level_argument(value["namespace"], spec.name, value["log_level"]),
            ],
            output="screen",
        )
        for spec in specs
    ]
    if _flag(value, "rviz"):
        # Fixed frame: the depth frame of the calibration in use, which the config's default
        # (the nominal rig's) is not for every rig.
        fixed_frame = rviz_fixed_frame(calibration_file)
        nodes.append(
            Node(
                package="rviz2",
                executable="rviz2",
                name="rviz2",
                namespace=value["namespace"],
                arguments=["-d", str(share / "launch" / "iphd.rviz")]
                + (["-f", fixed_frame] if fixed_frame else []),
                parameters=[{"use_sim_time": use_sim_time}],
                remappings=sensor_remappings,
                output="screen",
            )
        )
    return nodes


def generate_launch_description():
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                name, default_value=default, description=text, **CHOICES.get(name, {})
            )
            for name, (default, text) in ARGUMENTS.items()
        ]
        + [OpaqueFunction(function=_nodes)]
    )
