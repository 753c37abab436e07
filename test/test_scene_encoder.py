"""Scene encoder end to end: shapes, config round trip, and that it can learn."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from threed_llm_ros.errors import ConfigError
from threed_llm_ros.model.point_encoder import PointEncoderConfig
from threed_llm_ros.model.preprocessing import PreprocessConfig, prepare_scenes
from threed_llm_ros.model.qformer import QFormerConfig
from threed_llm_ros.model.scene_encoder import SceneEncoder, SceneEncoderConfig


def room_cloud(num_points: int, seed: int, colour: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xyz = rng.uniform([1.0, -2.5, -1.0], [6.0, 2.5, 1.5], size=(num_points, 3)).astype(np.float32)
    if colour is None:
        rgb = rng.uniform(0, 1, size=(num_points, 3))
    else:
        rgb = np.clip(colour + rng.normal(0, 0.05, size=(num_points, 3)), 0, 1)
    return xyz, rgb.astype(np.float32)


def tiny_config() -> SceneEncoderConfig:
    return SceneEncoderConfig(
        preprocess=PreprocessConfig(num_points=256, num_groups=16, group_size=8, up_axis="z"),
        encoder=PointEncoderConfig(num_groups=16, group_size=8, width=32, depth=2, heads=4, patch_channels=16),
        qformer=QFormerConfig(
            num_experts=4, queries_per_expert=4, top_k=2, width=32, depth=1, heads=4, encoder_width=32, router_hidden=16
        ),
        output_dim=24,
    )


def test_mini_end_to_end_shapes() -> None:
    config = SceneEncoderConfig.preset("mini")
    config.preprocess.up_axis = "z"
    torch.manual_seed(0)
    encoder = SceneEncoder(config).eval()
    batch = prepare_scenes([room_cloud(12000, seed=1), room_cloud(9000, seed=2)], config.preprocess)
    with torch.no_grad():
        output = encoder(batch.patches, batch.centers)
        exported = encoder.export_forward(batch.patches, batch.centers)
    assert output.scene_tokens.shape == (2, config.num_scene_tokens, 576)
    assert output.router_probs.shape == output.expert_weights.shape == (2, 8)
    assert output.cls_token.shape == (2, config.encoder.width)
    assert output.load_balance_loss.dim() == 0
    assert torch.isfinite(output.scene_tokens).all()
    assert output.patch_tokens.shape == (2, config.encoder.num_groups, config.encoder.width)
    assert isinstance(exported, tuple) and len(exported) == 3
    assert torch.equal(exported[0], output.scene_tokens) and torch.equal(exported[1], output.expert_weights)
    assert torch.equal(exported[2], output.patch_tokens)


def test_config_json_round_trip_and_validation() -> None:
    for name in ("mini", "base"):
        config = SceneEncoderConfig.preset(name, output_dim=960)
        restored = SceneEncoderConfig.from_dict(json.loads(json.dumps(config.to_dict())))
        assert restored == config
        assert isinstance(restored.encoder, PointEncoderConfig) and restored.output_dim == 960
    assert SceneEncoderConfig.preset("base").preprocess.num_groups == 512
    with pytest.raises(ConfigError, match="num_groups"):
        SceneEncoderConfig(
            preprocess=PreprocessConfig(num_groups=64),
            encoder=PointEncoderConfig(num_groups=128),
            qformer=QFormerConfig(),
        )
    with pytest.raises(ConfigError, match="unknown key"):
        SceneEncoderConfig.from_dict({**tiny_config().to_dict(), "decoder": {}})


@pytest.fixture
def single_thread():
    """Tiny tensors: one thread is as fast, and far less sensitive to other jobs on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_few_adamw_steps_learn_the_scene_colour(single_thread) -> None:
    """Regress each scene's mean colour from its scene tokens.

    The loss must fall well below that of the best constant guess (the targets' variance),
    which a head ignoring the scene (bias only) could reach.
    """
    config = tiny_config()
    rng = np.random.default_rng(3)
    colours = rng.uniform(0.1, 0.9, size=(8, 3))
    batch = prepare_scenes([room_cloud(600, seed=10 + i, colour=colours[i]) for i in range(8)], config.preprocess)
    target = batch.patches[..., 3:].mean(dim=(1, 2))
    constant_guess_loss = float(((target - target.mean(dim=0)) ** 2).mean())
    torch.manual_seed(0)
    encoder = SceneEncoder(config)
    head = torch.nn.Linear(config.output_dim, 3)
    optimiser = torch.optim.AdamW([*encoder.parameters(), *head.parameters()], lr=1e-3)
    losses = []
    for _ in range(60):
        output = encoder(batch.patches, batch.centers)
        loss = torch.nn.functional.mse_loss(head(output.scene_tokens.mean(dim=1)), target)
        optimiser.zero_grad()
        (loss + output.load_balance_loss).backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], losses
    assert losses[-1] < 0.5 * constant_guess_loss, (losses[-1], constant_guess_loss)
