"""Pinhole camera intrinsics, depth back-projection and point projection.

Points are in the camera *optical* frame (x right, y down, z forward), as in
``sensor_msgs/CameraInfo`` and REP-103's ``*_optical_frame`` convention.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from threed_llm_ros.errors import CameraInfoError


@dataclass(frozen=True)
class CameraIntrinsics:
    """A pinhole camera: focal lengths and principal point in pixels, image size, distortion."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    distortion_model: str = "plumb_bob"
    distortion: tuple[float, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        values = {"fx": self.fx, "fy": self.fy, "cx": self.cx, "cy": self.cy}
        for name, value in values.items():
            if not np.isfinite(value):
                raise CameraInfoError(f"K ({name})", f"must be finite, got {value}")
        if self.fx <= 0 or self.fy <= 0:
            raise CameraInfoError("K", f"focal lengths must be positive, got fx={self.fx}, fy={self.fy}")
        if self.width <= 0 or self.height <= 0:
            raise CameraInfoError("width/height", f"must be positive, got {self.width}x{self.height}")

    @classmethod
    def from_field_of_view(cls, width: int, height: int, horizontal_fov_deg: float) -> "CameraIntrinsics":
        """Square-pixel camera with the principal point at the image centre."""
        focal = 0.5 * width / np.tan(np.radians(horizontal_fov_deg) / 2.0)
        return cls(fx=float(focal), fy=float(focal), cx=width / 2.0, cy=height / 2.0, width=width, height=height)

    @property
    def matrix(self) -> np.ndarray:
        """The 3×3 camera matrix K."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def scaled(self, factor: float) -> "CameraIntrinsics":
        """The same camera at ``factor`` times the resolution."""
        return CameraIntrinsics(
            fx=self.fx * factor,
            fy=self.fy * factor,
            cx=self.cx * factor,
            cy=self.cy * factor,
            width=int(round(self.width * factor)),
            height=int(round(self.height * factor)),
            distortion_model=self.distortion_model,
            distortion=self.distortion,
        )


def pixel_rays(intrinsics: CameraIntrinsics) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel ray slopes ((u - cx)/fx, (v - cy)/fy) as H×W float32 arrays."""
    columns = (np.arange(intrinsics.width, dtype=np.float32) - np.float32(intrinsics.cx)) / np.float32(intrinsics.fx)
    rows = (np.arange(intrinsics.height, dtype=np.float32) - np.float32(intrinsics.cy)) / np.float32(intrinsics.fy)
    slope_x, slope_y = np.meshgrid(columns, rows)
    return slope_x, slope_y


def depth_to_points(
    depth_m: np.ndarray,
    intrinsics: CameraIntrinsics,
    *,
    min_range: float = 0.0,
    max_range: float = np.inf,
    color: np.ndarray | None = None,
    organized: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Back-project a metric depth image (H×W, metres, NaN or 0 = missing) to 3D points.

    Returns ``(xyz, rgb)``: unorganised N×3 float32 points (and N×3 uint8 colours from an
    aligned H×W×3 image) keeping only pixels with min_range <= z <= max_range; with
    ``organized=True`` the H×W×3 grid, invalid pixels set to NaN.
    """
    depth = np.asarray(depth_m, dtype=np.float32)
    if depth.shape != (intrinsics.height, intrinsics.width):
        raise CameraInfoError(
            "width/height",
            f"depth image is {depth.shape[1]}x{depth.shape[0]} but intrinsics are "
            f"{intrinsics.width}x{intrinsics.height}",
        )
    if color is not None and color.shape[:2] != depth.shape:
        raise CameraInfoError("width/height", f"colour image {color.shape[:2]} is not aligned with depth {depth.shape}")
    slope_x, slope_y = pixel_rays(intrinsics)
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(depth) & (depth > 0) & (depth >= min_range) & (depth <= max_range)
    if organized:
        safe_depth = np.where(valid, depth, np.float32(np.nan))
        points = np.stack((slope_x * safe_depth, slope_y * safe_depth, safe_depth), axis=-1).astype(np.float32)
        return points, (None if color is None else np.asarray(color, dtype=np.uint8)[..., :3])
    # Compress the flat arrays first: far cheaper than boolean-indexing an H×W×3 stack.
    flat_valid = valid.ravel()
    depth_valid = depth.ravel().compress(flat_valid)
    points = np.empty((depth_valid.size, 3), dtype=np.float32)
    np.multiply(slope_x.ravel().compress(flat_valid), depth_valid, out=points[:, 0])
    np.multiply(slope_y.ravel().compress(flat_valid), depth_valid, out=points[:, 1])
    points[:, 2] = depth_valid
    if color is None:
        return points, None
    rgb = np.asarray(color, dtype=np.uint8)[..., :3].reshape(-1, 3).compress(flat_valid, axis=0)
    return points, np.ascontiguousarray(rgb)


def project_points(points: np.ndarray, intrinsics: CameraIntrinsics) -> tuple[np.ndarray, np.ndarray]:
    """Project N×3 optical-frame points to pixel coordinates; returns (uv N×2, in_front N)."""
    points = np.asarray(points, dtype=np.float64)
    z = points[:, 2]
    in_front = z > 1e-9
    safe_z = np.where(in_front, z, 1.0)
    u = intrinsics.fx * points[:, 0] / safe_z + intrinsics.cx
    v = intrinsics.fy * points[:, 1] / safe_z + intrinsics.cy
    return np.stack((u, v), axis=1), in_front
