"""``scene_sim_node``: a simulated RGB-D camera publishing like a real driver.

Publishes, all with the same stamp and ``frame_id`` per frame (names relative to the
node's namespace):

    color/image_raw       sensor_msgs/Image (rgb8)
    depth/image_raw       sensor_msgs/Image (16UC1 millimetres, 0 = no return; or 32FC1)
    color/camera_info     sensor_msgs/CameraInfo
    points                sensor_msgs/PointCloud2 (x, y, z float32 + packed rgb), optical frame
    ground_truth/markers  visualization_msgs/MarkerArray: DELETEALL, then per object a CUBE
                          (its ground-truth box) and a TEXT_VIEW_FACING label "colour category"

Sensor topics use sensor-data QoS (``qos_reliability``, ``qos_depth``); the markers are
reliable and transient-local so a late RViz still shows them. With Fast DDS the node
loads ``config/fastdds_large_data.xml`` (unless a profile is set) so full-size frames
travel through shared memory: with the default 512 KB segment, best-effort 640x480
clouds are almost all lost.

Rendering policy: a scene is ray-cast once, converted to messages once, and the cached
messages are republished at ``rate_hz`` with fresh stamps. With ``resample_noise`` the
sensor model (noise, dropout, edge artefacts; cheap compared with ray casting) is
re-applied every frame from the cached ray cast, so consecutive frames differ like a real
camera's. With ``new_scene_every_n_frames`` > 0 the node moves to scene k+1 (seed + k+1)
every n frames. Frame n of scene k matches ``scene_sim.simulate(seed + k)`` for n = 0.

Bad parameters stop the node at startup with one line naming the parameter and the fix.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from visualization_msgs.msg import Marker, MarkerArray

from threed_llm_ros.data.catalog import COLORS, ROOM_TYPE_NAMES
from threed_llm_ros.data.sim.frames import RenderedFrame, frame_from_cast, render
from threed_llm_ros.data.sim.placement import SceneConfig, generate_scene
from threed_llm_ros.data.sim.scene import Scene, load_scene
from threed_llm_ros.data.sim.sensor import SensorConfig
from threed_llm_ros.errors import ConfigError
from threed_llm_ros.geometry.camera import CameraIntrinsics
from threed_llm_ros.geometry.frames import from_gravity_frame
from threed_llm_ros.ros.conversions import (
    array_to_image,
    arrays_to_pointcloud2,
    depth_metres_to_image,
    intrinsics_to_camera_info,
    tuple_to_stamp,
)
from threed_llm_ros.ros.parameters import (
    ParameterSpec,
    dataclass_from_parameters,
    declare_parameters,
    read_parameters,
    specs_from_dataclass,
)
from threed_llm_ros.ros.qos import latched_qos, qos_parameter_specs, sensor_qos, use_large_message_transport

NODE_NAME = "scene_sim_node"
UP_AXIS = "-y"  # the optical frame of a level camera

SENSOR_DESCRIPTIONS = {
    "depth_noise_coefficient": "Depth noise: sigma = k * z^2 metres (k in 1/m; Kinect-like ~0.0015).",
    "dropout_probability": "Probability that a pixel randomly has no depth return.",
    "min_range_m": "Closest depth the sensor measures (m); nearer surfaces give no return.",
    "max_range_m": "Farthest depth the sensor measures (m); farther surfaces give no return.",
    "grazing_angle_deg": "No return where the ray meets a surface at more than this angle from its normal (90 = off).",
    "edge_threshold_m": "Depth jump within a 3x3 neighbourhood that counts as an edge (m).",
    "edge_dropout_probability": "Probability that an edge pixel has no return.",
    "flying_pixel_probability": "Probability that an edge pixel gets a depth between foreground and background.",
    "rgb_noise_std": "Standard deviation of Gaussian colour noise (0-255 units).",
}
SENSOR_RANGES = {
    "depth_noise_coefficient": (0.0, 1.0),
    "dropout_probability": (0.0, 1.0),
    "min_range_m": (0.0, 100.0),
    "max_range_m": (0.01, 1000.0),
    "grazing_angle_deg": (1.0, 90.0),
    "edge_threshold_m": (0.0, 100.0),
    "edge_dropout_probability": (0.0, 1.0),
    "flying_pixel_probability": (0.0, 1.0),
    "rgb_noise_std": (0.0, 255.0),
}

PARAMETER_SPECS: list[ParameterSpec] = [
    ParameterSpec("seed", 0, "Seed of the first scene (scene k uses seed + k) and of the sensor noise.", 0, 2**31 - 1),
    ParameterSpec(
        "scene_spec", "", "Path of a scene JSON file to render instead of random scenes; empty = random scenes.",
        fix="give the path of an existing scene JSON file, or '' for random scenes",
    ),
    ParameterSpec("room_type", "", "Random scenes of this room type only; empty = any.", choices=("", *ROOM_TYPE_NAMES)),
    ParameterSpec("width", 640, "Image width in pixels.", 1, 8192),
    ParameterSpec("height", 480, "Image height in pixels.", 1, 8192),
    ParameterSpec("horizontal_fov_deg", 60.0, "Horizontal field of view (degrees), used when fx is 0.", 1.0, 179.0),
    ParameterSpec("fx", 0.0, "Focal length in pixels along x; 0 = from horizontal_fov_deg.", 0.0, 1.0e6),
    ParameterSpec("fy", 0.0, "Focal length in pixels along y; 0 = same as fx.", 0.0, 1.0e6),
    ParameterSpec("rate_hz", 5.0, "Publishing rate (Hz); 0 = publish one frame set at startup only.", 0.0, 1000.0),
    ParameterSpec(
        "frame_id", "camera_color_optical_frame", "frame_id of every published message (the camera's optical frame).",
        fix="give a non-empty TF frame name",
    ),
    ParameterSpec("camera_height_m", 1.2, "Height of the camera above the floor in random scenes (m).", 0.1, 2.4),
    ParameterSpec("noise", True, "Simulate sensor effects (depth noise, missing returns, edge artefacts, colour noise)."),
    ParameterSpec("resample_noise", False, "Draw new sensor noise every frame instead of republishing the first frame."),
    ParameterSpec(
        "new_scene_every_n_frames", 0, "Switch to the next random scene every n frames; 0 = one scene forever.", 0, 2**31 - 1
    ),
    ParameterSpec("depth_encoding", "16UC1", "Depth image encoding: 16UC1 (millimetres) or 32FC1 (metres).",
                  choices=("16UC1", "32FC1")),
    *qos_parameter_specs(),
    *specs_from_dataclass(SensorConfig, SENSOR_DESCRIPTIONS, prefix="sensor.", ranges=SENSOR_RANGES, exclude=("enabled",)),
]


@dataclass(frozen=True)
class SceneSimSettings:
    """The node's validated configuration."""

    seed: int
    scene: Scene | None  # from scene_spec, or None for random scenes
    scene_config: SceneConfig
    intrinsics: CameraIntrinsics
    sensor: SensorConfig
    rate_hz: float
    frame_id: str
    resample_noise: bool
    new_scene_every_n_frames: int
    depth_encoding: str
    qos_reliability: str
    qos_depth: int

    @classmethod
    def from_parameters(cls, values: dict[str, Any]) -> "SceneSimSettings":
        """Cross-check the parameter values and build the simulator's configs (ConfigError if wrong)."""
        if not str(values["frame_id"]).strip():
            raise ConfigError("frame_id", "is empty", "give the camera's optical frame, e.g. camera_color_optical_frame")
        scene = None
        if values["scene_spec"]:
            path = Path(str(values["scene_spec"])).expanduser()
            if not path.is_file():
                raise ConfigError("scene_spec", f"file {path} does not exist",
                                  "give the path of an existing scene JSON file, or '' for random scenes")
            try:
                scene = load_scene(path)
            except ConfigError as error:
                raise ConfigError("scene_spec", f"{path}: {error}", "fix the scene file") from error
            if values["new_scene_every_n_frames"] > 0:
                raise ConfigError("new_scene_every_n_frames", "a scene_spec file holds one scene",
                                  "set new_scene_every_n_frames to 0, or clear scene_spec for random scenes")
        width, height = values["width"], values["height"]
        if values["fx"] > 0:
            fx = values["fx"]
            fy = values["fy"] if values["fy"] > 0 else fx
            intrinsics = CameraIntrinsics(fx=fx, fy=fy, cx=width / 2.0, cy=height / 2.0, width=width, height=height)
        else:
            if values["fy"] > 0:
                raise ConfigError("fy", "is set but fx is 0", "set fx too, or leave both 0 to use horizontal_fov_deg")
            intrinsics = CameraIntrinsics.from_field_of_view(width, height, values["horizontal_fov_deg"])
        room_types = (values["room_type"],) if values["room_type"] else SceneConfig().room_types
        scene_config = dataclass_from_parameters(
            SceneConfig, {"camera_height_m": values["camera_height_m"]}, room_types=room_types
        )
        sensor = dataclass_from_parameters(SensorConfig, values, prefix="sensor.", enabled=bool(values["noise"]))
        sensor_qos(values["qos_reliability"], values["qos_depth"])  # validates
        return cls(
            seed=values["seed"],
            scene=scene,
            scene_config=scene_config,
            intrinsics=intrinsics,
            sensor=sensor,
            rate_hz=values["rate_hz"],
            frame_id=str(values["frame_id"]),
            resample_noise=bool(values["resample_noise"]),
            new_scene_every_n_frames=values["new_scene_every_n_frames"],
            depth_encoding=values["depth_encoding"],
            qos_reliability=values["qos_reliability"],
            qos_depth=values["qos_depth"],
        )


