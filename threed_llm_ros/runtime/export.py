"""ONNX export of the parts of the 3D-LLM that run outside the language model.

Two graphs per checkpoint:

* ``scene_encoder.onnx``: point encoder + projector + Q-Former with the Mixture of Query
  Experts + modality projector, ``patches (B, G, K, 6)`` and ``centers (B, G, 3)`` in,
  ``scene_tokens (B, Q, hidden)``, ``expert_weights (B, E)`` and ``patch_tokens (B, G, width)``
  (what the box head attends over) out. The grouping
  (FPS, kNN) stays outside the graph (``prepare_scenes``). The router's top-k choice is
  data dependent; it exports as ``TopK`` + ``Gather`` + ``ScatterElements``.
* ``box_head.onnx``: the ``<box3d>`` head, ``hidden (B, hidden)`` plus the scene inputs its
  ``context`` reads (``patches (B, G, K, 6)`` and/or ``patch_tokens (B, G, width)``, and
  ``centers (B, G, 3)``) → ``box_normalized (B, 7)`` (centre, size, yaw in the scene's
  normalised units), decoding included. A head without scene attention takes ``hidden`` only.

The location-token rows (``<loc_i>`` embeddings and LM-head rows) stay inside the
language model: they are ordinary vocabulary rows, not a separate graph.

Each graph gets a JSON sidecar (``<name>.json``) with the opset, the sha256 of the ONNX
file (the model hash the TensorRT cache keys on), input/output names and shapes, the
checkpoint path and the sha256 of its weights (to notice a stale export).

The exporter is torch's TorchScript-based one (``dynamo=False``): the torch.export-based
exporter needs ``onnxscript``, which is not a dependency of this package.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from threed_llm_ros.errors import ConfigError, ModelFileError
from threed_llm_ros.model.scene_encoder import SceneEncoder

DEFAULT_OPSET = 17
SCENE_ENCODER_FILE = "scene_encoder.onnx"
BOX_HEAD_FILE = "box_head.onnx"
EXPORT_DIRECTORY = "onnx"  # inside a checkpoint directory, when it is writable
SCENE_ENCODER_INPUTS = ("patches", "centers")
SCENE_ENCODER_OUTPUTS = ("scene_tokens", "expert_weights", "patch_tokens")
BOX_HEAD_INPUT_NAMES = ("hidden", "patches", "patch_tokens", "centers")  # a head takes hidden + some of the rest
BOX_HEAD_OUTPUTS = ("box_normalized",)
EXPORT_BATCH = 2  # trace with a batch other than 1 so no size-1 broadcast gets baked in


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sidecar_path(onnx_path: str | Path) -> Path:
    """The JSON sidecar of an ONNX file (``x.onnx`` → ``x.json``)."""
    return Path(onnx_path).with_suffix(".json")


def read_sidecar(onnx_path: str | Path) -> dict[str, Any]:
    """The parsed sidecar of ``onnx_path``; ModelFileError when missing or unreadable."""
    path = sidecar_path(onnx_path)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ModelFileError(f"{path} is missing or not JSON ({error}); re-run `threed-llm export onnx`") from error


class _SceneEncoderGraph(nn.Module):
    """The scene encoder's export_forward as a module's forward (what the exporter traces)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, patches: torch.Tensor, centers: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.encoder.export_forward(patches, centers)


class BoxHeadGraph(nn.Module):
    """Box head plus decoding: hidden (B, H) and the head's scene inputs → normalised boxes (B, 7)."""

    def __init__(self, box_head: nn.Module) -> None:
        super().__init__()
        self.box_head = box_head

    def forward(self, hidden: torch.Tensor, *scene: torch.Tensor) -> torch.Tensor:
        inputs = dict(zip(self.box_head.scene_inputs, scene))
        return self.box_head.decode(self.box_head(hidden, **inputs))


