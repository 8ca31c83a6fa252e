"""The rig calibration target, and how a person moves it in front of the simulated rig.

The target (also what ``calibration/README.md`` tells users to build) is a flat plate with an
*asymmetric* grid of round holes, heated (or cooled) so it differs from the background by ~15 K:
through the holes the D435 sees the far background (depth discontinuities) and the Lepton sees a
different temperature (thermal contrast). The asymmetric grid has no 180-degree ambiguity, so hole
(i, j) is found in the same place in both modalities.

Hole (i, j) (row i, column j) is at ``((2 j + i % 2) d, i d, 0)`` in board coordinates (metres,
x right, y down, z into the board), the order OpenCV's ``findCirclesGrid`` with
``CALIB_CB_ASYMMETRIC_GRID`` returns for ``patternSize = (columns, rows)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation, Slerp


@dataclass(frozen=True)
class TargetSpec:
    """Geometry and temperature of the calibration board.

    Attributes:
        columns: holes per row.
        rows: rows of holes.
        spacing_m: grid spacing d (neighbouring rows are d apart, holes in a row 2 d).
        hole_radius_m: radius of every hole.
        margin_m: plate border around the outermost holes' edges.
        temp_offset_k: plate temperature minus the room's (heated board: positive).
    """

    columns: int = 4
    rows: int = 5
    spacing_m: float = 0.07
    hole_radius_m: float = 0.025
    margin_m: float = 0.06
    temp_offset_k: float = 15.0

    def __post_init__(self) -> None:
        """Reject grids OpenCV cannot detect unambiguously and holes that touch."""
        if self.columns < 3 or self.rows < 3:
            raise ValueError(f"the grid needs at least 3x3 holes, got {self.columns}x{self.rows}")
        if not 0 < self.hole_radius_m < self.spacing_m / 2:
            raise ValueError(
                f"hole_radius_m must be in (0, spacing_m / 2) so holes do not touch, got "
                f"{self.hole_radius_m} with spacing {self.spacing_m}"
            )

    @property
    def pattern_size(self) -> tuple[int, int]:
        """(columns, rows) as OpenCV's ``findCirclesGrid`` wants it."""
        return (self.columns, self.rows)

    def object_points(self) -> np.ndarray:
        """(rows * columns, 3) float64 hole centres in board coordinates, in detection order."""
        d = self.spacing_m
        return np.array(
            [((2 * j + i % 2) * d, i * d, 0.0) for i in range(self.rows)
             for j in range(self.columns)],
            dtype=np.float64,
        )

    @property
    def grid_extent_m(self) -> tuple[float, float]:
        """Width and height spanned by the hole centres."""
        return ((2 * (self.columns - 1) + 1) * self.spacing_m, (self.rows - 1) * self.spacing_m)

    @property
    def plate_size_m(self) -> tuple[float, float]:
        """Width and height of the plate."""
        gx, gy = self.grid_extent_m
        border = 2 * (self.hole_radius_m + self.margin_m)
        return (gx + border, gy + border)


@dataclass(frozen=True)
class TargetMotion:
    """Where the board is over time: held still at each pose, then moved to the next.

    Attributes:
        times_s: (K,) scene times at which pose k starts being held.
        rotations: (K, 3, 3) board->depth-camera rotations.
        positions_m: (K, 3) grid centre in the depth optical frame.
        hold_s: how long each pose is held.
        move_s: how long each move takes (smooth start and stop).
    """

    times_s: np.ndarray
    rotations: np.ndarray
    positions_m: np.ndarray
    hold_s: float
    move_s: float
    _slerps: list[Slerp] = field(default_factory=list, repr=False, compare=False)

    @property
    def duration_s(self) -> float:
        """Time until the last pose has been held."""
        return float(self.times_s[-1] + self.hold_s)

    def pose_at(self, t_s: float) -> tuple[np.ndarray, np.ndarray]:
        """(rotation board->depth camera, grid centre in the depth optical frame) at ``t_s``."""
        k = int(np.clip(np.searchsorted(self.times_s, t_s, side="right") - 1, 0,
                        len(self.times_s) - 1))
        into_move = t_s - self.times_s[k] - self.hold_s
        if into_move <= 0 or k + 1 >= len(self.times_s):
            return self.rotations[k], self.positions_m[k]
        a = float(np.clip(into_move / self.move_s, 0.0, 1.0))
        a = a * a * (3.0 - 2.0 * a)  # smoothstep: the hand starts and stops gently
        pair = Rotation.from_matrix(self.rotations[k : k + 2])
        rot = Slerp([0.0, 1.0], pair)([a]).as_matrix()[0]
        pos = (1 - a) * self.positions_m[k] + a * self.positions_m[k + 1]
        return rot, pos

    def moving(self, t_s: float) -> bool:
        """True while the board is between two poses."""
        k = int(np.searchsorted(self.times_s, t_s, side="right") - 1)
        return 0 <= k < len(self.times_s) - 1 and t_s - self.times_s[k] > self.hold_s


