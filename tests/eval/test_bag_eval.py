"""``iphd-eval bag``: offline pipeline on a simulator bag, recorded-graph scoring, bad input."""

import dataclasses
import json
import re

import numpy as np
import pytest
from rosbags.rosbag2 import Writer

from iphd.data.rosbag import (
    DEPTH_IMAGE,
    GROUND_TRUTH,
    IMAGE,
    PERSON_TRACKS,
    THERMAL_IMAGE,
    BagReader,
    typestore,
)
from iphd.data.truth import PersonTruth
from iphd.errors import DatasetError
from iphd.eval.bag_eval import (
    RecordedFrames,
    evaluate_offline,
    evaluate_recorded,
    score_recorded,
    write_bag_report,
)
from iphd.eval.cli import main
from iphd.eval.pipeline import OfflineConfig, OfflinePipeline, find_topic, pipeline_for_bag
from iphd.tracking.tracker import TrackerConfig

DETECTIONS = "iphd_msgs/msg/PersonDetectionArray"
CONFIG = OfflineConfig(threads=1, reid_checkpoint="none")
FRAME_NS = 100_000_000  # recorded bags: 10 Hz
START_NS = 1_700_000_000_000_000_000
HEIGHT = 480


def _run(pipeline, reader, stop_ns=None):
    return list(pipeline.run_bag(reader, stop_ns))


def _digest(results):
    """Everything a pair result holds except the latency."""
    return [
        (
            r.stamp_ns,
            [(d.box_xyxy, d.score, d.position_m, d.temperature_k) for d in r.detections],
            [
                (t.track_id, t.state, t.score, t.position_m.tolist(), t.velocity_mps.tolist(),
                 None if t.box_xyxy is None else t.box_xyxy.tolist())
                for t in r.tracks
            ],
        )
        for r in results
    ]


def test_pipeline_is_deterministic(sim_bag):
    digests = []
    with BagReader(sim_bag) as reader:
        stop_ns = reader.start_ns + 3_000_000_000
        for _ in range(2):
            pipeline = pipeline_for_bag(CONFIG, reader)
            results = _run(pipeline, reader, stop_ns)
            digests.append(_digest(results))
    assert len(digests[0]) >= 8
    assert any(r[1] for r in digests[0]) and any(r[2] for r in digests[0])
    assert digests[0] == digests[1]
    assert all(set(r.latency_ms) == {"fusion", "detection", "tracking"} for r in results)
    assert all(v >= 0.0 for r in results for v in r.latency_ms.values())


def test_cold_detections_are_scored_but_not_tracked(sim_bag):
    # A contrast no person reaches: every measured box is "cold". The model's detections (what
    # AP scores) stay the same; the tracker gets only the unmeasured ones.
    runs = {}
    with BagReader(sim_bag) as reader:
        stop_ns = reader.start_ns + 3_000_000_000
        for contrast in (0.0, 100.0):
            config = dataclasses.replace(CONFIG, min_thermal_contrast_k=contrast)
            pipeline = pipeline_for_bag(config, reader)
            runs[contrast] = (_run(pipeline, reader, stop_ns), pipeline.stats.cold_rejected)
    (off, none_cold), (on, cold) = runs[0.0], runs[100.0]
    assert none_cold == 0 and cold > 0
    assert [sorted((d.box_xyxy, d.score) for d in r.detections) for r in off] == [
        sorted((d.box_xyxy, d.score) for d in r.detections) for r in on
    ]
    confirmed = [sum(t.state == "confirmed" for t in r.tracks) for r in on]
    assert any(sum(t.state == "confirmed" for t in r.tracks) for r in off)
    assert sum(confirmed) < sum(sum(t.state == "confirmed" for t in r.tracks) for r in off)


def test_boxes_the_verifier_leaves_out_are_scored_but_neither_tracked_nor_published(
    sim_bag, tmp_path, capsys
):
    # A verifier giving every box 0.5 with threshold 0.9 leaves every box out: AP (the model's
    # output) is unchanged, the tracker gets nothing and the breakdown counts nothing published.
    from iphd.detection.verifier import FEATURE_NAMES, BoxVerifier

    n = len(FEATURE_NAMES)
    path = tmp_path / "v.npz"
    BoxVerifier(np.zeros(n), np.ones(n), ((np.zeros((n, 1)), np.zeros(1)),
                                          (np.zeros((1, 1)), np.zeros(1))), 0.9).save(path)
    metrics = {}
    for name, verifier in (("none", "none"), ("all_out", str(path))):
        out = tmp_path / name
        assert main(["bag", "--bag", str(sim_bag), "--out", str(out), "--threads", "1",
                     "--quiet", "--reid-checkpoint", "none", "--limit-s", "2",
                     "--verifier", verifier]) == 0, capsys.readouterr().err
        metrics[name] = json.loads((out / "metrics.json").read_text())
    off, on = metrics["none"], metrics["all_out"]
    assert on["ap"] == off["ap"] and off["ap"]["0.50"] > 0.5
    assert off["counters"]["verifier_rejected"] == 0
    assert on["counters"]["verifier_rejected"] == off["breakdown"]["detections"] > 0
    assert on["breakdown"]["detections"] == 0 and on["mot"]["num_false_positives"] == 0
    assert on["meta"]["verifier"] == f"{path} (threshold 0.9)"
    assert off["meta"]["verifier"] == "none"


def test_the_shipped_verifier_keeps_the_people_and_drops_the_extra_box(sim_bag, tmp_path,
                                                                       capsys):
    # A guard on the shipped file: on this short bag (not one it was trained on) the detector
    # finds both people in every frame plus one second box; the verifier must keep the people.
    breakdowns = {}
    for name, verifier in (("none", "none"), ("shipped", "")):
        out = tmp_path / name
        assert main(["bag", "--bag", str(sim_bag), "--out", str(out), "--threads", "1",
                     "--quiet", "--reid-checkpoint", "none", "--verifier", verifier]) == 0, (
            capsys.readouterr().err
        )
        breakdowns[name] = json.loads((out / "metrics.json").read_text())["breakdown"]
    off, on = breakdowns["none"], breakdowns["shipped"]
    extra = ("second_box", "loose_box", "background")
    assert off["matched"] >= 40 and sum(off[k] for k in extra) >= 1
    assert on["matched"] >= off["matched"] - 1
    assert sum(on[k] for k in extra) < sum(off[k] for k in extra)


