"""Checkpoint files shared by every model: atomic writes and checked, weights-only reads."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from iphd.errors import CheckpointError, ConfigError, load_failure


def write_payload(path: Path | str, payload: dict[str, Any]) -> Path:
    """``torch.save`` to a temporary name, then rename: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def model_payload(fmt: str, version: int, configs: dict[str, Any], model: nn.Module,
                  extra: dict[str, Any] | None) -> dict[str, Any]:
    """The dict every checkpoint holds: format, version, configs (as dicts), weights, extra."""
    return {
        "format": fmt,
        "version": version,
        **{name: dataclasses.asdict(value) for name, value in configs.items()},
        "state_dict": model.state_dict(),
        "extra": extra or {},
    }


#: The formats of iphd's checkpoints, and what to do with one given in the wrong place.
KNOWN_FORMATS = {
    "iphd-detector": "a detector checkpoint (pass it as the detector's checkpoint)",
    "iphd-reid-embedder": "a re-ID embedder checkpoint (pass it as reid_checkpoint or "
                          "query_checkpoint)",
}


def missing_checkpoint(what: str, path: Path | str) -> CheckpointError:
    """The error for a checkpoint path that is not a file: a folder names the files in it.

    A training run's folder (``--out``) holds ``model.pt``, ``best.pt``, ``last.pt`` (and
    ``model_depth.pt`` / ``model_rgb.pt`` for a re-ID pair): the tools take one of them.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p.name for p in path.iterdir() if p.suffix in (".pt", ".onnx"))
        inside = (f"pass one of its files: {', '.join(files)}" if files
                  else "it holds no .pt or .onnx file")
        return CheckpointError(
            f"{what} checkpoint {path} is a folder (a training run's?), not a file: {inside}"
        )
    return CheckpointError(f"{what} checkpoint {path} does not exist")


def read_payload(
    path: Path | str, fmt: str, version: int, what: str, hint: str,
    map_location: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` and check its format and version.

    Args:
        path: the file.
        fmt: the ``format`` value it must carry.
        version: the ``version`` it must carry.
        what: a human name for the error messages ("detector", "re-ID embedder").
        hint: what to do when the file is not of this format.
        map_location: where tensors are loaded.

    Raises:
        CheckpointError: missing, unreadable (corrupt, truncated, not torch), another format or
            another version; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise missing_checkpoint(what, path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt file
        raise CheckpointError(
            f"{path} is not a readable torch checkpoint ({load_failure(exc)}); "
            "the file is corrupt or truncated"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        found = payload.get("format") if isinstance(payload, dict) else None
        other = KNOWN_FORMATS.get(found) if isinstance(found, str) else None
        raise CheckpointError(
            f"{path} is not an iphd {what} checkpoint (no format '{fmt}')"
            + (f": it is {other}" if other else "") + f"; {hint}"
        )
    if payload.get("version") != version:
        raise CheckpointError(
            f"{path} has checkpoint version {payload.get('version')}; this code reads "
            f"version {version}"
        )
    return payload


def build_config(cls: Any, payload: dict[str, Any], key: str, path: Path | str) -> Any:
    """Rebuild a frozen config dataclass stored under ``key`` (lists back to tuples).

    Raises:
        CheckpointError: the entry is missing or not a valid config.
    """
    try:
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in payload[key].items()}
        return cls(**values)
    except (KeyError, TypeError, ValueError, AttributeError, ConfigError) as exc:
        raise CheckpointError(f"{path}: its stored configuration is invalid ({exc})") from exc


def load_weights(model: nn.Module, payload: dict[str, Any], path: Path | str) -> None:
    """Load the payload's state dict into ``model``.

    Raises:
        CheckpointError: the weights do not fit the model the stored config describes.
    """
    try:
        model.load_state_dict(payload["state_dict"])
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(
            f"{path}: the weights do not match the model its config describes ({exc})"
        ) from exc


def require_training_state(payload: dict[str, Any], path: Path | str, script: str) -> None:
    """Refuse to resume from a checkpoint without optimizer state and training config.

    Raises:
        CheckpointError: naming the file and what to resume from instead.
    """
    extra = payload.get("extra") or {}
    if "optimizer" not in extra or "training_config" not in extra:
        raise CheckpointError(
            f"{path} holds no training state (optimizer, config); resume from a last.pt "
            f"written by {script}, not from a final model"
        )
