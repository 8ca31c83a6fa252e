"""Clean and weak person labels from the simulator's ground truth.

IPHD's boxes were drawn on thermal images and carried into the depth frame through an imperfect
registration, so they are *weak*: shifted (partly the same way for a whole sequence, partly per
box), scaled, sometimes missing and sometimes on something warm that is not a person. The weak
labels reproduce those error modes with the rates in ``WeakLabelConfig`` so that noise-robust
training has something to be robust to; the clean labels are the exact visible-pixel boxes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from iphd.data.truth import PersonTruth


@dataclass(frozen=True)
class LabelConfig:
    """Which ground-truth people become labels.

    Attributes:
        min_height_px: minimum visible box height at 720 image rows (scaled with the image).
        min_visibility: minimum visible fraction of the silhouette.
        min_width_px: minimum visible box width at 720 rows.
    """

    min_height_px: float = 36.0
    min_visibility: float = 0.2
    min_width_px: float = 8.0


@dataclass(frozen=True)
class WeakLabelConfig:
    """Error model of weak labels; all fractions are of the box size.

    Attributes:
        sequence_offset: standard deviation of a per-sequence box shift (registration bias).
        box_offset: standard deviation of an independent per-box shift.
        scale: standard deviation of the log of a per-box scale factor.
        miss_rate: probability that a person's box is missing.
        spurious_rate: expected spurious boxes per frame (on a warm object when one is in view).
    """

    sequence_offset: float = 0.05
    box_offset: float = 0.06
    scale: float = 0.08
    miss_rate: float = 0.05
    spurious_rate: float = 0.05

    def __post_init__(self) -> None:
        """Reject negative rates and probabilities above 1."""
        for name in ("sequence_offset", "box_offset", "scale", "spurious_rate"):
            if getattr(self, name) < 0:
                raise ValueError(f"weak label {name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.miss_rate <= 1.0:
            raise ValueError(f"weak label miss_rate must be in [0, 1], got {self.miss_rate}")


def label_people(
    people: Sequence[PersonTruth], height: int, config: LabelConfig = LabelConfig()
) -> list[PersonTruth]:
    """The ground-truth people that count as labels in an image ``height`` rows high."""
    s = height / 720.0
    return [
        p for p in people
        if p.visibility >= config.min_visibility
        and p.box_xyxy[3] - p.box_xyxy[1] >= config.min_height_px * s
        and p.box_xyxy[2] - p.box_xyxy[0] >= config.min_width_px * s
    ]


def clean_boxes(
    people: Sequence[PersonTruth], height: int, config: LabelConfig = LabelConfig()
) -> np.ndarray:
    """(N, 4) float64 xyxy boxes of the people that count as labels at this image height."""
    keep = [p.box_xyxy for p in label_people(people, height, config)]
    return np.asarray(keep, dtype=np.float64).reshape(-1, 4)


def weak_boxes(
    rng: np.random.Generator, clean: np.ndarray, sequence_shift: np.ndarray,
    warm_boxes: np.ndarray, size: tuple[int, int], config: WeakLabelConfig = WeakLabelConfig(),
) -> np.ndarray:
    """Corrupt ``clean`` boxes as IPHD's registration-borne labels are corrupted.

    Args:
        rng: the frame's generator.
        clean: (N, 4) xyxy boxes.
        sequence_shift: (2,) per-sequence shift as fractions of box width and height.
        warm_boxes: (M, 4) xyxy image boxes of warm non-person objects in view (spurious boxes
            land there; elsewhere when there is none).
        size: (width, height) of the image.
        config: error rates.

    Returns:
        (K, 4) float64 xyxy boxes clipped to the image.
    """
    w_img, h_img = size
    out = []
    for x1, y1, x2, y2 in clean:
        if rng.random() < config.miss_rate:
            continue
        w, h = x2 - x1, y2 - y1
        cx = (x1 + x2) / 2 + w * (sequence_shift[0] + rng.normal(0.0, config.box_offset))
        cy = (y1 + y2) / 2 + h * (sequence_shift[1] + rng.normal(0.0, config.box_offset))
        scale = np.exp(rng.normal(0.0, config.scale, 2))
        w, h = w * scale[0], h * scale[1]
        out.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
    for _ in range(int(rng.poisson(config.spurious_rate))):
        if len(warm_boxes):
            x1, y1, x2, y2 = warm_boxes[int(rng.integers(len(warm_boxes)))]
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            h = max(y2 - y1, 0.08 * h_img) * rng.uniform(1.0, 2.5)
        else:
            cx, cy = rng.uniform(0, w_img), rng.uniform(0.3 * h_img, 0.7 * h_img)
            h = rng.uniform(0.1, 0.5) * h_img
        w = h * rng.uniform(0.3, 0.5)
        out.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
    boxes = np.asarray(out, dtype=np.float64).reshape(-1, 4)
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, w_img)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, h_img)
    keep = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
    return boxes[keep]
