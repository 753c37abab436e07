"""Oriented boxes, frame conventions and rotated 3D IoU."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from threed_llm_ros.geometry.boxes import OrientedBox, wrap_angle
from threed_llm_ros.geometry.frames import (
    from_gravity_frame,
    matrix_from_quaternion,
    quaternion_from_matrix,
    rotation_to_gravity,
    to_gravity_frame,
    yaw_rotation,
)
from threed_llm_ros.geometry.iou import rotated_box_iou


def test_optical_frame_axes_map_to_gravity_frame() -> None:
    # Optical z (forward) is gravity x; optical x (right) is gravity -y; optical y (down) is gravity -z.
    optical = np.array([[0.0, 0.0, 2.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    gravity = to_gravity_frame(optical, "-y")
    np.testing.assert_allclose(gravity, [[2, 0, 0], [0, -1, 0], [0, 0, -1]], atol=1e-12)
    np.testing.assert_allclose(from_gravity_frame(gravity, "-y"), optical, atol=1e-12)
    assert np.isclose(np.linalg.det(rotation_to_gravity("-y")), 1.0)


def test_unknown_up_axis_is_rejected() -> None:
    with pytest.raises(ValueError, match="up_axis"):
        rotation_to_gravity("x")


@given(st.floats(-np.pi, np.pi), st.floats(-np.pi, np.pi), st.floats(-np.pi, np.pi))
@settings(max_examples=60, deadline=None)
def test_quaternion_round_trip(roll: float, pitch: float, yaw: float) -> None:
    cr, sr, cp, sp = np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch)
    rotation = yaw_rotation(yaw) @ np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]]) @ np.array(
        [[1, 0, 0], [0, cr, -sr], [0, sr, cr]]
    )
    quaternion = quaternion_from_matrix(rotation)
    assert np.isclose(np.linalg.norm(quaternion), 1.0)
    np.testing.assert_allclose(matrix_from_quaternion(quaternion), rotation, atol=1e-9)


def test_corners_and_contains() -> None:
    box = OrientedBox(center=(1.0, 2.0, 0.5), size=(2.0, 1.0, 1.0), yaw=np.pi / 2)
    corners = box.corners()
    # Rotated by 90 degrees, the 2 m length lies along y.
    np.testing.assert_allclose(corners[:, 1].max() - corners[:, 1].min(), 2.0)
    np.testing.assert_allclose(corners[:, 0].max() - corners[:, 0].min(), 1.0)
    np.testing.assert_allclose(corners.mean(axis=0), box.center)
    inside = np.array([[1.0, 2.9, 0.5], [1.4, 2.0, 0.9]])
    outside = np.array([[1.6, 2.0, 0.5], [1.0, 3.1, 0.5], [1.0, 2.0, 1.1]])
    assert box.contains(inside).all()
    assert not box.contains(outside).any()
    assert box.contains(outside[:1], margin=0.2).all()


def test_array_round_trip_and_wrap() -> None:
    box = OrientedBox(center=(0.1, -0.2, 0.3), size=(0.4, 0.5, 0.6), yaw=0.7)
    assert OrientedBox.from_array(box.to_array()) == box
    assert np.isclose(wrap_angle(3 * np.pi / 2), -np.pi / 2)


def test_pose_in_optical_frame_places_box_where_points_are() -> None:
    box = OrientedBox(center=(3.0, 0.5, -0.4), size=(1.0, 0.4, 0.3), yaw=0.3)
    position, quaternion = box.pose_in_frame("-y")
    rotation = matrix_from_quaternion(quaternion)
    # The box's corners expressed in the optical frame via the pose equal the corners converted point-wise.
    half = np.asarray(box.size) / 2
    local = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * half
    via_pose = local @ rotation.T + position
    via_points = from_gravity_frame(box.corners(), "-y")
    assert np.allclose(np.sort(via_pose, axis=0), np.sort(via_points, axis=0), atol=1e-9)


# Rotated 3D IoU against known cases.
def test_iou_identical_boxes_is_one() -> None:
    box = OrientedBox(center=(1, 2, 3), size=(1.0, 2.0, 0.5), yaw=0.4)
    assert rotated_box_iou(box, box) == pytest.approx(1.0)


def test_iou_disjoint_boxes_is_zero() -> None:
    first = OrientedBox(center=(0, 0, 0), size=(1, 1, 1))
    assert rotated_box_iou(first, OrientedBox(center=(3, 0, 0), size=(1, 1, 1))) == 0.0
    # Overlapping footprint but stacked vertically without overlap.
    assert rotated_box_iou(first, OrientedBox(center=(0, 0, 1.0), size=(1, 1, 1))) == 0.0


def test_iou_half_shifted_box_is_one_third() -> None:
    first = OrientedBox(center=(0, 0, 0), size=(1, 1, 1))
    for yaw in (0.0, 0.6):
        shift = yaw_rotation(yaw) @ np.array([0.5, 0.0, 0.0])
        rotated = OrientedBox(center=(0, 0, 0), size=(1, 1, 1), yaw=yaw)
        shifted = OrientedBox(center=tuple(shift), size=(1, 1, 1), yaw=yaw)
        assert rotated_box_iou(rotated, shifted) == pytest.approx(1 / 3)
    assert rotated_box_iou(first, OrientedBox(center=(0, 0, 0.5), size=(1, 1, 1))) == pytest.approx(1 / 3)


def test_iou_square_rotated_by_90_degrees_equals_itself() -> None:
    square = OrientedBox(center=(0.3, -0.2, 1.0), size=(1.5, 1.5, 0.7), yaw=0.0)
    turned = OrientedBox(center=(0.3, -0.2, 1.0), size=(1.5, 1.5, 0.7), yaw=np.pi / 2)
    assert rotated_box_iou(square, turned) == pytest.approx(1.0)


def test_iou_square_rotated_by_45_degrees_matches_octagon_area() -> None:
    square = OrientedBox(center=(0, 0, 0), size=(1, 1, 1))
    diamond = OrientedBox(center=(0, 0, 0), size=(1, 1, 1), yaw=np.pi / 4)
    # The overlap is a regular octagon with inradius 0.5: area 8 * 0.5^2 * tan(pi/8) = 2 (sqrt 2 - 1).
    octagon = 2 * (np.sqrt(2) - 1)
    assert rotated_box_iou(square, diamond) == pytest.approx(octagon / (2 - octagon))


@given(
    st.tuples(st.floats(-2, 2), st.floats(-2, 2), st.floats(-1, 1)),
    st.tuples(st.floats(0.1, 2), st.floats(0.1, 2), st.floats(0.1, 2)),
    st.floats(-np.pi, np.pi),
    st.tuples(st.floats(-2, 2), st.floats(-2, 2), st.floats(-1, 1)),
    st.tuples(st.floats(0.1, 2), st.floats(0.1, 2), st.floats(0.1, 2)),
    st.floats(-np.pi, np.pi),
)
@settings(max_examples=80, deadline=None)
def test_iou_is_symmetric_and_bounded(center_a, size_a, yaw_a, center_b, size_b, yaw_b) -> None:
    first = OrientedBox(center_a, size_a, yaw_a)
    second = OrientedBox(center_b, size_b, yaw_b)
    forward, backward = rotated_box_iou(first, second), rotated_box_iou(second, first)
    assert 0.0 <= forward <= 1.0 + 1e-9
    assert forward == pytest.approx(backward, abs=1e-9)


def test_iou_matches_monte_carlo_estimate() -> None:
    rng = np.random.default_rng(3)
    first = OrientedBox(center=(0.0, 0.0, 0.0), size=(1.2, 0.8, 1.0), yaw=0.3)
    second = OrientedBox(center=(0.4, 0.2, 0.2), size=(1.0, 1.0, 0.9), yaw=-0.5)
    samples = rng.uniform(-1.5, 1.5, size=(400_000, 3))
    in_first, in_second = first.contains(samples), second.contains(samples)
    estimate = (in_first & in_second).sum() / (in_first | in_second).sum()
    assert rotated_box_iou(first, second) == pytest.approx(estimate, abs=0.01)
