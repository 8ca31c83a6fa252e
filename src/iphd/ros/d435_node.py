"""D435 driver node: depth/image_raw (16UC1 mm) and depth/camera_info, live or from a recording."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from iphd.calibration import RigFrames, load_calibration
from iphd.errors import IphdError
from iphd.ros.common import declare, package_file, spin_node
from iphd.ros.driver import DriverNode
from iphd.sensors.d435 import D435Camera, D435Config
from iphd.sensors.frames import DepthFrame


class D435Node(DriverNode):
    """Streams the D435 depth camera.

    Stamps are capture times mapped into ROS time by ``iphd.sensors.d435`` (the device's
    global-time stamps, which librealsense keeps on the host clock; a recording is re-based so
    that it plays as if live). A lost device is reopened with back-off; an unknown serial or an
    unsupported mode is logged with what is available and retried every 5 s. The frame id is
    the rig calibration's depth frame, like the Lepton driver's and the fusion node's, unless
    the ``frame_id`` parameter names another.
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

    def status_values(self) -> dict[str, Any]:
        """Frames, timeouts, reconnects, device and depth units."""
        stats = self.camera.stats
        return {
            "frames": stats.frames,
            "timeouts": stats.timeouts,
            "reconnects": stats.reconnects,
            "device": f"{self.camera.device_name} {self.camera.device_serial}".strip(),
            "depth_units_m": self.camera.depth_units_m,
        }

    def close(self) -> None:
        """Stop streaming and release the camera."""
        super().close()
        self.camera.close()


def main(args: list[str] | None = None) -> None:
    """Run the D435 driver until Ctrl-C."""
    spin_node(D435Node, args)
