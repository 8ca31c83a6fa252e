"""Test session set-up: DDS traffic of the ROS tests kept on this host and a private domain; a
simulator bag shared by the tests that need one."""

import os
import random

import pytest

# Before rclpy is imported anywhere: a random domain keeps parallel or earlier runs apart.
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(1, 200)))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")


@pytest.fixture(scope="session")
def sim_bag(tmp_path_factory):
    """4 s of the simulator at 848x480 with 2 people (seed 2: both in view, ~25 pairs)."""
    from iphd.sim.cli import run as sim_run

    path = tmp_path_factory.mktemp("sim") / "bag"
    status = sim_run([
        "bag", "--out", str(path), "--seed", "2", "--duration", "4", "--people", "2",
        "--profile", "aligned_848x480", "--workers", "1", "--quiet",
    ])
    assert status == 0
    return path
