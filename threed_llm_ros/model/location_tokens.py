"""Location tokens (3D-LLM): boxes written as discrete ``<loc_i>`` tokens the LM can emit.

A box in normalised scene units, the 7-vector (cx, cy, cz, length, width, height, yaw),
is written as exactly 7 tokens, one per coordinate. Each coordinate has its own
quantiser: centres linearly over a fixed range, sizes on a log scale (a cup and a bed get
the same relative precision), yaw periodically over [-pi, pi). All coordinates share the
same ``num_bins`` tokens, so the vocabulary grows by ``num_bins`` rows only.

This module also adds the other tokens the model needs to the tokenizer and the
embedding (``<box3d>``, scene delimiters) and makes only the new rows trainable.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from threed_llm_ros.config_io import config_from_dict
from threed_llm_ros.errors import ConfigError

LOCATION_TOKEN_PATTERN = re.compile(r"<loc_(\d+)>")
BOX_COORDINATES = 7


@dataclass(frozen=True)
class CoordinateQuantizer:
    """Uniform bins over ``[low, high]`` (of log(value) when ``log_scale``; wrapping when ``periodic``)."""

    low: float
    high: float
    num_bins: int
    log_scale: bool = False
    periodic: bool = False

    def _to_unit_space(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        if self.log_scale:
            return np.log(np.clip(values, self.low, self.high))
        return values

    @property
    def _space_bounds(self) -> tuple[float, float]:
        if self.log_scale:
            return math.log(self.low), math.log(self.high)
        return self.low, self.high

    @property
    def bin_width(self) -> float:
        """Width of one bin in the quantiser's own space (log space for sizes)."""
        low, high = self._space_bounds
        return (high - low) / self.num_bins

    def encode(self, values: np.ndarray) -> np.ndarray:
        """Bin indices (int64) of ``values``; out-of-range values clamp to the end bins."""
        low, high = self._space_bounds
        space = self._to_unit_space(values)
        if self.periodic:
            space = (space - low) % (high - low) + low
        bins = np.floor((space - low) / self.bin_width).astype(np.int64)
        if self.periodic:
            return bins % self.num_bins
        return np.clip(bins, 0, self.num_bins - 1)

    def decode(self, bins: np.ndarray) -> np.ndarray:
        """Bin centres of ``bins`` in the original units."""
        low, _ = self._space_bounds
        centres = low + (np.asarray(bins, dtype=np.float64) + 0.5) * self.bin_width
        return np.exp(centres) if self.log_scale else centres

    def error_in_bins(self, values: np.ndarray, decoded: np.ndarray) -> np.ndarray:
        """|values - decoded| measured in bins of this quantiser (periodic-aware)."""
        difference = self._to_unit_space(values) - self._to_unit_space(decoded)
        if self.periodic:
            period = self._space_bounds[1] - self._space_bounds[0]
            difference = (difference + period / 2) % period - period / 2
        return np.abs(difference) / self.bin_width


@dataclass
class LocationTokenSettings:
    """How boxes are quantised into location tokens (normalised scene units)."""

    num_bins: int = 128
    center_range: tuple[float, float] = (-1.2, 1.2)
    size_range: tuple[float, float] = (0.005, 2.5)

    def __post_init__(self) -> None:
        self.center_range = tuple(float(v) for v in self.center_range)
        self.size_range = tuple(float(v) for v in self.size_range)
        if not 2 <= self.num_bins <= 4096:
            raise ConfigError("location.num_bins", f"must be in [2, 4096], got {self.num_bins}", "use 128 or 256")
        if self.center_range[0] >= self.center_range[1]:
            raise ConfigError("location.center_range", f"{self.center_range} is empty", "give (low, high), low < high")
        if not 0 < self.size_range[0] < self.size_range[1]:
            raise ConfigError("location.size_range", f"{self.size_range} is invalid", "give (low, high), 0 < low < high")

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        values = asdict(self)
        values["center_range"] = list(self.center_range)
        values["size_range"] = list(self.size_range)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "LocationTokenSettings":
        """Inverse of :meth:`to_dict`."""
        return config_from_dict(cls, values, name="location")


