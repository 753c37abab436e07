"""Object-centric scene tokens: the object layer's list, read by the language model.

Each confident object (best first, at most ``max_objects``) becomes ``tokens_per_object``
input embeddings that go where ``ThreeDLLM`` puts its scene tokens (the ``<scene>``
placeholders between ``<scene_start>`` and ``<scene_end>``), so the language model, its
default LoRA adapter and the exported ONNX decoders (which take ``inputs_embeds``) are used
unchanged. The two tokens of an object have the form the default adapter already reads in
the scene encoder's word tokens (``SceneEncoder.words_from_semantics``): the language model's
own embeddings of the colour names mixed by the object's colour distribution, then those of
the category names mixed by its category distribution; a small MLP of the object's features
(both distributions, its gravity-frame box normalised, its confidence) adds to each what the
words do not say (where it is, how large, how sure). Only that MLP trains
(``threed-llm train-object-tokens``, ``train/object_tokens.py``); its last layer starts
near zero, so an untrained projector already gives plain word tokens.

A projector lives in its own directory (``config.json`` + ``model.safetensors``); the shipped
one is ``models/threed-llm-mini/object_tokens``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from threed_llm_ros.data.catalog import CATEGORY_NAMES, COLOR_NAMES
from threed_llm_ros.errors import ModelFileError

OBJECT_TOKENS_DIRECTORY = "object_tokens"  # inside a checkpoint directory
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT = "threed_llm_ros.object_tokens/1"
#: geometry features: centre x/4, y/4, z/2 (sensor at the origin), height above the floor/2 (m), log sizes (3),
#: sin and cos of the yaw, confidence
GEOMETRY_FEATURES = 10


@dataclass(frozen=True)
class ObjectTokenConfig:
    """The projector's shape: vocabularies, how many objects and tokens, the MLP's width."""

    categories: tuple[str, ...] = CATEGORY_NAMES
    colors: tuple[str, ...] = COLOR_NAMES
    max_objects: int = 12
    tokens_per_object: int = 2  # 2: [colour words, category words] (the adapter's word-token form); 1: their sum
    hidden: int = 256
    output_dim: int = 576  # the language model's hidden size
    seed: int = 0

    def __post_init__(self) -> None:
        if self.tokens_per_object not in (1, 2):
            raise ValueError(f"tokens_per_object must be 1 or 2, got {self.tokens_per_object}")
        if self.max_objects < 1:
            raise ValueError(f"max_objects must be >= 1, got {self.max_objects}")

    @property
    def feature_size(self) -> int:
        return len(self.categories) + len(self.colors) + GEOMETRY_FEATURES

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "categories": list(self.categories), "colors": list(self.colors)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ObjectTokenConfig":
        known = {key: value for key, value in values.items() if key in cls.__dataclass_fields__}
        for key in ("categories", "colors"):
            if key in known:
                known[key] = tuple(known[key])
        return cls(**known)


@dataclass
class ObjectFeatures:
    """One scene's objects as arrays (N objects, best first): distributions and normalised geometry."""

    category_probs: np.ndarray  # (N, C), rows sum to 1
    color_probs: np.ndarray  # (N, K), rows sum to 1
    geometry: np.ndarray  # (N, GEOMETRY_FEATURES)
    labels: list[str] = field(default_factory=list)  # "colour category" per object, for reading

    def __len__(self) -> int:
        return len(self.geometry)

    def stacked(self) -> np.ndarray:
        """(N, feature_size) float32: what the MLP reads."""
        return np.concatenate([self.category_probs, self.color_probs, self.geometry], axis=1).astype(np.float32)


def geometry_row(center: Sequence[float], size: Sequence[float], yaw: float, floor_z: float, score: float) -> np.ndarray:
    """The geometry features of one box (gravity frame, sensor at the origin, x forward, z up)."""
    x, y, z = (float(v) for v in center)
    sizes = np.log(np.clip(np.asarray(size, dtype=np.float64), 0.02, 5.0))
    return np.array([x / 4.0, y / 4.0, z / 2.0, (z - floor_z) / 2.0, *sizes, math.sin(yaw), math.cos(yaw), score],
                    dtype=np.float32)


