"""Calibration capture node: records the board, counts usable views, reports coverage live."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image

from iphd.calib.capture import CaptureSession
from iphd.calib.solve import CalibConfig, board_spec
from iphd.calibration import RigCalibration, StaticTransform, load_calibration, message_transforms
from iphd.data.rosbag import RigBagWriter
from iphd.errors import FrameError, IphdError
from iphd.fusion import depth_to_mm
from iphd.ros import qos
from iphd.ros.common import (
    HeldForInfo,
    RateMeter,
    declare,
    diagnostic_array,
    package_file,
    spin_node,
    topic_label,
)
from iphd.ros.conversions import camera_info_to_intrinsics, image_to_array, stamp_to_ns
from iphd.sensors.frames import CameraIntrinsics
from iphd.sim.target import TargetSpec

DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")
THERMAL_ENCODINGS = ("16UC1", "mono16")
STREAM_TIMEOUT_S = 1.0
# Frames held for the bag until it opens: once the depth camera info and a thermal frame have
# come (the bag is written in the frame_ids the drivers stamp, known from their messages).
PENDING_THERMAL = 50
PENDING_DEPTH = 60


class CalibCaptureNode(Node):
    """Records ``depth/*`` and ``thermal/image_raw`` into a bag and reports calibration coverage.

    The views and coverage are counted by ``iphd.calib.capture.CaptureSession``. Every
    ``report_period_s`` one INFO line and a /diagnostics status say how far the capture is.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("calib_capture", **kwargs)
        default = TargetSpec()
        out_bag = declare(self, "out_bag", "", "rosbag2 folder to record into; empty = no bag")
        calibration_file = declare(
            self, "calibration_file", "", "rig.yaml (thermal size, frames); empty = package default"
        )
        columns = declare(self, "columns", default.columns, "board holes per row")
        rows = declare(self, "rows", default.rows, "board rows of holes")
        spacing_mm = declare(self, "spacing_mm", default.spacing_m * 1000, "board grid spacing, mm")
        hole_mm = declare(
            self, "hole_diameter_mm", default.hole_radius_m * 2000, "board hole diameter, mm"
        )
        min_views = declare(self, "min_views", 8, "views iphd-calibrate needs")
        period = declare(self, "report_period_s", 2.0, "progress report period, s")

        spec = board_spec(int(columns), int(rows), float(spacing_mm), float(hole_mm))
        self.config = CalibConfig(spec=spec, min_views=int(min_views))
        path = calibration_file or str(package_file("calibration/rig.yaml"))
        self.calibration: RigCalibration = load_calibration(path)
        self.out_bag = str(out_bag)
        self.state = CaptureSession(self.config, self.calibration.thermal)
        self.enough = False
        self._writer: RigBagWriter | None = None
        # (stamp, image) held until the bag opens; ``dropped`` counts those pushed out.
        self._pending_thermal = HeldForInfo(PENDING_THERMAL)
        self._pending_depth = HeldForInfo(PENDING_DEPTH)
        # The frame_ids the drivers stamp: the bag is written in them, so iphd-calibrate
        # writes them into rig.yaml (frames.depth / frames.thermal).
        self._frame_ids: dict[str, str] = {}
        self._bag_failed = False
        self._depth_info: CameraIntrinsics | None = None
        self._errors: dict[str, int] = {}
        self._last_error = ""
        self._depth_rate = RateMeter()
        self._thermal_rate = RateMeter()
        self.depth_info_count = 0
        self.depth_unrecorded = 0
        # The drivers' static transforms, recorded so that iphd-calibrate sees where they place
        # the depth frame: (parent, child) -> the newest; those not yet in the bag.
        self._static_tf: dict[tuple[str, str], StaticTransform] = {}
        self._static_tf_unwritten: list[StaticTransform] = []
        self._last_written_ns: int | None = None

        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(
            Image, "depth/image_raw", self._on_depth, qos.SENSOR_SUB,
            event_callbacks=qos.warn_on_incompatible_qos(self, "depth/image_raw"),
        )
        self.create_subscription(
            CameraInfo, "depth/camera_info", self._on_depth_info, qos.SENSOR_SUB,
            event_callbacks=qos.warn_on_incompatible_qos(self, "depth/camera_info"),
        )
        self.create_subscription(
            Image, "thermal/image_raw", self._on_thermal, qos.SENSOR_SUB,
            event_callbacks=qos.warn_on_incompatible_qos(self, "thermal/image_raw"),
        )
        self._subscribe_static_tf()
        self.create_timer(float(period), self._report)
        where = f"recording into {self.out_bag}" if self.out_bag else "not recording (no out_bag)"
        self.get_logger().info(
            f"calibration capture with rig {path}, board {spec.columns}x{spec.rows} holes, "
            f"{where}; hold the board still at {self.config.min_views}+ poses over the image"
        )

    # -- inputs --------------------------------------------------------------------------------

    def _on_depth_info(self, msg: CameraInfo) -> None:
        self.depth_info_count += 1
        if self._depth_info is not None:
            return
        try:
            self._depth_info = camera_info_to_intrinsics(msg)
        except IphdError as exc:
            self._fail("depth_camera_info", f"depth/camera_info rejected: {exc}")
            return
        self.state.depth_intrinsics = self._depth_info
        self._frame_ids.setdefault("depth", msg.header.frame_id.strip("/"))
        self._open_bag()

    def _subscribe_static_tf(self) -> None:
        try:
            from tf2_msgs.msg import TFMessage
        except ImportError:
            self.get_logger().info(
                "tf2_msgs is not installed: the drivers' /tf_static is not recorded; if your "
                "depth driver places its frame itself (realsense2_camera), set frames.base: '' "
                "in the rig.yaml iphd-calibrate writes"
            )
            return
        self.create_subscription(
            TFMessage, "/tf_static", self._on_tf_static, qos.STATIC_TF_LISTENER
        )

    def _on_tf_static(self, msg: Any) -> None:
        """Record the static transforms other nodes latch (a driver's camera_link -> depth)."""
        try:
            transforms = message_transforms(msg)
        except (AttributeError, TypeError, ValueError) as exc:
            self._fail("tf_static", f"/tf_static message dropped: {exc}")
            return
        for tf in transforms:
            key = (tf.parent.strip("/"), tf.child.strip("/"))
            if not key[1] or self._static_tf.get(key) == tf:
                continue
            self._static_tf[key] = tf
            self._static_tf_unwritten.append(tf)
        self._write_static_tf()

    def _write_static_tf(self) -> None:
        """Write the static transforms not yet in the bag, at the newest recorded frame's time."""
        if self._writer is None or self._last_written_ns is None or not self._static_tf_unwritten:
            return
        pending, self._static_tf_unwritten = self._static_tf_unwritten, []
        try:
            self._writer.write_static_transforms(self._last_written_ns, pending)
        except IphdError as exc:
            self._fail("bag_tf_static", f"/tf_static not recorded: {exc}")

    def _open_bag(self) -> None:
        """Open the bag once the depth camera info and a thermal frame have come."""
        info = self._depth_info
        if not self.out_bag or self._writer is not None or info is None or self._bag_failed:
            return
        if "thermal" not in self._frame_ids:
            return
        frames = self.calibration.frames
        recorded = dataclasses.replace(
            frames,
            depth=self._frame_ids.get("depth") or frames.depth,
            thermal=self._frame_ids["thermal"] or frames.thermal,
        )
        try:
            self._writer = RigBagWriter(
                self.out_bag, dataclasses.replace(self.calibration, frames=recorded), info
            )
        except IphdError as exc:
            self._bag_failed = True  # not tried again for every frame
            self._pending_depth.release()
            self._pending_thermal.release()
            self._fail("bag", f"not recording: {exc}")
            return
        for stamp_ns, depth_mm in self._pending_depth.release():
            self._write("depth", self._writer.write_depth, stamp_ns, depth_mm)
        for stamp_ns, thermal_ck in self._pending_thermal.release():
            self._record_thermal(stamp_ns, thermal_ck)
        self._write_static_tf()

    def _on_depth(self, msg: Image) -> None:
        self._depth_rate.tick()
        try:
            depth_mm = depth_to_mm(image_to_array(msg, DEPTH_ENCODINGS), msg.encoding)
            info = self._depth_info
            if info is not None and depth_mm.shape != (info.height, info.width):
                raise FrameError(
                    f"depth image is {depth_mm.shape[1]}x{depth_mm.shape[0]} but "
                    f"depth/camera_info says {info.width}x{info.height}"
                )
        except IphdError as exc:
            self._fail("bad_depth", f"depth frame dropped: {exc}")
            return
        stamp_ns = stamp_to_ns(msg.header.stamp)
        self.state.add_depth(stamp_ns, depth_mm)
        if self._writer is not None:
            self._write("depth", self._writer.write_depth, stamp_ns, depth_mm)
        elif self.out_bag and self._depth_info is not None and not self._bag_failed:
            self._pending_depth.hold((stamp_ns, depth_mm))
        elif self.out_bag:
            self.depth_unrecorded += 1

    def _on_thermal(self, msg: Image) -> None:
        self._thermal_rate.tick()
        th = self.calibration.thermal
        try:
            thermal_ck = image_to_array(msg, THERMAL_ENCODINGS)
            if thermal_ck.shape != (th.height, th.width):
                raise FrameError(
                    f"thermal image is {thermal_ck.shape[1]}x{thermal_ck.shape[0]} but the rig "
                    f"calibration is for {th.width}x{th.height}"
                )
        except IphdError as exc:
            self._fail("bad_thermal", f"thermal frame dropped: {exc}")
            return
        stamp_ns = stamp_to_ns(msg.header.stamp)
        self._frame_ids.setdefault("thermal", msg.header.frame_id.strip("/"))
        self._record_thermal(stamp_ns, thermal_ck)
        self._open_bag()
        self._check_view(stamp_ns, thermal_ck)

    def _record_thermal(self, stamp_ns: int, thermal_ck: np.ndarray) -> None:
        if self._writer is not None:
            self._write("thermal", self._writer.write_thermal, stamp_ns, thermal_ck)
        elif self.out_bag and not self._bag_failed:
            self._pending_thermal.hold((stamp_ns, thermal_ck))

    def _write(self, kind: str, write: Any, stamp_ns: int, image: np.ndarray) -> None:
        try:
            write(stamp_ns, image)
        except IphdError as exc:
            self._fail(f"bag_{kind}", f"{kind} frame not recorded: {exc}")
            return
        self._last_written_ns = stamp_ns

    # -- views ---------------------------------------------------------------------------------

    def _check_view(self, stamp_ns: int, thermal_ck: np.ndarray) -> None:
        if self.state.add_thermal(stamp_ns, thermal_ck):
            self.get_logger().info(f"view {len(self.state.views)} captured")
            self._check_enough()

    def _check_enough(self) -> None:
        if self.enough or not self.coverage()[1]:
            return
        self.enough = True
        self.get_logger().info(
            "enough views and coverage; stop the capture and run: "
            f"iphd-calibrate --bag {self.out_bag or '<bag>'} --out rig.yaml"
        )

    def coverage(self) -> tuple[np.ndarray, bool]:
        """(rows, cols) hole centres per thermal cell, and whether views and coverage suffice."""
        return self.state.coverage()

    def progress_line(self) -> str:
        """The one-line progress report."""
        return self.state.progress_line()

    def stats(self) -> dict[str, Any]:
        """Counters for diagnostics."""
        counts, enough = self.coverage()
        values: dict[str, Any] = {
            "views": len(self.state.views),
            "min_views": self.config.min_views,
            "coverage": float((counts > 0).mean()),
            "enough": enough,
            "thermal_only_frames": self.state.thermal_only,
            "depth_only_frames": self.state.depth_only,
            "no_depth_partner": self.state.no_depth_partner,
            "depth_frames": self._depth_rate.count,
            "thermal_frames": self._thermal_rate.count,
            "depth_rate_hz": self._depth_rate.rate_hz(),
            "thermal_rate_hz": self._thermal_rate.rate_hz(),
            "last_reason": self.state.last_reason,
        }
        if self._writer is not None:
            values.update({f"recorded_{k}": v for k, v in self._writer.counts.items()})
        values.update({f"errors_{k}": v for k, v in self._errors.items()})
        return values

    def _report(self) -> None:
        line = self.progress_line()
        level, message = self._status(line)
        if level == "ERROR":  # nothing to count views on: say why, not which poses are missing
            self.get_logger().error(
                f"{message} (check the driver and the topic names); {line}",
                throttle_duration_sec=10.0,
            )
        else:
            self.get_logger().info(line)
        self._diag_pub.publish(
            diagnostic_array(self, "calibration capture", level, message, self.stats())
        )

    def _status(self, line: str) -> tuple[str, str]:
        if self._thermal_rate.age_s() > STREAM_TIMEOUT_S:
            return "ERROR", f"no {topic_label(self, 'thermal/image_raw')} for over 1 s"
        if self._depth_rate.age_s() > STREAM_TIMEOUT_S:
            return "ERROR", f"no {topic_label(self, 'depth/image_raw')} for over 1 s"
        if self._depth_info is None:
            return "ERROR", f"no {topic_label(self, 'depth/camera_info')} received"
        if self._errors:
            return "WARN", f"{line}; input errors: {self._last_error}"
        return "OK", line

    def _fail(self, kind: str, message: str) -> None:
        self._errors[kind] = self._errors.get(kind, 0) + 1
        self._last_error = message
        self.get_logger().warning(message, throttle_duration_sec=5.0)

    def close(self) -> None:
        """Close the bag (writes its metadata); idempotent."""
        if self._writer is not None:
            self._writer.close()
            self.get_logger().info(f"bag {self.out_bag}: {self._writer.counts}")


def main(args: list[str] | None = None) -> None:
    """Run the capture node until Ctrl-C."""
    spin_node(CalibCaptureNode, args)
