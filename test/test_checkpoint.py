"""Checkpoints hold only trained tensors and rebuild the exact model; parameter reports and model-info."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from threed_llm_ros.errors import ConfigError, ModelFileError
from threed_llm_ros.model import info
from threed_llm_ros.model.checkpoint import load_checkpoint, parameter_report, save_checkpoint
from threed_llm_ros.model.threed_llm import ThreeDLLM
from threed_llm_helpers import scenes, tiny_config

pytestmark = pytest.mark.slow

PROMPTS = ["Describe the scene.", "Where is the red box?"]
TARGETS = ["A floor and boxes.", "At <loc_1><loc_2><loc_3><loc_4><loc_5><loc_6><loc_7> <box3d>"]
BOXES = [None, np.array([0.1, 0.1, 0.1, 0.3, 0.3, 0.3, 0.2])]


@pytest.fixture(scope="module")
def trained(smollm2, tmp_path_factory) -> tuple[ThreeDLLM, Path]:
    """A model after one optimiser step (so every trained tensor differs from its init), saved."""
    model = ThreeDLLM(tiny_config())
    model.train()
    batch = scenes(model.config, [3, 4])
    optimiser = torch.optim.AdamW(model.parameter_groups(), lr=1e-2)
    model(batch, PROMPTS, TARGETS, BOXES, return_logits=False).loss.backward()
    optimiser.step()
    model.eval()
    directory = save_checkpoint(model, tmp_path_factory.mktemp("checkpoint") / "tiny")
    return model, directory


def test_checkpoint_holds_only_trained_tensors(trained) -> None:
    model, directory = trained
    weights = directory / "model.safetensors"
    assert weights.stat().st_size < 10 * 2**20, "the frozen base LM must not be in the checkpoint"
    with safe_open(str(weights), "pt") as stored:
        names = set(stored.keys())
        rows = stored.get_tensor("token_rows.input_embeddings")
    assert rows.shape == (len(model.added_tokens.tokens), 576)
    language_names = [n for n in names if n.startswith("language_model.")]
    assert language_names and all("lora_" in n or n.endswith("norm.weight") for n in language_names)
    assert not any("embed_tokens" in n or "q_proj.base_layer" in n or "mlp" in n for n in names)
    assert any(n.startswith("scene_encoder.query_experts") for n in names)
    assert any(n.startswith("box_head.") for n in names)
    document = json.loads((directory / "config.json").read_text())
    assert document["language_model"]["name"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert len(document["language_model"]["sha256"]) == 64
    assert document["added_tokens"]["tokens"][:2] == ["<loc_0>", "<loc_1>"]
    assert document["model"]["name"] == "tiny"


def test_loaded_checkpoint_reproduces_logits_exactly(trained) -> None:
    model, directory = trained
    loaded = load_checkpoint(directory)
    batch = scenes(model.config, [5, 6])
    with torch.inference_mode():
        expected = model(batch, PROMPTS, TARGETS, BOXES)
        actual = loaded(batch, PROMPTS, TARGETS, BOXES)
        fresh = ThreeDLLM(tiny_config())(batch, PROMPTS, TARGETS, BOXES)
    assert torch.equal(expected.logits, actual.logits)
    assert torch.equal(expected.box_prediction.center, actual.box_prediction.center)
    assert not torch.equal(expected.logits, fresh.logits)  # the trained state really was restored
    assert loaded.config == model.config


def test_checkpoint_on_a_different_base_model_is_refused(trained, tmp_path: Path) -> None:
    _, directory = trained
    other = tmp_path / "other"
    other.mkdir()
    (other / "model.safetensors").write_bytes((directory / "model.safetensors").read_bytes())
    document = json.loads((directory / "config.json").read_text())
    document["language_model"]["sha256"] = "0" * 64
    (other / "config.json").write_text(json.dumps(document))
    with pytest.raises(ConfigError, match="not the one"):
        load_checkpoint(other)
    with pytest.raises(ModelFileError):
        load_checkpoint(tmp_path / "nothing-here")
    (other / "model.safetensors").unlink()
    with pytest.raises(ModelFileError):
        load_checkpoint(other, check_language_model=False)


def test_parameter_report_adds_up(trained) -> None:
    model, _ = trained
    report = parameter_report(model)
    components = report["components"]
    assert set(components) == {
        "point encoder", "projector", "Q-Former / MQE", "box head", "token rows", "LoRA", "norms", "frozen LM"
    }
    assert components["frozen LM"]["trainable"] == 0
    assert 134_000_000 < components["frozen LM"]["total"] < 135_000_000
    assert components["token rows"]["trainable"] == 132 * 576
    assert components["norms"]["trainable"] == 61 * 576
    assert components["LoRA"]["trainable"] == 30 * 8 * (576 * 2 + 576 * 2 + 576 + 192 + 576 + 192)
    assert report["total"] == sum(p.numel() for p in model.parameters())
    assert report["trainable"] == sum(c["trainable"] for c in components.values())


def test_model_info_prints_tables_for_presets_and_checkpoints(trained, capsys) -> None:
    _, directory = trained
    assert info.main(["--config", "mini", "--json"]) == 0
    mini = json.loads(capsys.readouterr().out)
    assert mini["name"] == "mini" and mini["trainable"] < 10_000_000  # MiniGPT-3D trains 47.8 M
    assert info.main(["--config", "base", "--json"]) == 0
    base = json.loads(capsys.readouterr().out)
    assert mini["trainable"] < base["trainable"] < 47_800_000
    assert info.main(["--config", str(directory)]) == 0
    table = capsys.readouterr().out
    assert "model: tiny" in table and "frozen LM" in table and "LoRA" in table
    assert info.main(["--config", "no-such-preset"]) == 2


def test_checkpoint_does_not_depend_on_current_trainable_flags(trained, tmp_path: Path) -> None:
    """A stage that froze LoRA and the encoder still saves them (what load expects)."""
    model, directory = trained
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    try:
        for name, parameter in model.named_parameters():
            if "lora_" in name or name.startswith("scene_encoder."):
                parameter.requires_grad_(False)
        report = parameter_report(model)
        assert report["components"]["LoRA"]["trainable"] == 0 < report["components"]["LoRA"]["total"]
        assert report["components"]["point encoder"]["trainable"] == 0
        save_checkpoint(model, tmp_path / "frozen-stage")
    finally:
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(flags[name])
    assert (tmp_path / "frozen-stage" / "model.safetensors").read_bytes() == (directory / "model.safetensors").read_bytes()
