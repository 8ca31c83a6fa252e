"""Fusion detectors of paper A: ResNet C3–C5, optional REM, 1×1 anchor heads; early/mid/late."""

from __future__ import annotations

import dataclasses
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

FusionMode = Literal["early", "depth", "thermal", "intermediate", "late"]
FUSION_MODES: tuple[str, ...] = ("early", "depth", "thermal", "intermediate", "late")
NUM_CLASSES = 2  # background, person
# Prior person probability of the untrained classifier, so early training is not swamped by
# the loss of the many easy negatives.
_PRIOR_PERSON = 0.01


@dataclass(frozen=True)
class DetectorConfig:
    """Architecture and inference settings of :class:`FusionDetector` (defaults: paper A)."""

    backbone_depth: int = 50  # ResNet depth: 18, 34 or 50
    backbone_width: int = 64  # stem/first-stage channels; 64 = torchvision (ImageNet weights)
    use_rem: bool = True  # a Receptive Enhancement Module on each of C3, C4, C5
    # "early" = one backbone on (T, T, D); "depth" = (D, D, D) and "thermal" = (T, T, T), the same
    # network on one modality. "intermediate" and "late" also take (T, T, D) and split it inside:
    # "intermediate" = a thermal (T, T, T) and a depth (D, D, D) backbone whose C3–C5 are
    # concatenated and merged by a 3×3 conv; "late" = a thermal and a depth detector whose anchors
    # are concatenated (2× as many), so detect() merges the two by NMS.
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
            raise ConfigError(
                f"fusion {self.fusion!r} is not supported; use one of {', '.join(FUSION_MODES)}"
            )
        if self.backbone_width < 4:
            raise ConfigError(f"backbone_width must be >= 4, got {self.backbone_width}")
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


def _replicate(x: Tensor, channel: int) -> Tensor:
    # cat, not expand or repeat: ONNX gets one Slice and one Concat, where those two export a
    # runtime computation of the target shape (Shape, ConstantOfShape, Expand, ...).
    c = x[:, channel : channel + 1]
    return torch.cat((c, c, c), dim=1)


# Channels of the (T, T, D) input that the thermal and the depth stream see, replicated to three.
_THERMAL_CHANNEL = 0
_DEPTH_CHANNEL = 2


