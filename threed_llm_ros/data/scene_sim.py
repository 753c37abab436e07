"""A simulated RGB-D camera in procedural indoor scenes, with exact ground truth.

Scenes are rooms (floor, four walls, ceiling) holding furniture and small objects of
known category, colour, size and pose; small objects rest on furniture tops. A level
pinhole camera inside the room renders them by vectorised ray casting into an RGB
image, metric depth and an instance mask; a sensor model then adds Kinect-like depth
noise (sigma = k·z²), missing returns (random dropout, out of range, grazing angles)
and edge artefacts (flying pixels and dropout at depth discontinuities).

Frames
    world: the room's frame — x along the room's length from the wall behind the
        camera, y along its width, z up from the floor; origin at a floor corner.
    camera gravity frame: origin at the camera, x forward (the camera's heading),
        y left, z up. Ground-truth boxes are given here; ``from_gravity_frame(p, "-y")``
        turns them into the camera's optical frame (x right, y down, z forward), which
        is the frame of the depth image, the point cloud and the published messages.

Scene JSON (``load_scene`` / ``save_scene``; all lengths in metres)::

    {
      "format": "threed_llm_ros.scene/1",          # optional
      "room_type": "office",                        # optional, free text
      "room": {"size": [length_x, width_y, height_z],
               "wall_color": [r, g, b], "floor_color": [r, g, b],
               "ceiling_color": [r, g, b]},         # colours optional (0-255)
      "camera": {"position": [x, y, z], "yaw": 0.0},   # or "yaw_deg"; level camera
      "objects": [
        {"category": "table", "color": "brown", "size": [1.2, 0.8, 0.75],
         "position": [3.0, 2.0], "yaw_deg": 30},
        {"category": "cup", "color": "red", "size": [0.1, 0.1, 0.1],
         "position": [3.1, 2.1], "yaw": 0.5, "on": 0}
      ]
    }

``size`` is (length along the object's heading, width, height); ``position`` is the
centre of the object's footprint on the floor, [x, y] or [x, y, z_bottom]; without a
z the bottom is the floor, or the top of the object named by ``on`` (the index of an
earlier object that supports it). ``yaw`` (radians) or ``yaw_deg`` turns the heading
counter-clockwise from the world x axis; the camera's yaw does the same for its view
direction. ``category`` is one of ``catalog.CATEGORY_NAMES``, ``color`` one of
``catalog.COLOR_NAMES``. ``save_scene`` writes full-precision radians so a saved scene
re-renders bit for bit.

Command line: ``threed-llm sim --seed 3 --png preview.png --save frame.npz``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from threed_llm_ros.data.catalog import (
    CATEGORIES,
    CATEGORY_NAMES,
    CEILING_COLOR,
    COLOR_NAMES,
    COLORS,
    FLOOR_COLORS,
    ROOM_TYPE_NAMES,
    ROOM_TYPES,
    WALL_COLORS,
    CategorySpec,
)
from threed_llm_ros.data.shapes import Cuboid, Cylinder, build_shape
from threed_llm_ros.errors import ConfigError
from threed_llm_ros.geometry.boxes import OrientedBox, wrap_angle
from threed_llm_ros.geometry.camera import CameraIntrinsics, depth_to_points
from threed_llm_ros.geometry.frames import yaw_rotation

SCENE_FORMAT = "threed_llm_ros.scene/1"


class SceneSpecError(ConfigError):
    """A scene spec (JSON) is invalid; ``parameter`` is the path of the offending field."""


# --------------------------------------------------------------------------- scenes


@dataclass(frozen=True)
class Room:
    """An empty box-shaped room in the world frame, from (0, 0, 0) to (length, width, height)."""

    length: float
    width: float
    height: float
    wall_color: tuple[int, int, int] = WALL_COLORS[0]
    floor_color: tuple[int, int, int] = FLOOR_COLORS[0]
    ceiling_color: tuple[int, int, int] = CEILING_COLOR


@dataclass(frozen=True)
class CameraPose:
    """A level camera: position in the world frame and heading (yaw about +z, radians)."""

    position: tuple[float, float, float]
    yaw: float = 0.0

    def world_to_camera(self, points: np.ndarray) -> np.ndarray:
        """World points (N×3) in the camera gravity frame (x forward, y left, z up)."""
        return (np.asarray(points, dtype=np.float64) - np.asarray(self.position)) @ yaw_rotation(self.yaw)


@dataclass(frozen=True)
class SceneObject:
    """One object: category, colour name, size (length, width, height), footprint centre, yaw."""

    category: str
    color: str
    size: tuple[float, float, float]
    position: tuple[float, float, float]  # footprint centre at the object's bottom, world frame
    yaw: float = 0.0  # heading in the world frame, radians
    on: int | None = None  # index of the supporting object

    @property
    def top(self) -> float:
        """Height of the object's top above the floor."""
        return self.position[2] + self.size[2]

    def world_box(self) -> OrientedBox:
        """The object's bounding box in the world frame."""
        x, y, z = self.position
        return OrientedBox((x, y, z + self.size[2] / 2), tuple(self.size), float(self.yaw))


