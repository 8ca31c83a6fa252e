"""ONNX export of the person detector and ``OnnxDetector``, its onnxruntime twin of ``Detector``.

The .onnx file holds the raw network (``input`` (B, 3, H, W) → ``cls_logits`` (B, A, 2),
``box_deltas`` (B, A, 4), batch dynamic, H and W fixed) and, as metadata_props, the
``DetectorConfig`` and ``NormalizeConfig`` it needs, so it is self-describing like a checkpoint.
Post-processing (decode, score threshold, top-k, NMS) stays in torch and is the model's own
:meth:`~iphd.detection.model.FusionDetector.detect`, so both back ends give the same boxes.

    python -m iphd.detection.onnx_export --checkpoint runs/detector/best.pt --out best.onnx
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import Tensor

import iphd
from iphd.detection.detector import Detections, detect_frame, load_checkpoint
from iphd.detection.model import DetectorConfig, FusionDetector
from iphd.errors import CheckpointError, ConfigError, IphdError
from iphd.normalize import NormalizeConfig
from iphd.onnxrt import cached_export, on_cuda, open_session, trace_export

ONNX_FORMAT = "iphd-detector-onnx"
ONNX_FORMAT_VERSION = 1
#: Metadata key of the SHA-256 of the checkpoint an export was made from.
SOURCE_KEY = "source_checkpoint_sha256"
#: Opset 17 runs on every onnxruntime since 1.13 and on TensorRT 8.6+, the runtimes of robots
#: that lag behind the development machines; the network needs nothing newer.
DEFAULT_OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAMES: tuple[str, str] = ("cls_logits", "box_deltas")
#: Largest |onnxruntime − torch| on logits and deltas that ``main`` accepts after exporting.
EXPORT_ATOL = 1e-4
#: Metadata key of a model's arithmetic; absent = ``float32`` (``iphd.detection.quantize``
#: writes ``int8``).
PRECISION_KEY = "iphd_precision"


def _config_from_json(cls: type[Any], text: str) -> Any:
    values = json.loads(text)
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def export_onnx(
    model: FusionDetector,
    path: Path | str,
    normalize: NormalizeConfig,
    input_size: tuple[int, int] | None = None,
    opset: int = DEFAULT_OPSET,
    source_sha256: str = "",
) -> Path:
    """Write ``model``'s forward pass to ``path`` as ONNX, with its configs as metadata.

    The file is written next to ``path`` and renamed into place, so a reader never sees half a
    model. The model is exported in eval mode and left in the mode it came in.

    Args:
        model: the network, any fusion mode.
        path: the .onnx file to write (its folder is created).
        normalize: the input normalisation the model was trained with.
        input_size: (H, W) fixed in the graph; default ``model.config.input_size``. The stored
            ``DetectorConfig`` records this size, and ``normalize.out_size`` must match it.
        opset: ONNX opset version.
        source_sha256: SHA-256 of the checkpoint file ``model`` came from, kept in the
            metadata (``SOURCE_KEY``): a box verifier fitted on that checkpoint's boxes
            suits its exports too.

    Raises:
        ConfigError: if ``normalize.out_size`` (W, H) is not ``input_size``.
    """
    path = Path(path)
    h, w = input_size if input_size is not None else model.config.input_size
    if tuple(normalize.out_size) != (w, h):
        raise ConfigError(
            f"normalisation output {normalize.out_size} (w, h) does not match the export size "
            f"({h}, {w}) (h, w); pass a NormalizeConfig with out_size=({w}, {h})"
        )
    config = dataclasses.replace(model.config, input_size=(h, w))
    device = next(model.parameters()).device
    dummy = torch.zeros(1, config.in_channels, h, w, device=device)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    was_training = model.training
    model.eval()
    try:
        trace_export(model, dummy, tmp, INPUT_NAME, OUTPUT_NAMES, opset)
        proto = onnx.load(tmp)
        metadata = {
            "iphd_format": ONNX_FORMAT,
            "iphd_format_version": str(ONNX_FORMAT_VERSION),
            "iphd_version": iphd.__version__,
            "torch_version": torch.__version__,
            "detector_config": json.dumps(dataclasses.asdict(config)),
            "normalize_config": json.dumps(dataclasses.asdict(normalize)),
        }
        if source_sha256:
            metadata[SOURCE_KEY] = source_sha256
        onnx.helper.set_model_props(proto, metadata)
        proto.doc_string = f"iphd person detector ({config.fusion} fusion), input {h}x{w}"
        onnx.checker.check_model(proto)
        onnx.save(proto, tmp)
        tmp.replace(path)
    finally:
        model.train(was_training)
        tmp.unlink(missing_ok=True)
    return path


def cached_onnx(checkpoint: Path | str, folder: Path | None = None) -> Path:
    """The ONNX export of a detector checkpoint, made on first use and kept in the cache.

    Named after the checkpoint and the SHA-256 of its bytes (``iphd.onnxrt.cached_export``).

    Args:
        checkpoint: a detector checkpoint (.pt).
        folder: where exports are kept; default ``iphd.cache.cache_dir() / "onnx"``.

    Raises:
        CheckpointError: the checkpoint is missing or not a usable detector checkpoint.
    """
    checkpoint = Path(checkpoint)

    def export(path: Path) -> None:
        from iphd.detection.verifier import detector_fingerprint

        model, normalize, _ = load_checkpoint(checkpoint)
        export_onnx(model, path, normalize, source_sha256=detector_fingerprint(checkpoint))

    return cached_export(checkpoint, "detector", export, folder)


class _OnnxNetwork(FusionDetector):
    """A ``FusionDetector`` whose forward pass is an onnxruntime session.

    Only ``forward`` is replaced, so ``detect`` and ``anchors`` are the torch model's own for
    every fusion mode (``late`` has twice the anchors). The torch weights are built and then
    dropped to the meta device: the session holds the real ones. (Building under
    ``torch.device("meta")`` would skip the allocation, but its first use costs ~2 s and ~75 MB
    of imports, more than building a ResNet-50 on the CPU.)
    """

    def __init__(self, config: DetectorConfig, session: ort.InferenceSession) -> None:
        super().__init__(config)
        self.to_empty(device="meta")
        self.session = session

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Run the ONNX network on a (B, 3, H, W) CPU batch; outputs as ``FusionDetector``."""
        cls_logits, box_deltas = self.session.run(
            list(OUTPUT_NAMES), {INPUT_NAME: x.detach().cpu().numpy()}
        )
        return torch.from_numpy(cls_logits), torch.from_numpy(box_deltas)


