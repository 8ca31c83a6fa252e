"""Tracking metrics against ground truth: CLEAR-MOT and IDF1 (motmetrics), HOTA (trackeval)."""

from __future__ import annotations

import contextlib
import io
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from iphd.data.truth import PersonTruth
from iphd.eval.iphd_ap import iou_matrix
from iphd.sim.labels import LabelConfig, label_people
from iphd.tracking.tracker import CONFIRMED, TrackState

#: A ground-truth box and a track box match at this IoU or more (distance 1 - IoU <= 0.5).
MIN_IOU = 0.5
#: Summary keys of :func:`evaluate_mot`, in report order.
MOT_KEYS = (
    "mota", "motp", "idf1", "idp", "idr", "num_switches", "num_fragmentations",
    "mostly_tracked", "partially_tracked", "mostly_lost", "num_objects", "num_predictions",
    "num_unique_objects", "num_misses", "num_false_positives", "precision", "recall",
    "num_frames",
)
#: The IPHD label rule (visibility and box size) applied to the ground truth.
DEFAULT_LABELS = LabelConfig()
#: Summary keys of :func:`evaluate_hota`, in report order.
HOTA_KEYS = ("hota", "deta", "assa", "loca", "detre", "detpr", "assre", "asspr")
HOTA_UNAVAILABLE = (
    "trackeval is not installed, so HOTA is not reported; install it without its declared "
    "dependencies (its HOTA needs only numpy and scipy): pip install --no-deps -r "
    "requirements-nodeps.txt"
)


@dataclass(frozen=True)
class MotFrame:
    """Ground truth and hypotheses of one evaluated frame.

    Attributes:
        stamp_ns: the frame's stamp.
        gt_ids: (G,) ground-truth person ids.
        gt_boxes: (G, 4) ``[x1, y1, x2, y2]`` in depth pixels.
        hyp_ids: (H,) track ids.
        hyp_boxes: (H, 4) track boxes in depth pixels.
    """

    stamp_ns: int
    gt_ids: np.ndarray
    gt_boxes: np.ndarray
    hyp_ids: np.ndarray
    hyp_boxes: np.ndarray


def _boxes(values: Iterable[Sequence[float]]) -> np.ndarray:
    return np.asarray(list(values), dtype=np.float64).reshape(-1, 4)


def mot_frame(
    stamp_ns: int,
    people: Sequence[PersonTruth],
    tracks: Iterable[tuple[int, str, Sequence[float] | None]],
    image_height: int,
    labels: LabelConfig = DEFAULT_LABELS,
) -> MotFrame:
    """Build one frame: labelled people (the IPHD label rule) against confirmed tracks with boxes.

    Args:
        stamp_ns: the frame's stamp.
        people: the frame's ground truth (all people; the label rule filters them).
        tracks: (id, state, box or None) of the published tracks; only confirmed tracks with a
            box are hypotheses (a lost track has no box, a tentative one is not published).
        image_height: depth image height, rows (the label rule scales with it).
        labels: the label rule.
    """
    kept = label_people(people, image_height, labels)
    hyps = [(i, b) for i, state, b in tracks if state == CONFIRMED and b is not None]
    return MotFrame(
        int(stamp_ns),
        np.asarray([p.pid for p in kept], dtype=np.int64),
        _boxes(p.box_xyxy for p in kept),
        np.asarray([i for i, _ in hyps], dtype=np.int64),
        _boxes(b for _, b in hyps),
    )


def track_tuples(tracks: Iterable[TrackState]) -> list[tuple[int, str, Sequence[float] | None]]:
    """(id, state, box) of tracker snapshots, for :func:`mot_frame`."""
    return [
        (t.track_id, t.state, None if t.box_xyxy is None else tuple(t.box_xyxy)) for t in tracks
    ]


