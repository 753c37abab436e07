"""The real SmolLM2 loader (GGUF, cache, local directory) and LoRA wrapping."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from threed_llm_ros.errors import ConfigError, ModelFileError
from threed_llm_ros.model.language_model import (
    LoRASettings,
    apply_lora,
    gguf_cache_directory,
    language_model_fingerprint,
    load_language_model,
)
from threed_llm_ros.resources import find_smollm2_gguf

pytestmark = pytest.mark.slow


def test_default_model_is_smollm2_and_answers(smollm2) -> None:
    model, tokenizer = smollm2
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config.hidden_size == 576 and model.config.num_hidden_layers == 30
    assert len(tokenizer) == 49152
    assert 134_000_000 < sum(p.numel() for p in model.parameters()) < 135_000_000
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # tied
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], tokenize=False, add_generation_prompt=True
    )
    assert text.startswith("<|im_start|>system") and text.endswith("<|im_start|>assistant\n")
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        output = model.generate(**ids, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(output[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer


def test_cached_copy_equals_the_gguf_and_loads_as_a_directory(smollm2) -> None:
    """The cache is a plain HF directory whose weights equal a fresh GGUF dequantisation."""
    cached_model, _ = smollm2
    cache = gguf_cache_directory(find_smollm2_gguf())
    assert (cache / "config.json").is_file() and (cache / "model.safetensors").is_file()
    fresh, fresh_tokenizer = load_language_model(find_smollm2_gguf(), use_cache=False)
    directory_model, directory_tokenizer = load_language_model(cache)
    reference = fresh.state_dict()
    for other in (cached_model.state_dict(), directory_model.state_dict()):
        assert reference.keys() == other.keys()
        assert all(torch.equal(reference[name], other[name]) for name in reference)
    assert directory_tokenizer.get_vocab() == fresh_tokenizer.get_vocab()
    assert directory_tokenizer.chat_template == fresh_tokenizer.chat_template


def test_missing_or_wrong_paths_raise_model_file_error(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="does not exist"):
        load_language_model(tmp_path / "absent.gguf")
    with pytest.raises(ModelFileError, match="config.json"):
        load_language_model(tmp_path)
    not_gguf = tmp_path / "weights.bin"
    not_gguf.write_bytes(b"\0" * 16)
    with pytest.raises(ModelFileError, match="not a .gguf"):
        load_language_model(not_gguf)
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf file at all")
    with pytest.raises(ModelFileError):
        load_language_model(broken, use_cache=False)


def test_fingerprint_names_size_and_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THREED_LLM_CACHE", str(tmp_path / "cache"))
    first = tmp_path / "a.gguf"
    first.write_bytes(b"abc")
    fingerprint = language_model_fingerprint(first)
    assert fingerprint == {
        "name": "a.gguf",
        "size": 3,
        "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    }
    first.write_bytes(b"abd")  # new content and mtime: not served from the memo
    os.utime(first, ns=(1, 1))
    assert language_model_fingerprint(first)["sha256"] != fingerprint["sha256"]


def test_lora_freezes_the_base_and_trains_adapters_and_norms() -> None:
    model, tokenizer = load_language_model()
    settings = LoRASettings(rank=4, alpha=8.0, dropout=0.0, target_modules=("q_proj", "v_proj"))
    ids = tokenizer("A chair stands next to the table.", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        before = model(ids).logits
    wrapped = apply_lora(model, settings)
    trainable = {name for name, p in wrapped.named_parameters() if p.requires_grad}
    assert trainable, "nothing trainable"
    for name in trainable:
        assert "lora_" in name or "norm" in name, name
    layers = model.config.num_hidden_layers
    assert sum("lora_A" in name for name in trainable) == 2 * layers
    assert sum(name.endswith("norm.weight") for name in trainable) == 2 * layers + 1
    lora_count = sum(p.numel() for n, p in wrapped.named_parameters() if "lora_" in n)
    hidden, kv = 576, model.config.num_key_value_heads * model.config.head_dim
    assert lora_count == layers * 4 * ((hidden + hidden) + (hidden + kv))
    wrapped.eval()
    with torch.inference_mode():
        after = wrapped(input_ids=ids).logits
    assert torch.equal(before, after)  # LoRA B starts at zero: the wrapped model is the base model


def test_lora_settings_validate_and_round_trip(smollm2) -> None:
    settings = LoRASettings(rank=16, target_modules=("q_proj", "gate_proj"), train_norms=False)
    assert LoRASettings.from_dict(settings.to_dict()) == settings
    with pytest.raises(ConfigError):
        LoRASettings(rank=0)
    with pytest.raises(ConfigError):
        LoRASettings.from_dict({"rank": 4, "typo": 1})
    model, _ = load_language_model()
    with pytest.raises(ConfigError, match="attention"):
        apply_lora(model, LoRASettings(target_modules=("attention",)))
