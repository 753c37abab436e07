"""Random scenes: a room type's furniture on the floor in view of the camera, small objects on top,
and objects mostly hidden behind others left out."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from threed_llm_ros.data.catalog import (
    CATEGORIES,
    CEILING_COLOR,
    COLOR_NAMES,
    COLORS,
    FLOOR_COLORS,
    ROOM_TYPE_NAMES,
    ROOM_TYPES,
    WALL_COLORS,
    CategorySpec,
)
from threed_llm_ros.data.sim.render import Primitive, pixel_rectangle, ray_cast
from threed_llm_ros.data.sim.scene import CameraPose, Room, Scene, SceneObject
from threed_llm_ros.errors import ConfigError
from threed_llm_ros.geometry.boxes import wrap_angle
from threed_llm_ros.geometry.camera import CameraIntrinsics
from threed_llm_ros.geometry.frames import yaw_rotation

@dataclass(frozen=True)
class SceneConfig:
    """How random scenes are drawn (ranges are (min, max), lengths in metres)."""

    room_types: tuple[str, ...] = ROOM_TYPE_NAMES
    colors: tuple[str, ...] = COLOR_NAMES
    room_length_m: tuple[float, float] = (3.5, 6.5)
    room_width_m: tuple[float, float] = (3.5, 6.0)
    room_height_m: tuple[float, float] = (2.5, 3.0)
    camera_height_m: float = 1.2
    camera_yaw_jitter_deg: float = 15.0
    # Placement keeps objects inside this horizontal field of view and this far ahead.
    view_fov_deg: float = 60.0
    min_distance_m: float = 1.5
    clearance_m: float = 0.08
    placement_attempts: int = 60
    # Objects hidden behind others beyond this (visible share of their unoccluded image area,
    # judged at 160x120 through view_fov_deg) are left out; 0 keeps everything.
    min_visible_fraction: float = 0.25

    def __post_init__(self) -> None:
        for name in ("room_length_m", "room_width_m", "room_height_m"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ConfigError(name, f"range {low}..{high} is empty or not positive", "give 0 < min <= max")
        if not self.room_types or any(name not in ROOM_TYPES for name in self.room_types):
            raise ConfigError("room_types", f"{self.room_types} has unknown names", f"use names from {list(ROOM_TYPE_NAMES)}")
        if not self.colors or any(name not in COLORS for name in self.colors):
            raise ConfigError("colors", f"{self.colors} has unknown names", f"use names from {list(COLOR_NAMES)}")
        if not 0 < self.camera_height_m < self.room_height_m[0]:
            raise ConfigError(
                "camera_height_m", f"{self.camera_height_m} m is not inside the room",
                f"use a height between 0 and the lowest ceiling ({self.room_height_m[0]} m)",
            )
        if not 0 < self.view_fov_deg < 180:
            raise ConfigError("view_fov_deg", f"{self.view_fov_deg} is not in (0, 180)", "use a field of view in degrees")
        if not 0.0 <= self.min_visible_fraction <= 1.0:
            raise ConfigError("min_visible_fraction", f"{self.min_visible_fraction} is not in [0, 1]", "use a fraction")
        if self.placement_attempts < 1:
            raise ConfigError("placement_attempts", "must be >= 1", "use a positive number of attempts")


def _footprint_half_extents(length: float, width: float, yaw: float) -> tuple[float, float]:
    """Half extents of the axis-aligned rectangle around a yawed length × width footprint."""
    c, s = abs(math.cos(yaw)), abs(math.sin(yaw))
    return c * length / 2 + s * width / 2, s * length / 2 + c * width / 2


def footprints_overlap(a: SceneObject, b: SceneObject, clearance: float = 0.0) -> bool:
    """Whether the two objects' footprint rectangles come closer than ``clearance`` (separating-axis test)."""
    rectangles = []
    for obj in (a, b):
        rotation = yaw_rotation(obj.yaw)[:2, :2]
        half = np.array(obj.size[:2]) / 2 + clearance / 2
        corners = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]]) * half @ rotation.T + np.array(obj.position[:2])
        rectangles.append((corners, rotation))
    for _, rotation in rectangles:
        for axis in rotation.T:  # the two edge normals of each rectangle
            projections = [corners @ axis for corners, _ in rectangles]
            if projections[0].max() < projections[1].min() or projections[1].max() < projections[0].min():
                return False
    return True


