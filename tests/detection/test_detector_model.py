import dataclasses
import math

import pytest
import torch

from iphd.detection.anchors import decode_boxes, generate_anchors
from iphd.detection.backbone import ResNetBackbone
from iphd.detection.model import FUSION_MODES, DetectorConfig, FusionDetector
from iphd.errors import ConfigError

HW = (64, 96)
N_ANCHORS = 1008  # 8 anchors × (8·12 + 4·6 + 2·3) cells for a 64×96 input


def _tiny(use_rem=True, **kwargs):
    torch.manual_seed(0)
    config = DetectorConfig(backbone_depth=18, use_rem=use_rem, head_channels=16, **kwargs)
    return FusionDetector(config).eval()


def _small(fusion, **kwargs):
    torch.manual_seed(0)
    config = DetectorConfig(
        backbone_depth=18, backbone_width=8, head_channels=8, fusion=fusion, **kwargs
    )
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
    with pytest.raises(ConfigError, match="'mid'.*early, depth, thermal, intermediate, late"):
        DetectorConfig(fusion="mid")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="backbone_depth"):
        DetectorConfig(backbone_depth=101)


def test_forward_rejects_wrong_channel_count():
    with pytest.raises(ConfigError, match="expects"):
        _tiny()(torch.randn(1, 1, 64, 96))


@pytest.mark.parametrize("fusion", FUSION_MODES)
def test_forward_shapes_match_anchors_in_every_fusion_mode(fusion):
    model = _small(fusion, use_rem=False)
    with torch.no_grad():
        cls_logits, box_deltas = model(torch.randn(2, 3, *HW))
    anchors = model.anchors(HW, torch.device("cpu"))
    n_anchors = 2 * N_ANCHORS if fusion == "late" else N_ANCHORS
    assert generate_anchors(HW).shape[0] == N_ANCHORS
    assert anchors.shape == (n_anchors, 4)
    assert cls_logits.shape == (2, n_anchors, 2)
    assert box_deltas.shape == (2, n_anchors, 4)
    if fusion == "late":
        assert torch.equal(anchors[:N_ANCHORS], anchors[N_ANCHORS:])


@pytest.mark.parametrize(
    ("fusion", "prefixes", "n_backbones"),
    [
        ("early", {"backbone", "projections", "rems", "cls_heads", "box_heads"}, 1),
        ("depth", {"backbone", "projections", "rems", "cls_heads", "box_heads"}, 1),
        (
            "intermediate",
            {"backbone_thermal", "backbone_depth", "merges", "projections", "rems", "cls_heads",
             "box_heads"},
            2,
        ),
        ("late", {"detector_thermal", "detector_depth"}, 2),
    ],
)
def test_state_dict_layout_per_fusion_mode(fusion, prefixes, n_backbones):
    model = _small(fusion)
    assert {key.split(".")[0] for key in model.state_dict()} == prefixes
    # Training loads ImageNet weights into every ResNetBackbone it finds among the modules.
    assert sum(isinstance(m, ResNetBackbone) for m in model.modules()) == n_backbones


def test_intermediate_merges_the_same_width_as_one_backbone():
    model = _small("intermediate")
    widths = model.backbone_thermal.out_channels
    assert widths == (16, 32, 64) and model.backbone_depth.out_channels == widths
    for merge, c in zip(model.merges, widths, strict=True):
        assert merge[0].kernel_size == (3, 3)
        assert (merge[0].in_channels, merge[0].out_channels) == (2 * c, c)


def _perturbed(model, x, channel):
    x = x.clone()
    x[:, channel] += 1.0
    with torch.no_grad():
        return model(x)[0]


def test_intermediate_output_depends_on_thermal_and_depth_channels_only():
    model = _small("intermediate")
    x = torch.randn(1, 3, *HW)
    with torch.no_grad():
        base = model(x)[0]
    assert not torch.allclose(_perturbed(model, x, 0), base)  # thermal stream
    assert not torch.allclose(_perturbed(model, x, 2), base)  # depth stream
    assert torch.equal(_perturbed(model, x, 1), base)  # the duplicate T is not read


def test_late_rows_are_thermal_then_depth_detector():
    model = _small("late")
    x = torch.randn(1, 3, *HW)
    with torch.no_grad():
        base = model(x)[0]
    t, d = slice(0, N_ANCHORS), slice(N_ANCHORS, None)
    after_t = _perturbed(model, x, 0)
    assert not torch.allclose(after_t[:, t], base[:, t]) and torch.equal(after_t[:, d], base[:, d])
    after_d = _perturbed(model, x, 2)
    assert torch.equal(after_d[:, t], base[:, t]) and not torch.allclose(after_d[:, d], base[:, d])
    assert torch.equal(_perturbed(model, x, 1), base)


def test_late_fusion_is_built_from_single_modality_detectors():
    late = _small("late", use_rem=False)
    torch.manual_seed(1)  # weights other than those the late model was built with
    thermal = FusionDetector(dataclasses.replace(late.config, fusion="thermal")).eval()
    depth = FusionDetector(dataclasses.replace(late.config, fusion="depth")).eval()
    late.detector_thermal.load_state_dict(thermal.state_dict())
    late.detector_depth.load_state_dict(depth.state_dict())
    x = torch.randn(1, 3, *HW)
    with torch.no_grad():
        cls_logits, box_deltas = late(x)
        cls_t, box_t = thermal(x[:, [0, 0, 0]])
        cls_d, box_d = depth(x[:, [2, 2, 2]])
    torch.testing.assert_close(cls_logits, torch.cat((cls_t, cls_d), dim=1))
    torch.testing.assert_close(box_deltas, torch.cat((box_t, box_d), dim=1))


def _stream_output(person_probs):
    # Background logit 0; person logit -20 (p ≈ 2e-9) except at the given anchors. Zero deltas
    # decode to the anchors themselves.
    cls_logits = torch.zeros(1, N_ANCHORS, 2)
    cls_logits[..., 1] = -20.0
    for index, p in person_probs.items():
        cls_logits[0, index, 1] = math.log(p / (1 - p))
    return cls_logits, torch.zeros(1, N_ANCHORS, 4)


def test_late_detect_merges_both_streams_by_nms(monkeypatch):
    model = _small("late", use_rem=False)
    # The 32×32 square anchor (scale 4·8, ratio 1) of stride-8 cells (y, x): index
    # (y·12 + x)·8 + 1. a = cell (2, 2), b = (2, 8), c = (5, 5); pairwise IoU <= 0.03.
    a, b, c = 209, 257, 521
    anchors = generate_anchors(HW)
    expected = torch.tensor([[4.0, 4, 36, 36], [52, 4, 84, 36], [28, 28, 60, 60]])
    assert torch.equal(anchors[[a, b, c]], expected)
    thermal = _stream_output({a: 0.9, c: 0.6})
    depth = _stream_output({a: 0.7, b: 0.8, c: 0.75})
    monkeypatch.setattr(model.detector_thermal, "forward", lambda x: thermal)
    monkeypatch.setattr(model.detector_depth, "forward", lambda x: depth)
    ((boxes, scores),) = model.detect(torch.zeros(1, 3, *HW))
    # a: both streams, thermal higher; b: depth only; c: both, depth higher.
    torch.testing.assert_close(boxes, expected)
    torch.testing.assert_close(scores, torch.tensor([0.9, 0.8, 0.75]))
