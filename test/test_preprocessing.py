"""Preprocessing: FPS, kNN, cleaning, subsampling, normalisation and box conversion."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from threed_llm_ros.errors import ConfigError
from threed_llm_ros.geometry.frames import to_gravity_frame
from threed_llm_ros.model import preprocessing
from threed_llm_ros.model.preprocessing import (
    PreprocessConfig,
    SceneBatch,
    boxes_to_metres,
    boxes_to_normalized,
    farthest_point_sampling,
    knn_indices,
    prepare_scenes,
    subsample_points,
    voxel_downsample,
)


def brute_force_fps(points: np.ndarray, count: int, start: int) -> list[int]:
    """Reference FPS: each pick maximises the distance to its nearest already-picked point (recomputed from scratch)."""
    chosen = [start]
    for _ in range(count - 1):
        distances = np.linalg.norm(points[:, None, :] - points[chosen][None, :, :], axis=-1).min(axis=1)
        chosen.append(int(np.argmax(distances)))
    return chosen


def grouped_points_metres(batch: SceneBatch) -> torch.Tensor:
    """Every grouped point back in gravity-frame metres, with its colour: (B, G*K, 6)."""
    xyz = (batch.patches[..., :3] + batch.centers[:, :, None]) * batch.scale[:, None, None, None]
    xyz = xyz + batch.offset[:, None, None]
    return torch.cat([xyz, batch.patches[..., 3:]], dim=-1).flatten(1, 2)


def room_cloud(num_points: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random points in front of a z-up sensor (1-6 m away) with random uint8 colours."""
    rng = np.random.default_rng(seed)
    xyz = rng.uniform([1.0, -2.5, -1.0], [6.0, 2.5, 1.5], size=(num_points, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, size=(num_points, 3), dtype=np.uint8)
    return xyz, rgb


# ----------------------------------------------------------------------------- FPS


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fps_matches_brute_force_reference(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    points = torch.rand(3, 300, 3, generator=generator) * torch.tensor([4.0, 3.0, 2.0])
    starts = torch.tensor([0, 17, 299])
    picked = farthest_point_sampling(points, 40, start_index=starts)
    assert picked.shape == (3, 40) and picked.dtype == torch.long
    for scene in range(3):
        expected = brute_force_fps(points[scene].double().numpy(), 40, int(starts[scene]))
        assert picked[scene].tolist() == expected


@pytest.mark.parametrize("seed", [3, 4])
def test_fps_covering_radius_is_at_most_the_picked_separation(seed: int) -> None:
    """The 2-approximation property: every point is closer to a pick than any two picks are to each other."""
    generator = torch.Generator().manual_seed(seed)
    points = torch.randn(2, 500, 3, generator=generator)
    picked = farthest_point_sampling(points, 32)
    for scene in range(2):
        chosen = points[scene, picked[scene]]
        assert len(set(picked[scene].tolist())) == 32
        pairwise = torch.cdist(chosen, chosen) + torch.eye(32) * 1e9
        covering_radius = torch.cdist(points[scene], chosen).min(dim=1).values.max()
        assert covering_radius <= pairwise.min() + 1e-6


def test_fps_random_start_is_seeded_and_validates_arguments() -> None:
    points = torch.rand(4, 100, 3, generator=torch.Generator().manual_seed(0))
    first = farthest_point_sampling(points, 10, generator=torch.Generator().manual_seed(7))
    second = farthest_point_sampling(points, 10, generator=torch.Generator().manual_seed(7))
    other = farthest_point_sampling(points, 10, generator=torch.Generator().manual_seed(8))
    assert torch.equal(first, second)
    assert not torch.equal(first[:, 0], other[:, 0])
    with pytest.raises(ValueError, match="count"):
        farthest_point_sampling(points, 101)
    with pytest.raises(ValueError, match="start_index"):
        farthest_point_sampling(points, 5, start_index=100)


# ----------------------------------------------------------------------------- kNN


@pytest.mark.parametrize("chunk_elements", [1 << 24, 1000])
def test_knn_matches_brute_force(monkeypatch: pytest.MonkeyPatch, chunk_elements: int) -> None:
    monkeypatch.setattr(preprocessing, "_KNN_CHUNK_ELEMENTS", chunk_elements)
    generator = torch.Generator().manual_seed(5)
    points = torch.rand(2, 400, 3, generator=generator)
    queries = torch.rand(2, 37, 3, generator=generator)
    neighbours = knn_indices(queries, points, 9)
    assert neighbours.shape == (2, 37, 9)
    brute = np.linalg.norm(queries.double().numpy()[:, :, None] - points.double().numpy()[:, None], axis=-1)
    expected = np.sort(brute, axis=-1)[..., :9]
    found = np.take_along_axis(brute, neighbours.numpy(), axis=-1)
    np.testing.assert_allclose(found, expected, rtol=0, atol=1e-6)
    assert np.all(np.diff(found, axis=-1) >= -1e-6), "neighbours must come nearest first"


# ----------------------------------------------------------------------------- cleaning and subsampling


def test_nan_and_out_of_range_points_are_dropped() -> None:
    xyz, rgb = room_cloud(200, seed=1)
    bad = np.array(
        [[np.nan, 1.0, 0.0], [2.0, np.inf, 0.0], [0.05, 0.0, 0.0], [0.0, 0.0, -0.02], [9.0, 0.0, 0.0], [0.0, 7.0, 6.0]],
        dtype=np.float32,
    )
    cloud_xyz = np.concatenate([xyz, bad])
    cloud_rgb = np.concatenate([rgb, np.full((len(bad), 3), 255, dtype=np.uint8)])
    config = PreprocessConfig(num_points=256, num_groups=32, group_size=16, subsample="random", up_axis="z")
    batch = prepare_scenes([(cloud_xyz, cloud_rgb)], config)
    assert batch.num_valid_points.tolist() == [200]
    recovered = grouped_points_metres(batch)[0].double()
    distance = recovered[:, :3].norm(dim=1)
    assert torch.isfinite(recovered).all()
    assert bool(((distance >= 0.1) & (distance <= 8.0)).all())
    # Every grouped point is one of the valid input points, with its colour.
    valid = torch.from_numpy(np.concatenate([xyz, rgb / 255.0], axis=1)).double()
    nearest = torch.cdist(recovered, valid).min(dim=1).values
    assert nearest.max() < 1e-4


def test_cloud_without_valid_points_raises_a_clear_error() -> None:
    config = PreprocessConfig(num_points=64, num_groups=8, group_size=4, up_axis="z")
    good = room_cloud(100, seed=2)
    empty = (np.full((10, 3), np.nan, dtype=np.float32), None)
    with pytest.raises(ValueError, match="cloud 1 has no valid point"):
        prepare_scenes([good, empty], config)
    far_only = (np.full((5, 3), 20.0, dtype=np.float32), None)
    with pytest.raises(ValueError, match="cloud 0 has no valid point"):
        prepare_scenes([far_only], config)


def test_small_cloud_is_padded_by_repetition_and_missing_colour_is_grey() -> None:
    xyz, _ = room_cloud(20, seed=3)
    config = PreprocessConfig(num_points=128, num_groups=16, group_size=8, up_axis="z")
    batch = prepare_scenes([(xyz, None)], config)
    assert batch.patches.shape == (1, 16, 8, 6)
    assert torch.allclose(batch.patches[..., 3:], torch.full_like(batch.patches[..., 3:], 0.5))
    recovered = grouped_points_metres(batch)[0, :, :3].double()
    assert torch.cdist(recovered, torch.from_numpy(xyz).double()).min(dim=1).values.max() < 1e-4


def test_voxel_downsample_averages_points_in_each_voxel() -> None:
    xyz = torch.tensor([[0.01, 0.01, 0.01], [0.13, 0.01, 0.01], [0.55, 0.55, 0.55], [0.56, 0.57, 0.58]])
    rgb = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.2, 0.4, 0.6], [0.4, 0.6, 0.8]])
    centroids, colours, counts = voxel_downsample(xyz, rgb, voxel_size=0.1)
    assert counts.tolist() == [1.0, 1.0, 2.0]
    assert torch.allclose(centroids, torch.tensor([[0.01, 0.01, 0.01], [0.13, 0.01, 0.01], [0.555, 0.56, 0.565]]))
    assert torch.allclose(colours[2], torch.tensor([0.3, 0.5, 0.7]))


