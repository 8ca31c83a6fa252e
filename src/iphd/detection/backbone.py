"""Plain-torch ResNet-18/34/50 backbone returning C3, C4, C5, loadable from torchvision weights."""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from iphd.errors import ConfigError, load_failure

#: Blocks per stage for each supported depth, as in torchvision's resnet18/34/50.
STAGE_BLOCKS: dict[int, tuple[int, int, int, int]] = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
}

#: Strides of the returned feature maps C3, C4, C5 relative to the input.
FEATURE_STRIDES: tuple[int, int, int] = (8, 16, 32)


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with a residual (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_planes, planes * self.expansion, stride)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block to (B, C, H, W) features."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1×1 → 3×3 (strided, as torchvision v1.5) → 1×1 bottleneck with a residual (ResNet-50)."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_planes, out_planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block to (B, C, H, W) features."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _downsample(in_planes: int, out_planes: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and in_planes == out_planes:
        return None
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, 1, stride, bias=False), nn.BatchNorm2d(out_planes)
    )


class ResNetBackbone(nn.Module):
    """ResNet trunk with torchvision parameter names (conv1, bn1, layer1..layer4), no fc.

    Args:
        depth: 18, 34 or 50.
        in_channels: channels of the input image (3 for early fusion).
        width: channels of the stem and of the first stage (64 in torchvision's ResNets, whose
            weights only load at 64); every later stage doubles it. A narrower trunk is the
            CPU-speed knob of the shipped detector.

    Raises:
        ConfigError: if ``depth`` is not supported, ``in_channels`` < 1 or ``width`` < 4.
    """

    def __init__(self, depth: int = 50, in_channels: int = 3, width: int = 64) -> None:
        super().__init__()
        if depth not in STAGE_BLOCKS:
            raise ConfigError(f"ResNet depth {depth} is not supported; use one of 18, 34, 50")
        if in_channels < 1:
            raise ConfigError(f"in_channels must be >= 1, got {in_channels}")
        if width < 4:
            raise ConfigError(f"backbone width must be >= 4, got {width}")
        block: type[BasicBlock] | type[Bottleneck] = BasicBlock if depth < 50 else Bottleneck
        self.depth = depth
        self.in_channels = in_channels
        self.width = width
        self.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        planes_in = width
        stages = []
        for i, n_blocks in enumerate(STAGE_BLOCKS[depth]):
            planes = width * 2**i
            stride = 1 if i == 0 else 2
            blocks: list[nn.Module] = []
            for j in range(n_blocks):
                blocks.append(block(planes_in, planes, stride if j == 0 else 1))
                planes_in = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        e = block.expansion
        #: Channels of C3, C4, C5.
        self.out_channels: tuple[int, int, int] = (2 * width * e, 4 * width * e, 8 * width * e)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Compute C3, C4, C5 for a (B, in_channels, H, W) image batch.

        Returns:
            Feature maps at strides 8, 16, 32, each (B, out_channels[i], ceil(H/S), ceil(W/S)).
        """
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return c3, c4, c5


def load_torchvision_state_dict(
    model: ResNetBackbone, source: str | Path | Mapping[str, Tensor]
) -> None:
    """Load a torchvision-format ResNet state dict (e.g. ImageNet weights) into ``model``.

    ``fc.*`` entries are ignored. When the model's input has a different number of channels than
    the checkpoint's ``conv1.weight`` (3, RGB), the RGB filters are averaged and repeated over the
    model's channels, so a grey input sees the same response as the RGB mean.

    Args:
        model: the backbone to fill in place.
        source: path to a ``.pth`` file (loaded with ``weights_only=True``) or a state dict.

    Raises:
        ConfigError: if the file cannot be read, or keys are missing/unexpected or shapes differ
            (the message names them, e.g. a ResNet-50 checkpoint given to a ResNet-18).
    """
    if isinstance(source, str | Path):
        try:
            state = torch.load(Path(source), map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, ValueError, pickle.UnpicklingError) as exc:
            raise ConfigError(
                f"cannot load backbone weights from {source}: {load_failure(exc)}"
            ) from exc
        if not isinstance(state, Mapping):
            raise ConfigError(f"{source} does not hold a state dict (got {type(state).__name__})")
    else:
        state = source
    name = str(source) if isinstance(source, str | Path) else "the given state dict"
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.startswith("fc.")}
    own = model.state_dict()
    conv1 = state.get("conv1.weight")
    if isinstance(conv1, Tensor) and conv1.ndim == 4 and conv1.shape[1] != model.in_channels:
        mean = conv1.mean(dim=1, keepdim=True)
        state["conv1.weight"] = mean.repeat(1, model.in_channels, 1, 1)
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if tuple(state[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_short(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatches (checkpoint vs model) {_short(mismatched)}")
        raise ConfigError(
            f"{name} does not fit a ResNet-{model.depth} backbone: "
            + "; ".join(parts)
            + ". Check that the checkpoint is a torchvision resnet"
            f"{model.depth} state dict."
        )
    model.load_state_dict(state)


def _short(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return f"[{shown}{', ...' if len(keys) > limit else ''}] ({len(keys)} total)"