def features_of_objects(objects: Sequence[Any], floor_z: float, config: ObjectTokenConfig) -> ObjectFeatures:
    """Features of the object layer's objects (``SceneObject`` or any ``DetectedObject``), in the given
    order, at most ``max_objects``. The category distribution is the object's ranked ``categories``
    (the layer keeps its three likeliest; the rest of the mass, and any ``other``, spread evenly over
    the remaining names); its colour is one name, so its colour distribution is one-hot."""
    objects = list(objects)[: config.max_objects]
    categories, colors = list(config.categories), list(config.colors)
    category_probs = np.zeros((len(objects), len(categories)), dtype=np.float32)
    color_probs = np.zeros((len(objects), len(colors)), dtype=np.float32)
    geometry = np.zeros((len(objects), GEOMETRY_FEATURES), dtype=np.float32)
    for row, obj in enumerate(objects):
        ranked = [(name, float(p)) for name, p in (getattr(obj, "categories", ()) or ((obj.category, 1.0),))
                  if name in categories]
        for name, probability in ranked:
            category_probs[row, categories.index(name)] = probability
        rest = max(0.0, 1.0 - float(category_probs[row].sum()))
        unnamed = category_probs[row] == 0
        if rest > 0 and unnamed.any():
            category_probs[row, unnamed] = rest / int(unnamed.sum())
        category_probs[row] /= max(float(category_probs[row].sum()), 1e-6)
        if obj.color in colors:
            color_probs[row, colors.index(obj.color)] = 1.0
        else:
            color_probs[row] = 1.0 / len(colors)
        geometry[row] = geometry_row(obj.box.center, obj.box.size, float(obj.box.yaw), floor_z, float(obj.score))
    labels = [f"{obj.color} {obj.category}".strip() for obj in objects]
    return ObjectFeatures(category_probs, color_probs, geometry, labels)


class ObjectTokenProjector(nn.Module):
    """Object features (B, N, F) → object tokens (B, N * tokens_per_object, D)."""

    def __init__(self, config: ObjectTokenConfig = ObjectTokenConfig()) -> None:
        super().__init__()
        self.config = config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.mlp = nn.Sequential(
                nn.Linear(config.feature_size, config.hidden), nn.GELU(),
                nn.Linear(config.hidden, config.hidden), nn.GELU(),
                nn.Linear(config.hidden, config.output_dim * config.tokens_per_object),
            )
            nn.init.normal_(self.mlp[-1].weight, std=0.01)  # starts small next to the word rows (RMS near 0.13)
            nn.init.zeros_(self.mlp[-1].bias)
        # the language model's embeddings of the names; not saved (the language model has them)
        self.register_buffer("category_words", torch.zeros(len(config.categories), config.output_dim), persistent=False)
        self.register_buffer("color_words", torch.zeros(len(config.colors), config.output_dim), persistent=False)
        self._words_set = False

    def set_word_embeddings(self, categories: torch.Tensor, colors: torch.Tensor) -> None:
        """The language model's embedding of each category name (C, D) and colour name (K, D), in config order."""
        if categories.shape != self.category_words.shape or colors.shape != self.color_words.shape:
            raise ValueError(f"word embeddings must be {tuple(self.category_words.shape)} and "
                             f"{tuple(self.color_words.shape)}, got {tuple(categories.shape)} and {tuple(colors.shape)}")
        self.category_words.copy_(categories.detach().to(self.category_words))
        self.color_words.copy_(colors.detach().to(self.color_words))
        self._words_set = True

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, N, F) features → (B, N * tokens_per_object, D) tokens, in object order."""
        if not self._words_set:
            raise RuntimeError("set_word_embeddings() first: the tokens are built on the language model's words")
        config = self.config
        categories = len(config.categories)
        category_probs = features[..., :categories]
        color_probs = features[..., categories : categories + len(config.colors)]
        words = [color_probs @ self.color_words, category_probs @ self.category_words]
        learned = self.mlp(features).reshape(*features.shape[:-1], config.tokens_per_object, config.output_dim)
        if config.tokens_per_object == 1:
            tokens = (words[0] + words[1])[..., None, :] + learned
        else:
            tokens = torch.stack(words, dim=-2) + learned
        return tokens.reshape(features.shape[0], -1, config.output_dim)

    def tokens_for(self, objects: ObjectFeatures, device: torch.device | str = "cpu") -> torch.Tensor:
        """(1, N * tokens_per_object, D) tokens of one scene's objects (N may be 0)."""
        with torch.no_grad():
            features = torch.as_tensor(objects.stacked(), device=device).reshape(1, len(objects), self.config.feature_size)
            return self(features)


