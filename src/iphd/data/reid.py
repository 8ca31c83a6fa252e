"""Re-ID crop dataset (DESIGN §4, paper B): depth and RGB person crops with identity records."""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

from iphd.data.output import read_png, write_png
from iphd.errors import DatasetError, FrameError

MODALITIES = ("depth", "rgb")
REID_SPLITS = ("train", "test")
CROP_SIZE = (128, 256)  # (width, height) of every crop, px
RECORD_COLUMNS = ("path", "pid", "camid", "modality", "session", "pair_id", "stamp_ns")
MAX_PID = 99_999  # pids name folders as <pid:05d>
_TOKEN_RE = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class ReidRecord:
    """One crop of the re-ID dataset.

    Attributes:
        path: crop file relative to the split folder, POSIX style
            (``<modality>/<pid:05d>/<name>.png``).
        pid: identity, 0..99999; train and test identities are disjoint.
        camid: camera id; the depth and RGB modalities never share one, so cross-modal
            evaluation treats them as different cameras.
        modality: ``"depth"`` or ``"rgb"``.
        session: recording session (sequence) the crop comes from.
        pair_id: id shared by the depth and RGB crops of one person at one moment; -1 if the
            crop has no partner.
        stamp_ns: capture time of the source frame, ns.
    """

    path: str
    pid: int
    camid: int
    modality: str
    session: str
    pair_id: int
    stamp_ns: int


def crop_person(
    image: np.ndarray,
    box_xyxy: Sequence[float] | np.ndarray,
    size: tuple[int, int] = CROP_SIZE,
    pad: float = 0.1,
) -> np.ndarray:
    """Cut a person out of ``image`` and letterbox it into a ``size`` crop.

    The box is grown by ``pad`` times its width/height on each side; parts outside the image are
    zero. The region is resized keeping its aspect ratio and centred on a zero background.
    uint8 images (RGB) are resampled with area/linear interpolation; every other dtype (depth in
    mm) with nearest neighbour, so depths are never blended across a person's outline.

    Args:
        image: (H, W) depth or (H, W, 3) colour image.
        box_xyxy: (x1, y1, x2, y2) person box in pixels of ``image``.
        size: (width, height) of the crop, px.
        pad: margin added on each side, as a fraction of the box size (>= 0).

    Returns:
        (height, width) or (height, width, 3) crop with ``image``'s dtype.

    Raises:
        ValueError: malformed image or box, negative pad, or a box that misses the image.
    """
    img = np.asarray(image)
    if img.ndim not in (2, 3) or img.size == 0:
        raise ValueError(f"image must be (H, W) or (H, W, C), got shape {img.shape}")
    box = np.asarray(box_xyxy, dtype=np.float64).reshape(-1)
    if box.shape != (4,) or not np.isfinite(box).all() or box[2] <= box[0] or box[3] <= box[1]:
        raise ValueError(f"box must be finite (x1, y1, x2, y2) with x2 > x1, y2 > y1, got {box}")
    if not math.isfinite(pad) or pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    out_w, out_h = size
    x1, y1, x2, y2 = box.tolist()
    mx, my = pad * (x2 - x1), pad * (y2 - y1)
    cx1, cy1 = math.floor(x1 - mx), math.floor(y1 - my)
    cx2, cy2 = math.ceil(x2 + mx), math.ceil(y2 + my)
    height, width = img.shape[:2]
    ix1, iy1 = max(cx1, 0), max(cy1, 0)
    ix2, iy2 = min(cx2, width), min(cy2, height)
    if ix1 >= ix2 or iy1 >= iy2:
        raise ValueError(f"box {box.tolist()} does not overlap the {width}x{height} image")
    region = np.zeros((cy2 - cy1, cx2 - cx1, *img.shape[2:]), img.dtype)
    region[iy1 - cy1 : iy2 - cy1, ix1 - cx1 : ix2 - cx1] = img[iy1:iy2, ix1:ix2]
    scale = min(out_w / region.shape[1], out_h / region.shape[0])
    new_w = min(out_w, max(1, round(region.shape[1] * scale)))
    new_h = min(out_h, max(1, round(region.shape[0] * scale)))
    if img.dtype == np.uint8:
        interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    else:
        interp = cv2.INTER_NEAREST_EXACT
    resized = cv2.resize(region, (new_w, new_h), interpolation=interp)
    out = np.zeros((out_h, out_w, *img.shape[2:]), img.dtype)
    ox, oy = (out_w - new_w) // 2, (out_h - new_h) // 2
    out[oy : oy + new_h, ox : ox + new_w] = resized.reshape(new_h, new_w, *img.shape[2:])
    return out


