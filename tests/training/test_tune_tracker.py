import sys
from pathlib import Path

import pytest

from iphd.data.truth import PersonTruth
from iphd.errors import ConfigError
from iphd.tracking.tracker import TrackInput

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "training"))

import tune_tracker  # noqa: E402

HEIGHT = 480
STEP_NS = 100_000_000


def _two_walkers(frames=40, hide=range(0, 0)):
    """Two people walking apart in front of the camera; detections = their boxes.

    ``hide`` frames lose person 2's detection (the person stays in the ground truth).
    """
    recorded, truth = [], {}
    for k in range(frames):
        stamp = 1_000_000_000 + k * STEP_NS
        people, inputs = [], []
        for pid, (x0, vx) in {1: (200.0, -2.0), 2: (400.0, 2.0)}.items():
            x = x0 + vx * k
            box = (x, 100.0, x + 80.0, 340.0)
            ground = ((x + 40.0 - 320.0) / 100.0, 0.0, 3.0)
            people.append(PersonTruth(pid, box, 1.0, ground))
            if not (pid == 2 and k in hide):
                inputs.append(TrackInput(box, 0.95, ground))
        truth[stamp] = people
        recorded.append((stamp, inputs, HEIGHT))
    return tune_tracker.RecordedBag("walkers", recorded, truth)


def test_replay_scores_the_tracker_as_iphd_eval_does():
    bag = _two_walkers()
    perfect = tune_tracker.replay(bag, tune_tracker.TrackerConfig(confirm_hits=1))
    assert perfect["idf1"] == pytest.approx(1.0) and perfect["num_switches"] == 0
    # Needing 3 hits to confirm misses the first 2 frames of each person: 4 of 80 boxes.
    late = tune_tracker.replay(bag, tune_tracker.TrackerConfig(confirm_hits=3))
    assert late["num_misses"] == 4 and late["idf1"] < 1.0
    # Late confirmation is detection, not association: right identities do not mend it.
    assert late["idf1_true_ids"] == pytest.approx(late["idf1"])


def test_a_setting_that_matters_changes_the_table():
    # Person 2 unseen for 1.5 s: a lost track that times out after 1 s comes back under a new
    # id, one that waits 8 s keeps it.
    bag = _two_walkers(frames=60, hide=range(20, 35))
    combos = tune_tracker.grid(tune_tracker.parse_settings(["lost_timeout_s=1,8"]))
    text = tune_tracker.table([bag], combos)
    rows = [line for line in text.splitlines() if line.startswith("| lost_timeout_s")]
    assert [r.split("|")[1].strip() for r in rows] == ["lost_timeout_s=8.0",
                                                       "lost_timeout_s=1.0"]
    best, worst = (float(r.split("|")[2]) for r in rows)
    assert best > worst
    # With every identity right most of the gap closes: the new id was most of the loss (the
    # rest: the new track's first detections, before it is confirmed).
    true_best, true_worst = (float(r.split("|")[6]) for r in rows)
    assert true_worst - worst > 2 * (true_best - true_worst) > 0
    assert true_best - best < true_worst - worst
    # Against the defaults (lost_timeout_s 8): the same on this bag, and the short memory worse.
    assert [r.split("|")[7].strip() for r in rows] == ["0 / 0", "0 / 1"]
    assert "more than 0.01" in text
    # The defaults in the grid are their own reference.
    text = tune_tracker.table([bag, bag], tune_tracker.grid({}))
    assert "| defaults |" in text and "| — |" in text


def test_settings_are_typed_as_the_tracker_config_and_bad_ones_named():
    parsed = tune_tracker.parse_settings(["reid_max_distance=0.8,1.3", "confirm_hits=2",
                                          "adopt_lost=false,true"])
    assert parsed == {"reid_max_distance": [0.8, 1.3], "confirm_hits": [2],
                      "adopt_lost": [False, True]}
    assert len(tune_tracker.grid(parsed)) == 4
    assert tune_tracker.grid({}) == [{}]
    with pytest.raises(ConfigError, match="not a tracker setting.*reid_max_distance"):
        tune_tracker.parse_settings(["reid_max_distanse=1"])
    with pytest.raises(ConfigError, match="confirm_hits.*not a int"):
        tune_tracker.parse_settings(["confirm_hits=2.5"])
    with pytest.raises(ConfigError, match="name=value"):
        tune_tracker.parse_settings(["lost_timeout_s"])


def test_cli_refuses_a_bad_setting_before_reading_any_bag(tmp_path, capsys):
    code = tune_tracker.main(["--bag", str(tmp_path / "nothing"), "--set", "min_iou=2"])
    assert code == 2
    assert "min_iou" in capsys.readouterr().err


