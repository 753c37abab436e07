"""Object proposals from geometry: remove the room's planes, cluster what stands in it.

In the gravity frame (z up, floor at ``floor_z``): the cloud is voxelised, the floor band
and anything above a ceiling are removed, then vertical planes that bound the room are
removed as walls, with whatever lies behind them (a mirror's or a window's phantom
returns). A wall is a vertical plane that is tall (``WALL_MIN_HEIGHT_M``), wide
(``WALL_MIN_WIDTH_M``) and has almost no point behind it as seen from the sensor: a
dresser's 2 m front has the wall behind it, a wall has nothing. What is left is clustered
with DBSCAN; each cluster is a proposal (its points' indices into the voxelised cloud).
Clusters too small to be an object are dropped. Things standing on a large horizontal
surface (a cup on a table, a monitor on a desk) touch it and so share its cluster:
:func:`split_supported` finds the surface and makes each small group of points above it a
cluster of its own (PCL's classic tabletop segmentation); a flat thing lying on the top (a book),
which barely rises out of the top's band, is told from it by its colour (:func:`_flat_things`),
and two flat things side by side in unlike colours from each other (:func:`split_by_colour`).
Before that, a long cluster whose top steps up or down by more than ``HEIGHT_STEP_M`` between
neighbouring footprint cells is split there (:func:`split_by_height`: a dresser against a bed's side).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from threed_llm_ros.geometry.planes import fit_plane

VOXEL_M = 0.03
FLOOR_BAND_M = 0.05
WALL_MIN_HEIGHT_M = 1.2
WALL_MIN_WIDTH_M = 0.9
# A narrower vertical plane is a wall too when it is taller than any category gets (the catalogue's
# tallest, a bookshelf, is 2.0 m): a strip of side wall seen past the corner of a bookshelf, a pillar.
WALL_STRIP_MIN_HEIGHT_M = 2.2
WALL_STRIP_MIN_WIDTH_M = 0.3
WALL_MAX_SHARE_BEHIND = 0.02
WALL_BEHIND_M = 0.10
DEPTH_NOISE_PER_M = 0.0015  # a structured-light / ToF depth camera's noise: sigma = k·range² (Kinect-like)
WALL_NOISE_SIGMAS = 2.5  # a wall's points scatter this many sigmas off its plane; left, they join what stands there
PLANE_DISTANCE_M = 0.03
CLUSTER_EPS_M = 0.07
MIN_CLUSTER_POINTS = 12
MAX_WALLS = 6
SUPPORT_MIN_AREA_M2 = 0.1  # the visible part of a top that holds things (what stands on it hides some)
SUPPORT_MIN_HEIGHT_M = 0.44  # above chair, sofa and toilet seats (0.40-0.45 m): a seat's back is not on it
SUPPORT_MAX_HEIGHT_M = 1.3
SUPPORT_BAND_M = 0.03
SUPPORT_CANDIDATES = 3  # the most exposed height bands tried as a support's top
ON_TOP_MAX_SIDE_M = 0.7  # a thing on the surface is smaller than this (a headboard or a sofa back is not)
# A flat thing lying on a top (a book, a tray) barely rises above it: it is told from the top by its
# colour, and from a printed pattern or a stain by standing at least a little proud of the top.
FLAT_CHROMA_STEP = 0.06  # unlike colours: their chromaticities (r, g, b over their sum) this far apart,
FLAT_BRIGHTNESS_RATIO = 2.0  # ... or one this many times brighter (shading alone changes brightness, not hue)
FLAT_MIN_RISE_M = 0.01  # median height above the top's own points
FLAT_NEAR_M = 0.1  # what a flat thing lies on: the points this close to it, horizontally
FLAT_CLEAR_M = 0.15  # a flat thing this close under something of its colour is its foot (a lamp shade overhangs)
# A low thing on a top (at most FLAT_PAIR_MAX_RISE_M high) longer than a book or a magazine gets
# (0.3 m) whose points fall into two unlike colours, each one piece, is two flat things side by side.
FLAT_PAIR_MAX_RISE_M = 0.08
FLAT_PAIR_MIN_SIDE_M = 0.36
NEIGHBOURS = 4
MAX_SEAM_SHARE = 0.35  # of the points with a neighbour of the other colour (two books: about 0.2)


@dataclass
class VoxelCloud:
    """A voxelised gravity-frame cloud: points, colours (0–1 or None)."""

    xyz: np.ndarray  # (M, 3)
    rgb: np.ndarray | None  # (M, 3) float 0–1
    voxel_of_point: np.ndarray  # (N,) the voxel each input point fell into


def voxelise(xyz: np.ndarray, rgb: np.ndarray | None, voxel: float = VOXEL_M) -> VoxelCloud:
    """One point per occupied voxel: the mean position and colour of its points."""
    keys = np.floor(xyz / voxel).astype(np.int64)
    _, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    sums = np.zeros((len(counts), 3))
    np.add.at(sums, inverse, xyz)
    mean_rgb = None
    if rgb is not None:
        colour = np.zeros((len(counts), 3))
        np.add.at(colour, inverse, np.asarray(rgb, dtype=np.float64))
        mean_rgb = colour / counts[:, None]
    return VoxelCloud(sums / counts[:, None], mean_rgb, inverse)


def _horizontal_extent(points: np.ndarray, normal: np.ndarray) -> float:
    """Width of points along the horizontal direction inside a vertical plane."""
    along = np.array([-normal[1], normal[0], 0.0])
    along /= max(float(np.linalg.norm(along)), 1e-9)
    values = points @ along
    low, high = np.percentile(values, [2, 98])
    return float(high - low)


def structure_mask(xyz: np.ndarray, floor_z: float, seed: int = 0) -> tuple[np.ndarray, list[tuple[np.ndarray, float]]]:
    """(M,) bool: points of the room's structure (floor band, above the ceiling, walls), and the
    walls as (unit normal toward the sensor, offset) planes."""
    height = xyz[:, 2] - floor_z
    structure = height < FLOOR_BAND_M
    top = float(np.percentile(height, 99.5)) if len(height) else 0.0
    if top > 2.0:  # a ceiling is seen: a horizontal band near the top with most points under it
        ceiling_band = height > top - 0.06
        if ceiling_band.mean() > 0.02:
            structure |= ceiling_band
    candidates = np.flatnonzero(~structure)
    depth_sigma = DEPTH_NOISE_PER_M * np.einsum("ij,ij->i", xyz, xyz)  # k·range², the sensor at the origin
    walls: list[tuple[np.ndarray, float]] = []
    for attempt in range(MAX_WALLS):
        if len(candidates) < 100:
            break
        normal, offset, inliers = fit_plane(xyz[candidates], PLANE_DISTANCE_M, 300, seed=seed + attempt)
        if len(inliers) < 150:
            break
        members = candidates[np.asarray(inliers)]
        vertical = abs(normal[2]) < math.sin(math.radians(12.0))
        is_wall = False
        if vertical:
            tall = float(np.percentile(xyz[members, 2], 98) - np.percentile(xyz[members, 2], 2))
            wide = _horizontal_extent(xyz[members], normal)
            if (tall >= WALL_MIN_HEIGHT_M and wide >= WALL_MIN_WIDTH_M) or (
                    tall >= WALL_STRIP_MIN_HEIGHT_M and wide >= WALL_STRIP_MIN_WIDTH_M):
                # orient the normal toward the sensor (the origin): "behind" is the far side
                if offset < 0:
                    normal, offset = -normal, -offset
                behind = (xyz @ normal + offset) < -WALL_BEHIND_M
                is_wall = float(behind.mean()) <= WALL_MAX_SHARE_BEHIND
        if is_wall:
            signed = xyz[candidates] @ normal + offset
            # the wall's own points, as far out as the sensor's noise at their range scatters
            # them, and what lies behind it (mirror and window phantoms)
            wall_points = candidates[signed < PLANE_DISTANCE_M * 1.5 + WALL_NOISE_SIGMAS * depth_sigma[candidates]]
            structure[wall_points] = True
            walls.append((normal, offset))
            candidates = np.flatnonzero(~structure)
        else:
            # not a wall (a table top, a dresser front, a bed): keep its points, look further
            candidates = np.setdiff1d(candidates, members, assume_unique=True)
    return structure, walls


def cluster(xyz: np.ndarray, eps: float = CLUSTER_EPS_M, min_points: int = MIN_CLUSTER_POINTS) -> list[np.ndarray]:
    """Index arrays of the DBSCAN clusters of ``xyz`` (noise left out), largest first."""
    import open3d

    if len(xyz) < min_points:
        return []
    cloud = open3d.geometry.PointCloud(open3d.utility.Vector3dVector(xyz))
    labels = np.asarray(cloud.cluster_dbscan(eps, 4, print_progress=False))
    clusters = [np.flatnonzero(labels == label) for label in range(int(labels.max()) + 1)] if len(labels) else []
    clusters = [members for members in clusters if len(members) >= min_points]
    return sorted(clusters, key=len, reverse=True)


def _near(points: np.ndarray, others: np.ndarray, reach: float, horizontal: bool = True) -> np.ndarray:
    """(len(others),) bool: which of ``others`` lie within ``reach`` of any of ``points``
    (horizontally, or in 3D)."""
    if len(others) == 0:
        return np.zeros(0, dtype=bool)
    axes = 2 if horizontal else 3
    gaps = np.linalg.norm(others[:, None, :axes] - points[None, :, :axes], axis=-1)
    return gaps.min(axis=1) <= reach


def _colour_distance(colours: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """How unlike ``colours`` (N×3, 0–1) are ``reference``, in units of :func:`unlike_colours`'
    steps (above 1 is unlike): (N,) for one reference colour (3,), (N, M) for M of them (M×3)."""
    colours = np.atleast_2d(np.asarray(colours, dtype=np.float64)) + 0.02
    references = np.atleast_2d(np.asarray(reference, dtype=np.float64)) + 0.02
    chroma = np.linalg.norm((colours / colours.sum(axis=1, keepdims=True))[:, None]
                            - (references / references.sum(axis=1, keepdims=True))[None], axis=-1)
    ratio = np.abs(np.log(colours.max(axis=1)[:, None] / references.max(axis=1)[None]))
    distance = np.maximum(chroma / FLAT_CHROMA_STEP, ratio / np.log(FLAT_BRIGHTNESS_RATIO))
    return distance[:, 0] if np.ndim(reference) == 1 else distance


def unlike_colours(colours: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(N,) bool: which of ``colours`` (N×3, 0–1) are unlike ``reference`` (3,) under any shading:
    another chromaticity (``FLAT_CHROMA_STEP``) or a brightness ``FLAT_BRIGHTNESS_RATIO`` apart."""
    return _colour_distance(colours, reference) > 1.0


