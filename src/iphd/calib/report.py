"""Pictures and text for checking a calibration: edge overlay, thermal coverage, summary."""

from __future__ import annotations

import cv2
import numpy as np

from iphd.calib.solve import CalibConfig, CalibrationResult, Recording, coverage_text
from iphd.calibration import RigCalibration
from iphd.noise import fix_zero_patches
from iphd.registration import Registrar
from iphd.sensors.frames import CameraIntrinsics


def _to_u8(image: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Percentile-stretch the valid pixels of a (H, W) image to uint8 (invalid = 0)."""
    out = np.zeros(image.shape, np.uint8)
    if valid.any():
        lo, hi = np.percentile(image[valid], (1.0, 99.0))
        scaled = (image.astype(np.float32) - lo) * (255.0 / max(float(hi - lo), 1e-6))
        out[valid] = np.clip(scaled[valid], 0, 255).astype(np.uint8)
    return out


#: Edges of the depth and the registered thermal image this close (pixels) agree (yellow).
AGREE_PX = 2


def edge_overlay(depth_mm: np.ndarray, thermal_ck: np.ndarray,
                 depth_intrinsics: CameraIntrinsics, calibration: RigCalibration) -> np.ndarray:
    """(H, W, 3) uint8 BGR: registered thermal in grey, its edges green, depth edges red.

    Edges of the two images within ``AGREE_PX`` of each other are yellow: with a good
    calibration most of the thermal edges around the board's holes and outline are; a shifted
    one shows green and red side by side. The registered image's zero patches (the holes
    themselves, seen through to the room) are filled as the fusion node fills them, so the
    holes' thermal edges are drawn.
    """
    registered = Registrar(depth_intrinsics, calibration).register(depth_mm, thermal_ck)
    registered = fix_zero_patches(registered)
    # Inverse depth: near surfaces bright, holes and the far room dark, invalid black.
    filled = cv2.medianBlur(depth_mm, 5)
    valid = filled > 0
    inverse = np.where(valid, 1000.0 / np.maximum(filled, 1).astype(np.float32), 0.0)
    depth_u8 = _to_u8(inverse, valid)
    depth_edges = cv2.Canny(cv2.GaussianBlur(depth_u8, (5, 5), 0), 40, 120) > 0
    thermal_u8 = _to_u8(registered, registered > 0)
    thermal_edges = cv2.Canny(cv2.GaussianBlur(thermal_u8, (5, 5), 0), 40, 120) > 0
    thermal_edges &= cv2.erode((registered > 0).astype(np.uint8), np.ones((5, 5))) > 0
    near = np.ones((2 * AGREE_PX + 1, 2 * AGREE_PX + 1), np.uint8)
    near_depth = cv2.dilate(depth_edges.astype(np.uint8), near) > 0
    near_thermal = cv2.dilate(thermal_edges.astype(np.uint8), near) > 0
    out = cv2.cvtColor((thermal_u8 // 2).astype(np.uint8), cv2.COLOR_GRAY2BGR)
    out[depth_edges] = (0, 0, 255)
    out[thermal_edges] = (0, 255, 0)
    out[(depth_edges & near_thermal) | (thermal_edges & near_depth)] = (0, 255, 255)
    return out


def coverage_image(result: CalibrationResult, thermal_ck: np.ndarray, scale: int = 4) -> np.ndarray:
    """(H * scale, W * scale, 3) thermal frame with every used hole centre and the cell grid."""
    intr = result.calibration.thermal
    base = cv2.resize(_to_u8(thermal_ck, np.ones(thermal_ck.shape, bool)), None, fx=scale,
                      fy=scale, interpolation=cv2.INTER_NEAREST)
    out = cv2.cvtColor(base, cv2.COLOR_GRAY2BGR)
    rows, cols = result.coverage.shape
    for c in range(1, cols):
        x = int(round(c * intr.width * scale / cols))
        cv2.line(out, (x, 0), (x, out.shape[0] - 1), (255, 128, 0), 1)
    for r in range(1, rows):
        y = int(round(r * intr.height * scale / rows))
        cv2.line(out, (0, y), (out.shape[1] - 1, y), (255, 128, 0), 1)
    kept = [v for v, m in zip(result.views, result.intrinsics.kept, strict=True) if m]
    for v in kept:
        for x, y in (v.thermal_px + 0.5) * scale:
            cv2.circle(out, (int(round(x)), int(round(y))), 2, (0, 200, 255), -1)
    for r in range(rows):
        for c in range(cols):
            org = (int(c * intr.width * scale / cols) + 4, int(r * intr.height * scale / rows) + 14)
            cv2.putText(out, str(int(result.coverage[r, c])), org, cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                        (255, 255, 255), 1, cv2.LINE_AA)
    return out


def overlay_png(result: CalibrationResult, rec: Recording) -> bytes:
    """The check picture as PNG bytes: edge overlay (left), thermal coverage (right).

    The overlay uses the view with the nearest board (largest in the image).
    """
    view = min(result.views, key=lambda v: float(np.mean(v.depth_points_m[:, 2])))
    left = edge_overlay(rec.depth_mm[view.depth_index], rec.thermal_ck[view.thermal_index],
                        rec.depth_intrinsics, result.calibration)
    right = coverage_image(result, rec.thermal_ck[view.thermal_index])
    h = left.shape[0]
    right = cv2.resize(right, (int(round(right.shape[1] * h / right.shape[0])), h),
                       interpolation=cv2.INTER_NEAREST)
    canvas = np.concatenate([left, right], axis=1)
    cv2.putText(canvas, "registered thermal (grey), its edges green, depth edges red, both yellow",
                (8, h - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    ok, png = cv2.imencode(".png", canvas)
    if not ok:
        raise ValueError("OpenCV could not encode the check picture as PNG")
    return png.tobytes()


def summary(result: CalibrationResult, cfg: CalibConfig) -> str:
    """Human-readable summary of a solve: views, RMS, per-view errors, clock, coverage."""
    cal = result.calibration
    th = cal.thermal
    search = result.search
    lines = [
        f"views: {len(result.views)} found in {search.segments} hold segments "
        f"({search.moved} moved, {search.thermal_only} thermal only, {search.depth_only} depth "
        f"only, {search.neither} neither); {int(result.intrinsics.kept.sum())} used",
        "per-view thermal RMS (px): " + " ".join(
            f"{r:.3f}" + ("" if k else "*")
            for r, k in zip(result.intrinsics.view_rms_px, result.intrinsics.kept, strict=True)
        ) + ("   (* rejected)" if not result.intrinsics.kept.all() else ""),
        f"thermal intrinsics: fx {th.fx:.2f} fy {th.fy:.2f} cx {th.cx:.2f} cy {th.cy:.2f} "
        f"k1 {th.distortion[0]:+.4f} k2 {th.distortion[1]:+.4f}; RMS "
        f"{result.intrinsics.rms_px:.3f} px",
        f"extrinsic: t = {np.round(cal.translation_m * 1000, 1).tolist()} mm, rotation "
        f"{np.degrees(np.linalg.norm(cv2.Rodrigues(cal.rotation)[0])):.2f} deg; RMS "
        f"{result.extrinsic_rms_px:.3f} px",
        f"clock offset: {cal.thermal_clock_offset_s * 1000:+.1f} ms ({result.offset_method})",
    ]
    frames = cal.frames
    lines.append(
        f"frames: base {frames.base or chr(39) * 2}, depth {frames.depth}, thermal "
        f"{frames.thermal}" + "".join(f"\n  {change}" for change in result.frame_changes)
    )
    text, _ = coverage_text(result.coverage, int(result.intrinsics.kept.sum()), cfg)
    return "\n".join([*lines, text])

