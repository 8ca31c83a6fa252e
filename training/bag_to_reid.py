r"""Cut re-ID training crops out of bags with ground truth, to fine-tune the re-ID embedders.

The tracker re-identifies people with a depth embedder trained on simulated people. Your robot
sees other people, rooms and depth noise; bags annotated with identities (``iphd-eval
export-mot`` / ``import-mot``, or ``iphd-sim bag``) hold what it needs to learn them. Each
labelled person (the IPHD label rule, as ``iphd-eval`` scores) of a depth frame becomes one
metric depth crop, cut exactly as the tracker cuts it (``iphd.data.reid.metric_crop`` on the
depth image as recorded, with the bag's depth ``camera_info``), at most ``--rate`` times a
second per person. A person's session is one visit: it ends when they were not labelled for
more than ``--gap`` seconds, so step-I validation (every crop queries the other sessions)
measures what the tracker needs, recognising someone who came back.

    # your bags with ground truth: most for training, a few others for the test split
    python training/bag_to_reid.py --bag bags/ward_a_gt bags/ward_b_gt --out data/my_reid \
        --split train
    python training/bag_to_reid.py --bag bags/ward_c_gt --out data/my_reid --split test
    # fine-tune the shipped depth embedder on them (cpu_sim_depth_finetune.yaml: its
    # architecture and crop settings, started from its weights)
    python training/train_reid.py --config training/configs/reid/cpu_sim_depth_finetune.yaml \
        --data data/my_reid --out out/train/reid/my_depth

The output is the simulator's re-ID layout (``iphd.data.reid``: ``<split>/depth/<pid>/*.png``,
``<split>/records.csv``, and ``simulator.yaml`` saying the crops are metric, which training
checks). A fine-tuned depth model needs a new RGB network for ``query/image`` (step II distils
it from the depth model on time-paired crops). ``--rgb`` cuts those pairs from bags that
recorded the colour camera too (the iphd d435 node's ``enable_color``, ``iphd-sim bag --rgb``):
each depth crop gets an RGB crop from the colour frame closest in time (``--rgb-tolerance``),
the person's depth box carried into the colour image at their distance through
``color/camera_info`` and the depth -> colour transform on ``/tf_static``. A person the colour
camera does not see (it sees less than the depth camera) keeps an unpaired depth crop. Colour
images show who people are: record them only with the people's consent, and keep the
recordings out of the robot's normal logs.

    python training/bag_to_reid.py --bag bags/ward_rgb_a bags/ward_rgb_b --out data/my_reid \
        --split train --rgb

Identities are numbered per bag, since annotation tools number each bag's people from 1; with
``--shared-ids`` one id is one person across the bags (the same staff on several days).
``identities_<split>.csv`` maps each dataset pid back to its bag and id. Train and test
identities must differ, which is checked.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from tqdm import tqdm

from common import bag_dataset_parser, check_output_dir
from iphd.calibration import StaticTransform, points_transform
from iphd.data.reid import (
    MAX_PID,
    METRIC_WINDOW_M,
    REID_SPLITS,
    ReidRecord,
    check_disjoint,
    crop_person,
    finalize_split,
    metric_crop,
    person_depth_mm,
    read_records,
    write_crop,
)
from iphd.data.rosbag import (
    COLOR_IMAGE,
    COLOR_INFO,
    DEPTH_IMAGE,
    DEPTH_INFO,
    BagReader,
    camera_info_to_intrinsics,
    header_stamp_ns,
    image_to_array,
    read_static_transforms,
)
from iphd.errors import CalibrationError, DatasetError, FrameError, IphdError
from iphd.eval.bag_eval import check_ground_truth, read_truth
from iphd.eval.pipeline import bag_topic_label, camera_topics
from iphd.fusion import DEPTH_ENCODINGS, depth_to_mm
from iphd.graph import DEPTH_TOPIC_ARGUMENTS, add_topic_arguments, topics_from_args
from iphd.registration import project_box
from iphd.sensors.frames import CameraIntrinsics
from iphd.sim.labels import label_people

#: Written next to the splits; ``train_reid.py`` reads its ``depth_crop``.
MANIFEST = "simulator.yaml"
GENERATOR = "training/bag_to_reid.py"
#: Colour encodings read (the D435 publishes rgb8; bgr8 is turned into RGB).
COLOR_ENCODINGS = ("rgb8", "bgr8")
#: Least share of a person's box (projected into the colour image) inside that image for an
#: RGB crop: the colour camera sees less than the depth camera, and half a person is no query.
MIN_COLOR_VIEW = 0.9
FINETUNE_CONFIG = (
    Path(__file__).resolve().parent / "configs" / "reid" / "cpu_sim_depth_finetune.yaml"
)
DISTILL_CONFIG = (
    Path(__file__).resolve().parent / "configs" / "reid" / "cpu_sim_distill_finetune.yaml"
)


@dataclass
class Identities:
    """Dataset pids of (bag number, bag's person id), numbered from ``first_pid`` as first seen.

    Bags are told apart by their place on the command line, not their names: two recordings
    are often both called ``bag`` in folders of their own.
    """

    first_pid: int = 0
    shared: bool = False
    pids: dict[tuple[int, int], int] = field(default_factory=dict)

    def pid(self, bag: int, person: int) -> int:
        """The dataset pid of ``person`` in bag number ``bag``.

        Raises:
            DatasetError: more identities than the dataset format holds.
        """
        key = (-1, person) if self.shared else (bag, person)
        if key not in self.pids:
            pid = self.first_pid + len(self.pids)
            if pid > MAX_PID:
                raise DatasetError(
                    f"more than {MAX_PID + 1} identities: the re-ID format numbers them "
                    f"0..{MAX_PID}; write fewer bags into one dataset"
                )
            self.pids[key] = pid
        return self.pids[key]

    def rows(self) -> list[tuple[int, int, int]]:
        """(pid, bag number, bag's person id) per identity; the bag is -1 with ``shared``."""
        return sorted((pid, bag, person) for (bag, person), pid in self.pids.items())


@dataclass
class Cut:
    """What one bag gave."""

    crops: int = 0
    rgb_crops: int = 0
    frames_without_truth: int = 0
    people_without_depth: int = 0
    people_without_color: int = 0
    bad_frames: int = 0


@dataclass
class _Visits:
    """Per person: the visit count, when they were last labelled and last cropped."""

    visit: dict[int, int] = field(default_factory=dict)
    last_seen_ns: dict[int, int] = field(default_factory=dict)
    last_kept_ns: dict[int, int] = field(default_factory=dict)

    def session(self, pid: int, stamp_ns: int, gap_s: float) -> int:
        """The person's visit number at ``stamp_ns`` (a gap longer than ``gap_s`` starts one)."""
        seen = self.last_seen_ns.get(pid)
        if seen is None or (stamp_ns - seen) * 1e-9 > gap_s:
            self.visit[pid] = self.visit.get(pid, -1) + 1
        self.last_seen_ns[pid] = stamp_ns
        return self.visit[pid]

    def due(self, pid: int, stamp_ns: int, rate_hz: float) -> bool:
        """Whether a crop of ``pid`` is due (at most ``rate_hz`` a second), and mark it kept."""
        kept = self.last_kept_ns.get(pid)
        # Half a depth frame of slack, so 2 Hz of a 30 Hz camera is every 15th frame.
        if kept is not None and (stamp_ns - kept) * 1e-9 < 1.0 / rate_hz - 0.017:
            return False
        self.last_kept_ns[pid] = stamp_ns
        return True


@dataclass
class _Person:
    """One person's depth crop, with what finding them in the colour image needs."""

    pid: int
    session: str
    camid: int
    crop: np.ndarray
    box_xyxy: tuple[float, float, float, float]
    distance_m: float
    visibility: float = 1.0


@dataclass
class _DepthFrame:
    """The crops of one depth frame, waiting for the colour frame closest in time."""

    stamp_ns: int
    frame_id: str
    intrinsics: CameraIntrinsics
    people: list[_Person]


class _Split:
    """Writes a split's crops: depth alone, or depth with its time-paired RGB crop."""

    def __init__(self, root: Path, split: str, records: list[ReidRecord]) -> None:
        self.root, self.split, self.records = root, split, records

    def write(self, stamp_ns: int, person: _Person, rgb: tuple[int, np.ndarray] | None) -> None:
        """Write ``person``'s depth crop, and ``rgb`` = (colour stamp, RGB crop) as its pair."""
        pair_id = -1 if rgb is None else len(self.records)  # unique: records only grow
        self.records.append(write_crop(
            self.root, self.split, person.crop, pid=person.pid, camid=person.camid,
            modality="depth", session=person.session, stamp_ns=stamp_ns, pair_id=pair_id,
        ))
        if rgb is not None:
            self.records.append(write_crop(
                self.root, self.split, rgb[1], pid=person.pid, camid=person.camid + 1,
                modality="rgb", session=person.session, stamp_ns=rgb[0], pair_id=pair_id,
            ))


class _ColorPairing:
    """Pairs depth frames with the colour frame closest in time and cuts the people's RGB crops.

    Messages come in receive order, so a depth frame waits until a colour frame stamped more
    than ``tolerance_ns`` after it arrives (none later can be closer), a depth frame
    ``WAIT_S`` later arrives (the colour stream stopped: its crops are written unpaired rather
    than held), or the bag ends.
    """

    #: Longest a depth frame waits for its colour frame, in seconds of depth stamps.
    WAIT_S = 2.0

    def __init__(self, bag: Path, transforms: list[StaticTransform], tolerance_ns: int,
                 out: _Split, cut: Cut, min_visibility: float = 0.0) -> None:
        self.bag, self.transforms, self.tolerance_ns = bag, transforms, tolerance_ns
        self.out, self.cut, self.min_visibility = out, cut, min_visibility
        self.intrinsics: CameraIntrinsics | None = None
        self.frames: deque[tuple[int, Any]] = deque()
        self.pending: deque[_DepthFrame] = deque()
        self._extrinsics: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}

    def add_color(self, msg: Any) -> None:
        """Take a colour image; resolve the depth frames it is too late for."""
        stamp = header_stamp_ns(msg)
        self.frames.append((stamp, msg))
        while self.pending and self.pending[0].stamp_ns + self.tolerance_ns < stamp:
            self._resolve(self.pending.popleft())
        oldest = self.pending[0].stamp_ns if self.pending else stamp
        while self.frames and self.frames[0][0] < oldest - self.tolerance_ns:
            self.frames.popleft()

    def add_depth(self, frame: _DepthFrame) -> None:
        """Queue a depth frame's people until its colour frame is known."""
        wait_ns = int(self.WAIT_S * 1e9)
        while self.pending and frame.stamp_ns - self.pending[0].stamp_ns > wait_ns:
            self._resolve(self.pending.popleft())
        self.pending.append(frame)

    def finish(self) -> None:
        """Resolve what is left at the end of the bag."""
        while self.pending:
            self._resolve(self.pending.popleft())

    def _extrinsic(self, depth: str, color: str) -> tuple[np.ndarray, np.ndarray]:
        key = (depth, color)
        if key not in self._extrinsics:
            try:
                self._extrinsics[key] = points_transform(self.transforms, depth, color)
            except CalibrationError as exc:
                raise DatasetError(
                    f"{self.bag}: {exc} (the iphd d435 node publishes depth -> colour on "
                    "/tf_static when enable_color is on)"
                ) from exc
        return self._extrinsics[key]

    def _resolve(self, frame: _DepthFrame) -> None:
        near = [(abs(s - frame.stamp_ns), s, m) for s, m in self.frames
                if abs(s - frame.stamp_ns) <= self.tolerance_ns]
        view = None  # (colour stamp, RGB image, rotation, translation)
        if near and self.intrinsics is not None:
            _, stamp, msg = min(near, key=lambda n: (n[0], n[1]))
            try:
                image = image_to_array(msg, COLOR_ENCODINGS)
            except FrameError:
                self.cut.bad_frames += 1
            else:
                if str(msg.encoding) == "bgr8":
                    image = np.ascontiguousarray(image[..., ::-1])
                view = (stamp, image,
                        *self._extrinsic(frame.frame_id, str(msg.header.frame_id)))
        for person in frame.people:
            rgb = None
            if (view is not None and self.intrinsics is not None
                    and person.visibility >= self.min_visibility):
                stamp, image, rotation, translation = view
                crop = _rgb_crop(image, person, frame.intrinsics, self.intrinsics, rotation,
                                 translation)
                rgb = None if crop is None else (stamp, crop)
            self.cut.people_without_color += rgb is None
            self.cut.rgb_crops += rgb is not None
            self.out.write(frame.stamp_ns, person, rgb)


def _rgb_crop(
    image: np.ndarray, person: _Person, depth: CameraIntrinsics, color: CameraIntrinsics,
    rotation: np.ndarray, translation: np.ndarray,
) -> np.ndarray | None:
    """The person's RGB crop, or None when the colour camera does not see most of them."""
    if image.shape[:2] != (color.height, color.width):
        return None
    try:
        box = project_box(person.box_xyxy, person.distance_m, depth, color, rotation,
                          translation)
    except ValueError:
        return None
    x1, y1, x2, y2 = box
    inside = (max(0.0, min(x2, color.width) - max(x1, 0.0))
              * max(0.0, min(y2, color.height) - max(y1, 0.0)))
    if inside < MIN_COLOR_VIEW * (x2 - x1) * (y2 - y1):
        return None
    return crop_person(image, box)


def cut_bag(
    bag: Path, root: Path, split: str, bag_index: int, identities: Identities,
    records: list[ReidRecord], sessions: dict[str, int], *, rate_hz: float = 2.0,
    gap_s: float = 1.0, rgb: bool = False, rgb_tolerance_s: float = 0.02,
    rgb_min_visibility: float = 0.0, renamed: Mapping[str, str] | None = None,
    progress: bool = False,
) -> Cut:
    """Write the crops of one bag's labelled people into ``root``'s ``split``.

    Appends the crops' records to ``records`` (``finalize_split`` writes them once every bag is
    done); ``sessions`` numbers the sessions of the whole split (their camera ids). With
    ``rgb``, each depth crop is paired with an RGB crop from the colour frame closest in time
    (within ``rgb_tolerance_s``) when the colour camera sees the person and at least
    ``rgb_min_visibility`` of them is unhidden (the ground truth's visibility). ``renamed``
    names the bag's depth and colour topics when a driver recorded them under its own names
    (``depth/image_raw`` -> ``/camera/camera/depth/image_rect_raw``, ...).

    Raises:
        DatasetError: an unreadable bag, or one without ground truth, depth or depth
            camera_info, or (with ``rgb``) colour or the depth -> colour transform.
    """
    cut = Cut()
    visits = _Visits()
    out = _Split(root, split, records)
    with BagReader(bag) as reader:
        truth = read_truth(reader)
        depth_topics = camera_topics(reader.topics, DEPTH_IMAGE, DEPTH_INFO, renamed)
        if depth_topics is None:
            raise DatasetError(
                f"{bag} needs {bag_topic_label(DEPTH_IMAGE, renamed)} and "
                f"{bag_topic_label(DEPTH_INFO, renamed)} (the crops are cut at the person's "
                f"distance with the depth camera's focal lengths); it has "
                f"{', '.join(sorted(reader.topics))} (a driver's own names go in --depth-topic "
                "and --depth-info-topic)"
            )
        depth_topic, info_topic = depth_topics
        topics = [depth_topic, info_topic]
        color_topic = color_info_topic = None
        pairing = None
        if rgb:
            color_topics = camera_topics(reader.topics, COLOR_IMAGE, COLOR_INFO, renamed)
            if color_topics is None:
                raise DatasetError(
                    f"{bag} has no {bag_topic_label(COLOR_IMAGE, renamed)} and "
                    f"{bag_topic_label(COLOR_INFO, renamed)}, which --rgb needs: record the colour "
                    "camera too (the iphd d435 node's enable_color, iphd-sim bag --rgb; another "
                    "driver's names go in --color-topic and --color-info-topic) or leave out "
                    "--rgb"
                )
            color_topic, color_info_topic = color_topics
            topics += [color_topic, color_info_topic]
            pairing = _ColorPairing(bag, read_static_transforms(reader),
                                    int(round(rgb_tolerance_s * 1e9)), out, cut,
                                    rgb_min_visibility)
        intrinsics: CameraIntrinsics | None = None
        total = reader.topics[depth_topic].count
        with tqdm(total=total, unit="frame", desc=bag.name, disable=not progress,
                  file=sys.stderr) as bar:
            for topic, _type, _log, msg in reader.messages(topics):
                if topic in (info_topic, color_info_topic):
                    try:
                        k = camera_info_to_intrinsics(msg)
                    except IphdError:
                        cut.bad_frames += 1
                        continue
                    if topic == info_topic:
                        intrinsics = k
                    elif pairing is not None:
                        pairing.intrinsics = k
                    continue
                if topic == color_topic:
                    if pairing is not None:
                        pairing.add_color(msg)
                    continue
                bar.update(1)
                stamp_ns = header_stamp_ns(msg)
                people = truth.get(stamp_ns)
                if people is None or intrinsics is None:
                    cut.frames_without_truth += people is None
                    cut.bad_frames += people is not None
                    continue
                try:
                    depth_mm = depth_to_mm(image_to_array(msg, DEPTH_ENCODINGS), str(msg.encoding))
                except FrameError:
                    cut.bad_frames += 1
                    continue
                frame = _DepthFrame(stamp_ns, str(msg.header.frame_id), intrinsics, [])
                for person in label_people(people, depth_mm.shape[0]):
                    pid = identities.pid(bag_index, person.pid)
                    visit = visits.session(pid, stamp_ns, gap_s)
                    if not visits.due(pid, stamp_ns, rate_hz):
                        continue
                    try:
                        crop = metric_crop(depth_mm, person.box_xyxy, intrinsics.fx,
                                           intrinsics.fy)
                    except ValueError:  # no valid depth on the person: no distance, no crop
                        cut.people_without_depth += 1
                        continue
                    session = f"b{bag_index:03d}p{pid:05d}v{visit:03d}"
                    camid = 2 * sessions.setdefault(session, len(sessions))  # odd ids: RGB
                    distance_m = person_depth_mm(depth_mm, person.box_xyxy) / 1000.0
                    frame.people.append(_Person(pid, session, camid, crop,
                                                tuple(person.box_xyxy), distance_m,
                                                person.visibility))
                    cut.crops += 1
                if pairing is not None:
                    if frame.people:
                        pairing.add_depth(frame)
                else:
                    for p in frame.people:
                        out.write(stamp_ns, p, None)
        if pairing is not None:
            pairing.finish()
    return cut


def _other_split(root: Path, split: str) -> list[ReidRecord]:
    other = next(s for s in REID_SPLITS if s != split)
    return read_records(root, other) if (root / other / "records.csv").is_file() else []


def _write_manifest(root: Path, split: str, settings: dict[str, Any]) -> None:
    """Add this split's settings to ``simulator.yaml`` (metric crops; refuses another kind)."""
    path = root / MANIFEST
    manifest: dict[str, Any] = {}
    if path.is_file():
        loaded = yaml.safe_load(path.read_text())
        manifest = loaded if isinstance(loaded, dict) else {}
    manifest.update({"generator": GENERATOR, "depth_crop": "metric",
                     "depth_window_m": list(METRIC_WINDOW_M)})
    manifest.setdefault("splits", {})[split] = settings
    path.write_text(yaml.safe_dump(manifest, sort_keys=True))


def _check_root(root: Path, split: str) -> None:
    """Refuse a split written before and a dataset of letterboxed crops.

    Raises:
        DatasetError: naming what to do.
    """
    if (root / split / "records.csv").is_file() or (root / split / "depth").is_dir():
        raise DatasetError(
            f"{root / split} was written before; write to another --out or --split, or remove "
            "it (a split is written in one go)"
        )
    path = root / MANIFEST
    if path.is_file():
        loaded = yaml.safe_load(path.read_text())
        crop = loaded.get("depth_crop", "letterbox") if isinstance(loaded, dict) else None
        if crop != "metric":
            raise DatasetError(
                f"{path} says its crops are {crop!r}, these are metric: write to another --out"
            )


#: ``--color-topic`` and ``--color-info-topic`` (``--rgb`` with another driver's names).
COLOR_TOPIC_ARGUMENTS = {"color_topic": COLOR_IMAGE, "color_info_topic": COLOR_INFO}


def get_args_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = bag_dataset_parser(__doc__.split("\n\n")[0], "re-ID", REID_SPLITS)
    parser.add_argument("--rate", type=float, default=2.0,
                        help="most crops per person and second (default %(default)s)")
    parser.add_argument("--gap", type=float, default=1.0,
                        help="seconds unlabelled that end a person's session (default "
                        "%(default)s)")
    parser.add_argument("--shared-ids", action="store_true",
                        help="a ground-truth id is one person in every bag (default: per bag)")
    parser.add_argument("--rgb", action="store_true",
                        help="pair each depth crop with an RGB crop from the bag's colour camera "
                        "(color/image_raw, color/camera_info, depth -> colour on /tf_static), "
                        "for distilling the RGB query network")
    parser.add_argument("--rgb-tolerance", type=float, default=0.02,
                        help="most seconds between a depth frame and the colour frame paired "
                        "with it (default %(default)s)")
    parser.add_argument("--rgb-min-visibility", type=float, default=0.0,
                        help="least visible fraction of a person (ground truth) for an RGB pair; "
                        "more hidden people keep unpaired depth crops (default %(default)s)")
    add_topic_arguments(parser, {**DEPTH_TOPIC_ARGUMENTS, **COLOR_TOPIC_ARGUMENTS}, "the bag's")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Cut the crops; print what was written and how to train on it."""
    args = get_args_parser().parse_args(argv)
    if not (math.isfinite(args.rate) and args.rate > 0 and math.isfinite(args.gap)
            and args.gap >= 0):
        print("bag_to_reid: --rate must be > 0 and --gap >= 0", file=sys.stderr)
        return 2
    if not (math.isfinite(args.rgb_tolerance) and 0 <= args.rgb_tolerance <= 1):
        print("bag_to_reid: --rgb-tolerance must be 0..1 s (a colour frame of the same moment)",
              file=sys.stderr)
        return 2
    if not 0 <= args.rgb_min_visibility <= 1:  # also refuses nan
        print("bag_to_reid: --rgb-min-visibility must be a fraction, 0..1", file=sys.stderr)
        return 2
    missing = [str(b) for b in args.bag if not b.exists()]
    if missing:
        print(f"bag_to_reid: bag {', '.join(missing)} does not exist", file=sys.stderr)
        return 2
    root: Path = args.out
    records: list[ReidRecord] = []
    try:
        check_output_dir(root, "--out")
        _check_root(root, args.split)
        check_ground_truth(args.bag)  # every bag, before a split is half written
        other = _other_split(root, args.split)
        identities = Identities(max((r.pid for r in other), default=-1) + 1, args.shared_ids)
        sessions: dict[str, int] = {}
        for k, bag in enumerate(args.bag):
            done = cut_bag(bag, root, args.split, k, identities, records, sessions,
                           rate_hz=args.rate, gap_s=args.gap, rgb=args.rgb,
                           rgb_tolerance_s=args.rgb_tolerance,
                           rgb_min_visibility=args.rgb_min_visibility,
                           renamed=topics_from_args(
                               args, {**DEPTH_TOPIC_ARGUMENTS, **COLOR_TOPIC_ARGUMENTS}
                           ),
                           progress=not args.quiet)
            notes = [f"{n} {what}" for n, what in (
                (done.frames_without_truth, "depth frames without ground truth"),
                (done.people_without_depth, "labelled people without valid depth"),
                (done.bad_frames, "unreadable frames or frames before camera_info"),
            ) if n]
            paired = ""
            if args.rgb:
                paired = f", {done.rgb_crops} with an RGB crop"
                if done.people_without_color:
                    hidden = (f", or more than {1 - args.rgb_min_visibility:.0%} hidden"
                              if args.rgb_min_visibility > 0 else "")
                    paired += (f" ({done.people_without_color} without: no colour frame within "
                               f"{args.rgb_tolerance} s, or the person outside the colour "
                               f"view{hidden})")
            print(f"{bag}: {done.crops} crops{paired}"
                  + (f" ({', '.join(notes)} skipped)" if notes else ""))
        if not records:
            raise DatasetError(
                "no labelled person with valid depth in any bag, so nothing was written; give "
                "bags with ground_truth/people at the depth frames' stamps (iphd-eval "
                "import-mot)"
            )
        check_disjoint(records, other)
        finalize_split(root, args.split, records)
    except (IphdError, ValueError) as exc:
        print(f"bag_to_reid: error: {exc}", file=sys.stderr)
        if records:
            print(f"bag_to_reid: the split is incomplete: remove {root / args.split} before "
                  "running again", file=sys.stderr)
        return 2
    with open(root / f"identities_{args.split}.csv", "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(("pid", "bag", "bag_id"))
        writer.writerows((pid, str(args.bag[bag]) if bag >= 0 else "", person)
                         for pid, bag, person in identities.rows())
    _write_manifest(root, args.split, {
        "bags": [str(b) for b in args.bag], "rate_hz": args.rate, "gap_s": args.gap,
        "shared_ids": args.shared_ids, "rgb": args.rgb,
        **({"rgb_tolerance_s": args.rgb_tolerance,
            "rgb_min_visibility": args.rgb_min_visibility} if args.rgb else {}),
    })
    by_pid: dict[int, set[str]] = {}
    for r in records:
        by_pid.setdefault(r.pid, set()).add(r.session)
    revisited = sum(len(s) > 1 for s in by_pid.values())
    depth = sum(r.modality == "depth" for r in records)
    pairs = f" and {len(records) - depth} RGB crops paired with them" if args.rgb else ""
    print(f"wrote {depth} depth crops{pairs} of {len(by_pid)} identities ({revisited} seen in "
          f"more than one session, which step-I validation needs) to {root / args.split}")
    if args.split == "train":
        print(finetune_hint(root, len(by_pid), rgb=args.rgb))
    return 0


def finetune_hint(root: Path, identities: int, rgb: bool = False) -> str:
    """The fine-tuning command for a train split of ``identities`` people.

    With ``rgb``, also the distillation of the RGB query network from the result.
    ``cpu_sim_depth_finetune.yaml`` holds out some training identities for validation; a small
    split (a home's three people with ``--shared-ids``) cannot spare them, so the hint
    validates on the test split instead.
    """
    config = FINETUNE_CONFIG
    held = int(yaml.safe_load(config.read_text())["data"]["val_identities"])
    small = identities <= 2 * held
    val = " --set data.val_split=test" if small else ""
    run = "out/train/reid/my_depth"
    command = (f"python training/train_reid.py --config "
               f"{config.relative_to(config.parents[3])} --data {root} --out {run}{val}")
    lines = [f"fine-tune: {command}"]
    if rgb:
        distill = DISTILL_CONFIG.relative_to(DISTILL_CONFIG.parents[3])
        lines.append(f"then distil the RGB query network from it: python training/train_reid.py "
                     f"--config {distill} --data {root} --out out/train/reid/my_pair --set "
                     f"step.teacher={run}/model.pt{val}\n(score both against the shipped pair "
                     "with eval_reid.py on the test split before using them)")
    if small:
        lines.append(f"(the configs hold out {held} of the training identities for validation, "
                     f"too many of {identities}: validate on the test split, written with "
                     "--split test from other bags; it then picks the model, so compare the "
                     "models with eval_reid.py on a test split of yet other bags, in another "
                     "--out folder)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
