"""Official IPHD detection evaluation: greedy highest-IoU matching and all-point-interpolated AP."""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from iphd.errors import DatasetError

DEFAULT_THRESHOLDS: tuple[float, ...] = (0.25, 0.5, 0.75)
_COLUMNS = {4: "x1, y1, x2, y2", 5: "x1, y1, x2, y2, score"}


def _as_boxes(values: Any, columns: int, what: str) -> np.ndarray:
    """(K, columns) float64 copy of ``values``; an empty input of any shape gives (0, columns)."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        return np.zeros((0, columns), dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != columns:
        raise DatasetError(
            f"{what} must have shape (K, {columns}), got {array.shape}; "
            f"pass one row per box ({_COLUMNS[columns]})"
        )
    if not np.all(np.isfinite(array)):
        raise DatasetError(f"{what} contains NaN or infinite values; drop or fix those boxes")
    return array


def iou_matrix(pred_xyxy: np.ndarray, gt_xyxy: np.ndarray) -> np.ndarray:
    """Intersection over union of every prediction with every ground-truth box.

    Args:
        pred_xyxy: (N, 4) boxes ``[x1, y1, x2, y2]``, any consistent unit (pixels here).
        gt_xyxy: (M, 4) boxes in the same unit and frame.

    Returns:
        (N, M) float64 IoU in [0, 1]; 0 where the union is empty (degenerate boxes).
    """
    pred = _as_boxes(pred_xyxy, 4, "pred_xyxy")
    gt = _as_boxes(gt_xyxy, 4, "gt_xyxy")
    top_left = np.maximum(pred[:, None, :2], gt[None, :, :2])
    bottom_right = np.minimum(pred[:, None, 2:], gt[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0.0, None), axis=2)
    area_pred = np.prod(np.clip(pred[:, 2:] - pred[:, :2], 0.0, None), axis=1)
    area_gt = np.prod(np.clip(gt[:, 2:] - gt[:, :2], 0.0, None), axis=1)
    union = area_pred[:, None] + area_gt[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match_frame(
    pred_xyxy: np.ndarray, scores: np.ndarray, gt_xyxy: np.ndarray, iou_threshold: float
) -> np.ndarray:
    """True-positive flags of one frame's predictions under the official IPHD rule (DESIGN §4).

    Predictions are visited in descending score order; equal scores keep their input order
    (stable sort). Each prediction looks only at its highest-IoU ground truth (on an IoU tie the
    lowest ground-truth index): it is a TP if that IoU >= ``iou_threshold`` and that ground truth
    has not been matched yet, otherwise an FP. There is no fall-back to the next-best ground truth,
    and an FP does not claim its ground truth.

    Args:
        pred_xyxy: (N, 4) predicted boxes in pixels.
        scores: (N,) confidence scores.
        gt_xyxy: (M, 4) ground-truth boxes in pixels; M may be 0 (then every prediction is FP).
        iou_threshold: minimum IoU for a TP.

    Returns:
        (N,) bool TP flags aligned with the *input* order of ``pred_xyxy`` (not the sorted order).
    """
    pred = _as_boxes(pred_xyxy, 4, "pred_xyxy")
    score = np.asarray(scores, dtype=np.float64).reshape(-1)
    if score.shape[0] != pred.shape[0]:
        raise DatasetError(f"got {pred.shape[0]} boxes but {score.shape[0]} scores; pass one each")
    flags = np.zeros(pred.shape[0], dtype=bool)
    gt = _as_boxes(gt_xyxy, 4, "gt_xyxy")
    if pred.shape[0] == 0 or gt.shape[0] == 0:
        return flags
    order = np.argsort(-score, kind="stable")
    iou = iou_matrix(pred[order], gt)
    best_gt = np.argmax(iou, axis=1)
    best_iou = iou[np.arange(order.size), best_gt]
    # A ground truth is taken only by a qualifying prediction, so the TPs are exactly the first
    # qualifying prediction (in score order) for each ground truth.
    qualifying = np.flatnonzero(best_iou >= iou_threshold)
    _, first = np.unique(best_gt[qualifying], return_index=True)
    flags[order[qualifying[first]]] = True
    return flags


def precision_recall(
    tp_flags_all: np.ndarray, scores_all: np.ndarray, n_gt: int
) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative precision and recall after each prediction, all frames pooled.

    Predictions are sorted by descending score, ties kept in input order (stable).

    Returns:
        ``(precision, recall)``, each (N,) float64; recall is NaN everywhere when ``n_gt == 0``.
    """
    tp = np.asarray(tp_flags_all, dtype=bool).reshape(-1)
    score = np.asarray(scores_all, dtype=np.float64).reshape(-1)
    if tp.shape != score.shape:
        raise DatasetError(f"got {tp.size} TP flags but {score.size} scores; pass one each")
    order = np.argsort(-score, kind="stable")
    cum_tp = np.cumsum(tp[order], dtype=np.float64)
    precision = cum_tp / np.arange(1, tp.size + 1, dtype=np.float64)
    recall = cum_tp / n_gt if n_gt > 0 else np.full(tp.size, np.nan)
    return precision, recall


