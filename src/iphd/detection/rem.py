"""Receptive Enhancement Module: inception-style 3×3/5×5/7×7 branches, 1×1 fusion, residual."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from iphd.errors import ConfigError


def _conv_bn_relu(in_ch: int, out_ch: int, kernel: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    ]


class ReceptiveEnhancementModule(nn.Module):
    """Enlarge the receptive field of one feature level without changing its shape.

    Three branches see 3×3, 5×5 and 7×7 neighbourhoods; the 5×5 and 7×7 ones are built from two
    and three stacked 3×3 convolutions (same receptive field, fewer weights). Each branch starts
    with a 1×1 reduction to ``branch_channels``. The concatenation is fused back to ``channels`` by
    a 1×1 convolution and added to the input, so an untrained module starts near the identity.

    Args:
        channels: input and output channels.
        branch_channels: width of each branch; ``channels // 4`` when None.

    Raises:
        ConfigError: if a width is < 1.
    """

    def __init__(self, channels: int, branch_channels: int | None = None) -> None:
        super().__init__()
        width = channels // 4 if branch_channels is None else branch_channels
        if channels < 1 or width < 1:
            raise ConfigError(
                f"REM needs channels >= 1 and branch width >= 1, got {channels} and {width}"
            )
        self.branches = nn.ModuleList(
            nn.Sequential(
                *_conv_bn_relu(channels, width, 1),
                *[m for _ in range(n_3x3) for m in _conv_bn_relu(width, width, 3)],
            )
            for n_3x3 in (1, 2, 3)
        )
        self.fuse = nn.Sequential(
            nn.Conv2d(3 * width, channels, 1, bias=False), nn.BatchNorm2d(channels)
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        """Return enhanced features with the shape of ``x`` (B, channels, H, W)."""
        out = self.fuse(torch.cat([branch(x) for branch in self.branches], dim=1))
        return self.relu(x + out)
