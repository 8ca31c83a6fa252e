r"""Turn bags with ground truth into an IPHD-format split, to fine-tune the detector on them.

Each bag is run through the fusion stage as the graph runs it (synchronisation and
registration with the shipped settings, the registration holes left in as the detector node
gets them: ``iphd.eval.pipeline``); every pair whose depth stamp has a
``ground_truth/people`` message becomes one IPHD frame: the depth image as recorded (mm), the
registered thermal image the detector node is given (centi-kelvin, the fusion's
``registered_scale`` of the depth size), and the labelled people's boxes (the IPHD label
rule, ``iphd.sim.labels``) in both ``labels/`` and ``labels_clean/``. Frames keep the bag's
size, so train with ``data.any_size=true``.

    # your robot's bags, annotated with iphd-eval export-mot / import-mot:
    python training/bag_to_iphd.py --bag bags/kitchen_gt bags/office_gt --out data/my_rig \
        --split train
    python training/bag_to_iphd.py --bag bags/hall_gt --out data/my_rig --split valid
    python training/train_detector.py --config training/configs/detector/cpu_sim_finetune.yaml \
        --set data.root=data/my_rig --set data.labels=weak --set data.any_size=true

Each bag is one sequence (``vidNNNNN``, numbered from ``--first-seq``). Keep the bags of a
room or a day in one split, so that validation measures scenes training did not see.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from common import bag_dataset_parser, check_output_dir
from iphd.data.iphd import (
    IPHD_SPLITS,
    finalize_split,
    frame_meta,
    frame_name,
    split_dir,
    write_frame,
)
from iphd.data.rosbag import BagReader
from iphd.errors import DatasetError, IphdError
from iphd.eval.bag_eval import check_ground_truth, read_truth
from iphd.eval.pipeline import FusedImages, OfflineConfig, pipeline_for_bag
from iphd.graph import OFFLINE_TOPIC_ARGUMENTS, add_topic_arguments, topics_from_args
from iphd.sim.labels import label_people


@dataclass
class Converted:
    """What one bag gave."""

    frames: int
    boxes: int
    pairs_without_truth: int


def convert_bag(
    bag: Path, root: Path, split: str, seq: int, names: list[str], metas: list[dict[str, Any]],
    *, every: int = 1, config: OfflineConfig | None = None, progress: bool = False,
) -> Converted:
    """Write the frames of one bag into ``root``'s ``split`` as sequence ``seq``.

    Appends each frame's name and ``meta.jsonl`` record to ``names`` and ``metas``
    (``finalize_split`` writes them once every bag is done).

    Raises:
        DatasetError: an unreadable bag, no ground truth or no depth/thermal topics.
    """
    fused = FusedImages()
    frames = boxes = without = index = 0
    config = config or OfflineConfig(reid_checkpoint="none", verifier="none")
    with BagReader(bag) as reader:
        truth = read_truth(reader)
        pipeline = pipeline_for_bag(config, reader)
        pipeline.on_fused = fused.keep
        with tqdm(unit="pair", desc=bag.name, disable=not progress, file=sys.stderr) as bar:
            for pair in pipeline.run_bag(reader):
                images = fused.take(pair.stamp_ns)
                bar.update(1)
                people = truth.get(pair.stamp_ns)
                if people is None or images is None:
                    without += 1
                    continue
                depth_mm, registered_ck = images
                index += 1
                if (index - 1) % every:
                    continue
                labelled = label_people(people, depth_mm.shape[0])
                xyxy = np.asarray([p.box_xyxy for p in labelled], dtype=np.float64).reshape(-1, 4)
                name = frame_name(seq, frames)
                write_frame(root, split, name, depth_mm, registered_ck, xyxy, xyxy)
                metas.append(frame_meta(name, seq, frames, pair.stamp_ns, labelled))
                names.append(name)
                frames += 1
                boxes += len(labelled)
    return Converted(frames, boxes, without)


def get_args_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = bag_dataset_parser(__doc__.split("\n\n")[0], "IPHD", IPHD_SPLITS)
    parser.add_argument("--every", type=int, default=1,
                        help="keep every N-th labelled pair (default %(default)s: all)")
    parser.add_argument("--first-seq", type=int, default=0,
                        help="sequence number of the first bag (default %(default)s)")
    parser.add_argument("--calibration", default="",
                        help="rig.yaml to register thermal with (default: the one each bag "
                        "stores, else the package's nominal one)")
    parser.add_argument("--threads", type=int, default=2)
    add_topic_arguments(parser, OFFLINE_TOPIC_ARGUMENTS, "the bag's")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Convert the bags; print what was written and how to train on it."""
    args = get_args_parser().parse_args(argv)
    if args.every < 1 or args.first_seq < 0:
        print("bag_to_iphd: --every must be >= 1 and --first-seq >= 0", file=sys.stderr)
        return 2
    if args.threads < 1:
        print(f"bag_to_iphd: --threads must be >= 1, got {args.threads}", file=sys.stderr)
        return 2
    try:
        check_output_dir(args.out, "--out")
    except IphdError as exc:
        print(f"bag_to_iphd: error: {exc}", file=sys.stderr)
        return 2
    images = split_dir(args.out, args.split, "depth") / "images"
    if images.is_dir() and any(images.iterdir()):
        print(f"bag_to_iphd: {images} holds frames: the split was written before; write to "
              "another --out or --split, or remove it (a split is written in one go)",
              file=sys.stderr)
        return 2
    missing = [str(b) for b in args.bag if not b.exists()]
    if missing:
        print(f"bag_to_iphd: bag {', '.join(missing)} does not exist", file=sys.stderr)
        return 2
    names: list[str] = []
    metas: list[dict[str, Any]] = []
    config = OfflineConfig(reid_checkpoint="none", verifier="none", threads=args.threads,
                           calibration=args.calibration,
                           topics=topics_from_args(args, OFFLINE_TOPIC_ARGUMENTS))
    try:
        check_ground_truth(args.bag)  # every bag, before a split is half written
        for k, bag in enumerate(args.bag):
            done = convert_bag(bag, args.out, args.split, args.first_seq + k, names, metas,
                               every=args.every, config=config, progress=not args.quiet)
            note = (f", {done.pairs_without_truth} pairs without ground truth skipped"
                    if done.pairs_without_truth else "")
            print(f"{bag}: {done.frames} frames, {done.boxes} labelled people{note}")
        if not names:
            raise DatasetError(
                "no pair had ground truth at its depth stamp, so nothing was written; give "
                "bags with ground_truth/people (iphd-eval import-mot)"
            )
        finalize_split(args.out, args.split, names, metas)
    except (IphdError, ValueError) as exc:
        print(f"bag_to_iphd: error: {exc}", file=sys.stderr)
        if names:
            folders = split_dir(args.out, args.split, "depth").parent / f"iphd_{args.split}_*"
            print(f"bag_to_iphd: the split is incomplete: remove {folders} before running again",
                  file=sys.stderr)
        return 2
    print(f"wrote {len(names)} frames to {split_dir(args.out, args.split, 'depth').parent} "
          f"(split {args.split}); train with --set data.root={args.out} --set data.any_size=true")
    return 0


if __name__ == "__main__":
    sys.exit(main())
