"""Object-centric scene tokens (``model/object_tokens.py``): features, the projector, its
training against the frozen language model, and the engine's free text that reads them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from threed_llm_ros.data.catalog import CATEGORY_NAMES, COLOR_NAMES
from threed_llm_ros.data.programs import DetectedObject
from threed_llm_ros.errors import ModelFileError
from threed_llm_ros.geometry.boxes import OrientedBox
from threed_llm_ros.objects.describe import named_categories
from threed_llm_ros.model.object_tokens import (
    GEOMETRY_FEATURES, ObjectTokenConfig, ObjectTokenProjector, features_of_objects, load_object_tokens,
    save_object_tokens,
)
from threed_llm_ros.train.object_tokens import ObjectTokenTrainConfig, build_examples, noisy_features
from threed_llm_helpers import TRAINED_CHECKPOINT

CHAIR = DetectedObject("chair", "red", OrientedBox((2.0, 0.5, -0.8), (0.5, 0.5, 0.9), 0.3), 0.8)


def _projector(tokens_per_object: int = 2) -> ObjectTokenProjector:
    config = ObjectTokenConfig(output_dim=16, hidden=8, tokens_per_object=tokens_per_object)
    projector = ObjectTokenProjector(config)
    generator = torch.Generator().manual_seed(0)
    projector.set_word_embeddings(torch.randn(len(CATEGORY_NAMES), 16, generator=generator),
                                  torch.randn(len(COLOR_NAMES), 16, generator=generator))
    return projector


def test_features_carry_the_distributions_and_the_box() -> None:
    ranked = type("Ranked", (), {"category": "chair", "color": "red", "box": CHAIR.box, "score": 0.8,
                                 "categories": (("chair", 0.7), ("sofa", 0.2), ("other", 0.1))})()
    features = features_of_objects([ranked, CHAIR], floor_z=-1.2, config=ObjectTokenConfig())
    assert features.stacked().shape == (2, len(CATEGORY_NAMES) + len(COLOR_NAMES) + GEOMETRY_FEATURES)
    np.testing.assert_allclose(features.category_probs.sum(axis=1), 1.0, atol=1e-5)
    chair, sofa = CATEGORY_NAMES.index("chair"), CATEGORY_NAMES.index("sofa")
    assert features.category_probs[0, chair] > features.category_probs[0, sofa] > features.category_probs[0, 0]
    assert features.category_probs[1, chair] == pytest.approx(1.0)  # a plain DetectedObject: its one name
    assert features.color_probs[0, COLOR_NAMES.index("red")] == 1.0
    assert features.geometry[0, 3] == pytest.approx((-0.8 + 1.2) / 2)  # height above the floor, halved
    assert features.geometry[0, -1] == pytest.approx(0.8)
    assert features.labels == ["red chair", "red chair"]


def test_projector_starts_as_the_word_tokens_and_keeps_object_order() -> None:
    projector = _projector()
    features = features_of_objects([CHAIR, DetectedObject("cup", "blue", CHAIR.box, 0.9)], -1.2, projector.config)
    tokens = projector.tokens_for(features)
    assert tokens.shape == (1, 4, 16)
    chair_word = projector.category_words[CATEGORY_NAMES.index("chair")]
    cup_word = projector.category_words[CATEGORY_NAMES.index("cup")]
    blue_word = projector.color_words[COLOR_NAMES.index("blue")]
    assert torch.allclose(tokens[0, 1], chair_word, atol=0.1)  # untrained: the words, plus a small learned part
    assert torch.allclose(tokens[0, 3], cup_word, atol=0.1)
    assert torch.allclose(tokens[0, 2], blue_word, atol=0.1)
    assert not torch.allclose(tokens[0, 1], cup_word, atol=0.1)
    empty = projector.tokens_for(features_of_objects([], -1.2, projector.config))
    assert empty.shape == (1, 0, 16)
    assert _projector(tokens_per_object=1).tokens_for(features).shape == (1, 2, 16)


def test_projector_round_trips_and_refuses_a_foreign_directory(tmp_path) -> None:
    projector = _projector()
    save_object_tokens(projector, tmp_path / "tokens", {"training": {"steps": 0}})
    loaded = load_object_tokens(tmp_path / "tokens")
    loaded.set_word_embeddings(projector.category_words, projector.color_words)
    features = features_of_objects([CHAIR], -1.2, projector.config)
    assert torch.equal(loaded.tokens_for(features), projector.tokens_for(features))
    with pytest.raises(ModelFileError, match="train-object-tokens"):
        load_object_tokens(tmp_path)
    (tmp_path / "tokens" / "config.json").write_text("{not json")  # a damaged file: one clear error, not a traceback
    with pytest.raises(ModelFileError, match="cannot be read"):
        load_object_tokens(tmp_path / "tokens")
    with pytest.raises(RuntimeError, match="set_word_embeddings"):
        ObjectTokenProjector(projector.config).tokens_for(features)


def test_training_examples_never_name_a_dropped_object() -> None:
    config = ObjectTokenTrainConfig(scenes=12, variants=2, drop_faint=1.0)
    variants, floors, examples = build_examples(config, progress=False)
    assert examples and len(variants) == len(floors)
    for example in examples:
        if example.task == "caption":
            kept = {obj.category for obj in variants[example.scene]}
            assert named_categories(example.target) <= kept, (example.target, kept)
    rng = np.random.default_rng(0)
    features = noisy_features(variants[0], floors[0], config, rng)
    assert len(features) <= config.max_objects
    assert np.all(np.diff(features.geometry[:, -1]) <= 0)  # best first


@pytest.mark.slow
def test_tiny_training_lowers_the_validation_loss(tmp_path) -> None:
    """A few steps on the real (untrained-adapter) language model: the held-out loss falls."""
    from threed_llm_ros.model.checkpoint import load_checkpoint
    from threed_llm_ros.runtime.engine_settings import build_untrained_checkpoint
    from threed_llm_ros.train.object_tokens import train_object_tokens

    torch.set_num_threads(1)
    checkpoint = build_untrained_checkpoint(tmp_path / "untrained")
    config = ObjectTokenTrainConfig(checkpoint=str(checkpoint), output=str(tmp_path / "tokens"), scenes=8, variants=1,
                                    steps=8, batch=4, caption_share=0.0, learning_rate=1e-2, validation_examples=8)
    record = train_object_tokens(config, model=load_checkpoint(checkpoint), progress=False)
    assert record["validation_loss_after"] < record["validation_loss_before"]
    assert load_object_tokens(tmp_path / "tokens").config.max_objects == config.max_objects


# --------------------------------------------------------------------------- the shipped projector

# Simulated test frames of `threed-llm eval-free-text` (seeds far from every training seed), the first six of its 30
CAPTION_SEEDS = tuple(range(90_000, 90_006))
needs_shipped_projector = pytest.mark.skipif(
    not (TRAINED_CHECKPOINT / "object_tokens" / "model.safetensors").is_file(),
    reason="the shipped object-token projector models/threed-llm-mini/object_tokens is missing",
)


@pytest.fixture(scope="module")
def objects_engine():
    from threed_llm_ros.runtime.engine import InferenceEngine
    from threed_llm_ros.runtime.engine_settings import EngineSettings

    torch.set_num_threads(1)
    engine = InferenceEngine(EngineSettings(checkpoint=str(TRAINED_CHECKPOINT), free_text_tokens="objects",
                                            max_new_tokens=48))
    engine.load()
    return engine


@needs_shipped_projector
@pytest.mark.slow
def test_shipped_projector_captions_name_what_is_there_and_invent_less(objects_engine) -> None:
    """The language model's free-text captions of fixed simulated frames, read from the object
    list's tokens, each name a category that is in the frame, and together name at most half as
    many absent categories as the same model reading the scene encoder's tokens. (A single frame
    is no test: over eval-free-text's 30 frames 70-73 % of the object tokens' captions still name
    something absent, and which ones flips with a few centimetres of box depth.)"""
    from threed_llm_ros.data.sim.frames import simulate
    from threed_llm_ros.eval.robot_input import frame_cloud
    from threed_llm_ros.runtime.engine import CAPTION_PROMPT

    invented = {"objects": [], "scene": []}
    for seed in CAPTION_SEEDS:
        frame = simulate(seed)
        present = {obj.category for obj in frame.objects if obj.visible_pixels > 0}
        cloud = frame_cloud(frame)
        reply = objects_engine.free_text(cloud, CAPTION_PROMPT)
        assert "object_tokens_s" in reply.timings
        named = named_categories(reply.text)
        assert named & present, (seed, reply.text)
        invented["objects"] += sorted(named - present)
        scene = objects_engine.free_text(cloud, CAPTION_PROMPT, tokens="scene")
        invented["scene"] += sorted(named_categories(scene.text) - present)
    assert invented["scene"], "the scene encoder's tokens invent nothing here: the check could not fail"
    assert len(invented["objects"]) <= len(invented["scene"]) / 2, invented


@needs_shipped_projector
@pytest.mark.slow
def test_free_text_answers_read_the_object_tokens(objects_engine) -> None:
    """answer() without programs is free text from the same object list (the node's, ask's and eval's path)."""
    from threed_llm_ros.data.sim.frames import simulate
    from threed_llm_ros.eval.robot_input import frame_cloud

    assert objects_engine.object_tokens is not None
    cloud = frame_cloud(simulate(CAPTION_SEEDS[0]))
    reply = objects_engine.answer(cloud, "What colour is the biggest thing here?", programs=False)
    assert reply.text.strip() and "object_tokens_s" in reply.timings
    scene = objects_engine.free_text(cloud, "What colour is the biggest thing here?", tokens="scene")
    assert "object_tokens_s" not in scene.timings
    with pytest.raises(ValueError, match="tokens must be"):
        objects_engine.free_text(cloud, "Hi", tokens="words")
