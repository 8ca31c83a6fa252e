"""Live rig simulator: publishes depth, thermal and ground truth in real time, like the drivers.

Renders the ``iphd.sim`` digital twin of the D435 + Lepton rig frame by frame on timers, so robot
software can run against it without a bag. The scene lasts ``scene_duration_s`` and then starts
again. Stamps are the frame's capture instant on the node clock (start + index / rate; the frame
goes out on the first timer tick after it), so they stay periodic on a loaded computer; the
thermal stamp is shifted by minus the rig's clock offset, as a thermal camera on its own clock
would stamp it. A frame whose time has passed before it could be rendered is skipped and
counted (``frames_skipped``), never published late; ``/diagnostics`` warns when more than
``MAX_SKIPPED_FRACTION`` of the frames were skipped (the computer cannot render at the rates).
With ``use_sim_time`` the scene starts at the first ``/clock`` message; until one comes nothing
is published and ``/diagnostics`` (on the steady clock) says so.
"""

from __future__ import annotations

from typing import Any

from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image

from iphd.calibration import load_calibration
from iphd.errors import ConfigError
from iphd.ros import qos
from iphd.ros.common import DiagnosticsReporter, declare, package_file, spin_node
from iphd.ros.conversions import array_to_image, intrinsics_to_camera_info, truth_to_msg
from iphd.sim.generate import stream_simulator
from iphd.sim.rig import PROFILES, SensorConfig
from iphd.sim.scene import SceneConfig

#: Share of the frames due that may be skipped before ``/diagnostics`` warns.
MAX_SKIPPED_FRACTION = 0.1


