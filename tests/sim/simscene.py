"""Helpers for the simulator tests: empty rooms with people standing where a test wants them."""

from __future__ import annotations

import numpy as np

from iphd.sim.body import Identity, make_identity
from iphd.sim.raycast import cast_room, pinhole_grid
from iphd.sim.rig import RigSimulator, SensorConfig
from iphd.sim.scene import SceneConfig, Segment

# A large room with nothing in it: the back wall is about 11 m away (beyond the D435's 10 m).
EMPTY_ROOM = SceneConfig(room_width_m=(8.0, 8.0), room_depth_m=(12.0, 12.0), distractor_scale=0.0)


def empty_room(
    calibration, people: tuple[int | Identity, ...] = (), *, seed: int = 0, duration_s: float = 6.0,
    sensors: SensorConfig | None = None, scene: SceneConfig = EMPTY_ROOM,
) -> RigSimulator:
    """A simulator of an empty room with ``people`` (pids of population 0, or identities)."""
    identities = [make_identity(p, 0) if isinstance(p, int) else p for p in people]
    return RigSimulator(calibration, identities, duration_s, seed, sensors or SensorConfig(), scene)


def place(sim: RigSimulator, slot: int, distance_m: float, bearing_rad: float = 0.0,
          kind: str = "stand") -> tuple[float, float]:
    """Put person ``slot`` ``distance_m`` (on the floor) in front of the camera, facing it."""
    scene = sim.scene
    yaw = scene.camera_yaw + bearing_rad
    x = float(scene.camera_pos[0] + distance_m * np.sin(yaw))
    z = float(scene.camera_pos[2] + distance_m * np.cos(yaw))
    heading = float(np.arctan2(scene.camera_pos[0] - x, scene.camera_pos[2] - z))
    scene.actors[slot].segments = [Segment(0.0, 1e6, kind, (x, z), (x, z), heading)]
    return x, z


def walk(sim: RigSimulator, slot: int, start: tuple[float, float], end: tuple[float, float],
         duration_s: float) -> None:
    """Make person ``slot`` walk from ``start`` to ``end`` (world floor x, z) in ``duration_s``."""
    heading = float(np.arctan2(end[0] - start[0], end[1] - start[1]))
    sim.scene.actors[slot].segments = [
        Segment(0.0, duration_s, "walk", start, end, heading),
        Segment(duration_s, 1e6, "stand", end, end, heading),
    ]


def true_room_depth(sim: RigSimulator) -> np.ndarray:
    """(H, W) exact depth in metres of the room box (no objects) seen by the depth camera."""
    di = sim.depth_intrinsics
    grid = pinhole_grid(di.width, di.height, di.fx, di.fy, di.cx, di.cy)
    w2c = sim.scene.world_to_camera()
    z = np.empty((di.height, di.width))
    ids = np.empty((di.height, di.width), np.int32)
    cast_room(grid.x, grid.y, np.ascontiguousarray(w2c.T),
              sim.scene.camera_pos - sim.scene.room_centre, sim.scene.room_half, z, ids)
    return z


def box_iou(a, b) -> float:
    """IoU of two xyxy boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