class LocationCodec:
    """Encode boxes as ``<loc_i>`` token strings and decode them back."""

    def __init__(self, settings: LocationTokenSettings | None = None) -> None:
        self.settings = settings or LocationTokenSettings()
        bins = self.settings.num_bins
        center = CoordinateQuantizer(*self.settings.center_range, num_bins=bins)
        size = CoordinateQuantizer(*self.settings.size_range, num_bins=bins, log_scale=True)
        yaw = CoordinateQuantizer(-math.pi, math.pi, num_bins=bins, periodic=True)
        self.quantizers: tuple[CoordinateQuantizer, ...] = (center, center, center, size, size, size, yaw)

    @property
    def num_bins(self) -> int:
        """Number of distinct location tokens."""
        return self.settings.num_bins

    def token_strings(self) -> list[str]:
        """``<loc_0>`` ... ``<loc_{num_bins-1}>``."""
        return [f"<loc_{index}>" for index in range(self.num_bins)]

    def encode_bins(self, box: np.ndarray) -> np.ndarray:
        """The 7 bin indices of one normalised box 7-vector."""
        values = np.asarray(box, dtype=np.float64).reshape(-1)
        if values.shape[0] != BOX_COORDINATES or not np.all(np.isfinite(values)):
            raise ValueError(f"a box is 7 finite numbers (cx, cy, cz, l, w, h, yaw), got {values.tolist()}")
        return np.array([int(q.encode(v)) for q, v in zip(self.quantizers, values)], dtype=np.int64)

    def decode_bins(self, bins: Sequence[int]) -> np.ndarray | None:
        """The normalised box 7-vector of 7 bin indices, or None when they are not a valid box."""
        bins = list(bins)
        if len(bins) != BOX_COORDINATES or any(not 0 <= int(b) < self.num_bins for b in bins):
            return None
        return np.array([float(q.decode(b)) for q, b in zip(self.quantizers, bins)], dtype=np.float64)

    def encode(self, box: np.ndarray) -> str:
        """The 7-token string of one normalised box, e.g. ``<loc_3><loc_90>...``."""
        return "".join(f"<loc_{index}>" for index in self.encode_bins(box))

    def decode(self, text: str) -> np.ndarray | None:
        """The box of a string that is exactly 7 location tokens (whitespace allowed), else None."""
        stripped = re.sub(r"\s+", "", text)
        indices = LOCATION_TOKEN_PATTERN.findall(stripped)
        if len(indices) != BOX_COORDINATES or "".join(f"<loc_{i}>" for i in indices) != stripped:
            return None
        return self.decode_bins([int(i) for i in indices])

    def find_boxes(self, text: str) -> list[np.ndarray]:
        """Every box written in ``text``: each run of 7 consecutive location tokens.

        Runs of another length or with out-of-range indices are skipped (a malformed
        generation gives fewer boxes, never an exception).
        """
        boxes: list[np.ndarray] = []
        run_pattern = re.compile(r"(?:<loc_\d+>\s*)+")
        for run in run_pattern.finditer(text):
            indices = [int(i) for i in LOCATION_TOKEN_PATTERN.findall(run.group(0))]
            if len(indices) % BOX_COORDINATES != 0:
                continue
            for start in range(0, len(indices), BOX_COORDINATES):
                box = self.decode_bins(indices[start : start + BOX_COORDINATES])
                if box is not None:
                    boxes.append(box)
        return boxes

    def error_in_bins(self, box: np.ndarray, decoded: np.ndarray) -> np.ndarray:
        """Per-coordinate |box - decoded| in bins (each coordinate's own bin width)."""
        return np.array(
            [float(q.error_in_bins(v, d)) for q, v, d in zip(self.quantizers, np.asarray(box), np.asarray(decoded))]
        )


