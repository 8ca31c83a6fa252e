"""IPHD dataset format (DESIGN §4): depth/thermal PNG pairs with YOLO labels, written and read."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from iphd.data.output import read_png, write_png
from iphd.data.truth import PersonTruth
from iphd.errors import DatasetError, FrameError

IPHD_SPLITS = ("train", "valid", "test")
DEPTH_SIZE = (1280, 720)  # (width, height) of an IPHD depth frame, px
THERMAL_SIZE = (213, 120)  # (width, height) of an IPHD thermal frame, px (1/6 of depth)
LABEL_FOLDERS = {"weak": "labels", "clean": "labels_clean"}
MODALITIES = ("depth", "thermal")

# Normalised label coordinates may stray this far outside [0, 1] (rounding in other tools).
LABEL_TOLERANCE = 1e-3
_NAME_RE = re.compile(r"vid\d{5}_\d{8}")


def frame_name(seq: int, frame: int) -> str:
    """Return the IPHD base name ``vid{seq:05d}_{frame:08d}`` shared by a depth/thermal pair.

    Raises:
        DatasetError: ``seq`` is outside 0..99999 or ``frame`` outside 0..99999999.
    """
    if not 0 <= seq <= 99_999 or not 0 <= frame <= 99_999_999:
        raise DatasetError(
            f"sequence {seq} / frame {frame} do not fit the IPHD name vidNNNNN_XXXXXXXX "
            "(sequence 0..99999, frame 0..99999999)"
        )
    return f"vid{int(seq):05d}_{int(frame):08d}"


def split_dir(root: Path, split: str, modality: str) -> Path:
    """Return ``root/iphd_{split}_{modality}``, the folder of one split and modality.

    Raises:
        DatasetError: unknown split or modality.
    """
    if split not in IPHD_SPLITS:
        raise DatasetError(
            f"unknown IPHD split '{split}'; expected one of {', '.join(IPHD_SPLITS)}"
        )
    if modality not in MODALITIES:
        raise DatasetError(
            f"unknown IPHD modality '{modality}'; expected one of {', '.join(MODALITIES)}"
        )
    return Path(root) / f"iphd_{split}_{modality}"


def _as_boxes(boxes: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """Return ``boxes`` as a finite (N, 4) float64 array; an empty input gives (0, 4)."""
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 4), np.float64)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes must be an (N, 4) array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("boxes contain NaN or infinite coordinates")
    return arr


def xyxy_to_cxcywh(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Convert pixel boxes (x1, y1, x2, y2) to normalised (cx, cy, w, h); no clipping.

    Args:
        boxes: (N, 4) boxes in pixels of an image ``width`` x ``height`` px.
        width: image width, px.
        height: image height, px.

    Returns:
        (N, 4) float64 boxes, centre and size as fractions of the image width/height.

    Raises:
        ValueError: boxes are not (N, 4) finite numbers.
    """
    b = _as_boxes(boxes)
    scale = np.array([width, height, width, height], np.float64)
    centre = (b[:, :2] + b[:, 2:]) / 2.0
    size = b[:, 2:] - b[:, :2]
    normalised: np.ndarray = np.concatenate([centre, size], axis=1) / scale
    return normalised


