"""What an annotation is: the tasks, the ``Annotation`` record and the ``AnnotationConfig`` thresholds.

Tasks: ``caption`` (whole scene), ``dense_caption`` (one object, given its box),
``qa`` (short exact-matchable answers), ``grounding`` (referring expression → one
object's box) and ``plan`` (instruction → steps with navigation poses). The generators
live in ``descriptions`` (captions, dense captions, grounding), ``questions`` (qa) and
``plan_annotations``; ``annotations`` runs them all over a scene and re-checks answers.

Conventions (see docs/dataset_format.md for the full list):

* Spatial words follow ``relations`` (camera frame, strict and lenient forms).
* Answers use canonical category names (prompts may use synonyms such as "mug"), digits
  for counts, colour names from the catalog, "yes"/"no", and distances as metres with
  one decimal: ``"2.3 m"`` (camera-to-box-centre Euclidean distance).
* ``<box>`` in a prompt or answer stands for a box the model encodes itself: a dense
  caption prompt's box is ``target_box``; a grounding answer is
  ``"<canonical description> <box>"`` with ``target_box`` as the box to emit.
* Plans: ``{"instruction", "steps": [{"action", "target", "object", "destination"?,
  "destination_object"?, "pose"?, "target_position"?}]}``; actions navigate_to, look_at,
  pick, place; navigation poses are in the gravity frame (see
  ``plan_annotations.navigation_goal``). The plan's text form, what a model emits, is
  ``plans.plan_text``:
  ``"navigate_to(red cup) ; pick(red cup) ; navigate_to(sofa) ; place(red cup, sofa)"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from threed_llm_ros.errors import ConfigError
from threed_llm_ros.geometry.boxes import OrientedBox

TASKS: tuple[str, ...] = ("caption", "dense_caption", "qa", "grounding", "plan")
BOX_TOKEN = "<box>"
PLAN_ACTIONS: tuple[str, ...] = ("navigate_to", "look_at", "pick", "place")
QUESTION_TYPES: tuple[str, ...] = (
    "existence", "count", "color", "category", "support", "bigger", "taller", "distance", "relation", "choice",
)



@dataclass(frozen=True)
class AnnotationConfig:
    """Thresholds of the spatial vocabulary and how many annotations of each task a scene gets."""

    min_visible_points: int = 10  # fewer points: the object is too faint to ask about or refer to
    side_margin_m: float = 0.15  # left/right and in front/behind need this gap between centres
    next_to_m: float = 0.4  # footprint gap below which two objects are next to each other
    not_next_to_m: float = 0.8  # gap above which they clearly are not
    superlative_margin_m: float = 0.2  # the runner-up must trail the leftmost/closest... by this much
    anchor_range_m: float = 2.5  # left/right/front/behind only relative to anchors this close (centres)
    bigger_ratio: float = 1.5  # "bigger" needs this volume ratio
    taller_margin_m: float = 0.1
    closer_margin_m: float = 0.2
    standoff_m: float = 0.6  # navigation goal distance from the footprint
    robot_radius_m: float = 0.3  # goals keep this clearance from other furniture
    captions_per_scene: int = 2
    caption_facts: int = 3
    dense_captions_per_scene: int = 6
    grounding_per_object: int = 2
    qa_per_type: int = 2
    plans_per_scene: int = 4

    def __post_init__(self) -> None:
        if self.not_next_to_m < self.next_to_m:
            raise ConfigError("not_next_to_m", "is below next_to_m", "use not_next_to_m >= next_to_m")
        for name in ("side_margin_m", "next_to_m", "superlative_margin_m", "standoff_m", "robot_radius_m"):
            if getattr(self, name) < 0:
                raise ConfigError(name, "is negative", "use a length >= 0")


@dataclass
class Annotation:
    """One training/evaluation example of a scene."""

    task: str
    prompt: str
    answer: str
    target_object: int | None = None
    target_box: OrientedBox | None = None
    plan: dict[str, Any] | None = None
    attributes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError("task", f"unknown task {self.task!r}", f"use one of {TASKS}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the box as 7 floats)."""
        return {
            "task": self.task,
            "prompt": self.prompt,
            "answer": self.answer,
            "target_object": self.target_object,
            "target_box": None if self.target_box is None else [float(value) for value in self.target_box.to_array()],
            "plan": self.plan,
            "attributes": self.attributes,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Annotation":
        """Inverse of ``to_dict``."""
        box = values.get("target_box")
        return cls(
            task=values["task"],
            prompt=values["prompt"],
            answer=values["answer"],
            target_object=values.get("target_object"),
            target_box=None if box is None else OrientedBox.from_array(np.asarray(box)),
            plan=values.get("plan"),
            attributes=dict(values.get("attributes") or {}),
        )