@dataclass(frozen=True)
class Scene:
    """A room, a camera in it and the objects; everything the renderer needs."""

    room: Room
    camera: CameraPose
    objects: tuple[SceneObject, ...]
    room_type: str = ""

    def boxes_in_camera(self) -> list[OrientedBox]:
        """Ground-truth boxes in the camera gravity frame (x forward, y left, z up)."""
        boxes = []
        for obj in self.objects:
            world = obj.world_box()
            center = self.camera.world_to_camera(np.asarray(world.center)[None])[0]
            yaw = float(wrap_angle(obj.yaw - self.camera.yaw))
            boxes.append(OrientedBox(tuple(center.tolist()), tuple(obj.size), yaw))
        return boxes

    def to_dict(self) -> dict[str, Any]:
        """The scene as a JSON-serialisable dict (the format in the module docstring)."""
        return {
            "format": SCENE_FORMAT,
            "room_type": self.room_type,
            "room": {
                "size": [self.room.length, self.room.width, self.room.height],
                "wall_color": list(self.room.wall_color),
                "floor_color": list(self.room.floor_color),
                "ceiling_color": list(self.room.ceiling_color),
            },
            "camera": {"position": list(self.camera.position), "yaw": self.camera.yaw},
            "objects": [
                {
                    "category": obj.category,
                    "color": obj.color,
                    "size": list(obj.size),
                    "position": list(obj.position),
                    "yaw": obj.yaw,
                    "on": obj.on,
                }
                for obj in self.objects
            ],
        }

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> "Scene":
        """Parse and validate a scene dict; raises SceneSpecError naming the bad field."""
        return _scene_from_dict(spec)


def save_scene(scene: Scene, path: str | Path) -> None:
    """Write a scene as JSON."""
    Path(path).write_text(json.dumps(scene.to_dict(), indent=2) + "\n", encoding="utf-8")


def load_scene(path: str | Path) -> Scene:
    """Read a scene JSON file; raises SceneSpecError for a missing file or a bad field."""
    path = Path(path)
    if not path.is_file():
        raise SceneSpecError("scene_spec", f"file {path} does not exist", "give the path of a scene JSON file")
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise SceneSpecError("scene_spec", f"{path} is not valid JSON ({error})", "fix the JSON syntax") from error
    return _scene_from_dict(spec)


def _number_list(value: Any, lengths: tuple[int, ...], field_path: str, *, positive: bool = False) -> list[float]:
    """Validate a list of finite numbers of one of the allowed lengths."""
    if not isinstance(value, (list, tuple)) or len(value) not in lengths:
        raise SceneSpecError(field_path, f"must be a list of {' or '.join(map(str, lengths))} numbers, got {value!r}",
                             "write it as a JSON list of numbers")
    numbers = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, (int, float)) or not math.isfinite(item):
            raise SceneSpecError(field_path, f"contains {item!r}, not a finite number", "use finite numbers")
        if positive and item <= 0:
            raise SceneSpecError(field_path, f"contains {item}, must be > 0", "use positive sizes in metres")
        numbers.append(float(item))
    return numbers


def _color_triplet(value: Any, field_path: str) -> tuple[int, int, int]:
    numbers = _number_list(value, (3,), field_path)
    if any(not 0 <= number <= 255 for number in numbers):
        raise SceneSpecError(field_path, f"{value!r} is outside 0-255", "give RGB values from 0 to 255")
    return tuple(int(round(number)) for number in numbers)  # type: ignore[return-value]


def _yaw(entry: dict[str, Any], field_path: str) -> float:
    if "yaw" in entry and "yaw_deg" in entry:
        raise SceneSpecError(f"{field_path}.yaw", "both 'yaw' and 'yaw_deg' are given", "keep only one of them")
    if "yaw_deg" in entry:
        return math.radians(_number_list([entry["yaw_deg"]], (1,), f"{field_path}.yaw_deg")[0])
    return _number_list([entry.get("yaw", 0.0)], (1,), f"{field_path}.yaw")[0]


