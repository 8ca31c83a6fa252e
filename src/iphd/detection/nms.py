"""Greedy non-maximum suppression and its batched (per-group) form in plain torch."""

from __future__ import annotations

import torch
from torch import Tensor


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise IoU of xyxy boxes ``a`` (N, 4) and ``b`` (M, 4), (N, M); 0 for empty unions."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS: indices of kept boxes (int64), in decreasing score order.

    A box is dropped when its IoU with a higher-scoring kept box is > ``iou_threshold``, the
    torchvision convention. Ties in score keep the lower index first (stable sort).

    Args:
        boxes: (N, 4) xyxy.
        scores: (N,).
        iou_threshold: suppression threshold in [0, 1].
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    iou = box_iou(boxes[order], boxes[order])
    # The loop runs once per kept box, not once per candidate.
    keep: list[Tensor] = []
    remaining = torch.arange(order.numel(), device=boxes.device)
    while remaining.numel() > 0:
        best = remaining[0]
        keep.append(best)
        rest = remaining[1:]
        remaining = rest[iou[best, rest] <= iou_threshold]
    return order[torch.stack(keep)]


def batched_nms(boxes: Tensor, scores: Tensor, groups: Tensor, iou_threshold: float) -> Tensor:
    """NMS applied independently within each group (class, level or source detector).

    Boxes of different groups are shifted apart by more than the span of all boxes, so one NMS
    pass never lets them suppress each other.

    Args:
        boxes: (N, 4) xyxy.
        scores: (N,).
        groups: (N,) integer group ids.
        iou_threshold: suppression threshold in [0, 1].

    Returns:
        Indices of kept boxes (int64) in decreasing score order.
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    span = (boxes.max() - boxes.min()).clamp(min=0) + 1
    offsets = groups.to(boxes.dtype) * span
    return nms(boxes + offsets[:, None], scores, iou_threshold)
