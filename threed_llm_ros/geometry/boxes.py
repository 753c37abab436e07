"""Oriented 3D boxes: centre, size and yaw about the up axis of a gravity-aligned frame."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from threed_llm_ros.geometry.frames import from_gravity_frame, quaternion_from_matrix, rotation_to_gravity, yaw_rotation


def wrap_angle(angle: float | np.ndarray) -> float | np.ndarray:
    """Wrap an angle to [-pi, pi)."""
    return (np.asarray(angle) + np.pi) % (2.0 * np.pi) - np.pi


@dataclass(frozen=True)
class OrientedBox:
    """A box in a gravity-aligned frame (z up).

    ``size`` is (length along the heading, width, height) in metres; ``yaw`` turns the
    heading about +z, counter-clockwise seen from above, in radians.
    """

    center: tuple[float, float, float]
    size: tuple[float, float, float]
    yaw: float = 0.0

    @classmethod
    def from_array(cls, values: np.ndarray) -> "OrientedBox":
        """Box from a 7-vector (cx, cy, cz, length, width, height, yaw)."""
        values = np.asarray(values, dtype=np.float64)
        return cls(tuple(values[:3].tolist()), tuple(values[3:6].tolist()), float(values[6]))

    def to_array(self) -> np.ndarray:
        """The 7-vector (cx, cy, cz, length, width, height, yaw)."""
        return np.array([*self.center, *self.size, self.yaw], dtype=np.float64)

    def corners(self) -> np.ndarray:
        """The 8 corners as an 8×3 array: bottom face first, counter-clockwise."""
        half = np.asarray(self.size) / 2.0
        signs = np.array(
            [[1, 1, -1], [-1, 1, -1], [-1, -1, -1], [1, -1, -1], [1, 1, 1], [-1, 1, 1], [-1, -1, 1], [1, -1, 1]],
            dtype=np.float64,
        )
        local = signs * half
        return local @ yaw_rotation(self.yaw).T + np.asarray(self.center)

    def contains(self, points: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """Boolean mask of the N×3 points inside the box (grown by ``margin`` metres)."""
        local = (np.asarray(points, dtype=np.float64) - np.asarray(self.center)) @ yaw_rotation(self.yaw)
        half = np.asarray(self.size) / 2.0 + margin
        return np.all(np.abs(local) <= half, axis=1)

    def pose_in_frame(self, up_axis: str) -> tuple[np.ndarray, np.ndarray]:
        """Position and (x, y, z, w) orientation of the box in the input frame named by ``up_axis``."""
        position = from_gravity_frame(np.asarray(self.center)[None], up_axis)[0]
        rotation = rotation_to_gravity(up_axis).T @ yaw_rotation(self.yaw)
        return position, quaternion_from_matrix(rotation)