def _scene_from_dict(spec: Any) -> Scene:
    if not isinstance(spec, dict):
        raise SceneSpecError("scene", "must be a JSON object", "see the format in threed_llm_ros.data.scene_sim")
    for key in ("room", "camera", "objects"):
        if key not in spec:
            raise SceneSpecError(key, "is missing", f"add a '{key}' entry (see the format in the module docstring)")
    room_spec, camera_spec, object_specs = spec["room"], spec["camera"], spec["objects"]
    if not isinstance(room_spec, dict) or "size" not in room_spec:
        raise SceneSpecError("room.size", "is missing", "give the room as {\"size\": [length, width, height]}")
    length, width, height = _number_list(room_spec["size"], (3,), "room.size", positive=True)
    room = Room(
        length,
        width,
        height,
        _color_triplet(room_spec.get("wall_color", WALL_COLORS[0]), "room.wall_color"),
        _color_triplet(room_spec.get("floor_color", FLOOR_COLORS[0]), "room.floor_color"),
        _color_triplet(room_spec.get("ceiling_color", CEILING_COLOR), "room.ceiling_color"),
    )
    if not isinstance(camera_spec, dict) or "position" not in camera_spec:
        raise SceneSpecError("camera.position", "is missing", "give the camera as {\"position\": [x, y, z], \"yaw\": 0}")
    camera_position = _number_list(camera_spec["position"], (3,), "camera.position")
    camera = CameraPose(tuple(camera_position), _yaw(camera_spec, "camera"))  # type: ignore[arg-type]
    if not isinstance(object_specs, list):
        raise SceneSpecError("objects", "must be a list", "give the objects as a JSON list")
    objects: list[SceneObject] = []
    for index, entry in enumerate(object_specs):
        path = f"objects[{index}]"
        if not isinstance(entry, dict):
            raise SceneSpecError(path, "must be a JSON object", "describe each object as {\"category\": ..., ...}")
        category = entry.get("category")
        if category not in CATEGORIES:
            raise SceneSpecError(f"{path}.category", f"unknown category {category!r}", f"use one of {list(CATEGORY_NAMES)}")
        color = entry.get("color")
        if color not in COLORS:
            raise SceneSpecError(f"{path}.color", f"unknown colour {color!r}", f"use one of {list(COLOR_NAMES)}")
        if "size" not in entry:
            raise SceneSpecError(f"{path}.size", "is missing", "give [length, width, height] in metres")
        size = _number_list(entry["size"], (3,), f"{path}.size", positive=True)
        if "position" not in entry:
            raise SceneSpecError(f"{path}.position", "is missing", "give the footprint centre as [x, y] or [x, y, z]")
        position = _number_list(entry["position"], (2, 3), f"{path}.position")
        support = entry.get("on")
        if support is not None:
            if isinstance(support, bool) or not isinstance(support, int) or not 0 <= support < index:
                raise SceneSpecError(
                    f"{path}.on", f"must be the index of an earlier object, got {support!r}",
                    "list the supporting object first and give its index (0-based)",
                )
        if len(position) == 2:
            position.append(objects[support].top if support is not None else 0.0)
        objects.append(SceneObject(category, color, tuple(size), tuple(position), _yaw(entry, path), support))  # type: ignore[arg-type]
    room_type = spec.get("room_type", "")
    return Scene(room, camera, tuple(objects), room_type if isinstance(room_type, str) else "")


# --------------------------------------------------------------------------- generation


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
        bounds = _Primitive(False, index, np.asarray(boxes[index].center), np.asarray(obj.size) / 2,
                            boxes[index].yaw, np.zeros(3), 0)
        rectangle = _pixel_rectangle(bounds, preview)
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


# --------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class _Primitive:
    """A primitive in the camera gravity frame, ready for ray casting."""

    is_cylinder: bool
    object_index: int
    center: np.ndarray  # box centre, or (x, y, middle z) of a cylinder
    half: np.ndarray  # box half extents, or (radius, radius, half height)
    yaw: float
    color: np.ndarray  # RGB 0-255 as float
    salt: int


def _scene_primitives(scene: Scene) -> list[_Primitive]:
    """All object primitives of the scene in the camera gravity frame."""
    primitives = []
    for index, obj in enumerate(scene.objects):
        bottom = scene.camera.world_to_camera(np.asarray(obj.position)[None])[0]
        yaw = obj.yaw - scene.camera.yaw
        rotation = yaw_rotation(yaw)
        base_color = np.asarray(COLORS[obj.color], dtype=np.float64)
        for part_index, part in enumerate(build_shape(obj.category, obj.size)):
            color = np.clip(base_color * part.shade, 0.0, 255.0)
            salt = (index * 7919 + part_index * 104729 + 17) & 0x7FFFFFFF
            if isinstance(part, Cuboid):
                center = bottom + rotation @ np.asarray(part.center)
                primitives.append(_Primitive(False, index, center, np.asarray(part.size) / 2, yaw, color, salt))
            else:
                assert isinstance(part, Cylinder)
                xy = bottom[:2] + rotation[:2, :2] @ np.asarray(part.center_xy)
                z_mid = bottom[2] + (part.z_min + part.z_max) / 2
                half = np.array([part.radius, part.radius, (part.z_max - part.z_min) / 2])
                primitives.append(_Primitive(True, index, np.array([xy[0], xy[1], z_mid]), half, yaw, color, salt))
    return primitives


