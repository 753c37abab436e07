"""Which language-model backend serves replies (``lm_backend``), and freeing what it leaves unused.

``lm_backend: auto`` (the default) picks, once at load time:

* ``onnxruntime`` (the exported decoders, ``lm_precision`` mixed by default: the default adapter's
  graph int4, the programs adapter's int8) on the CPU for a trained checkpoint: about 4-5× torch's
  decode speed on two cores and within the model card's floors. The decoders are exported on first
  use (about 15-35 s per LoRA adapter on two cores, announced on stderr) into the checkpoint's ``onnx/`` directory, keyed on its weights' hash,
  and reused afterwards (``make demo`` and ``make test`` build them first for the shipped checkpoint);
* ``torch`` on CUDA (bf16/fp16 there), with ``compile_language_model``, for an untrained
  checkpoint (its replies mean nothing, so nothing is worth exporting), or where the export
  cannot be made (the model builder missing and nothing cached, or the build failing).

Every choice comes with one line saying which and why (:class:`LanguageBackendChoice.note`),
which the node logs and ``threed-llm ask`` prints. When the exported decoders serve, the torch
model's decoder layers are released (:func:`release_torch_decoder`): the embedding table,
tokenizer, scene encoder and box head stay, which is all the ONNX loop needs.
"""

from __future__ import annotations

import ctypes
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from threed_llm_ros.errors import ConfigError, ModelFileError
from threed_llm_ros.runtime.choices import MIXED
from threed_llm_ros.runtime.lm_export import require_builder
from threed_llm_ros.runtime import onnx_decoder

AUTO = "auto"


@dataclass(frozen=True)
class LanguageBackendChoice:
    """The backend that will serve (``torch`` or ``onnxruntime``) and why."""

    backend: str
    reason: str
    fallback_allowed: bool  # auto: a failed export falls back to torch (with a line); explicit: an error

    def note(self, detail: str = "") -> str:
        """One log line: ``language model: <backend>[ detail] (<reason>)``."""
        return f"language model: {self.backend}{' ' + detail if detail else ''} ({self.reason})"


def checkpoint_is_trained(checkpoint: str | Path | None) -> bool:
    """False only for a checkpoint whose config says ``extra.trained: false`` (``build_untrained_checkpoint``)."""
    if checkpoint is None:
        return True
    try:
        document = json.loads((Path(checkpoint) / "config.json").read_text())
    except (OSError, ValueError):
        return True
    return bool(document.get("extra", {}).get("trained", True))


def builder_available() -> bool:
    """Whether onnxruntime-genai's model builder (export time only) can be imported."""
    try:
        require_builder()
    except ModelFileError:
        return False
    return True


def choose_language_backend(settings: Any, checkpoint: str | Path | None) -> LanguageBackendChoice:
    """Resolve ``settings.lm_backend`` (``auto``, ``torch`` or ``onnxruntime``) for ``checkpoint``."""
    requested = settings.lm_backend
    if requested != AUTO:
        return LanguageBackendChoice(requested, f"lm_backend: {requested}", fallback_allowed=False)
    device = str(settings.device)
    if device.startswith("cuda"):
        return LanguageBackendChoice("torch", f"lm_backend auto: device is {device}; the exported decoder runs on the CPU",
                                     fallback_allowed=False)
    if settings.compile_language_model:
        return LanguageBackendChoice("torch", "lm_backend auto: compile_language_model is on (a torch option)",
                                     fallback_allowed=False)
    if not checkpoint_is_trained(checkpoint):
        return LanguageBackendChoice("torch", "lm_backend auto: the checkpoint is untrained, nothing worth exporting",
                                     fallback_allowed=False)
    return LanguageBackendChoice("onnxruntime", "lm_backend auto: CPU and a trained checkpoint; "
                                 "set lm_backend: torch to decode with torch", fallback_allowed=True)


def serving_generator(settings: Any, checkpoint: str | Path | None, model: Any) -> tuple[Any, str, str]:
    """(what generates replies, ``torch`` or ``onnxruntime``, the log line) for ``model`` loaded from
    ``checkpoint`` under ``settings`` (``lm_backend``, ``lm_precision``, ``lm_adapters``, ``lm_threads``,
    ``export_directory``, ``device``). Exports the decoders on first use. ``lm_backend: onnxruntime``: a failed
    export is a ConfigError naming ``lm_backend``; ``auto``: it falls back to the torch model, and the line says why."""
    choice = choose_language_backend(settings, checkpoint)
    if choice.backend == "torch":
        return model, "torch", choice.note()
    try:
        generator = onnx_decoder.load_onnx_generator(checkpoint, model, precision=settings.lm_precision,
                                                     settings=onnx_decoder.DecoderSettings(threads=settings.lm_threads),
                                                     directory=settings.export_directory or None,
                                                     layout=settings.lm_adapters)
    except (ModelFileError, RuntimeError, OSError) as error:
        if not choice.fallback_allowed:
            raise ConfigError("lm_backend", str(error),
                              "fix or delete the export named above, or use lm_backend: torch") from error
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        return model, "torch", f"language model: torch (lm_backend auto: the exported decoder is not available: {first_line})"
    threads = settings.lm_threads
    directory = generator.decoders["default"].export.directory.parent
    precisions = ", ".join(f"{decoder.export.metadata.get('precision')} {name}"
                           for name, decoder in generator.decoders.items())
    return generator, "onnxruntime", choice.note(
        f"{settings.lm_precision}{f' ({precisions})' if settings.lm_precision == MIXED else ''}, "
        f"{threads} thread{'s' if threads > 1 else ''}, "
        f"{'one graph for every adapter' if settings.lm_adapters == 'switchable' else 'a graph per adapter'}, "
        f"decoders in {directory}")


def _trim_heap() -> None:
    """Hand freed heap pages back to the OS (glibc; a no-op elsewhere)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class ReleasedDecoderLayer(torch.nn.Module):
    """Stands in for the torch decoder layers once the exported decoders serve: running it is an error."""

    def forward(self, *arguments: Any, **keywords: Any) -> Any:  # noqa: ARG002 - any call is refused
        raise RuntimeError("the torch language model's layers were released because lm_backend onnxruntime serves "
                           "replies; load the checkpoint again (or use lm_backend: torch) to run it with torch")


def release_torch_decoder(model: Any) -> int:
    """Drop ``model``'s torch decoder layers (LoRA included), keeping the embedding table, final norm,
    tokenizer, scene encoder and box head; returns the bytes of parameters released."""
    inner = model.causal_lm.model
    layers = getattr(inner, "layers", None)
    if layers is None or (len(layers) == 1 and isinstance(layers[0], ReleasedDecoderLayer)):
        return 0
    released = sum(parameter.numel() * parameter.element_size() for parameter in layers.parameters())
    inner.layers = torch.nn.ModuleList([ReleasedDecoderLayer()])
    del layers
    # The base weights may be memory-mapped from the dequantised cache file; a small tensor left in
    # that mapping (the final norm) would keep all of it mapped, and its touched pages resident.
    table = model.causal_lm.get_input_embeddings().weight
    with torch.no_grad():
        for parameter in inner.parameters():
            if parameter is not table:
                parameter.data = parameter.data.clone()
    import gc

    gc.collect()
    _trim_heap()
    return released
