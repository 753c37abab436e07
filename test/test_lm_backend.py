"""``lm_backend: auto``: which language-model backend serves, the one line saying why, and the fallback.

Fast: no model is loaded (the exported decoders themselves are tested in test_onnx_decoder.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from threed_llm_ros.errors import ConfigError, ModelFileError
from threed_llm_ros.runtime import onnx_decoder
from threed_llm_ros.runtime.engine_settings import EngineSettings
from threed_llm_ros.runtime.lm_backend import (
    ReleasedDecoderLayer, checkpoint_is_trained, choose_language_backend, release_torch_decoder, serving_generator,
)

SHIPPED = Path(__file__).resolve().parent.parent / "models" / "threed-llm-mini"


def _checkpoint(directory: Path, trained: bool | None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    extra = {} if trained is None else {"trained": trained}
    (directory / "config.json").write_text(json.dumps({"extra": extra}))
    return directory


def test_the_default_is_auto_everywhere(repo_root: Path) -> None:
    import yaml

    assert EngineSettings(checkpoint="x").lm_backend == "auto"
    node_yaml = yaml.safe_load((repo_root / "config" / "threed_llm.yaml").read_text())
    assert node_yaml["threed_llm_node"]["ros__parameters"]["lm_backend"] == "auto"


def test_auto_is_onnxruntime_on_the_cpu_for_a_trained_checkpoint(tmp_path: Path) -> None:
    for trained in (True, None):  # a checkpoint from training carries no "trained" flag
        checkpoint = _checkpoint(tmp_path / str(trained), trained)
        choice = choose_language_backend(EngineSettings(checkpoint=str(checkpoint)), checkpoint)
        assert choice.backend == "onnxruntime" and choice.fallback_allowed
        assert "lm_backend auto" in choice.note() and "\n" not in choice.note()


@pytest.mark.parametrize(("overrides", "trained", "why"), [
    ({"device": "cuda"}, True, "device is cuda"),
    ({"compile_language_model": True}, True, "compile_language_model"),
    ({}, False, "untrained"),
])
def test_auto_is_torch_where_the_export_does_not_fit(tmp_path: Path, overrides: dict, trained: bool, why: str) -> None:
    checkpoint = _checkpoint(tmp_path / "checkpoint", trained)
    settings = SimpleNamespace(**{**EngineSettings(checkpoint=str(checkpoint)).__dict__, **overrides})
    choice = choose_language_backend(settings, checkpoint)
    assert choice.backend == "torch" and why in choice.note()


def test_explicit_backends_are_kept(tmp_path: Path) -> None:
    checkpoint = _checkpoint(tmp_path / "checkpoint", False)
    for name in ("torch", "onnxruntime"):
        choice = choose_language_backend(EngineSettings(checkpoint=str(checkpoint), lm_backend=name), checkpoint)
        assert choice.backend == name and not choice.fallback_allowed


def test_onnxruntime_on_cuda_is_refused_naming_the_parameter() -> None:
    settings = EngineSettings(checkpoint="x", lm_backend="onnxruntime", device="cuda")
    with pytest.raises(ConfigError, match="lm_backend"):
        settings.validate()


def test_a_failed_export_falls_back_to_torch_only_under_auto(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*arguments, **keywords):
        raise ModelFileError("exporting the language model needs onnxruntime-genai's model builder (No module); "
                             "install it with `pip install onnxruntime-genai==0.18.0 onnx-ir==1.1.0`")

    monkeypatch.setattr(onnx_decoder, "load_onnx_generator", broken)
    checkpoint = _checkpoint(tmp_path / "checkpoint", True)
    model = object()
    generator, backend, note = serving_generator(EngineSettings(checkpoint=str(checkpoint)), checkpoint, model)
    assert generator is model and backend == "torch"
    assert note.startswith("language model: torch (lm_backend auto") and "pip install onnxruntime-genai" in note
    assert "\n" not in note
    with pytest.raises(ConfigError, match="lm_backend"):
        serving_generator(EngineSettings(checkpoint=str(checkpoint), lm_backend="onnxruntime"), checkpoint, model)


def test_checkpoint_is_trained_reads_the_flag(tmp_path: Path) -> None:
    assert not checkpoint_is_trained(_checkpoint(tmp_path / "a", False))
    assert checkpoint_is_trained(_checkpoint(tmp_path / "b", True))
    assert checkpoint_is_trained(tmp_path / "missing")  # unreadable: the loader names the problem later


class _TinyDecoder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed_tokens = torch.nn.Embedding(10, 4)
        self.layers = torch.nn.ModuleList([torch.nn.Linear(4, 4) for _ in range(3)])
        self.norm = torch.nn.LayerNorm(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)


def test_release_drops_the_layers_and_a_later_torch_call_says_why() -> None:
    inner = _TinyDecoder()
    causal_lm = SimpleNamespace(model=inner, get_input_embeddings=lambda: inner.embed_tokens)
    model = SimpleNamespace(causal_lm=causal_lm)
    table = inner.embed_tokens.weight
    assert release_torch_decoder(model) == 3 * (16 + 4) * 4
    assert isinstance(inner.layers[0], ReleasedDecoderLayer) and len(inner.layers) == 1
    assert inner.embed_tokens.weight is table  # the ONNX loop reads the embedding table
    assert release_torch_decoder(model) == 0  # twice is harmless
    with pytest.raises(RuntimeError, match="lm_backend"):
        inner(torch.zeros(1, 4))