def test_cli_writes_report_with_metrics(sim_bag, tmp_path, capsys):
    out = tmp_path / "report"
    status = main([
        "bag", "--bag", str(sim_bag), "--out", str(out), "--threads", "1", "--quiet",
        "--reid-checkpoint", "none",
    ])
    assert status == 0, capsys.readouterr().err
    for name in ("report.md", "metrics.json", "pr.png", "timeline.png", "latency.png"):
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"ap", "mot", "latency_ms", "pairs", "skipped", "meta", "hota"} <= set(metrics)
    assert set(metrics["ap"]) == {"0.25", "0.50", "0.75"}
    # Measured 0.87 with the shipped detector on this bag; an untrained one scores ~0.
    assert metrics["ap"]["0.50"] > 0.6
    mot = metrics["mot"]
    assert mot["num_objects"] > 10 and mot["mota"] is not None and mot["idf1"] > 0.5
    assert mot["idf1"] <= metrics["idf1_true_ids"] <= 1.0
    assert set(metrics["latency_ms"]) == {"fusion", "detection", "tracking"}
    assert metrics["latency_ms"]["detection"]["p95"] >= metrics["latency_ms"]["detection"]["p50"]
    assert metrics["pairs"] >= 20 and metrics["skipped"] == {}
    assert metrics["meta"]["mode"] == "offline" and metrics["meta"]["commit"]
    report = (out / "report.md").read_text()
    assert "AP@0.50" in report and "MOTA" in report and "ID switches" in report
    assert "p95" in report and "AssA (association)" in report
    assert "IDF1 with every identity right" in report
    hota = metrics["hota"]
    # HOTA = sqrt(DetA x AssA) at each IoU threshold; the report gives the means over them.
    assert 0.0 < hota["hota"] <= 1.0 and 0.0 < hota["deta"] <= 1.0 and 0.0 < hota["assa"] <= 1.0
    assert hota["hota"] <= max(hota["deta"], hota["assa"])
    assert "offline: AP@0.25" in (printed := capsys.readouterr().out)
    assert "with true identities" in printed
    # The breakdown counts only the published detections (score >= the node's 0.5), while AP
    # scores all of them; every published one is of exactly one kind.
    breakdown = metrics["breakdown"]
    kinds = ("matched", "second_box", "loose_box", "unlabelled_person", "background")
    assert 0 < breakdown["detections"] < metrics["n_detections"]
    assert sum(breakdown[k] for k in kinds) == breakdown["detections"]
    assert breakdown["matched"] > 10
    position = breakdown["position"]
    assert position["with_position"] + position["no_position"] == breakdown["matched"]
    assert 0.0 <= position["median_m"] <= position["p90_m"]
    assert "## Where the errors come from" in report
    # Each labelled person's ids over time, in seconds from the bag's start.
    identities = metrics["identities"]
    assert identities["from"] == "the bag's start" and len(identities["people"]) == 2
    for segments in identities["people"].values():
        assert all(0.0 <= a <= b <= 4.0 for a, b, _ in segments)
    matched = sum(n for covered in identities["tracks"].values() for n in covered.values())
    # Every match once: as many as motmetrics made (which keeps last frame's where it can).
    assert matched == pytest.approx(mot["num_objects"] - mot["num_misses"], rel=0.05)
    assert "## Identities" in report and "| person | ids over time | ids |" in report


def _copy_bag(src, dst, stop_ns, edit):
    """Copy ``src`` up to ``stop_ns`` with rosbags; ``edit(index, raw) -> bytes`` per message
    (None leaves it out)."""
    store = typestore()
    writer = Writer(dst, version=Writer.VERSION_LATEST)
    writer.open()
    connections = {}
    with BagReader(src) as reader:
        for index, raw in enumerate(reader.raw_messages(stop_ns=stop_ns)):
            data = edit(index, raw)
            if data is None:
                continue
            if raw.topic not in connections:
                connections[raw.topic] = writer.add_connection(
                    raw.topic, raw.msgtype, typestore=store
                )
            writer.write(connections[raw.topic], raw.log_ns, data)
    writer.close()


def test_corrupt_and_undecodable_messages_are_skipped_and_counted(sim_bag, tmp_path):
    store = typestore()
    depth_seen = []

    def edit(index, raw):
        if raw.topic != DEPTH_IMAGE:
            return raw.data
        depth_seen.append(index)
        if len(depth_seen) == 5:
            return raw.data[:40]  # truncated: does not deserialize
        if len(depth_seen) == 8:
            msg = store.deserialize_cdr(raw.data, IMAGE)
            msg.width = msg.width + 2  # deserializes, but the pixels do not fit the size
            return store.serialize_cdr(msg, IMAGE)
        return raw.data

    with BagReader(sim_bag) as reader:
        stop_ns = reader.start_ns + 2_500_000_000
    bad = tmp_path / "bad"
    _copy_bag(sim_bag, bad, stop_ns, edit)
    with BagReader(bad) as reader:
        pipeline = pipeline_for_bag(CONFIG, reader)
        results = _run(pipeline, reader)
    assert pipeline.stats.skipped == {DEPTH_IMAGE: 2}
    assert pipeline.stats.pairs == len(results) >= 6


def test_a_recording_cut_off_mid_write_is_scored_on_what_it_kept_and_the_report_says_so(
    sim_bag, tmp_path
):
    from transport_bags import write_transport_bag

    bag = write_transport_bag(sim_bag, tmp_path / "bag", {}, storage="mcap")
    (mcap,) = bag.glob("*.mcap")
    (bag / "metadata.yaml").unlink()  # the recorder writes it on closing
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
    whole, _ = evaluate_offline(sim_bag, CONFIG)
    part, run = evaluate_offline(bag, CONFIG)
    assert 0 < part.pairs < whole.pairs
    assert run["bag_cut_off"].startswith(f"{mcap} was cut off before its recording closed it")
    files = write_bag_report(part, tmp_path / "report", run)
    assert "cut off before its recording closed it" in files.report_md.read_text()


def _thermal_stamped_apart(src, dst, shift_ns):
    """``src`` with its thermal images stamped ``shift_ns`` later (another clock), logged as
    they were."""
    store = typestore()

    def edit(_index, raw):
        if raw.topic != THERMAL_IMAGE:
            return raw.data
        msg = store.deserialize_cdr(raw.data, IMAGE)
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec + shift_ns
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
        return store.serialize_cdr(msg, IMAGE)

    _copy_bag(src, dst, None, edit)
    return dst


