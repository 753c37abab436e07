"""The names the engine's settings accept, in a module without torch, so that command lines
(``threed-llm ask``) can check their options before the engine's heavy imports."""

from __future__ import annotations

BACKENDS: tuple[str, ...] = ("torch", "onnxruntime", "tensorrt")
LM_BACKENDS: tuple[str, ...] = ("auto", "torch", "onnxruntime")
#: Exported decoders' weights (``lm_precision``): one precision for every adapter's graph, or ``mixed``: int4 for
#: the default adapter's graph (answers, captions), int8 for the ``programs`` adapter's (int4 breaks its programs).
MIXED = "mixed"
LM_PRECISIONS: tuple[str, ...] = ("int8", "int4", MIXED)
#: The default (``EngineSettings.lm_precision``): every card floor holds, and it decodes 1.2-1.5x faster than
#: int8 (issue 16, docs/benchmarks.md).
DEFAULT_LM_PRECISION = MIXED
#: Exported decoder's LoRA adapters (``lm_adapters``): ``merged``, one graph per adapter with it merged in;
#: ``switchable``, one graph with the base weights and every adapter as a branch chosen by an input.
LM_LAYOUTS: tuple[str, ...] = ("merged", "switchable")
