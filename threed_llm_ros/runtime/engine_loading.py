"""What :class:`~threed_llm_ros.runtime.engine.InferenceEngine` loads before it can reply, as plain functions.

Kept apart from ``runtime/engine.py`` so that the engine holds the tasks (describe, answer, ground,
plan) and the order of loading (``load``, ``around``), and this module each step of it: it takes the
settings and what it needs, and returns what it loads, turning a bad file into a :class:`ConfigError`
that names the parameter to fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from threed_llm_ros.errors import ConfigError, ModelFileError
from threed_llm_ros.model.object_tokens import load_projector_of
from threed_llm_ros.objects.layer import ObjectLayer, PerceptionSettings
from threed_llm_ros.resources import default_object_classifier
from threed_llm_ros.runtime.engine_settings import EngineSettings, resolve_checkpoint
from threed_llm_ros.runtime.onnx_decoder import OnnxGenerator


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
