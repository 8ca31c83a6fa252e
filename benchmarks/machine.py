"""What machine a benchmark ran on, for the figures that go into the README."""

from __future__ import annotations

import platform


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
