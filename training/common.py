"""Shared pieces of the training scripts: YAML configs with overrides, DDP, CSV logs, curves."""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import math
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.distributed as dist
import yaml

from iphd.data.output import writable_folder_problem
from iphd.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss, an unusable resume checkpoint)."""


def load_config(path: Path | None, overrides: Sequence[str] = (),
                base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read a YAML config (or start from ``base``) and apply ``section.key=value`` overrides.

    Values are parsed as YAML, so ``optim.lr=0.01``, ``data.short_sides=[128,256]`` and
    ``model.use_rem=false`` have their natural types.

    Raises:
        ConfigError: unreadable file, a top level that is not a mapping, or a malformed override.
    """
    config: dict[str, Any] = copy.deepcopy(dict(base or {}))
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read training config {path}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"training config {path} must be a YAML mapping of sections")
        config = _merge(config, loaded)
    for item in overrides:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) < 2 or not all(parts):
            raise ConfigError(
                f"override {item!r} is not 'section.key=value' (e.g. optim.lr=0.01)"
            )
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({exc})") from exc
        node = config
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part} is not a section")
            node = child
        node[parts[-1]] = value
    return config


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


#: What to write for a list setting, where "a list of whole numbers" would say too little.
LIST_WANTS = {
    "optim.milestones": "a list of epoch numbers",
    "data.short_sides": "a list of short sides in pixels",
    "data.train_splits": "a list of split names, e.g. [train, valid]",
    "model.input_size": "[height, width]",
}


def _scalar_check(default: Any, value: Any) -> tuple[Any, bool, str] | None:
    """(value, whether it has the default's type, what to write); None: a type not checked.

    A number YAML reads as text (``1e-3``) is read as the number where one is expected.
    """
    if isinstance(default, float) and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(default, bool):
        return value, isinstance(value, bool), "true or false"
    if isinstance(default, int):
        return value, isinstance(value, int) and not isinstance(value, bool), "a whole number"
    if isinstance(default, float):
        return (value, isinstance(value, (int, float)) and not isinstance(value, bool),
                "a number")
    if isinstance(default, str):
        return value, isinstance(value, str), "text"
    return None


def _list_check(default: list[Any] | tuple[Any, ...], value: Any) -> tuple[Any, bool, str]:
    """``_scalar_check`` for a list setting: items typed as the default's.

    A tuple default (a config dataclass's) has a fixed length; a list default does not.
    """
    kinds = {type(item) for item in default}
    item_default = default[0] if len(kinds) == 1 else None
    fixed = isinstance(default, tuple)
    plural = {"a whole number": "whole numbers", "a number": "numbers", "text": "text values",
              "true or false": "true or false values"}
    want = "a list"
    if fixed:
        want = f"a list of {len(default)}"
    if item_default is not None:
        item_want = _scalar_check(item_default, item_default)
        if item_want is not None:
            want += f" {plural[item_want[2]]}" if fixed else f" of {plural[item_want[2]]}"
    if not isinstance(value, (list, tuple)) or (fixed and len(value) != len(default)):
        return value, False, want
    items = list(value)
    if item_default is not None:
        for i, item in enumerate(items):
            checked = _scalar_check(item_default, item)
            if checked is None:
                break
            items[i], ok, _ = checked
            if not ok:
                return value, False, want
    return items, True, want


def typed_values(values: Mapping[str, Any], defaults: Mapping[str, Any],
                 section: str) -> dict[str, Any]:
    """``values``, each checked against its default's type.

    The types: true/false, whole number, number, text, and lists of them (a tuple default has
    a fixed length: ``input_size`` is two numbers). A number YAML reads as text (``1e-3``,
    which YAML 1.1 takes for a string) is read as the number. YAML reads ``use_rem=flase`` as
    the text "flase", which is truthy: without this check a typo in a switch silently does the
    opposite of what was written; and ``milestones=abc`` would fail deep in training.

    Raises:
        ConfigError: naming the key, the value and what to write.
    """
    out = dict(values)
    for key, value in values.items():
        default = defaults.get(key)
        if default is None or value is None:
            continue
        if isinstance(default, (list, tuple)):
            checked: tuple[Any, bool, str] | None = _list_check(default, value)
            shown = list(default)
        else:
            checked = _scalar_check(default, value)
            shown = default
        if checked is None:
            continue
        out[key], ok, want = checked
        if not ok:
            want = LIST_WANTS.get(f"{section}.{key}", want)
            raise ConfigError(
                f"config section '{section}': {key} must be {want} (default {shown!r}), "
                f"got {value!r}"
            )
    return out


