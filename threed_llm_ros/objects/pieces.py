"""Proposals as pieces: a cluster's points and fitted box, how it is made from a gravity-frame
cloud (:func:`propose`), and how two pieces relate (the gap between them, whether one holds the
other up) and merge. The object layer (``layer.py``) joins, cuts and names them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from threed_llm_ros.geometry.boxes import OrientedBox
from threed_llm_ros.objects.fit import fit_box
from threed_llm_ros.objects.gravity import GravityFrame
from threed_llm_ros.objects.proposals import cluster, split_by_height, split_supported, structure_mask, voxelise

# A slender piece right under a wider one holds it up (a lamp's stem under its shade, a monitor's
# stand, a table's leg): nothing floats, so the two are one thing, named as the upper piece is.
HOLD_REACH_M = 0.1  # the slender piece's top reaches this close to the upper piece's bottom
HOLD_SLENDER = 0.5  # ... and its widest side is at most this share of the upper piece's
HOLD_NEAR_M = 0.08  # ... its centre this close to the upper footprint (seen from the front: a shade's front half)
# A base: a low piece on the floor (its top at most BASE_MAX_TOP_M up) under a piece whose bottom is at
# least BASE_MIN_GAP_M above it, each one's centre over the other's footprint (within HOLD_NEAR_M).
BASE_MAX_TOP_M = 0.2
BASE_MIN_GAP_M = 0.15


@dataclass
class Proposal:
    """A cluster's points (gravity frame), colours and fitted box, before recognition."""

    points: np.ndarray
    colors: np.ndarray | None
    box: OrientedBox
    wall_distance: float
    support_gap: float  # from the box's bottom down to the highest thing under it (the floor at most)
    surface_z: float | None = None  # split off this top surface of its cluster's support (a cup on a table)
    cut: int = -1  # the parts of one oversized proposal cut in two share this number; they never rejoin

    @property
    def on_top(self) -> bool:
        return self.surface_z is not None

    @property
    def rest_gap(self) -> float:
        """From the box's bottom down to what it rests on: its support's surface, or what is under it."""
        if self.surface_z is None:
            return self.support_gap
        return max(0.0, self.box.center[2] - self.box.size[2] / 2 - self.surface_z)


def wall_distance_of(box: OrientedBox, walls: list[tuple[np.ndarray, float]]) -> float:
    """Distance from the box's footprint to the nearest wall plane (3 m where no wall is seen)."""
    if not walls:
        return 3.0
    corners = box.corners()[:4]
    return float(min(np.min(corners @ normal + offset) for normal, offset in walls).clip(0.0, None))


def _support_gap(box: OrientedBox, points: np.ndarray, not_own: np.ndarray, floor_z: float) -> float:
    """How far ``box`` floats above whatever is under its footprint (``points[not_own]``: the
    points that are not its own)."""
    bottom = box.center[2] - box.size[2] / 2
    shrunk = OrientedBox(box.center, (box.size[0] * 0.8, box.size[1] * 0.8, box.size[2] + 4.0), box.yaw)
    low = np.flatnonzero(points[:, 2] < bottom + 0.03)
    low = low[not_own[low]]
    below = points[low[shrunk.contains(points[low])]] if len(low) else points[low]
    highest = float(below[:, 2].max()) if len(below) >= 3 else floor_z
    return max(0.0, bottom - max(highest, floor_z))


def propose(xyz: np.ndarray, rgb: np.ndarray | None, gravity: GravityFrame, seed: int = 0
            ) -> tuple[list[Proposal], list[tuple[np.ndarray, float]], np.ndarray, list[np.ndarray]]:
    """Proposals of gravity-frame points: (proposals, walls, voxel of each point, each proposal's voxel indices)."""
    voxels = voxelise(xyz, rgb)
    structure, walls = structure_mask(voxels.xyz, gravity.floor_z, seed=seed)
    free = np.flatnonzero(~structure)
    proposals, members = [], []
    owner = np.full(len(voxels.xyz), -1)
    clusters, origins = [], []  # origins: the z of the support's top surface each piece stands on, or None
    for touching in cluster(voxels.xyz[free]):
        for whole in split_by_height(voxels.xyz[free], touching):
            pieces, surface = split_supported(voxels.xyz[free], whole, gravity.floor_z,
                                              rgb=None if voxels.rgb is None else voxels.rgb[free])
            clusters += pieces
            origins += [surface if index > 0 else None for index in range(len(pieces))]
    for number, indices in enumerate(clusters):
        owner[free[indices]] = number
    free_points, free_owner = voxels.xyz[free], owner[free]
    for number, (indices, surface) in enumerate(zip(clusters, origins)):
        chosen = free[indices]
        points = voxels.xyz[chosen]
        box = fit_box(points, gravity.floor_z)
        colors = voxels.rgb[chosen] if voxels.rgb is not None else None
        # split off a support's top, it rests on that surface (the part right under it, it hides)
        gap = 0.0 if surface is not None else _support_gap(box, free_points, free_owner != number, gravity.floor_z)
        proposals.append(Proposal(points, colors, box, wall_distance_of(box, walls), gap, surface))
        members.append(chosen)
    return proposals, walls, voxels.voxel_of_point, members