def with_true_identities(frame: MotFrame, min_iou: float = MIN_IOU) -> MotFrame:
    """The frame with every hypothesis that matches a person renamed to that person's id.

    Scoring frames renamed this way gives what the same boxes would score with no identity
    error at all: the gap to the real score is what association costs, the rest is detection
    (misses, false positives, late confirmation). Hypotheses are matched one to one at
    ``min_iou`` or more (one to one, as the metrics match); the others keep their track
    id, moved below every person id (``-1 - id``) so it cannot collide with one.
    """
    ids = -1 - frame.hyp_ids.astype(np.int64)
    for r, c in _matches(frame, min_iou):
        ids[c] = frame.gt_ids[r]
    return MotFrame(frame.stamp_ns, frame.gt_ids, frame.gt_boxes, ids, frame.hyp_boxes)


def _matches(frame: MotFrame, min_iou: float) -> list[tuple[int, int]]:
    """(person row, hypothesis column) pairs, one to one, IoU >= min_iou.

    As motmetrics matches: pairs under ``min_iou`` are ruled out before the assignment, which
    then makes as many pairs as it can at the least total distance (1 - IoU). Assigning on IoU
    first and cutting afterwards could trade one valid pair for two that fail the cut.
    """
    from scipy.optimize import linear_sum_assignment

    if not (frame.gt_ids.size and frame.hyp_ids.size):
        return []
    iou = iou_matrix(frame.gt_boxes, frame.hyp_boxes)
    valid = iou >= min_iou
    # A ruled-out pair costs more than any set of valid ones: the count of pairs comes first.
    cost = np.where(valid, 1.0 - iou, float(iou.size + 1))
    rows, cols = linear_sum_assignment(cost)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if valid[r, c]]


#: Unmatched frames up to this long inside one id's cover of a person do not split it, s.
FLOW_GAP_S = 0.5


@dataclass(frozen=True)
class IdentityFlow:
    """Which confirmed tracks covered each labelled person, and when.

    Attributes:
        people: person id -> ``(start_s, end_s, track_id)`` segments in time order, seconds
            from the ``start_ns`` given: the frames where that track matched the person (as
            ``with_true_identities`` matches), joined across gaps up to ``FLOW_GAP_S``.
        tracks: track id -> {person id: frames matched}. An id with more than one person
            moved from one to another, or took a returning person's identity.
    """

    people: dict[int, list[tuple[float, float, int]]]
    tracks: dict[int, dict[int, int]]


def identity_flow(
    frames: Sequence[MotFrame], start_ns: int, min_iou: float = MIN_IOU
) -> IdentityFlow:
    """Follow each labelled person's identity through ``frames`` (in time order)."""
    people: dict[int, list[list[float]]] = {}
    tracks: dict[int, dict[int, int]] = {}
    for frame in frames:
        t = (frame.stamp_ns - start_ns) / 1e9
        for r, c in _matches(frame, min_iou):
            pid, tid = int(frame.gt_ids[r]), int(frame.hyp_ids[c])
            covered = tracks.setdefault(tid, {})
            covered[pid] = covered.get(pid, 0) + 1
            segments = people.setdefault(pid, [])
            if segments and segments[-1][2] == tid and t - segments[-1][1] <= FLOW_GAP_S:
                segments[-1][1] = t
            else:
                segments.append([t, t, tid])
    return IdentityFlow(
        {pid: [(a, b, int(tid)) for a, b, tid in segs] for pid, segs in sorted(people.items())},
        {tid: dict(sorted(covered.items())) for tid, covered in sorted(tracks.items())},
    )