def box_head_input_names(box_head: nn.Module) -> tuple[str, ...]:
    """The graph inputs of a box head: ``hidden`` and the scene inputs it reads."""
    return ("hidden", *box_head.scene_inputs)


def box_head_example(
    box_head: nn.Module, num_groups: int, group_size: int = 32, batch: int = EXPORT_BATCH, seed: int = 0
) -> tuple[torch.Tensor, ...]:
    """Random inputs of a box head, in the order of its graph's inputs."""
    generator = torch.Generator().manual_seed(seed)
    shapes = {
        "hidden": (batch, box_head.input_dim),
        "patches": (batch, num_groups, group_size, box_head.point_channels),
        "patch_tokens": (batch, num_groups, box_head.context_dim),
        "centers": (batch, num_groups, 3),
    }
    scales = {"patches": 0.1, "centers": 1.0}
    return tuple(torch.randn(*shapes[name], generator=generator) * scales.get(name, 1.0) for name in box_head_input_names(box_head))


@dataclass(frozen=True)
class ExportedGraph:
    """One exported graph: its file, sidecar and the sha256 of the file."""

    path: Path
    sidecar: Path
    sha256: str
    metadata: dict[str, Any]


def _write_graph(
    module: nn.Module,
    example: tuple[torch.Tensor, ...],
    path: Path,
    input_names: tuple[str, ...],
    output_names: tuple[str, ...],
    opset: int,
    extra: dict[str, Any],
    extra_dynamic_axes: dict[str, dict[int, str]] | None = None,
) -> ExportedGraph:
    """Export ``module`` with a dynamic batch axis on every input and output; write the sidecar."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dynamic_axes = {name: {0: "batch"} for name in (*input_names, *output_names)}
    for name, axes in (extra_dynamic_axes or {}).items():
        if name in dynamic_axes:
            dynamic_axes[name].update(axes)
    module = module.eval()
    with torch.no_grad():
        outputs = module(*example)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    # Write to a temporary name and rename, so a reader never sees half a file.
    staging = path.with_name(f".{path.name}.{os.getpid()}.partial")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings from the shape checks, the legacy-exporter notice
        torch.onnx.export(
            module,
            example,
            str(staging),
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            dynamo=False,
            do_constant_folding=True,
        )
    staging.replace(path)
    digest = file_sha256(path)

    def spec(name: str, tensor: torch.Tensor) -> dict[str, Any]:
        return {"name": name, "shape": ["batch", *tensor.shape[1:]], "dtype": str(tensor.dtype).removeprefix("torch.")}

    metadata = {
        "format": "threed_llm_ros.onnx/1",
        "file": path.name,
        "opset": opset,
        "sha256": digest,
        "inputs": [spec(name, tensor) for name, tensor in zip(input_names, example)],
        "outputs": [spec(name, tensor) for name, tensor in zip(output_names, outputs)],
        "dynamic_axes": {name: {str(axis): label for axis, label in axes.items()} for name, axes in dynamic_axes.items()},
        "torch_version": torch.__version__,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **extra,
    }
    sidecar = sidecar_path(path)
    sidecar.write_text(json.dumps(metadata, indent=2) + "\n")
    return ExportedGraph(path, sidecar, digest, metadata)


def export_scene_encoder(
    encoder: nn.Module, path: str | Path, *, opset: int = DEFAULT_OPSET, extra: dict[str, Any] | None = None
) -> ExportedGraph:
    """Export a :class:`SceneEncoder` (fp32, CPU copy) to ``path`` with a dynamic batch axis."""
    config = encoder.config
    groups, group_size = config.encoder.num_groups, config.encoder.group_size
    generator = torch.Generator().manual_seed(0)
    patches = torch.randn(EXPORT_BATCH, groups, group_size, config.encoder.in_channels, generator=generator) * 0.1
    centers = torch.rand(EXPORT_BATCH, groups, 3, generator=generator) * 2.0 - 1.0
    cpu_encoder = _cpu_float_copy(encoder)
    details = {
        "graph": "scene_encoder",
        "num_groups": groups,
        "group_size": group_size,
        "num_scene_tokens": config.num_scene_tokens,
        "num_experts": config.qformer.num_experts,
        "top_k": config.qformer.top_k,
        "note": "FPS/kNN grouping runs outside this graph (prepare_scenes)",
        **(extra or {}),
    }
    return _write_graph(
        _SceneEncoderGraph(cpu_encoder), (patches, centers), Path(path), SCENE_ENCODER_INPUTS, SCENE_ENCODER_OUTPUTS,
        opset, details,
    )


def export_box_head(
    box_head: nn.Module,
    path: str | Path,
    *,
    num_groups: int = 128,
    group_size: int = 32,
    opset: int = DEFAULT_OPSET,
    extra: dict[str, Any] | None = None,
) -> ExportedGraph:
    """Export the ``<box3d>`` head with its decoding (hidden [+ scene] → normalised box) to ``path``.

    ``num_groups``/``group_size`` size the example input; the group axis is exported as dynamic.
    """
    cpu_head = _cpu_float_copy(box_head)
    example = box_head_example(cpu_head, num_groups, group_size)
    names = box_head_input_names(cpu_head)
    details = {
        "graph": "box_head",
        "hidden_size": int(cpu_head.input_dim),
        "scene_attention": bool(cpu_head.config.scene_attention),
        "context": cpu_head.config.context if cpu_head.config.scene_attention else None,
        "box_layout": "cx cy cz sx sy sz yaw (normalised)",
    }
    return _write_graph(
        BoxHeadGraph(cpu_head), example, Path(path), names, BOX_HEAD_OUTPUTS, opset, {**details, **(extra or {})},
        extra_dynamic_axes={"patches": {1: "groups"}, "patch_tokens": {1: "groups"}, "centers": {1: "groups"}},
    )


def _cpu_float_copy(module: nn.Module) -> nn.Module:
    """``module`` itself when it is already fp32 on the CPU, else an fp32 CPU copy (the original is untouched)."""
    parameters = list(module.parameters())
    if all(p.device.type == "cpu" and p.dtype == torch.float32 for p in parameters):
        return module.eval()
    import copy

    return copy.deepcopy(module).to(device="cpu", dtype=torch.float32).eval()


# --------------------------------------------------------------------------- checkpoints


def load_exportable_parts(checkpoint: str | Path) -> tuple[nn.Module, nn.Module, dict[str, Any]]:
    """(SceneEncoder, BoxHead, checkpoint config) with the checkpoint's weights, without loading the LM."""
    from safetensors.torch import load_file

    # lazy: model.checkpoint and the config pull transformers, which serving an exported graph does not need
    from threed_llm_ros.model.checkpoint import WEIGHTS_FILE, read_checkpoint_config
    from threed_llm_ros.model.threed_llm_config import ThreeDLLMConfig, build_box_head

    directory = Path(checkpoint)
    document = read_checkpoint_config(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelFileError(f"{weights} is missing")
    config = ThreeDLLMConfig.from_dict(document["model"])
    encoder = SceneEncoder(config.scene_encoder)
    box_head = build_box_head(config)
    state = load_file(str(weights))
    for prefix, module in (("scene_encoder.", encoder), ("box_head.", box_head)):
        module.load_state_dict({k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}, strict=True)
    return encoder.eval(), box_head.eval(), document


def checkpoint_weights_sha256(checkpoint: str | Path) -> str:
    """sha256 of a checkpoint's weights file (identifies which weights an export came from)."""
    from threed_llm_ros.model.checkpoint import WEIGHTS_FILE  # lazy: transformers (see load_exportable_parts)

    return file_sha256(Path(checkpoint) / WEIGHTS_FILE)


def export_checkpoint(
    checkpoint: str | Path, output: str | Path | None = None, *, opset: int = DEFAULT_OPSET
) -> tuple[ExportedGraph, ExportedGraph]:
    """Export a checkpoint's scene encoder to ``output`` and its box head to ``box_head.onnx`` in the same
    directory. The default is where ``backend: onnxruntime`` looks (:func:`default_export_directory`:
    ``<checkpoint>/onnx/``, git-ignored), so the engine uses these graphs instead of exporting again."""
    directory = Path(checkpoint)
    encoder, box_head, _ = load_exportable_parts(directory)
    encoder_path = Path(output) if output else default_export_directory(directory) / SCENE_ENCODER_FILE
    extra = {"checkpoint": str(directory.resolve()), "checkpoint_sha256": checkpoint_weights_sha256(directory)}
    return (
        export_scene_encoder(encoder, encoder_path, opset=opset, extra=extra),
        export_box_head(
            box_head, encoder_path.parent / BOX_HEAD_FILE, num_groups=encoder.config.encoder.num_groups,
            group_size=encoder.config.encoder.group_size, opset=opset, extra=extra,
        ),
    )


def default_export_directory(checkpoint: str | Path) -> Path:
    """``<checkpoint>/onnx`` when writable, else a per-weights directory in the user cache."""
    directory = Path(checkpoint)
    inside = directory / EXPORT_DIRECTORY
    if _writable(inside):
        return inside
    from threed_llm_ros.model.language_model import cache_root  # lazy: transformers

    return cache_root() / "onnx" / checkpoint_weights_sha256(directory)[:16]


def _writable(directory: Path) -> bool:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory):
            pass
        return True
    except OSError:
        return False