@pytest.mark.parametrize("method", ["voxel", "random", "voxel_fps"])
def test_subsampling_keeps_the_scene_extent(method: str) -> None:
    xyz, rgb = room_cloud(6000, seed=4)
    config = PreprocessConfig(
        num_points=512, num_groups=64, group_size=8, subsample=method, voxel_size=0.05, up_axis="z"
    )
    batch = prepare_scenes([(xyz, rgb)], config)
    assert batch.patches.shape == (1, 64, 8, 6)
    recovered = grouped_points_metres(batch)[0, :, :3]
    input_extent = torch.from_numpy(xyz.max(axis=0) - xyz.min(axis=0))
    kept_extent = recovered.max(dim=0).values - recovered.min(dim=0).values
    assert bool((kept_extent > 0.85 * input_extent).all()), (kept_extent, input_extent)


def test_voxel_mode_coarsens_a_dense_surface_evenly_without_padding() -> None:
    # A 2 m x 2 m floor sampled every centimetre: 40000 points, 10000 voxels of 2 cm.
    grid = np.stack(np.meshgrid(np.arange(200) * 0.01, np.arange(200) * 0.01, indexing="ij"), axis=-1).reshape(-1, 2)
    xyz = torch.from_numpy(np.concatenate([grid, np.zeros((len(grid), 1))], axis=1).astype(np.float32))
    config = PreprocessConfig(num_points=1024, num_groups=64, group_size=4, up_axis="z")
    kept = subsample_points(xyz, torch.rand(len(xyz), 3), config, torch.Generator().manual_seed(0))
    assert kept.shape == (1024, 6)
    assert len(torch.unique(kept, dim=0)) == 1024, "no padding needed"
    # A coarser grid (about 5 cm here), not a random pick among 2 cm voxels: neighbours stay apart.
    spacing = torch.cdist(kept[:, :3].double(), kept[:, :3].double()) + torch.eye(1024) * 1e9
    assert float(spacing.min()) > 0.04
    extent = kept[:, :2].max(dim=0).values - kept[:, :2].min(dim=0).values
    assert bool((extent > 1.8).all())


