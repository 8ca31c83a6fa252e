"""Appearance for the tracker: re-ID extractors, depth crops, detections paired with depth."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

from iphd.data.reid import CROP_SIZE, crop_person, metric_crop
from iphd.detections import StampPair, StampPairer
from iphd.errors import CheckpointError, ConfigError, FrameError
from iphd.reid.extractor import EMBEDDER_BACKENDS, CropNormalizeConfig, FeatureExtractor
from iphd.tracking.tracker import box_far_outside

LOG = logging.getLogger(__name__)

_MODELS = Path(__file__).resolve().parent.parent / "models"
_WITHOUT = {
    "depth": "appearance is disabled (tracking by position only)",
    "rgb": "cross-modal RGB queries are disabled",
}
#: Depth re-ID embedder shipped with the package (the tracker's appearance model).
SHIPPED_DEPTH_EMBEDDER = _MODELS / "reid_depth.pt"
#: RGB re-ID embedder shipped with the package (cross-modal queries against depth tracks).
SHIPPED_RGB_EMBEDDER = _MODELS / "reid_rgb.pt"
SHIPPED_EMBEDDERS = {"depth": SHIPPED_DEPTH_EMBEDDER, "rgb": SHIPPED_RGB_EMBEDDER}
#: ``load_extractor`` backends: ``auto`` = torch on CUDA, onnxruntime on the CPU.
EXTRACTOR_BACKENDS = ("auto", *EMBEDDER_BACKENDS)
#: ``load_extractor`` path that turns the extractor off.
DISABLED = "none"


def load_extractor(
    path: str, modality: str, device: str = "auto", backend: str = "torch", threads: int = 0
) -> FeatureExtractor | None:
    """Load the re-ID extractor for ``modality`` crops.

    Args:
        path: an embedder checkpoint (``iphd.reid.extractor.save_embedder``); ``""`` = the one
            shipped with the package for ``modality``; ``"none"`` = no extractor.
        modality: ``"depth"`` or ``"rgb"``: what the extractor must embed.
        device: ``auto``, ``cpu`` or ``cuda``.
        backend: ``torch``, ``onnxruntime`` or ``auto`` (torch on CUDA, onnxruntime on the
            CPU, falling back to torch with a warning when the export cannot be made or run).
        threads: onnxruntime's threads within an operator; 0 = its default.

    Returns:
        The extractor, or None when ``path`` is ``"none"`` or when ``path`` is ``""`` and the
        shipped file is missing from this install (then a warning is logged).

    Raises:
        CheckpointError: an explicit ``path`` that is missing or not an embedder checkpoint.
        ConfigError: an unknown modality, device or backend, or a checkpoint that embeds
            another modality than ``modality``.
    """
    if modality not in SHIPPED_EMBEDDERS:
        raise ConfigError(f"modality must be 'depth' or 'rgb', got {modality!r}")
    if backend not in EXTRACTOR_BACKENDS:
        raise ConfigError(
            f"backend must be one of {', '.join(EXTRACTOR_BACKENDS)}, got {backend!r}"
        )
    if path.strip().lower() == DISABLED:
        return None
    if not path:
        shipped = SHIPPED_EMBEDDERS[modality]
        if not shipped.is_file():
            LOG.warning(
                "no %s re-ID embedder shipped at %s: %s; train one with training/train_reid.py "
                "and pass its path", modality, shipped, _WITHOUT[modality],
            )
            return None
        path = str(shipped)
    extractor = None
    if backend == "onnxruntime" or (backend == "auto" and not _on_cuda(device)):
        try:
            extractor = FeatureExtractor(
                path, device=device, backend="onnxruntime", intra_op_threads=threads
            )
        except CheckpointError:
            raise
        except Exception as exc:  # onnx or onnxruntime missing, a failed export: torch runs it
            if backend == "onnxruntime":
                raise
            LOG.warning("no ONNX export of %s (%s): running it on torch", path, exc)
    if extractor is None:
        extractor = FeatureExtractor(path, device=device)
    if extractor.modality != modality:
        raise ConfigError(
            f"{path} embeds {extractor.modality} crops but a {modality} embedder is needed; "
            f"pass a checkpoint trained on {modality} crops"
        )
    return extractor


def _on_cuda(device: str) -> bool:
    import torch

    return device == "cuda" or (device == "auto" and torch.cuda.is_available())


def crop_size(extractor: FeatureExtractor) -> tuple[int, int]:
    """(width, height) in pixels of the crops ``extractor`` takes without resizing."""
    height, width = extractor.model.config.input_size
    return width, height


def depth_crops(
    depth_mm: np.ndarray, boxes_xyxy: Sequence[Sequence[float]] | np.ndarray,
    size: tuple[int, int] = CROP_SIZE,
    normalize: CropNormalizeConfig | None = None,
    focal_px: tuple[float, float] | None = None,
) -> tuple[list[np.ndarray], list[int]]:
    """Cut person crops out of a depth image for the re-ID embedder, the way it was trained.

    Args:
        depth_mm: (H, W) uint16 depth in millimetres, 0 = invalid.
        boxes_xyxy: (N, 4) person boxes in pixels of ``depth_mm``.
        size: (width, height) of each crop in pixels; ``crop_size(extractor)`` saves the
            extractor a second resize.
        normalize: the extractor's crop settings (``extractor.normalize``): its ``depth_crop``
            picks letterboxed boxes (the default) or metric windows.
        focal_px: (fx, fy) of the depth image in pixels; needed for metric crops.

    Returns:
        (crops, indices): the (height, width) uint16 crops of the boxes with valid depth inside
        them (box grown by 10 % and letterboxed, or a ``depth_window_m`` window at the person's
        distance), and the indices in ``boxes_xyxy`` they come from. Boxes without valid depth,
        malformed boxes, boxes outside the image and boxes reaching more than the image's own
        size beyond it are skipped.

    Raises:
        FrameError: ``depth_mm`` is not an (H, W) uint16 image.
        ConfigError: metric crops without ``focal_px``.
    """
    metric = normalize is not None and normalize.depth_crop == "metric"
    if metric and focal_px is None:
        raise ConfigError(
            "this re-ID embedder takes metric depth crops, which need the depth camera's focal "
            "lengths; give depth/camera_info"
        )
    ok = isinstance(depth_mm, np.ndarray) and depth_mm.ndim == 2
    if not (ok and depth_mm.dtype == np.uint16):
        got = (
            f"{depth_mm.shape} {depth_mm.dtype}"
            if isinstance(depth_mm, np.ndarray) else type(depth_mm).__name__
        )
        raise FrameError(f"depth must be an (H, W) uint16 image in mm, got {got}")
    crops: list[np.ndarray] = []
    indices: list[int] = []
    height, width = depth_mm.shape
    for index, box in enumerate(boxes_xyxy):
        x1, y1, x2, y2 = (float(v) for v in box)
        if not (np.isfinite([x1, y1, x2, y2]).all() and x2 > x1 and y2 > y1):
            continue
        if box_far_outside((x1, y1, x2, y2), width, height):
            continue  # no crop of it, however much memory it would take
        # Only the box itself counts: the crop's margin may hold background depth.
        c0, c1 = max(int(np.floor(x1)), 0), min(int(np.ceil(x2)), width)
        r0, r1 = max(int(np.floor(y1)), 0), min(int(np.ceil(y2)), height)
        if c0 >= c1 or r0 >= r1 or not depth_mm[r0:r1, c0:c1].any():
            continue
        if metric:
            assert normalize is not None and focal_px is not None
            crops.append(metric_crop(
                depth_mm, (x1, y1, x2, y2), focal_px[0], focal_px[1],
                tuple(normalize.depth_window_m), size,  # type: ignore[arg-type]
            ))
        else:
            crops.append(crop_person(depth_mm, (x1, y1, x2, y2), size))
        indices.append(index)
    return crops, indices


def query_pair_problem(depth_path: str, rgb_path: str) -> str | None:
    """Why RGB query distances to the depth galleries need checking, or None when they need not.

    An RGB query embedding lies in the space of the depth embedder its network was distilled
    from (step II): the shipped RGB network in the shipped depth embedder's. A depth embedder of
    your own beside it gives query distances that are only as good as that pair measures: a
    fine-tune of the shipped depth model keeps much of the space (on the simulator, RGB → depth
    mAP 33.8 % against 38.9 % for the shipped pair and 28.5 % for a network distilled on 26
    people), a model trained from scratch none of it. Paths as the tracker node's parameters:
    ``""`` = shipped, ``"none"`` = off; a shipped file named by its path is the shipped one too.
    """
    if depth_path in ("", DISABLED) or rgb_path == DISABLED:
        return None
    if rgb_path and Path(rgb_path).resolve() != SHIPPED_RGB_EMBEDDER.resolve():
        return None  # an RGB network of your own: distilled for your depth model, presumably
    if Path(depth_path).resolve() == SHIPPED_DEPTH_EMBEDDER.resolve():
        return None
    return (
        f"reid_checkpoint is {depth_path} but query_checkpoint is the shipped RGB embedder, "
        "which was distilled from the shipped depth embedder: its query distances to these "
        "depth galleries hold up only as far as your depth model kept the shipped one's space "
        "(a fine-tune of it mostly does, one trained from scratch does not). Score the pair "
        "with training/eval_reid.py (--run \"mine=<depth .pt>,<rgb .pt>\"), or distil an RGB "
        "network from your depth embedder (training/bag_to_reid.py --rgb, then "
        "training/train_reid.py with cpu_sim_distill_finetune.yaml and step.teacher=<your "
        "depth .pt>) and give its model_rgb.pt as query_checkpoint, or set query_checkpoint "
        "to 'none'"
    )


def letterbox(image: np.ndarray, size: tuple[int, int] = CROP_SIZE) -> np.ndarray:
    """Fit a whole person crop (a re-ID query) into ``size`` (width, height), aspect kept.

    The same letterboxing as the training crops (``crop_person``), without a margin.

    Raises:
        ValueError: an empty or malformed image.
    """
    height, width = np.asarray(image).shape[:2]
    return crop_person(image, (0.0, 0.0, float(width), float(height)), size, pad=0.0)


D = TypeVar("D")
T = TypeVar("T")


@dataclass(frozen=True)
class Matched(Generic[D, T]):
    """A detections message and the depth frame of its stamp.

    Attributes:
        stamp_ns: the common stamp.
        detections: the detections payload.
        depth: the depth payload; None when it did not arrive within the pairer's window (the
            detections are still tracked, without appearance).
    """

    stamp_ns: int
    detections: T
    depth: D | None


class DepthPairing(Generic[D, T]):
    """Pairs each detections message with the depth frame of exactly its stamp.

    A ``StampPairer`` (depth as depth, detections in the registered slot) does the matching and
    decides when a depth frame will not come any more (a newer pair, ``max_wait_ns`` of newer
    depth, its buffer overflowing, a stamp jump). Unlike the pairer, this never loses detections:
    those the pairer gives up on come out with ``depth=None``, in stamp order, before any pair
    with a later stamp.

    Args:
        pairer: the pairer to use; default ``StampPairer()``.
    """

    def __init__(self, pairer: StampPairer[D, T] | None = None) -> None:
        self.pairer: StampPairer[D, T] = pairer if pairer is not None else StampPairer()
        self._waiting: dict[int, T] = {}
        #: Detections refused for a stamp already paired or already waiting.
        self.duplicates = 0
        #: Detections that came out without their depth frame.
        self.without_depth = 0

    @property
    def waiting(self) -> int:
        """Detections messages waiting for their depth frame."""
        return len(self._waiting)

    def push_depth(self, stamp_ns: int, depth: D) -> list[Matched[D, T]]:
        """Add a depth frame; return what is ready, oldest first."""
        return self._push(self.pairer.push_depth, stamp_ns, depth, None)

    def push_detections(self, stamp_ns: int, detections: T) -> list[Matched[D, T]]:
        """Add a detections message; return what is ready, oldest first.

        A stamp already paired or already waiting is refused (counted in ``duplicates``).
        """
        return self._push(self.pairer.push_registered, stamp_ns, detections, detections)

    def flush(self) -> list[Matched[D, T]]:
        """Give up on every missing depth frame: return all waiting detections without depth."""
        out = self._without_depth(sorted(self._waiting))
        self.pairer.reset()
        return out

    def reset(self) -> None:
        """Forget every buffered depth frame and waiting detections message."""
        self._waiting.clear()
        self.pairer.reset()

    def _given_up(self) -> tuple[int, int]:
        dropped = self.pairer.stats.registered_dropped
        duplicates = dropped.get("duplicate", 0)
        return sum(dropped.values()) - duplicates, duplicates

    def _without_depth(self, stamps: list[int]) -> list[Matched[D, T]]:
        self.without_depth += len(stamps)
        return [Matched(s, self._waiting.pop(s), None) for s in stamps]

    def _push(
        self, push: Callable[[int, Any], list[StampPair[D, T]]], stamp_ns: int,
        frame: D | T, detections: T | None,
    ) -> list[Matched[D, T]]:
        resets = self.pairer.stats.resets
        given_up, duplicates = self._given_up()
        pairs = push(stamp_ns, frame)
        now_given_up, now_duplicates = self._given_up()
        if now_duplicates != duplicates:
            self.duplicates += 1
            return []
        out: list[Matched[D, T]] = []
        if self.pairer.stats.resets != resets:
            # A stamp jump emptied the pairer before this frame went in.
            out = self._without_depth(sorted(self._waiting))
        paired = {p.stamp_ns for p in pairs}
        if detections is not None and stamp_ns not in paired:
            self._waiting[stamp_ns] = detections
        for stamp in paired:
            self._waiting.pop(stamp, None)
        if self.pairer.stats.resets == resets:
            # The pairer always gives up on its oldest detections first.
            out = self._without_depth(sorted(self._waiting)[: now_given_up - given_up])
        out.extend(Matched(p.stamp_ns, p.registered, p.depth) for p in pairs)
        return out
