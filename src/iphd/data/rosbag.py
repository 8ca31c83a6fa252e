"""ROS 2 bags of the rig (depth, thermal, colour, static TF, ground truth) through ``rosbags``.

Topics written by ``RigBagWriter`` (relative names as in the live graph, so a namespace given to
the player applies to them; message types are those of ROS 2 Kilted plus ``iphd_msgs``):

==========================  ===================================  ===============================
topic                       type                                 content
==========================  ===================================  ===============================
``depth/image_raw``         sensor_msgs/msg/Image ``16UC1``      depth in mm, 0 = invalid
``depth/camera_info``       sensor_msgs/msg/CameraInfo           same stamp as its image
``thermal/image_raw``       sensor_msgs/msg/Image ``16UC1``      centi-kelvin, thermal clock
``thermal/camera_info``     sensor_msgs/msg/CameraInfo           the calibration's intrinsics
``color/image_raw``         sensor_msgs/msg/Image ``rgb8``       only when colour was written
``color/camera_info``       sensor_msgs/msg/CameraInfo           same stamp as its image
``/tf_static``              tf2_msgs/msg/TFMessage               once, at the start
``rig_calibration``         std_msgs/msg/String                  once, at the start: rig.yaml
``ground_truth/people``     iphd_msgs/msg/PersonTrackArray       one array per depth frame
==========================  ===================================  ===============================

``/tf_static`` holds ``camera_link`` -> depth optical and depth optical -> thermal optical from
the rig calibration (``iphd.calibration.rig_static_transforms``), plus depth optical ->
``color_optical_frame`` when the writer has colour intrinsics (the identity: the simulator
renders colour from the depth camera's viewpoint, a depth-aligned colour stream), written
once, just before the first message and stamped and logged with that message's log time, with
transient-local QoS offered in the metadata so that a player republishes it latched. The other
topics offer reliable, keep-last-5, volatile QoS like the drivers. The calibration itself is
kept in the bag's ``custom_data`` under ``iphd.calibration`` (YAML), so a bag carries what it
was made with, and, right after ``/tf_static`` and latched like it, on ``rig_calibration`` as
the fusion node publishes it, so the storage file alone (without its metadata.yaml) carries it
too.

Ground truth uses ``PersonTrackArray`` so replay can be scored with the tracker's own message:
``header.stamp`` = the stamp of the depth frame the truth belongs to, ``header.frame_id`` = the
depth optical frame, tracks in ascending ``id``; per person (``iphd.data.truth.PersonTruth``):

* ``id`` = ``pid``; ``state`` = ``STATE_CONFIRMED``; ``score`` = ``visibility`` (0..1);
* ``position`` / ``velocity`` = ``position_m`` / ``velocity_mps`` (depth optical frame);
* ``x1, y1, x2, y2`` = ``box_xyxy`` in depth pixels;
* ``age_s`` = seconds since that ``pid`` was first written in this bag; ``time_since_update_s``
  = 0; ``embedding`` empty.

``score`` and the box are float32 in the message, so they come back rounded to float32.

Every message has a log time (the bag's receive time), ``stamp_ns`` unless ``log_ns`` is given;
log times need not be written in order, the reader returns messages in log-time order.
"""

from __future__ import annotations

import functools
import heapq
import logging
import math
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, NamedTuple

import numpy as np
import yaml
from rosbags.interfaces import (
    Connection,
    ConnectionExtRosbag2,
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import (
    CompressionFormat,
    CompressionMode,
    StoragePlugin,
    Writer,
    WriterError,
)
from rosbags.typesys import Stores, TypesysError, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from iphd.calibration import (
    RigCalibration,
    StaticTransform,
    calibration_differences,
    calibration_from_yaml,
    calibration_to_yaml,
    message_transforms,
    rig_static_transforms,
)
from iphd.compressed_images import COMPRESSED_IMAGE, decode_compressed, encode_compressed
from iphd.errors import CalibrationError, ConfigError, DatasetError, FrameError
from iphd.image_codec import RawImage, decode_image, encode_image
from iphd.sensors.frames import (
    CameraInfoFields,
    CameraIntrinsics,
    camera_info_fields,
    intrinsics_from_camera_info,
)
from iphd.tf_buffer import TransformBuffer, add_tf_message

from .cut_off import (
    FILE_COMPRESSED,
    CutOff,
    DamagedChunk,
    RecoveringReader,
    storage_files,
    storage_kind,
)
from .sqlite_rescue import Rebuilt, WalLog, wal_text
from .truth import PersonTruth

LOG = logging.getLogger(__name__)

DEPTH_IMAGE = "depth/image_raw"
DEPTH_INFO = "depth/camera_info"
THERMAL_IMAGE = "thermal/image_raw"
THERMAL_INFO = "thermal/camera_info"
COLOR_IMAGE = "color/image_raw"
COLOR_INFO = "color/camera_info"
TF_STATIC = "/tf_static"
TF = "/tf"
#: The last name of the topics tf2 listens to (``/tf``, ``/tf_static``, namespaced or not).
TF_TOPICS = ("tf", "tf_static")
#: Moving transforms read beyond a window's ends (``read_transform_buffer``): more than the
#: 1 s tf interpolates across, plus the gap between a transform's stamp and its log time.
TF_MARGIN_NS = 2_000_000_000
GROUND_TRUTH = "ground_truth/people"
COLOR_FRAME = "color_optical_frame"

IMAGE = "sensor_msgs/msg/Image"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"
PERSON_TRACKS = "iphd_msgs/msg/PersonTrackArray"
PERSON_DETECTIONS = "iphd_msgs/msg/PersonDetectionArray"

CALIBRATION_KEY = "iphd.calibration"
#: The last name of the topic the fusion node publishes its rig calibration on (YAML in a
#: ``std_msgs/String``, latched), so ``ros2 bag record`` of a running graph keeps it.
CALIBRATION_TOPIC = "rig_calibration"
STRING = "std_msgs/msg/String"
COMPRESSIONS = ("zstd", "none")
STORAGES = ("sqlite3", "mcap")

_REPO_MSG_DIR = Path(__file__).resolve().parents[3] / "ros2_ws" / "src" / "iphd_msgs" / "msg"
_UINT32_MAX = 2**32 - 1


def _qos(depth: int, durability: QosDurability) -> Qos:
    zero = QosTime(0, 0)  # rmw "unspecified": the defaults (infinite deadline, lifespan, lease)
    return Qos(
        QosHistory.KEEP_LAST,
        depth,
        QosReliability.RELIABLE,
        durability,
        zero,
        zero,
        QosLiveliness.AUTOMATIC,
        zero,
        False,
    )


SENSOR_QOS = _qos(5, QosDurability.VOLATILE)
LATCHED_QOS = _qos(1, QosDurability.TRANSIENT_LOCAL)


def iphd_msgs_dir() -> Path:
    """Return the folder holding the ``iphd_msgs`` .msg files.

    The source tree's ``ros2_ws/src/iphd_msgs/msg`` comes first, then ``share/iphd_msgs/msg``
    under every ``AMENT_PREFIX_PATH`` entry (an installed package).

    Raises:
        DatasetError: naming the places looked at.
    """
    candidates = [_REPO_MSG_DIR]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            candidates.append(Path(prefix) / "share" / "iphd_msgs" / "msg")
    for folder in candidates:
        if folder.is_dir() and any(folder.glob("*.msg")):
            return folder
    raise DatasetError(
        "the iphd_msgs message definitions (*.msg) were not found in "
        f"{', '.join(str(c) for c in candidates)}; run from the source tree or source the "
        "workspace that installs iphd_msgs (AMENT_PREFIX_PATH)"
    )


@functools.cache
def typestore() -> Typestore:
    """Return the message types of bags: ROS 2 Kilted's plus ``iphd_msgs`` (built once).

    Raises:
        DatasetError: when the ``iphd_msgs`` definitions cannot be found.
    """
    store = get_typestore(Stores.ROS2_KILTED)
    types: dict[str, Any] = {}
    for path in sorted(iphd_msgs_dir().glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"iphd_msgs/msg/{path.stem}"))
    store.register(types)
    return store


