"""TensorRT engines for the exported scene encoder: build, cache on disk, run.

Written against the documented ``tensorrt`` Python API (TensorRT 8.6 / 10):
``Builder`` → explicit-batch ``INetworkDefinition`` ← ``OnnxParser``; a builder config
with FP16 enabled where the GPU has fast FP16 and FP32 kept for the numerically
sensitive layers (normalisation, softmax, top-k, reductions, the MQE router), with a
plain FP32 build when the FP16 build fails; one optimisation profile for batch
1..``max_batch``; ``build_serialized_network`` → a ``.engine`` file. Running uses
``execute_async_v3`` with torch CUDA tensors as the I/O buffers.

A built engine only fits the GPU model, the TensorRT version and the ONNX file it was
built from, so the cache keys on all three (plus precision and the batch range) and
rebuilds when any changes. :class:`EngineCache` holds that logic apart from TensorRT, so
it is testable on machines without it (TensorRT cannot be installed from PyPI here: its
wheels download from NVIDIA's index). Without ``tensorrt`` every entry point raises
:class:`TensorRTUnavailable`, whose message is one line: ``TensorRT is not installed: …``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from threed_llm_ros.errors import ModelFileError, ThreeDLLMError
from threed_llm_ros.runtime.export import file_sha256

ENGINE_CACHE_FORMAT = "threed_llm_ros.trt_cache/1"
DEFAULT_WORKSPACE_BYTES = 1 << 30
# Layers kept in FP32 inside an FP16 engine: their FP16 error is large or flips the router's expert choice.
FP32_LAYER_TYPES = ("NORMALIZATION", "SOFTMAX", "TOPK", "REDUCE", "SCATTER")
FP32_LAYER_NAME_PARTS = ("router",)

EngineBuilder = Callable[[Path, Path], Any]  # (onnx_path, engine_path) -> anything; must write engine_path


class TensorRTUnavailable(ThreeDLLMError, RuntimeError):
    """TensorRT (or a CUDA device for it) is missing; the message is one line starting with the reason."""


def require_tensorrt() -> Any:
    """The ``tensorrt`` module, or :class:`TensorRTUnavailable` with a one-line reason."""
    try:
        import tensorrt
    except ImportError as error:
        raise TensorRTUnavailable(
            f"TensorRT is not installed: {error} (install it from JetPack or NVIDIA's repositories; "
            "PyPI's tensorrt-cu12 only downloads from NVIDIA's index)"
        ) from None
    return tensorrt


def tensorrt_available() -> bool:
    """True when ``import tensorrt`` works."""
    try:
        require_tensorrt()
    except TensorRTUnavailable:
        return False
    return True


@dataclass(frozen=True)
class EngineCacheKey:
    """What a serialized engine depends on."""

    model_sha256: str
    gpu_name: str
    tensorrt_version: str
    precision: str = "fp16"
    max_batch: int = 4

    def digest(self) -> str:
        """sha256 over every field (changes when any field changes)."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()


def current_cache_key(onnx_path: str | Path, *, precision: str, max_batch: int, device: Any = None) -> EngineCacheKey:
    """The key of ``onnx_path`` on this machine: its sha256, the CUDA device's name, TensorRT's version."""
    tensorrt = require_tensorrt()
    import torch

    if not torch.cuda.is_available():
        raise TensorRTUnavailable("TensorRT needs a CUDA device, and torch sees none")
    return EngineCacheKey(
        model_sha256=file_sha256(onnx_path),
        gpu_name=torch.cuda.get_device_name(device),
        tensorrt_version=str(tensorrt.__version__),
        precision=precision,
        max_batch=int(max_batch),
    )


