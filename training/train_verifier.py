r"""Train the box verifier (``iphd.detection.verifier``) on bags with ground truth.

The verifier decides, for each detection the detector node would publish, whether it is a
person of its own or an extra box (a second box on someone already detected, a box on
furniture). This script runs the offline pipeline (``iphd.eval.pipeline``, verifier off) once
per bag and keeps, per pair, what the tracker was given and each detection's verifier
features; each detection is labelled by the bag's ground truth (1: it matches a labelled
person one to one at IoU >= 0.5, as the IPHD protocol counts; 0: any other box; a box on a
person the label rule leaves out is not used). It then

1. picks the threshold: fits on half the bags, replays the tracker (``tune_tracker.replay``)
   over the other half with the boxes under each candidate threshold left out, and the other
   way round; the threshold with the best mean IDF1 wins (ties: the lower one);
2. fits on every bag and writes the ``.npz`` file the detector node loads, the threshold in it;
3. with ``--eval-bag``, replays bags it did not train on with and without the verifier.

    python training/train_verifier.py --bag out/sim/tune_bag_seed{1..32} \
        --out out/verifier/box_verifier.npz --cache out/verifier_cache \
        --eval-bag out/sim/test_bag_seed100{0..4}

Run the detector node with ``verifier:=out/verifier/box_verifier.npz`` (or ``iphd-eval bag
--verifier ...``). Train on bags of the detector you run: the verifier learns that detector's
mistakes. Never report IDF1 on the bags you trained on.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from iphd.data.truth import PersonTruth
from iphd.detection.detector import SHIPPED_CHECKPOINT
from iphd.detection.verifier import (
    FEATURE_NAMES,
    BoxVerifier,
    box_features,
    detector_fingerprint,
)
from iphd.errors import ConfigError, DatasetError, IphdError
from iphd.eval.iphd_ap import iou_matrix, match_frame
from iphd.sim.labels import LabelConfig, label_people
from iphd.tracking.tracker import TrackerConfig, TrackInput

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tune_tracker import (  # noqa: E402
    RecordedBag,
    add_pipeline_arguments,
    cached_call,
    calibration_digest,
    check_bags,
    emit,
    model_digests,
    model_files,
    pipeline_settings,
    replay,
    tracking_config,
)

from common import check_output_dir, check_output_file  # noqa: E402

#: Version of the recorded file; part of the cache key.
RECORD_VERSION = 1
#: Thresholds tried when choosing one.
THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
#: Label of a box not used for training (on a person the label rule leaves out).
IGNORE = -1


@dataclass
class VerifierBag:
    """One bag's tracker inputs, their verifier features and the ground truth.

    Attributes:
        name: the bag.
        frames: per pair: (stamp ns, tracker inputs, image height, (N, F) features of the
            inputs in the same order).
        truth: stamp ns -> every person in the frame.
    """

    name: str
    frames: list[tuple[int, list[TrackInput], int, np.ndarray]]
    truth: dict[int, list[PersonTruth]]

    def recorded(self, keep: Sequence[np.ndarray] | None = None) -> RecordedBag:
        """The ``tune_tracker`` replay input; ``keep`` = per-frame masks of the inputs kept."""
        frames = []
        for k, (stamp, inputs, height, _) in enumerate(self.frames):
            mask = None if keep is None else keep[k]
            frames.append((stamp, [d for i, d in enumerate(inputs) if mask is None or mask[i]],
                           height))
        return RecordedBag(self.name, frames, self.truth)


def _key(box: Sequence[float], score: float) -> tuple[float, ...]:
    """How a published detection is found again among the tracker's inputs (float32 values)."""
    return (*(float(v) for v in np.asarray(box, dtype=np.float32)), float(np.float32(score)))


