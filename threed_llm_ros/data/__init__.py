"""data sub-package (ROS-free)."""
