"""A plan: its text form, its parse, its published JSON and its check, in one place.

Text form (what the language model writes and the annotations hold)::

    navigate_to(red cup) ; pick(red cup) ; navigate_to(table) ; place(red cup, table)

A step is a dict: ``action``, ``target``, ``destination`` (``place`` only) and, once the
engine has grounded it, ``pose`` (goal position and quaternion in the input frame),
``target_position``, or ``"seen": false`` where the target is not among the objects seen (a
robot must not drive there). :class:`Plan` is what the node publishes on ``plan`` as JSON
(``to_json``) and what a client reads back (``from_json`` checks it).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

from threed_llm_ros.errors import MessageFormatError

NAVIGATION_ACTIONS = ("navigate_to",)
SOURCES = ("program", "model", "rules")  # programs over the objects, the model's own text, the rule fallback
_STEP = re.compile(r"^\s*(?:\d+\s*[.)]\s*)?([A-Za-z_]+)\s*\((.*)\)\s*\.?\s*$")


def plan_text(steps: Sequence[dict[str, Any]]) -> str:
    """The plan's text form: ``action(target)`` or ``place(target, destination)`` joined by " ; "."""
    parts = []
    for step in steps:
        arguments = [step["target"]] + ([step["destination"]] if step.get("destination") else [])
        parts.append(f"{step['action']}({', '.join(arguments)})")
    return " ; ".join(parts)


def parse_plan_text(text: str) -> list[dict[str, str]]:
    """Steps ``{"action", "target", "destination"?}`` from plan text; parts that are not ``action(args)`` are skipped.

    Steps are separated by ";" or new lines; a leading "1." or "2)" is allowed.
    """
    steps = []
    for part in re.split(r"[;\n]", text):
        match = _STEP.match(part)
        if match is None:
            continue
        arguments = [argument.strip() for argument in match.group(2).split(",")]
        if not arguments or not arguments[0]:
            continue
        step = {"action": match.group(1).lower(), "target": arguments[0]}
        if len(arguments) > 1 and arguments[1]:
            step["destination"] = arguments[1]
        steps.append(step)
    return steps


@dataclass
class Plan:
    """Steps for an instruction, with the frame and stamp of the sensor frame they were planned on."""

    instruction: str
    steps: list[dict[str, Any]] = field(default_factory=list)
    frame_id: str = ""
    stamp: tuple[int, int] = (0, 0)
    source: str = "rules"  # one of SOURCES
    text: str = ""

    def goals(self) -> list[tuple[list[float], list[float]]]:
        """(position, orientation) of every step that has a goal pose, in order."""
        return [(step["pose"]["position"], step["pose"]["orientation"]) for step in self.steps if "pose" in step]

    def summary(self) -> str:
        """The steps' text form and where they came from, e.g. ``navigate_to(chair) [program]``."""
        return f"{plan_text(self.steps) or 'no plan'} [{self.source}]"

    def to_dict(self) -> dict[str, Any]:
        """The published JSON form."""
        return {
            "instruction": self.instruction,
            "steps": self.steps,
            "stamp": {"sec": int(self.stamp[0]), "nanosec": int(self.stamp[1])},
            "frame_id": self.frame_id,
            "source": self.source,
            "text": self.text,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Any) -> "Plan":
        """A plan from its published form; MessageFormatError naming every problem."""
        problems = plan_problems(data)
        if problems:
            raise MessageFormatError("plan", "; ".join(problems))
        stamp = data["stamp"]
        return cls(data["instruction"], list(data["steps"]), data["frame_id"],
                   (int(stamp.get("sec", 0)), int(stamp.get("nanosec", 0))), str(data.get("source", "")), str(data.get("text", "")))

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise MessageFormatError("plan", f"is not JSON ({error.msg} at character {error.pos})") from None
        return cls.from_dict(data)


def plan_problems(plan: Any) -> list[str]:
    """Problems of a plan's published form against its schema (empty list = valid)."""
    if not isinstance(plan, dict):
        return [f"expected an object, got {type(plan).__name__}"]
    problems = []
    for key, kind in (("instruction", str), ("steps", list), ("stamp", dict), ("frame_id", str)):
        if not isinstance(plan.get(key), kind):
            problems.append(f"{key}: missing or not a {kind.__name__}")
    for index, step in enumerate(plan.get("steps") if isinstance(plan.get("steps"), list) else []):
        if not isinstance(step, dict) or not isinstance(step.get("action"), str) or not isinstance(step.get("target"), str):
            problems.append(f"steps[{index}]: needs string action and target")
            continue
        pose = step.get("pose")
        if pose is not None:
            position, orientation = pose.get("position", []), pose.get("orientation", [])
            if len(position) != 3 or len(orientation) != 4:
                problems.append(f"steps[{index}].pose: needs position[3] and orientation[4]")
            elif abs(math.sqrt(sum(float(value) ** 2 for value in orientation)) - 1.0) > 1e-3:
                problems.append(f"steps[{index}].pose.orientation: not a unit quaternion")
    return problems