def test_same_seed_gives_identical_batches_and_other_seeds_differ() -> None:
    clouds = [room_cloud(3000, seed=5), room_cloud(2500, seed=6)]
    config = PreprocessConfig(num_points=1024, num_groups=32, group_size=16, subsample="random", up_axis="z")
    first = prepare_scenes(clouds, config, seed=11)
    second = prepare_scenes(clouds, config, seed=11)
    other = prepare_scenes(clouds, config, seed=12)
    for name in ("patches", "centers", "offset", "scale"):
        assert torch.equal(getattr(first, name), getattr(second, name)), name
    assert not torch.equal(first.patches, other.patches)


def test_voxel_result_does_not_depend_on_input_point_order() -> None:
    xyz, rgb = room_cloud(3000, seed=7)
    order = np.random.default_rng(0).permutation(len(xyz))
    config = PreprocessConfig(num_points=4096, num_groups=32, group_size=16, voxel_size=0.01, up_axis="z")
    first = prepare_scenes([(xyz, rgb)], config)
    shuffled = prepare_scenes([(xyz[order], rgb[order])], config)
    torch.testing.assert_close(first.patches, shuffled.patches)
    torch.testing.assert_close(first.centers, shuffled.centers)


def test_optical_frame_and_z_up_input_give_the_same_batch() -> None:
    # A level camera's optical frame: x right, y down, z forward.
    rng = np.random.default_rng(8)
    optical = rng.uniform([-2.0, -1.0, 0.5], [2.0, 1.2, 5.0], size=(4000, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, size=(4000, 3), dtype=np.uint8)
    z_up = to_gravity_frame(optical, "-y").astype(np.float32)
    config = PreprocessConfig(num_points=1024, num_groups=64, group_size=16, voxel_size=0.05)
    from_optical = prepare_scenes([(optical, rgb)], config)
    from_z_up = prepare_scenes([(z_up, rgb)], PreprocessConfig(**{**config.to_dict(), "up_axis": "z"}))
    for name in ("patches", "centers", "offset", "scale"):
        torch.testing.assert_close(getattr(from_optical, name), getattr(from_z_up, name), msg=name)
    # Forward in the optical frame (+z) is +x in the gravity frame; down (+y) is -z.
    assert from_optical.offset[0, 0] > 2.0 and from_optical.up_axis == "-y"


def test_torch_and_float_colour_inputs_are_accepted() -> None:
    xyz, rgb = room_cloud(500, seed=9)
    config = PreprocessConfig(num_points=256, num_groups=16, group_size=8, subsample="random", up_axis="z")
    from_numpy = prepare_scenes([(xyz, rgb)], config)
    from_torch = prepare_scenes([(torch.from_numpy(xyz), torch.from_numpy(rgb.astype(np.float32) / 255.0))], config)
    from_float_255 = prepare_scenes([(xyz.astype(np.float64), rgb.astype(np.float32))], config)
    torch.testing.assert_close(from_numpy.patches, from_torch.patches)
    torch.testing.assert_close(from_numpy.patches, from_float_255.patches)


# ----------------------------------------------------------------------------- boxes


def test_box_normalisation_round_trip_and_agreement_with_centres() -> None:
    clouds = [room_cloud(2000, seed=10), room_cloud(1500, seed=11)]
    config = PreprocessConfig(num_points=512, num_groups=16, group_size=8, up_axis="z")
    batch = prepare_scenes(clouds, config)
    generator = torch.Generator().manual_seed(0)
    boxes = torch.cat(
        [torch.rand(2, 5, 3, generator=generator) * 4, torch.rand(2, 5, 3, generator=generator) + 0.1,
         torch.rand(2, 5, 1, generator=generator) * 6 - 3],
        dim=-1,
    )
    round_trip = boxes_to_metres(boxes_to_normalized(boxes, batch), batch)
    torch.testing.assert_close(round_trip, boxes, atol=1e-5, rtol=1e-5)
    # A box centred on a group centre (in metres) lands on that centre in normalised units.
    centre_metres = batch.centers[:, :1] * batch.scale[:, None, None] + batch.offset[:, None]
    box = torch.cat([centre_metres, torch.full((2, 1, 3), 0.5), torch.full((2, 1, 1), 0.3)], dim=-1)
    normalised = boxes_to_normalized(box, batch)
    torch.testing.assert_close(normalised[:, 0, :3], batch.centers[:, 0])
    torch.testing.assert_close(normalised[:, 0, 3:6], 0.5 / batch.scale[:, None].expand(2, 3))
    assert torch.equal(normalised[..., 6], box[..., 6])
    with pytest.raises(ValueError, match="boxes must have shape"):
        boxes_to_normalized(boxes[:1], batch)


# ----------------------------------------------------------------------------- config and real data


def test_config_validation_and_dict_round_trip() -> None:
    config = PreprocessConfig(num_points=2048, num_groups=64, subsample="random", up_axis="z")
    assert PreprocessConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="subsample"):
        PreprocessConfig(subsample="octree")
    with pytest.raises(ConfigError, match="num_groups"):
        PreprocessConfig(num_points=100, num_groups=200)
    with pytest.raises(ConfigError, match="up_axis"):
        PreprocessConfig(up_axis="x")
    with pytest.raises(ConfigError, match="unknown key"):
        PreprocessConfig.from_dict({**config.to_dict(), "num_point": 3})


