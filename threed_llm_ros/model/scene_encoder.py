"""The exportable scene encoder: point encoder -> projector -> MQE Q-Former -> projector.

Input is what ``prepare_scenes`` produces (grouped patches and group centres); output is
Q scene tokens in the language model's embedding width (576 for SmolLM2-135M), the
prefix that 3D-LLM / MiniGPT-3D put in front of the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from threed_llm_ros.errors import ConfigError
from threed_llm_ros.config_io import config_from_dict, config_to_dict
from threed_llm_ros.model.point_encoder import PointEncoder, PointEncoderConfig
from threed_llm_ros.model.preprocessing import PreprocessConfig
from threed_llm_ros.model.qformer import MixtureOfQueryExperts, QFormerConfig
from threed_llm_ros.data.catalog import CATEGORY_NAMES, COLOR_NAMES

SMOLLM2_135M_HIDDEN = 576
#: Per-dimension RMS of SmolLM2-135M's token embedding rows (row norm 3.2 over 576 dimensions).
SCENE_TOKEN_NORM_SCALE = 0.13

_PRESET_GROUPS = {"mini": 128, "base": 512}


@dataclass
class SceneEncoderConfig:
    """Preprocessing, point encoder, Q-Former and the language model width, kept consistent."""

    preprocess: PreprocessConfig = field(default_factory=lambda: PreprocessConfig(num_groups=_PRESET_GROUPS["mini"]))
    encoder: PointEncoderConfig = field(default_factory=PointEncoderConfig)
    qformer: QFormerConfig = field(default_factory=QFormerConfig)
    output_dim: int = SMOLLM2_135M_HIDDEN
    # > 0: the scene tokens end in a LayerNorm whose gain starts at this value, so they enter the
    # language model at the size of its word embeddings (SmolLM2-135M's rows have an RMS near
    # 0.13) instead of 20 times larger. 0 keeps the first checkpoints' unnormalised tokens.
    output_norm_scale: float = 0.0
    # Auxiliary patch semantics: a linear head on the point encoder's patch tokens names the
    # category and the colour of the object each point group lies on ("" = none), so the
    # patch tokens must carry what the language model is asked about. Empty = no head.
    semantic_categories: list[str] = field(default_factory=list)
    semantic_colors: list[str] = field(default_factory=list)
    # Word tokens (> 0 needs the patch-semantics head): besides the Q-Former's queries, the
    # ``word_groups`` point groups most likely on an object each become two tokens, the
    # language model's own embeddings of the colour names and then of the category names,
    # mixed by the head's probabilities (plus a learned embedding of the group's position on
    # the category token). The frozen model reads them much like the words "red cup": scene
    # features aligned with its vocabulary, the role CLIP-aligned features play in 3D-LLM.
    word_groups: int = 0
    # Instance word tokens (needs word tokens): the head also votes, per point group, for the
    # centre and the size of the object the group lies on (as VoteNet's groups vote). A word pair
    # then carries that object's centre and size instead of its group's position, and a pair
    # whose group voted for the same object as a likelier group of the same category, or that is
    # likelier on nothing, is blanked (zeros), so each object is named about once: counting and
    # size or distance questions need that.
    word_instances: bool = False

    def __post_init__(self) -> None:
        preprocess_groups = (self.preprocess.num_groups, self.preprocess.group_size)
        if preprocess_groups != (self.encoder.num_groups, self.encoder.group_size):
            raise ConfigError(
                "preprocess.num_groups/group_size",
                f"preprocessing makes {self.preprocess.num_groups} groups of {self.preprocess.group_size} but the "
                f"encoder expects {self.encoder.num_groups} of {self.encoder.group_size}",
                "make preprocess and encoder num_groups/group_size equal",
            )
        if self.output_norm_scale < 0:
            raise ConfigError("output_norm_scale", f"must be >= 0, got {self.output_norm_scale}", "use 0.13 (0 = no norm)")
        if bool(self.semantic_categories) != bool(self.semantic_colors):
            raise ConfigError(
                "semantic_categories/semantic_colors",
                "the patch-semantics head needs both vocabularies or neither",
                "give both lists (e.g. the simulator catalog's names) or leave both empty",
            )
        self.semantic_categories = list(self.semantic_categories)
        self.semantic_colors = list(self.semantic_colors)
        if self.word_groups < 0 or self.word_groups > self.encoder.num_groups:
            raise ConfigError(
                "word_groups", f"must be in [0, {self.encoder.num_groups}], got {self.word_groups}",
                "use 0 (no word tokens) or e.g. 16",
            )
        if self.word_instances and not self.word_groups:
            raise ConfigError(
                "word_instances", "instance word tokens refine word tokens, which are off (word_groups is 0)",
                "set word_groups (e.g. 16), or set word_instances: false",
            )
        if self.word_groups and not self.semantic_categories:
            raise ConfigError(
                "word_groups", "word tokens are read from the patch-semantics head, which is off",
                "give semantic_categories and semantic_colors, or set word_groups: 0",
            )
        if self.output_dim < 1:
            raise ConfigError(
                "output_dim", f"must be positive, got {self.output_dim}", "use the language model's hidden size"
            )

    @classmethod
    def preset(cls, name: str, output_dim: int = SMOLLM2_135M_HIDDEN) -> "SceneEncoderConfig":
        """``"mini"`` (CPU-fast default) or ``"base"`` (MiniGPT-3D-sized encoder), with normalised scene
        tokens and the patch-semantics head over the simulator catalog's categories and colours."""
        if name not in _PRESET_GROUPS:
            raise ConfigError(
                "scene encoder preset", f"unknown preset {name!r}", f"use one of {sorted(_PRESET_GROUPS)}"
            )
        encoder = PointEncoderConfig.preset(name)
        return cls(
            preprocess=PreprocessConfig(num_groups=encoder.num_groups, group_size=encoder.group_size),
            encoder=encoder,
            qformer=QFormerConfig.preset(name),
            output_dim=output_dim,
            output_norm_scale=SCENE_TOKEN_NORM_SCALE,
            semantic_categories=list(CATEGORY_NAMES),
            semantic_colors=list(COLOR_NAMES),
        )

    @property
    def num_scene_tokens(self) -> int:
        """How many prefix tokens one scene becomes (the queries per expert, then two per word group)."""
        return self.qformer.queries_per_expert + 2 * self.word_groups

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable nested dict."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SceneEncoderConfig":
        """Inverse of ``to_dict``."""
        return config_from_dict(
            cls, data, nested={"preprocess": PreprocessConfig, "encoder": PointEncoderConfig, "qformer": QFormerConfig}
        )


