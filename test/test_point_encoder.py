"""Point-BERT-style encoder: shapes, order invariance, preset sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from threed_llm_ros.errors import ConfigError
from threed_llm_ros.model.point_encoder import PointEncoder, PointEncoderConfig
from threed_llm_ros.model.preprocessing import PreprocessConfig, prepare_scenes

SMALL = PointEncoderConfig(num_groups=16, group_size=8, width=32, depth=2, heads=4, patch_channels=16)


def small_encoder(seed: int = 0) -> PointEncoder:
    torch.manual_seed(seed)
    return PointEncoder(SMALL).eval()


def random_input(batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    patches = torch.cat(
        [torch.randn(batch, 16, 8, 3, generator=generator) * 0.05, torch.rand(batch, 16, 8, 3, generator=generator)],
        dim=-1,
    )
    centers = torch.rand(batch, 16, 3, generator=generator) * 2 - 1
    return patches, centers


def parameter_count(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def test_output_shape_and_cls_first() -> None:
    encoder = small_encoder()
    patches, centers = random_input(3, seed=1)
    with torch.no_grad():
        tokens = encoder(patches, centers)
    assert tokens.shape == (3, 17, 32)
    assert torch.isfinite(tokens).all()
    # The cls token does not come from any patch: it differs from every patch token.
    assert (tokens[:, :1] - tokens[:, 1:]).abs().amax(dim=-1).min() > 1e-3
    with pytest.raises(ValueError, match="patches must be"):
        encoder(patches[..., :3], centers)


def test_invariant_to_point_order_in_groups_and_equivariant_to_group_order() -> None:
    encoder = small_encoder()
    patches, centers = random_input(2, seed=2)
    generator = torch.Generator().manual_seed(3)
    within = torch.argsort(torch.rand(2, 16, 8, generator=generator), dim=-1)
    shuffled = torch.gather(patches, 2, within[..., None].expand_as(patches))
    group_order = torch.randperm(16, generator=generator)
    shuffled, shuffled_centers = shuffled[:, group_order], centers[:, group_order]
    with torch.no_grad():
        original = encoder(patches, centers)
        permuted = encoder(shuffled, shuffled_centers)
        moved = encoder(patches, centers + torch.tensor([0.3, 0.0, 0.0]))
    torch.testing.assert_close(permuted[:, 0], original[:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(permuted[:, 1:], original[:, 1:][:, group_order], atol=1e-5, rtol=1e-5)
    # Positions matter: the same patches somewhere else give other tokens.
    assert (moved[:, 0] - original[:, 0]).abs().max() > 1e-3


def test_shuffled_input_cloud_gives_the_same_encoding() -> None:
    rng = np.random.default_rng(4)
    xyz = rng.uniform([1.0, -2.0, -1.0], [5.0, 2.0, 1.5], size=(2000, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, size=(2000, 3), dtype=np.uint8)
    order = rng.permutation(2000)
    config = PreprocessConfig(num_points=1024, num_groups=16, group_size=8, voxel_size=0.01, up_axis="z")
    encoder = small_encoder()
    with torch.no_grad():
        first = prepare_scenes([(xyz, rgb)], config)
        second = prepare_scenes([(xyz[order], rgb[order])], config)
        torch.testing.assert_close(encoder(first.patches, first.centers), encoder(second.patches, second.centers))


def test_presets_have_the_expected_sizes() -> None:
    base = PointEncoderConfig.preset("base")
    assert (base.num_groups, base.group_size, base.width, base.depth, base.heads) == (512, 32, 384, 12, 6)
    base_parameters = parameter_count(PointEncoder(base))
    # MiniGPT-3D's Point-BERT encoder has about 22M parameters.
    assert 20e6 < base_parameters < 24e6, base_parameters
    mini_parameters = parameter_count(PointEncoder(PointEncoderConfig.preset("mini")))
    assert 1e6 < mini_parameters < 5e6, mini_parameters
    with pytest.raises(ConfigError, match="preset"):
        PointEncoderConfig.preset("huge")


def test_config_validation_and_round_trip() -> None:
    assert PointEncoderConfig.from_dict(SMALL.to_dict()) == SMALL
    with pytest.raises(ConfigError, match="heads"):
        PointEncoderConfig(width=30, heads=4)
    with pytest.raises(ConfigError, match="in_channels"):
        PointEncoderConfig(in_channels=2)


def test_gradients_reach_every_parameter() -> None:
    encoder = small_encoder()
    encoder.train()
    patches, centers = random_input(2, seed=5)
    encoder(patches, centers).square().mean().backward()
    missing = [
        name for name, parameter in encoder.named_parameters() if parameter.grad is None or not parameter.grad.any()
    ]
    assert missing == []