def _check_stamp(stamp_ns: int, what: str) -> int:
    stamp_ns = int(stamp_ns)
    if stamp_ns < 0:
        raise DatasetError(f"{what} {stamp_ns} ns is negative; ROS times start at 0")
    return stamp_ns


def _check_person(
    person: PersonTruth, seen: set[int], stamp_ns: int, positions_required: bool
) -> None:
    if not 0 <= int(person.pid) <= _UINT32_MAX:
        raise DatasetError(f"person id {person.pid} does not fit the message's uint32 id")
    if person.pid in seen:
        raise DatasetError(f"person id {person.pid} appears twice in frame {stamp_ns} ns")
    if not 0.0 <= float(person.visibility) <= 1.0:
        raise DatasetError(
            f"person {person.pid}: visibility {person.visibility} is outside 0..1"
        )
    values = (*person.box_xyxy, *person.position_m, *person.velocity_mps)
    finite = [math.isfinite(float(v)) for v in values]
    # 2D annotations have no 3D point: position and velocity all NaN is "not known".
    unknown_3d = not positions_required and not any(finite[4:])
    if len(values) != 10 or not all(finite[:4]) or not (all(finite[4:]) or unknown_3d):
        raise DatasetError(
            f"person {person.pid}: box (4), position (3) and velocity (3) must be finite "
            f"numbers, got {person.box_xyxy}, {person.position_m}, {person.velocity_mps}"
        )


def ground_truth_msg(
    store: Typestore,
    stamp_ns: int,
    frame_id: str,
    people: Sequence[PersonTruth],
    first_seen_ns: dict[int, int],
    *,
    positions_required: bool = True,
) -> Any:
    """The ``ground_truth/people`` PersonTrackArray of one depth frame (module doc: mapping).

    Args:
        store: the typestore with ``iphd_msgs`` (:func:`typestore`).
        stamp_ns: stamp of the depth frame the truth belongs to, ns.
        frame_id: the depth optical frame.
        people: the people in that frame (may be empty: nobody in view).
        first_seen_ns: pid -> stamp first seen, for ``age_s``; updated.
        positions_required: False accepts people whose position and velocity are all NaN
            (annotated in 2D only).

    Raises:
        DatasetError: a pid outside uint32 or repeated in the frame, a visibility outside
            0..1, or a non-finite value.
    """
    t = store.types
    track_cls: Any = t["iphd_msgs/msg/PersonTrack"]
    point_cls, vector_cls = t["geometry_msgs/msg/Point"], t["geometry_msgs/msg/Vector3"]
    tracks = []
    seen: set[int] = set()
    for person in sorted(people, key=lambda p: p.pid):
        _check_person(person, seen, stamp_ns, positions_required)
        seen.add(person.pid)
        first = first_seen_ns.setdefault(person.pid, stamp_ns)
        x1, y1, x2, y2 = (float(v) for v in person.box_xyxy)
        tracks.append(
            track_cls(
                id=int(person.pid),
                state=track_cls.STATE_CONFIRMED,
                score=float(person.visibility),
                position=point_cls(*(float(v) for v in person.position_m)),
                velocity=vector_cls(*(float(v) for v in person.velocity_mps)),
                x1=x1,
                y1=y1,
                x2=x2,
                y2=y2,
                age_s=max(0.0, (stamp_ns - first) / 1e9),
                time_since_update_s=0.0,
                embedding=np.zeros(0, dtype=np.float32),
            )
        )
    return t[PERSON_TRACKS](header=_header(t, stamp_ns, frame_id), tracks=tracks)


def _header(types: Any, stamp_ns: int, frame_id: str) -> Any:
    """A ``std_msgs/Header`` of ``types`` (a typestore's) stamped ``stamp_ns``."""
    return types["std_msgs/msg/Header"](
        stamp=types["builtin_interfaces/msg/Time"](
            sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000
        ),
        frame_id=frame_id,
    )


