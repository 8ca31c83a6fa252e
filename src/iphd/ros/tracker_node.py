"""Tracker node: tracks the detector's people in 3D with depth re-ID; answers RGB queries."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
from iphd_msgs.msg import PersonDetectionArray, PersonTrackArray, TrackQueryResult
from iphd_msgs.srv import QueryTracks
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image
from visualization_msgs.msg import MarkerArray

from iphd.errors import ConfigError, IphdError
from iphd.fusion import depth_to_mm
from iphd.reid.extractor import FeatureExtractor
from iphd.ros import qos
from iphd.ros.common import (
    UNPAIRED_RUN,
    DiagnosticsReporter,
    DropWarnings,
    RateMeter,
    declare,
    forward_library_logs,
    on_parameters_set,
    spin_node,
    topic_label,
)
from iphd.ros.conversions import (
    array_to_image,
    camera_info_to_intrinsics,
    header_stamp_ns,
    image_to_array,
    stamp_to_ns,
)
from iphd.ros.frames import JUMP_BACK_NS, ListeningLookup, tf_lookup
from iphd.ros.fusion_node import DEPTH_ENCODINGS
from iphd.ros.tracking_msgs import (
    DetectionFrame,
    detections_from_msg,
    load_vision_msgs,
    query_result_msg,
    tracks_to_markers,
    tracks_to_msg,
    tracks_to_vision,
)
from iphd.tracking.appearance import (
    DepthPairing,
    Matched,
    crop_size,
    depth_crops,
    letterbox,
    load_extractor,
    query_pair_problem,
)
from iphd.tracking.tracker import (
    CONFIRMED,
    LOST,
    TENTATIVE,
    TimeOrderError,
    Tracker,
    TrackerConfig,
    TrackInput,
    TrackState,
)
from iphd.viz import render_tracks_image

QUERY_ENCODINGS = ("rgb8", "bgr8")
# Up in the detections' frame, the depth camera's optical frame (x right, y down).
OPTICAL_UP_AXIS = "-y"
# Detections come at the detector's pace, slower than the sensors' on a CPU: a longer silence
# than the sensor streams' STREAM_TIMEOUT_S before depth or detections count as stopped.
SILENCE_S = 1.0
#: Detections stamped this far past the last tracked wait for the next message before they
#: are tracked (``TrackerNode._admit``): a stray stamp must not expire every track.
LEAP_AHEAD_NS = JUMP_BACK_NS
#: With no detections at all since start, ERROR after this long (the detector loads its model).
STARTUP_GRACE_S = 10.0
#: What each TrackerConfig field means, for the parameter descriptions (units as in the names).
TRACKER_PARAMETERS = {
    "up_axis": "axis pointing up in the tracking frame: -y for the camera optical frame (the "
    "detections' frame: no tracking_frame, or no tf2_ros), z for odom/map; also y, -z, x, -x",
    "gate_distance_m": "largest ground distance between a track's prediction and its detection",
    "min_iou": "least IoU with the track's last box, for tracks seen on the previous frame "
               "(0 disables)",
    "appearance_weight": "weight of the cosine distance in the association cost, [0, 1]",
    "max_appearance_distance": "cosine distance gate between a track and a detection",
    "confirm_hits": "consecutive hits that confirm a tentative track",
    "max_tentative_misses": "consecutive misses a tentative track survives",
    "lost_timeout_s": "a lost track is deleted after this long without a detection",
    "reid_max_distance": "cosine distance at or below which a detection revives a lost track",
    "max_speed_mps": "fastest plausible walking speed (caps a lost track's velocity)",
    "lost_gate_speed_mps": "how fast a lost track's gates grow with the time lost",
    "min_score_new": "detections scoring below this start no track",
    "process_accel_std_mps2": "Kalman white-noise acceleration standard deviation",
    "measurement_std_m": "Kalman position measurement standard deviation",
    "ema_alpha": "appearance gallery EMA factor",
    "lost_score_decay_per_s": "exponential decay rate of a lost track's score",
    "up_ema_alpha": "smoothing of the up coordinate: u <- alpha * u + (1 - alpha) * measured",
    "nan_position_min_iou": "least IoU with which a detection without valid depth keeps a "
    "track alive",
    "max_lost_gate_growth_m": "cap of the growth of a lost track's distance gate",
    "outlier_min_iou": "least IoU with which a detection outside the distance gate (a depth "
    "outlier) still follows a recent confirmed track; 0 disables",
    "max_coast_s": "longest a track followed without a usable position (no depth, depth "
    "outliers) predicts on; then its filter restarts at the detection; 0 disables",
    "duplicate_iou": "IoU with a stronger detection above which a box is a repeat (starts no "
    "track); 1 disables",
    "duplicate_distance_m": "ground distance within which overlapping detections are repeats",
    "iou_weight": "share of 1 - IoU with the last box in the cost of tracks seen on the "
    "previous frame; 0 = distance only",
    "lost_velocity_decay_s": "time constant of the velocity decay of a lost track's prediction",
    "adopt_lost": "a tentative track confirmed inside a lost track's gate continues the lost "
    "track's id",
    "memory_s": "how long (from its last detection) a deleted track's appearance is "
    "remembered, so that its person gets the id back on return; 0 disables",
    "memory_max_distance": "cosine distance gate of a remembered id",
    "memory_margin": "least cosine distance by which the nearest remembered id must beat the "
    "next one",
    "memory_size": "most remembered ids (the oldest forgotten first)",
}


# Read by the tracker at every update, so `ros2 param set` changes them at once (up_axis is
# the frame of the tracks' positions and stays as started).
DYNAMIC_TRACKER_PARAMETERS = frozenset(
    f.name for f in dataclasses.fields(TrackerConfig) if f.name != "up_axis"
)
DYNAMIC_OUTPUT_PARAMETERS = frozenset(
    ("publish_embeddings", "publish_tentative", "query_top_k", "query_max_distance")
)


class _QueryUnavailableError(IphdError):
    """A query cannot be answered: no RGB embedder, or no tracker."""


def _check_query(top_k: int, max_distance: float) -> None:
    if top_k < 1:
        raise ConfigError(f"query_top_k must be >= 1, got {top_k}")
    if not 0.0 <= max_distance <= 2.0:
        raise ConfigError(
            f"query_max_distance must be a cosine distance in [0, 2], got {max_distance}"
        )


@dataclass(frozen=True)
class _Depth:
    depth_mm: np.ndarray


class TrackerNode(Node):
    """Subscribes ``detections`` and depth (image, camera info), publishes tracks and markers.

    Each detections message is paired with the depth frame of its stamp (``DepthPairing``), its
    people are cropped from that depth and embedded with the depth re-ID model, and the tracker
    is updated. When the depth frame does not come within the pairer's window, or the depth
    stream is silent, the detections are tracked without appearance. Embedding and tracking run
    in a worker thread so the executor keeps pairing. An RGB person crop on ``query/image`` is
    embedded with the RGB re-ID model and matched against the tracks; the answer goes to
    ``query/result``. While someone subscribes, ``debug/tracks_image`` (bgr8, the detections'
    stamp and frame) draws each track's box in its id's colour over the depth frame.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("tracker", **kwargs)
        self._undo_logs = forward_library_logs(self, "iphd.tracking")
        reid_checkpoint = str(declare(
            self, "reid_checkpoint", "",
            "depth re-ID embedder (.pt); empty = the shipped one, 'none' = no appearance",
        ))
        query_checkpoint = str(declare(
            self, "query_checkpoint", "",
            "RGB re-ID embedder for query/image; empty = the shipped one, 'none' = no queries",
        ))
        device = str(declare(self, "device", "auto", "auto | cpu | cuda (re-ID embedders)"))
        backend = str(declare(
            self, "backend", "auto",
            "auto | torch | onnxruntime: what runs the re-ID embedders; auto = torch on CUDA, "
            "onnxruntime on the CPU (exported once, cached)",
        ))
        threads = int(declare(
            self, "threads", 1,
            "CPU threads of the re-ID embedders (torch: process-wide; onnxruntime: per "
            "session); 0 = the library's default",
        ))
        if threads > 0:
            import torch

            torch.set_num_threads(threads)
        self._tracking_frame = str(declare(
            self, "tracking_frame", "",
            "frame the tracker works and publishes in (odom or map on a moving robot, with "
            "up_axis z): detections are transformed there through TF at their stamp; empty = "
            "the detections' frame (needs tf2_ros, which comes with ROS from apt)",
        ))
        tf_timeout_s = float(declare(
            self, "tf_timeout_s", 0.1,
            "how long a detection frame waits for its transform into tracking_frame, s; a "
            "frame without one is dropped",
        ))
        self._with_embeddings = bool(declare(
            self, "publish_embeddings", False, "fill PersonTrack.embedding", dynamic=True
        ))
        self._publish_tentative = bool(declare(
            self, "publish_tentative", False, "publish and draw tentative tracks too",
            dynamic=True,
        ))
        publish_vision = bool(declare(
            self, "publish_vision_msgs", True,
            "also publish vision_tracks (vision_msgs/Detection3DArray) where vision_msgs is "
            "installed, while it has subscribers",
        ))
        self._query_top_k = int(declare(
            self, "query_top_k", 5, "most tracks in a query/result answer", dynamic=True
        ))
        self._query_max_distance = float(declare(
            self, "query_max_distance", 2.0,
            "cosine distance above which a track is left out of a query/result (2 = none)",
            dynamic=True,
        ))
        max_queue = int(declare(
            self, "max_queue", 10,
            "detection frames waiting for embedding + tracking; the oldest is dropped beyond",
        ))
        period = float(declare(self, "diagnostics_period", 1.0, "diagnostics period, s"))
        input_qos = qos.declare_input_qos(self)
        defaults = TrackerConfig()
        tracker_values = {
            f.name: declare(
                self, f.name, getattr(defaults, f.name),
                TRACKER_PARAMETERS.get(f.name, f"iphd.tracking.tracker.TrackerConfig.{f.name}"),
                dynamic=f.name in DYNAMIC_TRACKER_PARAMETERS,
            )
            for f in dataclasses.fields(TrackerConfig)
        }

        # Counters and latencies are written by the executor and the worker thread.
        self._lock = threading.Lock()
        self._errors: dict[str, int] = {}
        self._last_error = ""
        self._stage_ms: dict[str, deque[float]] = {
            k: deque(maxlen=200) for k in ("embedding", "tracking")
        }
        self._state_counts = dict.fromkeys((TENTATIVE, CONFIRMED, LOST), 0)
        self._detections_rate = RateMeter()
        self._depth_rate = RateMeter()
        self._tracks_rate = RateMeter()
        self._published = 0
        self._tracks_published = 0
        self._confirmed_max = 0
        self._clock_jumps = 0
        # Detections stamped a leap past the last tracked, held until the next shows whether
        # the stream goes on from them (a real gap) or was a stray stamp; and since when.
        # The worker thread's alone.
        self._held: Matched[_Depth, DetectionFrame] | None = None
        self._held_since = 0.0
        self._queue_dropped = 0
        self._without_depth = 0
        self._without_depth_run = 0
        # Detection arrays dropped in a row for want of a transform into tracking_frame.
        self._without_transform_run = 0
        self._queries = 0
        self._queries_refused = 0
        self._started_ns = time.monotonic_ns()
        self._frame_warned = False
        self._depth_info: tuple[int, int, float, float] | None = None  # width, height, fx, fy
        self._depth_info_rejected = ""  # why the last depth camera_info was not usable
        self._warn_drop = DropWarnings(self)
        self._frame_id = self._tracking_frame
        # Detections into tracking_frame, None = tracks stay in the detections' frame.
        self._to_tracking: ListeningLookup | None = None
        if self._tracking_frame:
            self._to_tracking = tf_lookup(self, tf_timeout_s)
        self._pair_lock = threading.Lock()
        self.pairing: DepthPairing[_Depth, DetectionFrame] = DepthPairing()

        self.tracker: Tracker | None = None
        self.reid: FeatureExtractor | None = None
        self.query_extractor: FeatureExtractor | None = None
        self._tracker_lock = threading.Lock()
        try:
            _check_query(self._query_top_k, self._query_max_distance)
            self.config = TrackerConfig(**tracker_values)
            if self._to_tracking is None and self.config.up_axis != OPTICAL_UP_AXIS:
                why = ("tf2_ros is not installed, so tracks stay in the detections' frame"
                       if self._tracking_frame else "tracking_frame is empty")
                raise ConfigError(
                    f"up_axis is '{self.config.up_axis}', but up_axis must match the frame the "
                    f"tracks are in: {OPTICAL_UP_AXIS} for the camera optical frame ({why}); "
                    f"set up_axis to {OPTICAL_UP_AXIS}"
                )
            if self._to_tracking is not None and self.config.up_axis == OPTICAL_UP_AXIS:
                self.get_logger().warning(
                    f"tracking_frame '{self._tracking_frame}' with up_axis {OPTICAL_UP_AXIS}: "
                    "odom and map have z up (REP 103); set up_axis to z unless this frame is "
                    "an optical one"
                )
            self.tracker = Tracker(self.config)
        except IphdError as exc:
            self.config = defaults
            self._fail("config", f"tracker not started: {exc}; fix the parameter")
        # Why the node will publish nothing, kept apart from later input errors.
        self._start_error = self._last_error if self.tracker is None else ""
        load = (device, backend, threads)
        self._not_loaded: dict[str, str] = {}
        self._reid_model = self._load(reid_checkpoint, "depth", *load, "reid_checkpoint")
        self._query_model = self._load(query_checkpoint, "rgb", *load, "query_checkpoint")
        pair_problem = query_pair_problem(reid_checkpoint, query_checkpoint)
        if pair_problem is not None and self.reid is not None and self.query_extractor is not None:
            self.get_logger().warning(pair_problem)

        self._queue: deque[Matched[_Depth, DetectionFrame]] = deque()
        self._max_queue = max(1, max_queue)
        self._wake = threading.Condition()
        self._stopping = False

        self._tracks_pub = self.create_publisher(PersonTrackArray, "tracks", qos.RESULT_PUB)
        self._markers_pub = self.create_publisher(MarkerArray, "markers", qos.RESULT_PUB)
        self._image_pub = self.create_publisher(Image, "debug/tracks_image", qos.RESULT_PUB)
        self._query_pub = self.create_publisher(TrackQueryResult, "query/result", qos.RESULT_PUB)
        # vision_msgs for other tools (people layers, Foxglove), when installed.
        self._vision = load_vision_msgs() if publish_vision else None
        self._vision_pub = None
        if self._vision is not None:
            self._vision_pub = self.create_publisher(
                self._vision.Detection3DArray, "vision_tracks", qos.RESULT_PUB
            )
        elif publish_vision:
            self.get_logger().info(
                "vision_msgs is not installed: vision_tracks is not published (apt install "
                "ros-$ROS_DISTRO-vision-msgs, or set publish_vision_msgs to false)"
            )
        self._vision_state = (
            "on" if self._vision is not None else "not installed" if publish_vision else "off"
        )
        self.diagnostics = DiagnosticsReporter(self, "tracker", period, self.stats, self._status)
        self.create_subscription(
            PersonDetectionArray, "detections", self._on_detections, input_qos,
            event_callbacks=qos.warn_on_incompatible_qos(self, "detections"),
        )
        if self.reid is not None:
            # Depth is only needed to crop people for the appearance model.
            self.create_subscription(
                Image, "depth/image_raw", self._on_depth, input_qos,
                event_callbacks=qos.warn_on_incompatible_qos(self, "depth/image_raw"),
            )
            # Metric crops are cut at the person's distance: they need the focal lengths.
            self.create_subscription(
                CameraInfo, "depth/camera_info", self._on_depth_info, input_qos,
                event_callbacks=qos.warn_on_incompatible_qos(self, "depth/camera_info"),
            )
        self.create_subscription(
            Image, "query/image", self._on_query, input_qos,
            event_callbacks=qos.warn_on_incompatible_qos(self, "query/image"),
        )
        self.create_service(QueryTracks, "query/tracks", self._on_query_service)
        on_parameters_set(
            self, DYNAMIC_TRACKER_PARAMETERS | DYNAMIC_OUTPUT_PARAMETERS, self._set_parameters
        )
        # Depth silence counts from here, not from before the models loaded: a first ONNX
        # export takes seconds, and the first frames must still wait for their depth.
        self._started_ns = time.monotonic_ns()
        self._thread = threading.Thread(target=self._work, name="tracker_worker", daemon=True)
        self._thread.start()

    def _set_parameters(self, changes: dict[str, Any]) -> None:
        """Apply run-time parameter changes at once, all or none (``on_parameters_set``)."""
        if self.tracker is None:
            raise ConfigError(
                f"the tracker did not start ({self._start_error}): fix the parameters file and "
                "restart the node"
            )
        tracker_changes = {k: v for k, v in changes.items() if k in DYNAMIC_TRACKER_PARAMETERS}
        config = dataclasses.replace(self.config, **tracker_changes)
        top_k = int(changes.get("query_top_k", self._query_top_k))
        max_distance = float(changes.get("query_max_distance", self._query_max_distance))
        _check_query(top_k, max_distance)
        with self._tracker_lock:
            self.tracker.reconfigure(config)
            self.config = config
            self._query_top_k, self._query_max_distance = top_k, max_distance
            self._with_embeddings = bool(changes.get("publish_embeddings", self._with_embeddings))
            self._publish_tentative = bool(
                changes.get("publish_tentative", self._publish_tentative)
            )

    def _load(
        self, path: str, modality: str, device: str, backend: str, threads: int, parameter: str
    ) -> str:
        """Load an extractor into ``self.reid`` / ``self.query_extractor``; return its name."""
        try:
            extractor = load_extractor(path, modality, device, backend, threads)
        except IphdError as exc:
            message = f"{modality} re-ID embedder not loaded: {exc}. Fix '{parameter}'"
            self._fail("model", message)
            self._not_loaded[modality] = message  # for the runner's last line
            extractor = None
        if extractor is None:
            return "none"
        if modality == "depth":
            self.reid = extractor
        else:
            self.query_extractor = extractor
        name = path or "shipped"
        self.get_logger().info(
            f"loaded {modality} re-ID embedder {name} on {extractor.device} "
            f"({extractor.backend})"
        )
        return name

    # -- inputs (executor thread) --------------------------------------------------------------

    def _on_detections(self, msg: PersonDetectionArray) -> None:
        self._detections_rate.tick()
        try:
            frame = detections_from_msg(msg)
        except IphdError as exc:
            self._drop("bad_detections", f"detections dropped: {exc}")
            return
        if frame.rejected:
            self._drop(
                "bad_detection",
                f"{len(frame.rejected)} detection(s) at stamp {frame.stamp_ns} ns dropped: "
                + "; ".join(frame.rejected),
            )
        if self.reid is None:
            self._enqueue([Matched(frame.stamp_ns, frame, None)])
            return
        with self._pair_lock:
            ready: list[Matched[_Depth, DetectionFrame]] = []
            if self._depth_silent():
                # No depth stream: do not hold detections back for depth that will not come.
                ready = self.pairing.flush() + [Matched(frame.stamp_ns, frame, None)]
            else:
                duplicates = self.pairing.duplicates
                ready = self.pairing.push_detections(frame.stamp_ns, frame)
                if self.pairing.duplicates != duplicates:
                    self._drop(
                        "duplicate_detections",
                        f"detections at stamp {frame.stamp_ns} ns dropped: that stamp was "
                        "already received or processed",
                    )
        self._enqueue(ready)

    def _on_depth(self, msg: Image) -> None:
        self._depth_rate.tick()
        if not self._frame_id:
            # The detections' frame is the depth image's: a query answered before the first
            # detections names it, not an empty frame.
            self._frame_id = msg.header.frame_id
        try:
            depth_mm = depth_to_mm(image_to_array(msg, DEPTH_ENCODINGS), msg.encoding)
            stamp_ns = header_stamp_ns(msg.header)
        except IphdError as exc:
            self._drop("bad_depth", f"depth frame dropped: {exc}")
            return
        with self._pair_lock:
            ready = self.pairing.push_depth(stamp_ns, _Depth(depth_mm))
        self._enqueue(ready)

    def _on_depth_info(self, msg: CameraInfo) -> None:
        try:
            info = camera_info_to_intrinsics(msg)
        except IphdError as exc:
            self._depth_info_rejected = str(exc)
            self._drop(
                "bad_depth_info", f"{topic_label(self, 'depth/camera_info')} ignored: {exc}"
            )
            return
        self._depth_info_rejected = ""
        with self._lock:
            self._depth_info = (info.width, info.height, info.fx, info.fy)

    def _on_query(self, msg: Image) -> None:
        try:
            matches = self._match(msg, 0)
        except _QueryUnavailableError as exc:
            self.get_logger().warning(f"query/image ignored: {exc}", throttle_duration_sec=5.0)
            return
        except (IphdError, ValueError, RuntimeError) as exc:  # RuntimeError: the embedder's
            self._drop("bad_query", f"query/image dropped: {exc}")
            return
        self._query_pub.publish(
            query_result_msg(stamp_to_ns(msg.header.stamp), self._frame_id, matches)
        )

    def _on_query_service(
        self, request: QueryTracks.Request, response: QueryTracks.Response
    ) -> QueryTracks.Response:
        stamp_ns = stamp_to_ns(request.image.header.stamp)
        try:
            matches = self._match(request.image, int(request.top_k))
        except _QueryUnavailableError as exc:
            response.success, response.message = False, str(exc)
            return response
        except (IphdError, ValueError, RuntimeError) as exc:
            # The caller has the reason: not an input error of the node's own (no lasting WARN).
            with self._lock:
                self._queries_refused += 1
            response.success, response.message = False, f"query image refused: {exc}"
            return response
        response.success = True
        response.result = query_result_msg(stamp_ns, self._frame_id, matches)
        return response

    def _match(self, image: Image, top_k: int) -> list[tuple[int, float]]:
        """The live tracks nearest to an RGB person crop (``top_k`` 0 = ``query_top_k``)."""
        with self._lock:
            self._queries += 1
        extractor = self.query_extractor
        if extractor is None or self.tracker is None:
            why = (
                "no RGB re-ID embedder loaded; set the 'query_checkpoint' parameter to an RGB "
                "embedder checkpoint (training/train_reid.py)"
                if extractor is None else f"the tracker did not start ({self._start_error})"
            )
            raise _QueryUnavailableError(why)
        silent = self._detections_rate.age_s()
        if self._detections_rate.count and silent > self.config.lost_timeout_s:
            # Tracks only age when detections come: these would have been deleted by now,
            # and would be answered as live.
            raise _QueryUnavailableError(
                f"no detections for {silent:.1f} s, longer than lost_timeout_s "
                f"({self.config.lost_timeout_s:g} s): the tracks are out of date (is the "
                "detector running?)"
            )
        if self.reid is None:
            # Tracks then carry no depth embeddings: an empty answer would look like no match.
            raise _QueryUnavailableError(
                "tracks have no appearance to match: no depth re-ID embedder is loaded "
                "(reid_checkpoint none); set 'reid_checkpoint' to a depth embedder (empty = "
                "the shipped one)"
            )
        rgb = image_to_array(image, QUERY_ENCODINGS)
        if image.encoding == "bgr8":
            rgb = np.ascontiguousarray(rgb[..., ::-1])
        embedding = extractor([letterbox(rgb, crop_size(extractor))])[0]
        with self._tracker_lock:
            return self.tracker.query(
                embedding, top_k or self._query_top_k, self._query_max_distance
            )

    def _enqueue(self, ready: list[Matched[_Depth, DetectionFrame]]) -> None:
        if not ready:
            return
        with self._wake:
            for item in ready:
                if len(self._queue) >= self._max_queue:
                    self._queue.popleft()
                    self._queue_dropped += 1
                self._queue.append(item)
            self._wake.notify()

    # -- worker thread -------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._wake:
                if not self._queue and not self._stopping:
                    self._wake.wait(timeout=0.2)
                if self._stopping:
                    return
                item = self._queue.popleft() if self._queue else None
            if item is None:
                self._flush_if_depth_silent()
                if self._held is not None and time.monotonic() - self._held_since > SILENCE_S:
                    item, self._held = self._held, None  # nothing came after it: a gap
                else:
                    continue
                items = [item]
            else:
                items = self._admit(item)
            for item in items:
                self._guarded(item)

    def _guarded(self, item: Matched[_Depth, DetectionFrame]) -> None:
        """Track one frame; an error costs that frame alone."""
        try:
            self._process(item)
        except (IphdError, ValueError, RuntimeError) as exc:
            self._drop("tracking", f"detections at stamp {item.stamp_ns} ns dropped: {exc}")
        except Exception as exc:  # noqa: BLE001 - a bug must cost one frame, not the thread
            self._fail(
                "internal",
                f"detections at stamp {item.stamp_ns} ns dropped by an internal error "
                f"({type(exc).__name__}: {exc}); please report it with the log",
            )
            # WARN for the input-error window after it, as a dropped input
            self._warn_drop.passed("internal")

    def _admit(
        self, item: Matched[_Depth, DetectionFrame]
    ) -> list[Matched[_Depth, DetectionFrame]]:
        """The frames to track now, in order.

        Detections stamped more than ``LEAP_AHEAD_NS`` past the last tracked are held for one
        message. Tracked at once, a stray stamp an hour ahead would expire every track, and the
        next message, back on the stream's time, would look like a clock jump and reset them.
        If the next message goes on from the held one, the gap was real and both are tracked
        (or after ``SILENCE_S`` with nothing else); if it comes back near the last tracked, the
        held one is dropped as a stray stamp and the tracks are kept.
        """
        last_ns = self.tracker.stamp_ns if self.tracker is not None else None
        held, self._held = self._held, None
        if held is not None:
            if item.stamp_ns > held.stamp_ns:
                return [held, item]
            if last_ns is not None and item.stamp_ns > last_ns + LEAP_AHEAD_NS:
                return [item, held]  # a real gap, two messages out of order
            self._drop(
                "stamp_leap",
                f"detections at stamp {held.stamp_ns} ns dropped: "
                f"{(held.stamp_ns - (last_ns or 0)) / 1e9:.1f} s after the last tracked "
                f"({last_ns} ns), while the next came at {item.stamp_ns} ns; a stray stamp "
                "(check the publisher's clock), the tracks are kept",
            )
            return [item]
        if last_ns is not None and item.stamp_ns > last_ns + LEAP_AHEAD_NS:
            self._held, self._held_since = item, time.monotonic()
            return []
        return [item]

    def _depth_silent(self) -> bool:
        """No depth frame for SILENCE_S (counted from start-up until the first one)."""
        last_ns = self._depth_rate.last_ns or self._started_ns
        return time.monotonic_ns() - last_ns > SILENCE_S * 1e9

    def _flush_if_depth_silent(self) -> None:
        if self.reid is None or not self._depth_silent():
            return
        with self._pair_lock:
            ready = self.pairing.flush() if self.pairing.waiting else []
        self._enqueue(ready)

    def _embed(self, frame: DetectionFrame, depth: _Depth | None) -> list[np.ndarray | None]:
        embeddings: list[np.ndarray | None] = [None] * len(frame.inputs)
        if self.reid is None:
            return embeddings
        with self._lock:
            self._without_depth_run = 0 if depth is not None else self._without_depth_run + 1
            self._without_depth += depth is None
        if depth is None:
            return embeddings
        if not frame.inputs:
            return embeddings
        if depth.depth_mm.shape != (frame.height, frame.width):
            self._drop(
                "depth_size_mismatch",
                f"no appearance at stamp {frame.stamp_ns} ns: the depth image is "
                f"{depth.depth_mm.shape[1]}x{depth.depth_mm.shape[0]} but the detections refer "
                f"to {frame.width}x{frame.height}",
            )
            return embeddings
        with self._lock:
            info = self._depth_info
        focal: tuple[float, float] | None = None
        if info is not None and (info[0], info[1]) == (frame.width, frame.height):
            focal = (info[2], info[3])
        if focal is None and self.reid.normalize.depth_crop == "metric":
            have = (f"it is for {info[0]}x{info[1]}" if info is not None else
                    f"received but rejected: {self._depth_info_rejected}"
                    if self._depth_info_rejected else "none received yet")
            self._drop(
                "no_depth_info",
                f"no appearance at stamp {frame.stamp_ns} ns: the re-ID embedder takes metric "
                f"crops, which need {topic_label(self, 'depth/camera_info')} for the "
                f"{frame.width}x{frame.height} "
                f"depth image ({have})",
            )
            return embeddings
        start = time.monotonic()
        crops, indices = depth_crops(
            depth.depth_mm, [d.box_xyxy for d in frame.inputs], crop_size(self.reid),
            self.reid.normalize, focal,
        )
        if crops:
            for index, embedding in zip(indices, self.reid(crops), strict=True):
                embeddings[index] = embedding
        with self._lock:
            self._stage_ms["embedding"].append((time.monotonic() - start) * 1e3)
        return embeddings

    def _process(self, item: Matched[_Depth, DetectionFrame]) -> None:
        if self.tracker is None:
            return
        frame = item.detections
        positions = [d.position_m for d in frame.inputs]
        with self._tracker_lock:
            last_ns = self.tracker.stamp_ns
            # Before the lookup: after a bag loop the TF buffer holds the last pass's future,
            # and tf2 would refuse the new pass's transforms as too old.
            if last_ns is not None and frame.stamp_ns <= last_ns and self._went_back(
                frame.stamp_ns, last_ns
            ):
                return
        # Nothing to place (nobody in view, or no valid depth): tracked without a transform,
        # so lost tracks still age and expire while the robot's TF is late.
        if (self._to_tracking is not None and frame.frame_id != self._tracking_frame
                and any(bool(np.all(np.isfinite(p))) for p in positions)):
            try:
                transform = self._to_tracking(self._tracking_frame, frame.frame_id, frame.stamp_ns)
            except LookupError as exc:
                self._without_transform_run += 1
                self._drop(
                    "no_transform",
                    f"detections at {frame.stamp_ns} ns dropped: no transform from "
                    f"'{frame.frame_id}' into tracking_frame '{self._tracking_frame}' at their "
                    f"stamp ({exc}); is the robot's TF (e.g. odom -> base_link -> camera) "
                    "published?",
                )
                return
            self._without_transform_run = 0
            positions = [transform.apply(p) for p in positions]
        embeddings = self._embed(frame, item.depth)
        inputs = [
            TrackInput(d.box_xyxy, d.score, p, e)
            for d, p, e in zip(frame.inputs, positions, embeddings, strict=True)
        ]
        start = time.monotonic()
        with self._tracker_lock:
            try:
                tracks = self.tracker.update(frame.stamp_ns, inputs)
            except TimeOrderError:
                if self._went_back(frame.stamp_ns, self.tracker.stamp_ns):
                    return
                tracks = self.tracker.update(frame.stamp_ns, inputs)
        tracked = time.monotonic()
        shown = self._publish(tracks, frame, item.depth)
        with self._lock:
            self._tracks_published += shown
            self._stage_ms["tracking"].append((tracked - start) * 1e3)
            self._state_counts = {
                state: sum(t.state == state for t in tracks) for state in self._state_counts
            }
            self._confirmed_max = max(self._confirmed_max, self._state_counts[CONFIRMED])
            self._published += 1
            self._tracks_rate.tick()

    def _publish(
        self, tracks: list[TrackState], frame: DetectionFrame, depth: _Depth | None
    ) -> int:
        """Publish the tracks and their markers; return how many tracks were published."""
        frame_id = self._frame_id = self._output_frame(frame.frame_id)
        shown = [t for t in tracks if self._publish_tentative or t.state != TENTATIVE]
        self._tracks_pub.publish(
            tracks_to_msg(shown, frame.stamp_ns, frame_id, self._with_embeddings)
        )
        self._markers_pub.publish(
            tracks_to_markers(shown, frame.stamp_ns, frame_id, self.config.up_axis)
        )
        vision, vision_pub = self._vision, self._vision_pub
        if vision is not None and vision_pub is not None and vision_pub.get_subscription_count():
            vision_pub.publish(
                tracks_to_vision(vision, shown, frame.stamp_ns, frame_id, self.config.up_axis)
            )
        if self._image_pub.get_subscription_count():
            self._publish_image(shown, frame, depth)
        return len(shown)

    def _publish_image(
        self, tracks: list[TrackState], frame: DetectionFrame, depth: _Depth | None
    ) -> None:
        """``debug/tracks_image``: the tracks over the depth frame, in the detections' pixels."""
        depth_mm = None if depth is None else depth.depth_mm
        size = (frame.width, frame.height)
        if min(size) <= 0 and depth_mm is not None:  # a detector that gives no image size
            size = (depth_mm.shape[1], depth_mm.shape[0])
        if min(size) <= 0:
            return
        picture = render_tracks_image(depth_mm, tracks, size)
        self._image_pub.publish(array_to_image(picture, "bgr8", frame.stamp_ns, frame.frame_id))

    def _went_back(self, stamp_ns: int, last_ns: int | None) -> bool:
        """Detections stamped at or before the last tracked: True if they are to be dropped.

        Up to ``JUMP_BACK_NS`` back they are a repeated or out-of-order message, dropped and
        counted with the tracks kept; further back the clock jumped and everything starts over
        (``_time_jumped``), and they are tracked. The caller holds ``_tracker_lock``.
        """
        if last_ns is None or stamp_ns <= last_ns - JUMP_BACK_NS:
            self._time_jumped(stamp_ns, last_ns)
            return False
        self._drop(
            "stale_detections",
            f"detections at stamp {stamp_ns} ns dropped: not after the last tracked "
            f"({last_ns} ns), a repeated or out-of-order message; the tracks are kept (stamps "
            f"more than {JUMP_BACK_NS / 1e9:g} s back would be a clock jump and reset them)",
        )
        return True

    def _time_jumped(self, stamp_ns: int, last_ns: int | None) -> None:
        """Start over after detections stamps went back: tracks, pairing and the TF buffer.

        The caller holds ``_tracker_lock``.
        """
        self.get_logger().warning(
            f"detections stamp {stamp_ns} ns is not after the last one ({last_ns} ns): clock "
            "jumped back (bag loop or restart); tracks and pairing reset"
            + (", and the transforms before it forgotten" if self._to_tracking else "")
        )
        assert self.tracker is not None
        self.tracker.reset()
        with self._pair_lock:
            self.pairing.reset()
        if self._to_tracking is not None:
            self._to_tracking.reset(stamp_ns)
        with self._lock:
            self._clock_jumps += 1

    def _output_frame(self, detections_frame: str) -> str:
        wanted = self._tracking_frame
        if self._to_tracking is not None:
            return wanted
        if wanted and wanted != detections_frame and not self._frame_warned:
            self._frame_warned = True
            self.get_logger().error(
                f"tracking_frame '{wanted}' differs from the detections' frame "
                f"'{detections_frame}', but tf2_ros is not installed (ROS from apt has it), so "
                f"nothing can transform them: tracks are published in '{detections_frame}'; "
                "install tf2_ros or leave tracking_frame empty"
            )
        return detections_frame

    def close(self) -> None:
        """Stop the worker thread (queued frames are dropped); idempotent.

        Also safe on a node whose constructor raised (a parameter of the wrong type): rclpy
        destroys such a node at shutdown too.
        """
        wake = getattr(self, "_wake", None)
        if wake is not None:
            with wake:
                self._stopping = True
                self._queue.clear()
                wake.notify_all()
        thread = getattr(self, "_thread", None)
        if thread is not None and thread.is_alive():
            thread.join(timeout=5.0)
        undo = getattr(self, "_undo_logs", None)
        if undo is not None:
            undo()  # removing a handler twice is a no-op

    def destroy_node(self) -> None:
        """Stop the worker thread, then destroy the node."""
        self.close()
        super().destroy_node()

    # -- reporting -----------------------------------------------------------------------------

    def _count(self, kind: str) -> None:
        with self._lock:
            self._errors[kind] = self._errors.get(kind, 0) + 1

    def _fail(self, kind: str, message: str) -> None:
        self._count(kind)
        self._last_error = message
        self.get_logger().error(message, throttle_duration_sec=5.0)

    def _drop(self, kind: str, message: str) -> None:
        self._count(kind)
        self._last_error = message
        self._warn_drop(kind, message)

    @property
    def published(self) -> int:
        """Track arrays published so far."""
        return self._published

    def stats(self) -> dict[str, Any]:
        """Counters, rates and latencies for diagnostics and the runner's summary."""
        with self._wake:
            queue_length = len(self._queue)
        with self._lock:
            errors = dict(self._errors)
            stage_ms = {k: list(v) for k, v in self._stage_ms.items()}
            states = dict(self._state_counts)
            values: dict[str, Any] = {
                "reid_model": self._reid_model,
                "query_model": self._query_model,
                **{f"not_loaded_{m}": why for m, why in self._not_loaded.items()},
                **({"not_started": self._start_error} if self._start_error else {}),
                "vision_msgs": self._vision_state,
                "device": str(self.reid.device) if self.reid is not None else "none",
                "backend": self.reid.backend if self.reid is not None else "none",
                "detections_rate_hz": self._detections_rate.rate_hz(),
                "depth_rate_hz": self._depth_rate.rate_hz(),
                "tracks_rate_hz": self._tracks_rate.rate_hz(),
                "detections_received": self._detections_rate.count,
                "published": self._published,
                "tracks_published": self._tracks_published,
                "tracks_confirmed_max": self._confirmed_max,
                "queries": self._queries,
                "queries_refused": self._queries_refused,
                "clock_jumps": self._clock_jumps,
                "frames_dropped_queue_full": self._queue_dropped,
                "queue_length": queue_length,
                "queue_length_cap": self._max_queue,
                "frames_without_depth": self._without_depth,
                "frames_without_depth_run": self._without_depth_run,
                "frames_without_transform_run": self._without_transform_run,
            }
        with self._pair_lock:
            values["frames_waiting_for_depth"] = self.pairing.waiting
            values["frames_waiting_for_depth_cap"] = self.pairing.pairer.registered_buffer
            values["pending_depth"] = self.pairing.pairer.pending_depth
            values["pending_depth_cap"] = self.pairing.pairer.depth_buffer
        values.update({f"tracks_{state}": n for state, n in states.items()})
        if self.tracker is not None:
            values.update(
                {f"tracker_{k}": v for k, v in dataclasses.asdict(self.tracker.stats).items()}
            )
        for stage, times in stage_ms.items():
            if times:
                p50, p95 = np.percentile(np.asarray(times), [50, 95])
                values[f"{stage}_ms_p50"] = float(p50)
                values[f"{stage}_ms_p95"] = float(p95)
        values.update({f"errors_{k}": v for k, v in errors.items()})
        return values

    def _status(self, values: dict[str, Any]) -> tuple[str, str]:
        silent = self._detections_rate.age_s()
        if self.tracker is None:  # why it publishes nothing, not a later input error
            return "ERROR", self._start_error
        if self._detections_rate.count and silent > SILENCE_S:
            return "ERROR", f"no detections for {silent:.1f} s (is the detector running?)"
        waited = (time.monotonic_ns() - self._started_ns) / 1e9
        if not self._detections_rate.count and waited > STARTUP_GRACE_S:
            return "ERROR", (
                f"no {topic_label(self, 'detections')} since the start, {waited:.0f} s ago (is "
                "the detector running, on the same topic?)"
            )
        run = values.get("frames_without_transform_run", 0)
        if run >= UNPAIRED_RUN:  # nothing is tracked or published
            return "ERROR", (
                f"the last {run} detection arrays were dropped: no transform into "
                f"tracking_frame '{self._tracking_frame}' at their stamps; publish the robot's "
                "TF (e.g. odom -> base_link -> camera), or set tracking_frame '' to track in "
                "the camera's frame"
            )
        if self.reid is None:
            return "WARN", (
                "appearance disabled (no depth re-ID embedder; see 'reid_checkpoint'): "
                "tracking by position only"
            )
        run = values.get("frames_without_depth_run", 0)
        if run >= UNPAIRED_RUN:
            depth = topic_label(self, "depth/image_raw")
            if self._depth_silent():
                return "WARN", (f"no {depth} for over {SILENCE_S:g} s: tracking by position "
                                "only, without appearance")
            return "WARN", (
                f"the last {run} detection arrays found no {depth} frame with their stamp: "
                "tracking by position only, without appearance; give the tracker the depth "
                "topic the detector gets, with its stamps unchanged (check both nodes' "
                "remappings, and any relay or republisher between them)"
            )
        if self._warn_drop.current(self._errors):
            return "WARN", f"input errors: {self._last_error}"
        return "OK", "tracking"


def main(args: list[str] | None = None) -> None:
    """Run the tracker node until Ctrl-C."""
    spin_node(TrackerNode, args)
