"""Ground truth for your own bags: frames out for annotation (MOT format), the boxes back in."""

from __future__ import annotations

import configparser
import csv
import logging
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from iphd.calibration import load_calibration
from iphd.data.truth import PersonTruth
from iphd.errors import DatasetError
from iphd.eval.pipeline import FusedImages, OfflineConfig, pipeline_for_bag
from iphd.sim.labels import LabelConfig
from iphd.viz import colorize_depth, colorize_thermal

LOG = logging.getLogger(__name__)

#: The class names of ``gt/labels.txt``; a MOT row's class id is a 1-based line of it.
PERSON_LABEL = "person"
#: Frame number -> depth-frame stamp of an export (the key that ties annotations to the bag).
STAMPS_FILE = "stamps.csv"
IMAGE_DIR = "img1"
IMAGE_EXT = ".jpg"
#: Weight of the registered thermal image over the false-colour depth in the exported frames.
THERMAL_WEIGHT = 0.5
#: Largest person id the ground-truth message holds (``PersonTrack.id`` is uint32).
UINT32_MAX = 2**32 - 1
#: The id CVAT writes for boxes drawn as shapes instead of tracks (they have no identity).
SHAPE_ID = -1
#: Visibility below which the label rule (``iphd.sim.labels``) leaves a person out.
MIN_VISIBILITY = LabelConfig().min_visibility


@dataclass(frozen=True)
class MotBox:
    """One annotated person in one frame (a row of a MOT ``gt.txt``).

    Attributes:
        frame: 1-based frame number of the export.
        track_id: the person's identity, the same across frames.
        box_xyxy: (x1, y1, x2, y2) in depth-image pixels.
        visibility: visible fraction of the person, 0..1 (1 when the file does not say).
    """

    frame: int
    track_id: int
    box_xyxy: tuple[float, float, float, float]
    visibility: float


@dataclass
class ExportSummary:
    """What :func:`export_mot` wrote."""

    out_dir: Path
    frames: int
    prefilled_boxes: int
    image_size: tuple[int, int]
    frame_rate_hz: float


@dataclass
class MotAnnotations:
    """A parsed ``gt.txt``: the person boxes per frame and the rows left out, by reason.

    ``low_visibility`` counts the boxes kept whose visibility is below ``MIN_VISIBILITY``: the
    label rule leaves them out of scoring and training.
    """

    boxes: dict[int, list[MotBox]] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    low_visibility: int = 0

    def skip(self, reason: str) -> None:
        """Count one row left out for ``reason``."""
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def annotation_image(depth_mm: np.ndarray, registered_ck: np.ndarray) -> np.ndarray:
    """(H, W, 3) BGR view of one pair for annotators: false-colour depth, thermal blended in.

    The registered thermal image is scaled to the depth image, so boxes drawn on the view are
    in depth-image pixels, the frame the detector, the tracker and the ground truth use.
    Pixels without a thermal reading show depth alone.
    """
    depth = colorize_depth(depth_mm)
    h, w = depth.shape[:2]
    thermal = cv2.resize(registered_ck, (w, h), interpolation=cv2.INTER_NEAREST)
    blend = cv2.addWeighted(depth, 1.0 - THERMAL_WEIGHT, colorize_thermal(thermal),
                            THERMAL_WEIGHT, 0.0)
    return np.where((thermal > 0)[..., None], blend, depth)


def _frame_rate(stamps_ns: list[int]) -> float:
    if len(stamps_ns) < 2:
        return 0.0
    span_s = (stamps_ns[-1] - stamps_ns[0]) / 1e9
    return (len(stamps_ns) - 1) / span_s if span_s > 0 else 0.0


def _check_empty(out_dir: Path) -> None:
    """Refuse to write over an earlier export: its gt.txt may hold hours of annotation."""
    if out_dir.exists() and not out_dir.is_dir():
        raise DatasetError(f"--out {out_dir} is a file; give a new folder for the export")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise DatasetError(
            f"{out_dir} exists and is not empty; export into a new folder (an earlier export's "
            "gt/gt.txt may hold annotation work)"
        )


