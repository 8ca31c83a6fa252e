"""Bags with ground truth become re-ID crops the depth embedder fine-tunes on."""

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from iphd.data.reid import CROP_SIZE, ReidDataset, read_records
from iphd.data.rosbag import (
    DEPTH_IMAGE,
    DEPTH_INFO,
    BagReader,
    camera_info_to_intrinsics,
    copy_bag_with_truth,
    header_stamp_ns,
    image_to_array,
    read_ground_truth,
)
from iphd.reid.extractor import CropNormalizeConfig
from iphd.sim.labels import label_people
from iphd.tracking.appearance import SHIPPED_DEPTH_EMBEDDER, depth_crops

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "training"))

import bag_to_reid  # noqa: E402

import train_reid  # noqa: E402


def _cut(bag, root, split, *extra):
    return bag_to_reid.main(["--bag", *map(str, bag), "--out", str(root), "--split", split,
                             "--quiet", *extra])


def _depth_frames(bag):
    """depth stamp -> (depth mm, (fx, fy)) of a bag."""
    frames, focal = {}, None
    with BagReader(bag) as reader:
        for topic, _t, _l, msg in reader.messages([DEPTH_IMAGE, DEPTH_INFO]):
            if topic == DEPTH_INFO:
                k = camera_info_to_intrinsics(msg)
                focal = (k.fx, k.fy)
            else:
                frames[header_stamp_ns(msg)] = (image_to_array(msg), focal)
    return frames


