"""``iphd-eval``: score a detector on an IPHD split, or the whole pipeline over a bag.

    iphd-eval detector --checkpoint runs/detector/best.pt --dataset data/iphd --split test
    iphd-eval detector --checkpoint model.onnx --dataset data/iphd_sim --labels clean --limit 200
    iphd-eval detector --checkpoint best.pt --dataset data/iphd --backend onnxruntime-int8
    iphd-eval bag --bag sim_bag --out out/eval/bag                # run the models on the bag
    iphd-eval bag --bag graph_recording --out out/eval/live --recorded   # score a live recording
    iphd-eval bag --bag bags/seed* --out out/eval/bags          # several: a report each + summary
    iphd-eval bag --bag my_bag_gt --set lost_timeout_s=4 --score-threshold 0.4  # other settings
    iphd-eval bag --bag my_bag_gt --out out/eval/mine --video   # + tracks.mp4: ids over depth
    iphd-eval check --bag my_bag                                # will it run? what to change
    iphd-eval video --bag my_bag --out my_bag.mp4               # watch it: ids over depth
    iphd-eval export-mot --bag my_bag --out my_bag_mot          # frames to annotate (MOT format)
    iphd-eval import-mot --bag my_bag --mot my_bag_mot --out my_bag_gt  # annotations -> truth

``detector`` writes report.md, pr.png, predictions.pkl (the official submission) and
metrics.json to --out; ``bag`` writes report.md, metrics.json, pr.png, timeline.png and
latency.png (AP, CLEAR-MOT/IDF1 and per-stage latency against the bag's ground_truth/people);
with several bags, one such folder per bag under --out and summary.md / summary.json with a
row per bag and the mean; with --video also tracks.mp4. ``video`` writes that video for any
bag, ground truth or not. ``export-mot`` writes a bag's pairs as a MOT sequence to annotate,
``import-mot`` a copy of the bag with those annotations as its ground_truth/people.
On bad input (missing checkpoint, incomplete dataset or bag, malformed label) it exits with
status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iphd.data.iphd import IPHD_SPLITS, LABEL_FOLDERS, IphdDataset
from iphd.data.output import check_file_output, check_folder_output
from iphd.detections import BACKENDS, CPU_DEFAULT_BACKEND, DetectionConfig
from iphd.errors import ConfigError, DatasetError, IphdError
from iphd.eval.detector_eval import DetectorLike, evaluate_detector, write_report
from iphd.graph import (
    DEPTH_TOPIC_ARGUMENTS,
    OFFLINE_TOPIC_ARGUMENTS,
    TOPIC_ARGUMENTS,
    add_topic_arguments,
    topics_from_args,
)

if TYPE_CHECKING:
    from iphd.tracking.tracker import TrackerConfig

INT8_CALIBRATION_HELP = (
    "calibration pairs (.npz) for the int8 detector (onnxruntime-int8, which auto runs on the "
    "CPU), as the detector node's int8_calibration; default: the shipped ones (python -m "
    "iphd.detection.quantize calibration makes your own)"
)
DEFAULT_OUT = Path("out/eval/detector")
DEFAULT_BAG_OUT = Path("out/eval/bag")
CALIBRATION_HELP = (
    "rig.yaml to register thermal with (default: the one the bag stores, else the package's "
    "nominal one)"
)


def get_args_parser() -> argparse.ArgumentParser:
    """The command line of ``iphd-eval``; each subcommand sets ``handler`` to its runner."""
    parser = argparse.ArgumentParser(
        prog="iphd-eval", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("detector", parents=[common],
                       help="AP@0.25/0.5/0.75 of a detector on an IPHD split")
    p.add_argument("--checkpoint", type=Path, required=True,
                   help="detector checkpoint (.pt) or exported model (.onnx)")
    p.add_argument("--dataset", type=Path, required=True,
                   help="IPHD root holding iphd_{split}_{depth,thermal}/")
    p.add_argument("--split", choices=IPHD_SPLITS, default="test", help="default %(default)s")
    p.add_argument("--labels", choices=tuple(LABEL_FOLDERS), default="weak",
                   help="ground truth: weak (real IPHD) or clean (simulator only); "
                   "default %(default)s")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help="report folder (default %(default)s)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="default %(default)s (CUDA when available)")
    p.add_argument("--limit", type=int, help="evaluate only the first N frames")
    p.add_argument("--threads", type=int, default=2,
                   help="CPU threads for inference (default %(default)s; the latency figures "
                   "depend on it)")
    p.add_argument("--any-size", action="store_true",
                   help="accept frames that are not 1280x720 depth / 213x120 thermal")
    p.add_argument("--backend", choices=BACKENDS, default="torch",
                   help="what runs a .pt checkpoint (default %(default)s: the model as "
                   "trained; auto = what the detector node runs: torch on CUDA, "
                   f"{CPU_DEFAULT_BACKEND} on the CPU; onnxruntime-int8 = statically "
                   "quantized, CPU only); an .onnx file always runs on onnxruntime")
    p.add_argument("--int8-calibration", default="", help=INT8_CALIBRATION_HELP)
    p.set_defaults(handler=_run_detector)

    b = sub.add_parser("bag", parents=[common],
                       help="end to end over a bag with ground truth: AP, MOTA/IDF1, latency")
    b.add_argument("--bag", type=Path, required=True, nargs="+", action="extend",
                   help="bag folder (or .db3/.mcap) with ground_truth/people (iphd-sim bag); "
                   "several (after one --bag, or --bag repeated): a report each in "
                   "--out/<bag name>/ and a summary of them all")
    b.add_argument("--out", type=Path, default=DEFAULT_BAG_OUT,
                   help="report folder (default %(default)s)")
    b.add_argument("--detector-checkpoint", default="",
                   help="detector checkpoint (.pt or .onnx); default: the shipped model")
    b.add_argument("--reid-checkpoint", default="",
                   help="depth re-ID embedder (.pt); default: the shipped one if any; "
                   "'none' = no appearance")
    b.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu",
                   help="default %(default)s (deterministic)")
    b.add_argument("--threads", type=int, default=2,
                   help="torch CPU threads (default %(default)s; latency depends on it)")
    b.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="what runs the detector (default %(default)s: torch on CUDA, "
                   f"{CPU_DEFAULT_BACKEND} on the CPU; onnxruntime-int8 = statically "
                   "quantized, CPU only)")
    b.add_argument("--int8-calibration", default="", help=INT8_CALIBRATION_HELP)
    b.add_argument("--score-threshold", type=float, default=DetectionConfig.score_threshold,
                   metavar="S",
                   help="the detector node's score_threshold: lowest detection score handed "
                   "to the tracker (default %(default)s; AP scores every detection)")
    b.add_argument("--min-thermal-contrast", type=float,
                   default=DetectionConfig.min_thermal_contrast_k, metavar="K",
                   help="the detector node's min_thermal_contrast_k: detections whose own pixels "
                        "are less than K kelvin warmer than the scene are not tracked (0 = off)")
    b.add_argument("--verifier", default="",
                   help="the detector node's box verifier (.npz): empty = the shipped one, "
                   "'none' = off")
    b.add_argument("--min-verifier-probability", type=float,
                   default=DetectionConfig.min_verifier_probability, metavar="P",
                   help="the detector node's min_verifier_probability (negative = the "
                   "verifier file's threshold)")
    b.add_argument("--calibration", default="",
                   help=CALIBRATION_HELP)
    b.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="a TrackerConfig setting for the run (repeat for several; offline "
                   "only), as training/tune_tracker.py takes them, e.g. lost_timeout_s=4")
    b.add_argument("--tracking-frame", default="", metavar="FRAME",
                   help="the tracker node's tracking_frame: track in FRAME (odom, map) through "
                   "the bag's /tf, as on a moving robot; sets up_axis=z unless --set gives it "
                   "(default: the detections' frame)")
    b.add_argument("--start-s", type=float,
                   help="start S seconds into the bag (offline only; the tracker starts afresh)")
    b.add_argument("--limit-s", type=float,
                   help="evaluate only S seconds of the bag (from --start-s, else its start)")
    add_topic_arguments(b, OFFLINE_TOPIC_ARGUMENTS, "the bag's")
    b.add_argument("--recorded", action="store_true",
                   help="score the detections/tracks a live graph recorded in the bag instead "
                   "of running the models")
    b.add_argument("--video", action="store_true",
                   help="also write tracks.mp4 beside the report: the confirmed tracks in "
                   "their ids' colours and the labelled people in white over each pair's "
                   "depth (offline only)")
    b.set_defaults(handler=_run_bag)

    e = sub.add_parser("export-mot", parents=[common],
                       help="write a bag's pairs as a MOT sequence to annotate (ground truth "
                       "for your own bags)")
    e.add_argument("--bag", type=Path, required=True, help="bag folder (or .db3/.mcap)")
    e.add_argument("--out", type=Path, required=True,
                   help="new folder for img1/, gt/gt.txt, gt/labels.txt, seqinfo.ini and "
                   "stamps.csv (an existing non-empty folder is refused)")
    e.add_argument("--every", type=int, default=1,
                   help="export every N-th pair (default %(default)s: all, about 8.7 a second)")
    e.add_argument("--no-prefill", dest="prefill", action="store_false",
                   help="leave gt/gt.txt empty instead of filling it with the pipeline's "
                   "confirmed tracks to correct")
    e.add_argument("--start-s", type=float, help="start S seconds into the bag")
    e.add_argument("--limit-s", type=float,
                   help="export only S seconds of the bag (from --start-s, else its start)")
    _add_pipeline_arguments(e, "detector checkpoint (.pt) whose tracks prefill gt.txt; "
                            "default: the shipped model")
    add_topic_arguments(e, OFFLINE_TOPIC_ARGUMENTS, "the bag's")
    e.set_defaults(handler=_run_export_mot)

    v = sub.add_parser("video", parents=[common],
                       help="watch the pipeline on any bag (no ground truth needed): an MP4 of "
                       "the tracks' ids over each pair's depth")
    v.add_argument("--bag", type=Path, required=True, help="bag folder (or .db3/.mcap)")
    v.add_argument("--out", type=Path, required=True,
                   help="the .mp4 file to write (replaced if it exists)")
    v.add_argument("--start-s", type=float, help="start S seconds into the bag")
    v.add_argument("--limit-s", type=float,
                   help="draw only S seconds of the bag (from --start-s, else its start)")
    _add_pipeline_arguments(v, "detector checkpoint (.pt); default: the shipped model")
    v.add_argument("--reid-checkpoint", default="",
                   help="the tracker's depth re-ID embedder (.pt): empty = the shipped one, "
                   "'none' = tracking by position")
    v.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="a tracker setting, as iphd-eval bag --set (repeatable)")
    add_topic_arguments(v, OFFLINE_TOPIC_ARGUMENTS, "the bag's")
    v.set_defaults(handler=_run_video)

    k = sub.add_parser("check",
                       help="will a bag run through the pipeline? each input's topic, encoding, "
                       "size, units, rate and pairing, and what to change (no model runs)")
    k.add_argument("--bag", type=Path, required=True, help="bag folder (or .db3/.mcap)")
    k.add_argument("--calibration", default="", help=CALIBRATION_HELP)
    k.add_argument("--seconds", type=float, default=10.0,
                   help="how much of the bag to read (default %(default)s)")
    add_topic_arguments(k, TOPIC_ARGUMENTS, "the bag's")
    k.set_defaults(handler=_run_check)

    i = sub.add_parser("import-mot",
                       help="copy a bag with the annotations of an export-mot folder as "
                       "ground_truth/people")
    i.add_argument("--bag", type=Path, required=True, help="the bag the frames came from")
    i.add_argument("--mot", type=Path, required=True,
                   help="the export-mot folder with the annotated gt/gt.txt (a CVAT 'MOT 1.1' "
                   "export unpacked into it)")
    i.add_argument("--out", type=Path, required=True,
                   help="the new bag with ground truth (must not exist)")
    i.add_argument("--calibration", default="",
                   help="your rig.yaml, stored in the new bag so that every tool registers "
                   "thermal with it (a bag from ros2 bag record stores none)")
    add_topic_arguments(i, DEPTH_TOPIC_ARGUMENTS, "the bag's")
    i.set_defaults(handler=_run_import_mot)

    c = sub.add_parser("copy",
                       help="write what reads of a bag (a recording not closed, split without "
                       "metadata.yaml, or damaged) as a new, closed bag (sqlite3 with its "
                       "metadata.yaml) for the tools that refuse the original")
    c.add_argument("--bag", type=Path, required=True, help="bag folder (or .db3/.mcap)")
    c.add_argument("--out", type=Path, required=True, help="the new bag (must not exist)")
    c.add_argument("--calibration", default="",
                   help="a rig.yaml to store in the new bag (default: keep the bag's, if any)")
    c.add_argument("--exclude", action="append", default=[], metavar="TOPIC",
                   help="a topic to leave out, e.g. the colour stream before the bag is shared "
                   "(repeat for several)")
    c.set_defaults(handler=_run_copy)
    return parser


def _run_copy(args: argparse.Namespace) -> str:
    """Copy what reads of a bag to a new, closed bag; return what to print."""
    from iphd.calibration import load_calibration
    from iphd.data.rosbag import copy_bag

    rig = load_calibration(args.calibration) if args.calibration else None
    copied = copy_bag(args.bag, args.out, rig, exclude=args.exclude)
    left = f" ({', '.join(args.exclude)} left out)" if args.exclude else ""
    lines = [f"wrote {args.out}: {copied.messages} messages on {copied.topics} topics{left}"]
    if copied.notes:
        lines.append(f"not copied, or read from a rebuilt copy, of {args.bag}:")
        lines += [f"  {note}" for note in copied.notes]
    else:
        lines.append(f"{args.bag} read whole")
    return "\n".join(lines)


def _run_check(args: argparse.Namespace) -> str:
    """Check a bag; print what was found; fail (exit 2) when there is a problem."""
    from iphd.eval.bag_check import check_bag, format_check

    if not args.bag.exists():
        raise DatasetError(f"bag {args.bag} does not exist")
    if not args.seconds > 0:
        raise ValueError(f"--seconds must be > 0, got {args.seconds:g}")
    check = check_bag(args.bag, topics_from_args(args, TOPIC_ARGUMENTS),
                      calibration=args.calibration, seconds=args.seconds)
    text = format_check(check)
    if check.problems:
        print(text)
        raise DatasetError(f"{len(check.problems)} problem(s) in {args.bag}: see above")
    return text


def _run_export_mot(args: argparse.Namespace) -> str:
    """Export a bag for annotation; return what to print."""
    from iphd.eval.annotation import export_mot
    from iphd.eval.pipeline import OfflineConfig

    config = OfflineConfig(threads=args.threads, calibration=args.calibration,
                           detector_checkpoint=args.detector_checkpoint, verifier=args.verifier,
                           int8_calibration=args.int8_calibration,
                           topics=topics_from_args(args, OFFLINE_TOPIC_ARGUMENTS))
    done = export_mot(args.bag, args.out, config,
                      prefill=args.prefill, every=args.every, limit_s=args.limit_s,
                      start_s=args.start_s, progress=not args.quiet)
    w, h = done.image_size
    return (
        f"wrote {done.frames} frames ({w}x{h}, {done.frame_rate_hz:.2f} per s) to "
        f"{done.out_dir / 'img1'}, {done.prefilled_boxes} boxes of the pipeline's tracks to "
        f"correct in {done.out_dir / 'gt' / 'gt.txt'}\n"
        "next: annotate (CVAT: create a task from img1/, zip gt/ (python3 -m zipfile -c gt.zip "
        f"gt, in {done.out_dir}) and upload gt.zip as 'MOT 1.1', correct boxes "
        "and ids, draw new people as tracks, not shapes, export as 'MOT 1.1' and unpack its gt/ "
        "into the folder), then\n"
        f"  iphd-eval import-mot --bag {args.bag} --mot {done.out_dir} --out BAG_WITH_TRUTH"
        + _topic_options(args, DEPTH_TOPIC_ARGUMENTS)
    )


def _add_pipeline_arguments(parser: argparse.ArgumentParser, detector_help: str) -> None:
    """The offline pipeline's calibration, detector, verifier and CPU options of a command."""
    parser.add_argument("--calibration", default="", help=CALIBRATION_HELP)
    parser.add_argument("--detector-checkpoint", default="", help=detector_help)
    parser.add_argument("--verifier", default="",
                        help="the detector node's box verifier (.npz): empty = the shipped one, "
                        "'none' = off")
    parser.add_argument("--int8-calibration", default="", help=INT8_CALIBRATION_HELP)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")


