"""Ground truth for your own bags: export to MOT for annotation, import the annotations back."""

import configparser
import math
import shutil

import cv2
import pytest
import yaml

from iphd.calibration import load_calibration
from iphd.data.rosbag import GROUND_TRUTH, TF_STATIC, THERMAL_IMAGE, BagReader, read_ground_truth
from iphd.errors import DatasetError
from iphd.eval.annotation import (
    export_mot,
    import_mot,
    read_mot,
    read_stamps,
    truth_by_stamp,
)
from iphd.eval.bag_eval import evaluate_offline
from iphd.eval.cli import main
from iphd.eval.pipeline import OfflineConfig

CONFIG = OfflineConfig(threads=1, reid_checkpoint="none")


@pytest.fixture(scope="module")
def exported(sim_bag, tmp_path_factory):
    out = tmp_path_factory.mktemp("mot") / "export"
    summary = export_mot(sim_bag, out, CONFIG)
    return out, summary


def _copy(exported, tmp_path):
    """A copy of the shared export to annotate (tests must not change each other's gt.txt)."""
    return shutil.copytree(exported[0], tmp_path / "annotated")


def _write_gt(path, rows):
    path.write_text("".join(",".join(str(v) for v in row) + "\n" for row in rows))
    return path


def test_export_writes_a_mot_sequence_prefilled_with_the_tracks(exported):
    out, summary = exported
    assert summary.frames > 10 and summary.image_size == (848, 480)
    images = sorted((out / "img1").iterdir())
    assert [p.name for p in images[:2]] == ["000001.jpg", "000002.jpg"]
    assert len(images) == summary.frames
    assert cv2.imread(str(images[0])).shape == (480, 848, 3)
    info = configparser.ConfigParser()
    info.optionxform = str
    info.read(out / "seqinfo.ini")
    seq = info["Sequence"]
    assert (seq["imDir"], seq["imExt"], int(seq["seqLength"])) == ("img1", ".jpg", summary.frames)
    assert (int(seq["imWidth"]), int(seq["imHeight"])) == (848, 480)
    # Pairs at the Lepton's rate, as an integer: MOTChallenge and datumaro parse it with int().
    assert 5 <= int(seq["frameRate"]) <= 12
    stamps = read_stamps(out / "stamps.csv")
    assert sorted(stamps) == list(range(1, summary.frames + 1))
    assert list(stamps.values()) == sorted(stamps.values())
    assert (out / "gt" / "labels.txt").read_text() == "person\n"
    # The pipeline's confirmed tracks as editable rows: frame, id, x, y, w, h, 1, person, 1.
    annotations = read_mot(out / "gt" / "gt.txt", ["person"])
    assert sum(len(v) for v in annotations.boxes.values()) == summary.prefilled_boxes > 10
    assert set(annotations.boxes) <= set(stamps)


def test_the_true_boxes_imported_back_score_as_the_bag_itself(sim_bag, exported, tmp_path):
    out = _copy(exported, tmp_path)
    stamps = read_stamps(out / "stamps.csv")
    truth = read_ground_truth(sim_bag)
    rows = []
    for frame, stamp in stamps.items():
        for p in truth[stamp]:
            x1, y1, x2, y2 = p.box_xyxy
            rows.append((frame, p.pid + 1, x1, y1, x2 - x1, y2 - y1, 1, 1, p.visibility))
    _write_gt(out / "gt" / "gt.txt", rows)
    bag = tmp_path / "with_truth"
    summary = import_mot(sim_bag, out, bag)
    assert summary.frames == len(stamps) and summary.boxes == len(rows)
    assert summary.replaced_truth and summary.skipped == {}
    with BagReader(bag) as copy, BagReader(sim_bag) as original:
        assert copy.calibration.to_dict() == original.calibration.to_dict()
        assert copy.topics[TF_STATIC].latched
        for topic, info in original.topics.items():
            if topic != GROUND_TRUTH:
                assert copy.topics[topic].count == info.count, topic
    imported = read_ground_truth(bag)
    assert set(imported) == set(stamps.values())
    person = next(p for people in imported.values() for p in people)
    assert all(math.isnan(v) for v in person.position_m)  # 2D annotations: no 3D point
    # The same frames and boxes (positions aside) give the same tracking scores.
    ours, _ = evaluate_offline(bag, CONFIG)
    theirs, _ = evaluate_offline(sim_bag, CONFIG)
    assert ours.mot == theirs.mot
    assert {t: float(v) for t, v in ours.ap["ap"].items()} == {
        t: float(v) for t, v in theirs.ap["ap"].items()
    }
    assert ours.breakdown["position"]["with_position"] == 0


