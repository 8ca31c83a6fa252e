"""A video of a bag's tracks over its depth frames, to see where identities hold and switch.

``iphd-eval video`` writes one for any bag, ``iphd-eval bag --video`` one per bag scored:
each pair's confirmed tracks in their ids' colours (``iphd.viz.render_tracks_image``), the
labelled people of the ground truth (where the bag has it) in white with their own ids, and
the time into the bag, at about the thermal camera's rate. The report's IDF1 says how often
identities are wrong; the video shows where.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from iphd.data.rosbag import GROUND_TRUTH
from iphd.data.truth import PersonTruth
from iphd.errors import DatasetError
from iphd.eval.mot import DEFAULT_LABELS
from iphd.sim.labels import LabelConfig, label_people
from iphd.tracking.tracker import TENTATIVE, TrackState
from iphd.viz import put_label, render_tracks_image

if TYPE_CHECKING:
    from iphd.eval.pipeline import OfflineConfig, PairResult

VIDEO_NAME = "tracks.mp4"
#: Frames a second: the Lepton's 8.7 Hz, so a bag plays at about its own speed.
VIDEO_FPS = 8.7
TRUTH_COLOUR = (255, 255, 255)


def review_frame(
    depth_mm: np.ndarray | None,
    tracks: Sequence[TrackState],
    people: Sequence[PersonTruth],
    size: tuple[int, int],
    time_s: float,
) -> np.ndarray:
    """One picture of the video: tracks (as the tracker node publishes them), people, time.

    Args:
        depth_mm: the pair's depth in millimetres, or None (black).
        tracks: the tracker's tracks after the pair; tentative ones are left out, as the node
            leaves them out of ``tracks`` by default.
        people: the labelled people of the pair (``iphd.sim.labels.label_people``).
        size: (width, height) of the depth image.
        time_s: seconds into the bag.

    Returns:
        (height, width, 3) uint8 BGR image.
    """
    shown = [t for t in tracks if t.state != TENTATIVE]
    image = render_tracks_image(depth_mm, shown, size)
    scale = max(0.35, min(size) / 600.0)
    for person in people:
        x1, y1, x2, y2 = (int(round(float(v))) for v in person.box_xyxy)
        corner = (max(x2 - 1, x1), max(y2 - 1, y1))
        cv2.rectangle(image, (x1, y1), corner, (0, 0, 0), 3)  # seen on white walls too
        cv2.rectangle(image, (x1, y1), corner, TRUTH_COLOUR, 1)
        put_label(image, f"person {person.pid}", (x1 + 3, max(y2 - 5, 10)), TRUTH_COLOUR, scale)
    put_label(image, f"{time_s:.2f} s", (4, 6 + int(28 * scale)), (0, 255, 255), scale)
    return image


def pair_frame(
    pair: PairResult,
    depth_mm: np.ndarray | None,
    truth: Mapping[int, list[PersonTruth]],
    start_ns: int,
    labels: LabelConfig = DEFAULT_LABELS,
) -> np.ndarray:
    """``review_frame`` of an offline pipeline's pair.

    Its tracks, its depth (from ``FusedImages``), the people of ``truth`` at its stamp that
    the label rule keeps, and the seconds from ``start_ns``.
    """
    width, height = pair.image_size
    people = label_people(truth.get(pair.stamp_ns, []), height, labels)
    return review_frame(depth_mm, pair.tracks, people, (width, height),
                        (pair.stamp_ns - start_ns) / 1e9)


class TrackVideo:
    """Writes ``review_frame`` pictures to an MP4 file (OpenCV's ``mp4v``).

    The file is opened with the first frame (its size is the first depth image's); frames of
    another size are scaled to it.

    Raises (``add``, ``close``):
        DatasetError: the file cannot be written.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.frames = 0
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None

    def add(self, picture: np.ndarray) -> None:
        """Append one BGR picture."""
        height, width = picture.shape[:2]
        if self._writer is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DatasetError(f"could not write the video {self.path}: {exc}") from exc
            writer = cv2.VideoWriter(
                str(self.path), cv2.VideoWriter.fourcc(*"mp4v"), VIDEO_FPS, (width, height)
            )
            if not writer.isOpened():
                raise DatasetError(
                    f"could not write the video {self.path}: OpenCV's MP4 writer did not open "
                    "it (is the folder writable? leave out --video to skip it)"
                )
            self._writer, self._size = writer, (width, height)
        if (width, height) != self._size:
            picture = cv2.resize(picture, self._size, interpolation=cv2.INTER_NEAREST)
        self._writer.write(np.ascontiguousarray(picture))
        self.frames += 1

    def close(self) -> None:
        """Finish the file (idempotent); a video without frames is not written."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None


def write_bag_video(
    bag: Path | str,
    out: Path | str,
    config: OfflineConfig | None = None,
    *,
    start_s: float | None = None,
    limit_s: float | None = None,
    progress: bool = False,
) -> TrackVideo:
    """Run the offline pipeline over ``bag`` and write its tracks as a video to ``out``.

    The bag needs no ground truth: where it has ``ground_truth/people``, the labelled people
    are drawn too. ``start_s`` and ``limit_s`` as in ``iphd-eval bag``.

    Returns:
        The finished video (``frames``: pictures written).

    Raises:
        DatasetError: an unreadable bag, a missing input topic, no pair, an unwritable file.
    """
    from tqdm import tqdm

    from iphd.data.rosbag import BagReader
    from iphd.eval.bag_eval import read_truth, window_ns
    from iphd.eval.pipeline import FusedImages, OfflineConfig, find_topic, pipeline_for_bag

    movie = TrackVideo(out)
    fused = FusedImages()
    with BagReader(bag) as reader, closing(movie):
        start_ns, stop_ns = window_ns(reader, start_s, limit_s)
        truth = read_truth(reader, stop_ns) if find_topic(reader.topics, GROUND_TRUTH) else {}
        pipeline = pipeline_for_bag(config or OfflineConfig(), reader)
        pipeline.on_fused = fused.keep
        with tqdm(unit="pair", desc="drawing", disable=not progress, file=sys.stderr) as bar:
            for pair in pipeline.run_bag(reader, stop_ns, start_ns):
                images = fused.take(pair.stamp_ns)
                movie.add(pair_frame(pair, None if images is None else images[0], truth,
                                     reader.start_ns))
                bar.update(1)
        if not movie.frames:
            raise DatasetError(f"{bag}: no depth/thermal pair was made, so nothing was drawn: "
                               f"{pipeline.no_pair_reason(reader, start_ns, stop_ns)}")
    return movie
