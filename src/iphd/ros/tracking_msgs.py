"""Conversions between the tracker's types and its messages: detections in, tracks/markers out."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import Point, Pose, Quaternion, Vector3
from iphd_msgs.msg import PersonDetectionArray, PersonTrack, PersonTrackArray, TrackQueryResult
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from iphd.errors import FrameError
from iphd.ros.conversions import header, header_stamp_ns
from iphd.tracking.tracker import (
    CONFIRMED,
    LOST,
    TENTATIVE,
    TrackInput,
    TrackState,
    detection_problem,
)
from iphd.viz import track_rgb

STATES = {
    TENTATIVE: PersonTrack.STATE_TENTATIVE,
    CONFIRMED: PersonTrack.STATE_CONFIRMED,
    LOST: PersonTrack.STATE_LOST,
}
#: Person cylinder drawn per track: diameter and height, metres.
PERSON_DIAMETER_M = 0.5
PERSON_HEIGHT_M = 1.7
#: Velocity arrows are drawn above this speed, m/s; an arrow is one second of motion long.
MIN_ARROW_SPEED_MPS = 0.1
#: Markers disappear this long after they were drawn unless the next array replaces them, so
#: RViz does not keep showing people once the tracker stops publishing (its node or its input
#: stopped, or the bag ended). Longer than the Lepton's ~1 s flat-field pause, so they do not
#: blink out then.
MARKER_LIFETIME_S = 2.0
_AXES = {"x": 0, "y": 1, "z": 2}


@dataclass(frozen=True)
class DetectionFrame:
    """One PersonDetectionArray, checked, as tracker input.

    Attributes:
        stamp_ns: the detections' stamp (the depth frame they were computed on).
        frame_id: the frame of their positions (the depth optical frame).
        width: depth image width the boxes refer to, pixels.
        height: depth image height, pixels.
        inputs: the well-formed detections, without embeddings.
        rejected: one line per detection left out, saying what was wrong with it.
    """

    stamp_ns: int
    frame_id: str
    width: int
    height: int
    inputs: list[TrackInput]
    rejected: list[str] = field(default_factory=list)


def detections_from_msg(msg: PersonDetectionArray) -> DetectionFrame:
    """Check a PersonDetectionArray and turn its detections into ``TrackInput``s.

    A detection whose box is not finite, empty (x2 <= x1 or y2 <= y1) or entirely outside the
    image, or whose score is not in [0, 1], is left out and described in ``rejected``. A NaN
    position is kept (the tracker then relies on the box).

    Raises:
        FrameError: the message declares no image size, so its boxes cannot be placed, or its
            stamp is 0 (never set).
    """
    stamp_ns = header_stamp_ns(msg.header)
    width, height = int(msg.image_width), int(msg.image_height)
    if width <= 0 or height <= 0:
        raise FrameError(
            f"detections declare an image size of {width}x{height} pixels; image_width and "
            "image_height must be the depth image's size"
        )
    inputs: list[TrackInput] = []
    rejected: list[str] = []
    for index, det in enumerate(msg.detections):
        box = (float(det.x1), float(det.y1), float(det.x2), float(det.y2))
        problem = detection_problem(box, float(det.score), width, height)
        if problem:
            rejected.append(f"detection {index}: {problem}")
            continue
        position = (float(det.position.x), float(det.position.y), float(det.position.z))
        inputs.append(TrackInput(box, float(det.score), position))
    return DetectionFrame(stamp_ns, msg.header.frame_id, width, height, inputs, rejected)


def tracks_to_msg(
    tracks: Sequence[TrackState], stamp_ns: int, frame_id: str, with_embeddings: bool = False
) -> PersonTrackArray:
    """Tracks as a PersonTrackArray (box all zero while lost; embeddings only when asked)."""
    msg = PersonTrackArray(header=header(stamp_ns, frame_id))
    for track in tracks:
        out = PersonTrack(id=int(track.track_id), state=STATES[track.state])
        out.score = float(track.score)
        x, y, z = (float(v) for v in track.position_m)
        out.position = Point(x=x, y=y, z=z)
        vx, vy, vz = (float(v) for v in track.velocity_mps)
        out.velocity = Vector3(x=vx, y=vy, z=vz)
        if track.box_xyxy is not None:
            out.x1, out.y1, out.x2, out.y2 = (float(v) for v in track.box_xyxy)
        out.age_s = float(track.age_s)
        out.time_since_update_s = float(track.time_since_update_s)
        if with_embeddings and track.embedding is not None:
            out.embedding = np.asarray(track.embedding, dtype=np.float32)
        msg.tracks.append(out)
    return msg


def up_vector(up_axis: str) -> np.ndarray:
    """Unit vector of a ``TrackerConfig.up_axis`` (``-y``, ``z``, ...) in the tracking frame."""
    vector = np.zeros(3)
    vector[_AXES[up_axis[-1]]] = -1.0 if up_axis.startswith("-") else 1.0
    return vector


def quaternion_z_to(direction: np.ndarray) -> Quaternion:
    """Rotation taking the +z axis onto the unit vector ``direction`` (a marker's own axis)."""
    z = np.array([0.0, 0.0, 1.0])
    d = np.asarray(direction, dtype=np.float64)
    cos = float(z @ d)
    if cos < -1.0 + 1e-9:  # opposite: half a turn about x
        return Quaternion(x=1.0, y=0.0, z=0.0, w=0.0)
    axis = np.cross(z, d)
    q = np.array([axis[0], axis[1], axis[2], 1.0 + cos])
    q /= np.linalg.norm(q)
    return Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3]))


