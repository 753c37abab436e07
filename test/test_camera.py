"""Tests of threed_llm_ros.geometry.camera: intrinsics, depth back-projection, projection.

Geometry is checked against scenes with known answers (planes, a box corner) and against
a real Kinect frame whose organised cloud PCL computed from the same depth image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from threed_llm_ros.errors import CameraInfoError
from threed_llm_ros.geometry.camera import CameraIntrinsics, depth_to_points, pixel_rays, project_points

FAST = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

CAMERA = CameraIntrinsics(fx=400.0, fy=400.0, cx=160.0, cy=120.0, width=320, height=240)


def pixel_grid(intrinsics: CameraIntrinsics) -> tuple[np.ndarray, np.ndarray]:
    """Column (u) and row (v) index of every pixel, float64, computed here independently."""
    v, u = np.mgrid[0 : intrinsics.height, 0 : intrinsics.width]
    return u.astype(np.float64), v.astype(np.float64)


# --------------------------------------------------------------------------- intrinsics


@pytest.mark.parametrize(
    "changes",
    [
        {"fx": float("nan")},
        {"fy": float("inf")},
        {"cx": float("nan")},
        {"cy": float("-inf")},
        {"fx": 0.0},
        {"fy": -5.0},
        {"width": 0},
        {"height": -1},
    ],
    ids=["fx-nan", "fy-inf", "cx-nan", "cy-inf", "fx-zero", "fy-negative", "width-zero", "height-negative"],
)
def test_invalid_intrinsics_raise_camera_info_error(changes):
    values = dict(fx=500.0, fy=500.0, cx=320.0, cy=240.0, width=640, height=480)
    values.update(changes)
    with pytest.raises(CameraInfoError) as raised:
        CameraIntrinsics(**values)
    name = next(iter(changes))
    assert ("K" in raised.value.field) if name in ("fx", "fy", "cx", "cy") else (raised.value.field == "width/height")


def test_matrix_field_of_view_and_scaling():
    np.testing.assert_array_equal(CAMERA.matrix, [[400, 0, 160], [0, 400, 120], [0, 0, 1]])
    square = CameraIntrinsics.from_field_of_view(640, 480, 90.0)
    assert square.fx == pytest.approx(320.0) and square.fy == pytest.approx(320.0)
    assert (square.cx, square.cy, square.width, square.height) == (320.0, 240.0, 640, 480)
    half = CAMERA.scaled(0.5)
    assert (half.fx, half.fy, half.cx, half.cy, half.width, half.height) == (200.0, 200.0, 80.0, 60.0, 160, 120)


def test_pixel_rays_are_zero_at_the_principal_point_and_linear():
    slope_x, slope_y = pixel_rays(CAMERA)
    assert slope_x.shape == slope_y.shape == (240, 320) and slope_x.dtype == np.float32
    assert slope_x[120, 160] == 0 and slope_y[120, 160] == 0
    u, v = pixel_grid(CAMERA)
    np.testing.assert_allclose(slope_x, (u - 160) / 400, atol=1e-7)
    np.testing.assert_allclose(slope_y, (v - 120) / 400, atol=1e-7)


# --------------------------------------------------------------------------- back-projection


def test_fronto_parallel_plane_has_constant_depth():
    depth = np.full((240, 320), 2.5, np.float32)
    xyz, rgb = depth_to_points(depth, CAMERA)
    assert xyz.shape == (240 * 320, 3) and xyz.dtype == np.float32 and rgb is None
    np.testing.assert_array_equal(xyz[:, 2], 2.5)
    u, v = pixel_grid(CAMERA)
    np.testing.assert_allclose(xyz[:, 0], ((u - 160) / 400 * 2.5).reshape(-1), atol=1e-6)
    np.testing.assert_allclose(xyz[:, 1], ((v - 120) / 400 * 2.5).reshape(-1), atol=1e-6)


def test_tilted_plane_stays_planar_with_the_right_normal():
    normal = np.array([0.2, -0.5, 1.0])
    normal /= np.linalg.norm(normal)
    distance = 1.8  # plane: normal · p = distance
    u, v = pixel_grid(CAMERA)
    rays = np.stack([(u - CAMERA.cx) / CAMERA.fx, (v - CAMERA.cy) / CAMERA.fy, np.ones_like(u)], axis=-1)
    depth = (distance / (rays @ normal)).astype(np.float32)
    assert (depth > 0).all()
    xyz, _ = depth_to_points(depth, CAMERA)
    np.testing.assert_allclose(xyz.astype(np.float64) @ normal, distance, atol=2e-6 * depth.max())
    centred = xyz - xyz.mean(axis=0)
    fitted_normal = np.linalg.svd(centred.astype(np.float64), full_matrices=False)[2][-1]
    assert abs(abs(fitted_normal @ normal) - 1) < 1e-9


def test_box_corner_projects_and_back_projects_to_itself():
    # Front face of a box at z = 2 m, x in [-0.3, 0.25], y in [-0.2, 0.1]; a wall at 4 m.
    x_min, x_max, y_min, y_max, face_z = -0.3, 0.25, -0.2, 0.1, 2.0
    corner = np.array([[x_min, y_min, face_z]])
    uv, in_front = project_points(corner, CAMERA)
    assert in_front.all()
    np.testing.assert_allclose(uv, [[100.0, 80.0]], atol=1e-9)
    slope_x, slope_y = pixel_rays(CAMERA)
    on_face = (
        (slope_x * face_z >= x_min - 1e-6)
        & (slope_x * face_z <= x_max + 1e-6)
        & (slope_y * face_z >= y_min - 1e-6)
        & (slope_y * face_z <= y_max + 1e-6)
    )
    depth = np.where(on_face, np.float32(face_z), np.float32(4.0))
    grid, _ = depth_to_points(depth, CAMERA, organized=True)
    column, row = np.rint(uv[0]).astype(int)
    np.testing.assert_allclose(grid[row, column], corner[0], atol=1e-6)
    face_points = grid[on_face]
    assert face_points[:, 0].min() == pytest.approx(x_min, abs=1e-6)
    assert face_points[:, 1].min() == pytest.approx(y_min, abs=1e-6)
    assert face_points[:, 0].max() <= x_max + 1e-6 and face_points[:, 1].max() <= y_max + 1e-6
    assert not on_face[row - 1, column] and not on_face[row, column - 1]  # the corner is the face's corner


def test_range_limits_are_inclusive_and_missing_values_dropped():
    intrinsics = CameraIntrinsics(10.0, 10.0, 4.0, 0.0, 8, 1)
    depth = np.array([[0.5, 1.0, 1.5, 2.0, 3.0, np.inf, np.nan, 0.0]], np.float32)
    xyz, _ = depth_to_points(depth, intrinsics, min_range=1.0, max_range=2.0)
    np.testing.assert_array_equal(xyz[:, 2], [1.0, 1.5, 2.0])
    unlimited, _ = depth_to_points(depth, intrinsics)
    np.testing.assert_array_equal(unlimited[:, 2], [0.5, 1.0, 1.5, 2.0, 3.0])
    negative = np.array([[-1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]], np.float32)
    assert len(depth_to_points(negative, intrinsics)[0]) == 7


def test_organised_mode_keeps_the_grid_with_nan_for_invalid_pixels():
    rng = np.random.default_rng(4)
    depth = rng.uniform(0.5, 6.0, (240, 320)).astype(np.float32)
    depth[rng.random(depth.shape) < 0.2] = np.nan
    depth[rng.random(depth.shape) < 0.05] = 0.0
    grid, _ = depth_to_points(depth, CAMERA, organized=True, max_range=5.0)
    assert grid.shape == (240, 320, 3) and grid.dtype == np.float32
    valid = np.isfinite(depth) & (depth > 0) & (depth <= 5.0)
    assert np.isnan(grid[~valid]).all() and np.isfinite(grid[valid]).all()
    flat, _ = depth_to_points(depth, CAMERA, max_range=5.0)
    np.testing.assert_array_equal(flat, grid[valid])  # same points, row-major order


def test_colour_stays_aligned_with_its_pixel():
    v, u = np.mgrid[0:240, 0:320]
    colour = np.stack([u % 256, v, u // 256], axis=-1).astype(np.uint8)
    rng = np.random.default_rng(5)
    depth = rng.uniform(0.3, 8.0, (240, 320)).astype(np.float32)
    depth[rng.random(depth.shape) < 0.3] = np.nan
    xyz, rgb = depth_to_points(depth, CAMERA, color=colour)
    assert rgb.shape == xyz.shape and rgb.dtype == np.uint8
    uv, _ = project_points(xyz, CAMERA)
    column = rgb[:, 0].astype(int) + 256 * rgb[:, 2].astype(int)
    np.testing.assert_allclose(uv[:, 0], column, atol=1e-3)
    np.testing.assert_allclose(uv[:, 1], rgb[:, 1], atol=1e-3)
    grid, grid_rgb = depth_to_points(depth, CAMERA, color=colour, organized=True)
    np.testing.assert_array_equal(grid_rgb, colour)


def test_misaligned_inputs_raise_camera_info_error():
    with pytest.raises(CameraInfoError):
        depth_to_points(np.ones((240, 321), np.float32), CAMERA)
    with pytest.raises(CameraInfoError):
        depth_to_points(np.ones((240, 320), np.float32), CAMERA, color=np.zeros((120, 160, 3), np.uint8))


def test_project_points_flags_points_behind_the_camera():
    points = np.array([[0.0, 0.0, 3.0], [1.0, -1.0, 2.0], [0.5, 0.5, -1.0], [0.0, 0.0, 0.0]])
    uv, in_front = project_points(points, CAMERA)
    np.testing.assert_array_equal(in_front, [True, True, False, False])
    np.testing.assert_allclose(uv[:2], [[160.0, 120.0], [360.0, -80.0]])


@FAST
@given(
    fx=st.floats(50, 1500),
    aspect=st.floats(0.8, 1.25),
    cx_fraction=st.floats(0.3, 0.7),
    cy_fraction=st.floats(0.3, 0.7),
    width=st.integers(2, 40),
    height=st.integers(2, 30),
    seed=st.integers(0, 2**31),
)
def test_back_projection_then_projection_returns_each_pixel(fx, aspect, cx_fraction, cy_fraction, width, height, seed):
    intrinsics = CameraIntrinsics(fx, fx * aspect, cx_fraction * width, cy_fraction * height, width, height)
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.2, 30.0, (height, width)).astype(np.float32)
    depth[rng.random(depth.shape) < 0.25] = np.nan
    grid, _ = depth_to_points(depth, intrinsics, organized=True)
    valid = np.isfinite(depth)
    uv, in_front = project_points(grid[valid], intrinsics)
    u, v = pixel_grid(intrinsics)
    assert in_front.all()
    np.testing.assert_allclose(uv[:, 0], u[valid], atol=2e-3)
    np.testing.assert_allclose(uv[:, 1], v[valid], atol=2e-3)
    np.testing.assert_array_equal(grid[valid][:, 2], depth[valid])


# --------------------------------------------------------------------------- real Kinect frame


@pytest.mark.parametrize(
    "frame", ["frame_20121214T142255.814212", "frame_20121214T142256.332395"]
)
def test_real_kinect_depth_back_projects_to_the_pcl_cloud(realdata: Path, frame):
    open3d = pytest.importorskip("open3d")
    from PIL import Image as PillowImage

    folder = realdata / "pcl" / "grabber_sequences"
    depth_mm = np.array(PillowImage.open(folder / "tiff" / f"{frame}_depth.tiff"))
    rgb = np.array(PillowImage.open(folder / "tiff" / f"{frame}_rgb.tiff").convert("RGB"))
    assert depth_mm.dtype == np.uint16 and depth_mm.shape == (480, 640)
    cloud = open3d.io.read_point_cloud(
        str(folder / "pcd" / f"{frame}.pcd"), remove_nan_points=False, remove_infinite_points=False
    )
    pcd_xyz = np.asarray(cloud.points).reshape(480, 640, 3)
    pcd_rgb = np.rint(np.asarray(cloud.colors) * 255).astype(np.uint8).reshape(480, 640, 3)
    intrinsics = CameraIntrinsics(fx=525.0, fy=525.0, cx=320.0, cy=240.0, width=640, height=480)
    depth_m = depth_mm.astype(np.float32) / np.float32(1000.0)

    grid, grid_rgb = depth_to_points(depth_m, intrinsics, color=rgb, organized=True)
    missing = np.isnan(pcd_xyz).any(axis=-1)
    np.testing.assert_array_equal(missing, depth_mm == 0)  # PCL kept the grid order
    np.testing.assert_array_equal(np.isnan(grid).any(axis=-1), missing)
    np.testing.assert_allclose(grid[~missing], pcd_xyz[~missing], atol=1e-5, rtol=0)
    np.testing.assert_array_equal(grid_rgb, pcd_rgb)

    points, colours = depth_to_points(depth_m, intrinsics, color=rgb)
    assert len(points) == (~missing).sum()
    np.testing.assert_array_equal(colours, pcd_rgb[~missing])
