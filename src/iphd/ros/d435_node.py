"""D435 driver node: depth/image_raw (16UC1 mm) and depth/camera_info, live or from a recording."""

from __future__ import annotations

from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image

from iphd.errors import IphdError
from iphd.ros import qos
from iphd.ros.common import (
    FrameLoop,
    RateMeter,
    declare,
    diagnostic_array,
    forward_library_logs,
    spin_node,
)
from iphd.ros.conversions import array_to_image, intrinsics_to_camera_info
from iphd.sensors.d435 import D435Camera, D435Config
from iphd.sensors.frames import DepthFrame


class D435Node(Node):
    """Streams the D435 depth camera.

    Stamps are capture times mapped into ROS time by ``iphd.sensors.d435`` (the device's
    global-time stamps, which librealsense keeps on the host clock; a recording is re-based so
    that it plays as if live). A lost device is logged and reopened with back-off; an unknown
    serial or unsupported mode is logged with what is available, and retried every 5 s.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("d435", **kwargs)
        config = D435Config(
            serial=str(declare(self, "serial", "", "serial number; empty = first D435 found")),
            width=int(declare(self, "width", 848, "depth width, px")),
            height=int(declare(self, "height", 480, "depth height, px")),
            fps=int(declare(self, "fps", 30, "depth frame rate, Hz")),
            playback_file=str(declare(self, "playback_file", "", "librealsense recording to play")),
            playback_realtime=bool(
                declare(self, "playback_realtime", True, "play at recorded pace")
            ),
            frame_id=str(declare(self, "frame_id", "depth_optical_frame", "depth optical frame")),
        )
        self._undo_logs = forward_library_logs(self, "iphd.sensors")
        self._image_pub = self.create_publisher(Image, "depth/image_raw", qos.SENSOR_PUB)
        self._info_pub = self.create_publisher(CameraInfo, "depth/camera_info", qos.SENSOR_PUB)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._rate = RateMeter()
        self._loop = FrameLoop(self, self._frames, self._publish)
        self.camera = D435Camera(config, sleep=self._loop.wait)
        self.create_timer(1.0, self._publish_diagnostics)
        self._loop.start()

    def _frames(self):  # noqa: ANN202 - generator of DepthFrame
        return self.camera.frames()

    def _publish(self, frame: DepthFrame) -> None:
        if frame.intrinsics is None:
            raise IphdError("the D435 stream profile has no intrinsics")
        self._info_pub.publish(
            intrinsics_to_camera_info(frame.intrinsics, frame.stamp_ns, frame.frame_id)
        )
        self._image_pub.publish(
            array_to_image(frame.depth_mm, "16UC1", frame.stamp_ns, frame.frame_id)
        )
        self._rate.tick()

    @property
    def published(self) -> int:
        """Depth images published so far."""
        return self._rate.count

    def _publish_diagnostics(self) -> None:
        stats = self.camera.stats
        values = {
            "rate_hz": self._rate.rate_hz(),
            "frames": stats.frames,
            "timeouts": stats.timeouts,
            "reconnects": stats.reconnects,
            "device": f"{self.camera.device_name} {self.camera.device_serial}".strip(),
            "depth_units_m": self.camera.depth_units_m,
        }
        if self._loop.finished:
            level, message = "OK", "end of recording"
        elif self._loop.last_error and self._rate.age_s() > 1.0:
            level, message = "ERROR", self._loop.last_error
        elif self._rate.age_s() > 1.0:
            level, message = "ERROR", "no depth frame for over 1 s"
        else:
            level, message = "OK", "streaming"
        self._diag_pub.publish(
            diagnostic_array(self, "d435", level, message, values, self.camera.device_serial)
        )

    def close(self) -> None:
        """Stop streaming and release the camera."""
        self._loop.stop()
        self.camera.close()
        self._undo_logs()


def main(args: list[str] | None = None) -> None:
    """Run the D435 driver until Ctrl-C."""
    spin_node(D435Node, args)