def attach_word_embeddings(projector: ObjectTokenProjector, model: Any) -> ObjectTokenProjector:
    """Give ``projector`` the names' embeddings of ``model``'s language model (a ``ThreeDLLM``)."""
    from threed_llm_ros.model.threed_llm import name_embeddings  # lazy: transformers

    language_model = model.causal_lm
    projector.set_word_embeddings(name_embeddings(language_model, model.tokenizer, projector.config.categories),
                                  name_embeddings(language_model, model.tokenizer, projector.config.colors))
    return projector.to(model.device)


def tokens_of_scene(projector: ObjectTokenProjector, found: Any, timings: dict[str, float] | None = None) -> torch.Tensor:
    """(1, N * tokens_per_object, D): the object tokens of an object layer output (``SceneObjects``):
    its confident objects, best first, at most ``max_objects``; ``object_tokens_s`` in ``timings``."""
    started = time.perf_counter()
    confident = sorted(found.confident, key=lambda obj: -float(obj.score))
    features = features_of_objects(confident, float(found.gravity.floor_z), projector.config)
    tokens = projector.tokens_for(features, projector.category_words.device)
    if timings is not None:
        timings["object_tokens_s"] = time.perf_counter() - started
    return tokens


def load_projector_of(checkpoint: str | Path, model: Any) -> ObjectTokenProjector | None:
    """The projector in ``checkpoint``'s ``object_tokens`` directory, with ``model``'s word embeddings,
    or None where the checkpoint has none (a :class:`ModelFileError` where one is there but broken). A
    box head that attends over the scene encoder's patch tokens needs them in every reply, so such a
    model gets none either."""
    directory = Path(checkpoint) / OBJECT_TOKENS_DIRECTORY
    if not directory.is_dir() or "patch_tokens" in getattr(model.box_head, "scene_inputs", ()):
        return None
    return attach_word_embeddings(load_object_tokens(directory), model)


def save_object_tokens(projector: ObjectTokenProjector, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``config.json`` (with ``extra``, e.g. the training record) and ``model.safetensors``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {name: value.detach().cpu().contiguous() for name, value in projector.state_dict().items()}
    save_file(tensors, str(directory / WEIGHTS_FILE))
    document = {"format": FORMAT, "config": projector.config.to_dict(), **(extra or {})}
    (directory / CONFIG_FILE).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return directory


def load_object_tokens(directory: str | Path) -> ObjectTokenProjector:
    """A saved projector (without its word embeddings: :func:`attach_word_embeddings` next)."""
    directory = Path(directory)
    config_path, weights = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    if not config_path.is_file() or not weights.is_file():
        raise ModelFileError(f"{directory} holds no object-token projector ({CONFIG_FILE} and {WEIGHTS_FILE}); "
                             "write one with `threed-llm train-object-tokens`")
    try:
        document = json.loads(config_path.read_text(encoding="utf-8"))
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            found = document.get("format") if isinstance(document, dict) else type(document).__name__
            raise ModelFileError(f"{config_path} is not an object-token projector (format {found!r})")
        projector = ObjectTokenProjector(ObjectTokenConfig.from_dict(document["config"]))
        projector.load_state_dict(load_file(str(weights)), strict=True)
    except (ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as error:
        raise ModelFileError(f"the object-token projector in {directory} cannot be read: {error}; "
                             "write it again with `threed-llm train-object-tokens`") from error
    projector.eval()
    return projector
