import numpy as np
import pytest

from iphd.sim.raycast import (
    N_ROOM_FACES,
    PrimitiveBuilder,
    camera_aabbs,
    cast_primitives,
    cast_room,
    normal_at,
    person_stats,
    pinhole_grid,
    to_camera,
)

W = H = 41
GRID = pinhole_grid(W, H, 40.0, 40.0, 20.0, 20.0)


def _cast(prims, boxes=None):
    z = np.full((H, W), np.inf)
    ids = np.full((H, W), -1, np.int32)
    owners = np.zeros((H, W), np.uint16)
    params = to_camera(prims, np.eye(3), np.zeros(3))
    if boxes is None:
        boxes = GRID.pixel_boxes(camera_aabbs(prims.kind, params))
    cast_primitives(GRID.x, GRID.y, prims.kind, params, boxes, prims.owner, 0, z, ids, owners)
    return z, ids, owners


def test_cast_room_finds_the_wall_each_ray_leaves_by():
    z = np.empty((H, W))
    ids = np.empty((H, W), np.int32)
    # Camera 0.5 m right of, 0.2 m below and 1 m behind the centre of a 4 x 3 x 6 m room.
    cast_room(GRID.x, GRID.y, np.eye(3), np.array([0.5, 0.2, -1.0]), np.array([2.0, 1.5, 3.0]),
              z, ids)
    assert z[20, 20] == pytest.approx(4.0)  # straight ahead: the far wall at z = +3
    assert ids[20, 20] == 4
    # Column 40 is the ray (0.5, 0, 1): it meets the wall x = +2 at t = 1.5 / 0.5 first.
    assert z[20, 40] == pytest.approx(3.0)
    assert ids[20, 40] == 0
    # Row 0 looks up by y/z = -0.5: the ceiling (y = -1.5 in these axes) at t = 1.7 / 0.5.
    assert z[0, 20] == pytest.approx(3.4)
    assert ids[0, 20] == 3
    assert np.isfinite(z).all() and (z > 0).all()
    assert set(np.unique(ids)) <= set(range(N_ROOM_FACES))


def test_primitives_are_hit_at_their_analytic_depth_and_the_nearest_wins():
    b = PrimitiveBuilder()
    b.ellipsoid(np.array([0.0, 0.0, 5.0]), np.array([1.0, 1.0, 1.0]), material=0)
    b.box(np.array([0.0, 0.25, 3.0]), np.array([0.1, 0.1, 0.5]), material=1)
    b.capsule(np.array([-1.0, -0.5, 6.0]), np.array([1.0, -0.5, 6.0]), 0.5, material=2)
    z, ids, _ = _cast(b.build())
    assert z[20, 20] == pytest.approx(4.0, abs=1e-9)  # sphere front at z = 5 - 1
    assert ids[20, 20] == 0
    # Box front face at z = 2.5 in front of the sphere, 0.25 m below the axis: row 20 + 4.
    assert z[24, 20] == pytest.approx(2.5, abs=1e-9)
    assert ids[24, 20] == 1
    # Capsule axis at y = -0.5, z = 6 with radius 0.5, right of the sphere's outline: its front
    # lies between 5.5 and 6 m.
    v = int(round(20 + 40 * (-0.5 / 6.0)))
    assert ids[v, 29] == 2 and 5.4 < z[v, 29] < 6.0


def test_culling_boxes_never_cut_a_primitive():
    rng = np.random.default_rng(3)
    b = PrimitiveBuilder()
    for _ in range(30):
        c = np.array([rng.uniform(-2, 2), rng.uniform(-2, 2), rng.uniform(0.3, 6)])
        kind = rng.integers(3)
        if kind == 0:
            b.ellipsoid(c, rng.uniform(0.05, 0.8, 3), material=0)
        elif kind == 1:
            b.box(c, rng.uniform(0.05, 0.8, 3), float(rng.uniform(0, 3)), material=0)
        else:
            b.capsule(c, c + rng.normal(0, 0.5, 3), float(rng.uniform(0.05, 0.4)), material=0)
    prims = b.build()
    culled = _cast(prims)
    full = _cast(prims, np.tile(np.array([0, 0, W, H]), (len(prims), 1)))
    np.testing.assert_array_equal(culled[0], full[0])
    np.testing.assert_array_equal(culled[1], full[1])
    assert np.isfinite(full[0]).mean() > 0.3


def test_person_stats_count_hidden_pixels_of_a_person():
    b = PrimitiveBuilder()
    b.ellipsoid(np.array([0.0, 0.0, 5.0]), np.array([1.0, 1.0, 1.0]), owner=0, material=0)
    b.box(np.array([-0.6, 0.0, 2.0]), np.array([0.3, 2.0, 0.1]), material=1)  # a post in front
    prims = b.build()
    z, ids, owners = _cast(prims)
    visible, alone, box = person_stats(ids, owners, prims.owner, 1)
    assert 0 < visible[0] < alone[0]
    assert alone[0] == np.count_nonzero(owners & 1)
    assert visible[0] == np.count_nonzero(ids == 0)
    vs, us = np.nonzero(ids == 0)
    assert tuple(box[0]) == (us.min(), vs.min(), us.max() + 1, vs.max() + 1)


def test_normals_point_out_of_the_surface():
    b = PrimitiveBuilder()
    b.ellipsoid(np.array([0.0, 0.0, 5.0]), np.array([1.0, 2.0, 1.0]), material=0)
    b.box(np.array([0.0, 0.0, 3.0]), np.array([0.5, 0.5, 0.5]), material=0)
    b.capsule(np.array([0.0, -1.0, 4.0]), np.array([0.0, 1.0, 4.0]), 0.5, material=0)
    prims = b.build()
    front = np.array([[0.0, 0.0, 4.0]])
    np.testing.assert_allclose(normal_at(prims.kind[0], prims.params[0], front), [[0, 0, -1]],
                               atol=1e-12)
    np.testing.assert_allclose(
        normal_at(prims.kind[1], prims.params[1], np.array([[0.1, 0.0, 2.5]])), [[0, 0, -1]],
        atol=1e-12,
    )
    np.testing.assert_allclose(
        normal_at(prims.kind[2], prims.params[2], np.array([[0.5, 0.3, 4.0]])), [[1, 0, 0]],
        atol=1e-12,
    )
