"""The latest rotation between two frames of a TF tree, without tf2: what a node needs to know how its
camera is tilted.

TF (``/tf``, ``/tf_static``) sends, per child frame, its parent and the child's pose in it. This keeps
the latest rotation per child and composes the chains of two frames up to their common root. Time
is ignored (the latest transform is used): right for a camera's mount, which changes slowly if at
all, not for interpolating fast motion. ``threed_llm_ros.ros.camera_tilt`` feeds it from DDS.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from threed_llm_ros.geometry.frames import matrix_from_quaternion

MAX_CHAIN = 64  # frames walked from a frame to its root (a loop in the tree stops here)


@dataclass
class TransformTree:
    """Per child frame: its parent and the rotation parent_from_child (latest received)."""

    parents: dict[str, tuple[str, np.ndarray]] = field(default_factory=dict)

    def set(self, parent: str, child: str, quaternion_xyzw: tuple[float, float, float, float]) -> None:
        """Record ``child``'s orientation in ``parent`` (a quaternion x, y, z, w; normalised here).
        A zero quaternion is refused with ValueError naming the frames."""
        quaternion = np.asarray(quaternion_xyzw, dtype=np.float64)
        norm = float(np.linalg.norm(quaternion))
        if not np.isfinite(norm) or norm < 1e-9:
            raise ValueError(f"transform {parent} -> {child} has a zero or non-finite rotation quaternion; "
                             "publish a unit quaternion")
        self.parents[child.lstrip("/")] = (parent.lstrip("/"), matrix_from_quaternion(quaternion / norm))

    def _to_root(self, frame: str) -> tuple[str, np.ndarray]:
        """The root of ``frame``'s chain and root_from_frame."""
        rotation = np.eye(3)
        for _ in range(MAX_CHAIN):
            link = self.parents.get(frame)
            if link is None:
                return frame, rotation
            frame, parent_from_frame = link
            rotation = parent_from_frame @ rotation
        raise ValueError(f"the TF tree has a loop through {frame!r}")

    def rotation(self, target: str, source: str) -> np.ndarray | None:
        """target_from_source (3×3), or None where the two frames are not connected."""
        target, source = target.lstrip("/"), source.lstrip("/")
        target_root, root_from_target = self._to_root(target)
        source_root, root_from_source = self._to_root(source)
        if target_root != source_root:
            return None
        return root_from_target.T @ root_from_source
