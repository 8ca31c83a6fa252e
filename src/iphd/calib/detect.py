"""Finding the holed calibration board's grid in a thermal image and in a depth image.

Thermal: the holes show the room through a heated (or cooled) plate, so they are blobs of a
different temperature; the image is normalised to 8 bits, upsampled 4x (the Lepton's holes are
only 5-10 px wide) and handed to OpenCV's asymmetric ``findCirclesGrid``.

Depth: through a hole the D435 sees the far background (or nothing: the stereo occlusion shadow
inside the hole). A grey opening (min then max filter, wider than a hole) paints the plate over
its holes; pixels much farther than that, or invalid, inside the plate are hole pixels. The grid
is found on that hole mask, the plate plane is fitted to the remaining plate pixels, and each
hole centre's ray is intersected with the plane, giving the centre in metres.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from iphd.sensors.frames import CameraIntrinsics
from iphd.sim.target import TargetSpec

THERMAL_UPSAMPLE = 4
MIN_CONTRAST_K = 2.0  # 1st-99th percentile spread below which a Lepton frame shows no board


@dataclass(frozen=True)
class GridDetection:
    """The board's hole grid in one image, or why it was not found.

    Attributes:
        centres_px: (N, 2) float64 hole centres in image pixels (OpenCV asymmetric-grid order,
            ``TargetSpec.object_points`` order), or None.
        points_m: (N, 3) float64 hole centres in the depth optical frame (depth only), or None.
        normal: (3,) unit normal of the fitted plate plane facing the camera (depth only).
        reason: empty when found; otherwise what went wrong ("no thermal contrast", ...).
    """

    centres_px: np.ndarray | None
    points_m: np.ndarray | None = None
    normal: np.ndarray | None = None
    reason: str = ""

    @property
    def found(self) -> bool:
        """True when the whole grid was found."""
        return self.centres_px is not None


def thermal_contrast_k(thermal_ck: np.ndarray) -> float:
    """Spread (99th minus 1st percentile) of a (H, W) uint16 centi-kelvin image, in kelvin."""
    lo, hi = np.percentile(thermal_ck.astype(np.float64), (1.0, 99.0))
    return float(hi - lo) / 100.0


def _blob_detector(min_area: float, max_area: float) -> Any:
    params = cv2.SimpleBlobDetector_Params()  # type: ignore[attr-defined]
    params.filterByColor = True
    params.blobColor = 0
    params.filterByArea = True
    params.minArea = float(min_area)
    params.maxArea = float(max_area)
    params.filterByCircularity = False
    params.filterByInertia = True
    params.minInertiaRatio = 0.2
    params.filterByConvexity = True
    params.minConvexity = 0.8
    params.minDistBetweenBlobs = 2.0
    return cv2.SimpleBlobDetector_create(params)  # type: ignore[attr-defined]


def _find_grid(image_u8: np.ndarray, spec: TargetSpec, detector: Any = None) -> np.ndarray | None:
    # The clustering finder copes with strong perspective where the default one gives up.
    for extra in (0, cv2.CALIB_CB_CLUSTERING):
        found, centres = cv2.findCirclesGrid(
            image_u8, spec.pattern_size, flags=cv2.CALIB_CB_ASYMMETRIC_GRID | extra,
            blobDetector=detector,
        )
        if found and centres is not None:
            return np.asarray(centres, dtype=np.float64).reshape(-1, 2)
    return None


def detect_thermal(
    thermal_ck: np.ndarray, spec: TargetSpec, min_contrast_k: float = MIN_CONTRAST_K
) -> GridDetection:
    """Find the hole grid in a Lepton frame.

    Holes darker (cooler) than the plate are found directly; a cooled plate (holes warmer) is
    found by inverting the image.

    Args:
        thermal_ck: (H, W) uint16 centi-kelvin thermal image.
        spec: the board.
        min_contrast_k: below this 1st-99th percentile spread the frame is reported as
            "no thermal contrast".

    Returns:
        The detection with ``centres_px`` in thermal pixels, or a reason.
    """
    contrast = thermal_contrast_k(thermal_ck)
    if contrast < min_contrast_k:
        return GridDetection(None, reason=f"no thermal contrast ({contrast:.2f} K)")
    image = thermal_ck.astype(np.float32)
    lo, hi = np.percentile(image, (1.0, 99.0))
    u8 = np.clip((image - lo) * (255.0 / max(hi - lo, 1e-6)), 0, 255).astype(np.uint8)
    s = THERMAL_UPSAMPLE
    big = cv2.resize(u8, None, fx=s, fy=s, interpolation=cv2.INTER_CUBIC)
    for candidate in (big, 255 - big):
        centres = _find_grid(candidate, spec)
        if centres is not None:
            # Pixel centres at integer coordinates in both images: x = (X + 0.5) / s - 0.5.
            return GridDetection(centres / s + (0.5 / s - 0.5))
    return GridDetection(None, reason="grid not found in thermal")


def depth_hole_mask(depth_mm: np.ndarray, kernel_px: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (hole mask, plate depth in mm) of a (H, W) uint16 depth image.

    ``plate`` is the grey opening of the depth (invalid = far) with a square kernel of
    ``kernel_px``: near surfaces wider than the kernel keep their depth, narrower far pockets
    (the holes) take the depth of the plate around them. A hole pixel is invalid or more than
    60 mm + 5 % behind the plate.
    """
    far = np.where(depth_mm == 0, np.uint16(65535), depth_mm)
    kernel = np.ones((kernel_px, kernel_px), np.uint8)
    plate = cv2.dilate(cv2.erode(far, kernel), kernel)
    plate_f = plate.astype(np.float32)
    gap = far.astype(np.float32) - plate_f
    hole = (gap > 60.0 + 0.05 * plate_f) & (plate < 65535)
    return hole, plate


