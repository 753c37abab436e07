"""What a proposal is, from its shape, size and height above the floor: a small learned classifier.

Features are metric and sensor-independent (no point counts, no colours: the simulator's
flat colours and density would not transfer): the fitted box's longer and shorter
footprint side and height, its bottom and top above the floor, the distance to the nearest
wall, how the points spread (PCA shares), how much of them form a flat top, how they fill
the box's height (a profile over height slices, and the footprint each third covers: a
desk's top and legs against a dresser's solid front), and how far it floats above whatever
is under it (a lamp stands on something). The classifier is an MLP over those, trained on the simulator's
proposals (``objects/train.py``), with one extra class ``OTHER`` for fragments of the room
and junk, and a temperature fitted on held-out scenes so that its probabilities are
calibrated. Checkpoint: ``model.safetensors`` + ``config.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from threed_llm_ros.data.catalog import CATEGORY_NAMES
from threed_llm_ros.errors import ModelFileError
from threed_llm_ros.geometry.boxes import OrientedBox

OTHER = "other"
FEATURE_NAMES: tuple[str, ...] = (
    "long_side", "short_side", "height", "bottom", "top", "wall_distance", "aspect", "log_volume",
    "pca_first", "pca_second", "pca_third", "top_share", "lower_share", "upper_share", "fill_long", "fill_short",
    "support_gap",
    *(f"height_profile_{index}" for index in range(6)),
    "footprint_fill_low", "footprint_fill_middle", "footprint_fill_high",
)
PROFILE_BINS = 6
FILL_GRID = 4


def shape_features(points: np.ndarray, box: OrientedBox, floor_z: float, wall_distance: float, support_gap: float) -> np.ndarray:
    """The :data:`FEATURE_NAMES` vector of one proposal (gravity-frame points, its fitted box)."""
    length, width, height = box.size
    bottom = box.center[2] - height / 2 - floor_z
    top = bottom + height
    centred = points - points.mean(axis=0)
    if len(points) >= 3:
        spread = np.sort(np.linalg.eigvalsh(np.cov(centred.T)))[::-1]
        spread = np.clip(spread, 0, None) / max(float(spread.sum()), 1e-9)
    else:
        spread = np.array([1.0, 0.0, 0.0])
    heights = (points[:, 2] - (box.center[2] - height / 2)) / max(height, 1e-3)
    local = (points[:, :2] - np.asarray(box.center[:2])) @ np.array(
        [[np.cos(box.yaw), -np.sin(box.yaw)], [np.sin(box.yaw), np.cos(box.yaw)]]
    )
    fill = np.ptp(local, axis=0) / np.maximum(np.array([length, width]), 1e-3) if len(local) else np.zeros(2)
    return np.array([
        max(length, width), min(length, width), height, bottom, top, min(wall_distance, 3.0),
        min(length, width) / max(length, width, 1e-3), float(np.log(max(length * width * height, 1e-6))),
        *spread.tolist(), float((heights > 0.9).mean()), float((heights < 0.5).mean()), float((heights > 0.75).mean()),
        *np.clip(fill, 0, 1).tolist(), min(support_gap, 2.0),
        *height_profile(heights), *footprint_fill(local, heights, (length, width)),
    ], dtype=np.float32)


def height_profile(heights: np.ndarray) -> np.ndarray:
    """Share of the points in each of ``PROFILE_BINS`` height slices of the box."""
    counts = np.histogram(np.clip(heights, 0, 1), bins=PROFILE_BINS, range=(0.0, 1.0))[0]
    return counts / max(len(heights), 1)


def footprint_fill(local: np.ndarray, heights: np.ndarray, size: tuple[float, float]) -> list[float]:
    """Per lower, middle and upper third of the box: the share of a ``FILL_GRID``² footprint grid
    its points cover (a table's open space under the top against a cabinet's solid body)."""
    cells = np.floor((local / np.maximum(np.asarray(size), 1e-3) + 0.5) * FILL_GRID).clip(0, FILL_GRID - 1).astype(int)
    shares = []
    for low, high in ((0.0, 1 / 3), (1 / 3, 2 / 3), (2 / 3, 1.01)):
        chosen = (heights >= low) & (heights < high)
        occupied = np.unique(cells[chosen, 0] * FILL_GRID + cells[chosen, 1]) if chosen.any() else []
        shares.append(len(occupied) / FILL_GRID**2)
    return shares


@dataclass
class ClassifierConfig:
    """The classifier's classes, feature scaling, width and calibration temperature."""

    classes: list[str] = field(default_factory=lambda: [*CATEGORY_NAMES, OTHER])
    features: list[str] = field(default_factory=lambda: list(FEATURE_NAMES))
    mean: list[float] = field(default_factory=lambda: [0.0] * len(FEATURE_NAMES))
    scale: list[float] = field(default_factory=lambda: [1.0] * len(FEATURE_NAMES))
    hidden: int = 96
    members: int = 5  # an ensemble: members disagree on what none of them saw, which lowers the confidence
    temperature: float = 1.0