def _nan_to_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def evaluate_mot(frames: Sequence[MotFrame], min_iou: float = MIN_IOU) -> dict[str, float | None]:
    """CLEAR-MOT and ID metrics over ``frames`` (in time order) with motmetrics.

    Per frame, ground truth and hypotheses match on box IoU >= ``min_iou`` (motmetrics'
    distance 1 - IoU, gated at 1 - ``min_iou``).

    Returns:
        ``MOT_KEYS`` -> value; ``motp`` is the mean IoU of the matches (1 - motmetrics' mean
        distance), higher is better; counts are integers as floats; undefined ratios (no
        ground truth, no match) are None.
    """
    if not frames:
        counts = ("num_", "mostly_", "partially_")
        return {k: (0.0 if k.startswith(counts) else None) for k in MOT_KEYS}
    import motmetrics as mm  # pandas comes with it; only needed here

    acc = mm.MOTAccumulator(auto_id=False)
    for index, frame in enumerate(frames):
        distance = 1.0 - iou_matrix(frame.gt_boxes, frame.hyp_boxes)
        distance[distance > 1.0 - min_iou] = np.nan
        acc.update(frame.gt_ids.tolist(), frame.hyp_ids.tolist(), distance, frameid=index)
    names = [k for k in MOT_KEYS if k != "num_frames"]
    summary = mm.metrics.create().compute(acc, metrics=names, name="all")
    row = {k: float(summary[k].iloc[0]) for k in names}
    row["motp"] = 1.0 - row["motp"]
    row["num_frames"] = float(len(frames))
    return {k: _nan_to_none(row[k]) for k in MOT_KEYS}


def hota_metric() -> Any | None:
    """The HOTA metric object of trackeval, or None when trackeval is not installed.

    trackeval is installed without its declared dependencies (``requirements-nodeps.txt``): on
    import it prints a line about the optional ones it lacks, which is swallowed here.
    """
    # Only the first import prints; later ones leave stdout alone (other threads may print).
    quiet = (contextlib.redirect_stdout(io.StringIO()) if "trackeval" not in sys.modules
             else contextlib.nullcontext())
    try:
        with quiet:
            from trackeval.metrics import HOTA
    except ImportError:
        return None
    return HOTA()


def evaluate_hota(frames: Sequence[MotFrame]) -> dict[str, float | None] | None:
    """HOTA and its parts over ``frames`` (in time order) with trackeval (Luiten et al., IJCV 2021).

    Ground truth and hypotheses are compared on box IoU, the similarity of trackeval's MOT
    benchmarks; every value is the mean over the localisation thresholds 0.05, 0.10 .. 0.95, as
    trackeval reports it. HOTA = sqrt(DetA * AssA): detection (DetA, with DetRe / DetPr) and
    association (AssA, with AssRe / AssPr) weigh equally, where MOTA is mostly detection and IDF1
    mostly association. LocA is the mean IoU of the matches.

    Returns:
        ``HOTA_KEYS`` -> value in [0, 1], or None for all of them when there is no ground truth
        and no track; None instead of the dict when trackeval is not installed.
    """
    metric = hota_metric()
    if metric is None:
        return None
    if not frames or not any(len(f.gt_ids) or len(f.hyp_ids) for f in frames):
        return dict.fromkeys(HOTA_KEYS)
    gt_index: dict[int, int] = {}
    hyp_index: dict[int, int] = {}

    def dense(ids: np.ndarray, index: dict[int, int]) -> np.ndarray:
        return np.asarray([index.setdefault(int(i), len(index)) for i in ids], dtype=np.int64)

    gt_ids = [dense(f.gt_ids, gt_index) for f in frames]
    hyp_ids = [dense(f.hyp_ids, hyp_index) for f in frames]
    data = {
        "num_timesteps": len(frames),
        "num_gt_ids": len(gt_index),
        "num_tracker_ids": len(hyp_index),
        "num_gt_dets": sum(len(i) for i in gt_ids),
        "num_tracker_dets": sum(len(i) for i in hyp_ids),
        "gt_ids": gt_ids,
        "tracker_ids": hyp_ids,
        "similarity_scores": [iou_matrix(f.gt_boxes, f.hyp_boxes) for f in frames],
    }
    result = metric.eval_sequence(data)
    names = {"hota": "HOTA", "deta": "DetA", "assa": "AssA", "loca": "LocA", "detre": "DetRe",
             "detpr": "DetPr", "assre": "AssRe", "asspr": "AssPr"}
    values = {k: _nan_to_none(float(np.mean(result[names[k]]))) for k in HOTA_KEYS}
    if not np.any(result["HOTA_TP"]):
        values["loca"] = None  # no match to localise; trackeval reports 1.0 then
    return values
