"""``iphd-sim``: generate IPHD datasets, re-ID datasets, rosbags, D435 recordings, contact sheets.

    iphd-sim iphd  --out data/iphd_sim --frames 10000 --workers 2
    iphd-sim reid  --out data/reid_sim --identities 60 --sessions 3
    iphd-sim reid-walks --out data/reid_walks --sequences 100   # crops as the tracker cuts them
    iphd-sim bag   --out data/sim_bag --duration 30
    iphd-sim rsrec --out data/sim_depth.db3 --duration 5
    iphd-sim sheet --out docs/images/sim_contact_sheet.png

Same ``--seed`` (and arguments), byte-identical output, whatever ``--workers``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from iphd.calibration import DEFAULT_CALIBRATION, load_calibration
from iphd.data.output import check_count
from iphd.data.reid import DEPTH_CROPS
from iphd.errors import ConfigError, IphdError
from iphd.sim.labels import WeakLabelConfig
from iphd.sim.rig import PROFILES, SensorConfig


def _workers_default() -> int:
    return max(1, min(os.cpu_count() or 1, 4))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iphd-sim", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", type=Path, required=True, help="output folder or file")
    common.add_argument("--seed", type=int, default=0, help="master seed (default 0)")
    common.add_argument("--workers", type=int, default=_workers_default(),
                        help="worker processes (default: CPU cores, at most 4)")
    common.add_argument("--overwrite", action="store_true", help="replace an existing output")
    common.add_argument("--calibration", type=Path, default=DEFAULT_CALIBRATION,
                        help="rig.yaml of the simulated rig (default: the package's)")
    common.add_argument("--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("iphd", parents=[common], help="IPHD-format detection dataset")
    p.add_argument("--frames", type=int, default=1000, help="depth/thermal pairs in total")
    p.add_argument("--frames-per-sequence", type=int, default=50)
    p.add_argument("--stride", type=int, default=3, help="thermal frames between written pairs")
    p.add_argument("--weak-offset", type=float, default=WeakLabelConfig.box_offset,
                   help="per-box shift of weak labels, fraction of the box size")
    p.add_argument("--weak-sequence-offset", type=float,
                   default=WeakLabelConfig.sequence_offset,
                   help="per-sequence shift of weak labels, fraction of the box size")
    p.add_argument("--weak-scale", type=float, default=WeakLabelConfig.scale,
                   help="std of the log scale error of weak labels")
    p.add_argument("--weak-miss", type=float, default=WeakLabelConfig.miss_rate,
                   help="probability a weak label is missing")
    p.add_argument("--weak-spurious", type=float, default=WeakLabelConfig.spurious_rate,
                   help="spurious weak boxes per frame")

    p = sub.add_parser("reid", parents=[common], help="re-ID dataset of depth + RGB crops")
    p.add_argument("--identities", type=int, default=40)
    p.add_argument("--sessions", type=int, default=3, help="sessions (viewpoints) per identity")
    p.add_argument("--crops", type=int, default=6, help="time-paired crops per identity/session")
    p.add_argument("--test-fraction", type=float, default=0.3)
    p.add_argument("--depth-crop", choices=DEPTH_CROPS, default="metric",
                   help="depth crop geometry: metric keeps body size (the shipped embedder's), "
                   "letterbox fits the box like the RGB crops")

    p = sub.add_parser(
        "reid-walks", parents=[common],
        help="re-ID dataset cut from tracking-style sequences (people walking in and out)")
    p.add_argument("--sequences", type=int, default=20, help="sequences (--people identities "
                   "each)")
    p.add_argument("--people", type=int, default=4, help="people per sequence")
    p.add_argument("--duration", type=float, default=60.0, help="seconds per sequence")
    p.add_argument("--rate", type=float, default=2.0, help="crops per person per second")
    p.add_argument("--gap", type=float, default=1.0,
                   help="seconds unseen after which a person's next crops are a new session")
    p.add_argument("--test-fraction", type=float, default=0.1,
                   help="share of the sequences held out for the test split")

    for name, text in (("bag", "ROS 2 bag with ground truth"),
                       ("rsrec", "librealsense depth recording (.db3)")):
        p = sub.add_parser(name, parents=[common], help=text)
        p.add_argument("--duration", type=float, default=20.0 if name == "bag" else 5.0,
                       help="seconds of scene")
        p.add_argument("--profile", choices=PROFILES,
                       default="aligned_848x480" if name == "bag" else "depth_848x480",
                       help="D435 depth profile")
        p.add_argument("--people", type=int, default=None,
                       help="people in the scene (default: drawn like the datasets)")
        p.add_argument("--rgb", action="store_true",
                       help="also record the colour camera (off by default: privacy)")
        if name == "bag":
            p.add_argument("--compression", choices=("zstd", "none"), default="zstd")
            p.add_argument("--pan-deg", type=float, default=0.0,
                           help="the robot turns in place: its yaw swings this many degrees "
                           "either side (0 = static rig); odom -> camera_link goes on /tf")
            p.add_argument("--pan-period", type=float, default=12.0,
                           help="seconds of one full swing of --pan-deg (default 12)")

    p = sub.add_parser("sheet", parents=[common], help="contact sheet PNG")
    p.add_argument("--rows", type=int, default=4)
    return parser


def _bar(args: argparse.Namespace, total: int, unit: str) -> tqdm:
    # Shown after 0.5 s: an argument refused at once leaves its error alone on the terminal.
    return tqdm(total=total, unit=unit, disable=args.quiet, dynamic_ncols=True, delay=0.5)


#: Most spurious weak boxes per frame accepted (a Poisson mean).
MAX_SPURIOUS = 20.0
#: Depth frames per second of the simulated D435: the most crops a second a walk can give.
DEPTH_FPS = 30.0


def _check_options(args: argparse.Namespace) -> None:
    """Refuse option values the generators would take silently or fail on, by their names.

    Raises:
        ConfigError: a value that is not finite or out of its range.
    """
    check_count("--workers", args.workers, 1)
    if args.command == "iphd":
        check_count("--frames", args.frames, 1)  # 0 would write six empty splits
    ranges = {  # option: (low, high, low allowed)
        "weak_offset": (0.0, 10.0, True), "weak_sequence_offset": (0.0, 10.0, True),
        "weak_scale": (0.0, 5.0, True), "weak_miss": (0.0, 1.0, True),
        "weak_spurious": (0.0, MAX_SPURIOUS, True), "rate": (0.0, DEPTH_FPS, False),
        "gap": (0.0, 3600.0, True), "pan_deg": (0.0, 180.0, True),
        "pan_period": (0.0, 3600.0, False),
    }
    for name, (low, high, closed) in ranges.items():
        value = getattr(args, name, None)
        if value is None:
            continue
        ok = math.isfinite(value) and (value >= low if closed else value > low) and value <= high
        if not ok:
            option = "--" + name.replace("_", "-")
            raise ConfigError(
                f"{option} must be {'at least' if closed else 'above'} {low:g} and at most "
                f"{high:g}, got {value}"
            )


def _note_empty_splits(args: argparse.Namespace, counts: dict[str, int]) -> None:
    """Say which split of a walks dataset got no crop, and what gives it some."""
    empty = [split for split, n in counts.items() if not n]
    if empty:
        print(f"iphd-sim {args.command}: note: the {' and '.join(empty)} split"
              f"{'s have' if len(empty) > 1 else ' has'} no crop: give more --sequences, "
              "a longer --duration or a higher --rate (or another --test-fraction)",
              file=sys.stderr)


def run(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    args = _parser().parse_args(argv)
    from iphd.sim import generate  # heavy imports after argument parsing

    try:
        _check_options(args)
        calibration = load_calibration(args.calibration)
        start = time.perf_counter()
        if args.command == "iphd":
            weak = WeakLabelConfig(
                sequence_offset=args.weak_sequence_offset, box_offset=args.weak_offset,
                scale=args.weak_scale, miss_rate=args.weak_miss,
                spurious_rate=args.weak_spurious,
            )
            with _bar(args, max(args.frames, 0), "pair") as bar:
                summary = generate.generate_iphd(
                    args.out, seed=args.seed, frames=args.frames,
                    frames_per_sequence=args.frames_per_sequence, stride=args.stride,
                    workers=args.workers, overwrite=args.overwrite, calibration=calibration,
                    weak=weak, progress=bar.update,
                )
            lo, hi, mean = summary.people_per_frame
            print(
                f"wrote {args.out}: {summary.frames} pairs; registered thermal "
                f"{100 * summary.zero_thermal:.1f}% zero, depth {100 * summary.invalid_depth:.1f}%"
                f" invalid, {lo}-{hi} labelled people per frame (mean {mean:.2f}), people at "
                f"{summary.distance_m[0]:.1f}-{summary.distance_m[1]:.1f} m"
            )
        elif args.command == "reid":
            with _bar(args, 0, "session") as bar:
                counts = generate.generate_reid(
                    args.out, seed=args.seed, identities=args.identities,
                    sessions=args.sessions, crops=args.crops, test_fraction=args.test_fraction,
                    workers=args.workers, overwrite=args.overwrite, calibration=calibration,
                    progress=bar.update, depth_crop=args.depth_crop,
                )
            print(f"wrote {args.out}: {counts} crops (depth + RGB)")
        elif args.command == "reid-walks":
            with _bar(args, args.sequences, "sequence") as bar:
                counts = generate.generate_reid_walks(
                    args.out, seed=args.seed, sequences=args.sequences, people=args.people,
                    duration_s=args.duration, rate_hz=args.rate, gap_s=args.gap,
                    test_fraction=args.test_fraction, workers=args.workers,
                    overwrite=args.overwrite, calibration=calibration, progress=bar.update,
                )
            print(f"wrote {args.out}: {counts} crops (depth + RGB)")
            _note_empty_splits(args, counts)
        elif args.command == "bag":
            sensors = SensorConfig(depth_profile=args.profile, pan_deg=args.pan_deg,
                                   pan_period_s=args.pan_period)
            with _bar(args, 0, "frame") as bar:
                info = generate.generate_bag(
                    args.out, seed=args.seed, duration_s=args.duration, sensors=sensors,
                    people=args.people, rgb=args.rgb,
                    compression=args.compression, workers=args.workers,
                    overwrite=args.overwrite, calibration=calibration, progress=bar.update,
                )
            print(f"wrote {args.out}: {info}")
            if not info.get("thermal/image_raw"):
                print(f"iphd-sim bag: note: {args.out} has no thermal frame, so no pair: the "
                      f"Lepton's start-up flat-field correction drops the first "
                      f"{sensors.ffc_duration_s:g} s of them; give --duration 2 or more",
                      file=sys.stderr)
        elif args.command == "rsrec":
            sensors = SensorConfig(depth_profile=args.profile)
            with _bar(args, 0, "frame") as bar:
                path = generate.generate_rs_recording(
                    args.out, seed=args.seed, duration_s=args.duration, sensors=sensors,
                    people=args.people, overwrite=args.overwrite,
                    calibration=calibration, progress=bar.update, rgb=args.rgb,
                )
            print(f"wrote {path}")
        else:
            from iphd.sim.sheet import write_contact_sheet

            path = write_contact_sheet(
                args.out, seed=args.seed, rows=args.rows, overwrite=args.overwrite,
                calibration=calibration,
            )
            print(f"wrote {path}")
    except (IphdError, ValueError) as exc:
        print(f"iphd-sim {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"iphd-sim {args.command}: interrupted; nothing was left at {args.out}",
              file=sys.stderr)
        return 130
    print(f"took {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point."""
    sys.exit(run(argv))
