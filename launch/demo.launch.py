"""The demo graph: the simulated RGB-D camera in /camera, threed_llm_node on its point cloud and
mono3d_node (in /mono3d) on its RGB image alone.

    ros2 launch threed_llm_ros demo.launch.py
    ros2 run threed_llm_ros prompt_client --prompt "describe the scene"

Same executables, parameter files and parameters as config/demo.yaml, which
`threed-llm up --config config/demo.yaml` (and `make demo`) start without ``ros2 launch``.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch_ros.actions import Node


def generate_launch_description():
    share = get_package_share_directory("threed_llm_ros")
    return LaunchDescription([
        Node(
            package="threed_llm_ros",
            executable="scene_sim_node",
            name="scene_sim_node",
            namespace="/camera",
            output="screen",
            parameters=[os.path.join(share, "config", "scene_sim.yaml"), {"seed": 3, "rate_hz": 2.0}],
        ),
        Node(
            package="threed_llm_ros",
            executable="threed_llm_node",
            name="threed_llm_node",
            output="screen",
            parameters=[os.path.join(share, "config", "threed_llm.yaml"), {"autostart": True, "max_new_tokens": 48, "sensor_height": 1.2}],
            remappings=[
                ("points", "/camera/points"),
                ("color/image_raw", "/camera/color/image_raw"),
                ("depth/image_raw", "/camera/depth/image_raw"),
                ("color/camera_info", "/camera/color/camera_info"),
            ],
        ),
        Node(
            package="threed_llm_ros",
            executable="mono3d_node",
            name="mono3d_node",
            namespace="/mono3d",
            output="screen",
            parameters=[os.path.join(share, "config", "mono3d.yaml"), {"autostart": True}],
            remappings=[
                ("image_raw", "/camera/color/image_raw"),
                ("camera_info", "/camera/color/camera_info"),
            ],
        ),
    ])
