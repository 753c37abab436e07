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
from threed_llm_ros.model.config_io import config_from_dict, config_to_dict
from threed_llm_ros.model.point_encoder import PointEncoder, PointEncoderConfig
from threed_llm_ros.model.preprocessing import PreprocessConfig
from threed_llm_ros.model.qformer import MixtureOfQueryExperts, QFormerConfig

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
        if self.output_dim < 1:
            raise ConfigError(
                "output_dim", f"must be positive, got {self.output_dim}", "use the language model's hidden size"
            )

    @classmethod
    def preset(cls, name: str, output_dim: int = SMOLLM2_135M_HIDDEN) -> "SceneEncoderConfig":
        """``"mini"`` (CPU-fast default) or ``"base"`` (MiniGPT-3D-sized encoder), with normalised scene
        tokens and the patch-semantics head over the simulator catalog's categories and colours."""
        from threed_llm_ros.data.catalog import CATEGORY_NAMES, COLOR_NAMES

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
        """How many prefix tokens one scene becomes (the queries per expert)."""
        return self.qformer.queries_per_expert

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
    """Patch tokens (B, G, width) -> category logits (B, G, 1+C) and colour logits (B, G, 1+K); class 0 = none."""

    def __init__(self, width: int, num_categories: int, num_colors: int) -> None:
        super().__init__()
        self.num_categories = num_categories
        self.classify = nn.Linear(width, num_categories + 1 + num_colors + 1)

    def forward(self, patch_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(category logits, colour logits)."""
        logits = self.classify(patch_tokens)
        return logits[..., : self.num_categories + 1], logits[..., self.num_categories + 1 :]


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
    local = group_centers[:, None, :3].double() - boxes[None, :, :3].double()
    cos, sin = torch.cos(boxes[:, 6]).double(), torch.sin(boxes[:, 6]).double()
    along = local[..., 0] * cos + local[..., 1] * sin
    across = -local[..., 0] * sin + local[..., 1] * cos
    half = boxes[:, 3:6].double() / 2 + margin
    inside = (along.abs() <= half[:, 0]) & (across.abs() <= half[:, 1]) & (local[..., 2].abs() <= half[:, 2])
    volume = boxes[:, 3:6].double().prod(dim=-1)
    chosen = torch.where(inside, volume[None, :], torch.full_like(along, float("inf"))).argmin(dim=1)
    on_object = inside.any(dim=1)
    for column, ids in enumerate((category_ids, color_ids)):
        ids = torch.as_tensor(ids, dtype=torch.long)
        picked = torch.where(ids[chosen] >= 0, ids[chosen] + 1, torch.full_like(ids[chosen], -100))
        labels[:, column] = torch.where(on_object, picked, torch.zeros_like(picked))
    return labels


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
            PatchSemantics(config.encoder.width, len(config.semantic_categories), len(config.semantic_colors))
            if config.semantic_categories
            else None
        )

    def forward(self, patches: torch.Tensor, centers: torch.Tensor) -> SceneEncoderOutput:
        """Encode, project to the Q-Former's key width, route through the query experts, project to the LM width."""
        encoder_tokens = self.point_encoder(patches, centers)
        mixture = self.query_experts(self.point_projector(encoder_tokens))
        return SceneEncoderOutput(
            scene_tokens=self.modality_projector(mixture.queries),
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
