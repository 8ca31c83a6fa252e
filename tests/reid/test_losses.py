import math

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from iphd.errors import ConfigError
from iphd.reid.losses import (
    batch_hard_triplet_loss,
    cross_entropy_label_smooth,
    pairwise_distances,
)


def test_pairwise_distances_are_euclidean():
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0]])
    expected = torch.tensor([[0.0, 5.0, 1.0], [5.0, 0.0, math.sqrt(20)], [1.0, math.sqrt(20), 0]])
    torch.testing.assert_close(pairwise_distances(x), expected, atol=1e-5, rtol=0)


def test_batch_hard_triplet_by_hand():
    # Identity 0 at (0,0) and (0,1); identity 1 at (2,0) and (0,3).
    x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, 3.0]])
    pids = torch.tensor([0, 0, 1, 1])
    # anchor: hardest positive, hardest negative -> hinge with margin 0.5
    # a0: d(a0,a1)=1, min(d(a0,a2)=2, d(a0,a3)=3)=2 -> max(0, 1-2+0.5)=0
    # a1: 1, min(sqrt5, 2)=2 -> 0
    # a2: sqrt13, min(2, sqrt5)=2 -> sqrt13-1.5
    # a3: sqrt13, min(3, 2)=2 -> sqrt13-1.5
    expected = (2 * (math.sqrt(13) - 1.5)) / 4
    loss = batch_hard_triplet_loss(x, pids, margin=0.5)
    assert loss.item() == pytest.approx(expected, abs=1e-5)


def test_anchors_without_positive_are_ignored():
    # Identity 2 is alone in the batch: it is a negative for others but never an anchor.
    x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [0.0, 0.6]])
    pids = torch.tensor([0, 0, 2])
    # a0: pos 1, neg 0.6 -> 0.9; a1: pos 1, neg 0.4 -> 1.1; mean over 2 anchors.
    loss = batch_hard_triplet_loss(x, pids, margin=0.5)
    assert loss.item() == pytest.approx(1.0, abs=1e-5)


def test_no_valid_anchor_gives_zero_with_gradient():
    x = torch.randn(3, 4, requires_grad=True)
    loss = batch_hard_triplet_loss(x, torch.tensor([0, 1, 2]))
    assert loss.item() == 0.0
    loss.backward()
    assert x.grad is not None and torch.all(torch.isfinite(x.grad))


def test_triplet_gradient_is_finite_for_duplicate_embeddings():
    x = torch.tensor([[1.0, 1.0], [1.0, 1.0], [2.0, 2.0], [2.0, 2.0]], requires_grad=True)
    batch_hard_triplet_loss(x, torch.tensor([0, 1, 0, 1])).backward()
    assert torch.all(torch.isfinite(x.grad))


def test_triplet_rejects_bad_input():
    with pytest.raises(ConfigError, match="margin"):
        batch_hard_triplet_loss(torch.zeros(2, 2), torch.tensor([0, 0]), margin=-1.0)
    with pytest.raises(ConfigError, match="pids"):
        batch_hard_triplet_loss(torch.zeros(2, 2), torch.tensor([0, 0, 1]))


def test_label_smoothing_by_hand():
    logits = torch.tensor([[2.0, 0.0, 0.0]])
    log_p = F.log_softmax(logits, dim=1)[0]
    eps = 0.3
    expected = -((1 - eps + eps / 3) * log_p[0] + eps / 3 * (log_p[1] + log_p[2]))
    loss = cross_entropy_label_smooth(logits, torch.tensor([0]), epsilon=eps)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    plain = cross_entropy_label_smooth(logits, torch.tensor([0]), epsilon=0.0)
    assert plain.item() == pytest.approx(-log_p[0].item(), abs=1e-6)


def test_label_smoothing_rejects_bad_input():
    with pytest.raises(ConfigError, match="epsilon"):
        cross_entropy_label_smooth(torch.zeros(1, 3), torch.tensor([0]), epsilon=1.0)
    with pytest.raises(ConfigError, match="relabel"):
        cross_entropy_label_smooth(torch.zeros(1, 3), torch.tensor([3]))