def _slab_interval(
    center: np.ndarray, half: np.ndarray, yaw: float, ray_y: np.ndarray, ray_z: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Entry and exit ray parameters of an oriented box for rays (1, ray_y[col], ray_z[row]) from the origin.

    The camera is level, so the x/y slabs depend only on the column and the z slab only on
    the row: the work is a few 1-D operations and two full-size ones.
    """
    c, s = math.cos(yaw), math.sin(yaw)
    origin = -np.array([c * center[0] + s * center[1], -s * center[0] + c * center[1], center[2]])
    direction_x = c + s * ray_y
    direction_y = -s + c * ray_y
    with np.errstate(divide="ignore", invalid="ignore"):
        tx = ((-half[0] - origin[0]) / direction_x, (half[0] - origin[0]) / direction_x)
        ty = ((-half[1] - origin[1]) / direction_y, (half[1] - origin[1]) / direction_y)
        tz = ((-half[2] - origin[2]) / ray_z, (half[2] - origin[2]) / ray_z)
    near_xy = np.maximum(np.minimum(*tx), np.minimum(*ty))
    far_xy = np.minimum(np.maximum(*tx), np.maximum(*ty))
    near = np.maximum(near_xy[None, :], np.minimum(*tz)[:, None])
    far = np.minimum(far_xy[None, :], np.maximum(*tz)[:, None])
    return near, far


def _cylinder_hits(primitive: _Primitive, ray_y: np.ndarray, ray_z: np.ndarray) -> np.ndarray:
    """Nearest positive hit parameter (inf for a miss) of a vertical cylinder."""
    cx, cy, cz = primitive.center
    radius, half_height = primitive.half[0], primitive.half[2]
    z_min, z_max = cz - half_height, cz + half_height
    a = 1.0 + ray_y * ray_y
    b = cx + cy * ray_y
    discriminant = b * b - a * (cx * cx + cy * cy - radius * radius)
    t_side = (b - np.sqrt(np.maximum(discriminant, 0.0))) / a
    side_ok_columns = (discriminant >= 0) & (t_side > 1e-6)
    z_side = t_side[None, :] * ray_z[:, None]
    t = np.where(side_ok_columns[None, :] & (z_side >= z_min) & (z_side <= z_max), t_side[None, :], np.inf)
    # The one cap that faces the camera (none when the camera is level with the side).
    cap_z = z_max if z_max < 0 else (z_min if z_min > 0 else None)
    if cap_z is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            t_cap = cap_z / ray_z
            offset_x = t_cap[:, None] - cx
            offset_y = t_cap[:, None] * ray_y[None, :] - cy
            cap_ok = (t_cap > 1e-6)[:, None] & (offset_x * offset_x + offset_y * offset_y <= radius * radius)
        t = np.minimum(t, np.where(cap_ok, t_cap[:, None], np.inf))
    return t


def _primitive_hits(primitive: _Primitive, ray_y: np.ndarray, ray_z: np.ndarray) -> np.ndarray:
    if primitive.is_cylinder:
        return _cylinder_hits(primitive, ray_y, ray_z)
    near, far = _slab_interval(primitive.center, primitive.half, primitive.yaw, ray_y, ray_z)
    return np.where((near <= far) & (near > 1e-6), near, np.inf)


def _pixel_rectangle(primitive: _Primitive, intrinsics: CameraIntrinsics) -> tuple[int, int, int, int] | None:
    """Rows/columns (v0, v1, u0, u1) that can see the primitive; None if it is behind the camera."""
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)
    half = primitive.half
    corners = (signs * half) @ yaw_rotation(0.0 if primitive.is_cylinder else primitive.yaw).T + primitive.center
    forward = corners[:, 0]
    if forward.max() <= 1e-6:
        return None
    if forward.min() <= 1e-3:
        return 0, intrinsics.height, 0, intrinsics.width
    u = intrinsics.cx - intrinsics.fx * corners[:, 1] / forward
    v = intrinsics.cy - intrinsics.fy * corners[:, 2] / forward
    u0, u1 = max(int(math.floor(u.min())) - 1, 0), min(int(math.ceil(u.max())) + 2, intrinsics.width)
    v0, v1 = max(int(math.floor(v.min())) - 1, 0), min(int(math.ceil(v.max())) + 2, intrinsics.height)
    if u0 >= u1 or v0 >= v1:
        return None
    return v0, v1, u0, u1


def _hash_noise(cells: np.ndarray, salt: int) -> np.ndarray:
    """Deterministic pseudo-random values in [0, 1) for integer 3-D cells (N×3)."""
    h = (cells[:, 0] * 73856093) ^ (cells[:, 1] * 19349663) ^ (cells[:, 2] * 83492791) ^ salt
    h = h & 0xFFFFFFFF
    h = ((h ^ (h >> 16)) * 0x45D9F3B) & 0xFFFFFFFF
    h = ((h ^ (h >> 16)) * 0x45D9F3B) & 0xFFFFFFFF
    h = h ^ (h >> 16)
    return h.astype(np.float64) / 4294967296.0


@dataclass
class RayCast:
    """The noise-free render: what a perfect sensor sees."""

    intrinsics: CameraIntrinsics
    depth_m: np.ndarray  # H×W float32, optical z of the nearest surface (always hit: the room is closed)
    color: np.ndarray  # H×W×3 float32, shaded colour 0-255
    instance_mask: np.ndarray  # H×W int32, object index or -1 for room structure
    incidence_cos: np.ndarray  # H×W float32, |cos| of the angle between the ray and the surface normal


# Light from above and a little to the side, in the world frame; plus a camera headlight.
_LIGHT_DIRECTION = np.array([0.35, -0.25, 1.0]) / np.linalg.norm([0.35, -0.25, 1.0])
_AMBIENT, _DIFFUSE, _HEADLIGHT = 0.3, 0.45, 0.35
_TEXTURE_CELL_M, _OBJECT_TEXTURE, _ROOM_TEXTURE = 0.03, 0.06, 0.025


def ray_cast(scene: Scene, intrinsics: CameraIntrinsics) -> RayCast:
    """Render the scene with a perfect pinhole sensor: colour, depth, instance mask."""
    height, width = intrinsics.height, intrinsics.width
    # Gravity-frame ray directions (1, ray_y, ray_z); the ray parameter is the optical depth.
    ray_y = -(np.arange(width, dtype=np.float64) - intrinsics.cx) / intrinsics.fx
    ray_z = -(np.arange(height, dtype=np.float64) - intrinsics.cy) / intrinsics.fy

    room = scene.room
    room_center = scene.camera.world_to_camera(np.array([[room.length / 2, room.width / 2, room.height / 2]]))[0]
    room_half = np.array([room.length, room.width, room.height]) / 2
    room_yaw = -scene.camera.yaw
    _, room_exit = _slab_interval(room_center, room_half, room_yaw, ray_y, ray_z)
    best_t = np.where(np.isfinite(room_exit) & (room_exit > 0), room_exit, np.inf)
    best_id = np.full((height, width), -1, dtype=np.int32)

    primitives = _scene_primitives(scene)
    rectangles = [_pixel_rectangle(primitive, intrinsics) for primitive in primitives]
    for index, (primitive, rectangle) in enumerate(zip(primitives, rectangles)):
        if rectangle is None:
            continue
        v0, v1, u0, u1 = rectangle
        t = _primitive_hits(primitive, ray_y[u0:u1], ray_z[v0:v1])
        region_t = best_t[v0:v1, u0:u1]
        closer = t < region_t
        region_t[closer] = t[closer]
        best_id[v0:v1, u0:u1][closer] = index

    color = np.zeros((height * width, 3), dtype=np.float32)
    incidence = np.zeros(height * width, dtype=np.float32)
    flat_t = best_t.ravel()
    light = _LIGHT_DIRECTION @ yaw_rotation(scene.camera.yaw)  # world → camera gravity frame
    # Per-pixel work below is written component by component: no BLAS calls, whose thread
    # pools stall on a loaded machine.

    def hit_points(pixels: np.ndarray, center: np.ndarray, yaw: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Hit points of the given flat pixel indices in a frame centred at ``center`` turned by ``yaw``."""
        t = flat_t[pixels]
        rows, columns = np.divmod(pixels, width)
        x, y, z = t - center[0], t * ray_y[columns] - center[1], t * ray_z[rows] - center[2]
        c, s = math.cos(yaw), math.sin(yaw)
        return c * x + s * y, -s * x + c * y, z

    def box_normals(local: tuple[np.ndarray, ...], half: np.ndarray, yaw: float, inward: bool) -> tuple[np.ndarray, ...]:
        """Normals (camera gravity frame) of the box faces the local points lie on; also the face axis and side."""
        ratios = np.stack([np.abs(component) / extent for component, extent in zip(local, half)])
        axis = np.argmax(ratios, axis=0)
        side = np.sign(np.choose(axis, local))
        outward = -side if inward else side
        nx, ny, nz = ((axis == index) * outward for index in range(3))
        c, s = math.cos(yaw), math.sin(yaw)
        return c * nx - s * ny, s * nx + c * ny, nz, axis, side

    def shade(pixels: np.ndarray, normals: tuple[np.ndarray, ...], base: np.ndarray, texture: np.ndarray) -> None:
        rows, columns = np.divmod(pixels, width)
        dy, dz = ray_y[columns], ray_z[rows]
        facing = -(normals[0] + normals[1] * dy + normals[2] * dz) / np.sqrt(1.0 + dy * dy + dz * dz)
        lambert = np.maximum(normals[0] * light[0] + normals[1] * light[1] + normals[2] * light[2], 0.0)
        intensity = _AMBIENT + _DIFFUSE * lambert + _HEADLIGHT * np.maximum(facing, 0.0)
        color[pixels] = np.clip(base * (intensity * texture)[:, None], 0.0, 255.0)
        incidence[pixels] = np.abs(facing)

    def texture_noise(x: np.ndarray, y: np.ndarray, z: np.ndarray, cell: float, amplitude: float, salt: int) -> np.ndarray:
        cells = np.floor(np.stack((x, y, z), axis=1) / cell).astype(np.int64)
        return 1.0 + amplitude * (2.0 * _hash_noise(cells, salt) - 1.0)

    for index, (primitive, rectangle) in enumerate(zip(primitives, rectangles)):
        if rectangle is None:
            continue
        v0, v1, u0, u1 = rectangle
        rows, columns = np.nonzero(best_id[v0:v1, u0:u1] == index)
        if rows.size == 0:
            continue
        pixels = (rows + v0) * width + (columns + u0)
        if primitive.is_cylinder:
            x, y, z = hit_points(pixels, primitive.center, 0.0)
            radial = np.hypot(x, y)
            on_cap = np.abs(z) / primitive.half[2] > radial / primitive.half[0]
            safe_radial = np.maximum(radial, 1e-12)
            normals = (np.where(on_cap, 0.0, x / safe_radial), np.where(on_cap, 0.0, y / safe_radial),
                       np.where(on_cap, np.sign(z), 0.0))
            c, s = math.cos(primitive.yaw), math.sin(primitive.yaw)
            texture = texture_noise(c * x + s * y, -s * x + c * y, z, _TEXTURE_CELL_M, _OBJECT_TEXTURE, primitive.salt)
        else:
            local = hit_points(pixels, primitive.center, primitive.yaw)
            normals = box_normals(local, primitive.half, primitive.yaw, inward=False)[:3]
            texture = texture_noise(*local, _TEXTURE_CELL_M, _OBJECT_TEXTURE, primitive.salt)
        shade(pixels, normals, primitive.color, texture)

    pixels = np.flatnonzero(best_id == -1)
    if pixels.size:
        local = hit_points(pixels, room_center, room_yaw)
        nx, ny, nz, axis, side = box_normals(local, room_half, room_yaw, inward=True)  # seen from inside
        surface = np.where(axis == 2, np.where(side < 0, 0, 1), 2)  # floor, ceiling, wall
        palette = np.array([room.floor_color, room.ceiling_color, room.wall_color], dtype=np.float64)
        texture = texture_noise(*local, 2 * _TEXTURE_CELL_M, _ROOM_TEXTURE, 991)
        shade(pixels, (nx, ny, nz), palette[surface], texture)
    color = color.reshape(height, width, 3)
    incidence = incidence.reshape(height, width)

    object_of_primitive = np.array([primitive.object_index for primitive in primitives] + [-1], dtype=np.int32)
    return RayCast(
        intrinsics=intrinsics,
        depth_m=best_t.astype(np.float32),
        color=color,
        instance_mask=object_of_primitive[best_id],
        incidence_cos=incidence,
    )


# --------------------------------------------------------------------------- sensor model


@dataclass(frozen=True)
class SensorConfig:
    """Depth-camera effects; ``enabled=False`` gives a perfect sensor (depth = clean depth)."""

    enabled: bool = True
    depth_noise_coefficient: float = 0.0015  # sigma = k·z² (1/m), Kinect-like
    dropout_probability: float = 0.01  # random missing returns
    min_range_m: float = 0.2
    max_range_m: float = 8.0
    grazing_angle_deg: float = 85.0  # no return where the ray meets the surface flatter than this; 90 = off
    edge_threshold_m: float = 0.1  # depth jump that counts as a discontinuity
    edge_dropout_probability: float = 0.3
    flying_pixel_probability: float = 0.3  # edge pixels that get a depth between foreground and background
    rgb_noise_std: float = 2.0  # Gaussian colour noise, 0-255 units

    def __post_init__(self) -> None:
        for name in ("depth_noise_coefficient", "rgb_noise_std", "min_range_m", "edge_threshold_m"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(name, f"{value} is negative or not finite", "use a value >= 0")
        for name in ("dropout_probability", "edge_dropout_probability", "flying_pixel_probability"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(name, f"{value} is not a probability", "use a value between 0 and 1")
        if self.edge_dropout_probability + self.flying_pixel_probability > 1.0:
            raise ConfigError(
                "flying_pixel_probability", "edge dropout and flying-pixel probabilities add up to more than 1",
                "keep edge_dropout_probability + flying_pixel_probability <= 1",
            )
        if not self.max_range_m > self.min_range_m:
            raise ConfigError("max_range_m", f"{self.max_range_m} is not above min_range_m {self.min_range_m}",
                              "use max_range_m > min_range_m")
        if not 0.0 < self.grazing_angle_deg <= 90.0:
            raise ConfigError("grazing_angle_deg", f"{self.grazing_angle_deg} is not in (0, 90]", "use degrees in (0, 90]")


def _neighbourhood_min_max(depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel min and max of the 3×3 neighbourhood (edges replicated)."""
    padded = np.pad(depth, 1, mode="edge")
    height, width = depth.shape
    shifted = [padded[dv:dv + height, du:du + width] for dv in range(3) for du in range(3)]
    return np.minimum.reduce(shifted), np.maximum.reduce(shifted)


def apply_sensor_model(
    cast: RayCast, sensor: SensorConfig, seed: int | Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """The sensor's RGB (H×W×3 uint8) and depth (H×W float32 metres, NaN = no return).

    All random fields are drawn whatever the switches, so turning one effect off leaves
    the others' samples unchanged.
    """
    rng = np.random.default_rng(seed)
    shape = cast.depth_m.shape
    gaussian = rng.standard_normal(shape, dtype=np.float32)
    dropout_draw = rng.random(shape, dtype=np.float32)
    edge_draw = rng.random(shape, dtype=np.float32)
    flying_draw = rng.random(shape, dtype=np.float32)
    color_noise = rng.standard_normal((*shape, 3), dtype=np.float32)
    if not sensor.enabled:
        return np.round(cast.color).astype(np.uint8), cast.depth_m.copy()

    clean = cast.depth_m
    depth = clean + gaussian * np.float32(sensor.depth_noise_coefficient) * clean * clean
    low, high = _neighbourhood_min_max(clean)
    edge = (high - low) > sensor.edge_threshold_m
    flying = edge & (edge_draw < sensor.flying_pixel_probability)
    edge_dropout = edge & ~flying & (edge_draw < sensor.flying_pixel_probability + sensor.edge_dropout_probability)
    depth = np.where(flying, low + flying_draw * (high - low), depth)
    missing = (
        edge_dropout
        | (dropout_draw < sensor.dropout_probability)
        | (cast.incidence_cos < np.float32(math.cos(math.radians(sensor.grazing_angle_deg))))
        | (depth < sensor.min_range_m)
        | (depth > sensor.max_range_m)
    )
    depth = np.where(missing, np.float32(np.nan), depth).astype(np.float32)
    rgb = np.clip(np.round(cast.color + color_noise * np.float32(sensor.rgb_noise_std)), 0, 255).astype(np.uint8)
    return rgb, depth


# --------------------------------------------------------------------------- frames


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


# --------------------------------------------------------------------------- command line


def _mask_preview(mask: np.ndarray, scene: Scene) -> np.ndarray:
    """Instance mask with each object in its own colour; room structure dark grey."""
    palette = np.array([COLORS[obj.color] for obj in scene.objects] + [(40, 40, 40)], dtype=np.uint8)
    return palette[mask]


def preview_figure(frame: RenderedFrame) -> Any:
    """A matplotlib figure: the colour image, the sensor depth (with a metre scale) and the instance mask
    side by side, each panel titled."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    height, width = frame.depth_m.shape
    figure = Figure(figsize=(15, 4.2 * height / width + 0.8), constrained_layout=True)
    axes = figure.subplots(1, 3)
    axes[0].imshow(frame.rgb)
    axes[0].set_title(f"colour image ({width}×{height})")
    depth = np.ma.masked_invalid(frame.depth_m)
    colour_map = matplotlib.colormaps["viridis"].with_extremes(bad="black")
    shown = axes[1].imshow(depth, cmap=colour_map, vmin=0.0, vmax=float(np.nanmax(frame.depth_clean_m)))
    axes[1].set_title("sensor depth (black: no return)")
    figure.colorbar(shown, ax=axes[1], label="depth (m)", shrink=0.9)
    axes[2].imshow(_mask_preview(frame.instance_mask, frame.scene))
    axes[2].set_title(f"instance mask ({len(frame.objects)} objects; room: grey)")
    for panel in axes:
        panel.set_axis_off()
    return figure


def save_preview(frame: RenderedFrame, path: str | Path) -> None:
    """The :func:`preview_figure` as a PNG."""
    preview_figure(frame).savefig(path, dpi=100)


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


def summary(frame: RenderedFrame) -> str:
    """A human-readable table of the frame: room, camera, objects and their boxes, sizes."""
    scene = frame.scene
    lines = [
        f"room: {scene.room_type or 'custom'} {scene.room.length:.2f} x {scene.room.width:.2f} x {scene.room.height:.2f} m; "
        f"camera at ({', '.join(f'{value:.2f}' for value in scene.camera.position)}) yaw {math.degrees(scene.camera.yaw):+.1f} deg",
        f"image: {frame.intrinsics.width}x{frame.intrinsics.height}, fx={frame.intrinsics.fx:.1f} fy={frame.intrinsics.fy:.1f}; "
        f"valid depth {np.isfinite(frame.depth_m).mean():.1%}; cloud {len(frame.points)} points",
        f"{len(frame.objects)} objects (boxes in the camera gravity frame: x forward, y left, z up):",
        f"  {'#':>2}  {'label':22s} {'on':>3}  {'center x,y,z (m)':>22}  {'size l,w,h (m)':>18}  {'yaw':>6}  {'pixels':>7}",
    ]
    for obj in frame.objects:
        center = ",".join(f"{value:+.2f}" for value in obj.box.center)
        size = ",".join(f"{value:.2f}" for value in obj.box.size)
        on = "-" if obj.on is None else str(obj.on)
        lines.append(
            f"  {obj.index:>2}  {obj.label:22s} {on:>3}  {center:>22}  {size:>18}  "
            f"{math.degrees(obj.box.yaw):+6.0f}  {obj.visible_pixels:>7}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``threed-llm sim``: render a scene for a seed or a JSON spec and print or save it."""
    parser = argparse.ArgumentParser(prog="threed-llm sim", description="Render a simulated RGB-D frame.")
    parser.add_argument("--seed", type=int, default=0, help="scene and noise seed (default 0)")
    parser.add_argument("--spec", type=Path, help="render this scene JSON instead of a random scene")
    parser.add_argument("--room-type", choices=ROOM_TYPE_NAMES, help="random scenes of this room type only")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--fov", type=float, default=60.0, help="horizontal field of view in degrees")
    parser.add_argument("--camera-height", type=float, default=1.2, help="camera height above the floor (m)")
    parser.add_argument("--no-noise", action="store_true", help="perfect sensor (no noise, dropout or edge effects)")
    parser.add_argument("--save", type=Path, help="write all arrays to this .npz")
    parser.add_argument("--png", type=Path, help="write an RGB | depth | mask preview PNG")
    parser.add_argument("--save-spec", type=Path, help="write the scene as JSON (to edit and re-render)")
    arguments = parser.parse_args(argv)
    try:
        if arguments.width <= 0 or arguments.height <= 0:
            raise ConfigError("--width/--height", f"{arguments.width}x{arguments.height} is empty", "use positive sizes")
        if not 0 < arguments.fov < 180:
            raise ConfigError("--fov", f"{arguments.fov} is not in (0, 180)", "use degrees between 0 and 180")
        intrinsics = CameraIntrinsics.from_field_of_view(arguments.width, arguments.height, arguments.fov)
        if arguments.spec is not None:
            scene = load_scene(arguments.spec)
        else:
            config = SceneConfig(camera_height_m=arguments.camera_height)
            if arguments.room_type:
                config = replace(config, room_types=(arguments.room_type,))
            scene = generate_scene(arguments.seed, config)
        sensor = SensorConfig(enabled=not arguments.no_noise)
        started = time.perf_counter()
        frame = render(scene, intrinsics, sensor, arguments.seed)
        elapsed = time.perf_counter() - started
    except ConfigError as error:
        print(f"threed-llm sim: {error}", file=sys.stderr)
        return 2
    print(summary(frame))
    print(f"rendered in {elapsed * 1000:.0f} ms")
    if arguments.save:
        save_frame(frame, arguments.save)
        print(f"wrote {arguments.save}")
    if arguments.png:
        save_preview(frame, arguments.png)
        print(f"wrote {arguments.png}")
    if arguments.save_spec:
        save_scene(scene, arguments.save_spec)
        print(f"wrote {arguments.save_spec}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
