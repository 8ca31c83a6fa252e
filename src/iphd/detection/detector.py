"""Checkpoints and the ``Detector`` wrapper: depth_mm + registered thermal_ck in, boxes out.

A checkpoint is a plain dict saved with ``torch.save`` and loaded with ``weights_only=True``:
the model's ``DetectorConfig``, the ``NormalizeConfig`` its inputs were made with and the state
dict, so inference rebuilds the model from the file alone (STYLE: every checkpoint stores its
config, model args and preprocessing constants).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iphd.checkpoints import (
    build_config,
    load_weights,
    model_payload,
    read_payload,
    write_payload,
)
from iphd.detection.model import FUSION_MODES, DetectorConfig, FusionDetector
from iphd.errors import CheckpointError, ConfigError
from iphd.noise import fix_zero_patches
from iphd.normalize import NormalizeConfig, normalize_depth, normalize_thermal

CHECKPOINT_FORMAT = "iphd-detector"
CHECKPOINT_VERSION = 1
#: The detector shipped with the package (trained by training/configs/detector/cpu_sim.yaml).
SHIPPED_CHECKPOINT = Path(__file__).resolve().parent.parent / "models" / "detector.pt"


def shipped_checkpoint() -> Path:
    """Path of the shipped detector checkpoint.

    Raises:
        CheckpointError: the file is missing from this install.
    """
    if not SHIPPED_CHECKPOINT.is_file():
        raise CheckpointError(
            f"the shipped detector {SHIPPED_CHECKPOINT} is missing from this install; "
            "reinstall the package, or train one with training/train_detector.py and pass its "
            "path as the checkpoint"
        )
    return SHIPPED_CHECKPOINT


def fusion_input(
    depth_mm: np.ndarray, thermal_ck: np.ndarray, fusion: str, config: NormalizeConfig
) -> np.ndarray:
    """(3, H, W) float32 network input for a fusion mode.

    ``early`` is paper A's (T, T, D); ``depth`` is (D, D, D) and ``thermal`` (T, T, T), the
    single-modality baselines of its ablations. ``intermediate`` and ``late`` also take
    (T, T, D): the model splits it into its thermal and depth streams itself. With
    ``config.fill_zero_patches`` the thermal image's zero patches are filled first (a thermal
    image without zeros is unchanged).

    Raises:
        ConfigError: if ``fusion`` is not one of ``FUSION_MODES``.
    """
    if fusion not in FUSION_MODES:
        raise ConfigError(
            f"fusion {fusion!r} is not supported; use one of {', '.join(FUSION_MODES)}"
        )
    out_w, out_h = config.out_size
    out = np.empty((3, out_h, out_w), dtype=np.float32)
    if fusion == "depth":
        normalize_depth(depth_mm, config, out=out[0])
        out[1] = out[0]
        out[2] = out[0]
        return out
    if config.fill_zero_patches:
        thermal_ck = fix_zero_patches(thermal_ck)
    normalize_thermal(thermal_ck, config, out=out[0])
    out[1] = out[0]
    if fusion == "thermal":
        out[2] = out[0]
    else:
        normalize_depth(depth_mm, config, out=out[2])
    return out


def save_checkpoint(
    path: Path | str, model: FusionDetector, normalize: NormalizeConfig,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` with everything needed to rebuild it; ``extra`` holds training state."""
    configs = {"detector_config": model.config, "normalize_config": normalize}
    return write_payload(
        path, model_payload(CHECKPOINT_FORMAT, CHECKPOINT_VERSION, configs, model, extra)
    )


def load_checkpoint(
    path: Path | str, map_location: str | torch.device = "cpu"
) -> tuple[FusionDetector, NormalizeConfig, dict[str, Any]]:
    """Rebuild a model from a checkpoint file.

    Returns:
        (model in eval mode, the normalisation its inputs need, the ``extra`` dict).

    Raises:
        CheckpointError: the file is missing, not a torch file, not an iphd detector checkpoint,
            from another format version, or its weights do not fit its own config.
    """
    payload = read_payload(
        path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, "detector",
        "train one with training/train_detector.py or pass the shipped model", map_location,
    )
    config = build_config(DetectorConfig, payload, "detector_config", path)
    normalize = build_config(NormalizeConfig, payload, "normalize_config", path)
    model = FusionDetector(config)
    load_weights(model, payload, path)
    model.eval()
    return model, normalize, dict(payload.get("extra") or {})


@dataclass(frozen=True)
class Detections:
    """People found in one depth frame.

    Attributes:
        boxes_xyxy: (N, 4) float32 boxes in depth-image pixels, highest score first.
        scores: (N,) float32 person probabilities.
    """

    boxes_xyxy: np.ndarray
    scores: np.ndarray


class Detector:
    """Runs a detector on a depth image and its registered thermal image.

    Args:
        model: the network (see ``load_checkpoint``).
        normalize: input normalisation the model was trained with.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        half: run the network in float16 (CUDA autocast) when the device is CUDA; CPU runs
            stay float32 (``self.half`` says what is in effect).
    """

    def __init__(
        self, model: FusionDetector, normalize: NormalizeConfig, device: str = "auto",
        half: bool = False,
    ) -> None:
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device 'cuda' was asked for but no CUDA device is available")
        self.device = torch.device(device)
        self.half = bool(half) and self.device.type == "cuda"
        self.model = model.to(self.device).eval()
        self.normalize = normalize
        net_h, net_w = model.config.input_size
        if (normalize.out_size[0], normalize.out_size[1]) != (net_w, net_h):
            raise ConfigError(
                f"normalisation output {normalize.out_size} (w, h) does not match the model "
                f"input {model.config.input_size} (h, w)"
            )

    @property
    def precision(self) -> str:
        """What the network computes in: ``float16`` or ``float32``."""
        return "float16" if self.half else "float32"

    @classmethod
    def from_checkpoint(
        cls, path: Path | str | None = None, device: str = "auto", half: bool = False
    ) -> Detector:
        """Load a checkpoint (the shipped detector when ``path`` is None) and wrap it."""
        model, normalize, _ = load_checkpoint(shipped_checkpoint() if path is None else path)
        return cls(model, normalize, device, half)

    @torch.inference_mode()
    def __call__(self, depth_mm: np.ndarray, thermal_ck: np.ndarray) -> Detections:
        """Detect people; boxes come back in the pixels of ``depth_mm``.

        Raises:
            FrameError: wrong dtype or dimensionality, or no valid thermal pixel.
        """
        # Autocast keeps the precision-sensitive ops (box decoding, softmax) in float32.
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.half):
            return detect_frame(self.model, self.normalize, depth_mm, thermal_ck, self.device)


@torch.inference_mode()
def detect_frame(
    model: FusionDetector, normalize: NormalizeConfig, depth_mm: np.ndarray,
    thermal_ck: np.ndarray, device: torch.device,
) -> Detections:
    """Normalise one pair, run ``model.detect`` and scale its boxes to depth-image pixels.

    Shared by the torch and onnxruntime wrappers so both see identical pre- and post-processing.

    Raises:
        FrameError: wrong dtype or dimensionality, or no valid thermal pixel.
    """
    x = fusion_input(depth_mm, thermal_ck, model.config.fusion, normalize)
    boxes, scores = model.detect(torch.from_numpy(x)[None].to(device))[0]
    net_h, net_w = model.config.input_size
    scale = torch.tensor(
        [depth_mm.shape[1] / net_w, depth_mm.shape[0] / net_h] * 2, device=boxes.device
    )
    return Detections((boxes * scale).float().cpu().numpy(), scores.float().cpu().numpy())