def record_bag(bag: Path, *, backend: str = "auto", reid_checkpoint: str = "",
               threads: int = 2, detector_checkpoint: str = "", score_threshold: float = 0.5,
               min_thermal_contrast_k: float = 0.0, calibration: str = "",
               int8_calibration: str = "",
               topics: dict[str, str] | None = None,
               tracking_frame: str = "") -> VerifierBag:
    """Run the offline pipeline (no verifier) over ``bag``; keep inputs, features and truth.

    The settings are ``tune_tracker.record_bag``'s: with ``tracking_frame`` the inputs'
    positions are in that frame, and a pair with no transform is left out.
    """
    from iphd.data.rosbag import BagReader
    from iphd.eval.bag_eval import read_truth
    from iphd.eval.pipeline import OfflineConfig, pipeline_for_bag

    config = OfflineConfig(backend=backend, reid_checkpoint=reid_checkpoint, threads=threads,
                           detector_checkpoint=detector_checkpoint,
                           score_threshold=score_threshold,
                           min_thermal_contrast_k=min_thermal_contrast_k, verifier="none",
                           calibration=calibration, int8_calibration=int8_calibration,
                           topics=topics or {}, tracking_frame=tracking_frame,
                           tracker=tracking_config(tracking_frame))
    frames: list[tuple[int, list[TrackInput], int, np.ndarray]] = []
    with BagReader(bag) as reader:
        truth = read_truth(reader)
        pipeline = pipeline_for_bag(config, reader)
        features: dict[tuple[float, ...], np.ndarray] = {}
        given: list[list[TrackInput]] = []

        def checked(published: Any, _left: Any, depth_mm: np.ndarray, intrinsics: Any) -> None:
            features.clear()
            for person, row in zip(published, box_features(published, depth_mm, intrinsics),
                                   strict=True):
                features[_key(person.box_xyxy, person.score)] = row

        update = pipeline.tracker.update

        def keep(stamp_ns: int, detections: Sequence[TrackInput]) -> Any:
            given.append(list(detections))
            return update(stamp_ns, detections)

        pipeline.on_checked = checked
        pipeline.tracker.update = keep  # type: ignore[method-assign]
        for pair in pipeline.run_bag(reader):
            if len(given) == len(frames):  # not tracked: no transform into tracking_frame
                continue
            inputs = given[-1]
            rows = np.zeros((len(inputs), len(FEATURE_NAMES)))
            for i, d in enumerate(inputs):
                rows[i] = features[_key(d.box_xyxy, d.score)]
            frames.append((pair.stamp_ns, inputs, pair.image_size[1], rows))
    return VerifierBag(str(bag), frames, truth)


def cached_record(bag: Path, cache: Path | None, **kwargs: Any) -> VerifierBag:
    """``record_bag``, kept in ``cache`` under a key of the bag, the settings and the models."""
    models = model_digests(model_files(str(kwargs.get("reid_checkpoint", "")),
                                       str(kwargs.get("detector_checkpoint", "")), "none",
                                       str(kwargs.get("int8_calibration", ""))))
    recorded: VerifierBag = cached_call(bag, cache, record_bag,
                                        (RECORD_VERSION, FEATURE_NAMES, models,
                                         calibration_digest(kwargs)), "verifier-",
                                        **kwargs)
    return recorded


def box_labels(inputs: Sequence[TrackInput], people: Sequence[PersonTruth], height: int,
               labels: LabelConfig | None = None) -> np.ndarray:
    """Per input: 1 = a labelled person's one-to-one match, 0 = an extra box, ``IGNORE``."""
    if not inputs:
        return np.zeros(0, dtype=np.int64)
    boxes = np.asarray([d.box_xyxy for d in inputs], dtype=np.float64)
    scores = np.asarray([d.score for d in inputs], dtype=np.float64)
    labelled = label_people(people, height, labels or LabelConfig())
    label_boxes = np.asarray([p.box_xyxy for p in labelled], dtype=np.float64).reshape(-1, 4)
    out = match_frame(boxes, scores, label_boxes, 0.5).astype(np.int64)
    others = [p for p in people if all(p is not q for q in labelled)]
    if others:
        near = iou_matrix(boxes, np.asarray([p.box_xyxy for p in others])).max(axis=1) >= 0.5
        out[(out == 0) & near] = IGNORE
    return out


