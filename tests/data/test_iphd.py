import json

import numpy as np
import pytest

from iphd.data.iphd import (
    DEPTH_SIZE,
    THERMAL_SIZE,
    IphdDataset,
    cxcywh_to_xyxy,
    finalize_split,
    frame_meta,
    frame_name,
    label_text,
    read_yolo_labels,
    write_frame,
    xyxy_to_cxcywh,
)
from iphd.data.output import write_png
from iphd.data.truth import PersonTruth
from iphd.errors import DatasetError, FrameError

W, H = 64, 36  # small depth frames keep the tests fast
TW, TH = 11, 6
SMALL = {"depth_size": (W, H), "thermal_size": (TW, TH)}


def _frame(seed):
    rng = np.random.default_rng(seed)
    depth = rng.integers(0, 65536, (H, W), dtype=np.uint16)
    thermal = rng.integers(0, 65536, (TH, TW), dtype=np.uint16)
    return depth, thermal


def _people(seed):
    return [
        PersonTruth(
            pid=7 - seed,
            box_xyxy=(10.123456, 5.5, 30.0, 35.25),
            visibility=0.876543,
            position_m=(0.1234567, -0.5, 3.25),
            velocity_mps=(0.5, 0.0, -0.000001),
        ),
        PersonTruth(pid=2, box_xyxy=(40.0, 1.0, 60.0, 20.0), visibility=1.0, position_m=(1, 2, 3)),
    ]


def _write_split(root, split="train", n=3):
    names, metas = [], []
    for i in range(n):
        name = frame_name(3, i)
        depth, thermal = _frame(i)
        weak = np.array([[10.0 + i, 5.0, 30.0, 35.0], [-5.0, -2.0, 8.0, 50.0]])
        clean = np.array([[10.0, 5.0, 30.0, 35.0]])
        write_frame(root, split, name, depth, thermal, weak, clean)
        names.append(name)
        metas.append(frame_meta(name, 3, i, 1_000_000_000 + i * 33_333_333, _people(i)))
    finalize_split(root, split, names[::-1], metas)
    return names


def test_frame_name_format_and_range():
    assert frame_name(3, 12) == "vid00003_00000012"
    with pytest.raises(DatasetError, match="do not fit"):
        frame_name(100_000, 0)
    with pytest.raises(DatasetError, match="do not fit"):
        frame_name(0, -1)


