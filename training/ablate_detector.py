"""Paper A's ablations (Tables I–III in direction) on IPHD-format data: modality, NRF, REM, fusion.

Trains one detector per variant from a base config with ``train_detector.py`` (a subprocess each,
so the runs cannot leak state into one another), scores each on a held-out split with the
official protocol and writes a Markdown table::

    python training/ablate_detector.py --config training/configs/detector/ablation_sim.yaml \
        --eval-split test --eval-labels clean
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

import torch

from common import check_output_dir, git_commit, load_config
from iphd.data.iphd import IPHD_SPLITS, LABEL_FOLDERS, IphdDataset
from iphd.detection.data import DetectionDataset
from iphd.detection.detector import load_checkpoint
from iphd.errors import CheckpointError, ConfigError, DatasetError
from train_detector import build_run_config, evaluate_split

HERE = Path(__file__).resolve().parent

#: name → (paper table, what it changes, config overrides). Order = rows of the table.
VARIANTS: dict[str, tuple[str, str, list[str]]] = {
    "depth": ("I", "depth only (D, D, D)", ["model.fusion=depth"]),
    "thermal": ("I", "thermal only (T, T, T)", ["model.fusion=thermal"]),
    "early": ("I–III", "early fusion (T, T, D) + REM + NRF", []),
    "early_no_nrf": ("II", "early fusion + REM, plain OHEM (no NRF)", ["loss.nrf=false"]),
    "early_no_rem": ("III", "early fusion + NRF, no REM", ["model.use_rem=false"]),
    "intermediate": ("I", "intermediate fusion (two backbones, 3×3 merge)",
                     ["model.fusion=intermediate"]),
    "late": ("I", "late fusion (two detectors, NMS merge)", ["model.fusion=late"]),
}


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line options of the ablation runner."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--config", type=Path,
                        default=HERE / "configs" / "detector" / "ablation_sim.yaml")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated subset of: " + ", ".join(VARIANTS))
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE", help="override for every variant")
    parser.add_argument("--out", type=Path, default=Path("out/ablation/detector"))
    parser.add_argument("--eval-split", choices=IPHD_SPLITS, default="test")
    parser.add_argument("--eval-labels", choices=tuple(LABEL_FOLDERS), default="clean",
                        help="ground truth of the scored split (clean = the simulator's truth)")
    parser.add_argument("--skip-trained", action="store_true",
                        help="reuse a variant's model.pt when it already exists")
    parser.add_argument("--quiet", action="store_true")
    return parser


def score(checkpoint: Path, root: Path, split: str, labels: str, any_size: bool,
          batch_size: int) -> dict[str, float]:
    """AP@0.25/0.5/0.75 of a checkpoint on one split, in the order of the table."""
    model, normalize, _ = load_checkpoint(checkpoint)
    sizes = {"depth_size": None, "thermal_size": None} if any_size else {}
    frames = IphdDataset(root, split, labels=labels, **sizes)
    data = DetectionDataset(frames, model.config.fusion, normalize, min_box_px=0.0)
    result = evaluate_split(model, data, batch_size, torch.device("cpu"), 1, quiet=True)
    return {f"ap{round(t * 100)}": float(result["ap"][t]) for t in result["thresholds"]}


def table(rows: list[dict[str, object]]) -> str:
    """The Markdown results table."""
    lines = ["| variant | paper table | AP@0.25 | AP@0.5 | AP@0.75 | train min |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['description']} | {r['table']} | {r['ap25']:.3f} | {r['ap50']:.3f} "
                     f"| {r['ap75']:.3f} | {r['minutes']:.1f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ablations; returns 2 on bad arguments or data."""
    args = get_args_parser().parse_args(argv)
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        print(f"ablate_detector: error: unknown variant(s) {unknown}; choose from "
              f"{', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    try:
        base = build_run_config(load_config(args.config, args.overrides), "ablation")
        check_output_dir(args.out, "--out")
    except ConfigError as exc:
        print(f"ablate_detector: error: {exc}", file=sys.stderr)
        return 2
    # The scored split, opened before the first variant trains, not after each has.
    sizes = {"depth_size": None, "thermal_size": None} if base.data["any_size"] else {}
    try:
        scored = len(IphdDataset(Path(base.data["root"]), args.eval_split,
                                 labels=args.eval_labels, **sizes))
    except DatasetError as exc:
        scored, problem = 0, str(exc)
    else:
        problem = f"split {args.eval_split} of {base.data['root']} has no frames"
    if not scored:
        print(f"ablate_detector: error: --eval-split {args.eval_split} with --eval-labels "
              f"{args.eval_labels} cannot be scored: {problem}", file=sys.stderr)
        return 2
    rows: list[dict[str, object]] = []
    for name in names:
        table_id, description, overrides = VARIANTS[name]
        out = args.out / name
        started = time.monotonic()
        if not (args.skip_trained and (out / "model.pt").is_file()):
            # Trained again: a run left there from before is replaced, not refused.
            cmd = [sys.executable, str(HERE / "train_detector.py"), "--config", str(args.config),
                   "--out", str(out), "--overwrite"]
            for item in [*args.overrides, *overrides]:
                cmd += ["--set", item]
            if args.quiet:
                cmd.append("--quiet")
            print(f"== {name}: {description}", flush=True)
            if subprocess.run(cmd, check=False).returncode != 0:
                print(f"ablate_detector: error: training {name} failed (see above)",
                      file=sys.stderr)
                return 2
        minutes = (time.monotonic() - started) / 60
        try:
            aps = score(out / "model.pt", Path(base.data["root"]), args.eval_split,
                        args.eval_labels, bool(base.data["any_size"]),
                        int(base.optim["batch_size"]))
        except (CheckpointError, DatasetError) as exc:
            print(f"ablate_detector: error: {exc}", file=sys.stderr)
            return 2
        rows.append({"variant": name, "table": table_id, "description": description,
                     "minutes": minutes, **aps})
        print(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in aps.items()), flush=True)
    header = (f"Ablations of paper A, trained on `{base.data['labels']}` labels of "
              f"{base.data['root']} ({base.data['limit'] or 'all'} frames, "
              f"{base.optim['epochs']} epochs, ResNet-{base.model.backbone_depth} width "
              f"{base.model.backbone_width}, input {base.model.input_size[0]}×"
              f"{base.model.input_size[1]}), scored on `{args.eval_split}` with "
              f"`{args.eval_labels}` labels. Commit {git_commit()}, "
              f"{datetime.now(UTC).date().isoformat()}.")
    text = header + "\n\n" + table(rows) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ablation.md").write_text(text, encoding="utf-8")
    (args.out / "ablation.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    print(text)
    print(f"wrote {args.out / 'ablation.md'} and ablation.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
