r"""Tune the tracker on bags with ground truth: replay it over recorded detections and embeddings.

Detection and embedding are most of what ``iphd-eval bag`` costs; the tracker itself takes about
2 ms a pair. This script runs the offline pipeline (``iphd.eval.pipeline``) once per bag, keeps
what the tracker was given each pair (boxes, scores, positions, embeddings), and then replays
the tracker alone for every combination of the settings given with ``--set``, scoring each run
as ``iphd-eval bag`` does (confirmed tracks against the labelled people, IoU >= 0.5). It prints
a Markdown table, best mean IDF1 first, and writes it with ``--out``. Its "true ids" column
scores the same confirmed boxes with every identity right: the gap to mean IDF1 is what
association costs, the rest of the way to 1 is detection and track confirmation.

    python training/tune_tracker.py --bag out/sim/tune_bag_seed1 out/sim/tune_bag_seed2 \
        --set reid_max_distance=0.8,1.0,1.3 --set lost_timeout_s=4,8 --cache out/tune_tracker

Tune on bags of their own, never on the bag you report: with a handful of bags one setting
often wins only because one bag flips, so read the per-bag columns before changing a default.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import pickle
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common import check_output_dir, check_output_file
from iphd.data.output import check_count
from iphd.data.truth import PersonTruth
from iphd.detections import BACKENDS
from iphd.errors import ConfigError, DatasetError, IphdError
from iphd.eval.cli import INT8_CALIBRATION_HELP
from iphd.eval.mot import (
    MotFrame,
    evaluate_hota,
    evaluate_mot,
    mot_frame,
    track_tuples,
    with_true_identities,
)
from iphd.eval.tracker_settings import parse_settings
from iphd.graph import OFFLINE_TOPIC_ARGUMENTS, add_topic_arguments, topics_from_args
from iphd.sim.labels import LabelConfig
from iphd.tracking.tracker import TimeOrderError, Tracker, TrackerConfig, TrackInput

#: Version of the recorded-inputs file; part of the cache key. 2: the key holds the models'
#: contents, so a re-trained shipped model is not replayed from an old cache. 3: the detector
#: node's thermal check takes cold detections out. 4: the check ignores filled-in pixels.
#: 5: the box verifier takes extra boxes out.
RECORD_VERSION = 5


@dataclass
class RecordedBag:
    """What the tracker was given over one bag, and the bag's ground truth.

    Attributes:
        name: the bag (for the table).
        frames: per pair, in order: (stamp ns, tracker inputs, image height in rows).
        truth: stamp ns -> every person in the frame (the label rule picks the labelled ones).
    """

    name: str
    frames: list[tuple[int, list[TrackInput], int]]
    truth: dict[int, list[PersonTruth]]


def record_bag(bag: Path, *, backend: str = "auto", reid_checkpoint: str = "",
               threads: int = 2, detector_checkpoint: str = "",
               score_threshold: float = 0.5,
               min_thermal_contrast_k: float = 0.0, verifier: str = "",
               min_verifier_probability: float = -1.0, calibration: str = "",
               int8_calibration: str = "",
               topics: dict[str, str] | None = None,
               tracking_frame: str = "") -> RecordedBag:
    """Run the offline pipeline over ``bag`` and keep the tracker's inputs.

    ``detector_checkpoint`` (empty = the shipped model), ``score_threshold``,
    ``min_thermal_contrast_k``, ``verifier`` (empty = the shipped box verifier, ``none`` = off)
    and ``min_verifier_probability`` (the detector node's) set what the tracker is given, as in
    ``iphd-eval bag``; ``calibration`` (a rig.yaml; empty = the bag's, else the package's)
    registers the thermal images; ``int8_calibration`` (the detector node's; empty = the
    shipped pairs) quantizes the int8 detector; ``topics`` names the bag's depth and thermal
    topics when another driver recorded them (``OfflineConfig.topics``); ``tracking_frame``
    (``odom`` on a moving robot: ``OfflineConfig.tracking_frame``, up axis z) puts the inputs'
    positions there through the bag's ``/tf``, and a pair with no transform is left out, as the
    tracker node drops it.
    """
    from iphd.data.rosbag import BagReader
    from iphd.eval.bag_eval import read_truth
    from iphd.eval.pipeline import OfflineConfig, pipeline_for_bag

    config = OfflineConfig(backend=backend, reid_checkpoint=reid_checkpoint, threads=threads,
                           detector_checkpoint=detector_checkpoint,
                           score_threshold=score_threshold,
                           min_thermal_contrast_k=min_thermal_contrast_k, verifier=verifier,
                           min_verifier_probability=min_verifier_probability,
                           calibration=calibration, int8_calibration=int8_calibration,
                           topics=topics or {}, tracking_frame=tracking_frame,
                           tracker=tracking_config(tracking_frame))
    frames: list[tuple[int, list[TrackInput], int]] = []
    with BagReader(bag) as reader:
        truth = read_truth(reader)
        pipeline = pipeline_for_bag(config, reader)
        tracker = pipeline.tracker
        given: list[list[TrackInput]] = []
        update = tracker.update

        def keep(stamp_ns: int, detections: Sequence[TrackInput]) -> Any:
            given.append(list(detections))
            return update(stamp_ns, detections)

        tracker.update = keep  # type: ignore[method-assign]
        for pair in pipeline.run_bag(reader):
            if len(given) > len(frames):  # tracked (a pair with no transform is not)
                frames.append((pair.stamp_ns, given[-1], pair.image_size[1]))
    return RecordedBag(str(bag), frames, truth)


def tracking_config(tracking_frame: str = "") -> TrackerConfig:
    """The tracker's defaults for tracks in ``tracking_frame``.

    Up axis z for odom and map (REP 103), the optical frame's -y without a tracking frame.
    """
    return TrackerConfig(up_axis="z") if tracking_frame else TrackerConfig()


def model_files(reid_checkpoint: str = "", detector_checkpoint: str = "",
                verifier: str = "", int8_calibration: str = "") -> list[Path]:
    """The model files ``record_bag`` runs: the detector, the depth embedder, the verifier.

    Empty paths stand for the shipped models; ``"none"`` for the embedder or the verifier means
    none runs. A given ``int8_calibration`` is listed too: it changes the int8 detector.
    """
    from iphd.detection.detector import SHIPPED_CHECKPOINT
    from iphd.detection.verifier import SHIPPED_VERIFIER
    from iphd.tracking.appearance import SHIPPED_DEPTH_EMBEDDER

    files = [Path(detector_checkpoint) if detector_checkpoint else Path(SHIPPED_CHECKPOINT)]
    if reid_checkpoint != "none":
        files.append(Path(reid_checkpoint) if reid_checkpoint else SHIPPED_DEPTH_EMBEDDER)
    if verifier.strip().lower() != "none":
        files.append(Path(verifier) if verifier else SHIPPED_VERIFIER)
    if int8_calibration:
        files.append(Path(int8_calibration))
    return files


def _file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes; a missing file gives its own marker (the run reports it)."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return f"missing:{path}"
    return digest.hexdigest()


def cached_call(bag: Path, cache: Path | None, record: Any, key_parts: tuple[Any, ...],
                tag: str = "", **kwargs: Any) -> Any:
    """``record(bag, **kwargs)``, pickled in ``cache`` under a key of the bag and ``key_parts``.

    The key holds the bag's metadata, the keywords and ``key_parts`` (a format version, the
    digests of the model files run), so a changed bag, setting or model gets a new entry.
    """
    if cache is None:
        return record(bag, **kwargs)
    meta = bag / "metadata.yaml"
    try:
        stamp = meta.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{bag} is not a bag folder ({exc}); pass a rosbag2 folder") from exc
    key = hashlib.sha256(
        repr((key_parts, str(bag.resolve()), stamp, sorted(kwargs.items()))).encode()
    ).hexdigest()[:16]
    path = cache / f"{bag.name}-{tag}{key}.pkl"
    if path.is_file():
        with path.open("rb") as f:
            return pickle.load(f)  # noqa: S301 - our own cache file
    recorded = record(bag, **kwargs)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        pickle.dump(recorded, f)
    tmp.replace(path)
    return recorded


def calibration_digest(settings: dict[str, Any]) -> str:
    """SHA-256 of the ``calibration`` file a recording uses ("" for the bag's own)."""
    path = str(settings.get("calibration", ""))
    return _file_digest(Path(path)) if path else ""


def model_digests(files: Sequence[Path]) -> list[str]:
    """SHA-256 of each model file (a missing one gets its own marker: the run reports it)."""
    return [_file_digest(p) for p in files]


def cached_record(bag: Path, cache: Path | None, **kwargs: Any) -> RecordedBag:
    """``record_bag``, kept in ``cache`` under a key of the bag, the settings and the models.

    The key holds the contents of the model files it runs, so a model re-trained in place (the
    shipped pair replaced) gets a new entry instead of the old model's inputs.
    """
    models = model_digests(model_files(str(kwargs.get("reid_checkpoint", "")),
                                       str(kwargs.get("detector_checkpoint", "")),
                                       str(kwargs.get("verifier", "")),
                                       str(kwargs.get("int8_calibration", ""))))
    recorded: RecordedBag = cached_call(bag, cache, record_bag,
                                        (RECORD_VERSION, models, calibration_digest(kwargs)),
                                        **kwargs)
    return recorded


def replay(recorded: RecordedBag, config: TrackerConfig,
           labels: LabelConfig | None = None) -> dict[str, float | None]:
    """Run a fresh tracker over the recorded inputs; CLEAR-MOT, ID and HOTA metrics as iphd-eval.

    ``hota`` is None when trackeval is not installed. ``idf1_true_ids`` is the IDF1 of the same
    confirmed boxes with every identity right (``iphd.eval.mot.with_true_identities``): what
    a perfect association would reach with this detector and these track lifetimes.
    """
    labels = labels or LabelConfig()
    tracker = Tracker(config)
    frames: list[MotFrame] = []
    for stamp_ns, inputs, height in recorded.frames:
        try:
            tracks = tracker.update(stamp_ns, inputs)
        except TimeOrderError:  # a looping bag, as the pipeline does
            tracker.reset()
            tracks = tracker.update(stamp_ns, inputs)
        people = recorded.truth.get(stamp_ns)
        if people is not None:
            frames.append(mot_frame(stamp_ns, people, track_tuples(tracks), height, labels))
    hota = evaluate_hota(frames)
    true_ids = evaluate_mot([with_true_identities(f) for f in frames])["idf1"]
    return {**evaluate_mot(frames), "hota": None if hota is None else hota["hota"],
            "idf1_true_ids": true_ids}


def grid(settings: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the settings (one empty combination: the defaults)."""
    names = list(settings)
    return [dict(zip(names, values, strict=True))
            for values in itertools.product(*settings.values())]


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


#: IDF1 difference from the defaults above which a bag counts as better or worse.
FLIP_MARGIN = 0.01


def _better_worse(idf1: Sequence[float | None], base: Sequence[float | None]) -> str:
    """"better / worse": bags whose IDF1 is above / below the defaults' by ``FLIP_MARGIN``."""
    pairs = [(v, b) for v, b in zip(idf1, base, strict=True) if v is not None and b is not None]
    better = sum(v > b + FLIP_MARGIN for v, b in pairs)
    worse = sum(v < b - FLIP_MARGIN for v, b in pairs)
    return f"{better} / {worse}"


def table(bags: Sequence[RecordedBag], combos: Sequence[dict[str, Any]],
          defaults: TrackerConfig | None = None) -> str:
    """Replay every combination on every bag; Markdown, best mean IDF1 first.

    ``defaults`` is what each combination changes (``tracking_config``: the tracker's own
    defaults, or up axis z for bags recorded in a tracking frame).

    Beside each mean, how many bags the setting makes better and worse than the defaults
    (``FLIP_MARGIN``): one bag's IDF1 turns on a handful of identity decisions, so a mean
    gain that a few bags carry while others lose is noise, not a better setting.
    """
    defaults = defaults or TrackerConfig()
    base = [replay(bag, defaults)["idf1"] for bag in bags] if {} not in combos else None
    rows = []
    for combo in combos:
        try:
            config = dataclasses.replace(defaults, **combo)
        except IphdError as exc:
            raise ConfigError(f"--set {combo}: {exc}") from exc
        scores = [replay(bag, config) for bag in bags]
        idf1 = [s["idf1"] for s in scores]
        if not combo:
            base = idf1
        mota = [s["mota"] for s in scores]
        mean_idf1 = float(np.mean([v for v in idf1 if v is not None] or [np.nan]))
        mean_mota = float(np.mean([v for v in mota if v is not None] or [np.nan]))
        hota = [s["hota"] for s in scores if s["hota"] is not None]
        mean_hota = float(np.mean(hota)) if hota else None
        switches = int(sum(s["num_switches"] or 0 for s in scores))
        true_ids = [s["idf1_true_ids"] for s in scores if s["idf1_true_ids"] is not None]
        mean_true = float(np.mean(true_ids)) if true_ids else float("nan")
        label = ", ".join(f"{k}={v}" for k, v in combo.items()) or "defaults"
        rows.append((mean_idf1, label, mean_mota, mean_hota, switches, mean_true, idf1))
    rows.sort(key=lambda r: -np.nan_to_num(r[0], nan=-1.0))
    names = [Path(b.name).name for b in bags]
    lines = [
        "| settings | mean IDF1 | mean MOTA | mean HOTA | ID switches | mean IDF1, true ids | "
        "bags better / worse than the defaults | "
        + " | ".join(f"IDF1 {n}" for n in names) + " |",
        "|---|---|---|---|---|---|---|" + "---|" * len(names),
    ]
    assert base is not None
    for mean_idf1, label, mean_mota, mean_hota, switches, mean_true, idf1 in rows:
        hota_text = "—" if mean_hota is None else f"{mean_hota:.4f}"
        flips = "—" if label == "defaults" else _better_worse(idf1, base)
        lines.append(
            f"| {label} | {mean_idf1:.4f} | {mean_mota:.4f} | {hota_text} | {switches} | "
            f"{mean_true:.4f} | {flips} | " + " | ".join(_fmt(v) for v in idf1) + " |"
        )
    return (
        "\n".join(lines)
        + f"\n\nBetter / worse: bags whose IDF1 differs from the defaults' by more than "
        f"{FLIP_MARGIN}.\n"
    )


def add_pipeline_arguments(parser: argparse.ArgumentParser, verifier: bool = True) -> None:
    """The detector and embedder settings a recording runs with (the nodes' parameters)."""
    parser.add_argument("--backend", default="auto",
                        help="detector backend (auto, torch, onnxruntime, onnxruntime-int8)")
    parser.add_argument("--reid-checkpoint", default="",
                        help="depth embedder; empty = shipped, none = position only")
    parser.add_argument("--detector-checkpoint", default="",
                        help="detector checkpoint (.pt or .onnx); empty = the shipped model")
    parser.add_argument("--score-threshold", type=float, default=0.5,
                        help="lowest detection score handed to the tracker (the detector "
                        "node's score_threshold)")
    parser.add_argument("--min-thermal-contrast", type=float, default=0.0, metavar="K",
                        help="the detector node's min_thermal_contrast_k (0 = no thermal "
                        "check)")
    if verifier:
        parser.add_argument("--verifier", default="",
                            help="the detector node's box verifier (.npz); empty = the shipped "
                            "one, none = off")
        parser.add_argument("--min-verifier-probability", type=float, default=-1.0,
                            metavar="P", help="the detector node's min_verifier_probability "
                            "(negative = the verifier file's threshold)")
    parser.add_argument("--calibration", default="",
                        help="rig.yaml to register thermal with (default: the one each bag "
                        "stores, else the package's nominal one)")
    parser.add_argument("--int8-calibration", default="", help=INT8_CALIBRATION_HELP)
    parser.add_argument("--threads", type=int, default=2)
    add_topic_arguments(parser, OFFLINE_TOPIC_ARGUMENTS, "the bag's")
    parser.add_argument("--tracking-frame", default="", metavar="FRAME",
                        help="the tracker node's tracking_frame: track in FRAME (odom, map) "
                        "through the bags' /tf, up axis z, as on a moving robot (default: the "
                        "detections' frame)")


def pipeline_settings(args: argparse.Namespace) -> dict[str, Any]:
    """``add_pipeline_arguments``'s values as ``record_bag`` keywords.

    Raises:
        ConfigError: a value no recording could run with (said before the first bag, not
            after the earlier ones were recorded).
    """
    if args.backend not in BACKENDS:
        raise ConfigError(f"--backend must be one of {', '.join(BACKENDS)}, got "
                          f"{args.backend!r}")
    check_count("--threads", args.threads, 1)
    settings = {"backend": args.backend, "reid_checkpoint": args.reid_checkpoint,
                "threads": args.threads, "detector_checkpoint": args.detector_checkpoint,
                "score_threshold": args.score_threshold,
                "min_thermal_contrast_k": args.min_thermal_contrast,
                "calibration": args.calibration}
    if hasattr(args, "verifier"):
        settings.update(verifier=args.verifier,
                        min_verifier_probability=args.min_verifier_probability)
    if args.int8_calibration:  # only when given: earlier cache keys stay valid
        settings["int8_calibration"] = args.int8_calibration
    topics = topics_from_args(args, OFFLINE_TOPIC_ARGUMENTS)
    if topics:  # the same
        settings["topics"] = topics
    if args.tracking_frame:  # the same
        settings["tracking_frame"] = args.tracking_frame
    return settings


def check_bags(bags: Sequence[Path]) -> None:
    """Refuse, before any is recorded, a bag that is missing or has no ground truth.

    Raises:
        DatasetError: naming the bags that do not exist, or the first without ground truth.
    """
    from iphd.eval.bag_eval import check_ground_truth

    missing = [str(b) for b in bags if not Path(b).exists()]
    if missing:
        raise DatasetError(f"bag {', '.join(missing)} does not exist")
    check_ground_truth(bags)


def emit(text: str, path: Path | None) -> None:
    """Print ``text`` and, with ``path``, write it there too."""
    print(text, end="")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def get_args_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bag", nargs="+", action="extend", required=True, type=Path,
                        help="bags with ground_truth/people (several after one --bag, or "
                        "--bag repeated)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=V1,V2",
                        help="a TrackerConfig setting and the values to try (repeat; every "
                        "combination runs); none = the defaults only")
    parser.add_argument("--cache", type=Path,
                        help="keep each bag's recorded tracker inputs here (re-runs skip the "
                        "detector and embedder)")
    add_pipeline_arguments(parser)
    parser.add_argument("--out", type=Path, help="also write the table to this Markdown file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Record every bag (or take it from the cache), replay every combination, print the table."""
    args = get_args_parser().parse_args(argv)
    try:
        combos = grid(parse_settings(args.set))
        defaults = tracking_config(args.tracking_frame)
        for combo in combos:  # refuse bad values before the long part
            dataclasses.replace(defaults, **combo)
        settings = pipeline_settings(args)
        if args.cache is not None:
            check_output_dir(args.cache, "--cache")
        if args.out is not None:
            check_output_file(args.out, "--out", "table.md")
        check_bags(args.bag)
        bags = []
        for bag in args.bag:
            print(f"recording the tracker's inputs over {bag}", file=sys.stderr, flush=True)
            bags.append(cached_record(bag, args.cache, **settings))
        text = table(bags, combos, defaults)
    except IphdError as exc:
        print(f"tune_tracker: {exc}", file=sys.stderr)
        return 2
    emit(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
