"""The live graph (fusion, detector, tracker) run offline over a bag, with the same library code."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from iphd.calibration import DEFAULT_CALIBRATION, RigCalibration, load_calibration
from iphd.data.rosbag import (
    DEPTH_IMAGE,
    DEPTH_INFO,
    THERMAL_IMAGE,
    BagReader,
    camera_info_to_intrinsics,
    header_stamp_ns,
    image_to_array,
    read_transform_buffer,
)
from iphd.detection.verifier import BoxVerifier, detector_mismatch, load_box_verifier
from iphd.detections import (
    DetectionConfig,
    PersonDetection,
    checked_detections,
    load_detector,
)
from iphd.errors import DatasetError, IphdError
from iphd.fusion import (
    DEPTH_ENCODINGS,
    FusionConfig,
    FusionPipeline,
    depth_image_units_problem,
    depth_to_mm,
)
from iphd.graph import OFFLINE_TOPIC_ARGUMENTS, with_camera_infos
from iphd.sensors.frames import CameraIntrinsics, DepthFrame, ThermalFrame
from iphd.sync import Pair, SyncConfig, Synchronizer, unpaired_reason
from iphd.tf_buffer import FrameLookup, TransformBuffer
from iphd.tracking.tracker import (
    TimeOrderError,
    Tracker,
    TrackerConfig,
    TrackInput,
    TrackState,
    detection_problem,
)
from iphd.transports import transport_of, transport_topics

if TYPE_CHECKING:
    from iphd.detection.detector import Detector
    from iphd.reid.extractor import FeatureExtractor

LOG = logging.getLogger(__name__)
#: A bag's thermal frames that find no depth frame within the skew: this many, and none that
#: did, is a bag whose streams were stamped on two clocks (an error); this share, a warning.
UNPAIRED_NO_PAIR_MIN = 3
UNPAIRED_WARN_FRACTION = 0.1

THERMAL_ENCODINGS = ("16UC1", "mono16")
#: Latency stages of one pair, in the order they run.
STAGES = ("fusion", "detection", "embedding", "tracking")


def find_topic(
    topics: Iterable[str], name: str, renamed: Mapping[str, str] | None = None
) -> str | None:
    """The topic called ``name`` or ending in ``/name`` (a namespaced recording); None if absent.

    The exact name wins; among namespaced ones the alphabetically first is taken. When
    ``renamed`` gives ``name`` another topic (``--depth-topic``), only that one is looked for,
    with or without its leading slash; a renamed image's camera_info is the one beside it
    unless given (``iphd.graph.with_camera_infos``). An image recorded only through
    image_transport's compressed transports is found as ``<image>/compressedDepth`` or
    ``<image>/compressed`` (``iphd.transports.transport_topics``; ``BagReader.messages``
    decodes them).
    """
    names = sorted(topics)
    renamed = with_camera_infos(renamed)
    wanted = renamed.get(name) or name
    candidates = [wanted]
    if transport_of(wanted) is None:
        candidates += transport_topics(wanted, depth=name == DEPTH_IMAGE)
    for candidate in candidates:
        if renamed.get(name):
            found = next((t for t in names if t.lstrip("/") == candidate.lstrip("/")), None)
        elif candidate in names:
            found = candidate
        else:
            found = next((t for t in names if t.endswith("/" + candidate.lstrip("/"))), None)
        if found is not None:
            return found
    return None


def bag_topic_label(name: str, renamed: Mapping[str, str] | None = None) -> str:
    """How an error names the topic looked for: ``name``, or its replacement and ``name``."""
    renamed = with_camera_infos(renamed)
    if renamed.get(name):
        return f"{renamed[name]} (given for {name})"
    return name


def camera_topics(
    topics: Iterable[str], image: str, info: str, renamed: Mapping[str, str] | None = None
) -> tuple[str, str] | None:
    """A camera's image and camera_info topics (``find_topic``); None unless both are there."""
    names = list(topics)
    image_topic = find_topic(names, image, renamed)
    info_topic = find_topic(names, info, renamed)
    if image_topic is None or info_topic is None:
        return None
    return image_topic, info_topic


