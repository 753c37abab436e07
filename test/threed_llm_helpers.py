"""Shared pieces of the model tests: a tiny scene-encoder config and synthetic scenes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from threed_llm_ros.model.point_encoder import PointEncoderConfig
from threed_llm_ros.model.preprocessing import PreprocessConfig, SceneBatch, prepare_scenes
from threed_llm_ros.model.qformer import QFormerConfig
from threed_llm_ros.model.scene_encoder import SceneEncoderConfig
from threed_llm_ros.model.threed_llm_config import ThreeDLLMConfig


TRAINED_CHECKPOINT = Path(__file__).resolve().parent.parent / "models" / "threed-llm-mini"


def shipped_model():
    """The shipped checkpoint loaded with one torch thread (skips the test where it is missing)."""
    import pytest
    import torch

    from threed_llm_ros.model.checkpoint import load_checkpoint

    if not (TRAINED_CHECKPOINT / "model.safetensors").is_file():
        pytest.skip("the shipped checkpoint models/threed-llm-mini is missing")
    torch.set_num_threads(1)
    return load_checkpoint(TRAINED_CHECKPOINT)


def simulated_scene_batches(model, seeds=(1, 2)) -> list[SceneBatch]:
    """Simulated frames of ``seeds`` prepared for ``model``'s scene encoder, one batch each."""
    from threed_llm_ros.data.sim.frames import simulate

    return [prepare_scenes([(frame.points, frame.colors)], model.config.scene_encoder.preprocess, seed=0)
            for frame in (simulate(seed) for seed in seeds)]


def engine_floors() -> dict:
    """The engine-level floors the shipped checkpoint's model card supports (empty: none yet)."""
    card = TRAINED_CHECKPOINT / "model_card.json"
    return json.loads(card.read_text()).get("engine_floors", {}) if card.is_file() else {}


def tiny_config(**overrides) -> ThreeDLLMConfig:
    """The mini preset with a very small scene encoder (8 scene tokens), so tests stay fast."""
    scene_encoder = SceneEncoderConfig(
        preprocess=PreprocessConfig(num_points=512, num_groups=16, group_size=16, up_axis="z"),
        encoder=PointEncoderConfig(num_groups=16, group_size=16, width=64, depth=1, heads=2, patch_channels=32),
        qformer=QFormerConfig(
            num_experts=2, queries_per_expert=8, top_k=1, width=64, depth=1, heads=2, encoder_width=64, router_hidden=32
        ),
    )
    # a short system prompt keeps the sequences (and the tests) short
    values = {"name": "tiny", "scene_encoder": scene_encoder, "max_new_tokens": 16, "system_prompt": "You see a 3D scene."}
    values.update(overrides)
    preset = ThreeDLLMConfig.preset("mini")
    return ThreeDLLMConfig(**{**{k: getattr(preset, k) for k in preset.__dataclass_fields__}, **values})


def box_cloud(seed: int, num_objects: int = 3, points_per_object: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """A floor plus a few solid-coloured boxes of surface points (z up), as (xyz, rgb uint8)."""
    rng = np.random.default_rng(seed)
    floor = np.column_stack([rng.uniform(-2, 2, 800), rng.uniform(-2, 2, 800), np.zeros(800)])
    parts, colours = [floor], [np.full((800, 3), 120, dtype=np.uint8)]
    for _ in range(num_objects):
        centre = np.array([rng.uniform(-1.5, 1.5), rng.uniform(-1.5, 1.5), 0.0])
        size = rng.uniform(0.2, 0.8, 3)
        local = rng.uniform(-0.5, 0.5, (points_per_object, 3)) * size
        face = rng.integers(0, 3, points_per_object)
        local[np.arange(points_per_object), face] = np.sign(local[np.arange(points_per_object), face]) * size[face] / 2
        parts.append(local + centre + np.array([0, 0, size[2] / 2]))
        colours.append(np.tile(rng.integers(0, 256, 3, dtype=np.uint8), (points_per_object, 1)))
    return np.concatenate(parts), np.concatenate(colours)


def scenes(config: ThreeDLLMConfig, seeds: list[int]) -> SceneBatch:
    """A prepared batch of synthetic scenes, one per seed."""
    return prepare_scenes([box_cloud(seed) for seed in seeds], config.scene_encoder.preprocess, seed=0)