def _run_video(args: argparse.Namespace) -> str:
    """Draw a bag's tracks into a video; return what to print."""
    from iphd.eval.pipeline import OfflineConfig
    from iphd.eval.tracker_settings import tracker_config
    from iphd.eval.video import write_bag_video

    if args.out.suffix.lower() != ".mp4":
        raise ValueError(f"--out {args.out} must be an .mp4 file")
    if not args.bag.exists():
        raise DatasetError(f"bag {args.bag} does not exist")
    config = OfflineConfig(threads=args.threads, calibration=args.calibration,
                           detector_checkpoint=args.detector_checkpoint, verifier=args.verifier,
                           reid_checkpoint=args.reid_checkpoint,
                           int8_calibration=args.int8_calibration,
                           tracker=tracker_config(args.set),
                           topics=topics_from_args(args, OFFLINE_TOPIC_ARGUMENTS))
    movie = write_bag_video(args.bag, args.out, config, start_s=args.start_s,
                            limit_s=args.limit_s, progress=not args.quiet)
    return f"wrote {movie.path}: {movie.frames} frames"


def _topic_options(args: argparse.Namespace, arguments: Mapping[str, str]) -> str:
    """The topic options given on this command line that the next command needs too."""
    given = topics_from_args(args, arguments)
    return "".join(
        f" --{option.replace('_', '-')} {given[topic]}"
        for option, topic in arguments.items() if topic in given
    )


