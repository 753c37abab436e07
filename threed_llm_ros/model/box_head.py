"""3D query token box head (LLMI3D): the ``<box3d>`` token's last hidden state → a box.

The head regresses a box in normalised scene units: centre (3), log-size (3) and yaw as
(sin, cos) (2), so the yaw has no wrap-around discontinuity and sizes stay positive.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

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

    def __post_init__(self) -> None:
        if self.hidden_dim < 1:
            raise ConfigError("box_head.hidden_dim", f"must be >= 1, got {self.hidden_dim}", "use e.g. 256")

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "BoxHeadConfig":
        """Inverse of :meth:`to_dict`."""
        known = set(cls.__dataclass_fields__)
        unknown = set(values) - known
        if unknown:
            raise ConfigError("box_head", f"unknown keys {sorted(unknown)}", f"use only {sorted(known)}")
        return cls(**values)


@dataclass
class BoxPrediction:
    """Raw head outputs for B boxes: centre (B,3), log-size (B,3), yaw (sin, cos) (B,2)."""

    center: torch.Tensor
    log_size: torch.Tensor
    yaw_sin_cos: torch.Tensor


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


class BoxHead(nn.Module):
    """Two-layer MLP from the LM hidden size to (centre, log-size, sin/cos yaw)."""

    def __init__(self, input_dim: int, config: BoxHeadConfig | None = None) -> None:
        super().__init__()
        self.config = config or BoxHeadConfig()
        self.network = nn.Sequential(
            nn.LayerNorm(input_dim),
            nn.Linear(input_dim, self.config.hidden_dim),
            nn.GELU(),
            nn.Linear(self.config.hidden_dim, 8),
        )

    def forward(self, hidden: torch.Tensor) -> BoxPrediction:
        """Predict boxes from hidden states (B, input_dim)."""
        output = self.network(hidden)
        return BoxPrediction(center=output[:, :3], log_size=output[:, 3:6], yaw_sin_cos=output[:, 6:8])

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
        return (
            self.config.center_weight * center_loss
            + self.config.size_weight * size_loss
            + self.config.yaw_weight * yaw_loss
        )

    def decode(self, prediction: BoxPrediction) -> torch.Tensor:
        """Normalised boxes (B,7) from a prediction."""
        return decode_box_prediction(prediction)
