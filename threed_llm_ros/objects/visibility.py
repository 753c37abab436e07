"""Free space from the sensor's own rays: is the space under (or over) an object seen empty, or hidden?

A single view often hides an object's lower part (a bed behind an ottoman, a mattress that
returns no depth) but a picture on a wall really hangs in the air. The difference is what the
sensor saw along the rays through the space below the object: a return *beyond* that space
means the ray crossed it, so it is empty; a nearer return or none at all leaves it unknown.
:class:`RayGrid` keeps the nearest return per direction (azimuth × elevation bins around the
sensor at the origin), and :meth:`RayGrid.seen_empty` answers for sample points.
"""

from __future__ import annotations

import math

import numpy as np

from threed_llm_ros.geometry.boxes import OrientedBox

BIN_DEG = 0.5
BEYOND_M = 0.1  # a return this much farther than a sample means the ray crossed the sample
SAMPLE_STEP_M = 0.1


class RayGrid:
    """The nearest return per direction of a gravity-frame cloud whose sensor is at the origin."""

    def __init__(self, points: np.ndarray, bin_deg: float = BIN_DEG) -> None:
        self.step = math.radians(bin_deg)
        self.columns = int(math.ceil(2 * math.pi / self.step))
        self.rows = int(math.ceil(math.pi / self.step))
        self.nearest = np.full(self.rows * self.columns, np.inf, dtype=np.float32)
        cells, ranges = self._cells(np.asarray(points, dtype=np.float64))
        np.minimum.at(self.nearest, cells, ranges.astype(np.float32))

    def _cells(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ranges = np.linalg.norm(points, axis=1)
        safe = np.maximum(ranges, 1e-9)
        azimuth = np.arctan2(points[:, 1], points[:, 0]) + math.pi
        elevation = np.arcsin(np.clip(points[:, 2] / safe, -1.0, 1.0)) + math.pi / 2
        column = np.minimum((azimuth / self.step).astype(np.int64), self.columns - 1)
        row = np.minimum((elevation / self.step).astype(np.int64), self.rows - 1)
        return row * self.columns + column, ranges

    def seen_empty(self, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(empty, known) per sample: a return lies beyond it (the ray crossed it), and any return
        at all lies in its direction."""
        cells, ranges = self._cells(np.asarray(samples, dtype=np.float64))
        nearest = self.nearest[cells]
        known = np.isfinite(nearest)
        return known & (nearest > ranges + BEYOND_M), known


def space_below(box: OrientedBox, down_to: float) -> np.ndarray:
    """Sample points filling the box's footprint (inset) from ``down_to`` up to its bottom."""
    return _footprint_samples(box, down_to, box.center[2] - box.size[2] / 2)


def space_above(box: OrientedBox, up_to: float) -> np.ndarray:
    """Sample points filling the box's footprint (inset) from its top up to ``up_to``."""
    return _footprint_samples(box, box.center[2] + box.size[2] / 2, up_to)


def _footprint_samples(box: OrientedBox, low: float, high: float) -> np.ndarray:
    heights = np.arange(low + SAMPLE_STEP_M / 2, high - SAMPLE_STEP_M / 4, SAMPLE_STEP_M)
    if len(heights) == 0:
        return np.zeros((0, 3))
    grid = np.array([-0.3, 0.0, 0.3])
    local = np.array([[a * box.size[0], b * box.size[1]] for a in grid for b in grid])
    cos, sin = math.cos(box.yaw), math.sin(box.yaw)
    footprint = local @ np.array([[cos, sin], [-sin, cos]]) + np.asarray(box.center[:2])
    return np.array([[x, y, z] for x, y in footprint for z in heights])


def hangs_in_the_air(grid: RayGrid, box: OrientedBox, down_to: float, share: float = 0.5) -> bool:
    """Whether the sensor saw the space between ``down_to`` and the box's bottom empty."""
    return _mostly_seen_empty(grid, space_below(box, down_to), share)


def open_above(grid: RayGrid, box: OrientedBox, up_to: float, share: float = 0.5) -> bool:
    """Whether the sensor saw the space between the box's top and ``up_to`` empty: nothing of
    the object stands there, hidden or not."""
    return _mostly_seen_empty(grid, space_above(box, up_to), share)


def _mostly_seen_empty(grid: RayGrid, samples: np.ndarray, share: float) -> bool:
    if len(samples) == 0:
        return False
    empty, known = grid.seen_empty(samples)
    return bool(known.mean() >= 0.3 and empty.sum() >= share * max(known.sum(), 1))
