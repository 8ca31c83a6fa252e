"""Benchmark of the person detector per 256x448 frame: torch vs onnxruntime (float32, int8).

``--ab`` adds an interleaved comparison of onnxruntime float32 and int8 in one process: the
two sessions take turns frame by frame (ABBA order), so a machine whose speed drifts (a
shared VM, other jobs) slows both alike, and the speed-up is the median of per-round ratios.
"""

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
from machine import cpu_model, peak_rss_mb, speed_probe_ms, summary, timed

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
BACKENDS = ("torch", "onnx", "onnx-int8")
DEPTH_HW = (720, 1280)
THERMAL_HW = (120, 213)


@dataclass(frozen=True)
class Subject:
    """A model to benchmark: its .pt checkpoint, its .onnx exports and how to name it."""

    name: str
    description: str
    checkpoint: Path
    onnx: Path
    int8: Path

    def path(self, backend: str) -> Path:
        """The file ``backend`` loads."""
        return {"torch": self.checkpoint, "onnx": self.onnx, "onnx-int8": self.int8}[backend]


def describe(config: DetectorConfig) -> str:
    """Return a short architecture description for the table."""
    rem = ", REM" if config.use_rem else ""
    return (f"ResNet-{config.backbone_depth} width {config.backbone_width}, head "
            f"{config.head_channels}{rem}, {config.fusion} fusion")


def prepare(name: str, shipped: Path, folder: Path) -> Subject:
    """The shipped checkpoint, or the paper config with random weights (seed 0), + ONNX exports.

    The paper's ResNet-50 is timed with random weights: none is trained here, and the weights do
    not change the cost of the network (only how many boxes reach NMS). The int8 model is
    calibrated on the shipped calibration pairs, as ``backend: onnxruntime-int8`` does.
    """
    from iphd.detection.onnx_export import export_onnx
    from iphd.detection.quantize import SHIPPED_CALIBRATION, quantize_onnx, read_calibration

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
    int8 = quantize_onnx(onnx, folder / f"{name}-int8.onnx", read_calibration(SHIPPED_CALIBRATION))
    return Subject(name, description, checkpoint, onnx, int8)


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
    if backend.startswith("onnx"):
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


def ab_worker(fp32: Path, int8: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Time float32 and int8 onnxruntime in turns, at every ``--ab-threads`` setting.

    All sessions live in this process and take turns frame by frame in ABBA order (the first
    of a round alternates), so drift in the machine's speed hits both models alike.
    """
    from iphd.detection.onnx_export import OnnxDetector

    threads = [int(t) for t in args.ab_threads.split(",") if t]
    depth_mm, thermal_ck = synthetic_pair()
    probe_before = speed_probe_ms()
    out: dict[str, Any] = {"probe_before_ms": probe_before}
    for n in threads:
        torch.set_num_threads(n)
        detectors = {
            "fp32": OnnxDetector(fp32, device="cpu", intra_op_threads=n),
            "int8": OnnxDetector(int8, device="cpu", intra_op_threads=n),
        }
        x = fusion_input(depth_mm, thermal_ck, detectors["fp32"].model.config.fusion,
                         detectors["fp32"].normalize)
        batch = torch.from_numpy(x)[None]
        for detector in detectors.values():
            timed(lambda d=detector: d(depth_mm, thermal_ck), args.warmup, 0)
        samples: dict[str, dict[str, list[float]]] = {
            k: {"wrapper_ms": [], "network_ms": []} for k in detectors
        }
        for round_ in range(args.rounds):
            order = ["fp32", "int8"] if round_ % 2 == 0 else ["int8", "fp32"]
            for kind in order:
                d = detectors[kind]
                samples[kind]["wrapper_ms"] += timed(lambda d=d: d(depth_mm, thermal_ck), 0, 1)
                with torch.inference_mode():
                    network = timed(lambda d=d, b=batch: d.model.detect(b), 0, 1)
                samples[kind]["network_ms"] += network
        out[str(n)] = samples
    out["probe_after_ms"] = speed_probe_ms()
    return out


def run_ab(subject: Subject, args: argparse.Namespace) -> dict[str, Any]:
    """Run :func:`ab_worker` in a fresh Python."""
    cmd = [sys.executable, __file__, "--ab-worker", str(subject.onnx), str(subject.int8),
           "--ab-threads", args.ab_threads, "--rounds", str(args.rounds),
           "--warmup", str(args.warmup)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed:\n{done.stderr}")
    return json.loads(done.stdout.splitlines()[-1])


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
    parser.add_argument("--ab", action="store_true",
                        help="also compare onnxruntime float32 and int8 interleaved in one "
                        "process (see the module docstring)")
    parser.add_argument("--ab-threads", default="1,2",
                        help="intra-op threads of the interleaved comparison (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=40,
                        help="interleaved rounds, one frame of each model per round "
                        "(default %(default)s)")
    parser.add_argument("--worker", nargs=2, metavar=("BACKEND", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--ab-worker", nargs=2, metavar=("FP32", "INT8"), help=argparse.SUPPRESS)
    return parser


def main(args: argparse.Namespace) -> int:
    """Time every config with every backend, each in its own process; print a Markdown table."""
    if args.worker is not None:
        print(json.dumps(worker(args.worker[0], Path(args.worker[1]), args)))
        return 0
    if args.ab_worker is not None:
        print(json.dumps(ab_worker(Path(args.ab_worker[0]), Path(args.ab_worker[1]), args)))
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
    ab_rows = []
    probe_before = speed_probe_ms()
    with tempfile.TemporaryDirectory(prefix="bench_detector_") as tmp:
        for name in configs:
            print(f"{name}: writing checkpoint, ONNX export and int8 model", file=sys.stderr)
            subject = prepare(name, args.shipped, Path(tmp))
            for backend in backends:
                print(f"{name}: timing {backend}", file=sys.stderr)
                rows.append((subject, backend, run_worker(backend, subject.path(backend), args)))
            if args.ab:
                print(f"{name}: interleaved float32 / int8", file=sys.stderr)
                ab_rows.append((subject, run_ab(subject, args)))
    probe_after = speed_probe_ms()

    print()
    print(f"Machine: {cpu_model()}, {args.threads} threads; Python {platform.python_version()}, "
          f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}; speed probe "
          f"(machine.speed_probe_ms) {probe_before:.1f} ms before, {probe_after:.1f} ms after")
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
    if ab_rows:
        print_ab(ab_rows, args)
    return 0


def print_ab(ab_rows: list[tuple[Subject, dict[str, Any]]], args: argparse.Namespace) -> None:
    """Print the interleaved float32 / int8 comparison as a Markdown table."""
    print()
    print(f"Interleaved onnxruntime float32 vs int8, one process, {args.rounds} rounds of one "
          "frame each (ABBA). Speed-up: median of the per-round ratios float32 / int8.")
    print()
    print("| config | threads | wrapper float32 / int8 (ms, median) | wrapper speed-up | "
          "network + post float32 / int8 (ms, median) | network speed-up | probe (ms) |")
    print("|---|---|---|---|---|---|---|")
    for subject, r in ab_rows:
        for n in args.ab_threads.split(","):
            cells = []
            for part in ("wrapper_ms", "network_ms"):
                a = np.asarray(r[n]["fp32"][part])
                b = np.asarray(r[n]["int8"][part])
                cells.append(f"{np.median(a):.1f} / {np.median(b):.1f} | "
                             f"{np.median(a / b):.2f}x")
            print(f"| {subject.name} | {n} | {' | '.join(cells)} | "
                  f"{r['probe_before_ms']:.1f} / {r['probe_after_ms']:.1f} |")


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