def test_box_conversions_round_trip():
    boxes = np.array([[0.0, 0.0, 1280.0, 720.0], [100.5, 200.25, 300.75, 700.0]])
    norm = xyxy_to_cxcywh(boxes, 1280, 720)
    np.testing.assert_allclose(norm[0], [0.5, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(
        norm[1], [200.625 / 1280, 450.125 / 720, 200.25 / 1280, 499.75 / 720]
    )
    np.testing.assert_allclose(cxcywh_to_xyxy(norm, 1280, 720), boxes, atol=1e-9)
    assert xyxy_to_cxcywh(np.zeros((0, 4)), 10, 10).shape == (0, 4)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        xyxy_to_cxcywh(np.zeros((2, 3)), 10, 10)


def test_label_text_clips_drops_empty_boxes_and_formats_six_decimals():
    boxes = np.array(
        [
            [-10.0, -0.0, 20.0, 10.0],  # clipped to x1 = 0
            [50.0, 50.0, 50.0, 60.0],  # zero width
            [200.0, 10.0, 300.0, 20.0],  # entirely right of the 100 px image
            [10.0, 20.0, 110.0, 40.0],  # clipped to x2 = 100
        ]
    )
    text = label_text(boxes, 100, 50)
    assert text == "0 0.100000 0.100000 0.200000 0.200000\n0 0.550000 0.600000 0.900000 0.400000\n"
    assert label_text(np.zeros((0, 4)), 100, 50) == ""


def test_round_trip_is_exact_and_labels_match_within_tolerance(tmp_path):
    names = _write_split(tmp_path)
    ds = IphdDataset(tmp_path, "train", **SMALL)
    assert ds.names == tuple(names)
    assert len(ds) == 3
    sample = ds[1]
    depth, thermal = _frame(1)
    assert sample.name == names[1]
    assert sample.depth_mm.dtype == np.uint16 and sample.thermal_ck.dtype == np.uint16
    np.testing.assert_array_equal(sample.depth_mm, depth)
    np.testing.assert_array_equal(sample.thermal_ck, thermal)
    assert sample.boxes_xyxy.dtype == np.float32
    expected_weak = np.array([[11.0, 5.0, 30.0, 35.0], [0.0, 0.0, 8.0, 36.0]])
    np.testing.assert_allclose(sample.boxes_xyxy, expected_weak, atol=1e-6 * W)
    clean = IphdDataset(tmp_path, "train", labels="clean", **SMALL)[-1]
    np.testing.assert_allclose(clean.boxes_xyxy, [[10.0, 5.0, 30.0, 35.0]], atol=1e-6 * W)
    with pytest.raises(IndexError):
        ds[3]


def test_layout_list_and_thermal_labels(tmp_path):
    names = _write_split(tmp_path)
    for modality in ("depth", "thermal"):
        folder = tmp_path / f"iphd_train_{modality}"
        listing = (folder / "list.txt").read_text()
        assert listing == "".join(f"images/{n}.png\n" for n in names)
        for labels in ("labels", "labels_clean"):
            assert sorted(p.name for p in (folder / labels).iterdir()) == [
                f"{n}.txt" for n in names
            ]
    depth_labels = (tmp_path / "iphd_train_depth/labels" / f"{names[0]}.txt").read_text()
    thermal_labels = (tmp_path / "iphd_train_thermal/labels" / f"{names[0]}.txt").read_text()
    assert thermal_labels == depth_labels
    assert depth_labels.splitlines()[0] == "0 0.312500 0.555556 0.312500 0.833333"


def test_full_size_frames_pass_the_default_size_check(tmp_path):
    depth = np.full((DEPTH_SIZE[1], DEPTH_SIZE[0]), 1500, np.uint16)
    thermal = np.full((THERMAL_SIZE[1], THERMAL_SIZE[0]), 30815, np.uint16)
    name = frame_name(0, 0)
    write_frame(tmp_path, "valid", name, depth, thermal, np.zeros((0, 4)), np.zeros((0, 4)))
    finalize_split(tmp_path, "valid", [name], [frame_meta(name, 0, 0, 0, [])])
    sample = IphdDataset(tmp_path, "valid")[0]
    assert sample.depth_mm.shape == (720, 1280) and sample.thermal_ck.shape == (120, 213)
    assert sample.boxes_xyxy.shape == (0, 4)
    small = tmp_path / "small"
    _write_split(small, n=1)
    with pytest.raises(DatasetError, match=r"is 64x36 px, expected 1280x720.*depth_size=None"):
        IphdDataset(small, "train")[0]


def test_a_thermal_frame_not_registered_into_its_depth_frame_is_refused(tmp_path):
    # Sizes are free (bag_to_iphd.py keeps the recording's), but the pair must be one view.
    depth = np.full((240, 424), 1500, np.uint16)
    name = frame_name(0, 0)
    for thermal_shape, ok in (((60, 106), True), ((60, 107), True), ((50, 200), False)):
        root = tmp_path / f"{thermal_shape[1]}x{thermal_shape[0]}"
        thermal = np.full(thermal_shape, 30815, np.uint16)
        write_frame(root, "train", name, depth, thermal, np.zeros((0, 4)), np.zeros((0, 4)))
        finalize_split(root, "train", [name], [frame_meta(name, 0, 0, 0, [])])
        dataset = IphdDataset(root, "train", depth_size=None, thermal_size=None)
        if ok:
            assert dataset[0].thermal_ck.shape == thermal_shape
        else:
            with pytest.raises(DatasetError, match=r"thermal 200x50 px is not the depth frame "
                                                   r"424x240 at one scale"):
                dataset[0]


def test_empty_label_files_give_no_boxes(tmp_path):
    depth, thermal = _frame(0)
    name = frame_name(1, 1)
    write_frame(tmp_path, "test", name, depth, thermal, np.zeros((0, 4)), [[0, 0, 0, 0]])
    finalize_split(tmp_path, "test", [name], [frame_meta(name, 1, 1, 5, [])])
    assert (tmp_path / "iphd_test_depth/labels" / f"{name}.txt").read_bytes() == b""
    assert (tmp_path / "iphd_test_depth/labels_clean" / f"{name}.txt").read_bytes() == b""
    for labels in ("weak", "clean"):
        assert IphdDataset(tmp_path, "test", labels=labels, **SMALL)[0].boxes_xyxy.shape == (0, 4)


def test_meta_records_are_sorted_rounded_and_read_back(tmp_path):
    names = _write_split(tmp_path)
    lines = (tmp_path / "iphd_train_depth/meta.jsonl").read_text().splitlines()
    assert [json.loads(line)["name"] for line in lines] == names
    meta = IphdDataset(tmp_path, "train", **SMALL).load_meta()
    rec = meta[names[0]]
    assert rec["seq"] == 3 and rec["frame"] == 0 and rec["stamp_ns"] == 1_000_000_000
    assert [p["pid"] for p in rec["people"]] == [2, 7]
    person = rec["people"][1]
    assert person["box_xyxy"] == [10.123, 5.5, 30.0, 35.25]
    assert person["visibility"] == 0.8765
    assert person["position_m"] == [0.1235, -0.5, 3.25]
    assert person["velocity_mps"] == [0.5, 0.0, 0.0]
    assert "-0.0" not in lines[0]


def test_frame_meta_refuses_bad_values():
    with pytest.raises(DatasetError, match="does not match sequence 1 frame 2"):
        frame_meta("vid00001_00000003", 1, 2, 0, [])
    nan_person = PersonTruth(
        pid=1, box_xyxy=(0, 0, 1, 1), visibility=float("nan"), position_m=(0, 0, 1)
    )
    with pytest.raises(DatasetError, match="person 1 visibility is nan"):
        frame_meta(frame_name(1, 2), 1, 2, 0, [nan_person])


def test_frame_meta_writes_null_for_a_person_annotated_in_2d_only():
    nan3 = (float("nan"),) * 3
    person = PersonTruth(pid=4, box_xyxy=(1, 2, 3, 4), visibility=1.0, position_m=nan3,
                         velocity_mps=nan3)
    record = frame_meta(frame_name(1, 2), 1, 2, 0, [person])["people"][0]
    assert record["position_m"] is None and record["velocity_mps"] is None
    half = PersonTruth(pid=4, box_xyxy=(1, 2, 3, 4), visibility=1.0,
                       position_m=(float("nan"), 0.0, 1.0))
    with pytest.raises(DatasetError, match="position_m"):
        frame_meta(frame_name(1, 2), 1, 2, 0, [half])


def test_load_meta_is_empty_without_file(tmp_path):
    _write_split(tmp_path)
    (tmp_path / "iphd_train_depth/meta.jsonl").unlink()
    assert IphdDataset(tmp_path, "train", **SMALL).load_meta() == {}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("0 0.5 0.5 0.1", "line 2: expected 5 values"),
        ("0 0.5 0.5 0.1 abc", "line 2: not a number"),
        ("0.5 0.5 0.5 0.1 0.1", "line 2: class must be an integer"),
        ("0 0.5 0.5 0.1 nan", "line 2: class must be an integer and coordinates finite"),
        ("0 640 360 100 200", "line 2: coordinates must be normalised"),
        ("0 0.5 -0.01 0.1 0.1", "line 2: coordinates must be normalised"),
    ],
)
def test_malformed_label_lines_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "x.txt"
    path.write_text(f"0 0.5 0.5 0.2 0.2\n{line}\n")
    with pytest.raises(DatasetError, match=f"x.txt {message}"):
        read_yolo_labels(path)


