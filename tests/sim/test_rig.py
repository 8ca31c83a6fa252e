"""Sensor models of the rig simulator, measured on rendered frames against the issue's numbers."""

import dataclasses

import numpy as np
import pytest
from simscene import EMPTY_ROOM, empty_room, place, true_room_depth, walk

from iphd.calibration import calibration_from_dict
from iphd.registration import Registrar, distort_normalized
from iphd.sensors.lepton import FFC_COMPLETE, FFC_IN_PROGRESS, decode_telemetry
from iphd.sim.body import make_identity
from iphd.sim.rig import (
    PROFILES,
    RigSimulator,
    SensorConfig,
    _distorted_grid,
    depth_profile,
    warm_object_boxes,
)
from iphd.sim.scene import SceneConfig

QUIET = SensorConfig(radiometric_offset_k=0.0, vignetting_k=(0.0, 0.0))


def _hfov_deg(intr):
    return float(np.degrees(2 * np.arctan(intr.width / 2 / intr.fx)))


@pytest.fixture(scope="module")
def empty(calibration):
    """An empty 8 x 12 m room, nobody in it."""
    return empty_room(calibration, seed=5)


@pytest.fixture(scope="module")
def one_person(calibration):
    """One person standing 2.5 m in front of the rig, facing it, in an empty room."""
    sim = empty_room(calibration, (3,), seed=11, sensors=QUIET)
    place(sim, 0, 2.5)
    thermal = sim.render_thermal(20)
    depth = sim.render_depth(sim.nearest_depth_index(thermal.t_s))
    return sim, depth, thermal


# --- configuration ---------------------------------------------------------------------------


def test_depth_profiles_are_the_d435_modes():
    big, mid = depth_profile("depth_1280x720"), depth_profile("depth_848x480")
    assert (big.width, big.height, mid.width, mid.height) == (1280, 720, 848, 480)
    assert _hfov_deg(big) == pytest.approx(87.0, abs=0.5)
    assert _hfov_deg(mid) == pytest.approx(87.0, abs=0.5)
    aligned = depth_profile("aligned_1280x720")
    assert _hfov_deg(aligned) == pytest.approx(69.4, abs=0.5)
    assert aligned.cx == pytest.approx(639.5) and aligned.cy == pytest.approx(359.5)
    assert aligned.fx == aligned.fy
    assert {"aligned_1280x720", "aligned_848x480", "depth_1280x720", "depth_848x480"} <= set(
        PROFILES)
    for bad in ("color_640x480", "depth_8x8", "depth-848x480"):
        with pytest.raises(ValueError, match="unknown depth profile"):
            depth_profile(bad)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"thermal_rate_hz": 9.0}, "thermal_rate_hz"),
        ({"thermal_rate_hz": 0.0}, "thermal_rate_hz"),
        ({"depth_rate_hz": 0.0}, "depth_rate_hz"),
        ({"min_z_m": 3.0, "max_z_m": 2.0}, "min_z_m"),
        ({"rgb_scale": 0.0}, "rgb_scale"),
        ({"depth_profile": "nope"}, "unknown depth profile"),
        ({"pan_deg": -5.0}, "pan_deg"),
        ({"pan_deg": float("nan")}, "pan_deg"),
        ({"pan_deg": 30.0, "pan_period_s": 0.0}, "pan_period_s"),
    ],
)
def test_sensor_config_rejects_impossible_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SensorConfig(**kwargs)


@pytest.mark.parametrize("period", [(0.0, 0.0), (-5.0, 10.0), (20.0, 10.0)])
def test_sensor_config_rejects_flat_field_periods_that_cannot_work(period):
    # A zero period makes RigSimulator loop for ever while it plans the flat-field corrections.
    with pytest.raises(ValueError, match="ffc_period_s"):
        SensorConfig(ffc_period_s=period)


def test_simulator_rejects_a_negative_duration(calibration):
    with pytest.raises(ValueError, match="duration_s"):
        RigSimulator(calibration, [], -1.0, 0)


# --- determinism -----------------------------------------------------------------------------