class OnnxDetector:
    """Runs an exported detector with onnxruntime; same call and result as ``Detector``.

    Args:
        path: a .onnx file written by :func:`export_onnx`.
        device: ``auto`` (CUDA when this onnxruntime has it), ``cpu`` or ``cuda``.
        intra_op_threads: onnxruntime's threads within an operator; 0 = its default (one per
            physical core).

    Attributes:
        config: the ``DetectorConfig`` stored in the file.
        normalize: the ``NormalizeConfig`` stored in the file.
        precision: ``float32``, or ``int8`` for a quantized model.
        model: the network behind a ``FusionDetector`` interface (``detect``, ``anchors``).
        session: the onnxruntime session.

    Raises:
        CheckpointError: the file is missing, not a loadable ONNX model, has no iphd metadata
            or another format version, or its graph does not match its stored config.
        ConfigError: an unknown device, or CUDA asked for and not available.
    """

    def __init__(
        self, path: Path | str, device: str = "auto", intra_op_threads: int = 0
    ) -> None:
        path = Path(path)
        session = open_session(
            path, device, intra_op_threads,
            "export it again with python -m iphd.detection.onnx_export",
        )
        self.config, self.normalize = _read_metadata(path, session)
        self.session = session
        self.model = _OnnxNetwork(self.config, session)
        # The torch wrapper's attributes the nodes report: where it runs, and in what precision.
        self.device = torch.device("cuda" if on_cuda(session) else "cpu")
        self.half = False
        self.precision = session.get_modelmeta().custom_metadata_map.get(
            PRECISION_KEY, "float32"
        )

    @classmethod
    def from_file(
        cls, path: Path | str, device: str = "auto", intra_op_threads: int = 0
    ) -> OnnxDetector:
        """Load an exported detector (the counterpart of ``Detector.from_checkpoint``)."""
        return cls(path, device, intra_op_threads)

    @torch.inference_mode()
    def __call__(self, depth_mm: np.ndarray, thermal_ck: np.ndarray) -> Detections:
        """Detect people; boxes come back in the pixels of ``depth_mm``.

        Raises:
            FrameError: wrong dtype or dimensionality, or no valid thermal pixel.
        """
        return detect_frame(self.model, self.normalize, depth_mm, thermal_ck,
                            torch.device("cpu"))