def ensure_exported(
    checkpoint: str | Path,
    encoder: nn.Module | None = None,
    box_head: nn.Module | None = None,
    *,
    directory: str | Path | None = None,
    opset: int = DEFAULT_OPSET,
) -> tuple[Path, Path]:
    """Paths of the scene-encoder and box-head graphs of ``checkpoint``, exporting them when missing or stale.

    Stale = the sidecar's checkpoint weights hash or opset differs, or the ONNX file's
    hash differs from the sidecar's. ``encoder``/``box_head`` (already loaded) save reading
    the weights again; they must hold the checkpoint's weights.
    """
    checkpoint = Path(checkpoint)
    target = Path(directory) if directory is not None else default_export_directory(checkpoint)
    encoder_path, head_path = target / SCENE_ENCODER_FILE, target / BOX_HEAD_FILE
    weights_sha = checkpoint_weights_sha256(checkpoint)
    if all(_export_is_current(path, weights_sha, opset) for path in (encoder_path, head_path)):
        return encoder_path, head_path
    if encoder is None or box_head is None:
        encoder, box_head, _ = load_exportable_parts(checkpoint)
    extra = {"checkpoint": str(checkpoint.resolve()), "checkpoint_sha256": weights_sha}
    export_scene_encoder(encoder, encoder_path, opset=opset, extra=extra)
    export_box_head(box_head, head_path, num_groups=encoder.config.encoder.num_groups,
                    group_size=encoder.config.encoder.group_size, opset=opset, extra=extra)
    return encoder_path, head_path