def cxcywh_to_xyxy(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Convert normalised (cx, cy, w, h) boxes to pixel boxes (x1, y1, x2, y2).

    Args:
        boxes: (N, 4) normalised boxes.
        width: image width, px.
        height: image height, px.

    Returns:
        (N, 4) float64 boxes in pixels of the ``width`` x ``height`` image.

    Raises:
        ValueError: boxes are not (N, 4) finite numbers.
    """
    b = _as_boxes(boxes) * np.array([width, height, width, height], np.float64)
    half = b[:, 2:] / 2.0
    return np.concatenate([b[:, :2] - half, b[:, :2] + half], axis=1)


def label_text(boxes_xyxy: np.ndarray, width: int, height: int) -> str:
    """Return the YOLO label file content for pixel boxes of a ``width`` x ``height`` image.

    Boxes are clipped to the image, converted to ``0 cx cy w h`` with 6 decimals, and dropped if
    their written width or height is zero. Box order is kept.

    Raises:
        ValueError: boxes are not (N, 4) finite numbers.
    """
    b = _as_boxes(boxes_xyxy).copy()
    b[:, 0::2] = np.clip(b[:, 0::2], 0.0, width)
    b[:, 1::2] = np.clip(b[:, 1::2], 0.0, height)
    # + 0.0 turns -0.0 into 0.0 so it is never written as "-0.000000".
    norm = np.round(xyxy_to_cxcywh(b, width, height), 6) + 0.0
    keep = (norm[:, 2] > 0) & (norm[:, 3] > 0)
    return "".join(f"0 {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n" for cx, cy, w, h in norm[keep].tolist())


def _check_image(image: np.ndarray, what: str) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 2 or image.dtype != np.uint16:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise FrameError(f"{what} must be an (H, W) uint16 array, got {dtype} with shape {shape}")


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise DatasetError(
            f"frame name {name!r} is not an IPHD name vidNNNNN_XXXXXXXX; build it with frame_name()"
        )


def _write_text(path: Path, text: str) -> None:
    try:
        with open(path, "x", encoding="utf-8", newline="\n") as f:
            f.write(text)
    except FileExistsError as exc:
        raise DatasetError(
            f"{path} was already written; every frame name must be used once"
        ) from exc


def _make_dirs(root: Path, split: str) -> list[Path]:
    dirs = [split_dir(root, split, modality) for modality in MODALITIES]
    for d in dirs:
        for sub in ("images", *LABEL_FOLDERS.values()):
            (d / sub).mkdir(parents=True, exist_ok=True)
    return dirs


def write_frame(
    root: Path,
    split: str,
    name: str,
    depth_mm: np.ndarray,
    thermal_ck: np.ndarray,
    weak_xyxy: np.ndarray,
    clean_xyxy: np.ndarray,
) -> None:
    """Write one depth/thermal pair and its weak and clean labels; safe to call from workers.

    Each frame touches only its own files (created exclusively) and folders are created with
    ``exist_ok``, so parallel processes may write different frames of one split.

    Args:
        root: dataset root (holds the ``iphd_{split}_{depth,thermal}`` folders).
        split: one of :data:`IPHD_SPLITS`.
        name: base name from :func:`frame_name`.
        depth_mm: (H, W) uint16 depth, mm, 0 = invalid (1280x720 for the real format).
        thermal_ck: (h, w) uint16 thermal, centi-kelvin, 0 = no coverage (213x120).
        weak_xyxy: (N, 4) weak label boxes in depth-image pixels (written to ``labels/``).
        clean_xyxy: (M, 4) exact boxes in depth-image pixels (written to ``labels_clean/``).

    Raises:
        FrameError: an image is not a 2-D uint16 array.
        ValueError: boxes are not (N, 4) finite numbers.
        DatasetError: bad split or name, or a file of this frame already exists.
    """
    _check_name(name)
    _check_image(depth_mm, "depth_mm")
    _check_image(thermal_ck, "thermal_ck")
    height, width = depth_mm.shape
    texts = {
        LABEL_FOLDERS["weak"]: label_text(weak_xyxy, width, height),
        LABEL_FOLDERS["clean"]: label_text(clean_xyxy, width, height),
    }
    depth_dir, thermal_dir = _make_dirs(root, split)
    for folder, image in ((depth_dir, depth_mm), (thermal_dir, thermal_ck)):
        for labels, text in texts.items():
            _write_text(folder / labels / f"{name}.txt", text)
        write_png(folder / "images" / f"{name}.png", image)


def _round(value: float, decimals: int, what: str) -> float:
    v = float(value)
    if not math.isfinite(v):
        raise DatasetError(f"{what} is {v}; ground truth must be finite")
    return round(v, decimals) + 0.0


def _rounded(values: Sequence[float], n: int, decimals: int, what: str) -> list[float]:
    if len(values) != n:
        raise DatasetError(f"{what} must have {n} values, got {len(values)}")
    return [_round(v, decimals, what) for v in values]


def _rounded_or_none(
    values: Sequence[float], n: int, decimals: int, what: str
) -> list[float] | None:
    """``_rounded``, or None where every value is NaN (ground truth annotated in 2D only)."""
    if len(values) == n and all(math.isnan(float(v)) for v in values):
        return None
    return _rounded(values, n, decimals, what)


def frame_meta(
    name: str, seq: int, frame: int, stamp_ns: int, people: Sequence[PersonTruth]
) -> dict[str, Any]:
    """Return the ``meta.jsonl`` record of one frame (JSON-able, deterministic).

    People are sorted by pid; pixel boxes are rounded to 0.001 px, visibility to 1e-4, positions
    to 0.1 mm and velocities to 0.1 mm/s; a position or velocity that is all NaN (annotated in
    2D, no 3D point) is written as null.

    Args:
        name: the frame's base name; must equal ``frame_name(seq, frame)``.
        seq: sequence number.
        frame: frame number within the sequence.
        stamp_ns: capture time of the depth frame, ns.
        people: ground truth of the people in the frame.

    Raises:
        DatasetError: the name does not match seq/frame, the stamp is negative, or a value is
            not finite.
    """
    if name != frame_name(seq, frame):
        raise DatasetError(
            f"frame name {name!r} does not match sequence {seq} frame {frame} "
            f"({frame_name(seq, frame)!r})"
        )
    if int(stamp_ns) < 0:
        raise DatasetError(f"frame {name}: stamp_ns must be >= 0, got {stamp_ns}")
    records = []
    for p in sorted(people, key=lambda p: p.pid):
        what = f"frame {name} person {p.pid}"
        records.append(
            {
                "pid": int(p.pid),
                "box_xyxy": _rounded(p.box_xyxy, 4, 3, f"{what} box_xyxy"),
                "visibility": _round(p.visibility, 4, f"{what} visibility"),
                "position_m": _rounded_or_none(p.position_m, 3, 4, f"{what} position_m"),
                "velocity_mps": _rounded_or_none(p.velocity_mps, 3, 4, f"{what} velocity_mps"),
            }
        )
    return {
        "name": name,
        "seq": int(seq),
        "frame": int(frame),
        "stamp_ns": int(stamp_ns),
        "people": records,
    }


def _listing(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def finalize_split(
    root: Path, split: str, names: Sequence[str], meta_records: list[dict[str, Any]]
) -> None:
    """Write ``list.txt`` of both folders and ``meta.jsonl`` of the depth folder of one split.

    Call once, in the parent process, after every :func:`write_frame` of the split returned.
    A split with no frames gets empty folders and files, which read back as an empty dataset.

    Args:
        root: dataset root.
        split: one of :data:`IPHD_SPLITS`.
        names: base names of every frame written to the split (any order).
        meta_records: one :func:`frame_meta` record per name (any order).

    Raises:
        DatasetError: duplicate or malformed names, a frame whose images are missing, or meta
            records that do not match the names one to one or are not JSON-able.
    """
    for name in names:
        _check_name(name)
    ordered = sorted(names)
    duplicates = sorted({a for a, b in zip(ordered, ordered[1:], strict=False) if a == b})
    if duplicates:
        raise DatasetError(f"split {split}: frame names listed twice: {_listing(duplicates)}")
    dirs = _make_dirs(root, split)
    for folder in dirs:
        present = {p.stem for p in (folder / "images").glob("*.png")}
        missing = [n for n in ordered if n not in present]
        if missing:
            raise DatasetError(
                f"{len(missing)} frames of split {split} have no image in {folder / 'images'}: "
                f"{_listing(missing)}; a writer worker failed or write_frame() was not called"
            )
    by_name: dict[str, dict[str, Any]] = {}
    for record in meta_records:
        rec_name = record.get("name") if isinstance(record, dict) else None
        if not isinstance(rec_name, str) or rec_name in by_name:
            raise DatasetError(
                f"split {split}: meta record without a unique 'name' ({rec_name!r}); "
                "build one record per frame with frame_meta()"
            )
        by_name[rec_name] = record
    if set(by_name) != set(ordered):
        unmatched = sorted(set(by_name) ^ set(ordered))
        raise DatasetError(
            f"split {split}: meta records and frame names differ for {_listing(unmatched)}; "
            "pass exactly one frame_meta() record per written frame"
        )
    listing = "".join(f"images/{n}.png\n" for n in ordered)
    for folder in dirs:
        (folder / "list.txt").write_text(listing, encoding="utf-8", newline="\n")
    try:
        meta = "".join(
            json.dumps(by_name[n], sort_keys=True, allow_nan=False, separators=(",", ":")) + "\n"
            for n in ordered
        )
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"split {split}: a meta record is not plain JSON: {exc}") from exc
    (dirs[0] / "meta.jsonl").write_text(meta, encoding="utf-8", newline="\n")


def read_yolo_labels(path: Path) -> np.ndarray:
    """Read a YOLO label file ``class cx cy w h`` (normalised) and return its boxes.

    Blank lines are skipped; the class must be an integer and is otherwise ignored (IPHD has one
    class). Coordinates up to :data:`LABEL_TOLERANCE` outside [0, 1] are clipped.

    Returns:
        (N, 4) float64 normalised (cx, cy, w, h); (0, 4) for an empty file.

    Raises:
        DatasetError: the file is missing or unreadable, or a line is malformed (the message
            names the file and line).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise DatasetError(f"label file {path} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read label file {path} as text: {exc}") from exc
    rows: list[list[float]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path} line {lineno}"
        if len(fields) != 5:
            raise DatasetError(
                f"{where}: expected 5 values 'class cx cy w h', got {len(fields)}: {line.strip()!r}"
            )
        try:
            values = [float(f) for f in fields]
        except ValueError as exc:
            raise DatasetError(f"{where}: not a number in {line.strip()!r}") from exc
        if not all(math.isfinite(v) for v in values) or not values[0].is_integer():
            raise DatasetError(
                f"{where}: class must be an integer and coordinates finite, got {line.strip()!r}"
            )
        coords = values[1:]
        if any(v < -LABEL_TOLERANCE or v > 1.0 + LABEL_TOLERANCE for v in coords):
            raise DatasetError(
                f"{where}: coordinates must be normalised to [0, 1], got {line.strip()!r}; "
                "pixel labels need dividing by the image size"
            )
        rows.append([min(max(v, 0.0), 1.0) for v in coords])
    return np.array(rows, dtype=np.float64).reshape(-1, 4)


@dataclass(frozen=True)
class IphdSample:
    """One IPHD frame pair with its labels.

    Attributes:
        name: base name, ``vidNNNNN_XXXXXXXX``.
        depth_mm: (H, W) uint16 depth, mm, 0 = invalid.
        thermal_ck: (h, w) uint16 thermal registered to depth at 1/6 scale, centi-kelvin,
            0 = no coverage.
        boxes_xyxy: (N, 4) float32 person boxes (x1, y1, x2, y2) in depth-image pixels.
    """

    name: str
    depth_mm: np.ndarray
    thermal_ck: np.ndarray
    boxes_xyxy: np.ndarray


def _missing_error(missing: list[str], total: int, where: Path, what: str) -> DatasetError:
    return DatasetError(
        f"{len(missing)} of {total} frames have no {what} in {where}: {_listing(missing)}"
    )


class IphdDataset:
    """Reader of one IPHD split (the real dataset or the simulator's output).

    Frames come from ``list.txt`` of the depth folder if present, otherwise from its
    ``images/*.png`` (sorted). Every frame must have a thermal partner of the same base name and
    a label file; both are checked when the dataset is opened.
    """

    def __init__(
        self,
        root: Path,
        split: str,
        labels: str = "weak",
        depth_size: tuple[int, int] | None = DEPTH_SIZE,
        thermal_size: tuple[int, int] | None = THERMAL_SIZE,
    ) -> None:
        """Open a split and check that its files are complete.

        Args:
            root: folder holding the ``iphd_{split}_{depth,thermal}`` folders.
            split: one of :data:`IPHD_SPLITS`.
            labels: ``"weak"`` (``labels/``, as in the real IPHD) or ``"clean"``
                (``labels_clean/``, exact boxes; only the simulator writes them).
            depth_size: required (width, height) of depth frames, px; None accepts any size.
            thermal_size: required (width, height) of thermal frames, px; None accepts any.

        Raises:
            DatasetError: missing folders, a malformed ``list.txt``, or frames without a depth
                image, thermal partner or label file.
        """
        if labels not in LABEL_FOLDERS:
            raise DatasetError(
                f"unknown label set {labels!r}; expected one of {', '.join(LABEL_FOLDERS)}"
            )
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise DatasetError(
                f"IPHD dataset {self.root} is a file; give the folder holding "
                f"iphd_{split}_depth/ and iphd_{split}_thermal/"
            )
        self.split = split
        self.labels = labels
        self.depth_size = depth_size
        self.thermal_size = thermal_size
        self.depth_dir = split_dir(self.root, split, "depth")
        self.thermal_dir = split_dir(self.root, split, "thermal")
        for folder in (self.depth_dir, self.thermal_dir):
            if not (folder / "images").is_dir():
                found = sorted(p.name for p in self.root.glob("iphd_*"))
                inside = ""
                if self.root.name.startswith("iphd_") and (self.root / "images").is_dir():
                    # One split's folder given for the dataset's root.
                    inside = (f"; {self.root} is one split's folder: give its parent "
                              f"{self.root.parent}")
                raise DatasetError(
                    f"IPHD folder {folder / 'images'} does not exist; expected "
                    f"iphd_{split}_depth/ and iphd_{split}_thermal/ under {self.root} "
                    f"(found: {', '.join(found) or 'nothing'}){inside}"
                )
        self.label_dir = self.depth_dir / LABEL_FOLDERS[labels]
        if not self.label_dir.is_dir():
            hint = (
                "; the real IPHD only has weak labels, use labels='weak'"
                if labels == "clean"
                else ""
            )
            raise DatasetError(f"label folder {self.label_dir} does not exist{hint}")
        list_path = self.depth_dir / "list.txt"
        depth_names = {p.stem for p in (self.depth_dir / "images").glob("*.png")}
        if list_path.is_file():
            self._names = _read_list(list_path)
            missing = [n for n in self._names if n not in depth_names]
            if missing:
                raise _missing_error(
                    missing, len(self._names), self.depth_dir / "images", "depth image"
                )
        else:
            self._names = sorted(depth_names)
        for where, suffix, what in (
            (self.thermal_dir / "images", ".png", "thermal partner"),
            (self.label_dir, ".txt", "label file"),
        ):
            present = {p.stem for p in where.glob(f"*{suffix}")}
            missing = [n for n in self._names if n not in present]
            if missing:
                raise _missing_error(missing, len(self._names), where, what)

    @property
    def names(self) -> tuple[str, ...]:
        """Base names of the frames, in dataset order."""
        return tuple(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __iter__(self) -> Iterator[IphdSample]:
        for i in range(len(self)):
            yield self[i]

    def __getitem__(self, index: int) -> IphdSample:
        """Load frame ``index`` (negative counts from the end).

        Raises:
            IndexError: ``index`` is out of range.
            DatasetError: an image is unreadable, not 16-bit single-channel or of the wrong
                size, or its label file is malformed.
        """
        if not -len(self) <= index < len(self):
            raise IndexError(f"frame index {index} out of range for {len(self)} frames")
        name = self._names[index]
        depth_mm = _read_uint16(self.depth_dir / "images" / f"{name}.png", "depth", self.depth_size)
        thermal_ck = _read_uint16(
            self.thermal_dir / "images" / f"{name}.png", "thermal", self.thermal_size
        )
        height, width = depth_mm.shape
        check_pair_shapes(depth_mm.shape, thermal_ck.shape, name)
        boxes = read_yolo_labels(self.label_dir / f"{name}.txt")
        xyxy = cxcywh_to_xyxy(boxes, width, height).astype(np.float32)
        return IphdSample(name=name, depth_mm=depth_mm, thermal_ck=thermal_ck, boxes_xyxy=xyxy)

    def load_meta(self) -> dict[str, dict[str, Any]]:
        """Return the ``meta.jsonl`` records keyed by frame name; empty if the file is absent.

        Raises:
            DatasetError: a line is not a JSON object with a string ``name``.
        """
        path = self.depth_dir / "meta.jsonl"
        if not path.is_file():
            return {}
        records: dict[str, dict[str, Any]] = {}
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path} line {lineno}: not valid JSON ({exc.msg})") from exc
            if not isinstance(record, dict) or not isinstance(record.get("name"), str):
                raise DatasetError(f"{path} line {lineno}: expected an object with a 'name'")
            records[record["name"]] = record
        return records


def _read_list(path: Path) -> list[str]:
    """Return the base names in an IPHD ``list.txt`` (``images/x.png``, ``x.png`` or absolute)."""
    names: list[str] = []
    seen: set[str] = set()
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        entry = line.strip()
        if not entry:
            continue
        # Lists made on Windows use backslashes.
        file = PurePosixPath(entry.replace("\\", "/"))
        if file.suffix.lower() != ".png":
            raise DatasetError(f"{path} line {lineno}: expected a .png image path, got {entry!r}")
        if file.stem in seen:
            raise DatasetError(f"{path} line {lineno}: frame {file.stem} is listed twice")
        seen.add(file.stem)
        names.append(file.stem)
    return names


def check_pair_shapes(depth_shape: tuple[int, ...], thermal_shape: tuple[int, ...],
                      name: str) -> None:
    """Refuse a thermal frame that is not the depth frame's view at some scale.

    Registered thermal covers the depth frame (IPHD: 213x120 for 1280x720, bag_to_iphd.py:
    106x60 for 424x240), so its width is the depth width times the height ratio, to 1.5 px
    of rounding plus 1 %. A frame of another shape was not registered into that depth frame:
    the model would learn people where they are not.

    Raises:
        DatasetError: naming the frame and the two sizes.
    """
    (dh, dw), (th, tw) = depth_shape[:2], thermal_shape[:2]
    expected = dw * th / dh if dh else tw
    if abs(tw - expected) > 1.5 + 0.01 * expected:
        raise DatasetError(
            f"frame {name}: thermal {tw}x{th} px is not the depth frame {dw}x{dh} at one "
            f"scale (expected about {expected:.0f}x{th}); its thermal was not registered "
            "into this depth frame: write it with the fusion's registration "
            "(training/bag_to_iphd.py, iphd-sim iphd)"
        )


def _read_uint16(path: Path, what: str, size: tuple[int, int] | None) -> np.ndarray:
    image = read_png(path)
    if image.ndim != 2 or image.dtype != np.uint16:
        raise DatasetError(
            f"{what} image {path} is {image.dtype} with shape {image.shape}; IPHD {what} frames "
            "are single-channel 16-bit PNGs"
        )
    if size is not None and (image.shape[1], image.shape[0]) != tuple(size):
        raise DatasetError(
            f"{what} image {path} is {image.shape[1]}x{image.shape[0]} px, expected "
            f"{size[0]}x{size[1]} (IPHD's); frames of another camera or of bag_to_iphd.py "
            f"(which keeps the recording's size) need other sizes accepted: {what}_size=None "
            "(IphdDataset), --any-size (iphd-eval detector), --set data.any_size=true "
            "(training/train_detector.py)"
        )
    return image