@dataclass
class SceneEncoderOutput:
    """Scene tokens for the language model plus the router's state and auxiliary loss."""

    scene_tokens: torch.Tensor  # (B, Q, output_dim)
    router_probs: torch.Tensor  # (B, E)
    expert_weights: torch.Tensor  # (B, E), zero outside the top-k
    load_balance_loss: torch.Tensor  # scalar, already weighted
    cls_token: torch.Tensor  # (B, encoder width)
    patch_tokens: torch.Tensor | None = None  # (B, G, encoder width): what the box head attends over


def _projector(in_width: int, out_width: int, norm_scale: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(in_width, out_width), nn.GELU(), nn.Linear(out_width, out_width)]
    if norm_scale > 0:
        norm = nn.LayerNorm(out_width)
        nn.init.constant_(norm.weight, norm_scale)
        layers.append(norm)
    return nn.Sequential(*layers)


class PatchSemantics(nn.Module):
    """Patch tokens (B, G, width) -> category logits (B, G, 1+C) and colour logits (B, G, 1+K); class 0 = none.

    With ``geometry`` it also votes, per group, for its object's centre and size (``votes``).
    """

    def __init__(self, width: int, num_categories: int, num_colors: int, geometry: bool = False) -> None:
        super().__init__()
        self.num_categories = num_categories
        self.classify = nn.Linear(width, num_categories + 1 + num_colors + 1)
        self.geometry: nn.Module | None = (
            nn.Sequential(nn.Linear(width, 128), nn.GELU(), nn.Linear(128, 6)) if geometry else None
        )

    def forward(self, patch_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(category logits, colour logits)."""
        logits = self.classify(patch_tokens)
        return logits[..., : self.num_categories + 1], logits[..., self.num_categories + 1 :]

    def votes(self, patch_tokens: torch.Tensor) -> torch.Tensor:
        """(B, G, 6): per group, the offset from its centre to its object's centre in units of
        ``VOTE_OFFSET_UNIT`` and the log of the object's size, both in normalised coordinates."""
        if self.geometry is None:
            raise ValueError("this patch-semantics head has no geometry votes (word_instances is off)")
        return self.geometry(patch_tokens)


# Vote offsets are predicted in tenths of a normalised unit (scenes fill a unit ball), so they
# share the scale of the log sizes in the regression loss.
VOTE_OFFSET_UNIT = 0.1


def _objects_of_groups(group_centers: torch.Tensor, boxes: torch.Tensor, margin: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(index of the object each group lies on (G,), whether it lies on one (G,)); the smallest box wins."""
    local = group_centers[:, None, :3].double() - boxes[None, :, :3].double()
    cos, sin = torch.cos(boxes[:, 6]).double(), torch.sin(boxes[:, 6]).double()
    along = local[..., 0] * cos + local[..., 1] * sin
    across = -local[..., 0] * sin + local[..., 1] * cos
    half = boxes[:, 3:6].double() / 2 + margin
    inside = (along.abs() <= half[:, 0]) & (across.abs() <= half[:, 1]) & (local[..., 2].abs() <= half[:, 2])
    volume = boxes[:, 3:6].double().prod(dim=-1)
    chosen = torch.where(inside, volume[None, :], torch.full_like(along, float("inf"))).argmin(dim=1)
    return chosen, inside.any(dim=1)


def patch_semantic_labels(
    group_centers: torch.Tensor,
    boxes: torch.Tensor,
    category_ids: torch.Tensor,
    color_ids: torch.Tensor,
    margin: float = 0.02,
) -> torch.Tensor:
    """Targets of :class:`PatchSemantics` for one scene: (G, 2) long, [category, colour] per group.

    ``group_centers`` (G, 3) and ``boxes`` (M, 7: centre, size, yaw about the up axis) share one
    frame (the normalised gravity frame). A group lies on an object when its centre is inside
    the object's box grown by ``margin``; the smallest such box wins (a cup on a table is the
    cup). Outside every box the class is 0 (none); ids are 1-based, and an id below 0 (a name
    outside the vocabulary) becomes -100, which the loss ignores.
    """
    labels = torch.zeros((group_centers.shape[0], 2), dtype=torch.long)
    if boxes.shape[0] == 0:
        return labels
    chosen, on_object = _objects_of_groups(group_centers, boxes, margin)
    for column, ids in enumerate((category_ids, color_ids)):
        ids = torch.as_tensor(ids, dtype=torch.long)
        picked = torch.where(ids[chosen] >= 0, ids[chosen] + 1, torch.full_like(ids[chosen], -100))
        labels[:, column] = torch.where(on_object, picked, torch.zeros_like(picked))
    return labels


def patch_vote_targets(group_centers: torch.Tensor, boxes: torch.Tensor, margin: float = 0.02) -> torch.Tensor:
    """Targets of :meth:`PatchSemantics.votes` for one scene: (G, 6) float, NaN for groups on no object.

    The object of a group is the one :func:`patch_semantic_labels` names; the target is the
    offset from the group centre to the box centre (in ``VOTE_OFFSET_UNIT``) and the log of the
    box size, in the frame of ``group_centers`` and ``boxes``.
    """
    targets = torch.full((group_centers.shape[0], 6), float("nan"), dtype=torch.float32)
    if boxes.shape[0] == 0:
        return targets
    chosen, on_object = _objects_of_groups(group_centers, boxes, margin)
    box = boxes.double()[chosen]
    offset = (box[:, :3] - group_centers[:, :3].double()) / VOTE_OFFSET_UNIT
    log_size = box[:, 3:6].clamp_min(1e-4).log()
    values = torch.cat([offset, log_size], dim=1).float()
    return torch.where(on_object[:, None], values, targets)


class SceneEncoder(nn.Module):
    """Grouped patches (B, G, K, 6) + centres (B, G, 3) -> scene tokens (B, Q, output_dim)."""

    def __init__(self, config: SceneEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.point_encoder = PointEncoder(config.encoder)
        self.point_projector = _projector(config.encoder.width, config.qformer.encoder_width)
        self.query_experts = MixtureOfQueryExperts(config.qformer)
        self.modality_projector = _projector(config.qformer.width, config.output_dim, config.output_norm_scale)
        self.patch_semantics = (
            PatchSemantics(
                config.encoder.width, len(config.semantic_categories), len(config.semantic_colors), config.word_instances
            )
            if config.semantic_categories
            else None
        )
        self.word_position: nn.Module | None = None
        if config.word_groups:
            self.word_position = nn.Sequential(nn.Linear(3, 64), nn.GELU(), nn.Linear(64, config.output_dim))
            nn.init.normal_(self.word_position[2].weight, std=0.01)  # starts small next to the word rows (RMS 0.13)
            nn.init.zeros_(self.word_position[2].bias)
        self.word_size: nn.Module | None = None
        if config.word_instances:  # the voted object size, added like the position
            self.word_size = nn.Sequential(nn.Linear(3, 64), nn.GELU(), nn.Linear(64, config.output_dim))
            nn.init.normal_(self.word_size[2].weight, std=0.01)
            nn.init.zeros_(self.word_size[2].bias)
        if config.word_groups:
            # Filled by set_word_embeddings from the language model's rows; not saved (the LM has them).
            self.register_buffer("category_words", torch.zeros(len(config.semantic_categories), config.output_dim), persistent=False)
            self.register_buffer("color_words", torch.zeros(len(config.semantic_colors), config.output_dim), persistent=False)

    def set_word_embeddings(self, categories: torch.Tensor, colors: torch.Tensor) -> None:
        """The language model's embedding of each category name (C, D) and colour name (K, D), in config order."""
        if self.word_position is None:
            raise ValueError("this scene encoder has no word tokens (word_groups is 0)")
        if categories.shape != self.category_words.shape or colors.shape != self.color_words.shape:
            raise ValueError(
                f"word embeddings must be {tuple(self.category_words.shape)} and {tuple(self.color_words.shape)}, "
                f"got {tuple(categories.shape)} and {tuple(colors.shape)}"
            )
        self.category_words.copy_(categories.detach())
        self.color_words.copy_(colors.detach())

    def word_tokens(self, patch_tokens: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
        """(B, 2 * word_groups, D): [colour, category] token pairs of the groups most likely on an object."""
        assert self.patch_semantics is not None
        category_logits, color_logits = self.patch_semantics(patch_tokens)
        votes = self.patch_semantics.votes(patch_tokens) if self.config.word_instances else None
        return self.words_from_semantics(category_logits, color_logits, centers, votes).to(patch_tokens.dtype)

    def words_from_semantics(
        self,
        category_logits: torch.Tensor,
        color_logits: torch.Tensor,
        centers: torch.Tensor,
        votes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Word tokens (B, 2 * word_groups, D) from the head's logits (B, G, 1+C) and (B, G, 1+K), the
        group centres and, for instance word tokens, the head's votes (B, G, 6)."""
        assert self.word_position is not None
        if self.config.word_instances and votes is None:
            raise ValueError("instance word tokens need the head's votes")
        category_probs = category_logits.float().softmax(dim=-1)
        color_probs = color_logits.float().softmax(dim=-1)
        on_object = 1.0 - category_probs[..., 0]
        chosen = on_object.topk(self.config.word_groups, dim=1).indices  # (B, N), likeliest first

        def pick(values: torch.Tensor) -> torch.Tensor:
            return torch.gather(values, 1, chosen[..., None].expand(-1, -1, values.shape[-1]))

        # Renormalised over the named classes: the token of a group is a mix of real words.
        category_mix = pick(category_probs[..., 1:])
        category_mix = category_mix / category_mix.sum(dim=-1, keepdim=True).clamp_min(1e-6)
        color_mix = pick(color_probs[..., 1:])
        color_mix = color_mix / color_mix.sum(dim=-1, keepdim=True).clamp_min(1e-6)
        category_token = category_mix @ self.category_words
        color_token = color_mix @ self.color_words
        if votes is None or self.word_size is None:
            category_token = category_token + self.word_position(pick(centers.float()))
            keep = None
        else:
            picked_votes = pick(votes.float())
            object_centers = pick(centers.float()) + VOTE_OFFSET_UNIT * picked_votes[..., :3]
            log_sizes = picked_votes[..., 3:]
            category_token = category_token + self.word_position(object_centers) + self.word_size(log_sizes)
            keep = self._first_of_each_object(category_mix.argmax(dim=-1), object_centers, log_sizes)
            keep = keep * (pick(on_object[..., None])[..., 0] > 0.5).float()  # and groups likelier on nothing
        pairs = torch.stack([color_token, category_token], dim=2)  # (B, N, 2, D)
        if keep is not None:
            pairs = pairs * keep[..., None, None].to(pairs.dtype)
        return pairs.reshape(pairs.shape[0], -1, pairs.shape[-1])

    @staticmethod
    def _first_of_each_object(categories: torch.Tensor, object_centers: torch.Tensor, log_sizes: torch.Tensor) -> torch.Tensor:
        """(B, N) 1.0 where a chosen group is the likeliest of its object, else 0.0.

        Groups are in order of likelihood; a group repeats an earlier one when both name the same
        category and its voted centre lies inside the earlier vote's bounding sphere (half the size
        diagonal): two chairs side by side stay two, a bed's groups become one (on the first
        instance checkpoint's votes, 1.3 kept pairs per object shown; a third of the diagonal
        kept more). A loop over the (fixed) number of groups, so it exports unrolled.
        """
        distance = (object_centers[:, :, None] - object_centers[:, None, :]).norm(dim=-1)  # (B, N, N): [later, earlier]
        reach = log_sizes.exp().norm(dim=-1) / 2.0  # (B, N), per earlier group
        repeats = (categories[:, :, None] == categories[:, None, :]) & (distance < reach[:, None, :])
        # Only kept groups blank later ones (a blanked group's sphere does not reach further).
        kept = [torch.ones_like(categories[:, 0], dtype=torch.bool)]
        for later in range(1, categories.shape[1]):
            earlier_kept = torch.stack(kept, dim=1)  # (B, later)
            kept.append(~(repeats[:, later, :later] & earlier_kept).any(dim=1))
        return torch.stack(kept, dim=1).float()

    def forward(self, patches: torch.Tensor, centers: torch.Tensor) -> SceneEncoderOutput:
        """Encode, project to the Q-Former's key width, route through the query experts, project to the LM width."""
        encoder_tokens = self.point_encoder(patches, centers)
        mixture = self.query_experts(self.point_projector(encoder_tokens))
        scene_tokens = self.modality_projector(mixture.queries)
        if self.word_position is not None:
            words = self.word_tokens(encoder_tokens[:, 1:], centers)
            scene_tokens = torch.cat([scene_tokens, words.to(scene_tokens.dtype)], dim=1)
        return SceneEncoderOutput(
            scene_tokens=scene_tokens,
            router_probs=mixture.router_probs,
            expert_weights=mixture.expert_weights,
            load_balance_loss=mixture.load_balance_loss,
            cls_token=encoder_tokens[:, 0],
            patch_tokens=encoder_tokens[:, 1:],
        )

    def export_forward(
        self, patches: torch.Tensor, centers: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(scene_tokens, expert_weights, patch_tokens) as plain tensors, for ONNX/TensorRT export."""
        output = self.forward(patches, centers)
        return output.scene_tokens, output.expert_weights, output.patch_tokens
