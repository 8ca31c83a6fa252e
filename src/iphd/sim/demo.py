"""The simulator bag the demo and ``source:=sim`` play: generated once, then reused.

The bag lives in a cache folder (``$IPHD_CACHE_DIR``, else ``$XDG_CACHE_HOME/iphd``, else
``~/.cache/iphd``) under a name that carries every setting it was made with, so a change of
settings (or of ``DEMO_VERSION`` when the simulator changes) makes a new one instead of reusing a
stale one.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from iphd.cache import cache_dir
from iphd.errors import DatasetError

DEMO_VERSION = 4
DEMO_SEED = 0
DEMO_DURATION_S = 20.0
DEMO_PROFILE = "aligned_640x360"
DEMO_PEOPLE = 4


def demo_bag_path() -> Path:
    """Where the demo bag is (or will be)."""
    name = (
        f"sim_demo_v{DEMO_VERSION}_seed{DEMO_SEED}_{DEMO_PROFILE}_{DEMO_DURATION_S:g}s_"
        f"{DEMO_PEOPLE}people"
    )
    return cache_dir() / name


def ensure_demo_bag(path: Path | None = None, *, progress: bool = True, workers: int = 2) -> Path:
    """Return the demo bag, generating it first when it does not exist yet (~10 s, ~194 MB)."""
    from tqdm import tqdm

    from iphd.calibration import load_calibration
    from iphd.sim.generate import generate_bag
    from iphd.sim.rig import SensorConfig

    path = Path(path) if path is not None else demo_bag_path()
    if (path / "metadata.yaml").is_file():
        return path
    if path.exists():  # a folder without metadata: not a finished bag, never ours to keep
        raise DatasetError(
            f"{path} exists but is not a complete bag; remove it and run again to regenerate"
        )
    print(f"generating the simulator demo bag once: {path}", file=sys.stderr, flush=True)
    with tqdm(unit="frame", disable=not progress, file=sys.stderr) as bar:
        try:
            generate_bag(
                path, seed=DEMO_SEED, duration_s=DEMO_DURATION_S, people=DEMO_PEOPLE,
                sensors=SensorConfig(depth_profile=DEMO_PROFILE), calibration=load_calibration(),
                workers=max(1, min(workers, os.cpu_count() or 1)), progress=bar.update,
            )
        except DatasetError:
            if (path / "metadata.yaml").is_file():  # another process made it meanwhile
                return path
            raise
    return path