def export_mot(
    bag: Path | str,
    out_dir: Path | str,
    config: OfflineConfig | None = None,
    *,
    prefill: bool = True,
    every: int = 1,
    limit_s: float | None = None,
    progress: bool = False,
    start_s: float | None = None,
) -> ExportSummary:
    """Write a bag's depth/thermal pairs as a MOT sequence to annotate (CVAT: "MOT 1.1").

    Runs the offline pipeline (``config``, the nodes' defaults when None) over the bag and,
    for every ``every``-th pair, writes ``img1/NNNNNN.jpg`` (:func:`annotation_image`), its
    depth stamp in ``stamps.csv``, and, with ``prefill``, the confirmed tracks of that pair in
    ``gt/gt.txt``, so annotators correct boxes and identities instead of drawing them all.
    ``gt/labels.txt`` names the one class, ``seqinfo.ini`` the sequence. ``start_s`` and
    ``limit_s`` export ``[start_s, start_s + limit_s)`` seconds after the bag's first message
    (a few minutes out of a long recording).

    Raises:
        DatasetError: ``out_dir`` is not empty, the bag is unreadable or lacks a topic the
            pipeline needs, or no pair could be made.
        ValueError: ``every`` < 1.
    """
    from iphd.data.rosbag import BagReader
    from iphd.eval.bag_eval import window_ns

    if every < 1:
        raise ValueError(f"every must be >= 1 (1 = every pair), got {every}")
    out = Path(out_dir)
    _check_empty(out)
    fused = FusedImages()
    stamps: list[int] = []
    rows: list[str] = []
    size = (0, 0)
    with BagReader(bag) as reader:
        start_ns, stop_ns = window_ns(reader, start_s, limit_s)
        pipeline = pipeline_for_bag(config or OfflineConfig(), reader)
        pipeline.input_topics(reader)
        # Only once the bag, its topics and the models are in hand: a bad argument leaves no
        # folder behind.
        (out / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
        (out / "gt").mkdir(exist_ok=True)
        pipeline.on_fused = fused.keep
        index = 0
        with tqdm(unit="pair", desc="exporting", disable=not progress, file=sys.stderr) as bar:
            for pair in pipeline.run_bag(reader, stop_ns, start_ns):
                images = fused.take(pair.stamp_ns)
                index += 1
                bar.update(1)
                if (index - 1) % every or images is None:
                    continue
                image = annotation_image(*images)
                frame = len(stamps) + 1
                if not cv2.imwrite(str(out / IMAGE_DIR / f"{frame:06d}{IMAGE_EXT}"), image):
                    raise DatasetError(f"could not write {out / IMAGE_DIR} (disk full?)")
                size = (image.shape[1], image.shape[0])
                stamps.append(pair.stamp_ns)
                if prefill:
                    for t in pair.tracks:
                        if t.state != "confirmed" or t.box_xyxy is None:
                            continue
                        x1, y1, x2, y2 = (float(v) for v in t.box_xyxy)
                        rows.append(f"{frame},{t.track_id},{x1:.1f},{y1:.1f},{x2 - x1:.1f},"
                                    f"{y2 - y1:.1f},1,1,1.0")
        if not stamps:
            why = (f"fusion failed on all {pipeline.stats.pairs} pairs (the log says why)"
                   if pipeline.stats.pairs else
                   pipeline.no_pair_reason(reader, start_ns, stop_ns))
            raise DatasetError(f"{bag}: no depth/thermal pair was made, so there is nothing to "
                               f"annotate: {why}")
    with open(out / STAMPS_FILE, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["frame", "depth_stamp_ns"])
        writer.writerows((i + 1, s) for i, s in enumerate(stamps))
    (out / "gt" / "gt.txt").write_text("".join(r + "\n" for r in rows), encoding="utf-8")
    (out / "gt" / "labels.txt").write_text(PERSON_LABEL + "\n", encoding="utf-8")
    rate = _frame_rate(stamps)
    info = configparser.ConfigParser()
    info.optionxform = str  # type: ignore[assignment,method-assign]  # keep MOT's key case
    info["Sequence"] = {
        "name": _sequence_name(bag),
        "imDir": IMAGE_DIR,
        # An integer: MOTChallenge's and datumaro's readers parse it with int().
        "frameRate": str(max(1, round(rate))),
        "seqLength": str(len(stamps)),
        "imWidth": str(size[0]),
        "imHeight": str(size[1]),
        "imExt": IMAGE_EXT,
    }
    with open(out / "seqinfo.ini", "w", encoding="utf-8") as f:
        info.write(f, space_around_delimiters=False)
    return ExportSummary(out, len(stamps), len(rows), size, rate)


def read_stamps(path: Path | str) -> dict[int, int]:
    """Frame number -> depth stamp (ns) of an export's ``stamps.csv``.

    Raises:
        DatasetError: the file is missing or malformed (the message names the line).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(
            f"{path} does not exist: it ties the annotated frames to the bag's stamps; pass the "
            "folder `iphd-eval export-mot` wrote (with the annotated gt/gt.txt put back in it)"
        )
    stamps: dict[int, int] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for line, row in enumerate(csv.reader(f), start=1):
            if line == 1 and row[:1] == ["frame"]:
                continue
            try:
                frame, stamp = int(row[0]), int(row[1])
            except (IndexError, ValueError):
                raise DatasetError(
                    f"{path}:{line}: expected 'frame,depth_stamp_ns' integers, got {row}"
                ) from None
            if frame in stamps:
                raise DatasetError(f"{path}:{line}: frame {frame} appears twice")
            stamps[frame] = stamp
    if not stamps:
        raise DatasetError(f"{path} lists no frames")
    return stamps


def read_labels(path: Path | str) -> list[str]:
    """Class names of a MOT ``labels.txt``, one per line (class id = line number)."""
    return [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()
            if line.strip()]


def read_mot(path: Path | str, labels: list[str] | None = None) -> MotAnnotations:
    """Parse a MOT ``gt.txt``: ``frame, id, x, y, w, h[, not ignored, class, visibility, ...]``.

    Rows marked ignored (7th column 0) and rows of another class than ``person`` (8th column,
    a 1-based line of ``labels``; without labels class 1 is the person, as in MOTChallenge)
    are left out and counted in ``skipped``. Missing optional columns mean "not ignored",
    person, visibility 1. Boxes kept with visibility below ``MIN_VISIBILITY`` are counted in
    ``low_visibility``: CVAT writes visibility 0 for a box marked occluded when its task has no
    ``visibility`` attribute.

    Raises:
        DatasetError: the file is missing, or a row is malformed (the message names the line
            and the value), or has id -1 (a box CVAT drew as a shape, without identity), or a
            person appears twice in one frame.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path} does not exist; expected the annotations as MOT gt.txt")
    out = MotAnnotations()
    seen: set[tuple[int, int]] = set()
    person = [i + 1 for i, name in enumerate(labels or []) if name.lower() == PERSON_LABEL]
    if labels is not None and not person:
        raise DatasetError(
            f"labels.txt beside {path} has no '{PERSON_LABEL}' class ({labels}); name the "
            f"people's class '{PERSON_LABEL}'"
        )
    person_ids = set(person) if labels is not None else {1}
    for line, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        cells = [c.strip() for c in text.split(",")]
        if len(cells) < 6:
            raise DatasetError(
                f"{path}:{line}: a MOT row needs at least frame,id,x,y,w,h; got '{text}'"
            )
        try:
            frame_f, id_f = float(cells[0]), float(cells[1])
            x, y, w, h = (float(c) for c in cells[2:6])
            active = int(float(cells[6])) if len(cells) > 6 and cells[6] else 1
            cls = int(float(cells[7])) if len(cells) > 7 and cells[7] else 1
            visibility = float(cells[8]) if len(cells) > 8 and cells[8] else 1.0
        except ValueError:
            raise DatasetError(
                f"{path}:{line}: not a number in '{text}' (columns frame,id,x,y,w,h,active,"
                "class,visibility); fix the row and import again"
            ) from None
        if not (frame_f.is_integer() and id_f.is_integer()):
            raise DatasetError(
                f"{path}:{line}: frame {cells[0]} and id {cells[1]} must be whole numbers; fix "
                "the row and import again"
            )
        frame, track_id = int(frame_f), int(id_f)
        if frame < 1:
            raise DatasetError(f"{path}:{line}: frame numbers start at 1, got {frame}")
        if track_id == SHAPE_ID:
            # Tracking metrics need identities; a shape has none.
            raise DatasetError(
                f"{path}:{line}: id {SHAPE_ID} marks boxes drawn as shapes, not tracks, in CVAT: "
                "draw people as tracks (or convert shapes to tracks) and export again"
            )
        if not 0 <= track_id <= UINT32_MAX:
            raise DatasetError(
                f"{path}:{line}: ids must be whole numbers from 0 to {UINT32_MAX}, got {track_id}"
            )
        if not all(math.isfinite(v) for v in (x, y, w, h, visibility)) or w <= 0 or h <= 0:
            raise DatasetError(
                f"{path}:{line}: box width and height must be > 0 and finite, got '{text}'"
            )
        if active == 0:
            out.skip("ignored")
            continue
        if cls not in person_ids:
            out.skip("other class")
            continue
        if (frame, track_id) in seen:
            raise DatasetError(f"{path}:{line}: person {track_id} appears twice in frame {frame}")
        seen.add((frame, track_id))
        box = (x, y, x + w, y + h)
        vis = min(max(visibility, 0.0), 1.0)
        if vis < MIN_VISIBILITY:
            out.low_visibility += 1
        out.boxes.setdefault(frame, []).append(MotBox(frame, track_id, box, vis))
    return out


