"""Benchmark of the fusion core on one CPU core: register + fix + normalise, sync, keeping up."""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass

import cv2
import numpy as np
from machine import cpu_model

from iphd.calibration import RigCalibration, load_calibration
from iphd.fusion import IPHD_SCALE, FusionConfig, FusionPipeline
from iphd.noise import fix_zero_patches
from iphd.normalize import NormalizeConfig, normalize_pair
from iphd.registration import Registrar
from iphd.sensors.frames import CameraIntrinsics, DepthFrame, ThermalFrame
from iphd.sync import SyncConfig, Synchronizer

#: D435 depth at 1280x720 (~87 x 58 deg field of view).
D435_1280 = CameraIntrinsics(1280, 720, 645.0, 645.0, 639.5, 359.5)

PIPELINE_TARGET_MS = 5.0
SYNC_TARGET_US = 20.0
DROP_TARGET = 0.01


@dataclass(frozen=True)
class Box:
    """Front face of a person-like box facing the cameras (depth optical frame, metres)."""

    x0: float
    x1: float
    y0: float
    y1: float
    z: float
    temp_k: float


WALL_Z_M = 5.0
FLOOR_Y_M = 1.2
WALL_K = 295.0
FLOOR_K = 293.5
PEOPLE = (
    Box(-0.75, -0.25, FLOOR_Y_M - 1.75, FLOOR_Y_M, 1.8, 306.0),
    Box(0.35, 0.85, FLOOR_Y_M - 1.65, FLOOR_Y_M, 3.0, 305.0),
)


