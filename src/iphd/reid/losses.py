"""Paper B step-I losses: batch-hard triplet on Euclidean distances and label-smoothed softmax."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from iphd.errors import ConfigError


def pairwise_distances(embeddings: Tensor) -> Tensor:
    """Return the (B, B) Euclidean distances between the rows of a (B, D) matrix.

    Computed from the Gram matrix (one matmul instead of B² differences); squared distances are
    clamped at a tiny positive value before the square root, whose gradient is infinite at 0.
    """
    sq = embeddings.pow(2).sum(dim=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * embeddings @ embeddings.T
    return d2.clamp_min(1e-12).sqrt()


def batch_hard_triplet_loss(embeddings: Tensor, pids: Tensor, margin: float = 0.5) -> Tensor:
    """Batch-hard triplet loss (Hermans et al.), the step-I metric loss of paper B.

    For each anchor: ``max(0, d(a, hardest positive) - d(a, hardest negative) + margin)``, with
    the hardest positive the farthest other sample of the same identity and the hardest negative
    the closest sample of another identity. The loss is the mean over the anchors that have both
    (an identity seen once in the batch gives no positive); it is 0 (still differentiable) when
    no anchor has both.

    Args:
        embeddings: (B, D) float embeddings (pre-BNNeck).
        pids: (B,) integer identities.
        margin: hinge margin (0.5 in paper B), >= 0.

    Returns:
        Scalar loss tensor.

    Raises:
        ConfigError: negative margin, or shapes that do not match.
    """
    if margin < 0:
        raise ConfigError(f"triplet margin must be >= 0, got {margin}")
    if embeddings.ndim != 2 or pids.shape != (embeddings.shape[0],):
        raise ConfigError(
            f"expected (B, D) embeddings and (B,) pids, got {tuple(embeddings.shape)} and "
            f"{tuple(pids.shape)}"
        )
    dist = pairwise_distances(embeddings)
    same = pids[:, None] == pids[None, :]
    positive = same & ~torch.eye(len(pids), dtype=torch.bool, device=pids.device)
    negative = ~same
    valid = positive.any(dim=1) & negative.any(dim=1)
    if not bool(valid.any()):
        return embeddings.sum() * 0.0
    # Distances are >= 0, so masking with 0 (positives) and +inf (negatives) leaves the max/min
    # over the wanted pairs only.
    hardest_pos = torch.where(positive, dist, torch.zeros_like(dist)).amax(dim=1)
    hardest_neg = torch.where(negative, dist, torch.full_like(dist, float("inf"))).amin(dim=1)
    losses = F.relu(hardest_pos - hardest_neg + margin)
    return losses[valid].mean()


def cross_entropy_label_smooth(logits: Tensor, pids: Tensor, epsilon: float = 0.1) -> Tensor:
    """Softmax cross-entropy with label smoothing (Szegedy et al.), the step-I softmax loss.

    The target is ``(1 - epsilon)`` on the true class plus ``epsilon / C`` on every class, as in
    reid-strong-baseline; ``epsilon = 0`` is the plain cross-entropy.

    Args:
        logits: (B, C) classifier scores.
        pids: (B,) class indices in [0, C) (train identities relabelled to 0..C-1).
        epsilon: smoothing in [0, 1).

    Returns:
        Scalar mean loss.

    Raises:
        ConfigError: ``epsilon`` out of range, or a class index outside [0, C).
    """
    if not 0.0 <= epsilon < 1.0:
        raise ConfigError(f"label smoothing epsilon must be in [0, 1), got {epsilon}")
    n_classes = logits.shape[1]
    if pids.numel() and (int(pids.min()) < 0 or int(pids.max()) >= n_classes):
        raise ConfigError(
            f"class indices must be in [0, {n_classes}), got [{int(pids.min())}, "
            f"{int(pids.max())}]; relabel the training identities to 0..num_classes-1"
        )
    return F.cross_entropy(logits, pids, label_smoothing=epsilon)
