"""Run a detector over an IPHD split and report the official AP, PR curves and latency."""

from __future__ import annotations

import datetime
import json
import math
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

import iphd
from iphd.data.iphd import IphdDataset
from iphd.errors import ConfigError
from iphd.eval.iphd_ap import DEFAULT_THRESHOLDS, evaluate, plot_pr, write_submission


class DetectionsLike(Protocol):
    """What a detector returns for one frame (``iphd.detection.detector.Detections`` fits)."""

    @property
    def boxes_xyxy(self) -> np.ndarray:
        """(N, 4) boxes ``[x1, y1, x2, y2]`` in depth-image pixels."""

    @property
    def scores(self) -> np.ndarray:
        """(N,) confidence scores."""


class DetectorLike(Protocol):
    """A callable detector: ``Detector``, an ONNX detector, or a test double."""

    def __call__(self, depth_mm: np.ndarray, thermal_ck: np.ndarray) -> DetectionsLike:
        """Detect people in a (H, W) uint16 depth frame and its registered thermal frame."""


@dataclass(frozen=True)
class DetectorEvalResult:
    """Outcome of :func:`evaluate_detector`.

    Attributes:
        thresholds: IoU thresholds, e.g. ``(0.25, 0.5, 0.75)``.
        ap: IoU threshold -> official AP (NaN when the split has no ground-truth box).
        precision: IoU threshold -> (N,) cumulative precision, predictions by descending score.
        recall: IoU threshold -> (N,) cumulative recall in the same order.
        n_frames: frames evaluated.
        n_gt: ground-truth boxes in those frames.
        n_pred: predictions in those frames.
        latency_ms: (n_frames,) float64 wall time of each detector call, ms, in dataset order.
        predictions: frame base name -> (K, 5) ``[x1, y1, x2, y2, score]`` in depth pixels.
        ground_truth: frame base name -> (M, 4) ``[x1, y1, x2, y2]`` in depth pixels.
        sizes: frame base name -> ``(width, height)`` of the depth frame, px.
    """

    thresholds: tuple[float, ...]
    ap: dict[float, float]
    precision: dict[float, np.ndarray]
    recall: dict[float, np.ndarray]
    n_frames: int
    n_gt: int
    n_pred: int
    latency_ms: np.ndarray
    predictions: dict[str, np.ndarray]
    ground_truth: dict[str, np.ndarray]
    sizes: dict[str, tuple[int, int]]

    @property
    def latency_median_ms(self) -> float:
        """Median detector call time, ms; NaN when no frame was evaluated."""
        return float(np.median(self.latency_ms)) if self.latency_ms.size else math.nan

    @property
    def latency_p95_ms(self) -> float:
        """95th percentile of the detector call time, ms; NaN when no frame was evaluated."""
        return float(np.percentile(self.latency_ms, 95)) if self.latency_ms.size else math.nan

    def pr_data(self) -> dict[str, Any]:
        """The AP and PR curves in the layout of :func:`iphd.eval.iphd_ap.evaluate`."""
        return {
            "thresholds": self.thresholds,
            "ap": self.ap,
            "precision": self.precision,
            "recall": self.recall,
            "n_gt": self.n_gt,
            "n_pred": self.n_pred,
        }


