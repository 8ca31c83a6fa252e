"""Conversions between ROS messages and iphd library types (images, camera infos, stamps, TF)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import TransformStamped
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from iphd.calibration import RigCalibration, StaticTransform, rig_static_transforms
from iphd.data.truth import PersonTruth
from iphd.detections import PersonDetection
from iphd.errors import FrameError
from iphd.image_codec import RawImage, decode_image, encode_image
from iphd.sensors.frames import (
    CameraIntrinsics,
    camera_info_fields,
    intrinsics_from_camera_info,
)


def stamp_to_ns(stamp: Time) -> int:
    """Return a ROS time as integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def header_stamp_ns(header: Header) -> int:
    """A sensor or result message's stamp in nanoseconds; a stamp of 0 is refused.

    A stamp of 0 means the publisher never set it (a hand-made message, a driver without its
    clock). Taken as a time it would look like a clock jump back to 1970 and reset every
    buffer and track that the node holds.

    Raises:
        FrameError: the stamp is 0.
    """
    stamp_ns = stamp_to_ns(header.stamp)
    if stamp_ns == 0:
        raise FrameError(
            "its header.stamp is 0: the publisher did not set it (stamp each message with the "
            "capture time of its frame)"
        )
    return stamp_ns


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
    return intrinsics_from_camera_info(msg.width, msg.height, msg.distortion_model, msg.d, msg.k)


def intrinsics_to_camera_info(intr: CameraIntrinsics, stamp_ns: int, frame_id: str) -> CameraInfo:
    """Return a CameraInfo (plumb_bob, no rectification) for ``intr``."""
    fields = camera_info_fields(intr)
    msg = CameraInfo(header=header(stamp_ns, frame_id), width=intr.width, height=intr.height)
    msg.distortion_model = fields.distortion_model
    msg.d = list(fields.d)
    msg.k = list(fields.k)
    msg.r = list(fields.r)
    msg.p = list(fields.p)
    return msg


def rig_transforms(calibration: RigCalibration, stamp_ns: int) -> list[TransformStamped]:
    """Return the static transforms of the rig (see ``iphd.calibration.rig_static_transforms``)."""
    return transforms_to_msgs(rig_static_transforms(calibration), stamp_ns)


def transforms_to_msgs(
    transforms: Sequence[StaticTransform], stamp_ns: int
) -> list[TransformStamped]:
    """``TransformStamped`` messages of static transforms (the child frame's pose in the parent)."""
    messages = []
    for tf in transforms:
        msg = TransformStamped(header=header(stamp_ns, tf.parent))
        msg.child_frame_id = tf.child
        t = msg.transform.translation
        t.x, t.y, t.z = tf.translation_m
        r = msg.transform.rotation
        r.x, r.y, r.z, r.w = tf.rotation_xyzw
        messages.append(msg)
    return messages


def truth_to_msg(people: Sequence[PersonTruth], stamp_ns: int, frame_id: str) -> Any:
    """Ground truth of one depth frame as an ``iphd_msgs/PersonTrackArray``.

    The mapping is the one simulator bags use (``iphd.data.rosbag``): id = identity, state =
    CONFIRMED, score = visibility, box in depth pixels, position and velocity in the depth
    optical frame.
    """
    from geometry_msgs.msg import Point, Vector3
    from iphd_msgs.msg import PersonTrack, PersonTrackArray

    msg = PersonTrackArray()
    msg.header = header(stamp_ns, frame_id)
    for person in people:
        track = PersonTrack()
        track.id = int(person.pid)
        track.state = PersonTrack.STATE_CONFIRMED
        track.score = float(person.visibility)
        track.position = Point(x=person.position_m[0], y=person.position_m[1],
                               z=person.position_m[2])
        track.velocity = Vector3(x=person.velocity_mps[0], y=person.velocity_mps[1],
                                 z=person.velocity_mps[2])
        track.x1, track.y1, track.x2, track.y2 = (float(v) for v in person.box_xyxy)
        msg.tracks.append(track)
    return msg


def detections_to_msg(
    people: Sequence[PersonDetection], stamp_ns: int, frame_id: str, width: int, height: int
) -> Any:
    """Detections of one depth frame as an ``iphd_msgs/PersonDetectionArray``.

    Args:
        people: detections in the order to publish (highest score first).
        stamp_ns: the depth frame's stamp.
        frame_id: the depth optical frame.
        width: depth image width, pixels.
        height: depth image height, pixels.
    """
    from geometry_msgs.msg import Point
    from iphd_msgs.msg import PersonDetection as PersonDetectionMsg
    from iphd_msgs.msg import PersonDetectionArray

    msg = PersonDetectionArray(header=header(stamp_ns, frame_id))
    msg.image_width, msg.image_height = int(width), int(height)
    for person in people:
        det = PersonDetectionMsg(score=float(person.score))
        det.x1, det.y1, det.x2, det.y2 = (float(v) for v in person.box_xyxy)
        x, y, z = person.position_m
        det.position = Point(x=float(x), y=float(y), z=float(z))
        det.temperature_k = float(person.temperature_k)
        msg.detections.append(det)
    return msg