class FusionDetector(nn.Module):
    """Paper A's detector in the fusion mode of its config; one interface for all five modes.

    ``early``, ``depth``, ``thermal``: ResNet → per-level 1×1 projection → optional REM → 1×1
    classification and box heads (parameters ``backbone``, ``projections``, ``rems``,
    ``cls_heads``, ``box_heads``). ``intermediate``: a thermal and a depth ResNet
    (``backbone_thermal``, ``backbone_depth``) on channels 0 and 2 of the (T, T, D) input, each
    replicated to three; per level their features are concatenated and merged back to one
    backbone's width by a 3×3 conv + BN + ReLU (``merges``), then the same projections, REMs and
    heads. ``late``: two complete detectors, ``detector_thermal`` (a ``thermal`` one on
    (T, T, T)) and ``detector_depth`` (a ``depth`` one on (D, D, D)); their outputs and anchors
    are concatenated thermal first, so :meth:`detect` merges the two streams by NMS.

    Anchors, per level S in (8, 16, 32): scales {4S, 6S} × h/w ratios {0.5, 1, 2, 4}; the head
    outputs are flattened in :func:`~iphd.detection.anchors.generate_anchors` order (once per
    stream for ``late``).

    Args:
        config: architecture and inference settings.
    """

    def __init__(self, config: DetectorConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else DetectorConfig()
        cfg = self.config
        self.num_anchors = anchors_per_location(SCALE_FACTORS, ASPECT_RATIOS)
        self._anchor_cache: dict[tuple[int, int, str], Tensor] = {}
        if cfg.fusion == "late":
            self.detector_thermal = FusionDetector(dataclasses.replace(cfg, fusion="thermal"))
            self.detector_depth = FusionDetector(dataclasses.replace(cfg, fusion="depth"))
            return
        if cfg.fusion == "intermediate":
            self.backbone_thermal = self._backbone()
            self.backbone_depth = self._backbone()
            channels = self.backbone_thermal.out_channels
            self.merges = nn.ModuleList(
                nn.Sequential(
                    nn.Conv2d(2 * c, c, 3, padding=1, bias=False),
                    nn.BatchNorm2d(c),
                    nn.ReLU(inplace=True),
                )
                for c in channels
            )
        else:
            self.backbone = self._backbone()
            channels = self.backbone.out_channels
        self.projections = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(c, cfg.head_channels, 1, bias=False),
                nn.BatchNorm2d(cfg.head_channels),
                nn.ReLU(inplace=True),
            )
            for c in channels
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

    def _backbone(self) -> ResNetBackbone:
        cfg = self.config
        return ResNetBackbone(cfg.backbone_depth, cfg.in_channels, cfg.backbone_width)

    def _flatten(self, out: Tensor, k: int) -> Tensor:
        # (B, K·k, H, W) → (B, H·W·K, k): cells row-major, then anchors, as generate_anchors.
        b, _, h, w = out.shape
        return out.view(b, self.num_anchors, k, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, k)

    def _features(self, x: Tensor) -> tuple[Tensor, ...]:
        if self.config.fusion != "intermediate":
            return self.backbone(x)
        thermal = self.backbone_thermal(_replicate(x, _THERMAL_CHANNEL))
        depth = self.backbone_depth(_replicate(x, _DEPTH_CHANNEL))
        return tuple(
            merge(torch.cat((t, d), dim=1))
            for merge, t, d in zip(self.merges, thermal, depth, strict=True)
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Run the network on a (B, 3, H, W) normalised image batch.

        Returns:
            ``cls_logits`` (B, A, 2) (index 1 = person, softmax over the last axis) and
            ``box_deltas`` (B, A, 4) encoded as :func:`~iphd.detection.anchors.encode_boxes`,
            row for row with :meth:`anchors`: A is the number of anchors
            :func:`generate_anchors` gives for (H, W), twice that for ``late`` (thermal
            detector's rows first, then the depth detector's).

        Raises:
            ConfigError: if ``x`` is not (B, 3, H, W).
        """
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ConfigError(
                f"FusionDetector expects (B, {self.config.in_channels}, H, W) input, "
                f"got {tuple(x.shape)}"
            )
        if self.config.fusion == "late":
            cls_t, box_t = self.detector_thermal(_replicate(x, _THERMAL_CHANNEL))
            cls_d, box_d = self.detector_depth(_replicate(x, _DEPTH_CHANNEL))
            return torch.cat((cls_t, cls_d), dim=1), torch.cat((box_t, box_d), dim=1)
        cls_out, box_out = [], []
        for feat, proj, rem, cls_head, box_head in zip(
            self._features(x),
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
        """Anchors (A, 4) xyxy pixels for an (H, W) input on ``device``, cached per size.

        Row for row with :meth:`forward`: for ``late`` the anchors of (H, W) twice, once per
        stream.
        """
        key = (int(input_hw[0]), int(input_hw[1]), str(device))
        if key not in self._anchor_cache:
            streams = 2 if self.config.fusion == "late" else 1
            self._anchor_cache[key] = generate_anchors(input_hw).repeat(streams, 1).to(device)
        return self._anchor_cache[key]

    @torch.no_grad()
    def detect(self, x: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Detect people in a (B, 3, H, W) batch: decode, score threshold, NMS, top-k.

        For ``late`` fusion the candidates of both streams go through one NMS, so a person both
        detectors found is kept once, with the higher score. The module's train/eval mode is
        left as it is; call ``eval()`` first for inference.

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
