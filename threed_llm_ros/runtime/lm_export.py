"""Export the checkpoint's language model (LoRA merged) as an ONNX decoder fed with embeddings.

The graph is built by ``onnxruntime-genai``'s model builder (export time only; it also needs
``onnx-ir``) from a Hugging Face directory this module writes: the base SmolLM2 weights with
the checkpoint's added-token rows and trained norms, and one LoRA adapter (``default`` or
``programs``) merged into the projections. The builder runs with ``exclude_embeds`` (the
graph's input is ``inputs_embeds``, so our code applies the embedding table and splices the
scene tokens in), ``include_hidden_states`` (the last hidden state, which the ``<box3d>``
head reads) and ``prune_lm_head`` (prefill computes only the last position's logits).
Weights are int8 or int4 ``MatMulNBits`` (int4: asymmetric, block 32, int8 output layer and sensitive
layers: ``PRECISION_OPTIONS``); ``lm_precision: mixed`` exports each adapter at its own (``MIXED_PRECISIONS``).

Two layouts (``lm_adapters``): ``merged`` (the default) builds one graph per adapter with it merged
in; ``switchable`` builds one graph from the base weights and adds every adapter as a small fp32
branch chosen at run time by an input (``runtime/lm_adapters.py``). ``threed-llm bench`` measures both.

One export per (checkpoint weights, adapter, precision and its builder options) lives in
``<export dir>/lm-<adapter>-<precision>/`` (the switchable one in ``lm-switchable-<precision>/``; the
export dir is the scene encoder's: ``<checkpoint>/onnx`` when writable, else the user cache) with a sidecar
``lm.json`` holding the checkpoint's weights hash; a stale or partial export is rebuilt. About 15 s per graph on two
cores (plus loading the checkpoint), so ``lm_backend: auto`` makes it on first use and ``make
demo`` / ``make test`` make it first for the shipped checkpoint. Nothing is fetched from a hub.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from threed_llm_ros.errors import ConfigError, ModelFileError
from threed_llm_ros.runtime.choices import DEFAULT_LM_PRECISION, LM_LAYOUTS, MIXED
from threed_llm_ros.runtime.export import checkpoint_weights_sha256, default_export_directory, file_sha256

LM_PRECISIONS: tuple[str, ...] = ("int8", "int4", "fp32")  # fp32: a reference for checking the loop
LM_ADAPTERS: tuple[str, ...] = ("default", "programs")
#: ``lm_precision: mixed``: int4 is faster, but its rounding breaks the programs adapter's programs (issue 16).
MIXED_PRECISIONS: dict[str, str] = {"default": "int4", "programs": "int8"}
SWITCHABLE = "switchable"  # the LM_LAYOUTS entry with one graph for every adapter
LM_MODEL_FILE = "model.onnx"
LM_SIDECAR_FILE = "lm.json"
LM_FORMAT = "threed_llm_ros.onnx_lm/1"
BUILDER_PACKAGES = "onnxruntime-genai==0.18.0 onnx-ir==1.1.0"
#: Builder options per precision (see ``python -m onnxruntime_genai.models.builder``). int4: asymmetric
#: (the GGUF's Q4_1 base weights are), block 32, with int8 kept for the output layer and the most rounding-sensitive
#: projections (``mixed_layers``: the first and last eighth of the layers and every third layer's qkv and down
#: projections, 29 of 151); without them the default adapter's graph fails two of the card's floors (issue 16).
PRECISION_OPTIONS: dict[str, tuple[str, ...]] = {
    "int8": (),
    "fp32": (),
    "int4": ("is_symmetric=false", "block_size=32", "matmul_mixed_precision=last_matmul:int8,mixed_layers:int8"),
}
COMMON_OPTIONS = ("exclude_embeds=true", "include_hidden_states=true", "prune_lm_head=true")


@dataclass(frozen=True)
class ExportedLanguageModel:
    """An exported decoder: its directory, graph file and sidecar metadata."""

    directory: Path
    model_path: Path
    metadata: dict[str, Any]


def adapter_precision(precision: str, adapter: str) -> str:
    """The graph precision of ``adapter``'s decoder under ``lm_precision`` ``precision`` (``mixed``: its own)."""
    return MIXED_PRECISIONS[adapter] if precision == MIXED else precision


def lm_export_directory(base: str | Path, adapter: str, precision: str) -> Path:
    """Where the decoder of ``adapter`` at ``precision`` lives inside an export directory."""
    return Path(base) / f"lm-{adapter}-{precision}"


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(name, f"got {value!r}", f"use one of {list(choices)}")


