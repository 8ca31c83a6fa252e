"""Error breakdown of published detections: each kind, misses by visibility, position errors."""

import math

import numpy as np
import pytest

from iphd.data.truth import PersonTruth
from iphd.eval.bag_eval import _markdown
from iphd.eval.breakdown import DetectionBreakdown, breakdown_markdown
from iphd.eval.mot import MOT_KEYS

NAN3 = (math.nan, math.nan, math.nan)

# A and B are labelled and visible; C is too hidden to be a label; D is labelled, half hidden.
A = PersonTruth(1, (100.0, 100.0, 160.0, 400.0), 1.0, (0.0, 0.0, 3.0))
B = PersonTruth(2, (300.0, 100.0, 360.0, 400.0), 0.9, (1.0, 0.0, 4.0))
C = PersonTruth(3, (500.0, 100.0, 560.0, 400.0), 0.05, (2.0, 0.0, 5.0))
D = PersonTruth(4, (650.0, 100.0, 700.0, 400.0), 0.5, (3.0, 0.0, 5.0))
PEOPLE = [A, B, C, D]
LABELLED = [A, B, D]


def _frame(breakdown, rows, positions=None, people=PEOPLE, labelled=LABELLED):
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
    pos = None if positions is None else np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    breakdown.add_frame(rows[:, :4], rows[:, 4], pos, people, labelled)


def test_each_kind_of_detection_is_counted_once():
    b = DetectionBreakdown()
    _frame(b, [
        (100, 100, 160, 400, 0.99),  # A, matched
        (100, 100, 130, 400, 0.95),  # left half of A: IoU 0.5 but A is taken -> second box
        (330, 100, 390, 400, 0.90),  # B shifted by half its width: IoU 1/3 -> loose box
        (500, 100, 560, 400, 0.80),  # on C, whom the label rule leaves out
        (780, 10, 840, 60, 0.70),  # on no one
    ])
    s = b.summary()
    assert s["detections"] == 5 and s["matched"] == 1
    assert (s["second_box"], s["loose_box"], s["unlabelled_person"], s["background"]) == (
        1, 1, 1, 1)
    assert s["fractions"]["matched"] == pytest.approx(0.2)
    assert sum(s["fractions"].values()) == pytest.approx(1.0)


def test_the_higher_score_takes_the_person_and_the_other_is_a_second_box():
    b = DetectionBreakdown()
    # Both boxes are A's exactly; the second row scores higher, so it is the match.
    _frame(b, [(100, 100, 160, 400, 0.6), (100, 100, 160, 400, 0.9)],
           positions=[(9.0, 0.0, 9.0), (0.0, 0.0, 3.2)])
    s = b.summary()
    assert s["matched"] == 1 and s["second_box"] == 1
    # The match's position is the 0.2 m one, not the second box's.
    assert s["position"]["median_m"] == pytest.approx(0.2)


def test_misses_are_split_by_visibility():
    b = DetectionBreakdown()
    _frame(b, [(100, 100, 160, 400, 0.9)])  # A found; B and D missed
    low = PersonTruth(5, (10.0, 10.0, 40.0, 90.0), 0.3, (0.0, 0.0, 2.0))
    _frame(b, [], people=[low], labelled=[low])  # a hidden labelled person, missed
    rec = b.summary()["recall_by_visibility"]
    assert rec["under_0.4"] == {"labelled": 1, "found": 0, "recall": 0.0}
    assert rec["0.4_to_0.7"] == {"labelled": 1, "found": 0, "recall": 0.0}
    assert rec["0.7_and_over"] == {"labelled": 2, "found": 1, "recall": 0.5}


def test_position_errors_are_ground_distances_and_nan_is_counted_apart():
    b = DetectionBreakdown()
    # A: 0.3 m right and 0.4 m nearer, 2 m lower (y is not on the ground) -> 0.5 m.
    # B: 1.2 m farther. D: no depth of its own.
    _frame(b, [(100, 100, 160, 400, 0.9), (300, 100, 360, 400, 0.9), (650, 100, 700, 400, 0.9)],
           positions=[(0.3, 2.0, 2.6), (1.0, 0.0, 5.2), NAN3])
    pos = b.summary()["position"]
    assert pos["with_position"] == 2 and pos["no_position"] == 1
    assert pos["median_m"] == pytest.approx(0.85)
    assert pos["over_0.5_m"] == pytest.approx(0.5)  # 0.5 itself is not over
    assert pos["over_1_m"] == pytest.approx(0.5)


def test_truth_without_a_position_is_not_compared():
    b = DetectionBreakdown()
    boxed_only = PersonTruth(9, A.box_xyxy, 1.0, NAN3)  # a 2D label
    _frame(b, [(100, 100, 160, 400, 0.9)], positions=[(0.0, 0.0, 3.0)],
           people=[boxed_only], labelled=[boxed_only])
    pos = b.summary()["position"]
    assert b.matched == 1 and pos["with_position"] == 0 and pos["median_m"] is None
    # ... and the report says why the table is empty.
    assert pos["truth_without_position"] == 1
    assert any("ground truth has no 3D position" in line
               for line in breakdown_markdown(b.summary()))


def test_without_positions_or_people_the_undefined_values_are_none():
    b = DetectionBreakdown()
    _frame(b, [(100, 100, 160, 400, 0.9)], people=[], labelled=[])
    s = b.summary()
    assert s["detections"] == 1 and s["background"] == 1
    assert s["position"]["median_m"] is None and s["position"]["over_1_m"] is None
    assert s["recall_by_visibility"]["0.7_and_over"]["recall"] is None
    empty = DetectionBreakdown().summary()
    assert empty["detections"] == 0 and empty["fractions"]["matched"] is None


def test_report_section_lists_every_kind():
    b = DetectionBreakdown()
    _frame(b, [(100, 100, 160, 400, 0.9), (780, 10, 840, 60, 0.7)],
           positions=[(0.0, 0.0, 3.0), NAN3])
    lines = "\n".join(breakdown_markdown(b.summary()))
    assert "## Where the errors come from" in lines
    for label in ("second box", "loose box", "label rule leaves out", "background", "over 1 m"):
        assert label in lines
    assert "| background (on no one) | 1 | 50.0 % |" in lines
    # A report without detections (tracks only) has no such section.
    metrics = {
        "meta": {"bag": "b"}, "mode": "recorded", "ap": {}, "mot": dict.fromkeys(MOT_KEYS),
        "hota": None, "hota_note": "n/a", "latency_ms": {}, "pairs": 0, "frames_scored": 0,
        "frames_without_truth": 0, "skipped": {}, "counters": {}, "breakdown": None,
    }
    assert "Where the errors come from" not in _markdown(metrics)
