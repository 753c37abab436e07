"""Geometry projection (LLMI3D): a box from its image centre, a focal-free depth and the intrinsics.

A network that looks at one RGB image cannot know how far away a thing is without knowing
the camera: the same chair 2 m from a 60° camera looks as large as it does 1 m from a 120°
one. LLMI3D's answer, used here, splits the problem:

* the network predicts the box centre's pixel (u, v) and a *canonical* depth, the depth the
  object would have if the camera had the canonical focal length ``f0`` (apparent size is
  ∝ f / Z, so Z_canonical = Z · f0 / f is what the pixels alone determine);
* the intrinsics then make it metric: Z = Z_canonical · f / f0, X = (u − cx)·Z / fx,
  Y = (v − cy)·Z / fy, in the camera's optical frame (x right, y down, z forward).

The focal length ``f`` is the geometric mean √(fx·fy) (equal to fx for square pixels).
Everything here works on floats, NumPy arrays and torch tensors alike (plain arithmetic),
so the model, the data pipeline and the tests share one implementation.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np

from threed_llm_ros.errors import ConfigError
from threed_llm_ros.geometry.boxes import OrientedBox, wrap_angle
from threed_llm_ros.geometry.camera import CameraIntrinsics
from threed_llm_ros.geometry.frames import from_gravity_frame, to_gravity_frame

#: The canonical focal length (pixels) that predicted depths refer to: a 60° camera 320 px wide.
CANONICAL_FOCAL_PX = 0.5 * 320 / math.tan(math.radians(30.0))
#: The simulator's camera height above the floor (m): what the level training frames have, and what the
#: ground-plane depth assumes where a camera's height is not given.
DEFAULT_CAMERA_HEIGHT_M = 1.2
VALID_CAMERA_HEIGHT_M = (0.05, 5.0)  # a camera on the floor's edge to one on a tall mast

# The optical frame of a level camera has "-y" up (see geometry.frames).
_OPTICAL_UP_AXIS = "-y"


def focal_length(intrinsics: CameraIntrinsics) -> float:
    """The focal length that scales depth: √(fx·fy) in pixels."""
    return math.sqrt(intrinsics.fx * intrinsics.fy)


def metric_depth(canonical_depth: Any, focal_px: Any, canonical_focal_px: float = CANONICAL_FOCAL_PX) -> Any:
    """Z = Z_canonical · f / f0: the depth for a camera of focal length ``focal_px``."""
    return canonical_depth * (focal_px / canonical_focal_px)


def canonical_depth(depth: Any, focal_px: Any, canonical_focal_px: float = CANONICAL_FOCAL_PX) -> Any:
    """Z_canonical = Z · f0 / f: the inverse of :func:`metric_depth` (the training target)."""
    return depth * (canonical_focal_px / focal_px)


def backproject(u: Any, v: Any, depth: Any, fx: Any, fy: Any, cx: Any, cy: Any) -> tuple[Any, Any, Any]:
    """Pixel (u, v) at metric depth Z → optical-frame (X, Y, Z): X = (u − cx)·Z/fx, Y = (v − cy)·Z/fy."""
    return (u - cx) * depth / fx, (v - cy) * depth / fy, depth


def project(x: Any, y: Any, z: Any, fx: Any, fy: Any, cx: Any, cy: Any) -> tuple[Any, Any, Any]:
    """Optical-frame (X, Y, Z) → pixel (u, v) and depth Z; the inverse of :func:`backproject` for Z > 0."""
    return fx * x / z + cx, fy * y / z + cy, z


def decode_center(u: Any, v: Any, depth_canonical: Any, intrinsics: CameraIntrinsics,
                  canonical_focal_px: float = CANONICAL_FOCAL_PX) -> tuple[Any, Any, Any]:
    """The metric optical-frame centre from the network's (u, v) and canonical depth."""
    depth = metric_depth(depth_canonical, focal_length(intrinsics), canonical_focal_px)
    return backproject(u, v, depth, intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy)


def encode_center(center_optical: np.ndarray, intrinsics: CameraIntrinsics,
                  canonical_focal_px: float = CANONICAL_FOCAL_PX) -> tuple[float, float, float]:
    """(u, v, Z_canonical) of an optical-frame centre: the targets :func:`decode_center` inverts."""
    x, y, z = (float(value) for value in center_optical)
    u, v, _ = project(x, y, z, intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy)
    return u, v, canonical_depth(z, focal_length(intrinsics), canonical_focal_px)


def ground_plane_canonical_depth(v_bottom: Any, drop: Any, fx: Any, fy: Any, cy: Any,
                                 canonical_focal_px: float = CANONICAL_FOCAL_PX) -> Any:
    """The canonical depth of a box whose bottom centre is at image row ``v_bottom`` and ``drop`` metres
    below a level camera (the camera height for an object on the floor): Z = fy·drop / (v_bottom − cy),
    times f0 / √(fx·fy). It needs no object size, only where the object meets what it stands on."""
    return canonical_focal_px * drop * (fy / fx) ** 0.5 / (v_bottom - cy)


