"""Message builders for grounding and plan outputs: MarkerArray, PoseStamped, nav_msgs/Path."""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
from geometry_msgs.msg import Pose, PoseStamped
from nav_msgs.msg import Path
from std_msgs.msg import Header
from visualization_msgs.msg import Marker, MarkerArray

from threed_llm_ros.geometry.boxes import OrientedBox
from threed_llm_ros.geometry.frames import matrix_from_quaternion, rotation_to_gravity, to_gravity_frame
from threed_llm_ros.ros.conversions import tuple_to_stamp

from threed_llm_ros.runtime.replies import GroundedObject  # torch-free: clients need no engine

BOX_COLOR = (0.1, 0.8, 0.2, 0.45)
LABEL_HEIGHT_M = 0.1


def _header(frame_id: str, stamp: tuple[int, int]) -> Header:
    return Header(frame_id=frame_id, stamp=tuple_to_stamp(stamp))


def make_pose(position: Sequence[float], orientation: Sequence[float]) -> Pose:
    """A Pose from (x, y, z) and a quaternion (x, y, z, w)."""
    pose = Pose()
    pose.position.x, pose.position.y, pose.position.z = (float(value) for value in position)
    pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = (float(v) for v in orientation)
    return pose


def pose_stamped(position: Sequence[float], orientation: Sequence[float], frame_id: str, stamp: tuple[int, int]) -> PoseStamped:
    """A PoseStamped in ``frame_id`` at ``stamp``."""
    return PoseStamped(header=_header(frame_id, stamp), pose=make_pose(position, orientation))


def path_message(poses: Iterable[tuple[Sequence[float], Sequence[float]]], frame_id: str, stamp: tuple[int, int]) -> Path:
    """A nav_msgs/Path through the (position, orientation) goals, in order."""
    return Path(header=_header(frame_id, stamp),
                poses=[pose_stamped(position, orientation, frame_id, stamp) for position, orientation in poses])


def grounding_markers(objects: Sequence[GroundedObject], frame_id: str, stamp: tuple[int, int],
                      namespace: str = "grounding") -> MarkerArray:
    """DELETEALL, then per object a CUBE (its box) and a TEXT_VIEW_FACING 'label, confidence 0.88' above it
    (no object: DELETEALL alone, so a display shows nothing that is not seen)."""
    clear = Marker(action=Marker.DELETEALL)
    clear.header = _header(frame_id, stamp)
    markers = [clear]
    for index, grounded in enumerate(objects):
        cube = Marker(ns=namespace, id=index, type=Marker.CUBE, action=Marker.ADD)
        cube.header = _header(frame_id, stamp)
        cube.pose = make_pose(grounded.position, grounded.orientation)
        cube.scale.x, cube.scale.y, cube.scale.z = (float(value) for value in grounded.box.size)
        cube.color.r, cube.color.g, cube.color.b, cube.color.a = BOX_COLOR
        label = Marker(ns=f"{namespace}_labels", id=index, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD)
        label.header = _header(frame_id, stamp)
        lift = grounded.box.size[2] / 2.0 + LABEL_HEIGHT_M  # above the box, along the frame's estimated up
        top = np.asarray(grounded.position) + lift * np.asarray(grounded.up)
        label.pose = make_pose(top, (0.0, 0.0, 0.0, 1.0))
        label.scale.z = LABEL_HEIGHT_M
        label.color.r = label.color.g = label.color.b = label.color.a = 1.0
        label.text = f"{grounded.label}, confidence {grounded.score:.2f}"  # the object layer's, in its category
        markers += [cube, label]
    return MarkerArray(markers=markers)


def marker_box(marker: Marker, up_axis: str) -> OrientedBox:
    """The gravity-frame box a CUBE marker draws (pose in the input frame named by ``up_axis``):
    the inverse of what :func:`grounding_markers` publishes, for clients and tests."""
    position = marker.pose.position
    centre = to_gravity_frame(np.array([[position.x, position.y, position.z]]), up_axis)[0]
    q = marker.pose.orientation
    in_gravity = rotation_to_gravity(up_axis) @ matrix_from_quaternion((q.x, q.y, q.z, q.w))
    yaw = math.atan2(in_gravity[1, 0], in_gravity[0, 0])
    return OrientedBox(tuple(float(v) for v in centre), (marker.scale.x, marker.scale.y, marker.scale.z), yaw)

