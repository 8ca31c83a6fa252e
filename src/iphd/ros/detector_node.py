"""Detector node: pairs depth with registered thermal, runs the person detector, publishes."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
from iphd_msgs.msg import PersonDetectionArray
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image

from iphd.detection.verifier import BoxVerifier, detector_mismatch, load_box_verifier
from iphd.detection.verifier import describe as describe_verifier
from iphd.detections import (
    CPU_DEFAULT_BACKEND,
    DetectionConfig,
    StampPair,
    StampPairer,
    checked_detections,
    load_detector,
    render_debug_image,
)
from iphd.errors import ConfigError, IphdError
from iphd.fusion import depth_to_mm
from iphd.ros import qos
from iphd.ros.common import (
    RESET_CAUSES,
    RESET_WARNING_PERIOD_S,
    STREAM_TIMEOUT_S,
    UNPAIRED_RUN,
    DiagnosticsReporter,
    DropWarnings,
    HeldForInfo,
    RateMeter,
    declare,
    no_camera_info,
    on_parameters_set,
    spin_node,
    topic_label,
)
from iphd.ros.conversions import (
    array_to_image,
    camera_info_to_intrinsics,
    detections_to_msg,
    header_stamp_ns,
    image_to_array,
)
from iphd.ros.fusion_node import DEPTH_ENCODINGS, FFC_PAUSE_S
from iphd.sensors.frames import CameraIntrinsics

REGISTERED_ENCODINGS = ("16UC1", "mono16")
#: Reasons a pair can be dropped between pairing and publishing.
PAIR_DROP_REASONS = ("queue_full", "stale", "inference_error")
# A pair that waited this long for inference is dropped (``stale``): its detections would be
# too old to track.
STALE_PAIR_S = 1.0
# The thresholds applied to each pair's detections: `ros2 param set` changes them at once.
DYNAMIC_PARAMETERS = (
    "score_threshold", "min_thermal_contrast_k", "thermal_min_coverage",
    "min_verifier_probability",
)


@dataclass(frozen=True)
class _Depth:
    depth_mm: np.ndarray
    frame_id: str
    intrinsics: CameraIntrinsics
    received_s: float


@dataclass(frozen=True)
class _Registered:
    thermal_ck: np.ndarray
    received_s: float


@dataclass(frozen=True)
class _Job:
    pair: StampPair[_Depth, _Registered]
    paired_s: float


class DetectorNode(Node):
    """Subscribes depth (+ camera info) and ``thermal/registered``, publishes ``detections``.

    A depth frame and the registered thermal image with exactly its stamp form a pair. Pairs go
    to an inference thread through a queue of ``max_queue`` (oldest dropped), so the executor
    keeps serving callbacks while the network runs. Each pair gives one PersonDetectionArray
    with the depth frame's stamp and frame id, and a ``debug/image`` (bgr8) while that topic has
    subscribers.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("detector", **kwargs)
        checkpoint = declare(
            self, "checkpoint", "", "detector checkpoint (.pt or .onnx); empty = the shipped model"
        )
        device = declare(self, "device", "auto", "auto | cpu | cuda")
        precision = declare(
            self, "precision", "float32",
            "float32 | float16: what torch computes the network in on CUDA (float16 = autocast; "
            "on an H200 it was slower than float32 and moved a box, see the README); the CPU "
            "runs float32 or int8",
        )
        backend = declare(
            self, "backend", "auto",
            "auto | torch | onnxruntime | onnxruntime-int8: what runs a .pt checkpoint; auto = "
            f"torch on CUDA, {CPU_DEFAULT_BACKEND} on the CPU; onnxruntime = float32 ONNX "
            "export, onnxruntime-int8 = that export statically quantized (CPU only); both made "
            "once and cached",
        )
        int8_calibration = declare(
            self, "int8_calibration", "",
            "calibration pairs (.npz) for backend onnxruntime-int8; empty = the shipped ones "
            "(simulator frames; python -m iphd.detection.quantize calibration writes others)",
        )
        score = declare(
            self, "score_threshold", 0.5, "lowest detection score published", dynamic=True
        )
        contrast = declare(
            self, "min_thermal_contrast_k", 0.0,
            "detections whose own pixels are less than this many kelvin warmer than the scene "
            "(mannequins, coats, furniture) are not published; 0 = no thermal check",
            dynamic=True,
        )
        coverage = declare(
            self, "thermal_min_coverage", 0.9,
            "least fraction of a box with real thermal readings (not filled in) for the "
            "thermal check to apply",
            dynamic=True,
        )
        verifier = declare(
            self, "verifier", "",
            "box verifier file (.npz, training/train_verifier.py) that leaves out extra boxes "
            "(a second box on one person, furniture); empty = the shipped one, none = off",
        )
        min_probability = declare(
            self, "min_verifier_probability", -1.0,
            "detections the verifier gives a lower probability of being a person of their own "
            "are not published; negative = the threshold stored in the verifier file",
            dynamic=True,
        )
        threads = declare(
            self, "threads", 1, "CPU threads for inference (torch or onnxruntime); 0 = default"
        )
        max_queue = declare(
            self, "max_queue", 2, "pairs waiting for inference; the oldest is dropped beyond"
        )
        period = declare(self, "diagnostics_period", 1.0, "diagnostics period, s")
        input_qos = qos.declare_input_qos(self)

        # Counters and latencies are written by both the executor and the inference thread.
        self._lock = threading.Lock()
        self._errors: dict[str, int] = {}
        self._last_error = ""
        self._dropped = dict.fromkeys(PAIR_DROP_REASONS, 0)
        self._depth_info: CameraIntrinsics | None = None
        self._depth_info_rejected = ""  # why the last depth camera_info was not usable
        self._depth_rate = RateMeter()
        self._registered_rate = RateMeter()
        self._published_rate = RateMeter()
        self._published = 0
        self._detections_published = 0
        self._detections_last = 0
        self._cold_rejected = 0
        self._verifier_rejected = 0
        self._resets_seen = 0
        self._warn_reset = DropWarnings(self, period_s=RESET_WARNING_PERIOD_S)
        self._warn_drop = DropWarnings(self)
        self._early_depth = HeldForInfo()
        self._stage_ms: dict[str, deque[float]] = {
            k: deque(maxlen=200) for k in ("pairing_wait", "queue_wait", "inference", "publish")
        }
        self._per_frame: deque[int] = deque(maxlen=200)
        self.pairer: StampPairer[_Depth, _Registered] = StampPairer()
        self.config: DetectionConfig | None = None
        self.detector: Any = None
        self.verifier: BoxVerifier | None = None
        try:
            self.config = DetectionConfig(
                checkpoint=str(checkpoint),
                device=str(device),
                precision=str(precision),
                score_threshold=float(score),
                threads=int(threads),
                max_queue=int(max_queue),
                backend=str(backend),
                int8_calibration=str(int8_calibration),
                min_thermal_contrast_k=float(contrast),
                thermal_min_coverage=float(coverage),
                verifier=str(verifier),
                min_verifier_probability=float(min_probability),
            )
        except IphdError as exc:
            # A bad value, not a missing model: say which parameter to fix.
            self._fail("model", f"detector not started: {exc}; fix the parameter in the "
                                "parameters file or launch argument; nothing is published")
        if self.config is not None:
            try:
                self.detector = load_detector(self.config)
                self.get_logger().info(
                    f"loaded detector {self.config.checkpoint_path} on {self.detector.device} "
                    f"({self.detector.precision}, {self._backend()})"
                )
            except IphdError as exc:
                # Keep running so diagnostics say why nothing is published.
                self._fail(
                    "model",
                    f"detector not loaded from {self.config.checkpoint_path}: {exc}. Set the "
                    "'checkpoint' parameter to a trained detector (training/train_detector.py) "
                    "or fix 'device'; nothing is published until then",
                )
        if self.detector is not None and self.config is not None:
            try:
                self.verifier = load_box_verifier(self.config.verifier)
                mismatch = detector_mismatch(self.config.verifier, self.verifier,
                                             self.config.checkpoint_path)
                if mismatch is not None:
                    self.get_logger().warning(mismatch)
            except IphdError as exc:
                self.detector = None
                self._fail(
                    "model",
                    f"box verifier not loaded: {exc}. Set the 'verifier' parameter to a file "
                    "from training/train_verifier.py, or to none to publish without it; "
                    "nothing is published until then",
                )
        # Why the node will publish nothing, kept apart from later input errors.
        self._start_error = self._last_error if self.detector is None else ""

        self._queue: deque[_Job] = deque()
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

        self._pub = self.create_publisher(PersonDetectionArray, "detections", qos.RESULT_PUB)
        self._debug_pub = self.create_publisher(Image, "debug/image", qos.RESULT_PUB)
        self.diagnostics = DiagnosticsReporter(
            self, "detector", float(period), self.stats, self._status
        )
        self.create_subscription(
            Image,
            "depth/image_raw",
            self._on_depth,
            input_qos,
            event_callbacks=qos.warn_on_incompatible_qos(self, "depth/image_raw"),
        )
        self.create_subscription(
            CameraInfo, "depth/camera_info", self._on_depth_info, input_qos,
            event_callbacks=qos.warn_on_incompatible_qos(self, "depth/camera_info"),
        )
        self.create_subscription(
            Image,
            "thermal/registered",
            self._on_registered,
            input_qos,
            event_callbacks=qos.warn_on_incompatible_qos(self, "thermal/registered"),
        )
        on_parameters_set(self, DYNAMIC_PARAMETERS, self._set_parameters)
        if self.detector is not None:
            self._thread = threading.Thread(
                target=self._work, name="detector_inference", daemon=True
            )
            self._thread.start()

    def _set_parameters(self, changes: dict[str, Any]) -> None:
        """Apply run-time parameter changes from the next pair on (``on_parameters_set``)."""
        if self.config is None:
            raise ConfigError(
                f"the detector did not start ({self._start_error}): fix the parameters file "
                "and restart the node"
            )
        # One frozen config replaces the other: a pair in inference uses one or the other whole.
        self.config = dataclasses.replace(self.config, **changes)

    # -- inputs --------------------------------------------------------------------------------

    def _on_depth_info(self, msg: CameraInfo) -> None:
        try:
            self._depth_info = camera_info_to_intrinsics(msg)
        except IphdError as exc:
            self._depth_info_rejected = str(exc)
            self._drop("bad_depth_camera_info",
                       f"{topic_label(self, 'depth/camera_info')} rejected: {exc}")
            return
        self._depth_info_rejected = ""
        for early in self._early_depth.release():
            self._take_depth(early, self._depth_info)

    def _no_depth_info(self) -> str:
        return no_camera_info(self, "depth/camera_info", self._depth_info_rejected)

    def _on_depth(self, msg: Image) -> None:
        self._depth_rate.tick()
        if self.detector is None:
            return
        info = self._depth_info
        if info is None:
            # The first images may beat their info: held until it comes. Only a lasting
            # absence is an error.
            self._early_depth.hold(msg)
            if self._early_depth.dropped:
                self._drop(
                    "no_depth_camera_info", f"depth frames dropped: {self._no_depth_info()}"
                )
            return
        self._take_depth(msg, info)

    def _take_depth(self, msg: Image, info: CameraIntrinsics) -> None:
        try:
            depth_mm = depth_to_mm(image_to_array(msg, DEPTH_ENCODINGS), msg.encoding)
            stamp_ns = header_stamp_ns(msg.header)
        except IphdError as exc:
            self._drop("bad_depth", f"depth frame dropped: {exc}")
            return
        if depth_mm.shape != (info.height, info.width):
            self._drop(
                "depth_size_mismatch",
                f"depth frame dropped: it is {depth_mm.shape[1]}x{depth_mm.shape[0]} but "
                f"{topic_label(self, 'depth/camera_info')} is {info.width}x{info.height}",
            )
            return
        frame = _Depth(depth_mm, msg.header.frame_id, info, time.monotonic())
        self._handle(self.pairer.push_depth(stamp_ns, frame))

    def _on_registered(self, msg: Image) -> None:
        self._registered_rate.tick()
        if self.detector is None:
            return
        try:
            thermal_ck = image_to_array(msg, REGISTERED_ENCODINGS)
            stamp_ns = header_stamp_ns(msg.header)
        except IphdError as exc:
            self._drop("bad_registered", f"thermal/registered frame dropped: {exc}")
            return
        frame = _Registered(thermal_ck, time.monotonic())
        self._handle(self.pairer.push_registered(stamp_ns, frame))

    def _handle(self, pairs: list[StampPair[_Depth, _Registered]]) -> None:
        if self.pairer.stats.resets != self._resets_seen:
            self._resets_seen = self.pairer.stats.resets
            self._warn_reset(
                "reset", f"stamps jumped backwards ({RESET_CAUSES}): pairing buffers reset"
            )
        if self.pairer.stats.no_depth_run >= UNPAIRED_RUN:
            self.get_logger().error(self._no_depth_reason(), throttle_duration_sec=5.0)
        assert self.config is not None
        max_queue = self.config.max_queue
        now = time.monotonic()
        for pair in pairs:
            first = min(pair.depth.received_s, pair.registered.received_s)
            with self._lock:
                self._stage_ms["pairing_wait"].append((now - first) * 1e3)
            with self._wake:
                if len(self._queue) >= max_queue:
                    self._queue.popleft()
                    self._count(self._dropped, "queue_full")
                self._queue.append(_Job(pair, now))
                self._wake.notify()

    # -- inference thread ----------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._stopping:
                    self._wake.wait()
                if self._stopping:
                    return
                job = self._queue.popleft()
            try:
                self._process(job)
            except Exception as exc:  # noqa: BLE001 - a bug must cost one pair, not the thread
                self._count(self._dropped, "inference_error")
                self._fail(
                    "internal",
                    f"pair at stamp {job.pair.stamp_ns} ns dropped by an internal error "
                    f"({type(exc).__name__}: {exc}); please report it with the log",
                )
                # WARN for the input-error window after it, as a dropped input
                self._warn_drop.passed("internal")

    def _process(self, job: _Job) -> None:
        assert self.config is not None
        start = time.monotonic()
        if start - job.paired_s > STALE_PAIR_S:
            self._count(self._dropped, "stale")
            return
        depth, registered = job.pair.depth, job.pair.registered
        try:
            found = self.detector(depth.depth_mm, registered.thermal_ck)
            inferred = time.monotonic()
            people, cold, unverified = checked_detections(
                found, depth.depth_mm, registered.thermal_ck, depth.intrinsics, self.config,
                self.verifier,
            )
        except (IphdError, RuntimeError) as exc:
            self._count(self._dropped, "inference_error")
            self._drop("inference", f"pair at stamp {job.pair.stamp_ns} ns dropped: {exc}")
            return
        height, width = depth.depth_mm.shape
        self._pub.publish(
            detections_to_msg(people, job.pair.stamp_ns, depth.frame_id, width, height)
        )
        if self._debug_pub.get_subscription_count() > 0:
            picture = render_debug_image(
                depth.depth_mm, registered.thermal_ck, people, cold=cold, unverified=unverified
            )
            self._debug_pub.publish(
                array_to_image(picture, "bgr8", job.pair.stamp_ns, depth.frame_id)
            )
        done = time.monotonic()
        with self._lock:
            self._stage_ms["queue_wait"].append((start - job.paired_s) * 1e3)
            self._stage_ms["inference"].append((inferred - start) * 1e3)
            self._stage_ms["publish"].append((done - inferred) * 1e3)
            self._per_frame.append(len(people))
            self._detections_last = len(people)
            self._detections_published += len(people)
            self._cold_rejected += len(cold)
            self._verifier_rejected += len(unverified)
            self._published += 1
            self._published_rate.tick()

    def close(self) -> None:
        """Stop the inference thread (pending pairs are dropped)."""
        if not hasattr(self, "_wake"):  # the constructor failed before the thread existed
            return
        with self._wake:
            self._stopping = True
            self._queue.clear()
            self._wake.notify_all()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=5.0)

    def destroy_node(self) -> None:
        """Stop the inference thread, then destroy the node."""
        self.close()
        super().destroy_node()

    # -- reporting -----------------------------------------------------------------------------

    def _count(self, counters: dict[str, int], kind: str) -> None:
        with self._lock:
            counters[kind] = counters.get(kind, 0) + 1

    def _fail(self, kind: str, message: str) -> None:
        self._count(self._errors, kind)
        self._last_error = message
        self.get_logger().error(message, throttle_duration_sec=5.0)

    def _drop(self, kind: str, message: str) -> None:
        self._count(self._errors, kind)
        self._last_error = message
        self._warn_drop(kind, message)

    @property
    def published(self) -> int:
        """Detection arrays published so far."""
        return self._published

    def _backend(self) -> str:
        if self.detector is None:
            return "none"
        return "onnxruntime" if hasattr(self.detector, "session") else "torch"

    def stats(self) -> dict[str, Any]:
        """Counters, rates and latencies for diagnostics and the runner's summary."""
        s = self.pairer.stats
        with self._wake:
            queue_length = len(self._queue)
        with self._lock:
            dropped = dict(self._dropped)
            errors = dict(self._errors)
            per_frame = list(self._per_frame)
            stage_ms = {k: list(v) for k, v in self._stage_ms.items()}
            published = self._published
            detections = self._detections_published
            detections_last = self._detections_last
            cold_rejected = self._cold_rejected
            verifier_rejected = self._verifier_rejected
            published_rate = self._published_rate.rate_hz()
        values: dict[str, Any] = {
            "model": self.config.checkpoint_path if self.config else "",
            "device": str(self.detector.device) if self.detector is not None else "none",
            "precision": self.detector.precision if self.detector is not None else "none",
            "backend": self._backend(),
            # The thresholds in force (ros2 param set changes them while the node runs).
            "score_threshold": self.config.score_threshold if self.config else float("nan"),
            "min_thermal_contrast_k": (
                self.config.min_thermal_contrast_k if self.config else float("nan")
            ),
            "depth_rate_hz": self._depth_rate.rate_hz(),
            "registered_rate_hz": self._registered_rate.rate_hz(),
            "published_rate_hz": published_rate,
            "depth_frames": self._depth_rate.count,
            "registered_frames": self._registered_rate.count,
            "pairs": s.pairs,
            "published": published,
            "detections_published": detections,
            "detections_last": detections_last,
            "detections_rejected_cold": cold_rejected,
            "verifier": describe_verifier(
                self.config.verifier if self.config else "", self.verifier,
                self.config.min_verifier_probability if self.config else -1.0,
            ),
            "detections_rejected_verifier": verifier_rejected,
            "pairing_resets": s.resets,
            "queue_length": queue_length,
            "queue_length_cap": self.config.max_queue if self.config else 0,
            "pending_depth": self.pairer.pending_depth,
            "pending_depth_cap": self.pairer.depth_buffer,
            "pending_registered": self.pairer.pending_registered,
            "pending_registered_cap": self.pairer.registered_buffer,
            "depth_unpaired": s.depth_unpaired,
            "registered_no_depth_run": s.no_depth_run,
            "depth_held_for_camera_info": len(self._early_depth),
            "depth_dropped_before_camera_info": self._early_depth.dropped,
            **{f"registered_dropped_{k}": v for k, v in s.registered_dropped.items() if v},
            **{f"pairs_dropped_{k}": v for k, v in dropped.items() if v},
        }
        if per_frame:
            values["detections_per_frame_mean"] = float(np.mean(per_frame))
        for stage, times in stage_ms.items():
            if times:
                arr = np.asarray(times)
                values[f"{stage}_ms_mean"] = float(arr.mean())
                values[f"{stage}_ms_max"] = float(arr.max())
        values.update({f"errors_{k}": v for k, v in errors.items()})
        if self._start_error:
            values["not_started"] = self._start_error  # why: for the runner's last line
        return values

    def _no_depth_reason(self) -> str:
        """Registered frames keep coming without their depth frame: why, and what to do."""
        s = self.pairer.stats
        nearest = ("" if s.no_depth_nearest_ns is None else
                   f"; the nearest depth stamp was {s.no_depth_nearest_ns / 1e6:.3f} ms off")
        return (
            f"none of the last {s.no_depth_run} {topic_label(self, 'thermal/registered')} "
            f"frames found the {topic_label(self, 'depth/image_raw')} frame with its stamp "
            f"(fusion stamps each with the depth frame it registered into{nearest}): give the "
            "detector the depth topic fusion gets, with its stamps unchanged (check both "
            "nodes' remappings, and any relay or republisher between them)"
        )

    def _status(self, values: dict[str, Any]) -> tuple[str, str]:
        if self.detector is None:  # why it publishes nothing, not a later input error
            return "ERROR", self._start_error
        if self._registered_rate.age_s() > STREAM_TIMEOUT_S:
            return "ERROR", (
                f"no {topic_label(self, 'thermal/registered')} for over {STREAM_TIMEOUT_S:g} s "
                + ("(a Lepton's flat-field correction pauses thermal for about 1 s)"
                   if self._registered_rate.age_s() < FFC_PAUSE_S else
                   "(is fusion running? is the thermal camera's image coming?)")
            )
        if self._depth_rate.age_s() > STREAM_TIMEOUT_S:
            return "ERROR", (
                f"no {topic_label(self, 'depth/image_raw')} for over {STREAM_TIMEOUT_S:g} s"
            )
        if self._depth_info is None:
            return "ERROR", self._no_depth_info()
        if values.get("registered_no_depth_run", 0) >= UNPAIRED_RUN:
            return "ERROR", self._no_depth_reason()
        if self._warn_drop.current(self._errors):
            # Queue drops are not listed here: a model slower than the thermal rate skips
            # pairs by design (see pairs_dropped_queue_full).
            return "WARN", f"input errors: {self._last_error}"
        return "OK", "detecting"


def main(args: list[str] | None = None) -> None:
    """Run the detector node until Ctrl-C."""
    spin_node(DetectorNode, args)