def _export_is_current(path: Path, weights_sha: str, opset: int) -> bool:
    if not path.is_file():
        return False
    try:
        metadata = read_sidecar(path)
    except ModelFileError:
        return False
    return (
        metadata.get("checkpoint_sha256") == weights_sha
        and metadata.get("opset") == opset
        and metadata.get("sha256") == file_sha256(path)
    )


# --------------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="threed-llm export", description="Export model graphs for fast runtimes.")
    formats = parser.add_subparsers(dest="format", required=True)
    onnx = formats.add_parser("onnx", help="scene encoder (+ MQE + projector) and box head as ONNX graphs")
    onnx.add_argument("--checkpoint", required=True, help="checkpoint directory (config.json + model.safetensors)")
    onnx.add_argument("--output", default=None, help="scene-encoder file (default: CHECKPOINT/onnx/scene_encoder.onnx, "
                      "where backend onnxruntime looks; the user cache if the checkpoint is read-only); "
                      "box_head.onnx goes next to it")
    onnx.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    onnx.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime vs torch comparison")
    formats.add_parser("lm", help="the language model's decoder (LoRA merged, int8/int4): see `threed-llm export-lm --help`")
    return parser


def _check_against_torch(encoder_graph: ExportedGraph, head_graph: ExportedGraph, checkpoint: Path) -> dict[str, float]:
    """Largest absolute difference of ONNX Runtime vs torch on a random input (batch 1 and 3)."""
    import numpy as np

    # lazy: backends -> tensorrt_engine -> export (file_sha256) would be a cycle at import time
    from threed_llm_ros.runtime.backends import OnnxRuntimeBoxHead, OnnxRuntimeSceneEncoder

    encoder, box_head, _ = load_exportable_parts(checkpoint)
    runtime_encoder = OnnxRuntimeSceneEncoder(encoder_graph.path)
    runtime_head = OnnxRuntimeBoxHead(head_graph.path)
    generator = torch.Generator().manual_seed(1)
    worst: dict[str, float] = {"scene_tokens": 0.0, "expert_weights": 0.0, "patch_tokens": 0.0, "box_normalized": 0.0}
    for batch in (1, 3):
        patches = torch.randn(batch, *encoder_graph.metadata["inputs"][0]["shape"][1:], generator=generator) * 0.1
        centers = torch.rand(batch, encoder.config.encoder.num_groups, 3, generator=generator) * 2 - 1
        with torch.inference_mode():
            reference = encoder.export_forward(patches, centers)
            hidden = torch.randn(batch, box_head.input_dim, generator=generator)
            scene = {"patches": patches, "centers": centers, "patch_tokens": reference[2]}
            reference_box = box_head.decode(box_head(hidden, **{name: scene[name] for name in box_head.scene_inputs}))
        tokens, weights, patch_tokens = runtime_encoder.encode(patches, centers)
        box = runtime_head.predict(hidden, patches=patches, patch_tokens=patch_tokens, centers=centers)
        for name, value, expected in (
            ("scene_tokens", tokens, reference[0]),
            ("expert_weights", weights, reference[1]),
            ("patch_tokens", patch_tokens, reference[2]),
            ("box_normalized", box, reference_box),
        ):
            worst[name] = max(worst[name], float(np.abs(value.numpy() - expected.numpy()).max()))
    return worst