def test_same_seed_same_frames_in_any_order(calibration):
    people = [make_identity(p, 0) for p in range(3)]
    a = RigSimulator(calibration, people, 4.0, 21)
    b = RigSimulator(calibration, people, 4.0, 21)
    a_late, a_early = a.render_depth(90, rgb=True), a.render_depth(3, rgb=True)
    b_early, b_late = b.render_depth(3, rgb=True), b.render_depth(90, rgb=True)
    for x, y in ((a_early, b_early), (a_late, b_late)):
        np.testing.assert_array_equal(x.depth_mm, y.depth_mm)
        np.testing.assert_array_equal(x.rgb, y.rgb)
        assert x.people == y.people and x.stamp_ns == y.stamp_ns
    np.testing.assert_array_equal(a.render_thermal(15).thermal_ck, b.render_thermal(15).thermal_ck)
    assert a.thermal_stamp_ns(15) == b.thermal_stamp_ns(15)


def test_different_seeds_give_different_rooms_people_and_frames(calibration):
    people = [make_identity(p, 0) for p in range(3)]
    a = RigSimulator(calibration, people, 4.0, 1)
    b = RigSimulator(calibration, people, 4.0, 2)
    assert a.scene.width_m != b.scene.width_m
    pa = [p.pelvis_m for p in a.scene.at(2.0)[1]]
    pb = [p.pelvis_m for p in b.scene.at(2.0)[1]]
    assert not np.allclose(pa, pb)
    da, db = a.render_depth(30).depth_mm, b.render_depth(30).depth_mm
    assert np.mean(da != db) > 0.5
    assert not np.array_equal(a.render_thermal(12).thermal_ck, b.render_thermal(12).thermal_ck)


# --- D435 depth ------------------------------------------------------------------------------


def test_depth_noise_grows_with_the_square_of_the_distance(empty):
    truth_m = true_room_depth(empty)
    depth_mm = empty.render_depth(7).depth_mm
    valid = depth_mm > 0
    err_m = depth_mm / 1000.0 - truth_m
    s = SensorConfig()
    expected = s.subpixel / (s.stereo_focal_px * s.baseline_m)  # sigma_z = k z^2
    sigma = {}
    for lo, hi in ((1.8, 2.4), (3.0, 3.6), (4.5, 5.5)):
        sel = valid & (truth_m >= lo) & (truth_m < hi)
        assert sel.sum() > 5000
        sigma[(lo + hi) / 2] = err_m[sel].std()
        assert abs(err_m[sel].mean()) < 0.15 * sigma[(lo + hi) / 2]  # unbiased
        # The same k at every range.
        assert (err_m[sel] / truth_m[sel] ** 2).std() == pytest.approx(expected, rel=0.2)
    assert sigma[5.0] / sigma[2.1] == pytest.approx((5.0 / 2.1) ** 2, rel=0.25)


def test_depth_noise_follows_the_subpixel_setting(calibration):
    still = empty_room(calibration, seed=5, sensors=SensorConfig(subpixel=0.0))
    truth_m = true_room_depth(still)
    depth_mm = still.render_depth(7).depth_mm
    sel = (depth_mm > 0) & (truth_m < 8.0)
    # Without matching error only the rounding to millimetres is left.
    assert np.abs(depth_mm[sel] / 1000.0 - truth_m[sel]).max() <= 0.0006


def test_depth_is_invalid_beyond_range_and_drops_out_towards_it(empty):
    truth_m = true_room_depth(empty)
    depth_mm = empty.render_depth(4).depth_mm
    far = truth_m > SensorConfig().max_z_m
    assert far.sum() > 1000  # the back wall of the 12 m room is out of range
    assert (depth_mm[far] == 0).all()
    near = (truth_m > 1.0) & (truth_m < 5.0)
    edge = (truth_m > 8.5) & (truth_m < 10.0)
    assert (depth_mm[near] == 0).mean() < 0.01
    assert 0.04 < (depth_mm[edge] == 0).mean() < 0.3
    assert depth_mm[depth_mm > 0].max() < 1.2 * SensorConfig().max_z_m * 1000


