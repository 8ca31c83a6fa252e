"""End-to-end evaluation over a bag: detection AP, CLEAR-MOT/IDF1 and latency, report and plots."""

from __future__ import annotations

import datetime
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from contextlib import closing, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

import iphd
from iphd.data.rosbag import (
    DEPTH_INFO,
    GROUND_TRUTH,
    BagReader,
    header_stamp_ns,
    tracks_to_truth,
    unreadable_file_text,
    wal_text,
)
from iphd.data.truth import PersonTruth
from iphd.detection.verifier import describe as describe_verifier
from iphd.errors import DatasetError
from iphd.eval.breakdown import DetectionBreakdown, breakdown_markdown
from iphd.eval.iphd_ap import DEFAULT_THRESHOLDS, evaluate, plot_pr
from iphd.eval.mot import (
    DEFAULT_LABELS,
    HOTA_KEYS,
    HOTA_UNAVAILABLE,
    MOT_KEYS,
    MotFrame,
    evaluate_hota,
    evaluate_mot,
    identity_flow,
    mot_frame,
    track_tuples,
    with_true_identities,
)
from iphd.eval.pipeline import (
    STAGES,
    FusedImages,
    OfflineConfig,
    calibration_source,
    find_topic,
    pipeline_for_bag,
)
from iphd.eval.video import TrackVideo, pair_frame
from iphd.sim.labels import LabelConfig, label_people
from iphd.tracking.tracker import CONFIRMED, LOST, TENTATIVE

DETECTIONS = "detections"
TRACKS = "tracks"
#: ``iphd_msgs/PersonTrack.state`` values.
TRACK_STATES = {0: TENTATIVE, 1: CONFIRMED, 2: LOST}
#: Latency stages of a recorded bag: bag log time (receipt by the recorder) minus header stamp.
RECORDED_STAGES = ("detections_log_minus_stamp", "tracks_log_minus_stamp")
#: Latency stages of a live run: receipt by the runner's monitor (node clock) minus header stamp.
LIVE_STAGES = ("detections_receipt_minus_stamp", "tracks_receipt_minus_stamp")


@dataclass
class BagEvalResult:
    """Outcome of :func:`evaluate_offline`, :func:`evaluate_recorded` or :func:`evaluate_live`.

    Attributes:
        mode: ``offline`` (models run here), ``recorded`` (the live graph's messages in a bag)
            or ``live`` (the messages a running graph published, received in-process).
        ap: :func:`iphd.eval.iphd_ap.evaluate` of the detections against the labelled truth
            boxes (empty when the bag has no detections).
        mot: :func:`iphd.eval.mot.evaluate_mot` summary.
        hota: :func:`iphd.eval.mot.evaluate_hota` summary, or None when trackeval is not
            installed.
        frames: the frames scored for MOT, in time order.
        latency_ms: stage -> (N,) wall times (offline), log-minus-stamp (recorded) or
            receipt-minus-stamp (live) delays, ms.
        pairs: frames with detector + tracker output (pairs processed or tracks messages).
        frames_without_truth: output frames whose stamp has no ground truth (not scored).
        skipped: messages skipped per topic (corrupt or undecodable).
        counters: other counts (resets, rejected detections, pairs failed, ...).
        breakdown: :meth:`iphd.eval.breakdown.DetectionBreakdown.summary` of the published
            detections, or None without detections.
        start_ns: the bag's first log time, from which the report counts seconds (None: from
            the first frame scored).
    """

    mode: str
    ap: dict[str, Any]
    mot: dict[str, float | None]
    frames: list[MotFrame]
    latency_ms: dict[str, np.ndarray]
    pairs: int
    frames_without_truth: int
    skipped: dict[str, int]
    counters: dict[str, int] = field(default_factory=dict)
    hota: dict[str, float | None] | None = None
    breakdown: dict[str, Any] | None = None
    start_ns: int | None = None

    def idf1_true_ids(self) -> float | None:
        """IDF1 of the same confirmed boxes with every identity right (None: nothing to score).

        What the run would score if the tracker never confused people
        (:func:`iphd.eval.mot.with_true_identities`): the gap to ``mot["idf1"]`` is what
        identity decisions cost, the rest of the way to 1 is detection and track confirmation.
        """
        if not self.frames:
            return None
        return evaluate_mot([with_true_identities(f) for f in self.frames])["idf1"]


#: One frame of output to score: stamp, detection rows ``[x1, y1, x2, y2, score]`` (None: no
#: detections source), their positions (N, 3) in metres (None: not known), track tuples and
#: the depth image height.
Output = tuple[int, np.ndarray | None, np.ndarray | None, list[tuple[int, str, Any]], int]


def window_ns(
    reader: BagReader, start_s: float | None = None, limit_s: float | None = None
) -> tuple[int | None, int | None]:
    """Log times (start, stop) of ``[start_s, start_s + limit_s)`` after the bag's first message.

    None for either means from the start or to the end.

    Raises:
        ValueError: ``start_s`` < 0 or past the bag's end, or ``limit_s`` not > 0.
    """
    if start_s is not None and not 0 <= start_s < math.inf:
        raise ValueError(f"--start-s must be >= 0 seconds and finite, got {start_s}")
    if limit_s is not None and not 0 < limit_s < math.inf:
        raise ValueError(f"--limit-s must be > 0 seconds and finite (leave it out for the "
                         f"whole bag), got {limit_s}")
    start = reader.start_ns + int(start_s * 1e9) if start_s else None
    if start is not None and start > reader.end_ns:
        raise ValueError(
            f"--start-s {start_s:g} is past the end of {reader.path} "
            f"({reader.duration_ns / 1e9:.1f} s long)"
        )
    base = reader.start_ns if start is None else start
    return start, None if limit_s is None else base + int(limit_s * 1e9)


def check_ground_truth(bags: Sequence[Path | str]) -> None:
    """Open each bag and check it has ground truth, before any is converted.

    A converter that meets a bag without it after minutes of converting others would leave a
    split half written; the bag's topics answer at once.

    Raises:
        DatasetError: the first bag that does not open or has no ground-truth topic (with how
            to give it one).
    """
    for bag in bags:
        with BagReader(bag) as reader:
            if find_topic(reader.topics, GROUND_TRUTH) is None:
                read_truth(reader)  # raises, with how to make ground truth


