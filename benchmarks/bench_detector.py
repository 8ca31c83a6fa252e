"""Benchmark of the person detector per 256x448 frame: torch vs onnxruntime, paper vs shipped."""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from machine import cpu_model, peak_rss_mb, summary, timed

from iphd.detection.detector import (
    SHIPPED_CHECKPOINT,
    Detector,
    fusion_input,
    load_checkpoint,
    save_checkpoint,
)
from iphd.detection.model import DetectorConfig, FusionDetector
from iphd.normalize import NormalizeConfig

CONFIGS = ("paper", "shipped")
BACKENDS = ("torch", "onnx")
DEPTH_HW = (720, 1280)
THERMAL_HW = (120, 213)


@dataclass(frozen=True)
class Subject:
    """A model to benchmark: its .pt checkpoint, its .onnx export and how to name it."""

    name: str
    description: str
    checkpoint: Path
    onnx: Path


def describe(config: DetectorConfig) -> str:
    """Return a short architecture description for the table."""
    rem = ", REM" if config.use_rem else ""
    return (f"ResNet-{config.backbone_depth} width {config.backbone_width}, head "
            f"{config.head_channels}{rem}, {config.fusion} fusion")


def prepare(name: str, shipped: Path, folder: Path) -> Subject:
    """The shipped checkpoint, or the paper config with random weights (seed 0), + ONNX export.

    The paper's ResNet-50 is timed with random weights: none is trained here, and the weights do
    not change the cost of the network (only how many boxes reach NMS).
    """
    from iphd.detection.onnx_export import export_onnx

    if name == "shipped":
        checkpoint = shipped
        model, normalize, _ = load_checkpoint(checkpoint)
        description = f"{describe(model.config)} ({shipped.name})"
    else:
        config = DetectorConfig()
        torch.manual_seed(0)
        model = FusionDetector(config).eval()
        h, w = config.input_size
        normalize = NormalizeConfig(out_size=(w, h))
        checkpoint = save_checkpoint(folder / f"{name}.pt", model, normalize)
        description = describe(config) + ", random weights"
    onnx = export_onnx(model, folder / f"{name}.onnx", normalize)
    return Subject(name, description, checkpoint, onnx)


def synthetic_pair() -> tuple[np.ndarray, np.ndarray]:
    """Return a 1280x720 depth_mm and a 213x120 thermal_ck frame: a room with two people."""
    rng = np.random.default_rng(0)
    depth_mm = rng.normal(4000.0, 30.0, DEPTH_HW)
    thermal_ck = rng.normal(29500.0, 5.0, THERMAL_HW)
    for x0, z_mm in ((300, 1800.0), (800, 3000.0)):
        depth_mm[200:700, x0 : x0 + 180] = z_mm
        tx = x0 * THERMAL_HW[1] // DEPTH_HW[1]
        thermal_ck[33:117, tx : tx + 30] = 30600.0
    return depth_mm.astype(np.uint16), thermal_ck.astype(np.uint16)


def worker(backend: str, path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Load one model with one backend in this (fresh) process and time it."""
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    detector: Any
    if backend == "onnx":
        from iphd.detection.onnx_export import OnnxDetector

        detector = OnnxDetector(path, device="cpu", intra_op_threads=args.threads)
    else:
        detector = Detector.from_checkpoint(path, device="cpu")
    load_s = time.perf_counter() - t0
    depth_mm, thermal_ck = synthetic_pair()
    x = fusion_input(depth_mm, thermal_ck, detector.model.config.fusion, detector.normalize)
    batch = torch.from_numpy(x)[None]
    with torch.inference_mode():
        network = timed(lambda: detector.model.detect(batch), args.warmup, args.iterations)
    wrapper = timed(lambda: detector(depth_mm, thermal_ck), args.warmup, args.iterations)
    return {
        "load_s": load_s,
        "network_ms": network,
        "wrapper_ms": wrapper,
        "detections": len(detector(depth_mm, thermal_ck).scores),
        "peak_rss_mb": peak_rss_mb(),
    }


def run_worker(backend: str, path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Run :func:`worker` in a fresh Python so peak RSS covers that model and backend only."""
    cmd = [sys.executable, __file__, "--worker", backend, str(path),
           "--threads", str(args.threads), "--iterations", str(args.iterations),
           "--warmup", str(args.warmup)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed:\n{done.stderr}")
    return json.loads(done.stdout.splitlines()[-1])


def get_args_parser() -> argparse.ArgumentParser:
    """Return the command-line parser."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2,
                        help="torch and onnxruntime intra-op threads (default %(default)s)")
    parser.add_argument("--iterations", type=int, default=20,
                        help="timed frames per measurement (default %(default)s)")
    parser.add_argument("--warmup", type=int, default=3,
                        help="untimed frames before each measurement (default %(default)s)")
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help="comma-separated subset of %(default)s")
    parser.add_argument("--backends", default=",".join(BACKENDS),
                        help="comma-separated subset of %(default)s")
    parser.add_argument("--shipped", type=Path, default=SHIPPED_CHECKPOINT,
                        help="checkpoint timed as 'shipped' (default: the package's)")
    parser.add_argument("--worker", nargs=2, metavar=("BACKEND", "PATH"), help=argparse.SUPPRESS)
    return parser


def main(args: argparse.Namespace) -> int:
    """Time every config with every backend, each in its own process; print a Markdown table."""
    if args.worker is not None:
        print(json.dumps(worker(args.worker[0], Path(args.worker[1]), args)))
        return 0
    configs = [c for c in args.configs.split(",") if c]
    backends = [b for b in args.backends.split(",") if b]
    for value, known in ((configs, CONFIGS), (backends, BACKENDS)):
        unknown = set(value) - set(known)
        if unknown:
            print(f"error: unknown {', '.join(sorted(unknown))}; choose from {known}",
                  file=sys.stderr)
            return 2
    import onnxruntime

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_detector_") as tmp:
        for name in configs:
            print(f"{name}: writing checkpoint and ONNX export", file=sys.stderr)
            subject = prepare(name, args.shipped, Path(tmp))
            for backend in backends:
                print(f"{name}: timing {backend}", file=sys.stderr)
                path = subject.onnx if backend == "onnx" else subject.checkpoint
                rows.append((subject, backend, run_worker(backend, path, args)))

    print()
    print(f"Machine: {cpu_model()}, {args.threads} threads; Python {platform.python_version()}, "
          f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}")
    print(f"Command: `{shlex.join([sys.executable, *sys.argv])}`")
    print(f"{args.warmup} warm-up then {args.iterations} timed frames per measurement, batch 1. "
          "Network + post-processing: `model.detect` on a 256x448 input (decode, threshold, "
          "NMS); wrapper: the detector called on a 1280x720 depth + 213x120 thermal pair "
          "(normalisation, network, post-processing, boxes back to depth pixels). Peak RSS of "
          "a fresh process that loads the model and runs both.")
    print()
    print("| config | backend | network + post (ms) median / p95 | frames/s | "
          "wrapper (ms) median / p95 | frames/s | load (s) | peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|---|")
    for subject, backend, r in rows:
        net_med, net_p95, net_fps = summary(r["network_ms"])
        wr_med, wr_p95, wr_fps = summary(r["wrapper_ms"])
        print(f"| {subject.name}: {subject.description} | {backend} | {net_med:.1f} / "
              f"{net_p95:.1f} | {net_fps:.1f} | {wr_med:.1f} / {wr_p95:.1f} | {wr_fps:.1f} | "
              f"{r['load_s']:.2f} | {r['peak_rss_mb']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
