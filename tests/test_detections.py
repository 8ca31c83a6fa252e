import math

import numpy as np
import pytest

from iphd.detection.detector import Detections
from iphd.detections import (
    DetectionConfig,
    PersonDetection,
    StampPairer,
    box_temperature_k,
    describe_detections,
    filled_pixels,
    load_detector,
    people_depths_m,
    people_positions_m,
    person_position_m,
    render_debug_image,
    scene_temperature_k,
    split_cold,
    thermal_contrast_k,
)
from iphd.errors import ConfigError, FrameError
from iphd.sensors.frames import CameraIntrinsics

MS = 1_000_000
INTR = CameraIntrinsics(width=212, height=120, fx=110.0, fy=110.0, cx=105.5, cy=59.5)


def test_pairs_only_frames_with_the_same_stamp_in_either_arrival_order():
    pairer = StampPairer[str, str]()
    assert pairer.push_depth(0, "d0") == []
    assert pairer.push_depth(33 * MS, "d1") == []
    # Registered thermal after its depth, then one that arrives before its depth.
    (pair,) = pairer.push_registered(33 * MS, "r1")
    assert (pair.stamp_ns, pair.depth, pair.registered) == (33 * MS, "d1", "r1")
    assert pairer.push_registered(133 * MS, "r4") == []
    assert pairer.push_depth(100 * MS, "d3") == []
    (pair,) = pairer.push_depth(133 * MS, "d4")
    assert (pair.depth, pair.registered) == ("d4", "r4")
    # A registered stamp no depth frame carried never pairs and is given up eventually.
    assert pairer.push_registered(150 * MS, "r?") == []
    for i in range(5, 40):
        assert pairer.push_depth(i * 33 * MS + 200 * MS, f"d{i}") == []
    s = pairer.stats
    assert s.pairs == 2
    assert s.registered_dropped["no_depth"] == 1
    # d0 and d3 went silently once newer stamps paired; the rest overflowed the buffer.
    assert s.depth_unpaired >= 2


def test_registered_frames_that_never_find_their_depth_frame_are_a_run_with_the_distance():
    # A relay that re-stamps the depth images (here 1 ms later) before the detector gets them:
    # no registered frame finds its depth frame, and the stats say how near they came.
    pairer = StampPairer[str, str]()
    for i in range(60):  # 2 s of depth, registered thermal with every fourth frame
        pairer.push_depth(i * 33 * MS + MS, f"d{i}")
        if i % 4 == 0:
            pairer.push_registered(i * 33 * MS, f"r{i}")
    s = pairer.stats
    assert s.pairs == 0 and s.no_depth_run == s.registered_dropped["no_depth"] >= 7
    assert s.no_depth_nearest_ns == MS
    pairer.push_depth(60 * 33 * MS + MS, "d60")
    (pair,) = pairer.push_registered(60 * 33 * MS + MS, "r60")  # the right stamp pairs
    assert pair.depth == "d60" and s.no_depth_run == 0


def test_late_and_duplicate_frames_do_not_pair_twice():
    pairer = StampPairer[str, str]()
    pairer.push_depth(10, "a")
    assert len(pairer.push_registered(10, "r")) == 1
    assert pairer.push_registered(10, "r again") == []
    assert pairer.push_depth(5, "late") == []
    assert pairer.stats.registered_dropped["duplicate"] == 1
    assert pairer.stats.pairs == 1


def test_backward_stamp_jump_resets_the_buffers_and_pairing_resumes():
    pairer = StampPairer[str, str]()
    t = 100_000 * MS
    pairer.push_depth(t, "d")
    pairer.push_registered(t + 33 * MS, "waiting")
    pairer.push_depth(0, "loop")
    assert pairer.stats.resets == 1
    assert pairer.stats.registered_dropped["reset"] == 1
    (pair,) = pairer.push_registered(0, "r")
    assert pair.depth == "loop"


