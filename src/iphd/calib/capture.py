"""Live capture feedback: counts usable calibration views and coverage as frames arrive.

Per thermal frame the board's grid is searched; when it is found and still (its centre moved
less than ``CalibConfig.still_tolerance_px`` since the previous thermal frame) the nearest recent
depth frame (within 20 ms, stamps as they are: the board is still, so the unknown clock offset
hardly matters) is searched too. Both found at a new pose count as one view, and its thermal
hole centres go into the same coverage cells ``iphd-calibrate`` reports.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from iphd.calib.detect import detect_depth, detect_thermal
from iphd.calib.solve import CalibConfig, View, coverage_counts, coverage_missing, coverage_need
from iphd.sensors.frames import CameraIntrinsics

DEPTH_RING = 15  # recent depth frames kept (0.5 s at 30 Hz)
MAX_PAIR_SKEW_NS = 20_000_000
NEW_POSE_PX = 5.0  # a still grid this far (thermal px) from the last view is a new pose ...
NEW_POSE_GAP_NS = 500_000_000  # ... and so is one after this long without a still view
DEPTH_PROBE_NS = 1_000_000_000  # depth-only check when thermal misses: at most once a second


def nearest_frame(
    ring: deque[tuple[int, np.ndarray]], stamp_ns: int, max_skew_ns: int
) -> np.ndarray | None:
    """Return the frame of ``ring`` ((stamp_ns, image) pairs) nearest ``stamp_ns``, or None."""
    if not ring:
        return None
    stamp, image = min(ring, key=lambda item: abs(item[0] - stamp_ns))
    return image if abs(stamp - stamp_ns) <= max_skew_ns else None


@dataclass
class CaptureSession:
    """What a live capture has seen so far (thermal stamps in ns, thermal pixels).

    Attributes:
        config: board and solve settings (``min_views``, coverage cells and fraction).
        thermal: intrinsics of the thermal images (their size sets the coverage cells).
        depth_intrinsics: camera model of the depth images; None until the camera info came.
        views: one ``View`` per counted pose.
        thermal_only: still thermal frames with the grid whose depth partner showed none.
        depth_only: probed depth frames with the grid while the thermal image showed none.
        no_depth_partner: still thermal frames with no depth frame within 20 ms.
        last_reason: why the last thermal frame gave no view ("" after a view).
    """

    config: CalibConfig
    thermal: CameraIntrinsics
    depth_intrinsics: CameraIntrinsics | None = None
    views: list[View] = field(default_factory=list)
    thermal_only: int = 0
    depth_only: int = 0
    no_depth_partner: int = 0
    last_reason: str = ""
    _depth_ring: deque[tuple[int, np.ndarray]] = field(
        default_factory=lambda: deque(maxlen=DEPTH_RING), repr=False
    )
    _last_centre: np.ndarray | None = field(default=None, repr=False)
    _last_view_centre: np.ndarray | None = field(default=None, repr=False)
    _last_view_ns: int | None = field(default=None, repr=False)
    _last_probe_ns: int | None = field(default=None, repr=False)

    def add_depth(self, stamp_ns: int, depth_mm: np.ndarray) -> None:
        """Keep a depth frame for pairing with the next still thermal frames."""
        self._depth_ring.append((stamp_ns, depth_mm))

    def add_thermal(self, stamp_ns: int, thermal_ck: np.ndarray) -> bool:
        """Look for a view at this thermal frame; True when a new view was counted."""
        spec = self.config.spec
        thermal = detect_thermal(thermal_ck, spec, self.config.min_contrast_k)
        if thermal.centres_px is None:
            self._last_centre = None
            self.last_reason = thermal.reason
            self._probe_depth(stamp_ns)
            return False
        centre = thermal.centres_px.mean(axis=0)
        previous, self._last_centre = self._last_centre, centre
        if previous is None or np.linalg.norm(centre - previous) >= self.config.still_tolerance_px:
            self.last_reason = "board moving"
            return False
        depth_mm = nearest_frame(self._depth_ring, stamp_ns, MAX_PAIR_SKEW_NS)
        if depth_mm is None or self.depth_intrinsics is None:
            self.no_depth_partner += 1
            self.last_reason = "no depth frame within 20 ms"
            return False
        depth = detect_depth(depth_mm, self.depth_intrinsics, spec, self.config.min_range_m)
        if depth.points_m is None or depth.normal is None:
            self.thermal_only += 1
            self.last_reason = f"thermal only: {depth.reason}"
            return False
        new_pose = (
            self._last_view_centre is None
            or self._last_view_ns is None
            or np.linalg.norm(centre - self._last_view_centre) > NEW_POSE_PX
            or stamp_ns - self._last_view_ns > NEW_POSE_GAP_NS
        )
        self._last_view_ns = stamp_ns
        self.last_reason = ""
        if not new_pose:
            return False
        self._last_view_centre = centre
        index = len(self.views)
        self.views.append(View(thermal.centres_px, depth.points_m, depth.normal,
                               stamp_ns / 1e9, index, index, 1, 1))
        return True

    def _probe_depth(self, stamp_ns: int) -> None:
        # Tells "board not warm enough" from "board not in view" without a depth search per frame.
        if self.depth_intrinsics is None or (
            self._last_probe_ns is not None and stamp_ns - self._last_probe_ns < DEPTH_PROBE_NS
        ):
            return
        self._last_probe_ns = stamp_ns
        depth_mm = nearest_frame(self._depth_ring, stamp_ns, MAX_PAIR_SKEW_NS)
        if depth_mm is not None and detect_depth(
            depth_mm, self.depth_intrinsics, self.config.spec, self.config.min_range_m
        ).found:
            self.depth_only += 1

    def coverage(self) -> tuple[np.ndarray, bool]:
        """(rows, cols) hole centres per thermal cell, and whether views and coverage suffice."""
        counts = coverage_counts(self.views, self.thermal, self.config.coverage_cells)
        return counts, not coverage_missing(counts, len(self.views), self.config)

    def progress_line(self) -> str:
        """The one-line progress report."""
        counts = coverage_counts(self.views, self.thermal, self.config.coverage_cells)
        views, cfg = len(self.views), self.config
        missing = coverage_missing(counts, views, cfg)
        verdict = "need more: " + ", ".join(missing) if missing else "enough"
        return (
            f"{views}/{cfg.min_views} views, {self.thermal_only} thermal-only and "
            f"{self.depth_only} depth-only frames, coverage {float((counts > 0).mean()):.0%}"
            f" of the thermal image (need {coverage_need(cfg)}): {verdict}"
        )
