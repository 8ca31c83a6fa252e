"""Detection loss of paper A: anchor matching, OHEM (k = 7) and Noise Robust Filtering (NRF)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional

from iphd.detection.anchors import encode_boxes
from iphd.detection.nms import box_iou
from iphd.errors import ConfigError


@dataclass(frozen=True)
class LossConfig:
    """Matching, OHEM and NRF settings; the defaults are paper A's."""

    #: An anchor whose best IoU with a ground truth is >= this is a positive.
    pos_iou: float = 0.5
    #: An anchor whose best IoU is < this is a negative; in between it is ignored.
    neg_iou: float = 0.4
    #: OHEM keeps at most this many hard negatives per kept positive (per image).
    ohem_ratio: int = 7
    #: Noise Robust Filtering on (paper A) or off (plain OHEM).
    nrf: bool = True
    #: Scale factor of the positive threshold T_p.
    alpha_p: float = 5.0
    #: First and last 1-based rank of the sorted positive losses that T_p averages.
    beta_p: int = 3
    gamma_p: int = 5
    #: Scale factor of the negative threshold T_n.
    alpha_n: float = 3.0
    #: First and last 1-based rank of the sorted (OHEM-selected) negative losses that T_n averages.
    beta_n: int = 6
    gamma_n: int = 10
    #: Weight of the L1 box-regression term against the classification term.
    box_weight: float = 1.0

    def __post_init__(self) -> None:
        """Reject values that make the loss meaningless.

        Raises:
            ConfigError: naming the bad field and value.
        """
        if not 0.0 <= self.neg_iou <= self.pos_iou <= 1.0:
            raise ConfigError(
                f"need 0 <= neg_iou <= pos_iou <= 1, got neg_iou={self.neg_iou}, "
                f"pos_iou={self.pos_iou}"
            )
        if self.ohem_ratio < 1:
            raise ConfigError(f"ohem_ratio must be >= 1, got {self.ohem_ratio}")
        for name, alpha, beta, gamma in (
            ("p", self.alpha_p, self.beta_p, self.gamma_p),
            ("n", self.alpha_n, self.beta_n, self.gamma_n),
        ):
            if alpha <= 0:
                raise ConfigError(f"alpha_{name} must be > 0, got {alpha}")
            if not 1 <= beta <= gamma:
                raise ConfigError(f"need 1 <= beta_{name} <= gamma_{name}, got {beta}, {gamma}")
        if self.box_weight < 0:
            raise ConfigError(f"box_weight must be >= 0, got {self.box_weight}")


def match_anchors(
    anchors: Tensor, gt_boxes: Tensor, pos_iou: float = 0.5, neg_iou: float = 0.4
) -> tuple[Tensor, Tensor]:
    """Label anchors against one image's ground truth by IoU.

    An anchor is positive if its best IoU >= ``pos_iou``, negative if < ``neg_iou`` and ignored in
    between. In addition each ground truth makes its highest-IoU anchor positive (matched to it),
    so no ground truth is left without a positive; a ground truth that overlaps no anchor at all
    (IoU 0 everywhere, e.g. a zero-area box) forces nothing.

    Args:
        anchors: (A, 4) xyxy pixels.
        gt_boxes: (M, 4) xyxy pixels, M may be 0.
        pos_iou: positive threshold.
        neg_iou: negative threshold.

    Returns:
        ``labels`` (A,) int64 with 1 positive, 0 negative, -1 ignored, and ``matched_gt_index``
        (A,) int64, the ground truth each anchor is matched to (0 where there is none; only
        meaningful for positives).
    """
    num_anchors = anchors.shape[0]
    device = anchors.device
    if gt_boxes.numel() == 0:
        return (
            torch.zeros(num_anchors, dtype=torch.int64, device=device),
            torch.zeros(num_anchors, dtype=torch.int64, device=device),
        )
    iou = box_iou(anchors, gt_boxes.to(anchors.dtype))  # (A, M)
    best_iou, matched = iou.max(dim=1)
    labels = torch.full((num_anchors,), -1, dtype=torch.int64, device=device)
    labels[best_iou < neg_iou] = 0
    labels[best_iou >= pos_iou] = 1
    gt_best_iou, gt_best_anchor = iou.max(dim=0)  # (M,)
    forced = gt_best_iou > 0
    gt_ids = torch.arange(gt_boxes.shape[0], device=device)
    labels[gt_best_anchor[forced]] = 1
    matched[gt_best_anchor[forced]] = gt_ids[forced]
    return labels, matched


def nrf_keep(losses: Tensor, alpha: float, beta: int, gamma: int) -> Tensor:
    """Noise Robust Filtering of one group of losses: which entries to keep, (N,) bool.

    Our reading of paper A's eq. (1)-(2), for positives (alpha_p, beta_p, gamma_p) and for
    negatives (alpha_n, beta_n, gamma_n) alike: sort the batch's losses in descending order,
    l_(1) >= l_(2) >= ... >= l_(N); the threshold is

        T = alpha * mean(l_(beta), ..., l_(min(gamma, N)))      (1-based ranks, inclusive)

    and every entry with loss > T is ignored (the top-ranked, noisiest ones); the rest are kept.

    Assumptions (the equations are not reproduced in our notes): that T is the *mean* of the
    losses ranked in [beta, gamma] times alpha; that the comparison is strict (loss == T is kept);
    that gamma is clipped to N; and that with fewer than beta losses there is no reference interval
    and everything is kept.

    Args:
        losses: (N,) per-sample losses (detached or not; the mask carries no gradient).
        alpha: scale factor.
        beta: first rank of the reference interval (1-based).
        gamma: last rank of the reference interval (1-based, inclusive).
    """
    n = losses.shape[0]
    if n < beta:
        return torch.ones(n, dtype=torch.bool, device=losses.device)
    ranked = losses.detach().sort(descending=True).values
    threshold = alpha * ranked[beta - 1 : min(gamma, n)].mean()
    return losses.detach() <= threshold


