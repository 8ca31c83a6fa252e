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
from typing import Any, Protocol

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
    "FrameLookup", "ListeningLookup", "RigidTransform", "Tf2Lookup", "TopicLookup",
    "quaternion_matrix", "tf_lookup", "transform_from_msg",
]

#: A child frame's /tf stamp this much older than its newest means time went back (tf2's
#: jump threshold).
JUMP_BACK_NS = 1_000_000_000


class ListeningLookup(FrameLookup, Protocol):
    """A :class:`FrameLookup` fed by the TF topics, which a clock jump back must empty."""

    def reset(self, stamp_ns: int) -> None:
        """Forget the moving transforms of the time before a jump back to ``stamp_ns``.

        A bag looped or a robot restarted; the static transforms stay.
        """
        ...


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

    def reset(self, stamp_ns: int) -> None:
        """Empty tf2's buffer of moving transforms (static ones stay, as tf2 keeps them).

        tf2 refuses transforms older than its cache (10 s) behind the newest it holds, and a
        buffer made without a node clears itself on no clock jump: after a bag loops, the
        new pass's odometry would be refused for as long as the last pass was. What the
        new pass sent before ``stamp_ns``'s detections came is lost with it: a few frames.
        """
        self._buffer.clear()


class TopicLookup:
    """:class:`FrameLookup` without ``tf2_ros``: ``/tf`` and ``/tf_static`` into iphd's buffer.

    Where ``tf2_msgs`` is installed but ``tf2_ros`` is not, the node subscribes the two topics
    itself (with tf2's listener QoS: reliable, 100 deep, ``/tf_static`` transient-local) and
    looks transforms up in a :class:`iphd.tf_buffer.TransformBuffer` keeping tf2's 10 s; a
    lookup waits up to ``timeout_s`` for a transform to arrive, as tf2's does.
    """

    def __init__(self, node: Any, timeout_s: float) -> None:
        from tf2_msgs.msg import TFMessage

        from iphd.ros import qos

        self._buffer = TransformBuffer(cache_s=10.0)
        self._lock = threading.Lock()
        self._timeout_s = float(timeout_s)
        self._node = node
        self.rejected = 0
        #: Times the moving transforms were dropped because /tf stamps jumped back.
        self.jumps = 0
        #: Child frame -> newest stamp of its moving transform seen, ns.
        self._newest: dict[str, int] = {}
        node.create_subscription(TFMessage, "/tf", lambda m: self._on(m, False), qos.TF_LISTENER)
        node.create_subscription(
            TFMessage, "/tf_static", lambda m: self._on(m, True), qos.STATIC_TF_LISTENER
        )

    def _on(self, msg: Any, static: bool) -> None:
        stamped = [
            (str(t.child_frame_id).lstrip("/"),
             int(t.header.stamp.sec) * 1_000_000_000 + int(t.header.stamp.nanosec))
            for t in msg.transforms
        ]
        jumped = None
        with self._lock:
            if not static:
                # A bag that loops (or a robot restarted) sends odometry from the past: it
                # would fall behind the kept samples' cache and be dropped, as tf2 drops it.
                # Compared per child frame, so a publisher whose stamps lag another's is no
                # jump.
                for child, stamp in stamped:
                    newest = self._newest.get(child)
                    if newest is not None and stamp < newest - JUMP_BACK_NS:
                        jumped = (child, newest, stamp)
                if jumped is not None:
                    self._buffer.clear_moving()
                    self._newest.clear()
                    self.jumps += 1
                for child, stamp in stamped:
                    self._newest[child] = max(self._newest.get(child, stamp), stamp)
            problems = add_tf_message(self._buffer, msg, static)
        if jumped is not None:
            child, newest, stamp = jumped
            self._node.get_logger().warning(
                f"/tf stamps of {child} jumped back from {newest} ns to {stamp} ns (bag loop or "
                "restart): moving transforms dropped, as tf2 clears its buffer"
            )
        if problems and not self.rejected:
            self._node.get_logger().warning(f"ignoring a transform: {problems[0]}")
        self.rejected += len(problems)

    def reset(self, stamp_ns: int) -> None:
        """Forget the moving transforms if they are of the time before a jump to ``stamp_ns``.

        The static ones (``/tf_static``, latched) stay. The listener has usually seen the jump
        on ``/tf`` already and kept only the new pass's transforms, which stay.
        """
        with self._lock:
            if max(self._newest.values(), default=stamp_ns) > stamp_ns + JUMP_BACK_NS:
                self._buffer.clear_moving()
                self._newest.clear()

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


def tf_lookup(node: Any, timeout_s: float) -> ListeningLookup | None:
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