def test_real_sunrgbd_cloud(realdata) -> None:
    cloud = np.load(realdata / "sunrgbd_mmdet3d" / "lidar" / "000001.npz")["pc"]
    config = PreprocessConfig(num_points=8192, num_groups=128, group_size=32, up_axis="z")
    batch = prepare_scenes([(cloud[:, :3], cloud[:, 3:])], config)
    assert batch.patches.shape == (1, 128, 32, 6)
    assert batch.centers.shape == (1, 128, 3)
    # Some SUN RGB-D points lie beyond 8 m and are cropped.
    assert 40000 < int(batch.num_valid_points[0]) < len(cloud)
    assert float(batch.centers.abs().max()) <= 1.0 + 1e-5
    assert 1.0 < float(batch.scale[0]) < 8.0
    colours = batch.patches[..., 3:]
    assert float(colours.min()) >= 0.0 and float(colours.max()) <= 1.0 and float(colours.std()) > 0.05
    # Groups are local: patch offsets are small compared with the scene (the unit ball).
    offsets = batch.patches[..., :3].norm(dim=-1)
    assert float(offsets.median()) < 0.05 and float(offsets.max()) < 0.5
    # 32 nearest neighbours of distinct FPS centres: the 128 groups should be spread out.
    assert float(torch.pdist(batch.centers[0]).min()) > 0.02
