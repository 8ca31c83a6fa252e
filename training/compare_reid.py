"""Paper B's comparison on a re-ID dataset: distillation in both directions vs the baselines.

Trains, with ``train_reid.py`` (a subprocess each, so runs cannot leak state into one another):

1. step I on depth and step I on RGB (batch-hard triplet);
2. step II depth → RGB (the depth network teaches an RGB copy) and RGB → depth;
3. the one-stream baseline (one network for both modalities) and the zero-padding baseline;

then scores every cross-modal model on a held-out split with both query → gallery assignments
(the table of ``eval_reid.py``) and writes ``comparison.md`` / ``comparison.json``::

    python training/compare_reid.py --data out/sim/reid --out out/train/reid/compare

Paper B's findings, checked and stated under the table: depth → RGB distillation beats RGB →
depth and beats the one-stream baseline, for both query/gallery assignments.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from common import check_output_dir, git_commit, setup_distributed
from eval_reid import ASSIGNMENTS, load_run, table_header, table_rows
from iphd.errors import CheckpointError, ConfigError, DatasetError, FrameError
from train_reid import DATA_DEFAULTS, evaluate_cross, open_source

HERE = Path(__file__).resolve().parent
CONFIGS = HERE / "configs" / "reid"

#: name → (row of the table or None for step I, config, overrides; ``{out}`` = the runner's
#: output folder). Order = training order (step II needs its teacher).
RUNS: dict[str, tuple[str | None, str, list[str]]] = {
    "depth": (None, "cpu_sim_depth.yaml", []),
    "rgb": (None, "cpu_sim_depth.yaml", ["step.modality=rgb"]),
    "depth_to_rgb": ("depth → RGB distillation", "cpu_sim_distill.yaml",
                     ["step.teacher={out}/depth/model.pt", "step.direction=depth->rgb"]),
    "rgb_to_depth": ("RGB → depth distillation", "cpu_sim_distill.yaml",
                     ["step.teacher={out}/rgb/model.pt", "step.direction=rgb->depth"]),
    "one_stream": ("one-stream baseline", "cpu_sim_depth.yaml", ["step.kind=one_stream"]),
    "zero_padding": ("zero-padding baseline", "cpu_sim_depth.yaml",
                     ["step.kind=zero_padding"]),
}


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line options of the comparison runner."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--data", type=Path, required=True, help="re-ID dataset (iphd-sim reid)")
    parser.add_argument("--out", type=Path, default=Path("out/train/reid/compare"))
    parser.add_argument("--split", default="test", help="held-out split to score")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE",
                        help="override for every training run (model.* and normalize.* only "
                        "for step I and the baselines: step II copies its teacher)")
    parser.add_argument("--trials", type=int, default=10, help="single-shot gallery draws")
    parser.add_argument("--skip-trained", action="store_true",
                        help="reuse a run whose summary.json already exists")
    parser.add_argument("--quiet", action="store_true")
    return parser


def train_run(name: str, args: argparse.Namespace) -> float:
    """Train one run (unless reused); returns its minutes.

    Raises:
        ConfigError: the training subprocess failed.
    """
    _, config, overrides = RUNS[name]
    out = args.out / name
    reused = trained_minutes(name, args)
    if reused is not None:
        return reused
    cmd = [sys.executable, str(HERE / "train_reid.py"), "--config", str(CONFIGS / config),
           "--data", str(args.data), "--out", str(out)]
    common = args.overrides
    if config == "cpu_sim_distill.yaml":  # step II copies the teacher's model and normalize
        common = [o for o in common if not o.startswith(("model.", "normalize."))]
    for item in [*common, *(o.format(out=args.out) for o in overrides)]:
        cmd += ["--set", item]
    if args.quiet:
        cmd.append("--quiet")
    print(f"== {name}", flush=True)
    started = time.monotonic()
    if subprocess.run(cmd, check=False).returncode != 0:
        raise ConfigError(f"training {name} failed (see its output above)")
    return (time.monotonic() - started) / 60


def trained_minutes(name: str, args: argparse.Namespace) -> float | None:
    """With ``--skip-trained``, the minutes of run ``name`` when its summary.json exists; None.

    Raises:
        ConfigError: the summary.json cannot be read (naming it and what to do).
    """
    path = args.out / name / "summary.json"
    if not (args.skip_trained and path.is_file()):
        return None
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
        return float(summary.get("minutes", 0.0))
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise ConfigError(
            f"{path} is unreadable ({exc}); delete it to train {name} again, or leave out "
            "--skip-trained"
        ) from exc


def findings(results: dict[str, dict[str, float]]) -> list[str]:
    """Paper B's claims, each stated as reproduced or not, from the runs' mAPs."""
    lines = []
    claims = (("depth_to_rgb", "rgb_to_depth", "beats RGB → depth distillation"),
              ("depth_to_rgb", "one_stream", "beats the one-stream baseline"))
    for winner, other, claim in claims:
        if winner not in results or other not in results:
            continue
        for key, label in ASSIGNMENTS.items():
            a, b = results[winner][key], results[other][key]
            verdict = "reproduced" if a > b else "NOT reproduced"
            lines.append(f"- depth → RGB distillation {claim} for {label} queries: "
                         f"mAP {a:.3f} vs {b:.3f} — {verdict}.")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Train and score every run; returns 2 on bad arguments, data or a failed run."""
    args = get_args_parser().parse_args(argv)
    minutes: dict[str, float] = {}
    try:
        # Everything that can be checked is, before the first of the runs trains.
        if args.trials < 1:
            raise ConfigError(f"--trials must be >= 1 (single-shot gallery draws), got "
                              f"{args.trials}")
        check_output_dir(args.out, "--out")
        data = {**DATA_DEFAULTS, "source": "sim", "root": str(args.data)}
        source = open_source(data, args.split)
        for name in RUNS:
            trained_minutes(name, args)
        for name in RUNS:
            minutes[name] = train_run(name, args)
        info = setup_distributed("auto")
        lines = [table_header()]
        maps: dict[str, dict[str, float]] = {}
        for name, (row, _, _) in RUNS.items():
            if row is None:
                continue
            depth, rgb, normalize = load_run(args.out / name)
            results = evaluate_cross(depth, rgb, normalize, source, source.records,
                                     info.device.type, args.trials, 0, True)
            lines += table_rows(row, results)
            maps[name] = {key: float(results[key].mAP) for key in ASSIGNMENTS}
        table = "\n".join(lines) + "\n"
    except (ConfigError, DatasetError, CheckpointError, FrameError) as exc:
        print(f"compare_reid: error: {exc}", file=sys.stderr)
        return 2
    header = (f"Paper B's comparison on `{args.data}` split `{args.split}` (cross-modal, "
              f"single-gallery-shot, {args.trials} draws; query → gallery in the second column). "
              f"Training minutes: " + ", ".join(f"{k} {v:.1f}" for k, v in minutes.items())
              + f". Commit {git_commit()}, {datetime.now(UTC).date().isoformat()}.")
    text = header + "\n\n" + table + "\n" + "\n".join(findings(maps)) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "comparison.md").write_text(text, encoding="utf-8")
    (args.out / "comparison.json").write_text(
        json.dumps({"map": maps, "minutes": minutes}, indent=2) + "\n", encoding="utf-8")
    print(text)
    print(f"wrote {args.out / 'comparison.md'} and comparison.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
