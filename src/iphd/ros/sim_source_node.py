"""Built-in rig source: publishes stand-in depth and thermal streams like the two drivers do."""

from __future__ import annotations

from typing import Any

from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image

from iphd.calibration import load_calibration
from iphd.ros import qos
from iphd.ros.common import declare, package_file, spin_node
from iphd.ros.conversions import array_to_image, intrinsics_to_camera_info
from iphd.sim.standin import StandInConfig, StandInRig


class SimSourceNode(Node):
    """Publishes ``depth/*`` at ``depth_rate_hz`` and ``thermal/*`` at ``thermal_rate_hz``.

    Stamps are the node clock at render time (the capture time). Thermal stamps are shifted by
    minus the calibration's clock offset, as a thermal camera on its own clock would stamp
    them, so the fusion node's offset correction is exercised.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("sim_source", **kwargs)
        calibration_file = declare(
            self, "calibration_file", "", "rig.yaml; empty = package default"
        )
        width = declare(self, "width", 848, "depth width, px")
        height = declare(self, "height", 480, "depth height, px")
        depth_rate = declare(self, "depth_rate_hz", 30.0, "depth frame rate, Hz")
        thermal_rate = declare(self, "thermal_rate_hz", 8.7, "thermal frame rate, Hz")
        people = declare(self, "people", 2, "people walking in the room")
        seed = declare(self, "seed", 0, "random seed")
        self.calibration = load_calibration(
            calibration_file or package_file("calibration/rig.yaml")
        )
        self.rig = StandInRig(
            self.calibration,
            StandInConfig(width=int(width), height=int(height), people=int(people), seed=int(seed)),
        )
        self._t0_ns = self.get_clock().now().nanoseconds
        frames = self.calibration.frames
        self._depth_frame, self._thermal_frame = frames.depth, frames.thermal
        self._depth_pub = self.create_publisher(Image, "depth/image_raw", qos.SENSOR_PUB)
        self._depth_info_pub = self.create_publisher(
            CameraInfo, "depth/camera_info", qos.SENSOR_PUB
        )
        self._thermal_pub = self.create_publisher(Image, "thermal/image_raw", qos.SENSOR_PUB)
        self._thermal_info_pub = self.create_publisher(
            CameraInfo, "thermal/camera_info", qos.SENSOR_PUB
        )
        self.depth_published = 0
        self.thermal_published = 0
        self.create_timer(1.0 / float(depth_rate), self._publish_depth)
        self.create_timer(1.0 / float(thermal_rate), self._publish_thermal)

    def _scene_time_s(self, stamp_ns: int) -> float:
        return (stamp_ns - self._t0_ns) / 1e9

    def _publish_depth(self) -> None:
        stamp_ns = self.get_clock().now().nanoseconds
        depth_mm = self.rig.render_depth(self._scene_time_s(stamp_ns))
        # Camera info first, so a consumer never sees an image it cannot interpret.
        self._depth_info_pub.publish(
            intrinsics_to_camera_info(self.rig.depth_intrinsics, stamp_ns, self._depth_frame)
        )
        self._depth_pub.publish(array_to_image(depth_mm, "16UC1", stamp_ns, self._depth_frame))
        self.depth_published += 1

    def _publish_thermal(self) -> None:
        capture_ns = self.get_clock().now().nanoseconds
        thermal_ck = self.rig.render_thermal(self._scene_time_s(capture_ns))
        stamp_ns = capture_ns - self.calibration.thermal_clock_offset_ns
        self._thermal_info_pub.publish(
            intrinsics_to_camera_info(self.calibration.thermal, stamp_ns, self._thermal_frame)
        )
        self._thermal_pub.publish(
            array_to_image(thermal_ck, "16UC1", stamp_ns, self._thermal_frame)
        )
        self.thermal_published += 1


def main(args: list[str] | None = None) -> None:
    """Run the built-in rig source until Ctrl-C."""
    spin_node(SimSourceNode, args)
