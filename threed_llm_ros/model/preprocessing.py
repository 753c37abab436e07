"""Point-cloud preprocessing for the scene encoder: clean, subsample, group, normalise.

The grouping (farthest point sampling of group centres, k nearest neighbours around
each) runs outside the exported encoder graph, as in Point-BERT / MiniGPT-3D. Every
cloud is rotated into the gravity-aligned frame (see ``geometry/frames.py``), reduced to
exactly ``num_points`` points, then centred and scaled into a unit ball; the offset and
scale are kept so boxes predicted in normalised units can be mapped back to metres.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from threed_llm_ros.errors import ConfigError
from threed_llm_ros.geometry.frames import UP_AXIS_ROTATIONS, rotation_to_gravity
from threed_llm_ros.config_io import config_from_dict, config_to_dict

#: Colour given to points of clouds without colour (or with non-finite colour): mid grey.
MISSING_COLOR = 0.5

#: "voxel": voxel-grid centroids, the grid coarsened until a little over num_points remain,
#: the surplus dropped at random (fast).
#: "random": a seeded random choice of num_points points.
#: "voxel_fps": voxel-grid centroids at voxel_size, then exact farthest point sampling down
#: to num_points (best coverage, but FPS to thousands of points costs hundreds of ms on a CPU).
SUBSAMPLE_METHODS = ("voxel", "random", "voxel_fps")

# The "voxel" method coarsens its grid (at most this often) until about _VOXEL_SURPLUS x
# num_points voxels remain, then drops the surplus at random: aiming a little high avoids
# ending below num_points (and padding) when the cloud is not a perfect surface.
_MAX_VOXEL_COARSENINGS = 3
_VOXEL_SURPLUS = 1.4

# Largest pairwise-distance block knn_indices materialises at once (elements).
_KNN_CHUNK_ELEMENTS = 1 << 24

PointArray = np.ndarray | torch.Tensor


@dataclass
class PreprocessConfig:
    """How a raw cloud becomes encoder input: crop, subsample, group."""

    num_points: int = 8192
    num_groups: int = 512
    group_size: int = 32
    min_range: float = 0.1
    max_range: float = 8.0
    subsample: str = "voxel"
    voxel_size: float = 0.02
    up_axis: str = "-y"

    def __post_init__(self) -> None:
        if self.num_points < 1:
            raise ConfigError("num_points", f"must be at least 1, got {self.num_points}", "use e.g. 8192")
        if not 1 <= self.num_groups <= self.num_points:
            raise ConfigError(
                "num_groups", f"must be in [1, num_points={self.num_points}], got {self.num_groups}", "use e.g. 512"
            )
        if not 1 <= self.group_size <= self.num_points:
            raise ConfigError(
                "group_size", f"must be in [1, num_points={self.num_points}], got {self.group_size}", "use e.g. 32"
            )
        if not (0.0 <= self.min_range < self.max_range) or not math.isfinite(self.max_range):
            raise ConfigError(
                "min_range/max_range",
                f"need 0 <= min_range < max_range < inf, got {self.min_range}, {self.max_range}",
                "use e.g. min_range 0.1 and max_range 8.0 (metres)",
            )
        if self.subsample not in SUBSAMPLE_METHODS:
            raise ConfigError("subsample", f"unknown method {self.subsample!r}", f"use one of {SUBSAMPLE_METHODS}")
        if not self.voxel_size > 0.0:
            raise ConfigError("voxel_size", f"must be positive, got {self.voxel_size}", "use e.g. 0.02 (metres)")
        if self.up_axis not in UP_AXIS_ROTATIONS:
            raise ConfigError(
                "up_axis", f"unknown up axis {self.up_axis!r}", f"use one of {sorted(UP_AXIS_ROTATIONS)}"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PreprocessConfig":
        """Inverse of ``to_dict``; unknown keys raise ``ConfigError``."""
        return config_from_dict(cls, data)


@dataclass
class SceneBatch:
    """Encoder input for a batch of scenes plus what maps normalised units back to metres.

    Normalised coordinates are gravity-frame metres minus ``offset``, divided by ``scale``.
    """

    patches: torch.Tensor  # (B, G, K, 6): xyz relative to the group centre (normalised) + rgb in [0, 1]
    centers: torch.Tensor  # (B, G, 3): normalised gravity-frame group centres
    offset: torch.Tensor  # (B, 3): metres, gravity frame
    scale: torch.Tensor  # (B,): metres per normalised unit
    up_axis: str
    num_valid_points: torch.Tensor | None = None  # (B,): points left after cleaning and cropping, before subsampling

    @property
    def batch_size(self) -> int:
        """Number of scenes."""
        return int(self.patches.shape[0])

    def to(self, device: torch.device | str) -> "SceneBatch":
        """The same batch with every tensor on ``device``."""
        return SceneBatch(
            patches=self.patches.to(device),
            centers=self.centers.to(device),
            offset=self.offset.to(device),
            scale=self.scale.to(device),
            up_axis=self.up_axis,
            num_valid_points=None if self.num_valid_points is None else self.num_valid_points.to(device),
        )


# --------------------------------------------------------------------------- sampling


def farthest_point_sampling(
    points: torch.Tensor,
    count: int,
    start_index: int | torch.Tensor = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Indices (B, count) of ``count`` points picked by farthest point sampling from (B, N, 3).

    Each pick is the point farthest (Euclidean) from all points picked so far; the first is
    ``start_index`` (an int or a (B,) tensor), or a random point per scene when a
    ``generator`` is given. Vectorised over the batch; only the ``count`` picks loop.
    """
    if points.dim() != 3 or points.shape[-1] != 3:
        raise ValueError(f"points must have shape (B, N, 3), got {tuple(points.shape)}")
    batch_size, num_points, _ = points.shape
    if not 1 <= count <= num_points:
        raise ValueError(f"count must be in [1, N={num_points}], got {count}")
    device = points.device
    if generator is not None:
        start = torch.randint(num_points, (batch_size,), generator=generator).to(device)
    else:
        start = torch.as_tensor(start_index, dtype=torch.long, device=device).expand(batch_size).clone()
    if bool(((start < 0) | (start >= num_points)).any()):
        raise ValueError(f"start_index must be in [0, {num_points}), got {start.tolist()}")

    # Separate contiguous coordinate planes keep each step to a few cheap elementwise ops.
    x, y, z = (plane.contiguous() for plane in points.unbind(-1))
    selected = torch.empty(batch_size, count, dtype=torch.long, device=device)
    nearest_selected = torch.full((batch_size, num_points), float("inf"), dtype=points.dtype, device=device)
    latest = start[:, None]
    for step in range(count):
        selected[:, step : step + 1] = latest
        squared = (x - x.gather(1, latest)).square_()
        squared += (y - y.gather(1, latest)).square_()
        squared += (z - z.gather(1, latest)).square_()
        torch.minimum(nearest_selected, squared, out=nearest_selected)
        latest = nearest_selected.argmax(dim=1, keepdim=True)
    return selected