def _weighted_choice(rng: np.random.Generator, weights: dict[str, float] | Any) -> str:
    names = list(weights)
    probabilities = np.array([weights[name] for name in names], dtype=np.float64)
    return names[int(rng.choice(len(names), p=probabilities / probabilities.sum()))]


def _draw_size(rng: np.random.Generator, spec: CategorySpec, max_height: float | None = None) -> tuple[float, float, float]:
    length = float(rng.uniform(spec.size_min[0], spec.size_max[0]))
    width = length if spec.round_footprint else float(rng.uniform(spec.size_min[1], spec.size_max[1]))
    top = spec.size_max[2] if max_height is None or max_height < spec.size_min[2] else min(spec.size_max[2], max_height)
    return length, width, float(rng.uniform(spec.size_min[2], top))


def _in_view(obj: SceneObject, camera: CameraPose, config: SceneConfig) -> bool:
    """Footprint entirely ahead of the camera and its centre inside the placement field of view."""
    corners = camera.world_to_camera(obj.world_box().corners()[:4])
    if corners[:, 0].min() < config.min_distance_m * 0.6:
        return False
    center = camera.world_to_camera(np.asarray(obj.world_box().center)[None])[0]
    bearing = math.atan2(center[1], center[0])
    return center[0] >= config.min_distance_m and abs(bearing) <= math.radians(config.view_fov_deg) / 2 * 0.9


def _place_on_floor(
    rng: np.random.Generator, category: str, color: str, size: tuple[float, float, float],
    room: Room, camera: CameraPose, placed: list[SceneObject], config: SceneConfig,
) -> SceneObject | None:
    """Rejection-sample a floor position (against a wall or free) that is in view and collision-free."""
    spec = CATEGORIES[category]
    gap = 0.02
    for _ in range(config.placement_attempts):
        if rng.random() < spec.wall_affinity:
            wall = int(rng.integers(3))  # 0: far wall (x = length), 1: left (y = width), 2: right (y = 0)
            inward = (math.pi, -math.pi / 2, math.pi / 2)[wall]
            yaw = float(wrap_angle(inward + spec.wall_yaw_offset))
            half_x, half_y = _footprint_half_extents(size[0], size[1], yaw)
            if wall == 0:
                x = room.length - half_x - gap
                y = float(rng.uniform(half_y + gap, room.width - half_y - gap)) if room.width > 2 * (half_y + gap) else -1.0
            else:
                x = float(rng.uniform(half_x + gap, room.length - half_x - gap)) if room.length > 2 * (half_x + gap) else -1.0
                y = room.width - half_y - gap if wall == 1 else half_y + gap
        else:
            yaw = float(rng.uniform(-math.pi, math.pi))
            half_x, half_y = _footprint_half_extents(size[0], size[1], yaw)
            margin = 0.1
            if room.length <= 2 * (half_x + margin) or room.width <= 2 * (half_y + margin):
                continue
            x = float(rng.uniform(half_x + margin, room.length - half_x - margin))
            y = float(rng.uniform(half_y + margin, room.width - half_y - margin))
        if x < 0 or y < 0:
            continue
        candidate = SceneObject(category, color, size, (x, y, 0.0), yaw)
        if not _in_view(candidate, camera, config):
            continue
        if any(other.on is None and footprints_overlap(candidate, other, config.clearance_m) for other in placed):
            continue
        return candidate
    return None