def test_import_stores_the_rig_calibration_it_is_given(sim_bag, exported, tmp_path, capsys):
    out = _copy(exported, tmp_path)
    _write_gt(out / "gt" / "gt.txt", [(1, 1, 10, 10, 40, 100)])
    rig = load_calibration().to_dict()
    rig["thermal"]["fx"] += 3.0
    rig["meta"]["source"] = "my robot, 2026-12-05"
    path = tmp_path / "my_rig.yaml"
    path.write_text(yaml.safe_dump(rig))
    assert main(["import-mot", "--bag", str(sim_bag), "--mot", str(out), "--out",
                 str(tmp_path / "gt_bag"), "--calibration", str(path)]) == 0
    assert f"rig calibration: {path}" in capsys.readouterr().out
    with BagReader(tmp_path / "gt_bag") as copy:
        assert copy.calibration.to_dict() == load_calibration(path).to_dict()
    kept = import_mot(sim_bag, out, tmp_path / "kept")
    assert kept.calibration == "kept from the bag"
    (tmp_path / "bad.yaml").write_text("thermal: 3\n")
    assert main(["import-mot", "--bag", str(sim_bag), "--mot", str(out), "--out",
                 str(tmp_path / "x"), "--calibration", str(tmp_path / "bad.yaml")]) == 2
    assert "bad.yaml" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_export_of_a_window_of_the_bag(sim_bag, tmp_path):
    with BagReader(sim_bag) as reader:
        first = reader.start_ns
    out = tmp_path / "window"
    summary = export_mot(sim_bag, out, CONFIG, start_s=1.5, limit_s=1.0)
    stamps = list(read_stamps(out / "stamps.csv").values())
    assert 5 <= summary.frames == len(stamps) <= 12  # about 1 s of pairs at 8.7 a second
    # A pair is made when its depth frame's message is read: its stamp lies in the window.
    assert all(first + 1.4e9 <= s < first + 2.5e9 for s in stamps)
    with pytest.raises(ValueError, match="past the end"):
        export_mot(sim_bag, tmp_path / "late", CONFIG, start_s=60.0)
    # A window between two thermal frames makes no pair, and the error says why.
    with BagReader(sim_bag) as reader:
        thermal = [m.log_ns - first for m in reader.raw_messages([THERMAL_IMAGE])][5:7]
    with pytest.raises(DatasetError, match="nothing to annotate: the part read .* holds no "
                       "thermal image .*the next is logged"):
        export_mot(sim_bag, tmp_path / "gap", CONFIG, start_s=(thermal[0] + 1e7) / 1e9,
                   limit_s=(thermal[1] - thermal[0] - 2e7) / 1e9)


def test_mot_rows_follow_the_cvat_columns(tmp_path):
    gt = _write_gt(tmp_path / "gt.txt", [
        (1, 7, 10, 20, 30, 60, 1, 2, 0.5),   # class 2 = person in labels.txt below
        (1, 8, 50, 20, 30, 60, 0, 2, 1.0),   # ignored
        (2, 7, 12, 20, 30, 60, 1, 1, 1.0),   # class 1 = car
        (2, 9, 90, 10, 20, 40, 1, 2, 1.7),   # visibility clipped to 1
    ])
    parsed = read_mot(gt, ["car", "person"])
    assert parsed.skipped == {"ignored": 1, "other class": 1}
    assert [(b.track_id, b.box_xyxy, b.visibility) for b in parsed.boxes[1]] == [
        (7, (10.0, 20.0, 40.0, 80.0), 0.5)
    ]
    assert parsed.boxes[2][0].visibility == 1.0
    # Without labels.txt, class 1 is the person (MOTChallenge); short rows mean person, seen.
    _write_gt(gt, [(3, 1, 0, 0, 10, 20)])
    assert read_mot(gt).boxes[3][0].visibility == 1.0


