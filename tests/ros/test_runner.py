import json

import cv2
import pytest
from transport_bags import write_graph_recording

from iphd.errors import ConfigError
from iphd.ros.runner import exit_status, main, run_graph, status_line


@pytest.mark.slow
def test_sim_live_graph_pairs_and_registers_in_one_process(tmp_path):
    result = run_graph(
        "sim_live",
        4.0,
        snapshot=tmp_path / "fusion.png",
        detector=False,
        overrides={"sim_source": {"depth_profile": "depth_424x240"}},
    )
    stats = result.stats
    assert stats["depth_frames"] > 60 and stats["thermal_frames"] > 15
    assert stats["published"] >= stats["pairs"] - 1 > 10
    # Sim-live renders in real time in this process: on a loaded runner a depth frame can come
    # too late for its thermal partner (dropped as no_depth_within_skew or late). That costs a
    # few pairs; a duplicate, clock jump or reset would be a pairing bug.
    assert stats["thermal_drop_fraction"] < 0.25, stats
    for reason in ("duplicate", "clock_jump", "reset", "buffer_overflow"):
        assert not stats.get(f"thermal_dropped_{reason}"), stats
    assert not any(k.startswith("errors_") for k in stats), stats
    image = cv2.imread(str(result.snapshot))
    assert image is not None and image.shape[0] == 240


