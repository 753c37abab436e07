"""train sub-package (ROS-free)."""
