"""Re-ID crops → L2-normalised embeddings: crop normalisation, embedder checkpoints, extractor."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from iphd.checkpoints import (
    build_config,
    load_weights,
    model_payload,
    read_payload,
    write_payload,
)
from iphd.data.reid import DEPTH_CROPS, METRIC_WINDOW_M, person_depth_mm
from iphd.errors import CheckpointError, ConfigError, FrameError
from iphd.reid.distill import zero_pad
from iphd.reid.model import Embedder, EmbedderConfig

CHECKPOINT_FORMAT = "iphd-reid-embedder"
CHECKPOINT_VERSION = 1

#: ``FeatureExtractor.backend`` values.
EMBEDDER_BACKENDS = ("torch", "onnxruntime")

#: ``CropNormalizeConfig.depth_reference`` values.
DEPTH_REFERENCES = ("absolute", "person")

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class CropNormalizeConfig:
    """How re-ID crops become network input (stored in every embedder checkpoint).

    Attributes:
        depth_min_m: lower depth clip in metres (maps to 0 before the mean/std step).
        depth_max_m: upper depth clip in metres (maps to 1).
        depth_mean: mean subtracted from the [0, 1] depth; 0.33 is a person 3 m away with the
            default clip, a typical indoor re-ID distance. A run on another dataset should
            measure its own and store it here.
        depth_std: divisor after the mean, so the depth spans about the range of an
            ImageNet-normalised channel and ImageNet weights see familiar magnitudes.
        depth_invalid: normalised value of invalid (0) depth pixels; 0 = the mean, what a
            zero-padded convolution sees at the border, so holes and letterbox bars carry no
            signal.
        rgb_mean: per-channel mean of [0, 1] RGB (ImageNet).
        rgb_std: per-channel std of [0, 1] RGB (ImageNet).
        depth_crop: how depth crops are cut from a frame (``iphd.data.reid.DEPTH_CROPS``):
            ``letterbox`` fits the person's box into the crop; ``metric`` cuts a window of
            ``depth_window_m`` at the person's distance, which keeps body size (needs the depth
            camera's focal lengths). Training data and the tracker must cut crops the same way.
        depth_window_m: (width, height) in metres of a ``metric`` crop.
        depth_reference: ``absolute`` clips the depth to [depth_min_m, depth_max_m];
            ``person`` measures it from the person's own distance (median depth of the crop's
            centre), clipped to +-``depth_range_m`` and mapped to [0, 1] with the person at 0.5,
            so where someone stands does not change their input.
        depth_range_m: half-width of the ``person`` depth range, metres.
    """

    depth_min_m: float = 0.5
    depth_max_m: float = 8.0
    depth_mean: float = 0.33
    depth_std: float = 0.25
    depth_invalid: float = 0.0
    rgb_mean: tuple[float, float, float] = _IMAGENET_MEAN
    rgb_std: tuple[float, float, float] = _IMAGENET_STD
    depth_crop: str = "letterbox"
    depth_window_m: tuple[float, float] = METRIC_WINDOW_M
    depth_reference: str = "absolute"
    depth_range_m: float = 1.0

    def __post_init__(self) -> None:
        """Reject constants that cannot normalise anything; the message names the field."""
        if not 0.0 <= self.depth_min_m < self.depth_max_m <= 65.535:
            raise ConfigError(
                "depth_min_m/depth_max_m must satisfy 0 <= min < max <= 65.535 m, got "
                f"[{self.depth_min_m}, {self.depth_max_m}]"
            )
        if not (np.isfinite(self.depth_mean) and np.isfinite(self.depth_invalid)):
            raise ConfigError(
                f"depth_mean and depth_invalid must be finite, got {self.depth_mean}, "
                f"{self.depth_invalid}"
            )
        if not self.depth_std > 0:
            raise ConfigError(f"depth_std must be > 0, got {self.depth_std}")
        if len(self.rgb_mean) != 3 or len(self.rgb_std) != 3 or min(self.rgb_std) <= 0:
            raise ConfigError(
                f"rgb_mean and rgb_std must be 3 values (std > 0), got {self.rgb_mean} and "
                f"{self.rgb_std}"
            )
        if self.depth_crop not in DEPTH_CROPS:
            raise ConfigError(
                f"depth_crop must be one of {', '.join(DEPTH_CROPS)}, got {self.depth_crop!r}"
            )
        window = tuple(self.depth_window_m)
        if len(window) != 2 or not all(np.isfinite(v) and v > 0 for v in window):
            raise ConfigError(f"depth_window_m must be (width, height) > 0 m, got {window}")
        if self.depth_reference not in DEPTH_REFERENCES:
            raise ConfigError(
                f"depth_reference must be one of {', '.join(DEPTH_REFERENCES)}, got "
                f"{self.depth_reference!r}"
            )
        if not (np.isfinite(self.depth_range_m) and self.depth_range_m > 0):
            raise ConfigError(f"depth_range_m must be > 0, got {self.depth_range_m}")


def crop_modality(crop: np.ndarray, strict: bool = True) -> str:
    """Return ``"depth"`` for an (H, W) uint16 crop, ``"rgb"`` for an (H, W, 3) uint8 one.

    Args:
        crop: the crop.
        strict: raise for anything else (and for an empty crop); when False, return ``""``.

    Raises:
        FrameError: with ``strict``, neither kind of crop, or an empty one; the message says
            what was expected and what came.
    """
    modality = ""
    if isinstance(crop, np.ndarray):
        if crop.dtype == np.uint16 and crop.ndim == 2:
            modality = "depth"
        elif crop.dtype == np.uint8 and crop.ndim == 3 and crop.shape[2] == 3:
            modality = "rgb"
    if strict:
        if not modality:
            got = _describe(crop) if isinstance(crop, np.ndarray) else type(crop).__name__
            raise FrameError(
                f"expected a depth crop {_EXPECTED['depth']} or an RGB crop {_EXPECTED['rgb']}, "
                f"got {got}"
            )
        if crop.size == 0:
            raise FrameError(f"the {modality} crop is empty (shape {crop.shape})")
    return modality


def _describe(crop: np.ndarray) -> str:
    return f"{tuple(crop.shape)} {crop.dtype}"


def _check_modality(crop: np.ndarray, expected: str) -> None:
    if crop_modality(crop, strict=False) != expected:
        got = _describe(crop) if isinstance(crop, np.ndarray) else type(crop).__name__
        raise FrameError(f"expected a {expected} crop {_EXPECTED[expected]}, got {got}")
    if crop.size == 0:
        raise FrameError(f"the {expected} crop is empty (shape {crop.shape})")


_EXPECTED = {"depth": "(H, W) uint16 in mm", "rgb": "(H, W, 3) uint8"}


def normalize_depth_crop(
    depth_mm: np.ndarray,
    config: CropNormalizeConfig | None = None,
    size_hw: tuple[int, int] | None = None,
) -> np.ndarray:
    """Turn a depth crop into network input: 3 replicated channels of normalised depth.

    The crop is first resized to ``size_hw`` with nearest neighbour (averaging would blend
    invalid zeros into a person's depth); then ``(clip(d, min, max) - min) / (max - min)``,
    minus ``depth_mean``, over ``depth_std``; invalid pixels take ``depth_invalid``. ``min`` and
    ``max`` are ``depth_min_m``/``depth_max_m``, or with ``depth_reference: person`` the
    person's distance -/+ ``depth_range_m``.

    Args:
        depth_mm: (H, W) uint16 depth in millimetres, 0 = invalid.
        config: normalisation constants; default ``CropNormalizeConfig()``.
        size_hw: (H, W) of the output; None keeps the crop's size.

    Returns:
        (3, H, W) float32.

    Raises:
        FrameError: not an (H, W) uint16 crop, an empty crop, or no valid depth in the crop.
    """
    cfg = config if config is not None else CropNormalizeConfig()
    _check_modality(depth_mm, "depth")
    if size_hw is not None and depth_mm.shape != tuple(size_hw):
        depth_mm = cv2.resize(depth_mm, (size_hw[1], size_hw[0]), interpolation=cv2.INTER_NEAREST)
    invalid = depth_mm == 0
    if invalid.all():
        raise FrameError(
            "no valid depth in the crop (every pixel is 0); drop the detection or check the "
            "depth stream"
        )
    if cfg.depth_reference == "person":
        height, width = depth_mm.shape
        # The crop is centred on the person either way: its centre box is the person's.
        ref = person_depth_mm(depth_mm, (0.0, 0.0, float(width), float(height)))
        lo = ref - cfg.depth_range_m * 1000.0
        hi = ref + cfg.depth_range_m * 1000.0
    else:
        lo = cfg.depth_min_m * 1000.0
        hi = cfg.depth_max_m * 1000.0
    scale = 1.0 / ((hi - lo) * cfg.depth_std)
    channel = np.clip(depth_mm, lo, hi).astype(np.float32)
    channel *= np.float32(scale)
    channel += np.float32(-lo * scale - cfg.depth_mean / cfg.depth_std)
    channel[invalid] = np.float32(cfg.depth_invalid)
    return np.repeat(channel[None], 3, axis=0)


def normalize_rgb_crop(
    rgb: np.ndarray,
    config: CropNormalizeConfig | None = None,
    size_hw: tuple[int, int] | None = None,
) -> np.ndarray:
    """Turn an RGB crop into network input: ``(rgb / 255 - mean) / std`` per channel.

    The crop is resized to ``size_hw`` first (area when shrinking, bilinear when enlarging).

    Args:
        rgb: (H, W, 3) uint8 crop in RGB order.
        config: normalisation constants; default ``CropNormalizeConfig()``.
        size_hw: (H, W) of the output; None keeps the crop's size.

    Returns:
        (3, H, W) float32.

    Raises:
        FrameError: not an (H, W, 3) uint8 crop, or an empty crop.
    """
    cfg = config if config is not None else CropNormalizeConfig()
    _check_modality(rgb, "rgb")
    if size_hw is not None and rgb.shape[:2] != tuple(size_hw):
        shrink = size_hw[0] * size_hw[1] < rgb.shape[0] * rgb.shape[1]
        rgb = cv2.resize(
            rgb, (size_hw[1], size_hw[0]),
            interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR,
        )
    mean = np.asarray(cfg.rgb_mean, dtype=np.float32) * np.float32(255.0)
    inv_std = 1.0 / (np.asarray(cfg.rgb_std, dtype=np.float32) * np.float32(255.0))
    return np.ascontiguousarray(((rgb.astype(np.float32) - mean) * inv_std).transpose(2, 0, 1))


def normalize_crop(
    crop: np.ndarray,
    config: CropNormalizeConfig | None = None,
    size_hw: tuple[int, int] | None = None,
) -> tuple[np.ndarray, str]:
    """Normalise a depth or RGB crop, whichever it is; returns ((3, H, W) float32, modality)."""
    modality = crop_modality(crop)
    if modality == "depth":
        return normalize_depth_crop(crop, config, size_hw), modality
    return normalize_rgb_crop(crop, config, size_hw), modality


def save_embedder(
    path: Path | str,
    model: Embedder,
    normalize: CropNormalizeConfig,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` with everything needed to rebuild it; ``extra`` holds training state."""
    configs = {"embedder_config": model.config, "normalize_config": normalize}
    return write_payload(
        path, model_payload(CHECKPOINT_FORMAT, CHECKPOINT_VERSION, configs, model, extra)
    )


def load_embedder(
    path: Path | str, map_location: str | torch.device = "cpu"
) -> tuple[Embedder, CropNormalizeConfig, dict[str, Any]]:
    """Rebuild an embedder from a checkpoint file.

    Returns:
        (model in eval mode, the crop normalisation it was trained with, the ``extra`` dict).

    Raises:
        CheckpointError: the file is missing, not a torch file, not an iphd re-ID embedder
            checkpoint, from another format version, or its weights do not fit its own config.
    """
    payload = read_payload(
        path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, "re-ID embedder",
        "save one with iphd.reid.extractor.save_embedder (training/train_reid.py does)",
        map_location,
    )
    config = build_config(EmbedderConfig, payload, "embedder_config", path)
    normalize = build_config(CropNormalizeConfig, payload, "normalize_config", path)
    model = Embedder(config)
    load_weights(model, payload, path)
    model.to(map_location).eval()
    return model, normalize, dict(payload.get("extra") or {})


class FeatureExtractor:
    """Embeds re-ID crops with a trained embedder: arrays in, (N, D) unit vectors out.

    Args:
        model: an embedder, or the path of a checkpoint written by ``save_embedder``.
        normalize: the crop normalisation the model was trained with; taken from the checkpoint
            when ``model`` is a path (and then must be None), default ``CropNormalizeConfig()``.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        batch_size: crops per forward pass (results do not depend on it: the model is in eval
            mode).
        backend: ``torch``, or ``onnxruntime``: the checkpoint is exported to ONNX once (kept
            in the cache, ``iphd.reid.onnx_export.cached_embedder_onnx``) and run without the
            GIL, about twice as fast on a CPU; needs a checkpoint path and a depth or RGB model.
        intra_op_threads: onnxruntime's threads within an operator; 0 = its default.

    Attributes:
        backend: what runs the network (``torch`` or ``onnxruntime``).
        device: where it runs.

    Raises:
        CheckpointError: see ``load_embedder``.
        ConfigError: a bad device, batch size or backend, ``normalize`` given with a
            checkpoint, or ``onnxruntime`` asked for with a model object or a baseline.
    """

    def __init__(
        self,
        model: Embedder | Path | str,
        normalize: CropNormalizeConfig | None = None,
        device: str = "auto",
        batch_size: int = 32,
        backend: str = "torch",
        intra_op_threads: int = 0,
    ) -> None:
        if backend not in EMBEDDER_BACKENDS:
            raise ConfigError(
                f"backend must be one of {', '.join(EMBEDDER_BACKENDS)}, got {backend!r}"
            )
        onnx_device = device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device not in ("cpu", "cuda"):
            raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
        if device == "cuda" and not torch.cuda.is_available() and backend == "torch":
            raise ConfigError("device 'cuda' was asked for but no CUDA device is available")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        checkpoint = None
        if not isinstance(model, Embedder):
            if normalize is not None:
                raise ConfigError(
                    "normalize comes from the checkpoint; do not pass it with a checkpoint path"
                )
            checkpoint = Path(model)
            model, normalize, _ = load_embedder(checkpoint)
        self.backend = backend
        self._onnx: Any = None
        if backend == "onnxruntime":
            if checkpoint is None:
                raise ConfigError(
                    "the onnxruntime backend runs a checkpoint: pass its path, not a model"
                )
            from iphd.reid.onnx_export import OnnxEmbedding, cached_embedder_onnx

            self._onnx = OnnxEmbedding(
                cached_embedder_onnx(checkpoint), onnx_device, intra_op_threads
            )
            if self._onnx.config != model.config:
                raise CheckpointError(
                    f"the cached ONNX export of {checkpoint} describes {self._onnx.config}, "
                    f"the checkpoint {model.config}; delete the export from the cache folder"
                )
            self.device = self._onnx.device
            # The session holds the weights; the torch model only describes them.
            self.model = model.eval()
        else:
            self.device = torch.device(device)
            self.model = model.to(self.device).eval()
        self.normalize = normalize if normalize is not None else CropNormalizeConfig()
        self.batch_size = batch_size

    @property
    def dim(self) -> int:
        """Size D of the embeddings."""
        return self.model.config.embedding_dim

    @property
    def modality(self) -> str:
        """What the model embeds (``EmbedderConfig.modality``)."""
        return self.model.config.modality

    def _prepare(self, crop: np.ndarray) -> tuple[np.ndarray, str]:
        modality = crop_modality(crop)
        if self.modality in ("depth", "rgb") and modality != self.modality:
            got = "RGB" if modality == "rgb" else "depth"
            raise ConfigError(
                f"this checkpoint embeds {self.modality} crops, got {got} {_describe(crop)}"
            )
        return normalize_crop(crop, self.normalize, self.model.config.input_size)

    def __call__(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Embed crops of the model's modality (either modality for the baselines).

        Args:
            crops: depth crops (H, W) uint16 in mm or RGB crops (H, W, 3) uint8, any size
                (resized to the model's input size).

        Returns:
            (N, D) float32 L2-normalised embeddings; (0, D) for no crops.

        Raises:
            ConfigError: a crop of the other modality than the model's.
            FrameError: a malformed or empty crop, or a depth crop without valid pixels.
        """
        out = np.empty((len(crops), self.dim), dtype=np.float32)
        for start in range(0, len(crops), self.batch_size):
            prepared = [self._prepare(c) for c in crops[start : start + self.batch_size]]
            batch = np.stack([p[0] for p in prepared])
            out[start : start + len(prepared)] = self.embed_batch(batch, [p[1] for p in prepared])
        return out

    def embed_batch(self, batch: np.ndarray, modalities: Sequence[str] = ()) -> np.ndarray:
        """The network alone: (B, 3, H, W) normalised crops → (B, D) unit embeddings.

        ``modalities`` (each crop's, from ``normalize_crop``) is only needed by the
        zero-padding baseline.
        """
        if self._onnx is not None:
            result: np.ndarray = self._onnx(batch)
            return result
        x = torch.from_numpy(batch).to(self.device)
        if self.modality == "zero-padding":
            x = zero_pad(x, list(modalities))
        return F.normalize(self.model.embed(x), dim=1).cpu().numpy()