def average_precision(tp_flags_all: np.ndarray, scores_all: np.ndarray, n_gt: int) -> float:
    """Area under the precision envelope with all-point interpolation (DESIGN §4).

    The envelope at recall r is the highest precision at any recall >= r; AP sums it over every
    recall step. Not VOC 11-point, not COCO 101-point.

    Args:
        tp_flags_all: (N,) bool TP flags of all predictions of all frames.
        scores_all: (N,) their scores.
        n_gt: number of ground-truth boxes in all frames.

    Returns:
        AP in [0, 1]; NaN when ``n_gt == 0`` (recall is undefined); 0 when there are ground truths
        but no predictions.

    Raises:
        ValueError: if ``n_gt`` is negative or smaller than the number of TPs.
    """
    if n_gt < 0:
        raise ValueError(f"n_gt must be >= 0, got {n_gt}")
    precision, recall = precision_recall(tp_flags_all, scores_all, n_gt)
    if n_gt == 0:
        return float("nan")
    if recall.size and recall[-1] > 1.0:
        raise ValueError(f"n_gt={n_gt} is smaller than the number of TPs; count every ground truth")
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    envelope = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * envelope[steps + 1]))


def evaluate(
    predictions: Mapping[str, np.ndarray],
    ground_truth: Mapping[str, np.ndarray],
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> dict[str, Any]:
    """Official IPHD AP of a detector over a split, at each IoU threshold.

    Frames in ``ground_truth`` but not in ``predictions`` count their boxes as missed; frames
    whose ground truth is empty turn all their predictions into FPs. Frames are pooled in sorted
    name order, so equal scores in different frames are ranked deterministically.

    Args:
        predictions: frame base name -> (K, 5) ``[x1, y1, x2, y2, score]`` in pixels.
        ground_truth: frame base name -> (M, 4) ``[x1, y1, x2, y2]`` in pixels; every evaluated
            frame must be present, even with no boxes.
        thresholds: IoU thresholds.

    Returns:
        ``{"thresholds": tuple, "ap": {thr: float}, "precision": {thr: (N,) array},
        "recall": {thr: (N,) array}, "n_gt": int, "n_pred": int}``; the arrays are cumulative over
        predictions in descending score order (a PR curve); AP is NaN when ``n_gt == 0``.

    Raises:
        DatasetError: if a prediction frame is not in the ground truth, or a box array is malformed.
    """
    unknown = sorted(set(predictions) - set(ground_truth))
    if unknown:
        more = f" (+{len(unknown) - 5} more)" if len(unknown) > 5 else ""
        shown = ", ".join(unknown[:5]) + more
        raise DatasetError(
            f"predictions for {len(unknown)} frame(s) unknown to the ground truth: {shown}; "
            "check the split and that keys are frame base names without extension"
        )
    names = sorted(ground_truth)
    gts = {name: _as_boxes(ground_truth[name], 4, f"ground truth of {name}") for name in names}
    preds = {
        name: _as_boxes(predictions.get(name, ()), 5, f"predictions of {name}") for name in names
    }
    n_gt = sum(box.shape[0] for box in gts.values())
    scores = np.concatenate([preds[name][:, 4] for name in names]) if names else np.zeros(0)
    result: dict[str, Any] = {
        "thresholds": tuple(float(t) for t in thresholds),
        "ap": {},
        "precision": {},
        "recall": {},
        "n_gt": int(n_gt),
        "n_pred": int(scores.size),
    }
    for threshold in result["thresholds"]:
        flags = [
            match_frame(preds[name][:, :4], preds[name][:, 4], gts[name], threshold)
            for name in names
        ]
        tp = np.concatenate(flags) if flags else np.zeros(0, dtype=bool)
        precision, recall = precision_recall(tp, scores, n_gt)
        result["ap"][threshold] = average_precision(tp, scores, n_gt)
        result["precision"][threshold] = precision
        result["recall"][threshold] = recall
    return result


def submission(
    predictions: Mapping[str, np.ndarray], sizes: Mapping[str, tuple[int, int]]
) -> dict[str, list[list[float]]]:
    """Official submission: per frame base name a list of normalised ``[cx, cy, w, h, score]``.

    Boxes are clipped to the image before normalising, so every coordinate lies in [0, 1].

    Args:
        predictions: frame base name -> (K, 5) ``[x1, y1, x2, y2, score]`` in pixels.
        sizes: frame base name -> ``(width, height)`` in pixels of the image the boxes refer to.

    Raises:
        DatasetError: if a frame has no size or a non-positive one, or a box array is malformed.
    """
    out: dict[str, list[list[float]]] = {}
    for name in sorted(predictions):
        if name not in sizes:
            raise DatasetError(f"no image size for frame {name}; pass sizes[{name!r}] = (w, h)")
        width, height = (float(v) for v in sizes[name])
        if width <= 0 or height <= 0:
            raise DatasetError(f"image size of {name} must be positive, got {sizes[name]}")
        boxes = _as_boxes(predictions[name], 5, f"predictions of {name}")
        scale = np.array([width, height, width, height])
        xyxy = np.clip(boxes[:, :4], 0.0, scale) / scale
        cxcywh = np.column_stack(
            (
                (xyxy[:, 0] + xyxy[:, 2]) / 2,
                (xyxy[:, 1] + xyxy[:, 3]) / 2,
                xyxy[:, 2] - xyxy[:, 0],
                xyxy[:, 3] - xyxy[:, 1],
                boxes[:, 4],
            )
        )
        out[name] = cxcywh.tolist()
    return out


def write_submission(
    path: str | os.PathLike[str],
    predictions: Mapping[str, np.ndarray],
    sizes: Mapping[str, tuple[int, int]],
) -> dict[str, list[list[float]]]:
    """Write the official submission pickle (see :func:`submission`) and return what was written.

    The file is written beside its target and renamed, so a crash never leaves half a pickle.
    """
    data = submission(predictions, sizes)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    with partial.open("wb") as handle:
        pickle.dump(data, handle, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(partial, target)
    return data


def read_submission(path: str | os.PathLike[str]) -> dict[str, list[list[float]]]:
    """Read a submission pickle written by :func:`write_submission`.

    Unpickling runs code from the file: only read submissions you trust.

    Raises:
        DatasetError: if the file is missing or is not a mapping of name -> list of 5-number rows.
    """
    target = Path(path)
    if not target.is_file():
        raise DatasetError(f"submission file {target} does not exist; write it first")
    with target.open("rb") as handle:
        data = pickle.load(handle)
    if not isinstance(data, dict) or not all(
        isinstance(name, str)
        and isinstance(rows, list)
        and all(isinstance(row, list | tuple) and len(row) == 5 for row in rows)
        for name, rows in data.items()
    ):
        raise DatasetError(
            f"{target} is not an IPHD submission (dict of frame name -> [[cx, cy, w, h, score]])"
        )
    return {name: [[float(v) for v in row] for row in rows] for name, rows in data.items()}


_CURVE_COLOURS_BGR = ((200, 80, 0), (0, 140, 255), (40, 160, 40), (0, 0, 200), (160, 0, 160))


def plot_pr(result: Mapping[str, Any], path: str | os.PathLike[str], size: int = 640) -> Path:
    """Write a PNG precision-recall curve, one line per IoU threshold, AP in the legend.

    Args:
        result: the output of :func:`evaluate`.
        path: PNG file to write; parent folders are created.
        size: side of the square image in pixels.

    Returns:
        The path written.

    Raises:
        DatasetError: if OpenCV could not write the file.
    """
    margin = size // 8
    span = size - 2 * margin
    image = np.full((size, size, 3), 255, dtype=np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX

    def to_pixel(recall: np.ndarray, precision: np.ndarray) -> np.ndarray:
        x = margin + recall * span
        y = size - margin - precision * span
        return np.round(np.column_stack((x, y))).astype(np.int32)

    for tick in np.linspace(0.0, 1.0, 6):
        ((x0, y0),) = to_pixel(np.array([tick]), np.array([0.0]))
        ((x1, y1),) = to_pixel(np.array([0.0]), np.array([tick]))
        cv2.line(image, (int(x0), margin), (int(x0), size - margin), (225, 225, 225), 1)
        cv2.line(image, (margin, int(y1)), (size - margin, int(y1)), (225, 225, 225), 1)
        cv2.putText(image, f"{tick:.1f}", (int(x0) - 12, y0 + 20), font, 0.4, (0, 0, 0), 1)
        cv2.putText(image, f"{tick:.1f}", (margin - 32, int(y1) + 4), font, 0.4, (0, 0, 0), 1)
    cv2.rectangle(image, (margin, margin), (size - margin, size - margin), (0, 0, 0), 1)
    cv2.putText(image, "recall", (size // 2 - 25, size - margin // 3), font, 0.5, (0, 0, 0), 1)
    cv2.putText(image, "precision", (4, margin - 12), font, 0.5, (0, 0, 0), 1)
    title = f"IPHD PR curve (n_gt={result['n_gt']}, n_pred={result['n_pred']})"
    cv2.putText(image, title, (margin, margin // 2), font, 0.5, (0, 0, 0), 1)
    for index, threshold in enumerate(result["thresholds"]):
        colour = _CURVE_COLOURS_BGR[index % len(_CURVE_COLOURS_BGR)]
        recall = np.asarray(result["recall"][threshold], dtype=np.float64)
        precision = np.asarray(result["precision"][threshold], dtype=np.float64)
        if recall.size and np.all(np.isfinite(recall)):
            points = to_pixel(recall, precision)
            cv2.polylines(image, [points.reshape(-1, 1, 2)], False, colour, 2, cv2.LINE_AA)
        legend_y = size - margin - 20 * (len(result["thresholds"]) - index)
        label = f"AP@{threshold:.2f} = {result['ap'][threshold]:.3f}"
        cv2.line(
            image,
            (size - margin - 170, legend_y - 4),
            (size - margin - 150, legend_y - 4),
            colour,
            2,
        )
        cv2.putText(image, label, (size - margin - 145, legend_y), font, 0.45, (0, 0, 0), 1)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(target), image):
        raise DatasetError(f"OpenCV could not write {target}; use a .png path in a writable folder")
    return target
