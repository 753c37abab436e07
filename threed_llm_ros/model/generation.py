"""Replies: ``ThreeDLLM.generate`` (:class:`ReplyGenerator`) and the decoding loop every generator
shares (the torch model's and the ONNX Runtime decoders'): streaming with stop strings, the
deadline, the ``<box3d>`` hidden state and the timings.

A generator supplies the first logits (after its prefill) and ``advance(token)``, which feeds
one token to its KV cache and returns the hidden state of that position and a function for
the next logits (called only when decoding goes on, so the last step skips the LM head).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch

from threed_llm_ros.geometry.boxes import OrientedBox
from threed_llm_ros.model.box_head import BOX3D_TOKEN

from threed_llm_ros.model.preprocessing import SceneBatch


@dataclass
class GenerationResult:
    """Generated text and the boxes it grounds (metres, gravity frame of the scene)."""

    text: str
    token_count: int
    boxes_from_tokens: list[OrientedBox]
    box_from_head: OrientedBox | None
    timings: dict[str, float]
    cut_short: bool = False  # decoding stopped at the deadline, before the end of the text


class StopStringStreamer:
    """Emits decoded text as it grows, holding back what could still become a stop string."""

    def __init__(self, stop_strings: Sequence[str], on_token: Callable[[str], None] | None) -> None:
        self.stop_strings = [s for s in stop_strings if s]
        self.on_token = on_token
        self.emitted = 0
        self.stopped = False
        self.text = ""

    def _holdback(self, text: str) -> int:
        longest = 0
        for stop in self.stop_strings:
            for length in range(min(len(stop) - 1, len(text)), 0, -1):
                if text.endswith(stop[:length]):
                    longest = max(longest, length)
                    break
        return longest

    def update(self, text: str) -> None:
        """New full text so far; cuts at the first stop string and emits the safe part."""
        cut = min((i for i in (text.find(s) for s in self.stop_strings) if i >= 0), default=-1)
        if cut >= 0:
            text = text[:cut]
            self.stopped = True
            safe = len(text)
        elif text.endswith("\ufffd"):
            safe = self.emitted  # an incomplete multi-byte character: wait for the next token
        else:
            safe = len(text) - self._holdback(text)
        self.text = text
        self._emit(max(safe, self.emitted))

    def finish(self) -> str:
        """Emit the rest; the concatenation of all emitted pieces equals the returned text."""
        self._emit(len(self.text))
        return self.text

    def _emit(self, upto: int) -> None:
        if upto > self.emitted:
            piece = self.text[self.emitted : upto]
            self.emitted = upto
            if self.on_token is not None and piece:
                self.on_token(piece)


@dataclass
class DecodeOutcome:
    """What the loop produced: the token ids, the streamed text, the ``<box3d>`` state, whether the deadline cut it."""

    tokens: list[int]
    text: str
    box_hidden: Any
    cut_short: bool


def forced_box_state(hidden_states: Any, prefix: Sequence[int], forced: Sequence[int], box3d_id: int) -> Any:
    """The prefill's hidden state at a ``<box3d>`` the answer prefix forces (None when it forces none)."""
    if box3d_id not in forced:
        return None
    return hidden_states[len(prefix) - len(forced) + list(forced).index(box3d_id)]


def decode(
    logits: Any,
    advance: Callable[[int], tuple[Any, Callable[[], Any]]],
    pick: Callable[[Any], int],
    decode_text: Callable[[list[int]], str],
    streamer: StopStringStreamer,
    *,
    eos_ids: Sequence[int],
    box3d_id: int,
    limit: int,
    deadline: float | None,
    timings: dict[str, float],
    box_hidden: Any = None,
    box_state_available: bool = True,
) -> DecodeOutcome:
    """Tokens from ``logits`` on until the end of turn, ``limit`` tokens, a stop string or ``deadline``.

    A ``<box3d>`` the model writes gets one more step even past the limit or the deadline, so
    its hidden state (what the box head reads) is captured (``box_state_available``: the
    generator can report hidden states at all). Adds ``decode_s`` and ``decode_tokens_per_s``
    to ``timings``.
    """
    generated: list[int] = []
    cut_short = False
    start = time.perf_counter()
    while True:
        token = pick(logits)
        if token in eos_ids:
            break
        generated.append(token)
        streamer.update(decode_text(generated))
        needs_box_state = token == box3d_id and box_hidden is None and box_state_available
        if streamer.stopped or (len(generated) >= limit and not needs_box_state):
            break
        if deadline is not None and time.monotonic() >= deadline and not needs_box_state:
            cut_short = True
            break
        hidden, next_logits = advance(token)
        if needs_box_state:
            box_hidden = hidden
        if len(generated) >= limit:
            break
        logits = next_logits()
    timings["decode_s"] = time.perf_counter() - start
    text = streamer.finish()
    timings["decode_tokens_per_s"] = len(generated) / max(timings["decode_s"], 1e-9)
    return DecodeOutcome(generated, text, box_hidden, cut_short)


