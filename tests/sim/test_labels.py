import numpy as np
import pytest

from iphd.data.truth import PersonTruth
from iphd.sim.labels import (
    LabelConfig,
    WeakLabelConfig,
    clean_boxes,
    label_people,
    weak_boxes,
)

SIZE = (1280, 720)
NO_ERRORS = WeakLabelConfig(sequence_offset=0.0, box_offset=0.0, scale=0.0, miss_rate=0.0,
                            spurious_rate=0.0)


def _clean(n, seed=0):
    rng = np.random.default_rng(seed)
    x1 = rng.uniform(100, 900, n).round()
    y1 = rng.uniform(50, 300, n).round()
    w = rng.uniform(40, 200, n).round()
    h = rng.uniform(150, 380, n).round()
    return np.stack([x1, y1, x1 + w, y1 + h], axis=1)


def test_weak_boxes_without_errors_are_the_clean_boxes():
    clean = _clean(50)
    weak = weak_boxes(np.random.default_rng(1), clean, np.zeros(2), np.zeros((0, 4)), SIZE,
                      NO_ERRORS)
    np.testing.assert_array_equal(weak, clean)


def test_weak_boxes_shift_scale_and_miss_at_the_configured_rates():
    config = WeakLabelConfig(sequence_offset=0.0, box_offset=0.06, scale=0.08, miss_rate=0.1,
                             spurious_rate=0.0)
    clean = _clean(4000)
    rng = np.random.default_rng(2)
    kept, weak = [], []
    # One box at a time, so each weak box is matched to its clean box.
    for box in clean:
        out = weak_boxes(rng, box[None], np.zeros(2), np.zeros((0, 4)), SIZE, config)
        if len(out):
            kept.append(box)
            weak.append(out[0])
    kept, weak = np.array(kept), np.array(weak)
    assert 1.0 - len(kept) / len(clean) == pytest.approx(0.1, abs=0.015)
    w, h = kept[:, 2] - kept[:, 0], kept[:, 3] - kept[:, 1]
    dx = ((weak[:, 0] + weak[:, 2]) - (kept[:, 0] + kept[:, 2])) / 2 / w
    dy = ((weak[:, 1] + weak[:, 3]) - (kept[:, 1] + kept[:, 3])) / 2 / h
    inside = (weak[:, 0] > 0) & (weak[:, 2] < SIZE[0]) & (weak[:, 3] < SIZE[1]) & (weak[:, 1] > 0)
    assert dx[inside].std() == pytest.approx(0.06, rel=0.1)
    assert dy[inside].std() == pytest.approx(0.06, rel=0.1)
    assert abs(dx.mean()) < 0.005
    log_scale = np.log((weak[inside, 2] - weak[inside, 0]) / w[inside])
    assert log_scale.std() == pytest.approx(0.08, rel=0.1)


def test_sequence_shift_moves_every_box_the_same_way():
    config = WeakLabelConfig(sequence_offset=0.05, box_offset=0.0, scale=0.0, miss_rate=0.0,
                             spurious_rate=0.0)
    clean = _clean(20)
    weak = weak_boxes(np.random.default_rng(0), clean, np.array([0.1, -0.05]), np.zeros((0, 4)),
                      (10_000, 10_000), config)
    w, h = clean[:, 2] - clean[:, 0], clean[:, 3] - clean[:, 1]
    np.testing.assert_allclose((weak[:, 0] - clean[:, 0]) / w, 0.1)
    np.testing.assert_allclose((weak[:, 1] - clean[:, 1]) / h, -0.05)


def test_spurious_boxes_land_on_warm_objects_in_view():
    config = WeakLabelConfig(sequence_offset=0.0, box_offset=0.0, scale=0.0, miss_rate=0.0,
                             spurious_rate=3.0)
    warm = np.array([[600.0, 300.0, 640.0, 340.0]])
    rng = np.random.default_rng(5)
    extra = np.concatenate([weak_boxes(rng, np.zeros((0, 4)), np.zeros(2), warm, SIZE, config)
                            for _ in range(200)])
    assert len(extra) / 200 == pytest.approx(3.0, rel=0.1)
    centres = (extra[:, :2] + extra[:, 2:]) / 2
    np.testing.assert_allclose(centres[:, 0], 620.0, atol=1e-6)
    # Tall, person-like boxes (clipped to the image at most).
    assert ((extra[:, 3] - extra[:, 1]) > (extra[:, 2] - extra[:, 0])).all()


def test_weak_boxes_are_clipped_to_the_image():
    clean = np.array([[-50.0, -20.0, 100.0, 400.0], [1200.0, 600.0, 1300.0, 800.0]])
    weak = weak_boxes(np.random.default_rng(0), clean, np.zeros(2), np.zeros((0, 4)), SIZE,
                      WeakLabelConfig(spurious_rate=0.0, miss_rate=0.0))
    assert (weak[:, [0, 1]] >= 0).all()
    assert (weak[:, 2] <= SIZE[0]).all() and (weak[:, 3] <= SIZE[1]).all()


@pytest.mark.parametrize(
    "kwargs", [{"box_offset": -0.1}, {"scale": -1.0}, {"miss_rate": 1.5}, {"spurious_rate": -1}]
)
def test_weak_label_config_rejects_bad_rates(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        WeakLabelConfig(**kwargs)


def test_label_people_keeps_people_seen_well_enough():
    people = [
        PersonTruth(1, (10.0, 10.0, 60.0, 200.0), 1.0, (0.0, 0.0, 3.0)),
        PersonTruth(2, (10.0, 10.0, 60.0, 30.0), 1.0, (0.0, 0.0, 9.0)),  # 20 px tall
        PersonTruth(3, (10.0, 10.0, 60.0, 200.0), 0.1, (0.0, 0.0, 3.0)),  # hidden
        PersonTruth(4, (10.0, 10.0, 14.0, 200.0), 1.0, (0.0, 0.0, 3.0)),  # 4 px sliver
    ]
    assert [p.pid for p in label_people(people, 720)] == [1]
    # Thresholds scale with the image: at 1440 rows, 190 px tall still counts, 20 px not.
    assert [p.pid for p in label_people(people, 1440)] == [1]
    assert [p.pid for p in label_people(people, 720, LabelConfig(min_visibility=0.05))] == [1, 3]
    np.testing.assert_array_equal(clean_boxes(people, 720), [[10.0, 10.0, 60.0, 200.0]])
    assert clean_boxes([], 720).shape == (0, 4)
