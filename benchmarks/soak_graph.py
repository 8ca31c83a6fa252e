"""Soak test: does the whole graph run for long on the looping demo bag with flat memory?

Runs the default graph (bag player looping the simulator's demo bag, fusion, detector, tracker,
shipped models; one process per node as ``ros2 launch`` runs them, or all in one with
``--no-processes``) at real rate for ``--duration`` seconds. Every ``--period`` s it samples the
resident memory (of every process, as of each node's last report), the nodes' queue and buffer
lengths with their caps and their published counts (the nodes' ``stats()``); at the end it fits
RSS against time over the second half (the first half holds the warm-up: model load, allocator
and DDS pools, first-loop caches) and checks the queues stayed bounded. Writes ``soak.csv`` and
``soak.png`` to ``--out`` and prints a Markdown table. Run with
``scripts/env.sh python benchmarks/soak_graph.py --duration 600 --out out/soak``.
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from machine import cpu_model, peak_rss_mb

from iphd.ros.processes import NodeProcess
from iphd.ros.runner import run_graph

# A leak of 1 MB/min is 0.5 GB over an 8-hour shift, which matters on a robot computer; RSS
# moves by a few MB between samples as the allocator and torch's caches breathe, so over the
# 5-minute second half of the default run a smaller slope cannot be told from that noise.
FLAT_MB_PER_MIN = 1.0
#: (column, node, stats key) of the sampled queue and buffer lengths.
QUEUES = (
    ("fusion_pending_depth", "fusion", "pending_depth"),
    ("fusion_pending_thermal", "fusion", "pending_thermal"),
    ("detector_pending_depth", "detector", "pending_depth"),
    ("detector_pending_registered", "detector", "pending_registered"),
    ("detector_queue", "detector", "queue_length"),
    ("tracker_waiting_for_depth", "tracker", "frames_waiting_for_depth"),
    ("tracker_pending_depth", "tracker", "pending_depth"),
    ("tracker_queue", "tracker", "queue_length"),
)
COUNTS = (
    ("player_published", "bag_player", "published"),
    ("bag_loops", "bag_player", "loops"),
    ("fusion_pairs", "fusion", "pairs"),
    ("registered_published", "fusion", "published"),
    ("detections_published", "detector", "published"),
    ("tracks_published", "tracker", "published"),
    ("detector_dropped_queue_full", "detector", "pairs_dropped_queue_full"),
    ("tracker_dropped_queue_full", "tracker", "frames_dropped_queue_full"),
)


def rss_mb() -> float:
    """Resident memory of this process now, MB (VmRSS)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def caps(stats: dict[str, dict[str, Any]]) -> dict[str, int]:
    """The configured bound of each sampled queue or buffer (``QUEUES`` columns).

    The nodes report each bound in ``stats()`` as ``<key>_cap``.
    """
    return {column: int(stats[node][f"{key}_cap"]) for column, node, key in QUEUES}


def memory_slope(t_min: np.ndarray, rss: np.ndarray) -> float:
    """Least-squares slope of RSS (MB) against time (min) over the second half; NaN if < 2."""
    if t_min.size < 2:
        return float("nan")
    half = t_min >= t_min.max() / 2
    if half.sum() < 2:
        return float("nan")
    return float(np.polyfit(t_min[half], rss[half], 1)[0])


def bounded(rows: list[dict[str, float]], limits: dict[str, int]) -> dict[str, tuple[int, str]]:
    """Per queue: max over the run and a verdict.

    ``bounded``: never above its configured cap; ``saturated``: bounded, but at the cap for
    most of the second half (the stage behind it is slower than its input, and the queue drops
    its oldest entries by design); ``OVER CAP``: a bound that does not hold.
    """
    t = np.asarray([r["t_s"] for r in rows])
    late = t >= t.max() / 2
    out = {}
    for column, _node, _key in QUEUES:
        values = np.asarray([r[column] for r in rows])
        top, cap = int(values.max(initial=0)), limits[column]
        if top > cap:
            verdict = "OVER CAP"
        elif np.median(values[late]) >= cap:
            verdict = "saturated"
        else:
            verdict = "bounded"
        out[column] = (top, verdict)
    return out


