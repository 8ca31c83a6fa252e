"""Box verifier: a small learned check of each published detection, after NMS.

The detector's extra boxes cost identities more than anything else the tracker is given: a
second box on a person already detected (a part of them that NMS let through, or a thing
beside them) starts a second track, and a box on furniture starts a false one (README, "Where
the errors come from"). Each rule tried against them alone (a stricter NMS, containment,
score floors, a height cue) removed about as many real detections as extra ones. The
verifier weighs those cues together: for every detection the node would publish it computes
``FEATURE_NAMES`` from the box, its depth pixels, its thermal evidence and the other
detections of the frame, and a two-layer perceptron (numpy, no torch at run time) gives the
probability that the box is a person of its own. The detector node leaves out boxes under
``min_verifier_probability``.

``training/train_verifier.py`` fits it on bags with ground truth (``iphd-sim bag`` or your
own, labelled the same way) and writes the ``.npz`` file this module loads.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from iphd.detections import _band_m, _box_slices
from iphd.errors import CheckpointError, load_failure
from iphd.sensors.frames import CameraIntrinsics

#: The verifier file shipped with the package (trained on simulator bags).
SHIPPED_VERIFIER = Path(__file__).resolve().parent.parent / "models" / "box_verifier.npz"
#: Version of the feature vector; a file trained on another version is refused.
FEATURE_VERSION = 1
#: What the verifier sees of one detection, in order.
FEATURE_NAMES = (
    "score",
    "no_position",  # 1 when the box had no valid depth of its own
    "depth_m",
    "height_m",  # box height at the box's depth
    "width_m",
    "aspect",  # box height / width
    "height_fraction",  # box height / image height
    "valid_fraction",  # box pixels with a depth reading
    "own_fraction",  # box pixels within the person depth band of the box's position
    "front_fraction",  # box pixels nearer than that band (something in front)
    "behind_fraction",  # box pixels beyond it (background)
    "own_columns",  # share of the box's columns with at least one own pixel
    "own_rows",  # and of its rows
    "thermal_contrast_k",  # 0 when not measured
    "no_contrast",  # 1 when not measured
    "thermal_coverage",
    "iou_higher",  # largest IoU with a higher-scoring detection
    "inside_higher",  # largest share of this box inside a higher-scoring one
    "higher_inside",  # largest share of a higher-scoring box inside this one
    "ground_distance_higher_m",  # to the most-overlapping higher-scoring detection (cap 5)
    "no_ground_distance",
    "area_ratio_higher",  # this box's area / that detection's (cap 5)
    "score_higher",  # that detection's score
    "depth_difference_higher_m",  # this depth minus that detection's (cap +-5)
    "detections",  # published detections in the frame
    "at_left",  # the box touches an image edge
    "at_right",
    "at_top",
    "at_bottom",
    "rank",  # 0 = best score of the frame
    "lower_inside",  # largest share of a lower-scoring box inside this one
    "iou_lower",
)
#: Pixels from an image edge within which a box counts as touching it.
EDGE_PX = 2.0
#: Caps of the distance-like features (an outlier must not dominate the standardisation).
MAX_DISTANCE_M = 5.0
MAX_AREA_RATIO = 5.0


class BoxEvidence(Protocol):
    """One detection as the verifier needs it (``iphd.detections.PersonDetection`` has it all).

    Attributes:
        box_xyxy: (x1, y1, x2, y2) in depth pixels.
        score: detector score.
        position_m: (x, y, z) in the depth optical frame, metres; NaN without valid depth.
        thermal_contrast_k: kelvin above the scene; NaN when not measured.
        thermal_coverage: share of the box's thermal pixels with a real reading.
    """

    @property
    def box_xyxy(self) -> tuple[float, float, float, float]: ...  # noqa: D102
    @property
    def score(self) -> float: ...  # noqa: D102
    @property
    def position_m(self) -> tuple[float, float, float]: ...  # noqa: D102
    @property
    def thermal_contrast_k(self) -> float: ...  # noqa: D102
    @property
    def thermal_coverage(self) -> float: ...  # noqa: D102


def _depth_evidence(
    depth_mm: np.ndarray, box_xyxy: Sequence[float], depth_m: float
) -> tuple[float, float, float, float, float, float]:
    """(valid, own, front, behind, own columns, own rows) shares of a box's depth pixels."""
    height, width = depth_mm.shape
    rows, cols = _box_slices(box_xyxy, width, height)
    patch = depth_mm[rows, cols].astype(np.float32) / 1000.0
    if patch.size == 0:
        return 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    valid = patch > 0.0
    n = float(patch.size)
    if not math.isfinite(depth_m):
        return float(valid.sum()) / n, 0.0, 0.0, 0.0, 0.0, 0.0
    band = _band_m(depth_m)
    own = valid & (np.abs(patch - depth_m) <= band)
    return (
        float(valid.sum()) / n,
        float(own.sum()) / n,
        float((valid & (patch < depth_m - band)).sum()) / n,
        float((valid & (patch > depth_m + band)).sum()) / n,
        float(own.any(axis=0).mean()),
        float(own.any(axis=1).mean()),
    )