class RigBagWriter:
    """Writes the rig's streams and ground truth into a new ROS 2 bag (see the module doc).

    Usable as a context manager; ``close`` writes the bag's metadata. On an exception inside
    the ``with`` block the bag is still closed, so what was written so far stays readable.

    Args:
        path: bag folder to create; it must not exist.
        calibration: the rig calibration (thermal intrinsics, static TF, frame names).
        depth_intrinsics: camera model of the depth images that will be written.
        color_intrinsics: camera model of the colour images, seen from the depth camera's
            origin (a depth-aligned stream); None = no colour is written.
        compression: ``zstd`` (per message for sqlite3, per chunk for mcap) or ``none``.
        storage: ``sqlite3`` (``.db3``) or ``mcap``.
        topics: topic -> the name to write it under instead, as another driver would record
            it (``depth/image_raw`` -> ``/camera/camera/depth/image_rect_raw``); ``counts``
            uses the names written.

    Raises:
        ConfigError: unknown compression or storage.
        DatasetError: ``path`` exists already (bags are never overwritten) or cannot be created.
    """

    def __init__(
        self,
        path: Path | str,
        calibration: RigCalibration,
        depth_intrinsics: CameraIntrinsics,
        *,
        color_intrinsics: CameraIntrinsics | None = None,
        compression: Literal["zstd", "none"] = "zstd",
        storage: Literal["sqlite3", "mcap"] = "sqlite3",
        topics: Mapping[str, str] | None = None,
    ) -> None:
        if compression not in COMPRESSIONS:
            raise ConfigError(
                f"bag compression must be one of {', '.join(COMPRESSIONS)}, got {compression!r}"
            )
        if storage not in STORAGES:
            raise ConfigError(f"bag storage must be one of {', '.join(STORAGES)}, got {storage!r}")
        self.path = Path(path)
        if self.path.exists():
            raise DatasetError(
                f"{self.path} already exists; write the bag to a new path or remove the old one "
                "first (bags are never overwritten)"
            )
        self.calibration = calibration
        self.depth_intrinsics = depth_intrinsics
        self.color_intrinsics = color_intrinsics
        self.counts: dict[str, int] = {}
        self._topics = dict(topics or {})
        self._store = typestore()
        self._types = self._store.types
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = Writer(self.path, version=Writer.VERSION_LATEST, storage_plugin=plugin)
        if compression == "zstd":
            mode = CompressionMode.STORAGE if storage == "mcap" else CompressionMode.MESSAGE
            self._writer.set_compression(mode, CompressionFormat.ZSTD)
        self._writer.set_custom_data(
            CALIBRATION_KEY, calibration_to_yaml(calibration)
        )
        try:
            self._writer.open()
        except (WriterError, OSError) as exc:
            raise DatasetError(f"cannot create bag {self.path}: {exc}") from exc
        self._connections: dict[str, Connection] = {}
        self._first_seen_ns: dict[int, int] = {}
        self._tf_written = False
        self._closed = False
        self._depth_info = camera_info_fields(depth_intrinsics)
        self._thermal_info = camera_info_fields(calibration.thermal)
        self._color_info = None if color_intrinsics is None else camera_info_fields(
            color_intrinsics
        )

    # -- writing -------------------------------------------------------------------------------

    def write_depth(self, stamp_ns: int, depth_mm: np.ndarray, log_ns: int | None = None) -> None:
        """Write ``depth/camera_info`` then ``depth/image_raw``, both stamped ``stamp_ns``.

        Args:
            stamp_ns: capture time, ns.
            depth_mm: (H, W) uint16 depth in millimetres, the size of the depth intrinsics.
            log_ns: receive time in the bag; default ``stamp_ns``.

        Raises:
            FrameError: wrong dtype or size.
            DatasetError: negative time, or the bag is closed.
        """
        intr = self.depth_intrinsics
        self._check_image(depth_mm, np.uint16, (intr.height, intr.width), "depth_mm", "depth")
        frame = self.calibration.frames.depth
        self._write_info(DEPTH_INFO, stamp_ns, frame, intr, self._depth_info, log_ns)
        self._write_image(DEPTH_IMAGE, stamp_ns, frame, depth_mm, "16UC1", log_ns)

    def write_thermal(
        self, stamp_ns: int, thermal_ck: np.ndarray, log_ns: int | None = None
    ) -> None:
        """Write ``thermal/camera_info`` then ``thermal/image_raw``, both stamped ``stamp_ns``.

        Args:
            stamp_ns: capture time on the thermal camera's clock, ns (the calibration's clock
                offset maps it to the depth clock, as for the live driver).
            thermal_ck: (H, W) uint16 centi-kelvin, the calibration's thermal size.
            log_ns: receive time in the bag; default ``stamp_ns``.

        Raises:
            FrameError: wrong dtype or size.
            DatasetError: negative time, or the bag is closed.
        """
        intr = self.calibration.thermal
        self._check_image(
            thermal_ck, np.uint16, (intr.height, intr.width), "thermal_ck", "thermal calibration"
        )
        frame = self.calibration.frames.thermal
        self._write_info(THERMAL_INFO, stamp_ns, frame, intr, self._thermal_info, log_ns)
        self._write_image(THERMAL_IMAGE, stamp_ns, frame, thermal_ck, "16UC1", log_ns)

    def write_color(self, stamp_ns: int, rgb: np.ndarray, log_ns: int | None = None) -> None:
        """Write ``color/camera_info`` then ``color/image_raw`` (rgb8, ``color_optical_frame``).

        Args:
            stamp_ns: capture time, ns.
            rgb: (H, W, 3) uint8 RGB, the size of the colour intrinsics.
            log_ns: receive time in the bag; default ``stamp_ns``.

        Raises:
            FrameError: not an (H, W, 3) uint8 array of the colour intrinsics' size.
            DatasetError: the writer has no colour intrinsics, a negative time, or the bag is
                closed.
        """
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise FrameError(
                f"colour image must be (H, W, 3) uint8 RGB, got shape {rgb.shape} dtype {rgb.dtype}"
            )
        intr = self.color_intrinsics
        if intr is None or self._color_info is None:
            raise DatasetError(
                "this bag writer has no colour intrinsics: give color_intrinsics to RigBagWriter "
                "(a colour stream without camera_info cannot be related to depth)"
            )
        if rgb.shape[:2] != (intr.height, intr.width):
            raise FrameError(
                f"rgb is {rgb.shape[1]}x{rgb.shape[0]} but the colour intrinsics are "
                f"{intr.width}x{intr.height}; write images of the size the bag was opened with"
            )
        self._write_info(COLOR_INFO, stamp_ns, COLOR_FRAME, intr, self._color_info, log_ns)
        self._write_image(COLOR_IMAGE, stamp_ns, COLOR_FRAME, rgb, "rgb8", log_ns)

    def write_ground_truth(
        self, stamp_ns: int, people: Sequence[PersonTruth], log_ns: int | None = None
    ) -> None:
        """Write the people of one depth frame to ``ground_truth/people`` (module doc: mapping).

        Args:
            stamp_ns: stamp of the depth frame the truth belongs to, ns.
            people: the people in that frame (may be empty: nobody in view).
            log_ns: receive time in the bag; default ``stamp_ns``.

        Raises:
            DatasetError: a pid outside uint32 or repeated in the frame, a visibility outside
                0..1, a non-finite value, a negative time, or the bag is closed.
        """
        stamp_ns = _check_stamp(stamp_ns, "ground-truth stamp")
        msg = ground_truth_msg(
            self._store, stamp_ns, self.calibration.frames.depth, people, self._first_seen_ns
        )
        self._write(GROUND_TRUTH, PERSON_TRACKS, msg, stamp_ns if log_ns is None else log_ns)

    def close(self) -> None:
        """Write the metadata and close the bag (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._writer.close()

    def __enter__(self) -> RigBagWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            with suppress(Exception):  # the original exception is the one to report
                self.close()

    def static_transforms(self) -> list[StaticTransform]:
        """What ``/tf_static`` holds: the rig's transforms, then depth -> colour if colour."""
        transforms = list(rig_static_transforms(self.calibration))
        if self.color_intrinsics is not None:
            transforms.append(StaticTransform(
                self.calibration.frames.depth, COLOR_FRAME, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0)
            ))
        return transforms

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _check_image(
        array: np.ndarray, dtype: type, shape: tuple[int, int], name: str, model: str
    ) -> None:
        if array.dtype != dtype or array.ndim != 2:
            raise FrameError(
                f"{name} must be a 2-D {np.dtype(dtype)} array, got shape {array.shape} "
                f"dtype {array.dtype}"
            )
        if array.shape != shape:
            raise FrameError(
                f"{name} is {array.shape[1]}x{array.shape[0]} but the {model} intrinsics are "
                f"{shape[1]}x{shape[0]}; write images of the size the bag was opened with"
            )

    def _header(self, stamp_ns: int, frame_id: str) -> Any:
        return _header(self._types, stamp_ns, frame_id)

    def _write_info(
        self,
        topic: str,
        stamp_ns: int,
        frame_id: str,
        intr: CameraIntrinsics,
        fields: CameraInfoFields,
        log_ns: int | None,
    ) -> None:
        stamp_ns = _check_stamp(stamp_ns, f"{topic} stamp")
        t = self._types
        msg = t[CAMERA_INFO](
            header=self._header(stamp_ns, frame_id),
            height=intr.height,
            width=intr.width,
            distortion_model=fields.distortion_model,
            d=np.array(fields.d, dtype=np.float64),
            k=np.array(fields.k, dtype=np.float64),
            r=np.array(fields.r, dtype=np.float64),
            p=np.array(fields.p, dtype=np.float64),
            binning_x=0,
            binning_y=0,
            roi=t["sensor_msgs/msg/RegionOfInterest"](
                x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
            ),
        )
        self._write(topic, CAMERA_INFO, msg, stamp_ns if log_ns is None else log_ns)

    def _write_image(
        self,
        topic: str,
        stamp_ns: int,
        frame_id: str,
        array: np.ndarray,
        encoding: str,
        log_ns: int | None,
    ) -> None:
        stamp_ns = _check_stamp(stamp_ns, f"{topic} stamp")
        msg = _image_msg(self._store, self._header(stamp_ns, frame_id), array, encoding)
        self._write(topic, IMAGE, msg, stamp_ns if log_ns is None else log_ns)

    def _write(self, topic: str, msgtype: str, msg: object, log_ns: int) -> None:
        if self._closed:
            raise DatasetError(f"bag {self.path} is closed; open a new RigBagWriter to write more")
        log_ns = _check_stamp(log_ns, f"{topic} log time")
        if not self._tf_written:
            self._tf_written = True
            self._write_tf_static(log_ns)
            self._write_calibration(log_ns)
        self._write_raw(topic, msgtype, self._store.serialize_cdr(msg, msgtype), log_ns)

    def _write_raw(self, topic: str, msgtype: str, data: bytes | memoryview, log_ns: int) -> None:
        latched = topic in (TF_STATIC, CALIBRATION_TOPIC)
        topic = self._topics.get(topic, topic)
        conn = self._connections.get(topic)
        if conn is None:
            qos = LATCHED_QOS if latched else SENSOR_QOS
            conn = self._writer.add_connection(
                topic, msgtype, typestore=self._store, offered_qos_profiles=[qos]
            )
            self._connections[topic] = conn
        self._writer.write(conn, log_ns, data)
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def write_tf(
        self, stamp_ns: int, transforms: Sequence[StaticTransform], log_ns: int | None = None
    ) -> None:
        """Write moving transforms (the robot's odometry) on ``/tf``, stamped ``stamp_ns``."""
        stamp_ns = _check_stamp(stamp_ns, "/tf stamp")
        msg = self._tf_message(stamp_ns, transforms)
        self._write(TF, TF_MESSAGE, msg, stamp_ns if log_ns is None else log_ns)

    def write_static_transforms(
        self, stamp_ns: int, transforms: Sequence[StaticTransform], log_ns: int | None = None
    ) -> None:
        """Write other publishers' static transforms (a driver's) as one more ``/tf_static``.

        As ``ros2 bag record`` keeps each publisher's latched message; readers take the
        transforms of every ``/tf_static`` message (:func:`read_static_transforms`).
        """
        stamp_ns = _check_stamp(stamp_ns, "/tf_static stamp")
        msg = self._tf_message(stamp_ns, transforms)
        self._write(TF_STATIC, TF_MESSAGE, msg, stamp_ns if log_ns is None else log_ns)

    def _tf_message(self, stamp_ns: int, transforms: Sequence[StaticTransform]) -> Any:
        t = self._types
        return t[TF_MESSAGE](transforms=[
            t["geometry_msgs/msg/TransformStamped"](
                header=self._header(stamp_ns, tf.parent),
                child_frame_id=tf.child,
                transform=t["geometry_msgs/msg/Transform"](
                    translation=t["geometry_msgs/msg/Vector3"](*tf.translation_m),
                    rotation=t["geometry_msgs/msg/Quaternion"](*tf.rotation_xyzw),
                ),
            )
            for tf in transforms
        ])

    def _write_tf_static(self, stamp_ns: int) -> None:
        msg = self._tf_message(stamp_ns, self.static_transforms())
        self._write_raw(TF_STATIC, TF_MESSAGE, self._store.serialize_cdr(msg, TF_MESSAGE), stamp_ns)

    def _write_calibration(self, log_ns: int) -> None:
        """The calibration on ``rig_calibration`` too, as the fusion node publishes it.

        So a copy of the storage file read without its metadata.yaml (a recording that was not
        closed, a rebuilt ``.db3``) still carries it.
        """
        msg = self._types[STRING](data=calibration_to_yaml(self.calibration))
        self._write_raw(CALIBRATION_TOPIC, STRING, self._store.serialize_cdr(msg, STRING), log_ns)


