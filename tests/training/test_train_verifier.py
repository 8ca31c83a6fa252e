import math
import sys
from pathlib import Path

import numpy as np
import pytest

from iphd.data.truth import PersonTruth
from iphd.detection.detector import SHIPPED_CHECKPOINT
from iphd.detection.verifier import box_features, detector_fingerprint, load_verifier
from iphd.detections import PersonDetection
from iphd.errors import ConfigError, DatasetError
from iphd.sensors.frames import CameraIntrinsics
from iphd.tracking.tracker import TrackInput

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "training"))

import train_verifier  # noqa: E402

HEIGHT = 480
STEP_NS = 100_000_000
INTR = CameraIntrinsics(width=640, height=480, fx=400.0, fy=400.0, cx=319.5, cy=239.5)


def _bag(name, frames=40, seed=0, harmless=False):
    """Two people walking apart; person 1 also gets a second box (their upper half) whose
    position is read a metre and a half nearer: each such box starts a false track.

    ``harmless``: the second box scores too low to start a track and lies far from everyone,
    so it costs no identity and a verifier has nothing to gain."""
    rng = np.random.default_rng(seed)
    recorded, truth = [], {}
    depth = np.zeros((HEIGHT, 640), np.uint16)
    for k in range(frames):
        stamp = 1_000_000_000 + k * STEP_NS
        people, dets = [], []
        for pid, (x0, vx) in {1: (200.0, -2.0), 2: (400.0, 2.0)}.items():
            x = x0 + vx * k
            box = (x, 100.0, x + 80.0, 340.0)
            ground = ((x + 40.0 - 320.0) / 100.0, 0.0, 3.0)
            people.append(PersonTruth(pid, box, 1.0, ground))
            dets.append(PersonDetection(box, float(rng.uniform(0.9, 1.0)), ground, math.nan))
            if pid == 1 and k % 10 != 9:
                upper = (x + 5.0, 100.0, x + 75.0, 200.0)
                score = rng.uniform(0.5, 0.6) if harmless else rng.uniform(0.8, 0.89)
                dets.append(PersonDetection(upper, float(score),
                                            (ground[0], 0.0, 8.0 if harmless else 1.5),
                                            math.nan))
        rows = box_features(dets, depth, INTR)
        inputs = [TrackInput(d.box_xyxy, d.score, d.position_m) for d in dets]
        truth[stamp] = people
        recorded.append((stamp, inputs, HEIGHT, rows))
    return train_verifier.VerifierBag(name, recorded, truth)


def _bag_folders(tmp_path, monkeypatch, *names):
    """Folders standing for bags (``record_bag`` is faked): they exist, their truth is not
    checked."""
    monkeypatch.setattr("iphd.eval.bag_eval.check_ground_truth", lambda bags: None)
    paths = [tmp_path / name for name in names]
    for path in paths:
        path.mkdir(exist_ok=True)
    return [str(path) for path in paths]


def test_labels_mark_matches_extra_boxes_and_people_the_label_rule_leaves_out():
    stamp, inputs, height, _ = _bag("a").frames[0]
    people = _bag("a").truth[stamp]
    assert list(train_verifier.box_labels(inputs, people, height)) == [1, 0, 1]
    # A person too hidden to be labelled: a box on them is neither right nor wrong.
    hidden = [PersonTruth(p.pid, p.box_xyxy, 0.05 if p.pid == 2 else 1.0, p.position_m)
              for p in people]
    assert list(train_verifier.box_labels(inputs, hidden, height)) == [1, 0, -1]
    assert train_verifier.box_labels([], people, height).shape == (0,)


def test_the_verifier_learns_to_leave_out_second_boxes_and_identity_improves():
    bags = [_bag("a", seed=0), _bag("b", seed=1), _bag("c", seed=2)]
    features, labels = train_verifier.dataset(bags)
    assert features.shape[0] == labels.shape[0] and set(labels) == {0, 1}
    verifier = train_verifier.fit(features, labels, epochs=40)
    probabilities = verifier(features)
    assert probabilities[labels == 1].min() > 0.5 > probabilities[labels == 0].max()
    threshold, scores = train_verifier.choose_threshold(bags, epochs=40)
    assert threshold in train_verifier.THRESHOLDS
    # Every bag was scored once per fold without and with each threshold.
    assert all(len(v) == 3 for v in scores.values())
    assert np.mean(scores[threshold]) > np.mean(scores[0.0]) + 0.1
    text = train_verifier.table(scores, ["a", "c", "b"])
    assert "| no verifier |" in text and f"| {threshold:.2f} |" in text


