"""Gravity from the data: the floor plane turns any sensor frame into a z-up frame.

``up_axis`` ("-y" optical, "z" REP-103) is only a prior: a camera pitched 30° down, or
mounted 1.8 m up, still sees a floor. Among the points whose surface normal is within
:data:`MAX_TILT_DEG` of the prior's up, RANSAC finds horizontal planes; the lowest one that
has nearly every point of the cloud above it is the floor;
its normal becomes +z and its height the floor height. Where no such plane is seen (a
tabletop close-up), the prior stands and the floor is the cloud's low percentile, and the
result says so (``floor_found``). Where the robot knows the sensor's height above the floor
(``sensor_height``, from its URDF / tf), only planes within :data:`SENSOR_HEIGHT_TOLERANCE_M`
of that height can be the floor (a sofa seat filling a level camera's view is not), and with
none seen the floor is put at that height. The frame keeps the sensor at the origin and the prior's
heading (x forward of the prior), so a reply's coordinates rotate back into the input frame
with one matrix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from threed_llm_ros.geometry.frames import quaternion_from_matrix, rotation_to_gravity, yaw_rotation
from threed_llm_ros.geometry.planes import fit_plane

MAX_TILT_DEG = 45.0  # the floor's normal may differ this much from the prior's up
PLANE_DISTANCE_M = 0.03
MIN_FLOOR_SHARE = 0.005  # of the plane-search points: a floor mostly hidden by furniture still shows this much
MIN_TILT_SHARE = 0.02  # a floor with fewer points gives its height only: a narrow strip cannot fix its tilt
BELOW_FLOOR_TOLERANCE_M = 0.08
MAX_SHARE_BELOW = 0.03  # points more than the tolerance below a floor candidate
SAME_PLANE_M = 0.06  # floor candidates this close in height are one surface: the larger fit wins
SENSOR_HEIGHT_TOLERANCE_M = 0.25  # a floor candidate this far from the known sensor height is something else


@dataclass(frozen=True)
class GravityFrame:
    """``rotation`` maps input-frame vectors into the gravity frame (z up, sensor at the origin)."""

    rotation: np.ndarray  # 3×3
    floor_z: float
    floor_found: bool
    frame_id: str = ""

    def to_gravity(self, points: np.ndarray) -> np.ndarray:
        """N×3 input-frame points in the gravity frame."""
        return np.asarray(points, dtype=np.float64) @ self.rotation.T

    def to_input(self, points: np.ndarray) -> np.ndarray:
        """N×3 gravity-frame points in the input frame."""
        return np.asarray(points, dtype=np.float64) @ self.rotation

    def pose_in_input(self, position: np.ndarray, yaw: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """A gravity-frame position and heading as (position, quaternion x y z w) in the input frame."""
        point = self.to_input(np.asarray(position, dtype=np.float64)[None])[0]
        quaternion = quaternion_from_matrix(self.rotation.T @ yaw_rotation(yaw))
        return tuple(float(v) for v in point), tuple(float(v) for v in quaternion)


def _rotation_between(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The smallest rotation turning unit vector ``source`` onto unit vector ``target``."""
    axis = np.cross(source, target)
    sine, cosine = float(np.linalg.norm(axis)), float(source @ target)
    if sine < 1e-9:
        return np.eye(3) if cosine > 0 else np.diag([1.0, -1.0, -1.0])
    axis /= sine
    skew = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    angle = math.atan2(sine, cosine)
    return np.eye(3) + math.sin(angle) * skew + (1 - math.cos(angle)) * skew @ skew


def estimate_gravity(
    points: np.ndarray, up_axis: str = "-y", frame_id: str = "", max_planes: int = 8, seed: int = 0,
    sample: int = 10_000, sensor_height: float = 0.0,
) -> GravityFrame:
    """The gravity frame of an input-frame cloud (see the module docstring); ``sensor_height``
    (metres, 0 = unknown) is the sensor's known height above the floor."""
    import open3d

    prior = rotation_to_gravity(up_axis)
    xyz = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    xyz = xyz[np.isfinite(xyz).all(axis=1)]
    if len(xyz) > sample:
        xyz = xyz[np.random.default_rng(seed).choice(len(xyz), sample, replace=False)]
    upright = xyz @ prior.T
    known = sensor_height > 0

    def unseen() -> GravityFrame:  # no floor plane: the known height, else the cloud's low percentile
        floor = -sensor_height if known else float(np.percentile(upright[:, 2], 2.0)) if len(upright) else 0.0
        return GravityFrame(prior, floor, False, frame_id)

    if len(upright) < 50:
        return unseen()
    cloud = open3d.geometry.PointCloud(open3d.utility.Vector3dVector(upright))
    cloud.estimate_normals(open3d.geometry.KDTreeSearchParamHybrid(radius=0.15, max_nn=16))
    cos_tilt = math.cos(math.radians(MAX_TILT_DEG))
    # only points on roughly horizontal surfaces: walls and fronts cannot hide the floor
    remaining = upright[np.abs(np.asarray(cloud.normals)[:, 2]) >= cos_tilt]
    # (inliers' mean height, inlier count, height along its normal at the sensor, normal)
    best: tuple[float, int, float, np.ndarray] | None = None
    for attempt in range(max_planes):
        if len(remaining) < 50:
            break
        normal, offset, inliers = fit_plane(remaining, PLANE_DISTANCE_M, 1000, seed=seed + attempt)
        if len(inliers) < 30:
            break
        if normal[2] < 0:
            normal, offset = -normal, -offset
        if normal[2] >= cos_tilt and len(inliers) >= MIN_FLOOR_SHARE * len(upright):
            heights = upright @ normal + offset  # signed distance above the plane
            height = -offset  # the plane's height along its normal
            plausible = not known or abs(height + sensor_height) <= SENSOR_HEIGHT_TOLERANCE_M
            if plausible and float((heights < -BELOW_FLOOR_TOLERANCE_M).mean()) <= MAX_SHARE_BELOW:
                # compared where the plane's points are, not at the sensor: the slightly tilted
                # plane RANSAC fits to the floor's leftover edge points reads lower at the sensor
                level = float(remaining[inliers, 2].mean())
                lower = best is None or level < best[0] - SAME_PLANE_M
                same_but_larger = best is not None and abs(level - best[0]) <= SAME_PLANE_M and len(inliers) > best[1]
                if lower or same_but_larger:
                    if len(inliers) < MIN_TILT_SHARE * len(upright):
                        normal, height = np.array([0.0, 0.0, 1.0]), level
                    best = (level, len(inliers), height, normal)
        remaining = np.delete(remaining, inliers, axis=0)
    if best is None:
        return unseen()
    _, _, height, normal = best
    rotation = _rotation_between(normal, np.array([0.0, 0.0, 1.0])) @ prior
    return GravityFrame(rotation, float(height), True, frame_id)
