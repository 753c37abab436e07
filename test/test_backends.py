"""Scene-encoder backends inside the inference engine: onnxruntime gives what torch gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from threed_llm_ros.data.sim.frames import simulate
from threed_llm_ros.errors import ConfigError, ModelFileError
from threed_llm_ros.runtime.backends import (
    OnnxRuntimeSceneEncoder,
    SceneEncoderBackend,
    TorchSceneEncoder,
    onnxruntime_providers,
)
from threed_llm_ros.runtime.engine import InferenceEngine
from threed_llm_ros.runtime.engine_settings import EngineSettings, build_untrained_checkpoint
from threed_llm_ros.runtime.replies import SceneCloud
from threed_llm_ros.runtime.export import BOX_HEAD_FILE, EXPORT_DIRECTORY, SCENE_ENCODER_FILE
from threed_llm_ros.runtime.tensorrt_engine import tensorrt_available



@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return build_untrained_checkpoint(tmp_path_factory.mktemp("backends") / "untrained-mini")


@pytest.fixture(scope="module")
def cloud() -> SceneCloud:
    frame = simulate(5)
    return SceneCloud(frame.points, frame.colors, "camera_color_optical_frame", (1, 2))


def _engine(checkpoint: Path, backend: str) -> InferenceEngine:
    engine = InferenceEngine(EngineSettings(checkpoint=str(checkpoint), backend=backend, max_new_tokens=6))
    engine.load()
    return engine


@pytest.fixture(scope="module")
def engines(checkpoint: Path) -> dict[str, InferenceEngine]:
    return {backend: _engine(checkpoint, backend) for backend in ("torch", "onnxruntime")}


def test_onnxruntime_providers_end_with_cpu() -> None:
    providers = onnxruntime_providers()
    assert providers[-1] == "CPUExecutionProvider"
    import onnxruntime

    assert set(providers) <= set(onnxruntime.get_available_providers())


@pytest.mark.slow
def test_onnxruntime_engine_exports_next_to_the_checkpoint(engines, checkpoint: Path) -> None:
    backend = engines["onnxruntime"].scene_backend
    assert isinstance(backend, OnnxRuntimeSceneEncoder) and isinstance(backend, SceneEncoderBackend)
    assert backend.path == checkpoint / EXPORT_DIRECTORY / SCENE_ENCODER_FILE
    assert (checkpoint / EXPORT_DIRECTORY / BOX_HEAD_FILE).is_file()
    assert engines["torch"].scene_backend is None
    assert isinstance(TorchSceneEncoder(engines["torch"].model.scene_encoder), SceneEncoderBackend)


@pytest.mark.slow
def test_scene_tokens_of_both_backends_agree(engines, cloud: SceneCloud) -> None:
    torch_engine, onnx_engine = engines["torch"], engines["onnxruntime"]
    scene = torch_engine._prepare(cloud, {})
    with torch.inference_mode():
        reference = torch_engine.model.encode_scene(scene)
    tokens, weights, patch_tokens = onnx_engine.scene_backend.encode(scene.patches, scene.centers)
    assert float((tokens - reference.scene_tokens).abs().max()) < 1e-4
    assert float((patch_tokens - reference.patch_tokens).abs().max()) < 1e-4
    assert float((weights - reference.expert_weights).abs().max()) < 1e-4


@pytest.mark.slow
def test_onnxruntime_engine_grounds_and_answers_like_torch(engines, cloud: SceneCloud) -> None:
    seen = engines["torch"].scene_objects(cloud).confident[0].category
    torch_reply = engines["torch"].ground(cloud, f"Where is the {seen}?")
    onnx_reply = engines["onnxruntime"].ground(cloud, f"Where is the {seen}?")
    assert torch_reply.text == onnx_reply.text
    assert len(torch_reply.objects) == len(onnx_reply.objects) == 1
    for expected, found in zip(torch_reply.objects, onnx_reply.objects):
        assert np.abs(expected.box.to_array() - found.box.to_array()).max() < 1e-3, "same box within 1 mm"
        assert expected.source == found.source
    # free text reads the scene tokens, which each backend computes
    torch_answer = engines["torch"].answer(cloud, "What would you do in this room?", programs=False)
    onnx_answer = engines["onnxruntime"].answer(cloud, "What would you do in this room?", programs=False)
    assert torch_answer.text == onnx_answer.text, "same greedy text"
    assert onnx_answer.timings["scene_encoder_s"] > 0


@pytest.mark.skipif(tensorrt_available(), reason="TensorRT is installed here: the unavailable path cannot be checked")
def test_tensorrt_backend_without_tensorrt_names_the_backend(checkpoint: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        InferenceEngine(EngineSettings(checkpoint=str(checkpoint), backend="tensorrt"))
    assert raised.value.parameter == "backend"
    assert "TensorRT is not installed:" in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_box_head_graph_is_not_taken_for_a_scene_encoder(tmp_path: Path) -> None:
    from threed_llm_ros.model.box_head import BoxHead
    from threed_llm_ros.runtime.export import export_box_head

    graph = export_box_head(BoxHead(64), tmp_path / "box_head.onnx")
    with pytest.raises(ModelFileError, match="not a scene encoder graph"):
        OnnxRuntimeSceneEncoder(graph.path)


def test_bad_dtype_names_the_parameter() -> None:
    with pytest.raises(ConfigError) as raised:
        InferenceEngine(EngineSettings(checkpoint="x", dtype="int8"))
    assert raised.value.parameter == "dtype"