@dataclass(frozen=True)
class OfflineConfig:
    """What the offline pipeline runs; the defaults are those of ``launch/iphd_params.yaml``.

    Attributes:
        detector_checkpoint: detector checkpoint; empty = the shipped model.
        reid_checkpoint: depth re-ID embedder; empty = the shipped one (appearance off with a
            warning when none is shipped), ``none`` = appearance off.
        device: ``cpu`` (deterministic), ``cuda`` or ``auto``.
        threads: torch CPU threads; fixed so that results and latency are reproducible.
        backend: what runs the detector (``DetectionConfig.backend``: ``auto``, ``torch``,
            ``onnxruntime`` or ``onnxruntime-int8``).
        int8_calibration: the detector node's ``int8_calibration`` (calibration pairs for the
            int8 model, which ``auto`` runs on the CPU); empty = the shipped ones.
        score_threshold: lowest detection score handed to the tracker (the detector node's
            ``score_threshold``); AP is computed on every detection the model returns.
        min_thermal_contrast_k: the detector node's thermal check (``DetectionConfig``):
            detections colder than a person are not handed to the tracker (AP still scores
            them, as the model's output); 0 = no check.
        thermal_min_coverage: the detector node's ``thermal_min_coverage``.
        verifier: the detector node's box verifier (``DetectionConfig.verifier``: empty = the
            shipped one, ``none`` = none); detections it leaves out are not handed to the
            tracker (AP still scores them, as the model's output).
        min_verifier_probability: the detector node's ``min_verifier_probability``.
        tracker: tracker parameters.
        calibration: rig.yaml; empty = the calibration the bag carries, else the package's.
        max_skew_ms: fusion ``max_skew_ms``.
        max_wait_ms: fusion ``max_wait_ms``.
        registered_scale: fusion ``registered_scale``.
        fix_zero_patches: fusion ``fix_zero_patches``.
        topics: the bag's topics to read instead of ``depth/image_raw``, ``depth/camera_info``
            and ``thermal/image_raw`` (``iphd.graph.OFFLINE_TOPIC_ARGUMENTS``); empty = those
            names.
        tracking_frame: the tracker node's ``tracking_frame``: detections' positions go into
            this frame (``odom`` on a moving robot) through the bag's ``/tf`` and
            ``/tf_static`` before tracking; empty = the detections' own frame. The tracker's
            ``up_axis`` must be that frame's (``z`` for odom and map).
    """

    detector_checkpoint: str = ""
    reid_checkpoint: str = ""
    device: str = "cpu"
    threads: int = 2
    backend: str = "auto"
    int8_calibration: str = ""
    score_threshold: float = 0.5
    min_thermal_contrast_k: float = 0.0
    thermal_min_coverage: float = 0.9
    verifier: str = ""
    min_verifier_probability: float = -1.0
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    calibration: str = ""
    max_skew_ms: float = 20.0
    max_wait_ms: float = 500.0
    registered_scale: float = 0.25
    fix_zero_patches: bool = False
    topics: Mapping[str, str] = field(default_factory=dict)
    tracking_frame: str = ""

    def __post_init__(self) -> None:
        """Reject values the pipeline cannot run with (the stage configs check the rest)."""
        if self.threads < 1:
            raise ValueError(
                f"threads must be >= 1 (fixed for reproducibility), got {self.threads}"
            )
        unknown = sorted(set(self.topics) - set(OFFLINE_TOPIC_ARGUMENTS.values()))
        if unknown:
            raise ValueError(
                f"topics renames {', '.join(unknown)}, which the offline pipeline does not read "
                f"(it reads {', '.join(OFFLINE_TOPIC_ARGUMENTS.values())})"
            )
        optical = TrackerConfig.up_axis
        if not self.tracking_frame and self.tracker.up_axis != optical:
            raise ValueError(
                f"tracker up_axis is '{self.tracker.up_axis}', but without a tracking_frame the "
                f"tracks are in the camera's optical frame, whose up axis is {optical}: set "
                f"up_axis {optical}, or give the tracking_frame"
            )
        DetectionConfig(
            self.detector_checkpoint, self.device, self.score_threshold, self.threads,
            backend=self.backend, min_thermal_contrast_k=self.min_thermal_contrast_k,
            thermal_min_coverage=self.thermal_min_coverage, verifier=self.verifier,
            min_verifier_probability=self.min_verifier_probability,
            int8_calibration=self.int8_calibration,
        )


