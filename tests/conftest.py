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


@pytest.fixture(scope="session")
def pan_bag(tmp_path_factory):
    """``sim_bag``'s scene from a robot turning in place (30 degrees either side, a swing in
    4 s), with its odometry on /tf."""
    from iphd.sim.cli import run as sim_run

    path = tmp_path_factory.mktemp("pan") / "bag"
    status = sim_run([
        "bag", "--out", str(path), "--seed", "2", "--duration", "4", "--people", "2",
        "--profile", "aligned_848x480", "--workers", "1", "--quiet", "--pan-deg", "30",
        "--pan-period", "4",
    ])
    assert status == 0
    return path


#: realsense2_camera's depth topics and a Lepton driver's, for bags of other drivers' names.
OTHER_DRIVERS = {
    "depth/image_raw": "/camera/camera/depth/image_rect_raw",
    "depth/camera_info": "/camera/camera/depth/camera_info",
    "thermal/image_raw": "/lepton/image_raw",
}


@pytest.fixture(scope="session")
def other_drivers_bag(sim_bag, tmp_path_factory):
    """(bag, topics): the first 2 s of ``sim_bag``, its depth and thermal topics renamed as
    ``OTHER_DRIVERS`` (given as ``topics``: sensor topic -> the name in the bag)."""
    from transport_bags import write_transport_bag

    path = tmp_path_factory.mktemp("other_drivers") / "bag"
    write_transport_bag(sim_bag, path, {}, rename=OTHER_DRIVERS, stop_ns=2_000_000_000)
    return path, dict(OTHER_DRIVERS)


#: What a robot's ``ros2 bag record`` of image_transport topics holds instead of raw images:
#: realsense2_camera's depth through compressedDepth (PNG), a Lepton driver's thermal through
#: compressed (16-bit PNG).
TRANSPORTS = {"depth/image_raw": "compressedDepth", "thermal/image_raw": "compressed"}


@pytest.fixture(scope="session")
def compressed_bag(sim_bag, tmp_path_factory):
    """(bag, topics): the first 2 s of ``sim_bag`` under ``OTHER_DRIVERS``' names, with depth
    and thermal recorded only through image_transport's transports (``TRANSPORTS``);
    ``topics`` gives each image's raw name, as a user names it (``--depth-topic
    /camera/camera/depth/image_rect_raw``)."""
    from transport_bags import write_transport_bag

    path = tmp_path_factory.mktemp("compressed") / "bag"
    write_transport_bag(sim_bag, path, TRANSPORTS, rename=OTHER_DRIVERS, stop_ns=2_000_000_000)
    return path, {k: v for k, v in OTHER_DRIVERS.items() if k in TRANSPORTS}