def merged_language_model(model: Any, adapter: str | None = "default") -> Any:
    """A fresh ``LlamaForCausalLM``-style model (fp32, CPU) holding ``model``'s language model with
    ``adapter`` merged into its weights (None: no adapter, the base weights with the checkpoint's token
    rows and norms); ``model`` itself is left unchanged."""
    import torch
    from transformers import AutoModelForCausalLM

    causal_lm = model.causal_lm
    peft_model = model.language_model
    if adapter is not None and adapter not in getattr(peft_model, "peft_config", {}):
        raise ConfigError("adapter", f"the checkpoint has no {adapter!r} LoRA adapter",
                          f"use one of {sorted(getattr(peft_model, 'peft_config', {}))}")
    merged_state: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, module in causal_lm.named_modules():
            if hasattr(module, "lora_A") and hasattr(module, "base_layer"):
                weight = module.base_layer.weight.detach().float().clone()
                if adapter in module.lora_A:
                    a = module.lora_A[adapter].weight.detach().float()
                    b = module.lora_B[adapter].weight.detach().float()
                    weight += (b @ a) * float(module.scaling[adapter])
                merged_state[f"{name}.weight"] = weight
                if module.base_layer.bias is not None:
                    merged_state[f"{name}.bias"] = module.base_layer.bias.detach().float().clone()
        for name, tensor in causal_lm.state_dict().items():
            if "lora_" in name or ".base_layer." in name:
                continue
            merged_state.setdefault(name, tensor.detach().float().clone())
    config = causal_lm.config.__class__.from_dict(causal_lm.config.to_dict())
    if getattr(config, "quantization_config", None) is not None:
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(merged_state, strict=False)
    missing = [name for name in missing if not (name == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise RuntimeError(f"merged language model does not fit a fresh one: missing {missing[:5]}, unexpected {unexpected[:5]}")
    if config.tie_word_embeddings:
        fresh.tie_weights()
    return fresh.eval()


def _builder_command(hf_directory: Path, output: Path, cache: Path, precision: str) -> list[str]:
    options = [*COMMON_OPTIONS, *PRECISION_OPTIONS[precision]]
    return [
        sys.executable, "-m", "onnxruntime_genai.models.builder",
        "-i", str(hf_directory), "-o", str(output), "-p", precision, "-e", "cpu", "-c", str(cache),
        "--extra_options", *options,
    ]


def require_builder() -> None:
    """ModelFileError with the install line when the model builder cannot be imported."""
    try:
        import onnx_ir  # noqa: F401
        import onnxruntime_genai  # noqa: F401
    except ImportError as error:
        raise ModelFileError(
            f"exporting the language model needs onnxruntime-genai's model builder ({error}); "
            f"install it with `pip install {BUILDER_PACKAGES}` (see requirements.txt)"
        ) from None


def export_language_model(
    model: Any,
    output: str | Path,
    *,
    precision: str = "int8",
    adapter: str = "default",
    extra: dict[str, Any] | None = None,
    quiet: bool = False,
    layout: str = "merged",
) -> ExportedLanguageModel:
    """Merge ``adapter`` into ``model``'s language model, save it in Hugging Face format and build
    the ``inputs_embeds`` decoder at ``precision`` into ``output`` (replaced atomically). ``layout``
    ``switchable``: the base weights instead, and every adapter the model has added as a branch
    (``adapter`` is then ignored; the sidecar lists the adapters in the order of ``adapter_scales``).

    Length: merge, save, build and sidecar happen in one temporary directory, swapped in at the end.
    """
    _check_choice("precision", precision, LM_PRECISIONS)
    _check_choice("layout", layout, LM_LAYOUTS)
    adapters = [name for name in LM_ADAPTERS if name in getattr(model.language_model, "peft_config", {})]
    if layout == SWITCHABLE:
        adapter = "+".join(adapters)
    require_builder()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if not quiet:
        print(f"exporting the language model ({adapter} adapter, {precision}) to {output}, once for these weights: "
              "about 15 s on two cores…", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix=".lm-export-", dir=output.parent) as work:
        work_path = Path(work)
        hf_directory, built = work_path / "hf", work_path / "onnx"
        merged = merged_language_model(model, None if layout == SWITCHABLE else adapter)
        merged.save_pretrained(hf_directory)
        model.tokenizer.save_pretrained(hf_directory)
        del merged
        environment = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        completed = subprocess.run(
            _builder_command(hf_directory, built, work_path / "cache", precision),
            capture_output=True, text=True, env=environment, check=False,
        )
        if completed.returncode != 0 or not (built / LM_MODEL_FILE).is_file():
            tail = (completed.stderr or completed.stdout).strip().splitlines()[-5:]
            raise RuntimeError(f"the onnxruntime-genai model builder failed ({completed.returncode}): " + " | ".join(tail))
        if layout == SWITCHABLE:
            from threed_llm_ros.runtime.lm_adapters import add_switchable_lora, lora_factors

            add_switchable_lora(built / LM_MODEL_FILE, lora_factors(model, adapters), adapters)

        lm_config = model.causal_lm.config
        metadata = {
            "format": LM_FORMAT,
            "file": LM_MODEL_FILE,
            "sha256": file_sha256(built / LM_MODEL_FILE),  # the graph; its weights are in the .data file
            "data_sha256": file_sha256(data) if (data := built / f"{LM_MODEL_FILE}.data").is_file() else None,
            "precision": precision,
            "adapter": adapter,
            "layout": layout,
            **({"adapters": adapters} if layout == SWITCHABLE else {}),
            "builder_options": [*COMMON_OPTIONS, *PRECISION_OPTIONS[precision]],
            "hidden_size": int(model.causal_lm.config.hidden_size),
            "vocab_size": int(model.causal_lm.config.vocab_size),
            "num_hidden_layers": int(lm_config.num_hidden_layers),
            "num_key_value_heads": int(lm_config.num_key_value_heads),
            "head_dim": int(getattr(lm_config, "head_dim", None) or lm_config.hidden_size // lm_config.num_attention_heads),
            "export_seconds": round(time.perf_counter() - started, 1),
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **(extra or {}),
        }
        (built / LM_SIDECAR_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
        staging = output.with_name(f".{output.name}.{os.getpid()}.old")
        if output.exists():
            output.rename(staging)
        built.rename(output)
        shutil.rmtree(staging, ignore_errors=True)
    if not quiet:
        size_mb = sum(f.stat().st_size for f in output.iterdir() if f.is_file()) / 1e6
        print(f"exported {output} ({size_mb:.0f} MB) in {metadata['export_seconds']:.0f} s", file=sys.stderr, flush=True)
    return ExportedLanguageModel(output, output / LM_MODEL_FILE, metadata)


def read_lm_export(directory: str | Path) -> ExportedLanguageModel:
    """The export in ``directory``; ModelFileError naming the file and the fix when missing or broken."""
    directory = Path(directory)
    fix = "re-run `threed-llm export-lm --checkpoint CHECKPOINT` or delete the directory to rebuild it on first use"
    sidecar, model_path = directory / LM_SIDECAR_FILE, directory / LM_MODEL_FILE
    try:
        metadata = json.loads(sidecar.read_text())
    except (OSError, ValueError) as error:
        raise ModelFileError(f"{sidecar} is missing or not JSON ({type(error).__name__}); {fix}") from None
    if metadata.get("format") != LM_FORMAT:
        raise ModelFileError(f"{sidecar} has format {metadata.get('format')!r}, expected {LM_FORMAT!r}; {fix}")
    if not model_path.is_file():
        raise ModelFileError(f"{model_path} is missing; {fix}")
    return ExportedLanguageModel(directory, model_path, metadata)


def _is_current(directory: Path, weights_sha: str, precision: str, adapter: str, layout: str = "merged") -> bool:
    try:
        metadata = read_lm_export(directory).metadata
    except ModelFileError:
        return False
    return (metadata.get("checkpoint_sha256") == weights_sha and metadata.get("precision") == precision
            and metadata.get("builder_options") == [*COMMON_OPTIONS, *PRECISION_OPTIONS[precision]]
            and metadata.get("layout", "merged") == layout
            and (layout == SWITCHABLE or metadata.get("adapter") == adapter))


def ensure_lm_exported(
    checkpoint: str | Path,
    model: Any = None,
    *,
    precision: str = "int8",
    adapter: str = "default",
    directory: str | Path | None = None,
    layout: str = "merged",
) -> ExportedLanguageModel:
    """The decoder export of ``checkpoint`` (``adapter``, ``precision``; ``layout`` switchable: the one graph
    holding every adapter, ``adapter`` ignored), exporting it when missing or stale (the checkpoint's
    weights changed). ``model``: the loaded ThreeDLLM, saves loading it again."""
    _check_choice("precision", precision, LM_PRECISIONS)
    _check_choice("adapter", adapter, LM_ADAPTERS)
    _check_choice("layout", layout, LM_LAYOUTS)
    checkpoint = Path(checkpoint)
    base = Path(directory) if directory else default_export_directory(checkpoint)
    target = lm_export_directory(base, SWITCHABLE if layout == SWITCHABLE else adapter, precision)
    weights_sha = checkpoint_weights_sha256(checkpoint)
    if _is_current(target, weights_sha, precision, adapter, layout):
        return read_lm_export(target)
    if model is None:
        from threed_llm_ros.model.checkpoint import load_checkpoint  # lazy: transformers only for an export

        model = load_checkpoint(checkpoint)
    extra = {"checkpoint": str(checkpoint.resolve()), "checkpoint_sha256": weights_sha}
    return export_language_model(model, target, precision=precision, adapter=adapter, extra=extra, layout=layout)


def checkpoint_adapters(checkpoint: str | Path) -> list[str]:
    """The LoRA adapters a checkpoint has (``default``, and ``programs`` with ``question_programs``), from its config."""
    from threed_llm_ros.model.checkpoint import read_checkpoint_config  # lazy: keeps transformers out of the runtime

    model = read_checkpoint_config(Path(checkpoint)).get("model", {})
    return ["default", "programs"] if model.get("question_programs") else ["default"]


def main(argv: list[str] | None = None) -> int:
    """``threed-llm export-lm --checkpoint DIR [--output DIR] [--precision mixed|int8|int4|fp32]
    [--adapter default|programs|all] [--layout merged|switchable]``."""
    parser = argparse.ArgumentParser(prog="threed-llm export-lm",
                                     description="Export the language model (LoRA merged) as an ONNX decoder fed with embeddings.")
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory (config.json + model.safetensors)")
    parser.add_argument("--output", default=None,
                        help="export directory (default: CHECKPOINT/onnx, else the user cache); graphs go to lm-<adapter>-<precision>/")
    parser.add_argument("--precision", choices=(*LM_PRECISIONS, MIXED), default=DEFAULT_LM_PRECISION,
                        help=f"graph weights (default: %(default)s, as lm_precision); mixed: each adapter its own "
                             f"({MIXED_PRECISIONS})")
    parser.add_argument("--adapter", choices=(*LM_ADAPTERS, "all"), default="all",
                        help="which LoRA adapter to merge (all: each one the checkpoint has)")
    parser.add_argument("--layout", choices=LM_LAYOUTS, default="merged",
                        help="merged: one graph per adapter (default); switchable: one graph with every adapter as a "
                             "branch chosen at run time (lm-switchable-<precision>/; --adapter is ignored)")
    arguments = parser.parse_args(argv)
    try:
        from threed_llm_ros.model.checkpoint import load_checkpoint  # lazy: transformers only for an export

        checkpoint = Path(arguments.checkpoint).expanduser()
        switchable = arguments.layout == SWITCHABLE
        adapters = (["default"] if switchable  # one graph holds them all
                    else checkpoint_adapters(checkpoint) if arguments.adapter == "all" else [arguments.adapter])
        model = None  # loaded only when an export is missing or stale
        if switchable and arguments.precision == MIXED:
            raise ConfigError("precision", "mixed needs a graph per adapter", "use --layout merged, or int8 / int4")
        for adapter in adapters:
            precision = adapter_precision(arguments.precision, adapter)
            base = Path(arguments.output) if arguments.output else default_export_directory(checkpoint)
            if model is None and not _is_current(
                    lm_export_directory(base, SWITCHABLE if switchable else adapter, precision),
                    checkpoint_weights_sha256(checkpoint), precision, adapter, arguments.layout):
                model = load_checkpoint(checkpoint)
            exported = ensure_lm_exported(checkpoint, model, precision=precision, adapter=adapter,
                                          directory=arguments.output, layout=arguments.layout)
            adapter = exported.metadata["adapter"]
            print(f"{exported.model_path} ({precision}, {adapter} adapter, weights sha256 "
                  f"{(exported.metadata.get('data_sha256') or exported.metadata['sha256'])[:12]}…)")
    except (ConfigError, ModelFileError, RuntimeError, OSError) as error:
        print(f"threed-llm export-lm: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
