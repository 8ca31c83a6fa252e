"""Fusion node: pairs depth and thermal, registers thermal into the depth frame, fills holes."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String

from iphd.calibration import (
    RigCalibration,
    TransformConflict,
    calibration_to_yaml,
    load_calibration,
    message_transforms,
    rig_static_transforms,
    transform_conflicts,
)
from iphd.errors import ConfigError, IphdError
from iphd.fusion import FusionConfig, FusionPipeline, depth_image_units_problem, depth_to_mm
from iphd.ros import qos
from iphd.ros.common import (
    RESET_CAUSES,
    RESET_WARNING_PERIOD_S,
    STREAM_TIMEOUT_S,
    UNPAIRED_RUN,
    DiagnosticsReporter,
    DropWarnings,
    HeldForInfo,
    RateMeter,
    declare,
    no_camera_info,
    package_file,
    spin_node,
    topic_label,
)
from iphd.ros.conversions import (
    array_to_image,
    camera_info_to_intrinsics,
    header_stamp_ns,
    image_to_array,
    rig_transforms,
)
from iphd.sensors.frames import CameraIntrinsics, DepthFrame, ThermalFrame
from iphd.sync import Pair, SyncConfig, Synchronizer, unpaired_reason

DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")
# A thermal frame waits this long (stamp time, on the newest stamp of either stream) for a depth
# frame at or after it. In normal operation depth comes first and decides at once; the wait
# matters when depth images queue up behind the thermal ones in a busy node: at 100 ms a loaded
# 2-core machine lost 6 and 24 of about 180 pairs in two 25 s runs of the demo graph, at 500 ms
# none. Waiting longer costs nothing but when depth has stopped, and then there is no pair.
MAX_WAIT_MS = 500.0
THERMAL_ENCODINGS = ("16UC1", "mono16")
# Depth frames are checked for their units once in this many (about a second at 30 Hz).
DEPTH_UNITS_EVERY = 30
# The share of thermal frames without a partner that makes a warning is taken over this many
# seconds, so that frames lost once (a staggered start, a camera reconnecting) do not keep the
# node at WARN for minutes after pairing works again.
DROP_WINDOW_S = 30.0
# A Lepton sends no frame for about 1 s at each flat-field correction (every few minutes and
# after a temperature change): a thermal gap shorter than this may be one.
FFC_PAUSE_S = 1.5


def fusion_settings(max_skew_ms: float, max_wait_ms: float, scale: float, width: int,
                    height: int) -> tuple[dict[str, Any], dict[str, int]]:
    """The node's parameters as ``FusionConfig`` and ``SyncConfig`` keywords, checked by them.

    The limits are the library's; a value they refuse stops the node, naming the parameter.

    Raises:
        ConfigError: one registered size without the other, or a value the configs refuse.
    """
    if (width or height) and not (width > 0 and height > 0):
        raise ConfigError(
            f"parameters registered_width and registered_height are set together (both > 0, "
            f"or both 0 to use registered_scale), got {width} x {height}"
        )
    size: dict[str, Any] = (
        {"out_size": (int(width), int(height))} if width and height else {"out_scale": scale}
    )
    try:
        FusionConfig(**size)
    except ValueError as exc:
        raise ConfigError(f"parameter registered_scale ({scale}): {exc}") from exc
    try:
        sync = {"max_skew_ns": int(max_skew_ms * 1e6), "max_wait_ns": int(max_wait_ms * 1e6)}
        SyncConfig(**sync)
    except (ValueError, OverflowError) as exc:
        raise ConfigError(
            f"parameters max_skew_ms ({max_skew_ms}) and max_wait_ms ({max_wait_ms}): {exc}"
        ) from exc
    return size, sync


class FusionNode(Node):
    """Subscribes depth + thermal (+ camera infos), publishes ``thermal/registered``.

    The registered image has the stamp and frame of the depth image it was paired with, the
    depth image's size times ``registered_scale`` (or ``registered_width`` x
    ``registered_height``; the default 0.25 gives 212x120 for 848x480 depth, close to the
    Lepton's own 160x120 resolution), 16UC1 centi-kelvin, 0 where there is no thermal coverage
    left after zero-patch fixing. Its camera model is the depth camera's scaled by the same
    factor (``CameraIntrinsics.scaled``).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("fusion", **kwargs)
        calibration_file = declare(
            self, "calibration_file", "", "rig.yaml; empty = package default"
        )
        max_skew_ms = declare(self, "max_skew_ms", 20.0, "largest depth/thermal skew of a pair, ms")
        max_wait_ms = declare(
            self, "max_wait_ms", MAX_WAIT_MS,
            "how long thermal waits for a later depth frame, ms (stamp time)",
        )
        scale = declare(
            self, "registered_scale", 0.25, "registered size / depth size (IPHD: 1/6 of 1280x720)"
        )
        width = declare(self, "registered_width", 0, "registered width, px; 0 = use the scale")
        height = declare(self, "registered_height", 0, "registered height, px; 0 = use the scale")
        fix = declare(
            self, "fix_zero_patches", False,
            "fill registration holes (paper A's noise fixing) in thermal/registered; off by "
            "default: the shipped detector was trained on thermal with its holes (a checkpoint "
            "trained on filled thermal fills them itself: normalize.fill_zero_patches)",
        )
        publish_tf = declare(self, "publish_tf", True, "publish the rig's static TF")
        publish_calibration = declare(
            self, "publish_calibration", True,
            "publish the rig calibration (YAML, latched) on rig_calibration, so a recording "
            "keeps it",
        )
        period = declare(self, "diagnostics_period", 1.0, "diagnostics period, s")
        input_qos = qos.declare_input_qos(self)
        size, sync_ns = fusion_settings(max_skew_ms, max_wait_ms, scale, width, height)

        self._depth_info: CameraIntrinsics | None = None
        self._depth_info_rejected = ""  # why the last depth camera_info was not usable
        self._errors: dict[str, int] = {}
        self._last_error = ""
        self._process_ms: deque[float] = deque(maxlen=1000)
        self._drop_window: deque[tuple[float, int, int]] = deque()
        self._depth_stopped_s = -float("inf")  # time.monotonic() depth was last seen stopped
        # Thermal frames that came while depth was streaming, since the last pair (those of a
        # depth outage or from before the first depth frame cannot pair, and say nothing
        # about the clocks).
        self._with_depth_since_pair = 0
        self._depth_rate = RateMeter()
        self._thermal_rate = RateMeter()
        self._pair_rate = RateMeter()
        self._published = 0
        self._early_depth = HeldForInfo()
        self._resets_seen = 0
        self._warn_reset = DropWarnings(self, period_s=RESET_WARNING_PERIOD_S)
        self._warn_drop = DropWarnings(self)
        self._publish_tf = bool(publish_tf)
        # The latest conflict per (rig frame, other parent, topic), in the order met: a moving
        # transform on /tf differs at every message and must not grow a list or the log.
        self._tf_conflicts: dict[tuple[str, str, str], TransformConflict] = {}
        #: What was said of each such conflict (the latest placement), in the order met.
        self.tf_conflicts: list[str] = []
        self.calibration: RigCalibration | None = None
        self._calibration_path = ""
        self.pipeline: FusionPipeline | None = None
        self.sync: Synchronizer[DepthFrame, ThermalFrame] | None = None
        try:
            path = calibration_file or str(package_file("calibration/rig.yaml"))
            self.calibration = load_calibration(path)
            self.pipeline = FusionPipeline(
                self.calibration, FusionConfig(fix_zero_patches=bool(fix), **size)
            )
            self.sync = Synchronizer(SyncConfig.from_calibration(self.calibration, **sync_ns))
            self._calibration_path = path
            self.get_logger().info(f"loaded rig calibration {path}")
        except (IphdError, FileNotFoundError, ValueError, TypeError) as exc:
            # Keep running so diagnostics say why nothing is published.
            self._fail("calibration", f"{exc}; thermal/registered will not be published")

        self._pub = self.create_publisher(Image, "thermal/registered", qos.RESULT_PUB)
        self.diagnostics = DiagnosticsReporter(
            self, "fusion", float(period), self.stats, self._status
        )
        #: Inputs whose publisher offers a QoS this node's subscription cannot take.
        self.incompatible_qos: set[str] = set()
        self.create_subscription(
            Image,
            "depth/image_raw",
            self._on_depth,
            input_qos,
            event_callbacks=self._qos_events("depth/image_raw"),
        )
        self.create_subscription(
            CameraInfo, "depth/camera_info", self._on_depth_info, input_qos,
            event_callbacks=self._qos_events("depth/camera_info"),
        )
        self.create_subscription(
            Image,
            "thermal/image_raw",
            self._on_thermal,
            input_qos,
            event_callbacks=self._qos_events("thermal/image_raw"),
        )
        self.create_subscription(
            CameraInfo, "thermal/camera_info", self._on_thermal_info, input_qos,
            event_callbacks=self._qos_events("thermal/camera_info"),
        )
        if publish_tf and self.calibration is not None:
            self._publish_static_tf(self.calibration)
        if publish_calibration and self.calibration is not None:
            self._calibration_pub = self.create_publisher(String, "rig_calibration", qos.LATCHED)
            self._calibration_pub.publish(String(data=calibration_to_yaml(self.calibration)))

    # -- inputs --------------------------------------------------------------------------------

    def _on_depth_info(self, msg: CameraInfo) -> None:
        try:
            self._depth_info = camera_info_to_intrinsics(msg)
        except IphdError as exc:
            # One message dropped, as a bad image is: the next good info clears it.
            self._depth_info_rejected = str(exc)
            self._drop(
                "depth_camera_info",
                f"{topic_label(self, 'depth/camera_info')} rejected: {exc}",
            )
            return
        self._depth_info_rejected = ""
        for early in self._early_depth.release():
            self._take_depth(early)

    def _no_depth_info(self) -> str:
        return no_camera_info(self, "depth/camera_info", self._depth_info_rejected)

    def _on_thermal_info(self, msg: CameraInfo) -> None:
        if self.calibration is None:
            return
        cal = self.calibration.thermal
        if (msg.width, msg.height) != (cal.width, cal.height):
            self._fail(
                "thermal_camera_info",
                f"{topic_label(self, 'thermal/camera_info')} is {msg.width}x{msg.height} but "
                "the rig calibration is for "
                f"{cal.width}x{cal.height}; registration uses the calibration",
            )

    def _on_depth(self, msg: Image) -> None:
        self._depth_rate.tick()
        if self.sync is None or self.pipeline is None:
            return
        if self._depth_info is None:
            # The first images may beat their info: held until it comes. Only a lasting
            # absence is an error.
            self._early_depth.hold(msg)
            if self._early_depth.dropped:
                # Dropped frames, counted as such: the status clears once the info came.
                self._drop(
                    "no_depth_camera_info",
                    f"{self._no_depth_info()}: depth frames are dropped until a usable one "
                    "comes",
                )
            return
        self._take_depth(msg)

    def _take_depth(self, msg: Image) -> None:
        assert self.sync is not None and self.pipeline is not None
        assert self._depth_info is not None
        try:
            frame = DepthFrame(
                depth_mm=depth_to_mm(image_to_array(msg, DEPTH_ENCODINGS), msg.encoding),
                stamp_ns=header_stamp_ns(msg.header),
                frame_id=msg.header.frame_id,
                intrinsics=self._depth_info,
            )
            self.pipeline.check_depth(frame)
        except IphdError as exc:
            # Dropped before pairing, so a bad frame never takes a thermal frame's partner.
            self._drop("bad_depth", f"depth frame dropped: {exc}")
            return
        self._check_frame("depth", frame.frame_id)
        self._check_units(frame)
        self._handle(self.sync.push_depth(frame.stamp_ns, frame))

    def _check_units(self, frame: DepthFrame) -> None:
        """Warn (throttled, counted) when depth does not read as millimetres; once a second."""
        if self._depth_rate.count % DEPTH_UNITS_EVERY != 1:
            return
        problem = depth_image_units_problem(frame.depth_mm, step=8)
        if problem:
            # Still registered: a far scene is unusual, not impossible.
            self._drop("depth_units", f"{topic_label(self, 'depth/image_raw')}: {problem}")

    def _check_frame(self, camera: str, frame_id: str) -> None:
        """Say once when ``camera``'s images come in another frame than the calibration names.

        The rig's static TF uses the calibration's frame names: depth images in another frame
        are not joined to the thermal camera, thermal images in another frame are not placed
        at all. Registration uses the calibration either way.
        """
        assert self.calibration is not None
        kind = f"{camera}_frame_id"
        expected = getattr(self.calibration.frames, camera)
        if kind in self._errors or not self._publish_tf or frame_id == expected:
            return
        self._errors[kind] = 1
        self._last_error = (
            f"{camera} images arrive in frame '{frame_id}' but the rig calibration's "
            f"frames.{camera} is '{expected}', so "
            + (
                "the thermal camera's static TF is not joined to them"
                if camera == "depth" else
                "the static TF places a frame the thermal images are not in (registration uses "
                "the calibration and is not affected)"
            )
            + f": set frames.{camera}: {frame_id} in rig.yaml"
            + (
                " (and frames.base: '' when the depth driver publishes its own TF, as "
                "realsense2_camera does)" if camera == "depth" else ""
            )
        )
        self.get_logger().warning(self._last_error)

    def _on_thermal(self, msg: Image) -> None:
        self._thermal_rate.tick()
        if self._depth_rate.age_s() <= STREAM_TIMEOUT_S:
            self._with_depth_since_pair += 1
        if self.sync is None or self.pipeline is None or self.calibration is None:
            return
        self._check_frame("thermal", msg.header.frame_id)
        try:
            frame = ThermalFrame(
                thermal_ck=image_to_array(msg, THERMAL_ENCODINGS),
                stamp_ns=header_stamp_ns(msg.header),
                frame_id=msg.header.frame_id,
                intrinsics=self.calibration.thermal,
            )
            self.pipeline.check_thermal(frame)
        except IphdError as exc:
            self._drop("bad_thermal", f"thermal frame dropped: {exc}")
            return
        self._handle(self.sync.push_thermal(frame.stamp_ns, frame))

    # -- pairs ---------------------------------------------------------------------------------

    def _handle(self, pairs: list[Pair[DepthFrame, ThermalFrame]]) -> None:
        assert self.sync is not None and self.pipeline is not None
        if self.sync.stats.resets != self._resets_seen:
            self._resets_seen = self.sync.stats.resets
            self._warn_reset(
                "reset", f"stamps jumped backwards ({RESET_CAUSES}): sync buffers reset"
            )
        if self._no_pairs():
            self.get_logger().error(self._unpaired_reason(), throttle_duration_sec=5.0)
        if pairs:
            self._with_depth_since_pair = 0
        for pair in pairs:
            self._pair_rate.tick()
            start = time.perf_counter()
            try:
                registered_ck = self.pipeline.process(pair.depth, pair.thermal)
            except IphdError as exc:
                self._drop(
                    "bad_pair", f"pair at depth stamp {pair.depth_stamp_ns} ns dropped: {exc}"
                )
                continue
            self._process_ms.append((time.perf_counter() - start) * 1e3)
            out = array_to_image(
                registered_ck.astype(np.uint16, copy=False),
                "16UC1",
                pair.depth_stamp_ns,
                pair.depth.frame_id,
            )
            self._pub.publish(out)
            self._published += 1

    # -- reporting -----------------------------------------------------------------------------

    def _no_pairs(self) -> bool:
        """Whether thermal frames keep coming with depth frames and none finds a partner.

        (Thermal frames that came before any depth frame, or while depth had stopped, are the
        depth stream's absence, which its own status reports.)
        """
        stats = self.sync.stats if self.sync is not None else None
        return (stats is not None and stats.unpaired_run >= UNPAIRED_RUN
                and stats.unpaired_skew_ns is not None
                and self._with_depth_since_pair >= UNPAIRED_RUN)

    def _unpaired_reason(self) -> str:
        """No pair is being made: why, and what to change."""
        assert self.sync is not None
        return (
            f"no thermal frame finds a depth frame within "
            f"{self.sync.config.max_skew_ns / 1e6:g} ms; "
            f"{unpaired_reason(self.sync.stats.unpaired_skew_ns)}"
        )

    def _fail(self, kind: str, message: str) -> None:
        self._errors[kind] = self._errors.get(kind, 0) + 1
        self._last_error = message
        self.get_logger().error(message, throttle_duration_sec=5.0)

    def _drop(self, kind: str, message: str) -> None:
        """Count a dropped input message and warn (throttled per kind)."""
        self._errors[kind] = self._errors.get(kind, 0) + 1
        self._last_error = message
        self._warn_drop(kind, message)

    @property
    def published(self) -> int:
        """Registered images published so far."""
        return self._published

    def _qos_events(self, topic: str):  # noqa: ANN202 - rclpy event type
        return qos.warn_on_incompatible_qos(self, topic, self.incompatible_qos)

    def stats(self) -> dict[str, Any]:
        """Counters and rates for diagnostics and the runner's summary."""
        values: dict[str, Any] = {
            "depth_rate_hz": self._depth_rate.rate_hz(),
            "thermal_rate_hz": self._thermal_rate.rate_hz(),
            "pair_rate_hz": self._pair_rate.rate_hz(),
            "depth_frames": self._depth_rate.count,
            "thermal_frames": self._thermal_rate.count,
            "published": self._published,
            "depth_held_for_camera_info": len(self._early_depth),
            "depth_dropped_before_camera_info": self._early_depth.dropped,
            "calibration": self._calibration_path or "not loaded",
        }
        if self.incompatible_qos:
            values["incompatible_qos"] = ", ".join(sorted(self.incompatible_qos))
        if self.sync is not None:
            s = self.sync.stats
            values.update(
                pairs=s.pairs,
                thermal_drop_fraction=s.thermal_drop_fraction,
                sync_resets=s.resets,
                pending_depth=self.sync.pending_depth,
                pending_depth_cap=self.sync.config.depth_buffer,
                pending_thermal=self.sync.pending_thermal,
                pending_thermal_cap=self.sync.config.thermal_buffer,
                last_skew_ms=(s.last_skew_ns or 0) / 1e6,
                unpaired_run=s.unpaired_run,
                **{f"thermal_dropped_{k}": v for k, v in s.thermal_dropped.items() if v},
            )
            if s.unpaired_skew_ns is not None:
                values["unpaired_skew_ms"] = s.unpaired_skew_ns / 1e6
        if self._process_ms:
            arr = np.asarray(self._process_ms)
            values.update(
                process_ms_mean=float(arr.mean()),
                process_ms_p95=float(np.percentile(arr, 95)),
                process_ms_max=float(arr.max()),
            )
        values.update({f"errors_{k}": v for k, v in self._errors.items()})
        if self._tf_conflicts:
            values["tf_conflicts"] = "; ".join(
                c.describe() for c in self._tf_conflicts.values()
            )
        return values

    def _status(self, values: dict[str, Any]) -> tuple[str, str]:
        if self.calibration is None:
            return "ERROR", self._last_error
        if self._thermal_rate.age_s() > STREAM_TIMEOUT_S:
            return "ERROR", (
                f"no {topic_label(self, 'thermal/image_raw')} for over {STREAM_TIMEOUT_S:g} s"
                + (" (a Lepton's flat-field correction pauses it for about 1 s)"
                   if self._thermal_rate.age_s() < FFC_PAUSE_S else "")
            )
        if self._depth_rate.age_s() > STREAM_TIMEOUT_S:
            self._depth_stopped_s = time.monotonic()
            return "ERROR", (
                f"no {topic_label(self, 'depth/image_raw')} for over {STREAM_TIMEOUT_S:g} s"
            )
        if self._depth_info is None:
            return "ERROR", self._no_depth_info()
        unpaired = values.get("thermal_dropped_no_depth_within_skew", 0)
        if self._no_pairs():
            return "ERROR", self._unpaired_reason()
        if self._recent_drop_fraction() > 0.01:
            if time.monotonic() - self._depth_stopped_s <= DROP_WINDOW_S:
                # The thermal frames of a depth outage: no clock to blame.
                why = f"; {topic_label(self, 'depth/image_raw')} stopped in that time"
            elif unpaired and self.sync is not None:
                why = (f" ({unpaired} none within the skew; "
                       f"{unpaired_reason(self.sync.stats.unpaired_skew_ns)})")
            else:
                why = ""
            return "WARN", (
                f"more than 1 % of thermal frames in the last {DROP_WINDOW_S:g} s found no "
                f"depth partner{why}"
            )
        if self._warn_drop.current(self._errors):
            return "WARN", f"input errors: {self._last_error}"
        return "OK", "pairing and registering"

    def _recent_drop_fraction(self) -> float:
        """Share of the thermal frames of the last ``DROP_WINDOW_S`` left without a pair."""
        if self.sync is None:
            return 0.0
        stats = self.sync.stats
        now = time.monotonic()
        window = self._drop_window
        if window and stats.thermal_in < window[-1][1]:  # a new synchronizer: counts restart
            window.clear()
        if not window:  # the first look counts every frame so far
            window.append((now, 0, 0))
        window.append((now, stats.thermal_in, sum(stats.thermal_dropped.values())))
        while now - window[0][0] > DROP_WINDOW_S:
            window.popleft()
        arrived = window[-1][1] - window[0][1]
        return (window[-1][2] - window[0][2]) / arrived if arrived > 0 else 0.0

    def _publish_static_tf(self, calibration: RigCalibration) -> None:
        try:
            from tf2_msgs.msg import TFMessage
        except ImportError:
            self.get_logger().warning(
                "tf2_msgs is not installed: the rig's static TF is not published (on a full ROS "
                "install it is; otherwise run static_transform_publisher from the calibration)"
            )
            return
        pub = self.create_publisher(TFMessage, "/tf_static", qos.STATIC_TF)
        pub.publish(
            TFMessage(transforms=rig_transforms(calibration, self.get_clock().now().nanoseconds))
        )
        self._tf_pub = pub
        # Other publishers' transforms of the rig's frames: a driver or a robot description
        # that places them too, or a played recording of another calibration.
        self._rig_tf = rig_static_transforms(calibration)
        self.create_subscription(
            TFMessage, "/tf_static", lambda m: self._on_tf(m, "/tf_static"),
            qos.STATIC_TF_LISTENER,
        )
        # And on /tf (tf2's listener QoS): a moving transform of a rig frame contradicts it too.
        self._rig_children = {tf.child.strip("/") for tf in self._rig_tf}
        self.create_subscription(
            TFMessage, "/tf", lambda m: self._on_tf(m, "/tf"), qos.TF_LISTENER
        )

    def _on_tf(self, msg: Any, topic: str) -> None:
        """Say once per conflict when another node's transform contradicts the rig's."""
        assert self.calibration is not None
        if not any(str(t.child_frame_id).strip("/") in self._rig_children
                   for t in msg.transforms):
            return  # the robot's other frames (most of /tf): nothing to compare
        for conflict in transform_conflicts(self._rig_tf, message_transforms(msg)):
            key = (conflict.child, conflict.parent, topic)
            seen = self._tf_conflicts.get(key)
            if seen == conflict:
                continue
            self._tf_conflicts[key] = conflict
            if not conflict.second_parent and topic == "/tf":
                fix = (
                    "a moving transform of a rig frame fights the rig's static one: make the "
                    "robot description's joint to the camera fixed, or keep its placement and "
                    "set the fusion node's publish_tf: false"
                )
            elif not conflict.second_parent:
                fix = (
                    "two calibrations of the rig in one TF tree: a recording made with another "
                    "one, played with ros2 bag play? Replay it with source:=bag, which leaves "
                    "its rig transforms out, or give it the recording's calibration_file"
                )
            else:
                fix = (
                    "a frame with two parents breaks the TF tree: "
                    + conflict.second_parent_fix(self.calibration.frames)
                )
            self._errors["tf_conflict"] = len(self._tf_conflicts)
            self._last_error = (
                f"another node publishes on {topic} {conflict.describe()} "
                f"({self._calibration_path}): {fix}"
            )
            if seen is None:  # said once; a new placement of it only updates the diagnostics
                self.tf_conflicts.append(self._last_error)
                self.get_logger().warning(self._last_error)
            else:
                self.tf_conflicts[list(self._tf_conflicts).index(key)] = self._last_error


def main(args: list[str] | None = None) -> None:
    """Run the fusion node until Ctrl-C."""
    spin_node(FusionNode, args)
