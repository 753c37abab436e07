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
from dataclasses import dataclass, replace
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from threed_llm_ros.geometry.boxes import OrientedBox
from threed_llm_ros.model.box_head import BOX3D_TOKEN, BoxPrediction
from threed_llm_ros.model.generation import ReplyGenerator
from threed_llm_ros.model.language_model import (
    PROGRAM_ADAPTER, add_program_adapter, apply_lora, load_language_model,
)
from threed_llm_ros.model.location_tokens import (
    AddedTokens,
    LocationCodec,
    add_tokens,
    make_new_rows_trainable,
    token_row_parameters,
)
from threed_llm_ros.model.preprocessing import SceneBatch, boxes_to_metres, boxes_to_normalized
from threed_llm_ros.model.scene_encoder import SceneEncoder, SceneEncoderOutput
from threed_llm_ros.model.threed_llm_config import ThreeDLLMConfig, build_box_head
from threed_llm_ros.safe_text import neutralize_markup

SCENE_START_TOKEN = "<scene_start>"
SCENE_END_TOKEN = "<scene_end>"
SCENE_PLACEHOLDER_TOKEN = "<scene>"
IGNORE_INDEX = -100
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


class ThreeDLLM(ReplyGenerator, nn.Module):
    """Scene encoder + language model with LoRA, location tokens and the ``<box3d>`` head
    (``generate`` and its parts: :class:`~threed_llm_ros.model.generation.ReplyGenerator`)."""

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

    def _build_batch(self, prompts: Sequence[str], targets: Sequence[str], num_scene_tokens: int | Sequence[int],
                     blind: bool) -> _Batch:
        """Teacher-forcing rows; ``num_scene_tokens``: one count for every sample, or one per sample."""
        counts = [num_scene_tokens] * len(prompts) if isinstance(num_scene_tokens, int) else list(num_scene_tokens)
        rows: list[tuple[list[int], list[int]]] = []
        for prompt, target, count in zip(prompts, targets, counts):
            prefix = self._token_ids(self.prompt_text(prompt, count, blind=blind))
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
        Length: the signature and the documentation of its arguments; the body is under 50 lines.
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

    def language_loss_given_tokens(self, token_sets: Sequence[torch.Tensor], prompts: Sequence[str],
                                   targets: Sequence[str]) -> torch.Tensor:
        """Teacher-forced language loss of ``targets`` where sample ``i``'s scene block holds
        ``token_sets[i]`` (n_i, hidden) instead of the scene encoder's tokens (n_i may differ and be 0):
        what trains an alternative source of scene tokens (``model/object_tokens.py``) against the
        frozen language model, whose gradient reaches the tokens."""
        if not len(token_sets) == len(prompts) == len(targets):
            raise ValueError(f"{len(token_sets)} token sets, {len(prompts)} prompts, {len(targets)} targets")
        batch = self._build_batch(prompts, targets, [int(tokens.shape[0]) for tokens in token_sets], False)
        flat = torch.cat([tokens.reshape(-1, tokens.shape[-1]) for tokens in token_sets])[None]
        embeddings = self._input_embeddings(batch.input_ids, flat)
        hidden = self.causal_lm.model(
            inputs_embeds=embeddings, attention_mask=batch.attention_mask, use_cache=False
        ).last_hidden_state
        shifted_labels = batch.labels[:, 1:]
        predicted = shifted_labels != IGNORE_INDEX
        logits = self.causal_lm.get_output_embeddings()(hidden[:, :-1][predicted])
        return F.cross_entropy(logits.float(), shifted_labels[predicted])

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

    def _to_metres(self, boxes_normalized: torch.Tensor, scene: SceneBatch) -> list[OrientedBox]:
        metres = boxes_to_metres(boxes_normalized.cpu(), scene.to("cpu"))[0]
        return [OrientedBox.from_array(row.numpy()) for row in metres]

    def boxes_in_text(self, text: str, scene: SceneBatch | None) -> list[OrientedBox]:
        """Boxes written as location tokens in ``text``, in metres (gravity frame) of the single ``scene``."""
        boxes = self.codec.find_boxes(text)
        if not boxes or scene is None:
            return []
        return self._to_metres(torch.as_tensor(np.stack(boxes))[None], scene)