@dataclass(frozen=True)
class BagTopic:
    """One topic of a bag.

    Attributes:
        msgtype: message type, e.g. ``sensor_msgs/msg/Image``.
        count: number of messages.
        latched: the recorder offered transient-local QoS (``/tf_static``): a player
            republishes it latched.
    """

    msgtype: str
    count: int
    latched: bool


#: The first bytes of a zstd frame: a message compressed on its own (``compression_mode:
#: message``), never the start of a CDR message.
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _zstd_decompress(data: bytes) -> bytes:
    """One message compressed with zstd.

    Raises:
        Exception: the zstd library's error when the frame does not decompress.
    """
    try:
        from compression import zstd  # Python 3.14
    except ImportError:
        from backports import zstd  # rosbags installs it before 3.14
    return bytes(zstd.decompress(data))


def _bag_source(path: Path) -> Path:
    """What to open for ``path``: the bag folder, or one storage file.

    A storage file whose folder's metadata.yaml describes it alone opens as that folder, which
    keeps what metadata.yaml holds (compression, stored calibration). A folder without
    metadata.yaml (a recording cut off before it was written) opens as its one storage file,
    or with several as the folder (``cut_off``: its files as one bag).

    Raises:
        DatasetError: a folder without metadata.yaml and without storage files, or with both
            kinds.
    """
    metadata = path.parent / "metadata.yaml"
    if path.is_dir():
        if (path / "metadata.yaml").exists():
            return path
        files = storage_files(path)
        if not files or len({storage_kind(f) for f in files}) > 1:
            raise DatasetError(
                f"{path} has no metadata.yaml and "
                + ("both .db3 and .mcap files: pass one of them" if files else
                   "no .db3/.mcap files: it is not a ROS 2 bag folder")
            )
        # A file compressed whole is unpacked by the folder's reader.
        return files[0] if len(files) == 1 and files[0].suffix != FILE_COMPRESSED else path
    compressed = path.suffix == FILE_COMPRESSED
    if not metadata.is_file():
        if compressed:
            raise DatasetError(
                f"{path} is a storage file compressed whole (--compression-mode file): pass its "
                f"folder, {path.parent}, whose reader unpacks it"
            )
        return path
    try:
        info = yaml.safe_load(metadata.read_text(encoding="utf-8"))["rosbag2_bagfile_information"]
        names = [Path(str(name)).name for name in info["relative_file_paths"]]
    except Exception:  # noqa: BLE001 - an unreadable metadata.yaml: read the file on its own
        return path
    if names == [path.name]:
        return path.parent
    if compressed:
        raise DatasetError(
            f"{path} is one of several storage files compressed whole: pass its folder, "
            f"{path.parent}"
        )
    return path


def unreadable_file_text(name: str, why: str) -> str:
    """What to say about a storage file left out of its folder because it does not open."""
    hint = _cut_off_hint(Path(name), why)
    return (f"{name} does not open ({why}) and is left out; the recording's other files are "
            f"read{hint}")


def _cut_off_hint(source: Path, error: object) -> str:
    """How to rescue a damaged sqlite3 file (failing mid-read, or refused even rebuilt), or "".

    (An MCAP file left unfinished is read up to its last whole chunk: ``CutOffMcapReader``.)
    """
    text = str(error).lower()
    files = [source] if source.is_file() else sorted(source.glob("*.db3"))
    name = str(files[0]) if files else "FILE"
    if "malformed" in text or "not a database" in text:
        return (f"; the file is damaged (a recording cut off mid-write?): `sqlite3 {name} "
                "'.recover' | sqlite3 fixed.db3` saves what it can, then read that file")
    if "metadata" in text and source.is_dir() and (source / "metadata.yaml").is_file():
        return (f"; its metadata.yaml is damaged: move {source / 'metadata.yaml'} aside, and "
                "the storage files are read without it (iphd-eval copy then writes a bag with "
                "a new one)")
    return ""


#: How close to the damage reading starts again after a part of the storage that fails, ns.
RESUME_PRECISION_NS = 1_000


class StorageGap(NamedTuple):
    """A part of a bag's storage that failed while it was read (a damaged ``.db3`` page)."""

    after_ns: int
    """Log time of the last message read before it."""
    resumed_ns: int | None
    """Log time from which reading went on; None when nothing after it could be read."""
    reason: str
    hint: str = ""
    """How to rescue the file, when known (``; ...``)."""

    def describe(self) -> str:
        """One line for logs and reports."""
        where = (f"read on from log time {self.resumed_ns} ns, the messages between lost"
                 if self.resumed_ns is not None else "nothing after it could be read")
        return (f"the storage failed after log time {self.after_ns} ns ({self.reason}); "
                f"{where}{self.hint}")