def truth_by_stamp(
    annotations: MotAnnotations, stamps: Mapping[int, int], source: str = "gt.txt"
) -> dict[int, list[PersonTruth]]:
    """Depth stamp -> people of every exported frame (an empty list where nobody is annotated).

    Positions are NaN: 2D annotations carry none (the evaluation's position errors then say
    n/a).

    Raises:
        DatasetError: an annotated frame is not one of the export's frames.
    """
    unknown = sorted(set(annotations.boxes) - set(stamps))
    if unknown:
        raise DatasetError(
            f"{source} annotates frame {unknown[0]}"
            f"{f' (and {len(unknown) - 1} more)' if len(unknown) > 1 else ''}, which the "
            f"export does not have ({len(stamps)} frames); annotate the folder "
            "`iphd-eval export-mot` wrote for this bag"
        )
    nan = (math.nan, math.nan, math.nan)
    return {
        stamp: [
            PersonTruth(b.track_id, b.box_xyxy, b.visibility, nan, nan)
            for b in annotations.boxes.get(frame, [])
        ]
        for frame, stamp in sorted(stamps.items())
    }


@dataclass
class ImportSummary:
    """What :func:`import_mot` wrote.

    ``low_visibility``: boxes written whose visibility is below ``MIN_VISIBILITY``, which
    scoring and training leave out (``MotAnnotations.low_visibility``).
    """

    out_bag: Path
    frames: int
    boxes: int
    people: int
    skipped: dict[str, int]
    replaced_truth: bool
    calibration: str
    low_visibility: int = 0


