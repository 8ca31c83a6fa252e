"""The only part of iphd that imports rclpy and ROS message modules: nodes, conversions, runner."""

import os

# The nodes share the robot's cores: idle OpenMP threads (torch's) sleep instead of spinning,
# which otherwise burns the CPU the other nodes need between frames (measured: the whole graph
# on 2 cores dropped 40 % of its pairs with spinning). Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
