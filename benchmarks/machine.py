"""What machine a benchmark ran on, for the figures that go into the README."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable

import numpy as np


def cpu_model() -> str:
    """The CPU model from /proc/cpuinfo (or what the platform module knows)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def timed(fn: Callable[[], object], warmup: int, iterations: int) -> list[float]:
    """Return ``iterations`` durations of ``fn`` in milliseconds after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return samples


def peak_rss_mb() -> float:
    """Peak resident memory of this process's address space in MB.

    VmHWM, not ``getrusage().ru_maxrss``: Linux carries ru_maxrss over from the parent through
    fork and exec, so every worker would report the parent's peak.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def summary(samples: list[float]) -> tuple[float, float, float]:
    """Return median ms, p95 ms and frames/s at the median."""
    a = np.asarray(samples)
    median = float(np.median(a))
    return median, float(np.percentile(a, 95)), 1e3 / median


def speed_probe_ms(repeats: int = 7) -> float:
    """Median time of a fixed one-core workload (sorting 2 000 000 floats), in ms.

    On a shared VM the same benchmark can run twice as slow from one hour to the next; printed
    next to a benchmark's figures, the probe says how fast the machine was at the time.
    """
    values = np.random.default_rng(0).random(2_000_000)
    return float(np.median(timed(lambda: np.sort(values), 1, repeats)))


def cpu_times() -> tuple[int, int]:
    """(all, steal) jiffies of the machine so far, from /proc/stat; (0, 0) where unknown."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    return sum(fields[:8]), fields[7] if len(fields) > 7 else 0


def steal_percent(before: tuple[int, int], after: tuple[int, int]) -> float:
    """Share of the machine's CPU time the hypervisor gave to others between two ``cpu_times``."""
    total = after[0] - before[0]
    return 100.0 * (after[1] - before[1]) / total if total > 0 else float("nan")