def _foot_of_something(xyz: np.ndarray, rgb: np.ndarray, flat: np.ndarray, colour: np.ndarray) -> bool:
    """Whether ``flat`` (points) is the foot of something of its ``colour`` standing on it: enough of
    the cloud's points (``xyz``, ``rgb``: all of them, a lamp's shade is a cluster of its own) rise
    above it within ``FLAT_CLEAR_M``, in its colour (a monitor's foot, a lamp's base)."""
    low, high = flat.min(axis=0), flat.max(axis=0)
    window = np.flatnonzero(np.all(xyz[:, :2] >= low[:2] - FLAT_CLEAR_M, axis=1)
                            & np.all(xyz[:, :2] <= high[:2] + FLAT_CLEAR_M, axis=1)
                            & (xyz[:, 2] > high[2] + SUPPORT_BAND_M) & (xyz[:, 2] < high[2] + ON_TOP_MAX_SIDE_M))
    window = window[_near(flat, xyz[window], FLAT_CLEAR_M)]
    return int((~unlike_colours(rgb[window], colour)).sum()) >= MIN_CLUSTER_POINTS // 2


def split_by_colour(points: np.ndarray, colours: np.ndarray) -> list[np.ndarray]:
    """Positions (into ``points``) of the two things of unlike colours that one piece holds (two
    books side by side, one white, one pink), or the whole piece as one. Two groups by their
    colours (2-medians seeded by the commonest colour and the median of the points unlike it: a
    few stray points of another colour do not seed a group); they are two things when each
    holds ``MIN_CLUSTER_POINTS // 2`` points, their colours are unlike (:func:`unlike_colours`),
    at most ``MAX_SEAM_SHARE`` of the points have the other colour among their ``NEIGHBOURS``
    nearest (a seam, not a striped or printed cover) and each group is one piece in space."""
    whole = [np.arange(len(points))]
    if len(points) < MIN_CLUSTER_POINTS:
        return whole
    alike = _colour_distance(colours, colours) <= 1.0
    first = colours[int(np.argmax(alike.sum(axis=1)))]  # the commonest colour
    unlike = _colour_distance(colours, first) > 1.0
    if unlike.sum() < MIN_CLUSTER_POINTS // 2:
        return whole
    second = np.median(colours[unlike], axis=0)
    for _ in range(5):
        nearer_second = _colour_distance(colours, second) < _colour_distance(colours, first)
        if nearer_second.all() or not nearer_second.any():
            return whole
        first, second = np.median(colours[~nearer_second], axis=0), np.median(colours[nearer_second], axis=0)
    groups = [np.flatnonzero(~nearer_second), np.flatnonzero(nearer_second)]
    if min(len(group) for group in groups) < MIN_CLUSTER_POINTS // 2 or not unlike_colours(first, second)[0]:
        return whole
    # side by side, only the points along the seam have the other colour among their nearest
    # neighbours; a striped or printed cover mixes them throughout
    gaps = np.linalg.norm(points[:, None, :2] - points[None, :, :2], axis=-1)
    np.fill_diagonal(gaps, np.inf)
    nearest = np.argsort(gaps, axis=1)[:, :NEIGHBOURS]
    if float((nearer_second[nearest] != nearer_second[:, None]).any(axis=1).mean()) > MAX_SEAM_SHARE:
        return whole
    for group in groups:
        parts = cluster(points[group], eps=CLUSTER_EPS_M * 0.7, min_points=1)
        if not parts or len(parts[0]) < 0.8 * len(group):
            return whole
    return groups