def box_features(
    people: Sequence[BoxEvidence], depth_mm: np.ndarray, intrinsics: CameraIntrinsics
) -> np.ndarray:
    """(N, len(FEATURE_NAMES)) float64 features of one frame's published detections.

    Args:
        people: the frame's detections (any order; "higher" and "lower" are by score, ties
            broken by order).
        depth_mm: (H, W) depth in millimetres, 0 = invalid.
        intrinsics: the depth camera's (focal lengths turn box sizes into metres).
    """
    n = len(people)
    out = np.zeros((n, len(FEATURE_NAMES)), dtype=np.float64)
    if n == 0:
        return out
    height, width = depth_mm.shape
    boxes = np.asarray([p.box_xyxy for p in people], dtype=np.float64).reshape(n, 4)
    scores = np.asarray([p.score for p in people], dtype=np.float64)
    pos = np.asarray([p.position_m for p in people], dtype=np.float64).reshape(n, 3)
    w = np.maximum(boxes[:, 2] - boxes[:, 0], 1e-6)
    h = np.maximum(boxes[:, 3] - boxes[:, 1], 1e-6)
    area = w * h
    ix = np.clip(
        np.minimum(boxes[:, None, 2], boxes[None, :, 2])
        - np.maximum(boxes[:, None, 0], boxes[None, :, 0]), 0.0, None,
    )
    iy = np.clip(
        np.minimum(boxes[:, None, 3], boxes[None, :, 3])
        - np.maximum(boxes[:, None, 1], boxes[None, :, 1]), 0.0, None,
    )
    inter = ix * iy
    iou = inter / (area[:, None] + area[None, :] - inter)
    order = np.argsort(-scores, kind="stable")
    rank = np.empty(n)
    rank[order] = np.arange(n)
    for j, person in enumerate(people):
        z = pos[j, 2]
        has_z = bool(np.all(np.isfinite(pos[j])))
        zz = float(z) if has_z else 0.0
        contrast = float(person.thermal_contrast_k)
        higher = rank < rank[j]
        lower = rank > rank[j]
        if higher.any():
            k = int(np.flatnonzero(higher)[np.argmax(iou[j, higher])])
            iou_h = float(iou[j, k])
            inside_h = float(np.max(inter[j, higher] / area[j]))
            h_inside = float(np.max(inter[j, higher] / area[higher]))
            if has_z and np.all(np.isfinite(pos[k])):
                gd = min(math.hypot(pos[j, 0] - pos[k, 0], pos[j, 2] - pos[k, 2]), MAX_DISTANCE_M)
                no_gd = 0.0
                dz = float(np.clip(z - pos[k, 2], -MAX_DISTANCE_M, MAX_DISTANCE_M))
            else:
                gd, no_gd, dz = 0.0, 1.0, 0.0
            ratio = min(float(area[j] / area[k]), MAX_AREA_RATIO)
            score_h = float(scores[k])
        else:
            iou_h = inside_h = h_inside = gd = dz = score_h = 0.0
            no_gd, ratio = 1.0, 1.0
        if lower.any():
            l_inside = float(np.max(inter[j, lower] / area[lower]))
            iou_l = float(np.max(iou[j, lower]))
        else:
            l_inside = iou_l = 0.0
        x1, y1, x2, y2 = boxes[j]
        out[j] = (
            scores[j],
            0.0 if has_z else 1.0,
            zz,
            h[j] * zz / intrinsics.fy,
            w[j] * zz / intrinsics.fx,
            h[j] / w[j],
            h[j] / height,
            *_depth_evidence(depth_mm, boxes[j], zz if has_z else math.nan),
            contrast if math.isfinite(contrast) else 0.0,
            0.0 if math.isfinite(contrast) else 1.0,
            float(person.thermal_coverage),
            iou_h, inside_h, h_inside, gd, no_gd, ratio, score_h, dz,
            float(n),
            float(x1 <= EDGE_PX), float(x2 >= width - EDGE_PX),
            float(y1 <= EDGE_PX), float(y2 >= height - EDGE_PX),
            rank[j], l_inside, iou_l,
        )
    return out


