"""CLEAR-MOT, IDF1 and HOTA of hand-computed tiny sequences, and the frame builder's filtering."""

import math

import numpy as np
import pytest

from iphd.data.truth import PersonTruth
from iphd.eval.mot import (
    HOTA_KEYS,
    MOT_KEYS,
    MotFrame,
    evaluate_hota,
    evaluate_mot,
    hota_metric,
    identity_flow,
    mot_frame,
    with_true_identities,
)
from iphd.tracking.tracker import CONFIRMED, LOST, TENTATIVE

A = (0.0, 0.0, 10.0, 20.0)
B = (20.0, 0.0, 30.0, 20.0)
FAR = (50.0, 50.0, 60.0, 70.0)


def _frame(stamp, gt, hyp):
    def split(pairs):
        ids = np.asarray([i for i, _ in pairs], dtype=np.int64)
        return ids, np.asarray([b for _, b in pairs], dtype=np.float64).reshape(-1, 4)

    return MotFrame(stamp, *split(gt), *split(hyp))


def test_perfect_tracks_score_one():
    frames = [_frame(i, [(1, A), (2, B)], [(5, A), (6, B)]) for i in range(4)]
    m = evaluate_mot(frames)
    assert m["mota"] == 1.0 and m["idf1"] == 1.0 and m["motp"] == 1.0
    assert m["num_switches"] == 0 and m["num_objects"] == 8 and m["num_predictions"] == 8
    assert m["mostly_tracked"] == 2 and m["mostly_lost"] == 0
    assert set(m) == set(MOT_KEYS)


def test_one_switch_one_miss_one_false_positive():
    frames = [
        _frame(0, [(1, A), (2, B)], [(10, A), (20, B)]),
        _frame(1, [(1, A), (2, B)], [(10, A), (30, B)]),  # person 2 switches 20 -> 30
        _frame(2, [(1, A), (2, B)], [(10, A)]),  # person 2 missed
        _frame(3, [(1, A)], [(10, A), (40, FAR)]),  # 40 matches nobody
    ]
    m = evaluate_mot(frames)
    # 7 GT boxes; MOTA = 1 - (FN 1 + FP 1 + IDSW 1) / 7.
    assert (m["num_objects"], m["num_misses"], m["num_false_positives"]) == (7, 1, 1)
    assert m["num_switches"] == 1
    assert m["mota"] == pytest.approx(4 / 7)
    # Best identity mapping: 1<->10 (4 frames), 2<->20 or 30 (1 frame): IDTP 5 of 7 + 7.
    assert m["idf1"] == pytest.approx(10 / 14)
    assert m["idp"] == pytest.approx(5 / 7) and m["idr"] == pytest.approx(5 / 7)


def test_true_identities_remove_the_switch_and_keep_the_miss_and_false_positive():
    frames = [
        _frame(0, [(1, A), (2, B)], [(10, A), (20, B)]),
        _frame(1, [(1, A), (2, B)], [(20, A), (10, B)]),  # the two tracks swap people
        _frame(2, [(1, A), (2, B)], [(10, A)]),  # person 2 missed
        _frame(3, [(1, A)], [(10, A), (40, FAR)]),  # 40 matches nobody
    ]
    real = evaluate_mot(frames)
    renamed = [with_true_identities(f) for f in frames]
    true = evaluate_mot(renamed)
    assert real["num_switches"] == 3 and true["num_switches"] == 0  # swap, and back
    assert (true["num_misses"], true["num_false_positives"]) == (1, 1)
    # IDTP 6 of 7 people and 7 hypotheses: the miss and the false positive remain.
    assert true["idf1"] == pytest.approx(12 / 14)
    assert true["idf1"] > real["idf1"]
    assert renamed[1].hyp_ids.tolist() == [1, 2]
    assert renamed[3].hyp_ids.tolist() == [1, -41]  # unmatched: its own id, below every person
    empty = with_true_identities(_frame(4, [], [(7, A)]))
    assert empty.hyp_ids.tolist() == [-8]