def dataset(bags: Sequence[VerifierBag],
            labels: LabelConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(features, labels) of every scored input of ``bags``, ignored ones left out."""
    xs, ys = [], []
    for bag in bags:
        for stamp, inputs, height, rows in bag.frames:
            people = bag.truth.get(stamp)
            if people is None or not inputs:
                continue
            y = box_labels(inputs, people, height, labels)
            use = y != IGNORE
            xs.append(rows[use])
            ys.append(y[use])
    if not xs:
        raise DatasetError("no detections with ground truth in these bags: nothing to train on")
    return np.concatenate(xs), np.concatenate(ys)


def fit(features: np.ndarray, labels: np.ndarray, *, hidden: int = 32, epochs: int = 60,
        lr: float = 3e-3, weight_decay: float = 1e-4, seed: int = 0,
        source: str = "") -> BoxVerifier:
    """A two-hidden-layer perceptron fitted with Adam on the binary cross-entropy (CPU, seeded).

    Raises:
        DatasetError: only one class in ``labels``.
    """
    import torch

    if len(np.unique(labels)) < 2:
        raise DatasetError(
            f"the training boxes are all {'people' if labels.all() else 'extra boxes'}: the "
            "verifier needs both; add bags with mistakes of the detector (or without)"
        )
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    mean = features.mean(axis=0)
    std = np.maximum(features.std(axis=0), 1e-6)
    x = torch.tensor((features - mean) / std, dtype=torch.float32)
    y = torch.tensor(labels, dtype=torch.float32)
    model = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], hidden), torch.nn.ReLU(),
        torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
        torch.nn.Linear(hidden, 1),
    )
    optimiser = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y), 512):
            batch = order[start:start + 512]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                model(x[batch])[:, 0], y[batch]
            )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    layers = [m for m in model if isinstance(m, torch.nn.Linear)]
    weights = tuple(
        (m.weight.detach().double().numpy().T.copy(), m.bias.detach().double().numpy().copy())
        for m in layers
    )
    return BoxVerifier(mean, std, weights, 0.5, source)


def keep_masks(bag: VerifierBag, verifier: BoxVerifier, threshold: float) -> list[np.ndarray]:
    """Per frame, which inputs the verifier keeps at ``threshold``."""
    return [verifier(rows) >= threshold if len(rows) else np.zeros(0, dtype=bool)
            for _, _, _, rows in bag.frames]


def idf1_by_threshold(bags: Sequence[VerifierBag], verifier: BoxVerifier,
                      thresholds: Sequence[float],
                      tracker: TrackerConfig | None = None) -> dict[float, list[float]]:
    """IDF1 of each bag with the boxes under each threshold left out; 0.0 = no verifier."""
    tracker = tracker or TrackerConfig()
    out: dict[float, list[float]] = {}
    for t in (0.0, *thresholds):
        out[t] = []
        for bag in bags:
            keep = None if t == 0.0 else keep_masks(bag, verifier, t)
            idf1 = replay(bag.recorded(keep), tracker)["idf1"]
            out[t].append(float("nan") if idf1 is None else float(idf1))
    return out


def choose_threshold(bags: Sequence[VerifierBag], thresholds: Sequence[float] = THRESHOLDS,
                     tracker: TrackerConfig | None = None,
                     **fit_kwargs: Any) -> tuple[float, dict[float, list[float]]]:
    """Two-fold choice (alternate bags): the threshold with the best mean IDF1 on unseen bags.

    Raises:
        ConfigError: fewer than two bags.
    """
    if len(bags) < 2:
        raise ConfigError("choosing a threshold needs at least two bags (two folds)")
    folds = (list(bags[0::2]), list(bags[1::2]))
    scores: dict[float, list[float]] = {}
    for train, test in (folds, folds[::-1]):
        verifier = fit(*dataset(train), **fit_kwargs)
        for t, values in idf1_by_threshold(test, verifier, thresholds, tracker).items():
            scores.setdefault(t, []).extend(values)
    best = max(thresholds, key=lambda t: (np.nanmean(scores[t]), -t))
    return best, scores


def no_gain_warning(scores: dict[float, list[float]], threshold: float) -> str:
    """A warning when the chosen threshold does not beat no verifier on the unseen folds; "".

    Few bags, or bags where the detector makes no extra boxes that cost identities, give a
    verifier that only leaves out people: the node is better off without it.
    """
    without = float(np.nanmean(scores[0.0]))
    chosen = float(np.nanmean(scores[threshold]))
    if chosen > without:
        return ""
    return (f"WARNING: the verifier does not help on these bags: in the two folds its best "
            f"threshold ({threshold}) gave a mean IDF1 of {chosen:.4f} on the bags it did not "
            f"see, against {without:.4f} without it. Run the detector node with "
            "verifier:=none, or train on more bags that hold the detector's extra boxes.")


def table(scores: dict[float, list[float]], names: Sequence[str]) -> str:
    """Markdown: mean IDF1 per threshold (0 = no verifier), then IDF1 per bag."""
    lines = ["| threshold | mean IDF1 | " + " | ".join(names) + " |",
             "|---|---|" + "---|" * len(names)]
    for t, values in scores.items():
        label = "no verifier" if t == 0.0 else f"{t:.2f}"
        lines.append(f"| {label} | {np.nanmean(values):.4f} | "
                     + " | ".join(f"{v:.3f}" for v in values) + " |")
    return "\n".join(lines) + "\n"


def get_args_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bag", nargs="+", action="extend", required=True, type=Path,
                        help="bags with ground_truth/people to train on (two or more; several "
                        "after one --bag, or --bag repeated)")
    parser.add_argument("--out", type=Path, required=True, help="the verifier file (.npz)")
    parser.add_argument("--eval-bag", nargs="*", action="extend", default=[], type=Path,
                        help="bags it does not train on, scored with and without it")
    parser.add_argument("--cache", type=Path, help="keep each bag's recording here")
    parser.add_argument("--report", type=Path, help="also write the tables to this Markdown file")
    parser.add_argument("--threshold", type=float,
                        help="use this threshold instead of choosing one (skips the two folds)")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    add_pipeline_arguments(parser, verifier=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Record, choose the threshold, fit on every bag, write the file and the tables."""
    args = get_args_parser().parse_args(argv)
    if args.threshold is not None and not 0.0 < args.threshold < 1.0:
        print(f"train_verifier: --threshold must be in (0, 1), got {args.threshold}",
              file=sys.stderr)
        return 2
    if args.epochs < 1 or args.hidden < 1:
        print("train_verifier: --epochs and --hidden must be at least 1", file=sys.stderr)
        return 2
    if args.threshold is None and len(args.bag) < 2:
        # Said before recording (30-90 s a bag), not after.
        print("train_verifier: choosing a threshold needs at least two bags (two folds); "
              "give more --bag, or --threshold to fit on this one", file=sys.stderr)
        return 2
    fit_kwargs = {"epochs": args.epochs, "hidden": args.hidden, "seed": args.seed}
    tracker = tracking_config(args.tracking_frame)
    try:
        # Everything that can be checked is, before recording (30-90 s a bag) and fitting.
        settings = pipeline_settings(args)
        check_output_file(args.out, "--out", "box_verifier.npz")
        if args.cache is not None:
            check_output_dir(args.cache, "--cache")
        if args.report is not None:
            check_output_file(args.report, "--report", "report.md")
        check_bags([*args.bag, *args.eval_bag])
        bags, extra = [], []
        for group, paths in ((bags, args.bag), (extra, args.eval_bag)):
            for bag in paths:
                print(f"recording {bag}", file=sys.stderr, flush=True)
                group.append(cached_record(bag, args.cache, **settings))
        text = ""
        if args.threshold is None:
            threshold, scores = choose_threshold(bags, tracker=tracker, **fit_kwargs)
            names = [Path(b.name).name for b in bags[0::2] + bags[1::2]]
            text += (f"## Threshold, two folds over the training bags (chosen: {threshold})\n\n"
                     + table(scores, names) + "\n")
            warning = no_gain_warning(scores, threshold)
            if warning:
                print(warning, file=sys.stderr)
                text += warning + "\n\n"
        else:
            threshold = args.threshold
        features, labels = dataset(bags)
        source = f"{len(bags)} bags, {len(labels)} boxes ({int(labels.sum())} people)"
        detector = settings.get("detector_checkpoint") or str(SHIPPED_CHECKPOINT)
        verifier = dataclasses.replace(fit(features, labels, source=source, **fit_kwargs),
                                       threshold=threshold,
                                       detector_sha256=detector_fingerprint(detector))
        verifier.save(args.out)
        text += f"Wrote {args.out}: threshold {threshold}, trained on {source}.\n"
        if extra:
            scores = idf1_by_threshold(extra, verifier, [threshold], tracker)
            text += ("\n## Bags it did not train on\n\n"
                     + table(scores, [Path(b.name).name for b in extra]))
    except IphdError as exc:
        print(f"train_verifier: {exc}", file=sys.stderr)
        return 2
    emit(text, args.report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
