"""The names the engine's settings accept, in a module without torch, so that command lines
(``threed-llm ask``) can check their options before the engine's heavy imports."""

from __future__ import annotations

BACKENDS: tuple[str, ...] = ("torch", "onnxruntime", "tensorrt")
LM_BACKENDS: tuple[str, ...] = ("auto", "torch", "onnxruntime")
#: Exported decoder's LoRA adapters (``lm_adapters``): ``merged``, one graph per adapter with it merged in;
#: ``switchable``, one graph with the base weights and every adapter as a branch chosen by an input.
LM_LAYOUTS: tuple[str, ...] = ("merged", "switchable")