def _run_import_mot(args: argparse.Namespace) -> str:
    """Write a copy of a bag with its annotations as ground truth; return what to print."""
    from iphd.eval.annotation import MIN_VISIBILITY, describe_skipped, import_mot

    done = import_mot(args.bag, args.mot, args.out, args.calibration,
                      topics_from_args(args, DEPTH_TOPIC_ARGUMENTS))
    hidden = (
        f"{done.low_visibility} boxes with visibility < {MIN_VISIBILITY} (CVAT writes 0 for "
        "boxes marked occluded unless the task has a `visibility` attribute): they are left "
        "out of scoring and training like people hidden in the simulator"
    )
    if done.low_visibility:
        print(f"iphd-eval import-mot: warning: {hidden}; if they should count, unmark "
              "'occluded' or give the task a `visibility` attribute (the visible fraction, "
              "0..1), export again and import into a new --out", file=sys.stderr)
    note = " (the bag's earlier ground_truth/people replaced)" if done.replaced_truth else ""
    if done.calibration == "none":
        rig = ("no rig calibration stored: the tools will use the package's nominal one; pass "
               "--calibration YOUR_RIG.yaml to store yours")
    else:
        rig = f"rig calibration: {done.calibration}"
    return (
        f"wrote {done.out_bag}: {done.frames} frames of ground truth, {done.boxes} boxes of "
        f"{done.people} people{note}; rows left out: {describe_skipped(done.skipped)}; "
        f"{rig}\n"
        f"{hidden}\n"
        f"score it: iphd-eval bag --bag {done.out_bag} --out out/eval/{done.out_bag.name}"
        + _topic_options(args, DEPTH_TOPIC_ARGUMENTS)
    )


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    """The scalar entries of a checkpoint's ``extra`` (epoch, step, ...); tensors are skipped."""
    return {k: v for k, v in values.items() if isinstance(v, str | int | float | bool)}