def merge_pieces(first: Proposal, second: Proposal, floor_z: float) -> Proposal:
    points = np.vstack([first.points, second.points])
    colors = None if first.colors is None or second.colors is None else np.vstack([first.colors, second.colors])
    box = fit_box(points, floor_z)
    surface = first.surface_z if first.on_top and second.on_top else None
    return Proposal(points, colors, box, min(first.wall_distance, second.wall_distance),
                    min(first.support_gap, second.support_gap), surface, max(first.cut, second.cut))


def cut_apart(first: Proposal, second: Proposal) -> bool:
    """Whether the two are the parts of one cut (``ObjectLayer._split_oversized``): they stay apart."""
    return first.cut >= 0 and first.cut == second.cut


def footprint_gap(first: OrientedBox, second: OrientedBox) -> float:
    """Horizontal gap between two boxes' footprints (0 when they touch), from their corners."""
    a, b = first.corners()[:4, :2], second.corners()[:4, :2]
    return float(np.min(np.linalg.norm(a[:, None] - b[None], axis=-1))) if not _footprints_touch(first, second) else 0.0


def _footprints_touch(first: OrientedBox, second: OrientedBox) -> bool:
    probe = np.vstack([second.corners()[:4], np.asarray(second.center)[None]])
    probe[:, 2] = first.center[2]
    other = np.vstack([first.corners()[:4], np.asarray(first.center)[None]])
    other[:, 2] = second.center[2]
    return bool(first.contains(probe, margin=0.02).any() or second.contains(other, margin=0.02).any())


def holds_up(lower: OrientedBox, upper: OrientedBox) -> bool:
    """Whether ``lower`` is a slender piece that holds ``upper`` up: it stands under the upper
    piece's footprint, its top reaches that piece's bottom (``HOLD_REACH_M``), and it is much
    narrower (``HOLD_SLENDER``), and taller than thick, with most of it below that bottom: a lamp's
    stem under its shade, where the sensor saw the two apart; not a cup beside the lamp's foot."""
    lower_top = lower.center[2] + lower.size[2] / 2
    upper_bottom = upper.center[2] - upper.size[2] / 2
    if not upper_bottom - HOLD_REACH_M <= lower_top <= upper.center[2] or lower.center[2] >= upper_bottom:
        return False
    if lower.size[2] < 1.5 * min(lower.size[:2]):  # a stem or a leg stands taller than it is thick
        return False
    if max(lower.size[:2]) > HOLD_SLENDER * max(upper.size[:2]):
        return False
    return _centre_over(lower, upper)


def _centre_over(piece: OrientedBox, box: OrientedBox) -> bool:
    """Whether ``piece``'s centre lies over ``box``'s footprint (within ``HOLD_NEAR_M``)."""
    probe = np.asarray(piece.center, dtype=np.float64)[None].copy()
    probe[0, 2] = box.center[2]
    return bool(box.contains(probe, margin=HOLD_NEAR_M).any())


def stands_on_base(lower: OrientedBox, upper: OrientedBox, floor_z: float) -> bool:
    """Whether ``upper`` stands on ``lower`` as on its base, the column between them unseen: an office
    chair's seat over its five-star base (a thin dark gas spring the sensor often misses), a
    stool's top over its foot. ``lower`` is low on the floor (its top at most ``BASE_MAX_TOP_M``
    up), ``upper``'s bottom is ``BASE_MIN_GAP_M`` above it, and each one's centre lies over the
    other's footprint: not a box on the floor beside the chair, nor one under a table's wide top."""
    lower_top = lower.center[2] + lower.size[2] / 2
    upper_bottom = upper.center[2] - upper.size[2] / 2
    if lower_top - floor_z > BASE_MAX_TOP_M or upper_bottom - lower_top < BASE_MIN_GAP_M:
        return False
    return _centre_over(lower, upper) and _centre_over(upper, lower)
