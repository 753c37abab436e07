"""How the camera is tilted and how high it is, for a node that levels its images: from TF, else from
parameters.

:class:`CameraTilt` subscribes to ``/tf`` and ``/tf_static`` (``tf2_msgs/TFMessage``) and keeps the
latest rotation per frame (:class:`~threed_llm_ros.geometry.transform_tree.TransformTree`; no tf2
needed). For an image in frame F it gives ``level_from_optical`` from the rotation of F in
``level_frame`` (a gravity-aligned frame, z up: a robot's ``base_link`` or ``base_footprint`` on
level ground), the camera's heading taken out. Where TF has no path from F to ``level_frame`` (or
``level_frame`` is empty, or tf2_msgs is not installed), it falls back to the ``camera_pitch_deg``
and ``camera_roll_deg`` parameters, and says which it used (:attr:`TiltReading.source`), so
/diagnostics can tell. The same transform's translation gives the camera's height above ``level_frame``
(which must sit on the floor: ``base_footprint``, or a ``base_link`` at floor level), which sets the
depth of floor objects (``mono3d.model``); without it, the ``camera_height_m`` parameter
(:attr:`TiltReading.height_source`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from threed_llm_ros.errors import ConfigError
from threed_llm_ros.mono3d.projection import VALID_CAMERA_HEIGHT_M, camera_height_problem
from threed_llm_ros.geometry.transform_tree import TransformTree
from threed_llm_ros.mono3d.projection import (
    DEFAULT_CAMERA_HEIGHT_M, level_from_gravity_frame, pitch_and_roll, pitch_rotation,
)
from threed_llm_ros.ros.parameters import ParameterSpec

TF_DEPTH = 100

TILT_PARAMETER_SPECS: list[ParameterSpec] = [
    ParameterSpec("level_frame", "base_link", "Gravity-aligned frame (z up) whose rotation to the image's frame, from "
                  "/tf and /tf_static, gives the camera's tilt; the image is levelled before the model. Empty: "
                  "use camera_pitch_deg / camera_roll_deg only.", fix="name a TF frame, or '' for the parameters"),
    ParameterSpec("camera_pitch_deg", 0.0, "Fallback when TF has no transform level_frame <- image frame: the "
                  "optical axis above the horizon in degrees (negative: looking down).", -89.0, 89.0),
    ParameterSpec("camera_roll_deg", 0.0, "Fallback roll about the optical axis in degrees (positive: clockwise seen "
                  "from behind the camera).", -180.0, 180.0),
    ParameterSpec("camera_height_m", DEFAULT_CAMERA_HEIGHT_M, "Fallback when TF has no transform level_frame <- "
                  "image frame: the camera's height above the floor in metres (it sets the depth of floor objects; "
                  "1.2 is the training frames' height).", *VALID_CAMERA_HEIGHT_M),
]


@dataclass(frozen=True)
class TiltReading:
    """The rotation that levels an image, where it came from, and the pitch and roll it amounts to."""

    level_from_optical: np.ndarray
    source: str  # "tf level_frame <- frame" or "parameters (why)"
    pitch_deg: float
    roll_deg: float
    camera_height_m: float  # above the floor
    height_source: str  # "tf level_frame <- frame" or "parameter camera_height_m (why)"


class CameraTilt:
    """TF subscriptions and the parameter fallback of one node (see the module docstring)."""

    def __init__(self, node: Node, values: dict[str, Any], callback_group: Any = None,
                 on_bad_transform: Any = None) -> None:
        self.level_frame = str(values["level_frame"]).strip().lstrip("/")
        self.fallback = pitch_rotation(float(values["camera_pitch_deg"]), float(values["camera_roll_deg"]))
        self.fallback_text = (f"camera_pitch_deg {float(values['camera_pitch_deg']):g}, "
                              f"camera_roll_deg {float(values['camera_roll_deg']):g}")
        self.fallback_height = float(values["camera_height_m"])
        self.tree = TransformTree()
        self.subscriptions: list[Any] = []
        self.unavailable = "" if self.level_frame else "level_frame is empty"
        self._on_bad_transform = on_bad_transform
        if self.level_frame:
            try:
                from tf2_msgs.msg import TFMessage
            except ImportError:
                self.unavailable = "tf2_msgs is not installed (`make interfaces` builds it)"
                return
            dynamic = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=TF_DEPTH,
                                 reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
            static = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=TF_DEPTH,
                                reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
            self.subscriptions = [
                node.create_subscription(TFMessage, "/tf", self._on_transforms, dynamic, callback_group=callback_group),
                node.create_subscription(TFMessage, "/tf_static", self._on_transforms, static,
                                         callback_group=callback_group),
            ]

    def _on_transforms(self, message: Any) -> None:
        for transform in message.transforms:
            rotation, offset = transform.transform.rotation, transform.transform.translation
            try:
                self.tree.set(transform.header.frame_id, transform.child_frame_id,
                              (rotation.x, rotation.y, rotation.z, rotation.w), (offset.x, offset.y, offset.z))
            except ValueError as error:
                if self._on_bad_transform is not None:
                    self._on_bad_transform(error)

    def reading(self, frame_id: str) -> TiltReading:
        """The levelling rotation and the camera height for an image in ``frame_id`` (see the module
        docstring); each falls back to its parameters on its own (a bad height does not discard a good tilt)."""
        why = self.unavailable
        found = None if why else self.tree.transform(self.level_frame, frame_id)
        if found is None:
            why = why or f"no transform {self.level_frame} <- {frame_id or '(empty frame_id)'} on /tf or /tf_static"
            return TiltReading(self.fallback, f"parameters {self.fallback_text} ({why})",
                               *pitch_and_roll(self.fallback), self.fallback_height,
                               f"parameter camera_height_m {self.fallback_height:g} ({why})")
        gravity_from_optical, origin = found
        source = f"tf {self.level_frame} <- {frame_id}"
        height, height_source = float(origin[2]), source
        problem = camera_height_problem(height, f"the camera's height above {self.level_frame} from TF")
        if problem:
            height = self.fallback_height
            height_source = f"parameter camera_height_m {height:g} ({problem})"
        try:
            rotation = level_from_gravity_frame(gravity_from_optical)
        except ConfigError as error:
            return TiltReading(self.fallback, f"parameters {self.fallback_text} ({error.problem})",
                               *pitch_and_roll(self.fallback), height, height_source)
        return TiltReading(rotation, source, *pitch_and_roll(rotation), height, height_source)
