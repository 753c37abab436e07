"""The depth camera's effects on a noise-free render: depth noise, missing returns, edge artefacts, colour noise."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from threed_llm_ros.data.sim.render import RayCast
from threed_llm_ros.errors import ConfigError

@dataclass(frozen=True)
class SensorConfig:
    """Depth-camera effects; ``enabled=False`` gives a perfect sensor (depth = clean depth)."""

    enabled: bool = True
    depth_noise_coefficient: float = 0.0015  # sigma = k·z² (1/m), Kinect-like
    dropout_probability: float = 0.01  # random missing returns
    min_range_m: float = 0.2
    max_range_m: float = 8.0
    grazing_angle_deg: float = 85.0  # no return where the ray meets the surface flatter than this; 90 = off
    edge_threshold_m: float = 0.1  # depth jump that counts as a discontinuity
    edge_dropout_probability: float = 0.3
    flying_pixel_probability: float = 0.3  # edge pixels that get a depth between foreground and background
    rgb_noise_std: float = 2.0  # Gaussian colour noise, 0-255 units

    def __post_init__(self) -> None:
        for name in ("depth_noise_coefficient", "rgb_noise_std", "min_range_m", "edge_threshold_m"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(name, f"{value} is negative or not finite", "use a value >= 0")
        for name in ("dropout_probability", "edge_dropout_probability", "flying_pixel_probability"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(name, f"{value} is not a probability", "use a value between 0 and 1")
        if self.edge_dropout_probability + self.flying_pixel_probability > 1.0:
            raise ConfigError(
                "flying_pixel_probability", "edge dropout and flying-pixel probabilities add up to more than 1",
                "keep edge_dropout_probability + flying_pixel_probability <= 1",
            )
        if not self.max_range_m > self.min_range_m:
            raise ConfigError("max_range_m", f"{self.max_range_m} is not above min_range_m {self.min_range_m}",
                              "use max_range_m > min_range_m")
        if not 0.0 < self.grazing_angle_deg <= 90.0:
            raise ConfigError("grazing_angle_deg", f"{self.grazing_angle_deg} is not in (0, 90]", "use degrees in (0, 90]")


def _neighbourhood_min_max(depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel min and max of the 3×3 neighbourhood (edges replicated)."""
    padded = np.pad(depth, 1, mode="edge")
    height, width = depth.shape
    shifted = [padded[dv:dv + height, du:du + width] for dv in range(3) for du in range(3)]
    return np.minimum.reduce(shifted), np.maximum.reduce(shifted)


def apply_sensor_model(
    cast: RayCast, sensor: SensorConfig, seed: int | Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """The sensor's RGB (H×W×3 uint8) and depth (H×W float32 metres, NaN = no return).

    All random fields are drawn whatever the switches, so turning one effect off leaves
    the others' samples unchanged.
    """
    rng = np.random.default_rng(seed)
    shape = cast.depth_m.shape
    gaussian = rng.standard_normal(shape, dtype=np.float32)
    dropout_draw = rng.random(shape, dtype=np.float32)
    edge_draw = rng.random(shape, dtype=np.float32)
    flying_draw = rng.random(shape, dtype=np.float32)
    color_noise = rng.standard_normal((*shape, 3), dtype=np.float32)
    if not sensor.enabled:
        return np.round(cast.color).astype(np.uint8), cast.depth_m.copy()

    clean = cast.depth_m
    depth = clean + gaussian * np.float32(sensor.depth_noise_coefficient) * clean * clean
    low, high = _neighbourhood_min_max(clean)
    edge = (high - low) > sensor.edge_threshold_m
    flying = edge & (edge_draw < sensor.flying_pixel_probability)
    edge_dropout = edge & ~flying & (edge_draw < sensor.flying_pixel_probability + sensor.edge_dropout_probability)
    depth = np.where(flying, low + flying_draw * (high - low), depth)
    missing = (
        edge_dropout
        | (dropout_draw < sensor.dropout_probability)
        | (cast.incidence_cos < np.float32(math.cos(math.radians(sensor.grazing_angle_deg))))
        | (depth < sensor.min_range_m)
        | (depth > sensor.max_range_m)
    )
    depth = np.where(missing, np.float32(np.nan), depth).astype(np.float32)
    rgb = np.clip(np.round(cast.color + color_noise * np.float32(sensor.rgb_noise_std)), 0, 255).astype(np.uint8)
    return rgb, depth