def test_pairer_rejects_empty_buffers():
    with pytest.raises(ValueError, match="depth_buffer=0"):
        StampPairer(depth_buffer=0)


def _wall_and_person(person_mm=2000, wall_mm=5000):
    depth = np.full((120, 212), wall_mm, np.uint16)
    depth[20:110, 90:130] = person_mm  # person box (90, 20, 130, 110)
    return depth


def test_position_of_a_person_in_front_of_a_wall_is_the_person_depth_back_projected():
    depth = _wall_and_person()
    # A loose box: the wall shows on both sides and the person covers half of it.
    box = (70.0, 15.0, 150.0, 110.0)
    x, y, z = person_position_m(depth, box, INTR)
    assert z == pytest.approx(2.0, abs=1e-6)
    u, v = (70 + 150) / 2 - 0.5, (15 + 110) / 2 - 0.5
    assert x == pytest.approx((u - INTR.cx) / INTR.fx * 2.0)
    assert y == pytest.approx((v - INTR.cy) / INTR.fy * 2.0)


def test_position_ignores_noise_and_holes_and_is_nan_without_depth():
    rng = np.random.default_rng(0)
    depth = _wall_and_person().astype(np.int32)
    depth[20:110, 90:130] += rng.integers(-40, 40, size=(90, 40))
    depth[rng.random(depth.shape) < 0.3] = 0
    depth[50, 100] = 300  # a flying pixel in front
    _, _, z = person_position_m(depth.astype(np.uint16), (85, 20, 135, 110), INTR)
    assert z == pytest.approx(2.0, abs=0.03)
    assert all(math.isnan(v) for v in person_position_m(np.zeros((120, 212), np.uint16),
                                                        (85, 20, 135, 110), INTR))
    with pytest.raises(FrameError, match="camera info"):
        person_position_m(np.zeros((60, 80), np.uint16), (0, 0, 10, 10), INTR)


def test_a_partly_hidden_person_gets_their_own_depth_not_that_of_the_person_in_front():
    depth = np.full((120, 212), 6000, np.uint16)  # a wall at 6 m
    depth[20:110, 100:140] = 4000  # someone at 4 m: box (100, 20, 140, 110)
    alone = person_position_m(depth, (100.0, 20.0, 140.0, 110.0), INTR)
    depth[10:120, 60:118] = 1500  # someone at 1.5 m in front hides 40 % of their middle
    front, hidden = (55.0, 10.0, 122.0, 120.0), (100.0, 20.0, 140.0, 110.0)
    # On its own, the hidden person's box reads the person in front: 2.5 m off.
    assert person_position_m(depth, hidden, INTR)[2] == pytest.approx(1.5)
    z_front, z_hidden = people_depths_m(depth, [front, hidden])
    assert z_front == pytest.approx(1.5) and z_hidden == pytest.approx(4.0)
    positions = people_positions_m(depth, [hidden, front], INTR)
    assert positions[0] == pytest.approx(alone)
    assert positions[1, 2] == pytest.approx(1.5)


def test_a_person_hidden_in_the_whole_box_has_no_depth_rather_than_someone_elses():
    depth = np.full((120, 212), 6000, np.uint16)
    depth[:, 45:165] = 1500  # the person in front hides all of the other's box
    z_front, z_hidden = people_depths_m(depth, [(40.0, 0.0, 170.0, 120.0), (100, 20, 140, 110)])
    assert z_front == pytest.approx(1.5) and math.isnan(z_hidden)


def test_repeated_boxes_and_neighbours_at_one_depth_keep_their_depth():
    depth = np.full((120, 212), 6000, np.uint16)
    depth[20:110, 40:90] = 2000  # two people side by side at 2 m
    depth[20:110, 90:140] = 2000
    # Two boxes on the left person (a repeat) and the right person's box touching theirs.
    boxes = [(38.0, 18.0, 92.0, 112.0), (40.0, 30.0, 90.0, 110.0), (88.0, 18.0, 142.0, 112.0)]
    assert people_depths_m(depth, boxes) == pytest.approx([2.0, 2.0, 2.0])
    assert people_depths_m(depth, np.zeros((0, 4))).shape == (0,)


