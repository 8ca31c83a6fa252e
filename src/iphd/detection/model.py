"""Single-backbone fusion detector of paper A: ResNet C3–C5, optional REM, 1×1 anchor heads."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from iphd.detection.anchors import (
    ASPECT_RATIOS,
    SCALE_FACTORS,
    STRIDES,
    anchors_per_location,
    decode_boxes,
    generate_anchors,
)
from iphd.detection.backbone import STAGE_BLOCKS, ResNetBackbone
from iphd.detection.nms import nms
from iphd.detection.rem import ReceptiveEnhancementModule
from iphd.errors import ConfigError

FusionMode = Literal["early", "depth", "thermal"]
FUSION_MODES: tuple[str, ...] = ("early", "depth", "thermal")
NUM_CLASSES = 2  # background, person
# Prior person probability of the untrained classifier, so early training is not swamped by
# the loss of the many easy negatives.
_PRIOR_PERSON = 0.01


@dataclass(frozen=True)
class DetectorConfig:
    """Architecture and inference settings of :class:`FusionDetector` (defaults: paper A)."""

    backbone_depth: int = 50  # ResNet depth: 18, 34 or 50
    use_rem: bool = True  # a Receptive Enhancement Module on each of C3, C4, C5
    # Input channels: "early" = (T, T, D), "depth" = (D, D, D), "thermal" = (T, T, T); the network
    # is the same three-channel single backbone, only the input preparation differs.
    fusion: FusionMode = "early"
    head_channels: int = 256  # width after the 1×1 projection of each level, before REM/heads
    input_size: tuple[int, int] = (256, 448)  # (H, W) network input in pixels at test time
    score_threshold: float = 0.05  # minimum person probability kept by detect()
    nms_iou: float = 0.5  # IoU above which a lower-scoring detection is suppressed
    max_detections: int = 100  # per image, after NMS
    pre_nms_top_k: int = 1000  # highest-scoring candidates per image sent to NMS

    def __post_init__(self) -> None:
        if self.backbone_depth not in STAGE_BLOCKS:
            raise ConfigError(
                f"backbone_depth {self.backbone_depth} is not supported; use 18, 34 or 50"
            )
        if self.fusion not in FUSION_MODES:
            raise ConfigError(f"fusion {self.fusion!r} is not one of {FUSION_MODES}")
        if self.head_channels < 4:
            raise ConfigError(f"head_channels must be >= 4, got {self.head_channels}")
        if len(self.input_size) != 2 or min(self.input_size) < 1:
            raise ConfigError(f"input_size must be a positive (H, W), got {self.input_size}")
        if not 0.0 <= self.score_threshold <= 1.0:
            raise ConfigError(f"score_threshold must be in [0, 1], got {self.score_threshold}")
        if not 0.0 <= self.nms_iou <= 1.0:
            raise ConfigError(f"nms_iou must be in [0, 1], got {self.nms_iou}")
        if self.max_detections < 1 or self.pre_nms_top_k < 1:
            raise ConfigError(
                "max_detections and pre_nms_top_k must be >= 1, got "
                f"{self.max_detections} and {self.pre_nms_top_k}"
            )

    @property
    def in_channels(self) -> int:
        """Channels of the network input (every supported fusion mode stacks three)."""
        return 3


def _head(in_channels: int, bias: Tensor) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, bias.numel(), 1)
    nn.init.normal_(conv.weight, std=0.01)
    with torch.no_grad():
        conv.get_parameter("bias").copy_(bias)
    return conv


class FusionDetector(nn.Module):
    """ResNet → per-level 1×1 projection → optional REM → 1×1 classification and box heads.

    Anchors, per level S in (8, 16, 32): scales {4S, 6S} × h/w ratios {0.5, 1, 2, 4}; the head
    outputs are flattened in :func:`~iphd.detection.anchors.generate_anchors` order.

    Args:
        config: architecture and inference settings.
    """

    def __init__(self, config: DetectorConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else DetectorConfig()
        cfg = self.config
        self.num_anchors = anchors_per_location(SCALE_FACTORS, ASPECT_RATIOS)
        self.backbone = ResNetBackbone(cfg.backbone_depth, cfg.in_channels)
        self.projections = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(c, cfg.head_channels, 1, bias=False),
                nn.BatchNorm2d(cfg.head_channels),
                nn.ReLU(inplace=True),
            )
            for c in self.backbone.out_channels
        )
        self.rems = nn.ModuleList(
            ReceptiveEnhancementModule(cfg.head_channels) if cfg.use_rem else nn.Identity()
            for _ in STRIDES
        )
        # logit(person) - logit(background) = log(p / (1 - p)) for every anchor.
        cls_bias = torch.zeros(self.num_anchors, NUM_CLASSES)
        cls_bias[:, 1] = math.log(_PRIOR_PERSON / (1 - _PRIOR_PERSON))
        cls_heads = [_head(cfg.head_channels, cls_bias.reshape(-1)) for _ in STRIDES]
        box_heads = [_head(cfg.head_channels, torch.zeros(self.num_anchors * 4)) for _ in STRIDES]
        self.cls_heads = nn.ModuleList(cls_heads)
        self.box_heads = nn.ModuleList(box_heads)
        self._anchor_cache: dict[tuple[int, int, str], Tensor] = {}

    def _flatten(self, out: Tensor, k: int) -> Tensor:
        # (B, K·k, H, W) → (B, H·W·K, k): cells row-major, then anchors, as generate_anchors.
        b, _, h, w = out.shape
        return out.view(b, self.num_anchors, k, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, k)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Run the network on a (B, 3, H, W) normalised image batch.

        Returns:
            ``cls_logits`` (B, A, 2) (index 1 = person, softmax over the last axis) and
            ``box_deltas`` (B, A, 4) encoded as :func:`~iphd.detection.anchors.encode_boxes`,
            with A the number of anchors :func:`generate_anchors` gives for (H, W).

        Raises:
            ConfigError: if ``x`` is not (B, 3, H, W).
        """
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ConfigError(
                f"FusionDetector expects (B, {self.config.in_channels}, H, W) input, "
                f"got {tuple(x.shape)}"
            )
        cls_out, box_out = [], []
        for feat, proj, rem, cls_head, box_head in zip(
            self.backbone(x),
            self.projections,
            self.rems,
            self.cls_heads,
            self.box_heads,
            strict=True,
        ):
            f = rem(proj(feat))
            cls_out.append(self._flatten(cls_head(f), NUM_CLASSES))
            box_out.append(self._flatten(box_head(f), 4))
        return torch.cat(cls_out, dim=1), torch.cat(box_out, dim=1)

    def anchors(self, input_hw: tuple[int, int], device: torch.device) -> Tensor:
        """Anchors (A, 4) xyxy pixels for an (H, W) input on ``device``, cached per size."""
        key = (int(input_hw[0]), int(input_hw[1]), str(device))
        if key not in self._anchor_cache:
            self._anchor_cache[key] = generate_anchors(input_hw).to(device)
        return self._anchor_cache[key]

    @torch.no_grad()
    def detect(self, x: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Detect people in a (B, 3, H, W) batch: decode, score threshold, NMS, top-k.

        The module's train/eval mode is left as it is; call ``eval()`` first for inference.

        Returns:
            Per image, ``boxes`` (N, 4) float32 xyxy in input pixels (clipped to the image) and
            ``scores`` (N,) person probabilities in decreasing order, N <= max_detections.
        """
        cfg = self.config
        cls_logits, box_deltas = self(x)
        hw = (x.shape[-2], x.shape[-1])
        anchors = self.anchors(hw, x.device)
        scores_all = cls_logits.softmax(dim=-1)[..., 1]
        boxes_all = decode_boxes(box_deltas, anchors[None])
        boxes_all[..., 0::2] = boxes_all[..., 0::2].clamp(0, hw[1])
        boxes_all[..., 1::2] = boxes_all[..., 1::2].clamp(0, hw[0])
        results: list[tuple[Tensor, Tensor]] = []
        for scores, boxes in zip(scores_all, boxes_all, strict=True):
            keep = scores > cfg.score_threshold
            scores, boxes = scores[keep], boxes[keep]
            if scores.numel() > cfg.pre_nms_top_k:
                scores, top = scores.topk(cfg.pre_nms_top_k)
                boxes = boxes[top]
            kept = nms(boxes, scores, cfg.nms_iou)[: cfg.max_detections]
            results.append((boxes[kept], scores[kept]))
        return results
