"""Solving the rig calibration from a recording of the board: clock, views, intrinsics, extrinsic.

The steps of ``calibrate`` (each a function here, tested on its own):

1. ``motion_energy_offset``: coarse thermal clock offset. Motion energy per frame pair (mean
   absolute frame difference) in both streams; the depth energy is integrated over each thermal
   frame interval shifted by a candidate offset, and the offset with the highest correlation
   (searched over +-``max_lag_s``, refined with a parabola through the peak) wins.
2. ``find_views``: with that offset, thermal frames whose surrounding depth frames
   (+-``still_margin_s``) show no board motion are grouped into hold segments; per segment the
   grid is detected in its thermal frames and in a few of its depth frames, checked for
   stillness, and averaged into one ``View``. Only still views feed the geometry, so a wrong
   clock cannot bias it.
3. ``solve_intrinsics``: ``cv2.calibrateCamera`` on the thermal detections (k3 and tangential
   distortion fixed at 0: a 160x120 image cannot pin them down), outlier views rejected, re-solved.
4. ``solve_extrinsic``: ``cv2.solvePnP`` + ``solvePnPRefineLM`` with every view's 3D hole
   centres from depth as object points and their thermal detections as image points.
5. ``refine_offset_trajectory``: the fine clock offset. While the board moves, the hole centres
   from depth (interpolated in time at ``thermal stamp + offset``) are projected into the
   thermal image with the solved calibration and compared with the thermal detections; the
   offset with the smallest mean error wins. Falls back to step 1 when too few moving frames
   have the grid in both streams.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import cv2
import numpy as np

from iphd.calib.detect import (
    MIN_CONTRAST_K,
    GridDetection,
    detect_depth,
    detect_thermal,
    thermal_contrast_k,
)
from iphd.calibration import RigCalibration, RigFrames
from iphd.errors import CalibrationError
from iphd.sensors.frames import CameraIntrinsics
from iphd.sim.target import TargetSpec

#: Searches of the fine clock offset, each re-centred on the last one's edge when it ended there.
MAX_TRAJECTORY_SEARCHES = 4
#: An extrinsic that reprojects the views' hole centres worse than this (thermal pixels), and
#: worse than this factor times the thermal intrinsics' RMS, is refused: a solve that diverged.
MAX_EXTRINSIC_RMS_PX = 3.0
EXTRINSIC_RMS_FACTOR = 10.0


class CalibrationInputError(CalibrationError):
    """The recording cannot give a calibration; the message says what to record instead."""


class NoThermalContrastError(CalibrationInputError):
    """The Lepton frames are flat: the board is not warmer or cooler than the background."""


class OneModalityError(CalibrationInputError):
    """The grid was found in one camera but (almost) never in the other."""


def board_spec(
    columns: int, rows: int, spacing_mm: float, hole_diameter_mm: float,
    names: tuple[str, str, str, str] = ("columns", "rows", "spacing_mm", "hole_diameter_mm"),
) -> TargetSpec:
    """The board, from its measures in millimetres; ``names`` are the options that gave them.

    Raises:
        CalibrationInputError: fewer than 3 x 3 holes, or holes that do not fit their spacing,
            named as the user wrote them.
    """
    if columns < 3 or rows < 3:
        raise CalibrationInputError(
            f"{names[0]} {columns} and {names[1]} {rows}: the board needs at least 3 x 3 holes"
        )
    if not (math.isfinite(spacing_mm) and spacing_mm > 0):
        raise CalibrationInputError(
            f"{names[2]} {spacing_mm:g} must be above 0: the distance between two rows of "
            "holes, in mm; measure your board's"
        )
    if not 0 < hole_diameter_mm < spacing_mm:
        raise CalibrationInputError(
            f"{names[3]} {hole_diameter_mm:g} must be above 0 and below {names[2]} "
            f"{spacing_mm:g} (holes that touch cannot be told apart); measure your board's"
        )
    return TargetSpec(columns=int(columns), rows=int(rows), spacing_m=spacing_mm / 1000,
                      hole_radius_m=hole_diameter_mm / 2000)


class TooFewViewsError(CalibrationInputError):
    """Fewer still views of the board than the solve needs."""


class DegeneratePosesError(CalibrationInputError):
    """The board was held at (nearly) one orientation, so focal length and distance trade off."""


@dataclass(frozen=True)
class CalibConfig:
    """Settings of the calibration solve.

    Attributes:
        spec: the board.
        min_views: fewest still views (hold segments) accepted.
        min_normal_spread_deg: board normals must deviate at least this much from their mean.
        outlier_factor: views with a reprojection RMS above this times the median are dropped.
        outlier_floor_px: ... but never views below this RMS (thermal pixels).
        max_lag_s: clock offsets searched are within +- this of 0.
        still_margin_s: a thermal frame is still when no depth motion is seen this long around it.
        still_tolerance_px: depth (or thermal) grid centres may move at most this within a view.
        depth_frames_per_view: at most this many depth frames are detected per hold segment.
        min_contrast_k: 1st-99th percentile spread a thermal frame needs to show the board.
        min_range_m: closest expected board distance (depth hole filter size).
        coverage_cells: (columns, rows) of thermal image cells for the coverage check.
        min_coverage: fraction of cells holding a detected hole centre to call coverage enough.
        corners: coverage is enough only with a hole centre in each of the four corner cells
            too: the lens distortion is extrapolated where no hole was seen, and it grows
            fastest toward the corners.
        trajectory_window_s: the fine clock search spans +- this around the coarse offset.
        min_trajectory_frames: fewest moving frames for the fine clock offset.
    """

    spec: TargetSpec = field(default_factory=TargetSpec)
    min_views: int = 8
    min_normal_spread_deg: float = 10.0
    outlier_factor: float = 3.0
    outlier_floor_px: float = 0.3
    max_lag_s: float = 0.5
    still_margin_s: float = 0.12
    still_tolerance_px: float = 1.0
    depth_frames_per_view: int = 5
    min_contrast_k: float = MIN_CONTRAST_K
    min_range_m: float = 0.5
    coverage_cells: tuple[int, int] = (4, 3)
    min_coverage: float = 2.0 / 3.0
    corners: bool = True
    trajectory_window_s: float = 0.03
    min_trajectory_frames: int = 10

    def __post_init__(self) -> None:
        """Reject settings the solve cannot work with."""
        if self.min_views < 3:
            raise ValueError(f"min_views must be >= 3 (OpenCV needs 3 views), got {self.min_views}")
        if not 0 < self.max_lag_s <= 5.0:
            raise ValueError(f"max_lag_s must be in (0, 5] s, got {self.max_lag_s}")
        if not 0 < self.min_coverage <= 1:
            raise ValueError(f"min_coverage must be in (0, 1], got {self.min_coverage}")


@dataclass
class Recording:
    """Depth and thermal frames of one calibration recording, each stream on its own clock.

    Attributes:
        depth_intrinsics: intrinsics of the depth images (rectified).
        depth_stamps_ns: (J,) int64 depth header stamps, increasing.
        depth_mm: J depth images, (H, W) uint16 millimetres.
        thermal_stamps_ns: (K,) int64 thermal header stamps, increasing (FFC frames dropped).
        thermal_ck: K thermal images, (120, 160) uint16 centi-kelvin.
        depth_frame: the depth images' ``frame_id`` ("" = not known, a simulated capture).
        thermal_frame: the thermal images' ``frame_id`` ("" = not known).
        depth_parents: the parents the recording's ``/tf_static`` gives the depth frame (the
            depth driver's placement; empty when it gives none or was not recorded).
    """

    depth_intrinsics: CameraIntrinsics
    depth_stamps_ns: np.ndarray
    depth_mm: Sequence[np.ndarray]
    thermal_stamps_ns: np.ndarray
    thermal_ck: Sequence[np.ndarray]
    depth_frame: str = ""
    thermal_frame: str = ""
    depth_parents: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Check that stamps and frames match and that both streams have frames."""
        self.depth_stamps_ns = np.asarray(self.depth_stamps_ns, dtype=np.int64)
        self.thermal_stamps_ns = np.asarray(self.thermal_stamps_ns, dtype=np.int64)
        if len(self.depth_stamps_ns) != len(self.depth_mm):
            raise CalibrationInputError("depth stamps and depth frames differ in number")
        if len(self.thermal_stamps_ns) != len(self.thermal_ck):
            raise CalibrationInputError("thermal stamps and thermal frames differ in number")
        for name, stamps in (("depth", self.depth_stamps_ns), ("thermal", self.thermal_stamps_ns)):
            if len(stamps) < 10:
                raise CalibrationInputError(
                    f"the recording has {len(stamps)} {name} frames; record at least 20 s of the "
                    "board being moved and held (see calibration/README.md)"
                )
            if np.any(np.diff(stamps) <= 0):
                raise CalibrationInputError(f"{name} stamps are not increasing; re-record the bag")

    @property
    def t0_ns(self) -> int:
        """Common time origin (the first depth stamp)."""
        return int(self.depth_stamps_ns[0])

    def depth_times_s(self) -> np.ndarray:
        """(J,) depth stamps in seconds since ``t0_ns``."""
        return (self.depth_stamps_ns - self.t0_ns) / 1e9

    def thermal_times_s(self) -> np.ndarray:
        """(K,) thermal stamps in seconds since ``t0_ns`` (thermal clock)."""
        return (self.thermal_stamps_ns - self.t0_ns) / 1e9


