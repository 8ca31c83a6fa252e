"""Static INT8 quantization (QDQ) of the detector's ONNX export, for onnxruntime on the CPU.

The float32 export of ``onnx_export`` is quantized with ``onnxruntime.quantization``: weights
int8 with one scale per output channel, activations uint8 with ranges (min/max) measured on a
calibration set of real detector inputs. Every convolution is quantized, the first one and the
heads included: so quantized, the shipped detector's AP@0.5 on the simulator's tuning bags
seeds 4 and 5 stayed within 0.001 of float32, leaving nothing for a float layer to win back.

Calibration data: a small file of depth/thermal pairs in physical units ships with the package
(``iphd/models/detector_calibration.npz``, 1.8 MB: 16 pairs from the simulator's tuning bags
``out/sim/tune_bag_seed1`` and ``..._seed2`` as the simulator made them before its people
avoided each other, written by the ``calibration`` command below;
never from the held-out bag seed 1000). The network inputs are computed from it with the
normalisation stored in the model being quantized, so one file serves any checkpoint, and a
robot or CI machine builds the int8 model from what is installed, with no bag and no
simulator run; the result is cached like the float32 export (``cached_int8_onnx``). A model
trained on real data is best calibrated on its own recordings: ``calibration`` writes such a
file from any bag the offline pipeline reads.

    python -m iphd.detection.quantize quantize --checkpoint best.pt --out best-int8.onnx
    python -m iphd.detection.quantize calibration --out calibration.npz --bag BAG [--bag BAG]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import cv2
import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime import quantization as ort_quant

import iphd
from iphd.detection.detector import Detections, fusion_input
from iphd.detection.model import DetectorConfig
from iphd.detection.onnx_export import (
    INPUT_NAME,
    PRECISION_KEY,
    _config_from_json,
    cached_onnx,
)
from iphd.errors import CheckpointError, ConfigError, DatasetError, IphdError, load_failure
from iphd.graph import OFFLINE_TOPIC_ARGUMENTS, add_topic_arguments, topics_from_args
from iphd.normalize import NormalizeConfig
from iphd.onnxrt import cached_export

if TYPE_CHECKING:
    from iphd.detection.detector import Detector

LOG = logging.getLogger(__name__)

#: Version of the quantization recipe below; part of the cache key, so changing the recipe
#: (operator choice, types, calibration method) rebuilds every cached int8 model.
QUANT_VERSION = 1
CALIBRATION_FORMAT = "iphd-detector-calibration"
CALIBRATION_VERSION = 1
#: The calibration pairs shipped with the package (written by ``main calibration``).
SHIPPED_CALIBRATION = (
    Path(__file__).resolve().parent.parent / "models" / "detector_calibration.npz"
)
#: Pairs taken from each bag, evenly spread over it. Calibrating on 8, 16 or 64 pairs of the
#: tuning bags gave the same AP on two other tuning bags (within ±0.003), and a pair costs
#: ~115 kB of package, so the shipped file holds 2 x 8.
DEFAULT_PAIRS_PER_BAG = 8
#: The depth of a calibration pair is stored at the shipped model's input size (resized with
#: nearest neighbour, as ``normalize_depth`` does) and in centimetres: the normaliser maps
#: 0.1-10 m to 0-255, ~4 cm per step, so millimetres would only store sensor noise, which does
#: not compress (the file would be twice as large).
CALIBRATION_DEPTH_SIZE = (448, 256)


@dataclass(frozen=True)
class QuantizeConfig:
    """How a detector is quantized; every field is part of the cache key.

    Attributes:
        per_channel: one weight scale per output channel (else one per tensor). Both gave the
            same AP on the tuning bags and the same speed; per channel is the safer default
            for layers whose channels differ in range.
        calibration: calibration pairs file (.npz written by ``write_calibration``); empty =
            the shipped one (``SHIPPED_CALIBRATION``).
    """

    per_channel: bool = True
    calibration: str = ""

    @property
    def calibration_path(self) -> Path:
        """The calibration file this config uses."""
        return Path(self.calibration) if self.calibration else SHIPPED_CALIBRATION


@dataclass(frozen=True)
class CalibrationPairs:
    """Detector inputs to calibrate activation ranges on.

    Attributes:
        depth_mm: (N, H, W) uint16 depth in millimetres, 0 = invalid.
        thermal_ck: (N, h, w) uint16 thermal registered into the depth view, centi-kelvin,
            0 = no data.
        sources: where each pair comes from (``bag@stamp_ns``).
    """

    depth_mm: np.ndarray
    thermal_ck: np.ndarray
    sources: tuple[str, ...]

    def __len__(self) -> int:
        """Number of pairs."""
        return len(self.depth_mm)


def write_calibration(path: Path | str, pairs: CalibrationPairs) -> Path:
    """Write ``pairs`` as a compressed .npz (depth rounded to cm, see ``CALIBRATION_DEPTH_SIZE``).

    Raises:
        DatasetError: no pairs.
    """
    path = Path(path)
    if not len(pairs):
        raise DatasetError("no calibration pairs to write")
    depth_cm = np.stack([
        cv2.resize(d, CALIBRATION_DEPTH_SIZE, interpolation=cv2.INTER_NEAREST)
        for d in pairs.depth_mm
    ])
    depth_cm = ((depth_cm.astype(np.uint32) + 5) // 10).astype(np.uint16)
    meta = {
        "format": CALIBRATION_FORMAT,
        "version": CALIBRATION_VERSION,
        "iphd_version": iphd.__version__,
        "sources": list(pairs.sources),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        with open(tmp, "wb") as f:
            np.savez_compressed(
                f, depth_cm=depth_cm, thermal_ck=np.asarray(pairs.thermal_ck, np.uint16),
                meta=np.array(json.dumps(meta)),
            )
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_calibration(path: Path | str) -> CalibrationPairs:
    """Read a file written by :func:`write_calibration`.

    Raises:
        DatasetError: the file is missing, not such a file, or of another version.
    """
    path = Path(path)
    hint = ("write one with python -m iphd.detection.quantize calibration --bag BAG --out FILE, "
            "or reinstall the package for the shipped one")
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            depth_cm, thermal_ck = data["depth_cm"], data["thermal_ck"]
    except FileNotFoundError as exc:
        raise DatasetError(f"detector calibration file {path} does not exist; {hint}") from exc
    except (OSError, KeyError, ValueError) as exc:
        raise DatasetError(
            f"{path} is not a detector calibration file ({load_failure(exc)}); {hint}"
        ) from exc
    if meta.get("format") != CALIBRATION_FORMAT or meta.get("version") != CALIBRATION_VERSION:
        raise DatasetError(
            f"{path} is {meta.get('format')!r} version {meta.get('version')}, not "
            f"{CALIBRATION_FORMAT!r} version {CALIBRATION_VERSION}; {hint}"
        )
    if (depth_cm.dtype != np.uint16 or thermal_ck.dtype != np.uint16 or depth_cm.ndim != 3
            or thermal_ck.ndim != 3 or len(depth_cm) != len(thermal_ck) or not len(depth_cm)):
        raise DatasetError(
            f"{path}: calibration arrays {depth_cm.shape} {depth_cm.dtype} and "
            f"{thermal_ck.shape} {thermal_ck.dtype} are not N uint16 depth/thermal pairs; {hint}"
        )
    depth_mm = (depth_cm.astype(np.uint32) * 10).clip(0, 65535).astype(np.uint16)
    return CalibrationPairs(depth_mm, thermal_ck, tuple(meta.get("sources", ())))


class _PairCapture:
    """Stands in for the offline pipeline's detector: keeps chosen inputs, detects nothing."""

    def __init__(self, wanted: set[int], source: str) -> None:
        import torch

        self.device = torch.device("cpu")
        self.wanted = wanted
        self.source = source
        self.seen = 0
        self.kept: list[tuple[np.ndarray, np.ndarray, str]] = []

    def __call__(self, depth_mm: np.ndarray, thermal_ck: np.ndarray) -> Detections:
        if self.seen in self.wanted:
            self.kept.append((depth_mm.copy(), thermal_ck.copy(), f"{self.source}#{self.seen}"))
        self.seen += 1
        return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32))


