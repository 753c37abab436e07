"""A simulated frame: a scene rendered through a camera and a sensor, with the ground truth of every object."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from threed_llm_ros.data.sim.placement import SceneConfig, generate_scene
from threed_llm_ros.data.sim.render import RayCast, ray_cast
from threed_llm_ros.data.sim.scene import Scene
from threed_llm_ros.data.sim.sensor import SensorConfig, apply_sensor_model
from threed_llm_ros.geometry.boxes import OrientedBox
from threed_llm_ros.geometry.camera import CameraIntrinsics, depth_to_points

@dataclass(frozen=True)
class ObjectAnnotation:
    """Ground truth of one object as seen from the camera."""

    index: int
    category: str
    color: str
    box: OrientedBox  # camera gravity frame (x forward, y left, z up)
    on: int | None
    visible_pixels: int

    @property
    def label(self) -> str:
        """'colour category', e.g. 'red chair'."""
        return f"{self.color} {self.category}"


@dataclass
class RenderedFrame:
    """One simulated RGB-D frame with its ground truth."""

    scene: Scene
    intrinsics: CameraIntrinsics
    rgb: np.ndarray  # H×W×3 uint8
    depth_m: np.ndarray  # H×W float32, sensor depth, NaN = no return
    depth_clean_m: np.ndarray  # H×W float32, exact depth of the nearest surface
    instance_mask: np.ndarray  # H×W int32, object index or -1
    points: np.ndarray  # N×3 float32, optical frame, from the sensor depth
    colors: np.ndarray  # N×3 uint8
    objects: list[ObjectAnnotation]
    cast: RayCast = field(repr=False)

    def boxes_array(self) -> np.ndarray:
        """Ground-truth boxes as an N×7 array (cx, cy, cz, length, width, height, yaw)."""
        return np.array([obj.box.to_array() for obj in self.objects], dtype=np.float64).reshape(-1, 7)


def frame_from_cast(
    scene: Scene, cast: RayCast, sensor: SensorConfig = SensorConfig(), seed: int | Sequence[int] = 0
) -> RenderedFrame:
    """Apply the sensor model to a ray cast and attach the ground truth (cheap; no ray casting)."""
    rgb, depth = apply_sensor_model(cast, sensor, seed)
    points, colors = depth_to_points(depth, cast.intrinsics, color=rgb)
    assert colors is not None
    counts = np.bincount(cast.instance_mask[cast.instance_mask >= 0].ravel(), minlength=len(scene.objects))
    objects = [
        ObjectAnnotation(index, obj.category, obj.color, box, obj.on, int(counts[index]))
        for index, (obj, box) in enumerate(zip(scene.objects, scene.boxes_in_camera()))
    ]
    return RenderedFrame(scene, cast.intrinsics, rgb, depth, cast.depth_m, cast.instance_mask, points, colors, objects, cast)


def render(
    scene: Scene, intrinsics: CameraIntrinsics, sensor: SensorConfig = SensorConfig(), seed: int | Sequence[int] = 0
) -> RenderedFrame:
    """Render a scene through a camera and a sensor model; ``seed`` drives the sensor noise."""
    return frame_from_cast(scene, ray_cast(scene, intrinsics), sensor, seed)


DEFAULT_INTRINSICS = CameraIntrinsics.from_field_of_view(640, 480, 60.0)


def simulate(
    seed: int,
    intrinsics: CameraIntrinsics = DEFAULT_INTRINSICS,
    scene_config: SceneConfig = SceneConfig(),
    sensor: SensorConfig = SensorConfig(),
) -> RenderedFrame:
    """A random scene for ``seed`` rendered through ``intrinsics`` (sensor noise seeded by ``seed`` too)."""
    return render(generate_scene(seed, scene_config), intrinsics, sensor, seed)


def save_frame(frame: RenderedFrame, path: str | Path) -> None:
    """All arrays of a frame and its scene spec in one .npz file."""
    np.savez_compressed(
        path,
        rgb=frame.rgb,
        depth_m=frame.depth_m,
        depth_clean_m=frame.depth_clean_m,
        instance_mask=frame.instance_mask,
        points=frame.points,
        colors=frame.colors,
        camera_matrix=frame.intrinsics.matrix,
        image_size=np.array([frame.intrinsics.width, frame.intrinsics.height]),
        boxes=frame.boxes_array(),
        categories=np.array([obj.category for obj in frame.objects], dtype=str),
        object_colors=np.array([obj.color for obj in frame.objects], dtype=str),
        support=np.array([-1 if obj.on is None else obj.on for obj in frame.objects], dtype=np.int32),
        visible_pixels=np.array([obj.visible_pixels for obj in frame.objects], dtype=np.int64),
        scene_json=np.array(json.dumps(frame.scene.to_dict())),
    )
