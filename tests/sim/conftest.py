"""Shared simulator outputs: generated once per test session, read by several test modules."""

from pathlib import Path

import pytest

from iphd.calibration import load_calibration
from iphd.sim.cli import run
from iphd.sim.generate import generate_iphd

SMALL = {"frames": 12, "frames_per_sequence": 4}


@pytest.fixture(scope="session")
def calibration():
    return load_calibration()


@pytest.fixture(scope="session")
def iphd_seed1(tmp_path_factory, calibration):
    """12 pairs (3 sequences of 4) from seed 1, one worker, through the library."""
    out = tmp_path_factory.mktemp("iphd_seed1") / "ds"
    summary = generate_iphd(out, seed=1, workers=1, calibration=calibration, **SMALL)
    return out, summary


@pytest.fixture(scope="session")
def iphd_seed1_cli(tmp_path_factory):
    """The same dataset as ``iphd_seed1`` through ``iphd-sim iphd`` with two workers."""
    out = tmp_path_factory.mktemp("iphd_seed1_cli") / "ds"
    rc = run(["iphd", "--out", str(out), "--seed", "1", "--frames", "12",
              "--frames-per-sequence", "4", "--workers", "2", "--quiet"])
    assert rc == 0
    return out


@pytest.fixture(scope="session")
def iphd_seed2(tmp_path_factory, calibration):
    out = tmp_path_factory.mktemp("iphd_seed2") / "ds"
    summary = generate_iphd(out, seed=2, workers=2, calibration=calibration, **SMALL)
    return out, summary


@pytest.fixture(scope="session")
def iphd_stats(tmp_path_factory, calibration):
    """80 pairs in 20 sequences: enough scenes for the statistics to mean something."""
    out = tmp_path_factory.mktemp("iphd_stats") / "ds"
    summary = generate_iphd(out, seed=7, frames=80, frames_per_sequence=4, workers=2,
                            calibration=calibration)
    return Path(out), summary