def read_truth(reader: BagReader, stop_ns: int | None = None) -> dict[int, list[PersonTruth]]:
    """The bag's ground truth: depth stamp -> people.

    Raises:
        DatasetError: the bag has no ground-truth topic (the message says how to make one).
    """
    topic = find_topic(reader.topics, GROUND_TRUTH)
    if topic is None:
        raise DatasetError(
            f"{reader.path} has no ground truth: expected a {GROUND_TRUTH} topic "
            "(iphd_msgs/PersonTrackArray per depth frame) but the bag has "
            f"{', '.join(sorted(reader.topics)) or 'no topics'}. For a recording of your "
            "own, label it: `iphd-eval export-mot` writes its frames for a labelling tool "
            "(CVAT, MOT format) and `iphd-eval import-mot` writes the labels back as a bag "
            "with ground truth (README: 'Ground truth for your own bags'); `iphd-sim bag "
            "--out BAG` records a simulated bag that has it"
        )
    truth: dict[int, list[PersonTruth]] = {}
    # Truth rides along with the depth frames, so it may be logged up to a frame after them.
    stop = None if stop_ns is None else stop_ns + 1_000_000_000
    for _t, _type, _log, msg in reader.messages([topic], stop_ns=stop):
        truth[header_stamp_ns(msg)] = tracks_to_truth(msg)
    return truth


def require_scored(
    source: str, frames: Sequence[Any], pairs: int, truth: Mapping[int, Any], start_ns: int
) -> None:
    """Refuse a run in which no frame had ground truth at its stamp: it scores nothing.

    Its metrics would all be n/a and a run of several bags would count it as scored.

    Raises:
        DatasetError: naming how many frames there were and where the ground truth is.
    """
    if frames or not pairs:
        return
    if not truth:
        where = "its ground-truth topic holds no message in that part of the bag"
    else:
        first, last = (min(truth) - start_ns) / 1e9, (max(truth) - start_ns) / 1e9
        where = (f"its ground truth is stamped {first:.1f}-{last:.1f} s after the bag's start; "
                 "choose --start-s / --limit-s within that, and check that the ground truth "
                 "carries the depth frames' stamps")
    raise DatasetError(
        f"{source}: none of its {pairs} frames has ground truth at its stamp, so nothing can "
        f"be scored: {where}"
    )


def _label_boxes(labelled: Sequence[PersonTruth]) -> np.ndarray:
    return np.asarray([p.box_xyxy for p in labelled], dtype=np.float64).reshape(-1, 4)


def _score(
    outputs: Sequence[Output],
    truth: Mapping[int, list[PersonTruth]],
    labels: LabelConfig,
    published_min_score: float = 0.0,
    published_masks: Mapping[int, np.ndarray] | None = None,
) -> tuple[dict[str, Any], dict[str, float | None], dict[str, float | None] | None,
           list[MotFrame], int, dict[str, Any] | None]:
    """AP, MOT, HOTA and the error breakdown of :data:`Output` frames.

    AP scores every detection row; the breakdown only those the detector node publishes: the
    rows ``published_masks`` marks for a frame (left out neither by the thermal check nor by
    the verifier), else those scoring ``published_min_score`` or more.
    """
    predictions: dict[str, np.ndarray] = {}
    ground_truth: dict[str, np.ndarray] = {}
    frames: list[MotFrame] = []
    breakdown = DetectionBreakdown()
    without_truth = 0
    for stamp_ns, rows, positions, tracks, height in outputs:
        people = truth.get(stamp_ns)
        if people is None:
            without_truth += 1
            continue
        frames.append(mot_frame(stamp_ns, people, tracks, height, labels))
        if rows is not None:
            kept = label_people(people, height, labels)
            predictions[str(stamp_ns)] = rows
            ground_truth[str(stamp_ns)] = _label_boxes(kept)
            mask = None if published_masks is None else published_masks.get(stamp_ns)
            published = rows[:, 4] >= published_min_score if mask is None else mask
            breakdown.add_frame(
                rows[published, :4], rows[published, 4],
                None if positions is None else positions[published], people, kept,
            )
    ap = evaluate(predictions, ground_truth, DEFAULT_THRESHOLDS) if predictions else {}
    summary = breakdown.summary() if predictions else None
    return ap, evaluate_mot(frames), evaluate_hota(frames), frames, without_truth, summary