def check_at_least(values: Mapping[str, Any], section: str, minimums: Mapping[str, int],
                   nullable: Sequence[str] = ()) -> None:
    """Refuse a count below its minimum (``runtime.workers=-1``, ``runtime.log_every=0``).

    Keys in ``nullable`` may also be null (``runtime.threads``: torch's default).

    Raises:
        ConfigError: naming the key, its minimum and the value.
    """
    for key, low in minimums.items():
        value = values.get(key)
        if value is None and key in nullable:
            continue
        null = ", or null" if key in nullable else ""
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(
                f"{section}.{key} must be a whole number >= {low}{null}, got {value!r}"
            )
        if value < low:
            raise ConfigError(f"{section}.{key} must be >= {low}{null}, got {value!r}")


def check_counts(optim: Mapping[str, Any], runtime: Mapping[str, Any]) -> None:
    """The counts both trainers' optim and runtime sections share, checked before training.

    Raises:
        ConfigError: e.g. "runtime.workers must be >= 0, got -1".
    """
    check_at_least(optim, "optim", {"warmup_iters": 0, "max_iters": 1}, nullable=("max_iters",))
    check_at_least(runtime, "runtime", {"workers": 0, "threads": 1, "log_every": 1,
                                        "val_every": 1}, nullable=("threads",))


def check_output_file(path: Path, option: str, example: str = "") -> None:
    """Refuse, before any work, an output file that could not be written at the end.

    ``example`` is a file name to suggest when ``path`` is a folder.

    Raises:
        ConfigError: ``path`` is a folder, or its folder is a file or cannot be made or written.
    """
    path = Path(path)
    if path.is_dir():
        inside = f", e.g. {path / example}" if example else " inside it"
        raise ConfigError(f"{option} {path} is a folder: give the file to write{inside}")
    _check_writable_folder(path.parent, f"{option} {path}")


def repo_file(value: str) -> Path:
    """A file named in a config: as given, or the repository's own file of that path.

    A relative path not found from the working folder is looked up in the repository (the
    shipped models the fine-tuning configs start from, ``src/iphd/models/...``), so the configs
    work from any folder.
    """
    path = Path(value)
    if path.is_absolute() or path.exists() or not (REPO_ROOT / path).is_file():
        return path
    return REPO_ROOT / path


