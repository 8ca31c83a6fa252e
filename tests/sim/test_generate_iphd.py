"""IPHD-format datasets from ``generate_iphd``: format, determinism, labels and statistics."""

import gc
import json
import re
import tracemalloc

import numpy as np
import pytest
import yaml
from simscene import box_iou

from iphd.data.iphd import (
    IPHD_SPLITS,
    IphdDataset,
    cxcywh_to_xyxy,
    read_yolo_labels,
    split_dir,
)
from iphd.data.output import read_png
from iphd.errors import ConfigError
from iphd.registration import Registrar
from iphd.sim.generate import generate_iphd, plan_iphd, sequence_seeds, split_sequences
from iphd.sim.labels import LabelConfig, WeakLabelConfig
from iphd.sim.rig import SensorConfig, depth_profile

NAME = re.compile(r"vid(\d{5})_(\d{8})")
NO_ERRORS = WeakLabelConfig(sequence_offset=0.0, box_offset=0.0, scale=0.0, miss_rate=0.0,
                            spurious_rate=0.0)


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _names(root, split):
    text = (split_dir(root, split, "depth") / "list.txt").read_text()
    return [line[len("images/"):-len(".png")] for line in text.splitlines()]


def _labels(root, split, name, folder="labels", modality="depth"):
    boxes = read_yolo_labels(split_dir(root, split, modality) / folder / f"{name}.txt")
    return cxcywh_to_xyxy(boxes, 1280, 720)


def _meta(root, split):
    lines = (split_dir(root, split, "depth") / "meta.jsonl").read_text().splitlines()
    return {r["name"]: r for r in map(json.loads, lines)}


# --- determinism -----------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_datasets_for_any_workers(iphd_seed1, iphd_seed1_cli):
    one = _files(iphd_seed1[0])
    two = _files(iphd_seed1_cli)
    # per pair: 2 images + 4 label files; per split: 2 lists + meta; simulator.yaml
    assert len(one) == 12 * 2 * 3 + 3 * 3 + 1
    assert one.keys() == two.keys()
    different = [k for k in one if one[k] != two[k]]
    assert different == []


def test_different_seeds_give_different_scenes_people_and_motion(iphd_seed1, iphd_seed2):
    a, b = iphd_seed1[0], iphd_seed2[0]
    depth_a = read_png(split_dir(a, "train", "depth") / "images" / f"{_names(a, 'train')[0]}.png")
    depth_b = read_png(split_dir(b, "train", "depth") / "images" / f"{_names(b, 'train')[0]}.png")
    assert np.mean(depth_a != depth_b) > 0.5
    truth_a = [p for r in _meta(a, "train").values() for p in r["people"]]
    truth_b = [p for r in _meta(b, "train").values() for p in r["people"]]
    assert {p["pid"] for p in truth_a} != {p["pid"] for p in truth_b}
    assert sorted(p["position_m"] for p in truth_a) != sorted(p["position_m"] for p in truth_b)
    assert iphd_seed1[1] != iphd_seed2[1]


# --- format ----------------------------------------------------------------------------------


def test_dataset_has_the_iphd_layout(iphd_seed1):
    root, summary = iphd_seed1
    assert sorted(p.name for p in root.iterdir()) == sorted(
        [f"iphd_{s}_{m}" for s in IPHD_SPLITS for m in ("depth", "thermal")] + ["simulator.yaml"])
    manifest = yaml.safe_load((root / "simulator.yaml").read_text())
    assert manifest["generator"] == "iphd-sim iphd" and manifest["seed"] == 1
    for split in IPHD_SPLITS:
        names = _names(root, split)
        assert len(names) == summary.frames[split] == 4
        assert names == sorted(names)
        for modality in ("depth", "thermal"):
            folder = split_dir(root, split, modality)
            assert (folder / "list.txt").read_text() == "".join(f"images/{n}.png\n" for n in names)
            assert sorted(p.stem for p in (folder / "images").iterdir()) == names
            for labels in ("labels", "labels_clean"):
                assert sorted(p.stem for p in (folder / labels).glob("*.txt")) == names
        for name in names:
            assert NAME.fullmatch(name)
            for labels in ("labels", "labels_clean"):
                depth_txt = split_dir(root, split, "depth") / labels / f"{name}.txt"
                thermal_txt = split_dir(root, split, "thermal") / labels / f"{name}.txt"
                assert depth_txt.read_bytes() == thermal_txt.read_bytes()
        assert set(_meta(root, split)) == set(names)


