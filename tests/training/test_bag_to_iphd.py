"""Bags with ground truth become IPHD splits the detector trains on."""

import sys
from pathlib import Path

import numpy as np
import pytest

from iphd.data.iphd import IphdDataset
from iphd.data.rosbag import GROUND_TRUTH, copy_bag, copy_bag_with_truth, read_ground_truth
from iphd.sim.labels import clean_boxes

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "training"))

import bag_to_iphd  # noqa: E402

import train_detector  # noqa: E402


def _open(root, split):
    return IphdDataset(root, split, labels="weak", depth_size=None, thermal_size=None)


def test_bags_become_a_split_the_detector_trains_on(sim_bag, tmp_path, capsys):
    root = tmp_path / "iphd"
    assert bag_to_iphd.main(["--bag", str(sim_bag), "--out", str(root), "--split", "train",
                             "--threads", "1", "--quiet"]) == 0
    assert bag_to_iphd.main(["--bag", str(sim_bag), "--out", str(root), "--split", "valid",
                             "--every", "2", "--first-seq", "5", "--threads", "1",
                             "--quiet"]) == 0
    assert "data.any_size=true" in capsys.readouterr().out
    train, valid = _open(root, "train"), _open(root, "valid")
    assert len(train) > 10 and len(valid) == (len(train) + 1) // 2
    assert valid.names[0].startswith("vid00005_")
    truth = read_ground_truth(sim_bag)
    meta = train.load_meta()
    labelled = 0
    for k in range(len(train)):
        sample = train[k]
        # The depth as recorded and the registered thermal the detector node is given.
        assert sample.depth_mm.shape == (480, 848) and sample.thermal_ck.shape == (120, 212)
        expected = clean_boxes(truth[meta[sample.name]["stamp_ns"]], 480)
        np.testing.assert_allclose(sample.boxes_xyxy, expected, atol=0.01)
        labelled += len(expected)
    assert labelled > 10
    out = tmp_path / "run"
    assert train_detector.main([
        "--config", str(REPO / "training/configs/detector/smoke.yaml"), "--data", str(root),
        "--out", str(out), "--quiet", "--set", "data.any_size=true",
    ]) == 0
    assert (out / "model.pt").is_file()


def test_a_written_split_and_bags_without_truth_are_refused(sim_bag, tmp_path, capsys):
    empty = tmp_path / "no_truth"
    copy_bag_with_truth(sim_bag, empty, {}, "depth_optical_frame")
    root = tmp_path / "iphd"
    assert bag_to_iphd.main(["--bag", str(empty), "--out", str(root), "--split", "train",
                             "--quiet"]) == 2
    assert "no pair had ground truth" in capsys.readouterr().err
    assert bag_to_iphd.main(["--bag", str(sim_bag), "--out", str(root), "--split", "train",
                             "--threads", "1", "--quiet"]) == 0
    assert bag_to_iphd.main(["--bag", str(sim_bag), "--out", str(root), "--split", "train",
                             "--quiet"]) == 2
    assert "written before" in capsys.readouterr().err
    assert bag_to_iphd.main(["--bag", str(tmp_path / "nope"), "--out", str(root), "--split",
                             "valid"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_bag_without_ground_truth_is_refused_before_any_is_converted(
    sim_bag, tmp_path, capsys
):
    no_topic = tmp_path / "no_topic"
    copy_bag(sim_bag, no_topic, exclude=[GROUND_TRUTH])
    root = tmp_path / "iphd"
    assert bag_to_iphd.main(["--bag", str(sim_bag), str(no_topic), "--out", str(root),
                             "--split", "train", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{no_topic} has no ground truth" in err and "import-mot" in err
    assert "incomplete" not in err and not (root / "iphd_train_depth").exists()


def test_an_out_that_is_a_file_and_zero_threads_are_refused(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert bag_to_iphd.main(["--bag", str(tmp_path), "--out", str(tmp_path / "afile"),
                             "--split", "train"]) == 2
    assert (f"bag_to_iphd: error: --out {tmp_path / 'afile'} is a file, not a folder: give a "
            "folder") in capsys.readouterr().err
    assert bag_to_iphd.main(["--bag", str(tmp_path), "--out", str(tmp_path / "o"), "--split",
                             "train", "--threads", "0"]) == 2
    assert "bag_to_iphd: --threads must be >= 1, got 0" in capsys.readouterr().err


def test_bags_given_with_repeated_options_all_count():
    # "--bag a --bag b" used to keep only b: a split is written in one go, so the first
    # bags' frames were lost for good.
    import bag_to_reid
    import train_verifier

    from iphd.eval.cli import get_args_parser as eval_parser

    out = ["--out", "o", "--split", "train"]
    for parser in (bag_to_iphd.get_args_parser(), bag_to_reid.get_args_parser()):
        args = parser.parse_args(["--bag", "a", "b", "--bag", "c", *out])
        assert args.bag == [Path("a"), Path("b"), Path("c")]
    args = train_verifier.get_args_parser().parse_args(
        ["--bag", "a", "--bag", "b", "--out", "v.npz", "--eval-bag", "c", "--eval-bag", "d"]
    )
    assert (args.bag, args.eval_bag) == ([Path("a"), Path("b")], [Path("c"), Path("d")])
    assert train_verifier.get_args_parser().parse_args(["--bag", "a", "--out", "v"]).eval_bag == []
    assert eval_parser().parse_args(["bag", "--bag", "a", "--bag", "b"]).bag == [Path("a"),
                                                                                Path("b")]


@pytest.mark.parametrize("every", ["0", "-1"])
def test_bad_every_is_refused(tmp_path, every, capsys):
    assert bag_to_iphd.main(["--bag", str(tmp_path), "--out", str(tmp_path / "o"), "--split",
                             "train", "--every", every]) == 2
    assert "--every must be >= 1" in capsys.readouterr().err


def test_a_bag_of_other_drivers_topics_is_read_with_the_names_given(
    other_drivers_bag, tmp_path, capsys
):
    bag, topics = other_drivers_bag
    root = tmp_path / "iphd"
    argv = ["--bag", str(bag), "--out", str(root), "--split", "train", "--threads", "1",
            "--quiet"]
    assert bag_to_iphd.main(argv) == 2
    assert "--depth-topic" in capsys.readouterr().err
    assert bag_to_iphd.main([*argv, "--depth-topic", topics["depth/image_raw"],
                             "--thermal-topic", topics["thermal/image_raw"]]) == 0
    dataset = _open(root, "train")
    assert len(dataset) >= 8  # the pairs of its 2 s with people labelled
