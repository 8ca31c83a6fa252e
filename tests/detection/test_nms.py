import torch

from iphd.detection.nms import batched_nms, box_iou, nms


def _iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _brute_force_nms(boxes, scores, threshold):
    boxes, scores = boxes.tolist(), scores.tolist()
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    keep = []
    for i in order:
        if all(_iou(boxes[i], boxes[j]) <= threshold for j in keep):
            keep.append(i)
    return keep


def test_box_iou_of_hand_built_pair():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [5.0, 5.0, 6.0, 6.0]])
    assert torch.allclose(box_iou(a, b), torch.tensor([[1 / 7, 0.0]]))


def _random_boxes(generator, n):
    xy = torch.rand(n, 2, generator=generator) * 100
    wh = torch.rand(n, 2, generator=generator) * 40 + 1
    return torch.cat([xy, xy + wh], dim=1)


def test_nms_matches_brute_force_on_random_boxes():
    g = torch.Generator().manual_seed(0)
    for threshold in (0.3, 0.5, 0.7):
        boxes = _random_boxes(g, 200)
        scores = torch.rand(200, generator=g)
        assert nms(boxes, scores, threshold).tolist() == _brute_force_nms(boxes, scores, threshold)


def test_batched_nms_matches_per_group_brute_force():
    g = torch.Generator().manual_seed(1)
    boxes = _random_boxes(g, 150)
    scores = torch.rand(150, generator=g)
    groups = torch.randint(0, 3, (150,), generator=g)
    expected = []
    for group in range(3):
        idx = (groups == group).nonzero().flatten()
        expected += [idx[i].item() for i in _brute_force_nms(boxes[idx], scores[idx], 0.5)]
    expected.sort(key=lambda i: -scores[i].item())
    assert batched_nms(boxes, scores, groups, 0.5).tolist() == expected


def test_nms_of_no_boxes_is_empty():
    kept = nms(torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert kept.shape == (0,) and kept.dtype == torch.int64
