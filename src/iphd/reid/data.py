"""Re-ID crop sources for paper B: simulator crops, BIWI RGBD-ID frames and open-reid folders."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import yaml

from iphd.data.output import read_png
from iphd.data.reid import (
    CROP_SIZE,
    DEPTH_CROPS,
    METRIC_WINDOW_M,
    MODALITIES,
    ReidDataset,
    ReidRecord,
    crop_person,
    metric_crop,
)
from iphd.errors import DatasetError

BIWI_SUBSETS = ("Training", "Still", "Walking")
OPEN_REID_SUBSETS = ("trainval", "train", "val", "query", "gallery")
DEFAULT_CAM_MODALITY: Mapping[int, str] = {0: "rgb", 1: "depth"}
_BIWI_FRAME_RE = re.compile(r"^(?P<frame>[^-]+)-(?P<kind>[abc])\.(?P<ext>[A-Za-z0-9]+)$")
_OPEN_REID_RE = re.compile(r"^(?P<pid>\d{8})_(?P<cam>\d{2})_(?P<idx>\d{4})\.(?P<ext>png|jpg|jpeg)$")
_IMAGE_EXTS = (".png", ".jpg", ".jpeg")
_MAX_IDX = 10_000  # open-reid indices have 4 digits, so pid * 10 000 + idx is unique


class CropSource(Protocol):
    """Anything that lists re-ID records and loads their crops.

    ``depth_crop`` says how its depth crops were cut (``iphd.data.reid.DEPTH_CROPS``), and
    ``depth_window_m`` the (width, height) in metres of a ``metric`` crop; an embedder must be
    trained and run on crops cut the same way.
    """

    depth_crop: str
    depth_window_m: tuple[float, float]

    @property
    def records(self) -> tuple[ReidRecord, ...]:
        """The crops of the source, in a fixed order."""
        ...

    def load_crop(self, record: ReidRecord) -> np.ndarray:
        """(256, 128) uint16 depth in mm or (256, 128, 3) uint8 RGB crop of ``record``."""
        ...


def _fit_crop(image: np.ndarray) -> np.ndarray:
    """Letterbox a whole image into CROP_SIZE (no-op when it already has that size)."""
    width, height = CROP_SIZE
    if image.shape[:2] == (height, width):
        return image
    return crop_person(image, (0, 0, image.shape[1], image.shape[0]), CROP_SIZE, pad=0.0)


def _read_rgb(path: Path) -> np.ndarray:
    image = read_png(path)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise DatasetError(
            f"RGB image {path} must be 8-bit 3-channel, got {image.dtype} with shape {image.shape}"
        )
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _read_depth(path: Path) -> np.ndarray:
    image = read_png(path)
    if image.ndim != 2 or image.dtype != np.uint16:
        raise DatasetError(
            f"depth image {path} must be a 16-bit single-channel image in mm, got {image.dtype} "
            f"with shape {image.shape}; 8-bit depth renderings cannot be turned back into mm"
        )
    return image


def _manifest_depth_crop(root: Path) -> tuple[str, tuple[float, float]]:
    """The depth crop geometry and metric window recorded in a dataset's ``simulator.yaml``.

    Datasets written before the geometry was recorded hold letterboxed crops; those without a
    recorded window were cut with ``METRIC_WINDOW_M``.
    """
    manifest = root / "simulator.yaml"
    if not manifest.is_file():
        return "letterbox", METRIC_WINDOW_M
    try:
        settings = yaml.safe_load(manifest.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DatasetError(f"cannot read {manifest}: {exc}") from exc
    value = settings.get("depth_crop", "letterbox") if isinstance(settings, dict) else None
    if value not in DEPTH_CROPS:
        raise DatasetError(
            f"{manifest} has depth_crop {value!r}; expected one of {', '.join(DEPTH_CROPS)}"
        )
    window = settings.get("depth_window_m", list(METRIC_WINDOW_M))
    try:
        width, height = (float(v) for v in window)
    except (TypeError, ValueError):
        width = height = math.nan
    if not (width > 0 and height > 0):
        raise DatasetError(
            f"{manifest} has depth_window_m {window!r}; expected [width, height] in metres"
        )
    return str(value), (width, height)


class SimReidSource:
    """The simulator's re-ID crops (``iphd.data.reid`` format) as a :class:`CropSource`."""

    def __init__(self, root: Path, split: str, modality: str | None = None) -> None:
        """Open one split; see :class:`iphd.data.reid.ReidDataset` for the checks made.

        Args:
            root: dataset root written by the simulator.
            split: ``"train"`` or ``"test"``.
            modality: keep only ``"depth"`` or ``"rgb"`` crops; None keeps both.

        Raises:
            DatasetError: the split is missing or invalid.
        """
        self._dataset = ReidDataset(root, split, modality)
        self._index = {r: i for i, r in enumerate(self._dataset.records)}
        self.depth_crop, self.depth_window_m = _manifest_depth_crop(Path(root))

    @property
    def records(self) -> tuple[ReidRecord, ...]:
        """Records of the split, in ``records.csv`` order."""
        return self._dataset.records

    def load_crop(self, record: ReidRecord) -> np.ndarray:
        """Crop of ``record`` as stored: (256, 128) uint16 mm or (256, 128, 3) uint8 RGB.

        Raises:
            DatasetError: the record is not part of this source, or its file is bad.
        """
        if record not in self._index:
            raise DatasetError(f"record {record.path} is not part of {self._dataset.split_root}")
        return self._dataset[self._index[record]][0]


