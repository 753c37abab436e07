"""The deterministic RANSAC plane fit (geometry/planes.py)."""

from __future__ import annotations

import numpy as np

from threed_llm_ros.geometry.planes import fit_plane


def _floor_and_clutter(rng: np.random.Generator) -> np.ndarray:
    """A 4 × 4 m floor at z = -1.2 with depth-camera-like noise that grows with range, and clutter above it."""
    floor = np.column_stack([rng.uniform(1, 5, 4000), rng.uniform(-2, 2, 4000), np.full(4000, -1.2)])
    floor[:, 2] += rng.normal(0, 1, 4000) * 0.0015 * np.linalg.norm(floor, axis=1) ** 2 * 0.3
    clutter = rng.uniform([1, -2, -1.1], [5, 2, 1.0], (3000, 3))
    return np.vstack([floor, clutter])


def test_the_same_cloud_gives_the_same_plane() -> None:
    points = _floor_and_clutter(np.random.default_rng(0))
    first = fit_plane(points, 0.03, seed=3)
    second = fit_plane(points, 0.03, seed=3)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[2], second[2])


def test_a_noisy_floor_is_found_level_and_at_its_height() -> None:
    normal, offset, inliers = fit_plane(_floor_and_clutter(np.random.default_rng(1)), 0.03)
    if normal[2] < 0:
        normal, offset = -normal, -offset
    assert np.degrees(np.arccos(normal[2])) < 0.3  # MSAC and refinement: not tilted across the noisy band
    assert abs(-offset - (-1.2)) < 0.01
    assert len(inliers) > 3000


def test_too_few_points_give_no_plane() -> None:
    assert len(fit_plane(np.zeros((2, 3)), 0.03)[2]) == 0
    assert len(fit_plane(np.zeros((10, 3)), 0.03)[2]) == 0  # all hypotheses degenerate