def _load_detector(
    path: Path, device: str, threads: int, backend: str = "torch", int8_calibration: str = ""
) -> tuple[DetectorLike, dict[str, Any]]:
    """The detector in ``path`` and the configuration it records, for the report.

    A .pt checkpoint runs on ``backend`` (``iphd.detections.load_detector`` for the ONNX
    ones: exported, and quantized for ``onnxruntime-int8``, once and cached).
    """
    if not path.is_file():
        from iphd.checkpoints import missing_checkpoint

        raise missing_checkpoint("detector", path)
    if path.suffix.lower() != ".onnx" and backend != "torch":
        from iphd.detections import DetectionConfig, load_detector

        config = DetectionConfig(
            checkpoint=str(path), device=device, threads=threads, backend=backend,
            int8_calibration=int8_calibration,
        )
        loaded = load_detector(config)
        meta = _load_detector_config(path)
        meta.update(
            format="onnx" if hasattr(loaded, "session") else "torch",
            backend=backend,
            precision=str(getattr(loaded, "precision", "float32")),
        )
        if int8_calibration:
            meta["int8_calibration"] = int8_calibration
        return loaded, meta
    if path.suffix.lower() == ".onnx":
        try:
            from iphd.detection.onnx_export import OnnxDetector
        except ImportError as exc:
            raise ConfigError(
                f"evaluating {path} needs iphd.detection.onnx_export.OnnxDetector, which this "
                f"install does not have ({exc}); evaluate the .pt checkpoint instead"
            ) from exc
        onnx_detector = OnnxDetector(path, device=device, intra_op_threads=threads)
        recorded: dict[str, Any] = {"format": "onnx"}
        for attribute, key in (("config", "detector_config"), ("normalize", "normalize_config")):
            value = getattr(onnx_detector, attribute, None)
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                recorded[key] = dataclasses.asdict(value)
        return onnx_detector, recorded

    import torch  # after parsing, so --help stays fast

    from iphd.detection.detector import Detector, load_checkpoint

    torch.set_num_threads(threads)
    model, normalize, extra = load_checkpoint(path)
    detector = Detector(model, normalize, device)
    return detector, {
        "format": "torch",
        "device": str(detector.device),
        **_load_detector_config(path, (model, normalize, extra)),
    }


