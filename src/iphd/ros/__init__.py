"""The only part of iphd that imports rclpy and ROS message modules: nodes, conversions, runner."""
