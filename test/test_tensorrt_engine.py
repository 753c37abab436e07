"""TensorRT engine cache: keys, reuse, rebuild of stale engines, the one-line 'not installed' error.

The cache logic is exercised with a real builder function that writes an engine-like
file (no TensorRT needed); the TensorRT build itself runs only where ``tensorrt`` and
CUDA exist, else it is skipped with the reason.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from threed_llm_ros.runtime.export import export_scene_encoder, file_sha256
from threed_llm_ros.runtime.tensorrt_engine import (
    EngineCache,
    EngineCacheKey,
    TensorRTUnavailable,
    engine_cache_for,
    require_tensorrt,
    tensorrt_available,
)

KEY = EngineCacheKey(model_sha256="a" * 64, gpu_name="NVIDIA H100 80GB HBM3", tensorrt_version="10.3.0")


class RecordingBuilder:
    """A real engine builder for the cache: writes the ONNX bytes' hash and a build counter to the engine file."""

    def __init__(self) -> None:
        self.builds: list[Path] = []

    def __call__(self, onnx_path: Path, engine_path: Path) -> dict:
        self.builds.append(engine_path)
        engine_path.write_text(f"engine of {file_sha256(onnx_path)} #{len(self.builds)}")
        return {"precision": "test"}


@pytest.fixture()
def onnx_file(tmp_path: Path) -> Path:
    path = tmp_path / "scene_encoder.onnx"
    path.write_bytes(b"graph version 1")
    return path


@pytest.mark.parametrize(
    "change",
    [{"model_sha256": "b" * 64}, {"gpu_name": "Orin"}, {"tensorrt_version": "8.6.2"}, {"precision": "fp32"},
     {"max_batch": 8}],
)
def test_key_digest_changes_with_every_field(change: dict) -> None:
    assert replace(KEY, **change).digest() != KEY.digest()
    assert replace(KEY).digest() == KEY.digest()


def test_engine_is_built_once_then_reused(tmp_path: Path, onnx_file: Path) -> None:
    cache = EngineCache(tmp_path / "cache")
    builder = RecordingBuilder()
    path, built = cache.get_or_build(KEY, onnx_file, builder)
    assert built and path == cache.engine_path and path.read_text().endswith("#1")
    again, built_again = cache.get_or_build(KEY, onnx_file, builder)
    assert (again, built_again) == (path, False)
    assert len(builder.builds) == 1
    metadata = json.loads(cache.metadata_path.read_text())
    assert metadata["key"]["gpu_name"] == KEY.gpu_name and metadata["engine_sha256"] == file_sha256(path)
    assert metadata["builder"] == {"precision": "test"}


@pytest.mark.parametrize("field", ["model_sha256", "gpu_name", "tensorrt_version"])
def test_stale_engine_is_rebuilt_in_place(tmp_path: Path, onnx_file: Path, field: str) -> None:
    cache = EngineCache(tmp_path / "cache")
    builder = RecordingBuilder()
    cache.get_or_build(KEY, onnx_file, builder)
    changed = replace(KEY, **{field: "changed"})
    assert cache.lookup(changed) is None
    path, built = cache.get_or_build(changed, onnx_file, builder)
    assert built and path.read_text().endswith("#2")
    assert sorted(p.name for p in cache.directory.iterdir()) == [cache.engine_path.name, cache.metadata_path.name]
    assert cache.lookup(KEY) is None, "the old key's engine is gone"
    assert cache.lookup(changed) == path


def test_new_onnx_file_changes_the_model_hash_and_rebuilds(tmp_path: Path, onnx_file: Path) -> None:
    cache = EngineCache(tmp_path / "cache")
    builder = RecordingBuilder()
    key = replace(KEY, model_sha256=file_sha256(onnx_file))
    cache.get_or_build(key, onnx_file, builder)
    onnx_file.write_bytes(b"graph version 2")  # re-exported model
    new_key = replace(KEY, model_sha256=file_sha256(onnx_file))
    path, built = cache.get_or_build(new_key, onnx_file, builder)
    assert built and file_sha256(onnx_file) in path.read_text()


def test_damaged_engine_file_is_rebuilt(tmp_path: Path, onnx_file: Path) -> None:
    cache = EngineCache(tmp_path / "cache")
    builder = RecordingBuilder()
    path, _ = cache.get_or_build(KEY, onnx_file, builder)
    path.write_text("truncated")
    assert cache.lookup(KEY) is None
    _, built = cache.get_or_build(KEY, onnx_file, builder)
    assert built and len(builder.builds) == 2


def test_failed_build_leaves_no_cache_entry(tmp_path: Path, onnx_file: Path) -> None:
    cache = EngineCache(tmp_path / "cache")

    def failing_builder(onnx_path: Path, engine_path: Path) -> None:
        engine_path.write_text("half an engine")
        raise RuntimeError("builder ran out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        cache.get_or_build(KEY, onnx_file, failing_builder)
    assert list(cache.directory.iterdir()) == []
    assert cache.lookup(KEY) is None


def test_default_cache_sits_next_to_the_onnx_file(onnx_file: Path) -> None:
    cache = engine_cache_for(onnx_file)
    assert cache.engine_path == onnx_file.parent / "tensorrt" / "scene_encoder.engine"


@pytest.mark.skipif(tensorrt_available(), reason="TensorRT is installed: the 'not installed' path cannot happen")
def test_missing_tensorrt_is_one_clear_line() -> None:
    with pytest.raises(TensorRTUnavailable) as raised:
        require_tensorrt()
    message = str(raised.value)
    assert message.startswith("TensorRT is not installed: ") and "\n" not in message


def _tensorrt_skip_reason() -> str | None:
    try:
        require_tensorrt()
    except TensorRTUnavailable as error:
        return str(error)
    if not torch.cuda.is_available():
        return "TensorRT is installed but there is no CUDA device"
    return None


@pytest.mark.slow
@pytest.mark.skipif(_tensorrt_skip_reason() is not None, reason=_tensorrt_skip_reason() or "")
def test_real_tensorrt_engine_matches_torch_and_is_cached(tmp_path: Path) -> None:
    from threed_llm_ros.model.scene_encoder import SceneEncoder, SceneEncoderConfig
    from threed_llm_ros.runtime.backends import TensorRTSceneEncoder, TorchSceneEncoder

    torch.manual_seed(0)
    encoder = SceneEncoder(SceneEncoderConfig.preset("mini")).eval()
    graph = export_scene_encoder(encoder, tmp_path / "scene_encoder.onnx")
    first = TensorRTSceneEncoder(graph.path, max_batch=4, fp16=False)
    assert first.rebuilt
    second = TensorRTSceneEncoder(graph.path, max_batch=4, fp16=False)
    assert not second.rebuilt and second.engine_path == first.engine_path
    generator = torch.Generator().manual_seed(1)
    for batch in (1, 3):
        patches = torch.randn(batch, 128, 32, 6, generator=generator) * 0.1
        centers = torch.rand(batch, 128, 3, generator=generator) * 2 - 1
        reference, reference_weights, _ = TorchSceneEncoder(encoder).encode(patches, centers)
        tokens, weights, _ = second.encode(patches, centers)
        assert float((tokens.cpu() - reference).abs().max()) < 1e-3
        assert torch.equal(weights.cpu() > 0, reference_weights > 0)
