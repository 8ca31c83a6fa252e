import math

import numpy as np
import pytest

from iphd.detection.verifier import (
    FEATURE_NAMES,
    SHIPPED_VERIFIER,
    BoxVerifier,
    box_features,
    detector_fingerprint,
    detector_fingerprints,
    detector_mismatch,
    load_box_verifier,
    load_verifier,
    verify,
)
from iphd.detections import DetectionConfig, PersonDetection, checked_detections
from iphd.errors import CheckpointError, ConfigError
from iphd.sensors.frames import CameraIntrinsics

INTR = CameraIntrinsics(width=200, height=100, fx=100.0, fy=100.0, cx=99.5, cy=49.5)
F = {name: i for i, name in enumerate(FEATURE_NAMES)}
NAN3 = (math.nan, math.nan, math.nan)


def _depth():
    """A person 2 m away (columns 40-80, rows 10-90) in front of a wall at 6 m, left edge void."""
    depth = np.full((100, 200), 6000, np.uint16)
    depth[10:90, 40:80] = 2000
    depth[:, :10] = 0
    return depth


def _person(box, score, position=(0.0, 0.0, 2.0), contrast=math.nan, coverage=0.0):
    return PersonDetection(box, score, position, math.nan, contrast, coverage)


def _feature(rows, j, name):
    return rows[j, F[name]]


def test_features_describe_the_box_its_depth_and_the_boxes_around_it():
    whole = _person((40.0, 10.0, 80.0, 90.0), 0.9, (0.0, 0.0, 2.0), contrast=5.0, coverage=1.0)
    # The upper half of the same person, scored lower: a second box.
    part = _person((40.0, 10.0, 80.0, 50.0), 0.7, (0.1, 0.0, 2.0))
    # A box on the wall, with no depth of its own.
    wall = _person((120.0, 20.0, 160.0, 80.0), 0.6, NAN3)
    rows = box_features([whole, part, wall], _depth(), INTR)
    assert rows.shape == (3, len(FEATURE_NAMES))
    # The best box: nothing above it, 80 px tall at 2 m with fy 100 = 1.6 m, all its own.
    assert _feature(rows, 0, "rank") == 0 and _feature(rows, 0, "iou_higher") == 0
    assert _feature(rows, 0, "height_m") == pytest.approx(1.6)
    assert _feature(rows, 0, "width_m") == pytest.approx(0.8)
    assert _feature(rows, 0, "own_fraction") == pytest.approx(1.0)
    assert _feature(rows, 0, "thermal_contrast_k") == 5.0
    assert _feature(rows, 0, "no_contrast") == 0.0
    assert _feature(rows, 0, "lower_inside") == pytest.approx(1.0)  # the part lies inside it
    # The part: wholly inside the best box, half its area, 0.1 m from it on the ground.
    assert _feature(rows, 1, "inside_higher") == pytest.approx(1.0)
    assert _feature(rows, 1, "iou_higher") == pytest.approx(0.5)
    assert _feature(rows, 1, "area_ratio_higher") == pytest.approx(0.5)
    assert _feature(rows, 1, "ground_distance_higher_m") == pytest.approx(0.1)
    assert _feature(rows, 1, "score_higher") == pytest.approx(0.9)
    assert _feature(rows, 1, "no_contrast") == 1.0
    # The wall box: no position, so no metric size and no ground distance; all background.
    assert _feature(rows, 2, "no_position") == 1.0 and _feature(rows, 2, "height_m") == 0.0
    assert _feature(rows, 2, "no_ground_distance") == 1.0
    assert _feature(rows, 2, "valid_fraction") == pytest.approx(1.0)
    assert _feature(rows, 2, "detections") == 3
    assert np.all(np.isfinite(rows))