def evaluate_offline(
    bag: Path | str,
    config: OfflineConfig,
    *,
    limit_s: float | None = None,
    labels: LabelConfig = DEFAULT_LABELS,
    progress: bool = False,
    start_s: float | None = None,
    video: Path | str | None = None,
) -> tuple[BagEvalResult, dict[str, Any]]:
    """Run the offline pipeline over ``bag`` and score it against the bag's ground truth.

    ``start_s`` and ``limit_s`` restrict the run to ``[start_s, start_s + limit_s)`` seconds
    after the bag's first message (the tracker starts afresh there). With ``video``, an MP4
    of the tracks and the labelled people over each pair's depth is written there
    (``iphd.eval.video``).

    Returns:
        The result and what was run (models, calibration) for the report.

    Raises:
        DatasetError: a missing or unreadable bag, no ground truth, no depth or thermal topic,
            or no pair with ground truth at its stamp (nothing to score).
        CheckpointError, ConfigError: see ``OfflinePipeline``.
    """
    with BagReader(bag) as reader:
        start_ns, stop_ns = window_ns(reader, start_s, limit_s)
        bag_start_ns = reader.start_ns
        truth = read_truth(reader, stop_ns)
        pipeline = pipeline_for_bag(config, reader)
        calibration = calibration_source(config, reader)
        outputs = []
        masks: dict[int, np.ndarray] = {}
        latency: dict[str, list[float]] = {s: [] for s in STAGES}
        fused = FusedImages()
        movie = TrackVideo(video) if video is not None else None
        if movie is not None:
            pipeline.on_fused = fused.keep
        with (
            tqdm(unit="pair", desc="evaluating", disable=not progress, file=sys.stderr) as bar,
            logging_redirect_tqdm(),  # a warning gets a line of its own, not the bar's
            closing(movie) if movie is not None else nullcontext(),
        ):
            for pair in pipeline.run_bag(reader, stop_ns, start_ns):
                rows = np.asarray(
                    [(*d.box_xyxy, d.score) for d in pair.detections], dtype=np.float64
                ).reshape(-1, 5)
                positions = np.asarray(
                    [d.position_m for d in pair.detections], dtype=np.float64
                ).reshape(-1, 3)
                outputs.append((pair.stamp_ns, rows, positions, track_tuples(pair.tracks),
                                pair.image_size[1]))
                masks[pair.stamp_ns] = np.asarray(pair.published, dtype=bool)
                for stage, ms in pair.latency_ms.items():
                    latency[stage].append(ms)
                if movie is not None:
                    images = fused.take(pair.stamp_ns)
                    movie.add(pair_frame(pair, None if images is None else images[0], truth,
                                         bag_start_ns, labels))
                bar.update(1)
        no_pair = "" if pipeline.stats.pairs else pipeline.no_pair_reason(reader, start_ns,
                                                                           stop_ns)
    ap, mot, hota, frames, without_truth, breakdown = _score(
        outputs, truth, labels, published_min_score=config.score_threshold,
        published_masks=masks,
    )
    stats = pipeline.stats
    if not stats.pairs:
        raise DatasetError(
            f"{bag}: no depth/thermal pair was made, so there is nothing to score: {no_pair}; "
            f"`iphd-eval check --bag {bag}` checks what the pipeline reads"
        )
    require_scored(str(bag), frames, stats.pairs, truth, bag_start_ns)
    result = BagEvalResult(
        mode="offline",
        ap=ap,
        mot=mot,
        hota=hota,
        frames=frames,
        breakdown=breakdown,
        latency_ms={s: np.asarray(v, dtype=np.float64) for s, v in latency.items() if v},
        pairs=stats.pairs,
        start_ns=bag_start_ns,
        frames_without_truth=without_truth,
        skipped=dict(stats.skipped),
        counters={
            "pairs_failed": stats.pairs_failed,
            "sync_resets": stats.sync_resets,
            "tracker_resets": stats.tracker_resets,
            "no_transform": stats.no_transform,
            "rejected_detections": stats.rejected_detections,
            "cold_rejected": stats.cold_rejected,
            "verifier_rejected": stats.verifier_rejected,
            **{f"messages_{k}": v for k, v in stats.messages.items()},
        },
    )
    run = {
        "detector": pipeline.detection_config.checkpoint_path,
        "reid": (config.reid_checkpoint or "shipped") if pipeline.reid is not None else "none",
        "appearance": pipeline.reid is not None,
        "device": str(pipeline.detector.device),
        "detector_backend": config.backend,
        "detector_precision": pipeline.detector.precision,
        "int8_calibration": config.int8_calibration or "shipped",
        "threads": config.threads,
        "score_threshold": config.score_threshold,
        "min_thermal_contrast_k": config.min_thermal_contrast_k,
        "verifier": describe_verifier(config.verifier, pipeline.verifier,
                                      config.min_verifier_probability),
        "calibration": calibration,
        "tracker_config": vars(config.tracker).copy(),
    }
    if movie is not None:
        run["video"] = f"{movie.path} ({movie.frames} frames)"
    if reader.cut_off:
        run["bag_cut_off"] = "; ".join(f"{name} was {cut.describe()}"
                                       for name, cut in reader.cut_off)
    if reader.gaps:
        run["bag_storage_gaps"] = "; ".join(gap.describe() for gap in reader.gaps)
    if reader.wal_logs:
        run["bag_write_ahead_log"] = "; ".join(wal_text(log) for log in reader.wal_logs)
    if reader.rebuilt:
        run["bag_rebuilt"] = "; ".join(rebuilt.describe() for rebuilt in reader.rebuilt)
    if reader.unreadable_files:
        run["bag_files_left_out"] = "; ".join(
            unreadable_file_text(name, why) for name, why in reader.unreadable_files)
    return result, run


def track_tuples_from_msg(msg: Any) -> list[tuple[int, str, Any]]:
    """(id, state, box or None) of a ``PersonTrackArray`` (rosbags or rclpy message)."""
    out = []
    for t in msg.tracks:
        state = TRACK_STATES.get(int(t.state), f"unknown({int(t.state)})")
        box = None if state == LOST else (float(t.x1), float(t.y1), float(t.x2), float(t.y2))
        out.append((int(t.id), state, box))
    return out


def detection_rows_from_msg(msg: Any) -> np.ndarray:
    """(N, 5) ``[x1, y1, x2, y2, score]`` of a ``PersonDetectionArray`` (rosbags or rclpy)."""
    return np.asarray(
        [(d.x1, d.y1, d.x2, d.y2, d.score) for d in msg.detections], dtype=np.float64
    ).reshape(-1, 5)


def detection_positions_from_msg(msg: Any) -> np.ndarray:
    """(N, 3) positions in metres of a ``PersonDetectionArray`` (NaN where it has none)."""
    return np.asarray(
        [(d.position.x, d.position.y, d.position.z) for d in msg.detections], dtype=np.float64
    ).reshape(-1, 3)


