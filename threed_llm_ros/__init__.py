"""threed_llm_ros: a 3D large language model for robots (3D-LLM + MiniGPT-3D + LLMI3D).

Only the ``threed_llm_ros.ros`` sub-package imports rclpy; everything else is plain
Python, numpy and torch, usable without a ROS installation.
"""

__version__ = "0.1.0"