def _load_detector_config(path: Path, loaded: tuple[Any, Any, Any] | None = None) -> dict[str, Any]:
    """The model, normalization and training configuration recorded in the checkpoint."""
    from iphd.detection.detector import load_checkpoint

    model, normalize, extra = loaded or load_checkpoint(path)
    return {
        "detector_config": dataclasses.asdict(model.config),
        "normalize_config": dataclasses.asdict(normalize),
        "training": _jsonable(extra),
    }


def _run_detector(args: argparse.Namespace) -> str:
    """Evaluate, write the report, and return the summary to print."""
    size: dict[str, Any] = {"depth_size": None, "thermal_size": None} if args.any_size else {}
    dataset = IphdDataset(args.dataset, args.split, labels=args.labels, **size)
    if len(dataset) == 0:
        raise DatasetError(
            f"the {args.split} split of {args.dataset} holds no frames, so there is nothing to "
            "score; choose a split with frames (--split), or generate enough sequences for every "
            "split (iphd-sim iphd splits by sequence, 70/15/15)"
        )
    if args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    detector, config = _load_detector(
        args.checkpoint, args.device, args.threads, args.backend, args.int8_calibration
    )
    result = evaluate_detector(detector, dataset, progress=not args.quiet, limit=args.limit)
    meta = {
        "checkpoint": str(args.checkpoint),
        "dataset": str(args.dataset),
        "split": args.split,
        "labels": args.labels,
        "limit": args.limit,
        "threads": args.threads,
        "backend": args.backend,
        "config": config,
    }
    files = write_report(result, args.out, meta)
    aps = ", ".join(f"AP@{t:.2f} {result.ap[t]:.4f}" for t in result.thresholds)
    return (
        f"{aps} on {result.n_frames} frames ({result.n_gt} ground-truth boxes, "
        f"{result.n_pred} predictions; {args.labels} labels of {args.split}); latency median "
        f"{result.latency_median_ms:.1f} ms, p95 {result.latency_p95_ms:.1f} ms\n"
        f"wrote {files.report_md}, {files.pr_png.name}, {files.predictions_pkl.name} and "
        f"{files.metrics_json.name}"
    )