def _flat_things(xyz: np.ndarray, rgb: np.ndarray, members: np.ndarray, top: np.ndarray, heights: np.ndarray,
                 above: np.ndarray) -> np.ndarray:
    """Positions (into ``members``) of the points of flat things lying on a top: among the top's
    exposed points (``top``, a mask), each cluster whose colour is unlike the top's own, whose
    median height stands ``FLAT_MIN_RISE_M`` above the top's own points, whose colour is unlike
    what it lies on (the cluster's points within ``FLAT_NEAR_M`` and not above it: not a rim of the
    thing itself), and that is not the foot of something of its colour (:func:`_foot_of_something`).
    Only things apart from what stands higher on the top (``above``, positions) are added, so they
    change no other piece: the lower edge of a thick book stays with the top, as without colours,
    and two flat books side by side are not bridged into one."""
    if top.sum() < MIN_CLUSTER_POINTS:
        return np.zeros(0, dtype=np.int64)
    colours = rgb[members]
    own = np.median(colours[top], axis=0)
    differs = top & unlike_colours(colours, own)
    if differs.sum() < MIN_CLUSTER_POINTS // 2 or (top & ~differs).sum() < MIN_CLUSTER_POINTS:
        return np.zeros(0, dtype=np.int64)
    level = float(np.median(heights[top & ~differs]))
    candidates = np.flatnonzero(differs)
    points = xyz[members]
    flat = []
    for group in cluster(points[candidates], eps=CLUSTER_EPS_M * 0.7, min_points=MIN_CLUSTER_POINTS // 2):
        chosen = candidates[group]
        middle = float(np.median(heights[chosen]))
        if middle < level + FLAT_MIN_RISE_M:
            continue
        if len(above) and _near(points[chosen], points[above], CLUSTER_EPS_M * 0.7, horizontal=False).any():
            continue
        if _foot_of_something(xyz, rgb, points[chosen], np.median(colours[chosen], axis=0)):
            continue
        rest = np.setdiff1d(np.arange(len(members)), chosen)
        under = rest[(heights[rest] <= middle) & _near(points[chosen], points[rest], FLAT_NEAR_M)]
        if len(under) < MIN_CLUSTER_POINTS // 2 or not unlike_colours(np.median(colours[chosen], axis=0),
                                                                      np.median(colours[under], axis=0))[0]:
            continue
        flat.append(chosen)
    return np.concatenate(flat) if flat else np.zeros(0, dtype=np.int64)


