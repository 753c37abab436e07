"""Gravity-aligned boxes fitted to an object's points, and completed behind what a view sees.

The footprint's yaw is the minimum-area rectangle of the points' 2D convex hull (rotating
calipers over the hull's edge directions), on trimmed points so a stray return does not
stretch it. The box stands on the floor when its lowest points come within
``FLOOR_SNAP_M`` of it (legs and the bottom edge are often not seen).

A single view sees an object's front: :func:`complete_box` grows the box along its
thinner horizontal axis to the depth its category has at least, away from the sensor
unless that crosses a wall (then toward the sensor, as for a headboard against a wall).
"""

from __future__ import annotations

import math

import numpy as np

from threed_llm_ros.geometry.boxes import OrientedBox
from threed_llm_ros.geometry.frames import yaw_rotation

FLOOR_SNAP_M = 0.2
TRIM_PERCENT = 1.0


def _hull(points: np.ndarray) -> np.ndarray:
    """Convex hull of 2D points (Andrew's monotone chain), counter-clockwise."""
    unique = np.unique(np.round(points, 4), axis=0)
    if len(unique) < 3:
        return unique
    order = np.lexsort((unique[:, 1], unique[:, 0]))
    pts = unique[order]

    def half(sequence: np.ndarray) -> list[np.ndarray]:
        chain: list[np.ndarray] = []
        for point in sequence:
            while len(chain) >= 2 and np.cross(chain[-1] - chain[-2], point - chain[-2]) <= 0:
                chain.pop()
            chain.append(point)
        return chain

    lower, upper = half(pts), half(pts[::-1])
    return np.array(lower[:-1] + upper[:-1])


def min_area_rectangle(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(centre xy, size (length, width), yaw) of the smallest rectangle around 2D points;
    length is along yaw and is the longer side."""
    hull = _hull(np.asarray(points, dtype=np.float64))
    if len(hull) < 3:
        low, high = points.min(axis=0), points.max(axis=0)
        size = np.maximum(high - low, 0.01)
        return (low + high) / 2, np.array([max(size), min(size)]), 0.0 if size[0] >= size[1] else math.pi / 2
    edges = np.diff(np.vstack([hull, hull[:1]]), axis=0)
    angles = np.unique(np.mod(np.arctan2(edges[:, 1], edges[:, 0]), math.pi / 2))
    best = None
    for angle in angles:
        rotation = yaw_rotation(angle)[:2, :2]
        local = hull @ rotation  # coordinates along (angle, angle + 90°)
        low, high = local.min(axis=0), local.max(axis=0)
        area = float(np.prod(high - low))
        if best is None or area < best[0]:
            best = (area, angle, low, high, rotation)
    _, angle, low, high, rotation = best
    centre = rotation @ ((low + high) / 2)
    size = high - low
    if size[0] < size[1]:
        angle, size = angle + math.pi / 2, size[::-1]
    yaw = (angle + math.pi / 2) % math.pi - math.pi / 2  # boxes are symmetric under a half turn
    return centre, np.maximum(size, 0.01), float(yaw)


def fit_box(points: np.ndarray, floor_z: float) -> OrientedBox:
    """The gravity-aligned box of an object's gravity-frame points (see the module docstring)."""
    points = np.asarray(points, dtype=np.float64)
    if len(points) >= 20:
        low, high = np.percentile(points, [TRIM_PERCENT, 100 - TRIM_PERCENT], axis=0)
        trimmed = points[np.all((points >= low) & (points <= high), axis=1)]
        points = trimmed if len(trimmed) >= 10 else points
    centre, size, yaw = min_area_rectangle(points[:, :2])
    bottom, top = float(points[:, 2].min()), float(points[:, 2].max())
    if bottom - floor_z < FLOOR_SNAP_M:
        bottom = floor_z
    height = max(top - bottom, 0.02)
    return OrientedBox((float(centre[0]), float(centre[1]), bottom + height / 2), (float(size[0]), float(size[1]), height), yaw)


def complete_box(box: OrientedBox, min_depth: float, min_length: float, walls: list[tuple[np.ndarray, float]]) -> OrientedBox:
    """``box`` grown to at least ``min_length`` × ``min_depth`` in footprint (see the module docstring).

    ``walls``: (unit normal toward the sensor, offset) of the room's wall planes; the box is
    grown away from the sensor unless its far side would then cross one of them.
    """
    centre = np.asarray(box.center, dtype=np.float64)
    length, width, height = box.size
    rotation = yaw_rotation(box.yaw)[:2, :2]
    axes = [rotation[:, 0], rotation[:, 1]]
    sizes = [length, width]
    wanted = [max(length, min_length), max(width, min_depth)]
    if width > length:  # keep the names: grow the thin axis to the depth
        wanted = [max(length, min_depth), max(width, min_length)]
    for axis_index in (0, 1):
        grow = wanted[axis_index] - sizes[axis_index]
        if grow <= 1e-6:
            continue
        axis = axes[axis_index]
        away = axis if float(axis @ centre[:2]) >= 0 else -axis  # pointing away from the sensor
        shifted = centre.copy()
        shifted[:2] += away * grow / 2
        far_corner = shifted[:2] + away * wanted[axis_index] / 2
        crosses = any(float(normal[:2] @ far_corner) + offset < -0.05 for normal, offset in walls)
        if crosses:
            shifted = centre.copy()
            shifted[:2] -= away * grow / 2
        centre = shifted
        sizes[axis_index] = wanted[axis_index]
    return OrientedBox(tuple(centre.tolist()), (float(sizes[0]), float(sizes[1]), float(height)), box.yaw)