@dataclass(frozen=True)
class View:
    """One still pose of the board seen by both cameras (averaged over its hold segment).

    Attributes:
        thermal_px: (N, 2) hole centres in thermal pixels.
        depth_points_m: (N, 3) hole centres in the depth optical frame.
        normal: (3,) unit plate normal in the depth frame.
        t_s: middle of the segment on the depth clock (s since the recording's start).
        depth_index: a depth frame of the segment (for pictures).
        thermal_index: the thermal frame nearest to it.
        n_thermal: thermal frames averaged.
        n_depth: depth frames averaged.
    """

    thermal_px: np.ndarray
    depth_points_m: np.ndarray
    normal: np.ndarray
    t_s: float
    depth_index: int
    thermal_index: int
    n_thermal: int
    n_depth: int


@dataclass
class ViewSearch:
    """What ``find_views`` found: views and counts of segments that failed, by reason."""

    views: list[View]
    segments: int = 0
    thermal_only: int = 0
    depth_only: int = 0
    neither: int = 0
    moved: int = 0
    no_contrast_frames: int = 0
    thermal_frames_checked: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


# -------------------------------------------------------------------------------- clock offset


def depth_motion_energy(depth_mm: Sequence[np.ndarray], step: int = 2,
                        near_mm: float = 2500.0) -> np.ndarray:
    """(J - 1,) motion energy of consecutive depth frames: mean clipped |difference| in mm.

    Only pixels valid in both frames and nearer than ``near_mm`` in one of them count (the
    board is held within arm's reach; the far background's stereo noise would drown it), and
    differences are clipped at 300 mm; the sum is divided by the number of pixels.
    """
    out = np.zeros(max(len(depth_mm) - 1, 0))
    prev = depth_mm[0][::step, ::step].astype(np.float32)
    for j in range(1, len(depth_mm)):
        cur = depth_mm[j][::step, ::step].astype(np.float32)
        near = (cur > 0) & (prev > 0) & (np.minimum(cur, prev) < near_mm)
        out[j - 1] = float(np.minimum(np.abs(cur - prev), 300.0)[near].sum()) / cur.size
        prev = cur
    return out