def _report_dirs(bags: Sequence[Path], out: Path) -> list[Path]:
    """One report folder per bag under ``out``, named after the bag (``-2``, ... on a clash)."""
    dirs: list[Path] = []
    taken: set[str] = set()
    for bag in bags:
        base = bag.stem if bag.suffix in (".db3", ".mcap") else bag.name
        base = base or "bag"
        name, k = base, 1
        while name in taken:
            k += 1
            name = f"{base}-{k}"
        taken.add(name)
        dirs.append(out / name)
    return dirs


def _offline_tracker(args: argparse.Namespace) -> TrackerConfig:
    """The offline run's tracker settings (the defaults and ``--set``), checked before any bag.

    Raises:
        ConfigError: a bad ``--set`` or ``--score-threshold``.
        ValueError: an option of the offline run (``--set``, models, thresholds, ``--start-s``)
            with ``--recorded``.
    """
    from iphd.eval.tracker_settings import tracker_config

    if args.recorded and args.set:
        raise ValueError("--set is for the offline evaluation; a recording's tracks are scored "
                         "as the live tracker made them")
    if not 0.0 <= args.score_threshold <= 1.0:
        raise ConfigError(f"--score-threshold must be in [0, 1], got {args.score_threshold}")
    if args.recorded and args.video:
        raise ValueError("--video draws the offline run's tracks over its depth frames; a "
                         "recording's tracks are scored without them")
    if args.recorded and args.tracking_frame:
        raise ValueError("--tracking-frame is for the offline evaluation; a recording's tracks "
                         "are scored as the live tracker made them")
    if args.recorded and args.start_s is not None:
        raise ValueError("--start-s is for the offline evaluation; a recording is scored "
                         "from its start (--limit-s still applies)")
    if args.recorded:
        models = [option for option, value, default in (
            ("--detector-checkpoint", args.detector_checkpoint, ""),
            ("--reid-checkpoint", args.reid_checkpoint, ""),
            ("--verifier", args.verifier, ""),
            ("--score-threshold", args.score_threshold, DetectionConfig.score_threshold),
            ("--min-thermal-contrast", args.min_thermal_contrast,
             DetectionConfig.min_thermal_contrast_k),
            ("--min-verifier-probability", args.min_verifier_probability,
             DetectionConfig.min_verifier_probability),
        ) if value != default]
        if models:
            raise ValueError(
                f"{', '.join(models)} set the offline run's models and thresholds; a recording "
                "is scored as the live graph published it, with none of them (leave them out, "
                "or drop --recorded to run the models)"
            )
    given = [item for item in args.set if item.partition("=")[0].strip() == "up_axis"]
    # odom and map have z up (REP 103), as the tracker node's tracking_frame wants.
    return tracker_config(args.set if given or not args.tracking_frame
                          else [*args.set, "up_axis=z"])


