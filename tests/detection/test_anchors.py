import math

import torch

from iphd.detection.anchors import (
    ASPECT_RATIOS,
    decode_boxes,
    encode_boxes,
    feature_size,
    generate_anchors,
    level_anchors,
)


def test_anchor_count_covers_every_cell_of_every_level():
    anchors = generate_anchors((64, 96))
    cells = sum(math.prod(feature_size((64, 96), s)) for s in (8, 16, 32))
    assert anchors.shape == (cells * 8, 4)
    assert feature_size((256, 448), 32) == (8, 14)


def test_anchor_sizes_and_ratios_follow_paper():
    anchors = level_anchors((64, 96), 16)[:8]
    w = anchors[:, 2] - anchors[:, 0]
    h = anchors[:, 3] - anchors[:, 1]
    sides = torch.sqrt(w * h)
    assert torch.allclose(sides, torch.tensor([64.0] * 4 + [96.0] * 4))
    assert torch.allclose(h / w, torch.tensor(ASPECT_RATIOS * 2))
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    assert torch.allclose(centres, torch.tensor([8.0, 8.0]).expand(8, 2))


def test_anchor_order_is_row_major_then_per_cell():
    anchors = level_anchors((32, 48), 8)  # 4 × 6 cells
    centres = ((anchors[:, :2] + anchors[:, 2:]) / 2).view(4, 6, 8, 2)
    assert torch.allclose(centres[1, 2, 5], torch.tensor([20.0, 12.0]))
    assert torch.allclose(centres[3, 0, 0], torch.tensor([4.0, 28.0]))


def test_encode_decode_round_trip():
    torch.manual_seed(0)
    anchors = generate_anchors((64, 96))
    xy = torch.rand(anchors.shape[0], 2) * 90
    wh = torch.rand(anchors.shape[0], 2) * 60 + 1
    boxes = torch.cat([xy, xy + wh], dim=1)
    deltas = encode_boxes(boxes, anchors)
    assert torch.allclose(decode_boxes(deltas, anchors), boxes, atol=1e-3)
    assert torch.allclose(encode_boxes(anchors, anchors), torch.zeros_like(anchors), atol=1e-6)