def test_images_are_16_bit_depth_in_mm_and_thermal_in_centikelvin(iphd_seed1):
    root, _ = iphd_seed1
    for split in IPHD_SPLITS:
        for name in _names(root, split):
            depth = read_png(split_dir(root, split, "depth") / "images" / f"{name}.png")
            thermal = read_png(split_dir(root, split, "thermal") / "images" / f"{name}.png")
            assert depth.dtype == np.uint16 and depth.shape == (720, 1280)
            assert thermal.dtype == np.uint16 and thermal.shape == (120, 213)
            valid = depth[depth > 0]
            assert 280 <= valid.min() and valid.max() < 13_000  # millimetres, within ~10 m
            assert 1_000 < np.median(valid) < 9_000
            warm = thermal[thermal > 0] / 100.0
            assert 270.0 < np.percentile(warm, 1) and np.percentile(warm, 99) < 320.0
            assert 285.0 < np.median(warm) < 305.0  # room air 291-298 K, or someone close


def test_thermal_is_registered_with_the_projects_registration(iphd_seed1, calibration):
    """Zero patches arise as in IPHD: no valid depth under a pixel, or outside the Lepton view."""
    root, _ = iphd_seed1
    registrar = Registrar(depth_profile("aligned_1280x720"), calibration, (213, 120))
    for split in IPHD_SPLITS:
        for name in _names(root, split):
            depth = read_png(split_dir(root, split, "depth") / "images" / f"{name}.png")
            thermal = read_png(split_dir(root, split, "thermal") / "images" / f"{name}.png")
            assert (thermal[registrar.sample_depth(depth) == 0] == 0).all()
            assert (thermal[~registrar.candidate_mask] == 0).all()
            # Most pixels that can see the Lepton view with valid depth have a temperature.
            reachable = (registrar.sample_depth(depth) > 0) & registrar.candidate_mask
            assert (thermal[reachable] > 0).mean() > 0.85


def test_labels_are_yolo_boxes_of_the_ground_truth(iphd_seed1):
    root, _ = iphd_seed1
    config = LabelConfig()
    labelled = 0
    for split in IPHD_SPLITS:
        meta = _meta(root, split)
        for name in _names(root, split):
            for folder in ("labels", "labels_clean"):
                text = (split_dir(root, split, "depth") / folder / f"{name}.txt").read_text()
                for line in text.splitlines():
                    fields = line.split()
                    assert fields[0] == "0" and len(fields) == 5
                    assert all(0.0 <= float(v) <= 1.0 for v in fields[1:])
            clean = _labels(root, split, name, "labels_clean")
            expected = [p["box_xyxy"] for p in meta[name]["people"]
                        if p["visibility"] >= config.min_visibility
                        and p["box_xyxy"][3] - p["box_xyxy"][1] >= config.min_height_px
                        and p["box_xyxy"][2] - p["box_xyxy"][0] >= config.min_width_px]
            assert len(clean) == len(expected)
            for box in expected:
                assert np.abs(clean - box).max(axis=1).min() < 0.01
            labelled += len(clean)
    assert labelled >= 6


def test_splits_are_by_sequence(iphd_stats):
    root, summary = iphd_stats
    seqs = {s: {int(NAME.fullmatch(n).group(1)) for n in _names(root, s)} for s in IPHD_SPLITS}
    assert all(seqs.values())
    assert not seqs["train"] & seqs["valid"]
    assert not seqs["train"] & seqs["test"]
    assert not seqs["valid"] & seqs["test"]
    assert summary.frames == {"train": 56, "valid": 12, "test": 12}
    # Frames of a sequence are later and later depth frames of one scene.
    for split in IPHD_SPLITS:
        by_seq = {}
        for n in _names(root, split):
            seq, frame = (int(g) for g in NAME.fullmatch(n).groups())
            by_seq.setdefault(seq, []).append(frame)
        for frames in by_seq.values():
            assert len(frames) == 4 and len(set(frames)) == 4


