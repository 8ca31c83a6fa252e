"""Anchor generation ({4S, 6S} × h/w ratios {0.5, 1, 2, 4} at strides 8/16/32) and box coding."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from iphd.errors import ConfigError

STRIDES: tuple[int, ...] = (8, 16, 32)
#: Anchor side sqrt(w·h) as a multiple of the level's stride S.
SCALE_FACTORS: tuple[float, ...] = (4.0, 6.0)
#: Aspect ratios as height / width: 4 is a box four times taller than wide (a standing person).
ASPECT_RATIOS: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
#: Variances dividing the encoded (dx, dy, dw, dh), as SSD, so targets have roughly unit scale.
BOX_VARIANCES: tuple[float, float, float, float] = (0.1, 0.1, 0.2, 0.2)
# Largest log-size change decode accepts, so an untrained head cannot overflow exp().
_MAX_LOG_SCALE = math.log(1000.0 / 16.0)


def anchors_per_location(
    scale_factors: Sequence[float] = SCALE_FACTORS,
    aspect_ratios: Sequence[float] = ASPECT_RATIOS,
) -> int:
    """Number of anchors at each feature-map cell."""
    return len(scale_factors) * len(aspect_ratios)


def feature_size(input_hw: tuple[int, int], stride: int) -> tuple[int, int]:
    """(H, W) of the backbone's feature map at ``stride`` for an ``input_hw`` image.

    Every stride-2 layer of the ResNet maps n to ceil(n / 2), hence ceil(n / stride).
    """
    return math.ceil(input_hw[0] / stride), math.ceil(input_hw[1] / stride)


def level_anchors(
    input_hw: tuple[int, int],
    stride: int,
    scale_factors: Sequence[float] = SCALE_FACTORS,
    aspect_ratios: Sequence[float] = ASPECT_RATIOS,
) -> Tensor:
    """Anchors of one level, (H_s · W_s · K, 4) xyxy in input pixels, float32.

    Order: row-major over cells (y, then x), then per cell scale-major (scale, then ratio), the
    order in which :class:`~iphd.detection.model.FusionDetector` flattens its head outputs.
    Centres sit at cell centres ((x + 0.5)·S, (y + 0.5)·S); w = s / sqrt(r), h = s · sqrt(r).
    """
    fh, fw = feature_size(input_hw, stride)
    sides = torch.tensor([f * stride for f in scale_factors], dtype=torch.float32)
    ratios = torch.tensor(list(aspect_ratios), dtype=torch.float32)
    ws = (sides[:, None] / ratios.sqrt()[None, :]).reshape(-1)
    hs = (sides[:, None] * ratios.sqrt()[None, :]).reshape(-1)
    half = torch.stack([-ws, -hs, ws, hs], dim=1) / 2  # (K, 4)
    ys = (torch.arange(fh, dtype=torch.float32) + 0.5) * stride
    xs = (torch.arange(fw, dtype=torch.float32) + 0.5) * stride
    cy, cx = torch.meshgrid(ys, xs, indexing="ij")
    centres = torch.stack([cx, cy, cx, cy], dim=-1).reshape(-1, 1, 4)
    return (centres + half[None]).reshape(-1, 4)


def generate_anchors(
    input_hw: tuple[int, int],
    strides: Sequence[int] = STRIDES,
    scale_factors: Sequence[float] = SCALE_FACTORS,
    aspect_ratios: Sequence[float] = ASPECT_RATIOS,
) -> Tensor:
    """All anchors for an ``input_hw`` = (H, W) image, (A, 4) xyxy pixels, levels concatenated.

    Raises:
        ConfigError: if the input size is not positive.
    """
    if input_hw[0] < 1 or input_hw[1] < 1:
        raise ConfigError(f"input size must be positive (H, W), got {input_hw}")
    return torch.cat(
        [level_anchors(input_hw, s, scale_factors, aspect_ratios) for s in strides], dim=0
    )


def _centre_size(boxes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h, w, h


def encode_boxes(
    boxes: Tensor, anchors: Tensor, variances: Sequence[float] = BOX_VARIANCES
) -> Tensor:
    """Encode xyxy ``boxes`` relative to matched xyxy ``anchors`` (same shape (..., 4)).

    dx = (gx − ax) / aw / v0, dy = (gy − ay) / ah / v1, dw = log(gw / aw) / v2,
    dh = log(gh / ah) / v3, with (gx, gy) and (ax, ay) box centres.
    """
    gx, gy, gw, gh = _centre_size(boxes)
    ax, ay, aw, ah = _centre_size(anchors)
    return torch.stack(
        [
            (gx - ax) / aw / variances[0],
            (gy - ay) / ah / variances[1],
            torch.log(gw / aw) / variances[2],
            torch.log(gh / ah) / variances[3],
        ],
        dim=-1,
    )


def decode_boxes(
    deltas: Tensor, anchors: Tensor, variances: Sequence[float] = BOX_VARIANCES
) -> Tensor:
    """Inverse of :func:`encode_boxes`: (..., 4) deltas + anchors → xyxy boxes in pixels."""
    ax, ay, aw, ah = _centre_size(anchors)
    cx = ax + deltas[..., 0] * variances[0] * aw
    cy = ay + deltas[..., 1] * variances[1] * ah
    w = aw * torch.exp((deltas[..., 2] * variances[2]).clamp(max=_MAX_LOG_SCALE))
    h = ah * torch.exp((deltas[..., 3] * variances[3]).clamp(max=_MAX_LOG_SCALE))
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)
