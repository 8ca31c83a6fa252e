"""Tests of the board detection in thermal and depth images."""

import cv2
import numpy as np

from iphd.calib.detect import detect_depth, detect_thermal, thermal_contrast_k
from iphd.sim.target import TargetSpec


def _still_frames(capture):
    sim = capture.simulator
    t = float(sim.target.motion.times_s[2] + 0.6)
    return sim, sim.render_depth(sim.nearest_depth_index(t)), sim.render_thermal(
        sim.thermal_index_at(t))


def test_detect_thermal_finds_true_centres(capture, truth):
    sim, _, thermal = _still_frames(capture)
    det = detect_thermal(thermal.thermal_ck, TargetSpec())
    assert det.found, det.reason
    pts = sim.target_points_depth(thermal.t_s) @ truth.rotation.T + truth.translation_m
    th = truth.thermal
    proj, _ = cv2.projectPoints(pts, np.zeros(3), np.zeros(3), th.k, np.array(th.distortion))
    assert np.linalg.norm(det.centres_px - proj.reshape(-1, 2), axis=1).mean() < 0.15


def test_detect_depth_finds_true_centres_in_metres(capture):
    sim, depth, _ = _still_frames(capture)
    det = detect_depth(depth.depth_mm, sim.depth_intrinsics, TargetSpec())
    assert det.found, det.reason
    truth = sim.target_points_depth(depth.t_s)
    assert np.linalg.norm(det.points_m - truth, axis=1).mean() < 0.003
    assert det.normal is not None and det.normal[2] < 0


def test_flat_thermal_image_reports_no_contrast():
    flat = np.full((120, 160), 29500, np.uint16)
    flat += np.random.default_rng(0).integers(0, 5, flat.shape, dtype=np.uint16)
    det = detect_thermal(flat, TargetSpec())
    assert not det.found
    assert det.reason.startswith("no thermal contrast")
    assert thermal_contrast_k(flat) < 0.1


def test_depth_without_board_is_not_found(capture):
    sim, depth, _ = _still_frames(capture)
    empty = np.full_like(depth.depth_mm, 3000)
    det = detect_depth(empty, sim.depth_intrinsics, TargetSpec())
    assert not det.found and det.reason