def thermal_motion_energy(thermal_ck: Sequence[np.ndarray]) -> np.ndarray:
    """(K - 1,) mean |difference| in kelvin of consecutive thermal frames."""
    return np.array([
        float(np.abs(thermal_ck[k].astype(np.float32) - thermal_ck[k - 1]).mean()) / 100.0
        for k in range(1, len(thermal_ck))
    ])


def motion_energy_offset(
    depth_times_s: np.ndarray, depth_energy: np.ndarray, thermal_times_s: np.ndarray,
    thermal_energy: np.ndarray, max_lag_s: float = 0.5, step_s: float = 0.001,
) -> tuple[float, float]:
    """Clock offset that best aligns the two streams' motion energy.

    Args:
        depth_times_s: (J,) depth frame times (depth clock).
        depth_energy: (J - 1,) energy between depth frames j and j + 1.
        thermal_times_s: (K,) thermal stamps (thermal clock).
        thermal_energy: (K - 1,) energy between thermal frames k and k + 1.
        max_lag_s: search range.
        step_s: search step before the parabolic refinement.

    Returns:
        (offset in seconds to add to thermal stamps, peak correlation).
    """
    cumulative = np.concatenate([[0.0], np.cumsum(depth_energy)])
    lags = np.arange(-max_lag_s, max_lag_s + step_s / 2, step_s)
    a = thermal_times_s[:-1][None, :] + lags[:, None]
    b = thermal_times_s[1:][None, :] + lags[:, None]
    inside = (a >= depth_times_s[0]) & (b <= depth_times_s[-1])
    integrated = np.interp(b, depth_times_s, cumulative) - np.interp(a, depth_times_s, cumulative)
    # Long gaps (dropped frames) would compare unlike windows.
    period = float(np.median(np.diff(thermal_times_s)))
    usable = np.diff(thermal_times_s) < 2.5 * period
    scores = np.full(len(lags), -np.inf)
    for i in range(len(lags)):
        m = inside[i] & usable
        if m.sum() < 10:
            continue
        x, y = integrated[i, m], thermal_energy[m]
        if x.std() == 0 or y.std() == 0:
            continue
        scores[i] = float(np.corrcoef(x, y)[0, 1])
    best = int(np.argmax(scores))
    if not np.isfinite(scores[best]):
        raise CalibrationInputError(
            "the two streams do not overlap in time or show no motion; record the board being "
            "moved between poses, with both cameras running"
        )
    offset = float(lags[best])
    if 0 < best < len(lags) - 1 and np.isfinite(scores[best - 1]) and np.isfinite(
            scores[best + 1]):
        ym, y0, yp = scores[best - 1], scores[best], scores[best + 1]
        denom = ym - 2 * y0 + yp
        if denom < 0:
            offset += step_s * 0.5 * (ym - yp) / denom
    return offset, float(scores[best])


# ----------------------------------------------------------------------------------- views


def _still_mask(depth_times_s: np.ndarray, depth_energy: np.ndarray) -> np.ndarray:
    """(J - 1,) True for depth frame intervals without board motion."""
    lo, hi = np.percentile(depth_energy, (10.0, 90.0))
    return depth_energy <= lo + 0.1 * (hi - lo)


