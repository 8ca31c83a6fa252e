"""Tests of the rig calibration loader: validation, save/load round trip, quaternions."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from iphd.calibration import (
    DEFAULT_CALIBRATION,
    RigCalibration,
    calibration_from_dict,
    load_calibration,
    quaternion_to_rotation,
    rotation_to_quaternion,
    save_calibration,
)
from iphd.errors import CalibrationError
from iphd.sensors.frames import CameraIntrinsics


@pytest.fixture
def nominal() -> dict[str, Any]:
    data = yaml.safe_load(DEFAULT_CALIBRATION.read_text())
    assert isinstance(data, dict)
    return data


def test_nominal_rig_loads() -> None:
    cal = load_calibration()
    assert (cal.thermal.width, cal.thermal.height) == (160, 120)
    assert cal.thermal.fx == pytest.approx(147.4)
    assert cal.thermal.distortion == (-0.08, 0.02, 0.0, 0.0, 0.0)
    np.testing.assert_allclose(cal.rotation, np.eye(3))
    np.testing.assert_allclose(cal.translation_m, [0.0, 0.035, 0.0])
    assert cal.thermal_clock_offset_s == 0.0 and cal.thermal_clock_offset_ns == 0
    assert cal.frames.thermal == "thermal_optical_frame"


@pytest.mark.parametrize(
    ("path", "named"),
    [
        (("version",), "'version'"),
        (("thermal",), "'thermal'"),
        (("thermal", "fx"), "'thermal.fx'"),
        (("thermal", "distortion"), "'thermal.distortion'"),
        (("extrinsic_depth_to_thermal", "rotation_xyzw"),
         "'extrinsic_depth_to_thermal.rotation_xyzw'"),
        (("extrinsic_depth_to_thermal", "translation_m"),
         "'extrinsic_depth_to_thermal.translation_m'"),
        (("clock", "thermal_offset_s"), "'clock.thermal_offset_s'"),
    ],
)
def test_missing_key_is_named(nominal: dict[str, Any], path: tuple[str, ...], named: str) -> None:
    data = copy.deepcopy(nominal)
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    with pytest.raises(CalibrationError, match="missing key " + named):
        calibration_from_dict(data, "rig.yaml")


@pytest.mark.parametrize(
    ("path", "value", "fragment"),
    [
        (("version",), 2, "unsupported calibration version"),
        (("thermal", "width"), 160.5, "positive integer"),
        (("thermal", "height"), 0, "positive integer"),
        (("thermal", "fx"), -1.0, "must be > 0"),
        (("thermal", "fy"), "fast", "finite number"),
        (("thermal", "cx"), 500.0, "outside the 160x120"),
        (("thermal", "distortion"), [0.1, 0.2], "list of 5 numbers"),
        (("thermal", "distortion"), [0.1, 0.2, 0.0, float("nan"), 0.0], "finite number"),
        (("extrinsic_depth_to_thermal", "rotation_xyzw"), [0, 0, 0, 2], "unit quaternion"),
        (("extrinsic_depth_to_thermal", "translation_m"), [0, 35, 0], "not millimetres"),
        (("clock", "thermal_offset_s"), 10.0, "implausible"),
        (("thermal",), [1, 2], "must be a mapping"),
    ],
)
def test_bad_values_are_rejected(
    nominal: dict[str, Any], path: tuple[str, ...], value: object, fragment: str
) -> None:
    data = copy.deepcopy(nominal)
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    with pytest.raises(CalibrationError, match=fragment):
        calibration_from_dict(data, "rig.yaml")


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="does not exist"):
        load_calibration(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("thermal: [unclosed\n")
    with pytest.raises(CalibrationError, match="not valid YAML"):
        load_calibration(bad)
    binary = tmp_path / "bag.db3"
    binary.write_bytes(b"SQLite format 3\x00\xba\xff")
    with pytest.raises(CalibrationError, match="bag.db3 is not text"):
        load_calibration(binary)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(CalibrationError, match="mapping at top level"):
        load_calibration(scalar)


def test_save_load_round_trip(tmp_path: Path) -> None:
    angle = 0.03
    rotation = quaternion_to_rotation(np.array([0.0, np.sin(angle / 2), 0.0, np.cos(angle / 2)]))
    original = RigCalibration(
        thermal=CameraIntrinsics(
            160, 120, 150.25, 149.75, 80.1, 58.9, (-0.1, 0.03, 1e-3, -2e-3, 0.004)
        ),
        rotation=rotation,
        translation_m=np.array([0.012, 0.034, -0.002]),
        thermal_clock_offset_s=-0.0123,
        meta={"rms_px": 0.31, "views": 24, "tool": "iphd-calibrate"},
    )
    path = tmp_path / "rig.yaml"
    save_calibration(original, path)
    loaded = load_calibration(path)
    assert loaded.thermal == original.thermal
    np.testing.assert_allclose(loaded.rotation, original.rotation, atol=1e-12)
    np.testing.assert_allclose(loaded.translation_m, original.translation_m)
    assert loaded.thermal_clock_offset_s == original.thermal_clock_offset_s
    assert loaded.thermal_clock_offset_ns == -12_300_000
    assert loaded.frames == original.frames
    assert loaded.meta == original.meta
    save_calibration(loaded, tmp_path / "again.yaml")
    assert (tmp_path / "again.yaml").read_text() == path.read_text()


def random_quaternions(n: int, seed: int) -> np.ndarray:
    q = np.random.default_rng(seed).normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return np.where(q[:, 3:4] < 0, -q, q)


def test_quaternion_round_trip() -> None:
    for q in random_quaternions(200, seed=0):
        rotation = quaternion_to_rotation(q)
        np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(rotation) == pytest.approx(1.0)
        np.testing.assert_allclose(rotation_to_quaternion(rotation), q, atol=1e-12)


@pytest.mark.parametrize("axis", range(3))
def test_quaternion_of_half_turns(axis: int) -> None:
    # A 180 degree rotation has trace -1: the branch that does not divide by w.
    q = np.zeros(4)
    q[axis] = 1.0
    rotation = quaternion_to_rotation(q)
    assert np.trace(rotation) == pytest.approx(-1.0)
    np.testing.assert_allclose(rotation_to_quaternion(rotation), q, atol=1e-12)


def test_quaternion_sign_is_normalised() -> None:
    q = np.array([0.1, -0.2, 0.3, -0.9])
    q /= np.linalg.norm(q)
    np.testing.assert_allclose(rotation_to_quaternion(quaternion_to_rotation(q)), -q, atol=1e-12)


def test_extrinsic_pose_is_the_child_frames_pose_in_the_parent():
    from iphd.calibration import extrinsic_pose, quaternion_to_rotation

    angle = 0.3
    rotation = np.array([[np.cos(angle), 0.0, np.sin(angle)], [0.0, 1.0, 0.0],
                         [-np.sin(angle), 0.0, np.cos(angle)]])
    translation = np.array([0.015, -0.002, 0.004])
    pose = extrinsic_pose("depth", "color", rotation, translation)
    assert (pose.parent, pose.child) == ("depth", "color")
    # A point given in the child (colour) frame, taken into the parent (depth) frame by the pose,
    # maps back onto itself through the extrinsic.
    p_child = np.array([0.3, -0.2, 2.0])
    p_parent = quaternion_to_rotation(np.array(pose.rotation_xyzw)) @ p_child + np.array(
        pose.translation_m
    )
    np.testing.assert_allclose(rotation @ p_parent + translation, p_child, atol=1e-12)
    # The colour camera's origin, in the depth frame.
    np.testing.assert_allclose(pose.translation_m, -rotation.T @ translation, atol=1e-12)


def test_empty_base_frame_leaves_the_depth_frame_to_its_driver(nominal, tmp_path: Path) -> None:
    from iphd.calibration import rig_static_transforms

    nominal["frames"] = {"base": "", "depth": "camera_depth_optical_frame",
                         "thermal": "lepton_optical_frame"}
    path = tmp_path / "rig.yaml"
    path.write_text(yaml.safe_dump(nominal))
    cal = load_calibration(path)
    (only,) = rig_static_transforms(cal)
    assert (only.parent, only.child) == ("camera_depth_optical_frame", "lepton_optical_frame")
    save_calibration(cal, tmp_path / "again.yaml")
    assert load_calibration(tmp_path / "again.yaml").frames == cal.frames
    nominal["frames"] = {"base": None}  # "base:" with nothing after it in the file
    assert calibration_from_dict(nominal).frames.base == ""
    # The nominal rig places the depth frame under camera_link itself.
    base, thermal = rig_static_transforms(load_calibration())
    assert (base.parent, base.child, thermal.parent) == (
        "camera_link", "depth_optical_frame", "depth_optical_frame"
    )


@pytest.mark.parametrize(
    ("frames", "match"),
    [
        ({"depth": ""}, "'frames.depth' is empty"),
        ({"thermal": " "}, "'frames.thermal' is empty"),
        ({"depth": "cam", "thermal": "cam"}, "both 'cam'"),
    ],
)
def test_camera_frames_must_be_named_and_distinct(nominal, frames, match) -> None:
    nominal["frames"] = frames
    with pytest.raises(CalibrationError, match=match):
        calibration_from_dict(nominal)


def test_calibration_differences_name_what_differs_and_ignore_a_yaml_round_trip():
    from iphd.calib.simulate import perturbed_calibration
    from iphd.calibration import (
        calibration_differences,
        calibration_from_yaml,
        calibration_to_yaml,
    )

    nominal = load_calibration()
    rig = perturbed_calibration(nominal, clock_offset_s=0.04)
    assert calibration_differences(rig, calibration_from_yaml(calibration_to_yaml(rig))) == []
    assert calibration_differences(nominal, rig) == [
        "thermal intrinsics", "extrinsic", "clock offset"
    ]
    moved = perturbed_calibration(nominal, fx_scale=1.0, fy_scale=1.0,
                                  principal_shift_px=(0.0, 0.0), clock_offset_s=0.0)
    assert calibration_differences(nominal, moved) == ["extrinsic"]


def test_transform_conflicts_name_a_second_parent_and_a_second_placement():
    from iphd.calibration import StaticTransform, rig_static_transforms, transform_conflicts

    ours = rig_static_transforms(load_calibration())
    base, thermal = ours
    # The rig's own transforms again (a recording, our own latched message) and other frames.
    mount = StaticTransform("base_link", "camera_link", (0.1, 0.0, 1.2), (0.0, 0.0, 0.0, 1.0))
    assert transform_conflicts(ours, [*ours, mount]) == []
    # Within a millimetre and a tenth of a degree: the same placement.
    near = StaticTransform(thermal.parent, thermal.child,
                           (0.0005, -0.035, 0.0), (0.0, 0.0, 0.0005, 1.0))
    assert transform_conflicts(ours, [near]) == []
    driver = StaticTransform("camera_depth_frame", "/" + base.child, (0, 0, 0), base.rotation_xyzw)
    turned = StaticTransform(thermal.parent, thermal.child, (0.0, -0.035, 0.0),
                             (0.0, 0.0, math.sin(math.radians(1.0)), math.cos(math.radians(1.0))))
    found = transform_conflicts(ours, [driver, turned, driver])
    assert [c.describe() for c in found] == [
        "depth_optical_frame under camera_depth_frame, and under camera_link here",
        "thermal_optical_frame under depth_optical_frame, 0.0 cm and 2.0° from here",
    ]
    assert found[0].second_parent and not found[1].second_parent
    broken = StaticTransform(thermal.parent, thermal.child, (math.nan, 0.0, 0.0), (0, 0, 0, 1))
    assert transform_conflicts(ours, [broken]) == []  # tf2 refuses it: no second placement
