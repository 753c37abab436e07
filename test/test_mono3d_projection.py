"""Geometry projection inverts the simulator's camera exactly; depth follows the focal length."""

from __future__ import annotations

import numpy as np
import pytest

from threed_llm_ros.data.sim.placement import generate_scene
from threed_llm_ros.data.sim.render import ray_cast
from threed_llm_ros.geometry.camera import CameraIntrinsics, project_points
from threed_llm_ros.geometry.frames import to_gravity_frame
from threed_llm_ros.geometry.iou import rotated_box_iou
from threed_llm_ros.mono3d.projection import (
    CANONICAL_FOCAL_PX,
    backproject,
    box_from_prediction,
    box_to_targets,
    decode_center,
    fit_to_canvas,
    focal_length,
)

FIELDS_OF_VIEW = (60.0, 75.0, 90.0, 120.0)


@pytest.mark.parametrize("fov", FIELDS_OF_VIEW)
def test_box_targets_decode_to_the_true_box(fov: float) -> None:
    """Encoding every simulated box as (u, v, canonical depth, size, yaw) and decoding it with the
    intrinsics gives back the box (centre to 1e-9 m, IoU 1), at every focal length."""
    scene = generate_scene(5)
    intrinsics = CameraIntrinsics.from_field_of_view(640, 360, fov)
    for box in scene.boxes_in_camera():
        targets = box_to_targets(box, intrinsics)
        # (u, v) is where the simulator's own projection puts the centre.
        uv, in_front = project_points(targets["center_optical"][None], intrinsics)
        assert in_front[0]
        np.testing.assert_allclose(targets["uv"], uv[0], atol=1e-9)
        decoded = box_from_prediction(targets["uv"], float(targets["depth_canonical"][0]), targets["size"],
                                      targets["yaw"], intrinsics)
        np.testing.assert_allclose(decoded.center, box.center, atol=1e-9)
        assert decoded.yaw == pytest.approx(box.yaw, abs=1e-9)
        assert rotated_box_iou(decoded, box) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("fov", (60.0, 120.0))
def test_backprojected_rendered_pixels_lie_on_their_objects(fov: float) -> None:
    """Back-projecting the renderer's own depth at its pixels lands on the surfaces of the objects
    the instance mask names: the renderer and the projection share one pixel convention."""
    scene = generate_scene(11)
    intrinsics = CameraIntrinsics.from_field_of_view(160, 120, fov)
    cast = ray_cast(scene, intrinsics)
    rows, columns = np.nonzero(cast.instance_mask >= 0)
    assert rows.size > 50
    depth = cast.depth_m[rows, columns].astype(np.float64)
    x, y, z = backproject(columns.astype(np.float64), rows.astype(np.float64), depth,
                          intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy)
    boxes_gravity = scene.boxes_in_camera()
    points = np.stack((x, y, z), axis=1)
    for index in np.unique(cast.instance_mask[rows, columns]):
        box = boxes_gravity[index]
        on_object = cast.instance_mask[rows, columns] == index
        gravity_points = to_gravity_frame(points[on_object], "-y")
        assert box.contains(gravity_points, margin=1e-4).all(), f"object {index}: pixels off its box"


def test_depth_scales_with_the_focal_length_alone() -> None:
    """The same canonical depth and pixel decode to a depth proportional to the focal length; the
    canonical focal length decodes to the canonical depth itself."""
    base = CameraIntrinsics(fx=300.0, fy=300.0, cx=160.0, cy=120.0, width=320, height=240)
    u, v, canonical = 200.0, 90.0, 2.5
    depths = []
    for factor in (0.5, 1.0, 1.7, 3.0):
        camera = CameraIntrinsics(fx=base.fx * factor, fy=base.fy * factor, cx=base.cx, cy=base.cy,
                                  width=base.width, height=base.height)
        depths.append(decode_center(u, v, canonical, camera)[2] / factor)
    np.testing.assert_allclose(depths, depths[0], rtol=1e-12)
    canonical_camera = CameraIntrinsics(fx=CANONICAL_FOCAL_PX, fy=CANONICAL_FOCAL_PX, cx=1, cy=1, width=2, height=2)
    assert decode_center(u, v, canonical, canonical_camera)[2] == pytest.approx(canonical)


def test_fit_to_canvas_keeps_the_geometry() -> None:
    """A 1280×720 camera fitted into 320×240 sees every 3D point at the scaled pixel of its original
    pixel (pixel centres map as (p + ½)·s − ½) and at the scaled focal length."""
    camera = CameraIntrinsics.from_field_of_view(1280, 720, 100.0)
    scale, fitted = fit_to_canvas(camera, 320, 240)
    assert scale == pytest.approx(0.25)
    assert (fitted.width, fitted.height) == (320, 180)
    assert focal_length(fitted) == pytest.approx(focal_length(camera) * 0.25)
    points = np.array([[0.3, -0.2, 2.0], [-1.0, 0.5, 4.0]])
    original, _ = project_points(points, camera)
    scaled, _ = project_points(points, fitted)
    np.testing.assert_allclose(scaled, (original + 0.5) * scale - 0.5, atol=1e-9)


def test_level_view_moves_a_point_to_where_a_level_camera_sees_it() -> None:
    """A bright dot at a 3D point seen by a camera pitched 10° down and rolled 5°: in the levelled
    image it sits (to under a pixel) where a level camera with the same intrinsics projects the point;
    the identity rotation leaves the image as it was."""
    from threed_llm_ros.mono3d.projection import level_view

    intrinsics = CameraIntrinsics(fx=300.0, fy=300.0, cx=159.5, cy=119.5, width=320, height=240)
    pitch, roll = np.radians(-10.0), np.radians(5.0)
    about_x = np.array([[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]])
    about_z = np.array([[np.cos(roll), -np.sin(roll), 0], [np.sin(roll), np.cos(roll), 0], [0, 0, 1]])
    level_from_optical = about_z @ about_x
    point_level = np.array([0.4, 0.5, 3.0])  # optical axes of the level camera (y down)
    point_real = level_from_optical.T @ point_level
    u, v = project_points(point_real[None], intrinsics)[0][0]
    image = np.zeros((240, 320, 3), dtype=np.uint8)
    rows, columns = np.mgrid[0:240, 0:320]
    image[(rows - v) ** 2 + (columns - u) ** 2 <= 9.0] = 255
    levelled = level_view(image, intrinsics, level_from_optical)[..., 0].astype(np.float64)
    found_v, found_u = (float((levelled * grid).sum() / levelled.sum()) for grid in (rows, columns))
    expected_u, expected_v = project_points(point_level[None], intrinsics)[0][0]
    assert abs(found_u - expected_u) < 0.75 and abs(found_v - expected_v) < 0.75, (found_u, found_v)
    unchanged = level_view(image, intrinsics, np.eye(3)).astype(int) - image
    assert np.abs(unchanged).max() <= 1  # bilinear sampling rounds by at most one level