def track_color(track_id: int, lost: bool = False) -> ColorRGBA:
    """A colour per id (golden-ratio hues, so neighbouring ids differ); lost = translucent."""
    r, g, b = track_rgb(track_id)  # as in the tracker's debug/tracks_image
    return ColorRGBA(r=r, g=g, b=b, a=0.3 if lost else 0.8)


def tracks_to_markers(
    tracks: Sequence[TrackState], stamp_ns: int, frame_id: str, up_axis: str = "-y"
) -> MarkerArray:
    """RViz markers of the tracks: DELETEALL, then per track a cylinder, its id, its velocity.

    The cylinder (``PERSON_DIAMETER_M`` x ``PERSON_HEIGHT_M``, namespace ``tracks``) stands
    along the up axis, centred on the track position (the person's centre: the detector's
    point is the middle of the box at the person's depth). The ``id N`` text (``ids``) floats
    above the head; an arrow (``velocity``) shows one second of motion when faster than
    ``MIN_ARROW_SPEED_MPS``. Marker ids are track ids; each marker lives
    ``MARKER_LIFETIME_S``.
    """
    head = header(stamp_ns, frame_id)
    up = up_vector(up_axis)
    orientation = quaternion_z_to(up)
    lifetime = Duration(sec=int(MARKER_LIFETIME_S), nanosec=int(MARKER_LIFETIME_S % 1 * 1e9))
    markers = [Marker(header=head, action=Marker.DELETEALL)]
    for track in tracks:
        lost = track.state == LOST
        color = track_color(track.track_id, lost)
        position = np.asarray(track.position_m, dtype=np.float64)
        if not np.all(np.isfinite(position)):
            continue
        centre = Point(x=float(position[0]), y=float(position[1]), z=float(position[2]))
        body = Marker(
            header=head, ns="tracks", id=int(track.track_id), type=Marker.CYLINDER,
            action=Marker.ADD, color=color, lifetime=lifetime,
        )
        body.pose.position = centre
        body.pose.orientation = orientation
        body.scale = Vector3(x=PERSON_DIAMETER_M, y=PERSON_DIAMETER_M, z=PERSON_HEIGHT_M)
        markers.append(body)
        label = Marker(
            header=head, ns="ids", id=int(track.track_id), type=Marker.TEXT_VIEW_FACING,
            action=Marker.ADD, text=f"id {track.track_id}", lifetime=lifetime,
            color=ColorRGBA(r=1.0, g=1.0, b=1.0, a=0.5 if lost else 1.0),
        )
        top = position + up * (PERSON_HEIGHT_M / 2 + 0.2)
        label.pose.position = Point(x=float(top[0]), y=float(top[1]), z=float(top[2]))
        label.pose.orientation.w = 1.0
        label.scale.z = 0.25  # text height, m
        markers.append(label)
        velocity = np.asarray(track.velocity_mps, dtype=np.float64)
        if np.all(np.isfinite(velocity)) and float(np.linalg.norm(velocity)) > MIN_ARROW_SPEED_MPS:
            end = position + velocity
            arrow = Marker(
                header=head, ns="velocity", id=int(track.track_id), type=Marker.ARROW,
                action=Marker.ADD, color=color, lifetime=lifetime,
            )
            arrow.points = [centre, Point(x=float(end[0]), y=float(end[1]), z=float(end[2]))]
            arrow.pose.orientation.w = 1.0
            # For an arrow given by points: shaft diameter, head diameter, head length.
            arrow.scale = Vector3(x=0.06, y=0.12, z=0.12)
            markers.append(arrow)
    return MarkerArray(markers=markers)


