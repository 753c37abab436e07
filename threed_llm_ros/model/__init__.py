"""model sub-package (ROS-free)."""
