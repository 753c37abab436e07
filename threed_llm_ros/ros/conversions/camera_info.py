"""CameraInfo <-> CameraIntrinsics, and a depth image (+ colour) back-projected into a PointCloud2."""

from __future__ import annotations

import array
import math

import numpy as np
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from threed_llm_ros.errors import CameraInfoError
from threed_llm_ros.geometry.camera import CameraIntrinsics, depth_to_points
from threed_llm_ros.ros.conversions.image import depth_image_to_metres, image_to_rgb
from threed_llm_ros.ros.conversions.messages import _header, stamp_to_tuple
from threed_llm_ros.ros.conversions.pointcloud import arrays_to_pointcloud2

MIN_FOCAL_PX = 1.0  # a focal length in pixels; below this (5e-324 got through once) the projection overflows
MAX_FOCAL_PX = 1e5


# --------------------------------------------------------------------------- CameraInfo


def camera_info_to_intrinsics(msg: CameraInfo) -> CameraIntrinsics:
    """Intrinsics of the image the camera publishes, from K, width/height, binning and ROI.

    ROI shifts the principal point and sets the size; binning divides focal lengths and
    principal point (image_geometry's convention). Skew (K[0,1]) is ignored. Keeps
    ``distortion_model`` and ``d``.
    """
    try:
        k = np.asarray(msg.k, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as error:
        raise CameraInfoError("k", f"cannot read as 9 numbers: {error}") from error
    if k.size != 9:
        raise CameraInfoError("k", f"must hold 9 values (row-major 3x3), got {k.size}")
    if not np.isfinite(k).all():
        raise CameraInfoError("k", f"holds non-finite values: {k.tolist()}")
    if not k.any():
        raise CameraInfoError("k", "is all zeros: the camera is not calibrated")
    fx, fy, cx, cy = float(k[0]), float(k[4]), float(k[2]), float(k[5])
    if not (MIN_FOCAL_PX <= fx <= MAX_FOCAL_PX and MIN_FOCAL_PX <= fy <= MAX_FOCAL_PX):
        raise CameraInfoError("k", f"focal lengths must be {MIN_FOCAL_PX:g}–{MAX_FOCAL_PX:g} pixels, got fx={fx}, fy={fy}: "
                                   "calibrate the camera or fix its camera_info")
    width, height = int(msg.width), int(msg.height)
    if width <= 0:
        raise CameraInfoError("width", f"must be positive, got {width}")
    if height <= 0:
        raise CameraInfoError("height", f"must be positive, got {height}")
    roi = msg.roi
    if int(roi.width) > 0 and int(roi.height) > 0:
        cx -= int(roi.x_offset)
        cy -= int(roi.y_offset)
        width, height = int(roi.width), int(roi.height)
    binning_x, binning_y = max(int(msg.binning_x), 1), max(int(msg.binning_y), 1)
    fx, cx, width = fx / binning_x, cx / binning_x, width // binning_x
    fy, cy, height = fy / binning_y, cy / binning_y, height // binning_y
    if width <= 0 or height <= 0:
        raise CameraInfoError("binning_x/binning_y", f"binning leaves an empty {width}x{height} image")
    return CameraIntrinsics(
        fx=fx,
        fy=fy,
        cx=cx,
        cy=cy,
        width=width,
        height=height,
        distortion_model=str(msg.distortion_model),
        distortion=tuple(float(value) for value in msg.d),
    )


def intrinsics_to_camera_info(
    intrinsics: CameraIntrinsics, *, frame_id: str = "", stamp: tuple[int, int] = (0, 0)
) -> CameraInfo:
    """A CameraInfo for ``intrinsics``: K, P = [K | 0], R = identity, D and its model."""
    fx, fy, cx, cy = (float(value) for value in (intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy))
    msg = CameraInfo()
    msg.header = _header(frame_id, stamp)
    msg.width = int(intrinsics.width)
    msg.height = int(intrinsics.height)
    msg.distortion_model = str(intrinsics.distortion_model)
    msg.d = array.array("d", (float(value) for value in intrinsics.distortion))
    msg.k = np.array([fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0], dtype=np.float64)
    msg.r = np.eye(3, dtype=np.float64).reshape(-1)
    msg.p = np.array([fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0], dtype=np.float64)
    return msg


# --------------------------------------------------------------------------- RGB-D


def depth_to_pointcloud2(
    depth_msg: Image,
    info_msg: CameraInfo,
    color_msg: Image | None = None,
    *,
    min_range: float = 0.0,
    max_range: float = math.inf,
    rgb_layout: str = "rgb_float32",
    organized: bool = False,
) -> PointCloud2:
    """Back-project a depth image (+ aligned colour) into a PointCloud2 in the depth frame.

    Carries the depth header's frame_id and stamp. Unorganised (valid points only) unless
    ``organized``, which keeps the H×W grid with NaN for missing depth.
    """
    depth = depth_image_to_metres(depth_msg)
    intrinsics = camera_info_to_intrinsics(info_msg)
    color = None if color_msg is None else image_to_rgb(color_msg)
    xyz, rgb = depth_to_points(
        depth, intrinsics, min_range=min_range, max_range=max_range, color=color, organized=organized
    )
    return arrays_to_pointcloud2(
        xyz,
        rgb,
        frame_id=str(depth_msg.header.frame_id),
        stamp=stamp_to_tuple(depth_msg.header.stamp),
        rgb_layout=rgb_layout,
    )
