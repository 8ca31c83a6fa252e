"""Tests of thermal -> depth registration."""

from __future__ import annotations

import numpy as np
import pytest

from iphd.calibration import RigCalibration, load_calibration
from iphd.errors import CameraInfoError, FrameError
from iphd.registration import (
    Registrar,
    distort_normalized,
    get_registrar,
    project_box,
    register_thermal,
    undistort_normalized,
)
from iphd.sensors.frames import CameraIntrinsics

CAM = CameraIntrinsics(160, 120, 100.0, 100.0, 79.5, 59.5)


def rig(
    thermal: CameraIntrinsics = CAM,
    translation: tuple[float, float, float] = (0.0, 0.0, 0.0),
    rotation: np.ndarray | None = None,
) -> RigCalibration:
    return RigCalibration(
        thermal=thermal,
        rotation=np.eye(3) if rotation is None else rotation,
        translation_m=np.array(translation, dtype=np.float64),
    )


def plane(intr: CameraIntrinsics, depth_m: float) -> np.ndarray:
    return np.full((intr.height, intr.width), int(depth_m * 1000), dtype=np.uint16)


def test_identity_rig_maps_every_pixel_to_itself() -> None:
    rng = np.random.default_rng(0)
    thermal = rng.integers(28000, 31000, (120, 160)).astype(np.uint16)
    out = register_thermal(plane(CAM, 2.0), CAM, thermal, rig())
    assert out.dtype == np.uint16 and out.shape == (120, 160)
    np.testing.assert_array_equal(out, thermal)


def test_constant_plane_maps_exactly_at_another_resolution() -> None:
    depth_intr = CameraIntrinsics(640, 480, 400.0, 400.0, 319.5, 239.5)  # same FOV, 4x
    thermal = np.full((120, 160), 29815, dtype=np.uint16)
    out = register_thermal(plane(depth_intr, 3.0), depth_intr, thermal, rig(), out_size=(320, 240))
    assert out.shape == (240, 320)
    assert np.all(out == 29815)


def test_translation_shifts_a_warm_square_by_the_expected_pixels() -> None:
    # p_thermal = p_depth + (0.1, 0, 0): at 2 m a point appears f * 0.1 / 2 = 5 px further
    # right in the thermal image, so the square at thermal columns 60..79 lands on 55..74.
    thermal = np.full((120, 160), 29500, dtype=np.uint16)
    thermal[50:70, 60:80] = 30600
    out = register_thermal(plane(CAM, 2.0), CAM, thermal, rig(translation=(0.1, 0.0, 0.0)))
    warm_cols = np.flatnonzero((out == 30600).any(axis=0))
    warm_rows = np.flatnonzero((out == 30600).any(axis=1))
    assert warm_cols.tolist() == list(range(55, 75))
    assert warm_rows.tolist() == list(range(50, 70))
    # the 5 right-most columns look beyond the thermal image's right border
    assert np.all(out[:, 155:] == 0) and np.all(out[:, :155] > 0)


def test_vertical_translation_shift_scales_with_inverse_depth() -> None:
    thermal = np.full((120, 160), 29500, dtype=np.uint16)
    thermal[40:60, 70:90] = 30600
    for depth_m, shift in ((1.0, 4), (4.0, 1)):
        out = register_thermal(plane(CAM, depth_m), CAM, thermal, rig(translation=(0, 0.04, 0)))
        rows = np.flatnonzero((out == 30600).any(axis=1))
        assert rows.tolist() == list(range(40 - shift, 60 - shift))


def test_rotation_is_applied_as_depth_to_thermal() -> None:
    # Rotating by +theta about y moves the depth optical axis to x/z = tan(theta) in the
    # thermal camera, i.e. f * tan(theta) = 5 px right of its centre.
    theta = np.arctan(0.05)
    c, s = np.cos(theta), np.sin(theta)
    rot = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    thermal = np.full((120, 160), 29500, dtype=np.uint16)
    thermal[:, 84] = 30600  # the column 5 px right of the centre column (79.5 -> 84.5 edge)
    out = register_thermal(plane(CAM, 2.0), CAM, thermal, rig(rotation=rot))
    centre_row = out[60]
    assert np.flatnonzero(centre_row == 30600).tolist() == [79]