def test_dark_and_glossy_surfaces_drop_out_in_blobs(calibration):
    sim = empty_room(calibration, seed=5)
    truth_m = true_room_depth(sim)
    near = (truth_m > 1.0) & (truth_m < 5.0)
    before = (sim.render_depth(2).depth_mm[near] == 0).mean()
    sim.scene.materials[:, 1] = 0.4  # every surface dark: 40 % dropout probability
    depth_mm = sim.render_depth(2).depth_mm
    after = (depth_mm[near] == 0).mean()
    assert before < 0.01
    assert 0.25 < after < 0.55
    # Dropouts come in blobs, not salt and pepper: long runs of zeros along the rows.
    zeros = (depth_mm == 0).astype(np.int8)
    starts = np.count_nonzero(np.diff(zeros, axis=1) == 1)
    assert zeros.sum() / max(starts, 1) > 8


def test_occlusion_shadow_is_left_of_a_near_person(calibration):
    # The back wall about 6 m away, within range, behind a person at 2.5 m.
    room = SceneConfig(room_width_m=(8.0, 8.0), room_depth_m=(7.0, 7.0), distractor_scale=0.0)
    # Light clothing: no dropout blobs of a dark top at the person's own edges.
    ident = next(i for i in (make_identity(p, 0) for p in range(50)) if not i.clothing.dark_top)
    sim = empty_room(calibration, (ident,), seed=11, scene=room)
    place(sim, 0, 2.5)
    depth = sim.render_depth(12)
    person = depth.people[0]
    z_mm = person.position_m[2] * 1000.0
    x1, y1, x2, y2 = (int(v) for v in person.box_xyxy)
    h = y2 - y1
    left, right = [], []
    for v in range(y1 + int(0.2 * h), y1 + int(0.6 * h)):
        row = depth.depth_mm[v].astype(np.float64)
        body = np.flatnonzero(np.abs(row[x1:x2] - z_mm) < 400) + x1
        if body.size == 0:
            continue
        left.append((row[body[0] - 6 : body[0]] == 0).mean())
        right.append((row[body[-1] + 1 : body[-1] + 7] == 0).mean())
    # A shadow of f B (1 / z_person - 1 / z_wall) ~ 7 px left of the person, none right.
    assert len(left) > 100
    assert np.mean(left) > 0.7
    assert np.mean(right) < 0.15


def test_depth_frames_are_30_hz_on_the_host_clock(empty):
    stamps = np.array([empty.depth_stamp_ns(j) for j in range(60)])
    assert stamps[0] == empty.start_ns
    np.testing.assert_allclose(np.diff(stamps), 1e9 / 30.0, atol=1.0)
    assert empty.n_depth == int(empty.duration_s * 30)
    assert empty.render_depth(12).stamp_ns == stamps[12]