def test_box_temperature_is_the_median_of_covered_pixels_in_the_scaled_box():
    thermal = np.zeros((30, 53), np.uint16)  # a quarter of the 212x120 depth image
    thermal[5:25, 22:33] = 30_900
    thermal[5:8, 22:33] = 29_300
    box = (88.0, 20.0, 132.0, 100.0)  # depth pixels -> (22, 5, 33, 25) thermal pixels
    assert box_temperature_k(thermal, box, (212, 120)) == pytest.approx(309.0)
    assert math.isnan(box_temperature_k(np.zeros_like(thermal), box, (212, 120)))


def test_describe_detections_sorts_thresholds_and_measures():
    depth = _wall_and_person()
    thermal = np.full((120, 212), 30_500, np.uint16)
    dets = Detections(
        np.array([[0, 0, 10, 10], [85, 20, 135, 110], [1, 1, 5, 5]], np.float32),
        np.array([0.3, 0.9, 0.1], np.float32),
    )
    people = describe_detections(dets, depth, thermal, INTR, score_threshold=0.2)
    assert [p.score for p in people] == pytest.approx([0.9, 0.3])
    assert people[0].position_m[2] == pytest.approx(2.0)
    assert people[0].temperature_k == pytest.approx(305.0)


def test_debug_image_is_bgr_of_the_depth_size_with_the_boxes_drawn():
    depth = _wall_and_person()
    thermal = np.zeros((30, 53), np.uint16)
    thermal[5:25, 22:33] = 30_900
    person = PersonDetection((60.0, 30.0, 150.0, 115.0), 0.87, (0.1, 0.2, 2.0), 309.0)
    plain = render_debug_image(depth, thermal, [])
    image = render_debug_image(depth, thermal, [person])
    assert image.shape == (120, 212, 3) and image.dtype == np.uint8
    assert tuple(image[60, 60]) == (0, 255, 0)  # left edge of the box
    assert tuple(plain[60, 60]) != (0, 255, 0)
    # Thermal is coloured where present, grey depth elsewhere.
    b, g, r = (int(c) for c in plain[60, 110])
    assert not (b == g == r)
    b, g, r = (int(c) for c in plain[5, 5])
    assert b == g == r


def test_detection_config_rejects_unknown_devices_and_thresholds():
    with pytest.raises(ConfigError, match="device"):
        DetectionConfig(device="tpu")
    with pytest.raises(ConfigError, match="score_threshold"):
        DetectionConfig(score_threshold=1.5)
    with pytest.raises(ConfigError, match="backend"):
        DetectionConfig(backend="tensorrt")
    with pytest.raises(ConfigError, match="runs on onnxruntime"):
        DetectionConfig(checkpoint="model.onnx", backend="torch")
    with pytest.raises(ConfigError, match="min_thermal_contrast_k.*0 = no thermal check"):
        DetectionConfig(min_thermal_contrast_k=-1.0)
    with pytest.raises(ConfigError, match="min_thermal_contrast_k"):
        DetectionConfig(min_thermal_contrast_k=float("nan"))
    with pytest.raises(ConfigError, match="thermal_min_coverage"):
        DetectionConfig(thermal_min_coverage=1.5)
    with pytest.raises(ConfigError, match="precision must be one of float32, float16"):
        DetectionConfig(precision="bfloat16")


def _tiny_checkpoint(path):
    from iphd.detection.detector import save_checkpoint
    from iphd.detection.model import DetectorConfig, FusionDetector
    from iphd.normalize import NormalizeConfig

    return save_checkpoint(
        path,
        FusionDetector(DetectorConfig(backbone_depth=18, backbone_width=8, head_channels=8,
                                      input_size=(64, 112), score_threshold=0.0)),
        NormalizeConfig(out_size=(112, 64)),
    )


