"""Object shapes as unions of simple primitives, built from a category and a size.

Each builder returns primitives in the object's own frame: origin at the centre of the
footprint on the floor (or on the supporting top), x along the heading (the object's
front), y to its left, z up. Every primitive lies inside the object's bounding box
(length × width × height centred on the origin horizontally, z from 0 to height), so
the ground-truth box is exactly the box the renderer fills. Builders are deterministic
functions of the size, so a scene spec re-renders identically.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union


@dataclass(frozen=True)
class Cuboid:
    """An axis-aligned box in the object frame; ``shade`` scales the object's colour."""

    center: tuple[float, float, float]
    size: tuple[float, float, float]
    shade: float = 1.0


@dataclass(frozen=True)
class Cylinder:
    """A vertical cylinder in the object frame, from ``z_min`` to ``z_max``."""

    center_xy: tuple[float, float]
    radius: float
    z_min: float
    z_max: float
    shade: float = 1.0


Primitive = Union[Cuboid, Cylinder]


def _slab(x0: float, x1: float, y0: float, y1: float, z0: float, z1: float, shade: float = 1.0) -> Cuboid:
    """A cuboid from its extents (min/max per axis)."""
    return Cuboid(((x0 + x1) / 2, (y0 + y1) / 2, (z0 + z1) / 2), (x1 - x0, y1 - y0, z1 - z0), shade)


def _legs(length: float, width: float, height: float, thickness: float, inset: float, shade: float) -> list[Cuboid]:
    """Four legs from the floor to ``height`` at the corners of a length × width footprint."""
    x = length / 2 - inset - thickness / 2
    y = width / 2 - inset - thickness / 2
    return [Cuboid((sx * x, sy * y, height / 2), (thickness, thickness, height), shade) for sx in (-1, 1) for sy in (-1, 1)]


def _bed(l: float, w: float, h: float) -> list[Primitive]:
    board = min(0.08, 0.1 * l)
    mattress_top = min(0.55, 0.55 * h)
    pillow = min(0.12, 0.5 * (h - mattress_top))
    back = -l / 2
    return [
        _slab(back, back + board, -w / 2, w / 2, 0.0, h, 0.75),
        _slab(back + board, l / 2, -w / 2, w / 2, 0.0, mattress_top, 1.0),
        _slab(back + board + 0.05, back + board + 0.45, -0.4 * w, 0.4 * w, mattress_top, mattress_top + pillow, 1.15),
    ]


def _chair(l: float, w: float, h: float) -> list[Primitive]:
    seat_top = min(0.47, 0.5 * h)
    seat = 0.05
    back = min(0.06, 0.15 * l)
    parts: list[Primitive] = _legs(l, w, seat_top - seat, 0.04, 0.01, 0.7)
    parts.append(_slab(-l / 2, l / 2, -w / 2, w / 2, seat_top - seat, seat_top, 1.0))
    parts.append(_slab(-l / 2, -l / 2 + back, -w / 2, w / 2, seat_top, h, 0.9))
    return parts


def _sofa(l: float, w: float, h: float) -> list[Primitive]:
    seat = min(0.45, 0.55 * h)
    back = min(0.22, 0.25 * l)
    arm = min(0.18, 0.12 * w)
    arm_top = seat + 0.45 * (h - seat)
    return [
        _slab(-l / 2, l / 2, -w / 2, w / 2, 0.0, seat, 1.0),
        _slab(-l / 2, -l / 2 + back, -w / 2, w / 2, seat, h, 0.9),
        _slab(-l / 2 + back, l / 2, -w / 2, -w / 2 + arm, seat, arm_top, 0.85),
        _slab(-l / 2 + back, l / 2, w / 2 - arm, w / 2, seat, arm_top, 0.85),
    ]


def _table(l: float, w: float, h: float) -> list[Primitive]:
    top = min(0.04, 0.1 * h)
    return [_slab(-l / 2, l / 2, -w / 2, w / 2, h - top, h, 1.0), *_legs(l, w, h - top, 0.05, 0.04, 0.75)]


def _desk(l: float, w: float, h: float) -> list[Primitive]:
    top = min(0.03, 0.1 * h)
    panel = 0.03
    drawers = min(0.4, 0.35 * w)
    return [
        _slab(-l / 2, l / 2, -w / 2, w / 2, h - top, h, 1.0),
        _slab(-l / 2, l / 2, -w / 2, -w / 2 + panel, 0.0, h - top, 0.85),
        _slab(-l / 2, l / 2, w / 2 - drawers, w / 2, 0.0, h - top, 0.85),
        _slab(-l / 2, -l / 2 + 0.02, -w / 2 + panel, w / 2 - drawers, 0.45 * h, h - top, 0.7),
    ]