def _ohem_negatives(neg_losses: Tensor, negatives: Tensor, num_keep: Tensor) -> Tensor:
    """Per row, mask of the ``num_keep[b]`` negatives with the highest loss, (B, A) bool."""
    scores = neg_losses.detach().masked_fill(~negatives, float("-inf"))
    order = scores.argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return negatives & (rank < num_keep[:, None])


class DetectionLoss:
    """Paper A's training loss: cross-entropy with OHEM and NRF plus L1 box regression.

    Per image, anchors are matched with :func:`match_anchors`. Each positive's loss is its
    cross-entropy plus ``box_weight`` times its L1 box error; NRF (:func:`nrf_keep` with alpha_p,
    beta_p, gamma_p over all positives of the batch) drops the noisiest positives. OHEM then keeps,
    per image, the ``ohem_ratio · max(P_i, 1)`` negatives with the highest cross-entropy, P_i the
    image's kept positives, and NRF (alpha_n, beta_n, gamma_n over the batch's OHEM-selected
    negatives) drops the noisiest of those. The classification loss is the summed cross-entropy
    of the kept anchors and the box loss the summed L1 of the kept positives, both divided by the
    batch's number of kept positives (at least 1).
    """

    def __init__(self, config: LossConfig | None = None) -> None:
        """Store ``config`` (paper defaults when None)."""
        self.config = config or LossConfig()

    def __call__(
        self,
        cls_logits: Tensor,
        box_deltas: Tensor,
        anchors: Tensor,
        targets: Sequence[Tensor],
    ) -> dict[str, Tensor]:
        """Loss of one batch.

        Args:
            cls_logits: (B, A, 2) logits, index 1 = person.
            box_deltas: (B, A, 4) predicted deltas, coded as :func:`encode_boxes`.
            anchors: (A, 4) xyxy pixels, the order of the head outputs.
            targets: B tensors (M_i, 4) of xyxy ground-truth boxes in pixels (M_i may be 0).

        Returns:
            ``loss`` (scalar, = cls + box_weight · box), ``cls``, ``box`` and the counts
            ``positives`` (kept), ``negatives_kept``, ``positives_ignored_nrf`` and
            ``negatives_ignored_nrf`` (int64 scalars).

        Raises:
            ValueError: if the shapes disagree.
        """
        cfg = self.config
        b, a = cls_logits.shape[:2]
        if cls_logits.shape != (b, a, 2) or box_deltas.shape != (b, a, 4):
            raise ValueError(
                f"expected cls_logits (B, A, 2) and box_deltas (B, A, 4), got "
                f"{tuple(cls_logits.shape)} and {tuple(box_deltas.shape)}"
            )
        if anchors.shape != (a, 4):
            raise ValueError(f"expected anchors ({a}, 4), got {tuple(anchors.shape)}")
        if len(targets) != b:
            raise ValueError(f"expected {b} target tensors, got {len(targets)}")

        anchors = anchors.to(box_deltas.device, box_deltas.dtype)
        labels_list, box_targets_list = [], []
        with torch.no_grad():
            for gt in targets:
                gt = gt.to(anchors.device, anchors.dtype).reshape(-1, 4)
                labels, matched = match_anchors(anchors, gt, cfg.pos_iou, cfg.neg_iou)
                if gt.shape[0] > 0:
                    pos = labels == 1
                    enc = torch.zeros_like(anchors)
                    enc[pos] = encode_boxes(gt[matched[pos]], anchors[pos])
                else:
                    enc = torch.zeros_like(anchors)
                labels_list.append(labels)
                box_targets_list.append(enc)
        labels = torch.stack(labels_list)  # (B, A)
        box_targets = torch.stack(box_targets_list)  # (B, A, 4)
        positives = labels == 1
        negatives = labels == 0

        ce = functional.cross_entropy(
            cls_logits.reshape(-1, 2), positives.reshape(-1).long(), reduction="none"
        ).view(b, a)
        l1 = (box_deltas - box_targets).abs().sum(dim=-1)  # (B, A)

        keep_pos = positives.clone()
        if cfg.nrf and bool(positives.any()):
            pos_losses = (ce + cfg.box_weight * l1)[positives]
            keep_pos[positives] = nrf_keep(pos_losses, cfg.alpha_p, cfg.beta_p, cfg.gamma_p)
        num_pos_img = keep_pos.sum(dim=1)
        num_neg = cfg.ohem_ratio * num_pos_img.clamp(min=1)
        keep_neg = _ohem_negatives(ce, negatives, num_neg)
        selected_neg = keep_neg.clone()
        if cfg.nrf and bool(keep_neg.any()):
            keep_neg[selected_neg] = nrf_keep(
                ce[selected_neg], cfg.alpha_n, cfg.beta_n, cfg.gamma_n
            )

        num_pos = keep_pos.sum()
        norm = num_pos.clamp(min=1).to(ce.dtype)
        zero = ce.new_zeros(())
        cls_loss = torch.where(keep_pos | keep_neg, ce, zero).sum() / norm
        box_loss = torch.where(keep_pos, l1, zero).sum() / norm
        return {
            "loss": cls_loss + cfg.box_weight * box_loss,
            "cls": cls_loss,
            "box": box_loss,
            "positives": num_pos,
            "negatives_kept": keep_neg.sum(),
            "positives_ignored_nrf": (positives & ~keep_pos).sum(),
            "negatives_ignored_nrf": (selected_neg & ~keep_neg).sum(),
        }