@dataclass
class RecordedFrames:
    """The ``detections`` and ``tracks`` a live graph published, as plain data, in time order.

    Filled from a bag (:func:`read_recorded`) or by a live subscriber (the runner's monitor);
    :func:`score_recorded` scores either the same way.

    Attributes:
        detections: stamp -> (N, 5) ``[x1, y1, x2, y2, score]`` rows; None when there was no
            ``detections`` topic (AP is then not computed).
        positions: stamp -> (N, 3) positions of those detections, metres (NaN where none);
            a stamp without an entry has no positions (not counted in the position errors).
        tracks: (stamp, [(id, state, box or None)]) per ``tracks`` message.
        latency_ms: stage -> delays (receipt or log time minus header stamp), ms.
        image_height: depth image height the boxes refer to, rows; None if not known yet.
        skipped: messages not used, per topic (corrupt, or after a loop of the bag).
    """

    detections: dict[int, np.ndarray] | None = field(default_factory=dict)
    positions: dict[int, np.ndarray] = field(default_factory=dict)
    tracks: list[tuple[int, list[tuple[int, str, Any]]]] = field(default_factory=list)
    latency_ms: dict[str, list[float]] = field(default_factory=dict)
    image_height: int | None = None
    skipped: dict[str, int] = field(default_factory=dict)

    def add_detections(
        self, stamp_ns: int, rows: np.ndarray, image_height: int,
        positions: np.ndarray | None = None,
    ) -> None:
        """Keep one detections message (the first seen image height wins)."""
        if self.detections is None:
            self.detections = {}
        self.detections[int(stamp_ns)] = rows
        if positions is not None:
            self.positions[int(stamp_ns)] = positions
        self.image_height = self.image_height or int(image_height)

    def add_latency(self, stage: str, ms: float) -> None:
        """Append one delay of ``stage``, ms."""
        self.latency_ms.setdefault(stage, []).append(float(ms))


def read_recorded(
    reader: BagReader, stop_ns: int | None = None
) -> tuple[RecordedFrames, str | None, str]:
    """Read the recorded ``detections`` and ``tracks`` of an open bag.

    Returns:
        The frames (latency = bag log time minus header stamp), the detections topic (None
        when absent) and the tracks topic.

    Raises:
        DatasetError: no ``tracks`` topic.
    """
    topics = reader.topics
    tracks_topic = find_topic(topics, TRACKS)
    det_topic = find_topic(topics, DETECTIONS)
    if tracks_topic is None:
        raise DatasetError(
            f"{reader.path} has no {TRACKS} topic (it has {', '.join(sorted(topics))}); "
            "--recorded needs a recording of the live graph (detections and tracks); "
            "leave --recorded out to run the models on the bag"
        )
    recorded = RecordedFrames(detections={} if det_topic else None)
    info_topic = find_topic(topics, DEPTH_INFO)
    if info_topic is not None:
        for _t, _y, _l, msg in reader.messages([info_topic]):
            recorded.image_height = int(msg.height)
            break
    wanted = [t for t in (det_topic, tracks_topic) if t is not None]
    for topic, _type, log_ns, msg in reader.messages(wanted, stop_ns=stop_ns):
        stamp = header_stamp_ns(msg)
        if topic == det_topic:
            recorded.add_detections(
                stamp, detection_rows_from_msg(msg), int(msg.image_height),
                detection_positions_from_msg(msg),
            )
            recorded.add_latency(RECORDED_STAGES[0], (log_ns - stamp) / 1e6)
        else:
            recorded.tracks.append((stamp, track_tuples_from_msg(msg)))
            recorded.add_latency(RECORDED_STAGES[1], (log_ns - stamp) / 1e6)
    recorded.skipped = dict(reader.corrupt)
    return recorded, det_topic, tracks_topic


def score_recorded(
    recorded: RecordedFrames,
    truth: Mapping[int, list[PersonTruth]],
    *,
    mode: str = "recorded",
    labels: LabelConfig = DEFAULT_LABELS,
    source: str = "the recording",
    start_ns: int | None = None,
) -> BagEvalResult:
    """Score recorded detections and tracks against ``truth`` (depth stamp -> people).

    AP uses the detections (only those the detector published, i.e. above its score
    threshold); MOT the confirmed tracks of each ``tracks`` message. The detector publishes an
    array for every pair, even an empty one, so a ``tracks`` message without its
    ``detections`` one means the recording lost that message: the frame is left out of AP
    (its people are not the detector's misses) and counted (``tracks_without_detections``).

    ``start_ns`` (the bag's first log time) is what the error of a recording that scores no
    frame counts its ground truth's times from; None = the first ground truth's stamp.

    Raises:
        DatasetError: the image height is unknown (the ground-truth label rule needs it), or
            no frame has ground truth at its stamp.
    """
    height = recorded.image_height
    if height is None:
        raise DatasetError(
            f"{source}: cannot tell the depth image height (no {DETECTIONS} message and no "
            f"{DEPTH_INFO}); the ground-truth label rule needs it"
        )
    detections = recorded.detections
    outputs: list[Output] = [
        (
            stamp,
            detections.get(stamp) if detections is not None else None,
            recorded.positions.get(stamp),
            tuples,
            height,
        )
        for stamp, tuples in recorded.tracks
    ]
    ap, mot, hota, frames, without_truth, breakdown = _score(outputs, truth, labels)
    require_scored(source, frames, len(recorded.tracks), truth,
                   min(truth, default=0) if start_ns is None else start_ns)
    return BagEvalResult(
        mode=mode,
        ap=ap,
        mot=mot,
        hota=hota,
        frames=frames,
        latency_ms={
            s: np.asarray(v, dtype=np.float64) for s, v in recorded.latency_ms.items() if v
        },
        breakdown=breakdown,
        pairs=len(recorded.tracks),
        frames_without_truth=without_truth,
        skipped=dict(recorded.skipped),
        counters={
            "detections_messages": len(detections or {}),
            "tracks_messages": len(recorded.tracks),
            "tracks_without_detections": sum(
                stamp not in detections for stamp, _ in recorded.tracks
            ) if detections is not None else 0,
        },
    )


def evaluate_recorded(
    bag: Path | str, *, limit_s: float | None = None, labels: LabelConfig = DEFAULT_LABELS
) -> tuple[BagEvalResult, dict[str, Any]]:
    """Score the ``detections`` and ``tracks`` a live graph recorded in ``bag``.

    Topics may carry a namespace (``/robot/tracks``). Scoring is :func:`score_recorded`;
    latency is each message's bag log time minus its header stamp.

    Raises:
        DatasetError: a missing or unreadable bag, no ground truth, no ``tracks`` topic, or no
            image size (neither ``detections`` nor ``depth/camera_info``).
    """
    with BagReader(bag) as reader:
        _, stop_ns = window_ns(reader, None, limit_s)
        truth = read_truth(reader, stop_ns)
        recorded, det_topic, tracks_topic = read_recorded(reader, stop_ns)
        start_ns = reader.start_ns
    result = score_recorded(recorded, truth, labels=labels, source=str(bag), start_ns=start_ns)
    result.start_ns = start_ns
    return result, {"detections_topic": det_topic, "tracks_topic": tracks_topic}