def box_to_targets(box: OrientedBox, intrinsics: CameraIntrinsics,
                   canonical_focal_px: float = CANONICAL_FOCAL_PX) -> dict[str, np.ndarray]:
    """Training targets of a box in the camera gravity frame (x forward, y left, z up; a level camera).

    ``uv`` (pixels), ``depth_canonical`` (m), ``center_optical`` (metric, for the ablation),
    ``size`` (length, width, height) and ``yaw`` as (sin, cos).
    """
    center_optical = from_gravity_frame(np.asarray(box.center, dtype=np.float64)[None], _OPTICAL_UP_AXIS)[0]
    u, v, depth = encode_center(center_optical, intrinsics, canonical_focal_px)
    return {
        "uv": np.array([u, v]),
        "depth_canonical": np.array([depth]),
        "center_optical": center_optical,
        "size": np.asarray(box.size, dtype=np.float64),
        "yaw": np.array([math.sin(box.yaw), math.cos(box.yaw)]),
    }


def box_from_center(center_optical: np.ndarray, size: np.ndarray, yaw_sin_cos: np.ndarray) -> OrientedBox:
    """A camera-gravity-frame box from an optical-frame centre, a size and (sin, cos) of the yaw."""
    center = to_gravity_frame(np.asarray(center_optical, dtype=np.float64)[None], _OPTICAL_UP_AXIS)[0]
    yaw = float(wrap_angle(math.atan2(float(yaw_sin_cos[0]), float(yaw_sin_cos[1]))))
    return OrientedBox(tuple(center.tolist()), tuple(float(value) for value in size), yaw)


def box_from_prediction(uv: np.ndarray, depth_canonical: float, size: np.ndarray, yaw_sin_cos: np.ndarray,
                        intrinsics: CameraIntrinsics, canonical_focal_px: float = CANONICAL_FOCAL_PX) -> OrientedBox:
    """The metric box (camera gravity frame) of one prediction, through geometry projection."""
    center = np.array(decode_center(float(uv[0]), float(uv[1]), float(depth_canonical), intrinsics, canonical_focal_px))
    return box_from_center(center, size, yaw_sin_cos)


def pitch_rotation(pitch_deg: float, roll_deg: float = 0.0) -> np.ndarray:
    """``level_from_optical`` of a camera whose optical axis is ``pitch_deg`` above the horizon
    (negative: looking down) and turned ``roll_deg`` about that axis (positive: clockwise as seen
    from behind the camera, its right side going down)."""
    pitch, roll = math.radians(pitch_deg), math.radians(roll_deg)
    c, s = math.cos(pitch), math.sin(pitch)
    tilt = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])  # optical axis → (0, −sin, cos): y is down
    c, s = math.cos(roll), math.sin(roll)
    return tilt @ np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def pitch_and_roll(level_from_optical: np.ndarray) -> tuple[float, float]:
    """The optical axis's angle above the horizon and the roll about it (degrees) of a levelling rotation."""
    rotation = np.asarray(level_from_optical, dtype=np.float64)
    axis = rotation[:, 2]
    pitch = math.degrees(math.atan2(-axis[1], math.hypot(axis[0], axis[2])))
    level_right = np.array([axis[2], 0.0, -axis[0]]) / max(math.hypot(axis[0], axis[2]), 1e-12)
    level_down = np.cross(axis, level_right)  # perpendicular to the axis, in its vertical plane
    right = rotation[:, 0]
    roll = math.degrees(math.atan2(float(right @ level_down), float(right @ level_right)))
    return pitch, roll


def level_from_gravity_frame(gravity_from_optical: np.ndarray) -> np.ndarray:
    """``level_from_optical`` from the camera optical frame's rotation in a gravity-aligned frame (z up,
    e.g. a robot's base_link, from TF): the level camera looks along the optical axis's horizontal
    heading, so only pitch and roll are taken out, not the heading. A camera looking straight up or
    down has no heading: ConfigError."""
    rotation = np.asarray(gravity_from_optical, dtype=np.float64)
    axis = rotation[:, 2]
    horizontal = math.hypot(axis[0], axis[1])
    if horizontal < 1e-3:
        raise ConfigError("camera tilt", "the camera looks straight up or down: there is no level view of it",
                          "tilt the camera less than 89.9 degrees from the horizon")
    forward = np.array([axis[0] / horizontal, axis[1] / horizontal, 0.0])
    down = np.array([0.0, 0.0, -1.0])
    gravity_from_level = np.stack((np.cross(down, forward), down, forward), axis=1)  # columns: x right, y down, z
    return gravity_from_level.T @ rotation


