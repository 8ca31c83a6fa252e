"""Fixtures shared by the end-to-end evaluation tests."""

import pytest

from iphd.sim.cli import run as sim_run


@pytest.fixture(scope="session")
def sim_bag(tmp_path_factory):
    """4 s of the simulator at 848x480 with 2 people (seed 2: both in view, ~25 pairs)."""
    path = tmp_path_factory.mktemp("sim") / "bag"
    status = sim_run([
        "bag", "--out", str(path), "--seed", "2", "--duration", "4", "--people", "2",
        "--profile", "aligned_848x480", "--workers", "1", "--quiet",
    ])
    assert status == 0
    return path