def _chest(l: float, w: float, h: float, drawer_count: int) -> list[Primitive]:
    """A body with a top slab and drawer fronts: night stand, dresser."""
    top = min(0.03, 0.1 * h)
    plinth = min(0.06, 0.1 * h)
    front = l / 2 - 0.02
    parts: list[Primitive] = [
        _slab(-l / 2, front, -w / 2 + 0.01, w / 2 - 0.01, 0.0, h - top, 0.9),
        _slab(-l / 2, l / 2, -w / 2, w / 2, h - top, h, 1.0),
    ]
    pitch = (h - top - plinth) / drawer_count
    for index in range(drawer_count):
        z0 = plinth + index * pitch + 0.01
        parts.append(_slab(front, front + 0.015, -w / 2 + 0.03, w / 2 - 0.03, z0, z0 + pitch - 0.02, 1.1))
    return parts


def _night_stand(l: float, w: float, h: float) -> list[Primitive]:
    return _chest(l, w, h, 2)


def _dresser(l: float, w: float, h: float) -> list[Primitive]:
    return _chest(l, w, h, 3 if h < 0.95 else 4)


def _cabinet(l: float, w: float, h: float) -> list[Primitive]:
    top = min(0.03, 0.05 * h)
    plinth = min(0.08, 0.1 * h)
    front = l / 2 - 0.02
    gap = 0.01
    return [
        _slab(-l / 2, front, -w / 2 + 0.01, w / 2 - 0.01, 0.0, h - top, 0.85),
        _slab(-l / 2, l / 2, -w / 2, w / 2, h - top, h, 1.0),
        _slab(front, front + 0.018, -w / 2 + 0.02, -gap, plinth, h - top - 0.01, 1.1),
        _slab(front, front + 0.018, gap, w / 2 - 0.02, plinth, h - top - 0.01, 1.1),
    ]


def _bookshelf(l: float, w: float, h: float) -> list[Primitive]:
    board = 0.025
    parts: list[Primitive] = [
        _slab(-l / 2, -l / 2 + board, -w / 2, w / 2, 0.0, h, 0.8),
        _slab(-l / 2, l / 2, -w / 2, -w / 2 + board, 0.0, h, 1.0),
        _slab(-l / 2, l / 2, w / 2 - board, w / 2, 0.0, h, 1.0),
        _slab(-l / 2, l / 2, -w / 2, w / 2, h - board, h, 1.0),
        _slab(-l / 2, l / 2, -w / 2 + board, w / 2 - board, 0.0, 0.06, 1.0),
    ]
    shelf_count = max(1, int(h / 0.35) - 1)
    pitch = (h - 0.06 - board) / (shelf_count + 1)
    for index in range(1, shelf_count + 1):
        z = 0.06 + index * pitch
        parts.append(_slab(-l / 2 + board, l / 2, -w / 2 + board, w / 2 - board, z - board / 2, z + board / 2, 1.0))
    return parts


def _toilet(l: float, w: float, h: float) -> list[Primitive]:
    tank = min(0.2, 0.35 * l)
    seat = min(0.42, 0.55 * h)
    radius = min(w / 2, (l - tank) / 2 + 0.05, l / 2)
    bowl_x = l / 2 - radius
    return [
        _slab(-l / 2, -l / 2 + tank, -w / 2, w / 2, seat * 0.85, h, 1.0),
        _slab(-l / 2 + 0.05, bowl_x, -0.3 * w, 0.3 * w, 0.0, seat * 0.85, 0.95),
        Cylinder((bowl_x, 0.0), radius, 0.0, seat - 0.03, 1.0),
        Cylinder((bowl_x, 0.0), radius, seat - 0.03, seat, 1.1),
    ]


def _bathtub(l: float, w: float, h: float) -> list[Primitive]:
    rim = min(0.08, 0.1 * w)
    return [
        _slab(-l / 2, l / 2, -w / 2, w / 2, 0.0, min(0.12, 0.3 * h), 0.9),
        _slab(-l / 2, -l / 2 + rim, -w / 2, w / 2, 0.0, h, 1.0),
        _slab(l / 2 - rim, l / 2, -w / 2, w / 2, 0.0, h, 1.0),
        _slab(-l / 2 + rim, l / 2 - rim, -w / 2, -w / 2 + rim, 0.0, h, 1.0),
        _slab(-l / 2 + rim, l / 2 - rim, w / 2 - rim, w / 2, 0.0, h, 1.0),
    ]


def _trash_can(l: float, w: float, h: float) -> list[Primitive]:
    radius = min(l, w) / 2
    return [Cylinder((0.0, 0.0), radius, 0.0, h - 0.02, 1.0), Cylinder((0.0, 0.0), radius, h - 0.02, h, 0.8)]


