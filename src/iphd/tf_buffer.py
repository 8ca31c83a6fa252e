"""Rigid transforms between frames over time, without ROS: what tf2's buffer does, offline.

The tracker tracks in ``tracking_frame`` (``odom`` or ``map`` on a moving robot). Live, tf2
looks the camera's pose up at each detection's stamp. Offline (``iphd-eval bag
--tracking-frame``), a bag's ``/tf`` and ``/tf_static`` go into a :class:`TransformBuffer`,
which answers the same question the same way: transforms form a tree (each child frame has
one parent), a lookup walks it through the frames' common ancestor, and a moving transform is
interpolated between the two samples around the stamp (linear translation, spherical rotation),
never extrapolated beyond them.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
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

    def then(self, outer: RigidTransform) -> RigidTransform:
        """This transform followed by ``outer`` (``outer.apply(self.apply(p))``)."""
        return RigidTransform(
            outer.rotation @ self.rotation, outer.rotation @ self.translation + outer.translation
        )

    def inverse(self) -> RigidTransform:
        """Points back from the target frame into the source frame."""
        return RigidTransform(self.rotation.T, -self.rotation.T @ self.translation)


IDENTITY = RigidTransform(np.eye(3), np.zeros(3))


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


class FrameLookup(Protocol):
    """``(target, source, stamp ns) -> transform`` of points from ``source`` into ``target``.

    Raises ``LookupError`` (with the reason) when the transform is not known for the stamp.
    """

    def __call__(self, target: str, source: str, stamp_ns: int) -> RigidTransform:
        """Points from ``source`` into ``target`` at ``stamp_ns``."""
        ...


def _slerp(q0: np.ndarray, q1: np.ndarray, f: float) -> np.ndarray:
    """Spherical interpolation of unit quaternions, ``f`` in [0, 1] from ``q0`` to ``q1``."""
    dot = float(q0 @ q1)
    if dot < 0.0:  # the shorter way round
        q1, dot = -q1, -dot
    if dot > 0.9995:
        q = q0 + f * (q1 - q0)
        return q / np.linalg.norm(q)
    angle = math.acos(min(dot, 1.0))
    s = math.sin(angle)
    return (math.sin((1 - f) * angle) * q0 + math.sin(f * angle) * q1) / s


@dataclass
class _Edge:
    """A child frame's pose in its parent: static, or samples over time."""

    parent: str
    static: RigidTransform | None = None
    stamps: list[int] = field(default_factory=list)
    quaternions: list[np.ndarray] = field(default_factory=list)
    translations: list[np.ndarray] = field(default_factory=list)

    def at(self, child: str, stamp_ns: int, max_interval_ns: int) -> RigidTransform:
        if self.static is not None:
            return self.static
        stamps = self.stamps
        i = bisect.bisect_left(stamps, stamp_ns)
        if i < len(stamps) and stamps[i] == stamp_ns:
            q, t, f = self.quaternions[i], self.translations[i], 0.0
            q1, t1 = q, t
        elif i == 0 or i == len(stamps):
            when = "before the first" if i == 0 else "after the last"
            raise LookupError(
                f"{self.parent} -> {child} at {stamp_ns} ns is {when} of its transforms "
                f"({stamps[0]}..{stamps[-1]} ns); nothing is extrapolated"
            )
        else:
            gap = stamps[i] - stamps[i - 1]
            if gap > max_interval_ns:
                raise LookupError(
                    f"{self.parent} -> {child} has no transform for {gap / 1e9:.2f} s around "
                    f"{stamp_ns} ns (more than {max_interval_ns / 1e9:g} s): its publisher "
                    "stopped"
                )
            q, t = self.quaternions[i - 1], self.translations[i - 1]
            q1, t1 = self.quaternions[i], self.translations[i]
            f = (stamp_ns - stamps[i - 1]) / gap
        rotation = quaternion_to_rotation(_slerp(q, q1, f) if f else q)
        return RigidTransform(rotation, t + f * (t1 - t))


