"""Does the whole graph (fusion, detector, tracker) keep up with the sensors on this machine?

``--graph full`` (default) runs the default graph of ``make demo`` (one process per node, or all
in one with ``--no-processes``) at real rate on the simulator's demo bag (``--source sim``,
looping) with the shipped models and reports pairs/s through to ``tracks``, the pairs the
pipeline itself dropped (fusion pairs vs detection arrays vs track arrays, and the nodes' own
drop counters), the delay from the pair's capture stamp to ``tracks`` (receipt by the runner's
monitor, on the sim-time clock: the stamps' clock), the CPU used and the peak RSS. ``--graph
fusion`` is the fusion-only benchmark: input rates, pairs, thermal frames left without a pair
and fusion's processing time (with ``--source sim_live`` the simulator renders in real time in
the same process). Run with ``scripts/env.sh python benchmarks/bench_graph.py``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np
from machine import cpu_model, cpu_times, peak_rss_mb, speed_probe_ms, steal_percent

from iphd.ros.processes import NodeProcess
from iphd.ros.runner import RunResult, run_graph


def _threads() -> int:
    """OS threads of this process now (torch, DDS, executor, the nodes' workers)."""
    return len(os.listdir("/proc/self/task"))


def _fusion(args: argparse.Namespace) -> None:
    if args.source == "sim":
        from iphd.sim.demo import DEMO_PROFILE, ensure_demo_bag

        ensure_demo_bag()
        args.profile = DEMO_PROFILE
    result = run_graph(
        args.source,
        args.duration,
        log_level="warn",
        detector=False,
        overrides={
            "sim_source": {
                "depth_profile": args.profile,
                "depth_rate_hz": 30.0,
                "thermal_rate_hz": args.thermal_rate,
            }
        },
    )
    s = result.stats
    dropped = 100.0 * s["thermal_drop_fraction"]
    unpublished = s["thermal_frames"] - s["published"]
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores; command: "
        f"python benchmarks/bench_graph.py --graph fusion --duration {args.duration:g} "
        f"--source {args.source} (depth {args.profile})"
    )
    print()
    print("| measure | value | target |")
    print("|---|---|---|")
    print(f"| run length (s) | {result.duration_s:.1f} | |")
    depth_hz = s["depth_frames"] / result.duration_s
    print(f"| depth in ({args.profile}), Hz | {depth_hz:.2f} | 30 |")
    thermal_hz = s["thermal_frames"] / result.duration_s
    print(f"| thermal in, Hz | {thermal_hz:.2f} | 8.7 (FFC frames dropped) |")
    print(
        f"| registered images published | {s['published']} of {s['thermal_frames']} thermal frames "
        f"({unpublished} not) | |"
    )
    print(f"| thermal frames without a pair (%) | {dropped:.2f} | < 1 |")
    print(
        f"| fusion processing per pair, mean / p95 / max (ms) | {s['process_ms_mean']:.2f} / "
        f"{s['process_ms_p95']:.2f} / {s['process_ms_max']:.2f} | |"
    )


def drop_counters(result: RunResult) -> dict[str, int]:
    """The nodes' own counters of frames they dropped (non-zero only), prefixed by node."""
    counters: dict[str, int] = {}
    for node, stats, prefixes in (
        ("fusion", result.stats, ("thermal_dropped_", "errors_")),
        ("detector", result.detector_stats,
         ("pairs_dropped_", "registered_dropped_", "errors_")),
        ("tracker", result.tracker_stats,
         ("frames_dropped_", "frames_without_depth", "errors_")),
    ):
        for key, value in stats.items():
            if key.startswith(prefixes) and isinstance(value, int) and value:
                counters[f"{node}.{key}"] = value
    return counters


