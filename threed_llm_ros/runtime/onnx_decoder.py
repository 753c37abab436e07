"""Replies from the exported language model: plain ONNX Runtime and a short greedy loop.

The decoder graph (``runtime/lm_export.py``) takes ``inputs_embeds`` and a KV cache, so this
module builds the same input embeddings the torch path builds (chat prompt, ``<scene>``
placeholders replaced by the scene tokens, the checkpoint's embedding table), prefills once
and then feeds one token's embedding at a time. It gives back the torch path's
:class:`GenerationResult` (text, token count, boxes from location tokens, the ``<box3d>``
head's box from the graph's ``hidden_states`` output, timings), honouring
``max_new_tokens``, stop strings, the end-of-turn tokens, streaming and a ``deadline``.

A ``switchable`` export (``runtime/lm_adapters.py``) is one graph for every LoRA adapter: one
session, opened once, whose ``adapter_scales`` input picks the adapter (:meth:`OnnxDecoder.for_adapter`).

Threads and waiting policy are settings: on a shared CPU (a robot's computer runs drivers and
the navigation stack) busy-waiting worker threads collapse, so spinning is off by default.
"""

from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from threed_llm_ros.errors import ConfigError, ModelFileError
from threed_llm_ros.model.generation import StopStringStreamer, decode, forced_box_state
from threed_llm_ros.runtime.lm_export import ExportedLanguageModel, read_lm_export
from threed_llm_ros.runtime.lm_adapters import ADAPTER_INPUT, adapter_scales
from threed_llm_ros.runtime.choices import DEFAULT_LM_PRECISION, MIXED
from threed_llm_ros.runtime.lm_export import LM_ADAPTERS, SWITCHABLE, adapter_precision, ensure_lm_exported


@dataclass(frozen=True)
class DecoderSettings:
    """ONNX Runtime session settings of the decoder (the node's ``lm_threads`` / ``lm_spinning``)."""

    threads: int = 1  # intra-op threads; 1 is robust on a shared 2-core CPU (see `threed-llm bench`)
    allow_spinning: bool = False  # busy-waiting pools collapse when cores are shared

    def validate(self) -> None:
        """ConfigError naming the bad setting."""
        if self.threads < 1:
            raise ConfigError("lm_threads", f"got {self.threads}", "use 1 or 2 (threads of the language model)")