def ground_truth_markers(frame: RenderedFrame, frame_id: str) -> MarkerArray:
    """DELETEALL, then a CUBE per ground-truth box and a 'colour category' label above it (optical frame)."""
    markers = [Marker(action=Marker.DELETEALL)]
    markers[0].header.frame_id = frame_id
    for obj in frame.objects:
        position, orientation = obj.box.pose_in_frame(UP_AXIS)
        cube = Marker(ns="ground_truth", id=obj.index, type=Marker.CUBE, action=Marker.ADD)
        cube.header.frame_id = frame_id
        cube.pose.position.x, cube.pose.position.y, cube.pose.position.z = (float(value) for value in position)
        (cube.pose.orientation.x, cube.pose.orientation.y,
         cube.pose.orientation.z, cube.pose.orientation.w) = (float(value) for value in orientation)
        cube.scale.x, cube.scale.y, cube.scale.z = (float(value) for value in obj.box.size)
        red, green, blue = (value / 255.0 for value in COLORS[obj.color])
        cube.color.r, cube.color.g, cube.color.b, cube.color.a = red, green, blue, 0.5
        label = Marker(ns="ground_truth_labels", id=obj.index, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD)
        label.header.frame_id = frame_id
        above = np.asarray(obj.box.center) + np.array([0.0, 0.0, obj.box.size[2] / 2 + 0.08])
        label_position = from_gravity_frame(above[None], UP_AXIS)[0]
        label.pose.position.x, label.pose.position.y, label.pose.position.z = (float(value) for value in label_position)
        label.pose.orientation.w = 1.0
        label.scale.z = 0.1
        label.color.r = label.color.g = label.color.b = label.color.a = 1.0
        label.text = obj.label
        markers += [cube, label]
    return MarkerArray(markers=markers)