def level_camera(intrinsics: CameraIntrinsics, level_from_optical: np.ndarray) -> CameraIntrinsics:
    """The level camera that :func:`level_image` renders into: the same size and focal lengths, its
    principal point moved so the real camera's optical axis lands where the real principal point is,
    so a camera pitched down keeps what it looked at in frame (its horizon then lies above the image)."""
    axis = np.asarray(level_from_optical, dtype=np.float64)[:, 2]
    if axis[2] <= 1e-3:
        raise ConfigError("camera tilt", "the camera's optical axis is not ahead of a level camera",
                          "tilt the camera less than 89.9 degrees from the horizon")
    return replace(intrinsics, cx=float(intrinsics.cx - intrinsics.fx * axis[0] / axis[2]),
                   cy=float(intrinsics.cy - intrinsics.fy * axis[1] / axis[2]))


def _homography(output: CameraIntrinsics, source: CameraIntrinsics, source_from_output: np.ndarray) -> np.ndarray:
    """pixel_source ~ K_source·R·K_output⁻¹·pixel_output, for PIL (which samples at pixel corners)."""
    half = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
    homography = half @ source.matrix @ source_from_output @ np.linalg.inv(output.matrix) @ np.linalg.inv(half)
    return homography / homography[2, 2]


def level_view(image: np.ndarray, intrinsics: CameraIntrinsics, level_from_optical: np.ndarray,
               output: CameraIntrinsics | None = None) -> np.ndarray:
    """The image a level camera at the same centre would see (black where the real camera saw nothing):
    a pure rotation is a homography, pixel_real ~ K·Rᵀ·K_level⁻¹·pixel_level, with ``level_from_optical``
    the rotation from the real camera's optical frame to the level one's and ``output`` the level
    camera (default: the real intrinsics; :func:`level_camera` keeps the view in frame).
    The model assumes a level camera; a robot knows its camera's tilt (TF), so it can level first."""
    from PIL import Image

    output = output or intrinsics
    homography = _homography(output, intrinsics, np.asarray(level_from_optical, dtype=np.float64).T)
    source = Image.fromarray(np.ascontiguousarray(image[..., :3]))
    return np.asarray(source.transform((output.width, output.height), Image.PERSPECTIVE,
                                       tuple(homography.ravel()[:8].tolist()), Image.BILINEAR))


def level_image(image: np.ndarray, intrinsics: CameraIntrinsics,
                level_from_optical: np.ndarray) -> tuple[np.ndarray, CameraIntrinsics]:
    """The image levelled into :func:`level_camera` and that camera: what the grounder looks at when the
    camera's tilt is known (an identity rotation returns the image and camera as they are)."""
    rotation = np.asarray(level_from_optical, dtype=np.float64)
    if np.allclose(rotation, np.eye(3), atol=1e-9):
        return image, intrinsics
    output = level_camera(intrinsics, rotation)
    return level_view(image, intrinsics, rotation, output), output


def seen_by_tilted_camera(level: CameraIntrinsics, camera: CameraIntrinsics,
                          level_from_optical: np.ndarray) -> np.ndarray:
    """Which pixels of the level camera ``level`` the tilted ``camera`` also sees (H×W bool): the
    simulator renders a level camera, and this mask makes that render what levelling a tilted
    camera's image gives (black outside)."""
    rows, columns = np.mgrid[0:level.height, 0:level.width].astype(np.float64)
    rays = np.stack(((columns - level.cx) / level.fx, (rows - level.cy) / level.fy, np.ones_like(rows)), axis=-1)
    optical = rays @ np.asarray(level_from_optical, dtype=np.float64)  # Rᵀ·ray per pixel
    ahead = optical[..., 2] > 1e-6
    depth = np.where(ahead, optical[..., 2], 1.0)
    u = camera.fx * optical[..., 0] / depth + camera.cx
    v = camera.fy * optical[..., 1] / depth + camera.cy
    return ahead & (u >= -0.5) & (u < camera.width - 0.5) & (v >= -0.5) & (v < camera.height - 0.5)


def fit_to_canvas(intrinsics: CameraIntrinsics, canvas_width: int,
                  canvas_height: int) -> tuple[float, CameraIntrinsics]:
    """The scale that fits an image into the canvas (aspect kept, top-left aligned) and the camera
    as it sees the resized image: focal lengths times the scale, the principal point moved as
    pixel centres move under resizing ((c + ½)·scale − ½), so geometry stays consistent."""
    scale = min(canvas_width / intrinsics.width, canvas_height / intrinsics.height)
    scaled = CameraIntrinsics(
        fx=intrinsics.fx * scale, fy=intrinsics.fy * scale,
        cx=(intrinsics.cx + 0.5) * scale - 0.5, cy=(intrinsics.cy + 0.5) * scale - 0.5,
        width=max(1, min(canvas_width, int(round(intrinsics.width * scale)))),
        height=max(1, min(canvas_height, int(round(intrinsics.height * scale)))),
    )
    return scale, scaled


def camera_height_problem(height_m: float | None, name: str = "camera height") -> str | None:
    """What is wrong with a camera height above the floor in metres (None when nothing is, or none given)."""
    low, high = VALID_CAMERA_HEIGHT_M
    if height_m is not None and not low <= height_m <= high:  # NaN fails too
        return f"{name} {height_m:g} m is out of range: give metres between {low:g} and {high:g}"
    return None