class ReplyGenerator:
    """``generate`` and its parts, for :class:`~threed_llm_ros.model.threed_llm.ThreeDLLM` (which
    supplies the language model, tokenizer, scene encoder and box head); the parts
    (``generation_limits``, ``scene_tokens_for``, ``prompt_ids``, ``decode_tokens``,
    ``generation_result``) serve the ONNX Runtime generator too."""

    @contextlib.contextmanager
    def _evaluating(self) -> Iterator[None]:
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                yield
        finally:
            self.train(was_training)

    def _next_token(
        self, logits: torch.Tensor, do_sample: bool, temperature: float, top_p: float, generator: torch.Generator
    ) -> int:
        logits = logits.float().clone()
        logits[self.scene_token_ids] = float("-inf")  # structural tokens are never written
        if not do_sample:
            return int(torch.argmax(logits))
        probabilities = torch.softmax(logits / max(temperature, 1e-5), dim=-1)
        sorted_probabilities, order = torch.sort(probabilities, descending=True)
        cumulative = torch.cumsum(sorted_probabilities, dim=-1)
        keep = cumulative - sorted_probabilities < top_p
        keep[0] = True
        kept = torch.where(keep, sorted_probabilities, torch.zeros_like(sorted_probabilities))
        choice = torch.multinomial(kept.cpu(), 1, generator=generator)
        return int(order[choice.to(order.device)])

    def generate(
        self,
        scene: SceneBatch | None,
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
    ) -> GenerationResult:
        """Answer ``prompt`` about one scene, streaming text pieces to ``on_token``.

        Greedy by default; sampled (temperature, top-p) from a generator seeded with
        ``seed``, so the same call gives the same text. Stops at the end-of-turn token,
        ``max_new_tokens`` or the first stop string (cut from the text). Location-token
        boxes in the text and the ``<box3d>`` head's box come back in metres (gravity
        frame of the scene; in blind mode too when a scene is given, else none).
        ``answer_prefix`` forces the start of the answer (e.g. ``"<box3d>"`` to always get
        the head's box); it is part of the prompt, not of ``text``, but its boxes count.
        ``scene_tokens`` (1, Q, hidden) and ``patch_tokens`` (1, G, width), when given, are
        used instead of running the scene encoder on ``scene`` (an exported encoder's
        outputs, see ``runtime.backends``); ``scene`` still gives the group centres and
        the frame for boxes. ``deadline`` (``time.monotonic()`` seconds) stops decoding
        after the token that passes it (``cut_short`` in the result); it cannot cut the
        prefill, so at least one token is always generated. The loop itself is
        ``generation.decode``, shared with the ONNX Runtime decoders.
        Length: the signature and the documentation of its options; the body is under 30 lines.
        """
        blind, limit = self.generation_limits(scene, blind, max_new_tokens)
        timings: dict[str, float] = {}
        generator = torch.Generator().manual_seed(int(seed))
        with self._evaluating():
            scene_tokens, patch_tokens = self.scene_tokens_for(scene, blind, scene_tokens, patch_tokens, timings)
            prefix, forced = self.prompt_ids(prompt, scene_tokens, blind, answer_prefix)
            start = time.perf_counter()
            input_ids = torch.tensor([prefix], device=self.device)
            output = self.causal_lm.model(inputs_embeds=self._input_embeddings(input_ids, scene_tokens), use_cache=True)
            cache = {"past": output.past_key_values}
            lm_head = self.causal_lm.get_output_embeddings()
            logits = lm_head(output.last_hidden_state[0, -1])
            box_hidden = forced_box_state(output.last_hidden_state[0], prefix, forced, self.box3d_id)
            timings["prefill_s"] = time.perf_counter() - start
            timings["prompt_tokens"] = float(len(prefix))

            def advance(token: int) -> tuple[torch.Tensor, Callable[[], torch.Tensor]]:
                embedding = self.causal_lm.get_input_embeddings()(torch.tensor([[token]], device=self.device))
                step = self.causal_lm.model(inputs_embeds=embedding, past_key_values=cache["past"], use_cache=True)
                cache["past"] = step.past_key_values
                last_hidden = step.last_hidden_state[0, -1]
                return last_hidden, lambda: lm_head(last_hidden)

            outcome = decode(
                logits, advance, lambda scores: self._next_token(scores, do_sample, temperature, top_p, generator),
                self.decode_tokens, StopStringStreamer(stop_strings, on_token), eos_ids=self.eos_ids,
                box3d_id=self.box3d_id, limit=limit, deadline=deadline, timings=timings, box_hidden=box_hidden,
            )
            return self.generation_result(outcome, answer_prefix, scene, blind, patch_tokens, timings)

    def generation_limits(self, scene: SceneBatch | None, blind: bool | None,
                          max_new_tokens: int | None) -> tuple[bool, int]:
        """``blind`` and the token limit of a ``generate`` call (the config's where not given), checked."""
        blind = self.config.blind if blind is None else blind
        limit = self.config.max_new_tokens if max_new_tokens is None else int(max_new_tokens)
        if limit < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {limit}")
        if (scene is None and not blind) or (scene is not None and scene.batch_size != 1):
            raise ValueError("generate takes exactly one scene (a SceneBatch of size 1); None only when blind")
        return blind, limit

    def scene_tokens_for(
        self, scene: SceneBatch | None, blind: bool, scene_tokens: torch.Tensor | None,
        patch_tokens: torch.Tensor | None, timings: dict[str, float],
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The scene and patch tokens a reply reads: none when blind, the given ones (an exported
        encoder's), else the scene encoder's; ``scene_encoder_s`` in ``timings``."""
        start = time.perf_counter()
        if blind:
            scene_tokens = patch_tokens = None
        elif scene_tokens is None:
            encoded = self.encode_scene(scene)
            scene_tokens, patch_tokens = encoded.scene_tokens, encoded.patch_tokens
        else:
            scene_tokens = scene_tokens.to(self.device)
            patch_tokens = None if patch_tokens is None else patch_tokens.to(self.device)
            if patch_tokens is None and "patch_tokens" in self.box_head.scene_inputs:
                raise ValueError("scene_tokens given without patch_tokens: the box head attends over them")
        timings["scene_encoder_s"] = time.perf_counter() - start
        return scene_tokens, patch_tokens

    def prompt_ids(self, prompt: str, scene_tokens: torch.Tensor | None, blind: bool,
                   answer_prefix: str) -> tuple[list[int], list[int]]:
        """The prompt's token ids (the forced answer prefix at the end) and the answer prefix's own ids."""
        num_scene_tokens = 0 if scene_tokens is None else int(scene_tokens.shape[1])
        prefix = self._token_ids(self.prompt_text(prompt, num_scene_tokens, blind=blind))
        forced = self._token_ids(answer_prefix) if answer_prefix else []
        return prefix + forced, forced

    def decode_tokens(self, tokens: list[int]) -> str:
        """Generated ids as text, special tokens (location tokens, ``<box3d>``) kept."""
        return self.tokenizer.decode(tokens, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def generation_result(
        self, outcome: DecodeOutcome, answer_prefix: str, scene: SceneBatch | None, blind: bool,
        patch_tokens: torch.Tensor | None, timings: dict[str, float],
    ) -> GenerationResult:
        """The reply with its boxes: the location tokens' and the head's, read from the ``<box3d>`` state.

        Blind mode still decodes boxes in the given scene's frame (the baseline's guesses);
        without a scene there is no frame and no box.
        """
        answer = answer_prefix + outcome.text
        boxes_from_tokens = self.boxes_in_text(answer, scene)
        box_from_head = None
        if outcome.box_hidden is not None and BOX3D_TOKEN in answer and scene is not None:
            scene_inputs = {} if blind else self.box_head_inputs(scene, patch_tokens, [0])
            box_hidden = torch.as_tensor(outcome.box_hidden, dtype=torch.float32, device=self.device)
            prediction = self.box_head(box_hidden[None], **scene_inputs)
            box_from_head = self._to_metres(self.box_head.decode(prediction)[None].double(), scene)[0]
        return GenerationResult(outcome.text, len(outcome.tokens), boxes_from_tokens, box_from_head, timings,
                                outcome.cut_short)
