"""Rig calibration (thermal intrinsics, depth->thermal extrinsic, clock offset) file IO."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from iphd.errors import CalibrationError
from iphd.resources import candidate_paths, find_package_file
from iphd.sensors.frames import CameraIntrinsics

CALIBRATION_VERSION = 1
_NOMINAL = "calibration/rig.yaml"
#: The package's nominal rig calibration: in the source tree, or in the share folder of the
#: install (colcon, pip); the first place looked at when neither has it (the error names all).
DEFAULT_CALIBRATION = find_package_file(_NOMINAL) or candidate_paths(_NOMINAL)[0]


@dataclass(frozen=True)
class RigFrames:
    """TF frame names of the rig (REP 103 optical frames).

    ``base`` empty means another node places the depth frame in TF (``realsense2_camera``
    publishes ``camera_link`` -> ``camera_depth_optical_frame`` itself): the rig's static TF is
    then only depth -> thermal, so the depth frame keeps one parent.
    """

    base: str = "camera_link"
    depth: str = "depth_optical_frame"
    thermal: str = "thermal_optical_frame"


@dataclass(frozen=True)
class RigCalibration:
    """Calibration of a D435 + Lepton rig.

    Attributes:
        thermal: thermal camera intrinsics and distortion at its native resolution.
        rotation: (3, 3) rotation R of the depth->thermal extrinsic.
        translation_m: (3,) translation t in metres; a point maps as
            ``p_thermal = R @ p_depth + t`` (both in optical frames: x right, y down, z forward).
        thermal_clock_offset_s: seconds added to a thermal stamp to express it on the depth
            clock (``t_depth_clock = t_thermal + offset``).
        frames: TF frame names.
        meta: provenance (date, reprojection RMS, number of views, tool), kept verbatim.
    """

    thermal: CameraIntrinsics
    rotation: np.ndarray
    translation_m: np.ndarray
    thermal_clock_offset_s: float = 0.0
    frames: RigFrames = field(default_factory=RigFrames)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def thermal_clock_offset_ns(self) -> int:
        """Clock offset in integer nanoseconds."""
        return int(round(self.thermal_clock_offset_s * 1e9))

    def to_dict(self) -> dict[str, Any]:
        """Return the YAML-ready mapping in the file format that ``load_calibration`` reads."""
        return {
            "version": CALIBRATION_VERSION,
            "frames": {
                "base": self.frames.base,
                "depth": self.frames.depth,
                "thermal": self.frames.thermal,
            },
            "thermal": {
                "width": self.thermal.width,
                "height": self.thermal.height,
                "fx": float(self.thermal.fx),
                "fy": float(self.thermal.fy),
                "cx": float(self.thermal.cx),
                "cy": float(self.thermal.cy),
                "distortion": [float(d) for d in self.thermal.distortion],
            },
            "extrinsic_depth_to_thermal": {
                "rotation_xyzw": [float(v) for v in rotation_to_quaternion(self.rotation)],
                "translation_m": [float(v) for v in self.translation_m],
            },
            "clock": {"thermal_offset_s": float(self.thermal_clock_offset_s)},
            "meta": dict(self.meta),
        }


# camera_link (x forward, y left, z up) -> optical frame (x right, y down, z forward), REP 103.
BASE_TO_OPTICAL_XYZW = (-0.5, 0.5, -0.5, 0.5)


@dataclass(frozen=True)
class StaticTransform:
    """One static TF transform: the pose of ``child`` in ``parent``.

    Attributes:
        parent: parent frame id.
        child: child frame id.
        translation_m: (x, y, z) of the child's origin in the parent frame, metres.
        rotation_xyzw: unit quaternion (x, y, z, w) of the child's axes in the parent frame.
    """

    parent: str
    child: str
    translation_m: tuple[float, float, float]
    rotation_xyzw: tuple[float, float, float, float]


def message_transforms(msg: Any) -> list[StaticTransform]:
    """The transforms of a ``tf2_msgs/TFMessage`` (an rclpy or a rosbags one)."""
    transforms = []
    for tf in msg.transforms:
        t, q = tf.transform.translation, tf.transform.rotation
        transforms.append(StaticTransform(
            str(tf.header.frame_id), str(tf.child_frame_id),
            (float(t.x), float(t.y), float(t.z)),
            (float(q.x), float(q.y), float(q.z), float(q.w)),
        ))
    return transforms


def rig_static_transforms(calibration: RigCalibration) -> tuple[StaticTransform, ...]:
    """Return the rig's static transforms: base -> depth optical, depth -> thermal optical.

    ``camera_link`` (x forward, y left, z up) -> depth optical frame (x right, y down, z
    forward) is the fixed REP 103 rotation; depth optical -> thermal optical is the inverse of
    the calibration's extrinsic, because a TF transform gives the child frame's pose in the
    parent, while the extrinsic maps points from depth to thermal coordinates. With an empty
    ``frames.base`` only depth -> thermal is returned (the depth driver places its frame).
    """
    frames = calibration.frames
    thermal = extrinsic_pose(
        frames.depth, frames.thermal, calibration.rotation, calibration.translation_m
    )
    if not frames.base:
        return (thermal,)
    return (
        StaticTransform(frames.base, frames.depth, (0.0, 0.0, 0.0), BASE_TO_OPTICAL_XYZW),
        thermal,
    )


def extrinsic_pose(
    parent: str, child: str, rotation: Any, translation_m: Any
) -> StaticTransform:
    """The static transform of an extrinsic that maps ``parent`` points into ``child``.

    ``p_child = rotation @ p_parent + translation_m``; TF wants the child frame's pose in the
    parent, which is the inverse.
    """
    rot_inv = np.asarray(rotation, dtype=np.float64).reshape(3, 3).T
    trans = -rot_inv @ np.asarray(translation_m, dtype=np.float64).reshape(3)
    qx, qy, qz, qw = (float(v) for v in rotation_to_quaternion(rot_inv))
    tx, ty, tz = (float(v) for v in trans)
    return StaticTransform(parent, child, (tx, ty, tz), (qx, qy, qz, qw))


def points_transform(
    transforms: Iterable[StaticTransform], source: str, target: str
) -> tuple[np.ndarray, np.ndarray]:
    """The map of points from frame ``source`` into frame ``target`` through static transforms.

    The transforms form a tree (as ``/tf_static`` does); the path between the two frames may go
    up to a common parent and down again (depth optical <- ``camera_link`` -> colour optical).
    A frame has one parent: a later transform of the same child replaces an earlier one, as tf2
    does (a driver publishes new extrinsics each time the camera opens).

    Returns:
        ``(rotation, translation_m)`` with ``p_target = rotation @ p_source + translation_m``.

    Raises:
        CalibrationError: no chain of transforms joins the two frames, naming the frames known.
    """
    # frame -> [(neighbour, R, t)] with p_neighbour = R @ p_frame + t
    edges: dict[str, list[tuple[str, np.ndarray, np.ndarray]]] = {}
    latest = {tf.child: tf for tf in transforms}
    for tf in latest.values():
        quat = np.asarray(tf.rotation_xyzw, dtype=np.float64)
        norm = float(np.linalg.norm(quat))
        if not math.isfinite(norm) or norm < 1e-6:
            raise CalibrationError(
                f"transform {tf.parent} -> {tf.child} has no valid rotation {tf.rotation_xyzw}"
            )
        rot = quaternion_to_rotation(quat / norm)
        trans = np.asarray(tf.translation_m, dtype=np.float64)
        # A transform is the child's pose in the parent: p_parent = R @ p_child + t.
        edges.setdefault(tf.child, []).append((tf.parent, rot, trans))
        edges.setdefault(tf.parent, []).append((tf.child, rot.T, -rot.T @ trans))
    reached: dict[str, tuple[np.ndarray, np.ndarray]] = {source: (np.eye(3), np.zeros(3))}
    queue = [source]
    while queue and target not in reached:
        frame = queue.pop(0)
        rot, trans = reached[frame]
        for other, r, t in edges.get(frame, []):
            if other not in reached:
                reached[other] = (r @ rot, r @ trans + t)
                queue.append(other)
    if target not in reached:
        known = ", ".join(sorted(edges)) or "none"
        raise CalibrationError(
            f"no static transform joins '{source}' and '{target}' (frames known: {known}); "
            "record /tf_static with the camera's transforms"
        )
    return reached[target]


@dataclass(frozen=True)
class TransformConflict:
    """Another publisher's static transform of one of the rig's frames that disagrees with ours.

    Attributes:
        child: the rig's frame.
        parent: the parent the other transform gives it.
        ours: the parent the rig's transform gives it.
        offset_m: under the same parent, how far the other places the frame's origin from ours.
        angle_deg: under the same parent, the angle between the two orientations.
    """

    child: str
    parent: str
    ours: str
    offset_m: float = 0.0
    angle_deg: float = 0.0

    @property
    def second_parent(self) -> bool:
        """The frame would have two parents (else: the same parent, placed elsewhere)."""
        return self.parent != self.ours

    def second_parent_fix(self, frames: RigFrames) -> str:
        """What to change so the rig frame keeps one parent (``frames``: the rig's names)."""
        if self.child == frames.depth:
            return (
                "set frames.base: '' in rig.yaml, so fusion publishes depth -> thermal only "
                "and the driver's placement of the depth frame stands"
            )
        return (
            "take the thermal camera out of the robot description, or keep it there (with "
            "the calibration's extrinsic) and set the fusion node's publish_tf: false"
        )

    def describe(self) -> str:
        """``"X under P, and under Q here"`` or ``"X under P, 2.0 cm and 1.5° from here"``."""
        if self.second_parent:
            return f"{self.child} under {self.parent}, and under {self.ours} here"
        return (
            f"{self.child} under {self.parent}, {self.offset_m * 100:.1f} cm and "
            f"{self.angle_deg:.1f}° from here"
        )


def transform_conflicts(
    ours: Iterable[StaticTransform],
    theirs: Iterable[StaticTransform],
    tolerance_m: float = 1e-3,
    tolerance_deg: float = 0.1,
) -> list[TransformConflict]:
    """What in ``theirs`` (other publishers' static transforms) contradicts ``ours``.

    tf2 gives a frame one parent and one pose: a transform of one of our child frames under
    another parent gives it two parents, and one under the same parent that places it more than
    ``tolerance_m`` or ``tolerance_deg`` away is a second calibration of it (one that is not
    finite is left out: tf2 refuses it). Each distinct conflict once, in the order met; leading
    "/" of frame names are ignored, as tf2 does.
    """
    mine = {tf.child.strip("/"): tf for tf in ours}
    found: dict[tuple[str, str, float, float], TransformConflict] = {}
    for tf in theirs:
        child, parent = tf.child.strip("/"), tf.parent.strip("/")
        own = mine.get(child)
        if own is None:
            continue
        conflict = TransformConflict(child, parent, own.parent.strip("/"))
        if not conflict.second_parent:
            offset = float(np.linalg.norm(
                np.subtract(tf.translation_m, own.translation_m, dtype=np.float64)
            ))
            a = np.asarray(tf.rotation_xyzw, dtype=np.float64)
            b = np.asarray(own.rotation_xyzw, dtype=np.float64)
            norms = float(np.linalg.norm(a) * np.linalg.norm(b))
            cos_half = abs(float(a @ b)) / norms if norms > 1e-12 else 0.0
            angle = math.degrees(2.0 * math.acos(min(1.0, cos_half)))
            if not (math.isfinite(offset) and math.isfinite(angle)):
                continue  # not a transform tf2 takes (it refuses non-finite ones)
            if offset <= tolerance_m and angle <= tolerance_deg:
                continue
            conflict = dataclasses.replace(conflict, offset_m=offset, angle_deg=angle)
        key = (child, parent, round(conflict.offset_m, 4), round(conflict.angle_deg, 2))
        found.setdefault(key, conflict)
    return list(found.values())


def quaternion_to_rotation(xyzw: np.ndarray) -> np.ndarray:
    """Return the (3, 3) rotation matrix of a unit quaternion given as (x, y, z, w)."""
    x, y, z, w = (float(v) for v in xyzw)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def rotation_to_quaternion(rotation: np.ndarray) -> np.ndarray:
    """Return the unit quaternion (x, y, z, w) with w >= 0 of a (3, 3) rotation matrix."""
    r = np.asarray(rotation, dtype=np.float64)
    trace = float(np.trace(r))
    if trace > 0:
        s = 2.0 * np.sqrt(trace + 1.0)
        q = [(r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s, 0.25 * s]
    else:
        i = int(np.argmax(np.diag(r)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + r[i, i] - r[j, j] - r[k, k])
        q = [0.0, 0.0, 0.0, (r[k, j] - r[j, k]) / s]
        q[i] = 0.25 * s
        q[j] = (r[j, i] + r[i, j]) / s
        q[k] = (r[k, i] + r[i, k]) / s
    quat = np.array(q, dtype=np.float64)
    quat /= np.linalg.norm(quat)
    return -quat if quat[3] < 0 else quat


def _get(mapping: Any, key: str, where: str, path: Path) -> Any:
    if not isinstance(mapping, dict):
        raise CalibrationError(f"{path}: '{where}' must be a mapping, got {type(mapping).__name__}")
    if key not in mapping:
        raise CalibrationError(
            f"{path}: missing key '{where}.{key}'" if where else f"{path}: missing key '{key}'"
        )
    return mapping[key]


def _number(value: Any, name: str, path: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise CalibrationError(f"{path}: '{name}' must be a finite number, got {value!r}")
    return float(value)


def _vector(value: Any, n: int, name: str, path: Path) -> np.ndarray:
    if not isinstance(value, (list, tuple)) or len(value) != n:
        raise CalibrationError(f"{path}: '{name}' must be a list of {n} numbers, got {value!r}")
    return np.array([_number(v, f"{name}[{i}]", path) for i, v in enumerate(value)])


def calibration_from_dict(data: Any, path: Path | str = "<calibration>") -> RigCalibration:
    """Build and validate a ``RigCalibration`` from the parsed YAML mapping.

    Raises:
        CalibrationError: naming the missing or bad key.
    """
    path = Path(path)
    if not isinstance(data, dict):
        raise CalibrationError(f"{path}: expected a YAML mapping at top level, got {data!r:.80}")
    version = _get(data, "version", "", path)
    if version != CALIBRATION_VERSION:
        raise CalibrationError(
            f"{path}: unsupported calibration version {version!r}; this iphd reads version "
            f"{CALIBRATION_VERSION}"
        )
    th = _get(data, "thermal", "", path)
    width = _get(th, "width", "thermal", path)
    height = _get(th, "height", "thermal", path)
    for key, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise CalibrationError(
                f"{path}: 'thermal.{key}' must be a positive integer, got {value!r}"
            )
    fx = _number(_get(th, "fx", "thermal", path), "thermal.fx", path)
    fy = _number(_get(th, "fy", "thermal", path), "thermal.fy", path)
    cx = _number(_get(th, "cx", "thermal", path), "thermal.cx", path)
    cy = _number(_get(th, "cy", "thermal", path), "thermal.cy", path)
    if fx <= 0 or fy <= 0:
        raise CalibrationError(f"{path}: 'thermal.fx'/'thermal.fy' must be > 0, got {fx}, {fy}")
    if not (0 <= cx < width and 0 <= cy < height):
        raise CalibrationError(
            f"{path}: principal point ({cx}, {cy}) lies outside the {width}x{height} thermal image"
        )
    dist = _vector(_get(th, "distortion", "thermal", path), 5, "thermal.distortion", path)
    ext = _get(data, "extrinsic_depth_to_thermal", "", path)
    quat = _vector(
        _get(ext, "rotation_xyzw", "extrinsic_depth_to_thermal", path),
        4,
        "extrinsic_depth_to_thermal.rotation_xyzw",
        path,
    )
    norm = float(np.linalg.norm(quat))
    if abs(norm - 1.0) > 1e-3:
        raise CalibrationError(
            f"{path}: 'extrinsic_depth_to_thermal.rotation_xyzw' must be a unit quaternion "
            f"(x, y, z, w), its norm is {norm:.6f}"
        )
    translation = _vector(
        _get(ext, "translation_m", "extrinsic_depth_to_thermal", path),
        3,
        "extrinsic_depth_to_thermal.translation_m",
        path,
    )
    if np.linalg.norm(translation) > 1.0:
        raise CalibrationError(
            f"{path}: 'extrinsic_depth_to_thermal.translation_m' is {translation.tolist()} "
            "(more than 1 m); the translation is in metres, not millimetres"
        )
    clock = _get(data, "clock", "", path)
    offset = _number(_get(clock, "thermal_offset_s", "clock", path), "clock.thermal_offset_s", path)
    if abs(offset) > 5.0:
        raise CalibrationError(
            f"{path}: 'clock.thermal_offset_s' = {offset} s is implausible (> 5 s); re-run the "
            "clock-offset calibration or check that both drivers stamp in ROS time"
        )
    frames_data = data.get("frames", {}) or {}
    if not isinstance(frames_data, dict):
        raise CalibrationError(f"{path}: 'frames' must be a mapping of frame names")
    names = {
        k: "" if v is None else str(v).strip()
        for k, v in frames_data.items() if k in ("base", "depth", "thermal")
    }
    for key in ("depth", "thermal"):
        if key in names and not names[key]:
            raise CalibrationError(
                f"{path}: 'frames.{key}' is empty; give the {key} camera's optical frame id "
                f"(the frame_id of its images), or leave the key out for the default"
            )
    if names.get("depth") and names.get("depth") == names.get("thermal", RigFrames.thermal):
        raise CalibrationError(
            f"{path}: 'frames.depth' and 'frames.thermal' are both '{names['depth']}'; the two "
            "cameras need frames of their own"
        )
    frames = RigFrames(**names)
    meta = data.get("meta", {}) or {}
    return RigCalibration(
        thermal=CameraIntrinsics(
            width=width,
            height=height,
            fx=fx,
            fy=fy,
            cx=cx,
            cy=cy,
            distortion=(
                float(dist[0]),
                float(dist[1]),
                float(dist[2]),
                float(dist[3]),
                float(dist[4]),
            ),
        ),
        rotation=quaternion_to_rotation(quat / norm),
        translation_m=translation,
        thermal_clock_offset_s=offset,
        frames=frames,
        meta=dict(meta),
    )


def load_calibration(path: Path | str = DEFAULT_CALIBRATION) -> RigCalibration:
    """Load and validate a rig calibration YAML file.

    Raises:
        CalibrationError: when the file is missing, is not YAML, or has a missing or bad key.
    """
    path = Path(path)
    if not path.is_file():
        if path == DEFAULT_CALIBRATION:
            raise CalibrationError(
                f"the package's nominal calibration {_NOMINAL} is not installed (looked in "
                f"{', '.join(str(p) for p in candidate_paths(_NOMINAL))}); rebuild and source "
                "the workspace (colcon build), or pass the rig.yaml written by the calibration "
                "tool"
            )
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise CalibrationError(
            f"calibration file {path} {what}; pass the rig.yaml written by the "
            f"calibration tool, or use the nominal one at {DEFAULT_CALIBRATION}"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CalibrationError(
            f"calibration file {path} is not text (a bag's .db3, an image?); pass the rig.yaml "
            "written by the calibration tool"
        ) from exc
    except OSError as exc:
        raise CalibrationError(
            f"cannot read calibration file {path}: {exc.strerror or exc}"
        ) from exc
    return calibration_from_yaml(text, path)


def calibration_differences(a: RigCalibration, b: RigCalibration) -> list[str]:
    """What differs between two calibrations, one phrase each (empty: the same rig).

    Metadata (``meta``) is left out; numbers are compared to 1e-9, as a YAML round trip of
    the rotation leaves them.
    """
    diff = []
    if a.frames != b.frames:
        diff.append("frame names")
    if a.thermal.width != b.thermal.width or a.thermal.height != b.thermal.height or not (
        np.allclose([a.thermal.fx, a.thermal.fy, a.thermal.cx, a.thermal.cy],
                    [b.thermal.fx, b.thermal.fy, b.thermal.cx, b.thermal.cy], atol=1e-9)
        and np.allclose(a.thermal.distortion, b.thermal.distortion, atol=1e-9)
    ):
        diff.append("thermal intrinsics")
    if not (np.allclose(a.rotation, b.rotation, atol=1e-9)
            and np.allclose(a.translation_m, b.translation_m, atol=1e-9)):
        diff.append("extrinsic")
    if not math.isclose(a.thermal_clock_offset_s, b.thermal_clock_offset_s, abs_tol=1e-9):
        diff.append("clock offset")
    return diff


def calibration_to_yaml(calibration: RigCalibration) -> str:
    """``calibration`` as YAML in the file format, as bags and ``rig_calibration`` hold it."""
    return yaml.safe_dump(calibration.to_dict(), sort_keys=False)


def calibration_from_yaml(text: str, source: Path | str = "<calibration>") -> RigCalibration:
    """Parse and validate YAML text in the file format; ``source`` names it in errors.

    Raises:
        CalibrationError: the text is not YAML, or has a missing or bad key.
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CalibrationError(f"{source}: not valid YAML ({exc})") from exc
    return calibration_from_dict(data, source)


def save_calibration(calibration: RigCalibration, path: Path | str) -> None:
    """Write ``calibration`` as YAML in the format ``load_calibration`` reads.

    Whole or not at all (``iphd.data.output.replace_file``): a rig.yaml in use is never
    left half-written.

    Raises:
        OSError: the file cannot be written; an existing one is then untouched.
    """
    from iphd.data.output import replace_file  # here: that module loads OpenCV

    replace_file(path, (
        "# iphd rig calibration (see calibration/README.md for the conventions)\n"
        + calibration_to_yaml(calibration)
    ).encode())