@dataclass(frozen=True)
class BiwiGeometry:
    """Kinect v1 intrinsics used to carry a depth-frame box into the RGB frame.

    Defaults are BIWI RGBD-ID's published calibration: depth 640x480 with f = 575.8 px, RGB
    1280x960 (its 640x480 intrinsics f = 525 px, c = (319.5, 239.5) doubled), RGB camera 2.5 cm
    along +x of the depth camera, no rotation.

    Attributes:
        depth_f_px: depth focal length, px.
        depth_cx_px: depth principal point x, px.
        depth_cy_px: depth principal point y, px.
        rgb_f_px: RGB focal length at the RGB frame's resolution, px.
        rgb_cx_px: RGB principal point x, px.
        rgb_cy_px: RGB principal point y, px.
        baseline_m: RGB camera offset along the depth camera's x axis, m.
    """

    depth_f_px: float = 575.8
    depth_cx_px: float = 319.5
    depth_cy_px: float = 239.5
    rgb_f_px: float = 1050.0
    rgb_cx_px: float = 639.5
    rgb_cy_px: float = 479.5
    baseline_m: float = 0.025


def depth_box_to_rgb(
    box_xyxy: Sequence[float] | np.ndarray, distance_m: float, geometry: BiwiGeometry
) -> np.ndarray:
    """Map a person box from depth pixels to RGB pixels, assuming the person is a plane.

    Args:
        box_xyxy: (x1, y1, x2, y2) box in depth pixels, edges (pixel i spans [i, i + 1]).
        distance_m: the person's distance from the depth camera, m; <= 0 or non-finite ignores
            the baseline (parallax) term.
        geometry: intrinsics and baseline of the pair.

    Returns:
        (4,) float64 box in RGB pixels.
    """
    x1, y1, x2, y2 = np.asarray(box_xyxy, dtype=np.float64).reshape(4)
    g = geometry
    scale = g.rgb_f_px / g.depth_f_px
    known = np.isfinite(distance_m) and distance_m > 0
    shift = g.baseline_m * g.rgb_f_px / distance_m if known else 0.0
    # Box edges sit half a pixel before the centres the principal point is given in.
    xs = (np.array([x1, x2]) - 0.5 - g.depth_cx_px) * scale + g.rgb_cx_px + 0.5 + shift
    ys = (np.array([y1, y2]) - 0.5 - g.depth_cy_px) * scale + g.rgb_cy_px + 0.5
    return np.array([xs[0], ys[0], xs[1], ys[1]])


