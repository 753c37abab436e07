"""A colour name for an object from its own points' colours.

The median colour of the points (robust to shadows at the edges) above the object's lowest
quarter (legs, a star base and the floor's fringe are not what a person names it by),
exposure-corrected by the frame's brightest points (white patch), is named by hue,
saturation and value, not by the nearest catalogue RGB: real lighting shifts brightness
far more than hue. Weakly saturated colours are white, grey or black by value; dark
orange-to-yellow hues are brown; weakly saturated red hues are pink.
"""

from __future__ import annotations

import colorsys

import numpy as np

UNKNOWN = ""
WHITE_PATCH_QUANTILE = 0.98
MAX_EXPOSURE_GAIN = 2.0
BASE_SHARE = 0.25  # the lowest share of an object's height that does not name its colour
MIN_BODY_SHARE = 0.3  # unless fewer than this share of its points lie above it


def color_name(rgb: tuple[float, float, float]) -> str:
    """The catalogue name (``data/catalog.COLORS``) of one RGB colour in 0–1."""
    hue, saturation, value = colorsys.rgb_to_hsv(*(float(np.clip(c, 0.0, 1.0)) for c in rgb))
    degrees = hue * 360.0
    if saturation < 0.22 or value < 0.16:
        if value > 0.78:
            return "white"
        if value < 0.3:
            return "black"
        return "grey"
    if degrees < 15 or degrees >= 330:
        if saturation < 0.6 and value > 0.35:  # pink is a pale red: told by saturation, whatever the light
            return "pink"
        return "brown" if value < 0.45 else "red"
    if degrees < 45:
        return "brown" if value < 0.6 else "orange"
    if degrees < 70:
        return "brown" if value < 0.45 else "yellow"
    if degrees < 165:
        return "green"
    if degrees < 255:
        return "blue"
    if degrees < 300:
        return "purple"
    return "pink"


def exposure_gain(colors: np.ndarray | None) -> float:
    """The gain (1–``MAX_EXPOSURE_GAIN``) that brings the frame's brightest points (its
    ``WHITE_PATCH_QUANTILE`` of value) to full value: white-patch exposure correction, so that an
    under-exposed frame's white things are not read grey, its orange brown. Never darkens.
    Real frames measured 0.88–1.00 there (gain ≤ 1.14); the simulator's renders 0.56–0.77."""
    if colors is None or len(colors) == 0:
        return 1.0
    bright = float(np.quantile(np.asarray(colors, dtype=np.float64).max(axis=1), WHITE_PATCH_QUANTILE))
    return float(np.clip(1.0 / max(bright, 1e-3), 1.0, MAX_EXPOSURE_GAIN))


def object_color(colors: np.ndarray | None, gain: float = 1.0) -> str:
    """The name of an object's colour from its points' colours (N×3, 0–1), or "" without colours:
    the median (robust to shadows at the edges) times the frame's ``exposure_gain``.
    (The median of only the better-lit half read a real black office chair as pink.)"""
    if colors is None or len(colors) == 0:
        return UNKNOWN
    return color_name(tuple(np.clip(np.median(np.asarray(colors, dtype=np.float64), axis=0) * gain, 0.0, 1.0)))


def body_colors(points: np.ndarray, colors: np.ndarray | None) -> np.ndarray | None:
    """The colours of an object's points above the lowest ``BASE_SHARE`` of its height: a yellow
    office chair on a black star base is yellow, a white table on dark legs white. All of them
    where fewer than ``MIN_BODY_SHARE`` lie above (an object seen mostly low)."""
    if colors is None or len(colors) == 0:
        return colors
    heights = np.asarray(points, dtype=np.float64)[:, 2]
    low, high = float(heights.min()), float(heights.max())
    body = heights > low + BASE_SHARE * (high - low)
    return colors[body] if body.mean() >= MIN_BODY_SHARE else colors
