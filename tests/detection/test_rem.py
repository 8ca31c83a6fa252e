import torch

from iphd.detection.rem import ReceptiveEnhancementModule


def test_rem_keeps_shape_and_has_3_5_7_receptive_fields():
    rem = ReceptiveEnhancementModule(16)
    x = torch.randn(2, 16, 9, 11)
    assert rem(x).shape == x.shape
    n_3x3 = [
        sum(isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3) for m in branch)
        for branch in rem.branches
    ]
    assert n_3x3 == [1, 2, 3]


def test_rem_receptive_field_reaches_seven_pixels():
    torch.manual_seed(0)
    rem = ReceptiveEnhancementModule(8).eval()
    x = torch.randn(1, 8, 15, 15, requires_grad=True)
    rem(x)[0, :, 7, 7].sum().backward()
    touched = (x.grad.abs().sum(dim=(0, 1)) > 0).nonzero()
    assert touched.min().item() == 4 and touched.max().item() == 10
