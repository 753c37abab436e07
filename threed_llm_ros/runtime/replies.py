"""What the inference engine takes and gives: a sensor frame (:class:`SceneCloud`), the reply types,
and the goal pose in front of a grounded object that a plan's ``navigate_to`` step gets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from threed_llm_ros.data.annotation_types import AnnotationConfig
from threed_llm_ros.data.plan_annotations import goal_near_box
from threed_llm_ros.geometry.boxes import OrientedBox
from threed_llm_ros.plans import Plan
from threed_llm_ros.objects.describe import category_in_phrase

STANDOFF_M = AnnotationConfig.standoff_m  # goal distance outside the target's footprint (the plan annotations')
ROBOT_RADIUS_M = AnnotationConfig.robot_radius_m  # goals keep this clearance from other floor-standing furniture


@dataclass(frozen=True)
class SceneCloud:
    """One sensor frame as the engine takes it: points in the sensor frame and their header."""

    xyz: np.ndarray  # (N, 3) float, metres, sensor frame
    rgb: np.ndarray | None  # (N, 3) uint8 or None
    frame_id: str = ""
    stamp: tuple[int, int] = (0, 0)
    image: np.ndarray | None = None  # H×W×3 uint8 image of a camera seeing the scene (object layer evidence)
    intrinsics: Any = None  # that camera's CameraIntrinsics
    camera_from_input: np.ndarray | None = None  # 4×4 from this frame to the camera's optical frame (None: it is that frame)


@dataclass
class TextReply:
    """A text answer and its stage timings."""

    text: str
    timings: dict[str, float]
    cut_short: bool = False  # the deadline stopped the language model (the text says so)
    program: str | None = None  # the program the language model wrote and the reply ran; None: free text


@dataclass(frozen=True)
class GroundedObject:
    """A grounded box: label, point-support score, box (gravity frame) and its pose in the input frame."""

    label: str
    score: float
    box: OrientedBox
    position: tuple[float, float, float]
    orientation: tuple[float, float, float, float]  # x, y, z, w
    source: str  # "objects": an object of the frame's object layer
    up: tuple[float, float, float] = (0.0, 0.0, 1.0)  # the gravity frame's up in the input frame (label placement)
    category: str = ""  # the object layer's category ("" where unknown)
    color: str = ""  # its colour name from its own points
    point_count: int = 0  # points of the frame that support it


@dataclass
class GroundingReply:
    """Grounded objects, best first, with the model's text and timings."""

    objects: list[GroundedObject]
    text: str
    timings: dict[str, float]
    program: str | None = None  # the locate program that chose the object; None: by the words' category

    @property
    def target(self) -> GroundedObject | None:
        return self.objects[0] if self.objects else None


@dataclass
class PlanReply:
    """The plan (``plans.Plan``), the grounded navigation targets, text and timings."""

    plan: Plan
    targets: list[GroundedObject]
    text: str
    timings: dict[str, float]
    cut_short: bool = False  # the deadline stopped the language model's plan text
    program: str | None = None  # the plan program the steps came from; None: model text or rules


def navigation_goal_for_box(box: OrientedBox, floor_z: float, standoff_m: float = STANDOFF_M,
                            support: OrientedBox | None = None, obstacles: Sequence[OrientedBox] = (),
                            robot_radius_m: float = ROBOT_RADIUS_M) -> tuple[np.ndarray, float]:
    """Goal (gravity-frame position on the floor, yaw) to reach ``box``, by the plan annotations' own
    rule (``data.plan_annotations.goal_near_box``): ``standoff_m`` past its footprint and that of its
    ``support``, on the ray toward the sensor, turned by ±30° / ±60° away from ``obstacles``."""
    position, yaw = goal_near_box(box, support if support is not None else box, obstacles, standoff_m, robot_radius_m)
    return np.array([position[0], position[1], floor_z]), yaw


def not_seen_text(prompt: str, target: str = "", seen_instead: Sequence[str] = (),
                  unsure: tuple[float, float] | None = None) -> str:
    """The honest reply about an object that is not among the confident objects; ``seen_instead``:
    labels of confident objects of its category that the words rule out (another colour);
    ``unsure``: (distance m, score) of an object that might be it, too unsure to mark or drive to."""
    name = target or category_in_phrase(prompt) or "that"
    text = f"I don't see {_with_article(name)} here (not seen)."
    if seen_instead:
        text = text[:-1] + "; I see " + " and ".join(_with_article(label) for label in seen_instead) + "."
    elif unsure is not None:
        text = text[:-1] + f"; something about {unsure[0]:.1f} m away might be one ({unsure[1]:.2f}), too unsure to mark."
    return text


def _with_article(name: str) -> str:
    if name.split(" ", 1)[0] in ("that", "anything", "what"):  # "anything on the red table", "what the cup rests on"
        return name
    return ("an " if name[0] in "aeiou" else "a ") + name