class EngineCache:
    """One cached engine per graph name in ``directory``: ``<name>.engine`` + ``<name>.engine.json``.

    The JSON holds the key the engine was built for and the engine file's sha256. A
    lookup hits only when the key is the same and the file is intact; anything else
    (another GPU, TensorRT version or ONNX file, a truncated engine) is stale and is
    rebuilt in place, so old engines never pile up.
    """

    def __init__(self, directory: str | Path, name: str = "scene_encoder") -> None:
        self.directory = Path(directory)
        self.engine_path = self.directory / f"{name}.engine"
        self.metadata_path = self.directory / f"{name}.engine.json"

    def lookup(self, key: EngineCacheKey) -> Path | None:
        """The engine file when it was built for ``key`` and is intact, else None."""
        try:
            metadata = json.loads(self.metadata_path.read_text())
        except (OSError, ValueError):
            return None
        if metadata.get("format") != ENGINE_CACHE_FORMAT or metadata.get("key_digest") != key.digest():
            return None
        if not self.engine_path.is_file() or file_sha256(self.engine_path) != metadata.get("engine_sha256"):
            return None
        return self.engine_path

    def get_or_build(self, key: EngineCacheKey, onnx_path: str | Path, build: EngineBuilder) -> tuple[Path, bool]:
        """(engine path, whether it was built now): the cached engine for ``key``, else ``build(onnx, engine)``.

        ``build`` writes to a temporary file that replaces the cache entry only when it
        succeeded, so a failed build never leaves a broken engine behind.
        """
        cached = self.lookup(key)
        if cached is not None:
            return cached, False
        self.directory.mkdir(parents=True, exist_ok=True)
        staging = self.engine_path.with_name(f".{self.engine_path.name}.{os.getpid()}.partial")
        started = time.perf_counter()
        try:
            details = build(Path(onnx_path), staging)
            if not staging.is_file() or staging.stat().st_size == 0:
                raise ModelFileError(f"the engine builder wrote nothing to {staging}")
            self.metadata_path.unlink(missing_ok=True)  # no window where old metadata describes a new engine
            staging.replace(self.engine_path)
        finally:
            staging.unlink(missing_ok=True)
        metadata = {
            "format": ENGINE_CACHE_FORMAT,
            "key": asdict(key),
            "key_digest": key.digest(),
            "engine_sha256": file_sha256(self.engine_path),
            "onnx": str(Path(onnx_path).resolve()),
            "build_seconds": round(time.perf_counter() - started, 3),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "builder": details if isinstance(details, (dict, str, int, float)) else None,
        }
        self.metadata_path.write_text(json.dumps(metadata, indent=2) + "\n")
        return self.engine_path, True


def engine_cache_for(onnx_path: str | Path, cache_directory: str | Path | None = None) -> EngineCache:
    """The cache of ``onnx_path``'s engine: ``cache_directory``, else ``<onnx dir>/tensorrt``."""
    onnx_path = Path(onnx_path)
    return EngineCache(Path(cache_directory) if cache_directory else onnx_path.parent / "tensorrt", onnx_path.stem)


def _tensorrt_major(tensorrt: Any) -> int:
    try:
        return int(str(tensorrt.__version__).split(".")[0])
    except ValueError:
        return 10


