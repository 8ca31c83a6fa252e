"""Re-ID datasets of time-paired depth and RGB person crops from the simulator."""

from collections import defaultdict

import numpy as np
import pytest

from iphd.data.reid import ReidDataset, read_records
from iphd.errors import ConfigError
from iphd.reid.data import SimReidSource
from iphd.sim.generate import generate_reid

ARGS = {"seed": 3, "identities": 4, "sessions": 2, "crops": 2, "test_fraction": 0.5}


@pytest.fixture(scope="module")
def reid(tmp_path_factory, calibration):
    out = tmp_path_factory.mktemp("reid") / "ds"
    counts = generate_reid(out, calibration=calibration, workers=1, **ARGS)
    return out, counts


@pytest.fixture(scope="module")
def records(reid):
    return {split: read_records(reid[0], split) for split in ("train", "test")}


def test_reid_is_byte_identical_for_any_workers(reid, tmp_path, calibration):
    out = tmp_path / "ds"
    assert generate_reid(out, calibration=calibration, workers=2, **ARGS) == reid[1]
    mine = {p.relative_to(reid[0]): p.read_bytes() for p in reid[0].rglob("*") if p.is_file()}
    theirs = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert mine.keys() == theirs.keys()
    assert all(mine[k] == theirs[k] for k in mine)


def test_reid_crops_are_256x128_depth_and_rgb(reid, records):
    root, counts = reid
    assert counts == {split: len(r) for split, r in records.items()}
    for split in ("train", "test"):
        dataset = ReidDataset(root, split)
        assert len(dataset) == counts[split] > 0
        for i in range(len(dataset)):
            image, record = dataset[i]
            if record.modality == "depth":
                assert image.shape == (256, 128) and image.dtype == np.uint16
                centre = image[96:160, 48:80]  # the person, not the room behind
                assert np.median(centre[centre > 0]) < 8000
            else:
                assert image.shape == (256, 128, 3) and image.dtype == np.uint8
                assert image[96:160, 48:80].std() > 0
        assert {r.modality for r in dataset.records} == {"depth", "rgb"}


@pytest.fixture(scope="module")
def letterboxed(tmp_path_factory, calibration):
    out = tmp_path_factory.mktemp("reid") / "letterbox"
    generate_reid(out, calibration=calibration, workers=1, depth_crop="letterbox", **ARGS)
    return out


def test_the_depth_crop_geometry_is_recorded_and_metric_by_default(reid, letterboxed):
    assert SimReidSource(reid[0], "train").depth_crop == "metric"
    assert SimReidSource(letterboxed, "train").depth_crop == "letterbox"
    # The same moments cut two ways: the metric window (2.4 m tall, the room around the person
    # included) mostly holds more valid depth than the letterboxed box with its zero bars; a
    # window that reaches past the image's top and bottom (zeros there) can hold less.
    metric = ReidDataset(reid[0], "train", "depth")
    boxed = ReidDataset(letterboxed, "train", "depth")
    assert [r.pair_id for r in metric.records] == [r.pair_id for r in boxed.records]
    assert [r.pid for r in metric.records] == [r.pid for r in boxed.records]
    smaller = 0
    for i in range(len(metric)):
        (m, _), (b, _) = metric[i], boxed[i]
        assert not np.array_equal(m, b)
        smaller += (m > 0).sum() >= (b > 0).sum()
    assert smaller >= 0.7 * len(metric)


def test_reid_crops_show_whole_people_not_slivers_at_the_image_border(letterboxed, records):
    """A person mostly outside the frame has visibility 1 (nothing in front of them) but is no
    re-ID sample: its letterboxed crop is a thin strip of person between zeros."""
    slivers = []
    for split in records:
        dataset = ReidDataset(letterboxed, split, "depth")
        for i in range(len(dataset)):
            image, record = dataset[i]
            # A standing person's box is about 0.2-0.45 as wide as tall: the letterboxed box
            # covers a good part of the 128 px crop width.
            cols = np.flatnonzero((image > 0).any(axis=0))
            if cols.size == 0 or cols[-1] - cols[0] + 1 < 0.25 * 128:
                slivers.append(record.path)
    assert slivers == []


def test_reid_train_and_test_identities_are_disjoint(records):
    train = {r.pid for r in records["train"]}
    test = {r.pid for r in records["test"]}
    assert train == {0, 1} and test == {2, 3}


def test_reid_pairs_have_both_modalities_at_one_moment_on_different_cameras(records):
    for split, recs in records.items():
        pairs = defaultdict(list)
        for r in recs:
            assert r.pair_id >= 0
            pairs[r.pair_id].append(r)
        for group in pairs.values():
            assert sorted(r.modality for r in group) == ["depth", "rgb"], split
            depth, rgb = sorted(group, key=lambda r: r.modality)
            assert depth.pid == rgb.pid and depth.stamp_ns == rgb.stamp_ns
            assert depth.session == rgb.session
            assert depth.camid != rgb.camid
        depth_cams = {r.camid for r in recs if r.modality == "depth"}
        rgb_cams = {r.camid for r in recs if r.modality == "rgb"}
        assert not depth_cams & rgb_cams


def test_reid_identities_are_filmed_in_several_sessions_from_several_viewpoints(records):
    for recs in records.values():
        sessions, cams, crops = defaultdict(set), defaultdict(set), defaultdict(int)
        for r in recs:
            sessions[r.pid].add(r.session)
            cams[r.pid].add(r.camid)
            crops[(r.pid, r.session, r.modality)] += 1
        for pid in sessions:
            assert len(sessions[pid]) == 2
            assert len(cams[pid]) == 4  # a depth and an RGB camera per session
        assert set(crops.values()) == {2}  # --crops 2 per identity, session and modality


@pytest.mark.parametrize(
    "kwargs, match",
    [({"identities": 1}, "--identities"), ({"sessions": 0}, "--sessions"),
     ({"crops": 0}, "--crops"), ({"test_fraction": 1.0}, "--test-fraction"),
     ({"workers": 0}, "--workers"), ({"depth_crop": "square"}, "--depth-crop")],
)
def test_generate_reid_rejects_bad_arguments_before_writing(tmp_path, calibration, kwargs, match):
    with pytest.raises((ConfigError, ValueError), match=match):
        generate_reid(tmp_path / "ds", calibration=calibration, **{**ARGS, **kwargs})
    assert list(tmp_path.iterdir()) == []