def _hole_kernel_px(depth_intrinsics: CameraIntrinsics, spec: TargetSpec,
                    min_range_m: float) -> int:
    diameter_px = 2.0 * spec.hole_radius_m * depth_intrinsics.fx / min_range_m
    return int(np.ceil(diameter_px * 1.4)) | 1


def fit_plane(xyz_m: np.ndarray, iterations: int = 3) -> tuple[np.ndarray, float]:
    """Least-squares plane ``n . p = d`` through (N, 3) points, refitted without > 3 sigma outliers.

    Returns:
        (unit normal facing the origin's side with n_z < 0, offset d in metres).
    """
    keep = np.ones(len(xyz_m), bool)
    normal, offset = np.array([0.0, 0.0, -1.0]), 0.0
    for _ in range(iterations):
        pts = xyz_m[keep]
        centroid = pts.mean(axis=0)
        _, _, vt = np.linalg.svd(pts - centroid, full_matrices=False)
        normal = vt[2] if vt[2][2] < 0 else -vt[2]
        offset = float(normal @ centroid)
        resid = xyz_m @ normal - offset
        sigma = 1.4826 * float(np.median(np.abs(resid[keep])))
        new_keep = np.abs(resid) < 3.0 * max(sigma, 1e-4)
        if np.array_equal(new_keep, keep):
            break
        keep = new_keep
    return normal, offset


def detect_depth(
    depth_mm: np.ndarray, depth_intrinsics: CameraIntrinsics, spec: TargetSpec,
    min_range_m: float = 0.5,
) -> GridDetection:
    """Find the hole grid in a D435 depth frame and the hole centres in metres.

    Args:
        depth_mm: (H, W) uint16 depth in millimetres (0 = invalid), rectified.
        depth_intrinsics: intrinsics of ``depth_mm``.
        spec: the board.
        min_range_m: closest board distance expected (sets the hole filter size).

    Returns:
        The detection with ``centres_px`` (depth pixels), ``points_m`` (depth optical frame)
        and ``normal``, or a reason.
    """
    hole, plate = depth_hole_mask(depth_mm, _hole_kernel_px(depth_intrinsics, spec, min_range_m))
    if not hole.any():
        return GridDetection(None, reason="no holes seen in depth")
    # Smallest hole: at 4 m; largest: at min_range_m (with some slack both ways).
    area = np.pi * (spec.hole_radius_m * depth_intrinsics.fx) ** 2
    min_area, max_area = max(area / 16.0, 4.0), 2.0 * area / min_range_m**2
    # Keep only hole-sized, compact components: the far background around the plate and
    # noise speckles would otherwise crowd the grid search.
    _, labels, stats, _ = cv2.connectedComponentsWithStats(hole.astype(np.uint8), connectivity=8)
    size = stats[:, cv2.CC_STAT_AREA]
    fill = size / np.maximum(stats[:, cv2.CC_STAT_WIDTH] * stats[:, cv2.CC_STAT_HEIGHT], 1)
    keep = (size >= min_area) & (size <= max_area) & (fill > 0.5)
    keep[0] = False
    image = np.where(keep[labels], np.uint8(0), np.uint8(255))
    centres = _find_grid(image, spec, _blob_detector(min_area, max_area))
    if centres is None:
        return GridDetection(None, reason="grid not found in depth")
    h, w = depth_mm.shape
    # Plate pixels: inside the grid's hull grown by one spacing, valid, not a hole.
    hull = cv2.convexHull(centres.astype(np.float32))
    hull_mask = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(hull_mask, np.rint(hull).astype(np.int32), 1)
    spacing_px = float(np.median(np.linalg.norm(np.diff(centres[: spec.columns], axis=0),
                                                axis=1))) / 2.0
    grow = max(int(spacing_px * 0.6), 1)
    region = cv2.dilate(hull_mask, np.ones((2 * grow + 1, 2 * grow + 1), np.uint8)) > 0
    near_hole = cv2.dilate(hole.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    board = region & ~near_hole & (depth_mm > 0)
    board &= np.abs(depth_mm.astype(np.float32) - plate.astype(np.float32)) < 60.0
    vv, uu = np.nonzero(board)
    if len(vv) < 50:
        return GridDetection(None, reason="too few plate pixels in depth")
    z = depth_mm[vv, uu].astype(np.float64) / 1000.0
    xyz = np.stack([(uu - depth_intrinsics.cx) / depth_intrinsics.fx * z,
                    (vv - depth_intrinsics.cy) / depth_intrinsics.fy * z, z], axis=1)
    normal, offset = fit_plane(xyz)
    rays = np.stack([(centres[:, 0] - depth_intrinsics.cx) / depth_intrinsics.fx,
                     (centres[:, 1] - depth_intrinsics.cy) / depth_intrinsics.fy,
                     np.ones(len(centres))], axis=1)
    denom = rays @ normal
    if np.any(np.abs(denom) < 1e-6):
        return GridDetection(None, reason="plate seen edge-on in depth")
    points = rays * (offset / denom)[:, None]
    return GridDetection(centres, points, normal)
