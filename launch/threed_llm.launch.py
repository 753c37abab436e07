"""Launch threed_llm_node with its parameter file, wired to a real or simulated depth camera.

    ros2 launch threed_llm_ros threed_llm.launch.py camera:=realsense
    ros2 launch threed_llm_ros threed_llm.launch.py camera:=orbbec input:=rgbd

``camera`` picks the remappings (and the input frame's up axis) of a common driver:
realsense (realsense2_camera, namespace camera/camera, pointcloud.enable:=true,
align_depth.enable:=true), azure_kinect (Azure_Kinect_ROS_Driver, depth_to_rgb), orbbec
(OrbbecSDK_ROS2), gazebo (ros_gz_bridge of a gz depth camera), sim (this package's
scene_sim_node in /camera). ``params_file`` defaults to config/threed_llm.yaml; the node
configures and activates itself (autostart). Without ``ros2 launch``, `threed-llm up`
starts the same node from config/demo.yaml.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

CAMERA_REMAPPINGS = {
    "realsense": {
        "points": "/camera/camera/depth/color/points",
        "color/image_raw": "/camera/camera/color/image_raw",
        "depth/image_raw": "/camera/camera/aligned_depth_to_color/image_raw",
        "color/camera_info": "/camera/camera/color/camera_info",
    },
    "azure_kinect": {
        "points": "/points2",
        "color/image_raw": "/rgb/image_raw",
        "depth/image_raw": "/depth_to_rgb/image_raw",
        "color/camera_info": "/rgb/camera_info",
    },
    "orbbec": {
        "points": "/camera/depth_registered/points",
        "color/image_raw": "/camera/color/image_raw",
        "depth/image_raw": "/camera/depth/image_raw",
        "color/camera_info": "/camera/color/camera_info",
    },
    "gazebo": {
        "points": "/depth_camera/points",
        "color/image_raw": "/camera/image",
        "depth/image_raw": "/depth_camera/image",
        "color/camera_info": "/camera/camera_info",
    },
    "sim": {
        "points": "/camera/points",
        "color/image_raw": "/camera/color/image_raw",
        "depth/image_raw": "/camera/depth/image_raw",
        "color/camera_info": "/camera/color/camera_info",
    },
}
# Up axis of the frame each driver's data arrives in: optical frames (-y) or a z-up link (gazebo points).
CAMERA_UP_AXIS = {"realsense": "-y", "azure_kinect": "-y", "orbbec": "-y", "gazebo": "z", "sim": "-y"}


def _node(context, *args, **kwargs):
    camera = LaunchConfiguration("camera").perform(context)
    if camera not in CAMERA_REMAPPINGS:
        raise RuntimeError(f"camera:={camera} is unknown; use one of {sorted(CAMERA_REMAPPINGS)}")
    return [
        Node(
            package="threed_llm_ros",
            executable="threed_llm_node",
            name="threed_llm_node",
            namespace=LaunchConfiguration("namespace"),
            output="screen",
            parameters=[
                LaunchConfiguration("params_file"),
                {
                    "input": LaunchConfiguration("input"),
                    "checkpoint": LaunchConfiguration("checkpoint"),
                    "device": LaunchConfiguration("device"),
                    "up_axis": CAMERA_UP_AXIS[camera],
                    "autostart": True,
                },
            ],
            remappings=list(CAMERA_REMAPPINGS[camera].items()),
        )
    ]


def generate_launch_description():
    share = get_package_share_directory("threed_llm_ros")
    return LaunchDescription([
        DeclareLaunchArgument("camera", default_value="realsense", description=f"one of {sorted(CAMERA_REMAPPINGS)}"),
        DeclareLaunchArgument("input", default_value="pointcloud", description="pointcloud or rgbd"),
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "threed_llm.yaml")),
        DeclareLaunchArgument("checkpoint", default_value=os.path.join(share, "models", "threed-llm-mini")),
        DeclareLaunchArgument("device", default_value="cpu", description="cpu, cuda or cuda:<index>"),
        DeclareLaunchArgument("namespace", default_value=""),
        OpaqueFunction(function=_node),
    ])