@dataclass
class AddedTokens:
    """Which tokens were added to the vocabulary and where the original rows end."""

    base_vocab_size: int
    tokens: list[str]
    token_ids: list[int]

    def id_of(self, token: str) -> int:
        """The id of an added token."""
        return self.token_ids[self.tokens.index(token)]

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {"base_vocab_size": self.base_vocab_size, "tokens": list(self.tokens), "token_ids": list(self.token_ids)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "AddedTokens":
        """Inverse of :meth:`to_dict`."""
        return cls(int(values["base_vocab_size"]), list(values["tokens"]), [int(i) for i in values["token_ids"]])


def _row_mask_hook(first_trainable_row: int):
    def hook(gradient: torch.Tensor) -> torch.Tensor:
        masked = gradient.clone()
        masked[:first_trainable_row] = 0
        return masked

    return hook


def add_tokens(
    model: nn.Module,
    tokenizer: Any,
    content_tokens: Sequence[str],
    special_tokens: Sequence[str] = (),
    *,
    seed: int = 0,
    init_noise: float = 0.02,
) -> AddedTokens:
    """Add tokens to tokenizer and embedding; make only the new rows trainable.

    ``content_tokens`` (location tokens, ``<box3d>``) are ones the model writes;
    ``special_tokens`` (scene delimiters) are structural. New rows start at the mean of
    the existing embedding plus small seeded noise, so every new token is distinct. The
    embedding (and an untied LM head) gets ``requires_grad`` and a gradient hook that
    zeroes the rows of the original vocabulary; with tied weights (SmolLM2) one hook on
    the shared parameter covers both uses. Use weight decay 0 on these parameters, or
    decay would still move the frozen rows.
    """
    from tokenizers import AddedToken

    embedding = model.get_input_embeddings()
    base_vocab_size = int(embedding.weight.shape[0])
    existing = set(tokenizer.get_vocab())
    clashes = [t for t in [*content_tokens, *special_tokens] if t in existing]
    if clashes:
        raise ConfigError("tokens", f"{clashes[:5]} are already in the vocabulary", "add each token only once")
    tokenizer.add_tokens([AddedToken(t, normalized=False, special=False) for t in content_tokens])
    if special_tokens:
        tokenizer.add_tokens([AddedToken(t, normalized=False, special=True) for t in special_tokens], special_tokens=True)
    all_tokens = [*content_tokens, *special_tokens]
    token_ids = tokenizer.convert_tokens_to_ids(all_tokens)
    expected = list(range(len(tokenizer) - len(all_tokens), len(tokenizer)))
    if len(tokenizer) - len(all_tokens) != base_vocab_size or sorted(token_ids) != expected:
        raise ConfigError(
            "language_model",
            f"tokenizer size {len(tokenizer) - len(all_tokens)} differs from the embedding's {base_vocab_size} rows",
            "use a model whose tokenizer and embedding agree",
        )
    tied = model.get_output_embeddings() is not None and (
        model.get_output_embeddings().weight is model.get_input_embeddings().weight
    )
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        weight = model.get_input_embeddings().weight
        mean = weight[:base_vocab_size].mean(dim=0)
        noise = torch.randn(len(all_tokens), weight.shape[1], generator=generator) * init_noise
        weight[base_vocab_size:] = (mean + noise).to(weight.dtype)
        output = model.get_output_embeddings()
        if output is not None and not tied:
            out_mean = output.weight[:base_vocab_size].mean(dim=0)
            out_noise = torch.randn(len(all_tokens), output.weight.shape[1], generator=generator) * init_noise
            output.weight[base_vocab_size:] = (out_mean + out_noise).to(output.weight.dtype)
    make_new_rows_trainable(model, base_vocab_size)
    return AddedTokens(base_vocab_size, all_tokens, [int(i) for i in token_ids])


def token_row_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The distinct embedding / LM-head weight parameters (one when tied)."""
    parameters: list[nn.Parameter] = [model.get_input_embeddings().weight]
    output = model.get_output_embeddings()
    if output is not None and output.weight is not parameters[0]:
        parameters.append(output.weight)
    return parameters


def make_new_rows_trainable(model: nn.Module, base_vocab_size: int) -> None:
    """``requires_grad`` on the embedding/LM head, with the original rows' gradients zeroed."""
    for parameter in token_row_parameters(model):
        parameter.requires_grad_(True)
        if not getattr(parameter, "_threed_llm_row_mask", False):
            parameter.register_hook(_row_mask_hook(base_vocab_size))
            parameter._threed_llm_row_mask = True  # type: ignore[attr-defined]