class TransformBuffer:
    """Transforms between frames, static or stamped, looked up as tf2 does (a tree).

    ``add`` takes a child frame's pose in its parent (as ``geometry_msgs/TransformStamped``
    holds it); ``lookup`` (also the object itself, a :class:`FrameLookup`) returns the
    transform of points from one frame into another at a stamp.

    Args:
        max_interval_s: longest time between two samples of a moving transform that is
            interpolated across; a longer gap means its publisher stopped.
        cache_s: how long a moving transform's samples are kept behind its newest one (tf2
            keeps 10 s); None = all (a bag read offline).
    """

    def __init__(self, max_interval_s: float = 1.0, cache_s: float | None = None) -> None:
        if not (math.isfinite(max_interval_s) and max_interval_s > 0):
            raise ValueError(f"max_interval_s must be > 0, got {max_interval_s}")
        if cache_s is not None and not (math.isfinite(cache_s) and cache_s > 0):
            raise ValueError(f"cache_s must be > 0 seconds or None, got {cache_s}")
        self._max_interval_ns = int(max_interval_s * 1e9)
        self._cache_ns = None if cache_s is None else int(cache_s * 1e9)
        self._edges: dict[str, _Edge] = {}

    @property
    def frames(self) -> list[str]:
        """Every frame named so far, sorted."""
        names = set(self._edges) | {e.parent for e in self._edges.values()}
        return sorted(names)

    def ancestors(self, frame: str) -> list[str]:
        """The frames above ``frame``: its parent first, its tree's root last; none for a root.

        Raises:
            LookupError: the transforms loop.
        """
        return self._chain(str(frame).lstrip("/"))[1:]

    def moves(self, child: str) -> bool:
        """Whether ``child``'s pose in its parent is stamped (moving), not static."""
        edge = self._edges.get(str(child).lstrip("/"))
        return edge is not None and edge.static is None

    def add(
        self,
        parent: str,
        child: str,
        translation_m: Sequence[float],
        rotation_xyzw: Sequence[float],
        stamp_ns: int | None = None,
    ) -> None:
        """Add ``child``'s pose in ``parent``; ``stamp_ns`` None = static (for all time).

        A child given another parent starts over under it, as in tf2 the latest parent wins.

        Raises:
            ValueError: empty or equal frame names, a translation that is not finite or a
                rotation that is not one.
        """
        parent, child = str(parent).lstrip("/"), str(child).lstrip("/")
        if not parent or not child or parent == child:
            raise ValueError(f"a transform needs two different frames, got {parent!r} -> "
                             f"{child!r}")
        translation = np.asarray(translation_m, dtype=np.float64).reshape(3)
        if not np.all(np.isfinite(translation)):
            raise ValueError(f"{parent} -> {child}: translation {tuple(translation)} is not "
                             "finite")
        q = np.asarray(rotation_xyzw, dtype=np.float64).reshape(4)
        quaternion_matrix(*q)  # checks it
        q = q / np.linalg.norm(q)
        edge = self._edges.get(child)
        if edge is None or edge.parent != parent:
            edge = self._edges[child] = _Edge(parent)
        if stamp_ns is None:
            edge.static = RigidTransform(quaternion_to_rotation(q), translation)
            return
        edge.static = None
        i = bisect.bisect_left(edge.stamps, int(stamp_ns))
        if i < len(edge.stamps) and edge.stamps[i] == int(stamp_ns):
            edge.quaternions[i], edge.translations[i] = q, translation
            return
        edge.stamps.insert(i, int(stamp_ns))
        edge.quaternions.insert(i, q)
        edge.translations.insert(i, translation)
        if self._cache_ns is not None:
            old = bisect.bisect_left(edge.stamps, edge.stamps[-1] - self._cache_ns)
            if old:
                del edge.stamps[:old], edge.quaternions[:old], edge.translations[:old]

    def clear_moving(self) -> None:
        """Forget every moving transform's samples; static transforms stay (as tf2's clear)."""
        self._edges = {child: e for child, e in self._edges.items() if e.static is not None}

    def lookup(self, target: str, source: str, stamp_ns: int) -> RigidTransform:
        """The transform of points from ``source`` into ``target`` at ``stamp_ns``.

        Raises:
            LookupError: a frame the buffer does not know, two frames in separate trees, or a
                moving transform with no samples around ``stamp_ns``.
        """
        target, source = str(target).lstrip("/"), str(source).lstrip("/")
        if target == source:
            return IDENTITY
        up_source = self._chain(source)
        up_target = self._chain(target)
        ancestors = {frame: i for i, frame in enumerate(up_target)}
        common = next((frame for frame in up_source if frame in ancestors), None)
        if common is None:
            known = ", ".join(self.frames) or "none"
            raise LookupError(
                f"'{source}' and '{target}' are not connected by the transforms known "
                f"(root of '{source}': {up_source[-1]}, of '{target}': {up_target[-1]}; "
                f"frames: {known})"
            )
        to_common = self._to_ancestor(up_source[: up_source.index(common) + 1], stamp_ns)
        target_to_common = self._to_ancestor(up_target[: ancestors[common] + 1], stamp_ns)
        return to_common.then(target_to_common.inverse())

    __call__ = lookup

    def _chain(self, frame: str) -> list[str]:
        """``frame`` and its ancestors up to the root of its tree."""
        chain = [frame]
        while chain[-1] in self._edges:
            parent = self._edges[chain[-1]].parent
            if parent in chain:
                raise LookupError(f"the transforms loop: {' -> '.join([*chain, parent])}")
            chain.append(parent)
        return chain

    def _to_ancestor(self, chain: list[str], stamp_ns: int) -> RigidTransform:
        """Points from ``chain[0]`` into ``chain[-1]`` (its ancestor) at ``stamp_ns``."""
        out = IDENTITY
        for child in chain[:-1]:
            out = out.then(self._edges[child].at(child, stamp_ns, self._max_interval_ns))
        return out


def add_tf_message(buffer: TransformBuffer, msg: Any, static: bool) -> list[str]:
    """Add a ``tf2_msgs/TFMessage`` (a rosbags or an rclpy one) to ``buffer``.

    ``static``: the message came on ``/tf_static`` (for all time), else on ``/tf`` (at each
    transform's header stamp). Returns why each transform that is not rigid (a zero
    quaternion, a non-finite translation) was skipped, as tf2 refuses them.
    """
    problems = []
    for tf in msg.transforms:
        t, r = tf.transform.translation, tf.transform.rotation
        stamp = tf.header.stamp
        try:
            buffer.add(str(tf.header.frame_id), str(tf.child_frame_id), (t.x, t.y, t.z),
                       (r.x, r.y, r.z, r.w),
                       None if static else int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec))
        except ValueError as exc:
            problems.append(str(exc))
    return problems