def _lamp(l: float, w: float, h: float) -> list[Primitive]:
    radius = min(l, w) / 2
    return [
        Cylinder((0.0, 0.0), 0.4 * radius, 0.0, 0.03, 0.55),
        Cylinder((0.0, 0.0), min(0.012, 0.1 * radius), 0.03, 0.55 * h, 0.55),
        Cylinder((0.0, 0.0), radius, 0.5 * h, h, 1.0),
    ]


def _monitor(l: float, w: float, h: float) -> list[Primitive]:
    panel = min(0.035, 0.3 * l)
    stand = min(0.25, 0.45 * w)
    screen_bottom = 0.2 * h
    return [
        _slab(-l / 2, l / 2, -stand / 2, stand / 2, 0.0, 0.02, 0.8),
        _slab(-panel / 2 - 0.03, -panel / 2, -0.03, 0.03, 0.02, screen_bottom + 0.05, 0.8),
        _slab(-panel / 2, panel / 2, -w / 2, w / 2, screen_bottom, h, 1.0),
    ]


def _box(l: float, w: float, h: float) -> list[Primitive]:
    return [_slab(-l / 2, l / 2, -w / 2, w / 2, 0.0, h, 1.0)]


def _cup(l: float, w: float, h: float) -> list[Primitive]:
    body = min(0.4 * l, w / 2)
    body_x = -l / 2 + body
    return [
        Cylinder((body_x, 0.0), body, 0.0, h, 1.0),
        _slab(body_x + body - 0.005, l / 2, -min(0.008, w / 4), min(0.008, w / 4), 0.25 * h, 0.8 * h, 0.9),
    ]


def _bottle(l: float, w: float, h: float) -> list[Primitive]:
    radius = min(l, w) / 2
    return [
        Cylinder((0.0, 0.0), radius, 0.0, 0.65 * h, 1.0),
        Cylinder((0.0, 0.0), 0.6 * radius, 0.65 * h, 0.75 * h, 1.0),
        Cylinder((0.0, 0.0), 0.35 * radius, 0.75 * h, h, 0.8),
    ]


def _book(l: float, w: float, h: float) -> list[Primitive]:
    cover = min(0.004, 0.2 * h)
    return [
        _slab(-l / 2, l / 2, -w / 2, w / 2, 0.0, cover, 1.0),
        _slab(-l / 2, l / 2, -w / 2, w / 2, h - cover, h, 1.0),
        _slab(-l / 2, l / 2, -w / 2, -w / 2 + 0.006, cover, h - cover, 1.0),
        _slab(-l / 2 + 0.004, l / 2 - 0.004, -w / 2 + 0.006, w / 2 - 0.004, cover, h - cover, 1.8),
    ]


SHAPE_BUILDERS: dict[str, Callable[[float, float, float], list[Primitive]]] = {
    "bed": _bed,
    "chair": _chair,
    "sofa": _sofa,
    "table": _table,
    "desk": _desk,
    "night stand": _night_stand,
    "dresser": _dresser,
    "cabinet": _cabinet,
    "bookshelf": _bookshelf,
    "toilet": _toilet,
    "bathtub": _bathtub,
    "trash can": _trash_can,
    "lamp": _lamp,
    "monitor": _monitor,
    "box": _box,
    "cup": _cup,
    "bottle": _bottle,
    "book": _book,
}


def build_shape(category: str, size: tuple[float, float, float]) -> list[Primitive]:
    """The primitives of an object of ``category`` and ``size`` (length, width, height)."""
    length, width, height = (float(value) for value in size)
    primitives = SHAPE_BUILDERS[category](length, width, height)
    return [part for part in (_clip(primitive, length, width, height) for primitive in primitives) if part is not None]


def _clip(primitive: Primitive, length: float, width: float, height: float) -> Primitive | None:
    """Trim a primitive to the object's bounding box (odd spec sizes); None if nothing is left."""
    if isinstance(primitive, Cuboid):
        lower = [max(c - s / 2, -b) for c, s, b in zip(primitive.center, primitive.size, (length / 2, width / 2, 0.0))]
        upper = [min(c + s / 2, b) for c, s, b in zip(primitive.center, primitive.size, (length / 2, width / 2, height))]
        if any(hi - lo <= 1e-6 for lo, hi in zip(lower, upper)):
            return None
        return _slab(lower[0], upper[0], lower[1], upper[1], lower[2], upper[2], primitive.shade)
    x, y = primitive.center_xy
    radius = min(primitive.radius, length / 2 - abs(x), width / 2 - abs(y))
    z_min, z_max = max(primitive.z_min, 0.0), min(primitive.z_max, height)
    if radius <= 1e-6 or z_max - z_min <= 1e-6:
        return None
    return Cylinder((x, y), radius, z_min, z_max, primitive.shade)
