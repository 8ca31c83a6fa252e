import cv2
import numpy as np
import pytest

from iphd.data.output import write_png
from iphd.data.reid import (
    CROP_SIZE,
    RECORD_COLUMNS,
    ReidDataset,
    ReidRecord,
    check_disjoint,
    crop_person,
    finalize_split,
    metric_crop,
    person_depth_mm,
    read_records,
    write_crop,
)
from iphd.errors import DatasetError, FrameError

CW, CH = CROP_SIZE


def _depth_crop(seed):
    return np.random.default_rng(seed).integers(0, 65536, (CH, CW), dtype=np.uint16)


def _rgb_crop(seed):
    rgb = np.random.default_rng(seed).integers(0, 256, (CH, CW, 3), dtype=np.uint8)
    rgb[0, 0] = (255, 0, 0)  # pure red in RGB order
    return rgb


def _write_dataset(root):
    records = []
    for pid in (3, 1):
        for k in range(2):
            stamp = 1_000 + 10 * k
            pair = pid * 10 + k
            records.append(
                write_crop(
                    root,
                    "train",
                    _depth_crop(pid + k),
                    pid=pid,
                    camid=0,
                    modality="depth",
                    session="seq00001",
                    stamp_ns=stamp,
                    pair_id=pair,
                )
            )
            records.append(
                write_crop(
                    root,
                    "train",
                    _rgb_crop(pid + k),
                    pid=pid,
                    camid=1,
                    modality="rgb",
                    session="seq00001",
                    stamp_ns=stamp,
                    pair_id=pair,
                )
            )
    finalize_split(root, "train", records)
    return records


def test_crop_person_depth_is_letterboxed_with_nearest_values():
    depth = np.zeros((100, 200), np.uint16)
    depth[20:80, 50:70] = 1000
    depth[20:80, 70:80] = 3000
    crop = crop_person(depth, (50, 20, 80, 80), pad=0.0)
    assert crop.shape == (CH, CW) and crop.dtype == np.uint16
    assert set(np.unique(crop).tolist()) <= {0, 1000, 3000}  # never a blended depth
    # 30x60 px box scaled by 256/60 = 4.27 -> 128x256: fills the crop exactly.
    assert (crop > 0).all()
    assert (crop[:, :80] == 1000).all() and (crop[:, 90:] == 3000).all()


def test_crop_person_keeps_aspect_and_pads_outside_image_with_zeros():
    depth = np.full((100, 200), 500, np.uint16)
    # 20x80 box + 10% a side -> 24x96 region, scale min(128/24, 256/96) = 8/3 -> 64x256,
    # centred: (128 - 64) / 2 = 32 zero columns on each side.
    crop = crop_person(depth, (100, 10, 120, 90), pad=0.1)
    cols = np.flatnonzero((crop > 0).any(axis=0))
    rows = np.flatnonzero((crop > 0).any(axis=1))
    assert (cols[0], cols[-1]) == (32, 95)
    assert (rows[0], rows[-1]) == (0, 255)
    # Box half outside at the top-left: 21x60 region, scale 256/60 -> 90x256 placed at x = 19.
    # Only its right 11 columns and lower 40 rows are inside the image; with pixel-centre
    # nearest sampling they start at x = 19 + ceil(10 * 90 / 21 - 0.5) and y = ceil(256/3 - 0.5).
    edge = crop_person(depth, (-10, -20, 11, 40), pad=0.0)
    cols = np.flatnonzero((edge > 0).any(axis=0))
    rows = np.flatnonzero((edge > 0).any(axis=1))
    assert (cols[0], cols[-1]) == (62, 108)
    assert (rows[0], rows[-1]) == (85, 255)
    assert set(np.unique(edge).tolist()) == {0, 500}


def test_crop_person_blends_rgb_but_never_depth():
    stripes = np.zeros((400, 400), np.uint8)
    stripes[:, ::2] = 255  # one-pixel stripes average to grey when shrunk smoothly
    rgb = crop_person(np.dstack([stripes] * 3), (0, 0, 200, 400), pad=0.0)
    assert rgb.shape == (CH, CW, 3) and rgb.dtype == np.uint8
    assert abs(rgb.mean() - 127.5) < 5
    assert np.isin(rgb, [0, 255]).mean() < 0.5
    depth = crop_person(stripes.astype(np.uint16) * 10, (0, 0, 200, 400), pad=0.0)
    assert set(np.unique(depth).tolist()) == {0, 2550}


def test_crop_person_refuses_bad_boxes():
    depth = np.zeros((10, 10), np.uint16)
    with pytest.raises(ValueError, match="x2 > x1"):
        crop_person(depth, (5, 5, 5, 8))
    with pytest.raises(ValueError, match="does not overlap"):
        crop_person(depth, (20, 20, 30, 40))
    with pytest.raises(ValueError, match="pad"):
        crop_person(depth, (1, 1, 5, 8), pad=-0.1)


