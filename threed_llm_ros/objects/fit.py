"""Gravity-aligned boxes fitted to an object's points, and completed behind what a view sees.

The footprint's yaw is the heading of the points' minimum-area rectangle, on trimmed points
so a stray return does not stretch it. The box stands on the floor when its lowest points come within
``FLOOR_SNAP_M`` of it (legs and the bottom edge are often not seen).

A single view sees an object's front: :func:`complete_box` grows the box along its
thinner horizontal axis to the depth its category is expected to have (``layer.hidden_depth``;
and along its longer one to the category's least length), away from the sensor
unless that crosses a wall (then toward the sensor, as for a headboard against a wall). A
face's nearest points scatter toward the sensor by the depth noise (sigma = k·range², as the
wall removal models it), so a box grown behind a face starts ``FRONT_NOISE_SIGMAS`` sigmas behind them.
Furniture that stands against walls (``snap_depth``) whose completed back falls just short of a
wall facing it (``WALL_SNAP_M``) is grown on to that wall, as far as its category's size allows:
the sensor sees a dresser's front, the wall behind it says where its back is.
"""

from __future__ import annotations

import math

import numpy as np

from threed_llm_ros.geometry.boxes import OrientedBox
from threed_llm_ros.geometry.frames import yaw_rotation
from threed_llm_ros.objects.proposals import DEPTH_NOISE_PER_M

FLOOR_SNAP_M = 0.2
TRIM_PERCENT = 1.0
# a seen face's nearest points scatter toward the sensor by the depth noise (sigma = k·range²): a box
# grown behind that face starts this many sigmas behind them
FRONT_NOISE_SIGMAS = 1.0
WALL_SNAP_M = 0.25  # a completed back this close to a wall it faces is grown on to the wall
WALL_FACING_COS = math.cos(math.radians(25.0))  # a box side faces a wall within this angle


def min_area_rectangle(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(centre xy, size (length, width), yaw) of the smallest rectangle around 2D points;
    length is along yaw and is the longer side. Searched over headings in 1° steps, then
    0.1° around the best (vectorised: the rectangle's area as a function of its heading)."""
    points = np.asarray(points, dtype=np.float64)
    centred = points - points.mean(axis=0)

    def areas(angles: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        along = centred @ np.stack([np.cos(angles), np.sin(angles)])  # (n, k)
        across = centred @ np.stack([-np.sin(angles), np.cos(angles)])
        low = np.stack([along.min(axis=0), across.min(axis=0)], axis=-1)
        high = np.stack([along.max(axis=0), across.max(axis=0)], axis=-1)
        return np.prod(high - low, axis=-1), low, high

    coarse = np.radians(np.arange(0.0, 90.0, 1.0))
    best = coarse[int(np.argmin(areas(coarse)[0]))]
    fine = best + np.radians(np.arange(-1.0, 1.01, 0.1))
    area, low, high = areas(fine)
    index = int(np.argmin(area))
    angle = float(fine[index])
    size = np.maximum(high[index] - low[index], 0.01)
    middle = (low[index] + high[index]) / 2
    centre = points.mean(axis=0) + middle[0] * np.array([math.cos(angle), math.sin(angle)]) \
        + middle[1] * np.array([-math.sin(angle), math.cos(angle)])
    if size[0] < size[1]:
        angle, size = angle + math.pi / 2, size[::-1]
    yaw = (angle + math.pi / 2) % math.pi - math.pi / 2  # boxes are symmetric under a half turn
    return centre, size, float(yaw)


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


def complete_box(box: OrientedBox, min_depth: float, walls: list[tuple[np.ndarray, float]],
                 min_length: float = 0.0, snap_depth: float | None = None) -> OrientedBox:
    """``box`` with its thinner horizontal side grown to at least ``min_depth`` and its longer
    one to at least ``min_length`` (see the module docstring).

    ``walls``: (unit normal toward the sensor, offset) of the room's wall planes; the box is
    grown away from the sensor unless its far side would then cross one of them.
    ``snap_depth``: for furniture that stands against walls, the most either side may reach
    when it is grown on to a wall behind it (None: never).
    """
    sizes = [box.size[0], box.size[1]]
    thin = 1 if sizes[1] <= sizes[0] else 0
    box = _grow_side(box, thin, min_depth, walls, snap_depth)
    return _grow_side(box, 1 - thin, min_length, walls, snap_depth)


def _wall_behind(face: np.ndarray, away: np.ndarray, walls: list[tuple[np.ndarray, float]]) -> float:
    """How far a wall facing the box side lies behind ``face`` (its centre, 2-D), along ``away``
    (inf if no wall faces it)."""
    reach = math.inf
    for normal, offset in walls:
        facing = -float(normal[:2] @ away) / max(float(np.linalg.norm(normal[:2])), 1e-9)
        if facing >= WALL_FACING_COS:
            reach = min(reach, (float(normal[:2] @ face) + offset) / -float(normal[:2] @ away))
    return reach


def _grow_side(box: OrientedBox, side: int, minimum: float, walls: list[tuple[np.ndarray, float]],
               snap_depth: float | None = None) -> OrientedBox:
    """``box`` with horizontal side ``side`` (0: along yaw) grown to ``minimum``, away from the
    sensor unless that crosses a wall; on to a wall just behind it up to ``snap_depth``."""
    centre = np.asarray(box.center, dtype=np.float64)
    sizes = [box.size[0], box.size[1]]
    axis = yaw_rotation(box.yaw)[:2, side]
    away = axis if float(axis @ centre[:2]) >= 0 else -axis  # pointing away from the sensor
    grow = minimum - sizes[side]
    if snap_depth is not None:
        to_wall = _wall_behind(centre[:2] + away * sizes[side] / 2, away, walls)
        if max(grow, 0.0) - 0.05 <= to_wall <= max(grow, 0.0) + WALL_SNAP_M and sizes[side] + to_wall <= snap_depth:
            centre[:2] += away * max(to_wall, 0.0) / 2
            sizes[side] += max(to_wall, 0.0)
            return OrientedBox(tuple(centre.tolist()), (float(sizes[0]), float(sizes[1]), float(box.size[2])), box.yaw)
    if grow <= 1e-6:
        return box
    far_corner = centre[:2] + away * (grow / 2 + minimum / 2)
    crosses = any(float(normal[:2] @ far_corner) + offset < -0.05 for normal, offset in walls)
    along_ray = abs(float(away @ centre[:2])) / max(float(np.linalg.norm(centre[:2])), 1e-9)
    centre[:2] += (-away if crosses else away) * grow / 2
    if not crosses:  # the seen face's nearest points scattered toward the sensor by its depth noise
        centre[:2] += away * along_ray * FRONT_NOISE_SIGMAS * DEPTH_NOISE_PER_M * float(centre @ centre)
    sizes[side] = minimum
    return OrientedBox(tuple(centre.tolist()), (float(sizes[0]), float(sizes[1]), float(box.size[2])), box.yaw)
