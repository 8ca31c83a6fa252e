"""Bags with ground truth become re-ID crops the depth embedder fine-tunes on."""

import csv
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import yaml

from iphd.calibration import (
    BASE_TO_OPTICAL_XYZW,
    StaticTransform,
    load_calibration,
    quaternion_to_rotation,
    rotation_to_quaternion,
)
from iphd.data.reid import CROP_SIZE, ReidDataset, crop_person, person_depth_mm, read_records
from iphd.data.rosbag import (
    COLOR_FRAME,
    COLOR_IMAGE,
    COLOR_INFO,
    DEPTH_IMAGE,
    DEPTH_INFO,
    BagReader,
    RigBagWriter,
    camera_info_to_intrinsics,
    copy_bag_with_truth,
    header_stamp_ns,
    image_to_array,
    read_ground_truth,
)
from iphd.data.truth import PersonTruth
from iphd.errors import DatasetError
from iphd.registration import project_box
from iphd.reid.extractor import CropNormalizeConfig
from iphd.sensors.frames import CameraIntrinsics
from iphd.sim.labels import label_people
from iphd.tracking.appearance import SHIPPED_DEPTH_EMBEDDER, depth_crops

REPO = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000_000_000_000
sys.path.insert(0, str(REPO / "training"))

import bag_to_reid  # noqa: E402

import train_reid  # noqa: E402


def _cut(bag, root, split, *extra):
    return bag_to_reid.main(["--bag", *map(str, bag), "--out", str(root), "--split", split,
                             "--quiet", *extra])


def _camera_frames(bag, image_topic=DEPTH_IMAGE, info_topic=DEPTH_INFO):
    """stamp -> (image, the camera's intrinsics then) of one camera of a bag."""
    frames, k = {}, None
    with BagReader(bag) as reader:
        for topic, _t, _l, msg in reader.messages([image_topic, info_topic]):
            if topic == info_topic:
                k = camera_info_to_intrinsics(msg)
            else:
                frames[header_stamp_ns(msg)] = (image_to_array(msg), k)
    return frames


def test_labelled_people_become_crops_cut_as_the_tracker_cuts_them(sim_bag, tmp_path, capsys):
    root = tmp_path / "reid"
    assert _cut([sim_bag], root, "train", "--rate", "4") == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "cpu_sim_depth_finetune.yaml" in out
    # Two people cannot spare the config's 12 validation identities: validate on the test split.
    assert "--set data.val_split=test" in out
    # ... which then picks the model: the comparison needs a test split of other bags.
    assert "compare the models with eval_reid.py on a test split of yet other bags" in out
    records = read_records(root, "train")
    truth = read_ground_truth(sim_bag)
    frames = _camera_frames(sim_bag)
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
        depth, k = frames[record.stamp_ns]
        assert person in label_people(truth[record.stamp_ns], depth.shape[0])
        expected, _ = depth_crops(depth, [person.box_xyxy], normalize=normalize,
                                  focal_px=(k.fx, k.fy))
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


def test_an_out_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert _cut([tmp_path], tmp_path / "afile", "train") == 2
    assert (f"bag_to_reid: error: --out {tmp_path / 'afile'} is a file, not a folder: give a "
            "folder") in capsys.readouterr().err


@pytest.mark.parametrize("option", [["--rate", "0"], ["--gap", "-1"], ["--rate", "nan"]])
def test_bad_rates_and_gaps_are_refused(tmp_path, option, capsys):
    assert _cut([tmp_path], tmp_path / "o", "train", *option) == 2
    assert "--rate must be > 0 and --gap >= 0" in capsys.readouterr().err


def test_the_hint_holds_out_validation_identities_only_when_there_are_enough():
    many = bag_to_reid.finetune_hint(Path("data/my_reid"), 200)
    assert many == ("fine-tune: python training/train_reid.py --config "
                    "training/configs/reid/cpu_sim_depth_finetune.yaml --data data/my_reid "
                    "--out out/train/reid/my_depth")
    assert "data.val_split=test" in bag_to_reid.finetune_hint(Path("d"), 20)