def test_the_cache_is_keyed_on_the_models_contents_not_only_their_names(tmp_path, monkeypatch):
    # Replacing the shipped re-ID pair keeps its path; the cache must not replay the old one's
    # embeddings.
    bag = tmp_path / "bag"
    bag.mkdir()
    (bag / "metadata.yaml").write_text("rosbag2_bagfile_information: {}\n")
    detector, embedder = tmp_path / "detector.pt", tmp_path / "reid_depth.pt"
    detector.write_bytes(b"detector v1")
    embedder.write_bytes(b"embedder v1")
    monkeypatch.setattr(tune_tracker, "model_files",
                        lambda reid="", det="", verifier="", int8="": [
                            Path(det) if det else detector, embedder])
    calls = []

    def fake_record(path, **kwargs):
        calls.append(kwargs)
        return _two_walkers(frames=3)

    monkeypatch.setattr(tune_tracker, "record_bag", fake_record)
    cache = tmp_path / "cache"
    tune_tracker.cached_record(bag, cache, reid_checkpoint="")
    tune_tracker.cached_record(bag, cache, reid_checkpoint="")
    assert len(calls) == 1  # the second came from the cache
    embedder.write_bytes(b"embedder v2")  # re-trained in place
    recorded = tune_tracker.cached_record(bag, cache, reid_checkpoint="")
    assert len(calls) == 2 and len(recorded.frames) == 3
    assert len(list(cache.glob("bag-*.pkl"))) == 2
    # Another detector or node threshold gives the tracker other inputs: a new entry each.
    mine = tmp_path / "mine.pt"
    mine.write_bytes(b"fine-tuned detector")
    tune_tracker.cached_record(bag, cache, reid_checkpoint="", detector_checkpoint=str(mine))
    tune_tracker.cached_record(bag, cache, reid_checkpoint="", score_threshold=0.3)
    assert len(calls) == 4 and calls[2]["detector_checkpoint"] == str(mine)


def test_model_files_are_the_shipped_detector_and_the_chosen_depth_embedder(tmp_path):
    from iphd.detection.detector import SHIPPED_CHECKPOINT
    from iphd.detection.verifier import SHIPPED_VERIFIER
    from iphd.tracking.appearance import SHIPPED_DEPTH_EMBEDDER

    assert tune_tracker.model_files("") == [SHIPPED_CHECKPOINT, SHIPPED_DEPTH_EMBEDDER,
                                            SHIPPED_VERIFIER]
    assert tune_tracker.model_files("none", "", "none") == [SHIPPED_CHECKPOINT]
    mine = tmp_path / "mine.pt"
    assert tune_tracker.model_files(str(mine), "", "none") == [SHIPPED_CHECKPOINT, mine]
    det = tmp_path / "det.pt"
    assert tune_tracker.model_files("", str(det), "none") == [det, SHIPPED_DEPTH_EMBEDDER]
    verifier = tmp_path / "v.npz"
    assert tune_tracker.model_files("none", "", str(verifier)) == [SHIPPED_CHECKPOINT, verifier]
    # Your own int8 calibration pairs change the int8 detector: a new file, new recordings.
    pairs = tmp_path / "pairs.npz"
    assert tune_tracker.model_files("none", "", "none", str(pairs)) == [SHIPPED_CHECKPOINT, pairs]


def test_int8_calibration_reaches_the_recording_only_when_given():
    parser = tune_tracker.get_args_parser()
    args = parser.parse_args(["--bag", "a"])
    assert "int8_calibration" not in tune_tracker.pipeline_settings(args)
    args = parser.parse_args(["--bag", "a", "--int8-calibration", "pairs.npz"])
    assert tune_tracker.pipeline_settings(args)["int8_calibration"] == "pairs.npz"


def test_a_drivers_topic_names_reach_the_recording_only_when_given(monkeypatch):
    import train_verifier

    import iphd.eval.pipeline as pipeline

    parser = tune_tracker.get_args_parser()
    assert "topics" not in tune_tracker.pipeline_settings(parser.parse_args(["--bag", "a"]))
    args = parser.parse_args(["--bag", "a", "--depth-topic", "/camera/camera/depth/image_rect_raw",
                              "--thermal-topic", " "])
    settings = tune_tracker.pipeline_settings(args)
    assert settings["topics"] == {"depth/image_raw": "/camera/camera/depth/image_rect_raw"}
    # Both recorders run the pipeline with them (stopped at the bag, which is not there).
    seen = []

    def stop(config, reader):
        seen.append(config.topics)
        raise ConfigError("stop")

    monkeypatch.setattr(pipeline, "pipeline_for_bag", stop)
    monkeypatch.setattr("iphd.data.rosbag.BagReader.__init__", lambda self, path: None)
    monkeypatch.setattr("iphd.data.rosbag.BagReader.__exit__", lambda self, *a: None)
    monkeypatch.setattr("iphd.eval.bag_eval.read_truth", lambda reader: {})
    for record in (tune_tracker.record_bag, train_verifier.record_bag):
        with pytest.raises(ConfigError, match="stop"):
            record(Path("a"), topics=settings["topics"])
    assert seen == [settings["topics"]] * 2


