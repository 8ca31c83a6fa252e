"""Runs the iphd graph without ros2 launch: detect.launch.py's nodes, in one process or many."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import rclpy
from iphd_msgs.msg import PersonDetectionArray, PersonTrackArray
from rclpy.context import Context
from rclpy.logging import LoggingSeverity
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image

from iphd.data.rosbag import GROUND_TRUTH, BagReader
from iphd.errors import CheckpointError, ConfigError, DatasetError, IphdError
from iphd.eval.bag_eval import (
    detection_positions_from_msg,
    detection_rows_from_msg,
    track_tuples_from_msg,
)
from iphd.eval.live import LiveRecorder
from iphd.fusion import depth_to_mm
from iphd.graph import (
    SENSOR_TOPICS,
    TOPIC_ARGUMENTS,
    NodeSpec,
    add_topic_arguments,
    build_graph,
    check_namespace,
    default_sim_time,
    exclude_rig_transforms,
    graph_calibration_file,
    hold_player,
    load_params_file,
    topics_from_args,
    tracker_inputs,
    with_overrides,
)
from iphd.ros import qos
from iphd.ros.common import CallbackGuard, make_executor, package_file
from iphd.ros.conversions import image_to_array, stamp_to_ns
from iphd.ros.processes import LOG_LEVELS, NodeProcess, make_nodes, relative_topic
from iphd.sync import unpaired_reason
from iphd.viz import fusion_panel

#: Sensor topics the runner's monitor subscribes (for the snapshot picture).
MONITOR_INPUTS = ("depth/image_raw", "thermal/image_raw")
#: The snapshot picture shows this registered pair (the first ones may precede a steady state).
SNAPSHOT_AFTER = 10
# After the bag player's last message, the run goes on this long so fusion handles the tail.
DRAIN_S = 1.0
#: How often the run looks at the detector's and tracker's stats for a model that did not load.
MODEL_CHECK_PERIOD_S = 0.5


@dataclass
class RunResult:
    """What a run of the graph did."""

    duration_s: float
    nodes: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    detector_stats: dict[str, Any] = field(default_factory=dict)
    tracker_stats: dict[str, Any] = field(default_factory=dict)
    player_stats: dict[str, Any] = field(default_factory=dict)
    snapshot: Path | None = None
    recording: LiveRecorder | None = None
    bag: str = ""
    use_sim_time: bool = False
    processes: bool = False
    #: Class of the executor that spun the nodes (the same in every process of a run).
    executor: str = ""
    #: Node processes that ended while the graph ran, by name: their exit status (negative:
    #: killed by that signal). The run stops when one does.
    ended: dict[str, int] = field(default_factory=dict)
    #: The run was stopped by Ctrl-C or SIGTERM before its duration.
    interrupted: bool = False
    #: Why the run stopped early because a node's model did not load ('' when it did not).
    model_failure: str = ""


class _Monitor(Node):
    """Takes the run summary's picture and, with ``record``, keeps the results.

    With ``snapshot`` it subscribes to the depth, thermal and registered images until it has
    written the picture of the ``SNAPSHOT_AFTER``-th registered pair (or, in a shorter run, the
    last one at the end), then lets them go: the images are large and the nodes need the CPU.
    With ``record`` it subscribes to ``detections`` and ``tracks`` with reliable QoS and hands
    each message, as plain data with its receipt time on this node's clock (sim time under
    ``use_sim_time``) and on ``time.monotonic``, to a :class:`LiveRecorder`. ``delays`` False
    means the node clock is not the clock of the stamps (a bag on system time): no delays.
    """

    def __init__(
        self,
        record: bool = False,
        delays: bool = True,
        snapshot: Path | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__("iphd_run_monitor", **kwargs)
        self.recording = LiveRecorder() if record else None
        self._delays = delays
        if record:
            self.create_subscription(
                PersonDetectionArray, "detections", self._on_detections, qos.RECORD_SUB
            )
            self.create_subscription(PersonTrackArray, "tracks", self._on_tracks, qos.RECORD_SUB)
        self.depth: dict[int, Image] = {}
        self.thermal: Image | None = None
        self.registered: Image | None = None
        self.registered_count = 0
        self.snapshot_path = snapshot
        self.snapshot_written: Path | None = None
        self._images: list[Any] = []
        if snapshot is not None:
            depth, thermal = MONITOR_INPUTS
            self._images = [
                self.create_subscription(Image, depth, self._on_depth, qos.SENSOR_SUB),
                self.create_subscription(Image, thermal, self._on_thermal, qos.SENSOR_SUB),
                self.create_subscription(
                    Image, "thermal/registered", self._on_registered, qos.SENSOR_SUB
                ),
            ]

    def release_images(self) -> None:
        """Once the picture is written, stop receiving images (call outside callbacks)."""
        if self.snapshot_written is not None and self._images:
            for subscription in self._images:
                self.destroy_subscription(subscription)
            self._images = []
            self.depth.clear()

    def _now(self) -> tuple[int | None, float]:
        return (self.get_clock().now().nanoseconds if self._delays else None), time.monotonic()

    def _on_detections(self, msg: PersonDetectionArray) -> None:
        assert self.recording is not None
        now_ns, wall_s = self._now()
        self.recording.on_detections(
            stamp_to_ns(msg.header.stamp), detection_rows_from_msg(msg), int(msg.image_height),
            now_ns, wall_s, detection_positions_from_msg(msg),
        )

    def _on_tracks(self, msg: PersonTrackArray) -> None:
        assert self.recording is not None
        now_ns, wall_s = self._now()
        self.recording.on_tracks(
            stamp_to_ns(msg.header.stamp), track_tuples_from_msg(msg), now_ns, wall_s
        )

    def _on_depth(self, msg: Image) -> None:
        self.depth[stamp_to_ns(msg.header.stamp)] = msg
        while len(self.depth) > 60:
            self.depth.pop(next(iter(self.depth)))

    def _on_thermal(self, msg: Image) -> None:
        self.thermal = msg

    def _on_registered(self, msg: Image) -> None:
        self.registered = msg
        self.registered_count += 1
        if self.registered_count >= SNAPSHOT_AFTER and self.snapshot_path is not None:
            self.snapshot_written = self.snapshot_written or self.snapshot(self.snapshot_path)

    def snapshot(self, path: Path) -> Path | None:
        """Write depth | thermal | registered of the last pair to ``path``; None if no pair yet."""
        if self.registered is None or self.thermal is None:
            return None
        depth = self.depth.get(stamp_to_ns(self.registered.header.stamp))
        if depth is None:
            return None
        try:  # depth_to_mm: 32FC1 metres too (a cast would make them 0-10 "millimetres")
            depth_mm = depth_to_mm(image_to_array(depth), depth.encoding)
        except IphdError:  # fusion refused this frame as well, and said why
            return None
        panel = fusion_panel(
            depth_mm, image_to_array(self.thermal), image_to_array(self.registered)
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), panel)
        return path


def run_graph(
    source: str = "sim",
    duration_s: float = 10.0,
    *,
    params_file: Path | str | None = None,
    namespace: str = "",
    calibration_file: str = "",
    playback_file: str = "",
    bag: str = "",
    use_sim_time: bool | None = None,
    log_level: str = "info",
    snapshot: Path | None = None,
    progress: bool = False,
    overrides: dict[str, dict[str, Any]] | None = None,
    detector: bool = True,
    detector_checkpoint: str = "",
    verifier: str = "",
    tracker: bool = True,
    reid_checkpoint: str = "",
    record: bool = False,
    sample: Callable[[dict[str, Any], float], None] | None = None,
    sample_period_s: float = 10.0,
    processes: bool = False,
    topics: Mapping[str, str] | None = None,
) -> RunResult:
    """Run the graph for ``duration_s`` seconds in this process and return what it did.

    ``rclpy`` is initialised and shut down here, in a context of its own. ``overrides`` maps a
    node name to parameters that win over the parameters file. ``use_sim_time`` None means
    the parameters file's, else the source's (``iphd.graph.default_sim_time``: on for a
    bag). A bag run's ``duration_s`` counts from the player's first message (it holds the bag
    until the graph's nodes subscribe), and the run ends ``DRAIN_S`` after the player published
    the bag's last message, if that comes first.
    ``record`` keeps the published ``detections`` and ``tracks`` in ``RunResult.recording``
    (delays measured on the node clock, only under sim time for a bag: a bag's stamps are
    its recorded times). ``sample(nodes, elapsed_s)`` is called from the spinning thread every
    ``sample_period_s`` (so it may read the nodes' ``stats()`` safely) and once at the end.

    With ``processes`` every node runs in a process of its own, as ``ros2 launch`` runs them
    (no shared GIL: the detector's inference does not hold up fusion, the player or the
    tracker); ``RunResult.nodes`` then holds :class:`NodeProcess` handles, whose ``stats()`` is
    the node's last report (every ``REPORT_PERIOD_S``, and once more at the stop). Consumers
    start first and the sensor source last, so the first frames find their subscribers.
    ``topics`` renames sensor topics (``iphd.graph.build_graph``), for the monitor as well.
    """
    if source == "sim":
        from iphd.sim.demo import ensure_demo_bag

        ensure_demo_bag(progress=progress)
    params = with_overrides(
        load_params_file(params_file or package_file("launch/iphd_params.yaml")),
        overrides or {},
        namespace,
    )
    specs = build_graph(
        source,
        calibration_file=graph_calibration_file(source, bag, calibration_file, params, namespace),
        playback_file=playback_file,
        bag=bag,
        detector=detector,
        detector_checkpoint=detector_checkpoint,
        verifier=verifier,
        tracker=tracker,
        reid_checkpoint=reid_checkpoint,
        topics=topics,
    )
    remapped = sorted({pair for spec in specs for pair in spec.remappings})
    if use_sim_time is None:
        use_sim_time = default_sim_time(source, params)
    specs = tuple(exclude_rig_transforms(specs, params, namespace))
    context = Context()
    rclpy.init(context=context)
    try:
        executor = make_executor(context)
    except ConfigError:
        rclpy.try_shutdown(context=context)
        raise
    played = next((str(s.parameters.get("bag", "")) for s in specs if s.name == "bag_player"), "")
    result = RunResult(
        duration_s=duration_s, bag=played, use_sim_time=use_sim_time, processes=processes,
        executor=type(executor).__name__,
    )
    started: list[Node] = []
    children: list[NodeProcess] = []
    try:
        monitor = _Monitor(
            record=record,
            delays=use_sim_time or not played,
            snapshot=snapshot,
            namespace=namespace,
            context=context,
            parameter_overrides=[Parameter("use_sim_time", value=use_sim_time)],
            cli_args=(
                ["--ros-args"] + [a for f, t in remapped for a in ("-r", f"{f}:={t}")]
                if remapped else None
            ),
        )
        started.append(monitor)
        nodes: dict[str, Any]
        if processes:
            nodes = start_processes(
                specs, params, namespace, use_sim_time, log_level, children,
                tuple(relative_topic(s.topic_name, namespace) for s in monitor.subscriptions),
            )
        else:
            # As the launch file: the player waits for the graph's inputs, which is also
            # what moves a bag's absolute topic names into the namespace.
            held = tracker_inputs(specs, params, namespace)
            held = hold_player(held, [t for spec in held for t in spec.inputs] + [
                relative_topic(s.topic_name, namespace) for s in monitor.subscriptions])
            nodes = make_nodes(tuple(held), params, namespace, use_sim_time, context)
            started.extend(nodes.values())
        for node in started:
            node.get_logger().set_level(LOG_LEVELS[log_level])
            executor.add_node(node)
        # Spinning in this thread keeps Ctrl-C and shutdown simple; rclpy's multi-threaded
        # executor was measured to starve the fusion callbacks (GIL), so it is not used.
        start = time.monotonic()
        next_report = start + 2.0
        next_sample = start + sample_period_s
        next_model_check = start
        player = nodes.get("bag_player")
        stop_at = start + duration_s
        guard = CallbackGuard(monitor.get_logger().error)
        _StopRequest.requested = False
        try:
            _StopRequest.spinning = True
            while time.monotonic() < stop_at:
                if _StopRequest.requested:
                    raise KeyboardInterrupt
                guard.spin_once(executor, 0.05)
                monitor.release_images()
                for child in children:
                    child.poll()
                if _ended(children, result, monitor):
                    break
                if time.monotonic() >= next_model_check:
                    next_model_check += MODEL_CHECK_PERIOD_S
                    result.model_failure = model_failure(nodes)
                    if result.model_failure:
                        break
                if player is not None and not getattr(player, "started", True):
                    # The duration counts from the bag's first message: the player holds it
                    # while fusion, detector and tracker load their models and subscribe.
                    stop_at = max(stop_at, time.monotonic() + duration_s)
                if player is not None and getattr(player, "finished", False):
                    stop_at = min(stop_at, time.monotonic() + DRAIN_S)
                    player = None
                if progress and time.monotonic() >= next_report:
                    next_report += 2.0
                    _report(nodes, time.monotonic() - start)
                if sample is not None and time.monotonic() >= next_sample:
                    next_sample += sample_period_s
                    sample(nodes, time.monotonic() - start)
        except KeyboardInterrupt:
            result.interrupted = True  # Ctrl-C ends the run; the summary still comes
        finally:
            _StopRequest.spinning = False
        result.duration_s = time.monotonic() - start
        # The children's last reports: what they did up to the stop.
        for child in children:
            child.stop()
        if sample is not None:
            sample(nodes, result.duration_s)
        result.recording = monitor.recording
        result.nodes = nodes
        for name, attr in (
            ("fusion", "stats"),
            ("detector", "detector_stats"),
            ("tracker", "tracker_stats"),
            ("bag_player", "player_stats"),
        ):
            stats = getattr(nodes.get(name), "stats", None)
            if callable(stats):
                setattr(result, attr, stats())
        if snapshot is not None:
            result.snapshot = monitor.snapshot_written or monitor.snapshot(snapshot)
    finally:
        for child in children:
            child.stop()
        for node in started:
            close = getattr(node, "close", None)
            if callable(close):
                close()
            # Logger levels are per name and process-wide: leave them as they were.
            node.get_logger().set_level(LoggingSeverity.UNSET)
            executor.remove_node(node)
            node.destroy_node()
        executor.shutdown()
        rclpy.try_shutdown(context=context)
    return result


class _StopRequest:
    """A stop asked for by a signal while the run's loop spins.

    Raised from the signal handler, ``KeyboardInterrupt`` may surface inside a Python callback
    that rclpy's C++ called (an event handler's exit), where it cannot pass through the C++
    frames and the process aborts ("terminate called after throwing ...") without a summary.
    While the loop spins, the handler only sets ``requested``; the loop raises it itself.
    """

    spinning = False
    requested = False


def model_failure(nodes: Mapping[str, Any]) -> str:
    """Why the detector or the tracker cannot do its work in this run ('' when both can).

    A node whose model or parameters did not load keeps running and says so on
    ``/diagnostics`` (under ``ros2 launch`` it waits to be fixed); a run from the command line
    stops at once instead of playing its whole duration for nothing. A node in a process of
    its own is read from its last report.
    """
    detector = nodes.get("detector")
    if detector is not None:
        why = detector.stats().get("not_started")
        if why:
            return f"the detector cannot publish: {why}"
    tracker = nodes.get("tracker")
    if tracker is not None:
        stats = tracker.stats()
        if stats.get("not_started"):
            return f"the tracker cannot publish: {stats['not_started']}"
        if stats.get("not_loaded_depth"):
            # A model asked for that did not load: the tracker would go on without appearance.
            return f"the tracker would run by position only: {stats['not_loaded_depth']}"
    return ""


def _interrupt(signum: int, frame: Any) -> None:
    if _StopRequest.spinning:
        _StopRequest.requested = True
        return
    raise KeyboardInterrupt


def exit_description(status: int) -> str:
    """A child's exit status in words: ``exit status 1``, ``killed by SIGKILL``."""
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exit status {status}"


def _ended(children: list[NodeProcess], result: RunResult, monitor: Node) -> bool:
    """Note the node processes that ended since the last look; True if any did."""
    ended = False
    for child in children:
        status = child.returncode
        if status is not None and child.name not in result.ended:
            result.ended[child.name] = status
            monitor.get_logger().error(
                f"the process of node '{child.name}' ended during the run "
                f"({exit_description(status)}): the run stops; its log above says why"
            )
            ended = True
    return ended


def start_processes(
    specs: tuple[NodeSpec, ...],
    params: dict[str, dict[str, Any]],
    namespace: str,
    use_sim_time: bool,
    log_level: str,
    children: list[NodeProcess],
    monitored: tuple[str, ...] = (),
) -> dict[str, NodeProcess]:
    """Start one process per node (appended to ``children`` as they start); sources last.

    The consumers (fusion, detector, tracker) start together and are waited for (model
    loading), then the sensor source (drivers, simulator or bag player); a bag player holds
    its first message until every consumer (and the runner's monitor, which subscribes the
    ``monitored`` topics) subscribes to its sensor topics.

    Raises:
        NodeProcessError: a node failed to start; the ones already started are in ``children``
            for the caller to stop.
    """
    sources = [s for s in specs if set(SENSOR_TOPICS) & set(s.publishes)]
    consumers = [s for s in specs if s not in sources]
    batch = [NodeProcess(s, params, namespace, use_sim_time, log_level) for s in consumers]
    children.extend(batch)
    for child in batch:
        child.wait_ready()
    # What the started nodes (and this process's monitor) really subscribe, which depends on
    # their parameters (no re-ID model: no depth for the tracker): the player waits for them.
    subscribed = [t for child in batch for t in child.subscribes] + list(monitored)
    batch = [
        NodeProcess(s, params, namespace, use_sim_time, log_level)
        for s in hold_player(sources, subscribed)
    ]
    children.extend(batch)
    for child in batch:
        child.wait_ready()
    return {child.name: child for child in sorted(children, key=lambda c: _order(specs, c.name))}


def _order(specs: tuple[NodeSpec, ...], name: str) -> int:
    return next(i for i, s in enumerate(specs) if s.name == name)


def _report(nodes: dict[str, Any], elapsed_s: float) -> None:
    print(status_line(nodes, elapsed_s), flush=True)


def status_line(nodes: dict[str, Any], elapsed_s: float) -> str:
    """The runner's periodic one-line status: rates, pairs, people in view, tracks, latencies.

    A node that has not reported yet (a node process still starting) is left out.
    """
    parts = [f"[{elapsed_s:5.1f} s]"]
    stats = {
        name: nodes[name].stats()
        for name in ("fusion", "detector", "tracker")
        if callable(getattr(nodes.get(name), "stats", None))
    }
    s = stats.get("fusion")
    if s:
        parts += [
            f"depth {s['depth_rate_hz']:4.1f} Hz",
            f"thermal {s['thermal_rate_hz']:4.1f} Hz",
            f"pairs {s.get('pairs', 0):4d}",
            f"registered {s['published']:4d}",
            f"fusion {s.get('process_ms_mean', 0.0):5.1f} ms",
        ]
    d = stats.get("detector")
    if d:
        parts += [
            f"people {d.get('detections_last', 0):2d}",
            f"detector {d.get('inference_ms_mean', 0.0):6.1f} ms",
        ]
    t = stats.get("tracker")
    if t:
        parts += [
            f"confirmed tracks {t.get('tracks_confirmed', 0):2d}",
            f"tracker {_tracker_latency_ms(t):5.1f} ms",
        ]
    return " | ".join(parts)


def _tracker_latency_ms(stats: dict[str, Any]) -> float:
    """Median embedding + tracking time of one detections frame, ms."""
    return float(stats.get("embedding_ms_p50", 0.0)) + float(stats.get("tracking_ms_p50", 0.0))


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line arguments of ``iphd-run`` (the launch file's arguments, same names)."""
    p = argparse.ArgumentParser(
        prog="iphd-run",
        description="Run the iphd graph without ros2 launch: the launch file's nodes, one "
        "process each (or all in one).",
    )
    p.add_argument(
        "--source",
        default=None,
        help="live (D435 + Lepton), sim (the simulator's demo bag, generated once), sim_live "
        "(the simulator in real time), bag (a rosbag2, see --bag) or external (drivers started "
        "elsewhere, see --depth-topic ...); default: bag when --bag is given, otherwise sim",
    )
    p.add_argument("--bag", default="", help="rosbag2 folder or .db3/.mcap file (source bag)")
    p.add_argument(
        "--duration",
        type=float,
        default=0.0,
        help="seconds to run (a bag's from its first message played); 0 = until Ctrl-C (a "
        "bag run also ends with the bag)",
    )
    p.add_argument(
        "--params-file", default="", help="ROS 2 parameters YAML (default: the package's)"
    )
    p.add_argument("--namespace", default="", help="namespace of every node and topic")
    p.add_argument("--calibration", default="",
                   help="rig.yaml (default: the --params-file's, else the bag's own with --bag "
                   "or the simulator's demo, else the package's)")
    p.add_argument("--playback-file", default="", help="librealsense recording (source live)")
    p.add_argument(
        "--use-sim-time",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="nodes follow /clock (default: on for sources bag and sim, off otherwise)",
    )
    p.add_argument(
        "--detector",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the person detector on fusion's output (default: on; --no-detector = fusion "
        "only, which also leaves the tracker out)",
    )
    p.add_argument(
        "--detector-checkpoint", default="",
        help="detector .pt or .onnx (default: the shipped model)",
    )
    p.add_argument(
        "--verifier", default="",
        help="the detector's box verifier (.npz); default: the shipped one; none = off",
    )
    p.add_argument(
        "--tracker",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the person tracker on the detector's output (default: on)",
    )
    p.add_argument(
        "--reid-checkpoint", default="",
        help="tracker's depth re-ID embedder .pt (default: the shipped one; none = no appearance)",
    )
    p.add_argument(
        "--eval",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="with source sim or bag and a bag with ground_truth/people: score the detections "
        "and tracks the graph published (first pass of the bag) and write the report to "
        "OUT/eval (default: on; needs the detector and the tracker)",
    )
    p.add_argument(
        "--processes",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run every node in a process of its own, as ros2 launch does (default: on); "
        "--no-processes runs them all in this process (one GIL: slower with the detector)",
    )
    add_topic_arguments(p, TOPIC_ARGUMENTS, "the drivers' (or the bag's)")
    p.add_argument("--log-level", default="info", choices=sorted(LOG_LEVELS))
    p.add_argument(
        "--out", default="out/demo", help="folder for the run's snapshot picture and eval/ report"
    )
    return p


def _check_files(args: argparse.Namespace) -> None:
    """Refuse a checkpoint, verifier or calibration named on the command line that is not there.

    In the graph a node that cannot load its model keeps running and says so on
    ``/diagnostics``; a run started from the command line had better stop at once.

    Raises:
        IphdError: a named file is missing (or a folder), or the calibration does not load.
    """
    from iphd.checkpoints import missing_checkpoint

    for what, value in (("detector", args.detector_checkpoint),
                        ("re-ID embedder", args.reid_checkpoint)):
        if value and value.lower() != "none" and not Path(value).is_file():
            raise missing_checkpoint(what, value)
    if args.verifier:
        from iphd.detection.verifier import load_box_verifier

        # A small file: read whole here, with the detector node's own checks and messages.
        try:
            load_box_verifier(args.verifier)
        except CheckpointError as exc:
            raise CheckpointError(f"{exc} (here: --verifier none)") from exc
    if args.calibration:
        from iphd.calibration import load_calibration

        load_calibration(args.calibration)


def main(argv: list[str] | None = None) -> int:
    """Run the graph, print progress and a summary; return the exit status."""
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if args.duration < 0:
        parser.error(f"--duration must be >= 0 seconds (0 = until Ctrl-C), got {args.duration:g}")
    source = args.source or ("bag" if args.bag else "sim")
    try:
        check_namespace(args.namespace, "--namespace")
    except ConfigError as exc:
        parser.error(str(exc))
    try:  # files named on the command line: before any node starts and loads its models
        _check_files(args)
    except IphdError as exc:
        print(f"iphd-run: error: {exc}", file=sys.stderr)
        return 2
    if source == "bag" and args.bag and not Path(args.bag).exists():
        # Before any node starts (loading the models first only delays this error), with the
        # reader's own message; a bag that exists but does not read fails in the player's
        # process, which stops the run with its error.
        try:
            BagReader(args.bag).close()
        except DatasetError as exc:
            print(f"iphd-run: error: {exc}", file=sys.stderr)
            return 2
    duration = args.duration if args.duration > 0 else float("inf")
    until = "the end of the bag or Ctrl-C" if source == "bag" else "Ctrl-C"
    length = f"{args.duration:g} s" if args.duration > 0 else f"until {until}"
    layout = "one process per node" if args.processes else "all nodes in one process"
    print(f"iphd-run: source={source}, duration {length}, {layout}", flush=True)
    evaluate = args.eval and source in ("sim", "bag") and args.detector and args.tracker
    # A service manager stops with SIGTERM: end the run as Ctrl-C does, with its summary.
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        result = run_graph(
            source,
            duration,
            params_file=args.params_file or None,
            namespace=args.namespace,
            calibration_file=args.calibration,
            playback_file=args.playback_file,
            bag=args.bag,
            use_sim_time=args.use_sim_time,
            log_level=args.log_level,
            snapshot=Path(args.out) / "fusion.png",
            progress=True,
            detector=args.detector,
            detector_checkpoint=args.detector_checkpoint,
            verifier=args.verifier,
            tracker=args.tracker,
            reid_checkpoint=args.reid_checkpoint,
            record=evaluate,
            processes=args.processes,
            topics=topics_from_args(args, TOPIC_ARGUMENTS),
        )
    except (IphdError, FileNotFoundError) as exc:
        print(f"iphd-run: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # While the nodes started, or a second Ctrl-C while the run was ending.
        print("iphd-run: stopped by Ctrl-C or SIGTERM before the run's summary",
              file=sys.stderr)
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    s = result.stats
    print("\nsummary")
    print(f"  ran {result.duration_s:.1f} s, source {source}")
    player = result.player_stats
    if player:
        print(
            f"  bag {player['bag']}: played {player['position_s']:.1f} of "
            f"{player['duration_s']:.1f} s, {player['published']} messages published"
            + (", to the end" if player["finished"] else "")
        )
        problems = {k: v for k, v in player.items() if k.startswith(("skipped_", "corrupt_")) and v}
        if problems:
            print(f"  bag messages not published: {problems}")
        left_out = [
            f"{what} {player[key]}" for key, what in (
                ("not_played", "topics"), ("transforms_not_played", "transforms to")
            ) if player.get(key)
        ]
        if left_out:
            print(f"  not played, as the graph makes them anew: {'; '.join(left_out)}")
    if s:
        print(f"  depth frames {s['depth_frames']}, thermal frames {s['thermal_frames']}")
        print(
            f"  pairs {s.get('pairs', 0)}, registered images published {s['published']}, "
            f"thermal frames without a pair {100 * s.get('thermal_drop_fraction', 0.0):.2f} %"
        )
        if "process_ms_mean" in s:
            print(
                f"  fusion processing {s['process_ms_mean']:.2f} ms mean, "
                f"{s['process_ms_max']:.2f} ms max"
            )
        print(f"  rig calibration {s.get('calibration', '?')}")
        if s.get("tf_conflicts"):
            print(f"  other static transforms of the rig's frames: {s['tf_conflicts']}")
        errors = {k: v for k, v in s.items() if k.startswith("errors_")}
        if errors:
            print(f"  input errors: {errors}")
    d = result.detector_stats
    if d:
        print(
            f"  detector ({d['model']}, {d['device']}, {d.get('backend', '?')}): {d['pairs']} "
            f"pairs, {d['published']} detection arrays published with "
            f"{d.get('detections_published', 0)} detections"
            + (f" ({d['detections_rejected_verifier']} more left out by the box verifier)"
               if d.get("detections_rejected_verifier") else "")
            + (f", {d['inference_ms_mean']:.1f} ms inference mean" if "inference_ms_mean" in d
               else "")
        )
    t = result.tracker_stats
    if t:
        print(
            f"  tracker (re-ID {t['reid_model']}, {t['device']}, {t.get('backend', '?')}): "
            f"{t['published']} track arrays "
            f"for {t.get('detections_received', 0)} detection arrays received, published with "
            f"{t.get('tracks_published', 0)} tracks, at most "
            f"{t.get('tracks_confirmed_max', 0)} confirmed at once, "
            f"{t.get('tracker_created', 0)} track ids created, "
            f"{t.get('tracker_reidentified', 0)} re-identified, "
            f"{t.get('tracker_recalled', 0)} given a remembered id, "
            f"{_tracker_latency_ms(t):.1f} ms per frame (median)"
        )
    if result.snapshot:
        print(f"  wrote {result.snapshot}")
    for name, code in result.ended.items():
        print(f"  node '{name}': its process ended during the run ({exit_description(code)})")
    status = exit_status(result)
    if evaluate and status == 0:
        status = _evaluate(result, source, Path(args.out) / "eval")
    elif args.eval and source in ("sim", "bag") and not (args.detector and args.tracker):
        left = "--no-detector" if not args.detector else "--no-tracker"
        print(f"  evaluation skipped: it scores the tracks, which {left} leaves out")
    return status


def latency_clock(result: RunResult) -> str:
    """Which clock the live delays were measured on, in words (for the report)."""
    if not result.use_sim_time:
        if result.bag:
            return (
                "none: the nodes ran on the system clock while the bag's stamps are its recorded "
                "times, so no delay was measured (run with --use-sim-time)"
            )
        return "the monitor node's clock: system time, the clock the drivers stamp with"
    player = result.nodes.get("bag_player")
    period_s = player.get_parameter("clock_period_s").value if player is not None else "?"
    rate = player.get_parameter("rate").value if player is not None else "?"
    return (
        "the monitor node's ROS clock with use_sim_time, i.e. sim time from /clock, which the "
        f"bag player publishes every {period_s} s as the bag position advancing with the steady "
        f"clock at rate {rate} (a sim-time delay is the real delay times the rate); the /clock "
        "period bounds the resolution, and a receipt waits for the executor the monitor shares "
        "with the other nodes"
    )


def _evaluate(result: RunResult, source: str, out_dir: Path) -> int:
    """Score the run's recording against the bag's ground truth, write the report, print it."""
    from iphd.eval.bag_eval import (
        evaluate_live,
        has_ground_truth,
        short_table,
        write_bag_report,
    )

    if result.recording is None or not result.bag:
        return 0
    if not has_ground_truth(result.bag):
        print(f"  evaluation skipped: {result.bag} has no ground_truth/people topic")
        return 0
    recording = result.recording
    try:
        evaluation = evaluate_live(result.bag, recording.frames)
    except IphdError as exc:
        print(f"iphd-run: evaluation failed: {exc}", file=sys.stderr)
        return 1
    d, t = result.detector_stats, result.tracker_stats
    meta = {
        "bag": result.bag,
        "source": source,
        "run_s": round(result.duration_s, 2),
        "detector": d.get("model", ""),
        "detector_device": d.get("device", ""),
        "reid": t.get("reid_model", ""),
        "use_sim_time": result.use_sim_time,
        "latency_clock": latency_clock(result),
        "bag_loops": result.player_stats.get("loops", 0),
        "scored": "the first pass of the bag only (messages after a loop are counted in "
        "skipped, not scored)",
    }
    files = write_bag_report(evaluation, out_dir, meta)
    metrics = json.loads(files.metrics_json.read_text(encoding="utf-8"))
    print(
        f"\nevaluation (live graph against {GROUND_TRUTH}, {metrics['frames_scored']} frames "
        "scored, first pass of the bag)"
    )
    for line in short_table(metrics):
        print(f"  {line}")
    print(f"  latency: tracks receipt minus capture stamp, {_short_clock(result)}")
    print(
        f"  wrote {files.report_md}, {files.metrics_json.name}, {files.pr_png.name}, "
        f"{files.timeline_png.name}, {files.latency_png.name}"
    )
    return 0


def _short_clock(result: RunResult) -> str:
    if not result.use_sim_time:
        return "not measured (system clock, bag stamps)" if result.bag else "system clock"
    return "sim time (/clock from the bag player)"


def exit_status(result: RunResult) -> int:
    """Return the run's exit status and say why on stderr when it is not 0.

    1 when a node's process ended during the run, when the detector or the tracker did not
    start or the tracker's depth re-ID embedder did not load (the run stops as soon as it
    sees that: ``model_failure``), when no registered thermal image was published, or when the
    detector ran but published no detections array; 130 when Ctrl-C or SIGTERM stopped the
    run before any registered image; 0 otherwise.
    """
    if result.model_failure:
        print(f"iphd-run: stopped after {result.duration_s:.1f} s: {result.model_failure}",
              file=sys.stderr)
        return 1
    if result.ended:
        names = ", ".join(f"'{name}' ({exit_description(code)})"
                          for name, code in result.ended.items())
        print(f"iphd-run: the process of node {names} ended during the run, which stopped "
              "it: the node's log above says why (run with --no-processes to see a Python "
              "error in this terminal)", file=sys.stderr)
        return 1
    if result.interrupted and result.stats.get("published", 0) == 0:
        print(f"iphd-run: stopped after {result.duration_s:.1f} s, before fusion published "
              "a registered image", file=sys.stderr)
        return 130
    if result.stats.get("published", 0) == 0:
        stats = result.stats
        why = ""
        if stats and not (stats.get("depth_frames") and stats.get("thermal_frames")):
            missing = " and ".join(
                what for what, key in (("depth", "depth_frames"), ("thermal", "thermal_frames"))
                if not stats.get(key)
            )
            # Our own drivers ran: the camera, not a topic name, is what to check.
            drivers = [name for key, name in (("depth_frames", "d435"),
                                              ("thermal_frames", "lepton"))
                       if not stats.get(key) and name in result.nodes]
            incompatible = stats.get("incompatible_qos")
            if incompatible:
                hint = (f"the publishers of {incompatible} offer a QoS fusion's subscriptions "
                        "cannot take: a best-effort driver needs input_reliability: "
                        "best_effort (the default) in the --params-file")
            elif drivers:
                hint = (f"the {' and '.join(drivers)} driver{'s' if len(drivers) > 1 else ''} "
                        "published no frame: is the camera connected? its log and "
                        "/diagnostics say why")
            else:
                hint = ("check the topic names: a driver's own go in --depth-topic / "
                        "--thermal-topic"
                        + (f"; iphd-eval check --bag {result.bag} lists the bag's"
                           if result.bag else ""))
            why = f": no {missing} image reached fusion ({hint})"
        elif stats.get("thermal_dropped_no_depth_within_skew"):
            skew_ms = stats.get("unpaired_skew_ms")
            why = (": no thermal frame found a depth frame within the fusion's skew; "
                   + unpaired_reason(None if skew_ms is None else int(skew_ms * 1e6)))
        print(f"iphd-run: no registered thermal image was published{why}", file=sys.stderr)
        return 1
    if "detector" in result.nodes and result.detector_stats.get("published", 0) == 0:
        refused = result.detector_stats.get("not_started")
        print(
            f"iphd-run: the detector published nothing: {refused}" if refused else
            "iphd-run: the detector published no detections (see its diagnostics or log: "
            "checkpoint, device)",
            file=sys.stderr,
        )
        return 1
    if "tracker" in result.nodes and result.tracker_stats.get("not_loaded_depth"):
        # A model asked for that did not load: the run went on without appearance.
        print(f"iphd-run: the tracker ran by position only: "
              f"{result.tracker_stats['not_loaded_depth']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