def _keep_sensitive_layers_fp32(tensorrt: Any, network: Any) -> int:
    """Pin normalisation/softmax/top-k/reduce/scatter and router layers to FP32; returns how many."""
    types = {getattr(tensorrt.LayerType, name) for name in FP32_LAYER_TYPES if hasattr(tensorrt.LayerType, name)}
    pinned = 0
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        if layer.type not in types and not any(part in layer.name for part in FP32_LAYER_NAME_PARTS):
            continue
        if not all(layer.get_output(o).dtype in (tensorrt.float32, tensorrt.float16) for o in range(layer.num_outputs)):
            continue  # integer/shape outputs (top-k indices) keep their type
        layer.precision = tensorrt.float32
        for output in range(layer.num_outputs):
            layer.set_output_type(output, tensorrt.float32)
        pinned += 1
    return pinned


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    *,
    max_batch: int = 4,
    opt_batch: int = 1,
    fp16: bool = True,
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
) -> dict[str, Any]:
    """Build a serialized engine of ``onnx_path`` for batch 1..``max_batch`` into ``engine_path``.

    FP16 (sensitive layers in FP32) when requested and the GPU has fast FP16; a plain
    FP32 build when the FP16 build fails. Returns what was built (precision, pinned layers).
    """
    tensorrt = require_tensorrt()
    if not 1 <= opt_batch <= max_batch:
        raise ValueError(f"need 1 <= opt_batch <= max_batch, got {opt_batch}, {max_batch}")
    logger = tensorrt.Logger(tensorrt.Logger.WARNING)
    builder = tensorrt.Builder(logger)
    flags = 0
    if _tensorrt_major(tensorrt) < 10:  # explicit batch is the only mode (and the flag deprecated) from TensorRT 10
        flags = 1 << int(tensorrt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = tensorrt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(index)) for index in range(parser.num_errors))
        raise ModelFileError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(tensorrt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    profile = builder.create_optimization_profile()
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        rest = tuple(int(size) for size in tuple(tensor.shape)[1:])
        profile.set_shape(tensor.name, (1, *rest), (opt_batch, *rest), (max_batch, *rest))
    config.add_optimization_profile(profile)
    report: dict[str, Any] = {"precision": "fp32", "fp32_pinned_layers": 0, "max_batch": max_batch}
    serialized = None
    if fp16 and builder.platform_has_fast_fp16:
        config.set_flag(tensorrt.BuilderFlag.FP16)
        config.set_flag(tensorrt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
        report["fp32_pinned_layers"] = _keep_sensitive_layers_fp32(tensorrt, network)
        serialized = builder.build_serialized_network(network, config)
        if serialized is not None:
            report["precision"] = "fp16"
        else:
            config.clear_flag(tensorrt.BuilderFlag.FP16)
            report["fp16_failed"] = True
    if serialized is None:
        serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelFileError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)")
    Path(engine_path).write_bytes(bytes(serialized))
    return report


class TensorRTRunner:
    """A deserialized engine and its execution context; inputs and outputs are torch CUDA tensors."""

    def __init__(self, engine_path: str | Path, device: Any = "cuda") -> None:
        import torch

        tensorrt = require_tensorrt()
        self._torch = torch
        self.device = torch.device(device)
        self._runtime = tensorrt.Runtime(tensorrt.Logger(tensorrt.Logger.WARNING))
        self.engine = self._runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise ModelFileError(f"TensorRT could not deserialize {engine_path} (built by another version or GPU?)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(index) for index in range(self.engine.num_io_tensors)]
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == tensorrt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if n not in self.input_names]
        self._dtypes = {
            name: torch.from_numpy(np.empty(0, dtype=tensorrt.nptype(self.engine.get_tensor_dtype(name)))).dtype
            for name in names
        }

    def run(self, feeds: dict[str, Any]) -> dict[str, Any]:
        """Run the engine on ``feeds`` (name → CUDA tensor, batch within the profile); returns name → tensor."""
        torch = self._torch
        keep_alive = []
        for name in self.input_names:
            tensor = feeds[name].to(self.device, self._dtypes[name]).contiguous()
            keep_alive.append(tensor)
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        outputs = {}
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            outputs[name] = torch.empty(shape, dtype=self._dtypes[name], device=self.device)
            self.context.set_tensor_address(name, outputs[name].data_ptr())
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        stream.synchronize()
        return outputs

    def warm_up(self, max_batch: int, repeats: int = 3) -> None:
        """Run batch 1 and ``max_batch`` a few times so the first real call is not the slow one."""
        torch = self._torch
        for batch in sorted({1, max_batch}):
            feeds = {}
            for name in self.input_names:
                shape = tuple(self.engine.get_tensor_shape(name))[1:]
                feeds[name] = torch.zeros((batch, *shape), dtype=self._dtypes[name], device=self.device)
            for _ in range(repeats):
                self.run(feeds)