def test_reader_opens_every_split_with_both_label_sets(iphd_seed1):
    root, _ = iphd_seed1
    for split in IPHD_SPLITS:
        for labels in ("weak", "clean"):
            dataset = IphdDataset(root, split, labels=labels)
            assert len(dataset) == 4
            sample = dataset[0]
            assert sample.depth_mm.shape == (720, 1280) and sample.thermal_ck.shape == (120, 213)
            assert sample.boxes_xyxy.shape[1] == 4


def test_weak_labels_are_close_to_the_clean_ones_but_not_equal(iphd_stats):
    root, _ = iphd_stats
    ious, weak_n, clean_n, differ = [], 0, 0, 0
    for split in IPHD_SPLITS:
        for name in _names(root, split):
            weak, clean = _labels(root, split, name), _labels(root, split, name, "labels_clean")
            weak_n += len(weak)
            clean_n += len(clean)
            differ += not np.array_equal(weak, clean)
            for box in clean:
                if len(weak):
                    ious.append(max(box_iou(box, w) for w in weak))
    assert clean_n > 60
    assert differ > 0.5 * sum(1 for s in IPHD_SPLITS for _ in _names(root, s))
    ious = np.array(ious)
    # Shifted and scaled by ~6-8 % of the box: mostly overlapping, rarely exact.
    assert 0.6 < np.median(ious) < 0.95
    assert np.mean(ious > 0.99) < 0.2
    assert 0.75 * clean_n < weak_n < 1.25 * clean_n


def test_weak_labels_without_errors_equal_the_clean_ones(tmp_path, calibration):
    out = tmp_path / "ds"
    done = []
    generate_iphd(out, seed=3, frames=8, frames_per_sequence=4, workers=2, weak=NO_ERRORS,
                  calibration=calibration, progress=done.append)
    assert sum(done) == 8  # the progress bar is told about every pair
    boxes = 0
    for split in IPHD_SPLITS:
        for name in _names(out, split):
            folder = split_dir(out, split, "depth")
            weak = (folder / "labels" / f"{name}.txt").read_bytes()
            assert weak == (folder / "labels_clean" / f"{name}.txt").read_bytes()
            boxes += weak.count(b"\n")
    assert boxes > 0


# --- statistics ------------------------------------------------------------------------------


def test_statistics_are_close_to_iphd(iphd_stats):
    """Measured on the written files: zero thermal, invalid depth, people, range, occlusion."""
    root, summary = iphd_stats
    zero, invalid, per_frame, distances, visibility = [], [], [], [], []
    for split in IPHD_SPLITS:
        meta = _meta(root, split)
        for name in _names(root, split):
            thermal = read_png(split_dir(root, split, "thermal") / "images" / f"{name}.png")
            depth = read_png(split_dir(root, split, "depth") / "images" / f"{name}.png")
            zero.append((thermal == 0).mean())
            invalid.append((depth == 0).mean())
            clean = _labels(root, split, name, "labels_clean")
            per_frame.append(len(clean))
            for p in meta[name]["people"]:
                if any(np.abs(clean - p["box_xyxy"]).max(axis=1) < 0.01):
                    distances.append(np.hypot(p["position_m"][0], p["position_m"][2]))
                    visibility.append(p["visibility"])
    zero, invalid = np.mean(zero), np.mean(invalid)
    assert 0.12 < zero < 0.30  # IPHD: about 20 % zero pixels in the registered thermal
    assert 0.02 < invalid < 0.10  # IPHD: about 5 % invalid depth
    distances = np.array(distances)
    assert distances.min() < 1.5 and distances.max() > 5.0  # IPHD: about 0.5 to 8 m
    assert distances.max() < 10.0  # nothing beyond the D435's range
    assert np.mean(distances > 8.0) < 0.1
    assert max(per_frame) <= 6 and min(per_frame) >= 0
    assert np.mean(np.array(per_frame) >= 2) > 0.3
    visibility = np.array(visibility)
    assert np.mean(visibility < 0.95) > 0.1  # partial occlusions
    assert np.mean(visibility > 0.99) > 0.2
    # The summary the CLI prints reports what is in the files.
    assert summary.zero_thermal == pytest.approx(zero, abs=1e-9)
    assert summary.invalid_depth == pytest.approx(invalid, abs=1e-9)
    assert summary.people_per_frame[:2] == (min(per_frame), max(per_frame))
    assert summary.distance_m == pytest.approx((distances.min(), distances.max()), abs=1e-3)