def knn_indices(queries: torch.Tensor, points: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (B, G, k) of the k nearest ``points`` (B, N, 3) of each query (B, G, 3), nearest first.

    Exact Euclidean distances (no matrix-product shortcut), computed in query chunks so the
    distance block stays below ~16M elements.
    """
    if queries.dim() != 3 or points.dim() != 3 or queries.shape[-1] != 3 or points.shape[-1] != 3:
        raise ValueError(
            f"need queries (B, G, 3) and points (B, N, 3), got {tuple(queries.shape)}, {tuple(points.shape)}"
        )
    if queries.shape[0] != points.shape[0]:
        raise ValueError(f"batch sizes differ: {queries.shape[0]} queries vs {points.shape[0]} clouds")
    batch_size, num_queries, _ = queries.shape
    num_points = points.shape[1]
    if not 1 <= k <= num_points:
        raise ValueError(f"k must be in [1, N={num_points}], got {k}")
    chunk = max(1, _KNN_CHUNK_ELEMENTS // max(1, batch_size * num_points))
    neighbours = []
    for begin in range(0, num_queries, chunk):
        distances = torch.cdist(
            queries[:, begin : begin + chunk], points, compute_mode="donot_use_mm_for_euclid_dist"
        )
        neighbours.append(distances.topk(k, dim=-1, largest=False, sorted=True).indices)
    return torch.cat(neighbours, dim=1)


def voxel_downsample(
    xyz: torch.Tensor, rgb: torch.Tensor, voxel_size: float, weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Centroid position and mean colour of the points in each occupied voxel.

    Returns (xyz (M, 3), rgb (M, 3), weights (M,)): ``weights`` is the number of input
    points (or the summed input ``weights``) per voxel, so a coarser pass over the result
    still averages the original points. Voxels come out in a fixed (sorted key) order,
    whatever the input order.
    """
    if weights is None:
        weights = torch.ones(xyz.shape[0], dtype=xyz.dtype, device=xyz.device)
    cells = torch.floor(xyz / voxel_size).to(torch.int64)
    cells = cells - cells.min(dim=0).values
    extent = cells.max(dim=0).values + 1
    if math.prod(int(axis) for axis in extent) >= 2**62:
        raise ValueError(f"voxel_size {voxel_size} is too small for a cloud this large (voxel keys overflow)")
    keys = (cells[:, 0] * extent[1] + cells[:, 1]) * extent[2] + cells[:, 2]
    _, voxel_of_point = torch.unique(keys, sorted=True, return_inverse=True)
    num_voxels = int(voxel_of_point.max()) + 1
    totals = torch.zeros(num_voxels, dtype=xyz.dtype, device=xyz.device).index_add_(0, voxel_of_point, weights)
    weighted = torch.cat([xyz, rgb], dim=1) * weights[:, None]
    sums = torch.zeros(num_voxels, 6, dtype=xyz.dtype, device=xyz.device).index_add_(0, voxel_of_point, weighted)
    means = sums / totals[:, None]
    return means[:, :3], means[:, 3:], totals


# --------------------------------------------------------------------------- cleaning


def _as_tensor(values: PointArray) -> torch.Tensor:
    """A tensor view of an array (copied only when numpy marks it read-only, e.g. message buffers)."""
    if isinstance(values, torch.Tensor):
        return values
    array = np.ascontiguousarray(values)
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    if not array.flags.writeable:
        array = array.copy()
    return torch.from_numpy(array)


def _as_float_xyz(xyz: PointArray, cloud_index: int, device: torch.device) -> torch.Tensor:
    tensor = _as_tensor(xyz)
    if tensor.dim() != 2 or tensor.shape[1] != 3:
        raise ValueError(f"cloud {cloud_index}: xyz must have shape (N, 3), got {tuple(tensor.shape)}")
    return tensor.to(device=device, dtype=torch.float32)


def _as_unit_rgb(rgb: PointArray | None, num_points: int, cloud_index: int, device: torch.device) -> torch.Tensor:
    if rgb is None:
        return torch.full((num_points, 3), MISSING_COLOR, dtype=torch.float32, device=device)
    tensor = _as_tensor(rgb)
    if tensor.shape != (num_points, 3):
        raise ValueError(f"cloud {cloud_index}: rgb must have shape ({num_points}, 3), got {tuple(tensor.shape)}")
    if tensor.dtype.is_floating_point:
        colour = tensor.to(device=device, dtype=torch.float32)
        finite = torch.isfinite(colour)
        if bool((colour[finite] > 1.0).any()):  # float colours on the 0-255 scale
            colour = colour / 255.0
        colour = torch.where(finite, colour, torch.full_like(colour, MISSING_COLOR))
        return colour.clamp_(0.0, 1.0)
    return tensor.to(device=device, dtype=torch.float32) / 255.0


def _clean_cloud(
    xyz: PointArray, rgb: PointArray | None, config: PreprocessConfig, cloud_index: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Finite, range-cropped points rotated into the gravity frame, with colours in [0, 1]."""
    points = _as_float_xyz(xyz, cloud_index, device)
    colours = _as_unit_rgb(rgb, points.shape[0], cloud_index, device)
    rotation = torch.as_tensor(rotation_to_gravity(config.up_axis), dtype=torch.float32, device=device)
    points = points @ rotation.T
    finite = torch.isfinite(points).all(dim=1)
    distance = torch.linalg.vector_norm(torch.where(finite[:, None], points, torch.zeros_like(points)), dim=1)
    keep = finite & (distance >= config.min_range) & (distance <= config.max_range)
    if not bool(keep.any()):
        raise ValueError(
            f"cloud {cloud_index} has no valid point: {points.shape[0]} points, "
            f"{int((~finite).sum())} non-finite, none of the finite ones within "
            f"[{config.min_range}, {config.max_range}] m of the sensor"
        )
    return points[keep], colours[keep]


def subsample_points(
    points: torch.Tensor, colours: torch.Tensor, config: PreprocessConfig, generator: torch.Generator
) -> torch.Tensor:
    """Exactly ``num_points`` rows of xyz+rgb (num_points, 6) from a cleaned cloud, by ``config.subsample``.

    Clouds with fewer points (or voxels) are padded by repeating them in order.
    """
    target = config.num_points
    if config.subsample == "random":
        if points.shape[0] > target:
            choice = torch.randperm(points.shape[0], generator=generator)[:target].to(points.device)
            points, colours = points[choice], colours[choice]
    else:
        points, colours, weights = voxel_downsample(points, colours, config.voxel_size)
        if config.subsample == "voxel_fps":
            if points.shape[0] > target:
                choice = farthest_point_sampling(points[None], target)[0]
                points, colours = points[choice], colours[choice]
        else:
            voxel_size = config.voxel_size
            wanted = target * _VOXEL_SURPLUS
            for _ in range(_MAX_VOXEL_COARSENINGS):
                if points.shape[0] <= wanted:
                    break
                # Depth-sensor clouds are surfaces: the voxel count falls with the square of the size.
                voxel_size *= math.sqrt(points.shape[0] / wanted)
                points, colours, weights = voxel_downsample(points, colours, voxel_size, weights)
            if points.shape[0] > target:
                choice = torch.randperm(points.shape[0], generator=generator)[:target].to(points.device)
                points, colours = points[choice], colours[choice]
    rows = torch.cat([points, colours], dim=1)
    if rows.shape[0] < target:
        repeat = torch.arange(target, device=rows.device) % rows.shape[0]
        rows = rows[repeat]
    return rows


def _cloud_seed(seed: int, cloud_index: int) -> int:
    return (seed * 1_000_003 + cloud_index) % (2**63)


# --------------------------------------------------------------------------- public entry points


def prepare_scenes(
    clouds: Sequence[tuple[PointArray, PointArray | None]],
    config: PreprocessConfig,
    *,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> SceneBatch:
    """Turn raw sensor-frame clouds [(xyz (N, 3), rgb (N, 3) or None), ...] into a ``SceneBatch``.

    Steps per cloud: drop non-finite points, rotate to the gravity frame, keep points
    between ``min_range`` and ``max_range`` of the sensor, subsample to ``num_points``
    (padding by repetition when fewer remain), centre on the bounding-box middle and scale
    into the unit ball; then, batched: FPS group centres (first pick: point 0) and kNN groups.
    ``rgb`` is integer 0-255 or float 0-1 (float colours above 1 are taken as 0-255);
    missing or non-finite colour is mid grey. Random choices use
    ``seed`` (cloud i draws from its own generator), so results are reproducible.
    Raises ``ValueError`` when a cloud has no valid point.
    """
    if len(clouds) == 0:
        raise ValueError("prepare_scenes needs at least one cloud")
    target_device = torch.device(device) if device is not None else torch.device("cpu")
    rows = []
    valid_counts = []
    for cloud_index, cloud in enumerate(clouds):
        if len(cloud) != 2:
            raise ValueError(f"cloud {cloud_index}: expected a pair (xyz, rgb or None), got {len(cloud)} items")
        xyz, rgb = cloud
        points, colours = _clean_cloud(xyz, rgb, config, cloud_index, target_device)
        valid_counts.append(points.shape[0])
        generator = torch.Generator().manual_seed(_cloud_seed(seed, cloud_index))
        rows.append(subsample_points(points, colours, config, generator))
    scenes = torch.stack(rows)  # (B, num_points, 6)
    xyz, rgb = scenes[..., :3], scenes[..., 3:]

    offset = (xyz.amax(dim=1) + xyz.amin(dim=1)) / 2.0
    scale = torch.linalg.vector_norm(xyz - offset[:, None], dim=-1).amax(dim=1).clamp_min(1e-6)
    normalised = (xyz - offset[:, None]) / scale[:, None, None]

    center_index = farthest_point_sampling(normalised, config.num_groups, start_index=0)
    batch_index = torch.arange(scenes.shape[0], device=target_device)
    centers = normalised[batch_index[:, None], center_index]  # (B, G, 3)
    neighbour_index = knn_indices(centers, normalised, config.group_size)  # (B, G, K)
    grouped_xyz = normalised[batch_index[:, None, None], neighbour_index] - centers[:, :, None]
    grouped_rgb = rgb[batch_index[:, None, None], neighbour_index]
    return SceneBatch(
        patches=torch.cat([grouped_xyz, grouped_rgb], dim=-1),
        centers=centers,
        offset=offset,
        scale=scale,
        up_axis=config.up_axis,
        num_valid_points=torch.tensor(valid_counts, dtype=torch.long, device=target_device),
    )


def _check_boxes(boxes: torch.Tensor, batch: SceneBatch) -> None:
    if boxes.dim() != 3 or boxes.shape[-1] != 7 or boxes.shape[0] != batch.offset.shape[0]:
        raise ValueError(
            f"boxes must have shape (B={batch.offset.shape[0]}, M, 7), got {tuple(boxes.shape)}"
        )


def boxes_to_normalized(boxes_metres: torch.Tensor, batch: SceneBatch) -> torch.Tensor:
    """Gravity-frame boxes (B, M, 7) in metres -> the batch's normalised units (yaw unchanged)."""
    _check_boxes(boxes_metres, batch)
    offset = batch.offset.to(boxes_metres)[:, None]
    scale = batch.scale.to(boxes_metres)[:, None, None]
    centre = (boxes_metres[..., :3] - offset) / scale
    size = boxes_metres[..., 3:6] / scale
    return torch.cat([centre, size, boxes_metres[..., 6:]], dim=-1)


def boxes_to_metres(boxes_normalized: torch.Tensor, batch: SceneBatch) -> torch.Tensor:
    """Inverse of ``boxes_to_normalized``: normalised (B, M, 7) -> gravity-frame metres."""
    _check_boxes(boxes_normalized, batch)
    offset = batch.offset.to(boxes_normalized)[:, None]
    scale = batch.scale.to(boxes_normalized)[:, None, None]
    centre = boxes_normalized[..., :3] * scale + offset
    size = boxes_normalized[..., 3:6] * scale
    return torch.cat([centre, size, boxes_normalized[..., 6:]], dim=-1)
