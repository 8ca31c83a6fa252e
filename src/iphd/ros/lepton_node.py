"""Lepton driver node: publishes thermal/image_raw (16UC1 centi-kelvin) and thermal/camera_info."""

from __future__ import annotations

from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image

from iphd.calibration import RigCalibration, load_calibration
from iphd.errors import IphdError
from iphd.ros import qos
from iphd.ros.common import (
    FrameLoop,
    RateMeter,
    declare,
    diagnostic_array,
    forward_library_logs,
    package_file,
    spin_node,
)
from iphd.ros.conversions import array_to_image, intrinsics_to_camera_info
from iphd.sensors.frames import ThermalFrame
from iphd.sensors.lepton import LeptonCamera, LeptonConfig


class LeptonNode(Node):
    """Streams a Lepton 3.5 on a PureThermal board.

    Frames during flat-field correction and repeated frames are dropped and counted in the
    diagnostics. Stamps are the host time right after the grab; the rig calibration's clock
    offset (applied by the fusion node) corrects the USB latency. CameraInfo comes from the rig
    calibration, not from the device.

    Args:
        capture: optional ``cv2.VideoCapture``-like object used instead of a device (tests).
        **kwargs: passed to ``rclpy.node.Node``.
    """

    def __init__(self, capture: Any = None, **kwargs: Any) -> None:
        super().__init__("lepton", **kwargs)
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
        self._undo_logs = forward_library_logs(self, "iphd.sensors")
        self._image_pub = self.create_publisher(Image, "thermal/image_raw", qos.SENSOR_PUB)
        self._info_pub = self.create_publisher(CameraInfo, "thermal/camera_info", qos.SENSOR_PUB)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._rate = RateMeter()
        # A bad frame (e.g. all zero while the Lepton boots) ends the frame iterator; start
        # again soon, the camera stays open.
        self._loop = FrameLoop(self, self._frames, self._publish, retry_s=1.0)
        self.camera = LeptonCamera(config, capture=capture, sleep=self._loop.wait)
        self.create_timer(1.0, self._publish_diagnostics)
        self._loop.start()

    def _frames(self):  # noqa: ANN202 - generator of ThermalFrame
        return self.camera.frames()

    def _publish(self, frame: ThermalFrame) -> None:
        if self.calibration is not None:
            self._info_pub.publish(
                intrinsics_to_camera_info(self.calibration.thermal, frame.stamp_ns, frame.frame_id)
            )
        self._image_pub.publish(
            array_to_image(frame.thermal_ck, "16UC1", frame.stamp_ns, frame.frame_id)
        )
        self._rate.tick()

    @property
    def published(self) -> int:
        """Thermal images published so far."""
        return self._rate.count

    def _publish_diagnostics(self) -> None:
        stats = self.camera.stats
        values = {
            "rate_hz": self._rate.rate_hz(),
            "frames": stats.frames,
            "dropped_ffc": stats.dropped_ffc,
            "dropped_repeated": stats.dropped_repeated,
            "read_failures": stats.read_failures,
            "reconnects": stats.reconnects,
        }
        if self._loop.last_error and self._rate.age_s() > 1.0:
            level, message = "ERROR", self._loop.last_error
        elif self._rate.age_s() > 1.0:
            level, message = "ERROR", "no thermal frame for over 1 s (FFC lasts about 1 s)"
        elif self.calibration is None:
            level, message = "WARN", "no rig calibration: thermal/camera_info not published"
        else:
            level, message = "OK", "streaming"
        self._diag_pub.publish(diagnostic_array(self, "lepton", level, message, values))

    def close(self) -> None:
        """Stop streaming and release the camera."""
        self._loop.stop()
        self.camera.close()
        self._undo_logs()


def main(args: list[str] | None = None) -> None:
    """Run the Lepton driver until Ctrl-C."""
    spin_node(LeptonNode, args)
