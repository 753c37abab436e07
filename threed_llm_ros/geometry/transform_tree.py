"""The latest transform between two frames of a TF tree, without tf2: what a node needs to know how its
camera is tilted and how high it is.

TF (``/tf``, ``/tf_static``) sends, per child frame, its parent and the child's pose in it. This keeps
the latest pose (rotation and translation) per child and composes the chains of two frames up to their
common root. Time is ignored (the latest transform is used): right for a camera's mount, which changes
slowly if at all, not for interpolating fast motion. ``threed_llm_ros.ros.camera_tilt`` feeds it from DDS.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from threed_llm_ros.geometry.frames import matrix_from_quaternion

MAX_CHAIN = 64  # frames walked from a frame to its root (a loop in the tree stops here)


@dataclass
class TransformTree:
    """Per child frame: its parent, the rotation parent_from_child and the child's origin in the parent
    (latest received)."""

    parents: dict[str, tuple[str, np.ndarray, np.ndarray]] = field(default_factory=dict)

    def set(self, parent: str, child: str, quaternion_xyzw: tuple[float, float, float, float],
            translation: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> None:
        """Record ``child``'s pose in ``parent`` (a quaternion x, y, z, w, normalised here, and the child's
        origin in metres). A zero quaternion or a non-finite translation is refused with ValueError naming
        the frames."""
        quaternion = np.asarray(quaternion_xyzw, dtype=np.float64)
        norm = float(np.linalg.norm(quaternion))
        if not np.isfinite(norm) or norm < 1e-9:
            raise ValueError(f"transform {parent} -> {child} has a zero or non-finite rotation quaternion; "
                             "publish a unit quaternion")
        offset = np.asarray(translation, dtype=np.float64)
        if not np.all(np.isfinite(offset)):
            raise ValueError(f"transform {parent} -> {child} has a non-finite translation; publish metres")
        self.parents[child.lstrip("/")] = (parent.lstrip("/"), matrix_from_quaternion(quaternion / norm), offset)

    def _to_root(self, frame: str) -> tuple[str, np.ndarray, np.ndarray]:
        """The root of ``frame``'s chain, root_from_frame's rotation and ``frame``'s origin in the root."""
        rotation, origin = np.eye(3), np.zeros(3)
        for _ in range(MAX_CHAIN):
            link = self.parents.get(frame)
            if link is None:
                return frame, rotation, origin
            frame, parent_from_frame, offset = link
            rotation, origin = parent_from_frame @ rotation, parent_from_frame @ origin + offset
        raise ValueError(f"the TF tree has a loop through {frame!r}")

    def transform(self, target: str, source: str) -> tuple[np.ndarray, np.ndarray] | None:
        """target_from_source as (3×3 rotation, ``source``'s origin in ``target``), or None where the two
        frames are not connected."""
        target, source = target.lstrip("/"), source.lstrip("/")
        target_root, root_from_target, target_origin = self._to_root(target)
        source_root, root_from_source, source_origin = self._to_root(source)
        if target_root != source_root:
            return None
        return root_from_target.T @ root_from_source, root_from_target.T @ (source_origin - target_origin)

    def rotation(self, target: str, source: str) -> np.ndarray | None:
        """target_from_source (3×3), or None where the two frames are not connected."""
        found = self.transform(target, source)
        return None if found is None else found[0]
