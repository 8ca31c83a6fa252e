"""ONNX export of a re-ID embedder and ``OnnxEmbedding``, which runs it on onnxruntime.

The .onnx file holds the inference path (``crops`` (B, 3, H, W) normalised crops →
``embedding`` (B, D), L2-normalised, batch dynamic) and, as metadata, the ``EmbedderConfig``.
Crop normalisation stays in numpy (``iphd.reid.extractor.normalize_crop``), so the torch and
onnxruntime back ends of ``FeatureExtractor`` see the same input.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

import iphd
from iphd.errors import CheckpointError, ConfigError
from iphd.onnxrt import cached_export, on_cuda, open_session, trace_export
from iphd.reid.model import Embedder, EmbedderConfig

ONNX_FORMAT = "iphd-reid-embedder-onnx"
ONNX_FORMAT_VERSION = 1
DEFAULT_OPSET = 17
INPUT_NAME = "crops"
OUTPUT_NAME = "embedding"


class _UnitEmbedding(nn.Module):
    """The embedder's inference feature, L2-normalised: what ``FeatureExtractor`` returns."""

    def __init__(self, model: Embedder) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.model(x).feature, dim=1)


def export_embedder_onnx(model: Embedder, path: Path | str, opset: int = DEFAULT_OPSET) -> Path:
    """Write ``model``'s inference path to ``path`` as ONNX, with its config as metadata.

    The model is exported in eval mode and left in the mode it came in.

    Raises:
        ConfigError: the zero-padding baseline, whose input mixes modalities per crop.
    """
    config = model.config
    if config.in_channels != 3:
        raise ConfigError(
            f"the {config.modality!r} embedder is a training baseline; only depth and RGB "
            "embedders are exported to ONNX"
        )
    path = Path(path)
    h, w = config.input_size
    dummy = torch.zeros(1, config.in_channels, h, w, device=next(model.parameters()).device)
    was_training = model.training
    model.eval()
    try:
        trace_export(_UnitEmbedding(model), dummy, path, INPUT_NAME, [OUTPUT_NAME], opset)
        proto = onnx.load(path)
        onnx.helper.set_model_props(proto, {
            "iphd_format": ONNX_FORMAT,
            "iphd_format_version": str(ONNX_FORMAT_VERSION),
            "iphd_version": iphd.__version__,
            "embedder_config": json.dumps(dataclasses.asdict(config)),
        })
        proto.doc_string = f"iphd {config.modality} re-ID embedder, input {h}x{w}"
        onnx.checker.check_model(proto)
        onnx.save(proto, path)
    finally:
        model.train(was_training)
    return path


def cached_embedder_onnx(checkpoint: Path | str, folder: Path | None = None) -> Path:
    """The ONNX export of an embedder checkpoint, made on first use and kept in the cache.

    Raises:
        CheckpointError: the checkpoint is missing or not an embedder checkpoint.
        ConfigError: a zero-padding baseline (not exportable).
    """
    from iphd.reid.extractor import load_embedder

    checkpoint = Path(checkpoint)

    def export(path: Path) -> None:
        model, _, _ = load_embedder(checkpoint)
        export_embedder_onnx(model, path)

    return cached_export(checkpoint, "re-ID embedder", export, folder)


class OnnxEmbedding:
    """Runs an exported embedder: (B, 3, H, W) normalised crops → (B, D) unit embeddings.

    Args:
        path: a .onnx file written by :func:`export_embedder_onnx`.
        device: ``auto`` (CUDA when this onnxruntime has it), ``cpu`` or ``cuda``.
        intra_op_threads: onnxruntime's threads within an operator; 0 = its default.

    Attributes:
        config: the ``EmbedderConfig`` stored in the file.
        device: where it runs (a torch device, as ``FeatureExtractor.device``).

    Raises:
        CheckpointError: the file is missing, not loadable, not an iphd embedder export or of
            another format version.
        ConfigError: an unknown device, or CUDA asked for and not available.
    """

    def __init__(self, path: Path | str, device: str = "auto", intra_op_threads: int = 0) -> None:
        path = Path(path)
        hint = "export it again from its checkpoint (delete it from the cache folder)"
        self.session = open_session(path, device, intra_op_threads, hint)
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get("iphd_format") != ONNX_FORMAT:
            raise CheckpointError(f"{path} is not an iphd re-ID embedder export; {hint}")
        if meta.get("iphd_format_version") != str(ONNX_FORMAT_VERSION):
            raise CheckpointError(
                f"{path} has re-ID ONNX format version {meta.get('iphd_format_version')}; this "
                f"code reads version {ONNX_FORMAT_VERSION}: {hint}"
            )
        try:
            values = json.loads(meta["embedder_config"])
            values["input_size"] = tuple(values["input_size"])
            self.config = EmbedderConfig(**values)
        except (KeyError, TypeError, ValueError, ConfigError) as exc:
            raise CheckpointError(f"{path}: its stored configuration is invalid ({exc})") from exc
        self.device = torch.device("cuda" if on_cuda(self.session) else "cpu")

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        """Embed a (B, 3, H, W) float32 batch of normalised crops."""
        (out,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(crops)})
        return np.asarray(out, dtype=np.float32)