class OnnxDecoder:
    """One exported decoder graph in an ONNX Runtime session: prefill and one-token steps."""

    def __init__(self, export: ExportedLanguageModel | str | Path, settings: DecoderSettings | None = None) -> None:
        """Open the export (a directory or :class:`ExportedLanguageModel`); ModelFileError when it is broken."""
        import onnxruntime as ort

        self.export = export if isinstance(export, ExportedLanguageModel) else read_lm_export(export)
        self.settings = settings or DecoderSettings()
        self.settings.validate()
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(self.settings.threads)
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.settings.allow_spinning else "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(self.export.model_path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # noqa: BLE001 - onnxruntime raises its own types for a corrupt file
            first_line = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
            raise ModelFileError(
                f"{self.export.model_path} cannot be loaded by ONNX Runtime ({first_line}); delete "
                f"{self.export.directory} and re-run `threed-llm export-lm --checkpoint CHECKPOINT` (or let the engine rebuild it)"
            ) from None
        metadata = self.export.metadata
        self.num_layers = int(metadata["num_hidden_layers"])
        self.kv_heads = int(metadata["num_key_value_heads"])
        self.head_dim = int(metadata["head_dim"])
        self.hidden_size = int(metadata["hidden_size"])
        self.vocab_size = int(metadata["vocab_size"])
        self.output_names = [output.name for output in self.session.get_outputs()]
        input_names = {node.name for node in self.session.get_inputs()}
        if "inputs_embeds" not in input_names:
            raise ModelFileError(f"{self.export.model_path} has no inputs_embeds input; re-export it with `threed-llm export-lm`")
        self._logits = self.output_names.index("logits")
        self._hidden = self.output_names.index("hidden_states") if "hidden_states" in self.output_names else None
        self._presents = [self.output_names.index(f"present.{i}.{kind}") for i in range(self.num_layers) for kind in ("key", "value")]
        self._past_names = [f"past_key_values.{i}.{kind}" for i in range(self.num_layers) for kind in ("key", "value")]
        self.adapters: list[str] = list(metadata.get("adapters", [])) if ADAPTER_INPUT in input_names else []
        self.adapter = self.adapters[0] if self.adapters else str(metadata.get("adapter", "default"))
        self._adapter_feeds: dict[str, Any] = {}
        if self.adapters:
            self._select(self.adapter)

    def _select(self, adapter: str) -> None:
        from onnxruntime import OrtValue

        self.adapter = adapter
        self._adapter_feeds = {ADAPTER_INPUT: OrtValue.ortvalue_from_numpy(adapter_scales(self.adapters, adapter))}

    def for_adapter(self, adapter: str) -> "OnnxDecoder":
        """This decoder with ``adapter`` selected: a view sharing the session (a switchable graph only)."""
        if not self.adapters:
            raise ValueError(f"{self.export.model_path} holds the {self.adapter!r} adapter merged; it cannot switch")
        view = copy.copy(self)
        view._select(adapter)
        return view

    def empty_cache(self) -> list[Any]:
        """The KV cache of an empty sequence (ONNX Runtime values, fed back without copies)."""
        from onnxruntime import OrtValue

        empty = np.zeros((1, self.kv_heads, 0, self.head_dim), dtype=np.float32)
        return [OrtValue.ortvalue_from_numpy(empty) for _ in self._past_names]

    def start(self, embeddings: np.ndarray, capacity: int) -> tuple[np.ndarray, np.ndarray | None, "DecodeSequence"]:
        """Prefill ``embeddings`` (1, S, hidden) into a KV buffer for ``capacity`` positions: last logits
        (vocab,), hidden states (S, hidden) or None, and the sequence to :meth:`DecodeSequence.advance`.
        Same logits as :meth:`step`, without its per-token copies (see :class:`DecodeSequence`)."""
        sequence = DecodeSequence(self, capacity)
        logits, hidden = sequence.prefill(embeddings)
        return logits, hidden, sequence

    def step(self, embeddings: np.ndarray, cache: list[Any]) -> tuple[np.ndarray, np.ndarray | None, list[Any]]:
        """Run ``embeddings`` (1, S, hidden) after ``cache``: last logits (vocab,), hidden states
        (S, hidden) or None, and the new cache. The cache stays in ONNX Runtime's memory (no
        copy of every layer's keys and values per token)."""
        from onnxruntime import OrtValue

        length = embeddings.shape[1] + cache[0].shape()[2]
        feeds = {"inputs_embeds": OrtValue.ortvalue_from_numpy(np.ascontiguousarray(embeddings, dtype=np.float32)),
                 "attention_mask": OrtValue.ortvalue_from_numpy(np.ones((1, length), dtype=np.int64))}
        feeds.update(zip(self._past_names, cache))
        feeds.update(self._adapter_feeds)
        outputs = self.session.run_with_ort_values(None, feeds)
        hidden = outputs[self._hidden].numpy()[0] if self._hidden is not None else None
        return outputs[self._logits].numpy()[0, -1], hidden, [outputs[i] for i in self._presents]