@pytest.fixture(scope="module")
def rgb_bag(tmp_path_factory):
    """The sim_bag's scene (seed 2, two people) for 3 s, with the colour camera recorded."""
    from iphd.sim.cli import run as sim_run

    path = tmp_path_factory.mktemp("sim_rgb") / "bag"
    assert sim_run(["bag", "--out", str(path), "--seed", "2", "--duration", "3", "--people", "2",
                    "--profile", "aligned_848x480", "--workers", "1", "--quiet", "--rgb"]) == 0
    return path


def test_rgb_crops_pair_each_depth_crop_with_the_colour_view_of_that_moment(
    rgb_bag, tmp_path, capsys
):
    root, depth_only = tmp_path / "reid", tmp_path / "depth_only"
    assert _cut([rgb_bag], root, "train", "--rgb", "--rate", "4") == 0
    out = capsys.readouterr().out
    assert "with an RGB crop" in out and "cpu_sim_distill_finetune.yaml" in out
    assert "step.teacher=out/train/reid/my_depth/model.pt --set data.val_split=test" in out
    assert _cut([rgb_bag], depth_only, "train", "--rate", "4") == 0
    records = read_records(root, "train")
    depth = [r for r in records if r.modality == "depth"]
    rgb = {r.pair_id: r for r in records if r.modality == "rgb"}
    # The depth crops are those of a depth-only cut; each has one RGB partner of its person,
    # session and moment, under the session's odd camera id.
    assert [(r.path, r.pid, r.stamp_ns) for r in depth] == [
        (r.path, r.pid, r.stamp_ns) for r in read_records(depth_only, "train")]
    assert len(rgb) == len(depth) >= 16 and all(r.pair_id >= 0 for r in depth)
    for r in depth:
        partner = rgb[r.pair_id]
        assert (partner.pid, partner.session, partner.camid, partner.stamp_ns) == (
            r.pid, r.session, r.camid + 1, r.stamp_ns)
    # Each RGB crop is the person's depth box carried into the colour image at their distance:
    # for the simulator's depth-aligned colour view, the box scaled to the colour size, as the
    # simulator's own re-ID generator cuts its RGB crops.
    truth, frames = read_ground_truth(rgb_bag), _camera_frames(rgb_bag)
    colors = _camera_frames(rgb_bag, COLOR_IMAGE, COLOR_INFO)
    depth_k, color_k = (next(iter(f.values()))[1] for f in (frames, colors))
    scale = color_k.width / depth_k.width
    assert scale == 0.5
    dataset = ReidDataset(root, "train", "rgb")
    for k in (0, len(dataset) - 1):
        crop, record = dataset[k]
        person = next(p for p in truth[record.stamp_ns] if p.pid == record.pid)
        distance_m = person_depth_mm(frames[record.stamp_ns][0], person.box_xyxy) / 1000.0
        box = project_box(person.box_xyxy, distance_m, depth_k, color_k, np.eye(3), np.zeros(3))
        np.testing.assert_allclose(box, np.asarray(person.box_xyxy) * scale, atol=1e-6)
        np.testing.assert_array_equal(crop, crop_person(colors[record.stamp_ns][0], box))
    # Step II reads the pairs: the RGB network distils from a step-I depth run on them.
    assert _cut([rgb_bag, rgb_bag], root, "test", "--rgb", "--shared-ids") == 0
    smoke = ["--config", str(REPO / "training/configs/reid/smoke.yaml"), "--data", str(root),
             "--quiet", "--set", "data.val_split=test", "--set", "normalize.depth_crop=metric"]
    assert train_reid.main([*smoke, "--out", str(tmp_path / "depth")]) == 0
    assert train_reid.main([*smoke, "--out", str(tmp_path / "rgb"), "--set", "step.kind=distill",
                            "--set", f"step.teacher={tmp_path / 'depth' / 'model.pt'}"]) == 0
    assert (tmp_path / "rgb" / "pair.json").is_file()
    manifest = yaml.safe_load((root / "simulator.yaml").read_text())
    assert manifest["splits"]["train"]["rgb"] is True