def test_invalid_depth_gives_zero() -> None:
    depth = plane(CAM, 2.0)
    depth[10:20, 30:40] = 0
    thermal = np.full((120, 160), 29500, dtype=np.uint16)
    out = register_thermal(depth, CAM, thermal, rig())
    assert np.all(out[10:20, 30:40] == 0)
    assert np.count_nonzero(out == 0) == 100


def test_depth_below_minimum_is_invalid() -> None:
    depth = plane(CAM, 2.0)
    depth[0:5, 0:5] = 50  # 5 cm: below the D435's range
    out = register_thermal(depth, CAM, np.full((120, 160), 29500, np.uint16), rig())
    assert np.all(out[0:5, 0:5] == 0)


def test_block_minimum_ignores_invalid_depth_pixels() -> None:
    depth_intr = CameraIntrinsics(320, 240, 200.0, 200.0, 159.5, 119.5)
    depth = plane(depth_intr, 4.0)
    depth[::2, ::2] = 0  # a quarter of every 2x2 block missing
    depth[0:2, 0:2] = 0  # one block with nothing valid
    depth[100, 100] = 1500  # a nearer surface inside block (50, 50)
    registrar = Registrar(depth_intr, rig(), out_size=(160, 120))
    sampled = registrar.sample_depth(depth)
    assert sampled[0, 0] == 0
    assert sampled[50, 50] == 1500
    assert sampled[10, 10] == 4000
    # A depth below min_depth_m (5 cm of noise) is as invalid inside a block as a 0: it
    # neither wins the block's minimum nor blanks the block; a block of only such depths is 0.
    depth[20, 21] = 50
    depth[40:42, 40:42] = 50
    out = registrar.register(depth, np.full((120, 160), 29500, np.uint16))
    sampled = registrar.sample_depth(depth)
    assert sampled[10, 10] == 4000 and out[10, 10] == 29500
    assert sampled[20, 20] == 0 and out[20, 20] == 0


def test_outside_the_thermal_view_is_zero() -> None:
    wide = CameraIntrinsics(160, 120, 50.0, 50.0, 79.5, 59.5)  # twice the thermal FOV
    thermal = np.full((120, 160), 29500, dtype=np.uint16)
    out = register_thermal(plane(wide, 2.0), wide, thermal, rig())
    inside = np.zeros_like(out, dtype=bool)
    inside[30:90, 40:120] = True
    assert np.all(out[inside] == 29500)
    assert np.all(out[~inside] == 0)


def test_points_behind_the_thermal_camera_are_zero() -> None:
    # The thermal camera sits 3 m in front of the depth camera, looking the same way.
    thermal = np.full((120, 160), 29500, dtype=np.uint16)
    out = register_thermal(plane(CAM, 2.0), CAM, thermal, rig(translation=(0.0, 0.0, -3.0)))
    assert not out.any()


def test_occluder_casts_a_zero_shadow_on_the_side_away_from_the_thermal_camera() -> None:
    # Wall at 4 m, a 0.4 m wide occluder at 1 m in the middle; the thermal camera is 0.1 m to
    # the left of the depth camera (p_thermal = p_depth + (0.1, 0, 0)). The wall between
    # x = 0.8 m (behind the occluder's right edge, seen from the depth camera) and x = 1.1 m is
    # hidden from the thermal camera: columns 79.5 + 100 * (0.2, 0.275] = 100..107.
    depth = plane(CAM, 4.0)
    depth[40:80, 60:100] = 1000  # occluder columns: 79.5 + 100 * [-0.2, 0.2)
    thermal = np.full((120, 160), 29500, dtype=np.uint16)
    out = register_thermal(depth, CAM, thermal, rig(translation=(0.1, 0.0, 0.0)))
    rows = slice(45, 75)
    assert np.all(out[rows, 100:107] == 0)
    assert np.all(out[rows, 108:130] == 29500)
    assert np.all(out[rows, 60:100] == 29500)  # the occluder itself is seen
    assert np.all(out[rows, 30:60] == 29500)  # nothing hidden on the thermal camera's side


def test_occlusion_tolerance_keeps_nearby_surfaces() -> None:
    depth = plane(CAM, 4.0)
    depth[40:80, 60:100] = 3950  # 5 cm in front of the wall: within tolerance, not occluding
    thermal = np.full((120, 160), 29500, dtype=np.uint16)
    out = register_thermal(depth, CAM, thermal, rig(translation=(0.1, 0.0, 0.0)))
    assert np.all(out[45:75, 100:107] == 29500)