def import_mot(
    bag: Path | str,
    mot_dir: Path | str,
    out_bag: Path | str,
    calibration: str = "",
    topics: Mapping[str, str] | None = None,
) -> ImportSummary:
    """Write a copy of ``bag`` with the annotations of ``mot_dir`` as ``ground_truth/people``.

    ``mot_dir`` is the folder :func:`export_mot` wrote for this bag, with the annotated
    ``gt/gt.txt`` (and ``gt/labels.txt``) in it; a CVAT "MOT 1.1" export unpacked there does
    that. Every exported frame gets a ground-truth message, empty where nobody is annotated,
    so false positives there count. The copy keeps every message, topic QoS and the stored
    calibration; a ground-truth topic already in the bag is replaced. ``calibration`` (a
    rig.yaml) is stored in the copy instead, so that every tool reading it registers thermal
    with your rig: a bag recorded with ``ros2 bag record`` stores none, and the tools would
    use the package's nominal one. ``topics`` names the bag's depth topics when they are not
    ``depth/image_raw`` and ``depth/camera_info`` (as ``OfflineConfig.topics``).

    Returns:
        What was written; ``calibration`` says which calibration the copy stores: the file,
        ``kept from the bag`` or ``none`` (the tools will use the nominal one).

    Raises:
        DatasetError: missing or malformed files, annotated frames the export does not have,
            or ``out_bag`` exists.
        CalibrationError: an unreadable ``calibration``.
    """
    from iphd.data.rosbag import copy_bag_with_truth

    mot = Path(mot_dir)
    if not mot.is_dir():
        raise DatasetError(
            f"--mot {mot} is not a folder: give the folder iphd-eval export-mot wrote (with "
            "your annotation's gt/gt.txt unpacked into it)"
        )
    gt = mot / "gt" / "gt.txt"
    if not gt.is_file() and (mot / "gt.txt").is_file():
        gt = mot / "gt.txt"
    labels_path = gt.parent / "labels.txt"
    labels = read_labels(labels_path) if labels_path.is_file() else None
    annotations = read_mot(gt, labels)
    stamps = read_stamps(mot / STAMPS_FILE)
    truth = truth_by_stamp(annotations, stamps, str(gt))
    if not any(truth.values()) and not annotations.skipped:
        LOG.warning(
            "%s holds no box: every frame becomes ground truth with nobody in it, right for a "
            "recording of an empty room (to count false detections); if people were annotated, "
            "export the task again (CVAT: 'MOT 1.1') and unpack its gt/ here", gt
        )
    _check_sequence_name(bag, mot / "seqinfo.ini")
    frame_id, stored = _check_bag_stamps(bag, stamps, mot / STAMPS_FILE, topics)
    rig = load_calibration(calibration) if calibration else None
    copied = copy_bag_with_truth(bag, out_bag, truth, frame_id, rig)
    for note in copied.notes:
        LOG.warning("%s", note)
    source = calibration if calibration else ("kept from the bag" if stored else "none")
    boxes = sum(len(v) for v in truth.values())
    people = len({p.pid for v in truth.values() for p in v})
    return ImportSummary(Path(out_bag), len(truth), boxes, people, dict(annotations.skipped),
                         bool(copied.replaced), source, annotations.low_visibility)


