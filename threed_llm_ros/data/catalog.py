"""What the procedural scenes are made of: object categories, named colours, room types.

Sizes are real-world ranges in metres, given as (length along the object's heading,
width, height); the heading is the direction the object's front faces (a chair's seat
faces it, a bed's headboard is at the back). The categories cover the common indoor
classes of SUN RGB-D and ScanNet so a model trained on these scenes meets familiar
objects on a real robot.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping


@dataclass(frozen=True)
class CategorySpec:
    """One object category: size range, where it stands, and how it is placed."""

    name: str
    size_min: tuple[float, float, float]
    size_max: tuple[float, float, float]
    # "floor": stands on the floor; "top": rests on the top of a support.
    placement: str
    # Round footprint: the width is drawn equal to the length.
    round_footprint: bool = False
    # Its top can hold small objects.
    is_support: bool = False
    # Probability of standing with its back against a wall instead of free in the room.
    wall_affinity: float = 0.0
    # Heading relative to the wall's inward normal when against a wall (radians).
    wall_yaw_offset: float = 0.0


_HALF_TURN = 1.5707963267948966

CATEGORIES: Mapping[str, CategorySpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            CategorySpec("bed", (1.9, 0.9, 0.8), (2.2, 1.9, 1.2), "floor", wall_affinity=0.9),
            CategorySpec("chair", (0.45, 0.42, 0.8), (0.6, 0.55, 1.05), "floor"),
            CategorySpec("sofa", (0.8, 1.5, 0.75), (1.0, 2.4, 0.95), "floor", wall_affinity=0.7),
            CategorySpec("table", (0.7, 0.6, 0.7), (1.8, 1.0, 0.78), "floor", is_support=True),
            CategorySpec("desk", (0.55, 1.0, 0.72), (0.8, 1.7, 0.78), "floor", is_support=True, wall_affinity=0.6),
            CategorySpec("night stand", (0.35, 0.4, 0.45), (0.5, 0.6, 0.65), "floor", is_support=True, wall_affinity=0.7),
            CategorySpec("dresser", (0.45, 0.8, 0.75), (0.6, 1.6, 1.1), "floor", is_support=True, wall_affinity=0.8),
            CategorySpec("cabinet", (0.4, 0.5, 0.8), (0.6, 1.2, 1.9), "floor", is_support=True, wall_affinity=0.8),
            CategorySpec("bookshelf", (0.28, 0.6, 1.2), (0.4, 1.2, 2.0), "floor", wall_affinity=0.9),
            CategorySpec("toilet", (0.65, 0.36, 0.7), (0.78, 0.45, 0.85), "floor", wall_affinity=0.9),
            CategorySpec(
                "bathtub", (1.5, 0.7, 0.5), (1.8, 0.85, 0.6), "floor", wall_affinity=0.9, wall_yaw_offset=_HALF_TURN
            ),
            CategorySpec("trash can", (0.25, 0.25, 0.3), (0.4, 0.4, 0.6), "floor", round_footprint=True),
            CategorySpec("lamp", (0.2, 0.2, 0.35), (0.4, 0.4, 0.65), "top", round_footprint=True),
            CategorySpec("monitor", (0.15, 0.45, 0.35), (0.25, 0.7, 0.55), "top"),
            CategorySpec("box", (0.15, 0.15, 0.1), (0.5, 0.5, 0.4), "top"),
            CategorySpec("cup", (0.08, 0.08, 0.08), (0.12, 0.12, 0.12), "top", round_footprint=True),
            CategorySpec("bottle", (0.06, 0.06, 0.2), (0.09, 0.09, 0.32), "top", round_footprint=True),
            CategorySpec("book", (0.15, 0.2, 0.02), (0.25, 0.3, 0.06), "top"),
        )
    }
)

CATEGORY_NAMES: tuple[str, ...] = tuple(CATEGORIES)
FLOOR_CATEGORIES: tuple[str, ...] = tuple(name for name, spec in CATEGORIES.items() if spec.placement == "floor")
TOP_CATEGORIES: tuple[str, ...] = tuple(name for name, spec in CATEGORIES.items() if spec.placement == "top")
SUPPORT_CATEGORIES: tuple[str, ...] = tuple(name for name, spec in CATEGORIES.items() if spec.is_support)

# Object colours: names a person would use, with typical RGB values (0-255).
COLORS: Mapping[str, tuple[int, int, int]] = MappingProxyType(
    {
        "red": (200, 35, 35),
        "green": (45, 150, 60),
        "blue": (40, 75, 200),
        "yellow": (230, 200, 45),
        "white": (236, 236, 232),
        "black": (32, 32, 34),
        "brown": (120, 78, 42),
        "grey": (128, 128, 130),
        "orange": (238, 128, 32),
        "purple": (128, 52, 160),
        "pink": (235, 140, 175),
    }
)
COLOR_NAMES: tuple[str, ...] = tuple(COLORS)

# Colour names that real lighting and shadow turn into each other (value and saturation
# boundaries, hues next to each other). A named colour read as one of its neighbours still
# refers to the object; any other colour does not (``SceneFacts.matches(..., near=True)``).
NEAR_COLORS: Mapping[str, frozenset[str]] = MappingProxyType({
    name: frozenset(b if a == name else a for a, b in (
        ("white", "grey"), ("grey", "black"), ("red", "pink"), ("red", "brown"), ("red", "orange"),
        ("orange", "brown"), ("orange", "yellow"), ("yellow", "brown"), ("pink", "purple"), ("purple", "blue"),
    ) if name in (a, b))
    for name in COLOR_NAMES
})

# Room surfaces: pale walls and common floors, deliberately unlike the object colours.
WALL_COLORS: tuple[tuple[int, int, int], ...] = ((222, 214, 196), (205, 212, 215), (215, 222, 205), (226, 222, 214))
FLOOR_COLORS: tuple[tuple[int, int, int], ...] = ((164, 128, 92), (110, 84, 62), (150, 150, 146), (196, 186, 164))
CEILING_COLOR: tuple[int, int, int] = (242, 242, 238)


@dataclass(frozen=True)
class RoomType:
    """Which furniture and small objects a kind of room holds, with relative weights."""

    name: str
    furniture: Mapping[str, float]
    small_objects: Mapping[str, float]
    # Support categories one of which the room always gets, so small objects have a place.
    anchors: tuple[str, ...]
    furniture_count: tuple[int, int]
    small_object_count: tuple[int, int]


ROOM_TYPES: Mapping[str, RoomType] = MappingProxyType(
    {
        room.name: room
        for room in (
            RoomType(
                "bedroom",
                {"bed": 3, "night stand": 3, "dresser": 2, "chair": 1, "bookshelf": 1, "cabinet": 1, "trash can": 1},
                {"lamp": 3, "book": 2, "cup": 1, "bottle": 1, "box": 1},
                ("night stand", "dresser"),
                (3, 6),
                (2, 6),
            ),
            RoomType(
                "living room",
                {"sofa": 3, "table": 3, "chair": 2, "bookshelf": 2, "cabinet": 1, "trash can": 1},
                {"cup": 2, "bottle": 2, "book": 2, "lamp": 2, "box": 1, "monitor": 1},
                ("table",),
                (3, 7),
                (3, 8),
            ),
            RoomType(
                "office",
                {"desk": 3, "chair": 3, "bookshelf": 2, "cabinet": 2, "trash can": 2, "table": 1},
                {"monitor": 3, "cup": 2, "book": 2, "box": 1, "lamp": 1, "bottle": 1},
                ("desk",),
                (3, 7),
                (3, 8),
            ),
            RoomType(
                "bathroom",
                {"toilet": 3, "bathtub": 2, "cabinet": 2, "trash can": 2},
                {"bottle": 3, "cup": 2, "box": 1},
                ("cabinet",),
                (2, 4),
                (2, 5),
            ),
            RoomType(
                "dining room",
                {"table": 3, "chair": 4, "cabinet": 2, "dresser": 1, "trash can": 1},
                {"cup": 3, "bottle": 3, "box": 1, "lamp": 1, "book": 1},
                ("table",),
                (3, 7),
                (3, 8),
            ),
        )
    }
)
ROOM_TYPE_NAMES: tuple[str, ...] = tuple(ROOM_TYPES)