def test_round_trip_depth_exact_and_rgb_channel_order(tmp_path):
    _write_dataset(tmp_path)
    ds = ReidDataset(tmp_path, "train")
    assert len(ds) == 8
    assert ds.pids == (1, 3)
    image, record = ds[0]
    assert record == ReidRecord(
        "depth/00001/seq00001_c0_1000.png", 1, 0, "depth", "seq00001", 10, 1000
    )
    assert image.dtype == np.uint16
    np.testing.assert_array_equal(image, _depth_crop(1))
    rgb_ds = ReidDataset(tmp_path, "train", modality="rgb")
    assert len(rgb_ds) == 4 and {r.modality for r in rgb_ds.records} == {"rgb"}
    image, record = rgb_ds[3]
    assert record.path == "rgb/00003/seq00001_c1_1010.png"
    np.testing.assert_array_equal(image, _rgb_crop(4))
    assert tuple(image[0, 0]) == (255, 0, 0)
    # On disk the PNG holds the same colour (cv2 reads it as BGR).
    bgr = cv2.imread(str(tmp_path / "train" / record.path), cv2.IMREAD_UNCHANGED)
    assert tuple(bgr[0, 0]) == (0, 0, 255)


def test_records_csv_is_sorted_with_header(tmp_path):
    records = _write_dataset(tmp_path)
    lines = (tmp_path / "train/records.csv").read_text().splitlines()
    assert lines[0] == ",".join(RECORD_COLUMNS)
    assert lines[1] == "depth/00001/seq00001_c0_1000.png,1,0,depth,seq00001,10,1000"
    assert len(lines) == 9
    assert read_records(tmp_path, "train") == sorted(records, key=lambda r: r.path)


def test_identical_input_gives_byte_identical_output(tmp_path):
    _write_dataset(tmp_path / "a")
    _write_dataset(tmp_path / "b")
    files = sorted(
        p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file()
    )
    assert len(files) == 9
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("depth/00001/x.png,one,0,depth,s,-1,5", "line 3: column 'pid' must be an integer"),
        ("depth/00001/x.png,1,0,thermal,s,-1,5", "line 3: modality must be one of"),
        ("depth/00001/x.png,1,-2,depth,s,-1,5", "line 3: camid must be >= 0"),
        ("../x.png,1,0,depth,s,-1,5", "line 3: path '../x.png' must be a relative"),
        ("depth/00001/x.png,1,0,depth", "line 3: expected 7 columns"),
    ],
)
def test_bad_record_rows_name_file_and_line(tmp_path, row, message):
    (tmp_path / "test").mkdir()
    good = "depth/00001/y.png,1,0,depth,s,-1,5"
    (tmp_path / "test/records.csv").write_text(",".join(RECORD_COLUMNS) + f"\n{good}\n{row}\n")
    with pytest.raises(DatasetError, match=f"records.csv {message}"):
        read_records(tmp_path, "test")


def test_missing_columns_or_file_are_reported(tmp_path):
    with pytest.raises(DatasetError, match="records.csv does not exist"):
        read_records(tmp_path, "train")
    (tmp_path / "train").mkdir()
    (tmp_path / "train/records.csv").write_text("path,pid,camid\n")
    with pytest.raises(DatasetError, match="lacks columns modality, session, pair_id, stamp_ns"):
        read_records(tmp_path, "train")
    (tmp_path / "train/records.csv").write_text("")
    with pytest.raises(DatasetError, match="records.csv is empty; write the split again"):
        read_records(tmp_path, "train")


def test_dataset_reports_missing_and_wrong_crops(tmp_path):
    records = _write_dataset(tmp_path)
    rgb = next(r for r in records if r.modality == "rgb")
    path = tmp_path / "train" / rgb.path
    path.unlink()
    with pytest.raises(DatasetError, match=f"1 crops listed .* missing: {rgb.path}"):
        ReidDataset(tmp_path, "train")

    write_png(path, np.zeros((CH, CW), np.uint16))
    ds = ReidDataset(tmp_path, "train", modality="rgb")
    index = ds.records.index(rgb)
    with pytest.raises(DatasetError, match=r"rgb crop must be \(256, 128, 3\) uint8"):
        ds[index]


def test_check_disjoint_lists_shared_identities():
    def rec(pid):
        return ReidRecord(f"depth/{pid:05d}/a.png", pid, 0, "depth", "s", -1, 0)

    check_disjoint([rec(1), rec(2)], [rec(3)])
    with pytest.raises(DatasetError, match="2 identities are in both train and test: pids 2, 5"):
        check_disjoint([rec(1), rec(2), rec(5)], [rec(5), rec(2), rec(9)])