def test_features_of_an_empty_frame_and_of_boxes_at_the_image_edges():
    assert box_features([], _depth(), INTR).shape == (0, len(FEATURE_NAMES))
    edge = _person((0.0, 0.0, 30.0, 100.0), 0.8, NAN3)
    rows = box_features([edge], _depth(), INTR)
    assert _feature(rows, 0, "at_left") == 1 and _feature(rows, 0, "at_top") == 1
    assert _feature(rows, 0, "at_bottom") == 1 and _feature(rows, 0, "at_right") == 0
    assert _feature(rows, 0, "valid_fraction") == pytest.approx(20 / 30)
    # In front of the person: a box over the person and the wall at a 6 m position.
    far = _person((30.0, 10.0, 90.0, 90.0), 0.8, (0.0, 0.0, 6.0))
    rows = box_features([far], _depth(), INTR)
    assert _feature(rows, 0, "front_fraction") == pytest.approx(40 / 60)
    assert _feature(rows, 0, "own_fraction") == pytest.approx(20 / 60)


def _verifier_on(name, weight=10.0, bias=0.0, threshold=0.5):
    """A verifier whose probability is sigmoid(weight * feature + bias) of one raw feature."""
    n = len(FEATURE_NAMES)
    w1 = np.zeros((n, 2))
    w1[F[name], 0] = 1.0
    w1[F[name], 1] = -1.0
    w2 = np.eye(2)
    w3 = np.array([[weight], [-weight]])
    return BoxVerifier(np.zeros(n), np.ones(n), ((w1, np.zeros(2)), (w2, np.zeros(2)),
                                                 (w3, np.array([bias]))), threshold, "test")