@pytest.mark.parametrize("shift_s", [1.5, -1.5])
def test_thermal_stamped_on_another_clock_stops_the_tools_saying_how_far_apart(
    sim_bag, tmp_path, capsys, shift_s
):
    # Nothing pairs: the fusion keeps a second of depth frames, and the frames that came with
    # each thermal frame are 1.5 s from its stamp. Before, the report said "AP n/a" and the
    # command exited 0; and check paired each thermal frame with any depth frame of the bag.
    bag = _thermal_stamped_apart(sim_bag, tmp_path / "apart", int(shift_s * 1e9))
    assert main(["bag", "--bag", str(bag), "--out", str(tmp_path / "out"), "--quiet",
                 "--reid-checkpoint", "none"]) == 2
    err = capsys.readouterr().err
    side = "after" if shift_s > 0 else "before"
    assert re.search(rf"{bag}: none of its \d+ thermal frames found a depth frame within 20 ms, "
                     rf"so nothing was paired; the last of them is stamped 1\.\d+ s {side} the "
                     "depth frame that came with it, so the drivers stamp on two clocks", err)
    assert f"iphd-eval check --bag {bag}" in err
    assert main(["check", "--bag", str(bag)]) == 2
    out = capsys.readouterr().out
    assert "problem: only 0% of the thermal frames read find a depth frame within 20 ms" in out
    assert "two clocks" in out


def test_a_few_thermal_frames_without_a_partner_are_a_warning(sim_bag, tmp_path, caplog):
    # The depth frames near every other thermal frame lost (a dropping driver): those thermal
    # frames find no depth frame within 20 ms, the others pair. A warning says so, and how far.
    store = typestore()

    def stamp(raw):
        header = store.deserialize_cdr(raw.data, raw.msgtype).header.stamp
        return header.sec * 1_000_000_000 + header.nanosec

    with BagReader(sim_bag) as reader:
        stop_ns = reader.start_ns + 2_500_000_000
        thermal = [stamp(raw) for raw in reader.raw_messages([THERMAL_IMAGE], stop_ns=stop_ns)]
    alone = np.array(thermal[1::2])

    def edit(_index, raw):
        if raw.topic == DEPTH_IMAGE and np.abs(alone - stamp(raw)).min() < 45_000_000:
            return None
        return raw.data

    bag = tmp_path / "dropping"
    _copy_bag(sim_bag, bag, stop_ns, edit)
    with BagReader(bag) as reader, caplog.at_level("WARNING", logger="iphd.eval.pipeline"):
        pipeline = pipeline_for_bag(CONFIG, reader)
        results = _run(pipeline, reader)
    sync = pipeline.sync.stats
    assert sync.thermal_dropped["no_depth_within_skew"] == len(alone)
    assert len(results) == sync.pairs == len(thermal) - len(alone)
    assert (f"{len(alone)} of {len(thermal)} thermal frames found no depth frame within 20 ms; "
            "the last of them is stamped") in caplog.text
    assert "depth frames are missing around it" in caplog.text


def test_depth_that_does_not_read_as_millimetres_is_a_warning(sim_bag, tmp_path, caplog):
    store = typestore()

    def edit(_index, raw):  # a D435 at 0.1 mm depth units
        if raw.topic != DEPTH_IMAGE:
            return raw.data
        msg = store.deserialize_cdr(raw.data, IMAGE)
        depth = np.frombuffer(msg.data, np.uint16).astype(np.uint32) * 10
        msg.data = np.minimum(depth, 65535).astype(np.uint16).view(np.uint8)
        return store.serialize_cdr(msg, IMAGE)

    with BagReader(sim_bag) as reader:
        stop_ns = reader.start_ns + 2_500_000_000
    bag = tmp_path / "units"
    _copy_bag(sim_bag, bag, stop_ns, edit)
    with BagReader(bag) as reader, caplog.at_level("WARNING", logger="iphd.eval.pipeline"):
        pipeline = pipeline_for_bag(CONFIG, reader)
        _run(pipeline, reader)
    assert caplog.text.count("beyond a D435's range") == 1  # once a run


def test_a_bag_where_no_pair_is_made_stops_with_why(sim_bag, tmp_path, capsys):
    store = typestore()

    def edit(_index, raw):  # every depth image in an encoding the pipeline does not take
        if raw.topic != DEPTH_IMAGE:
            return raw.data
        msg = store.deserialize_cdr(raw.data, IMAGE)
        msg.encoding = "8UC2"
        return store.serialize_cdr(msg, IMAGE)

    with BagReader(sim_bag) as reader:
        stop_ns = reader.start_ns + 2_500_000_000
    bag = tmp_path / "unpaired"
    _copy_bag(sim_bag, bag, stop_ns, edit)
    assert main(["bag", "--bag", str(bag), "--out", str(tmp_path / "out"), "--quiet",
                 "--reid-checkpoint", "none"]) == 2
    err = capsys.readouterr().err
    assert f"{bag}: no depth/thermal pair was made, so there is nothing to score: " in err
    assert f"{DEPTH_IMAGE} messages skipped (the log says why)" in err
    assert "iphd-eval check --bag" in err and "within 20 ms" not in err


def test_backward_stamps_reset_the_tracker(sim_bag):
    with BagReader(sim_bag) as reader:
        stop_ns = reader.start_ns + 2_500_000_000
        messages = list(reader.messages(stop_ns=stop_ns))
        pipeline = OfflinePipeline(CONFIG, reader.calibration)
    first, second = [], []
    for out in (first, second):  # the same 2.5 s twice: a looping bag
        for topic, _type, _log, msg in messages:
            out.extend(pipeline.push(topic, msg))
    second.extend(pipeline.finish())
    assert pipeline.stats.sync_resets == 1 and pipeline.stats.tracker_resets == 1
    assert len(first) >= 6 and len(second) >= len(first) - 1
    # After the reset the tracks start over: new ids, none confirmed on the first pair again.
    ids_before = {t.track_id for r in first for t in r.tracks}
    assert {t.track_id for t in second[0].tracks}.isdisjoint(ids_before)


# -- recorded graphs ------------------------------------------------------------------------


def _header(stamp_ns):
    t = typestore().types
    return t["std_msgs/msg/Header"](
        stamp=t["builtin_interfaces/msg/Time"](
            sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000
        ),
        frame_id="depth_optical_frame",
    )


