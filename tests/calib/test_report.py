"""The calibration overlay: where the depth and registered thermal edges agree."""

import numpy as np

from iphd.calib.report import edge_overlay

YELLOW = (0, 255, 255)


def _agreement(capture, calibration):
    """Share of the thermal edges (green or yellow) that agree with a depth edge (yellow)."""
    rec = capture.recording
    yellow = green = 0
    for j in range(0, len(rec.depth_mm), max(1, len(rec.depth_mm) // 10)):
        k = int(np.argmin(np.abs(rec.thermal_stamps_ns - rec.depth_stamps_ns[j])))
        out = edge_overlay(rec.depth_mm[j], rec.thermal_ck[k], rec.depth_intrinsics,
                           calibration)
        yellow += int(np.all(out == YELLOW, axis=2).sum())
        green += int(np.all(out == (0, 255, 0), axis=2).sum())
    return yellow / max(yellow + green, 1)


def test_the_solved_calibration_shows_more_agreeing_edges_than_the_nominal_one(
    capture, solved, truth, nominal
):
    good, true, wrong = (_agreement(capture, c)
                         for c in (solved.calibration, truth, nominal))
    assert abs(good - true) < 0.05
    assert good > wrong + 0.1 and good > 0.4