def test_distortion_round_trip() -> None:
    dist = load_calibration().thermal.distortion
    x, y = np.meshgrid(np.linspace(-0.6, 0.6, 25), np.linspace(-0.45, 0.45, 19))
    xd, yd = distort_normalized(x, y, dist)
    xu, yu = undistort_normalized(xd, yd, dist)
    np.testing.assert_allclose(xu, x, atol=1e-9)
    np.testing.assert_allclose(yu, y, atol=1e-9)
    tangential = (0.01, -0.005, 0.002, -0.001, 0.003)
    xd, yd = distort_normalized(x, y, tangential)
    xu, yu = undistort_normalized(xd, yd, tangential)
    np.testing.assert_allclose(xu, x, atol=1e-9)


def test_registration_undoes_thermal_lens_distortion() -> None:
    # The thermal image shows a warm disc of radius 0.5 (normalised) through a barrel lens;
    # registered onto a distortion-free view of the same plane, the disc is round again.
    thermal_intr = CameraIntrinsics(160, 120, 100.0, 100.0, 79.5, 59.5, (-0.2, 0.05, 0, 0, 0))
    u, v = np.meshgrid(np.arange(160.0), np.arange(120.0))
    x, y = undistort_normalized((u - 79.5) / 100.0, (v - 59.5) / 100.0, thermal_intr.distortion)
    thermal = np.where(x * x + y * y < 0.25, 30600, 29500).astype(np.uint16)
    out = register_thermal(plane(CAM, 2.0), CAM, thermal, rig(thermal=thermal_intr))
    xo, yo = (u - 79.5) / 100.0, (v - 59.5) / 100.0
    expected = np.where(xo * xo + yo * yo < 0.25, 30600, 29500)
    valid = out > 0
    assert valid.mean() > 0.9
    assert np.mean(out[valid] == expected[valid]) > 0.99
    # the lens shrinks the disc in the raw image; registration restores its size
    assert np.count_nonzero(out == 30600) > 1.05 * np.count_nonzero(thermal == 30600)


class UnculledRegistrar(Registrar):
    """Projects every output pixel: the reference for the precomputed culling."""

    def _reachable(self, rays: np.ndarray, t: np.ndarray, bounds: np.ndarray) -> np.ndarray:
        return np.ones(rays.shape[:2], dtype=bool)


@pytest.mark.parametrize("seed", range(8))
def test_culling_never_drops_a_visible_pixel(seed: int) -> None:
    rng = np.random.default_rng(seed)
    angles = rng.uniform(-0.35, 0.35, 3)
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rot = (
        np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
        @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        @ np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    )
    thermal_intr = CameraIntrinsics(
        160, 120, 147.4, 147.4, 79.5, 59.5, (rng.uniform(-0.2, 0), 0.02, 0.001, -0.001, 0.0)
    )
    calibration = rig(thermal_intr, tuple(rng.uniform(-0.3, 0.3, 3)), rot)
    depth_intr = CameraIntrinsics(320, 180, 161.0, 161.0, 159.5, 89.5)
    depth = rng.integers(100, 12000, (180, 320)).astype(np.uint16)
    depth[rng.random(depth.shape) < 0.1] = 0
    depth[40:90, 100:180] = rng.integers(100, 400, (50, 80))  # very near surfaces
    thermal = rng.integers(28000, 31000, (120, 160)).astype(np.uint16)
    for out_size in ((320, 180), (53, 30)):
        culled = Registrar(depth_intr, calibration, out_size)
        full = UnculledRegistrar(depth_intr, calibration, out_size)
        np.testing.assert_array_equal(
            culled.register(depth, thermal), full.register(depth, thermal)
        )


def test_registrars_are_cached() -> None:
    a = get_registrar(CAM, rig(), (80, 60))
    b = get_registrar(CAM, rig(), (80, 60))
    c = get_registrar(CAM, rig(translation=(0.01, 0, 0)), (80, 60))
    assert a is b and a is not c


def test_nominal_rig_at_iphd_scale() -> None:
    depth_intr = CameraIntrinsics(1280, 720, 645.0, 645.0, 639.5, 359.5)
    thermal = np.full((120, 160), 29500, dtype=np.uint16)
    out = register_thermal(
        plane(depth_intr, 3.0), depth_intr, thermal, load_calibration(), out_size=(213, 120)
    )
    assert out.shape == (120, 213)
    assert 0.3 < np.count_nonzero(out) / out.size < 0.6  # the Lepton sees less than the D435
    assert np.all(out[out > 0] == 29500)
    assert out[60, 106] == 29500 and out[60, 0] == 0


