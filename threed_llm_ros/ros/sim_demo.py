"""`make demo` (camera stage): run the simulated camera as its own process and show what it publishes.

Starts `scene_sim_node` in a separate process, subscribes over DDS like any other node
would, and prints one line per message (topic, type, size, frame, stamp) plus the
ground-truth objects, then stops after a few frames.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from visualization_msgs.msg import Marker, MarkerArray

from threed_llm_ros.processes import NodeProcess, NodeProcessSpec
from threed_llm_ros.resources import config_path
from threed_llm_ros.ros.conversions import camera_info_to_intrinsics, depth_image_to_metres, pointcloud2_to_arrays


def _stamp(header) -> str:
    return f"{header.stamp.sec}.{header.stamp.nanosec:09d}"


class SimulatedCameraListener(Node):
    """Subscribes to the simulated camera's topics and prints what arrives."""

    def __init__(self) -> None:
        super().__init__("sim_demo_listener")
        self.counts: dict[str, int] = {}
        self.create_subscription(Image, "color/image_raw", self._on_color, qos_profile_sensor_data)
        self.create_subscription(Image, "depth/image_raw", self._on_depth, qos_profile_sensor_data)
        self.create_subscription(CameraInfo, "color/camera_info", self._on_info, qos_profile_sensor_data)
        self.create_subscription(PointCloud2, "points", self._on_points, qos_profile_sensor_data)
        self.create_subscription(MarkerArray, "ground_truth/markers", self._on_markers, 10)

    def _count(self, topic: str) -> int:
        self.counts[topic] = self.counts.get(topic, 0) + 1
        return self.counts[topic]

    def _on_color(self, msg: Image) -> None:
        self._count("color/image_raw")
        print(f"color/image_raw      {msg.width}x{msg.height} {msg.encoding:6s} frame={msg.header.frame_id} stamp={_stamp(msg.header)}")

    def _on_depth(self, msg: Image) -> None:
        self._count("depth/image_raw")
        depth = depth_image_to_metres(msg)
        valid = np.isfinite(depth)
        print(
            f"depth/image_raw      {msg.width}x{msg.height} {msg.encoding:6s} valid={valid.mean():.0%} "
            f"range={np.nanmin(depth):.2f}-{np.nanmax(depth):.2f} m stamp={_stamp(msg.header)}"
        )

    def _on_info(self, msg: CameraInfo) -> None:
        self._count("color/camera_info")
        intrinsics = camera_info_to_intrinsics(msg)
        print(f"color/camera_info    fx={intrinsics.fx:.1f} fy={intrinsics.fy:.1f} cx={intrinsics.cx:.1f} cy={intrinsics.cy:.1f} stamp={_stamp(msg.header)}")

    def _on_points(self, msg: PointCloud2) -> None:
        self._count("points")
        cloud = pointcloud2_to_arrays(msg)
        print(f"points               {len(cloud.xyz)} points, fields={[f.name for f in msg.fields]} frame={msg.header.frame_id} stamp={_stamp(msg.header)}")

    def _on_markers(self, msg: MarkerArray) -> None:
        if self._count("ground_truth/markers") > 1:
            return
        labels = [marker for marker in msg.markers if marker.type == Marker.TEXT_VIEW_FACING]
        boxes = [marker for marker in msg.markers if marker.type == Marker.CUBE]
        print(f"ground_truth/markers {len(boxes)} boxes:")
        for box, label in zip(boxes, labels):
            position = box.pose.position
            print(f"    {label.text:24s} at ({position.x:+.2f}, {position.y:+.2f}, {position.z:+.2f}) m, size {box.scale.x:.2f}x{box.scale.y:.2f}x{box.scale.z:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--frames", type=int, default=3, help="stop after this many point clouds")
    parser.add_argument("--timeout", type=float, default=60.0, help="give up after this many seconds")
    arguments = parser.parse_args(argv)

    spec = NodeProcessSpec(
        module="threed_llm_ros.ros.scene_sim_node",
        parameter_files=[config_path("scene_sim.yaml")],
        parameters={"seed": arguments.seed},
    )
    print("starting:", " ".join(spec.command()[2:]))
    with NodeProcess(spec) as camera:
        rclpy.init()
        listener = SimulatedCameraListener()
        deadline = time.monotonic() + arguments.timeout
        try:
            while time.monotonic() < deadline and listener.counts.get("points", 0) < arguments.frames:
                rclpy.spin_once(listener, timeout_sec=0.2)
                if not camera.running():
                    print("scene_sim_node exited early", file=sys.stderr)
                    return 1
        finally:
            listener.destroy_node()
            rclpy.shutdown()
    received = listener.counts.get("points", 0)
    print(f"received {received} point clouds; message counts: {listener.counts}")
    return 0 if received >= arguments.frames else 1


if __name__ == "__main__":
    sys.exit(main())
