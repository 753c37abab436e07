"""The whole model on the real SmolLM2: trainable groups, training, blind mode, generation."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import yaml

from threed_llm_ros.errors import ConfigError
from threed_llm_ros.geometry.boxes import OrientedBox
from threed_llm_ros.model.preprocessing import boxes_to_metres
from threed_llm_ros.model.threed_llm import SCENE_PLACEHOLDER_TOKEN, ThreeDLLM, scene_at
from threed_llm_ros.model.threed_llm_config import ThreeDLLMConfig, load_model_config
from threed_llm_helpers import scenes, tiny_config

pytestmark = pytest.mark.slow

PROMPTS = ["Describe the scene.", "Where is the red box?"]


@pytest.fixture(scope="module")
def model(smollm2) -> ThreeDLLM:
    """One model for the read-only tests (built on the session's cached SmolLM2)."""
    return ThreeDLLM(tiny_config())


@pytest.fixture(scope="module")
def batch(model: ThreeDLLM):
    return scenes(model.config, [1, 2])


def test_exactly_the_expected_parameters_train(model: ThreeDLLM) -> None:
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    embedding = model.causal_lm.get_input_embeddings().weight
    assert model.causal_lm.get_output_embeddings().weight is embedding  # still tied after resizing
    groups = {"lora": 0, "norm": 0, "rows": 0, "scene_encoder": 0, "box_head": 0}
    for name in trainable:
        parameter = model.get_parameter(name)
        if name.startswith("scene_encoder."):
            groups["scene_encoder"] += 1
        elif name.startswith("box_head."):
            groups["box_head"] += 1
        elif "lora_" in name:
            groups["lora"] += 1
        elif parameter is embedding:
            groups["rows"] += 1
        elif name.endswith("norm.weight"):
            groups["norm"] += 1
        else:
            pytest.fail(f"unexpected trainable parameter {name}")
    assert groups == {"lora": 2 * 4 * 30, "norm": 61, "rows": 1, "scene_encoder": groups["scene_encoder"], "box_head": 30}
    encoder_names = {name.split(".")[1] for name in trainable if name.startswith("scene_encoder.")}
    assert encoder_names == {"point_encoder", "point_projector", "query_experts", "modality_projector"}
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert any("q_proj.base_layer.weight" in n for n in frozen) and any("mlp.up_proj.weight" in n for n in frozen)
    assert len(model.added_tokens.tokens) == 128 + 4
    assert embedding.shape[0] == 49152 + 132


def test_one_step_changes_only_new_token_rows(batch) -> None:
    model = ThreeDLLM(tiny_config())
    model.train()
    embedding = model.causal_lm.get_input_embeddings().weight
    base = model.added_tokens.base_vocab_size
    original_rows = embedding[:base].detach().clone()
    new_rows = embedding[base:].detach().clone()
    lora_b = next(p for n, p in model.named_parameters() if "lora_B" in n)
    optimiser = torch.optim.AdamW(model.parameter_groups(weight_decay=0.1), lr=1e-2)
    targets = ["A room with boxes.", "Here: <loc_3><loc_70><loc_9><loc_40><loc_41><loc_42><loc_5> <box3d>"]
    output = model(batch, PROMPTS, targets, [None, np.array([0.1, 0.2, 0.0, 0.3, 0.3, 0.3, 0.0])])
    output.loss.backward()
    assert embedding.grad is not None and torch.count_nonzero(embedding.grad[:base]) == 0
    optimiser.step()
    assert torch.equal(embedding[:base], original_rows)  # bit-identical, weight decay included
    assert not torch.equal(embedding[base:], new_rows)
    assert torch.count_nonzero(lora_b) > 0


def test_training_steps_lower_the_loss(batch) -> None:
    model = ThreeDLLM(tiny_config())
    model.train()
    box = np.array([0.2, -0.3, 0.1, 0.25, 0.2, 0.4, 0.7])
    targets = ["A floor with three boxes.", f"It is at {model.box_text(box)} <box3d>"]
    boxes = [None, box]
    optimiser = torch.optim.AdamW(model.parameter_groups(), lr=2e-3)
    losses, box_losses = [], []
    for _ in range(4):
        output = model(batch, PROMPTS, targets, boxes, return_logits=False)
        optimiser.zero_grad()
        output.loss.backward()
        optimiser.step()
        losses.append(output.loss.item())
        box_losses.append(output.box_loss.item())
    assert output.logits is None and output.box_prediction is not None
    assert box_losses[0] > 0 and output.load_balance_loss.item() > 0
    assert losses[-1] < 0.8 * losses[0], losses
    assert box_losses[-1] < box_losses[0], box_losses


def test_loss_covers_only_targets_and_ignores_padding(model: ThreeDLLM, batch) -> None:
    """The batch loss is the token-weighted mean of the per-sample losses: padding adds nothing."""
    targets = ["Two boxes.", "The red box is on the left of the blue chair, near the wall."]
    with torch.inference_mode():
        together = model(batch, PROMPTS, targets)
        alone = [model(scene_at(batch, i), [PROMPTS[i]], [targets[i]]) for i in range(2)]
        # changing the prompt changes the loss but never makes the prompt a target
        other_prompt = model(scene_at(batch, 0), ["Say something else entirely."], [targets[0]])
    counts = [len(model.tokenizer(t + model.tokenizer.eos_token, add_special_tokens=False)["input_ids"]) for t in targets]
    weighted = sum(o.language_loss.item() * n for o, n in zip(alone, counts)) / sum(counts)
    assert together.language_loss.item() == pytest.approx(weighted, rel=1e-4)
    assert other_prompt.language_loss.item() != pytest.approx(alone[0].language_loss.item(), rel=1e-6)
    # logits of the shorter (padded) sample match its unpadded run on its own positions
    length = alone[0].logits.shape[1]
    assert torch.allclose(together.logits[0, :length], alone[0].logits[0], atol=2e-3)


def test_blind_mode_drops_the_scene(model: ThreeDLLM, batch) -> None:
    assert SCENE_PLACEHOLDER_TOKEN not in model.prompt_text("Hi", 8, blind=True)
    assert model.prompt_text("Hi", 8, blind=False).count(SCENE_PLACEHOLDER_TOKEN) == 8
    with torch.inference_mode():
        seeing = model(batch, PROMPTS, ["A room.", "Left."])
        blind = model(batch, PROMPTS, ["A room.", "Left."], blind=True)
        blind_without_scene = model(None, PROMPTS, ["A room.", "Left."], blind=True)
        other_scene = model(scenes(model.config, [5, 6]), PROMPTS, ["A room.", "Left."])
    assert seeing.logits.shape[1] == blind.logits.shape[1] + 8 + 2 + 1  # Q placeholders, delimiters, newline
    assert not torch.allclose(seeing.language_loss, blind.language_loss)
    assert torch.equal(blind.logits, blind_without_scene.logits)
    assert blind.load_balance_loss.item() == 0.0
    assert not torch.allclose(seeing.logits, other_scene.logits)  # the scene tokens reach the LM


def test_sampled_generation_is_deterministic_per_seed(model: ThreeDLLM, batch) -> None:
    scene = scene_at(batch, 0)
    first = model.generate(scene, "Describe the scene.", do_sample=True, temperature=1.0, seed=7, max_new_tokens=8)
    second = model.generate(scene, "Describe the scene.", do_sample=True, temperature=1.0, seed=7, max_new_tokens=8)
    assert first.text == second.text and first.token_count == second.token_count
    assert 1 <= first.token_count <= 8
    others = {
        model.generate(scene, "Describe the scene.", do_sample=True, temperature=1.0, seed=s, max_new_tokens=4).text
        for s in (8, 9)
    }
    # the seed matters: two other seeds differ, or one is not a prefix of seed 7's text
    assert len(others) > 1 or not first.text.startswith(next(iter(others)))


def test_greedy_streaming_and_stop_strings(model: ThreeDLLM, batch) -> None:
    scene = scene_at(batch, 1)
    pieces: list[str] = []
    full = model.generate(scene, "Describe the scene in one sentence.", max_new_tokens=10, on_token=pieces.append)
    assert len(pieces) >= 2 and "".join(pieces) == full.text
    assert full.timings["prefill_s"] > 0 and full.timings["prompt_tokens"] > 8
    words = full.text.split()
    assert len(words) >= 3, full.text
    stop = " " + words[2]
    cut_pieces: list[str] = []
    cut = model.generate(
        scene, "Describe the scene in one sentence.", max_new_tokens=10, stop_strings=[stop], on_token=cut_pieces.append
    )
    assert cut.text == full.text[: full.text.index(stop)]
    assert "".join(cut_pieces) == cut.text
    assert cut.token_count < full.token_count
    limited = model.generate(scene, "Describe the scene in one sentence.", max_new_tokens=3)
    assert limited.token_count == 3 and full.text.startswith(limited.text)


def test_a_deadline_stops_decoding_and_says_so(model: ThreeDLLM, batch) -> None:
    scene = scene_at(batch, 1)
    prompt = "Describe the scene in one sentence."
    full = model.generate(scene, prompt, max_new_tokens=6, deadline=time.monotonic() + 3600)
    assert full.token_count == 6 and not full.cut_short
    pieces: list[str] = []
    cut = model.generate(scene, prompt, max_new_tokens=6, deadline=time.monotonic(), on_token=pieces.append)
    assert cut.cut_short and cut.token_count == 1  # the prefill's token, then the deadline
    assert full.text.startswith(cut.text) and "".join(pieces) == cut.text


def test_boxes_come_back_in_metres_from_tokens_and_head(model: ThreeDLLM, batch) -> None:
    scene = scene_at(batch, 0)
    box = OrientedBox(center=(0.5, -0.4, 0.3), size=(0.6, 0.4, 0.5), yaw=0.3)
    answer_prefix = f"{model.box_text_metres(box, scene)} <box3d>"
    result = model.generate(scene, "Where is the box?", answer_prefix=answer_prefix, max_new_tokens=2)
    assert len(result.boxes_from_tokens) >= 1
    found = result.boxes_from_tokens[0]
    scale = float(scene.scale[0])
    assert np.allclose(found.center, box.center, atol=0.5 * 2.4 / 128 * scale + 1e-6)
    assert np.allclose(np.log(found.size), np.log(box.size), atol=0.5 * np.log(2.5 / 0.005) / 128 + 1e-6)
    assert abs(found.yaw - box.yaw) <= np.pi / 128 + 1e-6
    # the head's box at generation equals the head's box in teacher forcing at the same position
    assert result.box_from_head is not None
    with torch.inference_mode():
        forced = model(scene, ["Where is the box?"], [answer_prefix], [np.zeros(7)])
    expected = boxes_to_metres(model.box_head.decode(forced.box_prediction)[None].double(), scene)[0, 0]
    assert np.allclose(result.box_from_head.to_array(), expected.numpy(), atol=1e-4)
    assert model.generate(scene, "Hello", max_new_tokens=2).box_from_head is None


def test_config_presets_files_and_validation(repo_root) -> None:
    for name in ("mini", "base"):
        preset = ThreeDLLMConfig.preset(name)
        assert ThreeDLLMConfig.from_dict(preset.to_dict()) == preset
        path = repo_root / "config" / f"model_{name}.yaml"
        assert ThreeDLLMConfig.from_dict(yaml.safe_load(path.read_text())) == preset, f"{path} drifted from the preset"
        assert load_model_config(str(path)) == preset
    assert ThreeDLLMConfig.preset("base").lora.rank > ThreeDLLMConfig.preset("mini").lora.rank
    with pytest.raises(ConfigError):
        ThreeDLLMConfig.preset("huge")
    with pytest.raises(ConfigError):
        ThreeDLLMConfig.from_dict({"name": "x", "typo": 1})
    with pytest.raises(ConfigError):
        load_model_config("no/such/config")