@pytest.mark.parametrize(("row", "message"), [
    ("1,2,3,4,5", "at least frame,id,x,y,w,h"),
    ("1,2,x,4,5,6", "not a number"),
    ("1,2,3,4,0,6", "width and height must be > 0"),
    ("0,2,3,4,5,6", "frame numbers start at 1"),
    ("1,-2,3,4,5,6", "ids must be whole numbers from 0"),
    ("1,-1,3,4,5,6", "drawn as shapes, not tracks, in CVAT: draw people as tracks"),
])
def test_a_malformed_row_names_its_line(tmp_path, row, message):
    gt = tmp_path / "gt.txt"
    gt.write_text("1,1,3,4,5,6\n" + row + "\n")
    with pytest.raises(DatasetError, match=f"gt.txt:2: .*{message}"):
        read_mot(gt)


def test_boxes_cvat_marked_occluded_are_kept_and_counted_as_below_the_label_rule(tmp_path):
    # CVAT without a `visibility` attribute writes 1 - occluded: 0 for a box marked occluded.
    gt = _write_gt(tmp_path / "gt.txt", [
        (1, 1, 10, 20, 30, 60, 1, 1, 0.0),   # marked occluded
        (1, 2, 50, 20, 30, 60, 1, 1, 1.0),
        (2, 1, 12, 20, 30, 60, 1, 1, 0.19),  # just below the label rule's 0.2
        (2, 2, 52, 20, 30, 60, 1, 1, 0.2),   # at it: a label
        (3, 1, 12, 20, 30, 60, 0, 1, 0.0),   # ignored: left out, not counted again
    ])
    parsed = read_mot(gt)
    assert parsed.low_visibility == 2 and parsed.skipped == {"ignored": 1}
    assert [b.visibility for b in parsed.boxes[1]] == [0.0, 1.0]  # kept as annotated


def test_import_reports_boxes_the_label_rule_leaves_out(sim_bag, exported, tmp_path, capsys):
    out = _copy(exported, tmp_path)
    _write_gt(out / "gt" / "gt.txt", [(1, 1, 10, 10, 40, 100, 1, 1, 0.0),
                                      (2, 1, 10, 10, 40, 100, 1, 1, 1.0)])
    assert main(["import-mot", "--bag", str(sim_bag), "--mot", str(out),
                 "--out", str(tmp_path / "gt_bag")]) == 0
    printed = capsys.readouterr()
    assert "2 boxes of 1 people" in printed.out
    line = "1 boxes with visibility < 0.2 (CVAT writes 0 for boxes marked occluded"
    assert line in printed.out and "left out of scoring and training" in printed.out
    assert "warning: " + line in printed.err
    stamps = read_stamps(out / "stamps.csv")
    assert [p.visibility for p in read_ground_truth(tmp_path / "gt_bag")[stamps[1]]] == [0.0]


def test_fractional_frame_numbers_and_ids_are_refused_not_cut(tmp_path):
    gt = tmp_path / "gt.txt"
    gt.write_text("1.6,1,0,0,5,5,1,1,1.0\n")
    with pytest.raises(DatasetError, match="gt.txt:1: frame 1.6 and id 1 must be whole"):
        read_mot(gt)
    gt.write_text("1,1,abc,0,5,5,1,1,1.0\n")
    with pytest.raises(DatasetError, match=r"not a number .*\(columns frame,id,x,y"):
        read_mot(gt)


