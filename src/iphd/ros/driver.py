"""Base of the driver nodes: a frame thread, image + camera_info publishers, diagnostics."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image

from iphd.ros import qos
from iphd.ros.common import FrameLoop, RateMeter, diagnostic_array, forward_library_logs
from iphd.ros.conversions import array_to_image, intrinsics_to_camera_info
from iphd.sensors.frames import CameraIntrinsics

# A stream counts as stopped after this long without a frame (diagnostics go to ERROR).
STALE_S = 1.0


class DriverNode(Node):
    """Publishes ``<stream>/image_raw`` (16UC1) and ``<stream>/camera_info`` from a frame source.

    Subclasses build their camera with ``sleep=self.loop.wait`` (so stopping interrupts its
    back-off), then call ``start_streaming``; they implement ``frames`` and ``status_values``.
    Frames are read in a thread; a source error is logged, reported on ``/diagnostics`` and the
    source is started again after ``retry_s``, so the node outlives a missing or unplugged sensor.
    """

    def __init__(self, name: str, stream: str, retry_s: float, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self._stream = stream
        self._undo_logs = forward_library_logs(self, "iphd.sensors")
        self._image_pub = self.create_publisher(Image, f"{stream}/image_raw", qos.SENSOR_PUB)
        self._info_pub = self.create_publisher(CameraInfo, f"{stream}/camera_info", qos.SENSOR_PUB)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._rate = RateMeter()
        self.loop = FrameLoop(self, self.frames, self.on_frame, retry_s=retry_s)
        self.hardware_id = ""

    def start_streaming(self) -> None:
        """Start reading frames and publishing diagnostics once a second."""
        self.create_timer(1.0, self._publish_diagnostics)
        self.loop.start()

    def frames(self) -> Iterator[Any]:
        """Return the camera's frame iterator (blocking, recovering from device loss)."""
        raise NotImplementedError

    def on_frame(self, frame: Any) -> None:
        """Publish one frame (called in the frame thread)."""
        raise NotImplementedError

    def status_values(self) -> dict[str, Any]:
        """Driver counters for ``/diagnostics``."""
        raise NotImplementedError

    def pause_reason(self) -> str:
        """Why the camera sends no usable frame right now although it is working; "" if not.

        A stream that stopped for such a reason is a WARN on ``/diagnostics``, not an ERROR.
        """
        return ""

    def camera_problem(self) -> tuple[float, str]:
        """The camera's latest open failure or loss since its last frame: (when, text).

        ``when`` is on ``time.monotonic``; (0.0, "") when there is none.
        """
        return 0.0, ""

    def publish_image(
        self, image: np.ndarray, intrinsics: CameraIntrinsics | None, stamp_ns: int, frame_id: str
    ) -> None:
        """Publish the camera info, then the image (so no consumer sees an image it cannot use)."""
        if intrinsics is not None:
            self._info_pub.publish(intrinsics_to_camera_info(intrinsics, stamp_ns, frame_id))
        self._image_pub.publish(array_to_image(image, "16UC1", stamp_ns, frame_id))
        self._rate.tick()

    @property
    def published(self) -> int:
        """Images published so far."""
        return self._rate.count

    def _publish_diagnostics(self) -> None:
        values = {"rate_hz": self._rate.rate_hz(), **self.status_values()}
        if self.loop.finished:
            level, message = "OK", "end of recording"
        elif self._rate.age_s() > STALE_S and (pause := self.pause_reason()):
            level, message = "WARN", pause
        elif self._rate.age_s() > STALE_S:
            level = "ERROR"
            # The newer of the frame loop's error and the camera's own, so that an error the
            # camera recovered from does not stand for a later loss.
            _, problem = max((self.loop.last_error_s, self.loop.last_error), self.camera_problem())
            message = problem or f"no {self._stream} frame for over {STALE_S:g} s"
        else:
            level, message = "OK", "streaming"
        self._diag_pub.publish(
            diagnostic_array(self, self.get_name(), level, message, values, self.hardware_id)
        )

    def close(self) -> None:
        """Stop the frame thread and stop forwarding library logs; subclasses release the camera."""
        self.loop.stop()
        self._undo_logs()
