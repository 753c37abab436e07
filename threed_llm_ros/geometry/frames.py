"""Frame conventions: the model works in a gravity-aligned frame (z up).

A depth camera publishes in its optical frame (x right, y down, z forward); lidars and
robot bodies use REP-103 (x forward, y left, z up). Boxes are "yaw about up", so the
library rotates every input cloud into the gravity-aligned view of its own frame
(same origin, z up) and rotates results back. ``up_axis`` names the input frame's up
direction: ``"-y"`` for optical frames of a level camera, ``"z"`` for REP-103 frames.
"""

from __future__ import annotations

import numpy as np

# Rows map input-frame vectors to gravity-frame vectors (x forward, y left, z up).
_OPTICAL_TO_GRAVITY = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])

UP_AXIS_ROTATIONS: dict[str, np.ndarray] = {
    "z": np.eye(3),
    "-y": _OPTICAL_TO_GRAVITY,
}


def rotation_to_gravity(up_axis: str) -> np.ndarray:
    """3×3 rotation from an input frame with the given up axis to the gravity frame."""
    try:
        return UP_AXIS_ROTATIONS[up_axis]
    except KeyError:
        raise ValueError(f"up_axis must be one of {sorted(UP_AXIS_ROTATIONS)}, got {up_axis!r}") from None


def to_gravity_frame(points: np.ndarray, up_axis: str) -> np.ndarray:
    """Rotate N×3 points from the input frame into its gravity-aligned view."""
    rotation = rotation_to_gravity(up_axis)
    return (np.asarray(points) @ rotation.T).astype(np.asarray(points).dtype, copy=False)


def from_gravity_frame(points: np.ndarray, up_axis: str) -> np.ndarray:
    """Rotate N×3 gravity-frame points back into the input frame."""
    rotation = rotation_to_gravity(up_axis)
    return (np.asarray(points) @ rotation).astype(np.asarray(points).dtype, copy=False)


def matrix_from_quaternion(quaternion: np.ndarray | tuple[float, float, float, float]) -> np.ndarray:
    """3×3 rotation matrix of a unit quaternion (x, y, z, w); the inverse of :func:`quaternion_from_matrix`."""
    x, y, z, w = (float(v) for v in quaternion)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def quaternion_from_matrix(rotation: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w) of a 3×3 rotation matrix."""
    m = np.asarray(rotation, dtype=np.float64)
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0:
        s = 2.0 * np.sqrt(trace + 1.0)
        quaternion = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        quaternion = [0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s]
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        quaternion = [(m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        quaternion = [(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s, (m[1, 0] - m[0, 1]) / s]
    quaternion = np.asarray(quaternion)
    return quaternion / np.linalg.norm(quaternion)


def yaw_rotation(yaw: float) -> np.ndarray:
    """Rotation about the gravity frame's z axis."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
