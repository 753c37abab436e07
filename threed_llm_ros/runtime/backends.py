"""Scene-encoder backends: the same graph through torch, ONNX Runtime or TensorRT.

Every backend takes what ``prepare_scenes`` makes (grouped patches (B, G, K, 6) and
centres (B, G, 3), numpy arrays or tensors) and returns ``(scene_tokens (B, Q, hidden),
expert_weights (B, E), patch_tokens (B, G, width))`` as float32 torch tensors: on the CPU for ONNX Runtime, on the
backend's device for torch and TensorRT. The language model then takes the scene
tokens as it takes the torch encoder's, and the box head attends over the patch tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from threed_llm_ros.errors import ModelFileError
from threed_llm_ros.runtime.export import BOX_HEAD_INPUT_NAMES, SCENE_ENCODER_INPUTS, SCENE_ENCODER_OUTPUTS
from threed_llm_ros.runtime.tensorrt_engine import TensorRTRunner, build_engine, current_cache_key, engine_cache_for

ArrayLike = np.ndarray | torch.Tensor


@runtime_checkable
class SceneEncoderBackend(Protocol):
    """Grouped patches + centres → (scene_tokens, expert_weights, patch_tokens)."""

    name: str

    def encode(self, patches: ArrayLike, centers: ArrayLike) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Scene tokens (B, Q, hidden), router expert weights (B, E) and patch tokens (B, G, width), float32."""
        ...


def _as_numpy(values: ArrayLike) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().to("cpu", torch.float32).numpy()
    return np.ascontiguousarray(values, dtype=np.float32)


def _as_tensor(values: ArrayLike, device: torch.device) -> torch.Tensor:
    tensor = values if isinstance(values, torch.Tensor) else torch.from_numpy(np.asarray(values))
    return tensor.to(device=device, dtype=torch.float32)


class TorchSceneEncoder:
    """The eager torch module (the reference every other backend is compared with)."""

    name = "torch"

    def __init__(self, encoder: torch.nn.Module) -> None:
        self.encoder = encoder.eval()
        self.device = next(encoder.parameters()).device

    def encode(self, patches: ArrayLike, centers: ArrayLike) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            outputs = self.encoder.export_forward(_as_tensor(patches, self.device), _as_tensor(centers, self.device))
        tokens, weights, patch_tokens = outputs
        return tokens.float(), weights.float(), patch_tokens.float()


def onnxruntime_providers(prefer_gpu: bool = True) -> list[str]:
    """CUDA first when this onnxruntime build has it (and ``prefer_gpu``), CPU always."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    providers = ["CUDAExecutionProvider"] if prefer_gpu and "CUDAExecutionProvider" in available else []
    return providers + ["CPUExecutionProvider"]


def _session(path: str | Path, providers: list[str] | None, threads: int | None) -> Any:
    import onnxruntime

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"ONNX file {path} is missing; run `threed-llm export onnx --checkpoint DIR`")
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is None:
        threads = torch.get_num_threads()
    options.intra_op_num_threads = max(1, int(threads))
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=providers or onnxruntime_providers())


class OnnxRuntimeSceneEncoder:
    """The exported scene-encoder graph in an ONNX Runtime session (CUDA provider when present, else CPU).

    ``threads`` defaults to torch's intra-op thread count, so both backends use the same cores.
    """

    name = "onnxruntime"

    def __init__(self, onnx_path: str | Path, *, providers: list[str] | None = None, threads: int | None = None) -> None:
        self.path = Path(onnx_path)
        self.session = _session(self.path, providers, threads)
        self.providers = self.session.get_providers()
        names = tuple(node.name for node in self.session.get_inputs())
        if names != SCENE_ENCODER_INPUTS:
            raise ModelFileError(f"{self.path} has inputs {names}, expected {SCENE_ENCODER_INPUTS}: not a scene encoder graph")
        names = tuple(node.name for node in self.session.get_outputs())
        if names != SCENE_ENCODER_OUTPUTS:  # an export from before the box head read patch tokens
            raise ModelFileError(f"{self.path} has outputs {names}, expected {SCENE_ENCODER_OUTPUTS}: re-export it")

    def encode(self, patches: ArrayLike, centers: ArrayLike) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        tokens, weights, patch_tokens = self.session.run(
            list(SCENE_ENCODER_OUTPUTS), {"patches": _as_numpy(patches), "centers": _as_numpy(centers)}
        )
        return torch.from_numpy(tokens), torch.from_numpy(weights), torch.from_numpy(patch_tokens)


class OnnxRuntimeBoxHead:
    """The exported ``<box3d>`` head graph: hidden states (B, H) [+ its scene inputs] → normalised boxes (B, 7)."""

    def __init__(self, onnx_path: str | Path, *, providers: list[str] | None = None, threads: int | None = None) -> None:
        self.path = Path(onnx_path)
        self.session = _session(self.path, providers, threads)
        self.input_names = tuple(node.name for node in self.session.get_inputs())
        if not self.input_names or self.input_names[0] != "hidden" or not set(self.input_names) <= set(BOX_HEAD_INPUT_NAMES):
            raise ModelFileError(
                f"{self.path} has inputs {self.input_names}, expected hidden + some of {BOX_HEAD_INPUT_NAMES[1:]}: "
                "not a box-head graph"
            )

    def predict(self, hidden: ArrayLike, **scene: ArrayLike | None) -> torch.Tensor:
        """Normalised boxes (B, 7); pass the scene inputs the graph names (``patches``, ``patch_tokens``, ``centers``)."""
        feeds = {"hidden": _as_numpy(hidden)}
        for name in self.input_names[1:]:
            if scene.get(name) is None:
                raise ValueError(f"{self.path} attends over the scene: pass {', '.join(self.input_names[1:])}")
            feeds[name] = _as_numpy(scene[name])
        (boxes,) = self.session.run(None, feeds)
        return torch.from_numpy(boxes)


class TensorRTSceneEncoder:
    """The exported graph as a TensorRT engine (FP16 with FP32 fallback), built once and cached on disk.

    Needs the ``tensorrt`` package and a CUDA device; raises
    :class:`~threed_llm_ros.runtime.tensorrt_engine.TensorRTUnavailable` (one line) otherwise.
    """

    name = "tensorrt"

    def __init__(
        self,
        onnx_path: str | Path,
        *,
        cache_directory: str | Path | None = None,
        max_batch: int = 4,
        fp16: bool = True,
        device: str = "cuda",
    ) -> None:
        self.path = Path(onnx_path)
        self.device = torch.device(device)
        precision = "fp16" if fp16 else "fp32"
        key = current_cache_key(self.path, precision=precision, max_batch=max_batch, device=self.device)
        self.engine_path, self.rebuilt = engine_cache_for(self.path, cache_directory).get_or_build(
            key, self.path, lambda onnx, engine: build_engine(onnx, engine, max_batch=max_batch, fp16=fp16)
        )
        self.runner = TensorRTRunner(self.engine_path, device=self.device)
        self.runner.warm_up(max_batch)

    def encode(self, patches: ArrayLike, centers: ArrayLike) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        outputs = self.runner.run(
            {"patches": _as_tensor(patches, self.device), "centers": _as_tensor(centers, self.device)}
        )
        return outputs["scene_tokens"].float(), outputs["expert_weights"].float(), outputs["patch_tokens"].float()