def find_views(
    rec: Recording, offset_s: float, depth_energy: np.ndarray, cfg: CalibConfig,
    progress: Callable[[str], None] | None = None,
) -> ViewSearch:
    """Hold segments of the board seen by both cameras, one averaged ``View`` each.

    Args:
        rec: the recording.
        offset_s: clock offset (coarse is enough: ``still_margin_s`` absorbs its error).
        depth_energy: ``depth_motion_energy(rec.depth_mm)``.
        cfg: settings.
        progress: called with a line of text per segment.
    """
    td = rec.depth_times_s()
    tt = rec.thermal_times_s() + offset_s
    still_interval = _still_mask(td, depth_energy)
    mid = 0.5 * (td[1:] + td[:-1])
    still = np.zeros(len(tt), bool)
    for k, t in enumerate(tt):
        near = np.abs(mid - t) <= cfg.still_margin_s
        still[k] = bool(near.any()) and bool(still_interval[near].all()) and td[0] <= t <= td[-1]
    segments: list[np.ndarray] = []
    run: list[int] = []
    for k in range(len(tt)):
        if still[k] and run and k == run[-1] + 1:
            run.append(k)
        elif still[k]:
            if run:
                segments.append(np.array(run))
            run = [k]
    if run:
        segments.append(np.array(run))
    search = ViewSearch(views=[], segments=len(segments))
    spec = cfg.spec
    for number, seg in enumerate(segments):
        thermal = [detect_thermal(rec.thermal_ck[k], spec, cfg.min_contrast_k) for k in seg]
        search.thermal_frames_checked += len(seg)
        search.no_contrast_frames += sum(d.reason.startswith("no thermal contrast")
                                         for d in thermal)
        t_found = [d for d in thermal if d.found]
        j0 = int(np.searchsorted(td, tt[seg[0]]))
        j1 = int(np.searchsorted(td, tt[seg[-1]], side="right"))
        j_all = np.arange(max(j0, 0), min(max(j1, j0 + 1), len(td)))
        pick = j_all[np.linspace(0, len(j_all) - 1, min(cfg.depth_frames_per_view,
                                                          len(j_all))).round().astype(int)]
        depth = [detect_depth(rec.depth_mm[j], rec.depth_intrinsics, spec, cfg.min_range_m)
                 for j in pick]
        d_found = [d for d in depth if d.found]
        for d in [*thermal, *depth]:
            if d.reason:
                search.reasons[d.reason] = search.reasons.get(d.reason, 0) + 1
        if not t_found or not d_found:
            if t_found:
                search.thermal_only += 1
            elif d_found:
                search.depth_only += 1
            else:
                search.neither += 1
            continue
        t_px = np.stack([d.centres_px for d in t_found])  # type: ignore[misc]
        d_px = np.stack([d.centres_px for d in d_found])  # type: ignore[misc]
        spread = max(_max_motion(t_px), _max_motion(d_px) * 160.0 / rec.depth_intrinsics.width)
        if spread > cfg.still_tolerance_px:
            search.moved += 1
            continue
        points = np.mean(np.stack([d.points_m for d in d_found]), axis=0)  # type: ignore[misc]
        normal = np.mean(np.stack([d.normal for d in d_found]), axis=0)  # type: ignore[misc]
        centre_j = int(pick[len(pick) // 2])
        view = View(
            thermal_px=t_px.mean(axis=0), depth_points_m=points,
            normal=normal / np.linalg.norm(normal), t_s=float(td[centre_j]),
            depth_index=centre_j,
            thermal_index=int(seg[np.argmin(np.abs(tt[seg] - td[centre_j]))]),
            n_thermal=len(t_found), n_depth=len(d_found),
        )
        search.views.append(view)
        if progress is not None:
            progress(f"view {len(search.views)} (segment {number + 1}/{len(segments)}): "
                     f"{view.n_thermal} thermal + {view.n_depth} depth frames, board at "
                     f"{float(np.mean(points[:, 2])):.2f} m")
    return search


def _max_motion(centres: np.ndarray) -> float:
    """Largest displacement of any centre from its mean over (F, N, 2) detections."""
    return float(np.linalg.norm(centres - centres.mean(axis=0), axis=2).max())


def check_views(search: ViewSearch, cfg: CalibConfig) -> None:
    """Raise the specific ``CalibrationInputError`` for a view set the solve cannot use.

    Raises:
        NoThermalContrastError: most still thermal frames are flat.
        OneModalityError: the grid is found in one camera only.
        TooFewViewsError: fewer than ``cfg.min_views`` views.
        DegeneratePosesError: all views at nearly one orientation.
    """
    n = len(search.views)
    checked = max(search.thermal_frames_checked, 1)
    if search.thermal_frames_checked and search.no_contrast_frames > 0.5 * checked:
        raise NoThermalContrastError(
            f"no thermal contrast: {search.no_contrast_frames} of {checked} still thermal frames "
            f"span less than {cfg.min_contrast_k} K; heat the board (heat mat, hair dryer, sun) "
            "or cool it so it differs from the background by 10 K or more, and record again"
        )
    if n < cfg.min_views and search.depth_only >= max(search.thermal_only, 1) and (
            search.depth_only >= n):
        raise OneModalityError(
            f"the grid was found in depth only ({search.depth_only} hold segments, {n} with "
            "both): the Lepton does not see the holes; make the board warmer or cooler than "
            "what is behind it and check the Lepton's focus and that the board is in its view"
        )
    if n < cfg.min_views and search.thermal_only >= max(search.depth_only, 1) and (
            search.thermal_only >= n):
        raise OneModalityError(
            f"the grid was found in thermal only ({search.thermal_only} hold segments, {n} "
            "with both): the D435 does not see the holes; leave at least 0.5 m of free space "
            "behind the board, hold it 0.8-1.6 m from the camera, and avoid glossy plates"
        )
    if n < cfg.min_views and (
            not search.segments
            or (search.neither and search.neither >= (search.segments - search.moved) / 2)):
        spec = cfg.spec
        held = (f"in {search.neither} of {search.segments} moments the board was held still"
                if search.segments else "the recording has no moment the board was held still")
        raise TooFewViewsError(
            f"only {n} still views: the grid of {spec.columns} x {spec.rows} holes "
            f"({spec.spacing_m * 1000:g} mm apart) was found in neither camera ({held}); check "
            "that the board options match your board (iphd-calibrate --columns --rows "
            "--spacing-mm --hole-diameter-mm; the capture node's columns, rows, spacing_mm) "
            "and that the board is in both cameras' view, then record again holding it still "
            "for ~1 s at each of ~20 poses"
        )
    if n < cfg.min_views:
        raise TooFewViewsError(
            f"only {n} still views of the board with the grid found in both cameras "
            f"({search.segments} hold segments; {search.moved} moved, {search.thermal_only} "
            f"thermal only, {search.depth_only} depth only, {search.neither} neither); need "
            f"{cfg.min_views}: record again holding the board still for ~1 s at each of ~20 poses"
        )
    normals = np.stack([v.normal for v in search.views])
    mean = normals.mean(axis=0)
    mean /= np.linalg.norm(mean)
    spread = float(np.degrees(np.arccos(np.clip(normals @ mean, -1.0, 1.0))).max())
    if spread < cfg.min_normal_spread_deg:
        raise DegeneratePosesError(
            f"degenerate poses: the board normals differ by at most {spread:.1f} deg from their "
            f"mean (need >= {cfg.min_normal_spread_deg}); record again tilting the board up to "
            "~35 deg left/right and up/down, not only facing the camera"
        )


# ------------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class IntrinsicsResult:
    """Thermal intrinsics and per-view errors.

    Attributes:
        intrinsics: solved thermal intrinsics.
        rms_px: reprojection RMS over the kept views (thermal pixels).
        view_rms_px: (V,) per-view RMS for every input view (from the first solve).
        kept: (V,) bool, views used in the final solve.
    """

    intrinsics: CameraIntrinsics
    rms_px: float
    view_rms_px: np.ndarray
    kept: np.ndarray


def _calibrate(object_pts: np.ndarray, image_pts: list[np.ndarray], size: tuple[int, int],
               k0: np.ndarray, d0: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    flags = (cv2.CALIB_USE_INTRINSIC_GUESS | cv2.CALIB_FIX_K3 | cv2.CALIB_ZERO_TANGENT_DIST)
    obj = [object_pts.astype(np.float32)] * len(image_pts)
    img = [p.astype(np.float32).reshape(-1, 1, 2) for p in image_pts]
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
    _, k, d, rvecs, tvecs = cv2.calibrateCamera(obj, img, size, k0.copy(), d0.copy(),
                                                flags=flags, criteria=criteria)
    errors = []
    for p, r, t in zip(image_pts, rvecs, tvecs, strict=True):
        proj, _ = cv2.projectPoints(object_pts, r, t, k, d)
        errors.append(float(np.sqrt(np.mean(np.sum((proj.reshape(-1, 2) - p) ** 2, axis=1)))))
    return k, d.ravel(), np.array(errors)


def solve_intrinsics(views: Sequence[View], nominal: CameraIntrinsics,
                     cfg: CalibConfig) -> IntrinsicsResult:
    """Thermal intrinsics and distortion from the views' thermal detections.

    Raises:
        TooFewViewsError: fewer than ``cfg.min_views`` views are left after outlier rejection.
    """
    obj = cfg.spec.object_points()
    pts = [v.thermal_px for v in views]
    size = (nominal.width, nominal.height)
    k0 = nominal.k
    d0 = np.array([nominal.distortion[0], nominal.distortion[1], 0.0, 0.0, 0.0])
    k, d, view_rms = _calibrate(obj, pts, size, k0, d0)
    limit = max(cfg.outlier_factor * float(np.median(view_rms)), cfg.outlier_floor_px)
    kept = view_rms <= limit
    if int(kept.sum()) < cfg.min_views:
        raise TooFewViewsError(
            f"only {int(kept.sum())} of {len(views)} views have a thermal reprojection RMS "
            f"below {limit:.2f} px; need {cfg.min_views}: record again with the board fully "
            "in view of both cameras and held still"
        )
    if not kept.all():
        k, d, rms = _calibrate(obj, [p for p, m in zip(pts, kept, strict=True) if m], size, k, d)
    else:
        rms = view_rms
    overall = float(np.sqrt(np.mean(rms**2)))
    intr = CameraIntrinsics(
        nominal.width, nominal.height, float(k[0, 0]), float(k[1, 1]), float(k[0, 2]),
        float(k[1, 2]), (float(d[0]), float(d[1]), float(d[2]), float(d[3]), float(d[4])),
    )
    return IntrinsicsResult(intr, overall, view_rms, kept)


def project_points(points_m: np.ndarray, rotation: np.ndarray, translation_m: np.ndarray,
                   intr: CameraIntrinsics) -> np.ndarray:
    """(N, 2) thermal pixels of (N, 3) depth-frame points under an extrinsic and intrinsics."""
    rvec, _ = cv2.Rodrigues(np.asarray(rotation, dtype=np.float64))
    proj, _ = cv2.projectPoints(np.asarray(points_m, dtype=np.float64).reshape(-1, 3), rvec,
                                np.asarray(translation_m, dtype=np.float64), intr.k,
                                np.asarray(intr.distortion, dtype=np.float64))
    return proj.reshape(-1, 2)


def solve_extrinsic(
    views: Sequence[View], intr: CameraIntrinsics, rotation0: np.ndarray,
    translation0_m: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Depth->thermal extrinsic from the views' 3D hole centres and thermal detections.

    Two starts are refined (Levenberg-Marquardt) and the one that reprojects better is kept:
    the initial calibration's extrinsic, and a solution without any guess (SQPnP on the hole
    centres of all views, which are not coplanar). Started from the guess alone, a Lepton
    mounted upside down (rolled 180 degrees from the initial calibration) diverged.

    Returns:
        (rotation (3, 3), translation (3,) metres, reprojection RMS in thermal pixels).

    Raises:
        CalibrationInputError: neither start gives a solution.
    """
    obj = np.concatenate([v.depth_points_m for v in views]).astype(np.float64)
    img = np.concatenate([v.thermal_px for v in views]).astype(np.float64)
    dist = np.asarray(intr.distortion, dtype=np.float64)
    rvec0, _ = cv2.Rodrigues(np.asarray(rotation0, dtype=np.float64))
    starts = [
        cv2.solvePnP(obj, img, intr.k, dist, rvec0.copy(),
                     np.asarray(translation0_m, dtype=np.float64).reshape(3, 1).copy(),
                     useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE),
        cv2.solvePnP(obj, img, intr.k, dist, flags=cv2.SOLVEPNP_SQPNP),
    ]
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
    best: tuple[np.ndarray, np.ndarray, float] | None = None
    for ok, rvec, tvec in starts:
        if not ok or not (np.all(np.isfinite(rvec)) and np.all(np.isfinite(tvec))):
            continue
        rvec, tvec = cv2.solvePnPRefineLM(obj, img, intr.k, dist, rvec, tvec, criteria)
        rot, _ = cv2.Rodrigues(rvec)
        t = tvec.ravel()
        err = project_points(obj, rot, t, intr) - img
        rms = float(np.sqrt(np.mean(np.sum(err**2, axis=1))))
        if np.isfinite(rms) and (best is None or rms < best[2]):
            best = (rot, t, rms)
    if best is None:
        raise CalibrationInputError("solvePnP failed on the depth/thermal hole centres")
    return best


def refine_offset_trajectory(
    rec: Recording, coarse_s: float, calibration: RigCalibration, depth_energy: np.ndarray,
    cfg: CalibConfig, step_s: float = 0.0005,
) -> tuple[float, int] | None:
    """Fine clock offset from the board's motion seen by both cameras (module docstring, 5).

    Returns:
        (offset in seconds, moving thermal frames used), or None when fewer than
        ``cfg.min_trajectory_frames`` moving frames show the grid in both streams.
    """
    td = rec.depth_times_s()
    tt0 = rec.thermal_times_s()
    moving = ~_still_mask(td, depth_energy)
    mid = 0.5 * (td[1:] + td[:-1])
    w = cfg.trajectory_window_s
    depth_cache: dict[int, GridDetection] = {}

    def depth_at(j: int) -> GridDetection:
        if j not in depth_cache:
            depth_cache[j] = detect_depth(rec.depth_mm[j], rec.depth_intrinsics, cfg.spec,
                                          cfg.min_range_m)
        return depth_cache[j]

    frames: list[tuple[float, np.ndarray, np.ndarray, np.ndarray]] = []
    for k, t_th in enumerate(tt0):
        t = t_th + coarse_s
        near = np.abs(mid - t) <= 0.05
        if not near.any() or not moving[near].any():
            continue
        if not td[0] + w + 0.05 < t < td[-1] - w - 0.05:
            continue
        thermal = detect_thermal(rec.thermal_ck[k], cfg.spec, cfg.min_contrast_k)
        if not thermal.found:
            continue
        lo = int(np.searchsorted(td, t - w)) - 1
        hi = int(np.searchsorted(td, t + w)) + 1
        dets = [depth_at(j) for j in range(lo, hi + 1)]
        if not all(d.found for d in dets):
            continue
        pts = np.stack([d.points_m for d in dets])  # type: ignore[misc]
        frames.append((float(t_th), thermal.centres_px, td[lo: hi + 1], pts))  # type: ignore[arg-type]
    if len(frames) < cfg.min_trajectory_frames:
        return None
    offsets = np.arange(coarse_s - w, coarse_s + w + step_s / 2, step_s)
    cost = np.zeros(len(offsets))
    for t_th, centres, times, pts in frames:
        for i, o in enumerate(offsets):
            t = t_th + o
            j = int(np.clip(np.searchsorted(times, t) - 1, 0, len(times) - 2))
            a = (t - times[j]) / (times[j + 1] - times[j])
            p = (1 - a) * pts[j] + a * pts[j + 1]
            proj = project_points(p, calibration.rotation, calibration.translation_m,
                            calibration.thermal)
            cost[i] += float(np.mean(np.linalg.norm(proj - centres, axis=1)))
    best = int(np.argmin(cost))
    offset = float(offsets[best])
    if 0 < best < len(offsets) - 1:
        ym, y0, yp = cost[best - 1], cost[best], cost[best + 1]
        denom = ym - 2 * y0 + yp
        if denom > 0:
            offset += step_s * 0.5 * (ym - yp) / denom
    return offset, len(frames)


# -------------------------------------------------------------------------------- coverage


def coverage_counts(views: Sequence[View], intr: CameraIntrinsics,
                    cells: tuple[int, int] = (4, 3)) -> np.ndarray:
    """(rows, columns) number of detected hole centres per thermal image cell."""
    cols, rows = cells
    counts = np.zeros((rows, cols), np.int64)
    for v in views:
        cx = np.clip((v.thermal_px[:, 0] + 0.5) * cols / intr.width, 0, cols - 1).astype(int)
        cy = np.clip((v.thermal_px[:, 1] + 0.5) * rows / intr.height, 0, rows - 1).astype(int)
        np.add.at(counts, (cy, cx), 1)
    return counts


def _cell_names(cells: Sequence[tuple[int, int]]) -> str:
    """Cells named "(row,col)", 1-based, row 1 at the top of the thermal image."""
    return " ".join(f"({r + 1},{c + 1})" for r, c in cells)


def coverage_missing(counts: np.ndarray, views: int, cfg: CalibConfig) -> list[str]:
    """What a capture still lacks (views, cells, corner cells); empty when it is enough."""
    missing = []
    if views < cfg.min_views:
        missing.append(f"{cfg.min_views - views} more views")
    empty = [(int(r), int(c)) for r, c in zip(*np.nonzero(counts == 0), strict=True)]
    if float((counts > 0).mean()) < cfg.min_coverage:
        missing.append("poses over cells " + _cell_names(empty))
    elif cfg.corners:
        rows, cols = counts.shape
        corners = {(0, 0), (0, cols - 1), (rows - 1, 0), (rows - 1, cols - 1)}
        if bare := [cell for cell in empty if cell in corners]:
            missing.append("poses over the corner cells " + _cell_names(bare))
    return missing


def coverage_need(cfg: CalibConfig) -> str:
    """What coverage is enough, for the reports: "67% and the four corners"."""
    return f"{cfg.min_coverage:.0%}" + (" and the four corners" if cfg.corners else "")


def coverage_text(counts: np.ndarray, views: int, cfg: CalibConfig) -> tuple[str, bool]:
    """ASCII picture of the thermal coverage and whether it (and the view count) is enough."""
    fraction = float((counts > 0).mean())
    missing = coverage_missing(counts, views, cfg)
    lines = ["thermal image coverage (hole centres per cell):"]
    border = "+" + "------+" * counts.shape[1]
    lines.append(border)
    for row in counts:
        lines.append("|" + "|".join(f"{int(c):5d} " if c else "   .  " for c in row) + "|")
        lines.append(border)
    lines.append(
        f"{views} views, {fraction:.0%} of cells covered (need {coverage_need(cfg)} and "
        f"{cfg.min_views} views): "
        + ("NOT enough - add " + ", ".join(missing) if missing else "enough")
    )
    return "\n".join(lines), not missing


# ---------------------------------------------------------------------------------- driver


@dataclass(frozen=True)
class CalibrationResult:
    """A solved calibration and how it was obtained.

    Attributes:
        calibration: the new rig calibration (``meta`` filled).
        views: the views found (all, before outlier rejection).
        intrinsics: thermal intrinsics solve.
        extrinsic_rms_px: thermal reprojection RMS of the depth hole centres.
        coarse_offset_s: clock offset from motion energy.
        offset_method: how the final clock offset was obtained.
        coverage: (rows, cols) hole centres per thermal cell (kept views).
        coverage_enough: coverage and view count verdict.
        search: the view search counts.
        frame_changes: how the frame names differ from the initial calibration's, and why
            (``recorded_frames``).
    """

    calibration: RigCalibration
    views: list[View]
    intrinsics: IntrinsicsResult
    extrinsic_rms_px: float
    coarse_offset_s: float
    offset_method: str
    coverage: np.ndarray
    coverage_enough: bool
    search: ViewSearch
    frame_changes: list[str] = field(default_factory=list)


def recorded_frames(frames: RigFrames, rec: Recording) -> tuple[RigFrames, list[str]]:
    """``frames`` named as the recording's drivers name them, and a line per change.

    The rig's static TF and the fusion node's checks use the calibration's frame names: the
    depth and thermal frames become those the images were stamped in, and ``base`` becomes
    empty when the recording's ``/tf_static`` already places the depth frame under another
    parent (realsense2_camera does), so the fusion node adds no second parent.
    """
    depth = rec.depth_frame.strip("/") or frames.depth
    thermal = rec.thermal_frame.strip("/") or frames.thermal
    base = frames.base
    changes = [
        f"frames.{name}: {new}, the frame the {name} images were recorded in (the initial "
        f"calibration said {old})"
        for name, new, old in (("depth", depth, frames.depth), ("thermal", thermal, frames.thermal))
        if new != old
    ]
    others = sorted({p.strip("/") for p in rec.depth_parents} - {base})
    if base and others:
        changes.append(
            f"frames.base: '', as the recording's /tf_static places {depth} under "
            f"{', '.join(others)} "
            f"(its driver's TF; the initial calibration said {base}): the fusion node then "
            "publishes depth -> thermal only"
        )
        base = ""
    return RigFrames(base=base, depth=depth, thermal=thermal), changes


def calibrate(
    rec: Recording, initial: RigCalibration, cfg: CalibConfig | None = None, *,
    source: str = "", progress: Callable[[str], None] | None = None,
) -> CalibrationResult:
    """Solve the rig calibration from a recording of the board (module docstring).

    Args:
        rec: depth and thermal frames.
        initial: starting guess (nominal intrinsics, extrinsic, frame names).
        cfg: settings.
        source: where the frames came from, stored in ``meta.source``.
        progress: called with progress lines.

    Raises:
        CalibrationInputError: (a subclass naming the problem) when the recording cannot give
            a calibration.
    """
    cfg = cfg or CalibConfig()
    say = progress or (lambda _line: None)
    th0 = initial.thermal
    for k in range(len(rec.thermal_ck)):
        if rec.thermal_ck[k].shape != (th0.height, th0.width):
            raise CalibrationInputError(
                f"thermal frame {k} is {rec.thermal_ck[k].shape[1]}x{rec.thermal_ck[k].shape[0]}"
                f" but the initial calibration says {th0.width}x{th0.height}; pass --initial "
                "with the Lepton's size"
            )
    contrast = np.array([thermal_contrast_k(f) for f in rec.thermal_ck])
    if float(np.mean(contrast < cfg.min_contrast_k)) > 0.5:
        raise NoThermalContrastError(
            f"no thermal contrast: {int(np.sum(contrast < cfg.min_contrast_k))} of "
            f"{len(contrast)} thermal frames span less than {cfg.min_contrast_k} K (median "
            f"{float(np.median(contrast)):.2f} K); heat the board (heat mat, hair dryer, sun) or "
            "cool it so it differs from the background by 10 K or more, and record again"
        )
    say("motion energy ...")
    depth_energy = depth_motion_energy(rec.depth_mm)
    thermal_energy = thermal_motion_energy(rec.thermal_ck)
    coarse, corr = motion_energy_offset(rec.depth_times_s(), depth_energy,
                                        rec.thermal_times_s(), thermal_energy, cfg.max_lag_s)
    say(f"clock offset from motion energy: {coarse * 1000:+.1f} ms (correlation {corr:.2f})")
    if abs(coarse) >= cfg.max_lag_s - 1e-9:
        raise CalibrationInputError(
            f"the clock offset that best matches the two cameras' motion, {coarse:+.3f} s, is "
            f"at the edge of the +-{cfg.max_lag_s:g} s searched: their stamps are further apart "
            "than that. Check that both drivers stamp in ROS time (the same clock), and record "
            "again"
        )
    search = find_views(rec, coarse, depth_energy, cfg, say)
    check_views(search, cfg)
    views = search.views
    say(f"{len(views)} views; solving thermal intrinsics ...")
    intr = solve_intrinsics(views, th0, cfg)
    kept = [v for v, m in zip(views, intr.kept, strict=True) if m]
    rot, t, ext_rms = solve_extrinsic(kept, intr.intrinsics, initial.rotation,
                                      initial.translation_m)
    if ext_rms > max(MAX_EXTRINSIC_RMS_PX, EXTRINSIC_RMS_FACTOR * intr.rms_px):
        raise CalibrationInputError(
            f"the depth -> thermal extrinsic does not fit the views: it reprojects the hole "
            f"centres with an RMS of {ext_rms:.2f} thermal px (the Lepton's own calibration "
            f"{intr.rms_px:.2f} px); check that --initial describes this rig's cameras "
            "(image sizes, roughly where the Lepton sits), and that both drivers stamp in ROS "
            "time, then record again"
        )
    provisional = RigCalibration(intr.intrinsics, rot, t, coarse, initial.frames)
    say("refining the clock offset on the board's trajectory ...")
    fine, centre, at_edge = None, coarse, False
    for _ in range(MAX_TRAJECTORY_SEARCHES):
        fine = refine_offset_trajectory(rec, centre, provisional, depth_energy, cfg)
        at_edge = fine is not None and abs(fine[0] - centre) >= cfg.trajectory_window_s - 1e-6
        if not at_edge:
            break
        # The best offset is at the edge of the window searched: the coarse offset was
        # further off than the window; search again around that edge.
        assert fine is not None
        say(f"  {fine[0] * 1000:+.1f} ms is at the edge of the search: searching around it")
        centre = fine[0]
    if at_edge or (fine is None and centre != coarse):
        fine = None
        offset = coarse
        method = (f"motion-energy cross-correlation (peak {corr:.2f}); trajectory refinement "
                  "did not settle inside its search (its best offset stayed at the edge): the "
                  "offset is uncertain, record again with slow, smooth moves of the board")
    elif fine is None:
        offset = coarse
        method = (f"motion-energy cross-correlation (peak {corr:.2f}); trajectory refinement "
                  "skipped: too few moving frames with the grid in both cameras")
    else:
        offset = fine[0]
        method = (f"motion-energy cross-correlation ({coarse * 1000:+.1f} ms, peak {corr:.2f}) "
                  f"refined by aligning the board trajectory over {fine[1]} moving thermal "
                  "frames")
    counts = coverage_counts(kept, intr.intrinsics, cfg.coverage_cells)
    _, enough = coverage_text(counts, len(kept), cfg)
    meta: dict[str, Any] = {
        "date": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "source": source or "iphd-calibrate",
        "tool": "iphd-calibrate",
        "views_used": len(kept),
        "views_rejected": len(views) - len(kept),
        "reprojection_rms_px": round(intr.rms_px, 4),
        "extrinsic_rms_px": round(ext_rms, 4),
        "per_view_rms_px": [round(float(r), 4) for r in intr.view_rms_px],
        "clock_offset_method": method,
        "coverage_enough": bool(enough),
    }
    frames, changes = recorded_frames(initial.frames, rec)
    calibration = RigCalibration(intr.intrinsics, rot, t, float(offset), frames, meta)
    return CalibrationResult(calibration, views, intr, ext_rms, coarse, method, counts, enough,
                             search, changes)
