import math
import pickle

import cv2
import numpy as np
import pytest

from iphd.errors import DatasetError
from iphd.eval.iphd_ap import (
    average_precision,
    evaluate,
    iou_matrix,
    match_frame,
    plot_pr,
    read_submission,
    submission,
    write_submission,
)

GT_A = [0.0, 0.0, 10.0, 10.0]
GT_B = [6.0, 0.0, 16.0, 10.0]


def _pred(box, score):
    return np.array([[*box, score]], dtype=np.float64)


def test_iou_matrix_values_and_shape():
    pred = np.array([GT_A, [2.0, 0.0, 12.0, 10.0], [50.0, 50.0, 60.0, 60.0]])
    iou = iou_matrix(pred, np.array([GT_A, GT_B]))
    assert iou.shape == (3, 2) and iou.dtype == np.float64
    # [2,0,12,10] vs A: 80 / 120; vs B: 60 / 140.
    np.testing.assert_allclose(iou, [[1.0, 40 / 160], [80 / 120, 60 / 140], [0.0, 0.0]])
    assert iou_matrix(np.zeros((0, 4)), np.array([GT_A])).shape == (0, 1)


def test_perfect_frame_has_ap_one_at_every_threshold():
    gt = {"vid00001_00000001": np.array([GT_A, [20.0, 20.0, 40.0, 60.0]])}
    pred = {"vid00001_00000001": np.array([[*GT_A, 0.9], [20.0, 20.0, 40.0, 60.0, 0.8]])}
    result = evaluate(pred, gt)
    assert result["thresholds"] == (0.25, 0.5, 0.75)
    assert result["n_gt"] == 2 and result["n_pred"] == 2
    for threshold in result["thresholds"]:
        assert result["ap"][threshold] == pytest.approx(1.0)
        np.testing.assert_allclose(result["recall"][threshold], [0.5, 1.0])


def test_no_fall_back_to_next_best_ground_truth():
    # The second prediction's best GT is A (IoU 0.667), already taken by the exact first
    # prediction; B would qualify (IoU 0.43 >= 0.25) but there is no fall-back: FP.
    pred = np.array([GT_A, [2.0, 0.0, 12.0, 10.0]])
    flags = match_frame(pred, np.array([0.9, 0.8]), np.array([GT_A, GT_B]), 0.25)
    np.testing.assert_array_equal(flags, [True, False])
    result = evaluate(
        {"f": np.column_stack((pred, [0.9, 0.8]))}, {"f": np.array([GT_A, GT_B])}, (0.25,)
    )
    # TP, FP with 2 GT: envelope 1 over recall [0, 0.5] -> AP 0.5.
    assert result["ap"][0.25] == pytest.approx(0.5)


def test_flags_follow_input_order_and_score_order_decides():
    # Listed low-score first: the 0.9 prediction is visited first and takes A.
    pred = np.array([[1.0, 0.0, 11.0, 10.0], GT_A])
    flags = match_frame(pred, np.array([0.3, 0.9]), np.array([GT_A]), 0.5)
    np.testing.assert_array_equal(flags, [False, True])


def test_equal_scores_keep_input_order():
    pred = np.array([[1.0, 0.0, 11.0, 10.0], GT_A])
    flags = match_frame(pred, np.array([0.5, 0.5]), np.array([GT_A]), 0.5)
    np.testing.assert_array_equal(flags, [True, False])


def test_false_positive_does_not_claim_its_ground_truth():
    # The top prediction overlaps A below threshold (IoU 0.3): FP, and A stays free.
    pred = np.array([[0.0, 0.0, 10.0, 3.0], GT_A])
    flags = match_frame(pred, np.array([0.9, 0.8]), np.array([GT_A]), 0.5)
    np.testing.assert_array_equal(flags, [False, True])


def test_predictions_on_frames_without_ground_truth_are_false_positives():
    gt = {"a": np.array([GT_A]), "b": np.zeros((0, 4))}
    clean = evaluate({"a": _pred(GT_A, 0.5)}, gt, (0.5,))
    noisy = evaluate({"a": _pred(GT_A, 0.5), "b": _pred(GT_B, 0.9)}, gt, (0.5,))
    assert clean["ap"][0.5] == pytest.approx(1.0)
    # Ranked FP (0.9), TP (0.5): precision [0, 0.5], recall [0, 1] -> AP = 1 * 0.5.
    assert noisy["ap"][0.5] == pytest.approx(0.5)
    assert noisy["n_pred"] == 2
    np.testing.assert_allclose(noisy["precision"][0.5], [0.0, 0.5])


