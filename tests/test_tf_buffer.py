"""The ROS-free transform buffer: a tree of static and stamped transforms, looked up as tf2."""

import math

import numpy as np
import pytest

from iphd.calibration import BASE_TO_OPTICAL_XYZW, quaternion_to_rotation
from iphd.tf_buffer import RigidTransform, TransformBuffer

S = 1_000_000_000


def _yaw(deg):
    """(x, y, z, w) of a turn of ``deg`` degrees about z."""
    a = math.radians(deg) / 2
    return (0.0, 0.0, math.sin(a), math.cos(a))


def _robot():
    """odom -> camera_link turning 0 -> 90 deg over 1 s while moving 1 m along x;
    camera_link -> depth optical (REP 103); depth -> thermal 5 cm to the side."""
    tf = TransformBuffer()
    tf.add("odom", "camera_link", (0, 0, 0), _yaw(0), stamp_ns=10 * S)
    tf.add("odom", "camera_link", (1, 0, 0), _yaw(90), stamp_ns=11 * S)
    tf.add("camera_link", "depth_optical_frame", (0, 0, 0), BASE_TO_OPTICAL_XYZW)
    tf.add("depth_optical_frame", "thermal_optical_frame", (0.05, 0, 0), (0, 0, 0, 1))
    return tf


def test_a_point_goes_through_the_tree_as_the_frames_compose():
    tf = _robot()
    # 2 m in front of the camera (optical z) at the start is 2 m along odom x.
    np.testing.assert_allclose(tf("odom", "depth_optical_frame", 10 * S).apply((0, 0, 2)),
                               (2, 0, 0), atol=1e-12)
    # At the end the camera faces odom +y from (1, 0, 0).
    np.testing.assert_allclose(tf("odom", "depth_optical_frame", 11 * S).apply((0, 0, 2)),
                               (1, 2, 0), atol=1e-12)
    # Down the tree and across it: the inverse of the way up.
    down = tf("thermal_optical_frame", "odom", 11 * S)
    np.testing.assert_allclose(down.apply((1, 2, 0)), (-0.05, 0, 2), atol=1e-12)
    across = tf("thermal_optical_frame", "depth_optical_frame", 10.5 * S)
    np.testing.assert_allclose(across.apply((0, 0, 1)), (-0.05, 0, 1), atol=1e-12)
    assert tf("odom", "/odom", 0).apply((1, 2, 3)) == (1.0, 2.0, 3.0)  # tf2 drops the slash
    assert tf.frames == ["camera_link", "depth_optical_frame", "odom", "thermal_optical_frame"]
    assert tf.ancestors("thermal_optical_frame") == ["depth_optical_frame", "camera_link", "odom"]
    assert tf.ancestors("odom") == [] and tf.ancestors("unknown") == []
    assert tf.moves("camera_link") and not tf.moves("depth_optical_frame")
    assert not tf.moves("odom")


def test_moving_transforms_are_interpolated_between_their_samples():
    tf = _robot()
    half = tf("odom", "camera_link", 10.5 * S)
    np.testing.assert_allclose(half.translation, (0.5, 0, 0), atol=1e-12)
    # Halfway through a 90 degree turn: 45 degrees (spherical, not a blend of matrices).
    np.testing.assert_allclose(half.rotation, quaternion_to_rotation(np.array(_yaw(45))),
                               atol=1e-12)
    # The shorter way round, whatever sign the quaternion was written with.
    tf.add("odom", "camera_link", (1, 0, 0), tuple(-v for v in _yaw(100)), stamp_ns=12 * S)
    np.testing.assert_allclose(tf("odom", "camera_link", 11.5 * S).rotation,
                               quaternion_to_rotation(np.array(_yaw(95))), atol=1e-12)
    # Samples may come out of order; one at the same stamp replaces the earlier one.
    tf.add("odom", "camera_link", (3, 0, 0), _yaw(90), stamp_ns=11 * S)
    np.testing.assert_allclose(tf("odom", "camera_link", 11 * S).translation, (3, 0, 0))


