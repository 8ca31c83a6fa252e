"""Lepton driver node: publishes thermal/image_raw (16UC1 centi-kelvin) and thermal/camera_info."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from iphd.calibration import RigCalibration, load_calibration
from iphd.errors import IphdError
from iphd.ros.common import declare, package_file, spin_node
from iphd.ros.driver import STALE_S, DriverNode
from iphd.sensors.frames import ThermalFrame
from iphd.sensors.lepton import LeptonCamera, LeptonConfig


class LeptonNode(DriverNode):
    """Streams a Lepton 3.5 on a PureThermal board.

    Frames during flat-field correction and repeated frames are dropped and counted in the
    diagnostics (a WARN naming the correction while it lasts, not an ERROR). Stamps are the
    Lepton's own clock mapped to host time (``LeptonCamera``; the host time after the grab
    without telemetry); the rig calibration's clock offset (applied by the fusion node)
    corrects the remaining USB latency. CameraInfo comes from the rig calibration, not from the
    device.

    Args:
        capture: optional ``cv2.VideoCapture``-like object used instead of a device (tests).
        **kwargs: passed to ``rclpy.node.Node``.
    """

    def __init__(self, capture: Any = None, **kwargs: Any) -> None:
        # A bad frame (all zero while the Lepton boots) ends the frame iterator: start again
        # soon, the camera stays open.
        super().__init__("lepton", "thermal", retry_s=1.0, **kwargs)
        calibration_file = declare(
            self, "calibration_file", "", "rig.yaml; empty = package default"
        )
        self.calibration: RigCalibration | None = None
        try:
            self.calibration = load_calibration(
                calibration_file or package_file("calibration/rig.yaml")
            )
        except (IphdError, FileNotFoundError) as exc:
            self.get_logger().error(f"{exc}; thermal/camera_info will not be published")
        frame_id = self.calibration.frames.thermal if self.calibration else "thermal_optical_frame"
        config = LeptonConfig(
            device=str(declare(self, "device", "", "/dev/videoN or index; empty = find it")),
            expect_telemetry=bool(declare(self, "expect_telemetry", True, "160x122 Y16 stream")),
            drop_ffc=bool(declare(self, "drop_ffc", True, "drop frames during FFC")),
            drop_repeated=bool(declare(self, "drop_repeated", True, "drop repeated frames")),
            frame_id=frame_id,
        )
        self.camera = LeptonCamera(config, capture=capture, sleep=self.loop.wait)
        self.start_streaming()

    def frames(self) -> Iterator[ThermalFrame]:
        """Lepton frames without FFC and repeated ones, recovering from device loss."""
        return self.camera.frames()

    def on_frame(self, frame: ThermalFrame) -> None:
        """Publish the thermal image and the calibrated camera info."""
        intrinsics = self.calibration.thermal if self.calibration else None
        self.publish_image(frame.thermal_ck, intrinsics, frame.stamp_ns, frame.frame_id)

    def pause_reason(self) -> str:
        """A flat-field correction: its frames are coming and being dropped (``drop_ffc``)."""
        if time.monotonic() - self.camera.stats.last_ffc_s < STALE_S:
            return (
                "flat-field correction in progress: the Lepton's shutter is closed (about 1 s) "
                "and its frames are dropped; thermal resumes after it"
            )
        return ""

    def camera_problem(self) -> tuple[float, str]:
        """The camera's latest open failure or loss since its last frame."""
        return self.camera.stats.last_problem_s, self.camera.stats.last_problem

    def status_values(self) -> dict[str, Any]:
        """Frames and drops by reason."""
        stats = self.camera.stats
        values: dict[str, Any] = {
            "frames": stats.frames,
            "dropped_ffc": stats.dropped_ffc,
            "dropped_repeated": stats.dropped_repeated,
            "read_failures": stats.read_failures,
            "reconnects": stats.reconnects,
        }
        if self.calibration is None:
            values["calibration"] = "missing: thermal/camera_info not published"
        return values

    def close(self) -> None:
        """Stop streaming and release the camera."""
        super().close()
        self.camera.close()


def main(args: list[str] | None = None) -> None:
    """Run the Lepton driver until Ctrl-C."""
    spin_node(LeptonNode, args)