def _read_metadata(
    path: Path, session: ort.InferenceSession
) -> tuple[DetectorConfig, NormalizeConfig]:
    """The configs stored by :func:`export_onnx`, checked against the session's graph."""
    meta = session.get_modelmeta().custom_metadata_map
    if meta.get("iphd_format") != ONNX_FORMAT:
        raise CheckpointError(
            f"{path} is an ONNX model but not an iphd detector (no '{ONNX_FORMAT}' metadata); "
            "export one from a checkpoint with python -m iphd.detection.onnx_export"
        )
    if meta.get("iphd_format_version") != str(ONNX_FORMAT_VERSION):
        raise CheckpointError(
            f"{path} has iphd ONNX format version {meta.get('iphd_format_version')}; this code "
            f"reads version {ONNX_FORMAT_VERSION}: export it again from its checkpoint"
        )
    try:
        config: DetectorConfig = _config_from_json(DetectorConfig, meta["detector_config"])
        normalize: NormalizeConfig = _config_from_json(NormalizeConfig, meta["normalize_config"])
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise CheckpointError(f"{path}: its stored configuration is invalid ({exc})") from exc
    h, w = config.input_size
    inputs = [(i.name, list(i.shape)[1:]) for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    expected = [(INPUT_NAME, [config.in_channels, h, w])]
    if inputs != expected or outputs != list(OUTPUT_NAMES):
        raise CheckpointError(
            f"{path}: graph inputs {inputs} and outputs {outputs} do not match its stored "
            f"config (expected {expected} and {list(OUTPUT_NAMES)}); export it again"
        )
    if tuple(normalize.out_size) != (w, h):
        raise CheckpointError(
            f"{path}: stored normalisation output {normalize.out_size} (w, h) does not match "
            f"the network input {config.input_size} (h, w); export it again"
        )
    return config, normalize


def max_abs_difference(
    model: FusionDetector, detector: OnnxDetector, batch: int = 2, seed: int = 0
) -> float:
    """Largest |onnxruntime − torch| on logits and deltas of a random batch; ``model`` in eval."""
    h, w = detector.config.input_size
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, detector.config.in_channels, h, w, generator=generator)
    device = next(model.parameters()).device
    with torch.no_grad():
        ref = [t.float().cpu() for t in model(x.to(device))]
        got = detector.model(x)
    return max(float((a - b).abs().max()) for a, b in zip(ref, got, strict=True))


def get_args_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m iphd.detection.onnx_export``."""
    parser = argparse.ArgumentParser(
        prog="python -m iphd.detection.onnx_export", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="detector checkpoint (.pt)")
    parser.add_argument("--out", type=Path, help="ONNX file to write (default: checkpoint .onnx)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="default %(default)s")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Export a checkpoint; returns the exit status (0 ok, 2 bad input or a wrong export)."""
    args = get_args_parser().parse_args(argv)
    prog = "onnx_export"
    out = args.out if args.out is not None else args.checkpoint.with_suffix(".onnx")
    try:
        from iphd.detection.verifier import detector_fingerprint

        model, normalize, _ = load_checkpoint(args.checkpoint)
        export_onnx(model, out, normalize, opset=args.opset,
                    source_sha256=detector_fingerprint(args.checkpoint))
        detector = OnnxDetector(out, device="cpu")
        diff = max_abs_difference(model, detector)
    except (IphdError, ValueError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    cfg = detector.config
    print(
        f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, opset {args.opset}): ResNet-"
        f"{cfg.backbone_depth} width {cfg.backbone_width}, {cfg.fusion} fusion, input "
        f"{cfg.input_size[0]}x{cfg.input_size[1]}, dynamic batch; onnxruntime vs torch max "
        f"|diff| {diff:.2e} (limit {EXPORT_ATOL:g})"
    )
    if not diff <= EXPORT_ATOL:
        print(f"{prog}: error: the export does not reproduce the torch model", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