def plot(rows: list[dict[str, float]], path: Path, slope: float) -> None:
    """RSS (top) and queue lengths (bottom) against minutes; the second-half fit in red."""
    width, panel = 900, 300
    image = np.full((2 * panel + 40, width, 3), 255, dtype=np.uint8)
    t = np.asarray([r["t_s"] / 60 for r in rows])
    t_max = float(t.max(initial=0.0)) or 1.0
    font = cv2.FONT_HERSHEY_SIMPLEX
    colours = [(200, 80, 0), (0, 160, 0), (0, 0, 200), (160, 0, 160), (0, 140, 200),
               (120, 120, 0), (80, 80, 80), (0, 200, 120)]

    def panel_at(top: int, series: list[tuple[str, np.ndarray]], title: str) -> None:
        left, right, bottom = 70, width - 220, top + panel - 60
        lo = min(float(v.min()) for _, v in series)
        hi = max(float(v.max()) for _, v in series)
        lo, hi = (lo, hi) if hi > lo else (lo, lo + 1.0)
        cv2.rectangle(image, (left, top), (right, bottom), (0, 0, 0), 1)
        cv2.putText(image, title, (left, top - 8), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(image, f"{hi:.4g}", (5, top + 10), font, 0.4, (0, 0, 0), 1)
        cv2.putText(image, f"{lo:.4g}", (5, bottom), font, 0.4, (0, 0, 0), 1)
        cv2.putText(image, f"{t_max:.3g} min", (right - 50, bottom + 18), font, 0.4, (0, 0, 0), 1)
        for i, (name, values) in enumerate(series):
            px = left + t / t_max * (right - left)
            py = bottom - (values - lo) / (hi - lo) * (bottom - top)
            points = np.round(np.column_stack((px, py))).astype(np.int32).reshape(-1, 1, 2)
            colour = colours[i % len(colours)]
            cv2.polylines(image, [points], False, colour, 2, cv2.LINE_AA)
            cv2.putText(image, name, (right + 10, top + 15 + 16 * i), font, 0.4, colour, 1)

    rss = np.asarray([r["rss_mb"] for r in rows])
    panel_at(30, [("rss_mb", rss)], f"RSS (MB); second-half slope {slope:.2f} MB/min "
             f"(flat below {FLAT_MB_PER_MIN:g})")
    queues = [(c, np.asarray([r[c] for r in rows], dtype=np.float64)) for c, _, _ in QUEUES]
    panel_at(panel + 40, queues, "queue and buffer lengths")
    cv2.imwrite(str(path), image)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds to run")
    parser.add_argument("--period", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--out", type=Path, default=Path("out/soak"), help="folder for CSV, PNG")
    parser.add_argument("--processes", action=argparse.BooleanOptionalAction, default=True,
                        help="one process per node, as ros2 launch (default); --no-processes: "
                        "all nodes in this process")
    args = parser.parse_args()
    from iphd.sim.demo import DEMO_PROFILE, ensure_demo_bag

    ensure_demo_bag()
    rows: list[dict[str, float]] = []
    limits: dict[str, int] = {}

    def sample(nodes: dict[str, Any], elapsed_s: float) -> None:
        if rows and elapsed_s - rows[-1]["t_s"] < 1.0:
            return  # the runner's end-of-run sample, right after a periodic one
        stats = {name: node.stats() for name, node in nodes.items() if hasattr(node, "stats")}
        if not limits and all(stats.get(node) for _, node, _ in QUEUES):
            limits.update(caps(stats))
        # One process per node: their resident memory (as of their last report) and the
        # runner's; or this one process.
        memory = {n: node.rss_mb for n, node in nodes.items() if isinstance(node, NodeProcess)}
        row: dict[str, float] = {
            "t_s": round(elapsed_s, 2),
            "rss_mb": round(rss_mb() + sum(memory.values()), 1),
            **{f"rss_{n}_mb": round(v, 1) for n, v in memory.items()},
        }
        for column, node, key in QUEUES + COUNTS:
            row[column] = stats.get(node, {}).get(key, 0)
        rows.append(row)
        print(f"[{elapsed_s:6.1f} s] rss {row['rss_mb']:.0f} MB, tracks {row['tracks_published']}, "
              f"detector queue {row['detector_queue']}, tracker queue {row['tracker_queue']}",
              flush=True)

    wall0 = time.monotonic()
    result = run_graph(
        "sim", args.duration, log_level="warn", sample=sample, sample_period_s=args.period,
        processes=args.processes,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    csv_path, png_path = args.out / "soak.csv", args.out / "soak.png"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    t_min = np.asarray([r["t_s"] / 60 for r in rows])
    rss = np.asarray([r["rss_mb"] for r in rows])
    slope = memory_slope(t_min, rss)
    plot(rows, png_path, slope)
    # The runner's last sample comes after it stopped the nodes one by one (the tracker still
    # taking depth frames once the detector has gone): queues are judged while the graph ran.
    ended = len(rows) > 2 and rows[-1]["t_s"] == round(result.duration_s, 2)
    queues = bounded(rows[:-1] if ended else rows, limits)
    flat = bool(np.isfinite(slope) and slope < FLAT_MB_PER_MIN)
    last = rows[-1]
    print(
        f"\nmachine: {cpu_model()}, {os.cpu_count()} cores; command: python "
        f"benchmarks/soak_graph.py --duration {args.duration:g} --period {args.period:g} "
        f"(demo bag {DEMO_PROFILE}, looping); wall {time.monotonic() - wall0:.0f} s"
    )
    print()
    print("| measure | value | verdict |")
    print("|---|---|---|")
    print(f"| run length (s), bag loops | {result.duration_s:.0f}, {last['bag_loops']} | |")
    children = [n for n in result.nodes.values() if isinstance(n, NodeProcess)]
    peak = peak_rss_mb() + sum(n.peak_rss_mb for n in children)
    where = "all processes" if children else "the process"
    print(f"| RSS first / last / peak, {where} (MB) | {rss[0]:.0f} / {rss[-1]:.0f} / "
          f"{peak:.0f} | |")
    verdict = "flat" if flat else ("too few samples" if not np.isfinite(slope) else "GROWING")
    print(f"| RSS slope over the second half (MB/min) | {slope:.2f} | {verdict} "
          f"(threshold {FLAT_MB_PER_MIN:g}) |")
    for node in children:
        own = np.asarray([r[f"rss_{node.name}_mb"] for r in rows])
        print(f"| {node.name}: RSS first / last (MB), slope over the second half (MB/min) | "
              f"{own[0]:.0f} / {own[-1]:.0f}, {memory_slope(t_min, own):.2f} | |")
    for column, (top, verdict) in queues.items():
        print(f"| max {column} (cap {limits[column]}), while running | {top} | {verdict} |")
    print(f"| published: pairs / registered / detections / tracks | {last['fusion_pairs']} / "
          f"{last['registered_published']} / {last['detections_published']} / "
          f"{last['tracks_published']} | |")
    print(f"| dropped on full queues: detector / tracker | "
          f"{last['detector_dropped_queue_full']} / {last['tracker_dropped_queue_full']} | |")
    all_ok = flat and all(verdict != "OVER CAP" for _, verdict in queues.values())
    print(f"\nsoak: {'PASS' if all_ok else 'FAIL'}; wrote {csv_path} and {png_path}")


if __name__ == "__main__":
    main()
