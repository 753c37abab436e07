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

_PRESET_GROUPS = {"mini": 128, "base": 512}


@dataclass
class SceneEncoderConfig:
    """Preprocessing, point encoder, Q-Former and the language model width, kept consistent."""

    preprocess: PreprocessConfig = field(default_factory=lambda: PreprocessConfig(num_groups=_PRESET_GROUPS["mini"]))
    encoder: PointEncoderConfig = field(default_factory=PointEncoderConfig)
    qformer: QFormerConfig = field(default_factory=QFormerConfig)
    output_dim: int = SMOLLM2_135M_HIDDEN

    def __post_init__(self) -> None:
        preprocess_groups = (self.preprocess.num_groups, self.preprocess.group_size)
        if preprocess_groups != (self.encoder.num_groups, self.encoder.group_size):
            raise ConfigError(
                "preprocess.num_groups/group_size",
                f"preprocessing makes {self.preprocess.num_groups} groups of {self.preprocess.group_size} but the "
                f"encoder expects {self.encoder.num_groups} of {self.encoder.group_size}",
                "make preprocess and encoder num_groups/group_size equal",
            )
        if self.output_dim < 1:
            raise ConfigError(
                "output_dim", f"must be positive, got {self.output_dim}", "use the language model's hidden size"
            )

    @classmethod
    def preset(cls, name: str, output_dim: int = SMOLLM2_135M_HIDDEN) -> "SceneEncoderConfig":
        """``"mini"`` (CPU-fast default) or ``"base"`` (MiniGPT-3D-sized encoder)."""
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


def _projector(in_width: int, out_width: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_width, out_width), nn.GELU(), nn.Linear(out_width, out_width))


class SceneEncoder(nn.Module):
    """Grouped patches (B, G, K, 6) + centres (B, G, 3) -> scene tokens (B, Q, output_dim)."""

    def __init__(self, config: SceneEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.point_encoder = PointEncoder(config.encoder)
        self.point_projector = _projector(config.encoder.width, config.qformer.encoder_width)
        self.query_experts = MixtureOfQueryExperts(config.qformer)
        self.modality_projector = _projector(config.qformer.width, config.output_dim)

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