def test_frame_missing_from_predictions_counts_as_missed():
    gt = {"a": np.array([GT_A]), "c": np.array([GT_B])}
    result = evaluate({"a": _pred(GT_A, 0.7)}, gt, (0.5,))
    assert result["n_gt"] == 2
    assert result["recall"][0.5][-1] == pytest.approx(0.5)
    assert result["ap"][0.5] == pytest.approx(0.5)


def test_all_point_interpolation_hand_computed():
    # TP, FP, TP with 3 GT: precision 1, 1/2, 2/3; recall 1/3, 1/3, 2/3.
    # Envelope from the right: 1, 2/3, 2/3 -> AP = 1*(1/3) + (2/3)*(1/3) = 5/9 = 0.5556.
    ap = average_precision(np.array([True, False, True]), np.array([0.9, 0.8, 0.7]), 3)
    assert ap == pytest.approx(5 / 9)
    # Unsorted input is ranked by score first: same answer.
    shuffled = average_precision(np.array([True, True, False]), np.array([0.7, 0.9, 0.8]), 3)
    assert shuffled == pytest.approx(5 / 9)
    # FP, TP, TP with 2 GT: precision 0, 1/2, 2/3; recall 0, 1/2, 1. The envelope lifts the
    # 1/2 at recall 1/2 to 2/3 -> AP = 2/3 * 1/2 + 2/3 * 1/2 = 0.6667.
    ap = average_precision(np.array([False, True, True]), np.array([0.9, 0.8, 0.7]), 2)
    assert ap == pytest.approx(2 / 3)


def test_average_precision_edge_cases():
    assert math.isnan(average_precision(np.array([False]), np.array([0.5]), 0))
    assert average_precision(np.zeros(0, dtype=bool), np.zeros(0), 4) == 0.0
    with pytest.raises(ValueError, match="n_gt"):
        average_precision(np.array([True, True]), np.array([0.9, 0.8]), 1)


def test_threshold_dependence():
    # Prediction [0,0,10,4] vs GT [0,0,10,10]: IoU 0.4 -> TP at 0.25, FP at 0.5 and 0.75.
    result = evaluate({"f": _pred([0.0, 0.0, 10.0, 4.0], 0.8)}, {"f": np.array([GT_A])})
    assert result["ap"][0.25] == pytest.approx(1.0)
    assert result["ap"][0.5] == 0.0
    assert result["ap"][0.75] == 0.0


def test_unknown_prediction_frame_raises_naming_it():
    with pytest.raises(DatasetError, match="vid99999_00000007"):
        evaluate({"vid99999_00000007": _pred(GT_A, 0.5)}, {"a": np.array([GT_A])})


def test_malformed_boxes_raise():
    with pytest.raises(DatasetError, match=r"\(K, 5\)"):
        evaluate({"a": np.array([GT_A])}, {"a": np.array([GT_A])})


def test_submission_normalises_and_round_trips(tmp_path):
    preds = {
        "vid00001_00000001": np.array(
            [[0.0, 0.0, 640.0, 360.0, 0.9], [1200.0, 700.0, 1400.0, 800.0, 0.4]]
        ),
        "vid00001_00000002": np.zeros((0, 5)),
    }
    sizes = {"vid00001_00000001": (1280, 720), "vid00001_00000002": (1280, 720)}
    sub = submission(preds, sizes)
    # Second box clipped to [1200, 700, 1280, 720] -> centre (1240, 710), size 80 x 20.
    np.testing.assert_allclose(
        sub["vid00001_00000001"],
        [[0.25, 0.25, 0.5, 0.5, 0.9], [1240 / 1280, 710 / 720, 80 / 1280, 20 / 720, 0.4]],
    )
    assert sub["vid00001_00000002"] == []
    path = tmp_path / "out" / "submission.pkl"
    written = write_submission(path, preds, sizes)
    assert read_submission(path) == written == sub
    assert sorted(p.name for p in path.parent.iterdir()) == ["submission.pkl"]


def test_submission_needs_every_size():
    with pytest.raises(DatasetError, match="vid00001_00000003"):
        submission({"vid00001_00000003": _pred(GT_A, 0.5)}, {})


def test_read_submission_rejects_other_pickles(tmp_path):
    path = tmp_path / "bad.pkl"
    path.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(DatasetError, match="not an IPHD submission"):
        read_submission(path)
    with pytest.raises(DatasetError, match="does not exist"):
        read_submission(tmp_path / "missing.pkl")


def test_plot_pr_writes_png(tmp_path):
    gt = {"a": np.array([GT_A]), "b": np.array([GT_B])}
    preds = {"a": _pred([0.0, 0.0, 10.0, 4.0], 0.8), "b": _pred(GT_B, 0.6)}
    result = evaluate(preds, gt)
    path = plot_pr(result, tmp_path / "plots" / "pr.png")
    image = cv2.imread(str(path))
    assert image is not None and image.shape == (640, 640, 3)
    assert (image != 255).any()
