import numpy as np
import pytest

from iphd.sim.body import (
    SKIN_K,
    Materials,
    add_body,
    arms_raised_pose,
    bending_pose,
    make_identity,
    sitting_pose,
    standing_pose,
    walking_pose,
)
from iphd.sim.raycast import PrimitiveBuilder, camera_aabbs

MATS = Materials(skin=0, hair=1, top=2, sleeves=3, bottom=4, shoes=5)


def _body(pose, pid=3, heading=0.0):
    """World-frame primitives, their bounds and the pelvis of one body at (1, 2) facing +z."""
    ident = make_identity(pid, 0)
    b = PrimitiveBuilder()
    pelvis = add_body(b, ident.shape, pose, 1.0, 2.0, heading, MATS, owner=0)
    prims = b.build()
    return ident, prims, camera_aabbs(prims.kind, prims.params), pelvis


def test_identities_are_repeatable_and_differ_in_shape_clothing_and_skin():
    assert make_identity(5, 1) == make_identity(5, 1)
    assert make_identity(5, 1) != make_identity(5, 2)
    people = [make_identity(p, 0) for p in range(200)]
    heights = np.array([p.shape.height_m for p in people])
    assert 1.48 <= heights.min() and heights.max() <= 1.98
    assert 0.07 < heights.std() < 0.13
    assert np.ptp([p.shape.girth for p in people]) > 0.3
    assert np.ptp([p.shape.leg_ratio for p in people]) > 0.03
    assert np.ptp([p.shape.arm_ratio for p in people]) > 0.03
    skin = np.array([p.skin_k for p in people])
    assert SKIN_K[0] <= skin.min() and skin.max() <= SKIN_K[1]
    assert len({p.clothing.top_rgb for p in people}) == len(people)
    assert {p.clothing.top_pattern for p in people} == {0, 1, 2}
    assert 0.15 < np.mean([p.clothing.short_sleeves for p in people]) < 0.55
    # Clothing insulates: garments sit between skin (0) and ambient (1).
    for p in people:
        assert 0.0 < p.clothing.top_insulation < 1.0
        assert 0.0 < p.clothing.bottom_insulation < 1.0


def test_standing_body_stands_on_the_floor_and_is_as_tall_as_its_identity():
    ident, prims, aabb, pelvis = _body(standing_pose())
    assert len(prims) >= 15  # trunk, head, two arms and legs of several parts each
    assert aabb[:, 1].min() == pytest.approx(0.0, abs=0.03)
    top = aabb[:, 4].max()
    assert 0.95 * ident.shape.height_m < top < 1.08 * ident.shape.height_m
    assert 0.4 * ident.shape.height_m < pelvis[1] < 0.6 * ident.shape.height_m
    assert set(prims.owner) == {0}
    assert set(prims.material) == set(range(6))


def test_arms_raised_lifts_the_hands_above_the_head():
    _, still, _, _ = _body(standing_pose())
    _, raised, _, _ = _body(arms_raised_pose())
    skin = raised.material == MATS.skin
    head_y = still.params[still.material == MATS.skin][:, 1].max()
    hands_still = np.sort(still.params[still.material == MATS.skin][:, 1])[:2]
    hands_raised = np.sort(raised.params[skin][:, 1])[-2:]
    assert (hands_still < 1.0).all()
    assert (hands_raised > head_y).all()


def test_sitting_puts_the_pelvis_on_the_seat_and_lowers_the_head():
    _, _, stand_box, _ = _body(standing_pose())
    _, _, sit_box, pelvis = _body(sitting_pose(0.45))
    assert pelvis[1] == pytest.approx(0.45 + 0.08)
    assert stand_box[:, 4].max() - sit_box[:, 4].max() > 0.3
    assert sit_box[:, 1].min() > -0.05  # feet do not sink into the floor


def test_bending_tilts_the_trunk_forward():
    _, _, stand_box, _ = _body(standing_pose())
    _, _, bend_box, _ = _body(bending_pose())
    assert stand_box[:, 4].max() - bend_box[:, 4].max() > 0.3
    # Facing +z, the head and arms reach forward of the feet.
    assert bend_box[:, 5].max() - stand_box[:, 5].max() > 0.4


def test_walking_cycle_swings_the_legs_forward_and_back():
    def feet_z(phase):
        _, prims, _, _ = _body(walking_pose(phase))
        return prims.params[prims.material == MATS.shoes][:, 2]

    left_a, right_a = feet_z(np.pi / 2)
    left_b, right_b = feet_z(3 * np.pi / 2)
    assert abs(left_a - right_a) > 0.3
    assert np.sign(left_a - right_a) == -np.sign(left_b - right_b)


def test_heading_turns_the_body():
    _, front, _, _ = _body(bending_pose(), heading=0.0)
    _, side, _, _ = _body(bending_pose(), heading=np.pi / 2)
    # Bending forward reaches along +z facing +z and along +x facing +x.
    assert front.params[:, 2].max() - 2.0 > 0.3
    assert side.params[:, 0].max() - 1.0 > 0.3
    assert abs(side.params[:, 2].max() - 2.0) < abs(front.params[:, 2].max() - 2.0)