#: Depth crop geometries: ``letterbox`` fits the box (pixel scale lost), ``metric`` cuts a
#: fixed window in metres at the person's distance (body size kept).
DEPTH_CROPS = ("letterbox", "metric")
#: (width, height) of the metric window in metres: 1:2 like the crop, room for a tall person
#: with raised arms.
METRIC_WINDOW_M = (1.2, 2.4)


def person_depth_mm(depth_mm: np.ndarray, box_xyxy: Sequence[float] | np.ndarray) -> float:
    """Robust distance of the person in a box: median valid depth of the box's centre, mm.

    The centre (middle half of the width, 20-80 % of the height) is mostly torso, so the
    background and the floor at the box corners do not count. Falls back to the whole box when
    the centre holds no valid depth.

    Returns:
        The median depth in mm, or NaN when the box (clipped to the image) has no valid depth.
    """
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    height, width = depth_mm.shape[:2]
    w, h = x2 - x1, y2 - y1
    for fx0, fx1, fy0, fy1 in ((0.25, 0.75, 0.2, 0.8), (0.0, 1.0, 0.0, 1.0)):
        c0 = min(max(int(math.floor(x1 + fx0 * w)), 0), width)
        c1 = min(max(int(math.ceil(x1 + fx1 * w)), 0), width)
        r0 = min(max(int(math.floor(y1 + fy0 * h)), 0), height)
        r1 = min(max(int(math.ceil(y1 + fy1 * h)), 0), height)
        values = depth_mm[r0:r1, c0:c1]
        values = values[values > 0]
        if values.size:
            return float(np.median(values))
    return math.nan


def metric_crop(
    depth_mm: np.ndarray,
    box_xyxy: Sequence[float] | np.ndarray,
    fx_px: float,
    fy_px: float,
    window_m: tuple[float, float] = METRIC_WINDOW_M,
    size: tuple[int, int] = CROP_SIZE,
) -> np.ndarray:
    """Cut a fixed-size window in metres around a person out of a depth image.

    The window is ``window_m`` (width, height) at the person's distance
    (:func:`person_depth_mm`), centred on the box, so a tall or broad person fills more of the
    crop than a short or slim one: the body size that a letterboxed crop throws away is what
    tells people apart in depth. Parts outside the image are zero (invalid); the window is
    resized with nearest neighbour, so depths are never blended.

    Args:
        depth_mm: (H, W) uint16 depth in millimetres, 0 = invalid.
        box_xyxy: (x1, y1, x2, y2) person box in pixels of ``depth_mm``.
        fx_px: horizontal focal length of the depth image, px.
        fy_px: vertical focal length of the depth image, px.
        window_m: (width, height) of the window in metres.
        size: (width, height) of the crop, px.

    Returns:
        (height, width) uint16 crop in mm.

    Raises:
        ValueError: malformed image, box, focal lengths or window, a box that misses the image,
            or no valid depth in the box.
    """
    img = np.asarray(depth_mm)
    if img.ndim != 2 or img.size == 0:
        raise ValueError(f"depth image must be (H, W), got shape {img.shape}")
    box = np.asarray(box_xyxy, dtype=np.float64).reshape(-1)
    if box.shape != (4,) or not np.isfinite(box).all() or box[2] <= box[0] or box[3] <= box[1]:
        raise ValueError(f"box must be finite (x1, y1, x2, y2) with x2 > x1, y2 > y1, got {box}")
    if not (math.isfinite(fx_px) and math.isfinite(fy_px) and fx_px > 0 and fy_px > 0):
        raise ValueError(f"focal lengths must be finite and > 0 px, got fx={fx_px}, fy={fy_px}")
    if not all(math.isfinite(v) and v > 0 for v in window_m) or len(window_m) != 2:
        raise ValueError(f"window_m must be (width, height) > 0 m, got {window_m}")
    height, width = img.shape
    x1, y1, x2, y2 = box.tolist()
    if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
        raise ValueError(f"box {box.tolist()} does not overlap the {width}x{height} image")
    z_mm = person_depth_mm(img, box)
    if not math.isfinite(z_mm):
        raise ValueError(f"no valid depth in box {box.tolist()}: its distance is unknown")
    half_w = 0.5 * window_m[0] * fx_px * 1000.0 / z_mm
    half_h = 0.5 * window_m[1] * fy_px * 1000.0 / z_mm
    cx, cy = 0.5 * (x1 + x2), 0.5 * (y1 + y2)
    out_w, out_h = size
    # Sample the window on the output grid (nearest pixel centre): no intermediate region,
    # however large the window is at close range.
    cols = np.floor(cx - half_w + (np.arange(out_w) + 0.5) * (2.0 * half_w / out_w)).astype(int)
    rows = np.floor(cy - half_h + (np.arange(out_h) + 0.5) * (2.0 * half_h / out_h)).astype(int)
    out = np.zeros((out_h, out_w), img.dtype)
    col_ok = (cols >= 0) & (cols < width)
    row_ok = (rows >= 0) & (rows < height)
    out[np.ix_(row_ok, col_ok)] = img[np.ix_(rows[row_ok], cols[col_ok])]
    return out