def test_a_person_twice_in_a_frame_or_no_person_class_is_refused(tmp_path):
    gt = _write_gt(tmp_path / "gt.txt", [(1, 1, 0, 0, 5, 5), (1, 1, 9, 0, 5, 5)])
    with pytest.raises(DatasetError, match="person 1 appears twice in frame 1"):
        read_mot(gt)
    with pytest.raises(DatasetError, match="no 'person' class"):
        read_mot(gt, ["car"])


def test_annotations_of_frames_the_export_lacks_are_refused(tmp_path):
    gt = _write_gt(tmp_path / "gt.txt", [(1, 1, 0, 0, 5, 5), (9, 1, 0, 0, 5, 5)])
    with pytest.raises(DatasetError, match="annotates frame 9.*export does not have"):
        truth_by_stamp(read_mot(gt), {1: 100, 2: 200})
    truth = truth_by_stamp(read_mot(_write_gt(gt, [(1, 4, 0, 0, 5, 5)])), {1: 100, 2: 200})
    assert [p.pid for p in truth[100]] == [4] and truth[200] == []  # nobody there: scored too


def test_import_refuses_another_bag_an_existing_output_and_a_missing_stamps_file(
    sim_bag, exported, tmp_path
):
    out, _ = exported
    with pytest.raises(DatasetError, match="already exists"):
        import_mot(sim_bag, out, tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    (other / "gt").mkdir()
    _write_gt(other / "gt" / "gt.txt", [(1, 1, 0, 0, 5, 5)])
    with pytest.raises(DatasetError, match="stamps.csv does not exist"):
        import_mot(sim_bag, other, tmp_path / "new")
    (other / "stamps.csv").write_text("frame,depth_stamp_ns\n1,123\n")
    with pytest.raises(DatasetError, match="exported from another bag"):
        import_mot(sim_bag, other, tmp_path / "new")
    # One stamp of the export edited: named, not imported with frames that score nothing.
    edited = tmp_path / "edited"
    shutil.copytree(out, edited)
    rows = (edited / "stamps.csv").read_text().splitlines()
    frame, stamp = rows[2].split(",")
    rows[2] = f"{frame},{int(stamp) + 7}"
    (edited / "stamps.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DatasetError, match=f"1 of the .* first that of frame {frame} "):
        import_mot(sim_bag, edited, tmp_path / "new")
    # An export of another bag on the same time grid (simulator bags share one): its name.
    shutil.copytree(out, other := tmp_path / "renamed")
    info = (other / "seqinfo.ini").read_text()
    (other / "seqinfo.ini").write_text(info.replace(f"name={sim_bag.name}", "name=other_bag"))
    with pytest.raises(DatasetError, match="export of 'other_bag', not of"):
        import_mot(sim_bag, other, tmp_path / "new")
    assert not (tmp_path / "new").exists()
    with pytest.raises(DatasetError, match="--mot .*missing is not a folder: give the folder"):
        import_mot(sim_bag, tmp_path / "missing", tmp_path / "new")


def test_an_annotation_without_a_box_is_imported_as_an_empty_room_and_said(
    sim_bag, exported, tmp_path, caplog
):
    annotated = _copy(exported, tmp_path)
    (annotated / "gt" / "gt.txt").write_text("")
    with caplog.at_level("WARNING"):
        done = import_mot(sim_bag, annotated, tmp_path / "empty_room")
    assert done.boxes == 0 and done.frames > 0
    assert "gt.txt holds no box: every frame becomes ground truth with nobody in it" in caplog.text


def test_export_refuses_a_folder_that_may_hold_annotation_work(sim_bag, exported):
    out, _ = exported
    with pytest.raises(DatasetError, match="not empty"):
        export_mot(sim_bag, out, CONFIG)


def test_cli_exports_every_nth_pair_and_imports(sim_bag, tmp_path, capsys):
    out = tmp_path / "mot"
    assert main(["export-mot", "--bag", str(sim_bag), "--out", str(out), "--every", "3",
                 "--no-prefill", "--threads", "1", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "iphd-eval import-mot" in printed and "MOT 1.1" in printed
    frames = len(read_stamps(out / "stamps.csv"))
    assert (out / "gt" / "gt.txt").read_text() == ""
    _write_gt(out / "gt" / "gt.txt", [(1, 1, 10, 10, 40, 100)])
    assert main(["import-mot", "--bag", str(sim_bag), "--mot", str(out),
                 "--out", str(tmp_path / "gt_bag")]) == 0
    printed = capsys.readouterr()
    assert f"{frames} frames of ground truth, 1 boxes of 1 people" in printed.out
    assert "0 boxes with visibility < 0.2" in printed.out and "warning" not in printed.err
    assert main(["export-mot", "--bag", str(tmp_path / "missing"), "--out",
                 str(tmp_path / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # nothing left behind for a bag that is not there
    assert main(["import-mot", "--bag", str(sim_bag), "--mot", str(out),
                 "--out", str(tmp_path / "gt_bag")]) == 2
    assert "already exists" in capsys.readouterr().err


def test_a_bag_of_other_drivers_topics_is_exported_and_imported_with_the_names_given(
    other_drivers_bag, tmp_path, capsys
):
    bag, topics = other_drivers_bag
    names = ["--depth-topic", topics["depth/image_raw"],
             "--thermal-topic", topics["thermal/image_raw"]]  # depth/camera_info: beside it
    out = tmp_path / "mot"
    assert main(["export-mot", "--bag", str(bag), "--out", str(out), "--no-prefill",
                 "--threads", "1", "--quiet"]) == 2
    assert "--depth-topic" in capsys.readouterr().err
    assert not out.exists()  # refused before anything was written: the same --out works
    assert main(["export-mot", "--bag", str(bag), "--out", str(out), "--no-prefill",
                 "--threads", "1", "--quiet", *names]) == 0
    # The next commands printed carry the names (import-mot reads only depth).
    assert f"--out BAG_WITH_TRUTH --depth-topic {topics['depth/image_raw']}\n" in \
        capsys.readouterr().out
    stamps = read_stamps(out / "stamps.csv")
    assert len(stamps) >= 8
    _write_gt(out / "gt" / "gt.txt", [(1, 1, 10, 10, 40, 100)])
    argv = ["import-mot", "--bag", str(bag), "--mot", str(out), "--out", str(tmp_path / "gt")]
    assert main(argv) == 2
    assert "no depth/image_raw and depth/camera_info" in capsys.readouterr().err
    assert main([*argv, *names[:2]]) == 0
    assert f"--out out/eval/gt --depth-topic {topics['depth/image_raw']}" in \
        capsys.readouterr().out
    truth = read_ground_truth(tmp_path / "gt")
    assert sorted(truth) == sorted(stamps.values())
    # The truth is in the driver's depth frame, as the depth images are.
    with BagReader(tmp_path / "gt") as reader:
        frame = next(m.header.frame_id for *_, m in reader.messages([GROUND_TRUTH]))
        depth = next(m.header.frame_id for *_, m in reader.messages([topics["depth/image_raw"]]))
    assert frame == depth


def test_export_runs_the_models_and_int8_calibration_it_is_given(tmp_path, monkeypatch, capsys):
    import iphd.eval.annotation

    seen = []

    def fake_export(bag, out, config, **kwargs):
        seen.append(config)
        raise DatasetError("stop here")

    monkeypatch.setattr(iphd.eval.annotation, "export_mot", fake_export)
    args = ["export-mot", "--bag", str(tmp_path), "--out", str(tmp_path / "o")]
    assert main(args) == 2
    assert (seen[-1].detector_checkpoint, seen[-1].verifier, seen[-1].int8_calibration) == (
        "", "", ""
    )
    assert main([*args, "--detector-checkpoint", "mine.pt", "--verifier", "none",
                 "--int8-calibration", "mine.npz"]) == 2
    assert "stop here" in capsys.readouterr().err
    assert (seen[-1].detector_checkpoint, seen[-1].verifier, seen[-1].int8_calibration) == (
        "mine.pt", "none", "mine.npz"
    )