@dataclass(frozen=True)
class BoxVerifier:
    """A two-hidden-layer perceptron over standardised ``box_features``.

    Attributes:
        mean: (F,) feature means of the training set.
        std: (F,) their standard deviations (never 0).
        weights: [(W1, b1), (W2, b2), (W3, b3)], W of shape (in, out); ReLU between layers.
        threshold: the probability under which a box is left out, as trained (the node's
            ``min_verifier_probability`` overrides it when set).
        source: what it was trained on, for diagnostics and reports.
        detector_sha256: SHA-256 of the detector checkpoint whose boxes it was fitted on
            (``detector_fingerprint``); empty in files written before it was recorded.
    """

    mean: np.ndarray
    std: np.ndarray
    weights: tuple[tuple[np.ndarray, np.ndarray], ...]
    threshold: float = 0.5
    source: str = ""
    detector_sha256: str = ""

    def __post_init__(self) -> None:
        """Check the shapes chain (a corrupt file must not fail on the first frame)."""
        f = len(FEATURE_NAMES)
        if self.mean.shape != (f,) or self.std.shape != (f,):
            raise CheckpointError(
                f"box verifier has {self.mean.shape} feature statistics for {f} features; "
                "re-train it with training/train_verifier.py"
            )
        size = f
        for i, (w, b) in enumerate(self.weights):
            if w.ndim != 2 or w.shape[0] != size or b.shape != (w.shape[1],):
                raise CheckpointError(
                    f"box verifier layer {i} has weights {w.shape} and bias {b.shape} after "
                    f"{size} inputs; the file is corrupt: re-train it"
                )
            size = w.shape[1]
        if size != 1:
            raise CheckpointError(f"box verifier ends in {size} outputs, not 1; re-train it")
        if not (0.0 <= self.threshold <= 1.0):
            raise CheckpointError(f"box verifier threshold {self.threshold} is not in [0, 1]")

    def __call__(self, features: np.ndarray) -> np.ndarray:
        """(N,) probabilities that each box is a person of its own."""
        x = (np.asarray(features, dtype=np.float64).reshape(-1, len(self.mean)) - self.mean)
        x = x / self.std
        for i, (w, b) in enumerate(self.weights):
            x = x @ w + b
            if i < len(self.weights) - 1:
                x = np.maximum(x, 0.0)
        logits = np.clip(x[:, 0], -60.0, 60.0)
        return 1.0 / (1.0 + np.exp(-logits))

    def save(self, path: str | Path) -> None:
        """Write the ``.npz`` file ``load_verifier`` reads."""
        arrays: dict[str, Any] = {
            "version": np.asarray(FEATURE_VERSION),
            "feature_names": np.asarray(FEATURE_NAMES),
            "mean": self.mean,
            "std": self.std,
            "threshold": np.asarray(self.threshold),
            "source": np.asarray(self.source),
            "detector_sha256": np.asarray(self.detector_sha256),
            "layers": np.asarray(len(self.weights)),
        }
        for i, (w, b) in enumerate(self.weights):
            arrays[f"w{i}"] = w
            arrays[f"b{i}"] = b
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with Path(path).open("wb") as f:
            np.savez(f, **arrays)


