"""Tests of the fusion stage (validation, register + fix) and the depth encoding helper."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from iphd.calibration import RigCalibration, load_calibration
from iphd.errors import CameraInfoError, FrameError
from iphd.fusion import IPHD_SCALE, FusionConfig, FusionPipeline, depth_to_mm
from iphd.noise import fix_zero_patches
from iphd.registration import register_thermal
from iphd.sensors.frames import CameraIntrinsics, DepthFrame, ThermalFrame

D435 = CameraIntrinsics(1280, 720, 645.0, 645.0, 639.5, 359.5)


def scene(calibration: RigCalibration) -> tuple[DepthFrame, ThermalFrame]:
    """A wall at 4 m with a person-like box at 1.5 m, seen by both cameras."""
    depth_mm = np.full((720, 1280), 4000, dtype=np.uint16)
    depth_mm[150:720, 500:700] = 1500
    depth_mm[::7, ::11] = 0  # sparse holes
    thermal_ck = np.full((120, 160), 29500, dtype=np.uint16)
    thermal_ck[30:120, 60:100] = 30600
    return (
        DepthFrame(depth_mm, 1_000_000_000, intrinsics=D435),
        ThermalFrame(thermal_ck, 990_000_000, intrinsics=calibration.thermal),
    )


@pytest.fixture
def calibration() -> RigCalibration:
    return load_calibration()


def test_process_registers_and_fixes_at_the_iphd_scale(calibration: RigCalibration) -> None:
    depth, thermal = scene(calibration)
    pipeline = FusionPipeline(calibration, FusionConfig(out_scale=IPHD_SCALE))
    out = pipeline.process(depth, thermal)
    assert out.shape == (120, 213) and out.dtype == np.uint16
    registered = register_thermal(
        depth.depth_mm, D435, thermal.thermal_ck, calibration, out_size=(213, 120)
    )
    np.testing.assert_array_equal(out, fix_zero_patches(registered, 16, 150))
    before, after = pipeline.last_zero_fraction
    assert 0.0 < after < before < 1.0
    assert set(pipeline.last_timings_ms) == {"validate", "register", "fix", "total"}
    assert all(v >= 0.0 for v in pipeline.last_timings_ms.values())
    assert set(np.unique(out[out > 0]).tolist()) <= {29500, 30600, 30050}


def test_default_output_has_the_depth_resolution(calibration: RigCalibration) -> None:
    depth, thermal = scene(calibration)
    out = FusionPipeline(calibration, FusionConfig(fix_zero_patches=False)).process(
        depth, thermal
    )
    assert out.shape == (720, 1280)


def test_fixing_can_be_switched_off(calibration: RigCalibration) -> None:
    depth, thermal = scene(calibration)
    config = FusionConfig(out_size=(320, 180), fix_zero_patches=False)
    out = FusionPipeline(calibration, config).process(depth, thermal)
    registered = register_thermal(
        depth.depth_mm, D435, thermal.thermal_ck, calibration, out_size=(320, 180)
    )
    np.testing.assert_array_equal(out, registered)


def test_registrar_follows_the_depth_intrinsics(calibration: RigCalibration) -> None:
    pipeline = FusionPipeline(calibration, FusionConfig(out_scale=0.25))
    depth, thermal = scene(calibration)
    assert pipeline.process(depth, thermal).shape == (180, 320)
    small = D435.scaled(848, 480)
    depth_small = DepthFrame(np.full((480, 848), 3000, np.uint16), 1, intrinsics=small)
    assert pipeline.process(depth_small, thermal).shape == (120, 212)
    assert pipeline.registrar(small).depth_intrinsics == small


def test_missing_depth_intrinsics_say_camera_info_not_received(
    calibration: RigCalibration,
) -> None:
    depth, thermal = scene(calibration)
    depth = dataclasses.replace(depth, intrinsics=None)
    with pytest.raises(CameraInfoError, match="camera_info has not been received"):
        FusionPipeline(calibration).process(depth, thermal)


@pytest.mark.parametrize(
    ("which", "array", "fragments"),
    [
        ("depth", np.zeros((720, 1280), np.float32), ["depth image", "float32", "uint16"]),
        ("depth", np.ones((480, 848), np.uint16), ["848x480", "1280x720", "camera_info"]),
        ("depth", np.zeros((720, 1280), np.uint16), ["all zeros", "depth"]),
        ("thermal", np.ones((122, 160), np.uint16), ["160x122", "160x120", "telemetry"]),
        ("thermal", np.ones((120, 160), np.float64), ["thermal image", "float64"]),
        ("thermal", np.zeros((120, 160), np.uint16), ["all zeros", "flat-field"]),
        # Another driver's thermal in the wrong units: 0.1 K, raw counts, AGC.
        ("thermal", np.full((120, 160), 2950, np.uint16), ["median 2950", "0.01 K"]),
        ("thermal", np.full((120, 160), 8190, np.uint16), ["not read as centi-kelvin"]),
        ("thermal", np.full((120, 160), 128, np.uint16), ["TLinear"]),
        ("thermal", np.full((120, 160), 41_000, np.uint16), ["median 41000"]),
    ],
)
def test_bad_frames_raise_frame_error(
    calibration: RigCalibration, which: str, array: np.ndarray, fragments: list[str]
) -> None:
    depth, thermal = scene(calibration)
    if which == "depth":
        depth = dataclasses.replace(depth, depth_mm=array)
    else:
        thermal = dataclasses.replace(thermal, thermal_ck=array)
    with pytest.raises(FrameError) as info:
        FusionPipeline(calibration).process(depth, thermal)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_thermal_of_cold_and_hot_scenes_still_reads_as_centi_kelvin(
    calibration: RigCalibration,
) -> None:
    depth, thermal = scene(calibration)
    for median_ck in (20_000, 26_000, 33_000, 40_000):  # -73 to 127 deg C
        image = np.full((120, 160), median_ck, np.uint16)
        image[:10] = 0  # no coverage is not part of the median
        image[10:20] = 60_000  # a hot spot
        frame = dataclasses.replace(thermal, thermal_ck=image)
        FusionPipeline(calibration).process(depth, frame)


def test_thermal_camera_info_of_another_resolution_is_rejected(
    calibration: RigCalibration,
) -> None:
    depth, thermal = scene(calibration)
    thermal = dataclasses.replace(thermal, intrinsics=calibration.thermal.scaled(80, 60))
    with pytest.raises(CameraInfoError, match="80x60"):
        FusionPipeline(calibration).process(depth, thermal)


def test_depth_to_mm_passes_uint16_encodings_through() -> None:
    raw = np.array([[0, 1234], [65535, 7]], dtype=np.uint16)
    assert depth_to_mm(raw, "16UC1") is raw
    assert depth_to_mm(raw, "mono16") is raw
    swapped = raw.astype(">u2")
    converted = depth_to_mm(swapped, "16UC1")
    assert converted.dtype == np.uint16
    np.testing.assert_array_equal(converted, raw)


def test_depth_to_mm_converts_float_metres() -> None:
    metres = np.array(
        [[1.0, 1.2346, 0.0, -1.0], [np.nan, np.inf, 65.535, 70.0]], dtype=np.float32
    )
    mm = depth_to_mm(metres, "32FC1")
    assert mm.dtype == np.uint16
    assert mm.tolist() == [[1000, 1235, 0, 0], [0, 0, 65535, 0]]


@pytest.mark.parametrize(
    ("array", "encoding", "fragments"),
    [
        (np.zeros((2, 2), np.uint8), "8UC1", ["'8UC1'", "16UC1", "mono16", "32FC1"]),
        (np.zeros((2, 2), np.float32), "16UC1", ["16UC1", "float32"]),
        (np.zeros((2, 2), np.uint16), "32FC1", ["32FC1", "uint16"]),
        (np.zeros((2, 2, 3), np.uint16), "16UC1", ["2-D"]),
    ],
)
def test_depth_to_mm_rejects_what_it_cannot_convert(
    array: np.ndarray, encoding: str, fragments: list[str]
) -> None:
    with pytest.raises(FrameError) as info:
        depth_to_mm(array, encoding)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_config_output_size() -> None:
    assert FusionConfig().output_size(D435) == (1280, 720)
    assert FusionConfig(out_scale=IPHD_SCALE).output_size(D435) == (213, 120)
    assert FusionConfig(out_size=(100, 50)).output_size(D435) == (100, 50)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"out_size": (213, 120), "out_scale": 0.5}, "not both"),
        ({"out_size": (0, 120)}, "out_size"),
        ({"out_scale": 0.0}, "out_scale"),
        ({"occlusion_tolerance_m": -0.1}, "occlusion_tolerance_m"),
        ({"occlusion_tolerance_rel": -1.0}, "occlusion_tolerance_rel"),
        ({"noise_max_search_px": 0}, "noise_max_search_px"),
        ({"noise_max_pair_difference_ck": -1}, "noise_max_pair_difference_ck"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        FusionConfig(**kwargs)  # type: ignore[arg-type]