def _check_split(split: str) -> None:
    if split not in REID_SPLITS:
        raise DatasetError(
            f"unknown re-ID split '{split}'; expected one of {', '.join(REID_SPLITS)}"
        )


def _check_crop(image: np.ndarray, modality: str) -> None:
    width, height = CROP_SIZE
    if modality == "depth":
        ok = image.shape == (height, width) and image.dtype == np.uint16
        want = f"({height}, {width}) uint16 (mm)"
    else:
        ok = image.shape == (height, width, 3) and image.dtype == np.uint8
        want = f"({height}, {width}, 3) uint8 (RGB)"
    if not ok:
        raise FrameError(
            f"{modality} crop must be {want}, got {image.dtype} with shape {image.shape}; "
            "make it with crop_person()"
        )


def write_crop(
    root: Path,
    split: str,
    image: np.ndarray,
    *,
    pid: int,
    camid: int,
    modality: str,
    session: str,
    stamp_ns: int,
    pair_id: int = -1,
    name: str | None = None,
) -> ReidRecord:
    """Write one crop as ``root/<split>/<modality>/<pid:05d>/<name>.png``; safe from workers.

    Files are created exclusively, so two workers given the same name fail instead of
    overwriting each other.

    Args:
        root: dataset root.
        split: ``"train"`` or ``"test"``.
        image: (256, 128) uint16 depth crop in mm (0 = invalid) or (256, 128, 3) uint8 RGB crop
            in RGB order.
        pid: identity, 0..99999.
        camid: camera id (>= 0).
        modality: ``"depth"`` or ``"rgb"``.
        session: recording session, letters, digits, ``_``, ``.`` and ``-`` only.
        stamp_ns: capture time of the source frame, ns.
        pair_id: id shared with the other modality's crop of the same moment; -1 for none.
        name: file base name; default ``<session>_c<camid>_<stamp_ns>``.

    Returns:
        The crop's record, to be passed to :func:`finalize_split`.

    Raises:
        FrameError: the image has the wrong shape or dtype for its modality.
        DatasetError: bad split, modality, ids, session or name, or the file already exists.
    """
    _check_split(split)
    record = ReidRecord(
        path="",
        pid=pid,
        camid=camid,
        modality=modality,
        session=session,
        pair_id=pair_id,
        stamp_ns=stamp_ns,
    )
    _check_record(record, f"crop of pid {pid}")
    name = f"{session}_c{camid}_{stamp_ns}" if name is None else name
    if not _TOKEN_RE.fullmatch(name):
        raise DatasetError(f"crop name {name!r} may only hold letters, digits, '_', '.', '-'")
    image = np.asarray(image)
    _check_crop(image, modality)
    rel = f"{modality}/{pid:05d}/{name}.png"
    path = Path(root) / split / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if modality == "rgb" else image)
    return ReidRecord(rel, pid, camid, modality, session, pair_id, stamp_ns)