@pytest.mark.slow
def test_sim_source_generates_the_demo_bag_once_then_replays_it(monkeypatch, tmp_path):
    import iphd.sim.demo as demo

    monkeypatch.setenv("IPHD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(demo, "DEMO_DURATION_S", 3.0)
    monkeypatch.setattr(demo, "DEMO_PROFILE", "aligned_424x240")
    result = run_graph("sim", 8.0, snapshot=tmp_path / "fusion.png", detector=False)
    bag = demo.demo_bag_path()
    assert (bag / "metadata.yaml").is_file()
    stats = result.stats
    assert stats["depth_frames"] >= 60 and stats["published"] >= 10, stats
    assert not any(k.startswith("errors_") for k in stats), stats
    made = (bag / "metadata.yaml").stat().st_mtime_ns
    assert demo.ensure_demo_bag() == bag  # reused, not regenerated
    assert (bag / "metadata.yaml").stat().st_mtime_ns == made


def test_runner_refuses_an_unknown_source_with_the_choices(capsys):
    assert main(["--source", "camera", "--duration", "1"]) == 2
    assert "choose one of live, sim" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        run_graph("camera", 1.0)


def _write_rig_bag(path, seconds: float = 1.5, truth: bool = False, topics=None,
                   thermal_stamp_ns: int = 3_000_000) -> int:
    """A small bag like the rig records: 128x96 depth at 30 Hz, 160x120 thermal near 7.5 Hz.

    With ``truth`` the person in front of the wall is in ``ground_truth/people`` too; ``topics``
    renames topics as another driver would name them. A thermal frame is logged 3 ms after
    its depth frame and stamped ``thermal_stamp_ns`` after it (another clock's stamp).
    """
    import numpy as np

    from iphd.calibration import load_calibration
    from iphd.data.rosbag import RigBagWriter
    from iphd.data.truth import PersonTruth
    from iphd.sensors.frames import CameraIntrinsics

    fx = 0.5 * 128 / np.tan(np.deg2rad(87.0 / 2))
    intr = CameraIntrinsics(128, 96, fx, fx, 63.5, 47.5)
    depth_mm = np.full((96, 128), 3000, np.uint16)
    depth_mm[30:90, 50:70] = 2000  # someone in front of the wall
    thermal_ck = np.full((120, 160), 29500, np.uint16)
    thermal_ck[40:110, 70:90] = 30600
    t0 = 1_700_000_000_000_000_000
    frames = int(seconds * 30)
    with RigBagWriter(path, load_calibration(), intr, topics=topics) as writer:
        for i in range(frames):
            stamp = t0 + i * 33_333_333
            writer.write_depth(stamp, depth_mm)
            if truth:
                person = PersonTruth(7, (50.0, 30.0, 70.0, 90.0), 1.0, (0.0, 0.0, 2.0))
                writer.write_ground_truth(stamp, [person])
            if i % 4 == 0:
                writer.write_thermal(stamp + thermal_stamp_ns, thermal_ck,
                                     log_ns=stamp + 3_000_000)
    return frames


def test_bag_graph_plays_the_bag_registers_thermal_and_ends_with_the_bag(tmp_path):
    frames = _write_rig_bag(tmp_path / "bag")
    result = run_graph(
        "bag", 30.0, bag=str(tmp_path / "bag"), snapshot=tmp_path / "fusion.png", detector=False
    )
    assert set(result.nodes) == {"bag_player", "fusion"}
    assert result.duration_s < 10.0  # ended with the bag, not at the 30 s limit
    assert result.player_stats["finished"] and result.player_stats["published"] > 2 * frames
    stats = result.stats
    assert stats["depth_frames"] == frames and stats["thermal_frames"] == (frames + 3) // 4
    # Depth frames that beat their camera info are held for it; the last thermal frame waits
    # for a later depth frame that never comes: all the others are registered.
    assert stats["published"] >= stats["thermal_frames"] - 1 > 8, stats
    assert stats["depth_dropped_before_camera_info"] == 0, stats
    assert not any(k.startswith("errors_") for k in stats), stats
    assert result.nodes["fusion"].get_parameter("use_sim_time").value is True
    holes_before_fix, _ = result.nodes["fusion"].pipeline.last_zero_fraction
    assert holes_before_fix < 0.8  # the thermal view covers the middle of the depth view
    assert cv2.imread(str(result.snapshot)) is not None


def test_a_bag_runs_its_duration_from_its_first_message_however_long_the_graph_took_to_start(
    tmp_path,
):
    # The player holds the bag 3 s (as it does while slow nodes load their models): a 2 s run
    # still gets 2 s of the bag, not the end of the wait.
    _write_rig_bag(tmp_path / "bag", seconds=4.0)
    result = run_graph("bag", 2.0, bag=str(tmp_path / "bag"), detector=False,
                       overrides={"bag_player": {"start_delay_s": 3.0}})
    assert result.duration_s > 4.5, result.duration_s
    played_s = result.player_stats["position_s"]
    assert 1.5 < played_s < 3.0 and not result.player_stats["finished"], result.player_stats
    assert result.stats["published"] > 8


def test_a_calibration_in_the_params_file_wins_over_the_replayed_bags_own(tmp_path):
    import yaml

    from iphd.calibration import DEFAULT_CALIBRATION

    _write_rig_bag(tmp_path / "bag", seconds=1.0)  # it carries the package's calibration
    data = yaml.safe_load(DEFAULT_CALIBRATION.read_text())
    data["frames"]["thermal"] = "my_thermal_frame"
    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump(data))
    params = tmp_path / "params.yaml"
    params.write_text(f"/**:\n  ros__parameters:\n    calibration_file: {mine}\n")
    result = run_graph(
        "bag", 30.0, bag=str(tmp_path / "bag"), detector=False, params_file=params,
        log_level="error",
    )
    assert result.stats["calibration"] == str(mine)
    assert result.nodes["bag_player"].excluded_frames == {"depth_optical_frame", "my_thermal_frame"}


#: realsense2_camera's and a Lepton driver's names for the graph's sensor topics.
REALSENSE_AND_LEPTON = {
    "depth/image_raw": "/camera/camera/depth/image_rect_raw",
    "depth/camera_info": "/camera/camera/depth/camera_info",
    "thermal/image_raw": "/lepton/image_raw",
    "thermal/camera_info": "/lepton/camera_info",
}


def test_the_graph_runs_on_other_drivers_topics_named_by_the_topic_arguments(tmp_path, capsys):
    topics = REALSENSE_AND_LEPTON
    frames = _write_rig_bag(tmp_path / "bag", topics=topics)
    result = run_graph(
        "bag", 30.0, bag=str(tmp_path / "bag"), snapshot=tmp_path / "fusion.png",
        detector=False, topics=topics,
    )
    assert result.duration_s < 10.0 and result.player_stats["finished"]
    stats = result.stats
    assert stats["depth_frames"] == frames and stats["thermal_frames"] == (frames + 3) // 4
    assert stats["published"] >= stats["thermal_frames"] - 1 > 8, stats
    assert not any(k.startswith("errors_") for k in stats), stats
    assert cv2.imread(str(result.snapshot)) is not None  # the monitor found them too
    # Without the names the same bag reaches nobody: nothing is guessed in the live graph,
    # and the run's end says where to look.
    result = run_graph("bag", 30.0, bag=str(tmp_path / "bag"), detector=False)
    assert result.stats["depth_frames"] == 0
    capsys.readouterr()
    assert exit_status(result) == 1
    err = capsys.readouterr().err
    assert "no depth and thermal image reached fusion" in err and "--depth-topic" in err
    assert f"iphd-eval check --bag {tmp_path / 'bag'}" in err