def _full(args: argparse.Namespace) -> None:
    from iphd.sim.demo import DEMO_PROFILE, ensure_demo_bag

    ensure_demo_bag()
    threads: list[int] = []

    def sample(nodes: dict[str, Any], elapsed_s: float) -> None:
        threads.append(_threads())

    probe_before = speed_probe_ms()
    # Another workload on the robot (navigation, mapping): processes that keep a core busy.
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(args.busy)]
    machine0 = cpu_times()
    cpu0 = time.process_time()
    try:
        result = run_graph(
            "sim", args.duration, log_level="warn", record=True, sample=sample,
            sample_period_s=1.0, detector_checkpoint=args.detector_checkpoint,
            processes=args.processes, overrides={"bag_player": {"rate": args.rate}},
        )
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()
    cpu_s = time.process_time() - cpu0
    runner_cpu_s = cpu_s
    steal = steal_percent(machine0, cpu_times())
    probe_after = speed_probe_ms()
    children = [n for n in result.nodes.values() if isinstance(n, NodeProcess)]
    # Node processes: their own CPU time and memory (start-up included), plus this process's.
    cpu_s += sum(n.cpu_s for n in children)
    peak_mb = peak_rss_mb() + sum(n.peak_rss_mb for n in children)
    recording = result.recording
    assert recording is not None
    f, d, t = result.stats, result.detector_stats, result.tracker_stats
    pairs = int(f.get("pairs", 0))
    arrays, tracks = int(d.get("published", 0)), int(t.get("published", 0))
    # Receipt and stamps are on the bag's clock, which runs --rate times faster than the wall.
    delays = np.asarray(recording.latency_all_ms["tracks"], dtype=np.float64) / args.rate
    p50, p95, worst = (
        (float(np.percentile(delays, 50)), float(np.percentile(delays, 95)), float(delays.max()))
        if delays.size else (float("nan"),) * 3
    )
    import torch

    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores; command: "
        f"python benchmarks/bench_graph.py --duration {args.duration:g}"
        + (f" --detector-checkpoint {args.detector_checkpoint}" if args.detector_checkpoint
           else "")
        + (f" --rate {args.rate:g}" if args.rate != 1.0 else "")
        + (f" --busy {args.busy}" if args.busy else "")
        + (" " if args.processes else " --no-processes ")
        + ("(one process per node, " if args.processes else "(all nodes in one process, ")
        + f"{result.executor}, demo bag {DEMO_PROFILE}, looping; detector {d.get('model', '?')} on "
        + f"{d.get('device', '?')}, re-ID {t.get('reid_model', '?')})"
    )
    print(
        f"speed probe (benchmarks/machine.py, lower is faster): {probe_before:.1f} ms before, "
        f"{probe_after:.1f} ms after; hypervisor steal during the run {steal:.1f} %"
    )
    print()
    print("| measure | value | note |")
    print("|---|---|---|")
    print(f"| run length (s) | {result.duration_s:.1f} | bag loops: "
          f"{result.player_stats.get('loops', 0)} |")
    print(f"| thermal in, Hz | {f['thermal_frames'] / result.duration_s:.2f} | pairs are made "
          "at the thermal rate |")
    print(f"| pairs through to `tracks`, per s | {recording.rate_hz('tracks'):.2f} | "
          f"first to last `tracks` received; {tracks / result.duration_s:.2f} over the run |")
    lost = 100.0 * (1.0 - tracks / pairs) if pairs else float("nan")
    print(f"| pairs dropped by the pipeline (%) | {lost:.1f} | fusion pairs {pairs} -> "
          f"detection arrays {arrays} -> track arrays {tracks} (a few in flight at the stop) |")
    counters = drop_counters(result)
    listed = ", ".join(f"{k} {v}" for k, v in sorted(counters.items())) or "none"
    print(f"| nodes' drop counters | {sum(counters.values())} | {listed} |")
    print(f"| capture stamp -> `tracks`, p50 / p95 / max (ms) | {p50:.0f} / {p95:.0f} / "
          f"{worst:.0f} | n={delays.size}; pair stamp = its depth frame's capture stamp; "
          "receipt on the sim-time node clock (/clock every 10 ms)"
          + (f", divided by --rate {args.rate:g} to wall time" if args.rate != 1.0 else "")
          + " |")
    print(f"| detector inference, mean (ms) | {d.get('inference_ms_mean', float('nan')):.0f} | "
          f"threads param {result.nodes['detector'].get_parameter('threads').value} |")
    print(f"| tracker embedding + tracking, p50 (ms) | "
          f"{t.get('embedding_ms_p50', 0.0) + t.get('tracking_ms_p50', 0.0):.1f} | |")
    if children:
        memory = ", ".join(f"{n.name} {n.peak_rss_mb:.0f}" for n in children)
        per_node = ", ".join(
            f"{n.name} {n.cpu_s / result.duration_s:.2f}" for n in children
        )
        print(f"| CPU used, cores | {cpu_s / result.duration_s:.2f} | CPU time of the node "
              f"processes (model loading included) and the runner / run length: {per_node}, "
              f"runner {runner_cpu_s / result.duration_s:.2f} |")
        print(f"| peak RSS, all processes (MB) | {peak_mb:.0f} | {memory}, runner "
              f"{peak_rss_mb():.0f} |")
    else:
        print(f"| process threads, max (OS) | {max(threads, default=0)} | torch intra-op "
              f"{torch.get_num_threads()}; DDS, executor and worker threads included |")
        print(f"| CPU used, cores | {cpu_s / result.duration_s:.2f} | process CPU time / run "
              "length |")
        print(f"| peak RSS (MB) | {peak_mb:.0f} | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graph", choices=("full", "fusion"), default="full",
                        help="full: fusion + detector + tracker on the demo bag; fusion: fusion "
                        "only (--source, --profile, --thermal-rate)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds to run")
    parser.add_argument("--source", choices=("sim", "sim_live"), default="sim",
                        help="--graph fusion: the demo bag or the simulator in real time")
    parser.add_argument("--profile", default="aligned_640x360",
                        help="D435 depth profile of sim_live (sim plays the demo bag's)")
    parser.add_argument("--thermal-rate", type=float, default=8.7, help="sim_live thermal Hz")
    parser.add_argument("--processes", action=argparse.BooleanOptionalAction, default=True,
                        help="--graph full: one process per node, as ros2 launch (default); "
                        "--no-processes: all nodes in this process")
    parser.add_argument("--rate", type=float, default=1.0,
                        help="--graph full: play the demo bag this many times faster than it "
                        "was recorded (1.1: thermal at about 9.2 Hz, above the Lepton's 8.7), to "
                        "see the headroom")
    parser.add_argument("--detector-checkpoint", default="",
                        help="--graph full: a .pt or .onnx detector (default: the shipped .pt)")
    parser.add_argument("--busy", type=int, default=0,
                        help="--graph full: keep this many cores busy with other processes for "
                        "the run (a robot's other workload), to see what the graph tolerates")
    args = parser.parse_args()
    if args.busy < 0 or (args.busy and args.graph != "full"):
        sys.exit("bench_graph: --busy takes a count >= 0, with --graph full")
    if args.graph == "full" and args.source != "sim":
        sys.exit("bench_graph: --graph full plays the demo bag; --source is for --graph fusion")
    if not args.rate > 0:
        sys.exit(f"bench_graph: --rate must be > 0 (1 = as recorded), got {args.rate:g}")
    if args.graph == "fusion":
        _fusion(args)
    else:
        _full(args)


if __name__ == "__main__":
    main()