def calibration_pairs_from_bags(
    bags: Sequence[Path | str], pairs_per_bag: int = DEFAULT_PAIRS_PER_BAG,
    topics: Mapping[str, str] | None = None,
) -> CalibrationPairs:
    """Detector inputs from bags, made as the offline pipeline makes them for its detector.

    Each bag runs through ``iphd.eval.pipeline.OfflinePipeline`` (synchronisation, thermal
    registration and hole filling with the bag's own rig calibration); of its N pairs, those
    at the centres of ``pairs_per_bag`` equal parts are kept (N is taken as the number of
    thermal messages, one pair each). Never pass a held-out evaluation bag. ``topics`` names
    the bags' depth and thermal topics as ``OfflineConfig.topics`` does.

    Raises:
        DatasetError: a bag is missing or unreadable, or gives no pair.
    """
    from iphd.data.rosbag import THERMAL_IMAGE, BagReader
    from iphd.eval.pipeline import OfflineConfig, OfflinePipeline, find_topic

    depth, thermal, sources = [], [], []
    for bag in bags:
        with BagReader(bag) as reader:
            topic = find_topic(reader.topics, THERMAL_IMAGE, topics)
            count = reader.topics[topic].count if topic is not None else 0
            wanted = {int((i + 0.5) * count / pairs_per_bag) for i in range(pairs_per_bag)}
            capture = _PairCapture(wanted, Path(bag).name)
            pipeline = OfflinePipeline(
                OfflineConfig(reid_checkpoint="none", topics=dict(topics or {})),
                reader.calibration,
                detector=cast("Detector", capture),
            )
            for _ in pipeline.run_bag(reader):
                pass
        if not capture.kept:
            raise DatasetError(f"{bag} gave no depth/thermal pair to calibrate on")
        for d, t, source in capture.kept:
            depth.append(d)
            thermal.append(t)
            sources.append(source)
    shapes = {(d.shape, t.shape) for d, t in zip(depth, thermal, strict=True)}
    if len(shapes) != 1:
        raise DatasetError(f"the bags give frames of several sizes {sorted(shapes)}; use one rig")
    return CalibrationPairs(np.stack(depth), np.stack(thermal), tuple(sources))