def load_verifier(path: str | Path) -> BoxVerifier:
    """Read a verifier file (``BoxVerifier.save``).

    Raises:
        CheckpointError: the file is missing, unreadable, or made for other features.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"box verifier {path} does not exist; train one with training/train_verifier.py "
            "or set verifier to 'none'"
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            version = int(data["version"])
            names = tuple(str(v) for v in data["feature_names"])
            layers = int(data["layers"])
            weights = tuple(
                (np.asarray(data[f"w{i}"], dtype=np.float64),
                 np.asarray(data[f"b{i}"], dtype=np.float64))
                for i in range(layers)
            )
            mean = np.asarray(data["mean"], dtype=np.float64)
            std = np.asarray(data["std"], dtype=np.float64)
            threshold = float(data["threshold"])
            source = str(data["source"])
            detector = str(data["detector_sha256"]) if "detector_sha256" in data.files else ""
    except (OSError, KeyError, ValueError) as exc:
        raise CheckpointError(
            f"box verifier {path} is not a verifier file ({load_failure(exc)}); re-train it with "
            "training/train_verifier.py"
        ) from exc
    if version != FEATURE_VERSION or names != FEATURE_NAMES:
        raise CheckpointError(
            f"box verifier {path} was trained on feature version {version} "
            f"({len(names)} features), this iphd computes version {FEATURE_VERSION} "
            f"({len(FEATURE_NAMES)}); re-train it with training/train_verifier.py"
        )
    return BoxVerifier(mean, np.maximum(std, 1e-6), weights, threshold, source, detector)


def load_box_verifier(name: str) -> BoxVerifier | None:
    """The verifier a node parameter names: empty = the shipped one, ``none`` = no verifier.

    Raises:
        CheckpointError: the file is missing or unusable (see ``load_verifier``).
    """
    if name.strip().lower() == "none":
        return None
    return load_verifier(name or SHIPPED_VERIFIER)


def detector_fingerprint(checkpoint: str | Path) -> str:
    """SHA-256 (hex) of a detector checkpoint file: which detector a verifier was fitted on.

    Raises:
        CheckpointError: the file cannot be read.
    """
    digest = hashlib.sha256()
    try:
        with Path(checkpoint).open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise CheckpointError(f"detector checkpoint {checkpoint} cannot be read ({exc})") from exc
    return digest.hexdigest()


def detector_fingerprints(checkpoint: str | Path) -> set[str]:
    """The SHA-256s that name the detector in ``checkpoint``.

    The file's own and, for an ONNX export, that of the checkpoint it was exported from (its
    metadata), so a verifier fitted on a checkpoint suits its exports.

    Raises:
        CheckpointError: the file cannot be read.
    """
    found = {detector_fingerprint(checkpoint)}
    if Path(checkpoint).suffix.lower() == ".onnx":
        import onnx

        from iphd.detection.onnx_export import SOURCE_KEY

        try:
            proto = onnx.load(str(checkpoint), load_external_data=False)
        except Exception:  # noqa: BLE001 - not a model: the detector's loading says why
            return found
        found |= {p.value for p in proto.metadata_props if p.key == SOURCE_KEY}
    return found


def detector_mismatch(
    name: str, verifier: BoxVerifier | None, checkpoint: str | Path
) -> str | None:
    """Why ``verifier`` may not suit the detector ``checkpoint``, or None when it may.

    ``name`` is the node's ``verifier`` parameter (empty = the shipped file). A verifier
    learns the mistakes of the detector whose boxes it was fitted on: beside another detector
    (one fine-tuned on your data, say) it can leave out real people. A file that records its
    detector is compared with ``checkpoint``; the shipped file, which does not, suits the
    shipped detector only.
    """
    from iphd.detection.detector import SHIPPED_CHECKPOINT

    if verifier is None:
        return None
    if verifier.detector_sha256:
        try:
            fits = verifier.detector_sha256 in detector_fingerprints(checkpoint)
        except CheckpointError:
            return None  # the detector's own loading says what is wrong with the file
        fitted_on = "another detector's boxes"
    else:
        shipped = not name or Path(name).resolve() == SHIPPED_VERIFIER.resolve()
        fits = not shipped or Path(checkpoint).resolve() == SHIPPED_CHECKPOINT.resolve()
        fitted_on = "the shipped detector's boxes"
    if fits:
        return None
    return (
        f"box verifier {name or 'shipped'} was fitted on {fitted_on}, not on those of "
        f"{checkpoint}: it learned that detector's mistakes and may leave out this one's "
        f"people. Retrain it for this detector (training/train_verifier.py "
        f"--detector-checkpoint {checkpoint}), or compare with the verifier off on your bags "
        "(verifier:=none, iphd-eval bag --verifier none)"
    )


def effective_threshold(verifier: BoxVerifier, min_probability: float) -> float:
    """The threshold that applies: ``min_probability``, or the file's when it is negative."""
    return verifier.threshold if min_probability < 0.0 else min_probability


def describe(name: str, verifier: BoxVerifier | None, min_probability: float) -> str:
    """What runs, for diagnostics and reports: ``none`` or ``FILE (threshold T)``."""
    if verifier is None:
        return "none"
    threshold = effective_threshold(verifier, min_probability)
    return f"{name or 'shipped'} (threshold {threshold:g})"


def verify(
    people: Sequence[BoxEvidence], depth_mm: np.ndarray, intrinsics: CameraIntrinsics,
    verifier: BoxVerifier, min_probability: float,
) -> tuple[list[int], list[int], np.ndarray]:
    """(kept indices, left-out indices, probabilities) of one frame's detections.

    A detection is left out when the verifier gives it less than ``min_probability``.
    """
    if not people:
        return [], [], np.zeros(0)
    probabilities = verifier(box_features(people, depth_mm, intrinsics))
    kept = [i for i, p in enumerate(probabilities) if p >= min_probability]
    left = [i for i, p in enumerate(probabilities) if p < min_probability]
    return kept, left, probabilities
