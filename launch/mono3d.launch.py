"""Launch mono3d_node (3D boxes from one RGB image + intrinsics) on a camera's colour stream.

    ros2 launch threed_llm_ros mono3d.launch.py camera:=realsense checkpoint:=/path/to/mono3d

``camera`` picks the remappings of image_raw and camera_info for a common driver (the colour
streams of the cameras threed_llm.launch.py knows, plus ``usb_cam``); ``params_file`` defaults
to config/mono3d.yaml. The checkpoint comes from `threed-llm mono3d-train`.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

COLOR_STREAMS = {
    "realsense": ("/camera/camera/color/image_raw", "/camera/camera/color/camera_info"),
    "azure_kinect": ("/rgb/image_raw", "/rgb/camera_info"),
    "orbbec": ("/camera/color/image_raw", "/camera/color/camera_info"),
    "gazebo": ("/camera/image", "/camera/camera_info"),
    "sim": ("/camera/color/image_raw", "/camera/color/camera_info"),
    "usb_cam": ("/image_raw", "/camera_info"),
}


def _node(context, *args, **kwargs):
    camera = LaunchConfiguration("camera").perform(context)
    if camera not in COLOR_STREAMS:
        raise RuntimeError(f"camera:={camera} is unknown; use one of {sorted(COLOR_STREAMS)}")
    image, info = COLOR_STREAMS[camera]
    return [
        Node(
            package="threed_llm_ros",
            executable="mono3d_node",
            name="mono3d_node",
            namespace=LaunchConfiguration("namespace"),
            output="screen",
            parameters=[
                LaunchConfiguration("params_file"),
                {"checkpoint": LaunchConfiguration("checkpoint"), "autostart": True},
            ],
            remappings=[("image_raw", image), ("camera_info", info)],
        )
    ]


def generate_launch_description():
    share = get_package_share_directory("threed_llm_ros")
    return LaunchDescription([
        DeclareLaunchArgument("camera", default_value="realsense", description=f"one of {sorted(COLOR_STREAMS)}"),
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "mono3d.yaml")),
        DeclareLaunchArgument("checkpoint", default_value=os.path.join(share, "models", "mono3d")),
        DeclareLaunchArgument("namespace", default_value=""),
        OpaqueFunction(function=_node),
    ])