def test_depth_and_colour_recorded_through_image_transport_give_the_same_crops(
    rgb_bag, tmp_path
):
    from transport_bags import write_transport_bag

    compressed = write_transport_bag(rgb_bag, tmp_path / "bag", {
        DEPTH_IMAGE: "compressedDepth", COLOR_IMAGE: "compressed"})
    raw_root, root = tmp_path / "raw", tmp_path / "compressed"
    assert _cut([rgb_bag], raw_root, "train", "--rgb", "--rate", "4") == 0
    assert _cut([compressed], root, "train", "--rgb", "--rate", "4") == 0
    raw, records = read_records(raw_root, "train"), read_records(root, "train")
    assert len(records) >= 32 and {r.modality for r in records} == {"depth", "rgb"}
    fields = [(r.pid, r.session, r.camid, r.stamp_ns, r.modality, r.pair_id) for r in raw]
    assert [(r.pid, r.session, r.camid, r.stamp_ns, r.modality, r.pair_id)
            for r in records] == fields
    # PNG is lossless: the crops are the raw bag's, pixel for pixel.
    for a, b in zip(raw[::7], records[::7], strict=True):
        crops = [cv2.imread(str(r / "train" / x.path), cv2.IMREAD_UNCHANGED)
                 for r, x in ((raw_root, a), (root, b))]
        assert crops[0] is not None and crops[0].size > 0
        np.testing.assert_array_equal(crops[0], crops[1])


def test_rgb_needs_the_colour_camera(sim_bag, tmp_path, capsys):
    assert _cut([sim_bag], tmp_path / "reid", "train", "--rgb") == 2
    err = capsys.readouterr().err
    assert "which --rgb needs" in err and "enable_color" in err
    assert _cut([sim_bag], tmp_path / "reid2", "train", "--rgb-tolerance", "-1") == 2
    assert "--rgb-tolerance must be 0..1 s" in capsys.readouterr().err
    assert _cut([sim_bag], tmp_path / "reid3", "train", "--rgb-min-visibility", "nan") == 2
    assert "--rgb-min-visibility must be a fraction" in capsys.readouterr().err