class SimSourceNode(Node):
    """Publishes ``depth/*``, ``thermal/*`` and ``ground_truth/people`` from the simulator."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("sim_source", **kwargs)
        calibration_file = declare(
            self, "calibration_file", "", "rig.yaml; empty = package default"
        )
        profile = str(declare(self, "depth_profile", "aligned_640x360",
                              f"D435 depth profile: {', '.join(PROFILES)}"))
        depth_rate = float(declare(self, "depth_rate_hz", 30.0, "depth frame rate, Hz"))
        thermal_rate = float(declare(self, "thermal_rate_hz", 8.7, "thermal frame rate, Hz"))
        people = int(declare(self, "people", 2, "people in the scene; -1 = drawn at random"))
        seed = int(declare(self, "seed", 0, "scene seed"))
        duration = float(declare(self, "scene_duration_s", 60.0, "scene length before looping"))
        self.publish_truth = bool(
            declare(self, "publish_ground_truth", True, "publish ground_truth/people")
        )
        period = float(declare(self, "diagnostics_period", 1.0, "diagnostics period, s"))
        self.calibration = load_calibration(
            calibration_file or package_file("calibration/rig.yaml")
        )
        try:  # the simulator's own checks raise ValueError: a parameter error here
            sensors = SensorConfig(
                depth_profile=profile, depth_rate_hz=depth_rate, thermal_rate_hz=thermal_rate
            )
            self.sim = stream_simulator(seed, duration, None if people < 0 else people,
                                        self.calibration, sensors, SceneConfig())
        except ValueError as exc:
            raise ConfigError(f"sim_source parameters: {exc}") from exc
        # The scene's start on the node clock; with use_sim_time, 0 until /clock comes.
        self._t0_ns = self.get_clock().now().nanoseconds
        self._no_clock_said = False
        self._next_depth = 0
        self._next_thermal = 0
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
        self._truth_pub = None
        if self.publish_truth:
            from iphd_msgs.msg import PersonTrackArray

            self._truth_pub = self.create_publisher(
                PersonTrackArray, "ground_truth/people", qos.RESULT_PUB
            )
        self.depth_published = 0
        self.thermal_published = 0
        self.frames_skipped = 0
        self.diagnostics = DiagnosticsReporter(self, "sim_source", period, self.stats, self._status)
        self.create_timer(0.25 / depth_rate, self._tick)

    def stats(self) -> dict[str, Any]:
        """Counters for ``/diagnostics``."""
        return {
            "depth_published": self.depth_published,
            "thermal_published": self.thermal_published,
            "frames_skipped": self.frames_skipped,
            "depth_rate_hz": self.sim.sensors.depth_rate_hz,
            "thermal_rate_hz": self.sim.sensors.thermal_rate_hz,
            "depth_profile": self.sim.sensors.depth_profile,
        }

    def _status(self, values: dict[str, Any]) -> tuple[str, str]:
        if self._t0_ns == 0:
            message = (
                "use_sim_time is true and no /clock has come: the simulated rig publishes on "
                "the /clock's time and nothing until it comes; start the simulator that "
                "publishes /clock, or set use_sim_time false (the default of source sim_live)"
            )
            if not self._no_clock_said:  # once in the log; on /diagnostics while it lasts
                self._no_clock_said = True
                self.get_logger().warning(message)
            return "ERROR", message
        due = values["depth_published"] + values["thermal_published"] + values["frames_skipped"]
        if due and values["frames_skipped"] > MAX_SKIPPED_FRACTION * due:
            return "WARN", (
                f"{values['frames_skipped']} of {due} frames skipped: rendering cannot keep up; "
                "lower depth_rate_hz or choose a smaller depth_profile"
            )
        return "OK", "simulating the rig"

    def _tick(self) -> None:
        now_ns = self.get_clock().now().nanoseconds
        if self._t0_ns == 0:  # use_sim_time: the scene starts at the first /clock
            if now_ns == 0:
                return
            self._t0_ns = now_ns
        elapsed = (now_ns - self._t0_ns) / 1e9
        sim = self.sim
        # Depth frames due by now; all but the newest are already late and are skipped.
        # A frame is stamped with its own capture instant on the node clock, not with when the
        # timer got to it: stamps stay periodic on a loaded computer, as a camera's do.
        rate = sim.sensors.depth_rate_hz
        due = int(elapsed * rate)
        if due >= self._next_depth:
            self.frames_skipped += due - self._next_depth
            self._publish_depth(due, self._t0_ns + round(due * 1e9 / rate))
            self._next_depth = due + 1
        period = 1.0 / sim.sensors.thermal_rate_hz
        due = int(elapsed / period)
        if due >= self._next_thermal:
            self.frames_skipped += due - self._next_thermal
            self._publish_thermal(due, self._t0_ns + round(due * period * 1e9))
            self._next_thermal = due + 1

    def _publish_depth(self, frame: int, stamp_ns: int) -> None:
        sim = self.sim
        index = frame % max(sim.n_depth, 1)
        sample = sim.render_depth(index)
        # Camera info first, so a consumer never sees an image it cannot interpret.
        self._depth_info_pub.publish(
            intrinsics_to_camera_info(sim.depth_intrinsics, stamp_ns, self._depth_frame)
        )
        self._depth_pub.publish(
            array_to_image(sample.depth_mm, "16UC1", stamp_ns, self._depth_frame)
        )
        if self._truth_pub is not None:
            self._truth_pub.publish(truth_to_msg(sample.people, stamp_ns, self._depth_frame))
        self.depth_published += 1

    def _publish_thermal(self, frame: int, capture_ns: int) -> None:
        sim = self.sim
        sample = sim.render_thermal(frame % max(sim.n_thermal, 1))
        if sample.frozen:  # flat-field correction: the Lepton driver drops these frames
            return
        stamp_ns = capture_ns - self.calibration.thermal_clock_offset_ns
        self._thermal_info_pub.publish(
            intrinsics_to_camera_info(self.calibration.thermal, stamp_ns, self._thermal_frame)
        )
        self._thermal_pub.publish(
            array_to_image(sample.thermal_ck, "16UC1", stamp_ns, self._thermal_frame)
        )
        self.thermal_published += 1


def main(args: list[str] | None = None) -> None:
    """Run the live rig simulator until Ctrl-C."""
    spin_node(SimSourceNode, args)