def _place_on_top(
    rng: np.random.Generator, category: str, color: str, size: tuple[float, float, float],
    support_index: int, objects: list[SceneObject], config: SceneConfig,
) -> SceneObject | None:
    """Rejection-sample a pose on the top of ``objects[support_index]``, clear of its other items."""
    support = objects[support_index]
    margin = 0.02
    for _ in range(max(4, config.placement_attempts // 4)):
        relative_yaw = float(rng.uniform(-math.pi, math.pi))
        half_x, half_y = _footprint_half_extents(size[0], size[1], relative_yaw)
        room_x, room_y = support.size[0] / 2 - half_x - margin, support.size[1] / 2 - half_y - margin
        if room_x < 0 or room_y < 0:
            continue
        local = np.array([rng.uniform(-room_x, room_x), rng.uniform(-room_y, room_y)])
        xy = yaw_rotation(support.yaw)[:2, :2] @ local + np.array(support.position[:2])
        candidate = SceneObject(
            category, color, size, (float(xy[0]), float(xy[1]), support.top),
            float(wrap_angle(support.yaw + relative_yaw)), support_index,
        )
        neighbours = [other for other in objects if other.on == support_index]
        if any(footprints_overlap(candidate, other, margin) for other in neighbours):
            continue
        return candidate
    return None


def generate_scene(seed: int, config: SceneConfig = SceneConfig()) -> Scene:
    """A random room with furniture and small objects on furniture tops, deterministic for ``seed``."""
    rng = np.random.default_rng(seed)
    room_type = ROOM_TYPES[config.room_types[int(rng.integers(len(config.room_types)))]]
    room = Room(
        float(rng.uniform(*config.room_length_m)),
        float(rng.uniform(*config.room_width_m)),
        float(rng.uniform(*config.room_height_m)),
        WALL_COLORS[int(rng.integers(len(WALL_COLORS)))],
        FLOOR_COLORS[int(rng.integers(len(FLOOR_COLORS)))],
        CEILING_COLOR,
    )
    camera = CameraPose(
        (float(rng.uniform(0.3, 0.8)), float(rng.uniform(0.35, 0.65) * room.width), config.camera_height_m),
        math.radians(float(rng.uniform(-config.camera_yaw_jitter_deg, config.camera_yaw_jitter_deg))),
    )
    # Visible tops: a support must be below the camera for small objects on it to be seen.
    max_support_height = config.camera_height_m - 0.2

    def pick_color() -> str:
        return config.colors[int(rng.integers(len(config.colors)))]

    objects: list[SceneObject] = []
    furniture_count = int(rng.integers(room_type.furniture_count[0], room_type.furniture_count[1] + 1))
    categories = [room_type.anchors[int(rng.integers(len(room_type.anchors)))]]
    categories += [_weighted_choice(rng, room_type.furniture) for _ in range(furniture_count - 1)]
    for position, category in enumerate(categories):
        size = _draw_size(rng, CATEGORIES[category], max_support_height if position == 0 else None)
        placed = _place_on_floor(rng, category, pick_color(), size, room, camera, objects, config)
        if placed is not None:
            objects.append(placed)

    supports = [
        index for index, obj in enumerate(objects)
        if CATEGORIES[obj.category].is_support and obj.top <= config.camera_height_m - 0.1
    ]
    small_count = int(rng.integers(room_type.small_object_count[0], room_type.small_object_count[1] + 1))
    if supports:
        areas = np.array([objects[index].size[0] * objects[index].size[1] for index in supports])
        for _ in range(small_count):
            category = _weighted_choice(rng, room_type.small_objects)
            size = _draw_size(rng, CATEGORIES[category])
            color = pick_color()
            support_index = supports[int(rng.choice(len(supports), p=areas / areas.sum()))]
            placed = _place_on_top(rng, category, color, size, support_index, objects, config)
            if placed is not None:
                objects.append(placed)
    scene = Scene(room, camera, tuple(objects), room_type.name)
    return _without_hidden_objects(scene, config) if config.min_visible_fraction > 0 else scene


def _without_hidden_objects(scene: Scene, config: SceneConfig) -> Scene:
    """Drop objects mostly hidden behind others (and whatever rests on a dropped object)."""
    preview = CameraIntrinsics.from_field_of_view(160, 120, config.view_fov_deg)
    mask = ray_cast(scene, preview).instance_mask
    visible = np.bincount(mask[mask >= 0], minlength=len(scene.objects))
    keep = []
    boxes = scene.boxes_in_camera()
    for index, obj in enumerate(scene.objects):
        # The projected bounding rectangle bounds the unoccluded area: no need to render alone.
        bounds = Primitive(False, index, np.asarray(boxes[index].center), np.asarray(obj.size) / 2,
                            boxes[index].yaw, np.zeros(3), 0)
        rectangle = pixel_rectangle(bounds, preview)
        if rectangle is not None:
            v0, v1, u0, u1 = rectangle
            if visible[index] >= config.min_visible_fraction * (v1 - v0) * (u1 - u0):
                keep.append(True)
                continue
        alone = int((ray_cast(replace(scene, objects=(replace(obj, on=None),)), preview).instance_mask == 0).sum())
        # Too small to judge at this resolution: keep.
        keep.append(alone < 4 or visible[index] >= config.min_visible_fraction * alone)
    for index, obj in enumerate(scene.objects):  # supports come before what rests on them
        if obj.on is not None and not keep[obj.on]:
            keep[index] = False
    new_index = np.cumsum(keep) - 1
    objects = tuple(
        replace(obj, on=None if obj.on is None else int(new_index[obj.on]))
        for obj, kept in zip(scene.objects, keep) if kept
    )
    return replace(scene, objects=objects)