def query_result_msg(
    stamp_ns: int, frame_id: str, matches: Sequence[tuple[int, float]]
) -> TrackQueryResult:
    """A TrackQueryResult from ``Tracker.query``'s (track id, cosine distance) pairs."""
    msg = TrackQueryResult(header=header(stamp_ns, frame_id))
    msg.track_ids = [int(track_id) for track_id, _ in matches]
    msg.distances = [float(distance) for _, distance in matches]
    return msg


#: class_id of the tracks in vision_msgs messages.
VISION_CLASS_ID = "person"


def load_vision_msgs() -> ModuleType | None:
    """``vision_msgs.msg`` where it is installed, else None.

    ROS from apt has it (ros-<distro>-vision-msgs, a rosdep key of package.xml); the PyPI wheels
    of the development machines do not.
    """
    try:
        return importlib.import_module("vision_msgs.msg")
    except ImportError:
        return None


#: Variance of the orientation in a track's pose, rad²: not estimated (a person's box has no
#: heading here), so large, as ROS consumers read an unknown part of a covariance.
UNKNOWN_ORIENTATION_VARIANCE = 1e6


def pose_covariance(position_cov_m2: np.ndarray | None) -> list[float]:
    """A ``PoseWithCovariance`` covariance (6 x 6, row-major: x y z, then rotations).

    The position block is ``position_cov_m2`` (the tracker's, in the tracking frame); without
    one the position variances are unknown too (``UNKNOWN_ORIENTATION_VARIANCE``), never 0,
    which a consumer would read as certainty.
    """
    covariance = np.zeros((6, 6))
    if position_cov_m2 is None:
        covariance[:3, :3] = np.eye(3) * UNKNOWN_ORIENTATION_VARIANCE
    else:
        covariance[:3, :3] = position_cov_m2
    covariance[3:, 3:] = np.eye(3) * UNKNOWN_ORIENTATION_VARIANCE
    return [float(v) for v in covariance.ravel()]


def tracks_to_vision(
    vision: ModuleType, tracks: Sequence[TrackState], stamp_ns: int, frame_id: str,
    up_axis: str = "-y",
) -> Any:
    """The tracks as a ``vision_msgs/Detection3DArray`` (``vision``: ``load_vision_msgs()``).

    One Detection3D per track that took a detection (lost tracks, whose positions are only
    predicted, are left out): ``id`` the track id as a string, one hypothesis ``person`` with
    the track's score and pose, and a box of ``PERSON_DIAMETER_M`` x ``PERSON_DIAMETER_M`` x
    ``PERSON_HEIGHT_M`` centred on the track position, its z axis along the up axis (the
    markers' cylinder); the hypothesis's pose covariance holds the track's position
    covariance (``pose_covariance``). Velocity and life-cycle state are in ``tracks`` only;
    vision_msgs has no field for them.
    """
    head = header(stamp_ns, frame_id)
    orientation = quaternion_z_to(up_vector(up_axis))
    out = vision.Detection3DArray(header=head)
    for track in tracks:
        position = np.asarray(track.position_m, dtype=np.float64)
        if track.state == LOST or not np.all(np.isfinite(position)):
            continue
        centre = Point(x=float(position[0]), y=float(position[1]), z=float(position[2]))
        detection = vision.Detection3D(header=head, id=str(int(track.track_id)))
        detection.bbox.center = Pose(position=centre, orientation=orientation)
        detection.bbox.size = Vector3(x=PERSON_DIAMETER_M, y=PERSON_DIAMETER_M, z=PERSON_HEIGHT_M)
        result = vision.ObjectHypothesisWithPose()
        result.hypothesis.class_id = VISION_CLASS_ID
        result.hypothesis.score = float(track.score)
        result.pose.pose = Pose(position=centre, orientation=orientation)
        result.pose.covariance = pose_covariance(track.position_cov_m2)
        detection.results = [result]
        out.detections.append(detection)
    return out