def test_a_changed_calibration_file_gets_new_recordings(tmp_path):
    rig = tmp_path / "rig.yaml"
    rig.write_text("a: 1\n")
    first = tune_tracker.calibration_digest({"calibration": str(rig)})
    rig.write_text("a: 2\n")
    assert tune_tracker.calibration_digest({"calibration": str(rig)}) not in ("", first)
    assert tune_tracker.calibration_digest({"calibration": ""}) == ""


def test_bags_are_taken_after_one_bag_option_or_repeated():
    parser = tune_tracker.get_args_parser()
    several = parser.parse_args(["--bag", "a", "b", "--set", "min_iou=0.1"]).bag
    repeated = parser.parse_args(["--bag", "a", "--bag", "b"]).bag
    assert several == repeated == [Path("a"), Path("b")]
    assert parser.parse_args(["--bag", "a", "b", "--bag", "c"]).bag == [Path(p) for p in "abc"]


def test_a_turning_robots_bags_are_tuned_in_its_tracking_frame(pan_bag, tmp_path):
    import numpy as np

    odom = tune_tracker.record_bag(pan_bag, reid_checkpoint="none", threads=1,
                                   tracking_frame="odom")
    optical = tune_tracker.record_bag(pan_bag, reid_checkpoint="none", threads=1)
    assert [f[0] for f in odom.frames] == [f[0] for f in optical.frames]
    # The same detections, their positions turned into odom (the rig turns about the depth
    # camera, odom's origin: distances stay, directions change).
    pairs = [(np.array(a.position_m), np.array(b.position_m))
             for (_s, ins_a, _h), (_t, ins_b, _k) in zip(odom.frames, optical.frames, strict=True)
             for a, b in zip(ins_a, ins_b, strict=True) if np.all(np.isfinite(a.position_m))]
    assert len(pairs) > 20
    np.testing.assert_allclose([np.linalg.norm(a) for a, _ in pairs],
                               [np.linalg.norm(b) for _, b in pairs], rtol=1e-6)
    assert max(float(np.linalg.norm(a - b)) for a, b in pairs) > 1.0
    # The table replays them with odom's up axis (z) under every combination.
    out = tmp_path / "table.md"
    assert tune_tracker.main(["--bag", str(pan_bag), "--tracking-frame", "odom", "--threads",
                              "1", "--reid-checkpoint", "none", "--set", "lost_timeout_s=4,8",
                              "--out", str(out)]) == 0
    assert "| lost_timeout_s=8.0 |" in out.read_text()
    assert tune_tracker.tracking_config("odom").up_axis == "z"
    assert tune_tracker.tracking_config("").up_axis == "-y"


@pytest.mark.parametrize(("extra", "message"), [
    (["--cache", "{tmp}/afile"], "--cache {tmp}/afile is a file, not a folder"),
    (["--out", "{tmp}"], "--out {tmp} is a folder: give the file to write, e.g. {tmp}/table.md"),
    (["--threads", "0"], "--threads must be >= 1, got 0"),
    (["--backend", "onnx"],
     "--backend must be one of auto, torch, onnxruntime, onnxruntime-int8, got 'onnx'"),
    # A later bag that is not there: said before the earlier ones are recorded.
    (["--bag", "{tmp}/gone"], "bag {tmp}/gone does not exist"),
])
def test_bad_outputs_settings_and_bags_are_refused_before_any_bag_is_recorded(
    tmp_path, monkeypatch, capsys, extra, message
):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "a").mkdir()
    monkeypatch.setattr("iphd.eval.bag_eval.check_ground_truth", lambda bags: None)
    recorded = []
    monkeypatch.setattr(tune_tracker, "record_bag",
                        lambda path, **kw: recorded.append(path) or _two_walkers(frames=3))
    argv = ["--bag", str(tmp_path / "a"), *(a.format(tmp=tmp_path) for a in extra)]
    assert tune_tracker.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("tune_tracker: ") and message.format(tmp=tmp_path) in err
    assert recorded == [] and "Traceback" not in err