def _check_record(record: ReidRecord, where: str) -> None:
    """Raise DatasetError if a record's values are out of range (the path is not checked)."""
    problems = []
    ints = {
        "pid": record.pid,
        "camid": record.camid,
        "pair_id": record.pair_id,
        "stamp_ns": record.stamp_ns,
    }
    for key, value in ints.items():
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            problems.append(f"{key} must be an integer, got {value!r}")
    if not problems:
        if not 0 <= record.pid <= MAX_PID:
            problems.append(f"pid must be 0..{MAX_PID}, got {record.pid}")
        if record.camid < 0:
            problems.append(f"camid must be >= 0, got {record.camid}")
        if record.pair_id < -1:
            problems.append(f"pair_id must be >= -1, got {record.pair_id}")
        if record.stamp_ns < 0:
            problems.append(f"stamp_ns must be >= 0, got {record.stamp_ns}")
    if record.modality not in MODALITIES:
        problems.append(f"modality must be one of {', '.join(MODALITIES)}, got {record.modality!r}")
    if not isinstance(record.session, str) or not _TOKEN_RE.fullmatch(record.session):
        problems.append(
            f"session must be non-empty letters, digits, '_', '.', '-', got {record.session!r}"
        )
    if problems:
        raise DatasetError(f"{where}: {'; '.join(problems)}")