def test_load_detector_runs_float32_on_cpu_and_names_a_missing_file(tmp_path, monkeypatch):
    from iphd.detection.detector import Detector
    from iphd.errors import CheckpointError

    monkeypatch.setenv("IPHD_CACHE_DIR", str(tmp_path / "cache"))
    path = _tiny_checkpoint(tmp_path / "tiny.pt")
    for backend in ("auto", "torch"):
        detector = load_detector(
            DetectionConfig(checkpoint=str(path), device="cpu", threads=0, backend=backend)
        )
        assert detector.device.type == "cpu" and not detector.half
        found = detector(_wall_and_person(), np.full((30, 53), 30_000, np.uint16))
        assert found.boxes_xyxy.shape[1] == 4
        assert isinstance(detector, Detector) == (backend == "torch")
        # On the CPU ``auto`` runs the int8 model (CPU_DEFAULT_BACKEND).
        assert detector.precision == ("int8" if backend == "auto" else "float32")
    for backend in ("auto", "torch", "onnxruntime"):
        with pytest.raises(CheckpointError, match="missing.pt"):
            load_detector(DetectionConfig(
                checkpoint=str(tmp_path / "missing.pt"), threads=0, backend=backend
            ))


@pytest.mark.parametrize("precision, half", [("float32", False), ("float16", True)])
def test_torch_runs_the_precision_asked_for_float32_by_default(tmp_path, monkeypatch, precision,
                                                               half):
    from iphd.detection.detector import Detector

    assert DetectionConfig().precision == "float32"
    asked = []
    load = Detector.from_checkpoint

    def spy(path=None, device="auto", half=False):
        asked.append(half)
        return load(path, device, half)

    monkeypatch.setattr(Detector, "from_checkpoint", spy)
    path = _tiny_checkpoint(tmp_path / "tiny.pt")
    detector = load_detector(DetectionConfig(checkpoint=str(path), device="cpu", backend="torch",
                                             precision=precision, threads=0))
    assert asked == [half]
    assert detector.precision == "float32"  # autocast float16 is CUDA's only: the CPU stays


def test_on_the_cpu_a_checkpoint_runs_on_onnxruntime_exported_once(tmp_path, monkeypatch):
    from iphd.detection.detector import Detector
    from iphd.detection.onnx_export import OnnxDetector

    monkeypatch.setenv("IPHD_CACHE_DIR", str(tmp_path / "cache"))
    path = _tiny_checkpoint(tmp_path / "tiny.pt")
    config = DetectionConfig(checkpoint=str(path), device="cpu", threads=1, backend="onnxruntime")
    loaded = load_detector(config)
    assert isinstance(loaded, OnnxDetector)
    (export,) = (tmp_path / "cache" / "onnx").iterdir()
    assert export.name.startswith("tiny-") and export.suffix == ".onnx"
    made = export.stat().st_mtime_ns
    assert isinstance(load_detector(config), OnnxDetector)
    assert export.stat().st_mtime_ns == made  # the cached export is reused
    depth, thermal = _wall_and_person(), np.full((30, 53), 30_000, np.uint16)
    reference = Detector.from_checkpoint(path, "cpu")(depth, thermal)
    found = loaded(depth, thermal)
    np.testing.assert_allclose(found.scores, reference.scores, atol=1e-4)
    np.testing.assert_allclose(found.boxes_xyxy, reference.boxes_xyxy, atol=1e-2)
    # A retrained checkpoint (other bytes) gets an export of its own.
    _tiny_checkpoint(path)
    load_detector(config)
    assert len(list((tmp_path / "cache" / "onnx").iterdir())) == 2


