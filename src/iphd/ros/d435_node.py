"""D435 driver node: depth/image_raw (16UC1 mm) and depth/camera_info, live or from a recording.

With ``enable_color`` (off by default) it also publishes the RGB camera: ``color/image_raw``
(rgb8), ``color/camera_info`` and the depth -> colour static transform from the device.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sensor_msgs.msg import CameraInfo, Image

from iphd.calibration import RigFrames, extrinsic_pose, load_calibration
from iphd.errors import IphdError
from iphd.ros import qos
from iphd.ros.common import declare, package_file, spin_node
from iphd.ros.conversions import array_to_image, intrinsics_to_camera_info, transforms_to_msgs
from iphd.ros.driver import DriverNode
from iphd.sensors.d435 import D435Camera, D435Config
from iphd.sensors.frames import ColorFrame, DepthFrame


class D435Node(DriverNode):
    """Streams the D435 depth camera.

    Stamps are capture times mapped into ROS time by ``iphd.sensors.d435`` (the device's
    global-time stamps, which librealsense keeps on the host clock; a recording is re-based so
    that it plays as if live). A lost device is reopened with back-off; an unknown serial or an
    unsupported mode is logged with what is available and retried every 5 s. The frame id is
    the rig calibration's depth frame, like the Lepton driver's and the fusion node's, unless
    the ``frame_id`` parameter names another.

    The colour camera streams only with ``enable_color`` (colour images show who people are):
    then each colour frame is published with the next depth frame, stamped at its own capture,
    and the device's depth -> colour extrinsics go out once on ``/tf_static``.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("d435", "depth", retry_s=5.0, **kwargs)
        calibration_file = str(declare(
            self, "calibration_file", "", "rig.yaml (its frames.depth); empty = package default"
        ))
        frame_id = str(declare(
            self, "frame_id", "", "depth optical frame; empty = the rig calibration's frames.depth"
        ))
        config = D435Config(
            serial=str(declare(self, "serial", "", "serial number; empty = first D435 found")),
            width=int(declare(self, "width", 848, "depth width, px")),
            height=int(declare(self, "height", 480, "depth height, px")),
            fps=int(declare(self, "fps", 30, "depth frame rate, Hz")),
            playback_file=str(
                declare(self, "playback_file", "", "librealsense recording (.db3) to play")
            ),
            playback_realtime=bool(
                declare(self, "playback_realtime", True, "play at the recorded pace")
            ),
            frame_id=frame_id or self._calibrated_frame(calibration_file),
            color=bool(declare(
                self, "enable_color", False,
                "also publish the RGB camera on color/image_raw (rgb8): off by default, since "
                "colour images show who people are",
            )),
            color_width=int(declare(self, "color_width", 640, "colour width, px")),
            color_height=int(declare(self, "color_height", 480, "colour height, px")),
            color_frame_id=str(declare(
                self, "color_frame_id", "color_optical_frame", "colour optical frame"
            )),
        )
        self._color_pub = self._color_info_pub = self._tf_pub = None
        # The extrinsics last published on /tf_static (the camera sets new ones at each open).
        self._tf_sent: tuple[Any, Any] | None = None
        if config.color:
            self._color_pub = self.create_publisher(Image, "color/image_raw", qos.SENSOR_PUB)
            self._color_info_pub = self.create_publisher(
                CameraInfo, "color/camera_info", qos.SENSOR_PUB
            )
            try:
                from tf2_msgs.msg import TFMessage
            except ImportError:
                self.get_logger().warning(
                    "tf2_msgs is not installed: the depth -> colour transform is not published"
                )
            else:
                self._tf_pub = self.create_publisher(TFMessage, "/tf_static", qos.STATIC_TF)
            self.get_logger().warning(
                "enable_color is on: RGB images, which show who people are, are published on "
                "color/image_raw"
            )
        self.camera = D435Camera(config, sleep=self.loop.wait)
        self.start_streaming()

    def _calibrated_frame(self, calibration_file: str) -> str:
        """The rig calibration's depth frame; the default name when the file cannot be read."""
        try:
            calibration = load_calibration(calibration_file or package_file("calibration/rig.yaml"))
        except (IphdError, FileNotFoundError) as exc:
            frame = RigFrames().depth
            self.get_logger().error(
                f"{exc}; depth is published in '{frame}': fix 'calibration_file' or set 'frame_id'"
            )
            return frame
        return calibration.frames.depth

    def frames(self) -> Iterator[DepthFrame]:
        """D435 frames, recovering from device loss; ends with a recording."""
        return self.camera.frames()

    def on_frame(self, frame: DepthFrame) -> None:
        """Publish depth and its camera info."""
        if frame.intrinsics is None:
            raise IphdError("the D435 stream profile has no intrinsics")
        self.hardware_id = self.camera.device_serial
        self.publish_image(frame.depth_mm, frame.intrinsics, frame.stamp_ns, frame.frame_id)
        if self._color_pub is not None:
            color = self.camera.take_color()
            if color is not None:
                self._publish_color(color, frame)

    def _publish_color(self, color: ColorFrame, depth: DepthFrame) -> None:
        """Publish a colour frame, after the depth -> colour transform once per camera open."""
        extrinsics = self.camera.depth_to_color
        if self._tf_pub is not None and extrinsics is not None and extrinsics is not self._tf_sent:
            from tf2_msgs.msg import TFMessage

            pose = extrinsic_pose(depth.frame_id, color.frame_id, *extrinsics)
            self._tf_pub.publish(TFMessage(transforms=transforms_to_msgs([pose], color.stamp_ns)))
            self._tf_sent = extrinsics
        if color.intrinsics is not None and self._color_info_pub is not None:
            self._color_info_pub.publish(
                intrinsics_to_camera_info(color.intrinsics, color.stamp_ns, color.frame_id)
            )
        if self._color_pub is not None:
            self._color_pub.publish(
                array_to_image(color.rgb, "rgb8", color.stamp_ns, color.frame_id)
            )

    def camera_problem(self) -> tuple[float, str]:
        """The camera's latest open failure or loss since its last frame."""
        return self.camera.stats.last_problem_s, self.camera.stats.last_problem

    def status_values(self) -> dict[str, Any]:
        """Frames, timeouts, skipped frames, reconnects, device and depth units."""
        stats = self.camera.stats
        return {
            "frames": stats.frames,
            "timeouts": stats.timeouts,
            "skipped_frames": stats.skipped,
            "reconnects": stats.reconnects,
            "device": f"{self.camera.device_name} {self.camera.device_serial}".strip(),
            "depth_units_m": self.camera.depth_units_m,
            "color": "on" if self.camera.config.color else "off",
            **({"color_frames": stats.color_frames} if self.camera.config.color else {}),
        }

    def close(self) -> None:
        """Stop streaming and release the camera."""
        super().close()
        self.camera.close()


def main(args: list[str] | None = None) -> None:
    """Run the D435 driver until Ctrl-C."""
    spin_node(D435Node, args)
