"""Does the sensor -> fusion graph keep up with 30 Hz depth + 9 Hz thermal on this machine?

Runs the simulator source and the fusion node in one process at real rate: ``--source sim``
replays the simulator's demo bag (the graph ``make demo`` runs), ``--source sim_live`` renders
the simulator in real time in the same process. Reports input rates, pairs, thermal frames left
without a pair and the fusion node's processing time. Run with
``scripts/env.sh python benchmarks/bench_graph.py``.
"""

from __future__ import annotations

import argparse
import os

from machine import cpu_model

from iphd.ros.runner import run_graph


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds to run")
    parser.add_argument("--source", choices=("sim", "sim_live"), default="sim")
    parser.add_argument("--profile", default="aligned_640x360",
                        help="D435 depth profile of sim_live (sim plays the demo bag's)")
    parser.add_argument("--thermal-rate", type=float, default=8.7, help="sim_live thermal Hz")
    args = parser.parse_args()
    if args.source == "sim":
        from iphd.sim.demo import DEMO_PROFILE, ensure_demo_bag

        ensure_demo_bag()
        args.profile = DEMO_PROFILE
    result = run_graph(
        args.source,
        args.duration,
        log_level="warn",
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
        f"python benchmarks/bench_graph.py --duration {args.duration:g} --source {args.source} "
        f"(depth {args.profile})"
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


if __name__ == "__main__":
    main()
