"""The simulator's scenes: room, level camera and objects, their frames and their JSON format.

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
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from threed_llm_ros.data.catalog import (
    CATEGORIES, CATEGORY_NAMES, CEILING_COLOR, COLOR_NAMES, COLORS, FLOOR_COLORS, WALL_COLORS,
)
from threed_llm_ros.errors import ConfigError
from threed_llm_ros.geometry.boxes import OrientedBox, wrap_angle
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
        raise SceneSpecError("scene", "must be a JSON object", "see the format in threed_llm_ros.data.sim.scene")
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