def _tracks_msg(stamp_ns, rows, scores=None, positions=None):
    """rows: (id, state, box or None); scores: per row (ground truth: the visibility);
    positions: per row, metres (default (0, 0, 2))."""
    t = typestore().types
    cls = t["iphd_msgs/msg/PersonTrack"]
    tracks = [
        cls(
            id=i, state=state, score=0.9 if scores is None else scores[k],
            position=t["geometry_msgs/msg/Point"](
                *((0.0, 0.0, 2.0) if positions is None else positions[k])
            ),
            velocity=t["geometry_msgs/msg/Vector3"](0.0, 0.0, 0.0),
            x1=b[0] if b else 0.0, y1=b[1] if b else 0.0, x2=b[2] if b else 0.0,
            y2=b[3] if b else 0.0, age_s=0.0, time_since_update_s=0.0,
            embedding=np.zeros(0, dtype=np.float32),
        )
        for k, (i, state, b) in enumerate(rows)
    ]
    return t[PERSON_TRACKS](header=_header(stamp_ns), tracks=tracks)


def _detections_msg(stamp_ns, boxes):
    t = typestore().types
    det = t["iphd_msgs/msg/PersonDetection"]
    return t[DETECTIONS](
        header=_header(stamp_ns), image_width=848, image_height=HEIGHT,
        detections=[
            det(score=0.9, x1=b[0], y1=b[1], x2=b[2], y2=b[3],
                position=t["geometry_msgs/msg/Point"](0.0, 0.0, 2.0), temperature_k=305.0)
            for b in boxes
        ],
    )


def _people(frame):
    """Two people walking right; a third, too occluded to be a label."""
    x = 10.0 * frame
    return [
        PersonTruth(1, (100.0 + x, 100.0, 160.0 + x, 400.0), 1.0, (0.0, 0.0, 2.0)),
        PersonTruth(2, (400.0 - x, 80.0, 470.0 - x, 420.0), 0.9, (1.0, 0.0, 2.0)),
        PersonTruth(3, (700.0, 80.0, 760.0, 420.0), 0.05, (2.0, 0.0, 2.0)),
    ]


def _write_recording(path, tracks_for, *, ns="/robot/", with_truth=True, frames=10,
                     truth_shift_ns=0):
    """A bag like a recorded live graph: truth, detections (+30 ms) and tracks (+50 ms).

    ``truth_shift_ns`` stamps the ground truth that much after the frames it describes.
    """
    store = typestore()
    writer = Writer(path, version=Writer.VERSION_LATEST)
    writer.open()
    conns = {}

    def write(topic, msgtype, msg, log_ns):
        if topic not in conns:
            conns[topic] = writer.add_connection(topic, msgtype, typestore=store)
        writer.write(conns[topic], log_ns, store.serialize_cdr(msg, msgtype))

    for frame in range(frames):
        stamp = START_NS + frame * FRAME_NS
        people = _people(frame)
        if with_truth:
            truth = _tracks_msg(
                stamp + truth_shift_ns, [(p.pid, 1, p.box_xyxy) for p in people],
                [p.visibility for p in people], [p.position_m for p in people],
            )
            write(GROUND_TRUTH, PERSON_TRACKS, truth, stamp)
        boxes = [p.box_xyxy for p in people[:2]]
        write(ns + "detections", DETECTIONS, _detections_msg(stamp, boxes), stamp + 30_000_000)
        write(ns + "tracks", PERSON_TRACKS, _tracks_msg(stamp, tracks_for(frame, people)),
              stamp + 50_000_000)
    writer.close()