def random_motion(
    rng: np.random.Generator, poses: int, spec: TargetSpec, *, distance_m: tuple[float, float]
    = (0.8, 1.6), max_tilt_deg: float = 35.0, view_deg: tuple[float, float] = (18.0, 13.0),
    hold_s: float = 1.2, move_s: float = 0.8, corners: bool = False,
    corner_view_deg: tuple[float, float] = (24.0, 17.0),
) -> TargetMotion:
    """Poses a person would show the rig: spread over the view, at several distances and tilts.

    Args:
        rng: generator to draw from.
        poses: number of poses.
        spec: the board (its size keeps it inside ``view_deg``).
        distance_m: range of grid-centre distances along the optical axis.
        max_tilt_deg: largest tilt of the board normal away from the optical axis.
        view_deg: half-angles (horizontal, vertical) the grid centre stays within.
        hold_s: seconds each pose is held still.
        move_s: seconds each move takes.
        corners: the first four poses go toward the four corners of the view (the grid within
            ``corner_view_deg``, its centre at 80-100 % of the range both ways), as a
            calibration capture should.
        corner_view_deg: half-angles the grid stays within at those poses.
    """
    if poses < 1:
        raise ValueError(f"poses must be >= 1, got {poses}")
    rotations, positions = [], []
    gx, gy = spec.grid_extent_m
    for i in range(poses):
        z = float(rng.uniform(*distance_m))
        corner = corners and i < 4
        half_x, half_y = corner_view_deg if corner else view_deg
        # Keep the whole grid in view: shrink the angular range by the grid's half size.
        ax = np.deg2rad(half_x) - np.arctan2(gx / 2, z)
        ay = np.deg2rad(half_y) - np.arctan2(gy / 2, z)
        ux, uy = float(rng.uniform(-1, 1)), float(rng.uniform(-1, 1))
        if corner:  # the same draws, moved out to corner i
            ux = (1.0 if i % 2 else -1.0) * (0.8 + 0.2 * abs(ux))
            uy = (1.0 if i >= 2 else -1.0) * (0.8 + 0.2 * abs(uy))
        x = z * np.tan(ux * max(ax, 0.0))
        y = z * np.tan(uy * max(ay, 0.0))
        tilt = np.deg2rad(max_tilt_deg) * np.sqrt(float(rng.uniform(0.05, 1.0)))
        axis_angle = float(rng.uniform(0, 2 * np.pi))
        axis = np.array([np.cos(axis_angle), np.sin(axis_angle), 0.0])
        roll = np.deg2rad(float(rng.normal(0.0, 8.0)))
        rot = (Rotation.from_rotvec(axis * tilt) * Rotation.from_rotvec([0, 0, roll])).as_matrix()
        rotations.append(rot)
        positions.append(np.array([x, y, z]))
    times = np.arange(poses) * (hold_s + move_s) + 0.5
    return TargetMotion(times, np.stack(rotations), np.stack(positions), hold_s, move_s)


@dataclass(frozen=True)
class CalibrationTarget:
    """A board and its motion, for ``RigSimulator(target=...)``."""

    spec: TargetSpec
    motion: TargetMotion

    def board_pose(self, t_s: float) -> tuple[np.ndarray, np.ndarray]:
        """(board->depth-camera rotation, position of hole (0, 0) in the depth frame) at ``t_s``.

        With these, hole k is at ``rotation @ spec.object_points()[k] + position``.
        """
        rot, centre = self.motion.pose_at(t_s)
        gx, gy = self.spec.grid_extent_m
        return rot, centre - rot @ np.array([gx / 2, gy / 2, 0.0])