@pytest.mark.parametrize("profile", ["aligned_1280x720", "depth_848x480"])
def test_depth_images_have_the_profile_size(calibration, profile):
    sim = empty_room(calibration, (0,), sensors=SensorConfig(depth_profile=profile))
    place(sim, 0, 3.0)
    sample = sim.render_depth(5, rgb=True)
    intr = depth_profile(profile)
    assert sample.depth_mm.shape == (intr.height, intr.width)
    assert sample.depth_mm.dtype == np.uint16
    assert sample.rgb.shape == (intr.height // 2, intr.width // 2, 3)
    assert sample.rgb.dtype == np.uint8
    assert sim.depth_intrinsics == intr


# --- ground truth ----------------------------------------------------------------------------


def test_ground_truth_box_position_and_depth_agree(calibration):
    ident = make_identity(8, 0)
    sim = empty_room(calibration, (ident,), seed=3)
    place(sim, 0, 4.0)
    sample = sim.render_depth(10)
    assert len(sample.people) == 1
    p = sample.people[0]
    assert p.pid == 8
    assert p.visibility == pytest.approx(1.0)
    assert np.hypot(p.position_m[0], p.position_m[2]) == pytest.approx(4.0, abs=0.1)
    assert abs(p.position_m[0]) < 0.1  # straight ahead
    np.testing.assert_allclose(p.velocity_mps, 0.0, atol=0.02)
    x1, y1, x2, y2 = p.box_xyxy
    fy = sim.depth_intrinsics.fy
    assert (y2 - y1) == pytest.approx(fy * ident.shape.height_m / p.position_m[2], rel=0.15)
    assert 0.15 < (x2 - x1) / (y2 - y1) < 0.45
    core = sample.depth_mm[int(y1 + 0.3 * (y2 - y1)) : int(y1 + 0.5 * (y2 - y1)),
                           int(x1 + 0.4 * (x2 - x1)) : int(x1 + 0.6 * (x2 - x1))]
    core = core[core > 0]
    assert np.median(core) / 1000.0 == pytest.approx(p.position_m[2] - 0.1, abs=0.15)


def test_visibility_drops_for_a_person_behind_another(calibration):
    sim = empty_room(calibration, (1, 2), seed=4)
    place(sim, 0, 2.0)
    place(sim, 1, 4.0, bearing_rad=0.03)
    people = {p.pid: p for p in sim.render_depth(3).people}
    assert people[1].visibility > 0.97
    assert 0.0 < people[2].visibility < 0.6
    # The box covers only what is visible.
    assert people[2].box_xyxy[3] - people[2].box_xyxy[1] > 0


def test_ground_truth_velocity_of_a_walker(calibration):
    sim = empty_room(calibration, (4,), seed=6)
    x0, z0 = place(sim, 0, 3.0)
    walk(sim, 0, (x0 - 1.0, z0), (x0 + 1.0, z0), 2.0)  # 1 m/s across the view
    people = sim.render_depth(30).people
    assert len(people) == 1
    speed = np.hypot(people[0].velocity_mps[0], people[0].velocity_mps[2])
    assert speed == pytest.approx(1.0, rel=0.1)
    later = sim.render_depth(45).people[0]
    # World +x is the camera's left (optical x points right).
    assert later.position_m[0] - people[0].position_m[0] == pytest.approx(-0.5, abs=0.1)
    assert people[0].velocity_mps[0] == pytest.approx(-1.0, abs=0.15)


def test_nobody_in_view_gives_no_ground_truth(empty):
    assert empty.render_depth(0).people == ()


def test_warm_object_boxes_are_in_the_depth_image(calibration):
    boxes = []
    for seed in range(4):
        sim = RigSimulator(calibration, [], 2.0, seed)
        b = warm_object_boxes(sim)
        assert b.shape[1] == 4
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
        boxes.append(b)
    assert sum(len(b) for b in boxes) > 0


# --- Lepton ----------------------------------------------------------------------------------


def test_lepton_frames_are_160x120_centikelvin_with_telemetry(one_person):
    sim, _, thermal = one_person
    assert thermal.thermal_ck.shape == (120, 160)
    assert thermal.thermal_ck.dtype == np.uint16
    assert thermal.raw_frame().shape == (122, 160)
    kelvin = thermal.thermal_ck / 100.0
    amb = sim.scene.ambient_k
    assert abs(np.median(kelvin) - amb) < 2.0
    telemetry = decode_telemetry(thermal.telemetry)
    assert telemetry["frame_counter"] == thermal.index == 20
    assert telemetry["ffc_state"] == FFC_COMPLETE
    assert telemetry["tlinear_enabled"] == 1 and telemetry["tlinear_resolution"] == 1
    assert 29_000 < telemetry["fpa_temp_ck"] < 32_000


def test_skin_is_306_to_308_k_and_clothing_is_cooler(one_person, calibration):
    sim, depth, thermal = one_person
    registered = Registrar(sim.depth_intrinsics, calibration).register(
        depth.depth_mm, thermal.thermal_ck) / 100.0
    x1, y1, x2, y2 = (int(v) for v in depth.people[0].box_xyxy)
    h, w = y2 - y1, x2 - x1
    head = registered[y1 : y1 + int(0.13 * h), x1:x2]
    face_k = np.percentile(head[head > 0], 95)
    assert 305.8 < face_k < 308.3
    torso = registered[y1 + int(0.3 * h) : y1 + int(0.45 * h), x1 + w // 3 : x2 - w // 3]
    torso_k = np.median(torso[torso > 0])
    assert torso_k < face_k - 1.5
    assert torso_k > sim.scene.ambient_k + 1.0
    background = registered[registered > 0]
    assert np.median(background) == pytest.approx(sim.scene.ambient_k, abs=1.5)


def test_thermal_temporal_noise_is_about_50_mk(calibration):
    sim = empty_room(calibration, seed=8)
    # After the start-up flat-field correction (1 s).
    k = int(np.ceil(1.2 * SensorConfig().thermal_rate_hz)) + 1
    a, b = sim.render_thermal(k), sim.render_thermal(k + 1)
    assert not a.frozen and not b.frozen
    diff_k = (a.thermal_ck.astype(np.float64) - b.thermal_ck) / 100.0
    assert 0.03 < diff_k.std() / np.sqrt(2) < 0.08
    assert abs(diff_k.mean()) < 0.01


def test_vignetting_cools_the_corners(calibration):
    flat = empty_room(calibration, seed=8, sensors=QUIET)
    dark = empty_room(calibration, seed=8,
                      sensors=dataclasses.replace(QUIET, vignetting_k=(2.0, 2.0)))
    drop = (flat.render_thermal(30).thermal_ck.astype(np.float64)
            - dark.render_thermal(30).thermal_ck) / 100.0
    assert drop[:3, :3].mean() == pytest.approx(2.0, abs=0.3)
    assert abs(drop[55:65, 75:85].mean()) < 0.05
    assert drop[0, 80] < drop[0, 0]


def test_optical_blur_softens_edges(calibration):
    def edge_energy(blur):
        sensors = SensorConfig(thermal_blur_px=blur, thermal_noise_k=0.0, thermal_fpn_k=0.0)
        sim = empty_room(calibration, (3,), seed=11, sensors=sensors)
        place(sim, 0, 2.5)
        image = sim.render_thermal(20).thermal_ck.astype(np.float64)
        return np.abs(np.diff(image, axis=1)).max()

    assert edge_energy(1.5) < 0.6 * edge_energy(0.3)


def test_flat_field_corrections_freeze_frames_and_flag_them(calibration):
    sensors = SensorConfig(ffc_period_s=(3.0, 3.0), ffc_duration_s=0.5)
    sim = empty_room(calibration, (2,), seed=9, duration_s=7.0, sensors=sensors)
    x, z = place(sim, 0, 3.0)
    walk(sim, 0, (x - 1.0, z), (x + 1.0, z), 7.0)  # moving, so a live frame always changes
    frames = [sim.render_thermal(k) for k in range(sim.n_thermal)]
    frozen = [f for f in frames if f.frozen]
    assert frozen and frames[0].frozen  # the start-up correction
    for f in frames:
        state = decode_telemetry(f.telemetry)["ffc_state"]
        assert state == (FFC_IN_PROGRESS if f.frozen else FFC_COMPLETE)
        assert f.frozen == (f.t_s % 3.0 < 0.5)
    assert len(frozen) / len(frames) == pytest.approx(0.5 / 3.0, abs=0.05)
    # A frozen frame repeats the last live frame before the correction began.
    for i, f in enumerate(frames):
        if f.frozen and i > 0 and not frames[i - 1].frozen:
            np.testing.assert_array_equal(f.thermal_ck, frames[i - 1].thermal_ck)
        if not f.frozen and i > 0 and not frames[i - 1].frozen:
            assert not np.array_equal(f.thermal_ck, frames[i - 1].thermal_ck)


def test_thermal_frames_come_below_9_hz(empty):
    times = np.array([empty.thermal_time(k) for k in range(empty.n_thermal)])
    rate = 1.0 / np.diff(times).mean()
    assert 8.0 < rate < 9.0
    # The Lepton's own oscillator: off from nominal by its drift.
    drift = SensorConfig().thermal_drift_ppm * 1e-6
    assert rate == pytest.approx(SensorConfig().thermal_rate_hz / (1 + drift), rel=1e-9)
    assert times[-1] <= empty.duration_s
    assert empty.n_thermal == pytest.approx(empty.duration_s * rate, abs=1.5)


def test_thermal_stamps_carry_the_clock_offset_and_jitter(calibration):
    shifted = dataclasses.replace(calibration, thermal_clock_offset_s=0.25)
    sim = empty_room(shifted, seed=2, duration_s=20.0)
    k = np.arange(sim.n_thermal)
    stamps = np.array([sim.thermal_stamp_ns(int(i)) for i in k])
    capture = sim.start_ns + np.array([sim.thermal_time(int(i)) for i in k]) * 1e9
    # stamp = capture - offset: the fusion node adds the calibration's offset back.
    lag_s = (capture - stamps) / 1e9
    assert lag_s.mean() == pytest.approx(0.25, abs=0.001)
    assert 0.001 < lag_s.std() < 0.004
    assert sim.render_thermal(40).stamp_ns == stamps[40]
    override = empty_room(shifted, seed=2, sensors=SensorConfig(thermal_clock_offset_s=-0.1))
    lag = (override.start_ns + override.thermal_time(40) * 1e9 - override.thermal_stamp_ns(40))
    assert lag / 1e9 == pytest.approx(-0.1, abs=0.01)


def test_thermal_view_follows_the_calibrated_extrinsic_and_distortion(calibration):
    """A hot person lands on the person's depth pixels only with the rig's own calibration."""
    data = calibration.to_dict()
    half = np.deg2rad(4.0) / 2
    data["extrinsic_depth_to_thermal"] = {
        "rotation_xyzw": [0.0, float(np.sin(half)), 0.0, float(np.cos(half))],
        "translation_m": [-0.25, 0.1, 0.02],
    }
    data["thermal"]["distortion"] = [-0.2, 0.05, 0.001, -0.001, 0.0]
    odd = calibration_from_dict(data)
    sim = empty_room(odd, (3,), seed=11, sensors=QUIET)
    place(sim, 0, 3.0, bearing_rad=0.3)
    thermal = sim.render_thermal(12)
    depth = sim.render_depth(sim.nearest_depth_index(thermal.t_s))
    person = depth.people[0]
    x1, y1, x2, y2 = (int(v) for v in person.box_xyxy)
    rows = slice(y1, y1 + int(0.75 * (y2 - y1)))
    body = np.abs(depth.depth_mm[rows, x1:x2] - person.position_m[2] * 1000.0) < 500

    def hot_fraction(cal):
        reg = Registrar(sim.depth_intrinsics, cal).register(depth.depth_mm, thermal.thermal_ck)
        reg = reg / 100.0
        inside = reg[rows, x1:x2]
        mask = body & (inside > 0)
        return (inside[mask] > sim.scene.ambient_k + 1.5).mean()

    assert hot_fraction(odd) > 0.95
    assert hot_fraction(calibration) < 0.9  # the nominal mount puts the person elsewhere


# --- RGB -------------------------------------------------------------------------------------


def test_rgb_shows_the_identity_clothing_under_each_sequence_light(calibration):
    candidates = [make_identity(p, 0) for p in range(60)]
    ident = next(c for c in candidates if c.clothing.top_pattern == 0
                 and np.ptp(c.clothing.top_rgb) > 0.4 and not c.clothing.short_sleeves)
    want = np.array(ident.clothing.top_rgb) / sum(ident.clothing.top_rgb)
    brightness = []
    for seed in (1, 2, 3):
        sim = empty_room(calibration, (ident,), seed=seed,
                         sensors=SensorConfig(depth_profile="aligned_848x480", rgb_scale=1.0))
        place(sim, 0, 3.0)
        sample = sim.render_depth(40, rgb=True)
        x1, y1, x2, y2 = (int(v) for v in sample.people[0].box_xyxy)
        h, w = y2 - y1, x2 - x1
        torso = sample.rgb[y1 + int(0.25 * h) : y1 + int(0.4 * h), x1 + w // 3 : x2 - w // 3]
        colour = np.median(torso.reshape(-1, 3), axis=0).astype(np.float64)
        np.testing.assert_allclose(colour / colour.sum(), want, atol=0.05)
        brightness.append(colour.sum())
    assert max(brightness) / min(brightness) > 1.2  # the light changes between sequences


def test_rgb_view_is_aligned_with_depth(calibration):
    sim = empty_room(calibration, (3,), seed=11,
                     sensors=SensorConfig(depth_profile="aligned_848x480", rgb_scale=1.0))
    place(sim, 0, 3.0)
    sample = sim.render_depth(5, rgb=True)
    x1, y1, x2, y2 = (int(v) for v in sample.people[0].box_xyxy)
    grey = sample.rgb.astype(np.float64).mean(axis=2)
    # The person's outline is an edge in both images, at the same columns.
    row = (y1 + y2) // 2
    depth_edges = np.flatnonzero(np.abs(np.diff(sample.depth_mm[row].astype(np.float64))) > 500)
    rgb_edges = np.flatnonzero(np.abs(np.diff(grey[row])) > 10)
    for edge in depth_edges[(depth_edges > x1 - 3) & (depth_edges < x2 + 3)][:2]:
        assert np.min(np.abs(rgb_edges - edge)) <= 2


def test_scene_config_of_the_simulator_is_used(calibration):
    sim = RigSimulator(calibration, [], 1.0, 0, scene_config=EMPTY_ROOM)
    assert sim.scene.width_m == 8.0 and sim.scene.depth_m == 12.0
    assert len(sim.scene.static) == 0
    other = RigSimulator(calibration, [], 1.0, 0, scene_config=SceneConfig())
    assert len(other.scene.static) > 0



def test_thermal_rays_reproject_onto_their_pixel_centres(calibration):
    # The simulated Lepton's rays invert its plumb_bob distortion (no OpenCV call, so the
    # same on OpenCV 4 and 5), at the renderer's 2x supersampling.
    intr = calibration.thermal
    grid = _distorted_grid(intr, 2)
    xd, yd = distort_normalized(grid.x, grid.y, intr.distortion)
    u = intr.k[0, 0] * xd + intr.k[0, 2]
    v = intr.k[1, 1] * yd + intr.k[1, 2]
    centres_u = (np.arange(2 * intr.width) + 0.5) / 2 - 0.5
    centres_v = (np.arange(2 * intr.height) + 0.5) / 2 - 0.5
    np.testing.assert_allclose(u, np.broadcast_to(centres_u, u.shape), atol=1e-6)
    np.testing.assert_allclose(v, np.broadcast_to(centres_v[:, None], v.shape), atol=1e-6)


# --- a turning rig ---------------------------------------------------------------------------


def test_a_turning_rig_sees_a_standing_person_move_and_odometry_puts_them_back(calibration):
    """The rig turns in place (a robot looking around): a person standing still moves across
    the image, and through the rig's odometry (odom -> camera_link, /tf) and its static
    transforms they stay where they are, on a gravity-aligned floor (odom z up)."""
    from iphd.calibration import rig_static_transforms
    from iphd.tf_buffer import TransformBuffer

    ident = make_identity(8, 0)
    sensors = dataclasses.replace(QUIET, pan_deg=30.0, pan_period_s=4.0)
    sim = empty_room(calibration, (ident,), seed=3, sensors=sensors)
    place(sim, 0, 4.0)
    assert sim.moving and sim.yaw_offset_rad(1.0) == pytest.approx(np.radians(30.0))
    tf = TransformBuffer()
    for static in rig_static_transforms(calibration):
        tf.add(static.parent, static.child, static.translation_m, static.rotation_xyzw)
    seen, placed = [], []
    for index in (0, 15, 30, 45, 60):  # 0, 0.5, 1, 1.5 and 2 s: a swing out and back
        sample = sim.render_depth(index)
        odom = sim.odom_transform(sample.t_s)
        assert (odom.parent, odom.child) == ("odom", calibration.frames.base)
        tf.add(odom.parent, odom.child, odom.translation_m, odom.rotation_xyzw, sample.stamp_ns)
        (person,) = sample.people
        seen.append(person.position_m)
        placed.append(tf("odom", calibration.frames.depth, sample.stamp_ns)
                      .apply(person.position_m))
    seen, placed = np.array(seen), np.array(placed)
    assert np.ptp(seen[:, 0]) > 1.5  # 30 degrees at 4 m: across the image
    np.testing.assert_allclose(placed, placed[[0]].repeat(5, 0), atol=2e-3)  # they sway
    # 4 m ahead at the start, on odom's floor plane (z up: the pelvis below the camera).
    assert np.hypot(*placed[0, :2]) == pytest.approx(4.0, abs=0.1)
    assert abs(placed[0, 1]) < 0.1 and -1.0 < placed[0, 2] < 0.5
    # A static rig has no odometry to publish and does not move.
    still = empty_room(calibration, (ident,), seed=3)
    assert not still.moving and still.yaw_offset_rad(1.0) == 0.0
    assert still.depth_view(2.0)[0] is still.depth_view(0.0)[0]
