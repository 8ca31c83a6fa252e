"""Rigid transforms from TF messages, as the tracker node applies them to detections."""

import importlib.util
import math

import numpy as np
import pytest
from geometry_msgs.msg import Quaternion, Transform, Vector3
from rclpy.node import Node

from iphd.ros.frames import (
    RigidTransform,
    Tf2Lookup,
    quaternion_matrix,
    tf_lookup,
    transform_from_msg,
)


def _msg(translation, quaternion):
    return Transform(translation=Vector3(x=translation[0], y=translation[1], z=translation[2]),
                     rotation=Quaternion(x=quaternion[0], y=quaternion[1], z=quaternion[2],
                                         w=quaternion[3]))


def test_quaternions_become_rotation_matrices():
    np.testing.assert_allclose(quaternion_matrix(0, 0, 0, 1), np.eye(3))
    s = math.sqrt(0.5)
    # 90 degrees about z: x -> y.
    np.testing.assert_allclose(quaternion_matrix(0, 0, s, s) @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    # Not normalised (as some publishers send): the same rotation.
    np.testing.assert_allclose(quaternion_matrix(0, 0, 2, 2), quaternion_matrix(0, 0, s, s),
                               atol=1e-12)
    for bad in ((0, 0, 0, 0), (math.nan, 0, 0, 1)):
        with pytest.raises(ValueError, match="not a rotation"):
            quaternion_matrix(*bad)


def test_the_optical_frame_convention_maps_forward_to_x():
    # camera_link -> depth optical frame of REP 103 (the calibration's static TF): the optical
    # z (forward) is camera_link's x, optical x (right) is -y, optical y (down) is -z.
    to_link = transform_from_msg(_msg((0.0, 0.0, 0.0), (-0.5, 0.5, -0.5, 0.5)))
    assert to_link.apply((0.0, 0.0, 2.0)) == pytest.approx((2.0, 0.0, 0.0))
    assert to_link.apply((1.0, 0.0, 0.0)) == pytest.approx((0.0, -1.0, 0.0))
    assert to_link.apply((0.0, 1.0, 0.0)) == pytest.approx((0.0, 0.0, -1.0))


def test_a_transform_moves_points_and_leaves_no_position_as_none():
    t = transform_from_msg(_msg((2.0, -1.0, 0.5), (0.0, 0.0, 0.0, 1.0)))
    assert t.apply((1.0, 1.0, 1.0)) == (3.0, 0.0, 1.5)
    assert all(math.isnan(v) for v in t.apply((math.nan, math.nan, math.nan)))
    assert all(math.isnan(v) for v in t.apply((1.0, math.inf, 1.0)))
    with pytest.raises(ValueError, match="not finite"):
        transform_from_msg(_msg((math.nan, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0)))
    assert isinstance(t, RigidTransform)


def test_tf_lookup_is_tf2_where_installed_and_none_without_it(ros_context):
    node = Node("frames_test", context=ros_context)
    try:
        lookup = tf_lookup(node, 0.05)
        if importlib.util.find_spec("tf2_ros") is None:
            assert lookup is None
        else:  # a full ROS install: a transform nobody publishes is a LookupError
            assert isinstance(lookup, Tf2Lookup)
            with pytest.raises(LookupError):
                lookup("odom", "depth_optical_frame", 1)
    finally:
        node.destroy_node()


def test_topic_lookup_drops_the_time_before_a_jump_back_and_keeps_the_static_rig(
    ros_context, tf2_msgs
):
    from geometry_msgs.msg import TransformStamped

    from iphd.ros.conversions import header
    from iphd.ros.frames import TopicLookup

    s = 1_000_000_000

    def message(stamp, parent, child, x):
        tf = TransformStamped(header=header(stamp, parent), child_frame_id=child,
                              transform=_msg((x, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0)))
        return tf2_msgs.TFMessage(transforms=[tf])

    node = Node("frames_test", context=ros_context)
    try:
        lookup = TopicLookup(node, 0.0)
        lookup._on(message(0, "base_link", "camera", 0.5), True)
        for k in (30, 31):  # the end of a bag's first pass
            lookup._on(message(k * s, "odom", "base_link", float(k)), False)
        assert lookup("odom", "camera", 30 * s).translation[0] == pytest.approx(30.5)
        # The detections jumped back before the new pass's odometry came: the old goes.
        lookup.reset(1 * s)
        with pytest.raises(LookupError, match="not connected"):
            lookup("odom", "camera", 30 * s)
        assert lookup("base_link", "camera", 0).translation[0] == pytest.approx(0.5)
        # The new pass, then a jump back seen on /tf itself, then the tracker's reset.
        for k in (1, 2, 30, 31, 1, 2):
            lookup._on(message(k * s, "odom", "base_link", float(k)), False)
        assert lookup.jumps == 1
        lookup.reset(1 * s)  # what came after the jump stays
        assert lookup("odom", "camera", 3 * s // 2).translation[0] == pytest.approx(2.0)
        # A publisher whose stamps lag another's by seconds is no jump: each frame goes on.
        for k in (3, 4):
            lookup._on(message(k * s, "odom", "base_link", float(k)), False)
            lookup._on(message((k - 2) * s, "map", "odom", 0.0), False)
        assert lookup.jumps == 1
        assert lookup("odom", "camera", 7 * s // 2).translation[0] == pytest.approx(4.0)
    finally:
        node.destroy_node()