@pytest.mark.parametrize(
    ("depth", "thermal", "error", "fragments"),
    [
        (np.zeros((120, 160), np.float32), None, FrameError, ["dtype float32", "uint16"]),
        (np.zeros((120, 160, 3), np.uint16), None, FrameError, ["(120, 160, 3)", "single-channel"]),
        (np.zeros((240, 320), np.uint16), None, FrameError, ["320x240", "160x120", "camera_info"]),
        (None, np.zeros((122, 160), np.uint16), FrameError, ["160x122", "160x120", "telemetry"]),
        (None, np.zeros((120, 160), np.int32), FrameError, ["dtype int32"]),
        (None, [[0]], FrameError, ["numpy array"]),
    ],
)
def test_bad_inputs_raise_clear_errors(
    depth: np.ndarray | None,
    thermal: np.ndarray | None,
    error: type[Exception],
    fragments: list[str],
) -> None:
    depth = plane(CAM, 2.0) if depth is None else depth
    thermal = np.full((120, 160), 29500, np.uint16) if thermal is None else thermal
    with pytest.raises(error) as info:
        register_thermal(depth, CAM, thermal, rig())
    for fragment in fragments:
        assert fragment in str(info.value)


def test_missing_depth_intrinsics_raise_camera_info_error() -> None:
    with pytest.raises(CameraInfoError, match="camera_info has not been received"):
        register_thermal(plane(CAM, 2.0), None, np.ones((120, 160), np.uint16), rig())  # type: ignore[arg-type]


def test_registrar_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="out_size"):
        Registrar(CAM, rig(), out_size=(0, 10))
    with pytest.raises(ValueError, match="tolerances"):
        Registrar(CAM, rig(), occlusion_tolerance_m=-1.0)
    with pytest.raises(ValueError, match="min_depth_m"):
        Registrar(CAM, rig(), min_depth_m=0.0)


def test_a_box_moves_into_another_camera_by_its_parallax_at_the_persons_distance():
    depth = CameraIntrinsics(848, 480, 420.0, 420.0, 423.5, 239.5)
    color = CameraIntrinsics(640, 480, 600.0, 600.0, 319.5, 239.5)
    # Box edges: pixel i spans i..i+1, so the right edge 424 is the principal point 423.5 + 0.5.
    box = (324.0, 100.0, 424.0, 380.0)
    # The colour camera 15 mm to the right: a point 2 m away is 15 mm left of its axis.
    x1, y1, x2, y2 = project_box(box, 2.0, depth, color, np.eye(3), np.array([-0.015, 0, 0]))
    shift = -600.0 * 0.015 / 2.0
    scale = 600.0 / 420.0
    np.testing.assert_allclose([x1, x2], [320 - 100 * scale + shift, 320 + shift], atol=1e-9)
    np.testing.assert_allclose([y1, y2], [240 - 140 * scale, 240 + 140 * scale], atol=1e-9)
    # Barrel distortion in the target pulls the box's far corners towards the centre.
    barrel = CameraIntrinsics(640, 480, 600.0, 600.0, 319.5, 239.5, (-0.2, 0.0, 0.0, 0.0, 0.0))
    bx1, by1, _, by2 = project_box(box, 2.0, depth, barrel, np.eye(3), np.zeros(3))
    assert bx1 > 320 - 100 * scale and by1 > 240 - 140 * scale and by2 < 240 + 140 * scale
    # The same camera at half the size: the box halves.
    half = depth.scaled(424, 240)
    np.testing.assert_allclose(project_box(box, 2.0, depth, half, np.eye(3), np.zeros(3)),
                               np.asarray(box) / 2, atol=1e-9)
    # A source box that round-trips through its own camera comes back unchanged.
    np.testing.assert_allclose(project_box(box, 3.0, depth, depth, np.eye(3), np.zeros(3)), box)
    with pytest.raises(ValueError, match="distance must be > 0 m"):
        project_box(box, float("nan"), depth, color, np.eye(3), np.zeros(3))
    with pytest.raises(ValueError, match="behind the target camera"):
        project_box(box, 2.0, depth, color, -np.eye(3), np.zeros(3))