def test_a_bag_recorded_outside_the_namespace_runs_in_it_in_one_process(tmp_path):
    # `ros2 bag record` of drivers outside any namespace stores absolute names; the player
    # moves the topics it waits for into the graph's namespace, and in one process
    # (processes=False) it was given none to wait for, so nothing reached fusion.
    absolute = {topic: f"/{topic}" for topic in REALSENSE_AND_LEPTON}
    frames = _write_rig_bag(tmp_path / "bag", topics=absolute)
    result = run_graph("bag", 30.0, bag=str(tmp_path / "bag"), detector=False,
                       namespace="robot1")
    assert result.player_stats["finished"]
    stats = result.stats
    assert stats["depth_frames"] == frames and stats["published"] > 8, stats


def test_a_run_whose_thermal_frames_are_stamped_on_another_clock_says_so(tmp_path, capsys):
    # The thermal driver stamped on a clock 2.5 s behind the depth driver's: both streams
    # arrive, no pair is made, and the run's end says how far apart and what to do.
    _write_rig_bag(tmp_path / "bag", seconds=3.0, thermal_stamp_ns=-2_500_000_000)
    result = run_graph("bag", 30.0, bag=str(tmp_path / "bag"), detector=False)
    stats = result.stats
    assert stats["depth_frames"] == 90 and stats["thermal_frames"] == 23
    assert stats["published"] == 0 and stats["thermal_dropped_no_depth_within_skew"] >= 20
    assert 2450 < stats["unpaired_skew_ms"] < 2550
    capsys.readouterr()
    assert exit_status(result) == 1
    err = capsys.readouterr().err
    assert ("no registered thermal image was published: no thermal frame found a depth frame "
            "within the fusion's skew; the last of them is stamped 2.") in err
    assert "s before the depth frame that came with it, so the drivers stamp on two clocks" in err


def test_a_bag_of_compressed_images_runs_through_the_graph_decoded_by_the_player(tmp_path):
    from transport_bags import write_transport_bag

    frames = _write_rig_bag(tmp_path / "raw", topics=REALSENSE_AND_LEPTON)
    write_transport_bag(tmp_path / "raw", tmp_path / "bag", {
        REALSENSE_AND_LEPTON["depth/image_raw"]: "compressedDepth",
        REALSENSE_AND_LEPTON["thermal/image_raw"]: "compressed",
    })
    # The raw names, as on the robot: the player publishes the decoded images there.
    topics = {k: v for k, v in REALSENSE_AND_LEPTON.items() if "image" in k}
    result = run_graph("bag", 30.0, bag=str(tmp_path / "bag"), detector=False, topics=topics)
    assert result.player_stats["finished"]
    stats = result.stats
    assert stats["depth_frames"] == frames and stats["thermal_frames"] == (frames + 3) // 4
    assert stats["published"] >= stats["thermal_frames"] - 1 > 8, stats
    assert not any(k.startswith("errors_") for k in stats), stats


def test_the_external_source_starts_no_driver_and_waits_for_one(tmp_path):
    result = run_graph("external", 1.5, detector=False, snapshot=tmp_path / "fusion.png")
    assert set(result.nodes) == {"fusion"} and not result.use_sim_time
    assert result.stats["depth_frames"] == 0 and result.snapshot is None