def test_true_identities_match_as_the_metrics_do_not_by_the_largest_iou_sum():
    # Person 1 overlaps track 7 by 0.45 and track 8 by 0.6; person 2 overlaps track 8 by 1/3.
    # 0.45 + 1/3 beats 0.6 as a sum, but only 1 <-> 8 passes IoU 0.5: the metrics match it.
    one, two = (10.0, 0.0, 20.0, 10.0), (7.0, 0.0, 13.0, 10.0)
    seven, eight = (15.5, 0.0, 20.0, 10.0), (10.0, 0.0, 16.0, 10.0)
    frames = [_frame(0, [(1, one), (2, two)], [(7, seven), (8, eight)]),
              _frame(1, [(1, one)], [(8, one)])]
    renamed = [with_true_identities(f) for f in frames]
    assert renamed[0].hyp_ids.tolist() == [-8, 1]
    real, true = evaluate_mot(frames), evaluate_mot(renamed)
    assert real["idf1"] == pytest.approx(4 / 6) and true["idf1"] == pytest.approx(4 / 6)
    assert identity_flow(frames, start_ns=0).people[1] == [(0.0, 1e-9, 8)]


def test_iou_half_matches_and_below_does_not():
    wide = (0.0, 0.0, 4.0, 1.0)
    half = (0.0, 0.0, 2.0, 1.0)  # IoU exactly 0.5
    below = (0.0, 0.0, 1.9, 1.0)  # IoU 0.475
    m = evaluate_mot([_frame(0, [(1, wide)], [(5, half)])])
    assert m["num_misses"] == 0 and m["motp"] == pytest.approx(0.5)
    m = evaluate_mot([_frame(0, [(1, wide)], [(5, below)])])
    assert m["num_misses"] == 1 and m["num_false_positives"] == 1 and m["mota"] == -1.0


def test_no_frames_gives_zero_counts_and_undefined_ratios():
    m = evaluate_mot([])
    assert m["num_objects"] == 0 and m["mota"] is None and m["idf1"] is None


def test_mot_frame_uses_label_rule_and_only_confirmed_boxes():
    people = [
        PersonTruth(1, (0.0, 0.0, 20.0, 100.0), 1.0, (0.0, 0.0, 2.0)),
        PersonTruth(2, (30.0, 0.0, 50.0, 100.0), 0.1, (0.0, 0.0, 2.0)),  # too occluded
        PersonTruth(3, (60.0, 0.0, 80.0, 10.0), 1.0, (0.0, 0.0, 9.0)),  # too small at 480 rows
    ]
    tracks = [(7, CONFIRMED, A), (8, TENTATIVE, B), (9, LOST, None), (10, CONFIRMED, None)]
    frame = mot_frame(5, people, tracks, image_height=480)
    assert frame.gt_ids.tolist() == [1]
    assert frame.hyp_ids.tolist() == [7]
    assert frame.hyp_boxes.shape == (1, 4) and frame.stamp_ns == 5
    assert not math.isnan(frame.gt_boxes[0, 0])


# HOTA (Luiten et al. 2021), hand-computed from its definition: per IoU threshold alpha,
# DetA = TP / (TP + FN + FP), AssA = mean over TPs of TPA / (TPA + FNA + FPA),
# HOTA = sqrt(DetA * AssA); reported as the mean over alpha = 0.05 .. 0.95 (19 values).


def test_hota_of_perfect_tracks_is_one():
    frames = [_frame(i, [(1, A), (2, B)], [(5, A), (6, B)]) for i in range(4)]
    h = evaluate_hota(frames)
    assert h is not None and set(h) == set(HOTA_KEYS)
    assert all(v == pytest.approx(1.0) for v in h.values())


def test_hota_halves_association_when_a_track_changes_id_halfway():
    # One person, exact boxes; track 10 for frames 0-1, track 20 for frames 2-3. Each match's
    # TPA 2, FNA 2 (the person's other two frames), FPA 0: AssA 0.5, DetA 1.
    frames = [_frame(i, [(1, A)], [(10 if i < 2 else 20, A)]) for i in range(4)]
    h = evaluate_hota(frames)
    assert h["deta"] == pytest.approx(1.0) and h["assa"] == pytest.approx(0.5)
    assert h["hota"] == pytest.approx(math.sqrt(0.5))
    assert h["assre"] == pytest.approx(0.5) and h["asspr"] == pytest.approx(1.0)