class RawMessage(NamedTuple):
    """One serialized message of a bag."""

    topic: str
    msgtype: str
    log_ns: int
    data: bytes


class BagReader:
    """Reads a ROS 2 bag (folder with metadata.yaml, or a bare .db3/.mcap file).

    Opened on construction; use as a context manager or call ``close``. Messages come in
    log-time order. A message that cannot be deserialized (or decompressed) is logged,
    counted in ``corrupt`` (per topic, with the first one's reason in ``errors``) and skipped.

    Raises:
        DatasetError: the path does not exist or is not a readable bag.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise DatasetError(
                f"bag {self.path} does not exist; pass the bag folder (the one holding "
                "metadata.yaml) or its .db3/.mcap file"
            )
        if self.path.is_file() and self.path.name == "metadata.yaml":
            raise DatasetError(
                f"{self.path} is a bag's metadata, not the bag: pass its folder, "
                f"{self.path.parent}"
            )
        self.corrupt: dict[str, int] = {}
        self.errors: dict[str, str] = {}
        self._store = typestore()
        source = self._source = _bag_source(self.path)
        # Storage files read without their metadata.yaml (a recording cut off before it was
        # written) do not say whether their messages are zstd-compressed one by one.
        self._sniff_zstd = not (source / "metadata.yaml").exists()
        try:
            reader = RecoveringReader(source)
            reader.open()
        except Exception as exc:  # rosbags, sqlite (apsw) and yaml errors alike mean "unreadable"
            raise DatasetError(
                f"{self.path} is not a readable ROS 2 bag: {str(exc).rstrip('.')}"
                f"{_cut_off_hint(source, exc)}"
            ) from exc
        self._reader = reader
        self._open = True
        # A bag recorded with --compression-mode message: rosbags would decompress each
        # message inside its storage iterator, where one damaged frame ends the iteration and
        # reads as a storage gap (losing intact messages logged at the same time). Each
        # message is decompressed here instead, so a damaged one is one corrupt message.
        self._decompress_each = False
        storage = getattr(reader, "storage", None)  # the rosbag2 folder's reader
        metadata = getattr(storage, "metadata", None)
        if getattr(metadata, "compression_mode", None) == "message":
            storage.metadata = metadata._replace(compression_mode=None)  # type: ignore[union-attr]
            self._decompress_each = True
        #: (storage file, what it kept and lost) for each MCAP file a recording left unfinished.
        self.cut_off: list[tuple[str, CutOff]] = reader.cut_offs()
        #: The storage files of a folder read without its metadata.yaml, in the order read.
        self.unindexed_files: list[str] = reader.unindexed_files
        if self.cut_off and not reader.message_count:
            name, cut = self.cut_off[0]
            self.close()
            raise DatasetError(
                f"{name} was cut off before its recording wrote a whole chunk of messages "
                f"({cut.read_bytes} bytes readable, ending at {cut.reason}): there is no "
                "message to read"
            )
        if len(self.unindexed_files) > 1:
            LOG.warning(
                "%s has no metadata.yaml (a recording that was not closed?): its %d storage "
                "files are read as one bag, in the order of their first message: %s",
                self.path, len(self.unindexed_files),
                ", ".join(Path(f).name for f in self.unindexed_files),
            )
        for name, cut in self.cut_off:
            LOG.warning("%s was %s", name, cut.describe())
        #: (storage file, why) for each file of a folder without metadata.yaml that could not
        #: be opened: left out, the others read.
        self.unreadable_files: list[tuple[str, str]] = reader.unreadable_files
        for name, why in self.unreadable_files:
            LOG.warning("%s", unreadable_file_text(name, why))
        #: Each ``.db3`` file whose sqlite write-ahead log (``FILE-wal``, the ``resilient``
        #: storage preset) still held messages: the recorder stopped before sqlite moved them
        #: into the file. They are read from a merged copy (``WalLog.error`` when that failed).
        self.wal_logs: list[WalLog] = reader.wal_logs()
        for log in self.wal_logs:
            LOG.warning("%s", wal_text(log))
        #: Each ``.db3`` file sqlite found damaged, read from a copy rebuilt of its rows that read.
        self.rebuilt: list[Rebuilt] = reader.rebuilt()
        for rebuilt in self.rebuilt:
            LOG.warning("%s", rebuilt.describe())
        reader.on_damaged(self._damaged_chunk)
        #: Parts of the storage that failed while read (``StorageGap``), in the order met.
        self.gaps: list[StorageGap] = []
        self._calibration: tuple[RigCalibration | None, str] | None = None

    def _damaged_chunk(self, damage: DamagedChunk) -> None:
        """A chunk of an MCAP file failed while read: its messages count as corrupt."""
        for topic, count in damage.lost.items():
            self.corrupt[topic] = self.corrupt.get(topic, 0) + count
            self.errors.setdefault(
                topic, f"a damaged chunk at byte {damage.offset} of {damage.file} "
                f"({damage.reason})")
        LOG.warning(
            "%s: skipped a damaged chunk at byte %d (%s) and its %s; the rest is read",
            damage.file, damage.offset, damage.reason,
            ", ".join(f"{n} messages on {t}" for t, n in sorted(damage.lost.items())),
        )

    # -- metadata ------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if not self._open:
            raise DatasetError(f"bag {self.path} is closed; open a new BagReader to read it")

    @property
    def topics(self) -> dict[str, BagTopic]:
        """Topic name -> ``BagTopic`` (type, message count, latched)."""
        self._check_open()
        result: dict[str, BagTopic] = {}
        for name, info in self._reader.topics.items():
            conns = info.connections
            msgtype = info.msgtype or conns[0].msgtype
            latched = any(
                q.durability == QosDurability.TRANSIENT_LOCAL
                for c in conns
                if isinstance(c.ext, ConnectionExtRosbag2)
                for q in c.ext.offered_qos_profiles
            )
            result[name] = BagTopic(msgtype, int(info.msgcount), latched)
        return result

    @property
    def message_count(self) -> int:
        """Number of messages in the bag."""
        self._check_open()
        return int(self._reader.message_count)

    @property
    def start_ns(self) -> int:
        """Log time of the first message, ns (0 for an empty bag)."""
        return int(self._reader.start_time) if self.message_count else 0

    @property
    def end_ns(self) -> int:
        """Log time of the last message, ns (0 for an empty bag)."""
        return int(self._reader.end_time) - 1 if self.message_count else 0

    @property
    def duration_ns(self) -> int:
        """Log time of the last message minus that of the first, ns."""
        return self.end_ns - self.start_ns

    @property
    def calibration(self) -> RigCalibration | None:
        """The rig calibration the bag carries; None when it carries none.

        First the one stored in the bag's metadata (``RigBagWriter``, ``import-mot`` and
        ``copy`` with ``--calibration``), else the first message of a recorded
        ``rig_calibration`` topic (the fusion node's, namespaced or not;
        ``calibration_origin`` says which).

        Raises:
            DatasetError: the calibration found is malformed, or several ``rig_calibration``
                topics hold different ones, which leaves it open which rig the bag's images
                are from (the same one on several topics is used).
        """
        return self._carried_calibration()[0]

    @property
    def calibration_origin(self) -> str:
        """Where ``calibration`` is from: ``stored in the bag``, ``recorded on TOPIC`` or ``""``."""
        return self._carried_calibration()[1]

    def _carried_calibration(self) -> tuple[RigCalibration | None, str]:
        self._check_open()
        if self._calibration is None:
            self._calibration = self._stored_calibration() or self._recorded_calibration()
        return self._calibration

    def _stored_calibration(self) -> tuple[RigCalibration, str] | None:
        custom = getattr(self._reader.storage, "metadata", None)
        text = (getattr(custom, "custom", None) or {}).get(CALIBRATION_KEY)
        if not text:
            return None
        try:
            calibration = calibration_from_yaml(text, f"{self.path}:{CALIBRATION_KEY}")
        except CalibrationError as exc:
            raise DatasetError(f"{self.path}: the stored calibration is unusable: {exc}") from exc
        return calibration, "stored in the bag"

    def _recorded_calibration(self) -> tuple[RigCalibration | None, str]:
        topics = sorted(
            name for name, info in self.topics.items()
            if info.msgtype == STRING and name.rsplit("/", 1)[-1] == CALIBRATION_TOPIC
        )
        found: list[tuple[str, RigCalibration]] = []
        for topic in topics:
            for _, _, _, msg in self.messages([topic]):
                where = f"{self.path}:{topic}"
                try:
                    found.append((topic, calibration_from_yaml(str(msg.data), where)))
                except CalibrationError as exc:
                    raise DatasetError(
                        f"{where}: the recorded calibration is unusable: {exc}; pass the rig's "
                        "file with --calibration"
                    ) from exc
                break  # the first message of each topic
        if not found:
            return None, ""
        first = found[0][1]
        differ = sorted({d for _, c in found[1:] for d in calibration_differences(first, c)})
        if differ:
            raise DatasetError(
                f"{self.path} holds different rig calibrations on {len(found)} topics "
                f"({', '.join(t for t, _ in found)}; {', '.join(differ)} differ), so which one "
                "registers its images is open: pass that rig's file with --calibration"
            )
        return first, f"recorded on {' and '.join(t for t, _ in found)}"

    # -- messages ------------------------------------------------------------------------------

    def raw_messages(
        self,
        topics: Iterable[str] | None = None,
        start_ns: int | None = None,
        stop_ns: int | None = None,
    ) -> Iterator[RawMessage]:
        """Yield serialized messages in log-time order.

        Args:
            topics: topics to read; None = all.
            start_ns: first log time to yield (inclusive); None = from the start.
            stop_ns: log time to stop at (exclusive); None = to the end.

        Raises:
            DatasetError: a requested topic is not in the bag (the message lists those that
                are), or the reader is closed.
        """
        self._check_open()
        connections = self._reader.connections
        if topics is not None:
            wanted = set(topics)
            missing = wanted - {c.topic for c in connections}
            if missing:
                raise DatasetError(
                    f"{self.path} has no topic {', '.join(sorted(missing))}; it has "
                    f"{', '.join(sorted(self.topics)) or 'no topics'}"
                )
            connections = [c for c in connections if c.topic in wanted]
            if not connections:
                return
        for conn, log_ns, data in self._storage_messages(connections, start_ns, stop_ns):
            raw = bytes(data)
            # CDR starts 00 0x 00 00, never with the zstd magic.
            if self._decompress_each or (self._sniff_zstd and raw[:4] == ZSTD_MAGIC):
                try:
                    raw = _zstd_decompress(raw)
                except Exception as exc:  # noqa: BLE001 - a bag's bytes are untrusted
                    self._skip_corrupt(conn.topic, conn.msgtype, int(log_ns),
                                       f"does not decompress: {type(exc).__name__}: {exc}")
                    continue
            yield RawMessage(conn.topic, conn.msgtype, int(log_ns), raw)

    def _skip_corrupt(self, topic: str, msgtype: str, log_ns: int, reason: str) -> None:
        """Count a message that does not read in ``corrupt``; log the first of each topic."""
        count = self.corrupt.get(topic, 0) + 1
        self.corrupt[topic] = count
        self.errors.setdefault(topic, reason)
        log = LOG.warning if count == 1 else LOG.debug
        log("%s: skipped a corrupt %s message on %s at log time %d ns (%s)",
            self.path, msgtype, topic, log_ns, reason)

    def _storage_messages(
        self, connections: list[Connection], start_ns: int | None, stop_ns: int | None
    ) -> Iterator[tuple[Connection, int, Any]]:
        """The storage's messages, read on past a part of it that fails mid-read.

        A damaged page of a ``.db3`` makes sqlite fail on the rows it holds; reading starts
        again at the first log time after them that reads (``_resume_after``), and the gap is
        logged and kept in ``gaps``.
        """
        resume = start_ns
        last: int | None = None
        while True:
            try:
                for item in self._reader.messages(connections, resume, stop_ns):
                    last = item[1]
                    yield item
                return
            except Exception as exc:  # noqa: BLE001 - apsw's CorruptError, rosbags' ReaderError
                after = last if last is not None else (
                    resume - 1 if resume is not None else self.start_ns - 1)
                resumed = self._resume_after(connections, after, stop_ns)
                gap = StorageGap(after, resumed, f"{type(exc).__name__}: {exc}".rstrip("."),
                                 _cut_off_hint(self._source, exc))
                self.gaps.append(gap)
                LOG.warning("%s: %s", self.path, gap.describe())
                if resumed is None:
                    return
                resume = resumed

    def _resume_after(
        self, connections: list[Connection], after_ns: int, stop_ns: int | None
    ) -> int | None:
        """The first log time after ``after_ns`` from which reading does not fail.

        Found to ``RESUME_PRECISION_NS``; None when reading fails up to the end.
        """

        def reads(start: int) -> bool:
            messages = self._reader.messages(connections, start, stop_ns)
            try:
                next(iter(messages), None)
                return True
            except Exception:  # noqa: BLE001 - the storage fails there too
                return False
            finally:
                with suppress(Exception):
                    messages.close()

        end = self.end_ns if stop_ns is None else min(self.end_ns, stop_ns - 1)
        failed, step = after_ns, RESUME_PRECISION_NS
        while True:  # doubling steps, then halving between a failing and a reading start
            probe = min(after_ns + step, end)
            if probe <= after_ns:
                return None
            if reads(probe):
                break
            if probe >= end:
                return None
            failed, step = probe, 2 * step
        while probe - failed > RESUME_PRECISION_NS:
            middle = (failed + probe) // 2
            if reads(middle):
                probe = middle
            else:
                failed = middle
        return probe

    def messages(
        self,
        topics: Iterable[str] | None = None,
        start_ns: int | None = None,
        stop_ns: int | None = None,
        decompress: bool = True,
    ) -> Iterator[tuple[str, str, int, Any]]:
        """Yield ``(topic, msgtype, log_ns, message)`` with rosbags message objects.

        Arguments as ``raw_messages``. With ``decompress``, a ``sensor_msgs/CompressedImage``
        (image_transport's ``compressed`` and ``compressedDepth``) comes as the
        ``sensor_msgs/Image`` it stands for (``decompress_image``), under its own topic.
        Messages that do not deserialize or decode are counted in ``corrupt`` and skipped;
        the first of each topic is logged with the reason.
        """
        for raw in self.raw_messages(topics, start_ns, stop_ns):
            try:
                msg = self._store.deserialize_cdr(raw.data, raw.msgtype)
                msgtype = raw.msgtype
                if decompress and msgtype == COMPRESSED_IMAGE:
                    msg, msgtype = decompress_image(msg, self._store), IMAGE
            except Exception as exc:  # a bag's bytes are untrusted: any failure means corrupt
                self._skip_corrupt(raw.topic, raw.msgtype, raw.log_ns,
                                   f"{type(exc).__name__}: {exc}")
                continue
            yield raw.topic, msgtype, raw.log_ns, msg

    def notes(self) -> list[str]:
        """What of the bag did not read, or read from a copy, so far: one line each.

        Files left out or passed by, a cut-off end, write-ahead logs, rebuilt files, parts of
        the storage that failed and messages skipped as corrupt (those met while reading).
        """
        notes = [unreadable_file_text(name, why) for name, why in self.unreadable_files]
        notes += [f"{name} was {cut.describe()}" for name, cut in self.cut_off]
        notes += [wal_text(log) for log in self.wal_logs]
        notes += [rebuilt.describe() for rebuilt in self.rebuilt]
        notes += [gap.describe() for gap in self.gaps]
        notes += [f"{count} {topic} messages skipped ({self.errors.get(topic, 'corrupt')})"
                  for topic, count in sorted(self.corrupt.items())]
        return notes

    def close(self) -> None:
        """Close the bag (idempotent)."""
        if self._open:
            self._open = False
            self._reader.close()

    def __enter__(self) -> BagReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        self.close()


# -- message helpers (rosbags message objects) -----------------------------------------------


def header_stamp_ns(msg: Any) -> int:
    """Return ``msg.header.stamp`` as integer nanoseconds."""
    stamp = msg.header.stamp
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def decompress_image(msg: Any, store: Typestore | None = None) -> Any:
    """The rosbags ``sensor_msgs/msg/Image`` a rosbags ``CompressedImage`` stands for.

    Header as recorded; pixels as ``iphd.compressed_images.decode_compressed`` decodes them
    (a ``32FC1`` compressedDepth in metres, ``16UC1`` as it was).

    Raises:
        FrameError: the image does not decode, or cannot be what its format says.
    """
    pixels, encoding = decode_compressed(str(msg.format), msg.data)
    return _image_msg(store or typestore(), msg.header, pixels, encoding)


def _image_msg(store: Typestore, header: Any, pixels: np.ndarray, encoding: str) -> Any:
    """A rosbags ``sensor_msgs/msg/Image`` holding ``pixels`` (little-endian, packed rows)."""
    raw = encode_image(pixels, encoding)
    return store.types[IMAGE](
        header=header,
        height=raw.height,
        width=raw.width,
        encoding=raw.encoding,
        is_bigendian=0,
        step=raw.step,
        data=np.frombuffer(raw.data, dtype=np.uint8),
    )


def compress_image(
    msg: Any, transport: str = "compressedDepth", codec: str = "png",
    store: Typestore | None = None,
) -> Any:
    """The rosbags ``CompressedImage`` image_transport would publish for a rosbags ``Image``.

    The inverse of ``decompress_image`` (``iphd.compressed_images.encode_compressed``), for
    writing bags as a robot records them.

    Raises:
        FrameError: an image that does not decode, or an encoding the transport cannot hold.
    """
    fmt, data = encode_compressed(image_to_array(msg), str(msg.encoding), transport, codec)
    types = (store or typestore()).types
    return types[COMPRESSED_IMAGE](
        header=msg.header, format=fmt, data=np.frombuffer(data, dtype=np.uint8)
    )


def image_to_array(msg: Any, accepted: tuple[str, ...] | None = None) -> np.ndarray:
    """Return the pixels of a rosbags ``sensor_msgs/msg/Image`` (honours step and endianness).

    Raises:
        FrameError: see ``iphd.image_codec.decode_image``.
    """
    data = msg.data
    return decode_image(
        RawImage(
            height=int(msg.height),
            width=int(msg.width),
            encoding=str(msg.encoding),
            is_bigendian=bool(msg.is_bigendian),
            step=int(msg.step),
            data=data.tobytes() if isinstance(data, np.ndarray) else bytes(data),
        ),
        accepted,
    )


def camera_info_to_intrinsics(msg: Any) -> CameraIntrinsics:
    """Return the intrinsics of a rosbags ``sensor_msgs/msg/CameraInfo``.

    Raises:
        CameraInfoError: unsupported distortion model or an unfilled K matrix.
    """
    return intrinsics_from_camera_info(msg.width, msg.height, msg.distortion_model, msg.d, msg.k)


def tracks_to_truth(msg: Any) -> list[PersonTruth]:
    """Return the people of a ``ground_truth/people`` PersonTrackArray (inverse of the writer)."""
    return [
        PersonTruth(
            pid=int(t.id),
            box_xyxy=(float(t.x1), float(t.y1), float(t.x2), float(t.y2)),
            visibility=float(t.score),
            position_m=(float(t.position.x), float(t.position.y), float(t.position.z)),
            velocity_mps=(float(t.velocity.x), float(t.velocity.y), float(t.velocity.z)),
        )
        for t in msg.tracks
    ]


def tf_topics(topics: Mapping[str, BagTopic]) -> dict[str, bool]:
    """A bag's TF topics (``/tf``, ``/tf_static``, namespaced or not) -> whether static."""
    return {
        name: name.rstrip("/").rpartition("/")[2] == "tf_static"
        for name, topic in topics.items()
        if topic.msgtype == TF_MESSAGE and name.rstrip("/").rpartition("/")[2] in TF_TOPICS
    }


def read_static_transforms(reader: BagReader) -> list[StaticTransform]:
    """Every transform on a bag's ``/tf_static`` (all its messages: each publisher latches one).

    A bag without ``/tf_static`` gives an empty list.
    """
    transforms: list[StaticTransform] = []
    topics = [name for name, topic in reader.topics.items()
              if name.endswith(TF_STATIC) and topic.msgtype == TF_MESSAGE]
    for _topic, _type, _log_ns, msg in reader.messages(topics):
        transforms += message_transforms(msg)
    return transforms


def read_transform_buffer(
    reader: BagReader, stop_ns: int | None = None, start_ns: int | None = None
) -> TransformBuffer:
    """A ``TransformBuffer`` of every transform on the bag's ``/tf`` and ``/tf_static``.

    Namespaced recordings (``/robot1/tf``) count too. ``start_ns`` and ``stop_ns`` (log
    times) bound the moving transforms read to ``[start_ns - TF_MARGIN_NS, stop_ns +
    TF_MARGIN_NS)``, so a window of a long robot bag does not read its whole ``/tf``; the
    margin keeps the samples that interpolation at the window's edges needs. ``/tf_static``
    is read from the bag's start (its messages are latched: recorded once, at the start) up
    to ``stop_ns``. Transforms that are not rigid (a zero quaternion, a non-finite
    translation) are skipped with one warning, as tf2 refuses them.
    """
    buffer = TransformBuffer()
    topics = tf_topics(reader.topics)
    static = [name for name, is_static in topics.items() if is_static]
    moving = [name for name, is_static in topics.items() if not is_static]
    reads = [
        (static, None, stop_ns),
        (moving, None if start_ns is None else start_ns - TF_MARGIN_NS,
         None if stop_ns is None else stop_ns + TF_MARGIN_NS),
    ]
    warned = False
    for names, first_ns, last_ns in reads:
        if not names:
            continue
        for topic, _type, _log_ns, msg in reader.messages(names, first_ns, last_ns):
            problems = add_tf_message(buffer, msg, topics[topic])
            if problems and not warned:
                warned = True
                LOG.warning("%s: skipped a transform on %s: %s", reader.path, topic, problems[0])
    return buffer


def read_ground_truth(path: Path | str, topic: str = GROUND_TRUTH) -> dict[int, list[PersonTruth]]:
    """Return the ground truth of a bag: depth-frame stamp (ns) -> the people in that frame.

    Raises:
        DatasetError: the bag is unreadable or has no ``topic``.
    """
    truth: dict[int, list[PersonTruth]] = {}
    with BagReader(path) as reader:
        for _topic, _type, _log_ns, msg in reader.messages([topic]):
            truth[header_stamp_ns(msg)] = tracks_to_truth(msg)
    return truth


def copy_bag_with_truth(
    src: Path | str,
    dst: Path | str,
    truth: dict[int, list[PersonTruth]],
    frame_id: str,
    calibration: RigCalibration | None = None,
) -> CopiedBag:
    """Copy bag ``src`` to a new bag ``dst`` with ``truth`` as its ``ground_truth/people``.

    As ``copy_bag``, and a ground-truth topic already in ``src`` is replaced. Truth messages
    are logged at their stamps; people may lack a 3D position (all NaN: annotated in 2D).

    Args:
        src: the bag to copy.
        dst: the new bag; it must not exist.
        truth: depth stamp (ns) -> the people in that frame (empty: nobody there).
        frame_id: ``header.frame_id`` of the truth messages (the depth optical frame).
        calibration: a rig calibration to store in ``dst``; None keeps ``src``'s custom data.

    Returns:
        What was copied; ``replaced`` names ``src``'s ground-truth topic if it had one.

    Raises:
        DatasetError: ``src`` is unreadable, ``dst`` exists or cannot be written, or a person
            is malformed (``ground_truth_msg``).
    """
    store = typestore()
    first_seen: dict[int, int] = {}
    pending = [
        (stamp, store.serialize_cdr(
            ground_truth_msg(store, stamp, frame_id, people, first_seen,
                             positions_required=False),
            PERSON_TRACKS,
        ))
        for stamp, people in sorted(truth.items())
    ]
    return copy_bag(src, dst, calibration, extra=(GROUND_TRUTH, PERSON_TRACKS, pending))


class CopiedBag(NamedTuple):
    """What ``copy_bag`` wrote, and what of the source did not read."""

    messages: int
    topics: int
    replaced: tuple[str, ...]
    """Topics of the source left out for the extra messages given."""
    notes: tuple[str, ...]
    """Topics left out, and what the source's reader said it could not read, or read from a
    rebuilt copy."""


def copy_bag(
    src: Path | str,
    dst: Path | str,
    calibration: RigCalibration | None = None,
    extra: tuple[str, str, Sequence[tuple[int, bytes | memoryview]]] | None = None,
    exclude: Iterable[str] = (),
) -> CopiedBag:
    """Copy what reads of bag ``src`` to a new, closed bag ``dst``.

    ``src`` is read as every tool here reads it (``BagReader``: a recording that was not
    closed, a split folder without metadata.yaml, a write-ahead log, damaged storage), so
    ``dst`` is a closed bag for the tools that refuse ``src``. Every message that
    reads is copied byte for byte (decompressed where the source was compressed without saying
    so), in log-time order, with its topic's type, definition and offered QoS (so
    ``/tf_static`` stays latched), and the bag's custom data (the stored calibration) is kept,
    or, with ``calibration``, the calibration is stored in its place. ``dst`` is written as
    sqlite3 with zstd message compression. A topic of a type that the bag holds no definition
    of and rosbags does not know (a robot's own, recorded before Iron) is left out and named in
    ``notes``.

    Args:
        src: the bag to copy.
        dst: the new bag; it must not exist.
        calibration: a rig calibration to store in ``dst``; None keeps ``src``'s custom data.
        extra: (topic, type, [(log time ns, serialized message)]) to write in place of that
            topic of ``src``, in log-time order.
        exclude: topics of ``src`` to leave out (a colour stream before the bag is shared).

    Raises:
        DatasetError: ``src`` is unreadable or no message of it reads, ``dst`` exists or
            cannot be written, or a topic to exclude is not in it.
    """
    dst = Path(dst)
    if dst.exists():
        raise DatasetError(
            f"{dst} already exists; write the copy to a new path (bags are never overwritten)"
        )
    store = typestore()
    with BagReader(src) as reader:
        source = reader._reader
        excluded = set(exclude)
        unknown = excluded - {c.topic for c in source.connections}
        if unknown:
            raise DatasetError(
                f"{src} has no topic {', '.join(sorted(unknown))} to leave out; it has "
                f"{', '.join(sorted(reader.topics))}"
            )
        custom = getattr(getattr(source.storage, "metadata", None), "custom", None) or {}
        writer = Writer(dst, version=Writer.VERSION_LATEST, storage_plugin=StoragePlugin.SQLITE3)
        writer.set_compression(CompressionMode.MESSAGE, CompressionFormat.ZSTD)
        for key, value in custom.items():
            writer.set_custom_data(str(key), str(value))
        if calibration is not None:
            writer.set_custom_data(
                CALIBRATION_KEY, calibration_to_yaml(calibration)
            )
        try:
            writer.open()
        except (WriterError, OSError) as exc:
            raise DatasetError(f"cannot create bag {dst}: {exc}") from exc
        pending = sorted(extra[2], key=lambda item: item[0]) if extra is not None else []
        undefined: list[tuple[str, str]] = []
        replaced = {c.topic for c in source.connections if extra and c.topic == extra[0]}
        messages = 0
        try:
            out: dict[tuple[str, str], Connection] = {}
            for conn in source.connections:
                key = (conn.topic, conn.msgtype)
                if conn.topic in replaced or conn.topic in excluded or key in out \
                        or key in undefined:
                    continue
                copy = _copy_connection(writer, conn, store)
                if copy is None:
                    undefined.append(key)
                else:
                    out[key] = copy
            merged: Iterable[tuple[Connection, int, bytes | memoryview]] = (
                (out[raw.topic, raw.msgtype], raw.log_ns, raw.data)
                for raw in (reader.raw_messages([t for t, _ in out]) if out else ())
                if (raw.topic, raw.msgtype) in out)  # not a type left out on the same topic
            if extra is not None:
                extra_conn = writer.add_connection(extra[0], extra[1], typestore=store,
                                                   offered_qos_profiles=[SENSOR_QOS])
                merged = heapq.merge(merged, ((extra_conn, t, data) for t, data in pending),
                                     key=lambda item: item[1])
            for conn, log_ns, data in merged:
                writer.write(conn, log_ns, data)
                messages += 1
            if not messages:
                raise DatasetError(
                    f"no message of {src} could be read, so there is nothing to copy; "
                    f"iphd-eval check --bag {src} says what is wrong with it"
                )
        except BaseException as exc:
            with suppress(Exception):
                writer.close()
            shutil.rmtree(dst, ignore_errors=True)  # a part of a bag is no bag
            if isinstance(exc, OSError):
                raise DatasetError(f"writing {dst} failed ({exc}); nothing was left") from exc
            raise
        writer.close()
        notes = [f"{topic} ({msgtype}) left out: the bag holds no definition of its type "
                 "(rosbag2 before Iron stored none) and it is not a standard one"
                 for topic, msgtype in undefined] + reader.notes()
    return CopiedBag(messages, len(out) + (extra is not None), tuple(sorted(replaced)),
                     tuple(notes))


def _copy_connection(writer: Writer, conn: Connection, store: Typestore) -> Connection | None:
    """A writer connection like ``conn``: its definition when it has one, else the typestore's.

    None for a type the bag holds no definition of and the typestore does not know.
    """
    ext = conn.ext if isinstance(conn.ext, ConnectionExtRosbag2) else None
    fmt = ext.serialization_format if ext is not None else "cdr"
    qos = list(ext.offered_qos_profiles) if ext is not None else []
    definition = getattr(conn.msgdef, "data", "")
    if definition and conn.digest:
        return writer.add_connection(
            conn.topic, conn.msgtype, msgdef=definition, rihs01=conn.digest,
            serialization_format=fmt, offered_qos_profiles=qos,
        )
    try:
        return writer.add_connection(
            conn.topic, conn.msgtype, typestore=store, serialization_format=fmt,
            offered_qos_profiles=qos,
        )
    except TypesysError:
        # A type of the robot's own, recorded without its definition (rosbag2 before Iron
        # stored none): a bag written here needs one.
        return None