class DecodeSequence:
    """One sequence decoded with a KV buffer shared by the graph's past and present inputs and outputs.

    :meth:`OnnxDecoder.step` feeds the cache back as inputs and gets a new present tensor per layer
    per token, which ``GroupQueryAttention`` fills by copying the whole past into it. Here each
    layer's keys and values live in one buffer of ``capacity`` positions, bound as both its past
    input and its present output, so the operator appends the new position in place (its shared
    buffer mode, told by ``attention_mask``'s count of ones). After the prefill, the decode binding
    is made once: each token only writes its embedding and one more mask position into bound
    buffers and runs. Logits equal :meth:`OnnxDecoder.step`'s (``test_onnx_decoder.py``).
    """

    def __init__(self, decoder: OnnxDecoder, capacity: int) -> None:
        """Buffers for ``capacity`` positions (prompt and generated tokens); nothing is run yet."""
        self.decoder = decoder
        self.capacity = int(capacity)
        self.length = 0
        self._binding = decoder.session.io_binding()
        self._arrays: list[np.ndarray] = []  # the numpy memory behind every bound value, kept alive here
        shape = (1, decoder.kv_heads, self.capacity, decoder.head_dim)
        for past in decoder._past_names:
            buffer = self._value(np.zeros(shape, dtype=np.float32))
            self._binding.bind_ortvalue_input(past, buffer)
            self._binding.bind_ortvalue_output(past.replace("past_key_values.", "present."), buffer)
        for name, value in decoder._adapter_feeds.items():
            self._binding.bind_ortvalue_input(name, value)
        self._logits = np.zeros((1, 1, decoder.vocab_size), dtype=np.float32)
        self._binding.bind_ortvalue_output("logits", self._value(self._logits))

    def _value(self, array: np.ndarray) -> Any:
        """An ONNX Runtime value over ``array``'s memory (no copy), which this sequence keeps alive."""
        from onnxruntime import OrtValue

        self._arrays.append(array)
        return OrtValue.ortvalue_from_numpy(array)

    def _bind(self, embeddings: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
        """Bind the inputs and the hidden-state output for ``embeddings``' positions; that output's array."""
        self._binding.bind_ortvalue_input("inputs_embeds", self._value(embeddings))
        self._binding.bind_ortvalue_input("attention_mask", self._value(mask))
        if self.decoder._hidden is None:
            return None
        hidden = np.zeros((1, embeddings.shape[1], self.decoder.hidden_size), dtype=np.float32)
        self._binding.bind_ortvalue_output("hidden_states", self._value(hidden))
        return hidden

    def prefill(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Run the prompt's ``embeddings`` (1, S, hidden); then bind the one-token inputs for :meth:`advance`."""
        count = embeddings.shape[1]
        if self.length or count > self.capacity:
            raise ValueError(f"prefill of {count} positions into a fresh buffer of {self.capacity}")
        hidden = self._bind(np.ascontiguousarray(embeddings, dtype=np.float32), np.ones((1, count), dtype=np.int64))
        self.decoder.session.run_with_iobinding(self._binding)
        self.length = count
        logits = self._logits[0, -1].copy()
        # the one-token binding, made once: the mask spans the buffer and its ones count the positions
        self._token = np.zeros((1, 1, self.decoder.hidden_size), dtype=np.float32)
        self._mask = np.zeros((1, self.capacity), dtype=np.int64)
        self._mask[0, :count] = 1
        self._token_hidden = self._bind(self._token, self._mask)
        return logits, None if hidden is None else hidden[0]

    def advance(self, embedding: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Run one token's ``embedding`` (hidden,) after the sequence: last logits (vocab,) and hidden state
        (hidden,) or None."""
        if self.length >= self.capacity:
            raise ValueError(f"the KV buffer holds {self.capacity} positions; all are used")
        self._token[0, 0] = embedding  # the bound values read these arrays' memory
        self._mask[0, self.length] = 1
        self.decoder.session.run_with_iobinding(self._binding)
        self.length += 1
        return self._logits[0, -1].copy(), None if self._token_hidden is None else self._token_hidden[0, -1].copy()


class OnnxGenerator:
    """``ThreeDLLM.generate`` on exported decoders, one per LoRA adapter (``default``, ``programs``).

    Usable in place of the model where replies are generated: attributes it does not define
    (tokenizer, codec, config, …) are the model's, and :meth:`program_adapter` switches to the
    ``programs`` decoder, so ``model.scene_objects`` functions run their programs on it too.
    """

    def __init__(self, model: Any, decoders: dict[str, OnnxDecoder]) -> None:
        """``model``: the loaded ThreeDLLM (embedding table, tokenizer, box head); ``decoders`` by adapter."""
        if "default" not in decoders:
            raise ValueError("an OnnxGenerator needs the default adapter's decoder")
        self.model = model
        self.decoders = decoders
        self._adapter = "default"
        weight = model.causal_lm.get_input_embeddings().weight.detach()
        self.embedding_table = weight.to("cpu", torch.float32).numpy()
        self.blocked_ids = np.asarray(model.scene_token_ids, dtype=np.int64)

    def __getattr__(self, name: str) -> Any:
        model = self.__dict__.get("model")
        if model is None:
            raise AttributeError(name)
        return getattr(model, name)

    @contextlib.contextmanager
    def program_adapter(self) -> Iterator[None]:
        """Generate with the ``programs`` decoder (the model's program LoRA merged) inside the block."""
        if "programs" not in self.decoders:
            raise ValueError("no exported decoder for the programs adapter (question_programs is off?)")
        previous, self._adapter = self._adapter, "programs"
        try:
            yield
        finally:
            self._adapter = previous

    def _next_token(self, logits: np.ndarray, do_sample: bool, temperature: float, top_p: float,
                    generator: torch.Generator) -> int:
        if do_sample:
            return self.model._next_token(torch.from_numpy(logits.copy()), True, temperature, top_p, generator)
        logits = logits.copy()
        logits[self.blocked_ids] = -np.inf  # structural tokens are never written (as in the torch path)
        return int(np.argmax(logits))

    def _prefix(self, scene: Any, prompt: str, blind: bool, answer_prefix: str, scene_tokens: torch.Tensor | None,
                patch_tokens: torch.Tensor | None, timings: dict[str, float]) -> tuple[np.ndarray, list[int], list[int], Any]:
        """The prompt's input embeddings (1, S, hidden) with the scene tokens spliced in, its token ids,
        the forced answer-prefix ids and the patch tokens (encoding the scene when not given)."""
        model = self.model
        scene_tokens, patch_tokens = model.scene_tokens_for(scene, blind, scene_tokens, patch_tokens, timings)
        prefix, forced = model.prompt_ids(prompt, scene_tokens, blind, answer_prefix)
        embeddings = self.embedding_table[np.asarray(prefix)][None].copy()
        if scene_tokens is not None:
            placeholders = np.flatnonzero(np.asarray(prefix) == model.placeholder_id)
            tokens = scene_tokens.detach().to("cpu", torch.float32).numpy().reshape(-1, embeddings.shape[-1])
            if placeholders.size != tokens.shape[0]:
                raise RuntimeError(f"found {placeholders.size} scene placeholders for {tokens.shape[0]} scene tokens")
            embeddings[0, placeholders] = tokens
        return embeddings, prefix, forced, patch_tokens

    def token_agreement(self, scene: Any, prompt: str, reference: Sequence[int], *, blind: bool = False,
                        scene_tokens: torch.Tensor | None = None, patch_tokens: torch.Tensor | None = None) -> tuple[int, int]:
        """Teacher-forced greedy agreement with a reference reply's token ids (e.g. the torch model's):
        at each position, fed the reference's tokens so far, does this decoder's greedy choice equal the
        reference's next token? Returns (matches, positions); the end of turn counts as a last position."""
        model = self.model
        decoder = self.decoders[self._adapter]
        targets = [*reference, model.eos_ids[0]]
        with torch.inference_mode():
            embeddings, *_ = self._prefix(scene, prompt, blind, "", scene_tokens, patch_tokens, {})
            logits, _, sequence = decoder.start(embeddings, embeddings.shape[1] + len(targets))
            matches = 0
            for index, target in enumerate(targets):
                choice = self._next_token(logits, False, 1.0, 1.0, torch.Generator())
                matches += int(choice == target or (choice in model.eos_ids and target in model.eos_ids))
                if index + 1 < len(targets):
                    logits, _ = sequence.advance(self.embedding_table[target])
        return matches, len(targets)

    def generate(
        self,
        scene: Any,
        prompt: str,
        *,
        max_new_tokens: int | None = None,
        do_sample: bool = False,
        temperature: float = 0.7,
        top_p: float = 0.9,
        seed: int = 0,
        stop_strings: Sequence[str] = (),
        on_token: Callable[[str], None] | None = None,
        blind: bool | None = None,
        answer_prefix: str = "",
        scene_tokens: torch.Tensor | None = None,
        patch_tokens: torch.Tensor | None = None,
        deadline: float | None = None,
    ) -> Any:
        """What :meth:`ThreeDLLM.generate` returns, decoded by ONNX Runtime (same arguments, the same
        loop: ``generation.decode``).

        ``deadline`` (``time.monotonic()`` seconds) stops decoding after the token that passes it.
        """
        model = self.model
        decoder = self.decoders[self._adapter]
        blind, limit = model.generation_limits(scene, blind, max_new_tokens)
        timings: dict[str, float] = {}
        generator = torch.Generator().manual_seed(int(seed))
        with torch.inference_mode():
            embeddings, prefix, forced, patch_tokens = self._prefix(scene, prompt, blind, answer_prefix,
                                                                     scene_tokens, patch_tokens, timings)
            start = time.perf_counter()
            # room for every token decode() may advance by (the limit, a <box3d> state past it included)
            logits, hidden, sequence = decoder.start(embeddings, embeddings.shape[1] + limit + 1)
            box_hidden = None if hidden is None else forced_box_state(hidden, prefix, forced, model.box3d_id)
            timings["prefill_s"] = time.perf_counter() - start
            timings["prompt_tokens"] = float(len(prefix))

            def advance(token: int) -> tuple[np.ndarray | None, Callable[[], np.ndarray]]:
                next_logits, next_hidden = sequence.advance(self.embedding_table[token])
                return next_hidden, lambda: next_logits

            outcome = decode(
                logits, advance, lambda scores: self._next_token(scores, do_sample, temperature, top_p, generator),
                model.decode_tokens, StopStringStreamer(stop_strings, on_token), eos_ids=model.eos_ids,
                box3d_id=model.box3d_id, limit=limit, deadline=deadline, timings=timings, box_hidden=box_hidden,
                box_state_available=decoder._hidden is not None,
            )
            return model.generation_result(outcome, answer_prefix, scene, blind, patch_tokens, timings)


def load_onnx_generator(
    checkpoint: str | Path,
    model: Any,
    *,
    precision: str = DEFAULT_LM_PRECISION,
    settings: DecoderSettings | None = None,
    directory: str | Path | None = None,
    layout: str = "merged",
) -> OnnxGenerator:
    """An :class:`OnnxGenerator` for a loaded checkpoint: each adapter it has exported on first use
    (about 15 s each, cached next to the scene encoder's graphs) and opened; ``layout`` switchable: the
    one graph holding every adapter, exported and opened once. ``precision`` ``mixed``: each adapter's
    graph at its own precision (``lm_export.MIXED_PRECISIONS``; a graph per adapter only)."""
    adapters = [adapter for adapter in LM_ADAPTERS if adapter in model.language_model.peft_config]
    if layout == SWITCHABLE and precision == MIXED:
        raise ConfigError("lm_precision", "mixed gives each adapter's graph its own precision, a switchable "
                          "layout has one graph", "use lm_adapters: merged, or lm_precision int8 or int4")
    if layout == SWITCHABLE:
        export = ensure_lm_exported(checkpoint, model, precision=precision, directory=directory, layout=layout)
        shared = OnnxDecoder(export, settings)
        return OnnxGenerator(model, {adapter: shared.for_adapter(adapter) for adapter in adapters})
    decoders = {}
    for adapter in adapters:
        export = ensure_lm_exported(checkpoint, model, precision=adapter_precision(precision, adapter), adapter=adapter,
                                    directory=directory)
        decoders[adapter] = OnnxDecoder(export, settings)
    return OnnxGenerator(model, decoders)
