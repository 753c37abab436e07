"""A deterministic RANSAC plane fit.

Open3D's ``segment_plane`` runs its hypotheses on a thread pool, and even with
``open3d.utility.random.seed`` it returns a slightly different plane from run to run. The
floor height and the walls decide everything downstream (which points are structure, which
touch), so one frame gave different objects on two runs. This fit draws its hypotheses from a
seeded NumPy generator, scores them on a fixed subsample (MSAC: truncated squared distances),
and refines the winner by least squares on its inliers: the same cloud always gives the same plane, on one thread.
"""

from __future__ import annotations

import numpy as np

SCORE_SAMPLE = 4000  # points the hypotheses are scored on (all points decide the final inliers)
REFINEMENTS = 3


def fit_plane(points: np.ndarray, distance: float, iterations: int = 250, seed: int = 0
              ) -> tuple[np.ndarray, float, np.ndarray]:
    """The plane that best fits ``points`` within ``distance`` (m), by MSAC and least squares:
    (unit normal, offset, inlier indices), with ``normal @ p + offset = 0`` on the plane. Fewer
    than 3 points give no inlier."""
    xyz = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if len(xyz) < 3:
        return np.array([0.0, 0.0, 1.0]), 0.0, np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    scored = xyz if len(xyz) <= SCORE_SAMPLE else xyz[rng.choice(len(xyz), SCORE_SAMPLE, replace=False)]
    triples = xyz[rng.integers(0, len(xyz), size=(iterations, 3))]
    normals = np.cross(triples[:, 1] - triples[:, 0], triples[:, 2] - triples[:, 0])
    lengths = np.linalg.norm(normals, axis=1)
    valid = lengths > 1e-9
    if not valid.any():
        return np.array([0.0, 0.0, 1.0]), 0.0, np.zeros(0, dtype=np.int64)
    normals = normals[valid] / lengths[valid, None]
    offsets = -np.einsum("ij,ij->i", normals, triples[valid, 0])
    # MSAC: each point costs its squared distance, at most distance²; the cheapest plane wins
    # (a plain inlier count prefers planes tilted across a noisy band)
    costs = np.minimum((scored @ normals.T + offsets) ** 2, distance**2).sum(axis=0)
    best = int(np.argmin(costs))  # the first of equals: deterministic
    normal, offset = normals[best], float(offsets[best])
    inliers = np.flatnonzero(np.abs(xyz @ normal + offset) <= distance)
    for _ in range(REFINEMENTS):  # least squares on the inliers, then the inliers again
        if len(inliers) < 3:
            break
        centre = xyz[inliers].mean(axis=0)
        _, _, vt = np.linalg.svd(xyz[inliers] - centre, full_matrices=False)
        refined = vt[-1] / np.linalg.norm(vt[-1])
        if refined @ normal < 0:
            refined = -refined
        refined_inliers = np.flatnonzero(np.abs((xyz - centre) @ refined) <= distance)
        if len(refined_inliers) < len(inliers):
            break
        normal, offset, inliers = refined, float(-refined @ centre), refined_inliers
    return normal, offset, inliers