def _image_msg(stamp_ns, rgb, encoding, frame_id="color"):
    data = rgb[..., ::-1] if encoding == "bgr8" else rgb
    stamp = SimpleNamespace(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
    return SimpleNamespace(
        header=SimpleNamespace(stamp=stamp, frame_id=frame_id), height=rgb.shape[0],
        width=rgb.shape[1], encoding=encoding, is_bigendian=0, step=3 * rgb.shape[1],
        data=np.ascontiguousarray(data).reshape(-1))


def test_colour_pairing_takes_the_closest_frame_in_time_or_none(tmp_path):
    k = CameraIntrinsics(64, 48, 50.0, 50.0, 31.5, 23.5)
    ms = 1_000_000
    images = {t: np.full((48, 64, 3), (t // ms, 7, 200), np.uint8) for t in (0, 33 * ms, 66 * ms)}
    records, cut = [], bag_to_reid.Cut()
    transforms = [StaticTransform("depth", "color", (0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))]
    pairing = bag_to_reid._ColorPairing(Path("bag"), transforms, 20 * ms,
                                        bag_to_reid._Split(tmp_path, "train", records), cut)
    pairing.intrinsics = k
    person = bag_to_reid._Person(3, "s", 4, np.ones((256, 128), np.uint16),
                                 (20.0, 10.0, 40.0, 40.0), 2.0)
    # Depth at 10 ms pairs with colour at 0 ms (10 ms off, not 33 ms's 23), 50 ms with 66 ms
    # (16 ms, not 17), 200 ms with nothing; bgr8 colour comes out as RGB.
    for stamp, (t, image) in zip((10 * ms, 50 * ms, 200 * ms), images.items(), strict=True):
        pairing.add_depth(bag_to_reid._DepthFrame(stamp, "depth", k, [person]))
        pairing.add_color(_image_msg(t, image, "bgr8" if t else "rgb8"))
    pairing.finish()
    assert (cut.rgb_crops, cut.people_without_color) == (2, 1)
    rgb = sorted((r.stamp_ns, r.pair_id) for r in records if r.modality == "rgb")
    assert [s for s, _ in rgb] == [0, 66 * ms]
    crop = cv2.imread(str(tmp_path / "train" / records[-2].path), cv2.IMREAD_UNCHANGED)
    assert records[-2].modality == "rgb" and tuple(crop[128, 64]) == (200, 7, 66)  # BGR on disk
    assert [r.pair_id for r in records if r.stamp_ns == 200 * ms] == [-1]
    # Once colour stops, depth frames do not pile up waiting for it.
    before = len(records)
    for stamp in range(1000 * ms, 4500 * ms, 500 * ms):
        pairing.add_depth(bag_to_reid._DepthFrame(stamp, "depth", k, [person]))
    # (1.0 and 1.5 s, more than 2 s before the last; the 5 later ones still wait)
    assert [(r.stamp_ns, r.pair_id) for r in records[before:]] == [(1000 * ms, -1),
                                                                    (1500 * ms, -1)]
    assert len(pairing.pending) == 5
    pairing.finish()
    # A person hidden more than the pairing allows keeps an unpaired depth crop.
    strict = bag_to_reid._ColorPairing(Path("bag"), transforms, 20 * ms, pairing.out, cut,
                                       min_visibility=0.7)
    strict.intrinsics = k
    half_hidden = bag_to_reid._Person(5, "h", 6, person.crop, person.box_xyxy, 2.0, 0.5)
    strict.add_depth(bag_to_reid._DepthFrame(9000 * ms, "depth", k, [half_hidden, person]))
    strict.add_color(_image_msg(9000 * ms, images[0], "rgb8"))
    strict.finish()
    assert [r.pair_id >= 0 for r in records[-3:]] == [False, True, True]  # depth, depth + rgb
    # A colour frame the static transforms do not reach is an error naming what to record.
    lost = bag_to_reid._ColorPairing(Path("bag"), [], 20 * ms, pairing.out, cut)
    lost.intrinsics = k
    lost.add_depth(bag_to_reid._DepthFrame(0, "depth", k, [person]))
    lost.add_color(_image_msg(0, images[0], "rgb8", frame_id="elsewhere"))
    with pytest.raises(DatasetError, match="no static transform joins 'depth' and 'elsewhere'"):
        lost.finish()


REALSENSE = {  # realsense2_camera's names (camera_namespace and camera_name "camera")
    DEPTH_IMAGE: "/camera/camera/depth/image_rect_raw",
    DEPTH_INFO: "/camera/camera/depth/camera_info",
    COLOR_IMAGE: "/camera/camera/color/image_raw",
    COLOR_INFO: "/camera/camera/color/camera_info",
}


@pytest.mark.parametrize("topics", [{}, REALSENSE], ids=["iphd", "realsense2_camera"])
def test_a_d435_layout_carries_the_box_through_camera_link_into_a_turned_colour_camera(
    tmp_path, capsys, topics
):
    # As a D435 driver lays its frames out: both optical frames below camera_link, the colour
    # camera 15 mm to the right and, here, turned 8 degrees left so that the box moves far.
    calibration = load_calibration()
    depth_k = CameraIntrinsics(848, 480, 420.0, 420.0, 423.5, 239.5)
    color_k = CameraIntrinsics(640, 480, 600.0, 600.0, 319.5, 239.5)
    to_optical = quaternion_to_rotation(np.array(BASE_TO_OPTICAL_XYZW))
    yaw = np.radians(8.0)
    turn = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
    color_rot, color_pos = turn @ to_optical, np.array([0.0, -0.015, 0.0])
    color_pose = StaticTransform(calibration.frames.base, COLOR_FRAME, tuple(color_pos),
                                 tuple(rotation_to_quaternion(color_rot)))

    class D435Writer(RigBagWriter):
        def static_transforms(self):
            return [*super().static_transforms()[:2], color_pose]

    box, distance = (400.0, 100.0, 460.0, 400.0), 2.0
    depth = np.full((480, 848), 4000, np.uint16)
    depth[100:400, 400:460] = 2000
    # Where the person is in colour, worked out here from the poses (pixel edges, as boxes).
    u = np.array([box[0], box[2], box[0], box[2]]) - 0.5
    v = np.array([box[1], box[1], box[3], box[3]]) - 0.5
    in_depth = np.stack([(u - depth_k.cx) / depth_k.fx, (v - depth_k.cy) / depth_k.fy,
                         np.ones(4)]) * distance
    in_color = color_rot.T @ (to_optical @ in_depth - color_pos[:, None])
    cu = color_k.fx * in_color[0] / in_color[2] + color_k.cx + 0.5
    cv = color_k.fy * in_color[1] / in_color[2] + color_k.cy + 0.5
    expected = (cu.min(), cv.min(), cu.max(), cv.max())
    assert expected[0] > box[0] * 640 / 848 + 60  # far from where an aligned camera has it
    color = np.zeros((480, 640, 3), np.uint8)
    color[int(round(expected[1])):int(round(expected[3])),
          int(round(expected[0])):int(round(expected[2]))] = (220, 30, 30)
    bag = tmp_path / "d435"
    person = PersonTruth(7, box, 1.0, (0.0, 0.0, distance))
    with D435Writer(bag, calibration, depth_k, color_intrinsics=color_k,
                    topics=topics) as writer:
        for j in range(6):
            stamp = T0 + j * 33_333_333
            writer.write_depth(stamp, depth)
            writer.write_ground_truth(stamp, [person])
            writer.write_color(stamp + 3_000_000, color)  # 3 ms after depth, as the driver
    root = tmp_path / "reid"
    options = [f"--{name}={topics[topic]}" for name, topic in (
        ("depth-topic", DEPTH_IMAGE), ("depth-info-topic", DEPTH_INFO),
        ("color-topic", COLOR_IMAGE), ("color-info-topic", COLOR_INFO)) if topic in topics]
    if topics:
        # image_rect_raw is not guessed: the error says how to name it. Its camera_info is the
        # one beside it; the colour topics end in our names and are found under the camera's
        # namespace, as the full names given are.
        assert _cut([bag], tmp_path / "unnamed", "train", "--rgb") == 2
        assert "--depth-topic and --depth-info-topic" in capsys.readouterr().err
        assert _cut([bag], tmp_path / "named", "train", "--rgb", "--rate", "30",
                    options[0]) == 0
        assert "6 crops, 6 with an RGB crop" in capsys.readouterr().out
        assert _cut([bag], tmp_path / "wrong", "train", "--rgb", options[0],
                    "--color-topic=/camera/camera/color/image_rect") == 2
        assert "no /camera/camera/color/image_rect (given for color/image_raw)" in (
            capsys.readouterr().err)
    assert _cut([bag], root, "train", "--rgb", "--rate", "30", *options) == 0
    assert "6 crops, 6 with an RGB crop" in capsys.readouterr().out
    dataset = ReidDataset(root, "train", "rgb")
    assert len(dataset) == 6
    crop, record = dataset[0]
    assert record.stamp_ns == T0 + 3_000_000
    red = (crop[..., 0] > 150) & (crop[..., 1] < 80)
    rows, cols = np.flatnonzero(red.any(axis=1)), np.flatnonzero(red.any(axis=0))
    # The person is the crop's middle, whole: the box padded by 10 % on each side and
    # letterboxed, so 1/1.2 of the crop's height, centred.
    assert red.sum() == len(rows) * len(cols)
    assert len(rows) == pytest.approx(256 / 1.2, abs=3)
    assert (rows[0] + rows[-1]) / 2 == pytest.approx(127.5, abs=1.5)
    assert (cols[0] + cols[-1]) / 2 == pytest.approx(63.5, abs=1.5)