@dataclass(frozen=True)
class PairResult:
    """What the graph would publish for one depth/thermal pair.

    Attributes:
        stamp_ns: the depth frame's stamp (that of ``detections`` and ``tracks``).
        detections: every detection of the model, best first, with position and temperature
            (those scoring ``score_threshold`` or more are the published ones).
        tracks: the tracker's live tracks after this pair (tentative, confirmed and lost).
        latency_ms: stage -> wall time in ms (``STAGES``; ``embedding`` only with a re-ID
            embedder).
        image_size: (width, height) of the depth image, pixels.
        published: per detection (same order), whether the node would publish it: scoring
            ``score_threshold`` or more and left out by neither the thermal check nor the
            verifier.
    """

    stamp_ns: int
    detections: list[PersonDetection]
    tracks: list[TrackState]
    latency_ms: dict[str, float]
    image_size: tuple[int, int]
    published: tuple[bool, ...] = ()


@dataclass
class PipelineStats:
    """Counters of an ``OfflinePipeline`` run.

    Attributes:
        messages: messages read per topic.
        skipped: messages skipped per topic (corrupt, undecodable or rejected frames).
        pairs: pairs processed.
        pairs_failed: pairs dropped by fusion or inference errors.
        sync_resets: synchronizer resets (backward stamp jumps).
        tracker_resets: tracker resets on a stamp not after the previous one.
        no_transform: pairs whose detections could not go into ``tracking_frame`` (no
            transform at their stamp): as the tracker node, tracking skips them.
        rejected_detections: detections not handed to the tracker (``detection_problem``).
        cold_rejected: published-score detections taken out as colder than a person
            (``min_thermal_contrast_k``).
        verifier_rejected: published-score detections the box verifier took out.
    """

    messages: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    pairs: int = 0
    pairs_failed: int = 0
    sync_resets: int = 0
    tracker_resets: int = 0
    no_transform: int = 0
    rejected_detections: int = 0
    cold_rejected: int = 0
    verifier_rejected: int = 0


