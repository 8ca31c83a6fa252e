"""What the detector's and the re-ID embedder's onnxruntime back ends share.

``trace_export`` writes a network with a dynamic batch axis, ``providers`` maps iphd's
``auto | cpu | cuda`` device names to execution providers, ``open_session`` opens a model with
the thread settings a robot computer needs, and ``cached_export`` keeps one export per
checkpoint content in the cache folder.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import onnxruntime as ort

from iphd.cache import cache_dir
from iphd.errors import CheckpointError, ConfigError


def trace_export(
    module: Any, dummy: Any, path: Path, input_name: str, output_names: Sequence[str], opset: int
) -> None:
    """Trace ``module`` (a torch module in eval mode) on ``dummy`` into the ONNX file ``path``.

    Every input and output gets a dynamic batch axis 0; H and W stay those of ``dummy``.
    """
    import torch

    # The TorchScript exporter (dynamo=False), not the torch.export one: iphd's networks have
    # no data-dependent control flow, so tracing captures them exactly, in ~1 s for the tiny
    # test models where dynamo=True took ~18 s and needs onnxscript and onnx-ir besides.
    # torch 2.13 deprecates it (hence the filter) but ships it; dynamo=True with a dynamic
    # batch Dim also exports these models correctly, the way out when tracing is removed.
    # The tracer warns about forward()'s input-shape checks, which are static by design.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            module,
            (dummy,),
            path,
            dynamo=False,
            opset_version=opset,
            input_names=[input_name],
            output_names=list(output_names),
            dynamic_axes={name: {0: "batch"} for name in (input_name, *output_names)},
            do_constant_folding=True,
        )


def providers(device: str) -> list[str]:
    """Onnxruntime execution providers for ``device`` (``auto``, ``cpu`` or ``cuda``).

    Raises:
        ConfigError: an unknown device, or ``cuda`` without onnxruntime's CUDA provider.
    """
    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device not in ("auto", "cuda"):
        raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        raise ConfigError(
            "device 'cuda' was asked for but this onnxruntime has no CUDAExecutionProvider "
            f"(it has {', '.join(available)}); use device 'cpu' or install onnxruntime-gpu"
        )
    return ["CPUExecutionProvider"]


def open_session(
    path: Path, device: str, intra_op_threads: int, export_hint: str
) -> ort.InferenceSession:
    """Open the ONNX model at ``path``.

    Args:
        path: the .onnx file.
        device: ``auto``, ``cpu`` or ``cuda`` (see :func:`providers`).
        intra_op_threads: threads within an operator; 0 = onnxruntime's default (one per
            physical core).
        export_hint: how to write the file again, for the error message.

    Raises:
        CheckpointError: the file is missing or not a model this onnxruntime loads.
        ConfigError: see :func:`providers`.
    """
    chosen = providers(device)
    if not path.is_file():
        raise CheckpointError(f"ONNX model {path} does not exist")
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    # Idle worker threads sleep instead of spinning: on a robot computer the other nodes
    # need those cores between frames.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), options, providers=chosen)
    except Exception as exc:  # onnxruntime raises a pybind type per failure
        raise CheckpointError(
            f"{path} is not a loadable ONNX model ({type(exc).__name__}: {exc}); the file "
            f"is corrupt, truncated or newer than this onnxruntime reads: {export_hint}"
        ) from exc


def on_cuda(session: ort.InferenceSession) -> bool:
    """Whether ``session`` runs on onnxruntime's CUDA provider."""
    return "CUDAExecutionProvider" in session.get_providers()


def cached_export(
    checkpoint: Path, kind: str, export: Callable[[Path], object], folder: Path | None = None,
    variant: str = "", key: str = "",
) -> Path:
    """The ONNX export of ``checkpoint``, made by ``export(path)`` on first use and kept.

    The file is named after the checkpoint and the SHA-256 of its bytes, ``key`` and ``kind``, so
    a retrained checkpoint (or other export settings) gets a new export and an unchanged one is
    exported once. Several processes may ask at once: each writes its own temporary file and
    renames it into place.

    Args:
        checkpoint: the checkpoint (.pt) the export is made from.
        kind: what the checkpoint is, for the error message (``detector``, ``re-ID embedder``).
        export: writes the export to the path it is given.
        folder: where exports are kept; default ``iphd.cache.cache_dir() / "onnx"``.
        variant: added to the file name (``int8``), so variants of one checkpoint are told
            apart at a glance.
        key: everything besides the checkpoint that the export depends on (settings, versions,
            the digest of other inputs), hashed with the checkpoint's bytes.

    Raises:
        CheckpointError: the checkpoint cannot be read (and whatever ``export`` raises).
    """
    try:
        # The kind is hashed too: one file given once as a re-ID embedder and once as a
        # detector (both trainers write model.pt) gets two exports, and the detector's export
        # then says what the file is instead of finding the embedder's export.
        digest = hashlib.sha256(
            checkpoint.read_bytes() + key.encode() + kind.encode()
        ).hexdigest()[:16]
    except OSError as exc:
        raise CheckpointError(f"{kind} checkpoint {checkpoint} cannot be read ({exc})") from exc
    stem = f"{checkpoint.stem}-{variant}" if variant else checkpoint.stem
    out = (folder or cache_dir() / "onnx") / f"{stem}-{digest}.onnx"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.onnx")
    try:
        export(tmp)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