def test_training_refuses_one_class_and_too_few_bags():
    with pytest.raises(DatasetError, match="needs both"):
        train_verifier.fit(np.zeros((4, 3)), np.ones(4, dtype=np.int64))
    with pytest.raises(ConfigError, match="at least two bags"):
        train_verifier.choose_threshold([_bag("a")])
    empty = train_verifier.VerifierBag("e", [], {})
    with pytest.raises(DatasetError, match="nothing to train on"):
        train_verifier.dataset([empty])


def test_main_writes_a_verifier_the_node_loads_and_scores_other_bags(tmp_path, monkeypatch,
                                                                     capsys):
    made = {}

    def fake_record(path, **kwargs):
        made[path.name] = kwargs
        return _bag(path.name, seed=len(made))

    monkeypatch.setattr(train_verifier, "record_bag", fake_record)
    _bag_folders(tmp_path, monkeypatch, "a", "b", "c")
    out = tmp_path / "v.npz"
    code = train_verifier.main([
        "--bag", str(tmp_path / "a"), str(tmp_path / "b"), "--eval-bag", str(tmp_path / "c"),
        "--out", str(out), "--epochs", "30", "--report", str(tmp_path / "r.md"),
    ])
    assert code == 0
    verifier = load_verifier(out)
    assert verifier.threshold in train_verifier.THRESHOLDS
    # It records the detector whose boxes it learned: the shipped one here.
    assert verifier.detector_sha256 == detector_fingerprint(SHIPPED_CHECKPOINT)
    assert verifier.source.startswith("2 bags")
    assert all(kw["score_threshold"] == 0.5 for kw in made.values())
    text = capsys.readouterr().out
    assert "Bags it did not train on" in text and (tmp_path / "r.md").read_text() == text
    assert "WARNING" not in text  # these bags' second boxes cost identities: it helps
    # A fixed threshold skips the folds; a bad one is refused before any recording.
    assert train_verifier.main(["--bag", str(tmp_path / "a"), "--out", str(out),
                                "--threshold", "0.3", "--epochs", "5"]) == 0
    assert load_verifier(out).threshold == 0.3
    made.clear()
    assert train_verifier.main(["--bag", str(tmp_path / "a"), "--out", str(out),
                                "--threshold", "1.5"]) == 2
    assert made == {} and "--threshold" in capsys.readouterr().err
    # One bag cannot be split into two folds: refused before it is recorded.
    assert train_verifier.main(["--bag", str(tmp_path / "a"), "--out", str(out)]) == 2
    assert made == {} and "at least two bags" in capsys.readouterr().err


def test_a_verifier_that_does_not_help_is_written_with_a_warning(tmp_path, monkeypatch, capsys):
    scores = {0.0: [0.8, 0.9], 0.5: [0.8, 0.9], 0.6: [0.7, 0.9]}
    warning = train_verifier.no_gain_warning(scores, 0.5)
    assert "does not help" in warning and "verifier:=none" in warning
    assert "0.8500" in warning
    assert train_verifier.no_gain_warning({0.0: [0.8], 0.5: [0.81]}, 0.5) == ""

    monkeypatch.setattr(train_verifier, "record_bag",
                        lambda path, **kw: _bag(path.name, seed=len(path.name), harmless=True))
    _bag_folders(tmp_path, monkeypatch, "a", "bb")
    out = tmp_path / "v.npz"
    assert train_verifier.main(["--bag", str(tmp_path / "a"), str(tmp_path / "bb"),
                                "--out", str(out), "--epochs", "30"]) == 0
    captured = capsys.readouterr()
    assert "WARNING: the verifier does not help" in captured.err
    assert "WARNING" in captured.out  # in the report too
    assert load_verifier(out).threshold in train_verifier.THRESHOLDS


def test_a_turning_robots_bags_are_recorded_and_replayed_in_its_tracking_frame(
    pan_bag, tmp_path, monkeypatch
):
    odom = train_verifier.record_bag(pan_bag, reid_checkpoint="none", threads=1,
                                     tracking_frame="odom")
    optical = train_verifier.record_bag(pan_bag, reid_checkpoint="none", threads=1)
    assert [f[0] for f in odom.frames] == [f[0] for f in optical.frames]
    moved = [np.linalg.norm(np.subtract(a.position_m, b.position_m))
             for (_, ins_a, _, _), (_, ins_b, _, _) in zip(odom.frames, optical.frames,
                                                           strict=True)
             for a, b in zip(ins_a, ins_b, strict=True) if np.all(np.isfinite(a.position_m))]
    assert moved and max(moved) > 1.0  # positions in odom, not in the turning camera
    # The threshold is chosen with the tracker replayed as the node tracks in odom.
    made, trackers = {}, []

    def fake_record(path, **kwargs):
        made[path.name] = kwargs
        return _bag(path.name, seed=len(made))

    def fake_replay(bag, tracker):
        trackers.append(tracker.up_axis)
        return {"idf1": 0.5}

    monkeypatch.setattr(train_verifier, "record_bag", fake_record)
    monkeypatch.setattr(train_verifier, "replay", fake_replay)
    _bag_folders(tmp_path, monkeypatch, "a", "b")
    assert train_verifier.main(["--bag", str(tmp_path / "a"), str(tmp_path / "b"), "--out",
                                str(tmp_path / "v.npz"), "--epochs", "2",
                                "--tracking-frame", "odom"]) == 0
    assert all(kw["tracking_frame"] == "odom" for kw in made.values())
    assert trackers and set(trackers) == {"z"}


