"""GPU benchmark: the shipped detector (float32 and float16) and depth embedder on CUDA vs CPU.

What the detector node (torch on CUDA: ``precision`` float32, or float16 on request) and the
tracker's embedder do on a robot with a GPU: milliseconds per call on CUDA, and how far CUDA's
answers are from the CPU's on the same inputs (boxes matched by IoU, scores, embedding cosine
similarity).

    python benchmarks/bench_gpu.py                       # synthetic inputs
    python benchmarks/bench_gpu.py --bag my_bag          # 8 registered pairs of your bag
    python benchmarks/bench_gpu.py --pairs pairs.npz     # registered pairs and depth crops

``--bag`` registers the bag's pairs as the fusion node does (its own rig calibration; the
depth crops stay synthetic). ``--pairs`` reads an ``.npz`` with ``depth_mm`` (N, H, W)
uint16, ``thermal_ck`` (N, h, w) uint16 (registered into the depth frame, as the fusion node
publishes it) and optionally ``depth_crops`` (M, 256, 128) uint16 metric crops. Without a CUDA
device it says so and exits 2.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_detector import synthetic_pair
from bench_reid import synthetic_crops
from machine import cpu_model, summary, timed

from iphd.detection.detector import SHIPPED_CHECKPOINT, Detections, Detector
from iphd.eval.iphd_ap import iou_matrix
from iphd.reid.extractor import FeatureExtractor
from iphd.tracking.appearance import SHIPPED_DEPTH_EMBEDDER


def agreement(reference: Detections, other: Detections, min_score: float) -> dict[str, float]:
    """How far ``other``'s boxes are from ``reference``'s (those scoring >= ``min_score``)."""
    ref = reference.scores >= min_score
    got = other.scores >= min_score
    out = {"boxes_cpu": int(ref.sum()), "boxes_gpu": int(got.sum()), "min_iou": 1.0,
           "max_score_diff": 0.0}
    if ref.any() and other.boxes_xyxy.shape[0]:
        iou = iou_matrix(reference.boxes_xyxy[ref], other.boxes_xyxy)
        best = iou.argmax(axis=1)
        out["min_iou"] = float(iou.max(axis=1).min())
        diff = np.abs(reference.scores[ref] - other.scores[best])
        out["max_score_diff"] = float(diff.max())
    elif ref.any():
        out["min_iou"] = 0.0
    return out


def bench_detector(pairs: list[tuple[np.ndarray, np.ndarray]], args: argparse.Namespace
                   ) -> list[dict[str, Any]]:
    cpu = Detector.from_checkpoint(args.detector, device="cpu")
    reference = [cpu(d, t) for d, t in pairs]
    rows = []
    depth, thermal = pairs[0]
    for half in (False, True):
        gpu = Detector.from_checkpoint(args.detector, device=args.device, half=half)
        found = [gpu(d, t) for d, t in pairs]
        worst: dict[str, float] = {"min_iou": 1.0, "max_score_diff": 0.0, "count_diff": 0}
        for ref, got in zip(reference, found, strict=True):
            a = agreement(ref, got, args.min_score)
            worst["min_iou"] = min(worst["min_iou"], a["min_iou"])
            worst["max_score_diff"] = max(worst["max_score_diff"], a["max_score_diff"])
            worst["count_diff"] = max(worst["count_diff"], abs(a["boxes_cpu"] - a["boxes_gpu"]))
        samples = timed(lambda gpu=gpu: gpu(depth, thermal), args.warmup, args.iterations)
        p50, p95, fps = summary(samples)
        rows.append({"model": "detector", "precision": gpu.precision, "p50_ms": p50,
                     "p95_ms": p95, "per_s": fps, **worst,
                     "boxes": int(sum((r.scores >= args.min_score).sum() for r in reference))})
    return rows


def bench_embedder(crops: list[np.ndarray], args: argparse.Namespace) -> dict[str, Any]:
    cpu = FeatureExtractor(args.embedder, device="cpu")
    gpu = FeatureExtractor(args.embedder, device=args.device)
    ref, got = cpu(crops), gpu(crops)
    cosine = np.sum(ref * got, axis=1)
    batch = crops[:8]
    samples = timed(lambda: gpu(batch), args.warmup, args.iterations)
    p50, p95, fps = summary(samples)
    return {"model": "depth embedder", "precision": "float32", "p50_ms": p50, "p95_ms": p95,
            "per_s": fps, "crops": len(crops), "min_cosine_vs_cpu": float(cosine.min())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    inputs = parser.add_mutually_exclusive_group()
    inputs.add_argument("--pairs", type=Path, help=".npz of registered pairs (see above)")
    inputs.add_argument("--bag", type=Path, help="a bag: 8 of its pairs, registered")
    parser.add_argument("--detector", type=Path, default=SHIPPED_CHECKPOINT)
    parser.add_argument("--embedder", type=Path, default=SHIPPED_DEPTH_EMBEDDER)
    parser.add_argument("--iterations", type=int, default=100, help="timed calls")
    parser.add_argument("--warmup", type=int, default=10, help="untimed calls first")
    parser.add_argument("--min-score", type=float, default=0.5,
                        help="boxes compared: those the detector node publishes")
    parser.add_argument("--out", type=Path, help="also write the results as JSON")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                        help="cpu only checks the script itself (CPU against CPU)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_gpu: no CUDA device here (torch.cuda.is_available() is False); run it on "
              "the robot's GPU", file=sys.stderr)
        return 2
    if args.bag:
        from iphd.detection.quantize import calibration_pairs_from_bags
        from iphd.errors import IphdError

        try:
            cut = calibration_pairs_from_bags([args.bag], pairs_per_bag=8)
        except IphdError as exc:
            print(f"bench_gpu: {exc}", file=sys.stderr)
            return 2
        pairs = list(zip(cut.depth_mm, cut.thermal_ck, strict=True))
        crops = synthetic_crops("depth", 16)
    elif args.pairs:
        data = np.load(args.pairs)
        pairs = list(zip(data["depth_mm"], data["thermal_ck"], strict=True))
        crops = list(data["depth_crops"]) if "depth_crops" in data else synthetic_crops(
            "depth", 16)
    else:
        pairs, crops = [synthetic_pair()], synthetic_crops("depth", 16)
    torch.set_num_threads(2)
    rows = bench_detector(pairs, args)
    rows.append(bench_embedder(crops, args))
    device = torch.cuda.get_device_name(0) if args.device == "cuda" else cpu_model()
    print(f"{device}, torch {torch.__version__}, CPU {cpu_model()}, {len(pairs)} pair(s) of "
          f"{pairs[0][0].shape[1]}x{pairs[0][0].shape[0]}, {args.iterations} timed calls")
    print("| model | precision | p50 ms | p95 ms | per s | vs CPU float32 |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if r["model"] == "detector":
            versus = (f"{r['boxes']} boxes: min IoU {r['min_iou']:.3f}, score diff <= "
                      f"{r['max_score_diff']:.4f}, count diff <= {r['count_diff']}")
        else:
            versus = f"{r['crops']} crops: min cosine {r['min_cosine_vs_cpu']:.5f}"
        print(f"| {r['model']} | {r['precision']} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | "
              f"{r['per_s']:.0f} | {versus} |")
    if args.out:
        args.out.write_text(json.dumps({"device": device, "torch": torch.__version__,
                                        "python": platform.python_version(), "rows": rows},
                                       indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
