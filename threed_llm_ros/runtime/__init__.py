"""runtime sub-package (ROS-free)."""
