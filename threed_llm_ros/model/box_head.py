"""3D query token box head (LLMI3D): the ``<box3d>`` token's last hidden state → a box.

The head regresses a box in normalised scene units: centre (3), log-size (3) and yaw as
(sin, cos) (2), so the yaw has no wrap-around discontinuity and sizes stay positive.

With ``scene_attention`` (the default) the hidden state does not have to carry the box's
coordinates through the language model: it becomes a query over the scene's point
groups (read by the head's own small PointNet, the scene encoder's patch tokens, or
both), the box centre is the attention-weighted mean of the group centres plus a
regressed offset, and size and yaw come from the hidden state together with the attended
patch features. An auxiliary loss teaches the attention to land on the groups inside the
target box. Without a scene (the blind baseline) the same head regresses the box from the
hidden state alone.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from threed_llm_ros.config_io import config_from_dict
from threed_llm_ros.errors import ConfigError

BOX3D_TOKEN = "<box3d>"
MIN_SIZE = 1e-3


@dataclass
class BoxHeadConfig:
    """Sizes and loss weights of the box head."""

    hidden_dim: int = 256
    center_weight: float = 1.0
    size_weight: float = 1.0
    yaw_weight: float = 0.5
    smooth_l1_beta: float = 0.05
    scene_attention: bool = True  # attend over the scene's groups (False: hidden state only)
    context: str = "points"  # what the attention reads per group: points (own PointNet), encoder (patch tokens), both
    context_width: int = 128
    attention_dim: int = 128
    attention_weight: float = 1.0  # the auxiliary loss pulling attention onto the target's groups
    inside_margin: float = 0.03  # normalised units a group centre may lie outside the box and still count

    def __post_init__(self) -> None:
        if self.hidden_dim < 1:
            raise ConfigError("box_head.hidden_dim", f"must be >= 1, got {self.hidden_dim}", "use e.g. 256")
        if self.attention_dim < 1 or self.context_width < 1:
            raise ConfigError("box_head.attention_dim/context_width", "must be >= 1", "use e.g. 128")
        if self.context not in ("points", "encoder", "both"):
            raise ConfigError("box_head.context", f"unknown context {self.context!r}", "use points, encoder or both")
        if self.attention_weight < 0 or self.inside_margin < 0:
            raise ConfigError(
                "box_head.attention_weight/inside_margin", "must be >= 0", "use attention_weight 1.0, inside_margin 0.03"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "BoxHeadConfig":
        """Inverse of :meth:`to_dict`."""
        return config_from_dict(cls, values, name="box_head")


@dataclass
class BoxPrediction:
    """Raw head outputs for B boxes: centre (B,3), log-size (B,3), yaw (sin, cos) (B,2).

    With scene attention also the attention over the G groups (B,G) and their centres (B,G,3).
    """

    center: torch.Tensor
    log_size: torch.Tensor
    yaw_sin_cos: torch.Tensor
    attention: torch.Tensor | None = None
    group_centers: torch.Tensor | None = None


def encode_box_target(boxes: torch.Tensor) -> BoxPrediction:
    """The regression target of normalised boxes (B,7): what a perfect head would output."""
    boxes = torch.as_tensor(boxes)
    yaw = boxes[:, 6]
    return BoxPrediction(
        center=boxes[:, :3],
        log_size=torch.log(boxes[:, 3:6].clamp_min(MIN_SIZE)),
        yaw_sin_cos=torch.stack([torch.sin(yaw), torch.cos(yaw)], dim=-1),
    )


def decode_box_prediction(prediction: BoxPrediction) -> torch.Tensor:
    """Normalised boxes (B,7) from head outputs; yaw in [-pi, pi)."""
    yaw = torch.atan2(prediction.yaw_sin_cos[:, 0], prediction.yaw_sin_cos[:, 1])
    yaw = torch.remainder(yaw + torch.pi, 2 * torch.pi) - torch.pi
    return torch.cat([prediction.center, torch.exp(prediction.log_size), yaw[:, None]], dim=-1)


def groups_in_boxes(group_centers: torch.Tensor, boxes: torch.Tensor, margin: float) -> torch.Tensor:
    """Where the attention should go: (B,G) weights summing to 1 over the groups inside each box.

    A group counts when its centre lies inside the box grown by ``margin``; a box holding
    no group centre (a small or hidden object) gets its nearest group instead.
    """
    local = group_centers - boxes[:, None, :3]
    yaw = boxes[:, 6]
    cos, sin = torch.cos(yaw)[:, None], torch.sin(yaw)[:, None]
    along = local[..., 0] * cos + local[..., 1] * sin
    across = -local[..., 0] * sin + local[..., 1] * cos
    half = boxes[:, None, 3:6] / 2 + margin
    inside = (along.abs() <= half[..., 0]) & (across.abs() <= half[..., 1]) & (local[..., 2].abs() <= half[..., 2])
    nearest = F.one_hot(local.norm(dim=-1).argmin(dim=-1), group_centers.shape[1]).bool()
    chosen = torch.where(inside.any(dim=-1, keepdim=True), inside, nearest).to(group_centers.dtype)
    return chosen / chosen.sum(dim=-1, keepdim=True)


class PatchContextEncoder(nn.Module):
    """The head's own small PointNet over the grouped patches: what and where each group is.

    It reads the same grouped points the scene encoder reads (xyz relative to the group
    centre + colour), so the box head does not depend on what the language-facing tokens
    happened to keep about each group.
    """

    def __init__(self, in_channels: int, width: int) -> None:
        super().__init__()
        self.point = nn.Sequential(nn.Linear(in_channels, 64), nn.GELU(), nn.Linear(64, width))
        self.position = nn.Sequential(nn.Linear(3, 64), nn.GELU(), nn.Linear(64, width))
        self.mix = nn.Sequential(nn.LayerNorm(2 * width), nn.Linear(2 * width, width), nn.GELU(), nn.Linear(width, width))

    def forward(self, patches: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
        """(B, G, K, C) patches + (B, G, 3) centres → (B, G, width)."""
        per_point = self.point(patches)
        pooled = torch.cat([per_point.max(dim=2).values, per_point.mean(dim=2)], dim=-1)
        return self.mix(pooled) + self.position(centers)


#: What the head reads from the scene for each ``BoxHeadConfig.context`` (besides ``centers``).
CONTEXT_INPUTS = {"points": ("patches",), "encoder": ("patch_tokens",), "both": ("patches", "patch_tokens")}


class BoxHead(nn.Module):
    """The ``<box3d>`` hidden state, attending over the scene's groups → (centre, log-size, sin/cos yaw)."""

    def __init__(
        self, input_dim: int, config: BoxHeadConfig | None = None, context_dim: int = 256, point_channels: int = 6
    ) -> None:
        """``input_dim``: the language model's hidden size; ``context_dim``: the point encoder's
        token width; ``point_channels``: channels of a grouped point (xyz + rgb)."""
        super().__init__()
        self.config = config or BoxHeadConfig()
        self.input_dim = int(input_dim)
        self.context_dim = int(context_dim)
        self.point_channels = int(point_channels)
        attention_dim = self.config.attention_dim if self.config.scene_attention else 0
        if self.config.scene_attention:
            width = self.config.context_width
            self.query = nn.Sequential(nn.LayerNorm(input_dim), nn.Linear(input_dim, attention_dim))
            if self.config.context in ("points", "both"):
                self.patch_encoder = PatchContextEncoder(point_channels, width)
            if self.config.context in ("encoder", "both"):
                self.token_projection = nn.Sequential(nn.LayerNorm(context_dim), nn.Linear(context_dim, width))
            self.context_norm = nn.LayerNorm(width)
            self.key = nn.Linear(width, attention_dim)
            self.value = nn.Linear(width, attention_dim)
        self.input_norm = nn.LayerNorm(input_dim)
        self.network = nn.Sequential(
            nn.Linear(input_dim + attention_dim, self.config.hidden_dim),
            nn.GELU(),
            nn.Linear(self.config.hidden_dim, 8),
        )

    @property
    def scene_inputs(self) -> tuple[str, ...]:
        """Names of the scene inputs the head needs (empty without scene attention)."""
        if not self.config.scene_attention:
            return ()
        return (*CONTEXT_INPUTS[self.config.context], "centers")

    def _context(self, patches: torch.Tensor | None, centers: torch.Tensor, patch_tokens: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        parts = []
        if self.config.context in ("points", "both"):
            if patches is None:
                raise ValueError("this box head reads the grouped patches: pass patches")
            parts.append(self.patch_encoder(patches.to(dtype), centers.to(dtype)))
        if self.config.context in ("encoder", "both"):
            if patch_tokens is None:
                raise ValueError("this box head reads the scene encoder's patch tokens: pass patch_tokens")
            parts.append(self.token_projection(patch_tokens.to(dtype)))
        return self.context_norm(sum(parts))

    def forward(
        self,
        hidden: torch.Tensor,
        *,
        centers: torch.Tensor | None = None,
        patches: torch.Tensor | None = None,
        patch_tokens: torch.Tensor | None = None,
    ) -> BoxPrediction:
        """Predict boxes from hidden states (B, input_dim) and, with scene attention, the
        scene's group centres (B, G, 3) with its grouped patches (B, G, K, C) and/or the
        scene encoder's patch tokens (B, G, context_dim), as ``scene_inputs`` names.
        Without a scene (``centers`` None: the blind baseline) the box comes from the
        hidden state alone."""
        features = self.input_norm(hidden)
        if not self.config.scene_attention:
            output = self.network(features)
            return BoxPrediction(center=output[:, :3], log_size=output[:, 3:6], yaw_sin_cos=output[:, 6:8])
        if centers is None:
            pooled = features.new_zeros(features.shape[0], self.config.attention_dim)
            output = self.network(torch.cat([features, pooled], dim=-1))
            return BoxPrediction(center=output[:, :3], log_size=output[:, 3:6], yaw_sin_cos=output[:, 6:8])
        context = self._context(patches, centers, patch_tokens, features.dtype)
        query = self.query(hidden)
        scores = torch.einsum("ba,bga->bg", query, self.key(context)) / math.sqrt(self.config.attention_dim)
        attention = torch.softmax(scores.float(), dim=-1).to(features.dtype)
        pooled = torch.einsum("bg,bga->ba", attention, self.value(context))
        attended_center = torch.einsum("bg,bgc->bc", attention, centers.to(features.dtype))
        output = self.network(torch.cat([features, pooled], dim=-1))
        return BoxPrediction(
            center=attended_center + output[:, :3],
            log_size=output[:, 3:6],
            yaw_sin_cos=output[:, 6:8],
            attention=attention,
            group_centers=centers,
        )

    def loss(self, prediction: BoxPrediction, target_boxes: torch.Tensor) -> torch.Tensor:
        """Smooth-L1 on centre and log-size, plus a yaw loss on the unit (sin, cos) vector.

        The yaw term is ``1 - cos(yaw error)`` on the normalised direction plus a small
        penalty keeping the raw vector near unit length; ``target_boxes`` is (B,7) normalised.
        """
        target = encode_box_target(target_boxes.to(prediction.center.dtype))
        beta = self.config.smooth_l1_beta
        center_loss = F.smooth_l1_loss(prediction.center, target.center, beta=beta)
        size_loss = F.smooth_l1_loss(prediction.log_size, target.log_size, beta=beta)
        norm = prediction.yaw_sin_cos.norm(dim=-1).clamp_min(1e-6)
        direction = prediction.yaw_sin_cos / norm[:, None]
        yaw_loss = (1.0 - (direction * target.yaw_sin_cos).sum(dim=-1)).mean() + 0.1 * ((norm - 1.0) ** 2).mean()
        loss = (
            self.config.center_weight * center_loss
            + self.config.size_weight * size_loss
            + self.config.yaw_weight * yaw_loss
        )
        if prediction.attention is not None and prediction.group_centers is not None and self.config.attention_weight:
            wanted = groups_in_boxes(
                prediction.group_centers.to(prediction.center.dtype),
                target_boxes.to(prediction.center.dtype),
                self.config.inside_margin,
            )
            attention_loss = -(wanted * torch.log(prediction.attention.float().clamp_min(1e-8))).sum(dim=-1).mean()
            loss = loss + self.config.attention_weight * attention_loss
        return loss

    def decode(self, prediction: BoxPrediction) -> torch.Tensor:
        """Normalised boxes (B,7) from a prediction."""
        return decode_box_prediction(prediction)
