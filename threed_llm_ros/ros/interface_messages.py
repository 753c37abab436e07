"""Our typed interfaces (``threed_llm_interfaces``: ``msg/``, ``srv/``, ``action/``) to and from the library's replies.

The node publishes :func:`object_array` on ``objects`` and :func:`plan_message` on ``plan``, and
fills the ``Ask`` result from the same reply; clients read a plan back with :func:`plan_to_dict`
(the same dict the library's :class:`~threed_llm_ros.plans.Plan` holds).

The package is built by ``make`` (standalone, into the venv) or ``colcon build`` (robot); where it
is missing, importing this module raises a :class:`~threed_llm_ros.errors.ConfigError` that says so.
"""

from __future__ import annotations

from typing import Any, Sequence

from threed_llm_ros.errors import ConfigError
from threed_llm_ros.plans import Plan
from threed_llm_ros.ros.conversions import tuple_to_stamp
from threed_llm_ros.ros.markers import make_pose

from threed_llm_ros.runtime.replies import GroundedObject  # torch-free: clients need no engine

try:
    from threed_llm_interfaces.action import Ask
    from threed_llm_interfaces.msg import GroundedObject as GroundedObjectMessage
    from threed_llm_interfaces.msg import GroundedObjectArray, PlanStep
    from threed_llm_interfaces.msg import Plan as PlanMessage
    from threed_llm_interfaces.srv import GetObjects
except ImportError as error:  # one clear line naming the fix, not a traceback
    raise ConfigError("threed_llm_interfaces", f"the interface package is not built ({error})",
                      "run `make` (standalone: builds it into .venv) or `colcon build` and source install/setup.sh "
                      "(robot)") from None
from geometry_msgs.msg import Vector3  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

__all__ = ["Ask", "GetObjects", "GroundedObjectArray", "GroundedObjectMessage", "PlanMessage", "PlanStep", "grounded_object",
           "header", "object_array", "plan_message", "plan_to_dict"]


def header(frame_id: str, stamp: tuple[int, int]) -> Header:
    """The header of the sensor frame a reply answers."""
    return Header(frame_id=frame_id, stamp=tuple_to_stamp(stamp))


def grounded_object(obj: GroundedObject) -> GroundedObjectMessage:
    """One grounded object of the engine as ``threed_llm_interfaces/GroundedObject``."""
    length, width, height = (float(value) for value in obj.box.size)
    category = obj.category or obj.label
    return GroundedObjectMessage(category=category, color=obj.color, confidence=float(obj.score),
                                 pose=make_pose(obj.position, obj.orientation), size=Vector3(x=length, y=width, z=height),
                                 point_count=int(obj.point_count))


def object_array(objects: Sequence[GroundedObject], frame_id: str, stamp: tuple[int, int]) -> GroundedObjectArray:
    """The objects of a reply in the frame and stamp of the sensor frame it answers."""
    return GroundedObjectArray(header=header(frame_id, stamp), objects=[grounded_object(obj) for obj in objects])


def plan_message(plan: Plan, targets: Sequence[GroundedObject] = ()) -> PlanMessage:
    """``plan`` as ``threed_llm_interfaces/Plan``; each step's target object from ``targets`` (by label)."""
    by_label = {obj.label: obj for obj in targets}
    steps = []
    for step in plan.steps:
        message = PlanStep(action=str(step["action"]), target=str(step["target"]),
                           destination=str(step.get("destination") or ""), seen=bool(step.get("seen", True)))
        target = by_label.get(step["target"])
        if target is not None:
            message.target_object = [grounded_object(target)]
        pose = step.get("pose")
        if pose:
            message.has_goal_pose = True
            message.goal_pose = make_pose(pose["position"], pose["orientation"])
        steps.append(message)
    return PlanMessage(header=header(plan.frame_id, plan.stamp), instruction=plan.instruction, steps=steps,
                       source=plan.source, text=plan.text)


def plan_to_dict(message: PlanMessage) -> dict[str, Any]:
    """A typed plan back as the library's plan dict (``Plan.to_dict`` form: instruction, steps, stamp, ...)."""
    steps = []
    for step in message.steps:
        entry: dict[str, Any] = {"action": step.action, "target": step.target}
        if step.destination:
            entry["destination"] = step.destination
        if not step.seen:
            entry["seen"] = False
        if step.has_goal_pose:
            position, orientation = step.goal_pose.position, step.goal_pose.orientation
            entry["pose"] = {"position": [position.x, position.y, position.z],
                             "orientation": [orientation.x, orientation.y, orientation.z, orientation.w]}
        if step.target_object:
            position = step.target_object[0].pose.position
            entry["target_position"] = [position.x, position.y, position.z]
        steps.append(entry)
    return {"instruction": message.instruction, "steps": steps,
            "stamp": {"sec": message.header.stamp.sec, "nanosec": message.header.stamp.nanosec},
            "frame_id": message.header.frame_id, "source": message.source, "text": message.text}
