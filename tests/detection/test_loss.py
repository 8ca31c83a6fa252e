import pytest
import torch

from iphd.detection.anchors import generate_anchors
from iphd.detection.loss import DetectionLoss, LossConfig, match_anchors, nrf_keep
from iphd.errors import ConfigError

GT = torch.tensor([[0.0, 0.0, 10.0, 10.0]])


def _far_anchors(n):
    """``n`` 10×10 anchors far from GT (IoU 0 → negatives)."""
    x = 100.0 + 20.0 * torch.arange(n, dtype=torch.float32)
    return torch.stack([x, torch.full_like(x, 100.0), x + 10, torch.full_like(x, 110.0)], dim=1)


def _logits(person_logits):
    """(1, A, 2) logits with background logit 0, so CE grows with the person logit for negatives."""
    p = torch.as_tensor(person_logits, dtype=torch.float32)
    return torch.stack([torch.zeros_like(p), p], dim=-1)[None]


def test_nrf_keep_ignores_exactly_the_losses_above_threshold():
    losses = torch.tensor([1.0, 30.0, 0.5, 3.0, 2.0, 15.0, 4.0])
    # Sorted: 30, 15, 4, 3, 2, 1, 0.5. Ranks 3..5 = (4, 3, 2), mean 3; T_p = 5 · 3 = 15.
    # 30 > 15 is ignored; 15 == T is kept (strict comparison).
    keep = nrf_keep(losses, alpha=5.0, beta=3, gamma=5)
    assert keep.tolist() == [True, False, True, True, True, True, True]


def test_nrf_keep_clips_gamma_to_the_available_count():
    losses = torch.tensor([9.0, 0.5, 1.0, 4.0, 2.0, 1.5, 5.0])
    # Sorted: 9, 5, 4, 2, 1.5, 1, 0.5. Ranks 6..10 clipped to 6..7 = (1, 0.5), mean 0.75;
    # T_n = 3 · 0.75 = 2.25: 9, 5 and 4 are ignored.
    keep = nrf_keep(losses, alpha=3.0, beta=6, gamma=10)
    assert keep.tolist() == [False, True, True, False, True, True, False]


def test_nrf_keep_keeps_everything_below_beta_entries():
    assert nrf_keep(torch.tensor([100.0, 0.1]), alpha=5.0, beta=3, gamma=5).all()
    assert nrf_keep(torch.zeros(0), alpha=5.0, beta=3, gamma=5).shape == (0,)


def test_match_anchors_labels_pos_neg_ignore_and_forced_best():
    gts = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],
            [100.0, 100.0, 110.0, 110.0],
            [500.0, 500.0, 510.0, 510.0],  # overlaps no anchor: forces nothing
        ]
    )
    anchors = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # IoU 1 with gt 0 → positive
            [0.0, 0.0, 10.0, 20.0],  # IoU 0.5 → positive (>= pos_iou)
            [0.0, 0.0, 10.0, 22.0],  # IoU 100/220 ≈ 0.45 → ignored
            [50.0, 50.0, 60.0, 60.0],  # IoU 0 → negative
            [100.0, 100.0, 110.0, 130.0],  # IoU 1/3 with gt 1, its best anchor → forced positive
            [100.0, 100.0, 110.0, 140.0],  # IoU 1/4 → negative
        ]
    )
    labels, matched = match_anchors(anchors, gts, pos_iou=0.5, neg_iou=0.4)
    assert labels.tolist() == [1, 1, -1, 0, 1, 0]
    assert labels.dtype == torch.int64
    assert matched[[0, 1, 4]].tolist() == [0, 0, 1]


def test_match_anchors_without_ground_truth_gives_only_negatives():
    labels, _ = match_anchors(_far_anchors(5), torch.zeros(0, 4))
    assert labels.tolist() == [0] * 5