def test_writer_and_finalize_refuse_bad_input(tmp_path):
    with pytest.raises(FrameError, match=r"depth crop must be \(256, 128\) uint16"):
        write_crop(
            tmp_path,
            "train",
            np.zeros((10, 10), np.uint16),
            pid=1,
            camid=0,
            modality="depth",
            session="s",
            stamp_ns=0,
        )
    with pytest.raises(DatasetError, match="pid must be 0..99999"):
        write_crop(
            tmp_path,
            "train",
            _depth_crop(0),
            pid=100_000,
            camid=0,
            modality="depth",
            session="s",
            stamp_ns=0,
        )
    with pytest.raises(DatasetError, match="unknown re-ID split 'valid'"):
        write_crop(
            tmp_path,
            "valid",
            _depth_crop(0),
            pid=1,
            camid=0,
            modality="depth",
            session="s",
            stamp_ns=0,
        )
    a = write_crop(
        tmp_path, "test", _depth_crop(0), pid=1, camid=0, modality="depth", session="s", stamp_ns=0
    )
    with pytest.raises(DatasetError, match="already written"):
        write_crop(
            tmp_path,
            "test",
            _depth_crop(0),
            pid=1,
            camid=0,
            modality="depth",
            session="s",
            stamp_ns=0,
        )
    b = write_crop(
        tmp_path, "test", _rgb_crop(0), pid=1, camid=0, modality="rgb", session="s", stamp_ns=0
    )
    with pytest.raises(DatasetError, match="camids 0 are used by both depth and rgb"):
        finalize_split(tmp_path, "test", [a, b])
    with pytest.raises(DatasetError, match="recorded twice"):
        finalize_split(tmp_path, "test", [a, a])
    assert not (tmp_path / "test/records.csv").exists()


def _standing_person(distance_m, height_m=1.8, width_m=0.5, f=400.0, size=(640, 480)):
    """Depth image of a flat person of the given size at ``distance_m`` before a far wall."""
    w, h = size
    depth = np.full((h, w), 8000, np.uint16)
    half_w, half_h = 0.5 * f * width_m / distance_m, 0.5 * f * height_m / distance_m
    box = (w / 2 - half_w, h / 2 - half_h, w / 2 + half_w, h / 2 + half_h)
    r0, r1 = max(round(box[1]), 0), round(box[3])
    depth[r0:r1, max(round(box[0]), 0) : round(box[2])] = round(distance_m * 1000)
    return depth, box


def _extent(mask):
    rows, cols = np.nonzero(mask)
    return rows.max() - rows.min() + 1, cols.max() - cols.min() + 1


def test_metric_crop_keeps_body_size_whatever_the_distance():
    near, near_box = _standing_person(2.0)
    far, far_box = _standing_person(4.0)
    tall, tall_box = _standing_person(4.0, height_m=2.0)
    crops = [metric_crop(d, b, 400.0, 400.0) for d, b in
             ((near, near_box), (far, far_box), (tall, tall_box))]
    assert all(c.shape == (CH, CW) and c.dtype == np.uint16 for c in crops)
    sizes = [_extent((c > 0) & (c < 8000)) for c in crops]
    # 1.8 m of a 2.4 m window is 192 of 256 rows; 0.5 m of 1.2 m is 53 of 128 columns.
    for rows, cols in sizes[:2]:
        assert abs(rows - 192) <= 2 and abs(cols - 53) <= 2
    assert abs(sizes[2][0] - 213) <= 2  # 2.0 m: taller in the crop, unlike a letterbox
    # Values are copied, not blended.
    assert set(np.unique(crops[0])) <= {0, 2000, 8000}
    letterboxed = [crop_person(d, b, pad=0.0) for d, b in ((near, near_box), (tall, tall_box))]
    assert _extent(letterboxed[0] < 8000)[0] == _extent(letterboxed[1] < 8000)[0]


def test_metric_crop_outside_the_image_is_invalid_and_bad_input_is_refused():
    depth, box = _standing_person(1.0)  # 2.4 m at 1 m is 960 px: more than the image
    crop = metric_crop(depth, box, 400.0, 400.0)
    assert (crop[:20] == 0).all() and (crop[-20:] == 0).all()
    with pytest.raises(ValueError, match="focal lengths"):
        metric_crop(depth, box, 0.0, 400.0)
    with pytest.raises(ValueError, match="window_m"):
        metric_crop(depth, box, 400.0, 400.0, window_m=(1.0, -1.0))
    with pytest.raises(ValueError, match="no valid depth"):
        metric_crop(np.zeros_like(depth), box, 400.0, 400.0)
    with pytest.raises(ValueError, match="does not overlap"):
        metric_crop(depth, (700, 10, 720, 40), 400.0, 400.0)


def test_person_depth_is_the_centre_median_with_a_whole_box_fallback():
    depth = np.zeros((100, 100), np.uint16)
    depth[:, :] = 5000
    depth[15:85, 30:70] = 2000  # the person's torso at the box centre
    assert person_depth_mm(depth, (20, 0, 80, 100)) == 2000.0
    hollow = np.zeros((100, 100), np.uint16)
    hollow[0:5, :] = 3000  # only the box's top edge has depth
    assert person_depth_mm(hollow, (0, 0, 100, 100)) == 3000.0
    assert np.isnan(person_depth_mm(np.zeros((10, 10), np.uint16), (0, 0, 10, 10)))
