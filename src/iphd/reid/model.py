"""Paper B re-ID embedder: ResNet trunk → global average pool → 128-d embedding → BNNeck."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from iphd.detection.backbone import STAGE_BLOCKS, ResNetBackbone
from iphd.errors import ConfigError, FrameError

#: What an embedder is fed. "depth" and "rgb" are the single-modality networks of paper B's
#: steps I and II; "both" is the one-stream baseline (one network, both modalities mixed, 3
#: channels); "zero-padding" is the Wu et al. baseline (6 channels: depth in 0-2, RGB in 3-5,
#: the other modality's half zero, see ``iphd.reid.distill.zero_pad``).
EMBEDDER_MODALITIES: tuple[str, ...] = ("depth", "rgb", "both", "zero-padding")

#: The embedder's blocks from input to output; ``Embedder.freeze_from`` names one of them.
#: "stem" is conv1 + bn1, "head" the embedding layer, BNNeck and classifier.
BLOCKS: tuple[str, ...] = ("stem", "layer1", "layer2", "layer3", "layer4", "head")


@dataclass(frozen=True)
class EmbedderConfig:
    """Architecture of :class:`Embedder` (defaults: paper B)."""

    backbone_depth: int = 50  # ResNet depth: 18, 34 or 50
    backbone_width: int = 64  # stem/first-stage channels; 64 = torchvision (ImageNet weights)
    embedding_dim: int = 128  # size of the embedding compared with Euclidean distance
    bnneck: bool = True  # BatchNorm1d after the embedding (bias frozen), used at inference
    num_classes: int = 0  # identities of the softmax classifier; 0 = no classifier head
    modality: str = "depth"  # one of EMBEDDER_MODALITIES
    input_size: tuple[int, int] = (256, 128)  # (H, W) network input in pixels

    def __post_init__(self) -> None:
        """Reject settings the network cannot be built with; the message names the field."""
        if self.backbone_depth not in STAGE_BLOCKS:
            raise ConfigError(
                f"backbone_depth {self.backbone_depth} is not supported; use one of "
                f"{', '.join(map(str, STAGE_BLOCKS))}"
            )
        if _not_int(self.backbone_width) or self.backbone_width < 4:
            raise ConfigError(f"backbone_width must be an int >= 4, got {self.backbone_width!r}")
        if _not_int(self.embedding_dim) or self.embedding_dim < 1:
            raise ConfigError(f"embedding_dim must be an int >= 1, got {self.embedding_dim!r}")
        if not isinstance(self.bnneck, bool):
            raise ConfigError(f"bnneck must be true or false, got {self.bnneck!r}")
        if _not_int(self.num_classes) or self.num_classes < 0:
            raise ConfigError(
                f"num_classes must be an int >= 0 (0 = no classifier), got {self.num_classes!r}"
            )
        if self.modality not in EMBEDDER_MODALITIES:
            raise ConfigError(
                f"modality {self.modality!r} is not supported; use one of "
                f"{', '.join(EMBEDDER_MODALITIES)}"
            )
        if (
            len(self.input_size) != 2
            or any(_not_int(v) or v < 1 for v in self.input_size)
        ):
            raise ConfigError(f"input_size must be a positive (H, W), got {self.input_size!r}")

    @property
    def in_channels(self) -> int:
        """Channels of the network input: 6 for the zero-padding baseline, else 3."""
        return 6 if self.modality == "zero-padding" else 3


def _not_int(value: object) -> bool:
    return isinstance(value, bool) or not isinstance(value, int)


class EmbedderOutput(NamedTuple):
    """What :meth:`Embedder.forward` returns.

    Attributes:
        embedding: (B, D) embedding before BNNeck, for the triplet and distillation losses.
        feature: (B, D) inference feature: after BNNeck when there is one, else ``embedding``.
        logits: (B, num_classes) classifier scores, or None without a classifier.
    """

    embedding: Tensor
    feature: Tensor
    logits: Tensor | None


class Embedder(nn.Module):
    """Person re-ID embedder of paper B.

    ResNet trunk (C5) → global average pooling → linear to ``embedding_dim`` → optional BNNeck
    (BatchNorm1d with a frozen zero bias, as in reid-strong-baseline, so the triplet loss acts on
    the embedding and the softmax on a normalised copy of it) → optional bias-free classifier.

    Args:
        config: the architecture.
    """

    def __init__(self, config: EmbedderConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else EmbedderConfig()
        cfg = self.config
        self.backbone = ResNetBackbone(cfg.backbone_depth, cfg.in_channels, cfg.backbone_width)
        self.fc = nn.Linear(self.backbone.out_channels[2], cfg.embedding_dim)
        self.bnneck: nn.BatchNorm1d | None = None
        if cfg.bnneck:
            self.bnneck = nn.BatchNorm1d(cfg.embedding_dim)
            self.bnneck.bias.requires_grad_(False)
        self.classifier: nn.Linear | None = None
        if cfg.num_classes > 0:
            self.classifier = nn.Linear(cfg.embedding_dim, cfg.num_classes, bias=False)
            # Small weights as in reid-strong-baseline: the initial softmax is near uniform.
            nn.init.normal_(self.classifier.weight, std=0.001)
        self._frozen_from: int | None = None

    def block_modules(self, name: str) -> list[nn.Module]:
        """Return the modules that make up block ``name`` (one of ``BLOCKS``).

        Raises:
            ConfigError: ``name`` is not a block; the message lists the valid names.
        """
        _block_index(name)
        bb = self.backbone
        if name == "stem":
            return [bb.conv1, bb.bn1]
        if name == "head":
            return [m for m in (self.fc, self.bnneck, self.classifier) if m is not None]
        return [getattr(bb, name)]

    def freeze_from(self, name: str) -> None:
        """Freeze block ``name`` and every block after it; earlier blocks become trainable.

        Frozen parameters get ``requires_grad=False`` and frozen BatchNorms stay in eval mode
        (running statistics untouched) even when the model is put in training mode, so a frozen
        block computes exactly what it did in the network the weights came from.

        Raises:
            ConfigError: ``name`` is not a block; the message lists the valid names.
        """
        start = _block_index(name)
        for i, block in enumerate(BLOCKS):
            for module in self.block_modules(block):
                module.requires_grad_(i < start)
        if self.bnneck is not None:
            self.bnneck.bias.requires_grad_(False)
        self._frozen_from = start
        self.train(self.training)

    def trainable_blocks(self) -> tuple[str, ...]:
        """Names of the blocks ``freeze_from`` left trainable (all of them before any freeze)."""
        return BLOCKS if self._frozen_from is None else BLOCKS[: self._frozen_from]

    def train(self, mode: bool = True) -> Embedder:
        """Set training mode, keeping the frozen blocks (see ``freeze_from``) in eval mode."""
        super().train(mode)
        if self._frozen_from is not None:
            for block in BLOCKS[self._frozen_from :]:
                for module in self.block_modules(block):
                    module.eval()
        return self

    def forward(self, x: Tensor) -> EmbedderOutput:
        """Embed a (B, in_channels, H, W) batch of normalised crops.

        Raises:
            FrameError: the batch is not 4-D with ``config.in_channels`` channels.
        """
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise FrameError(
                f"expected a (B, {self.config.in_channels}, H, W) batch for modality "
                f"{self.config.modality!r}, got shape {tuple(x.shape)}"
            )
        c5 = self.backbone(x)[2]
        embedding = self.fc(c5.mean(dim=(2, 3)))
        feature = embedding if self.bnneck is None else self.bnneck(embedding)
        logits = None if self.classifier is None else self.classifier(feature)
        return EmbedderOutput(embedding, feature, logits)

    @torch.no_grad()
    def embed(self, x: Tensor) -> Tensor:
        """Return the (B, D) inference feature of a batch (post-BNNeck if any), without grad."""
        return self.forward(x).feature


def _block_index(name: str) -> int:
    if name not in BLOCKS:
        raise ConfigError(f"unknown block {name!r}; use one of {', '.join(BLOCKS)}")
    return BLOCKS.index(name)