def test_label_reader_accepts_blank_lines_other_classes_and_tiny_overshoot(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("\n2 0.5 0.25 0.2 1.0004\n\n0.0 0.1 0.2 0.3 0.4")
    boxes = read_yolo_labels(path)
    np.testing.assert_allclose(boxes, [[0.5, 0.25, 0.2, 1.0], [0.1, 0.2, 0.3, 0.4]])
    with pytest.raises(DatasetError, match="does not exist"):
        read_yolo_labels(tmp_path / "missing.txt")


def test_missing_thermal_partner_is_listed(tmp_path):
    names = _write_split(tmp_path)
    (tmp_path / "iphd_train_thermal/images" / f"{names[1]}.png").unlink()
    with pytest.raises(DatasetError, match=f"1 of 3 frames have no thermal partner.*{names[1]}"):
        IphdDataset(tmp_path, "train", **SMALL)


def test_missing_label_file_and_clean_labels_on_real_iphd(tmp_path):
    names = _write_split(tmp_path)
    (tmp_path / "iphd_train_depth/labels" / f"{names[2]}.txt").unlink()
    with pytest.raises(DatasetError, match=f"no label file.*{names[2]}"):
        IphdDataset(tmp_path, "train", **SMALL)
    for labels_clean in tmp_path.glob("iphd_train_*/labels_clean"):
        for f in labels_clean.iterdir():
            f.unlink()
        labels_clean.rmdir()
    with pytest.raises(DatasetError, match="real IPHD only has weak labels"):
        IphdDataset(tmp_path, "train", labels="clean", **SMALL)


def test_list_file_variants_and_discovery_without_list(tmp_path):
    names = _write_split(tmp_path)
    depth_dir = tmp_path / "iphd_train_depth"
    (depth_dir / "list.txt").write_text(
        f"{names[2]}.png\n\n{depth_dir}/images/{names[0]}.png\r\nimages\\{names[1]}.png\n"
    )
    assert IphdDataset(tmp_path, "train", **SMALL).names == (names[2], names[0], names[1])
    (depth_dir / "list.txt").unlink()
    assert IphdDataset(tmp_path, "train", **SMALL).names == tuple(names)
    (depth_dir / "list.txt").write_text(f"images/{names[0]}.png\nimages/{names[0]}.png\n")
    with pytest.raises(DatasetError, match="list.txt line 2: frame .* listed twice"):
        IphdDataset(tmp_path, "train", **SMALL)
    (depth_dir / "list.txt").write_text("images/vid00009_00000000.png\n")
    with pytest.raises(DatasetError, match="no depth image.*vid00009_00000000"):
        IphdDataset(tmp_path, "train", **SMALL)


def test_wrong_dtype_or_corrupt_image_is_reported(tmp_path):
    names = _write_split(tmp_path)
    bad = tmp_path / "iphd_train_depth/images" / f"{names[0]}.png"
    bad.unlink()
    write_png(bad, np.zeros((H, W), np.uint8))
    ds = IphdDataset(tmp_path, "train", **SMALL)
    with pytest.raises(DatasetError, match="uint8 .* single-channel 16-bit"):
        ds[0]
    (tmp_path / "iphd_train_thermal/images" / f"{names[1]}.png").write_bytes(b"\x89PNG junk")
    with pytest.raises(DatasetError, match="not a readable PNG"):
        ds[1]


def test_missing_split_folder_says_what_exists(tmp_path):
    _write_split(tmp_path)
    with pytest.raises(
        DatasetError, match="iphd_valid_depth/images does not exist.*iphd_train_depth"
    ):
        IphdDataset(tmp_path, "valid")
    # One split's folder given as the root: the message says to give its parent.
    with pytest.raises(DatasetError, match=f"is one split's folder: give its parent {tmp_path}$"):
        IphdDataset(tmp_path / "iphd_train_depth", "train")
    with pytest.raises(DatasetError, match="unknown IPHD split 'val'"):
        IphdDataset(tmp_path, "val")
    (tmp_path / "a_file").write_text("")
    with pytest.raises(DatasetError, match="a_file is a file; give the folder holding"):
        IphdDataset(tmp_path / "a_file", "valid")


def test_writer_refuses_bad_inputs(tmp_path):
    depth, thermal = _frame(0)
    name = frame_name(0, 0)
    none = np.zeros((0, 4))
    with pytest.raises(FrameError, match="depth_mm must be an \\(H, W\\) uint16"):
        write_frame(tmp_path, "train", name, depth.astype(np.float32), thermal, none, none)
    with pytest.raises(FrameError, match="thermal_ck"):
        write_frame(tmp_path, "train", name, depth, np.dstack([thermal] * 3), none, none)
    with pytest.raises(DatasetError, match="not an IPHD name"):
        write_frame(tmp_path, "train", "frame1", depth, thermal, none, none)
    write_frame(tmp_path, "train", name, depth, thermal, none, none)
    with pytest.raises(DatasetError, match="already written"):
        write_frame(tmp_path, "train", name, depth, thermal, none, none)


def test_finalize_checks_images_and_meta(tmp_path):
    depth, thermal = _frame(0)
    a, b = frame_name(0, 0), frame_name(0, 1)
    write_frame(tmp_path, "train", a, depth, thermal, [], [])
    with pytest.raises(DatasetError, match=f"1 frames of split train have no image.*{b}"):
        finalize_split(tmp_path, "train", [a, b], [])
    with pytest.raises(DatasetError, match="listed twice"):
        finalize_split(tmp_path, "train", [a, a], [])
    with pytest.raises(DatasetError, match="meta records and frame names differ"):
        finalize_split(tmp_path, "train", [a], [])


def test_empty_split_reads_as_empty_dataset(tmp_path):
    finalize_split(tmp_path, "test", [], [])
    ds = IphdDataset(tmp_path, "test")
    assert len(ds) == 0 and ds.load_meta() == {}


def test_identical_input_gives_byte_identical_output(tmp_path):
    _write_split(tmp_path / "a")
    _write_split(tmp_path / "b")
    files_a = sorted(
        p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file()
    )
    files_b = sorted(
        p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file()
    )
    assert files_a == files_b
    assert len(files_a) == 2 * 3 * 3 + 2 + 1  # images + 2 label sets per folder, lists, meta
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
