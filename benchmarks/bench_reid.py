"""Benchmark of the re-ID embedder: ms per batch of 8 person crops, shipped pair vs paper B."""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import tempfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import torch
from machine import cpu_model, peak_rss_mb, speed_probe_ms, summary, timed

from iphd.reid.extractor import (
    EMBEDDER_BACKENDS,
    CropNormalizeConfig,
    FeatureExtractor,
    load_embedder,
    save_embedder,
)
from iphd.reid.model import Embedder, EmbedderConfig
from iphd.tracking.appearance import SHIPPED_DEPTH_EMBEDDER, SHIPPED_RGB_EMBEDDER

BATCH = 8


def synthetic_crops(modality: str, count: int, seed: int = 0) -> list[np.ndarray]:
    """Person-shaped crops of varied sizes, like boxes cut out of a 1280×720 depth frame."""
    rng = np.random.default_rng(seed)
    crops = []
    for _ in range(count):
        h = int(rng.integers(180, 420))
        w = max(int(h * rng.uniform(0.35, 0.5)), 8)
        if modality == "depth":
            crop = np.zeros((h, w), np.uint16)
            crop[h // 10 :, w // 6 : w - w // 6] = rng.integers(1800, 2600, size=1)
        else:
            crop = rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)
        crops.append(crop)
    return crops


def describe(config: EmbedderConfig) -> str:
    """Short architecture description for the table."""
    return (f"ResNet-{config.backbone_depth} width {config.backbone_width}, "
            f"{config.embedding_dim}-d, input {config.input_size[0]}×{config.input_size[1]}")


def subjects(
    args: argparse.Namespace, folder: Path
) -> list[tuple[str, str, Embedder, FeatureExtractor]]:
    """(name, backend, model, extractor) for the shipped pair (when present) and paper B.

    Each model runs on torch and, from a checkpoint exported to ONNX into ``folder``, on
    onnxruntime with as many intra-op threads as torch has.
    """
    named: list[tuple[str, Path]] = []
    for name, path in (("shipped depth", args.depth), ("shipped RGB", args.rgb)):
        if not Path(path).is_file():
            print(f"bench_reid: {path} is missing; skipping {name}", file=sys.stderr)
            continue
        named.append((name, Path(path)))
    torch.manual_seed(0)
    paper = Embedder(EmbedderConfig())  # random weights: they do not change the cost
    named.append(("paper B (random weights)",
                  save_embedder(folder / "paper.pt", paper, CropNormalizeConfig())))
    out = []
    for name, path in named:
        model, _, _ = load_embedder(path)
        for backend in args.backends:
            extractor = FeatureExtractor(path, device="cpu", batch_size=BATCH, backend=backend,
                                         intra_op_threads=args.threads)
            out.append((name, backend, model, extractor))
    return out


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--threads", type=int, default=2,
                        help="CPU threads (torch's, and onnxruntime's intra-op)")
    parser.add_argument("--backends", nargs="+", default=list(EMBEDDER_BACKENDS),
                        choices=EMBEDDER_BACKENDS, help="what runs the network")
    parser.add_argument("--iterations", type=int, default=30, help="timed batches")
    parser.add_argument("--warmup", type=int, default=5, help="untimed batches first")
    parser.add_argument("--depth", type=Path, default=SHIPPED_DEPTH_EMBEDDER)
    parser.add_argument("--rgb", type=Path, default=SHIPPED_RGB_EMBEDDER)
    return parser


def main(args: argparse.Namespace) -> int:
    """Time every subject and print the Markdown table."""
    torch.set_num_threads(args.threads)
    print(f"{cpu_model()}, {args.threads} threads, Python {platform.python_version()}, "
          f"torch {torch.__version__}; batch of {BATCH} crops, {args.warmup} warm-up then "
          f"{args.iterations} timed batches; speed probe {speed_probe_ms():.1f} ms "
          "(benchmarks/machine.py).\n")
    print("| model | backend | architecture | weights MB | network ms / 8 crops (median, p95) "
          "| with crop normalisation ms / 8 | crops/s |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp, cache_in(Path(tmp)):
        for name, backend, model, extractor in subjects(args, Path(tmp)):
            modality = "rgb" if model.config.modality == "rgb" else "depth"
            crops = synthetic_crops(modality, BATCH)
            h, w = model.config.input_size
            x = np.random.default_rng(0).standard_normal(
                (BATCH, model.config.in_channels, h, w)
            ).astype(np.float32)
            with torch.inference_mode():
                network = timed(partial(extractor.embed_batch, x), args.warmup, args.iterations)
                full = timed(partial(extractor, crops), args.warmup, args.iterations)
            mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 1e6
            net_med, net_p95, _ = summary(network)
            full_med, full_p95, _ = summary(full)
            print(f"| {name} | {backend} | {describe(model.config)} | {mb:.1f} | {net_med:.1f} "
                  f"({net_p95:.1f}) | {full_med:.1f} ({full_p95:.1f}) | "
                  f"{BATCH * 1e3 / full_med:.0f} |")
    print(f"\npeak RSS {peak_rss_mb():.0f} MB")
    return 0


@contextlib.contextmanager
def cache_in(folder: Path) -> Iterator[None]:
    """Keep this run's ONNX exports in ``folder`` rather than the user's cache."""
    old = os.environ.get("IPHD_CACHE_DIR")
    os.environ["IPHD_CACHE_DIR"] = str(folder)
    try:
        yield
    finally:
        if old is None:
            del os.environ["IPHD_CACHE_DIR"]
        else:
            os.environ["IPHD_CACHE_DIR"] = old


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
