"""Detections into the tracking frame: rigid transforms and their lookup through tf2.

The tracker node tracks in ``tracking_frame`` (``odom`` or ``map`` on a moving robot, so that
the robot's own motion is not taken for the people's) when tf2 can say where the camera was
at each detection's stamp. ``tf2_ros`` comes with ROS from apt; where only ``tf2_msgs`` is
installed the node listens to ``/tf`` itself (:class:`TopicLookup`); where neither is (the PyPI
wheels) :func:`tf_lookup` returns None and the node tracks in the detections' frame.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

# The transforms themselves are library code (``iphd.tf_buffer``, used offline too).
from iphd.tf_buffer import (
    FrameLookup,
    RigidTransform,
    TransformBuffer,
    add_tf_message,
    quaternion_matrix,
)

__all__ = [
    "FrameLookup", "RigidTransform", "Tf2Lookup", "TopicLookup", "quaternion_matrix",
    "tf_lookup", "transform_from_msg",
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


class TopicLookup:
    """:class:`FrameLookup` without ``tf2_ros``: ``/tf`` and ``/tf_static`` into iphd's buffer.

    Where ``tf2_msgs`` is installed but ``tf2_ros`` is not, the node subscribes the two topics
    itself (with tf2's listener QoS: reliable, 100 deep, ``/tf_static`` transient-local) and
    looks transforms up in a :class:`iphd.tf_buffer.TransformBuffer` keeping tf2's 10 s; a
    lookup waits up to ``timeout_s`` for a transform to arrive, as tf2's does.
    """

    def __init__(self, node: Any, timeout_s: float) -> None:
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from tf2_msgs.msg import TFMessage

        from iphd.ros import qos

        self._buffer = TransformBuffer(cache_s=10.0)
        self._lock = threading.Lock()
        self._timeout_s = float(timeout_s)
        self._node = node
        self.rejected = 0
        dynamic = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        node.create_subscription(TFMessage, "/tf", lambda m: self._on(m, False), dynamic)
        node.create_subscription(
            TFMessage, "/tf_static", lambda m: self._on(m, True), qos.STATIC_TF_LISTENER
        )

    def _on(self, msg: Any, static: bool) -> None:
        with self._lock:
            problems = add_tf_message(self._buffer, msg, static)
        if problems and not self.rejected:
            self._node.get_logger().warning(f"ignoring a transform: {problems[0]}")
        self.rejected += len(problems)

    def __call__(self, target: str, source: str, stamp_ns: int) -> RigidTransform:
        """Points from ``source`` into ``target`` at ``stamp_ns``.

        Raises:
            LookupError: no transform within the timeout (the buffer's reason).
        """
        deadline = time.monotonic() + self._timeout_s
        while True:
            with self._lock:
                try:
                    return self._buffer.lookup(target, source, stamp_ns)
                except LookupError as exc:
                    error = exc
            if time.monotonic() >= deadline:
                raise error
            time.sleep(0.005)


def tf_lookup(node: Any, timeout_s: float) -> FrameLookup | None:
    """A tf2 lookup listening on ``node``; None where neither tf2 package is installed.

    Where only ``tf2_msgs`` is, iphd's own listener (:class:`TopicLookup`).
    """
    try:
        import tf2_ros  # noqa: F401
    except ImportError:
        try:
            import tf2_msgs.msg  # noqa: F401
        except ImportError:
            return None
        return TopicLookup(node, timeout_s)
    return Tf2Lookup(node, timeout_s)
