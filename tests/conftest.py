"""Test session set-up: keep DDS traffic of the ROS tests on this host and on a private domain."""

import os
import random

# Before rclpy is imported anywhere: a random domain keeps parallel or earlier runs apart.
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(1, 200)))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