def _evaluate_bag(
    args: argparse.Namespace, bag: Path, out: Path, tracker: TrackerConfig
) -> tuple[dict[str, Any], str]:
    """Evaluate one bag end to end and write its report; returns its metrics and a summary.

    ``tracker``: the tracker settings of an offline run (a recording's tracks are scored as
    they are).
    """
    import json

    from iphd.eval.bag_eval import evaluate_offline, evaluate_recorded, write_bag_report
    from iphd.eval.video import VIDEO_NAME

    meta: dict[str, Any] = {"bag": str(bag), "start_s": args.start_s, "limit_s": args.limit_s}
    if args.recorded:
        result, run = evaluate_recorded(bag, limit_s=args.limit_s)
    else:
        from iphd.eval.pipeline import OfflineConfig

        if args.set:
            meta["tracker_set"] = " ".join(args.set)
        config = OfflineConfig(
            detector_checkpoint=args.detector_checkpoint,
            reid_checkpoint=args.reid_checkpoint,
            device=args.device,
            threads=args.threads,
            backend=args.backend,
            int8_calibration=args.int8_calibration,
            score_threshold=args.score_threshold,
            min_thermal_contrast_k=args.min_thermal_contrast,
            verifier=args.verifier,
            min_verifier_probability=args.min_verifier_probability,
            calibration=args.calibration,
            tracker=tracker,
            topics=topics_from_args(args, OFFLINE_TOPIC_ARGUMENTS),
            tracking_frame=args.tracking_frame,
        )
        if args.tracking_frame:
            meta["tracking_frame"] = args.tracking_frame
            meta["up_axis"] = tracker.up_axis
        result, run = evaluate_offline(bag, config, limit_s=args.limit_s, start_s=args.start_s,
                                       progress=not args.quiet,
                                       video=out / VIDEO_NAME if args.video else None)
    files = write_bag_report(result, out, {**meta, "mode": result.mode, **run})
    ap = result.ap.get("ap", {})
    aps = ", ".join(
        f"AP@{t:.2f} {'n/a' if math.isnan(ap[t]) else f'{ap[t]:.4f}'}" for t in ap
    ) or "AP n/a"
    mot = result.mot

    def fmt(key: str) -> str:
        value = mot[key] if key in mot else (result.hota or {}).get(key)
        return "n/a" if value is None else f"{value:.4f}"

    metrics = json.loads(files.metrics_json.read_text(encoding="utf-8"))
    true_ids = metrics.get("idf1_true_ids")
    true_ids_text = "n/a" if true_ids is None else f"{true_ids:.4f}"
    missed = int(result.counters.get("no_transform", 0))
    untracked = (
        f"{missed} of {result.pairs} pairs not tracked: no transform from the depth frame into "
        f"tracking frame '{args.tracking_frame}' at their stamps (as the tracker node drops "
        f"them); the bag's /tf does not reach it there\n" if missed else ""
    )
    line = (
        f"{result.mode}: {aps}; MOTA {fmt('mota')}, IDF1 {fmt('idf1')} ({true_ids_text} with "
        f"true identities), HOTA {fmt('hota')}, ID switches "
        f"{int(mot['num_switches'] or 0)} on {len(result.frames)} frames ({result.pairs} pairs, "
        f"{sum(result.skipped.values())} messages skipped)\n"
        f"{untracked}"
        f"wrote {files.report_md}, {files.metrics_json.name}, {files.pr_png.name}, "
        f"{files.timeline_png.name} and {files.latency_png.name}"
        + (f", and {VIDEO_NAME}" if "video" in run else "")
    )
    return metrics, line