def main(argv: list[str] | None = None) -> int:
    """``threed-llm export onnx --checkpoint DIR [--output FILE] [--opset N]``; ``threed-llm export lm ...``
    is ``threed-llm export-lm ...`` (the language model's decoder, ``runtime/lm_export.py``)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "lm":
        from threed_llm_ros.runtime.lm_export import main as export_lm  # lazy: lm_export imports this module

        return export_lm(argv[1:])
    arguments = _parser().parse_args(argv)
    checkpoint = Path(arguments.checkpoint).expanduser()
    try:
        encoder_graph, head_graph = export_checkpoint(checkpoint, arguments.output, opset=arguments.opset)
    except (ConfigError, ModelFileError) as error:
        print(f"threed-llm export: {error}", file=sys.stderr)
        return 1
    for graph in (encoder_graph, head_graph):
        size_mb = graph.path.stat().st_size / 1e6
        print(f"wrote {graph.path} ({size_mb:.1f} MB, opset {graph.metadata['opset']}, sha256 {graph.sha256[:12]}…) "
              f"+ {graph.sidecar.name}")
    if not arguments.no_check:
        differences = _check_against_torch(encoder_graph, head_graph, checkpoint)
        print("ONNX Runtime vs torch, max |difference| (batch 1 and 3): "
              + ", ".join(f"{name} {value:.2e}" for name, value in differences.items()))
        if max(differences.values()) > 1e-4:
            print("threed-llm export: ONNX Runtime output differs from torch by more than 1e-4", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
