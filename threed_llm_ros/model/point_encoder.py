"""Point-BERT-style point encoder: grouped patches -> patch tokens -> transformer.

Each kNN group (patch) goes through a two-stage mini-PointNet (shared per-point MLP,
max-pool, the pooled feature concatenated back to every point, a second MLP, max-pool)
as in Point-BERT. Group centres get a learned 3D position embedding (an MLP on xyz,
the 3D position embedding of 3D-LLM). A cls token is prepended and a pre-norm
transformer encoder mixes the tokens. Nothing depends on the order of points inside a
group, and the groups' order only permutes the patch tokens (no index embeddings).
LayerNorm replaces Point-BERT's BatchNorm so batch size 1 on a robot behaves like training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as functional
from torch import nn

from threed_llm_ros.errors import ConfigError
from threed_llm_ros.config_io import config_from_dict, config_to_dict

POSITION_EMBEDDING_HIDDEN = 128
#: Group-relative xyz of the presets' 8192-point, 128-group scenes have a standard deviation near
#: 0.04 normalised units; this brings them to about 1.
CONDITIONED_LOCAL_SCALE = 25.0


@dataclass
class PointEncoderConfig:
    """Size of the point encoder. Defaults are the ``mini`` preset."""

    num_groups: int = 128
    group_size: int = 32
    in_channels: int = 6
    width: int = 256
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    patch_channels: int = 128  # mini-PointNet: stage 1 is in->C/2->C, stage 2 is 2C->2C->width
    # Input conditioning. Group-relative xyz are a few hundredths of a normalised unit and colours
    # sit in [0, 1]; fed raw, the per-point MLP sees nearly constant inputs and training collapsed
    # the encoder to one output for every scene. 1.0 / False keep the first checkpoints' behaviour.
    local_scale: float = 1.0  # multiplies the group-relative xyz
    center_colors: bool = False  # colours [0, 1] -> [-1, 1]

    def __post_init__(self) -> None:
        for name in ("num_groups", "group_size", "in_channels", "width", "depth", "heads", "patch_channels"):
            if getattr(self, name) < 1:
                raise ConfigError(
                    f"encoder.{name}", f"must be at least 1, got {getattr(self, name)}", "use a positive size"
                )
        if self.in_channels < 3:
            raise ConfigError(
                "encoder.in_channels", f"need xyz at least (3), got {self.in_channels}", "use 6 for xyz+rgb"
            )
        if self.width % self.heads:
            raise ConfigError(
                "encoder.heads",
                f"width {self.width} is not divisible by heads {self.heads}",
                "pick heads dividing width",
            )
        if not self.local_scale > 0:
            raise ConfigError("encoder.local_scale", f"must be positive, got {self.local_scale}", "use 25.0 (1.0 = unscaled)")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("encoder.dropout", f"must be in [0, 1), got {self.dropout}", "use 0.0 to 0.2")

    @classmethod
    def preset(cls, name: str) -> "PointEncoderConfig":
        """``"mini"`` (fast on a CPU) or ``"base"`` (MiniGPT-3D's Point-BERT: 512x32, width 384, depth 12)."""
        presets = {
            "mini": cls(local_scale=CONDITIONED_LOCAL_SCALE, center_colors=True),
            "base": cls(
                num_groups=512, group_size=32, width=384, depth=12, heads=6, patch_channels=256,
                local_scale=CONDITIONED_LOCAL_SCALE, center_colors=True,
            ),
        }
        if name not in presets:
            raise ConfigError("encoder preset", f"unknown preset {name!r}", f"use one of {sorted(presets)}")
        return presets[name]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PointEncoderConfig":
        """Inverse of ``to_dict``."""
        return config_from_dict(cls, data)


class FeedForward(nn.Module):
    """Transformer MLP: Linear -> GELU -> Linear, with dropout."""

    def __init__(self, width: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.expand = nn.Linear(width, hidden)
        self.contract = nn.Linear(hidden, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(..., width) -> (..., width)."""
        return self.dropout(self.contract(self.dropout(functional.gelu(self.expand(tokens)))))


class MultiHeadAttention(nn.Module):
    """Multi-head attention from queries (B, T, width) to keys/values (B, S, key_width)."""

    def __init__(self, width: int, heads: int, key_width: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(width, width)
        self.key_value = nn.Linear(key_width or width, 2 * width)
        self.output = nn.Linear(width, width)
        self.dropout = dropout

    def forward(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """Attend every query to every key; returns (B, T, width)."""
        batch, num_queries, width = queries.shape
        head_width = width // self.heads
        query = self.query(queries).view(batch, num_queries, self.heads, head_width).transpose(1, 2)
        key, value = self.key_value(keys).view(batch, keys.shape[1], 2, self.heads, head_width).unbind(2)
        attended = functional.scaled_dot_product_attention(
            query, key.transpose(1, 2), value.transpose(1, 2), dropout_p=self.dropout if self.training else 0.0
        )
        return self.output(attended.transpose(1, 2).reshape(batch, num_queries, width))


class TransformerBlock(nn.Module):
    """Pre-norm transformer encoder block: self-attention then MLP, both residual."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(width)
        self.attention = MultiHeadAttention(width, heads, dropout=dropout)
        self.feed_forward_norm = nn.LayerNorm(width)
        self.feed_forward = FeedForward(width, int(width * mlp_ratio), dropout)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, width) -> (B, T, width)."""
        normed = self.attention_norm(tokens)
        tokens = tokens + self.attention(normed, normed)
        return tokens + self.feed_forward(self.feed_forward_norm(tokens))


class PatchEmbedding(nn.Module):
    """Two-stage mini-PointNet (Point-BERT's group encoder): (B, G, K, C) -> (B, G, width)."""

    def __init__(self, in_channels: int, channels: int, width: int) -> None:
        super().__init__()
        self.first_stage = nn.Sequential(
            nn.Linear(in_channels, channels // 2 or 1),
            nn.LayerNorm(channels // 2 or 1),
            nn.GELU(),
            nn.Linear(channels // 2 or 1, channels),
        )
        self.second_stage = nn.Sequential(
            nn.Linear(2 * channels, 2 * channels),
            nn.LayerNorm(2 * channels),
            nn.GELU(),
            nn.Linear(2 * channels, width),
        )

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """Per-point features, pooled per group, twice; order of points in a group is irrelevant."""
        point_features = self.first_stage(patches)  # (B, G, K, C)
        group_features = point_features.amax(dim=2, keepdim=True).expand_as(point_features)
        point_features = self.second_stage(torch.cat([group_features, point_features], dim=-1))
        return point_features.amax(dim=2)


class PointEncoder(nn.Module):
    """Point-BERT-style encoder: patches (B, G, K, C) + centres (B, G, 3) -> tokens (B, 1+G, width), cls first."""

    def __init__(self, config: PointEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.patch_embedding = PatchEmbedding(config.in_channels, config.patch_channels, config.width)
        self.position_embedding = nn.Sequential(
            nn.Linear(3, POSITION_EMBEDDING_HIDDEN), nn.GELU(), nn.Linear(POSITION_EMBEDDING_HIDDEN, config.width)
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.width))
        self.blocks = nn.ModuleList(
            TransformerBlock(config.width, config.heads, config.mlp_ratio, config.dropout) for _ in range(config.depth)
        )
        self.final_norm = nn.LayerNorm(config.width)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def condition(self, patches: torch.Tensor) -> torch.Tensor:
        """Scale the group-relative xyz and centre the colours (``local_scale``, ``center_colors``)."""
        if self.config.local_scale == 1.0 and not self.config.center_colors:
            return patches
        xyz = patches[..., :3] * self.config.local_scale
        rest = patches[..., 3:]
        if self.config.center_colors:
            rest = torch.cat([rest[..., :3] * 2.0 - 1.0, rest[..., 3:]], dim=-1)
        return torch.cat([xyz, rest], dim=-1)

    def forward(self, patches: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
        """Encode grouped patches; returns (B, 1+G, width) with the cls token first."""
        if patches.dim() != 4 or patches.shape[-1] != self.config.in_channels:
            raise ValueError(
                f"patches must be (B, G, K, {self.config.in_channels}), got {tuple(patches.shape)}"
            )
        if centers.shape != (*patches.shape[:2], 3):
            raise ValueError(f"centers must be (B, G, 3) = {(*patches.shape[:2], 3)}, got {tuple(centers.shape)}")
        batch = patches.shape[0]
        patches = self.condition(patches)
        tokens = self.patch_embedding(patches) + self.position_embedding(centers)
        cls = self.cls_token.expand(batch, -1, -1)
        tokens = torch.cat([cls, tokens], dim=1)
        for block in self.blocks:
            tokens = block(tokens)
        return self.final_norm(tokens)
