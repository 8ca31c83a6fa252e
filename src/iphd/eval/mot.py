"""CLEAR-MOT and identity (IDF1) metrics of person tracks against ground truth, via motmetrics."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

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
HOTA_UNAVAILABLE = (
    "trackeval not installed: PyPI's trackeval 1.3.0 runs on numpy 2.3 but requires "
    "opencv-python (which clashes with the pinned opencv-python-headless), matplotlib and "
    "pycocotools, so it is not a dependency"
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