def split_supported(xyz: np.ndarray, members: np.ndarray, floor_z: float, voxel: float = VOXEL_M,
                    rgb: np.ndarray | None = None) -> tuple[list[np.ndarray], float | None]:
    """``members`` (indices into ``xyz``) split into the support and the small things on its top surface.

    The top surface is, of the height bands between ``SUPPORT_MIN_HEIGHT_M`` and
    ``SUPPORT_MAX_HEIGHT_M`` above the floor with the most *exposed* points (nothing of the
    cluster above them in their column: a top, not a slice of a front face), the first that
    covers at least ``SUPPORT_MIN_AREA_M2`` and has something above it. The points above it are
    clustered, and each cluster no wider than ``ON_TOP_MAX_SIDE_M`` and smaller than the
    support becomes its own proposal. Returns
    (the support's points followed by each thing's, the surface's z), or ``([members], None)``
    when there is no such surface or nothing on it. With ``rgb`` (colours of ``xyz``, 0–1), flat
    things on the top count as things on it too (:func:`_flat_things`), and a low thing longer
    than a book that holds two unlike colours side by side is two (:func:`split_by_colour`).
    """
    heights = xyz[members, 2] - floor_z
    columns = np.unique(np.floor(xyz[members, :2] / voxel).astype(np.int64), axis=0, return_inverse=True)[1].reshape(-1)
    column_top = np.full(int(columns.max()) + 1 if len(columns) else 0, -np.inf)
    np.maximum.at(column_top, columns, heights)
    exposed = column_top[columns] - heights <= SUPPORT_BAND_M
    band = exposed & (heights >= SUPPORT_MIN_HEIGHT_M) & (heights <= SUPPORT_MAX_HEIGHT_M)
    if band.sum() < 30:
        return [members], None
    bins = np.floor(heights[band] / SUPPORT_BAND_M).astype(np.int64)
    values, counts = np.unique(bins, return_counts=True)
    cell = 2 * voxel  # area from the cells of a coarser grid: a top seen at a grazing angle is sampled sparsely
    for value in values[np.argsort(-counts, kind="stable")][:SUPPORT_CANDIDATES]:
        surface = (value + 0.5) * SUPPORT_BAND_M
        on_surface = np.abs(heights - surface) <= SUPPORT_BAND_M
        covered = np.unique(np.floor(xyz[members[on_surface & exposed], :2] / cell).astype(np.int64), axis=0)
        above = np.flatnonzero(heights > surface + SUPPORT_BAND_M)
        if rgb is not None:
            above = np.union1d(above, _flat_things(xyz, rgb, members, on_surface & exposed, heights, above))
        # the first of the most exposed bands that is large and has something on it (the box's
        # own top, exposed too, holds nothing)
        if len(covered) * cell * cell >= SUPPORT_MIN_AREA_M2 and len(above) >= MIN_CLUSTER_POINTS:
            break
    else:
        return [members], None
    pieces, taken = [], np.zeros(len(members), dtype=bool)
    for group in cluster(xyz[members[above]], eps=CLUSTER_EPS_M * 0.7, min_points=MIN_CLUSTER_POINTS // 2):
        local = above[group]
        extent = np.ptp(xyz[members[local], :2], axis=0)
        if float(extent.max()) <= ON_TOP_MAX_SIDE_M:
            taken[local] = True
            low = float(heights[local].max()) - surface <= FLAT_PAIR_MAX_RISE_M
            if rgb is not None and low and float(extent.max()) >= FLAT_PAIR_MIN_SIDE_M:
                pieces += [members[local[part]] for part in split_by_colour(xyz[members[local]], rgb[members[local]])]
            else:
                pieces.append(members[local])
    # each thing on a support is smaller than it
    if not pieces or max(len(piece) for piece in pieces) >= (~taken).sum():
        return [members], None
    return [members[~taken], *pieces], floor_z + surface


HEIGHT_STEP_M = 0.2  # neighbouring footprint cells whose tops differ more belong to different things
HEIGHT_CELL_M = 0.06
MIN_REGION_M2 = 0.12
SPLIT_MIN_SIDE_M = 1.0  # only clusters at least this long are looked at (touching furniture)


def split_by_height(xyz: np.ndarray, members: np.ndarray) -> list[np.ndarray]:
    """``members`` split where the top of the cluster steps up or down by more than
    ``HEIGHT_STEP_M`` between neighbouring footprint cells: a dresser standing against a bed's
    side, a night stand beside a desk. Each region of similar top covering ``MIN_REGION_M2``
    becomes a piece; smaller regions go to the nearest piece. Short clusters stay whole."""
    points = xyz[members]
    if len(points) < 2 * MIN_CLUSTER_POINTS or float(np.ptp(points[:, :2], axis=0).max()) < SPLIT_MIN_SIDE_M:
        return [members]
    cells = np.floor(points[:, :2] / HEIGHT_CELL_M).astype(np.int64)
    keys, cell_of_point = np.unique(cells, axis=0, return_inverse=True)
    cell_of_point = cell_of_point.reshape(-1)
    tops = np.full(len(keys), -np.inf)
    np.maximum.at(tops, cell_of_point, points[:, 2])
    index = {(int(a), int(b)): k for k, (a, b) in enumerate(keys)}
    region = np.full(len(keys), -1)
    regions = 0
    for start in range(len(keys)):  # flood fill over 4-neighbours with similar tops
        if region[start] >= 0:
            continue
        region[start] = regions
        stack = [start]
        while stack:
            cell = stack.pop()
            a, b = keys[cell]
            for neighbour in ((a + 1, b), (a - 1, b), (a, b + 1), (a, b - 1)):
                other = index.get((int(neighbour[0]), int(neighbour[1])))
                if other is not None and region[other] < 0 and abs(tops[other] - tops[cell]) <= HEIGHT_STEP_M:
                    region[other] = regions
                    stack.append(other)
        regions += 1
    sizes = np.bincount(region, minlength=regions) * HEIGHT_CELL_M**2
    large = np.flatnonzero(sizes >= MIN_REGION_M2)
    if len(large) < 2:
        return [members]
    centres = (keys + 0.5) * HEIGHT_CELL_M
    in_large = np.isin(region, large)
    for cell in np.flatnonzero(~in_large):  # small regions join the nearest large one
        nearest = np.argmin(np.linalg.norm(centres[in_large] - centres[cell], axis=1))
        region[cell] = region[np.flatnonzero(in_large)[nearest]]
    point_region = region[cell_of_point]
    return [members[point_region == label] for label in large]