def cast(origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ray-cast the scene: return hit distance along ``dirs`` (z-normalised) and temperature."""
    dx, dy, dz = dirs[..., 0], dirs[..., 1], dirs[..., 2]
    ox, oy, oz = origin
    t = (WALL_Z_M - oz) / dz
    temp = np.full(t.shape, WALL_K)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_floor = np.where(dy > 1e-9, (FLOOR_Y_M - oy) / dy, np.inf)
    hit = t_floor < t
    t = np.where(hit, t_floor, t)
    temp = np.where(hit, FLOOR_K, temp)
    for box in PEOPLE:
        tb = (box.z - oz) / dz
        x = ox + tb * dx
        y = oy + tb * dy
        hit = (x >= box.x0) & (x <= box.x1) & (y >= box.y0) & (y <= box.y1) & (tb < t)
        t = np.where(hit, tb, t)
        # head warmer than the clothed body
        body = box.temp_k - 2.0 * np.clip((y - box.y0) / (box.y1 - box.y0), 0, 1)
        temp = np.where(hit, body, temp)
    return t, temp


def make_scene(
    depth_intr: CameraIntrinsics, calibration: RigCalibration, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Return a (depth_mm, thermal_ck) pair of a wall, a floor and two people, with noise."""
    rng = np.random.default_rng(seed)
    u, v = np.meshgrid(np.arange(depth_intr.width), np.arange(depth_intr.height))
    dirs = np.stack(
        [(u - depth_intr.cx) / depth_intr.fx, (v - depth_intr.cy) / depth_intr.fy,
         np.ones(u.shape)], axis=-1,
    )
    z, _ = cast(np.zeros(3), dirs)
    z = z + rng.normal(0.0, 1.0, z.shape) * 0.002 * z * z
    depth_mm = np.clip(np.rint(z * 1000.0), 0, 65535).astype(np.uint16)
    depth_mm[rng.random(depth_mm.shape) < 0.03] = 0
    depth_mm[600:700, 1000:1200] = 0

    th = calibration.thermal
    tu, tv = np.meshgrid(np.arange(th.width, dtype=np.float64), np.arange(th.height))
    pts = np.stack([tu.ravel(), tv.ravel()], axis=1).reshape(-1, 1, 2)
    norm = cv2.undistortPoints(pts, th.k, np.asarray(th.distortion)).reshape(-1, 2)
    rays_th = np.concatenate([norm, np.ones((norm.shape[0], 1))], axis=1)
    rot = np.asarray(calibration.rotation)
    dirs_d = rays_th @ rot  # R^T applied to row vectors
    dirs_d = dirs_d / dirs_d[:, 2:3]
    origin = -rot.T @ np.asarray(calibration.translation_m)
    _, temp_k = cast(origin, dirs_d)
    temp_k = temp_k + rng.normal(0.0, 0.05, temp_k.shape)
    thermal_ck = np.rint(temp_k * 100.0).astype(np.uint16).reshape(th.height, th.width)
    return depth_mm, thermal_ck


def stats_ms(samples: list[float]) -> tuple[float, float, float]:
    """Return mean, p50 and p95 of a list of durations in milliseconds."""
    a = np.asarray(samples)
    return float(a.mean()), float(np.percentile(a, 50)), float(np.percentile(a, 95))


def bench_pipeline(
    depth_mm: np.ndarray, thermal_ck: np.ndarray, calibration: RigCalibration, repeats: int
) -> dict[str, list[float]]:
    """Time register, fix and normalise separately and together."""
    out_w = round(D435_1280.width * IPHD_SCALE)
    out_h = round(D435_1280.height * IPHD_SCALE)
    registrar = Registrar(D435_1280, calibration, (out_w, out_h))
    norm_cfg = NormalizeConfig()
    times: dict[str, list[float]] = {"register": [], "fix": [], "normalize": [], "total": []}
    for i in range(repeats + 5):
        t0 = time.perf_counter()
        registered = registrar.register(depth_mm, thermal_ck)
        t1 = time.perf_counter()
        fixed = fix_zero_patches(registered)
        t2 = time.perf_counter()
        normalize_pair(depth_mm, fixed, norm_cfg)
        t3 = time.perf_counter()
        if i >= 5:
            times["register"].append((t1 - t0) * 1e3)
            times["fix"].append((t2 - t1) * 1e3)
            times["normalize"].append((t3 - t2) * 1e3)
            times["total"].append((t3 - t0) * 1e3)
    zero_before = 1.0 - np.count_nonzero(registered) / registered.size
    zero_after = 1.0 - np.count_nonzero(fixed) / fixed.size
    print(f"registered {out_w}x{out_h}: {zero_before:.1%} zero before fixing, "
          f"{zero_after:.1%} after")
    return times


def bench_full_resolution(
    depth_mm: np.ndarray, thermal_ck: np.ndarray, calibration: RigCalibration, repeats: int
) -> list[float]:
    """Time ``FusionPipeline.process`` with its default config (output at the depth size)."""
    pipeline = FusionPipeline(calibration)
    depth = DepthFrame(depth_mm, 0, intrinsics=D435_1280)
    thermal = ThermalFrame(thermal_ck, 0)
    pipeline.process(depth, thermal)
    times = []
    for _ in range(repeats):
        pipeline.process(depth, thermal)
        times.append(pipeline.last_timings_ms["total"])
    return times


def stream(
    seconds: float, rng: np.random.Generator, offset_ns: int
) -> list[tuple[int, str, int]]:
    """Return (arrival_ns, kind, stamp_ns) of a 30 Hz depth + 9 Hz thermal stream, by arrival.

    Depth stamps jitter by +-1 ms, thermal stamps by +-3 ms and carry ``-offset_ns`` (the
    thermal clock lags); transport latency is 5-15 ms for depth and 20-60 ms for thermal, so
    messages arrive out of stamp order across the streams.
    """
    events = []
    n_depth = int(seconds * 30)
    for k in range(n_depth):
        stamp = int(k * 1e9 / 30 + rng.uniform(-1e6, 1e6))
        events.append((stamp + int(rng.uniform(5e6, 15e6)), "depth", stamp))
    n_thermal = int(seconds * 9)
    for k in range(n_thermal):
        true_ns = int(5e6 + k * 1e9 / 9 + rng.uniform(-3e6, 3e6))
        events.append((true_ns + int(rng.uniform(20e6, 60e6)), "thermal", true_ns - offset_ns))
    events.sort()
    return events


def bench_sync(seconds: float) -> tuple[float, int, float]:
    """Return the mean µs per pushed message, the message count and the drop fraction."""
    rng = np.random.default_rng(1)
    offset_ns = 12_345_678
    events = stream(seconds, rng, offset_ns)
    sync: Synchronizer[int, int] = Synchronizer(SyncConfig(thermal_offset_ns=offset_ns))
    push_depth, push_thermal = sync.push_depth, sync.push_thermal
    t0 = time.perf_counter()
    for _, kind, stamp in events:
        if kind == "depth":
            push_depth(stamp, stamp)
        else:
            push_thermal(stamp, stamp)
    sync.flush()
    elapsed = time.perf_counter() - t0
    return elapsed / len(events) * 1e6, len(events), sync.stats.thermal_drop_fraction


def bench_keeps_up(
    seconds: float, depth_mm: np.ndarray, thermal_ck: np.ndarray, calibration: RigCalibration
) -> dict[str, float]:
    """Feed a 30 Hz + 9 Hz stream through Synchronizer + FusionPipeline + normalisation."""
    rng = np.random.default_rng(2)
    offset_ns = calibration.thermal_clock_offset_ns
    events = stream(seconds, rng, offset_ns)
    pipeline = FusionPipeline(calibration, FusionConfig(out_scale=IPHD_SCALE))
    norm_cfg = NormalizeConfig()
    sync: Synchronizer[DepthFrame, ThermalFrame] = Synchronizer(
        SyncConfig.from_calibration(calibration)
    )
    per_pair: list[float] = []
    t0 = time.perf_counter()
    for _, kind, stamp in events:
        if kind == "depth":
            pairs = sync.push_depth(stamp, DepthFrame(depth_mm, stamp, intrinsics=D435_1280))
        else:
            pairs = sync.push_thermal(stamp, ThermalFrame(thermal_ck, stamp))
        for pair in pairs:
            p0 = time.perf_counter()
            registered = pipeline.process(pair.depth, pair.thermal)
            normalize_pair(pair.depth.depth_mm, registered, norm_cfg)
            per_pair.append((time.perf_counter() - p0) * 1e3)
    sync.flush()
    busy = time.perf_counter() - t0
    # The first pair also builds the registrar (precomputation), reported apart.
    mean, p50, p95 = stats_ms(per_pair[1:])
    return {
        "busy_fraction": busy / seconds,
        "first_ms": per_pair[0],
        "mean_ms": mean,
        "p95_ms": p95,
        "dropped": sync.stats.thermal_drop_fraction,
        "pairs": float(sync.stats.pairs),
        "thermal": float(sync.stats.thermal_in),
    }


def machine() -> str:
    """Return the CPU model and core count."""
    return f"{cpu_model()}, {os.cpu_count()} cores (benchmark pinned to 1)"


def get_args_parser() -> argparse.ArgumentParser:
    """Return the command-line parser."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=300, help="pipeline repetitions")
    parser.add_argument("--full-repeats", type=int, default=20,
                        help="repetitions of the full-resolution FusionPipeline timing")
    parser.add_argument("--sync-seconds", type=float, default=1200.0,
                        help="length of the stream for the per-message sync timing")
    parser.add_argument("--seconds", type=float, default=30.0,
                        help="length of the keeps-up simulation")
    parser.add_argument("--calibration", default=None, help="rig.yaml (default: the nominal one)")
    return parser


def main(args: argparse.Namespace) -> int:
    """Run the three benchmarks and print a Markdown table."""
    cv2.setNumThreads(1)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    calibration = load_calibration(args.calibration) if args.calibration else load_calibration()
    depth_mm, thermal_ck = make_scene(D435_1280, calibration)

    times = bench_pipeline(depth_mm, thermal_ck, calibration, args.repeats)
    full = bench_full_resolution(depth_mm, thermal_ck, calibration, args.full_repeats)
    sync_us, n_msgs, sync_drop = bench_sync(args.sync_seconds)
    keeps = bench_keeps_up(args.seconds, depth_mm, thermal_ck, calibration)

    print()
    print(f"Machine: {machine()}; Python {platform.python_version()}, numpy {np.__version__}, "
          f"OpenCV {cv2.__version__}")
    print(f"Command: `{shlex.join([sys.executable, *sys.argv])}`")
    print()
    print("| measure | mean | p50 | p95 | target |")
    print("|---|---|---|---|---|")
    for stage in ("register", "fix", "normalize"):
        mean, p50, p95 = stats_ms(times[stage])
        print(f"| {stage} 1280x720 + 160x120 -> 213x120 (ms) | {mean:.2f} | {p50:.2f} | "
              f"{p95:.2f} | |")
    mean, p50, p95 = stats_ms(times["total"])
    ok = "ok" if mean <= PIPELINE_TARGET_MS else "MISSED"
    print(f"| **register + fix + normalise (ms)** | {mean:.2f} | {p50:.2f} | {p95:.2f} | "
          f"<= {PIPELINE_TARGET_MS:g} ({ok}) |")
    mean, p50, p95 = stats_ms(full)
    print(f"| FusionPipeline default config, 1280x720 out, register + fix (ms) | {mean:.1f} | "
          f"{p50:.1f} | {p95:.1f} | (info) |")
    ok = "ok" if sync_us <= SYNC_TARGET_US else "MISSED"
    print(f"| sync per message ({n_msgs} msgs, 30 Hz + 9 Hz) (µs) | {sync_us:.2f} | | | "
          f"<= {SYNC_TARGET_US:g} ({ok}); {sync_drop:.2%} dropped |")
    ok = "ok" if keeps["dropped"] < DROP_TARGET and keeps["busy_fraction"] < 1.0 else "MISSED"
    print(f"| keeps up: {args.seconds:g} s of 30 Hz + 9 Hz through sync + fusion + normalise: "
          f"busy {keeps['busy_fraction']:.1%} of real time; per pair (ms), first pair "
          f"{keeps['first_ms']:.1f} incl. registrar build | {keeps['mean_ms']:.2f} | | "
          f"{keeps['p95_ms']:.2f} | < 1 % dropped: {keeps['dropped']:.2%} of "
          f"{keeps['thermal']:.0f} thermal ({ok}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
