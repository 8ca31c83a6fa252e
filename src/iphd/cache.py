"""The cache folder for what iphd generates and can rebuild at any time (demo bag, exports)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$IPHD_CACHE_DIR``, else ``$XDG_CACHE_HOME/iphd``, else ``~/.cache/iphd``."""
    if os.environ.get("IPHD_CACHE_DIR"):
        return Path(os.environ["IPHD_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "iphd"