def _sequence_name(bag: Path | str) -> str:
    """The name ``export_mot`` gives a bag's sequence (``seqinfo.ini``)."""
    return Path(bag).stem if Path(bag).suffix in (".db3", ".mcap") else Path(bag).name


def _check_sequence_name(bag: Path | str, seqinfo: Path) -> None:
    """Refuse an export whose ``seqinfo.ini`` names another bag (none or no name: no check).

    Simulator bags share one time grid, so the stamps alone do not tell two of them apart.

    Raises:
        DatasetError: the names differ.
    """
    info = configparser.ConfigParser()
    try:
        info.read(seqinfo, encoding="utf-8")
    except configparser.Error:
        return
    name = info.get("Sequence", "name", fallback="")
    if name and name != _sequence_name(bag):
        raise DatasetError(
            f"{seqinfo} is the export of '{name}', not of '{_sequence_name(bag)}' ({bag}): "
            "import into the bag you exported; if it is that recording renamed, set name= in "
            "seqinfo.ini to the new name"
        )


def _check_bag_stamps(
    bag: Path | str, stamps: Mapping[int, int], source: Path,
    topics: Mapping[str, str] | None = None,
) -> tuple[str, bool]:
    """The bag's depth frame id and whether it stores a calibration.

    Checks first that every stamp of the export (frame -> stamp) is a depth stamp of this bag.

    Raises:
        DatasetError: the bag has no depth topics, or a stamp is none of its depth frames (the
            export was made from another bag, or its stamps.csv was edited).
    """
    from iphd.data.rosbag import DEPTH_IMAGE, DEPTH_INFO, BagReader, header_stamp_ns
    from iphd.eval.pipeline import bag_topic_label, camera_topics

    with BagReader(bag) as reader:
        found = camera_topics(reader.topics, DEPTH_IMAGE, DEPTH_INFO, topics)
        if found is None:
            raise DatasetError(
                f"{bag} has no {bag_topic_label(DEPTH_IMAGE, topics)} and "
                f"{bag_topic_label(DEPTH_INFO, topics)}; ground truth belongs to the depth frames "
                "of the bag the frames were exported from (name a driver's own topics with "
                "--depth-topic and --depth-info-topic)"
            )
        frame_id = ""
        stored = reader.calibration is not None
        depth_stamps: set[int] = set()
        for _topic, _type, _log, msg in reader.messages([found[1]]):
            depth_stamps.add(header_stamp_ns(msg))
            frame_id = frame_id or str(msg.header.frame_id)
    missing = [(frame, stamp) for frame, stamp in sorted(stamps.items())
               if stamp not in depth_stamps]
    if len(missing) == len(stamps):
        raise DatasetError(
            f"none of the {len(stamps)} stamps in {source} is a depth frame of {bag}: the frames "
            "were exported from another bag; import into the bag you exported"
        )
    if missing:
        frame, stamp = missing[0]
        raise DatasetError(
            f"{len(missing)} of the {len(stamps)} stamps in {source} are no depth frame of "
            f"{bag}, the first that of frame {frame} ({stamp} ns): the file was edited, or the "
            "export is of another bag; use stamps.csv as export-mot wrote it, with the bag it "
            "was exported from"
        )
    return frame_id, stored


def describe_skipped(skipped: Mapping[str, int]) -> str:
    """``"3 ignored, 1 other class"`` or ``"none"``."""
    return ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items())) or "none"

