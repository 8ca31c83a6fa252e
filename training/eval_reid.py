"""Score trained re-ID runs as a Markdown table: pairs both ways across modalities, others within.

Paper B's comparison: depth → RGB distillation vs RGB → depth vs the one-stream baseline::

    python training/eval_reid.py --data out/sim/reid --split test \
        --run "depth→RGB distillation=out/train/reid/cpu_sim_distill" \
        --run "RGB→depth distillation=out/train/reid/cpu_sim_distill_rgb" \
        --run "one-stream=out/train/reid/one_stream/model.pt" --out out/reid_table.md

A run is a step-II output folder (its ``pair.json`` names the depth and RGB checkpoints), two
checkpoints ``DEPTH,RGB`` scored as a pair (the shipped pair, or a fine-tuned depth model with
the shipped RGB network), or one checkpoint (or a folder holding ``model.pt``) of a one-stream
or zero-padding model. A single-modality model (step I, the tracker's depth embedder) is
scored within its modality: every crop queries the crops of the other sessions, as step I
validates. That compares a depth
embedder fine-tuned on your people with the shipped one, on people neither was trained on::

    python training/eval_reid.py --data data/my_reid --split test \
        --run "shipped=src/iphd/models/reid_depth.pt" \
        --run "fine-tuned=out/train/reid/my_depth/model.pt"
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from common import DistInfo, check_output_file, setup_distributed
from iphd.errors import CheckpointError, ConfigError, DatasetError, FrameError
from iphd.eval.reid_metrics import ReidEvalResult, markdown_header, markdown_row
from iphd.reid.data import CropSource
from iphd.reid.extractor import CropNormalizeConfig, load_embedder
from iphd.reid.model import Embedder
from train_reid import DATA_DEFAULTS, SOURCES, evaluate_cross, evaluate_single, open_source

ASSIGNMENTS = {"depth->rgb": "depth → RGB", "rgb->depth": "RGB → depth"}
MODALITY_NAMES = {"depth": "depth", "rgb": "RGB"}
#: What ``--split`` must say for a layout without a default split.
SPLIT_CHOICES = {
    "biwi": "Still or Walking (BIWI RGBD-ID's two test sets)",
    "openreid": "a subset of the dataset's splits.json (query, gallery, ...) or all",
}


def split_of(source: str, split: str | None) -> str:
    """The split to score: ``--split``, else the simulator's ``test``.

    Raises:
        ConfigError: no ``--split`` for a layout with no test split of that name.
    """
    if split:
        return split
    if source == "sim":
        return "test"
    raise ConfigError(f"--source {source} needs --split: {SPLIT_CHOICES[source]}")


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line options of the re-ID evaluation."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--run", action="append", default=[], metavar="NAME=PATH", required=True,
                        help="a row name and a step-II folder, DEPTH,RGB checkpoints, a baseline "
                        "checkpoint or a single-modality model (repeatable)")
    parser.add_argument("--data", type=Path, required=True, help="re-ID dataset folder")
    parser.add_argument("--source", default="sim", choices=SOURCES, help="dataset layout")
    parser.add_argument("--split", default=None,
                        help="split to score (sim: default test; biwi: Still or Walking; "
                        "openreid: a splits.json subset, e.g. query or gallery, or 'all')")
    parser.add_argument("--trials", type=int, default=10, help="single-shot gallery draws")
    parser.add_argument("--full-gallery", action="store_true",
                        help="multi-shot: score against the whole gallery instead")
    parser.add_argument("--seed", type=int, default=0, help="seed of the gallery draws")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--out", type=Path, help="Markdown file to write (default: print only)")
    return parser


def load_run(
    path: Path,
) -> tuple[Embedder, Embedder | None, tuple[CropNormalizeConfig, CropNormalizeConfig]]:
    """(depth model, RGB model, their crop normalisations) of a step-II folder or a baseline.

    ``DEPTH,RGB`` names a pair by its two checkpoints. A single-modality model comes back first
    with None for the second.

    Raises:
        CheckpointError: a missing or unreadable checkpoint, or a pair whose checkpoints are not
            a depth and an RGB model.
    """
    if "," in str(path):
        depth_path, rgb_path = str(path).split(",", 1)
        return _load_pair(Path(depth_path), Path(rgb_path), f"{path} (DEPTH,RGB)")
    path = Path(path)
    if (path / "pair.json").is_file():
        where = path / "pair.json"
        try:
            pair = json.loads(where.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{where} is unreadable ({exc})") from exc
        names = [pair.get(key) if isinstance(pair, dict) else None for key in ("depth", "rgb")]
        if not all(isinstance(name, str) and name for name in names):
            raise CheckpointError(
                f"{where} does not name both checkpoints: a step-II folder's pair.json holds "
                '{"depth": FILE, "rgb": FILE}, relative to the folder, as train_reid.py '
                "writes it"
            )
        return _load_pair(path / names[0], path / names[1], str(where))
    if path.is_dir() and not (path / "model.pt").is_file():
        raise CheckpointError(
            f"{path} is a folder with neither pair.json (a step-II run) nor model.pt (a "
            "training run): give the run's folder or a checkpoint file"
        )
    model, normalize, _ = load_embedder(path / "model.pt" if path.is_dir() else path)
    if model.config.modality in ("depth", "rgb"):
        return model, None, (normalize, normalize)
    return model, model, (normalize, normalize)


def _load_pair(
    depth_path: Path, rgb_path: Path, where: str
) -> tuple[Embedder, Embedder, tuple[CropNormalizeConfig, CropNormalizeConfig]]:
    """A depth and an RGB model scored as a pair; ``where`` names them in errors.

    Raises:
        CheckpointError: a missing or unreadable checkpoint, or not a depth and an RGB model.
    """
    depth, d_norm, _ = load_embedder(depth_path)
    rgb, r_norm, _ = load_embedder(rgb_path)
    if (depth.config.modality, rgb.config.modality) != ("depth", "rgb"):
        raise CheckpointError(
            f"{where} does not name a depth and an RGB model: they embed "
            f"{depth.config.modality} and {rgb.config.modality}"
        )
    return depth, rgb, (d_norm, r_norm)


def table_header() -> str:
    """Header of the comparison table: the metrics table with a query → gallery column."""
    top, rule = markdown_header().split("\n")
    return top.replace("| setting |", "| setting | query → gallery |", 1) + "\n" + rule + "---|"


def table_rows(name: str, results: Mapping[str, ReidEvalResult]) -> list[str]:
    """Two rows of a run: depth queries against RGB, then RGB queries against depth."""
    return [markdown_row(f"{name} | {ASSIGNMENTS[key]}", results[key]) for key in ASSIGNMENTS]


def comparison_table(runs: Mapping[str, Path], data: Mapping[str, object], split: str,
                     info: DistInfo, trials: int = 10, seed: int = 0,
                     single_shot: bool = True) -> str:
    """Score every run on one split and return the Markdown table (header and rows).

    A pair or a baseline gives two rows (each modality's queries against the other's
    gallery); a single-modality model one (its modality's queries against the crops of the
    other sessions).

    Raises:
        CheckpointError: see ``load_run``.
        DatasetError: the split cannot be read, has no identity in both modalities (pairs and
            baselines) or none seen in two sessions (single-modality models).
    """
    # By depth crop geometry and window: BIWI cuts its crops as the model was trained on.
    sources: dict[tuple[str, tuple[float, float]], CropSource] = {}
    lines = [table_header()]
    for name, path in runs.items():
        depth, rgb, normalize = load_run(path)
        window = (float(normalize[0].depth_window_m[0]), float(normalize[0].depth_window_m[1]))
        geometry = (normalize[0].depth_crop, window)
        if geometry not in sources:
            sources[geometry] = open_source(dict(data), None if split == "all" else split,
                                            *geometry)
        source = sources[geometry]
        if rgb is None:
            modality = depth.config.modality
            result = evaluate_single(depth, normalize[0], source, source.records, modality,
                                     info.device.type, trials, seed, single_shot)
            lines.append(markdown_row(f"{name} | {MODALITY_NAMES[modality]} → "
                                      f"{MODALITY_NAMES[modality]}, other sessions", result))
            continue
        results = evaluate_cross(depth, rgb, (normalize[0], normalize[1]), source,
                                 source.records, info.device.type, trials, seed, single_shot)
        lines += table_rows(name, results)
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for bad runs or data)."""
    args = get_args_parser().parse_args(argv)
    try:
        runs: dict[str, Path] = {}
        for item in args.run:
            name, sep, path = item.partition("=")
            if not sep or not name or not path:
                raise ConfigError(f"--run {item!r} is not NAME=PATH")
            parts = path.split(",")
            if len(parts) > 2 or not all(parts):
                raise ConfigError(
                    f"--run {item!r}: PATH is one checkpoint or run folder, or two checkpoints "
                    "DEPTH,RGB scored as a pair"
                )
            runs[name] = Path(path)
        if args.trials < 1:
            raise ConfigError(f"--trials must be >= 1 (single-shot gallery draws), got "
                              f"{args.trials}")
        if args.out is not None:
            check_output_file(args.out, "--out", "reid_table.md")
        info = setup_distributed(args.device)
        data = {**DATA_DEFAULTS, "source": args.source, "root": str(args.data)}
        table = comparison_table(runs, data, split_of(args.source, args.split), info,
                                 args.trials, args.seed, not args.full_gallery)
    except (ConfigError, DatasetError, CheckpointError, FrameError) as exc:
        print(f"eval_reid: error: {exc}", file=sys.stderr)
        return 2
    print(table, end="")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table, encoding="utf-8")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