def _prediction_rows(detections: DetectionsLike, name: str) -> np.ndarray:
    """(K, 5) ``[x1, y1, x2, y2, score]`` float64 rows of one frame's detections."""
    boxes = np.asarray(detections.boxes_xyxy, dtype=np.float64)
    scores = np.asarray(detections.scores, dtype=np.float64).reshape(-1)
    if boxes.size == 0 and scores.size == 0:
        return np.zeros((0, 5), dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or boxes.shape[0] != scores.size:
        raise ValueError(
            f"the detector returned boxes of shape {boxes.shape} and {scores.size} scores for "
            f"frame {name}; a detector must return (N, 4) boxes_xyxy and (N,) scores"
        )
    return np.column_stack((boxes, scores))


def evaluate_detector(
    detector: DetectorLike,
    dataset: IphdDataset,
    *,
    progress: bool = True,
    limit: int | None = None,
    warmup: int = 1,
) -> DetectorEvalResult:
    """Run ``detector`` on every frame of ``dataset`` and score it with the official IPHD AP.

    Only the detector call is timed (not PNG decoding). The first frame is also run ``warmup``
    extra times, untimed, so one-off costs (CUDA context, cuDNN autotuning, ONNX session
    set-up) do not land in the latency figures.

    Args:
        detector: callable ``(depth_mm, thermal_ck) -> detections`` with ``boxes_xyxy`` (N, 4)
            in depth pixels and ``scores`` (N,).
        dataset: the split to evaluate; its label set (weak or clean) is the ground truth.
        progress: show a tqdm progress bar on stderr.
        limit: evaluate only the first ``limit`` frames (dataset order); None = all.
        warmup: untimed extra calls on the first frame.

    Returns:
        AP at IoU 0.25/0.5/0.75, PR curves, counts, per-frame latency and the raw predictions.

    Raises:
        ConfigError: ``limit`` < 1 or ``warmup`` < 0.
        DatasetError: a frame is unreadable or its label file is malformed (named in the
            message), or the detector returned non-finite boxes.
        ValueError: the detector returned boxes and scores of mismatched shapes.
    """
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be >= 1 frame, got {limit}; leave it out for all frames")
    if warmup < 0:
        raise ConfigError(f"warmup must be >= 0 calls, got {warmup}")
    n_frames = len(dataset) if limit is None else min(limit, len(dataset))
    predictions: dict[str, np.ndarray] = {}
    ground_truth: dict[str, np.ndarray] = {}
    sizes: dict[str, tuple[int, int]] = {}
    latency_ms = np.zeros(n_frames, dtype=np.float64)
    with tqdm(
        total=n_frames, unit="frame", desc="evaluating", disable=not progress, file=sys.stderr
    ) as bar:
        for index in range(n_frames):
            sample = dataset[index]
            if index == 0:
                for _ in range(warmup):
                    detector(sample.depth_mm, sample.thermal_ck)
            start = time.perf_counter()
            detections = detector(sample.depth_mm, sample.thermal_ck)
            latency_ms[index] = (time.perf_counter() - start) * 1000.0
            predictions[sample.name] = _prediction_rows(detections, sample.name)
            ground_truth[sample.name] = np.asarray(sample.boxes_xyxy, dtype=np.float64)
            height, width = sample.depth_mm.shape
            sizes[sample.name] = (int(width), int(height))
            bar.update(1)
    scored = evaluate(predictions, ground_truth, DEFAULT_THRESHOLDS)
    return DetectorEvalResult(
        thresholds=scored["thresholds"],
        ap=scored["ap"],
        precision=scored["precision"],
        recall=scored["recall"],
        n_frames=n_frames,
        n_gt=scored["n_gt"],
        n_pred=scored["n_pred"],
        latency_ms=latency_ms,
        predictions=predictions,
        ground_truth=ground_truth,
        sizes=sizes,
    )


@dataclass(frozen=True)
class ReportFiles:
    """Paths written by :func:`write_report`."""

    report_md: Path
    pr_png: Path
    predictions_pkl: Path
    metrics_json: Path


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def metrics_dict(result: DetectorEvalResult, meta: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-able summary of ``result`` plus ``meta``; NaN values (undefined AP) become None."""
    return {
        "ap": {f"{t:.2f}": _finite_or_none(result.ap[t]) for t in result.thresholds},
        "n_frames": result.n_frames,
        "n_gt": result.n_gt,
        "n_pred": result.n_pred,
        "latency_ms": {
            "median": _finite_or_none(result.latency_median_ms),
            "p95": _finite_or_none(result.latency_p95_ms),
        },
        "meta": dict(meta),
    }


def _fmt(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _markdown(metrics: Mapping[str, Any]) -> str:
    meta = dict(metrics["meta"])
    config = meta.pop("config", None)
    rows = [("AP@" + t, _fmt(ap, 4)) for t, ap in metrics["ap"].items()]
    rows += [
        ("frames", str(metrics["n_frames"])),
        ("ground-truth boxes", str(metrics["n_gt"])),
        ("predictions", str(metrics["n_pred"])),
        ("latency median (ms)", _fmt(metrics["latency_ms"]["median"], 2)),
        ("latency p95 (ms)", _fmt(metrics["latency_ms"]["p95"], 2)),
    ]
    lines = ["# Detector evaluation", "", "| metric | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    lines += ["", "![precision-recall curves](pr.png)", "", "## Run", ""]
    lines += [f"- {key}: `{value}`" for key, value in meta.items()]
    if config is not None:
        lines += ["", "## Configuration", "", "```json"]
        lines += [json.dumps(config, indent=2, sort_keys=True, default=str), "```"]
    lines += [
        "",
        "AP is the official IPHD protocol (DESIGN §4): greedy highest-IoU matching without "
        "fall-back, all-point interpolation. Latency is the detector call alone, image decoding "
        "excluded.",
        "",
    ]
    return "\n".join(lines)


def write_report(
    result: DetectorEvalResult, out_dir: str | os.PathLike[str], meta: Mapping[str, Any]
) -> ReportFiles:
    """Write ``report.md``, ``pr.png``, ``predictions.pkl`` and ``metrics.json`` to ``out_dir``.

    Existing files of those names are replaced; other files in ``out_dir`` are left alone.

    Args:
        result: the output of :func:`evaluate_detector`.
        out_dir: folder to write; created if missing.
        meta: what was evaluated, e.g. ``checkpoint``, ``dataset``, ``split``, ``labels`` and a
            JSON-able ``config``; the date (UTC) and the iphd version are added.

    Returns:
        The paths written.

    Raises:
        DatasetError: a file could not be written (the PR plot or the submission pickle).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stamped = {
        **meta,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "iphd_version": iphd.__version__,
    }
    metrics = metrics_dict(result, stamped)
    files = ReportFiles(
        report_md=out / "report.md",
        pr_png=out / "pr.png",
        predictions_pkl=out / "predictions.pkl",
        metrics_json=out / "metrics.json",
    )
    plot_pr(result.pr_data(), files.pr_png)
    write_submission(files.predictions_pkl, result.predictions, result.sizes)
    files.metrics_json.write_text(
        json.dumps(metrics, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8"
    )
    files.report_md.write_text(_markdown(metrics), encoding="utf-8")
    return files