def test_hota_counts_a_miss_and_a_false_positive():
    # Frame 0 matched (track 5), frame 1 missed while track 6 sits elsewhere: TP 1, FN 1, FP 1
    # -> DetA 1/3; the match's TPA 1, FNA 1, FPA 0 -> AssA 1/2.
    frames = [_frame(0, [(1, A)], [(5, A)]), _frame(1, [(1, A)], [(6, FAR)])]
    h = evaluate_hota(frames)
    assert h["deta"] == pytest.approx(1 / 3) and h["assa"] == pytest.approx(0.5)
    assert h["hota"] == pytest.approx(math.sqrt(1 / 6))
    assert h["detre"] == pytest.approx(0.5) and h["detpr"] == pytest.approx(0.5)


def test_hota_integrates_over_the_iou_threshold():
    # IoU exactly 0.5 every frame: a match for alpha 0.05 .. 0.50 (10 of 19 thresholds), a miss
    # and a false positive above; HOTA is 1 at the first ten and 0 at the rest.
    frames = [_frame(i, [(1, (0.0, 0.0, 4.0, 1.0))], [(5, (0.0, 0.0, 2.0, 1.0))]) for i in range(3)]
    assert evaluate_hota(frames)["hota"] == pytest.approx(10 / 19)


def test_hota_without_any_match_has_no_localisation_accuracy():
    # trackeval gives LocA 1.0 when nothing matched; the report printed it beside HOTA 0.
    h = evaluate_hota([_frame(0, [(1, A)], [(5, FAR)]), _frame(1, [(1, A)], [])])
    assert h["hota"] == 0.0 and h["deta"] == 0.0 and h["loca"] is None


def test_hota_without_people_or_tracks_is_undefined_and_without_trackeval_none(monkeypatch):
    assert evaluate_hota([]) == dict.fromkeys(HOTA_KEYS)
    assert evaluate_hota([_frame(0, [], [])]) == dict.fromkeys(HOTA_KEYS)
    monkeypatch.setitem(__import__("sys").modules, "trackeval.metrics", None)
    assert hota_metric() is None
    assert evaluate_hota([_frame(0, [(1, A)], [(5, A)])]) is None


def test_identity_flow_follows_each_person_through_the_ids_that_covered_them():
    s = 100_000_000  # 10 frames a second, from t0
    t0 = 5_000_000_000
    frames = [_frame(t0 + i * s, [(1, A), (2, B)], [(7, A), (8, B)]) for i in range(5)]
    # Person 1 unmatched for 0.3 s (a box off them): still one stretch of id 7.
    frames += [_frame(t0 + i * s, [(1, A), (2, B)], [(7, FAR), (8, B)]) for i in range(5, 8)]
    frames += [_frame(t0 + i * s, [(1, A), (2, B)], [(7, A), (8, B)]) for i in range(8, 10)]
    # Then person 2 leaves for 1 s and comes back under id 7, while person 1 gets id 9.
    frames += [_frame(t0 + i * s, [(1, A)], [(9, A)]) for i in range(10, 20)]
    frames += [_frame(t0 + i * s, [(1, A), (2, B)], [(9, A), (7, B)]) for i in range(20, 23)]
    flow = identity_flow(frames, start_ns=t0 - 2_000_000_000)
    assert flow.people[1] == [(2.0, 2.9, 7), (3.0, 4.2, 9)]
    assert flow.people[2] == [(2.0, 2.9, 8), (4.0, 4.2, 7)]
    assert flow.tracks == {7: {1: 7, 2: 3}, 8: {2: 10}, 9: {1: 13}}
    # One to one: a box on two overlapping people goes to one of them.
    both = identity_flow([_frame(0, [(1, A), (2, A)], [(3, A)])], 0)
    assert sum(len(v) for v in both.people.values()) == 1
