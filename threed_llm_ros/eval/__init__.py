"""eval sub-package (ROS-free)."""