def check_output_dir(path: Path, option: str) -> None:
    """Refuse, before any work, an output folder that could not be made or written.

    Raises:
        ConfigError: ``path`` is a file, or it (or a folder above it) cannot be made or written.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(
            f"{option} {path} is a file, not a folder: give a folder (it is made if missing)"
        )
    _check_writable_folder(path, f"{option} {path}")


#: What the trainers write into their output folder.
RUN_FILES = ("last.pt", "best.pt", "model.pt", "model_depth.pt", "model_rgb.pt", "pair.json",
             "log.csv", "summary.json", "curve.png", "config.yaml")


def claim_output_dir(path: Path, overwrite: bool) -> None:
    """Refuse a new run an output folder that holds an earlier run's files, or delete them.

    Left there, the earlier run's ``best.pt`` became the new run's ``model.pt`` when the new
    one did not validate, and its ``log.csv`` was continued.

    Raises:
        ConfigError: ``path`` holds files of an earlier run and ``overwrite`` is false.
    """
    found = [name for name in RUN_FILES if (Path(path) / name).exists()]
    if not found:
        return
    if overwrite:
        for name in found:
            (Path(path) / name).unlink()
        return
    resume = (f"continue it with --resume {Path(path) / 'last.pt'}, "
              if "last.pt" in found else "")
    raise ConfigError(
        f"--out (runtime.out) {path} holds an earlier run ({', '.join(found)}), whose best.pt "
        f"would be taken for this run's model: {resume}give another --out, or pass "
        "--overwrite to delete those files and start afresh"
    )


def _check_writable_folder(folder: Path, what: str) -> None:
    """Refuse ``folder`` when files cannot be written into it (``writable_folder_problem``)."""
    problem = writable_folder_problem(folder)
    if problem:
        raise ConfigError(f"{what}: {problem}; give another path")


def section_values(config: Mapping[str, Any], name: str,
                   defaults: Mapping[str, Any], untyped: Sequence[str] = ()) -> dict[str, Any]:
    """A plain config section: its defaults, updated with the given values.

    Keys in ``untyped`` take more than their default's type (the caller checks them).

    Raises:
        ConfigError: an unknown key (the message lists the valid ones) or a value of the wrong
            type (``typed_values``).
    """
    values = dict(config.get(name) or {})
    unknown = sorted(set(values) - set(defaults))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {unknown} in config section '{name}'; valid keys: {sorted(defaults)}"
        )
    typed = {key: value for key, value in defaults.items() if key not in untyped}
    return {**defaults, **typed_values(values, typed, name)}


def build_dataclass(cls: Any, values: Mapping[str, Any] | None, section: str) -> Any:
    """Instantiate a frozen config dataclass from a config section, lists turned into tuples.

    Raises:
        ConfigError: an unknown key (the message lists the valid ones) or an invalid value.
    """
    values = dict(values or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {unknown} in config section '{section}'; valid keys: {sorted(names)}"
        )
    values = typed_values(values, {f.name: f.default for f in dataclasses.fields(cls)}, section)
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config section '{section}': {exc}") from exc


def check_sections(config: Mapping[str, Any], allowed: Sequence[str]) -> None:
    """Reject unknown top-level sections (typos would otherwise be silently ignored)."""
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown config section(s) {unknown}; valid: {sorted(allowed)}")


def git_commit() -> str:
    """Commit hash of the code (with ``+dirty`` when modified), or ``unknown`` outside git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
            text=True, check=True, timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def trainer_args_parser(description: str, config_dir: str, example: str) -> Any:
    """The command line shared by the trainers: config, overrides, shortcuts, resume, quiet.

    Args:
        description: the parser's description.
        config_dir: where the configs live (for the help text).
        example: an example override (for the help text).
    """
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", type=Path, help=f"YAML config ({config_dir})")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help=f"override a config value, e.g. --set {example} (repeatable)",
    )
    parser.add_argument("--data", type=Path, help="shortcut for --set data.root=PATH")
    parser.add_argument("--out", type=Path, help="shortcut for --set runtime.out=PATH")
    parser.add_argument("--device", help="shortcut for --set runtime.device=auto|cpu|cuda")
    parser.add_argument(
        "--resume", type=Path,
        help="continue from a last.pt (its stored config is used; --set still applies)",
    )
    parser.add_argument(
        "--overwrite", action="store_true",
        help="start afresh in an output folder that holds an earlier run, deleting its files",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def bag_dataset_parser(
    description: str, dataset: str, splits: Sequence[str]
) -> argparse.ArgumentParser:
    """The ``--bag``, ``--out`` and ``--split`` of the scripts that turn bags into datasets."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--bag", nargs="+", action="extend", required=True, type=Path,
                        help="bags with ground_truth/people (iphd-eval import-mot, iphd-sim bag); "
                        "several after one --bag, or --bag repeated")
    parser.add_argument("--out", type=Path, required=True, help=f"{dataset} dataset root")
    parser.add_argument("--split", choices=list(splits), required=True)
    return parser


def overrides_from_args(args: Any) -> list[str]:
    """``--set`` values plus the ``--data``/``--out``/``--device`` shortcuts, in that order."""
    overrides = list(args.overrides)
    for flag, key in ((args.data, "data.root"), (args.out, "runtime.out"),
                      (args.device, "runtime.device")):
        if flag is not None:
            overrides.append(f"{key}={flag}")
    return overrides


def run_trainer(
    args: Any,
    script: str,
    config_dir: str,
    load_resume: Callable[[Path], dict[str, Any]],
    build_run_config: Callable[[dict[str, Any], str], Any],
    train: Callable[[Any, DistInfo, dict[str, Any] | None, bool], Any],
) -> int:
    """What both trainers' ``main`` does after parsing: config or resume, DDP, train, errors.

    The run's config is the YAML (``--config``) or the one stored in ``--resume``'s checkpoint,
    with ``--set`` and the shortcuts applied; its name (the default output folder) is the config
    file's stem; a resumed run writes to its ``last.pt``'s folder unless ``--out`` says
    otherwise. The output folder is checked before any work; a new run refuses one that holds
    an earlier run (``claim_output_dir``). Known errors print
    ``<script>: error: ...`` and return 2.
    """
    from iphd.errors import CheckpointError, DatasetError, FrameError

    overrides = overrides_from_args(args)
    if args.resume is not None and not any(o.startswith("runtime.out=") for o in overrides):
        # A resumed run goes on in the folder of its last.pt (moved, or copied back from
        # another machine), not in the folder it was first written to or one under the
        # working folder.
        overrides.append(f"runtime.out={args.resume.parent}")
    try:
        resume = None
        if args.resume is not None:
            resume = load_resume(args.resume)
            raw = load_config(args.config, overrides, base=resume["extra"]["training_config"])
            name = args.resume.parent.name
        else:
            if args.config is None:
                raise ConfigError(f"give --config (see {config_dir}) or --resume")
            raw = load_config(args.config, overrides)
            name = args.config.stem
        run = build_run_config(raw, name)
        if int(os.environ.get("RANK", "0")) == 0:
            # One process probes (makes and removes) the folder: two would race each other.
            check_output_dir(Path(run.runtime["out"]), "--out (runtime.out)")
            if resume is None:
                claim_output_dir(Path(run.runtime["out"]), bool(args.overwrite))
        info = setup_distributed(run.runtime["device"])
        train(run, info, resume, args.quiet)
    except (ConfigError, DatasetError, CheckpointError, FrameError, TrainingError) as exc:
        print(f"{script}: error: {error_text(exc)}", file=sys.stderr)
        return 2
    finally:
        cleanup_distributed()
    return 0


def error_text(exc: BaseException) -> str:
    """An error's message, without the worker's traceback that a DataLoader worker adds.

    An error raised in a ``DataLoader`` worker (a malformed label line, an unreadable image,
    found mid-epoch) comes back as the same type whose message is "Caught ... in DataLoader
    worker process N. Original Traceback ..." ending with the original message.
    """
    text = str(exc)
    if not (text.startswith("Caught ") and "Original Traceback" in text):
        return text
    last = text.rstrip().splitlines()[-1]
    for prefix in (f"{type(exc).__module__}.{type(exc).__qualname__}: ",
                   f"{type(exc).__qualname__}: "):
        if last.startswith(prefix):
            return last[len(prefix):]
    return last


def checkpoint_extra(raw: Mapping[str, Any], **values: Any) -> dict[str, Any]:
    """The ``extra`` of a training checkpoint: the config that ran, the commit, the time."""
    return {
        "training_config": dict(raw),
        "commit": git_commit(),
        "saved": datetime.now(UTC).isoformat(timespec="seconds"),
        **values,
    }


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a (possibly single-process) run."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """True on the process that logs, evaluates and writes files."""
        return self.rank == 0


def setup_distributed(device: str = "auto") -> DistInfo:
    """Join the ``torchrun`` process group when launched by it; one process otherwise.

    NCCL on CUDA, gloo on CPU (so multi-process training can be tested without a GPU).

    Raises:
        ConfigError: ``device`` is ``cuda`` but CUDA is unavailable, or an unknown device.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device must be auto, cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but no CUDA device is available")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world_size > 1:
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    return DistInfo(rank, world_size, local_rank, dev)


def cleanup_distributed() -> None:
    """Leave the process group if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait for every process (no-op when alone)."""
    if info.world_size > 1:
        dist.barrier()


class CsvLog:
    """Append-only CSV log with a fixed header; rows may leave columns empty."""

    def __init__(self, path: Path, columns: Sequence[str]) -> None:
        self.path = Path(path)
        self.columns = list(columns)
        if not self.path.is_file():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("w", newline="", encoding="utf-8") as f:
                csv.writer(f).writerow(self.columns)

    def write(self, row: Mapping[str, Any]) -> None:
        """Append one row; unknown keys are an error (they would be lost)."""
        extra = set(row) - set(self.columns)
        if extra:
            raise ValueError(f"columns {sorted(extra)} are not in the log header")
        with self.path.open("a", newline="", encoding="utf-8") as f:
            csv.writer(f).writerow([_cell(row.get(c)) for c in self.columns])

    def read(self) -> list[dict[str, str]]:
        """All rows as dicts of strings."""
        with self.path.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


_COLOURS_BGR = ((180, 90, 30), (40, 40, 220), (40, 160, 40), (160, 60, 160), (0, 140, 230))


def plot_curves(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: Path,
    title: str,
    xlabel: str,
    size: tuple[int, int] = (800, 480),
) -> Path:
    """Write a PNG line plot, one line per named (x, y) series, each scaled to its own range.

    Each series is normalised to its own min..max (the legend gives the range), so a loss and an
    AP share one plot without one flattening the other.
    """
    width, height = size
    margin_l, margin_r, margin_t, margin_b = 60, 20, 40, 40 + 18 * len(series)
    image = np.full((height, width, 3), 255, dtype=np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    x_all = [float(x) for xs, _ in series.values() for x in xs]
    x_lo, x_hi = (min(x_all), max(x_all)) if x_all else (0.0, 1.0)
    if x_hi <= x_lo:
        x_hi = x_lo + 1.0
    plot_w = width - margin_l - margin_r
    plot_h = height - margin_t - margin_b
    cv2.rectangle(image, (margin_l, margin_t), (margin_l + plot_w, margin_t + plot_h), (0, 0, 0))
    cv2.putText(image, title, (margin_l, 25), font, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(image, f"{xlabel}: {x_lo:g} .. {x_hi:g}", (margin_l, margin_t + plot_h + 18),
                font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    for i, (name, (xs, ys)) in enumerate(series.items()):
        colour = _COLOURS_BGR[i % len(_COLOURS_BGR)]
        x = np.asarray(xs, dtype=np.float64)
        y = np.asarray(ys, dtype=np.float64)
        ok = np.isfinite(x) & np.isfinite(y)
        x, y = x[ok], y[ok]
        legend_y = margin_t + plot_h + 36 + 18 * i
        if y.size:
            y_lo, y_hi = float(y.min()), float(y.max())
            span = y_hi - y_lo if y_hi > y_lo else 1.0
            px = margin_l + (x - x_lo) / (x_hi - x_lo) * plot_w
            py = margin_t + plot_h - (y - y_lo) / span * plot_h
            pts = np.round(np.column_stack((px, py))).astype(np.int32).reshape(-1, 1, 2)
            if len(pts) > 1:
                cv2.polylines(image, [pts], False, colour, 2, cv2.LINE_AA)
            else:
                cv2.circle(image, tuple(int(v) for v in pts[0, 0]), 3, colour, -1)
            label = f"{name}: {y_lo:.4g} .. {y_hi:.4g} (last {y[-1]:.4g})"
        else:
            label = f"{name}: no data"
        cv2.line(image, (margin_l, legend_y - 4), (margin_l + 20, legend_y - 4), colour, 2)
        cv2.putText(image, label, (margin_l + 28, legend_y), font, 0.45, (0, 0, 0), 1,
                    cv2.LINE_AA)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"OpenCV could not write {path}")
    return path


def step_lr(base_lr: float, iteration: int, iters_per_epoch: int, warmup_iters: int,
            milestones: Sequence[int], gamma: float) -> float:
    """Learning rate at ``iteration``: linear warm-up from base/10, then ×gamma at each milestone.

    Milestones are epochs (paper A: 7 and 9 of 12), so the schedule is the same whatever the
    dataset size or number of processes.
    """
    epoch = iteration / max(iters_per_epoch, 1)
    lr = base_lr * gamma ** sum(1 for m in milestones if epoch >= m)
    if warmup_iters > 0 and iteration < warmup_iters:
        lr *= 0.1 + 0.9 * iteration / warmup_iters
    return lr


def is_finite(value: torch.Tensor) -> bool:
    """True when a scalar tensor is neither NaN nor infinite."""
    return math.isfinite(float(value.detach()))
