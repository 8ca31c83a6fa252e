"""Benchmark of the rig simulator: render speed per core, iphd-sim iphd throughput and memory.

(a) depth + thermal pairs rendered and registered per second on one core at 1280x720
(``aligned_1280x720``, the IPHD frame), without writing; (b) end-to-end ``generate_iphd``
pairs per second with 1 and 2 workers (rendering, registration, labels, PNG writing); (c) the
peak resident memory of the largest process of each generation, at two dataset sizes, to show
that generation streams. Run with ``scripts/env.sh python benchmarks/bench_sim.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from machine import cpu_model

from iphd.calibration import load_calibration
from iphd.registration import Registrar
from iphd.sim.body import make_identity
from iphd.sim.generate import IPHD_OUT_SIZE, generate_iphd
from iphd.sim.rig import RigSimulator, SensorConfig

TARGET_PAIRS_PER_CORE = 10.0


def machine() -> str:
    """Return the CPU model and core count."""
    return f"{cpu_model()}, {os.cpu_count()} cores"


def bench_render(pairs: int, people: int, seed: int) -> dict[str, float]:
    """Render ``pairs`` thermal frames and their nearest depth frames and register them.

    The caller pins the process to one core; the sequence is long enough that no flat-field
    correction freezes a frame after the start-up one.
    """
    cv2.setNumThreads(1)
    calibration = load_calibration()
    sensors = SensorConfig(depth_profile="aligned_1280x720")
    period = 1.0 / sensors.thermal_rate_hz
    sim = RigSimulator(calibration, [make_identity(p, seed) for p in range(people)],
                       (pairs + 40) * period + 2.0, seed, sensors)
    registrar = Registrar(sim.depth_intrinsics, calibration, IPHD_OUT_SIZE)
    first = int(np.ceil((sensors.ffc_duration_s + 0.1) / period))
    times = {"depth": [], "thermal": [], "register": []}
    for k in range(first, first + pairs + 3):
        t0 = time.perf_counter()
        thermal = sim.render_thermal(k)
        t1 = time.perf_counter()
        depth = sim.render_depth(sim.nearest_depth_index(thermal.t_s))
        t2 = time.perf_counter()
        registrar.register(depth.depth_mm, thermal.thermal_ck)
        t3 = time.perf_counter()
        if k >= first + 3:  # the first frames also cast the static scene once
            times["thermal"].append(t1 - t0)
            times["depth"].append(t2 - t1)
            times["register"].append(t3 - t2)
    out = {name: 1e3 * float(np.mean(v)) for name, v in times.items()}
    out["pairs_per_s"] = 1e3 / sum(out.values())
    return out


def child_generate(out: Path, frames: int, workers: int, seed: int) -> None:
    """Generate one dataset and print its timing as JSON (runs in a fresh process)."""
    calibration = load_calibration()
    t0 = time.perf_counter()
    summary = generate_iphd(out, seed=seed, frames=frames, workers=workers,
                            calibration=calibration)
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "frames": sum(summary.frames.values())}))


def bench_generate(frames: int, workers: int, seed: int) -> dict[str, float]:
    """Run ``generate_iphd`` in a fresh process; return its rate and peak RSS (largest process)."""
    folder = Path(tempfile.mkdtemp(prefix="bench_sim_"))
    try:
        cmd = [sys.executable, __file__, "--child", str(folder / "ds"), "--frames", str(frames),
               "--workers", str(workers), "--seed", str(seed)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        output = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise RuntimeError(f"{shlex.join(cmd)} failed with status {proc.returncode}")
        result = json.loads(output.strip().splitlines()[-1])
        size = sum(p.stat().st_size for p in (folder / "ds").rglob("*") if p.is_file())
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "pairs_per_s": result["frames"] / result["seconds"],
        "seconds": result["seconds"],
        # ru_maxrss of a waited-for child covers its own waited-for workers too (kB on Linux).
        "peak_rss_mb": usage.ru_maxrss / 1024.0,
        "mb_per_pair": size / 1e6 / result["frames"],
    }


def get_args_parser() -> argparse.ArgumentParser:
    """Return the command-line parser."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=150, help="pairs for the render timing")
    parser.add_argument("--people", type=int, default=3, help="people in the render scene")
    parser.add_argument("--frames", type=int, default=200,
                        help="pairs per end-to-end generation")
    parser.add_argument("--frames-small", type=int, default=50,
                        help="pairs of the smaller generation (memory comparison); 0 = skip")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="worker counts of the end-to-end runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    return parser


def main(args: argparse.Namespace) -> int:
    """Run the benchmarks and print a Markdown table."""
    if args.child is not None:
        child_generate(args.child, args.frames, args.workers[0], args.seed)
        return 0
    # Pin the render timing to one core, then give the generations (child processes, which
    # inherit the affinity) every core back.
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if cores:
        os.sched_setaffinity(0, {min(cores)})
    render = bench_render(args.pairs, args.people, args.seed)
    if cores:
        os.sched_setaffinity(0, cores)
    runs = {w: bench_generate(args.frames, w, args.seed) for w in args.workers}
    small = bench_generate(args.frames_small, 1, args.seed) if args.frames_small > 0 else None

    print()
    print(f"Machine: {machine()}; Python {platform.python_version()}, numpy {np.__version__}, "
          f"OpenCV {cv2.__version__}")
    print(f"Command: `{shlex.join([sys.executable, *sys.argv])}`")
    print()
    print("| measure | value | target |")
    print("|---|---|---|")
    ok = "ok" if render["pairs_per_s"] >= TARGET_PAIRS_PER_CORE else "MISSED"
    print(f"| render + register, 1 core, 1280x720 depth + 160x120 thermal -> 213x120, "
          f"{args.people} people (pairs/s) | **{render['pairs_per_s']:.1f}** "
          f"(depth {render['depth']:.1f} ms, thermal {render['thermal']:.1f} ms, register "
          f"{render['register']:.1f} ms) | >= {TARGET_PAIRS_PER_CORE:g} per core ({ok}) |")
    base = runs.get(1)
    for w, r in runs.items():
        per_core = r["pairs_per_s"] / w
        ok = "ok" if per_core >= TARGET_PAIRS_PER_CORE else "MISSED"
        scale = f"; x{r['pairs_per_s'] / base['pairs_per_s']:.2f} of 1 worker" if base else ""
        print(f"| `generate_iphd` {args.frames} pairs, --workers {w}, end to end incl. PNG "
              f"writing (pairs/s) | **{r['pairs_per_s']:.1f}** ({per_core:.1f} per worker"
              f"{scale}; {r['seconds']:.1f} s) | >= {TARGET_PAIRS_PER_CORE:g} per core ({ok}) |")
    for w, r in runs.items():
        print(f"| peak RSS, largest process, {args.frames} pairs, --workers {w} (MB) | "
              f"{r['peak_rss_mb']:.0f} | a few frames |")
    if small is not None:
        print(f"| peak RSS, largest process, {args.frames_small} pairs, --workers 1 (MB) | "
              f"{small['peak_rss_mb']:.0f} | same as for {args.frames} pairs |")
    if base:
        print(f"| dataset size (MB per pair) | {base['mb_per_pair']:.2f} | (info) |")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