def test_ohem_keeps_exactly_the_k_times_p_hardest_negatives():
    anchors = torch.cat([GT, _far_anchors(20)])
    generator = torch.Generator().manual_seed(0)
    neg_person = torch.randperm(20, generator=generator).float() / 4  # distinct CE per negative
    logits = _logits(torch.cat([torch.tensor([3.0]), neg_person])).requires_grad_()
    deltas = torch.zeros(1, 21, 4, requires_grad=True)
    out = DetectionLoss(LossConfig(nrf=False))(logits, deltas, anchors, [GT])
    out["loss"].backward()

    hardest = 1 + neg_person.argsort(descending=True)[:7]
    expected = torch.zeros(21, dtype=torch.bool)
    expected[0] = True
    expected[hardest] = True
    assert out["positives"].item() == 1
    assert out["negatives_kept"].item() == 7
    assert torch.equal(logits.grad[0].abs().sum(dim=1) > 0, expected)


def test_image_without_ground_truth_gives_negatives_only_and_zero_box_loss():
    anchors = _far_anchors(12)
    logits = _logits(torch.linspace(-1, 1, 12)).requires_grad_()
    deltas = torch.randn(1, 12, 4, requires_grad=True)
    out = DetectionLoss(LossConfig(nrf=False))(logits, deltas, anchors, [torch.zeros(0, 4)])
    assert out["positives"].item() == 0
    assert out["negatives_kept"].item() == 7  # ohem_ratio · max(P, 1)
    assert out["box"].item() == 0.0
    assert out["cls"].item() > 0


def test_nrf_drops_the_noisy_positive_and_negative_and_off_keeps_everything():
    anchors = torch.cat([GT.repeat(6, 1), _far_anchors(40)])
    # Five confident positives (CE ≈ 0.0067) and one labelled person the model calls background
    # (CE ≈ 20): ranks 3..5 average ≈ 0.0067, T_p ≈ 0.034, so only the noisy one is ignored.
    # Negatives: one at CE ≈ 30, the rest at CE ≈ 0.127; OHEM keeps 7 · 5 = 35 of them, ranks 6..10
    # average 0.127, T_n ≈ 0.38, so only the CE ≈ 30 negative is ignored.
    person = torch.tensor([5.0] * 5 + [-20.0] + [30.0] + [-2.0] * 39)
    deltas = torch.zeros(1, 46, 4)  # anchors equal the GT, so the box targets are zero
    on = DetectionLoss(LossConfig())(_logits(person), deltas, anchors, [GT])
    assert on["positives"].item() == 5
    assert on["positives_ignored_nrf"].item() == 1
    assert on["negatives_ignored_nrf"].item() == 1
    assert on["negatives_kept"].item() == 34
    assert on["cls"].item() < 1.0

    off = DetectionLoss(LossConfig(nrf=False))(_logits(person), deltas, anchors, [GT])
    assert off["positives"].item() == 6
    assert off["positives_ignored_nrf"].item() == 0
    assert off["negatives_ignored_nrf"].item() == 0
    assert off["negatives_kept"].item() == 40  # min(7 · 6, 40 available)
    assert off["cls"].item() > 5


def test_gradients_flow_through_both_heads():
    anchors = generate_anchors((64, 96))
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(2, anchors.shape[0], 2, generator=generator, requires_grad=True)
    deltas = torch.randn(2, anchors.shape[0], 4, generator=generator, requires_grad=True)
    targets = [torch.tensor([[10.0, 5.0, 30.0, 60.0], [50.0, 10.0, 70.0, 50.0]]), torch.zeros(0, 4)]
    out = DetectionLoss()(logits, deltas, anchors, targets)
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    assert out["positives"].item() > 0
    assert logits.grad.abs().sum() > 0 and torch.isfinite(logits.grad).all()
    assert deltas.grad[0].abs().sum() > 0 and deltas.grad[1].abs().sum() == 0


def test_loss_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="neg_iou"):
        LossConfig(pos_iou=0.3, neg_iou=0.4)
    with pytest.raises(ConfigError, match="beta_n"):
        LossConfig(beta_n=11)


def test_detection_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="anchors"):
        DetectionLoss()(torch.zeros(1, 3, 2), torch.zeros(1, 3, 4), torch.zeros(4, 4), [GT])
