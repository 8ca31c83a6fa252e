"""Conversions between ROS messages and iphd library types (images, camera infos, stamps, TF)."""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import TransformStamped
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from iphd.calibration import RigCalibration, rotation_to_quaternion
from iphd.errors import CameraInfoError
from iphd.image_codec import RawImage, decode_image, encode_image
from iphd.sensors.frames import CameraIntrinsics


def stamp_to_ns(stamp: Time) -> int:
    """Return a ROS time as integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(stamp_ns: int) -> Time:
    """Return integer nanoseconds as a ROS time (negative values clamp to 0)."""
    stamp_ns = max(int(stamp_ns), 0)
    return Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)


def header(stamp_ns: int, frame_id: str) -> Header:
    """Return a header with ``stamp_ns`` and ``frame_id``."""
    return Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id)


def image_to_array(msg: Image, accepted: tuple[str, ...] | None = None) -> np.ndarray:
    """Return the pixels of an Image message (see ``iphd.image_codec.decode_image``)."""
    return decode_image(
        RawImage(
            height=msg.height,
            width=msg.width,
            encoding=msg.encoding,
            is_bigendian=bool(msg.is_bigendian),
            step=msg.step,
            data=bytes(msg.data),
        ),
        accepted,
    )


def array_to_image(array: np.ndarray, encoding: str, stamp_ns: int, frame_id: str) -> Image:
    """Return an Image message holding ``array`` with ``encoding``."""
    raw = encode_image(array, encoding)
    msg = Image(
        header=header(stamp_ns, frame_id),
        height=raw.height,
        width=raw.width,
        encoding=raw.encoding,
        is_bigendian=0,
        step=raw.step,
    )
    msg.data = raw.data
    return msg


def camera_info_to_intrinsics(msg: CameraInfo) -> CameraIntrinsics:
    """Return the intrinsics in a CameraInfo.

    Raises:
        CameraInfoError: unsupported distortion model or an unfilled K matrix.
    """
    model = msg.distortion_model or "plumb_bob"
    if model not in ("plumb_bob", "rational_polynomial", "brown_conrady", "none"):
        raise CameraInfoError(
            f"distortion model '{model}' is not supported; publish plumb_bob coefficients"
        )
    d = [float(v) for v in msg.d][:5]
    if model == "rational_polynomial" and any(float(v) != 0.0 for v in list(msg.d)[5:]):
        raise CameraInfoError("rational_polynomial with k4..k6 != 0 is not supported")
    d += [0.0] * (5 - len(d))
    k = [float(v) for v in msg.k]
    return CameraIntrinsics(
        width=int(msg.width),
        height=int(msg.height),
        fx=k[0],
        fy=k[4],
        cx=k[2],
        cy=k[5],
        distortion=(d[0], d[1], d[2], d[3], d[4]),
    )


def intrinsics_to_camera_info(intr: CameraIntrinsics, stamp_ns: int, frame_id: str) -> CameraInfo:
    """Return a CameraInfo (plumb_bob, no rectification) for ``intr``."""
    msg = CameraInfo(header=header(stamp_ns, frame_id), width=intr.width, height=intr.height)
    msg.distortion_model = "plumb_bob"
    msg.d = [float(v) for v in intr.distortion]
    msg.k = [intr.fx, 0.0, intr.cx, 0.0, intr.fy, intr.cy, 0.0, 0.0, 1.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [intr.fx, 0.0, intr.cx, 0.0, 0.0, intr.fy, intr.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


def rig_transforms(calibration: RigCalibration, stamp_ns: int) -> list[TransformStamped]:
    """Return the static transforms of the rig.

    ``camera_link`` (x forward, y left, z up) -> depth optical frame (x right, y down, z
    forward) is the fixed REP 103 rotation; depth optical -> thermal optical is the inverse of
    the calibration's extrinsic, because a TF transform gives the child frame's pose in the
    parent, while the extrinsic maps points from depth to thermal coordinates.
    """
    frames = calibration.frames
    base_to_depth = TransformStamped(header=header(stamp_ns, frames.base))
    base_to_depth.child_frame_id = frames.depth
    q = base_to_depth.transform.rotation
    q.x, q.y, q.z, q.w = -0.5, 0.5, -0.5, 0.5
    depth_to_thermal = TransformStamped(header=header(stamp_ns, frames.depth))
    depth_to_thermal.child_frame_id = frames.thermal
    rot_inv = calibration.rotation.T
    trans = -rot_inv @ calibration.translation_m
    t = depth_to_thermal.transform.translation
    t.x, t.y, t.z = (float(v) for v in trans)
    qx, qy, qz, qw = (float(v) for v in rotation_to_quaternion(rot_inv))
    r = depth_to_thermal.transform.rotation
    r.x, r.y, r.z, r.w = qx, qy, qz, qw
    return [base_to_depth, depth_to_thermal]
