"""The names the engine's settings accept, in a module without torch, so that command lines
(``threed-llm ask``) can check their options before the engine's heavy imports."""

from __future__ import annotations

BACKENDS: tuple[str, ...] = ("torch", "onnxruntime", "tensorrt")
LM_BACKENDS: tuple[str, ...] = ("auto", "torch", "onnxruntime")
