import numpy as np
import pytest

from iphd.sim.body import SKIN_K, make_identity
from iphd.sim.raycast import camera_aabbs
from iphd.sim.scene import MAX_PEOPLE, PERSON_GAP_M, SceneConfig, generate_scene

DEFAULT = SceneConfig()


def _scene(seed, people=3, duration_s=20.0, config=DEFAULT):
    identities = [make_identity(p, seed) for p in range(people)]
    return generate_scene(np.random.default_rng(seed), config, identities, duration_s)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"room_width_m": (0.0, 5.0)},
        {"room_depth_m": (8.0, 6.0)},
        {"camera_height_m": (-1.0, 1.0)},
        {"people_weights": (0.0, 0.0)},
        {"people_weights": (1.0, -0.1)},
        {"people_weights": (1.0,) * (MAX_PEOPLE + 2)},
    ],
)
def test_scene_config_rejects_impossible_ranges(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        SceneConfig(**kwargs)


def test_scene_refuses_more_people_than_person_slots():
    with pytest.raises(ValueError, match="at most 15"):
        _scene(0, people=MAX_PEOPLE + 1)


def test_rooms_are_drawn_from_the_configured_ranges_and_differ_by_seed():
    config = SceneConfig()
    scenes = [_scene(s) for s in range(10)]
    for sc in scenes:
        assert config.room_width_m[0] <= sc.width_m <= config.room_width_m[1]
        assert config.room_depth_m[0] <= sc.depth_m <= config.room_depth_m[1]
        assert config.room_height_m[0] <= sc.height_m <= config.room_height_m[1]
        assert config.ambient_k[0] <= sc.ambient_k <= config.ambient_k[1]
        assert config.camera_height_m[0] <= sc.camera_pos[1] <= config.camera_height_m[1]
        # The camera is inside the room.
        assert np.all(np.abs(sc.camera_pos - sc.room_centre) < sc.room_half)
    assert len({round(sc.width_m, 6) for sc in scenes}) == len(scenes)
    assert len({len(sc.static) for sc in scenes}) > 3


def test_same_rng_gives_the_same_scene():
    a, b = _scene(4), _scene(4)
    np.testing.assert_array_equal(a.static.params, b.static.params)
    np.testing.assert_array_equal(a.materials, b.materials)
    np.testing.assert_array_equal(a.at(3.3)[0].params, b.at(3.3)[0].params)


def test_scenes_hold_warm_and_cold_distractors_and_person_sized_clutter():
    warm = cold = tall = dogs = 0
    n = 16
    for seed in range(n):
        sc = _scene(seed)
        temps = sc.materials[sc.static.material, 0]
        drop = sc.materials[sc.static.material, 1]
        amb = sc.ambient_k
        # Radiators, screens, lamps, hot drinks: warmer than skin or close to it.
        warm += bool(sc.warm_objects) and bool((temps > 310.0).any())
        # Windows: cold, and glass the D435 sees through.
        cold_glass = (temps < amb - 4.0) & (drop > 0.5)
        cold += bool(cold_glass.any())
        # Coat stands, mannequins, chairs with coats: tall things at room temperature.
        aabb = camera_aabbs(sc.static.kind, sc.static.params)
        tall += bool(((aabb[:, 4] > 1.3) & (np.abs(temps - amb) < 1.5)).any())
        if sc.dog is not None:
            dogs += 1
            assert SKIN_K[0] - 3.5 < sc.materials[sc.dog[0], 0] < SKIN_K[1]
    assert warm >= 0.8 * n
    assert cold >= 0.5 * n
    assert tall >= 0.7 * n
    assert 1 <= dogs <= 0.6 * n


def test_distractor_scale_zero_gives_an_empty_room():
    sc = _scene(1, people=0, config=SceneConfig(distractor_scale=0.0))
    assert len(sc.static) == 0
    assert sc.dog is None
    assert sc.warm_objects == []
    assert len(_scene(1, people=0).static) > 10


def test_people_follow_timelines_with_walking_and_varied_poses():
    kinds = set()
    moved = []
    for seed in range(8):
        sc = _scene(seed, people=4, duration_s=30.0)
        for actor in sc.actors:
            assert actor.segments[0].t0 == 0.0
            assert actor.segments[-1].t1 >= 30.0
            for a, b in zip(actor.segments, actor.segments[1:], strict=False):
                assert a.t1 == pytest.approx(b.t0)
                assert a.end == pytest.approx(b.start)
            kinds |= {s.kind for s in actor.segments}
        start = {p.pid: p.pelvis_m for p in sc.at(0.0)[1]}
        end = {p.pid: p.pelvis_m for p in sc.at(10.0)[1]}
        moved += [float(np.hypot(*(end[k] - start[k])[[0, 2]])) for k in start]
    assert kinds == {"walk", "stand", "arms", "bend", "sit"}
    assert max(moved) > 2.0
    assert min(moved) < 0.05  # some people stay (standers, sitters)


def test_people_stay_inside_the_room():
    for seed in range(6):
        sc = _scene(seed, people=5, duration_s=20.0)
        for t in np.arange(0.0, 20.0, 0.5):
            for person in sc.at(float(t))[1]:
                x, y, z = person.pelvis_m
                assert abs(x) < sc.width_m / 2 and abs(z) < sc.depth_m / 2
                assert 0.3 < y < 1.3


def test_people_do_not_walk_through_each_other():
    """Paths are planned around the people placed before: nobody passes through anybody.

    Without the planning, 5.6 % of the instants of 4-person scenes had two people closer than
    0.3 m (and 15 % closer than 0.5 m). Crossings checked every 0.1 s can cut a corner a little,
    so the floor is 0.4 m; closer than the planned gap is allowed only at a few instants.
    """
    times = np.arange(0.0, 40.0, 0.05)
    instants = too_close = 0
    for seed in range(8):
        sc = _scene(seed, people=5, duration_s=40.0)
        floor = np.array([[a.state_at(float(t))[:2] for t in times] for a in sc.actors])
        gaps = np.linalg.norm(floor[:, None] - floor[None], axis=-1)
        pair = np.triu_indices(len(sc.actors), 1)
        closest = gaps[pair[0], pair[1]].min(axis=0)
        assert closest.min() > 0.4, f"seed {seed}: two people {closest.min():.2f} m apart"
        instants += closest.size
        too_close += int((closest < PERSON_GAP_M).sum())
    assert too_close <= 0.01 * instants


def test_velocity_is_the_derivative_of_the_pelvis_position():
    sc = _scene(2, people=4)
    for t in (1.0, 4.2, 7.7):
        now = sc.at(t)[1]
        later = {p.pid: p.pelvis_m for p in sc.at(t + 0.01)[1]}
        for p in now:
            fd = (later[p.pid] - p.pelvis_m) / 0.01
            np.testing.assert_allclose(p.velocity_mps[[0, 2]], fd[[0, 2]], atol=0.15)
            assert np.hypot(*p.velocity_mps[[0, 2]]) < 2.0
