"""``threed_llm_node``'s sensor callbacks: decode each message and keep only the latest frame.

They run on the sensor callback group and never wait for the model: a point cloud, or a colour image, depth
image and camera_info paired by stamp, become a :class:`SceneCloud` in the node's ``FrameSlot``; a message
that cannot be decoded is counted and logged as bad input, naming the topic and the problem.
"""

from __future__ import annotations

from typing import Any

from sensor_msgs.msg import PointCloud2

from threed_llm_ros.errors import MessageFormatError
from threed_llm_ros.geometry.camera import depth_to_points
from threed_llm_ros.ros.conversions import (
    camera_info_to_intrinsics,
    depth_image_to_metres,
    image_to_rgb,
    pointcloud2_to_arrays,
    stamp_to_tuple,
)
from threed_llm_ros.runtime.replies import SceneCloud
from threed_llm_ros.safe_text import printable


class SensorInput:
    """Mixed into ``ThreeDLLMNode``: uses its ``diagnostics``, ``frames``, ``settings``, ``_sync`` and logger."""

    diagnostics: Any
    frames: Any
    settings: Any
    _sync: Any

    def _bad_input(self, kind: str, topic: str, error: Exception | str) -> None:
        count = self.diagnostics.bad_input(kind, printable(error))
        self.get_logger().warning(f"ignored bad message on {topic} ({kind} #{count}): {printable(error)}")

    def _store(self, cloud: SceneCloud, topic: str) -> None:
        if len(cloud.xyz) == 0:
            self._bad_input("empty_cloud", topic, "no valid point")
            return
        self.frames.put(cloud)

    def _on_points(self, message: PointCloud2) -> None:
        self.diagnostics.input_received("points")
        try:
            arrays = pointcloud2_to_arrays(message)
        except MessageFormatError as error:
            self._bad_input("pointcloud", "points", error)
            return
        self._store(SceneCloud(arrays.xyz, arrays.rgb, arrays.frame_id, arrays.stamp), "points")

    def _rgbd_callback(self, topic: str, stream: str):
        def callback(message: Any) -> None:
            self.diagnostics.input_received(topic)
            try:
                if stream == "color":
                    decoded: Any = image_to_rgb(message)
                elif stream == "depth":
                    decoded = depth_image_to_metres(message)
                else:
                    decoded = camera_info_to_intrinsics(message)
                stamp = stamp_to_tuple(message.header.stamp)
            except MessageFormatError as error:
                kind = "camera_info" if stream == "info" else "image"
                self._bad_input(kind, topic, error)
                return
            assert self._sync is not None
            matched = self._sync.add(stream, stamp[0] + stamp[1] * 1e-9, (decoded, message.header.frame_id, stamp))
            if matched is not None:
                self._store_rgbd(matched)

        return callback

    def _store_rgbd(self, matched: dict[str, Any]) -> None:
        assert self.settings is not None
        color, _, _ = matched["color"]
        depth, frame_id, stamp = matched["depth"]
        intrinsics, _, _ = matched["info"]
        if color.shape[:2] != depth.shape or (intrinsics.height, intrinsics.width) != depth.shape:
            self._bad_input("rgbd_mismatch", "depth/image_raw",
                            f"colour {color.shape[:2]}, depth {depth.shape}, camera_info {intrinsics.height}x{intrinsics.width} differ")
            return
        engine = self.settings.engine
        xyz, rgb = depth_to_points(depth, intrinsics, min_range=engine.min_range, max_range=engine.max_range, color=color)
        self._store(SceneCloud(xyz, rgb, str(frame_id), stamp, image=color, intrinsics=intrinsics), "depth/image_raw")