class _InputReader(ort_quant.CalibrationDataReader):
    """Feeds (1, 3, H, W) network inputs to the calibrator."""

    def __init__(self, inputs: list[np.ndarray]) -> None:
        self._inputs: Iterator[np.ndarray] = iter(inputs)

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next input, or None when all were given."""
        x = next(self._inputs, None)
        return None if x is None else {INPUT_NAME: x}


def quantize_onnx(
    fp32_path: Path | str, path: Path | str, pairs: CalibrationPairs,
    config: QuantizeConfig | None = None,
) -> Path:
    """Write the static INT8 (QDQ) quantization of a float32 detector export to ``path``.

    QDQ keeps the graph a standard ONNX model (QuantizeLinear/DequantizeLinear around float
    operators) that onnxruntime fuses into integer convolutions. Activations are uint8 and
    weights int8: that is onnxruntime's fast path on x86 (VNNI/AMX u8s8 kernels); int8
    activations ran slower than float32 on the Sapphire Rapids development machine. The
    metadata of the float32 export is kept, with ``iphd_precision`` = ``int8`` and the
    settings added.

    Raises:
        CheckpointError: ``fp32_path`` is not an iphd detector export.
    """
    config = config if config is not None else QuantizeConfig()
    fp32_path, path = Path(fp32_path), Path(path)
    proto = onnx.load(fp32_path)
    meta = {p.key: p.value for p in proto.metadata_props}
    try:
        detector: DetectorConfig = _config_from_json(DetectorConfig, meta["detector_config"])
        normalize: NormalizeConfig = _config_from_json(NormalizeConfig, meta["normalize_config"])
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise CheckpointError(
            f"{fp32_path} is not an iphd detector export ({exc}); export it again"
        ) from exc
    inputs = [
        fusion_input(d, t, detector.fusion, normalize)[None]
        for d, t in zip(pairs.depth_mm, pairs.thermal_ck, strict=True)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        # The quantizer logs a suggestion to run its pre-processing; that pass (shape
        # inference + graph optimisation) gave bit-identical outputs and speed on this
        # already-folded export while adding onnxruntime-only opset domains to the file.
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)
        try:
            ort_quant.quantize_static(
                fp32_path, tmp, _InputReader(inputs),
                quant_format=ort_quant.QuantFormat.QDQ,
                per_channel=config.per_channel,
                activation_type=ort_quant.QuantType.QUInt8,
                weight_type=ort_quant.QuantType.QInt8,
                calibrate_method=ort_quant.CalibrationMethod.MinMax,
            )
        finally:
            root.setLevel(level)
        quantized = onnx.load(tmp)
        meta.update({
            PRECISION_KEY: "int8",
            "iphd_quantization": json.dumps({
                **settings_key(config), "calibration_pairs": len(pairs),
            }),
        })
        onnx.helper.set_model_props(quantized, meta)
        quantized.doc_string = f"{proto.doc_string}, static int8 (QDQ)"
        onnx.checker.check_model(quantized)
        onnx.save(quantized, tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def settings_key(config: QuantizeConfig) -> dict[str, object]:
    """What a quantized model depends on besides its checkpoint (the cache key's settings).

    Raises:
        DatasetError: the calibration file cannot be read.
    """
    calibration = config.calibration_path
    try:
        digest = hashlib.sha256(calibration.read_bytes()).hexdigest()[:16]
    except OSError as exc:
        raise DatasetError(
            f"detector calibration file {calibration} cannot be read ({exc}); reinstall the "
            "package or pass a file written by python -m iphd.detection.quantize calibration"
        ) from exc
    return {
        "quant_version": QUANT_VERSION,
        "format": "qdq",
        "activations": "uint8",
        "weights": "int8",
        "per_channel": config.per_channel,
        "method": "minmax",
        "calibration_sha256": digest,
        "onnxruntime": ort.__version__,
    }


def cached_int8_onnx(
    checkpoint: Path | str, config: QuantizeConfig | None = None, folder: Path | None = None
) -> Path:
    """The INT8 model of a detector checkpoint, quantized on first use and kept in the cache.

    Named ``<checkpoint>-int8-<digest>.onnx``, the digest covering the checkpoint's bytes and
    :func:`settings_key` (recipe version, settings, calibration file digest, onnxruntime
    version), so a node start finds it and anything that would change it makes a new one.
    The float32 export it starts from is ``cached_onnx``'s (made too if missing).

    Raises:
        CheckpointError: the checkpoint is missing or not a usable detector checkpoint.
        DatasetError: the calibration file is missing or unreadable.
    """
    checkpoint = Path(checkpoint)
    settings = config if config is not None else QuantizeConfig()
    key = json.dumps(settings_key(settings), sort_keys=True)

    def quantize(path: Path) -> None:
        pairs = read_calibration(settings.calibration_path)
        quantize_onnx(cached_onnx(checkpoint, folder), path, pairs, settings)

    return cached_export(checkpoint, "detector", quantize, folder, variant="int8", key=key)


def get_args_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m iphd.detection.quantize``."""
    parser = argparse.ArgumentParser(
        prog="python -m iphd.detection.quantize", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    q = sub.add_parser("quantize", help="write the int8 model of a checkpoint")
    q.add_argument("--checkpoint", type=Path, required=True, help="detector checkpoint (.pt)")
    q.add_argument("--out", type=Path, help="ONNX file to write (default: <checkpoint>-int8.onnx)")
    q.add_argument("--calibration", default="",
                   help="calibration pairs (.npz); default: the shipped ones")
    q.add_argument("--per-tensor", action="store_true",
                   help="one weight scale per tensor instead of per output channel")
    c = sub.add_parser("calibration", help="write a calibration file from bags")
    c.add_argument("--bag", type=Path, action="append", required=True,
                   help="bag to take pairs from (repeat); never a held-out evaluation bag")
    c.add_argument("--out", type=Path, required=True, help=".npz file to write")
    c.add_argument("--pairs-per-bag", type=int, default=DEFAULT_PAIRS_PER_BAG,
                   help="default %(default)s")
    add_topic_arguments(c, OFFLINE_TOPIC_ARGUMENTS, "the bag's")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; returns the exit status (0 ok, 2 bad input)."""
    args = get_args_parser().parse_args(argv)
    prog = "quantize"
    try:
        if args.command == "calibration":
            if args.pairs_per_bag < 1:
                raise ConfigError(f"--pairs-per-bag must be >= 1, got {args.pairs_per_bag}")
            pairs = calibration_pairs_from_bags(
                args.bag, args.pairs_per_bag, topics_from_args(args, OFFLINE_TOPIC_ARGUMENTS)
            )
            out = write_calibration(args.out, pairs)
            print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB): {len(pairs)} pairs from "
                  f"{', '.join(str(b) for b in args.bag)}")
            return 0
        from iphd.detection.detector import load_checkpoint
        from iphd.detection.onnx_export import export_onnx

        config = QuantizeConfig(per_channel=not args.per_tensor, calibration=args.calibration)
        out = args.out or args.checkpoint.with_name(f"{args.checkpoint.stem}-int8.onnx")
        from iphd.detection.verifier import detector_fingerprint

        model, normalize, _ = load_checkpoint(args.checkpoint)
        fp32 = export_onnx(model, out.with_name(f".{out.stem}.fp32.onnx"), normalize,
                           source_sha256=detector_fingerprint(args.checkpoint))
        try:
            quantize_onnx(fp32, out, read_calibration(config.calibration_path), config)
        finally:
            fp32.unlink(missing_ok=True)
    except (IphdError, ValueError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    settings = dataclasses.asdict(config)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, static int8 QDQ, {settings})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