def _run_bag(args: argparse.Namespace) -> str:
    """Evaluate one bag, or several and their summary; return what to print.

    With several bags every one is tried: a bag that cannot be scored is listed in the
    summary with its error, and the command then fails (exit 2) after writing it.
    """
    from iphd.eval.bag_eval import BagSummaryRow, write_bags_summary

    bags: list[Path] = list(args.bag)
    missing = [str(b) for b in bags if not b.exists()]
    if missing:
        raise DatasetError(
            f"bag {', '.join(missing)} does not exist; pass bag folders with ground truth "
            "(make one with `iphd-sim bag --out BAG`)"
        )
    tracker = _offline_tracker(args)
    if len(bags) == 1:
        return _evaluate_bag(args, bags[0], args.out, tracker)[1]
    outs = _report_dirs(bags, args.out)
    for out in outs:  # before any bag is scored, as for --out itself
        check_folder_output(out, "--out (a bag's report folder)")
    rows: list[BagSummaryRow] = []
    for bag, out in zip(bags, outs, strict=True):
        try:
            metrics, line = _evaluate_bag(args, bag, out, tracker)
        except (IphdError, ValueError, OSError) as exc:  # OSError: its report not written
            rows.append(BagSummaryRow(str(bag), str(out), None, str(exc)))
            print(f"{bag}: not scored: {exc}", file=sys.stderr)
            continue
        rows.append(BagSummaryRow(str(bag), str(out), metrics))
        print(f"{bag}: {line}")
    md, js = write_bags_summary(rows, args.out)
    failed = [row.bag for row in rows if row.metrics is None]
    if failed:
        raise DatasetError(
            f"{len(failed)} of {len(rows)} bags could not be scored ({', '.join(failed)}); "
            f"the others are in {md}, each bag's error too"
        )
    return f"wrote {md} and {js.name} ({len(rows)} bags)"


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``iphd-eval``; returns the exit status (0 ok, 2 bad input, 130 interrupted)."""
    args = get_args_parser().parse_args(argv)
    name = f"iphd-eval {args.command}"
    try:
        # Before any model runs: a report that cannot be written is known now.
        if args.command in ("detector", "bag"):
            check_folder_output(args.out)
        elif args.command == "video":
            check_file_output(args.out, overwrite=True)
        summary = args.handler(args)
    except (IphdError, ValueError) as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