class FusedImages:
    """Keeps the fused images of ``OfflinePipeline.on_fused`` until their pair comes out.

    Several pairs can be fused before the first of them is returned, so the images are held
    by stamp; ``take`` hands one over and forgets those of earlier pairs (which failed after
    fusion), so a long bag does not accumulate them.
    """

    def __init__(self) -> None:
        self._images: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def keep(self, stamp_ns: int, depth_mm: np.ndarray, registered_ck: np.ndarray) -> None:
        """The ``on_fused`` callback."""
        self._images[stamp_ns] = (depth_mm, registered_ck)

    def take(self, stamp_ns: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(depth mm, registered thermal centi-K) of the pair at ``stamp_ns``; None if unseen."""
        for stamp in [s for s in self._images if s < stamp_ns]:
            del self._images[stamp]
        return self._images.pop(stamp_ns, None)


class OfflinePipeline:
    """Runs fusion, detection, embedding and tracking on a bag's messages, in log order.

    The stages are the library calls of the fusion, detector and tracker nodes, in-process and
    without queues, so nothing is dropped for lack of time; on CPU with fixed threads the same
    bag and models give the same output.

    Args:
        config: what to run.
        calibration: rig calibration; None = ``config.calibration`` or, when that is empty,
            the package's (``run_bag`` passes the bag's own).
        detector: runs instead of the one ``config`` names (``load_detector``); the
            quantizer's calibration uses this to collect the inputs a detector is given.

    Raises:
        CheckpointError: a missing or unusable detector or embedder checkpoint.
        ConfigError: bad device or parameters.
    """

    def __init__(
        self, config: OfflineConfig, calibration: RigCalibration | None = None,
        detector: Detector | None = None,
    ) -> None:
        import torch

        self.config = config
        torch.set_num_threads(config.threads)
        if calibration is None:
            calibration = load_calibration(config.calibration or DEFAULT_CALIBRATION)
        self.calibration = calibration
        self.detection_config = DetectionConfig(
            config.detector_checkpoint, config.device, config.score_threshold, config.threads,
            backend=config.backend, min_thermal_contrast_k=config.min_thermal_contrast_k,
            thermal_min_coverage=config.thermal_min_coverage, verifier=config.verifier,
            min_verifier_probability=config.min_verifier_probability,
            int8_calibration=config.int8_calibration,
        )
        self.detector = load_detector(self.detection_config) if detector is None else detector
        self.verifier: BoxVerifier | None = load_box_verifier(config.verifier)
        mismatch = detector_mismatch(config.verifier, self.verifier,
                                     self.detection_config.checkpoint_path)
        if mismatch is not None:
            LOG.warning("%s", mismatch)
        #: Called per pair with (published, left out by the verifier, depth mm, intrinsics)
        #: before tracking, the thermal contrast measured (``training/train_verifier.py``).
        self.on_checked: Callable[
            [list[PersonDetection], list[PersonDetection], np.ndarray, CameraIntrinsics], None
        ] | None = None
        #: Called per pair with (depth stamp ns, depth mm, registered thermal centi-K) after
        #: fusion (``iphd.eval.annotation.export_mot`` saves the frames people annotate).
        self.on_fused: Callable[[int, np.ndarray, np.ndarray], None] | None = None
        from iphd.tracking.appearance import load_extractor  # torch: only when running

        # The tracker node's default back end (auto: onnxruntime on the CPU), as for the detector.
        self.reid: FeatureExtractor | None = load_extractor(
            config.reid_checkpoint, "depth", config.device, "auto", config.threads
        )
        self.fusion = FusionPipeline(
            calibration,
            FusionConfig(
                out_scale=config.registered_scale, fix_zero_patches=config.fix_zero_patches
            ),
        )
        #: Where detections go into ``config.tracking_frame``: the bag's transforms, read by
        #: ``run_bag`` (set it before ``push`` to feed messages by hand).
        self.transforms: FrameLookup | None = None
        self.sync_config = SyncConfig.from_calibration(
            calibration,
            max_skew_ns=int(config.max_skew_ms * 1e6),
            max_wait_ns=int(config.max_wait_ms * 1e6),
        )
        self.reset()

    def reset(self) -> None:
        """Start over: empty synchronizer and tracker, zeroed counters."""
        self.sync: Synchronizer[DepthFrame, ThermalFrame] = Synchronizer(self.sync_config)
        self.tracker = Tracker(self.config.tracker)
        self.stats = PipelineStats()
        self._depth_info: CameraIntrinsics | None = None
        self._warned: set[str] = set()

    # -- input --------------------------------------------------------------------------------

    def run_bag(
        self, reader: BagReader, stop_ns: int | None = None, start_ns: int | None = None
    ) -> Iterator[PairResult]:
        """Feed the depth and thermal topics of an open bag (namespaced names accepted).

        Args:
            reader: the bag.
            stop_ns: log time to stop at (exclusive); None = the whole bag.
            start_ns: log time to start at (inclusive); None = from the first message.

        Raises:
            DatasetError: the bag has no depth image, depth camera info or thermal image topic.
        """
        topics = self.input_topics(reader)
        if self.config.tracking_frame and self.transforms is None:
            transforms = read_transform_buffer(reader, stop_ns, start_ns)
            _check_tracking_frame(transforms, self.config.tracking_frame, reader.path)
            self.transforms = transforms
        corrupt_before = dict(reader.corrupt)
        sync = self.sync.stats
        before = (sync.pairs, sync.thermal_in, sync.thermal_dropped["no_depth_within_skew"])
        for topic, _type, _log_ns, msg in reader.messages(
            list(topics), start_ns=start_ns, stop_ns=stop_ns
        ):
            yield from self.push(topics[topic], msg)
        for topic, count in reader.corrupt.items():
            extra = count - corrupt_before.get(topic, 0)
            if extra:
                self._count(self.stats.skipped, topics.get(topic, topic), extra)
        yield from self.finish()
        self._check_pairing(reader, before)

    def _check_pairing(self, reader: BagReader, before: tuple[int, int, int]) -> None:
        """Say when the bag's thermal frames found no depth partner, and why.

        Raises:
            DatasetError: none of them did, and their stamps say why (two clocks).
        """
        sync = self.sync.stats
        pairs, thermal, unpaired = (
            now - then for now, then in zip(
                (sync.pairs, sync.thermal_in, sync.thermal_dropped["no_depth_within_skew"]),
                before, strict=True,
            )
        )
        if not unpaired or sync.unpaired_skew_ns is None:
            return
        within = f"{self.sync.config.max_skew_ns / 1e6:g} ms"
        reason = unpaired_reason(sync.unpaired_skew_ns)
        if not pairs and unpaired >= UNPAIRED_NO_PAIR_MIN:
            raise DatasetError(
                f"{reader.path}: none of its {thermal} thermal frames found a depth frame within "
                f"{within}, so nothing was paired; {reason} (`iphd-eval check --bag "
                f"{reader.path}` compares the stamps)"
            )
        if unpaired > UNPAIRED_WARN_FRACTION * thermal:
            LOG.warning("%s: %d of %d thermal frames found no depth frame within %s; %s",
                        reader.path, unpaired, thermal, within, reason)

    def no_pair_reason(
        self, reader: BagReader, start_ns: int | None = None, stop_ns: int | None = None
    ) -> str:
        """Why ``run_bag`` over ``[start_ns, stop_ns)`` made no pair, for an error message.

        Names an input of which no message was read (and where the bag's first one is), the
        messages skipped, or that the frames read found no partner within the fusion's skew.
        """
        first = reader.start_ns
        part = "the bag"
        if start_ns is not None or stop_ns is not None:
            begin = ((start_ns or first) - first) / 1e9
            end = ((stop_ns or reader.end_ns + 1) - first) / 1e9
            part = f"the part read ({begin:.2f}-{end:.2f} s after the bag's start)"
        read = self.stats.messages
        topics = {name: topic for topic, name in self.input_topics(reader).items()}
        reasons = []
        for name, what in ((DEPTH_IMAGE, "depth"), (THERMAL_IMAGE, "thermal")):
            if read.get(name) or self.stats.skipped.get(name):
                continue
            log_ns = next((m.log_ns for m in reader.raw_messages([topics[name]], start_ns)),
                          None)
            where = (f"the bag has none{' from there on' if start_ns else ''}"
                     if log_ns is None else
                     f"the {'next' if start_ns else 'first'} is logged "
                     f"{(log_ns - first) / 1e9:.2f} s after the bag's start: read a part that "
                     "holds some with --start-s and --limit-s")
            reasons.append(f"{part} holds no {what} image on {topics[name]} ({where})")
        skipped = self.stats.skipped
        # A stream whose every message was skipped (one that does not decode: the reader may
        # drop them before they count as read) explains the missing pairs by itself.
        if not reasons and not any(skipped.get(name, 0) >= max(read.get(name, 0), 1)
                                   for name in (DEPTH_IMAGE, THERMAL_IMAGE)):
            reasons.append(
                f"{read.get(THERMAL_IMAGE, 0)} thermal and {read.get(DEPTH_IMAGE, 0)} depth images "
                f"were read in {part}, and no thermal frame found a depth frame within "
                f"{self.sync.config.max_skew_ns / 1e6:g} ms")
        if skipped:
            reasons.append(", ".join(f"{n} {topic} messages skipped"
                                     for topic, n in skipped.items())
                           + " (the log says why)")
        return "; ".join(reasons)

    def input_topics(self, reader: BagReader) -> dict[str, str]:
        """The bag's topics ``run_bag`` reads: {the bag's topic: the pipeline's name for it}.

        Raises:
            DatasetError: the bag has no depth image, depth camera info or thermal image topic
                (under ``config.topics``' names when given).
        """
        topics = {}
        for name in (DEPTH_IMAGE, DEPTH_INFO, THERMAL_IMAGE):
            topic = find_topic(reader.topics, name, self.config.topics)
            if topic is None:
                raise DatasetError(
                    f"{reader.path} has no {bag_topic_label(name, self.config.topics)} topic (it "
                    f"has {', '.join(sorted(reader.topics)) or 'no topics'}); the offline "
                    "pipeline needs depth/image_raw, depth/camera_info and thermal/image_raw: "
                    "name a driver's own topics with --depth-topic, --depth-info-topic and "
                    "--thermal-topic"
                )
            topics[topic] = name
        return topics

    def push(self, topic: str, msg: Any) -> list[PairResult]:
        """Feed one message (``depth/image_raw``, ``depth/camera_info`` or ``thermal/image_raw``).

        Returns the pairs it completed, processed. A message that does not decode, or a frame
        the fusion stage rejects, is skipped with a warning and counted in ``stats.skipped``.
        """
        self._count(self.stats.messages, topic)
        start = time.perf_counter()
        try:
            if topic == DEPTH_INFO:
                self._depth_info = camera_info_to_intrinsics(msg)
                return []
            if topic == DEPTH_IMAGE:
                pairs = self._push_depth(msg)
            elif topic == THERMAL_IMAGE:
                pairs = self._push_thermal(msg)
            else:
                return []
        except (IphdError, ValueError) as exc:
            self._skip(topic, f"{topic} message skipped: {exc}")
            return []
        sync_ms = (time.perf_counter() - start) * 1e3
        return self._process(pairs, sync_ms)

    def finish(self) -> list[PairResult]:
        """Decide and process the pairs still waiting at the end of the input."""
        return self._process(self.sync.flush(), 0.0)

    def _push_depth(self, msg: Any) -> list[Pair[DepthFrame, ThermalFrame]]:
        if self._depth_info is None:
            raise DatasetError("no depth/camera_info before this depth frame")
        frame = DepthFrame(
            depth_mm=depth_to_mm(image_to_array(msg, DEPTH_ENCODINGS), str(msg.encoding)),
            stamp_ns=header_stamp_ns(msg),
            frame_id=str(msg.header.frame_id),
            intrinsics=self._depth_info,
        )
        self.fusion.check_depth(frame)
        if "depth_units" not in self._warned:  # the first frame tells (the node checks on)
            self._warned.add("depth_units")
            problem = depth_image_units_problem(frame.depth_mm)
            if problem:
                LOG.warning("depth/image_raw: %s", problem)
        return self.sync.push_depth(frame.stamp_ns, frame)

    def _push_thermal(self, msg: Any) -> list[Pair[DepthFrame, ThermalFrame]]:
        frame = ThermalFrame(
            thermal_ck=image_to_array(msg, THERMAL_ENCODINGS),
            stamp_ns=header_stamp_ns(msg),
            frame_id=str(msg.header.frame_id),
            intrinsics=self.calibration.thermal,
        )
        self.fusion.check_thermal(frame)
        return self.sync.push_thermal(frame.stamp_ns, frame)

    # -- stages -------------------------------------------------------------------------------

    def _process(
        self, pairs: list[Pair[DepthFrame, ThermalFrame]], sync_ms: float
    ) -> list[PairResult]:
        if self.sync.stats.resets != self.stats.sync_resets:
            self.stats.sync_resets = self.sync.stats.resets
            LOG.warning("stamps jumped backwards: synchronizer buffers reset")
        results = []
        for pair in pairs:
            try:
                results.append(self._process_pair(pair, sync_ms / len(pairs)))
            except (IphdError, RuntimeError, ValueError) as exc:
                self.stats.pairs_failed += 1
                self._warn("pair", f"pair at depth stamp {pair.depth_stamp_ns} ns dropped: {exc}")
        return results

    def _process_pair(self, pair: Pair[DepthFrame, ThermalFrame], sync_ms: float) -> PairResult:
        depth = pair.depth
        assert depth.intrinsics is not None  # check_depth let it in
        t0 = time.perf_counter()
        registered_ck = self.fusion.process(depth, pair.thermal)
        t1 = time.perf_counter()
        if self.on_fused is not None:
            self.on_fused(pair.depth_stamp_ns, depth.depth_mm, registered_ck)
        found = self.detector(depth.depth_mm, registered_ck)
        # Positions only for what the node publishes (as the node does); AP scores every
        # detection the model returns, so the others are kept with NaN position/temperature.
        published, cold, unverified = checked_detections(
            found, depth.depth_mm, registered_ck, depth.intrinsics, self.detection_config,
            self.verifier, measure_contrast=self.on_checked is not None,
        )
        t2 = time.perf_counter()
        if self.on_checked is not None:
            self.on_checked(published, unverified, depth.depth_mm, depth.intrinsics)
        self.stats.cold_rejected += len(cold)
        self.stats.verifier_rejected += len(unverified)
        nan = math.nan
        detections = [(d, True) for d in published] + [
            (d, False) for d in cold + unverified
        ] + [
            (PersonDetection(tuple(float(v) for v in box), float(score), (nan, nan, nan), nan),  # type: ignore[arg-type]
             False)
            for box, score in zip(found.boxes_xyxy, found.scores, strict=True)
            if float(score) < self.config.score_threshold
        ]
        detections.sort(key=lambda d: -d[0].score)
        height, width = depth.depth_mm.shape
        inputs = self._track_inputs(published, width, height)
        latency = {"fusion": sync_ms + (t1 - t0) * 1e3, "detection": (t2 - t1) * 1e3}
        if self.reid is not None:
            t3 = time.perf_counter()
            focal = (depth.intrinsics.fx, depth.intrinsics.fy)
            inputs = self._embed(depth.depth_mm, focal, inputs, self.reid)
            latency["embedding"] = (time.perf_counter() - t3) * 1e3
        t4 = time.perf_counter()
        try:
            inputs = self._into_tracking_frame(inputs, depth.frame_id, pair.depth_stamp_ns)
        except LookupError as exc:
            # The tracker node drops the detections it cannot place; nothing is tracked.
            self.stats.no_transform += 1
            self._warn("transform", f"detections at {pair.depth_stamp_ns} ns not tracked: no "
                       f"transform from '{depth.frame_id}' into tracking_frame "
                       f"'{self.config.tracking_frame}' ({exc})")
            self.stats.pairs += 1
            return PairResult(pair.depth_stamp_ns, [d for d, _ in detections], [], latency,
                              (width, height), tuple(p for _, p in detections))
        try:
            tracks = self.tracker.update(pair.depth_stamp_ns, inputs)
        except TimeOrderError:
            self.tracker.reset()
            self.stats.tracker_resets += 1
            self._warn("time", f"stamp {pair.depth_stamp_ns} ns went back: tracker reset")
            tracks = self.tracker.update(pair.depth_stamp_ns, inputs)
        latency["tracking"] = (time.perf_counter() - t4) * 1e3
        self.stats.pairs += 1
        return PairResult(pair.depth_stamp_ns, [d for d, _ in detections], tracks, latency,
                          (width, height), tuple(p for _, p in detections))

    def _track_inputs(
        self, detections: list[PersonDetection], width: int, height: int
    ) -> list[TrackInput]:
        inputs = []
        for det in detections:
            # The tracker node receives the detections as a message: float32 box and score.
            box = tuple(float(v) for v in np.asarray(det.box_xyxy, dtype=np.float32))
            score = float(np.float32(det.score))
            if detection_problem(box, score, width, height):
                self.stats.rejected_detections += 1
                continue
            inputs.append(TrackInput(box, score, det.position_m))  # type: ignore[arg-type]
        return inputs

    def _into_tracking_frame(
        self, inputs: list[TrackInput], frame_id: str, stamp_ns: int
    ) -> list[TrackInput]:
        """``inputs`` with their positions in ``config.tracking_frame`` (as the tracker node).

        Raises:
            LookupError: no transform from ``frame_id`` at ``stamp_ns``.
        """
        target = self.config.tracking_frame
        if not target or frame_id == target:
            return inputs
        if self.transforms is None:
            raise LookupError("no transforms were read (run_bag reads the bag's /tf)")
        transform = self.transforms(target, frame_id, stamp_ns)
        return [TrackInput(d.box_xyxy, d.score, transform.apply(d.position_m), d.embedding)
                for d in inputs]

    @staticmethod
    def _embed(
        depth_mm: np.ndarray, focal_px: tuple[float, float], inputs: list[TrackInput],
        reid: FeatureExtractor,
    ) -> list[TrackInput]:
        from iphd.tracking.appearance import crop_size, depth_crops

        crops, indices = depth_crops(
            depth_mm, [d.box_xyxy for d in inputs], crop_size(reid), reid.normalize, focal_px
        )
        if not crops:
            return inputs
        out = list(inputs)
        for index, embedding in zip(indices, reid(crops), strict=True):
            d = inputs[index]
            out[index] = TrackInput(d.box_xyxy, d.score, d.position_m, embedding)
        return out

    # -- bookkeeping --------------------------------------------------------------------------

    @staticmethod
    def _count(counters: dict[str, int], key: str, n: int = 1) -> None:
        counters[key] = counters.get(key, 0) + n

    def _skip(self, topic: str, message: str) -> None:
        self._count(self.stats.skipped, topic)
        self._warn(topic, message)

    def _warn(self, kind: str, message: str) -> None:
        # First of a kind as a warning, the rest at debug level: a broken stream stays readable.
        (LOG.debug if kind in self._warned else LOG.warning)("%s", message)
        self._warned.add(kind)


def _check_tracking_frame(transforms: TransformBuffer, frame: str, bag: Path | str) -> None:
    """Refuse a ``tracking_frame`` that the bag's transforms never name: nothing would be tracked.

    Raises:
        DatasetError: ``frame`` is in none of the bag's ``/tf`` and ``/tf_static`` transforms.
    """
    if frame.lstrip("/") in transforms.frames:
        return
    known = ", ".join(transforms.frames) or "none: the bag has no /tf or /tf_static"
    raise DatasetError(
        f"{bag}: no transform into tracking frame '{frame}', so no detection could be tracked "
        f"(the frames of its /tf and /tf_static: {known}); record /tf with the robot's "
        f"odometry (odom -> base_link) beside the drivers' /tf_static, or leave out "
        f"--tracking-frame to track in the camera's frame"
    )


def pipeline_for_bag(config: OfflineConfig, reader: BagReader) -> OfflinePipeline:
    """An ``OfflinePipeline`` with the calibration the bag was made with when it carries one.

    An explicit ``config.calibration`` wins; a bag that carries no calibration (stored, or
    recorded on ``rig_calibration``: ``BagReader.calibration``) gets the package's.
    """
    calibration = None
    if not config.calibration:
        calibration = reader.calibration
        if calibration is None:
            LOG.warning(
                "%s carries no rig calibration (neither stored nor on a recorded "
                "rig_calibration topic): using %s; pass yours with --calibration",
                reader.path, DEFAULT_CALIBRATION,
            )
    return OfflinePipeline(config, calibration)


def calibration_source(config: OfflineConfig, reader: BagReader) -> str:
    """Which calibration ``pipeline_for_bag`` uses, for the report."""
    if config.calibration:
        return str(Path(config.calibration))
    return reader.calibration_origin or str(DEFAULT_CALIBRATION)
