"""What the robot's node gets from a frame, built for the evaluations: the engine is given the same input.

An RGB-D camera gives the node its whole depth frame as a cloud, with the colour image and the
intrinsics; ``threed-llm eval`` (its robot column) and ``threed-llm eval-objects`` give the engine
exactly that, so what they measure is what the robot runs.
"""

from __future__ import annotations

import numpy as np

from threed_llm_ros.data.dataset import SceneRecord
from threed_llm_ros.data.sim.frames import RenderedFrame
from threed_llm_ros.geometry.camera import depth_to_points
from threed_llm_ros.geometry.frames import rotation_to_gravity, to_gravity_frame
from threed_llm_ros.runtime.replies import SceneCloud

SIMULATED_FRAME_ID = "camera_color_optical_frame"


def robot_cloud(record: SceneRecord) -> SceneCloud:
    """The frame as the robot's node gets it, in the record's gravity frame (where the annotations are).

    A record with its depth image, RGB image and intrinsics gives the camera's whole cloud and
    the image under it, as an RGB-D camera gives the node; a record without them gives its stored
    (subsampled) points alone."""
    depth, rgb = record.images.get("depth"), record.images.get("rgb")
    if depth is None or rgb is None or record.intrinsics is None:
        return SceneCloud(record.points_gravity(), record.colors, record.frame_id)
    optical, colors = depth_to_points(depth, record.intrinsics, color=rgb)
    gravity_from_optical = rotation_to_gravity(record.up_axis)
    camera_from_gravity = np.eye(4)
    camera_from_gravity[:3, :3] = gravity_from_optical.T
    return SceneCloud(to_gravity_frame(optical, record.up_axis), colors, record.frame_id, image=rgb,
                      intrinsics=record.intrinsics, camera_from_input=camera_from_gravity)


def frame_cloud(frame: RenderedFrame, with_image: bool = True) -> SceneCloud:
    """A simulated frame as the node gets it: the camera's cloud in its optical frame, with the colour
    image and intrinsics (``with_image``) or without them (a depth camera alone)."""
    return SceneCloud(frame.points, frame.colors, SIMULATED_FRAME_ID, image=frame.rgb if with_image else None,
                      intrinsics=frame.intrinsics if with_image else None)