def test_runner_bag_source_needs_a_bag_and_a_bag_needs_the_bag_source(tmp_path, capsys):
    assert main(["--source", "bag", "--duration", "1"]) == 2
    assert "pass bag:=" in capsys.readouterr().err
    assert main(["--source", "sim", "--bag", str(tmp_path), "--duration", "1"]) == 2
    assert "only played with source:=bag" in capsys.readouterr().err
    assert main(["--bag", str(tmp_path / "missing"), "--duration", "1"]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "metadata.yaml" in err


def test_runner_refuses_a_namespace_rcl_would_refuse_before_any_node_starts(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--namespace", "my robot", "--duration", "1"])
    assert exit_.value.code == 2
    assert "--namespace 'my robot' is not a ROS 2 namespace" in capsys.readouterr().err


def test_runner_refuses_a_model_or_calibration_that_is_not_there_before_any_node_starts(
    tmp_path, capsys
):
    (tmp_path / "bad.npz").write_bytes(b"not a verifier")
    for argv, expected in (
        (["--detector-checkpoint", str(tmp_path / "d.pt")], "detector checkpoint"),
        (["--reid-checkpoint", str(tmp_path)], "is a folder (a training run's?), not a file"),
        (["--verifier", str(tmp_path / "v.npz")], "does not exist; train one with "
         "training/train_verifier.py or set verifier to 'none' (here: --verifier none)"),
        # There but not a verifier: read here as the detector node would read it.
        (["--verifier", str(tmp_path / "bad.npz")], "is not a verifier file"),
        (["--calibration", str(tmp_path / "rig.yaml")], "rig.yaml does not exist"),
    ):
        assert main([*argv, "--duration", "1", "--out", str(tmp_path / "out")]) == 2
        assert expected in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing ran


def test_runner_refuses_a_negative_duration(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--duration", "-1"])
    assert exc.value.code == 2
    assert "--duration must be >= 0" in capsys.readouterr().err


def _params_file(tmp_path, score_threshold: float):
    import yaml

    from iphd.ros.common import package_file

    params = yaml.safe_load(package_file("launch/iphd_params.yaml").read_text())
    # The box verifier judges a trained detector's boxes; the untrained one's say nothing.
    params["/**/detector"]["ros__parameters"].update(
        score_threshold=score_threshold, threads=1, verifier="none"
    )
    # The untrained detector's scores are low and its boxes rarely confirm a track.
    params["/**/tracker"]["ros__parameters"].update(publish_tentative=True, min_score_new=0.0)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_default_graph_detects_and_tracks_and_the_summary_says_so(
    tmp_path, tiny_detector, capsys
):
    _write_rig_bag(tmp_path / "bag", seconds=2.0, truth=True)
    argv = [
        "--bag", str(tmp_path / "bag"), "--duration", "30", "--out", str(tmp_path / "out"),
        "--detector-checkpoint", str(tiny_detector), "--reid-checkpoint", "none",
        "--params-file", str(_params_file(tmp_path, 0.0)), "--log-level", "error", "--no-eval",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "evaluation" not in out and not (tmp_path / "out" / "eval").exists()
    detector = next(x for x in out.splitlines() if x.strip().startswith("detector ("))
    arrays = int(detector.split("):")[1].split()[0])
    detections = int(detector.split("published with ")[1].split()[0])
    assert arrays > 5 and detections >= arrays  # score threshold 0: people in every pair
    tracker = next(x for x in out.splitlines() if x.strip().startswith("tracker ("))
    assert "track ids created" in tracker and "confirmed at once" in tracker
    tracked = int(tracker.split("):")[1].split()[0])
    received = int(tracker.split(" track arrays for ")[1].split()[0])
    # DDS discovery may lose the first arrays on a loaded machine; after that, one track array
    # per detections array (the last may still be in flight when the run stops)
    assert 0 < received <= arrays and received - 1 <= tracked <= received


def test_a_re_id_model_that_does_not_load_fails_the_run_that_tracked_without_it(
    tmp_path, tiny_detector, capsys
):
    # A detector checkpoint given as the embedder: the tracker goes on by position only (as a
    # node does, saying so on /diagnostics), and the run's last line and status say why.
    _write_rig_bag(tmp_path / "bag", seconds=4.0)
    argv = [
        "--bag", str(tmp_path / "bag"), "--duration", "30", "--out", str(tmp_path / "out"),
        "--detector-checkpoint", str(tiny_detector), "--reid-checkpoint", str(tiny_detector),
        "--params-file", str(_params_file(tmp_path, 0.0)), "--log-level", "error", "--no-eval",
    ]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "s: the tracker would run by position only: depth re-ID embedder not loaded" in err
    assert "Fix 'reid_checkpoint'" in err


class _Reporting:
    def __init__(self, **stats):
        self._stats = stats

    def stats(self):
        return self._stats


def test_model_failure_names_the_node_that_cannot_do_its_work():
    from iphd.ros.runner import model_failure

    working = {"detector": _Reporting(pairs=3), "tracker": _Reporting(published=2)}
    assert model_failure(working) == ""
    # A process that has not reported yet reads as nothing wrong.
    assert model_failure({"detector": _Reporting(), "tracker": _Reporting()}) == ""
    assert model_failure({"tracker": _Reporting(not_started="tracker not started: x")}) == (
        "the tracker cannot publish: tracker not started: x"
    )
    assert model_failure({**working, "tracker": _Reporting(not_loaded_depth="y")}) == (
        "the tracker would run by position only: y"
    )
    # An RGB query embedder that did not load leaves tracking as it is.
    assert model_failure({**working, "tracker": _Reporting(not_loaded_rgb="z")}) == ""


def test_run_stops_at_once_on_a_detector_checkpoint_that_does_not_load(tmp_path, capsys):
    # A file that is there (so the up-front check passes) but is no checkpoint: the node says
    # why on /diagnostics; the run, in one process here, stops with that as its last line.
    _write_rig_bag(tmp_path / "bag", seconds=4.0)
    garbage = tmp_path / "detector.pt"
    garbage.write_bytes(b"not a checkpoint\n" * 10)
    argv = [
        "--bag", str(tmp_path / "bag"), "--duration", "30", "--out", str(tmp_path / "out"),
        "--detector-checkpoint", str(garbage), "--reid-checkpoint", "none", "--no-processes",
        "--log-level", "error",
    ]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert ", to the end" not in captured.out
    assert f"s: the detector cannot publish: detector not loaded from {garbage}" in captured.err


def test_status_line_shows_people_in_view_tracks_and_latencies(tmp_path, tiny_detector):
    _write_rig_bag(tmp_path / "bag", seconds=2.0)
    result = run_graph(
        "bag", 30.0, bag=str(tmp_path / "bag"), detector_checkpoint=str(tiny_detector),
        reid_checkpoint="none", params_file=_params_file(tmp_path, 0.0), log_level="error",
        verifier="none",
    )
    assert set(result.nodes) == {"bag_player", "fusion", "detector", "tracker"}
    detector, tracker = result.detector_stats, result.tracker_stats
    assert detector["verifier"] == "none"  # verifier:=none reaches the detector node
    assert detector["detections_published"] >= detector["published"] > 5
    assert detector["detections_last"] > 0
    assert tracker["tracks_confirmed_max"] >= tracker["tracks_confirmed"]
    assert tracker["tracker_created"] > 0
    assert tracker["tracks_published"] >= tracker["tracker_created"]
    line = status_line(result.nodes, 1.0)
    people = int(line.split("people")[1].split("|")[0])
    assert people == detector["detections_last"]
    assert "confirmed tracks" in line and "detector" in line and " ms" in line.split("tracker")[-1]


def test_a_recording_of_the_running_graph_replays_without_its_recorded_outputs(
    tmp_path, tiny_detector, tf2_msgs
):
    _write_rig_bag(tmp_path / "bag", seconds=2.0, truth=True)
    write_graph_recording(tmp_path / "bag", tmp_path / "recording", outputs=True)
    result = run_graph(
        "bag", 30.0, bag=str(tmp_path / "recording"), detector_checkpoint=str(tiny_detector),
        reid_checkpoint="none", params_file=_params_file(tmp_path, 0.0), log_level="error",
        verifier="none", record=True,
    )
    assert result.player_stats["not_played"] == (
        "detections, rig_calibration, thermal/registered, tracks"
    )
    # Nor the recorded rig transforms, which fusion publishes again from its calibration.
    assert result.player_stats["transforms_not_played"] == (
        "depth_optical_frame (1), thermal_optical_frame (1)"
    )
    detector, tracker = result.detector_stats, result.tracker_stats
    # One registered image per pair reached the detector, one detections array per frame the
    # tracker: none of the recorded copies.
    assert 5 < detector["published"] <= result.stats["published"]
    assert 0 < tracker["detections_received"] <= detector["published"]
    # The recorded track (id 99) is not among what the replay published.
    tracks = result.recording.frames.tracks
    assert tracks and all(99 not in [row[0] for row in rows] for _, rows in tracks)


def test_the_summary_names_what_a_replay_of_a_recording_left_out(tmp_path, capsys):
    _write_rig_bag(tmp_path / "bag", seconds=1.0)
    write_graph_recording(tmp_path / "bag", tmp_path / "recording", outputs=True)
    argv = ["--bag", str(tmp_path / "recording"), "--duration", "30", "--out",
            str(tmp_path / "out"), "--no-detector", "--log-level", "error"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    # Without the detector and tracker, their recorded outputs play; fusion's do not.
    assert "  not played, as the graph makes them anew: topics rig_calibration, " \
        "thermal/registered\n" in out


def test_run_stops_at_once_when_the_detector_cannot_start(tmp_path, capsys):
    _write_rig_bag(tmp_path / "bag", seconds=4.0)
    # A value the detector cannot use: the node keeps running, publishing nothing, and says
    # why; the run does not play the rest of the bag for nothing.
    params = tmp_path / "params.yaml"
    params.write_text("/**:\n  ros__parameters:\n    score_threshold: 1.7\n")
    argv = [
        "--bag", str(tmp_path / "bag"), "--duration", "30", "--out", str(tmp_path / "out"),
        "--params-file", str(params), "--no-tracker", "--log-level", "error",
    ]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert ", to the end" not in captured.out
    assert "iphd-run: stopped after " in captured.err
    assert ("s: the detector cannot publish: detector not started: score_threshold must be in "
            "[0, 1], got 1.7") in captured.err
    # The same bag without the detector is a success: fusion registered thermal.
    assert main(argv[:6] + ["--no-detector", "--log-level", "error"]) == 0
    assert "evaluation skipped: it scores the tracks, which --no-detector leaves out" in (
        capsys.readouterr().out
    )


def _cell(text: str) -> float | None:
    return None if text == "n/a" else float(text)


def test_bag_run_ends_with_the_live_evaluation_report(tmp_path, tiny_detector, capsys):
    _write_rig_bag(tmp_path / "bag", seconds=2.0, truth=True)
    out = tmp_path / "out"
    argv = [
        "--bag", str(tmp_path / "bag"), "--duration", "30", "--out", str(out),
        "--detector-checkpoint", str(tiny_detector), "--reid-checkpoint", "none",
        "--params-file", str(_params_file(tmp_path, 0.0)), "--log-level", "error",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out.splitlines()
    for name in ("report.md", "metrics.json", "pr.png", "timeline.png", "latency.png"):
        assert (out / "eval" / name).is_file(), name
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["mode"] == "live" and metrics["meta"]["use_sim_time"] is True
    # Every tracks message carries a stamp of the bag, and the bag has truth at every stamp.
    assert metrics["frames_scored"] == metrics["pairs"] > 5
    assert metrics["frames_without_truth"] == 0
    header = next(i for i, x in enumerate(printed) if "| pairs | AP@0.5 | MOTA |" in x)
    cells = [c.strip() for c in printed[header + 2].strip().strip("|").split("|")]
    pairs, ap, mota, idf1, hota, switches, latency = cells
    assert int(pairs) == metrics["pairs"]
    assert _cell(hota) == pytest.approx(metrics["hota"]["hota"], abs=1e-4)
    assert _cell(ap) == pytest.approx(metrics["ap"]["0.50"], abs=1e-4)
    assert _cell(mota) == pytest.approx(metrics["mot"]["mota"], abs=1e-4)
    assert _cell(idf1) == pytest.approx(metrics["mot"]["idf1"], abs=1e-4)
    assert int(switches) == metrics["mot"]["num_switches"]
    p50, p95 = (float(v) for v in latency.split(" / "))
    delays = metrics["latency_ms"]["tracks_receipt_minus_stamp"]
    assert delays["n"] == metrics["pairs"]
    assert p50 == pytest.approx(delays["p50"], abs=0.05)
    assert p95 == pytest.approx(delays["p95"], abs=0.05)
    # Sim time: the delay from capture to tracks is real, positive and under the run's length.
    assert 0.0 < p50 <= p95 < 10_000.0
    assert any("sim time" in line for line in printed)
    report = (out / "eval" / "report.md").read_text()
    assert "/clock" in report and "tracks_receipt_minus_stamp" in report


def test_iphd_run_takes_the_topic_arguments_for_every_process(tmp_path, tiny_detector, capsys):
    # As the drivers record them: each camera_info beside its image. Only the images are named
    # below; the nodes take the camera_info beside each.
    topics = {"depth/image_raw": "/camera/camera/depth/image_rect_raw",
              "depth/camera_info": "/camera/camera/depth/camera_info",
              "thermal/image_raw": "lepton/image_raw", "thermal/camera_info": "lepton/camera_info"}
    _write_rig_bag(tmp_path / "bag", seconds=2.0, truth=True, topics=topics)
    out = tmp_path / "out"
    assert main([
        "--bag", str(tmp_path / "bag"), "--duration", "30", "--out", str(out),
        "--detector-checkpoint", str(tiny_detector), "--reid-checkpoint", "none",
        "--params-file", str(_params_file(tmp_path, 0.0)), "--log-level", "error",
        "--depth-topic", topics["depth/image_raw"], "--thermal-topic", "lepton/image_raw",
    ]) == 0
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    # Fusion, detector and tracker (each in its process) got every pair under the names given.
    assert metrics["frames_scored"] == metrics["pairs"] > 5
    assert (out / "fusion.png").is_file()
    capsys.readouterr()
    assert main(["--source", "external", "--depth-topic", "/a b", "--duration", "1"]) == 2
    assert "depth_topic: '/a b' is not a ROS 2 topic name" in capsys.readouterr().err


@pytest.mark.parametrize("executor", ["auto", "single"])
def test_processes_run_each_node_in_its_own_process_and_report_back(
    tmp_path, tiny_detector, monkeypatch, executor
):
    import os

    from iphd.ros.processes import NodeProcess

    monkeypatch.setenv("IPHD_EXECUTOR", executor)
    expected = "SingleThreadedExecutor" if executor == "single" else _default_executor()
    frames = _write_rig_bag(tmp_path / "bag", seconds=2.0, truth=True)
    result = run_graph(
        "bag", 30.0, bag=str(tmp_path / "bag"), detector_checkpoint=str(tiny_detector),
        reid_checkpoint="none", params_file=_params_file(tmp_path, 0.0), log_level="error",
        record=True, processes=True,
    )
    assert result.processes and set(result.nodes) == {"bag_player", "fusion", "detector", "tracker"}
    pids = {node.pid for node in result.nodes.values()}
    assert all(isinstance(node, NodeProcess) for node in result.nodes.values())
    assert len(pids) == 4 and os.getpid() not in pids
    # Every process spins the executor IPHD_EXECUTOR asks for, the runner's own included.
    assert result.executor == expected
    assert {node.executor for node in result.nodes.values()} == {expected}
    assert all(not node.alive and node.rss_mb > 0 for node in result.nodes.values())
    # The bag ended the run, and the last reports carry everything the nodes did.
    assert result.duration_s < 25.0 and result.player_stats["finished"], result.player_stats
    assert result.stats["depth_frames"] == frames, result.stats
    assert result.stats["published"] >= result.stats["thermal_frames"] - 1 > 8, result.stats
    assert result.detector_stats["published"] > 5, result.detector_stats
    assert 0 < result.tracker_stats["published"] <= result.detector_stats["published"], (
        result.tracker_stats
    )
    assert result.nodes["detector"].get_parameter("threads").value == 1
    assert result.nodes["fusion"].get_parameter("use_sim_time").value is True
    with pytest.raises(KeyError, match="no parameter 'nope'"):
        result.nodes["fusion"].get_parameter("nope")
    # The monitor in this process recorded what the tracker published in its own process.
    assert result.recording is not None and result.recording.frames.tracks


def _default_executor() -> str:
    """The executor class an unset IPHD_EXECUTOR gives with this rclpy."""
    try:
        from rclpy.experimental import EventsExecutor  # noqa: F401
    except ImportError:
        return "SingleThreadedExecutor"
    return "EventsExecutor"


def test_a_node_that_fails_in_its_process_stops_the_run_with_its_error(tmp_path, capsys):
    import multiprocessing

    (tmp_path / "not_a_bag").mkdir()
    argv = ["--bag", str(tmp_path / "not_a_bag"), "--duration", "30", "--no-detector",
            "--out", str(tmp_path / "out"), "--log-level", "error"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "node 'bag_player' failed to start" in err and "not_a_bag" in err
    # The fusion process that had started is stopped too.
    assert not multiprocessing.active_children()


def test_a_live_run_without_frames_from_its_own_driver_points_at_the_camera(capsys):
    from iphd.ros.runner import RunResult

    result = RunResult(8.0, nodes={"d435": None, "lepton": None, "fusion": None},
                       stats={"depth_frames": 62, "thermal_frames": 0, "published": 0})
    assert exit_status(result) == 1
    err = capsys.readouterr().err
    assert "no thermal image reached fusion (the lepton driver published no frame" in err
    assert "--thermal-topic" not in err


def test_a_run_whose_drivers_offer_too_little_qos_says_so_not_the_topic_names(capsys):
    from iphd.ros.runner import RunResult

    result = RunResult(duration_s=5.0, stats={
        "published": 0, "depth_frames": 0, "thermal_frames": 0,
        "incompatible_qos": "/camera/camera/depth/image_rect_raw (depth/image_raw)",
    })
    assert exit_status(result) == 1
    err = capsys.readouterr().err
    assert "/camera/camera/depth/image_rect_raw (depth/image_raw) offer a QoS" in err
    assert "input_reliability: best_effort" in err and "topic names" not in err


def test_the_fusion_picture_reads_32fc1_depth_in_metres(tmp_path, ros_context):
    import numpy as np

    from iphd.ros.conversions import array_to_image
    from iphd.ros.runner import _Monitor

    thermal = np.full((12, 16), 30_000, np.uint16)
    pictures = {}
    for encoding, depth in (("16UC1", np.full((24, 32), 2000, np.uint16)),
                            ("32FC1", np.full((24, 32), 2.0, np.float32))):
        monitor = _Monitor(snapshot=tmp_path / "x.png", context=ros_context)
        monitor.depth[5] = array_to_image(depth, encoding, 5, "depth")
        monitor.thermal = array_to_image(thermal, "16UC1", 5, "thermal")
        monitor.registered = array_to_image(np.full((24, 32), 30_000, np.uint16), "16UC1", 5,
                                            "depth")
        path = monitor.snapshot(tmp_path / f"{encoding}.png")
        monitor.destroy_node()
        pictures[encoding] = cv2.imread(str(path))
    # The same scene at 2 m: the same picture (a cast read 2.0 m as 2 mm, a black depth tile).
    assert np.array_equal(pictures["16UC1"], pictures["32FC1"])


def test_a_node_process_that_dies_mid_run_stops_the_run_and_fails_it(tmp_path, capsys):
    import os
    import signal

    _write_rig_bag(tmp_path / "bag", seconds=12.0)

    def kill_fusion(nodes, elapsed_s):
        if elapsed_s > 0 and nodes["fusion"].alive:
            os.kill(nodes["fusion"].pid, signal.SIGKILL)

    result = run_graph(
        "bag", 60.0, bag=str(tmp_path / "bag"), detector=False, processes=True,
        log_level="error", sample=kill_fusion, sample_period_s=1.0,
    )
    assert result.ended == {"fusion": -signal.SIGKILL}
    assert result.duration_s < 8.0  # stopped, not run to the end of the 12 s bag
    capsys.readouterr()
    assert exit_status(result) == 1
    err = capsys.readouterr().err
    assert "the process of node 'fusion' (killed by SIGKILL) ended during the run" in err


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_sigterm_ends_a_run_as_ctrl_c_does_with_its_summary(tmp_path, signame):
    import re
    import signal
    import subprocess
    import sys

    _write_rig_bag(tmp_path / "bag", seconds=30.0)
    run = subprocess.Popen(
        [sys.executable, "-m", "iphd.ros.runner", "--bag", str(tmp_path / "bag"),
         "--no-detector", "--out", str(tmp_path / "out"), "--log-level", "error"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert run.stdout is not None
    for line in run.stdout:  # until the progress shows registered images: the graph runs
        if re.search(r"\| registered +[1-9]", line):
            break
    # SIGTERM as systemd or docker stop it; SIGINT as Ctrl-C. The signal is taken in the
    # run's own loop, never inside a callback rclpy's C++ called (where it aborted the run).
    run.send_signal(getattr(signal, signame))
    out = run.stdout.read()
    assert run.wait(30) == 0, out
    assert "\nsummary\n" in out and "registered images published" in out