def _room_thermal(object_ck, behind_ck=None, room_ck=29_300, noise_ck=5.0):
    """Registered thermal at full depth resolution: the room, the box (90, 20, 130, 110).

    With the Lepton's noise (0.05 K): identical neighbours are what filled-in pixels look like.
    """
    thermal = np.full((120, 212), room_ck, np.float64)
    thermal[20:110, 90:130] = object_ck
    if behind_ck is not None:  # a warm thing on the wall, seen beside the object's legs
        thermal[80:110, 90:98] = behind_ck
    thermal += np.random.default_rng(3).normal(0.0, noise_ck, thermal.shape)
    return np.round(thermal).astype(np.uint16)


def test_thermal_contrast_reads_the_object_at_its_depth_not_what_is_behind_it():
    depth = _wall_and_person()
    depth[80:110, 90:98] = 5000  # the wall shows beside the legs: a radiator there
    box = (88.0, 18.0, 132.0, 112.0)
    scene = scene_temperature_k(_room_thermal(30_400))
    assert scene == pytest.approx(293.0, abs=0.02)
    # A person: their own pixels are 11 K above the room.
    contrast, coverage = thermal_contrast_k(depth, _room_thermal(30_400), box, 2.0, scene)
    assert contrast == pytest.approx(11.0, abs=0.15) and coverage > 0.99
    # A mannequin at room temperature in front of a 330 K radiator stays cold.
    thermal = _room_thermal(29_320, behind_ck=33_000)
    scene = scene_temperature_k(thermal)
    contrast, _ = thermal_contrast_k(depth, thermal, box, 2.0, scene)
    assert contrast == pytest.approx(0.2, abs=0.1)
    # At quarter resolution (the fusion node's default) the same object reads the same.
    quarter = _room_thermal(30_400)[::4, ::4]
    contrast, coverage = thermal_contrast_k(depth, quarter, box, 2.0, scene_temperature_k(quarter))
    assert contrast == pytest.approx(11.0, abs=0.15) and coverage > 0.99


def test_thermal_contrast_reads_each_registered_pixels_own_block_at_any_size_ratio():
    # 1280 -> 213 (IPHD's size): registered column 100 gathers depth columns 601-606, and
    # 100 * 1280 / 213 = 600.9 lies in the block before. A cold object (295 K, 2 m) whose box
    # ends at column 601, in front of a radiator (320 K, 4 m) that fills column 100's block.
    from iphd.registration import _block_indices

    depth = np.full((720, 1280), 5000, np.uint16)
    depth[:, 400:800] = 4000
    depth[200:600, 560:601] = 2000
    # Registered as the Registrar does: each pixel sees the nearest surface of its block.
    rows, cols = _block_indices(720, 120), _block_indices(1280, 213)
    block = np.min(np.stack([depth[np.ix_(r, c)] for r in rows for c in cols]), axis=0)
    thermal = np.where(block == 4000, 32000, 29500).astype(np.uint16)
    thermal = thermal + np.random.default_rng(0).integers(0, 40, thermal.shape).astype(np.uint16)
    contrast, _ = thermal_contrast_k(depth, thermal, (560.0, 200.0, 601.0, 600.0), 2.0, 295.0)
    assert abs(contrast) < 1.0  # the object's own pixels only: not the radiator's 25 K


def test_thermal_contrast_is_nan_without_depth_or_thermal_and_reports_coverage():
    depth = _wall_and_person()
    thermal = _room_thermal(30_400)
    box = (88.0, 18.0, 132.0, 112.0)
    scene = scene_temperature_k(thermal)
    assert math.isnan(thermal_contrast_k(depth, thermal, box, float("nan"), scene)[0])
    assert math.isnan(thermal_contrast_k(depth, thermal, box, 2.0, float("nan"))[0])
    # Nothing at the box's depth: no evidence.
    assert math.isnan(thermal_contrast_k(depth, thermal, box, 3.5, scene)[0])
    # Half the box outside the thermal view.
    thermal[:, 110:] = 0
    contrast, coverage = thermal_contrast_k(depth, thermal, box, 2.0, scene)
    assert coverage == pytest.approx(22 / 44, abs=0.01)
    assert contrast == pytest.approx(11.0, abs=0.15)
    # The same half filled in by the zero-patch fixing (each row copies the view's last
    # column): no more evidence than before, whatever the copies say.
    thermal[:, 110:] = thermal[:, 109:110]
    contrast, coverage = thermal_contrast_k(depth, thermal, box, 2.0, scene)
    assert coverage == pytest.approx(22 / 44, abs=0.03)
    assert thermal_contrast_k(depth, thermal, (300.0, 0.0, 310.0, 10.0), 2.0, scene) == (
        pytest.approx(float("nan"), nan_ok=True), 0.0
    )
    assert math.isnan(scene_temperature_k(np.zeros((30, 53), np.uint16)))