class ShapeClassifier(nn.Module):
    """An ensemble of MLPs from :func:`shape_features` to category logits (plus ``OTHER``).

    Each member is trained on its own resample of the simulator's proposals; their averaged
    probabilities are what counts. On inputs unlike anything simulated (a real room's junk)
    the members disagree, so the average is less confident than any one member would be.
    """

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        width = config.hidden
        self.members = nn.ModuleList(
            nn.Sequential(
                nn.Linear(len(config.features), width), nn.GELU(), nn.Linear(width, width), nn.GELU(),
                nn.Linear(width, len(config.classes)),
            )
            for _ in range(config.members)
        )
        self.register_buffer("mean", torch.tensor(config.mean, dtype=torch.float32))
        self.register_buffer("scale", torch.tensor(config.scale, dtype=torch.float32))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(members, N, classes) logits."""
        normalized = (features - self.mean) / self.scale
        return torch.stack([member(normalized) for member in self.members])

    @torch.no_grad()
    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """(N, classes) calibrated probabilities of :func:`shape_features` rows (the members' mean)."""
        if len(features) == 0:
            return np.zeros((0, len(self.config.classes)), dtype=np.float32)
        logits = self(torch.as_tensor(np.asarray(features, dtype=np.float32)))
        return ensemble_probabilities(logits, self.config.temperature).numpy()


def ensemble_probabilities(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """The members' mean of softmax(logits / temperature): (members, N, C) → (N, C)."""
    return (logits / temperature).softmax(dim=-1).mean(dim=0)


def save_classifier(model: ShapeClassifier, directory: str | Path, extra: dict | None = None) -> None:
    """``model.safetensors`` + ``config.json`` (with ``extra``, e.g. how it was trained)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file({name: tensor.contiguous() for name, tensor in model.state_dict().items()}, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps({**asdict(model.config), **(extra or {})}, indent=2) + "\n")


def load_classifier(directory: str | Path, features: tuple[str, ...] = FEATURE_NAMES) -> ShapeClassifier:
    """The classifier saved in ``directory``; ModelFileError naming the file when it is missing or bad."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    config_path, weights_path = directory / "config.json", directory / "model.safetensors"
    for path in (config_path, weights_path):
        if not path.is_file():
            raise ModelFileError(f"object classifier file {path} is missing (make it with `threed-llm train-objects`)")
    try:
        raw = json.loads(config_path.read_text(encoding="utf-8"))
        names = ClassifierConfig.__dataclass_fields__
        model = ShapeClassifier(ClassifierConfig(**{key: value for key, value in raw.items() if key in names}))
        model.load_state_dict(load_file(str(weights_path)))
    except (ValueError, RuntimeError, TypeError, KeyError, SafetensorError) as error:
        raise ModelFileError(f"object classifier in {directory} cannot be read: {error}") from error
    if list(model.config.features) != list(features):
        raise ModelFileError(f"object classifier in {directory} was trained on other features than this code "
                             "computes; retrain it with `threed-llm train-objects`")
    return model.eval()
