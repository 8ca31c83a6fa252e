import json

import cv2
import numpy as np
import pytest

from iphd.data.output import write_png
from iphd.data.reid import CROP_SIZE, finalize_split, write_crop
from iphd.errors import DatasetError
from iphd.reid.data import (
    BiwiGeometry,
    BiwiRgbdIdSource,
    CropDataset,
    OpenReidSource,
    SimReidSource,
    depth_box_to_rgb,
    record_ids,
    select,
    user_map_box,
)

CW, CH = CROP_SIZE
# Depth 64x48 and RGB at twice the resolution, same optical centre, no baseline.
TINY = BiwiGeometry(depth_f_px=50.0, depth_cx_px=31.5, depth_cy_px=23.5, rgb_f_px=100.0,
                    rgb_cx_px=63.5, rgb_cy_px=47.5, baseline_m=0.0)
RED, BLUE = (200, 0, 0), (0, 0, 200)


def _write_biwi_frame(seq, frame, *, person=True, kinds="abc"):
    seq.mkdir(parents=True, exist_ok=True)
    depth = np.full((48, 64), 4000, np.uint16)
    user = np.zeros((48, 64), np.uint8)
    rgb = np.zeros((96, 128, 3), np.uint8)
    rgb[:] = BLUE
    if person:
        # 16x32 px person box (x 20..36, y 8..40): the 1:2 aspect of a crop.
        depth[8:40, 20:36] = 2000
        user[8:40, 20:36] = 1
        user[8, 20] = 0  # a notch: the box stays, the pixel is background
        depth[8, 20] = 4000
        rgb[16:80, 40:72] = RED
    if "a" in kinds:
        cv2.imwrite(str(seq / f"{frame}-a.jpg"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if "b" in kinds:
        cv2.imwrite(str(seq / f"{frame}-b.pgm"), depth)
    if "c" in kinds:
        cv2.imwrite(str(seq / f"{frame}-c.pgm"), user)


def _biwi(root):
    _write_biwi_frame(root / "Training" / "003", "00001")
    _write_biwi_frame(root / "Training" / "003", "00002", person=False)
    _write_biwi_frame(root / "Training" / "003", "00003", kinds="ab")
    _write_biwi_frame(root / "Training" / "007", "00001")
    (root / "Training" / "007" / "00001_skel.txt").write_text("ignored")
    _write_biwi_frame(root / "Testing" / "Still" / "003", "00010")
    _write_biwi_frame(root / "Testing" / "Walking" / "007", "00020")
    return root


def test_biwi_frames_become_paired_depth_and_rgb_crops(tmp_path):
    src = BiwiRgbdIdSource(_biwi(tmp_path), geometry=TINY)
    recs = src.records
    assert len(recs) == 8 and len(src.dropped) == 2
    assert [r.path for r in recs[:2]] == ["Training/003/00001-b.pgm", "Training/003/00001-a.jpg"]
    assert {(r.pid, r.session) for r in recs} == {
        (3, "Training_003"), (7, "Training_007"), (3, "Still_003"), (7, "Walking_007")}
    depth, rgb = select(recs, modality="depth"), select(recs, modality="rgb")
    assert {r.camid for r in depth} == {0} and {r.camid for r in rgb} == {1}
    assert [r.pair_id for r in depth] == [r.pair_id for r in rgb] == [0, 1, 2, 3]
    assert [r.pid for r in depth] == [r.pid for r in rgb]

    depth_crop = src.load_crop(depth[0])
    assert depth_crop.shape == (CH, CW) and depth_crop.dtype == np.uint16
    # The box has the crop's aspect, so the person fills the crop: all 2000 mm but the notch.
    assert (depth_crop[8:, :] == 2000).all() and (depth_crop[:8, :8] == 4000).all()
    rgb_crop = src.load_crop(rgb[0])
    assert rgb_crop.shape == (CH, CW, 3) and rgb_crop.dtype == np.uint8
    mean = rgb_crop[16:-16, 16:-16].reshape(-1, 3).mean(0)
    assert mean[0] > 150 and mean[2] < 50  # red person, in RGB order, not the blue wall


def test_biwi_metric_crops_are_cut_with_the_window_asked_for(tmp_path):
    # The trainer passes the model's normalize.depth_window_m: BIWI's crops were always cut
    # with the default window whatever the model was set up for.
    root = _biwi(tmp_path)
    default = BiwiRgbdIdSource(root, ["Training"], geometry=TINY, depth_crop="metric")
    narrow = BiwiRgbdIdSource(root, ["Training"], geometry=TINY, depth_crop="metric",
                              depth_window_m=(0.6, 1.2))
    assert default.depth_window_m == (1.2, 2.4) and narrow.depth_window_m == (0.6, 1.2)
    record = select(default.records, modality="depth")[0]
    wide_crop, narrow_crop = default.load_crop(record), narrow.load_crop(record)
    # Half the window: less of it lies outside the small frame (zero-filled).
    assert (narrow_crop > 0).mean() > (wide_crop > 0).mean()


def test_biwi_mask_depth_zeroes_background_and_margin_pads_with_zero(tmp_path):
    root = _biwi(tmp_path)
    masked = BiwiRgbdIdSource(root, ["Training"], geometry=TINY, mask_depth=True)
    crop = masked.load_crop(masked.records[0])
    assert (crop[:8, :8] == 0).all() and (crop[8:, :] == 2000).all()
    padded = BiwiRgbdIdSource(root, ["Still"], geometry=TINY, margin=0.5)
    crop = padded.load_crop(select(padded.records, modality="depth")[0])
    assert crop.shape == (CH, CW) and (crop == 2000).any() and (crop == 4000).any()
    assert len(padded.records) == 2


def test_biwi_missing_folder_names_it_and_the_layout(tmp_path):
    with pytest.raises(DatasetError, match=r"Training is missing.*-b\.pgm"):
        BiwiRgbdIdSource(tmp_path)
    _write_biwi_frame(tmp_path / "Training" / "003", "00001")
    with pytest.raises(DatasetError, match=r"Testing/Still is missing"):
        BiwiRgbdIdSource(tmp_path, geometry=TINY)
    with pytest.raises(DatasetError, match="unknown BIWI subsets"):
        BiwiRgbdIdSource(tmp_path, ["Test"])


def test_biwi_bad_sequences_are_named(tmp_path):
    _write_biwi_frame(tmp_path / "Training" / "alice", "00001")
    with pytest.raises(DatasetError, match="alice is not named by a person number"):
        BiwiRgbdIdSource(tmp_path, ["Training"], geometry=TINY)
    src = BiwiRgbdIdSource(tmp_path, ["Training"], geometry=TINY, pids={"alice": 42})
    assert {r.pid for r in src.records} == {42}
    cv2.imwrite(str(tmp_path / "Training" / "alice" / "00002-a.jpg"), np.zeros((4, 4, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "Training" / "alice" / "00002-b.pgm"), np.zeros((48, 64), np.uint16))
    cv2.imwrite(str(tmp_path / "Training" / "alice" / "00002-c.pgm"), np.zeros((24, 32), np.uint8))
    with pytest.raises(DatasetError, match="00002-c.pgm is .* aligned with the depth frame"):
        BiwiRgbdIdSource(tmp_path, ["Training"], geometry=TINY, pids={"alice": 42})


def test_depth_box_to_rgb_uses_biwi_calibration():
    box = depth_box_to_rgb((300, 200, 340, 280), 2.5, BiwiGeometry())
    scale = 1050.0 / 575.8
    np.testing.assert_allclose(box[2] - box[0], 40 * scale)
    np.testing.assert_allclose(box[3] - box[1], 80 * scale)
    # Centred on the depth optical axis -> RGB centre plus the 2.5 cm baseline parallax.
    np.testing.assert_allclose((box[0] + box[2]) / 2, 640 + 0.025 * 1050 / 2.5)
    np.testing.assert_allclose((box[1] + box[3]) / 2, 480)
    no_depth = depth_box_to_rgb((300, 200, 340, 280), float("nan"), BiwiGeometry())
    np.testing.assert_allclose((no_depth[0] + no_depth[2]) / 2, 640)


def test_user_map_box_keeps_the_largest_user():
    user = np.zeros((10, 10), np.uint8)
    user[1:3, 1:3] = 2
    user[4:9, 5:8] = 1
    box, mask = user_map_box(user)
    np.testing.assert_array_equal(box, [5, 4, 8, 9])
    assert mask.sum() == 15
    assert user_map_box(np.zeros((4, 4), np.uint8)) is None


def _open_reid(root):
    images = root / "images"
    images.mkdir(parents=True)
    rgb = np.zeros((40, 20, 3), np.uint8)
    rgb[..., 0] = 255
    depth = np.full((40, 20), 1500, np.uint16)
    for name, image in [
        ("00000003_00_0000.png", rgb), ("00000003_01_0000.png", depth),
        ("00000003_01_0001.png", depth), ("00000005_00_0002.png", rgb),
    ]:
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
        write_png(images / name, bgr)
    return root


def test_open_reid_records_pair_by_pid_and_index(tmp_path):
    src = OpenReidSource(_open_reid(tmp_path))
    recs = src.records
    assert [(r.pid, r.camid, r.modality, r.pair_id) for r in recs] == [
        (3, 0, "rgb", 30_000), (3, 1, "depth", 30_000), (3, 1, "depth", -1), (5, 0, "rgb", -1)]
    assert recs[0].path == "images/00000003_00_0000.png"
    rgb, depth = src.load_crop(recs[0]), src.load_crop(recs[1])
    assert rgb.shape == (CH, CW, 3) and rgb.dtype == np.uint8
    assert (rgb[CH // 2, CW // 2] == (255, 0, 0)).all()
    assert depth.shape == (CH, CW) and depth.dtype == np.uint16 and depth.max() == 1500
    swapped = OpenReidSource(tmp_path, {0: "depth", 1: "rgb"})
    with pytest.raises(DatasetError, match="16-bit"):
        swapped.load_crop(swapped.records[0])


def test_open_reid_meta_and_splits(tmp_path):
    root = _open_reid(tmp_path)
    identities = [[[], []] for _ in range(6)]
    identities[3] = [["00000003_00_0000.png"], ["00000003_01_0000.png"]]
    identities[5] = [["00000005_00_0002.png"], []]
    (root / "meta.json").write_text(json.dumps({"name": "t", "identities": identities}))
    assert len(OpenReidSource(root).records) == 3  # meta.json leaves 00000003_01_0001 out
    (root / "splits.json").write_text(json.dumps([{"trainval": [5], "query": [3], "gallery": [3]}]))
    query = OpenReidSource(root, subset="query")
    assert {r.pid for r in query.records} == {3} and len(query.records) == 2
    with pytest.raises(DatasetError, match="split_id 1 is out of range"):
        OpenReidSource(root, subset="query", split_id=1)
    with pytest.raises(DatasetError, match="no 'val' list"):
        OpenReidSource(root, subset="val")
    identities[5] = [[], ["00000005_00_0002.png"]]
    (root / "meta.json").write_text(json.dumps({"identities": identities}))
    with pytest.raises(DatasetError, match="listed under pid 5, cam 1"):
        OpenReidSource(root)


def test_open_reid_errors_name_the_problem(tmp_path):
    with pytest.raises(DatasetError, match="images is missing"):
        OpenReidSource(tmp_path)
    root = _open_reid(tmp_path)
    with pytest.raises(DatasetError, match="cam 1 has no modality"):
        OpenReidSource(root, {0: "rgb"})
    with pytest.raises(DatasetError, match="cam_modality values"):
        OpenReidSource(root, {0: "thermal"})
    with pytest.raises(DatasetError, match="needs .*splits.json"):
        OpenReidSource(root, subset="query")
    write_png(root / "images" / "person3.png", np.zeros((4, 4), np.uint16))
    with pytest.raises(DatasetError, match=r"person3\.png: name must be"):
        OpenReidSource(root)


def test_sim_source_wraps_the_simulator_dataset(tmp_path):
    rng = np.random.default_rng(0)
    recs = [
        write_crop(tmp_path, "test", rng.integers(0, 9000, (CH, CW), dtype=np.uint16), pid=4,
                   camid=0, modality="depth", session="s0", stamp_ns=10, pair_id=0),
        write_crop(tmp_path, "test", rng.integers(0, 255, (CH, CW, 3), dtype=np.uint8), pid=4,
                   camid=1, modality="rgb", session="s0", stamp_ns=10, pair_id=0),
    ]
    finalize_split(tmp_path, "test", recs)
    src = SimReidSource(tmp_path, "test")
    assert set(src.records) == set(recs)
    assert src.load_crop(recs[0]).dtype == np.uint16
    assert src.load_crop(recs[1]).shape == (CH, CW, 3)
    assert SimReidSource(tmp_path, "test", "rgb").records == (recs[1],)
    with pytest.raises(DatasetError, match="not part of"):
        SimReidSource(tmp_path, "test", "depth").load_crop(recs[1])


def test_crop_dataset_and_record_ids(tmp_path):
    src = OpenReidSource(_open_reid(tmp_path))
    data = CropDataset(src, select(src.records, modality="rgb"))
    assert len(data) == 2
    items = list(data)
    assert [r.pid for _, r in items] == [3, 5] and items[0][0].shape == (CH, CW, 3)
    pids, camids, pairs = record_ids(src.records)
    assert pids.tolist() == [3, 3, 3, 5] and camids.tolist() == [0, 1, 1, 0]
    assert pairs.tolist() == [30_000, 30_000, -1, -1] and pids.dtype == np.int64
    assert record_ids([])[0].shape == (0,)