def test_labelled_people_become_crops_cut_as_the_tracker_cuts_them(sim_bag, tmp_path, capsys):
    root = tmp_path / "reid"
    assert _cut([sim_bag], root, "train", "--rate", "4") == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "cpu_sim_depth_finetune.yaml" in out
    # Two people cannot spare the config's 12 validation identities: validate on the test split.
    assert "--set data.val_split=test" in out
    records = read_records(root, "train")
    truth = read_ground_truth(sim_bag)
    frames = _depth_frames(sim_bag)
    assert {r.modality for r in records} == {"depth"} and {r.pair_id for r in records} == {-1}
    # Both people of the bag, numbered from 0; every labelled appearance at most 4 times a second.
    assert sorted({r.pid for r in records}) == [0, 1]
    with open(root / "identities_train.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert {row["bag"] for row in rows} == {str(sim_bag)}
    bag_id = {int(row["pid"]): int(row["bag_id"]) for row in rows}
    for pid in (0, 1):
        stamps = sorted(r.stamp_ns for r in records if r.pid == pid)
        assert len(stamps) >= 8 and min(np.diff(stamps)) >= 0.2e9
    normalize = CropNormalizeConfig(depth_crop="metric")
    dataset = ReidDataset(root, "train", "depth")
    for k in (0, len(dataset) // 2, len(dataset) - 1):
        crop, record = dataset[k]
        assert crop.shape == (CROP_SIZE[1], CROP_SIZE[0]) and crop.dtype == np.uint16
        person = next(p for p in truth[record.stamp_ns] if p.pid == bag_id[record.pid])
        depth, focal = frames[record.stamp_ns]
        assert person in label_people(truth[record.stamp_ns], depth.shape[0])
        expected, _ = depth_crops(depth, [person.box_xyxy], normalize=normalize, focal_px=focal)
        np.testing.assert_array_equal(crop, expected[0])
    # The test split continues the numbering, so no identity is in both. (The bag twice, as
    # one person's two visits: scoring needs people seen in more than one session.)
    assert _cut([sim_bag, sim_bag], root, "test", "--shared-ids") == 0
    assert sorted({r.pid for r in read_records(root, "test")}) == [2, 3]
    # The shipped depth embedder scored on them as a fine-tuned one would be.
    import eval_reid

    capsys.readouterr()
    assert eval_reid.main(["--data", str(root), "--split", "test", "--trials", "2",
                           "--device", "cpu", "--run", f"shipped={SHIPPED_DEPTH_EMBEDDER}"]) == 0
    assert "| shipped | depth → depth, other sessions |" in capsys.readouterr().out
    manifest = yaml.safe_load((root / "simulator.yaml").read_text())
    assert manifest["depth_crop"] == "metric" and set(manifest["splits"]) == {"train", "test"}
    assert manifest["splits"]["train"]["rate_hz"] == 4.0


def test_the_crops_train_the_depth_embedder(sim_bag, tmp_path):
    root = tmp_path / "reid"
    assert _cut([sim_bag], root, "train") == 0
    assert _cut([sim_bag, sim_bag], root, "test", "--shared-ids") == 0
    out = tmp_path / "run"
    # train_reid reads the crop kind from the manifest and refuses letterbox settings; too few
    # people to hold some out, it validates on the test split, as the printed hint says.
    smoke = ["--config", str(REPO / "training/configs/reid/smoke.yaml"), "--data", str(root),
             "--quiet", "--set", "data.val_split=test"]
    assert train_reid.main([*smoke, "--out", str(tmp_path / "letterbox")]) == 2
    assert train_reid.main([*smoke, "--out", str(out), "--set",
                            "normalize.depth_crop=metric"]) == 0
    assert (out / "model.pt").is_file()
    with open(out / "log.csv", encoding="utf-8") as f:
        assert any(row.get("val_map") for row in csv.DictReader(f))


def test_sessions_are_visits_and_ids_are_per_bag_unless_shared(sim_bag, tmp_path):
    per_bag, shared = tmp_path / "per_bag", tmp_path / "shared"
    twice = [sim_bag, sim_bag]  # two recordings, as if both were called "bag"
    assert _cut(twice, per_bag, "train") == 0
    assert _cut(twice, shared, "train", "--shared-ids") == 0
    assert len({r.pid for r in read_records(per_bag, "train")}) == 4
    records = read_records(shared, "train")
    assert len({r.pid for r in records}) == 2
    # A session never spans two bags, and each session has its own camera id.
    sessions = {r.session: r.camid for r in records}
    assert len(set(sessions.values())) == len(sessions)
    assert all(s.startswith(("b000", "b001")) for s in sessions)

    visits = bag_to_reid._Visits()
    s = 1_000_000_000
    assert [visits.session(7, t, gap_s=1.0) for t in (0, s // 2, 2 * s, 2 * s + s // 2)] == [
        0, 0, 1, 1]
    assert [visits.due(7, t, rate_hz=2.0) for t in (0, s // 3, s // 2, s)] == [
        True, False, True, True]


def test_bad_input_is_refused_with_what_to_do(sim_bag, tmp_path, capsys):
    empty = tmp_path / "no_truth"
    copy_bag_with_truth(sim_bag, empty, {}, "depth_optical_frame")
    root = tmp_path / "reid"
    assert _cut([empty], root, "train") == 2
    assert "nothing was written" in capsys.readouterr().err
    assert _cut([sim_bag], root, "train") == 0
    assert _cut([sim_bag], root, "train") == 2
    assert "written before" in capsys.readouterr().err
    assert _cut([tmp_path / "nope"], root, "test") == 2
    assert "does not exist" in capsys.readouterr().err
    letterbox = tmp_path / "letterbox"
    letterbox.mkdir()
    (letterbox / "simulator.yaml").write_text("depth_crop: letterbox\n")
    assert _cut([sim_bag], letterbox, "train") == 2
    assert "write to another --out" in capsys.readouterr().err


@pytest.mark.parametrize("option", [["--rate", "0"], ["--gap", "-1"], ["--rate", "nan"]])
def test_bad_rates_and_gaps_are_refused(tmp_path, option, capsys):
    assert _cut([tmp_path], tmp_path / "o", "train", *option) == 2
    assert "--rate must be > 0 and --gap >= 0" in capsys.readouterr().err


def test_the_hint_holds_out_validation_identities_only_when_there_are_enough():
    many = bag_to_reid.finetune_hint(Path("data/my_reid"), 200)
    assert many == ("fine-tune: python training/train_reid.py --config "
                    "training/configs/reid/cpu_sim_depth_finetune.yaml --data data/my_reid")
    assert "data.val_split=test" in bag_to_reid.finetune_hint(Path("d"), 20)
