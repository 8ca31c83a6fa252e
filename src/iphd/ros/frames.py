"""Detections into the tracking frame: rigid transforms and their lookup through tf2.

The tracker node tracks in ``tracking_frame`` (``odom`` or ``map`` on a moving robot, so that
the robot's own motion is not taken for the people's) when tf2 can say where the camera was
at each detection's stamp. ``tf2_ros`` comes with ROS from apt; where it is missing (the PyPI
wheels) :func:`tf_lookup` returns None and the node tracks in the detections' frame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from iphd.calibration import quaternion_to_rotation


@dataclass(frozen=True)
class RigidTransform:
    """``p_target = rotation @ p_source + translation``, metres.

    Attributes:
        rotation: (3, 3) rotation matrix.
        translation: (3,) translation, metres.
    """

    rotation: np.ndarray
    translation: np.ndarray

    def apply(self, point: Sequence[float]) -> tuple[float, float, float]:
        """``point`` in the target frame; a point with a non-finite coordinate stays all NaN."""
        p = np.asarray(point, dtype=np.float64)
        if p.shape != (3,) or not np.all(np.isfinite(p)):
            return (math.nan, math.nan, math.nan)
        q = self.rotation @ p + self.translation
        return (float(q[0]), float(q[1]), float(q[2]))


def quaternion_matrix(x: float, y: float, z: float, w: float) -> np.ndarray:
    """(3, 3) rotation of the quaternion ``(x, y, z, w)``, normalised first.

    Raises:
        ValueError: a non-finite or zero quaternion.
    """
    q = np.array([x, y, z, w], dtype=np.float64)
    norm = float(np.linalg.norm(q))
    if not math.isfinite(norm) or norm < 1e-9:
        raise ValueError(f"rotation quaternion {tuple(q)} is not a rotation (zero or not finite)")
    return quaternion_to_rotation(q / norm)


def transform_from_msg(transform: Any) -> RigidTransform:
    """A ``geometry_msgs/Transform`` (the frame's pose in the target frame) as a transform.

    Raises:
        ValueError: a translation that is not finite or a rotation that is not one.
    """
    t, r = transform.translation, transform.rotation
    translation = np.array([t.x, t.y, t.z], dtype=np.float64)
    if not np.all(np.isfinite(translation)):
        raise ValueError(f"translation {tuple(translation)} is not finite")
    return RigidTransform(quaternion_matrix(r.x, r.y, r.z, r.w), translation)


class FrameLookup(Protocol):
    """``(target, source, stamp ns) -> transform`` of points from ``source`` into ``target``.

    Raises ``LookupError`` (with tf2's reason) when the transform is not known for the stamp.
    """

    def __call__(self, target: str, source: str, stamp_ns: int) -> RigidTransform:
        """Points from ``source`` into ``target`` at ``stamp_ns``."""
        ...


class Tf2Lookup:
    """:class:`FrameLookup` on a tf2 buffer that listens to ``/tf`` and ``/tf_static``."""

    def __init__(self, node: Any, timeout_s: float) -> None:
        from tf2_ros import Buffer, TransformListener

        self._buffer = Buffer()
        # Its subscriptions live on ``node``: the node's executor fills the buffer while the
        # tracker's worker thread waits up to ``timeout_s`` in a lookup.
        self._listener = TransformListener(self._buffer, node)
        self._timeout_s = float(timeout_s)

    def __call__(self, target: str, source: str, stamp_ns: int) -> RigidTransform:
        """Points from ``source`` into ``target`` at ``stamp_ns``.

        Raises:
            LookupError: tf2 does not know the transform at that time (within the timeout), or
                it is not a rigid transform.
        """
        from rclpy.duration import Duration
        from rclpy.time import Time
        from tf2_ros import TransformException

        try:
            msg = self._buffer.lookup_transform(
                target, source, Time(nanoseconds=int(stamp_ns)),
                timeout=Duration(nanoseconds=int(self._timeout_s * 1e9)),
            )
            return transform_from_msg(msg.transform)
        except (TransformException, ValueError) as exc:
            raise LookupError(str(exc)) from exc


def tf_lookup(node: Any, timeout_s: float) -> FrameLookup | None:
    """A tf2 lookup listening on ``node``; None where ``tf2_ros`` is not installed."""
    try:
        import tf2_ros  # noqa: F401
    except ImportError:
        return None
    return Tf2Lookup(node, timeout_s)