def test_what_is_not_known_is_refused_with_the_reason():
    tf = _robot()
    with pytest.raises(LookupError, match=r"before the first of its transforms .* nothing is "
                       r"extrapolated"):
        tf("odom", "camera_link", 9 * S)
    with pytest.raises(LookupError, match="after the last"):
        tf("odom", "depth_optical_frame", 11 * S + 1)
    tf.add("odom", "camera_link", (1, 0, 0), _yaw(90), stamp_ns=15 * S)
    with pytest.raises(LookupError, match=r"no transform for 4.00 s .* its publisher stopped"):
        tf("odom", "camera_link", 13 * S)
    with pytest.raises(LookupError, match=r"'map' and 'odom' are not connected .*root of 'map': "
                       r"map"):
        tf("odom", "map", 10 * S)
    with pytest.raises(ValueError, match="not a rotation"):
        tf.add("odom", "x", (0, 0, 0), (0, 0, 0, 0))
    with pytest.raises(ValueError, match="not finite"):
        tf.add("odom", "x", (math.nan, 0, 0), (0, 0, 0, 1))
    with pytest.raises(ValueError, match="two different frames"):
        tf.add("odom", "/odom", (0, 0, 0), (0, 0, 0, 1))
    with pytest.raises(ValueError, match="max_interval_s"):
        TransformBuffer(0)


def test_a_new_parent_or_a_static_transform_replaces_what_was_there():
    tf = _robot()
    tf.add("map", "camera_link", (5, 0, 0), (0, 0, 0, 1))  # re-parented, static
    np.testing.assert_allclose(tf("map", "depth_optical_frame", 123).apply((0, 0, 1)), (6, 0, 0),
                               atol=1e-12)
    with pytest.raises(LookupError, match="not connected"):
        tf("odom", "camera_link", 10 * S)


def test_rigid_transforms_compose_and_invert():
    a = RigidTransform(quaternion_to_rotation(np.array(_yaw(90))), np.array([1.0, 0, 0]))
    b = RigidTransform(np.eye(3), np.array([0, 0, 2.0]))
    p = (1.0, 2.0, 3.0)
    np.testing.assert_allclose(a.then(b).apply(p), b.apply(a.apply(p)))
    np.testing.assert_allclose(a.inverse().apply(a.apply(p)), p, atol=1e-12)
    assert all(math.isnan(v) for v in a.apply((math.nan, 0, 0)))


def test_a_live_buffer_keeps_only_its_cache_of_a_moving_transform():
    tf = TransformBuffer(cache_s=2.0)
    for k in range(10):
        tf.add("odom", "base_link", (float(k), 0, 0), (0, 0, 0, 1), stamp_ns=k * S)
    np.testing.assert_allclose(tf("odom", "base_link", 8.5 * S).translation, (8.5, 0, 0))
    with pytest.raises(LookupError, match=r"before the first .* \(7000000000\.\."):
        tf("odom", "base_link", 6 * S)
    with pytest.raises(ValueError, match="cache_s"):
        TransformBuffer(cache_s=0)


def test_clearing_the_moving_transforms_keeps_the_static_ones():
    tf = _robot()
    tf.clear_moving()  # a bag looped: odometry starts over from the past
    with pytest.raises(LookupError):
        tf("odom", "depth_optical_frame", 10 * S)
    np.testing.assert_allclose(
        tf("depth_optical_frame", "thermal_optical_frame", 0).translation, (0.05, 0, 0)
    )
    tf("camera_link", "thermal_optical_frame", 0)  # the static chain is whole
    tf.add("odom", "camera_link", (2, 0, 0), _yaw(0), stamp_ns=1 * S)  # older: taken again
    np.testing.assert_allclose(tf("odom", "camera_link", 1 * S).translation, (2, 0, 0))