def user_map_box(user_map: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Box and pixel mask of the largest user in a Kinect user map.

    Args:
        user_map: (H, W) integer label image; 0 = background, k > 0 = user k.

    Returns:
        ``(box_xyxy, mask)``: (4,) float64 box in pixels (x2, y2 exclusive) and (H, W) bool mask
        of that user, or None if the map holds no user.
    """
    labels = np.asarray(user_map).astype(np.int64, copy=False)
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    if counts.size < 2 or counts.max() == 0:
        return None
    # Several labels appear when the Kinect briefly tracks a second blob; keep the main person.
    mask = labels == int(counts.argmax())
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    box = np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float64)
    return box, mask


class BiwiRgbdIdSource:
    """BIWI RGBD-ID person crops cut from full Kinect frames with the Kinect user map.

    Expected layout (as distributed by the dataset authors; the exact folder names of a local
    copy are the assumption here, the file naming is the published one)::

        <root>/Training/<seq>/<frame>-a.jpg   RGB frame, 1280x960 (any 8-bit colour image)
        <root>/Training/<seq>/<frame>-b.pgm   depth frame, 640x480, 16-bit, mm, 0 = invalid
        <root>/Training/<seq>/<frame>-c.pgm   user map, 640x480, 0 = background, k = user k
        <root>/Testing/Still/<seq>/...        same files, "Still" test sequences
        <root>/Testing/Walking/<seq>/...      same files, "Walking" test sequences

    ``<seq>`` is the person's number (e.g. ``000``..``049``) and is taken as the pid, so a
    person keeps one pid across Training, Still and Walking; pass ``pids`` to map other folder
    names. Files of other kinds (skeletons, ground plane) are ignored. A frame becomes one depth
    crop and one RGB crop sharing a pair id; frames whose user map is empty, or that lack one
    of the three files, are left out (see :attr:`dropped`). Crops are the user-map box, in the
    RGB frame mapped through :class:`BiwiGeometry` at the person's median depth, letterboxed to
    256x128 (depth padding is 0 = invalid). Depth crops are camid 0, RGB crops camid 1; session
    is ``<subset>_<seq>``; BIWI names frames by number, not time, so ``stamp_ns`` is 0.
    """

    def __init__(
        self,
        root: Path,
        subsets: Sequence[str] = BIWI_SUBSETS,
        *,
        geometry: BiwiGeometry | None = None,
        margin: float = 0.0,
        mask_depth: bool = False,
        pids: Mapping[str, int] | None = None,
        depth_crop: str = "letterbox",
        depth_window_m: tuple[float, float] = METRIC_WINDOW_M,
    ) -> None:
        """Index the frames of the chosen subsets and find the person box of each.

        Every user map and depth frame is read once here, so that empty frames are dropped
        before training and :meth:`load_crop` needs no second look at the user map.

        Args:
            root: dataset root (holding ``Training/`` and/or ``Testing/``).
            subsets: any of ``"Training"``, ``"Still"``, ``"Walking"``.
            geometry: depth-to-RGB mapping; default BIWI's Kinect calibration.
            margin: extra border around the user-map box, as a fraction of its size.
            mask_depth: zero the depth pixels outside the user's mask (background removal).
            pids: sequence folder name → pid, for folders not named by a number.
            depth_crop: ``letterbox`` (the user-map box) or ``metric`` (a
                ``depth_window_m`` window at the person's distance, with BIWI's depth focal
                length) depth crops; RGB crops are always the letterboxed box.
            depth_window_m: (width, height) in metres of a ``metric`` depth crop.

        Raises:
            DatasetError: unknown subset or depth crop, a missing subset folder, a sequence
                folder without frames or with a non-numeric name, or a frame of the wrong type
                or size.
        """
        self.root = Path(root)
        self.geometry = geometry or BiwiGeometry()
        self.margin = margin
        self.mask_depth = mask_depth
        if depth_crop not in DEPTH_CROPS:
            raise DatasetError(
                f"depth_crop must be one of {', '.join(DEPTH_CROPS)}, got {depth_crop!r}"
            )
        self.depth_crop = depth_crop
        self.depth_window_m = (float(depth_window_m[0]), float(depth_window_m[1]))
        unknown = [s for s in subsets if s not in BIWI_SUBSETS]
        if unknown or not subsets:
            raise DatasetError(
                f"unknown BIWI subsets {unknown}; choose from {', '.join(BIWI_SUBSETS)}"
            )
        records: list[ReidRecord] = []
        self._boxes: dict[str, np.ndarray] = {}
        self._user_maps: dict[str, Path] = {}
        self.dropped: list[str] = []
        for subset in subsets:
            folder = self.root / ("Training" if subset == "Training" else f"Testing/{subset}")
            if not folder.is_dir():
                raise DatasetError(
                    f"BIWI RGBD-ID folder {folder} is missing; expected {self.root}/Training/<seq>/"
                    " and Testing/{Still,Walking}/<seq>/ holding <frame>-a.jpg (RGB), "
                    "<frame>-b.pgm (16-bit depth, mm) and <frame>-c.pgm (user map)"
                )
            sequences = sorted(p for p in folder.iterdir() if p.is_dir())
            if not sequences:
                raise DatasetError(f"BIWI folder {folder} has no sequence folders <seq>/")
            for seq in sequences:
                records += self._index_sequence(subset, seq, pids, len(records) // 2)
        self._records = tuple(records)

    @property
    def records(self) -> tuple[ReidRecord, ...]:
        """Depth and RGB records, frame by frame (depth first), paths relative to the root."""
        return self._records

    def _pid(self, seq: Path, pids: Mapping[str, int] | None) -> int:
        if pids is not None:
            if seq.name not in pids:
                raise DatasetError(f"BIWI sequence {seq} has no entry in the pids mapping")
            return int(pids[seq.name])
        if not seq.name.isdigit():
            raise DatasetError(
                f"BIWI sequence folder {seq} is not named by a person number; rename it or pass "
                "pids={folder name: pid}"
            )
        return int(seq.name)

    def _index_sequence(
        self, subset: str, seq: Path, pids: Mapping[str, int] | None, first_pair: int
    ) -> list[ReidRecord]:
        pid = self._pid(seq, pids)
        frames: dict[str, dict[str, Path]] = {}
        for path in seq.iterdir():
            match = _BIWI_FRAME_RE.match(path.name)
            if match:
                frames.setdefault(match["frame"], {})[match["kind"]] = path
        if not frames:
            raise DatasetError(
                f"BIWI sequence {seq} has no <frame>-a.jpg / -b.pgm / -c.pgm files"
            )
        session = f"{subset}_{seq.name}"
        records: list[ReidRecord] = []
        for frame in sorted(frames):
            files = frames[frame]
            if set(files) != {"a", "b", "c"}:
                self.dropped.append(f"{seq / frame}: lacks {sorted({'a', 'b', 'c'} - set(files))}")
                continue
            found = self._person_boxes(files["b"], files["c"])
            if found is None:
                self.dropped.append(f"{seq / frame}: empty user map")
                continue
            pair_id = first_pair + len(records) // 2
            for kind, modality, camid in (("b", "depth", 0), ("a", "rgb", 1)):
                rel = files[kind].relative_to(self.root).as_posix()
                self._boxes[rel] = found[modality]
                self._user_maps[rel] = files["c"]
                records.append(ReidRecord(rel, pid, camid, modality, session, pair_id, 0))
        return records

    def _person_boxes(self, depth_path: Path, map_path: Path) -> dict[str, np.ndarray] | None:
        depth_mm = _read_depth(depth_path)
        user_map = read_png(map_path)
        if user_map.shape != depth_mm.shape:
            raise DatasetError(
                f"user map {map_path} is {user_map.shape[::-1]} but its depth frame is "
                f"{depth_mm.shape[::-1]}; BIWI user maps are aligned with the depth frame"
            )
        found = user_map_box(user_map)
        if found is None:
            return None
        box, mask = found
        person_mm = depth_mm[mask & (depth_mm > 0)]
        distance_m = float(np.median(person_mm)) / 1000.0 if person_mm.size else float("nan")
        return {"depth": box, "rgb": depth_box_to_rgb(box, distance_m, self.geometry)}

    def load_crop(self, record: ReidRecord) -> np.ndarray:
        """Cut ``record``'s person out of its frame: (256, 128) uint16 mm or (256, 128, 3) uint8.

        Raises:
            DatasetError: the record is not part of this source, or its frame is unreadable.
        """
        box = self._boxes.get(record.path)
        if box is None:
            raise DatasetError(f"record {record.path} is not part of BIWI at {self.root}")
        path = self.root / record.path
        if record.modality == "rgb":
            image = _read_rgb(path)
        else:
            image = _read_depth(path)
            if self.mask_depth:
                found = user_map_box(read_png(self._user_maps[record.path]))
                if found is not None:
                    image = np.where(found[1], image, 0).astype(np.uint16)
        try:
            if record.modality == "depth" and self.depth_crop == "metric":
                f = self.geometry.depth_f_px
                return metric_crop(image, box, f, f, self.depth_window_m, CROP_SIZE)
            return crop_person(image, box, CROP_SIZE, pad=self.margin)
        except ValueError as exc:
            raise DatasetError(f"cannot crop {path}: {exc}") from exc


class OpenReidSource:
    """Crops in the open-reid layout used by published splits (e.g. paper B's BIWI splits).

    Layout::

        <root>/images/{pid:08d}_{cam:02d}_{idx:04d}.png   one crop per file (.jpg also read)
        <root>/meta.json     optional: {"identities": [[[cam 0 files], [cam 1 files], ...], ...]}
        <root>/splits.json   optional: [{"trainval": [pids], "query": [...], ...}, ...]

    With ``meta.json`` its file list is authoritative (each name must sit under its own pid and
    cam); otherwise every image in ``images/`` is used. ``cam_modality`` says which cam numbers
    hold depth and which RGB; the cam number is kept as camid. Depth crops must be 16-bit PNG in
    mm. Crops of one pid with the same ``idx`` in both modalities are taken to be the same
    instant and share ``pair_id = pid * 10000 + idx``; a crop without a partner in the other
    modality gets -1. ``session`` is ``"cam<cam>"`` and ``stamp_ns`` is 0 (the layout keeps no
    times). The crops are already cut, without their frame's geometry: they count as
    letterboxed.
    """

    depth_crop = "letterbox"
    depth_window_m = METRIC_WINDOW_M  # unused: letterboxed

    def __init__(
        self,
        root: Path,
        cam_modality: Mapping[int, str] = DEFAULT_CAM_MODALITY,
        *,
        subset: str | None = None,
        split_id: int = 0,
    ) -> None:
        """List the crops, optionally only those of one subset of a published split.

        Args:
            root: folder holding ``images/``.
            cam_modality: cam number → ``"depth"`` or ``"rgb"``.
            subset: keep only the pids of this subset of ``splits.json`` (``"trainval"``,
                ``"train"``, ``"val"``, ``"query"``, ``"gallery"``); None keeps all.
            split_id: which split of ``splits.json`` to use.

        Raises:
            DatasetError: missing folder or file, a malformed file name (named in the message),
                a cam missing from ``cam_modality``, or a bad ``meta.json`` / ``splits.json``.
        """
        self.root = Path(root)
        self.images = self.root / "images"
        bad = {c: m for c, m in cam_modality.items() if m not in MODALITIES}
        if bad:
            raise DatasetError(f"cam_modality values must be {MODALITIES}, got {bad}")
        if not self.images.is_dir():
            raise DatasetError(
                f"{self.images} is missing; an open-reid dataset keeps its crops as "
                "images/{pid:08d}_{cam:02d}_{idx:04d}.png"
            )
        names = self._names()
        keys = [self._parse(name, cam_modality) for name in names]
        if subset is not None:
            wanted = self._split_pids(subset, split_id)
            kept = [(n, k) for n, k in zip(names, keys, strict=True) if k[0] in wanted]
            names, keys = [n for n, _ in kept], [k for _, k in kept]
        mods: dict[tuple[int, int], set[str]] = {}
        for pid, cam, idx in keys:
            mods.setdefault((pid, idx), set()).add(cam_modality[cam])
        self._records = tuple(
            ReidRecord(
                path=f"images/{name}",
                pid=pid,
                camid=cam,
                modality=cam_modality[cam],
                session=f"cam{cam}",
                pair_id=pid * _MAX_IDX + idx if len(mods[pid, idx]) > 1 else -1,
                stamp_ns=0,
            )
            for name, (pid, cam, idx) in zip(names, keys, strict=True)
        )

    @property
    def records(self) -> tuple[ReidRecord, ...]:
        """Records sorted by file name, paths relative to the root."""
        return self._records

    def _names(self) -> list[str]:
        meta_path = self.root / "meta.json"
        if not meta_path.is_file():
            return sorted(
                p.name for p in self.images.iterdir() if p.suffix.lower() in _IMAGE_EXTS
            )
        meta = _read_json(meta_path)
        identities = meta.get("identities") if isinstance(meta, dict) else None
        if not isinstance(identities, list):
            raise DatasetError(f"{meta_path} lacks an 'identities' list of per-cam file lists")
        names: list[str] = []
        for pid, cams in enumerate(identities):
            for cam, files in enumerate(cams):
                for name in files:
                    match = _OPEN_REID_RE.match(str(name))
                    if match and (int(match["pid"]), int(match["cam"])) != (pid, cam):
                        raise DatasetError(
                            f"{meta_path}: {name} is listed under pid {pid}, cam {cam}"
                        )
                    names.append(str(name))
        missing = [n for n in names if not (self.images / n).is_file()]
        if missing:
            raise DatasetError(
                f"{len(missing)} images listed in {meta_path} are missing from {self.images}: "
                f"{', '.join(missing[:5])}"
            )
        return sorted(names)

    def _parse(self, name: str, cam_modality: Mapping[int, str]) -> tuple[int, int, int]:
        match = _OPEN_REID_RE.match(name)
        if match is None:
            raise DatasetError(
                f"{self.images / name}: name must be {{pid:08d}}_{{cam:02d}}_{{idx:04d}}.png "
                "(e.g. 00000012_01_0003.png)"
            )
        pid, cam, idx = int(match["pid"]), int(match["cam"]), int(match["idx"])
        if cam not in cam_modality:
            raise DatasetError(
                f"{self.images / name}: cam {cam} has no modality in cam_modality "
                f"{dict(cam_modality)}"
            )
        return pid, cam, idx

    def _split_pids(self, subset: str, split_id: int) -> set[int]:
        if subset not in OPEN_REID_SUBSETS:
            raise DatasetError(
                f"unknown subset {subset!r}; choose from {', '.join(OPEN_REID_SUBSETS)}"
            )
        path = self.root / "splits.json"
        if not path.is_file():
            raise DatasetError(f"subset {subset!r} needs {path}, which is missing")
        splits = _read_json(path)
        if not isinstance(splits, list) or not 0 <= split_id < len(splits):
            count = len(splits) if isinstance(splits, list) else 0
            raise DatasetError(f"{path} has {count} splits; split_id {split_id} is out of range")
        pids = splits[split_id].get(subset) if isinstance(splits[split_id], dict) else None
        if not isinstance(pids, list):
            raise DatasetError(f"{path}: split {split_id} has no {subset!r} list of pids")
        return {int(p) for p in pids}

    def load_crop(self, record: ReidRecord) -> np.ndarray:
        """Read ``record``'s crop, letterboxed to (256, 128) if stored at another size.

        Returns:
            (256, 128) uint16 depth in mm or (256, 128, 3) uint8 RGB.

        Raises:
            DatasetError: the file is missing or has the wrong type for its modality.
        """
        path = self.root / record.path
        image = _read_depth(path) if record.modality == "depth" else _read_rgb(path)
        return _fit_crop(image)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read {path} as JSON: {exc}") from exc


class CropDataset:
    """Map-style dataset of (crop, record) over a source's records (usable by a torch loader)."""

    def __init__(self, source: CropSource, records: Sequence[ReidRecord] | None = None) -> None:
        """Serve ``records`` (default: all of the source's) in the given order.

        Args:
            source: where the crops come from.
            records: subset of the source's records, e.g. one modality or one split.
        """
        self.source = source
        self.records = tuple(source.records if records is None else records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[np.ndarray, ReidRecord]:
        """Crop ``index`` and its record.

        Raises:
            IndexError: ``index`` is out of range.
            DatasetError: the crop cannot be loaded.
        """
        record = self.records[index]
        return self.source.load_crop(record), record

    def __iter__(self) -> Iterator[tuple[np.ndarray, ReidRecord]]:
        return (self[i] for i in range(len(self)))


def select(
    records: Sequence[ReidRecord],
    *,
    modality: str | None = None,
    pids: Sequence[int] | set[int] | None = None,
    sessions: Sequence[str] | None = None,
) -> tuple[ReidRecord, ...]:
    """Records of one modality and/or some identities and sessions (None = no filter)."""
    pid_set = None if pids is None else set(pids)
    session_set = None if sessions is None else set(sessions)
    return tuple(
        r
        for r in records
        if (modality is None or r.modality == modality)
        and (pid_set is None or r.pid in pid_set)
        and (session_set is None or r.session in session_set)
    )


def record_ids(records: Sequence[ReidRecord]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N,) int64 pids, camids and pair ids of ``records``, as the evaluation takes them."""
    ids = np.array([(r.pid, r.camid, r.pair_id) for r in records], dtype=np.int64).reshape(-1, 3)
    return ids[:, 0], ids[:, 1], ids[:, 2]
