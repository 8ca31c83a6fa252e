import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo

from iphd.calibration import load_calibration, quaternion_to_rotation
from iphd.errors import CameraInfoError
from iphd.ros.conversions import (
    array_to_image,
    camera_info_to_intrinsics,
    image_to_array,
    intrinsics_to_camera_info,
    ns_to_stamp,
    rig_transforms,
    stamp_to_ns,
)
from iphd.sensors.frames import CameraIntrinsics


def test_stamps_convert_without_losing_nanoseconds():
    for ns in (0, 1, 999_999_999, 1_700_000_000_123_456_789):
        assert stamp_to_ns(ns_to_stamp(ns)) == ns


def test_image_message_round_trip():
    depth = (np.arange(20, dtype=np.uint16) * 400).reshape(4, 5)
    msg = array_to_image(depth, "16UC1", 42, "depth_optical_frame")
    assert (msg.width, msg.height, msg.step, msg.encoding) == (5, 4, 10, "16UC1")
    np.testing.assert_array_equal(image_to_array(msg), depth)


def test_camera_info_round_trip_and_unfilled_k_is_refused():
    intr = CameraIntrinsics(848, 480, 420.0, 421.0, 423.5, 239.5, (-0.1, 0.01, 0.0, 0.0, 0.0))
    info = intrinsics_to_camera_info(intr, 0, "depth_optical_frame")
    assert camera_info_to_intrinsics(info) == intr
    with pytest.raises(CameraInfoError, match="never filled in"):
        camera_info_to_intrinsics(CameraInfo(width=848, height=480))


def test_rig_tf_is_the_inverse_of_the_extrinsic():
    cal = load_calibration()
    base_to_depth, depth_to_thermal = rig_transforms(cal, 0)
    assert (base_to_depth.header.frame_id, base_to_depth.child_frame_id) == (
        "camera_link",
        "depth_optical_frame",
    )
    r = depth_to_thermal.transform.rotation
    t = depth_to_thermal.transform.translation
    pose_rot = quaternion_to_rotation(np.array([r.x, r.y, r.z, r.w]))
    pose_t = np.array([t.x, t.y, t.z])
    # The thermal camera's origin, expressed in the depth frame, maps to the thermal origin.
    origin_in_thermal = cal.rotation @ pose_t + cal.translation_m
    np.testing.assert_allclose(origin_in_thermal, 0.0, atol=1e-12)
    np.testing.assert_allclose(pose_rot, cal.rotation.T, atol=1e-12)
    # REP 103: optical z (forward) is camera_link x.
    q = base_to_depth.transform.rotation
    rot = quaternion_to_rotation(np.array([q.x, q.y, q.z, q.w]))
    np.testing.assert_allclose(rot @ [0, 0, 1], [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(rot @ [1, 0, 0], [0, -1, 0], atol=1e-12)