# --- planning --------------------------------------------------------------------------------


def test_plan_cuts_frames_into_sequences_with_their_own_seeds():
    plans = plan_iphd(seed=4, frames=23, frames_per_sequence=5, stride=3)
    assert [p.frames for p in plans] == [5, 5, 5, 5, 3]
    assert [p.seq for p in plans] == [1, 2, 3, 4, 5]
    assert len({p.seed for p in plans}) == 5
    assert {p.split for p in plans} == set(IPHD_SPLITS)
    # A sequence's seed depends on its number only, not on how many sequences there are.
    assert sequence_seeds(4, 3, 1) == sequence_seeds(4, 8, 1)[:3]
    assert sequence_seeds(4, 3, 1) != sequence_seeds(5, 3, 1)
    assert sequence_seeds(4, 3, 1) != sequence_seeds(4, 3, 2)
    assert plan_iphd(seed=4, frames=0, frames_per_sequence=5, stride=3) == []


def test_split_sequences_follows_the_fractions():
    splits = split_sequences(100, (0.7, 0.15, 0.15))
    assert [splits.count(s) for s in IPHD_SPLITS] == [70, 15, 15]
    assert [split_sequences(3, (0.7, 0.15, 0.15)).count(s) for s in IPHD_SPLITS] == [1, 1, 1]
    assert split_sequences(1, (0.7, 0.15, 0.15)) == ["train"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"frames": -1}, "--frames"),
        ({"frames_per_sequence": 0}, "--frames-per-sequence"),
        ({"stride": 0}, "--stride"),
        ({"workers": 0}, "--workers"),
    ],
)
def test_generate_iphd_rejects_bad_counts_before_writing(tmp_path, calibration, kwargs, match):
    args = {"frames": 4, **kwargs}
    with pytest.raises(ConfigError, match=match):
        generate_iphd(tmp_path / "ds", seed=0, calibration=calibration, **args)
    assert list(tmp_path.iterdir()) == []


def test_long_sequences_survive_flat_field_corrections(tmp_path, calibration):
    """Frames frozen by an FFC are skipped; the sequence must still get all its pairs.

    The sequence length is planned without the frozen time. Here the corrections take 60 % of
    the time, so the gap shows within 8 pairs; with the default 150-210 s period the same
    happens to sequences longer than about 1 800 pairs (four or more corrections).
    """
    sensors = SensorConfig(ffc_period_s=(2.5, 2.5), ffc_duration_s=1.5)
    summary = generate_iphd(tmp_path / "ds", seed=0, frames=8, frames_per_sequence=8, stride=3,
                            sensors=sensors, calibration=calibration)
    assert sum(summary.frames.values()) == 8


# --- memory ----------------------------------------------------------------------------------


def test_generation_streams_frames_instead_of_keeping_them(tmp_path, calibration):
    frame_bytes = 1280 * 720 * 2

    def generate(frames):
        generate_iphd(tmp_path / f"ds{frames}", seed=5, frames=frames,
                      frames_per_sequence=frames, calibration=calibration)

    def peak(frames):
        gc.collect()  # garbage of earlier tests is not counted in this one's peak
        tracemalloc.start()
        try:
            generate(frames)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    generate(1)  # one-time costs (kernels, caches) out of the way
    small, large = peak(3), peak(15)
    # 12 more pairs (each a 1.8 MB depth frame, 22 MB kept) cost less than three more frames of
    # memory: a frame or two of garbage waiting for the collector (3.4 MB once in a full run,
    # 0.02 MB alone) is not keeping them.
    assert large - small < 3 * frame_bytes
    assert small < 60 * frame_bytes
