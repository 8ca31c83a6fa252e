import pytest
import torch

from iphd.detection.anchors import decode_boxes, generate_anchors
from iphd.detection.model import DetectorConfig, FusionDetector
from iphd.errors import ConfigError


def _tiny(use_rem=True, **kwargs):
    torch.manual_seed(0)
    config = DetectorConfig(backbone_depth=18, use_rem=use_rem, head_channels=16, **kwargs)
    return FusionDetector(config).eval()


@pytest.mark.parametrize("use_rem", [False, True])
def test_forward_shapes_match_anchors(use_rem):
    model = _tiny(use_rem)
    with torch.no_grad():
        cls_logits, box_deltas = model(torch.randn(2, 3, 64, 96))
    n_anchors = generate_anchors((64, 96)).shape[0]
    assert cls_logits.shape == (2, n_anchors, 2)
    assert box_deltas.shape == (2, n_anchors, 4)


def test_head_outputs_follow_anchor_order():
    model = _tiny(use_rem=False)
    # Zero box heads decode to the anchors themselves, whatever the row order...
    for head in model.box_heads:
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.zeros_(head.bias)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        _, deltas = model(x)
    anchors = generate_anchors((64, 96))
    assert torch.allclose(decode_boxes(deltas[0], anchors), anchors, atol=1e-4)
    # ...and a bias numbering the (anchor, coordinate) channels must repeat in every cell.
    head = model.box_heads[0]
    with torch.no_grad():
        head.bias.copy_(torch.arange(head.bias.numel(), dtype=torch.float32))
        _, deltas = model(x)
    per_cell = torch.arange(32, dtype=torch.float32).view(8, 4)
    assert torch.equal(deltas[0, :8], per_cell)
    assert torch.equal(deltas[0, 8:16], per_cell)


def test_detect_returns_sorted_boxes_and_scores_per_image():
    model = _tiny(score_threshold=0.0, max_detections=5)
    results = model.detect(torch.randn(2, 3, 64, 96))
    assert len(results) == 2
    for boxes, scores in results:
        assert boxes.shape == (5, 4) and scores.shape == (5,)
        assert torch.all(scores[:-1] >= scores[1:])
        assert torch.all(boxes[:, 2] <= 96) and torch.all(boxes[:, 3] <= 64)
        assert torch.all(boxes[:, :2] >= 0)


def test_detect_with_high_threshold_returns_empty_tensors():
    model = _tiny(score_threshold=1.0)
    ((boxes, scores),) = model.detect(torch.randn(1, 3, 64, 96))
    assert boxes.shape == (0, 4) and scores.shape == (0,)


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="fusion"):
        DetectorConfig(fusion="late")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="backbone_depth"):
        DetectorConfig(backbone_depth=101)


def test_forward_rejects_wrong_channel_count():
    with pytest.raises(ConfigError, match="expects"):
        _tiny()(torch.randn(1, 1, 64, 96))
