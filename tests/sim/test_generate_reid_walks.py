"""Re-ID crops cut from tracking-style sequences (``iphd-sim reid-walks``)."""

import re
from collections import defaultdict

import numpy as np
import pytest
import yaml

from iphd.data.reid import ReidDataset, read_records
from iphd.errors import ConfigError
from iphd.reid.data import SimReidSource
from iphd.sim.cli import run
from iphd.sim.generate import generate_reid_walks, plan_walks
from iphd.sim.rig import SensorConfig
from iphd.sim.scene import SceneConfig

ARGS = {"seed": 5, "sequences": 3, "people": 3, "duration_s": 12.0, "rate_hz": 1.0,
        "gap_s": 1.0, "test_fraction": 0.34}


@pytest.fixture(scope="module")
def walks(tmp_path_factory, calibration):
    out = tmp_path_factory.mktemp("walks") / "ds"
    counts = generate_reid_walks(out, calibration=calibration, workers=1, **ARGS)
    return out, counts


@pytest.fixture(scope="module")
def records(walks):
    return {split: read_records(walks[0], split) for split in ("train", "test")}


def test_walks_are_byte_identical_for_any_workers(walks, tmp_path, calibration):
    out = tmp_path / "ds"
    assert generate_reid_walks(out, calibration=calibration, workers=2, **ARGS) == walks[1]
    mine = {p.relative_to(walks[0]): p.read_bytes() for p in walks[0].rglob("*") if p.is_file()}
    theirs = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert mine.keys() == theirs.keys()
    assert all(mine[k] == theirs[k] for k in mine)


def test_whole_sequences_are_held_out_and_identities_are_sequence_people(walks, records):
    _, counts = walks
    assert counts == {split: len(r) for split, r in records.items()}
    assert counts["train"] > 0 and counts["test"] > 0
    # 3 sequences, 3 people each: sequences 0-1 train (pids 0-5), sequence 2 test (pids 6-8).
    assert {r.pid for r in records["train"]} <= set(range(6))
    assert {r.pid for r in records["test"]} <= {6, 7, 8}
    assert len({r.pid for r in records["train"]}) >= 3


def test_every_crop_has_its_time_paired_partner_in_the_other_modality(walks, records):
    for split in ("train", "test"):
        by_pair = defaultdict(list)
        for r in records[split]:
            by_pair[r.pair_id].append(r)
        for pair in by_pair.values():
            assert sorted(r.modality for r in pair) == ["depth", "rgb"]
            depth, rgb = sorted(pair, key=lambda r: r.modality)
            assert (depth.pid, depth.session, depth.stamp_ns) == (rgb.pid, rgb.session,
                                                                   rgb.stamp_ns)
            assert depth.camid != rgb.camid
        dataset = ReidDataset(walks[0], split)
        for i in range(len(dataset)):
            image, record = dataset[i]
            if record.modality == "depth":
                assert image.shape == (256, 128) and image.dtype == np.uint16
                assert (image > 0).any()
            else:
                assert image.shape == (256, 128, 3) and image.dtype == np.uint8


def test_a_session_is_one_visit_and_a_new_one_starts_after_the_gap(records):
    stamps = defaultdict(list)
    for r in records["train"] + records["test"]:
        if r.modality == "depth":
            stamps[(r.pid, r.session)].append(r.stamp_ns)
    sessions_of = defaultdict(list)
    for (pid, session), times in stamps.items():
        sessions_of[pid].append((min(times), max(times), session))
    step_ns = int(1e9 / ARGS["rate_hz"])
    for pid, spans in sessions_of.items():
        spans.sort()
        for (_, end, _), (start, _, _) in zip(spans, spans[1:], strict=False):
            assert start - end > ARGS["gap_s"] * 1e9  # a gap longer than --gap between visits
        for _, _, session in spans:
            times = sorted(stamps[(pid, session)])
            assert all(b - a <= ARGS["gap_s"] * 1e9 + step_ns // 2
                       for a, b in zip(times, times[1:], strict=False))


def test_the_manifest_says_walks_and_metric_crops(walks):
    root, counts = walks
    manifest = yaml.safe_load((root / "simulator.yaml").read_text())
    assert manifest["layout"] == "walks"
    assert manifest["records_per_split"] == counts
    assert SimReidSource(root, "train").depth_crop == "metric"


def test_people_cut_by_the_side_edges_are_kept(tmp_path, calibration):
    # The tracker embeds people entering at the image's side edges; crops of such people hold
    # the image's edge: a run of columns with no depth at all on one side of the window.
    out = tmp_path / "ds"
    generate_reid_walks(out, calibration=calibration, workers=1, seed=11, sequences=2, people=4,
                        duration_s=20.0, rate_hz=1.0, test_fraction=0.5)
    edge = 0
    for split in ("train", "test"):
        dataset = ReidDataset(out, split, "depth")
        for i in range(len(dataset)):
            image, _ = dataset[i]
            empty = ~(image > 0).any(axis=0)
            edge += bool(empty[:16].all() or empty[-16:].all())
    assert edge > 0


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"sequences": 1}, "--sequences must be >= 2"),
        ({"people": 0}, "--people must be >= 1"),
        ({"people": 10}, "--people must be 1..9"),
        ({"sequences": 30_000}, "more identities than the dataset format holds"),
        ({"duration_s": 0.0}, "--duration and --rate must be > 0"),
        ({"rate_hz": -1.0}, "--duration and --rate must be > 0"),
        ({"gap_s": -1.0}, "--gap >= 0"),
        ({"test_fraction": 1.0}, "--test-fraction must be in (0, 1)"),
        ({"duration_s": 4000.0}, "too long for the walks layout"),
    ],
)
def test_bad_plans_are_refused_with_the_argument_named(tmp_path, calibration, overrides,
                                                        message):
    args = {"seed": 0, "sequences": 4, "people": 4, "duration_s": 10.0, "rate_hz": 2.0,
            "gap_s": 1.0, "test_fraction": 0.25, **overrides}
    with pytest.raises((ValueError, ConfigError), match=re.escape(message)):
        plan_walks(tmp_path, calibration=calibration, sensors=SensorConfig(),
                   scene=SceneConfig(), **args)


def test_cli_writes_walks_and_refuses_bad_arguments(tmp_path, capsys):
    out = tmp_path / "ds"
    assert run(["reid-walks", "--out", str(out), "--sequences", "2", "--people", "2",
                "--duration", "3", "--workers", "1", "--quiet"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert (out / "train" / "records.csv").is_file()
    bad = tmp_path / "bad"
    assert run(["reid-walks", "--out", str(bad), "--sequences", "1", "--quiet"]) == 2
    assert "iphd-sim reid-walks: error: --sequences must be >= 2" in capsys.readouterr().err
    assert not bad.exists()
