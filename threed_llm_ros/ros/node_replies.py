"""What one prompt or ``~/ask`` goal of ``threed_llm_node`` gets: the engine's reply to its intent, published
as the node's typed outputs (markers, objects, target pose, plan, path) and summed up as a :class:`ReplyOutcome`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from threed_llm_ros.plans import Plan
from threed_llm_ros.ros.interface_messages import object_array, plan_message
from threed_llm_ros.ros.markers import grounding_markers, path_message, pose_stamped
from threed_llm_ros.runtime.diagnostics import RuntimeDiagnostics
from threed_llm_ros.runtime.engine import InferenceEngine
from threed_llm_ros.runtime.intent import Intent
from threed_llm_ros.runtime.replies import GroundedObject, SceneCloud


@dataclass
class ReplyOutcome:
    """What one prompt or goal got: the text and the typed outputs it published."""

    text: str
    intent: str = ""
    status: str = "ok"  # ok, cut_short, refused: ..., error: ...
    frame_id: str = ""
    stamp: tuple[int, int] = (0, 0)
    objects: list[GroundedObject] = field(default_factory=list)
    target: GroundedObject | None = None
    plan: Plan | None = None
    streamed: bool = False  # the text went out piece by piece through on_piece


def support_text(target: GroundedObject) -> str:
    """What backs a grounded object: the object layer's calibrated confidence in its category and its points."""
    category = target.category or "this category"
    return f"confidence {target.score:.2f} that it is a {category}, from {target.point_count} points"


def respond(engine: InferenceEngine, intent: Intent, cloud: SceneCloud, on_piece: Callable[[str], None],
            publish: Callable[[str, Any], None], diagnostics: RuntimeDiagnostics) -> ReplyOutcome:
    """``engine``'s reply to ``intent`` about ``cloud``: text streamed through ``on_piece`` (describe, question),
    or a grounding / plan whose outputs go out through ``publish(topic, message)``, stamped as the frame."""
    frame_id, stamp = cloud.frame_id, cloud.stamp
    if intent.kind in ("describe", "question"):
        reply = engine.answer(cloud, intent.prompt, on_token=on_piece, programs=intent.kind == "question")
        diagnostics.record_timings(reply.timings)
        return ReplyOutcome(reply.text, intent.kind, "cut_short" if reply.cut_short else "ok", frame_id, stamp,
                            streamed=True)
    if intent.kind == "find":
        grounding = engine.ground(cloud, intent.prompt, label=intent.target)
        diagnostics.record_timings(grounding.timings)
        publish("grounding/markers", grounding_markers(grounding.objects, frame_id, stamp))
        publish("objects", object_array(grounding.objects, frame_id, stamp))
        target = grounding.target
        if target is None:
            text = grounding.text  # "I don't see a chair here (not seen).": no pose is published
        else:
            publish("grounding/target_pose", pose_stamped(target.position, target.orientation, frame_id, stamp))
            x, y, z = target.position
            text = (f"{grounding.text}: at ({x:.2f}, {y:.2f}, {z:.2f}) m in {frame_id}, "
                    f"size {' x '.join(f'{s:.2f}' for s in target.box.size)} m, "
                    f"{support_text(target)}")
        return ReplyOutcome(text, "find", "ok", frame_id, stamp, list(grounding.objects), target)
    reply = engine.plan(cloud, intent.prompt)
    diagnostics.record_timings(reply.timings)
    plan = reply.plan
    publish("grounding/markers", grounding_markers(reply.targets, frame_id, stamp))
    publish("objects", object_array(reply.targets, frame_id, stamp))
    publish("plan", plan_message(plan, reply.targets))
    publish("plan/path", path_message(plan.goals(), frame_id, stamp))
    cut = engine.cut_short_note() if reply.cut_short else ""
    return ReplyOutcome(f"{plan.summary()}{cut}", "plan", "cut_short" if reply.cut_short else "ok", frame_id, stamp,
                        list(reply.targets), plan=plan)