def test_split_cold_rejects_only_measured_cold_boxes_the_thermal_view_covers():
    def det(contrast, coverage=1.0):
        return PersonDetection((0.0, 0.0, 10.0, 20.0), 0.9, (0.0, 0.0, 2.0), 300.0,
                               contrast, coverage)

    warm, cold, unmeasured, edge = det(6.0), det(0.2), det(float("nan")), det(0.1, 0.6)
    kept, rejected = split_cold([warm, cold, unmeasured, edge], 0.5, 0.9)
    assert kept == [warm, unmeasured, edge] and rejected == [cold]
    assert split_cold([warm, cold], 0.0, 0.9) == ([warm, cold], [])


def test_describe_detections_measures_the_thermal_contrast():
    depth = _wall_and_person()
    dets = Detections(np.array([[88, 18, 132, 112]], np.float32), np.array([0.9], np.float32))
    (person,) = describe_detections(dets, depth, _room_thermal(30_400), INTR)
    assert person.thermal_contrast_k == pytest.approx(11.0, abs=0.15)
    assert person.thermal_coverage > 0.99
    (mannequin,) = describe_detections(dets, depth, _room_thermal(29_320), INTR)
    assert split_cold([mannequin], 0.5, 0.9) == ([], [mannequin])
    # With the check off nothing is measured (and nothing would be left out).
    (unmeasured,) = describe_detections(
        dets, depth, _room_thermal(29_320), INTR, measure_contrast=False
    )
    assert math.isnan(unmeasured.thermal_contrast_k) and unmeasured.thermal_coverage == 0.0
    assert unmeasured.position_m == mannequin.position_m


def test_debug_image_draws_cold_boxes_in_their_own_colour():
    from iphd.detections import COLD_COLOUR

    depth = _wall_and_person()
    thermal = _room_thermal(29_320)
    dets = Detections(np.array([[88, 18, 132, 112]], np.float32), np.array([0.9], np.float32))
    (mannequin,) = describe_detections(dets, depth, thermal, INTR)
    image = render_debug_image(depth, thermal, [], cold=[mannequin])
    assert tuple(image[60, 88]) == COLD_COLOUR  # left edge of the box
    assert tuple(render_debug_image(depth, thermal, [])[60, 88]) != COLD_COLOUR


def test_filled_pixels_are_runs_of_identical_values_along_rows_or_columns():
    noisy = np.round(
        np.random.default_rng(1).normal(29_300, 5, (12, 20))
    ).astype(np.uint16)
    assert not filled_pixels(noisy).any()
    patch = noisy.copy()
    patch[2, 5:9] = 29_400  # a row run of 4
    patch[6:11, 15] = 29_500  # a column run of 5
    patch[9, 0:3] = 29_600  # 3 only: a reading repeated by nearest-neighbour registration
    mask = filled_pixels(patch)
    expected = np.zeros_like(mask)
    expected[2, 5:9] = True
    expected[6:11, 15] = True
    assert np.array_equal(mask, expected)
    patch[0, :] = 0  # no reading is never "filled"
    assert not filled_pixels(patch)[0].any()


def test_filled_pixels_needs_a_run_of_two_or_more():
    with pytest.raises(ValueError, match="run must be >= 2"):
        filled_pixels(np.zeros((3, 3), np.uint16), run=1)
