"""Small simulated rig for the ROS tests: frames at arbitrary scene times from ``iphd.sim``."""

from iphd.calibration import load_calibration
from iphd.sim.body import make_identity
from iphd.sim.rig import RigSimulator, SensorConfig

LOOP_S = 20.0


class TimedRig:
    """Depth and thermal images of a simulated scene, looked up by scene time in seconds."""

    def __init__(self, seed: int, width: int = 212, height: int = 120, people: int = 2):
        self.sim = RigSimulator(
            load_calibration(), [make_identity(i, seed) for i in range(people)], LOOP_S + 1.0,
            seed, SensorConfig(depth_profile=f"depth_{width}x{height}"),
        )
        self.depth_intrinsics = self.sim.depth_intrinsics

    def render_depth(self, t_s: float):
        return self.sim.render_depth(self.sim.nearest_depth_index(t_s % LOOP_S)).depth_mm

    def render_thermal(self, t_s: float):
        return self.sim.render_thermal(self.sim.thermal_index_at(t_s % LOOP_S)).thermal_ck