def test_recorded_tracks_copied_from_truth_score_perfect(tmp_path):
    bag = tmp_path / "live"
    # The published tracks: the two labelled people confirmed, plus a lost and a tentative one.
    _write_recording(
        bag,
        lambda f, people: _perfect_tracks(f, people)
        + [(50, 2, None), (51, 0, (0.0, 0.0, 30.0, 90.0))],
    )
    out = tmp_path / "out"
    assert main(["bag", "--bag", str(bag), "--out", str(out), "--recorded", "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    mot = metrics["mot"]
    assert mot["mota"] == 1.0 and mot["idf1"] == 1.0 and mot["motp"] == 1.0
    assert mot["num_objects"] == 20 and mot["num_predictions"] == 20
    assert metrics["ap"]["0.50"] == pytest.approx(1.0)
    assert metrics["mode"] == "recorded" and metrics["meta"]["tracks_topic"] == "/robot/tracks"
    latency = metrics["latency_ms"]
    assert latency["tracks_log_minus_stamp"]["p50"] == pytest.approx(50.0)
    assert latency["detections_log_minus_stamp"]["max"] == pytest.approx(30.0)
    assert "log time" in (out / "report.md").read_text()
    # The two labelled people, matched every frame; the third is left out by the label rule.
    # Detections sit at (0, 0, 2): person 1's own position, 1 m beside person 2's.
    breakdown = metrics["breakdown"]
    assert breakdown["detections"] == 20 and breakdown["matched"] == 20
    assert breakdown["second_box"] == breakdown["background"] == 0
    assert breakdown["recall_by_visibility"]["0.7_and_over"]["recall"] == 1.0
    assert breakdown["position"]["with_position"] == 20
    assert breakdown["position"]["median_m"] == pytest.approx(0.5)
    assert breakdown["position"]["over_0.5_m"] == pytest.approx(0.5)
    assert breakdown["position"]["over_1_m"] == 0.0


def test_check_names_a_recorded_graphs_output_and_what_scores_it(tmp_path):
    from iphd.eval.bag_check import check_bag

    _write_recording(tmp_path / "live", _perfect_tracks)
    notes = [n for n in check_bag(tmp_path / "live").notes if "running graph" in n]
    assert notes == [
        "/robot/detections and /robot/tracks: a running graph's output was recorded. iphd-eval "
        "bag --recorded scores it as the robot made it; iphd-eval bag without --recorded and a "
        "replay (iphd-run --bag, source:=bag) make it anew from the sensor topics, and the "
        "replay leaves the recorded copies out"
    ]


def test_recorded_switch_and_miss_give_the_constructed_metrics(tmp_path):
    bag = tmp_path / "live"
    _write_recording(bag, _switching_tracks, ns="")
    result, _ = evaluate_recorded(bag)
    mot = result.mot
    assert (mot["num_objects"], mot["num_misses"], mot["num_switches"]) == (20, 1, 1)
    assert mot["num_false_positives"] == 0
    assert mot["mota"] == pytest.approx(1 - 2 / 20)
    # IDTP: 1<->1 (9 frames) + 2<->2 or 7 (5 frames) = 14; IDF1 = 2 * 14 / (20 + 19).
    assert mot["idf1"] == pytest.approx(28 / 39)
    # With every identity right only the miss is left: IDTP 19, IDF1 = 2 * 19 / (20 + 19).
    assert result.idf1_true_ids() == pytest.approx(38 / 39)


def _switching_tracks(frame, people):
    """Person 1 missed on frame 3; person 2's track id changes at frame 5."""
    rows = [] if frame == 3 else [(1, 1, people[0].box_xyxy)]
    return rows + [(2 if frame < 5 else 7, 1, people[1].box_xyxy)]


def _perfect_tracks(frame, people):
    return [(p.pid, 1, p.box_xyxy) for p in people[:2]]


def test_several_bags_get_a_report_each_and_a_summary_with_the_mean(tmp_path, capsys):
    first, second = tmp_path / "a" / "live", tmp_path / "b" / "live"
    _write_recording(first, _perfect_tracks)
    _write_recording(second, _switching_tracks)
    out = tmp_path / "out"
    status = main(["bag", "--bag", str(first), str(second), "--out", str(out), "--recorded",
                   "--quiet"])
    assert status == 0, capsys.readouterr().err
    # Same bag name twice: the second report folder gets a suffix.
    assert (out / "live" / "report.md").is_file() and (out / "live-2" / "report.md").is_file()
    summary = json.loads((out / "summary.json").read_text())
    idf1 = [b["values"]["IDF1"] for b in summary["bags"]]
    assert idf1 == [pytest.approx(1.0), pytest.approx(28 / 39)]
    assert summary["mean"]["IDF1"] == pytest.approx((1.0 + 28 / 39) / 2)
    true_ids = [b["values"]["IDF1, true ids"] for b in summary["bags"]]
    assert true_ids == [pytest.approx(1.0), pytest.approx(38 / 39)]
    assert summary["mean"]["ID switches"] == pytest.approx(0.5)
    assert summary["mean"]["HOTA"] is not None and summary["mean"]["second boxes"] == 0.0
    # Person 2 of the second bag changes id once: 1.5 ids per person there, none shared.
    assert [b["values"]["ids per person"] for b in summary["bags"]] == [1.0, 1.5]
    assert [b["values"]["ids on several people"] for b in summary["bags"]] == [0.0, 0.0]
    md = (out / "summary.md").read_text()
    assert "2 of 2 bags scored" in md and "| **mean** |" in md and "(live-2/report.md)" in md
    assert "wrote" in capsys.readouterr().out


def test_a_bag_that_cannot_be_scored_is_listed_and_the_others_kept(tmp_path, capsys):
    good, bad = tmp_path / "good", tmp_path / "no_truth"
    _write_recording(good, _perfect_tracks)
    _write_recording(bad, _perfect_tracks, with_truth=False)
    out = tmp_path / "out"
    status = main(["bag", "--bag", str(bad), str(good), "--out", str(out), "--recorded",
                   "--quiet"])
    assert status == 2
    err = capsys.readouterr().err
    assert "1 of 2 bags could not be scored" in err and "summary.md" in err
    assert (out / "good" / "metrics.json").is_file()
    assert not (out / "no_truth" / "metrics.json").exists()
    md = (out / "summary.md").read_text()
    assert "1 of 2 bags scored" in md and "Not scored" in md and "no ground truth" in md
    summary = json.loads((out / "summary.json").read_text())
    assert summary["bags"][0]["error"] and summary["bags"][0]["values"] is None
    assert summary["mean"]["IDF1"] == pytest.approx(1.0)


# -- bad input ------------------------------------------------------------------------------


def test_a_run_in_which_no_frame_has_ground_truth_is_refused_not_reported_as_n_a(
    tmp_path, capsys
):
    # Ground truth on other stamps than the frames: every metric was n/a, the report blamed
    # "no detections", the command exited 0, and among several bags it counted as scored.
    bag, good = tmp_path / "shifted", tmp_path / "good"
    _write_recording(bag, _perfect_tracks, truth_shift_ns=1_000_000)
    _write_recording(good, _perfect_tracks)
    assert main(["bag", "--bag", str(bag), "--out", str(tmp_path / "o"), "--recorded"]) == 2
    err = capsys.readouterr().err
    assert "none of its 10 frames has ground truth at its stamp" in err
    assert "stamped 0.0-0.9 s after the bag's start" in err
    out = tmp_path / "several"
    assert main(["bag", "--bag", str(bag), str(good), "--out", str(out), "--recorded",
                 "--quiet"]) == 2
    assert "1 of 2 bags could not be scored" in capsys.readouterr().err
    assert "1 of 2 bags scored" in (out / "summary.md").read_text()


def test_a_bag_report_folder_that_cannot_be_written_stops_before_any_bag_is_scored(
    tmp_path, capsys
):
    first, second = tmp_path / "a" / "first", tmp_path / "b" / "second"
    _write_recording(first, _perfect_tracks)
    _write_recording(second, _perfect_tracks)
    out = tmp_path / "out"
    out.mkdir()
    (out / "second").write_text("in the way")
    assert main(["bag", "--bag", str(first), str(second), "--out", str(out),
                 "--recorded"]) == 2
    err = capsys.readouterr().err
    assert f"--out (a bag's report folder) {out / 'second'} is a file" in err
    assert "Traceback" not in err and not (out / "first").exists()


@pytest.mark.parametrize("option", ["--limit-s", "--start-s"])
def test_an_infinite_window_is_refused_by_name(sim_bag, tmp_path, capsys, option):
    assert main(["bag", "--bag", str(sim_bag), "--out", str(tmp_path / "o"), option,
                 "inf"]) == 2
    assert f"{option} must be" in capsys.readouterr().err


def test_a_window_of_the_bag_is_scored_from_its_start(sim_bag, tmp_path, capsys):
    whole, _ = evaluate_offline(sim_bag, CONFIG)
    part, _ = evaluate_offline(sim_bag, CONFIG, start_s=2.0)
    assert 0 < len(part.frames) < len(whole.frames)
    with BagReader(sim_bag) as reader:
        first = reader.start_ns
    assert part.frames[0].stamp_ns >= first + 2.0e9 > whole.frames[0].stamp_ns
    assert main(["bag", "--bag", str(sim_bag), "--out", str(tmp_path / "o"), "--recorded",
                 "--start-s", "1"]) == 2
    assert "--start-s is for the offline evaluation" in capsys.readouterr().err
    assert main(["bag", "--bag", str(sim_bag), "--out", str(tmp_path / "o"),
                 "--start-s", "-1"]) == 2
    assert "--start-s must be >= 0" in capsys.readouterr().err


def test_score_threshold_and_tracker_settings_reach_the_offline_run(tmp_path, monkeypatch,
                                                                   capsys):
    import iphd.eval.bag_eval

    seen = []

    def fake_offline(bag, config, **kwargs):
        seen.append(config)
        raise DatasetError("stop here")

    monkeypatch.setattr(iphd.eval.bag_eval, "evaluate_offline", fake_offline)
    args = ["bag", "--bag", str(tmp_path), "--out", str(tmp_path / "o")]
    assert main(args) == 2
    assert seen[-1].score_threshold == 0.5 and seen[-1].tracker == TrackerConfig()
    assert seen[-1].int8_calibration == ""
    assert main([*args, "--score-threshold", "0.3", "--set", "lost_timeout_s=4",
                 "--set", "adopt_lost=false", "--int8-calibration", "mine.npz"]) == 2
    assert "stop here" in capsys.readouterr().err
    assert seen[-1].score_threshold == 0.3 and seen[-1].int8_calibration == "mine.npz"
    assert seen[-1].tracker == TrackerConfig(lost_timeout_s=4.0, adopt_lost=False)


def test_the_report_lists_the_score_threshold_and_tracker_settings_run(sim_bag, tmp_path,
                                                                       capsys):
    out = tmp_path / "o"
    assert main(["bag", "--bag", str(sim_bag), "--out", str(out), "--threads", "1", "--quiet",
                 "--reid-checkpoint", "none", "--limit-s", "2", "--score-threshold", "0.6",
                 "--set", "min_score_new=0.9"]) == 0, capsys.readouterr().err
    meta = json.loads((out / "metrics.json").read_text())["meta"]
    assert meta["score_threshold"] == 0.6 and meta["tracker_set"] == "min_score_new=0.9"
    assert meta["tracker_config"]["min_score_new"] == 0.9
    assert meta["int8_calibration"] == "shipped"
    report = (out / "report.md").read_text()
    assert "- tracker_set: `min_score_new=0.9`" in report and '"min_score_new": 0.9' in report


@pytest.mark.parametrize(("extra", "message"), [
    (["--set", "lost_timout_s=4"], "'lost_timout_s' is not a tracker setting"),
    (["--set", "confirm_hits=many"], "confirm_hits: 'many' is not a int"),
    (["--set", "min_iou=2"], "min_iou must be"),
    (["--set", "lost_timeout_s=4,8"], "one value per setting"),
    (["--score-threshold", "1.5"], "--score-threshold must be in"),
    (["--recorded", "--set", "lost_timeout_s=4"], "--set is for the offline evaluation"),
    (["--recorded", "--start-s", "1"], "--start-s is for the offline evaluation"),
    (["--recorded", "--score-threshold", "0.3", "--verifier", "none"],
     "--verifier, --score-threshold set the offline run's models and thresholds"),
])
def test_bad_tracker_settings_stop_before_any_bag_is_read(tmp_path, capsys, extra, message):
    first, second = tmp_path / "a", tmp_path / "b"  # empty folders: reading them would fail
    first.mkdir()
    second.mkdir()
    assert main(["bag", "--bag", str(first), str(second), "--out", str(tmp_path / "o"),
                 *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_missing_bag_exits_2(tmp_path, capsys):
    assert main(["bag", "--bag", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "iphd-sim bag" in err


def test_a_missing_bag_among_several_stops_before_any_is_run(tmp_path, capsys):
    good = tmp_path / "good"
    _write_recording(good, _perfect_tracks)
    out = tmp_path / "o"
    assert main(["bag", "--bag", str(good), str(tmp_path / "nope"), "--out", str(out),
                 "--recorded"]) == 2
    assert "nope does not exist" in capsys.readouterr().err
    assert not out.exists()


def test_bag_without_truth_exits_2_naming_the_topic(tmp_path, capsys):
    bag = tmp_path / "no_truth"
    _write_recording(bag, lambda f, p: [], with_truth=False, frames=2)
    assert main(["bag", "--bag", str(bag), "--out", str(tmp_path / "o"), "--recorded"]) == 2
    err = capsys.readouterr().err
    assert "ground_truth/people" in err and "iphd-sim bag" in err


def test_bag_without_depth_or_thermal_exits_2(tmp_path, capsys):
    bag = tmp_path / "truth_only"
    _write_recording(bag, lambda f, p: [], frames=2)
    assert main(["bag", "--bag", str(bag), "--out", str(tmp_path / "o"), "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert "depth/image_raw" in err and "--recorded" not in err


def test_recorded_without_tracks_exits_2(sim_bag, tmp_path, capsys):
    assert main(["bag", "--bag", str(sim_bag), "--out", str(tmp_path / "o"), "--recorded"]) == 2
    assert "no tracks topic" in capsys.readouterr().err


def test_find_topic_takes_exact_or_namespaced_names():
    assert find_topic(["tracks", "/a/tracks"], "tracks") == "tracks"
    assert find_topic(["/robot/tracks", "tracks_old"], "tracks") == "/robot/tracks"
    assert find_topic(["/robot/mytracks", "depth/image_raw"], "tracks") is None
    assert find_topic(["/r/depth/image_raw"], "depth/image_raw") == "/r/depth/image_raw"


def test_find_topic_takes_a_renamed_topic_only():
    names = ["/camera/camera/depth/image_rect_raw", "depth/image_raw"]
    renamed = {"depth/image_raw": "/camera/camera/depth/image_rect_raw"}
    assert find_topic(names, "depth/image_raw", renamed) == names[0]
    assert find_topic(names, "depth/image_raw", {"depth/image_raw": "camera/camera/depth/"
                                                 "image_rect_raw"}) == names[0]
    assert find_topic(names, "depth/image_raw", {"depth/image_raw": "/other"}) is None
    assert find_topic(names, "depth/image_raw", {"depth/image_raw": ""}) == "depth/image_raw"
    # A renamed image's camera_info is the one beside it, not another camera's of that name.
    aligned = "/camera/camera/aligned_depth_to_color/"
    names = [f"{aligned}image_raw", f"{aligned}camera_info", "/camera/camera/depth/camera_info"]
    renamed = {"depth/image_raw": f"{aligned}image_raw"}
    assert find_topic(names, "depth/camera_info", renamed) == f"{aligned}camera_info"
    assert find_topic(names[:1] + names[2:], "depth/camera_info", renamed) is None
    assert find_topic(names, "depth/camera_info") == "/camera/camera/depth/camera_info"


def _first_two_seconds(bag):
    """The digest of the pipeline's results on the first 2 s of ``bag`` (as the copies hold)."""
    with BagReader(bag) as reader:
        stop_ns = reader.start_ns + 2_000_000_000
        return _digest(_run(pipeline_for_bag(CONFIG, reader), reader, stop_ns))


def test_a_bag_of_other_drivers_topics_runs_with_the_topics_named(
    sim_bag, other_drivers_bag, tmp_path, capsys
):
    expected = _first_two_seconds(sim_bag)
    renamed, topics = other_drivers_bag
    config = dataclasses.replace(CONFIG, topics=topics)
    with BagReader(renamed) as reader:
        with pytest.raises(DatasetError, match="--depth-topic"):
            _run(pipeline_for_bag(CONFIG, reader), reader)
        assert _digest(_run(pipeline_for_bag(config, reader), reader)) == expected
        wrong = dataclasses.replace(CONFIG, topics={**topics, "thermal/image_raw": "/t"})
        with pytest.raises(DatasetError, match=r"no /t \(given for thermal/image_raw\) topic"):
            _run(pipeline_for_bag(wrong, reader), reader)
    with pytest.raises(ValueError, match="thermal/camera_info"):
        OfflineConfig(topics={"thermal/camera_info": "/lepton/camera_info"})
    # The command line: the same names as iphd-run's and the launch file's arguments.
    out = tmp_path / "report"
    assert main([
        "bag", "--bag", str(renamed), "--out", str(out), "--threads", "1", "--quiet",
        "--reid-checkpoint", "none", "--depth-topic", topics["depth/image_raw"],
        "--depth-info-topic", topics["depth/camera_info"],
        "--thermal-topic", topics["thermal/image_raw"],
    ]) == 0
    assert (out / "report.md").is_file()
    assert f"on {len(expected)} frames" in capsys.readouterr().out


def test_report_without_trackeval_says_hota_is_missing_and_how_to_add_it():
    from iphd.eval.bag_eval import BagEvalResult, _markdown, metrics_dict
    from iphd.eval.mot import evaluate_mot

    result = BagEvalResult(mode="offline", ap={}, mot=evaluate_mot([]), frames=[],
                           latency_ms={}, pairs=0, frames_without_truth=0, skipped={})
    metrics = metrics_dict(result, {"bag": "b"})
    assert metrics["hota"] is None
    report = _markdown(metrics)
    assert "| HOTA | n/a (trackeval is not installed" in report
    assert "pip install --no-deps -r requirements-nodeps.txt" in report


def test_fused_images_are_handed_over_once_and_earlier_ones_forgotten():
    from iphd.eval.pipeline import FusedImages

    fused, depth, thermal = FusedImages(), np.zeros((2, 2)), np.ones((1, 1))
    for stamp in (10, 20, 30):
        fused.keep(stamp, depth, thermal)
    assert fused.take(20) == (depth, thermal)
    assert fused.take(10) is None  # a pair before one already handed over: it had failed
    assert fused.take(20) is None and fused.take(30) is not None


def test_images_recorded_only_through_image_transport_are_found_and_decoded(
    sim_bag, compressed_bag, tmp_path, capsys
):
    """A robot records .../image_rect_raw/compressedDepth, not raw depth: the user names the
    raw topic (or nothing, for iphd's own names) and the pipeline gives the raw bag's results."""
    names = ["/cam/depth/image_rect_raw/compressed", "/cam/depth/image_rect_raw/compressedDepth",
             "/cam/depth/camera_info", "/lepton/image_raw/compressedDepth",
             "/lepton/image_raw/compressed", "/ns/depth/image_raw/compressedDepth"]
    depth = {"depth/image_raw": "/cam/depth/image_rect_raw"}
    assert find_topic(names, "depth/image_raw", depth) == names[1]  # depth's own transport
    assert find_topic(names, "depth/camera_info", depth) == "/cam/depth/camera_info"
    assert find_topic(names, "thermal/image_raw", {"thermal/image_raw": "/lepton/image_raw"}) \
        == "/lepton/image_raw/compressed"  # compressedDepth would zero centi-kelvin
    assert find_topic(names, "depth/image_raw") == "/ns/depth/image_raw/compressedDepth"
    # A transport topic given as it is, and its camera_info beside the image it stands for.
    given = {"depth/image_raw": names[0]}
    assert find_topic(names, "depth/image_raw", given) == names[0]
    assert find_topic(names, "depth/camera_info", given) == "/cam/depth/camera_info"
    assert find_topic(names + ["/cam/depth/image_rect_raw"], "depth/image_raw", depth) \
        == "/cam/depth/image_rect_raw"  # raw wins
    expected = _first_two_seconds(sim_bag)
    bag, topics = compressed_bag
    config = dataclasses.replace(CONFIG, topics=topics)
    with BagReader(bag) as reader:
        assert _digest(_run(pipeline_for_bag(config, reader), reader)) == expected
        assert reader.corrupt == {}
    out = tmp_path / "report"
    assert main([
        "bag", "--bag", str(bag), "--out", str(out), "--threads", "1", "--quiet",
        "--reid-checkpoint", "none", "--depth-topic", topics["depth/image_raw"],
        "--thermal-topic", topics["thermal/image_raw"],
    ]) == 0
    assert f"on {len(expected)} frames" in capsys.readouterr().out


def test_a_turning_robots_bag_is_tracked_in_odom_through_its_tf(pan_bag, sim_bag, tmp_path,
                                                                 capsys):
    from iphd.data.rosbag import read_ground_truth, read_transform_buffer

    config = dataclasses.replace(CONFIG, tracking_frame="odom",
                                 tracker=TrackerConfig(up_axis="z"))
    with BagReader(pan_bag) as reader:
        pipeline = pipeline_for_bag(config, reader)
        results = _run(pipeline, reader)
        tf = read_transform_buffer(reader)
    assert pipeline.stats.no_transform == 0 and len(results) > 20
    # The tracks are where the people are, in odom: each labelled person's truth carried there
    # through the rig's odometry at that moment is near a confirmed track (were the swing of
    # the camera left in, they would be metres apart at the ends of it).
    truth = read_ground_truth(pan_bag)
    near, far = 0, 0
    for result in results:
        tracks = [t.position_m for t in result.tracks if t.state == "confirmed"]
        to_odom = tf("odom", "depth_optical_frame", result.stamp_ns)
        for person in truth.get(result.stamp_ns, []):
            if person.visibility < 0.7 or not tracks:
                continue
            p = np.array(to_odom.apply(person.position_m))
            gap = min(float(np.hypot(*(np.asarray(t)[:2] - p[:2]))) for t in tracks)
            near, far = near + (gap < 0.5), far + (gap >= 0.5)
    assert near > 20 and far <= near // 10, (near, far)
    # The detections themselves stay in the camera's frame: the same as tracked there.
    with BagReader(pan_bag) as reader:
        optical = _run(pipeline_for_bag(CONFIG, reader), reader)
    def boxes(rs):
        return [[(d.box_xyxy, d.score, d.position_m)
                 for d, published in zip(r.detections, r.published, strict=True) if published]
                for r in rs]

    assert boxes(optical) == boxes(results)
    # A bag whose transforms never name the frame is refused before anything runs.
    with BagReader(sim_bag) as reader:
        with pytest.raises(DatasetError, match=r"no transform into tracking frame 'odom'.*"
                                               r"camera_link, depth_optical_frame"):
            _run(pipeline_for_bag(config, reader), reader)
    assert main(["bag", "--bag", str(sim_bag), "--out", str(tmp_path / "static"), "--quiet",
                 "--reid-checkpoint", "none", "--tracking-frame", "odom"]) == 2
    assert "leave out --tracking-frame" in capsys.readouterr().err
    # up_axis follows the frame: the optical frame's is -y.
    with pytest.raises(ValueError, match="give the tracking_frame"):
        OfflineConfig(tracker=TrackerConfig(up_axis="z"))
    # The command line: --tracking-frame sets up_axis z unless --set gives it.
    out = tmp_path / "report"
    assert main(["bag", "--bag", str(pan_bag), "--out", str(out), "--threads", "1", "--quiet",
                 "--reid-checkpoint", "none", "--tracking-frame", "odom",
                 "--limit-s", "2"]) == 0
    meta = json.loads((out / "metrics.json").read_text())["meta"]
    assert (meta["tracking_frame"], meta["up_axis"]) == ("odom", "z")
    assert main(["bag", "--bag", str(pan_bag), "--out", str(out), "--quiet", "--recorded",
                 "--tracking-frame", "odom"]) == 2
    assert "--tracking-frame is for the offline evaluation" in capsys.readouterr().err


def test_pairs_with_no_transform_into_the_tracking_frame_are_counted_and_said(
        sim_bag, tmp_path, capsys, monkeypatch):
    from iphd import tf_buffer
    from iphd.eval import pipeline as pipeline_module

    def odometry_only(reader, stop_ns=None, start_ns=None):
        # odom is named, but nothing joins it to the cameras (no base_link -> camera_link).
        buffer = tf_buffer.TransformBuffer()
        buffer.add("odom", "base_link", (0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0), None)
        return buffer

    monkeypatch.setattr(pipeline_module, "read_transform_buffer", odometry_only)
    config = dataclasses.replace(CONFIG, tracking_frame="odom",
                                 tracker=TrackerConfig(up_axis="z"))
    with BagReader(sim_bag) as reader:
        pipeline = pipeline_for_bag(config, reader)
        results = _run(pipeline, reader, reader.start_ns + 2_000_000_000)
    assert pipeline.stats.no_transform == len(results) > 0
    assert all(not r.tracks for r in results) and any(r.detections for r in results)
    out = tmp_path / "report"
    assert main(["bag", "--bag", str(sim_bag), "--out", str(out), "--quiet", "--threads", "1",
                 "--reid-checkpoint", "none", "--tracking-frame", "odom",
                 "--limit-s", "2"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    pairs = metrics["pairs"]
    assert metrics["counters"]["no_transform"] == pairs > 0
    assert (f"{pairs} of {pairs} pairs not tracked: no transform from the depth frame into "
            "tracking frame 'odom'") in capsys.readouterr().out


def test_a_tracks_message_whose_detections_the_recording_lost_is_counted_not_scored():
    box = (50.0, 30.0, 70.0, 90.0)
    person = PersonTruth(7, box, 1.0, (0.0, 0.0, 2.0))
    recorded = RecordedFrames(image_height=96)
    recorded.add_detections(1, np.array([[*box, 0.9]]), 96)
    recorded.tracks = [(1, [(3, "confirmed", box)]), (2, [(3, "confirmed", box)])]
    result = score_recorded(recorded, {1: [person], 2: [person]})
    # Both frames count for tracking; only the frame with its detections for AP.
    assert result.mot["num_objects"] == 2
    assert result.ap["n_gt"] == 1 and result.ap["ap"][0.5] == pytest.approx(1.0)
    assert result.counters["tracks_without_detections"] == 1


def test_an_output_that_cannot_be_written_is_refused_before_any_model_runs(tmp_path, capsys):
    a_file = tmp_path / "report.txt"
    a_file.write_text("")
    (tmp_path / "movie.mp4").mkdir()
    # Not a bag at all: the output is checked first, so its error is the one said.
    for argv, expected in (
        (["bag", "--bag", str(tmp_path / "no_bag"), "--out", str(a_file)],
         f"--out {a_file} is a file; give a folder for the output"),
        (["bag", "--bag", str(tmp_path / "no_bag"), "--out", str(a_file / "sub")],
         f"cannot write into the --out folder {a_file / 'sub'}"),
        (["detector", "--checkpoint", "x.pt", "--dataset", str(tmp_path), "--out", str(a_file)],
         f"--out {a_file} is a file; give a folder for the output"),
        (["export-mot", "--bag", str(tmp_path / "no_bag"), "--out", str(a_file)],
         f"--out {a_file} is a file; give a new folder for the export"),
        (["video", "--bag", str(tmp_path / "no_bag"), "--out", str(tmp_path / "movie.mp4")],
         f"--out {tmp_path / 'movie.mp4'} is a folder; give the path of the file to write"),
    ):
        assert main(argv) == 2
        assert expected in capsys.readouterr().err
