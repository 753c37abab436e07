"""Q-Former with a Mixture of Query Experts (MiniGPT-3D).

There are E expert query sets of Q learned queries each. A router looks at the scene
(the encoder's cls token and its max-pooled patch tokens), scores the experts, keeps
the top k and renormalises their scores. Only the chosen query sets run through the
shared Q-Former blocks (self-attention within each query set, cross-attention to the
encoder tokens, MLP); their outputs are mixed with the router weights into Q scene
queries. An auxiliary load-balancing loss (Switch Transformer style) keeps the router
from sending every scene to the same experts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from threed_llm_ros.errors import ConfigError
from threed_llm_ros.config_io import config_from_dict, config_to_dict
from threed_llm_ros.model.point_encoder import FeedForward, MultiHeadAttention


@dataclass
class QFormerConfig:
    """Size of the Q-Former and its mixture of query experts. Defaults are the ``mini`` preset."""

    num_experts: int = 8
    queries_per_expert: int = 32
    top_k: int = 2
    width: int = 256
    depth: int = 2
    heads: int = 4
    encoder_width: int = 256
    router_hidden: int = 256
    load_balance_weight: float = 0.01
    mlp_ratio: float = 4.0
    dropout: float = 0.0

    def __post_init__(self) -> None:
        sizes = ("num_experts", "queries_per_expert", "top_k", "width", "depth", "heads")
        for name in (*sizes, "encoder_width", "router_hidden"):
            if getattr(self, name) < 1:
                raise ConfigError(
                    f"qformer.{name}", f"must be at least 1, got {getattr(self, name)}", "use a positive size"
                )
        if self.top_k > self.num_experts:
            raise ConfigError(
                "qformer.top_k",
                f"{self.top_k} exceeds num_experts {self.num_experts}",
                "use top_k <= num_experts (e.g. 2)",
            )
        if self.width % self.heads:
            raise ConfigError(
                "qformer.heads",
                f"width {self.width} is not divisible by heads {self.heads}",
                "pick heads dividing width",
            )
        if self.load_balance_weight < 0:
            raise ConfigError(
                "qformer.load_balance_weight", f"must be >= 0, got {self.load_balance_weight}", "use e.g. 0.01"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("qformer.dropout", f"must be in [0, 1), got {self.dropout}", "use 0.0 to 0.2")

    @classmethod
    def preset(cls, name: str) -> "QFormerConfig":
        """``"mini"`` or ``"base"`` (8 experts x 32 queries, top-2 in both)."""
        presets = {
            "mini": cls(),
            "base": cls(width=512, depth=4, heads=8, encoder_width=512, router_hidden=512),
        }
        if name not in presets:
            raise ConfigError("qformer preset", f"unknown preset {name!r}", f"use one of {sorted(presets)}")
        return presets[name]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "QFormerConfig":
        """Inverse of ``to_dict``."""
        return config_from_dict(cls, data)


@dataclass
class MixtureOfQueryExpertsOutput:
    """What the mixture of query experts returns."""

    queries: torch.Tensor  # (B, Q, width): router-weighted mix of the chosen experts' outputs
    router_probs: torch.Tensor  # (B, E): softmax over experts
    expert_weights: torch.Tensor  # (B, E): renormalised top-k weights, exactly zero elsewhere
    load_balance_loss: torch.Tensor  # scalar, already multiplied by load_balance_weight


class QFormerBlock(nn.Module):
    """Pre-norm Q-Former block: self-attention within each query set, cross-attention, MLP."""

    def __init__(self, config: QFormerConfig) -> None:
        super().__init__()
        self.self_attention_norm = nn.LayerNorm(config.width)
        self.self_attention = MultiHeadAttention(config.width, config.heads, dropout=config.dropout)
        self.cross_attention_norm = nn.LayerNorm(config.width)
        self.cross_attention = MultiHeadAttention(
            config.width, config.heads, key_width=config.encoder_width, dropout=config.dropout
        )
        self.feed_forward_norm = nn.LayerNorm(config.width)
        self.feed_forward = FeedForward(config.width, int(config.width * config.mlp_ratio), config.dropout)

    def forward(self, queries: torch.Tensor, encoder_tokens: torch.Tensor) -> torch.Tensor:
        """queries (B, S, Q, width) for S query sets, encoder_tokens (B, T, encoder_width) -> (B, S, Q, width)."""
        batch, num_sets, num_queries, width = queries.shape
        per_set = queries.reshape(batch * num_sets, num_queries, width)
        normed = self.self_attention_norm(per_set)
        per_set = per_set + self.self_attention(normed, normed)
        # Cross-attention treats all sets' queries as one sequence: same result, keys/values computed once.
        flat = per_set.reshape(batch, num_sets * num_queries, width)
        flat = flat + self.cross_attention(self.cross_attention_norm(flat), encoder_tokens)
        flat = flat + self.feed_forward(self.feed_forward_norm(flat))
        return flat.reshape(batch, num_sets, num_queries, width)


class MixtureOfQueryExperts(nn.Module):
    """Router + expert query sets + shared Q-Former blocks: encoder tokens (B, 1+G, encoder_width) -> (B, Q, width)."""

    def __init__(self, config: QFormerConfig) -> None:
        super().__init__()
        self.config = config
        self.expert_queries = nn.Parameter(torch.empty(config.num_experts, config.queries_per_expert, config.width))
        nn.init.trunc_normal_(self.expert_queries, std=0.02)
        self.router = nn.Sequential(
            nn.LayerNorm(2 * config.encoder_width),
            nn.Linear(2 * config.encoder_width, config.router_hidden),
            nn.GELU(),
            nn.Linear(config.router_hidden, config.num_experts),
        )
        self.encoder_norm = nn.LayerNorm(config.encoder_width)
        self.blocks = nn.ModuleList(QFormerBlock(config) for _ in range(config.depth))
        self.final_norm = nn.LayerNorm(config.width)

    def route(self, encoder_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Router probabilities (B, E), chosen experts (B, k) and their renormalised weights (B, k)."""
        summary = torch.cat([encoder_tokens[:, 0], encoder_tokens[:, 1:].amax(dim=1)], dim=-1)
        router_probs = self.router(summary).softmax(dim=-1)
        top_probs, chosen = router_probs.topk(self.config.top_k, dim=-1)
        return router_probs, chosen, top_probs / top_probs.sum(dim=-1, keepdim=True)

    def load_balance_loss(self, router_probs: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        """weight * E * sum_e (share of picks going to e) * (mean router probability of e); 1*weight when balanced."""
        num_experts = self.config.num_experts
        picks = torch.zeros_like(router_probs).scatter_(1, chosen, 1.0)
        pick_share = picks.mean(dim=0) / self.config.top_k
        mean_probs = router_probs.mean(dim=0)
        return self.config.load_balance_weight * num_experts * (pick_share * mean_probs).sum()

    def forward(self, encoder_tokens: torch.Tensor) -> MixtureOfQueryExpertsOutput:
        """Route, run only the chosen experts' query sets, and mix them."""
        width = self.config.encoder_width
        if encoder_tokens.dim() != 3 or encoder_tokens.shape[-1] != width or encoder_tokens.shape[1] < 2:
            raise ValueError(
                f"encoder_tokens must be (B, 1+G, {width}) with G >= 1, got {tuple(encoder_tokens.shape)}"
            )
        router_probs, chosen, chosen_weights = self.route(encoder_tokens)
        keys = self.encoder_norm(encoder_tokens)
        queries = self.expert_queries[chosen]  # (B, k, Q, width): only the chosen sets enter the graph
        for block in self.blocks:
            queries = block(queries, keys)
        queries = self.final_norm(queries)
        mixed = (queries * chosen_weights[:, :, None, None]).sum(dim=1)
        expert_weights = torch.zeros_like(router_probs).scatter(1, chosen, chosen_weights)
        return MixtureOfQueryExpertsOutput(
            queries=mixed,
            router_probs=router_probs,
            expert_weights=expert_weights,
            load_balance_loss=self.load_balance_loss(router_probs, chosen),
        )