def _refused_before_recording(tmp_path, monkeypatch, capsys, argv):
    """Run main with ``argv``; return stderr after checking nothing was recorded."""
    recorded = []
    monkeypatch.setattr(train_verifier, "record_bag",
                        lambda path, **kw: recorded.append(path) or _bag(path.name))
    assert train_verifier.main(argv) == 2
    err = capsys.readouterr().err
    assert recorded == [] and "Traceback" not in err
    return err


@pytest.mark.parametrize(("extra", "message"), [
    # An existing folder, or a folder that cannot be made: said before, not after fitting.
    (["--out", "{tmp}"], "--out {tmp} is a folder: give the file to write, e.g. "
                         "{tmp}/box_verifier.npz"),
    (["--out", "{tmp}/afile/v.npz"], "--out {tmp}/afile/v.npz: {tmp}/afile is a file, not a "
                                     "folder"),
    (["--out", "{tmp}/v.npz", "--cache", "{tmp}/afile"],
     "--cache {tmp}/afile is a file, not a folder"),
    (["--out", "{tmp}/v.npz", "--report", "{tmp}"], "--report {tmp} is a folder"),
    (["--out", "{tmp}/v.npz", "--threads", "0"], "--threads must be >= 1, got 0"),
    (["--out", "{tmp}/v.npz", "--backend", "onnx"],
     "--backend must be one of auto, torch, onnxruntime, onnxruntime-int8, got 'onnx'"),
])
def test_bad_outputs_and_settings_are_refused_before_any_bag_is_recorded(
    tmp_path, monkeypatch, capsys, extra, message
):
    (tmp_path / "afile").write_text("x")
    bags = _bag_folders(tmp_path, monkeypatch, "a", "b")
    argv = ["--bag", *bags, *(a.format(tmp=tmp_path) for a in extra)]
    err = _refused_before_recording(tmp_path, monkeypatch, capsys, argv)
    assert err.startswith("train_verifier: ") and message.format(tmp=tmp_path) in err
    assert not (tmp_path / "v.npz").exists()


def test_an_unwritable_output_folder_is_refused_and_nothing_is_left_made(
    tmp_path, monkeypatch, capsys
):
    if not Path("/proc/self").is_dir():
        pytest.skip("needs Linux's /proc, where no folder can be made")
    bags = _bag_folders(tmp_path, monkeypatch, "a", "b")
    err = _refused_before_recording(tmp_path, monkeypatch, capsys,
                                    ["--bag", *bags, "--out", "/proc/x/v.npz"])
    assert "--out /proc/x/v.npz: cannot make the folder /proc/x" in err
    # The check makes the missing folders of a good path to try them, and removes them again.
    err = _refused_before_recording(
        tmp_path, monkeypatch, capsys,
        ["--bag", *bags, "--out", str(tmp_path / "new" / "deep" / "v.npz"), "--eval-bag",
         str(tmp_path / "missing")],
    )
    assert "missing does not exist" in err and not (tmp_path / "new").exists()


def test_every_bag_path_is_checked_before_the_first_is_recorded(tmp_path, monkeypatch, capsys):
    bags = _bag_folders(tmp_path, monkeypatch, "a", "b")
    out = ["--out", str(tmp_path / "v.npz")]
    err = _refused_before_recording(tmp_path, monkeypatch, capsys,
                                    ["--bag", *bags, str(tmp_path / "gone"), *out])
    assert f"train_verifier: bag {tmp_path / 'gone'} does not exist" in err
    err = _refused_before_recording(tmp_path, monkeypatch, capsys,
                                    ["--bag", *bags, "--eval-bag", str(tmp_path / "gone"), *out])
    assert f"bag {tmp_path / 'gone'} does not exist" in err
    # A folder that is no bag: the real check opens every bag before recording any.
    monkeypatch.undo()
    err = _refused_before_recording(tmp_path, monkeypatch, capsys, ["--bag", *bags, *out])
    assert f"{tmp_path / 'a'} has no metadata.yaml" in err and "not a ROS 2 bag folder" in err
