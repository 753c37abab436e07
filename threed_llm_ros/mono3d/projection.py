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
from typing import Any

import numpy as np

from threed_llm_ros.geometry.boxes import OrientedBox, wrap_angle
from threed_llm_ros.geometry.camera import CameraIntrinsics
from threed_llm_ros.geometry.frames import from_gravity_frame, to_gravity_frame

#: The canonical focal length (pixels) that predicted depths refer to: a 60° camera 320 px wide.
CANONICAL_FOCAL_PX = 0.5 * 320 / math.tan(math.radians(30.0))

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


def level_view(image: np.ndarray, intrinsics: CameraIntrinsics, level_from_optical: np.ndarray) -> np.ndarray:
    """The image a level camera with the same intrinsics and centre would see (black where the real
    camera saw nothing): a pure rotation is a homography, pixel_real ~ K·Rᵀ·K⁻¹·pixel_level, with
    ``level_from_optical`` the rotation from the real camera's optical frame to the level one's.
    The model assumes a level camera; a robot knows its camera's tilt (TF), so it can level first."""
    from PIL import Image

    k = np.array([[intrinsics.fx, 0.0, intrinsics.cx], [0.0, intrinsics.fy, intrinsics.cy], [0.0, 0.0, 1.0]])
    # PIL samples at pixel corners: shift by ½ so pixel centres map as in the camera model
    half = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
    homography = half @ k @ np.asarray(level_from_optical).T @ np.linalg.inv(k) @ np.linalg.inv(half)
    homography /= homography[2, 2]
    source = Image.fromarray(np.ascontiguousarray(image[..., :3]))
    return np.asarray(source.transform((image.shape[1], image.shape[0]), Image.PERSPECTIVE,
                                       tuple(homography.ravel()[:8].tolist()), Image.BILINEAR))


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
