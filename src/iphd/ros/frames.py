"""Detections into the tracking frame: rigid transforms and their lookup through tf2.

The tracker node tracks in ``tracking_frame`` (``odom`` or ``map`` on a moving robot, so that
the robot's own motion is not taken for the people's) when tf2 can say where the camera was
at each detection's stamp. ``tf2_ros`` comes with ROS from apt; where it is missing (the PyPI
wheels) :func:`tf_lookup` returns None and the node tracks in the detections' frame.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# The transforms themselves are library code (``iphd.tf_buffer``, used offline too).
from iphd.tf_buffer import FrameLookup, RigidTransform, quaternion_matrix

__all__ = [
    "FrameLookup", "RigidTransform", "Tf2Lookup", "quaternion_matrix", "tf_lookup",
    "transform_from_msg",
]


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