def evaluate_live(
    bag: Path | str, recorded: RecordedFrames, *, labels: LabelConfig = DEFAULT_LABELS
) -> BagEvalResult:
    """Score what a live graph published while it played ``bag`` against the bag's truth.

    Raises:
        DatasetError: a missing or unreadable bag, no ground truth, or no image height.
    """
    with BagReader(bag) as reader:
        truth = read_truth(reader)
        start_ns = reader.start_ns
    result = score_recorded(recorded, truth, mode="live", labels=labels, source=str(bag),
                            start_ns=start_ns)
    result.start_ns = start_ns
    return result


def has_ground_truth(bag: Path | str) -> bool:
    """Whether ``bag`` has a ``ground_truth/people`` topic (False for an unreadable bag)."""
    try:
        with BagReader(bag) as reader:
            return find_topic(reader.topics, GROUND_TRUTH) is not None
    except DatasetError:
        return False


# -- report ---------------------------------------------------------------------------------


def latency_summary(latency_ms: Mapping[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Stage -> ``n``, ``p50``, ``p95``, ``max``, ``mean`` in ms."""
    out = {}
    for stage, values in latency_ms.items():
        if values.size:
            p50, p95 = np.percentile(values, [50, 95])
            out[stage] = {
                "n": int(values.size), "p50": float(p50), "p95": float(p95),
                "max": float(values.max()), "mean": float(values.mean()),
            }
    return out


def _finite(value: Any) -> Any:
    return value if not isinstance(value, float) or math.isfinite(value) else None


def metrics_dict(result: BagEvalResult, meta: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-able metrics of ``result``; NaN (undefined) values become None."""
    ap = {f"{t:.2f}": _finite(float(result.ap["ap"][t])) for t in result.ap.get("thresholds", ())}
    return {
        "mode": result.mode,
        "ap": ap,
        "n_gt_boxes": result.ap.get("n_gt"),
        "n_detections": result.ap.get("n_pred"),
        "mot": dict(result.mot),
        "idf1_true_ids": result.idf1_true_ids(),
        "hota": None if result.hota is None else dict(result.hota),
        "hota_note": HOTA_UNAVAILABLE if result.hota is None else HOTA_NOTE,
        "latency_ms": latency_summary(result.latency_ms),
        "pairs": result.pairs,
        "frames_scored": len(result.frames),
        "frames_without_truth": result.frames_without_truth,
        "skipped": dict(result.skipped),
        "counters": dict(result.counters),
        "breakdown": result.breakdown,
        "identities": _identities(result),
        "meta": dict(meta),
    }


def _identities(result: BagEvalResult) -> dict[str, Any] | None:
    """``identity_flow`` of the frames, JSON-able (None without frames)."""
    if not result.frames:
        return None
    start = result.start_ns if result.start_ns is not None else result.frames[0].stamp_ns
    flow = identity_flow(result.frames, start)
    ids = [len({tid for _, _, tid in segments}) for segments in flow.people.values()]
    return {
        "from": "the bag's start" if result.start_ns is not None else "the first frame scored",
        # Fragmentation and merging at a glance: ids per labelled person (1 = each kept one),
        # and ids that covered more than one person.
        "ids_per_person": float(np.mean(ids)) if ids else None,
        "shared_ids": sum(len(covered) > 1 for covered in flow.tracks.values()),
        "people": {str(pid): [[round(a, 2), round(b, 2), tid] for a, b, tid in segments]
                   for pid, segments in flow.people.items()},
        "tracks": {str(tid): {str(pid): n for pid, n in covered.items()}
                   for tid, covered in flow.tracks.items()},
    }


def git_commit() -> str:
    """The source tree's commit (``-dirty`` with local changes), or ``unknown``."""
    root = Path(__file__).resolve().parents[3]
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True, text=True, timeout=10, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and value.is_integer() and digits == 0:
        return str(int(value))
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


_MOT_LABELS = {
    "mota": ("MOTA", 4), "motp": ("MOTP (mean IoU of matches)", 4), "idf1": ("IDF1", 4),
    "idp": ("IDP", 4), "idr": ("IDR", 4), "num_switches": ("ID switches", 0),
    "num_fragmentations": ("fragmentations", 0), "mostly_tracked": ("mostly tracked", 0),
    "partially_tracked": ("partially tracked", 0), "mostly_lost": ("mostly lost", 0),
    "num_objects": ("ground-truth boxes (num GT)", 0),
    "num_predictions": ("track boxes (num hyp)", 0),
    "num_unique_objects": ("ground-truth people", 0), "num_misses": ("misses (FN)", 0),
    "num_false_positives": ("false positives (FP)", 0), "precision": ("precision", 4),
    "recall": ("recall", 4), "num_frames": ("frames", 0),
}


_HOTA_LABELS = {
    "hota": "HOTA", "deta": "DetA (detection)", "assa": "AssA (association)",
    "loca": "LocA (localisation)", "detre": "DetRe", "detpr": "DetPr", "assre": "AssRe",
    "asspr": "AssPr",
}
#: What the report says about its HOTA figures.
HOTA_NOTE = (
    "trackeval's HOTA on box IoU, each value the mean over the IoU thresholds 0.05 .. 0.95; "
    "HOTA = sqrt(DetA x AssA)"
)


def identities_markdown(identities: Mapping[str, Any] | None) -> list[str]:
    """The report's "Identities" section: each person's ids over time, ids on several people."""
    if not identities or not identities["people"]:
        return []
    lines = [
        "## Identities", "",
        "Which confirmed tracks covered each labelled person (matched one to one per frame at "
        f"IoU >= 0.5), in seconds from {identities['from']}; gaps up to 0.5 s do not split a "
        "stretch. A person kept by one id has one entry; an offline run with `iphd-eval bag "
        "--video` draws each moment over the depth.", "",
        "| person | ids over time | ids |", "|---|---|---|",
    ]
    for pid, segments in identities["people"].items():
        stretches = ", ".join(f"id {tid} {a:.1f}–{b:.1f}" for a, b, tid in segments)
        lines.append(f"| {pid} | {stretches} | {len({tid for _, _, tid in segments})} |")
    shared = {tid: covered for tid, covered in identities["tracks"].items() if len(covered) > 1}
    lines.append("")
    if shared:
        lines.append("Ids that covered more than one person (frames each): " + "; ".join(
            f"id {tid}: " + ", ".join(f"person {pid} {n}" for pid, n in covered.items())
            for tid, covered in shared.items()) + ".")
    else:
        lines.append("No id covered more than one person.")
    return [*lines, ""]


def _markdown(metrics: Mapping[str, Any]) -> str:
    meta = dict(metrics["meta"])
    mode = metrics["mode"]
    what = {
        "recorded": "the detections and tracks a live graph recorded in the bag",
        "live": "the detections and tracks the running graph published while it played the bag",
    }.get(mode, "the offline pipeline (fusion -> detector -> tracker, the nodes' library code)")
    lines = [
        "# End-to-end evaluation over a bag", "",
        f"Evaluated {what} on `{meta.get('bag')}` against its `ground_truth/people`.", "",
        "## Detection (IPHD AP protocol)", "", "| metric | value |", "|---|---|",
    ]
    if metrics["ap"]:
        lines += [f"| AP@{t} | {_fmt(v)} |" for t, v in metrics["ap"].items()]
        lines += [
            f"| ground-truth boxes | {metrics['n_gt_boxes']} |",
            f"| detections | {metrics['n_detections']} |",
        ]
    else:
        lines += ["| AP | n/a (no detections recorded at a frame with ground truth) |"]
    lines += ["", "![precision-recall curves](pr.png)", ""]
    lines += ["## Tracking (CLEAR-MOT, IDF1, HOTA)", ""]
    lines += ["| metric | value |", "|---|---|"]
    for key in MOT_KEYS:
        label, digits = _MOT_LABELS[key]
        lines.append(f"| {label} | {_fmt(metrics['mot'][key], digits)} |")
    true_ids = metrics.get("idf1_true_ids")
    lines.append(f"| IDF1 with every identity right (the same track boxes) | {_fmt(true_ids)} |")
    hota = metrics.get("hota")
    if hota is None:
        lines += [f"| HOTA | n/a ({metrics['hota_note']}) |", ""]
    else:
        lines += [f"| {_HOTA_LABELS[k]} | {_fmt(hota[k])} |" for k in HOTA_KEYS]
        lines += ["", f"HOTA: {metrics['hota_note']}.", ""]
    lines += [
        "IDF1 with every identity right: each confirmed track box that matches a labelled "
        "person (one to one, IoU >= 0.5) takes that person's id. Its gap to IDF1 is what the "
        "tracker's identity decisions cost; the rest of the way to 1 is detection and track "
        "confirmation (misses, false positives, late confirmation).",
        "",
    ]
    lines += ["![timeline](timeline.png)", ""]
    lines += identities_markdown(metrics.get("identities"))
    if metrics.get("breakdown"):
        lines += breakdown_markdown(metrics["breakdown"])
    lines += ["## Latency (ms)", ""]
    if mode == "recorded":
        lines += ["Bag log time (receipt by the recorder) minus the header stamp (capture).", ""]
    elif mode == "live":
        lines += [
            "Receipt by the runner's monitor (a subscriber in the same process, reliable QoS) "
            "minus the header stamp, which is the capture stamp of the pair's depth frame "
            "(its thermal partner is within fusion's `max_skew_ms` of it).",
            "",
            f"Clock: {meta.get('latency_clock', 'the monitor node clock')}.",
            "",
        ]
    else:
        lines += [
            "Wall time per pair with `time.perf_counter`, in-process, no queues: fusion = "
            "synchronisation + registration + zero-patch fixing, detection = network + "
            "positions, embedding = depth re-ID (absent when appearance is off), tracking = "
            "tracker update.", "",
        ]
    lines += ["| stage | n | p50 | p95 | max |", "|---|---|---|---|---|"]
    for stage, s in metrics["latency_ms"].items():
        lines.append(
            f"| {stage} | {s['n']} | {s['p50']:.2f} | {s['p95']:.2f} | {s['max']:.2f} |"
        )
    lines += ["", "![latency histograms](latency.png)", "", "## Counts", ""]
    skipped = sum(metrics["skipped"].values())
    lines += [
        f"- pairs processed: {metrics['pairs']}",
        f"- frames scored: {metrics['frames_scored']} ({metrics['frames_without_truth']} "
        "without ground truth at their stamp)",
        f"- messages skipped: {skipped} {metrics['skipped'] or ''}".rstrip(),
    ]
    lines += [f"- {k}: {v}" for k, v in metrics["counters"].items()]
    config = meta.pop("tracker_config", None)
    lines += ["", "## Run", ""]
    lines += [f"- {key}: `{value}`" for key, value in meta.items()]
    if config is not None:
        lines += ["", "Tracker configuration:", "", "```json"]
        lines += [json.dumps(config, indent=2, sort_keys=True), "```"]
    lines += [
        "",
        "Ground truth: the people that pass the IPHD label rule (`iphd.sim.labels.label_people`: "
        "visibility and box size) at the frame's stamp. AP scores every detection of the frame "
        "with the official IPHD protocol; MOT matches labelled people to confirmed tracks on "
        "box IoU >= 0.5 (motmetrics; lost tracks have no box, tentative ones are not "
        "published).",
        "",
    ]
    return "\n".join(lines)


# -- plots (OpenCV, like iphd_ap.plot_pr) ----------------------------------------------------

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_BLACK = (0, 0, 0)


def _write_png(path: Path, image: np.ndarray) -> Path:
    if not cv2.imwrite(str(path), image):
        raise DatasetError(f"could not write {path}")
    return path


def _axes(
    image: np.ndarray, box: tuple[int, int, int, int], x_range: tuple[float, float],
    y_range: tuple[float, float], title: str, x_label: str, y_label: str = "",
    whole_y: bool = False,
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Draw a framed panel; return the data -> pixel mapping.

    ``y_label`` goes above the y axis; with ``whole_y`` (counts) the y ticks are whole numbers.
    """
    left, top, right, bottom = box
    (x0, x1), (y0, y1) = x_range, y_range
    sx = (right - left) / max(x1 - x0, 1e-9)
    sy = (bottom - top) / max(y1 - y0, 1e-9)
    cv2.rectangle(image, (left, top), (right, bottom), _BLACK, 1)
    cv2.putText(image, title, (left, top - 8), _FONT, 0.45, _BLACK, 1, cv2.LINE_AA)
    cv2.putText(image, x_label, ((left + right) // 2 - 30, bottom + 32), _FONT, 0.4, _BLACK, 1)
    if y_label:
        cv2.putText(image, y_label, (4, top + 10), _FONT, 0.35, _BLACK, 1)
    for frac in (0.0, 0.5, 1.0):
        xv, yv = x0 + frac * (x1 - x0), y0 + frac * (y1 - y0)
        cv2.putText(image, f"{xv:.3g}", (int(left + frac * (right - left)) - 10, bottom + 15),
                    _FONT, 0.35, _BLACK, 1)
        if whole_y:
            yv = float(round(yv))
        y_px = int(round(bottom - (yv - y0) * sy))
        text = f"{int(yv)}" if whole_y else f"{yv:.3g}"
        cv2.putText(image, text, (left - 40, y_px + 4), _FONT, 0.35, _BLACK, 1)

    def to_pixel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        px = left + (np.asarray(x, dtype=np.float64) - x0) * sx
        py = bottom - (np.asarray(y, dtype=np.float64) - y0) * sy
        return np.round(np.column_stack((px, py))).astype(np.int32)

    return to_pixel


def plot_timeline(
    frames: Sequence[MotFrame], path: Path, size: tuple[int, int] = (800, 360),
    start_ns: int | None = None,
) -> Path:
    """Per scored frame: labelled ground-truth people (green) and confirmed tracks (blue).

    Times count from ``start_ns`` (the bag's start, as the report's identities do), else from
    the first scored frame.
    """
    width, height = size
    image = np.full((height, width, 3), 255, dtype=np.uint8)
    t0 = start_ns if start_ns is not None else frames[0].stamp_ns if frames else 0
    t = np.asarray([(f.stamp_ns - t0) / 1e9 for f in frames], dtype=np.float64)
    gt = np.asarray([f.gt_ids.size for f in frames], dtype=np.float64)
    hyp = np.asarray([f.hyp_ids.size for f in frames], dtype=np.float64)
    y_max = float(max(gt.max(initial=0), hyp.max(initial=0), 1) + 1)
    # From the window's first frame (a --start-s window starts late in the bag), else 0.
    x_lo = float(t.min()) if start_ns is not None and t.size else 0.0
    x_hi = max(float(t.max(initial=1.0)), x_lo + 1.0)
    to_pixel = _axes(image, (60, 40, width - 20, height - 50), (x_lo, x_hi),
                     (0.0, y_max), "people per frame: ground truth (green), confirmed tracks "
                     "(blue)", "s from the bag's start" if start_ns is not None else
                     "s from the first scored pair", "people", whole_y=True)
    for values, colour, shift in ((gt, (0, 160, 0), 0), (hyp, (200, 80, 0), 2)):
        if values.size:
            points = to_pixel(t, values) + np.array([0, shift], dtype=np.int32)
            cv2.polylines(image, [points.reshape(-1, 1, 2)], False, colour, 2, cv2.LINE_AA)
    return _write_png(path, image)


def plot_latency(latency_ms: Mapping[str, np.ndarray], path: Path, bins: int = 30) -> Path:
    """One histogram panel per stage (count against ms), p50 and p95 marked."""
    stages = [s for s, v in latency_ms.items() if v.size]
    panel_h, width = 180, 800
    image = np.full((max(1, len(stages)) * panel_h + 20, width, 3), 255, dtype=np.uint8)
    for row, stage in enumerate(stages):
        values = latency_ms[stage]
        hi = float(values.max()) if values.max() > values.min() else float(values.min()) + 1.0
        lo = min(0.0, float(values.min()))
        counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
        top = row * panel_h + 30
        p50, p95 = np.percentile(values, [50, 95])
        to_pixel = _axes(
            image, (60, top, width - 20, top + panel_h - 70), (lo, hi),
            (0.0, float(counts.max()) or 1.0),
            f"{stage}: p50 {p50:.1f} ms (green), p95 {p95:.1f} ms (red), max "
            f"{values.max():.1f} ms (n={values.size})",
            "ms", "pairs", whole_y=True,
        )
        for count, a, b in zip(counts, edges[:-1], edges[1:], strict=True):
            (x1, y1), (x2, y2) = to_pixel(np.array([a, b]), np.array([count, 0.0]))
            cv2.rectangle(image, (int(x1), int(y1)), (max(int(x2) - 1, int(x1)), int(y2)),
                          (200, 120, 40), -1)
        for mark, colour in ((p50, (0, 160, 0)), (p95, (0, 0, 200))):
            ((x, y_bottom),) = to_pixel(np.array([mark]), np.array([0.0]))
            cv2.line(image, (int(x), top), (int(x), int(y_bottom)), colour, 1)
    return _write_png(path, image)


@dataclass(frozen=True)
class BagReportFiles:
    """Paths written by :func:`write_bag_report`."""

    report_md: Path
    metrics_json: Path
    pr_png: Path
    timeline_png: Path
    latency_png: Path


def write_bag_report(
    result: BagEvalResult, out_dir: str | os.PathLike[str], meta: Mapping[str, Any]
) -> BagReportFiles:
    """Write ``report.md``, ``metrics.json``, ``pr.png``, ``timeline.png`` and ``latency.png``.

    Args:
        result: the evaluation.
        out_dir: folder to write; created if missing; files of those names are replaced.
        meta: what was evaluated (bag, models, ...); date, iphd version and commit are added.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stamped = {
        **meta,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "iphd_version": iphd.__version__,
        "commit": git_commit(),
    }
    metrics = metrics_dict(result, stamped)
    files = BagReportFiles(
        out / "report.md", out / "metrics.json", out / "pr.png", out / "timeline.png",
        out / "latency.png",
    )
    pr = result.ap or {
        "thresholds": DEFAULT_THRESHOLDS, "ap": dict.fromkeys(DEFAULT_THRESHOLDS, math.nan),
        "precision": {t: np.zeros(0) for t in DEFAULT_THRESHOLDS},
        "recall": {t: np.zeros(0) for t in DEFAULT_THRESHOLDS}, "n_gt": 0, "n_pred": 0,
    }
    plot_pr(pr, files.pr_png)
    plot_timeline(result.frames, files.timeline_png, start_ns=result.start_ns or None)
    plot_latency(result.latency_ms, files.latency_png)
    files.metrics_json.write_text(
        json.dumps(metrics, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8"
    )
    files.report_md.write_text(_markdown(metrics), encoding="utf-8")
    return files


#: Columns of the several-bag summary: label, key path into ``metrics.json``, digits.
SUMMARY_COLUMNS: tuple[tuple[str, tuple[str, ...], int], ...] = (
    ("AP@0.5", ("ap", "0.50"), 3),
    ("MOTA", ("mot", "mota"), 3),
    ("IDF1", ("mot", "idf1"), 3),
    ("IDF1, true ids", ("idf1_true_ids",), 3),
    ("HOTA", ("hota", "hota"), 3),
    ("ID switches", ("mot", "num_switches"), 0),
    ("false positives", ("mot", "num_false_positives"), 0),
    ("misses", ("mot", "num_misses"), 0),
    ("second boxes", ("breakdown", "second_box"), 0),
    ("background boxes", ("breakdown", "background"), 0),
    ("share of positions > 1 m off", ("breakdown", "position", "over_1_m"), 3),
    ("ids per person", ("identities", "ids_per_person"), 2),
    ("ids on several people", ("identities", "shared_ids"), 0),
)


def _lookup(metrics: Mapping[str, Any], path: Sequence[str]) -> float | None:
    value: Any = metrics
    for key in path:
        if not isinstance(value, Mapping) or value.get(key) is None:
            return None
        value = value[key]
    return float(value) if isinstance(value, int | float) else None


@dataclass
class BagSummaryRow:
    """One bag of a several-bag evaluation: where its report is, or why it has none."""

    bag: str
    report_dir: str
    metrics: Mapping[str, Any] | None = None
    error: str = ""


def write_bags_summary(
    rows: Sequence[BagSummaryRow], out_dir: str | os.PathLike[str]
) -> tuple[Path, Path]:
    """Write ``summary.md`` and ``summary.json``: a row per bag and the mean over those scored.

    Each mean is over the bags that have that value (HOTA needs trackeval; AP and the
    breakdown need detections); a bag that could not be scored is listed with its error.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = {
        row.report_dir: {label: _lookup(row.metrics, path) for label, path, _ in SUMMARY_COLUMNS}
        for row in rows if row.metrics is not None
    }
    mean: dict[str, float | None] = {}
    for label, _path, _digits in SUMMARY_COLUMNS:
        scored = [v[label] for v in table.values()]
        present = [x for x in scored if x is not None]
        mean[label] = float(np.mean(present)) if present else None

    def cell(value: float | None, digits: int) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    labels = [label for label, _, _ in SUMMARY_COLUMNS]
    lines = [
        "# End-to-end evaluation over several bags", "",
        f"{len(table)} of {len(rows)} bags scored; each bag's own report is in its folder.", "",
        "| bag | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|",
    ]
    for row in rows:
        if row.metrics is None:
            continue
        own = table[row.report_dir]
        lines.append(
            f"| [{row.bag}]({Path(row.report_dir).name}/report.md) | "
            + " | ".join(cell(own[lb], d) for lb, _, d in SUMMARY_COLUMNS) + " |"
        )
    lines.append(
        "| **mean** | " + " | ".join(cell(mean[lb], max(d, 1)) for lb, _, d in SUMMARY_COLUMNS)
        + " |"
    )
    failed = [row for row in rows if row.metrics is None]
    if failed:
        lines += ["", "Not scored:", ""]
        lines += [f"- `{row.bag}`: {row.error}" for row in failed]
    md = out / "summary.md"
    js = out / "summary.json"
    md.write_text("\n".join(lines) + "\n", encoding="utf-8")
    payload = {
        "bags": [
            {"bag": row.bag, "report_dir": row.report_dir, "error": row.error or None,
             "values": table.get(row.report_dir)}
            for row in rows
        ],
        "mean": mean,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
    }
    js.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return md, js


def short_table(metrics: Mapping[str, Any], stage: str = LIVE_STAGES[1]) -> list[str]:
    """The evaluation's headline numbers as a Markdown table, from :func:`metrics_dict` output.

    Columns: pairs (tracks messages scored), AP@0.50, MOTA, IDF1, HOTA, ID switches and
    ``stage``'s latency p50 / p95 in ms; ``n/a`` where a value is undefined (HOTA without
    trackeval).
    """
    latency = metrics["latency_ms"].get(stage)
    delay = "n/a" if latency is None else f"{latency['p50']:.1f} / {latency['p95']:.1f}"
    mot = metrics["mot"]
    hota = (metrics.get("hota") or {}).get("hota")
    switches = mot.get("num_switches")
    return [
        "| pairs | AP@0.5 | MOTA | IDF1 | HOTA | ID switches | latency to tracks p50 / p95 (ms) |",
        "|---|---|---|---|---|---|---|",
        f"| {metrics['pairs']} | {_fmt(metrics['ap'].get('0.50'))} | {_fmt(mot.get('mota'))} "
        f"| {_fmt(mot.get('idf1'))} | {_fmt(hota)} | "
        f"{'n/a' if switches is None else int(switches)} | {delay} |",
    ]