class SceneSimNode(Node):
    """Renders simulated scenes and publishes them as an RGB-D camera would."""

    def __init__(self, **node_arguments: Any) -> None:
        super().__init__(NODE_NAME, **node_arguments)
        declare_parameters(self, PARAMETER_SPECS)
        self.settings = SceneSimSettings.from_parameters(read_parameters(self, PARAMETER_SPECS))
        qos = sensor_qos(self.settings.qos_reliability, self.settings.qos_depth)
        self._color_publisher = self.create_publisher(Image, "color/image_raw", qos)
        self._depth_publisher = self.create_publisher(Image, "depth/image_raw", qos)
        self._info_publisher = self.create_publisher(CameraInfo, "color/camera_info", qos)
        self._points_publisher = self.create_publisher(PointCloud2, "points", qos)
        self._markers_publisher = self.create_publisher(MarkerArray, "ground_truth/markers", latched_qos())
        self.frames_published = 0
        self._scene_index = 0
        self._frame_in_scene = 0
        self._load_scene(0)
        self._publish_frame()
        self._timer = self.create_timer(1.0 / self.settings.rate_hz, self._on_timer) if self.settings.rate_hz > 0 else None

    def _load_scene(self, scene_index: int) -> None:
        """Render scene ``scene_index`` and cache its messages."""
        settings = self.settings
        seed = settings.seed + scene_index
        started = time.perf_counter()
        scene = settings.scene if settings.scene is not None else generate_scene(seed, settings.scene_config)
        self.frame = render(scene, settings.intrinsics, settings.sensor, seed)
        self._scene_index, self._frame_in_scene = scene_index, 0
        self._info = intrinsics_to_camera_info(settings.intrinsics, frame_id=settings.frame_id)
        self._markers = ground_truth_markers(self.frame, settings.frame_id)
        self._convert_sensor_images()
        labels = ", ".join(obj.label for obj in self.frame.objects)
        self.get_logger().info(
            f"scene {scene_index} (seed {seed}): {scene.room_type or 'custom'} with {len(scene.objects)} objects "
            f"[{labels}]; {settings.intrinsics.width}x{settings.intrinsics.height}, {len(self.frame.points)} points; "
            f"rendered and converted in {(time.perf_counter() - started) * 1000:.0f} ms"
        )

    def _convert_sensor_images(self) -> None:
        frame_id, frame = self.settings.frame_id, self.frame
        self._color = array_to_image(frame.rgb, "rgb8", frame_id=frame_id)
        self._depth = depth_metres_to_image(frame.depth_m, self.settings.depth_encoding, frame_id=frame_id)
        self._points = arrays_to_pointcloud2(frame.points, frame.colors, frame_id=frame_id)

    def _on_timer(self) -> None:
        settings = self.settings
        if settings.new_scene_every_n_frames > 0 and self._frame_in_scene >= settings.new_scene_every_n_frames:
            self._load_scene(self._scene_index + 1)
        elif settings.resample_noise and self._frame_in_scene > 0:
            seed = [settings.seed + self._scene_index, self._frame_in_scene]
            self.frame = frame_from_cast(self.frame.scene, self.frame.cast, settings.sensor, seed)
            self._convert_sensor_images()
        self._publish_frame()

    def _publish_frame(self) -> None:
        """Publish the cached messages of the current frame with one fresh stamp."""
        now = self.get_clock().now().seconds_nanoseconds()
        stamp = tuple_to_stamp((int(now[0]), int(now[1])))
        for message in (self._color, self._depth, self._info, self._points):
            message.header.stamp = stamp
        for marker in self._markers.markers:
            marker.header.stamp = stamp
        self._color_publisher.publish(self._color)
        self._depth_publisher.publish(self._depth)
        self._info_publisher.publish(self._info)
        self._points_publisher.publish(self._points)
        self._markers_publisher.publish(self._markers)
        self.frames_published += 1
        self._frame_in_scene += 1


def main(args: list[str] | None = None) -> int:
    """Run the node until shutdown; exit status 1 on a configuration error."""
    use_large_message_transport()  # full-size images and clouds over best-effort QoS
    rclpy.init(args=args)
    node = None
    try:
        node = SceneSimNode()
        rclpy.spin(node)
    except ConfigError as error:
        rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: {error}")
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
