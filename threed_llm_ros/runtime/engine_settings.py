"""What the inference engine loads and how it reads clouds: :class:`EngineSettings` (the node's
parameters of the same names, which take their defaults from it) and the checkpoint it names."""

from __future__ import annotations

import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from threed_llm_ros.errors import ConfigError
from threed_llm_ros.geometry.frames import UP_AXIS_ROTATIONS
from threed_llm_ros.resources import (  # noqa: F401 (CHECKPOINT_FIX and resolve_checkpoint are re-exported)
    CHECKPOINT_FIX, DEFAULT_CHECKPOINT, resolve_checkpoint,
)
from threed_llm_ros.runtime.choices import BACKENDS, LM_BACKENDS, LM_LAYOUTS, LM_PRECISIONS, MIXED, DEFAULT_LM_PRECISION
from threed_llm_ros.runtime.intent import MAX_PROMPT_CHARS
from threed_llm_ros.runtime.replies import STANDOFF_M
from threed_llm_ros.runtime.tensorrt_engine import TensorRTUnavailable, require_tensorrt

DTYPES: tuple[str, ...] = ("auto", "float32", "float16", "bfloat16")
FREE_TEXT_TOKENS: tuple[str, ...] = ("objects", "scene")  # see EngineSettings.free_text_tokens
REPLY_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class EngineSettings:
    """What the engine loads and how it reads clouds: the node's parameters of the same names, whose
    defaults and types are these (``ros/node_settings.py`` declares them from this class)."""

    checkpoint: str = DEFAULT_CHECKPOINT
    language_model_path: str = ""
    backend: str = "torch"
    device: str = "cpu"
    up_axis: str = "-y"
    sensor_height: float = 0.0  # the sensor's height above the floor (m) from the robot's URDF; 0 = unknown
    min_range: float = 0.1
    max_range: float = 8.0
    max_new_tokens: int = 48
    standoff_m: float = STANDOFF_M
    dtype: str = "auto"  # language model weights: auto = float32 on the CPU, bfloat16 (else float16) on CUDA
    compile_language_model: bool = False  # opt-in torch.compile of the language model (unmeasured here)
    export_directory: str = ""  # where the onnxruntime/tensorrt backends keep exported graphs ('' = default)
    object_classifier: str = ""  # the object layer's classifier directory ('' = the shipped models/object-classifier)
    min_confidence: float = 0.5  # objects below this score are not said to be seen
    caption_min_confidence: float = 0.9  # a caption is an unasked claim: it names only objects this sure
    max_prompt_chars: int = MAX_PROMPT_CHARS  # longer prompts are refused (PromptTooLongError), not answered for minutes
    reply_timeout_s: float = REPLY_TIMEOUT_S  # decoding stops at this deadline; the reply says it was cut short
    lm_backend: str = "auto"  # auto: onnxruntime on the CPU for a trained checkpoint, else torch; or torch / onnxruntime
    lm_precision: str = DEFAULT_LM_PRECISION  # onnxruntime decoder weights: mixed, int8 or int4 (choices.LM_PRECISIONS)
    lm_threads: int = 1  # onnxruntime decoder threads (spinning off: shared cores do not collapse)
    torch_threads: int = 1  # torch's threads (object layer, ImageNet crops, torch encoder / LM): 1 holds up on shared cores
    lm_adapters: str = "merged"  # onnxruntime decoder's LoRA adapters: merged (a graph each) or switchable (one graph)
    free_text_tokens: str = "objects"  # what free text reads: objects (the object list's tokens, where the checkpoint
    # has an object-token projector; else as scene) or scene (the scene encoder's tokens)

    def validate(self) -> None:
        """ConfigError naming the first bad setting."""
        if self.backend not in BACKENDS:
            raise ConfigError("backend", f"unknown backend {self.backend!r}", f"use one of {list(BACKENDS)}")
        if self.backend == "tensorrt":
            try:
                require_tensorrt()
            except TensorRTUnavailable as error:
                raise ConfigError("backend", str(error), "use backend: onnxruntime or torch") from None
            if not str(self.device).startswith("cuda"):
                raise ConfigError("backend", f"tensorrt runs on a CUDA device, device is {self.device!r}",
                                  "set device: cuda, or use backend: onnxruntime")
        if self.dtype not in DTYPES:
            raise ConfigError("dtype", f"got {self.dtype!r}", f"use one of {list(DTYPES)}")
        if self.up_axis not in UP_AXIS_ROTATIONS:
            raise ConfigError("up_axis", f"got {self.up_axis!r}", f"use one of {sorted(UP_AXIS_ROTATIONS)}")
        if not 0.0 <= self.sensor_height < 10.0:
            raise ConfigError("sensor_height", f"got {self.sensor_height}",
                              "give the sensor's height above the floor in metres (from the URDF), or 0 if unknown")
        if not 0.0 <= self.min_range < self.max_range:
            raise ConfigError("min_range", f"need 0 <= min_range < max_range, got {self.min_range}, {self.max_range}",
                              "use e.g. min_range 0.1 and max_range 8.0 (metres)")
        for name in ("min_confidence", "caption_min_confidence"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(name, f"got {getattr(self, name)}", "use a probability in [0, 1], e.g. 0.5 or 0.9")
        if self.lm_backend not in LM_BACKENDS:
            raise ConfigError("lm_backend", f"got {self.lm_backend!r}", f"use one of {list(LM_BACKENDS)}")
        if self.lm_precision not in LM_PRECISIONS:
            raise ConfigError("lm_precision", f"got {self.lm_precision!r}", f"use one of {list(LM_PRECISIONS)}")
        if self.lm_adapters not in LM_LAYOUTS:
            raise ConfigError("lm_adapters", f"got {self.lm_adapters!r}", f"use one of {list(LM_LAYOUTS)}")
        if self.lm_precision == MIXED and self.lm_adapters != "merged":
            raise ConfigError("lm_precision", "mixed gives each adapter's graph its own precision; "
                              f"lm_adapters {self.lm_adapters} has one graph for all",
                              "use lm_adapters: merged, or lm_precision int8 or int4")
        if self.free_text_tokens not in FREE_TEXT_TOKENS:
            raise ConfigError("free_text_tokens", f"got {self.free_text_tokens!r}", f"use one of {list(FREE_TEXT_TOKENS)}")
        if self.lm_threads < 1:
            raise ConfigError("lm_threads", f"got {self.lm_threads}", "use 1 or 2 (see `threed-llm bench`)")
        if self.torch_threads < 1:
            raise ConfigError("torch_threads", f"got {self.torch_threads}", "use 1 or 2 (see `threed-llm bench`)")
        if self.lm_backend == "onnxruntime" and self.compile_language_model:
            raise ConfigError("compile_language_model", "torch.compile applies to lm_backend torch only",
                              "set compile_language_model: false, or lm_backend: torch or auto")
        if self.lm_backend == "onnxruntime" and str(self.device).startswith("cuda"):
            raise ConfigError("lm_backend", f"the exported decoder runs on the CPU, device is {self.device!r}",
                              "use lm_backend: auto or torch on CUDA")
        if self.max_new_tokens < 1:
            raise ConfigError("max_new_tokens", f"got {self.max_new_tokens}", "use a value >= 1, e.g. 48")
        if self.max_prompt_chars < 1:
            raise ConfigError("max_prompt_chars", f"got {self.max_prompt_chars}", f"use a value >= 1, e.g. {MAX_PROMPT_CHARS}")
        if not (math.isfinite(self.reply_timeout_s) and self.reply_timeout_s > 0):
            raise ConfigError("reply_timeout_s", f"got {self.reply_timeout_s}", f"use seconds > 0, e.g. {REPLY_TIMEOUT_S:g}")
        device = str(self.device)
        if not (device == "cpu" or re.fullmatch(r"cuda(:\d+)?", device)):
            raise ConfigError("device", f"got {device!r}", "use cpu, cuda or cuda:<index>")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError("device", f"{device} requested but CUDA is not available", "use device: cpu")


def build_untrained_checkpoint(directory: str | Path, preset: str = "mini") -> Path:
    """Write a real but untrained checkpoint of ``preset`` to ``directory`` (kept if already there).

    For tests and for the demo until a trained default exists: the architecture, loading
    path and timings are real, the answers are not meaningful.
    """
    # lazy: the model classes pull transformers; settings are read (node start-up, `ask` arguments) without them
    from threed_llm_ros.model.checkpoint import save_checkpoint
    from threed_llm_ros.model.threed_llm import ThreeDLLM
    from threed_llm_ros.model.threed_llm_config import ThreeDLLMConfig

    directory = Path(directory)
    if (directory / "config.json").is_file() and (directory / "model.safetensors").is_file():
        return directory
    staging = directory.with_name(directory.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    save_checkpoint(ThreeDLLM(ThreeDLLMConfig.preset(preset)), staging, extra={"trained": False})
    shutil.rmtree(directory, ignore_errors=True)
    staging.replace(directory)
    return directory