def _listing(items: Sequence[object], limit: int = 5) -> str:
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def finalize_split(root: Path, split: str, records: Iterable[ReidRecord]) -> Path:
    """Write ``root/<split>/records.csv`` (sorted by path) for the crops of one split.

    Call once in the parent process after every :func:`write_crop` of the split returned.

    Args:
        root: dataset root.
        split: ``"train"`` or ``"test"``.
        records: the records returned by :func:`write_crop` (any order).

    Returns:
        The path of ``records.csv``.

    Raises:
        DatasetError: duplicate paths, crops missing on disk, invalid values, or a camid used
            by both modalities (cross-modal evaluation needs them to differ).
    """
    _check_split(split)
    split_root = Path(root) / split
    ordered = sorted(records, key=lambda r: r.path)
    for r in ordered:
        _check_record(r, f"record {r.path}")
    paths = [r.path for r in ordered]
    duplicates = sorted({a for a, b in zip(paths, paths[1:], strict=False) if a == b})
    if duplicates:
        raise DatasetError(f"re-ID split {split}: crops recorded twice: {_listing(duplicates)}")
    missing = [p for p in paths if not (split_root / p).is_file()]
    if missing:
        raise DatasetError(
            f"{len(missing)} recorded crops are missing under {split_root}: {_listing(missing)}"
        )
    cams = {m: {r.camid for r in ordered if r.modality == m} for m in MODALITIES}
    shared = sorted(cams["depth"] & cams["rgb"])
    if shared:
        raise DatasetError(
            f"re-ID split {split}: camids {_listing(shared)} are used by both depth and rgb "
            "crops; give each modality its own camids so cross-modal evaluation can tell them "
            "apart"
        )
    split_root.mkdir(parents=True, exist_ok=True)
    out = split_root / "records.csv"
    with open(out, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(RECORD_COLUMNS)
        for r in ordered:
            writer.writerow([getattr(r, c) for c in RECORD_COLUMNS])
    return out


def _parse_int(text: str | None, column: str, where: str) -> int:
    try:
        return int(text if text is not None else "")
    except ValueError as exc:
        raise DatasetError(f"{where}: column '{column}' must be an integer, got {text!r}") from exc


def read_records(root: Path, split: str) -> list[ReidRecord]:
    """Read and validate ``root/<split>/records.csv``.

    Returns:
        The records in file order.

    Raises:
        DatasetError: the file is missing, lacks columns, or a row has a bad value (the message
            names the file and line).
    """
    _check_split(split)
    path = Path(root) / split / "records.csv"
    if not path.is_file():
        raise DatasetError(
            f"{path} does not exist; {Path(root)} is not a re-ID dataset with a {split} split "
            "(training/bag_to_reid.py --split NAME or iphd-sim reid writes records.csv)"
        )
    records: list[ReidRecord] = []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None:
            raise DatasetError(
                f"{path} is empty; write the split again (training/bag_to_reid.py or iphd-sim "
                "reid)"
            )
        missing = [c for c in RECORD_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(
                f"{path}: header lacks columns {', '.join(missing)}; expected "
                f"{','.join(RECORD_COLUMNS)}"
            )
        for row in reader:
            where = f"{path} line {reader.line_num}"
            if None in row or any(row[c] is None for c in RECORD_COLUMNS):
                raise DatasetError(f"{where}: expected {len(reader.fieldnames or [])} columns")
            rel = row["path"]
            parts = PurePosixPath(rel).parts
            if not rel or rel.startswith("/") or ".." in parts or "\\" in rel:
                raise DatasetError(
                    f"{where}: path {rel!r} must be a relative POSIX path inside {path.parent}"
                )
            record = ReidRecord(
                path=rel,
                pid=_parse_int(row["pid"], "pid", where),
                camid=_parse_int(row["camid"], "camid", where),
                modality=row["modality"],
                session=row["session"],
                pair_id=_parse_int(row["pair_id"], "pair_id", where),
                stamp_ns=_parse_int(row["stamp_ns"], "stamp_ns", where),
            )
            _check_record(record, where)
            records.append(record)
    return records


def check_disjoint(train_records: Iterable[ReidRecord], test_records: Iterable[ReidRecord]) -> None:
    """Raise if any identity appears in both splits (re-ID test identities must be unseen).

    Raises:
        DatasetError: listing (up to 5 of) the shared pids.
    """
    shared = sorted({r.pid for r in train_records} & {r.pid for r in test_records})
    if shared:
        raise DatasetError(
            f"{len(shared)} identities are in both train and test: pids {_listing(shared)}; "
            "re-ID splits must not share identities"
        )


class ReidDataset:
    """Crops of one re-ID split, optionally of one modality, read as (image, record) pairs."""

    def __init__(self, root: Path, split: str, modality: str | None = None) -> None:
        """Read ``records.csv`` of a split and check that every crop file exists.

        Args:
            root: dataset root.
            split: ``"train"`` or ``"test"``.
            modality: ``"depth"`` or ``"rgb"`` to keep only that modality; None keeps both.

        Raises:
            DatasetError: unknown modality, invalid records, or missing crop files.
        """
        if modality is not None and modality not in MODALITIES:
            raise DatasetError(
                f"unknown modality {modality!r}; expected one of {', '.join(MODALITIES)} or None"
            )
        self.root = Path(root)
        self.split_root = self.root / split
        self.modality = modality
        records = read_records(self.root, split)
        self.records = tuple(r for r in records if modality is None or r.modality == modality)
        missing = [r.path for r in self.records if not (self.split_root / r.path).is_file()]
        if missing:
            raise DatasetError(
                f"{len(missing)} crops listed in {self.split_root / 'records.csv'} are missing: "
                f"{_listing(missing)}"
            )

    @property
    def pids(self) -> tuple[int, ...]:
        """Sorted identities present in this dataset."""
        return tuple(sorted({r.pid for r in self.records}))

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[np.ndarray, ReidRecord]:
        """Return crop ``index`` and its record.

        The image is (256, 128) uint16 depth in mm or (256, 128, 3) uint8 in RGB order.

        Raises:
            IndexError: ``index`` is out of range.
            DatasetError: the crop is unreadable or has the wrong size or dtype.
        """
        record = self.records[index]
        path = self.split_root / record.path
        image = read_png(path)
        if record.modality == "rgb" and image.ndim == 3 and image.shape[2] == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        try:
            _check_crop(image, record.modality)
        except FrameError as exc:
            raise DatasetError(f"crop {path}: {exc}") from exc
        return image, record