def test_a_verifier_file_round_trips_and_bad_files_are_named(tmp_path):
    verifier = _verifier_on("inside_higher", weight=-10.0, bias=5.0, threshold=0.3)
    path = tmp_path / "v.npz"
    verifier.save(path)
    loaded = load_verifier(path)
    rows = np.random.default_rng(0).uniform(0, 1, (5, len(FEATURE_NAMES)))
    np.testing.assert_allclose(loaded(rows), verifier(rows))
    assert loaded.threshold == 0.3 and loaded.source == "test"
    with pytest.raises(CheckpointError, match="does not exist.*train_verifier.py"):
        load_verifier(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(CheckpointError, match="not a verifier file"):
        load_verifier(tmp_path / "junk.npz")
    # A file made for other features is refused, not misread.
    data = dict(np.load(path))
    data["feature_names"] = np.asarray(FEATURE_NAMES[:-1])
    np.savez(tmp_path / "old.npz", **data)
    with pytest.raises(CheckpointError, match="feature version.*re-train"):
        load_verifier(tmp_path / "old.npz")
    with pytest.raises(CheckpointError, match="layer 0"):
        BoxVerifier(np.zeros(len(FEATURE_NAMES)), np.ones(len(FEATURE_NAMES)),
                    ((np.zeros((3, 2)), np.zeros(2)),))


def test_the_shipped_verifier_loads_and_none_turns_it_off():
    assert SHIPPED_VERIFIER.is_file()
    shipped = load_box_verifier("")
    assert shipped is not None and 0.0 < shipped.threshold < 1.0
    assert load_box_verifier("none") is None and load_box_verifier("None") is None


def test_a_verifier_names_the_detector_it_was_fitted_on_and_another_one_is_said(tmp_path):
    import dataclasses

    from iphd.detection.detector import SHIPPED_CHECKPOINT

    mine, other = tmp_path / "mine.pt", tmp_path / "other.pt"
    mine.write_bytes(b"fine-tuned weights")
    other.write_bytes(b"other weights")
    verifier = dataclasses.replace(_verifier_on("inside_higher", weight=-10.0, bias=5.0),
                                   detector_sha256=detector_fingerprint(mine))
    verifier.save(tmp_path / "v.npz")
    loaded = load_verifier(tmp_path / "v.npz")
    assert loaded.detector_sha256 == detector_fingerprint(mine) != detector_fingerprint(other)
    assert detector_mismatch(str(tmp_path / "v.npz"), loaded, mine) is None
    problem = detector_mismatch(str(tmp_path / "v.npz"), loaded, other)
    assert problem is not None and "another detector's boxes" in problem
    assert f"--detector-checkpoint {other}" in problem
    # The shipped file records the shipped detector.
    shipped = load_box_verifier("")
    assert shipped is not None
    assert shipped.detector_sha256 in detector_fingerprints(SHIPPED_CHECKPOINT)
    assert detector_mismatch("", shipped, SHIPPED_CHECKPOINT) is None
    assert detector_mismatch(str(SHIPPED_VERIFIER), shipped, SHIPPED_CHECKPOINT) is None
    problem = detector_mismatch("", shipped, mine)
    assert problem is not None and "another detector's boxes" in problem
    # A shipped file without the record (as before 2026-12-07) suits the shipped detector only.
    unrecorded = dataclasses.replace(shipped, detector_sha256="")
    assert detector_mismatch("", unrecorded, SHIPPED_CHECKPOINT) is None
    problem = detector_mismatch("", unrecorded, mine)
    assert problem is not None and "the shipped detector's boxes" in problem
    # A file of its own without the record (written before it) and no verifier: nothing to say.
    data = dict(np.load(tmp_path / "v.npz"))
    del data["detector_sha256"]
    np.savez(tmp_path / "older.npz", **data)
    older = load_verifier(tmp_path / "older.npz")
    assert older.detector_sha256 == ""
    assert detector_mismatch(str(tmp_path / "older.npz"), older, other) is None
    assert detector_mismatch("none", None, other) is None


def test_verify_leaves_out_the_boxes_under_the_threshold():
    whole = _person((40.0, 10.0, 80.0, 90.0), 0.9)
    part = _person((40.0, 10.0, 80.0, 50.0), 0.7)
    verifier = _verifier_on("inside_higher", weight=-10.0, bias=5.0)  # inside: unlikely
    kept, left, probabilities = verify([whole, part], _depth(), INTR, verifier, 0.5)
    assert kept == [0] and left == [1]
    assert probabilities[0] > 0.99 and probabilities[1] < 0.01
    assert verify([], _depth(), INTR, verifier, 0.5)[2].shape == (0,)


class _Found:
    def __init__(self, boxes, scores):
        self.boxes_xyxy = np.asarray(boxes, dtype=np.float32)
        self.scores = np.asarray(scores, dtype=np.float32)


def test_checked_detections_applies_the_verifier_after_the_thermal_check():
    found = _Found([[40, 10, 80, 90], [40, 10, 80, 50]], [0.9, 0.7])
    noise = np.random.default_rng(0).normal(0.0, 5.0, (25, 50))  # real readings are noisy
    thermal = np.round(29_500 + noise).astype(np.uint16)
    thermal[2:23, 10:20] += 1_000  # the person, 10 K above the room
    verifier = _verifier_on("inside_higher", weight=-10.0, bias=5.0, threshold=0.5)
    config = DetectionConfig(score_threshold=0.5)
    published, cold, unverified = checked_detections(
        found, _depth(), thermal, INTR, config, verifier
    )
    assert [p.score for p in published] == [pytest.approx(0.9)] and cold == []
    assert [p.score for p in unverified] == [pytest.approx(0.7)]
    # The verifier needs the thermal contrast, so it is measured with it even with the check off.
    assert published[0].thermal_coverage > 0.9
    assert published[0].thermal_contrast_k == pytest.approx(10.0, abs=0.5)
    # 0 publishes every box; without a verifier nothing is left out.
    every = DetectionConfig(score_threshold=0.5, min_verifier_probability=0.0)
    assert len(checked_detections(found, _depth(), thermal, INTR, every, verifier)[0]) == 2
    assert checked_detections(found, _depth(), thermal, INTR, config)[2] == []
    # The file's threshold applies when the parameter is negative: 0.999 leaves out both.
    strict = _verifier_on("inside_higher", weight=-10.0, bias=5.0, threshold=0.99999)
    assert checked_detections(found, _depth(), thermal, INTR, config, strict)[0] == []


@pytest.mark.parametrize("value", [1.5, math.nan, math.inf])
def test_a_bad_verifier_probability_is_refused(value):
    with pytest.raises(ConfigError, match="min_verifier_probability"):
        DetectionConfig(min_verifier_probability=value)
