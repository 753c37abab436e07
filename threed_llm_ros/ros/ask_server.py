"""The node's ``~/ask`` action server (``threed_llm_interfaces/Ask``): a question as an action goal;
and its ``~/get_objects`` service (``threed_llm_interfaces/GetObjects``): what the object layer sees now.

Every goal is accepted and joins the node's prompt queue, beside the prompts of the ``prompt``
topic (one queue, ``prompt_queue_depth`` deep, answered in order by one worker). A goal that finds
the queue full is aborted at once; its result's ``status`` says why ("busy: N prompts are waiting;
ask again shortly") and it counts as ``prompts_refused_busy``. A waiting goal is ACCEPTED; when
the worker reaches it, it EXECUTES: the node's one reply path answers it (the same
``InferenceEngine`` calls as a topic prompt), each text piece goes out as feedback as the model
writes it, and the result carries the text (= the pieces joined), the intent, the grounded
objects, the target pose and the plan, in the frame and stamp of the sensor frame answered.

Cancel: a canceled goal stops at the model's next token (questions stream token by token; a
find or plan reply stops when its model call returns) and finishes CANCELED with the text so
far; a goal canceled while it waits finishes CANCELED when its turn comes, without a model call.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import rclpy
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup

from threed_llm_ros.ros.interface_messages import Ask, GetObjects, grounded_object, header, object_array, plan_message
from threed_llm_ros.ros.markers import pose_stamped
from threed_llm_ros.runtime.prompt_queue import ReplyCanceled, busy_reply
from threed_llm_ros.safe_text import printable

if TYPE_CHECKING:  # pragma: no cover - type hints only: threed_llm_node imports this module
    from threed_llm_ros.ros.node_replies import ReplyOutcome
    from threed_llm_ros.ros.threed_llm_node import ThreeDLLMNode

ACTION_NAME = "~/ask"
OBJECTS_SERVICE = "~/get_objects"
# How long a finished goal's result stays available to a client that asks for it late (s).
RESULT_TIMEOUT_S = 300


class AskJob:
    """One accepted goal on its way through the queue."""

    def __init__(self, goal_handle: Any, context: Any) -> None:
        self.goal_handle = goal_handle
        self.context = context
        self.refusal = ""  # set: the goal is aborted with this status, without a model call
        self.done = threading.Event()

    def run_and_wait(self) -> None:
        """Called by the node's worker (holding the inference lock): execute the goal and wait for its reply."""
        self.goal_handle.execute()
        while not self.done.wait(0.5):
            if not rclpy.ok(context=self.context):
                return

    def refuse(self, reason: str) -> None:
        """Abort the goal with ``reason`` as its status (queue full, node deactivating)."""
        self.refusal = reason
        self.goal_handle.execute()


class AskServer:
    """``~/ask`` on ``node``: goals queue with the node's prompts; the execute callback replies."""

    def __init__(self, node: "ThreeDLLMNode") -> None:
        self.node = node
        self._jobs: dict[bytes, AskJob] = {}
        self._lock = threading.Lock()
        self._server = ActionServer(
            node, Ask, ACTION_NAME, execute_callback=self._execute, goal_callback=lambda _goal: GoalResponse.ACCEPT,
            handle_accepted_callback=self._on_accepted, cancel_callback=lambda _goal: CancelResponse.ACCEPT,
            callback_group=ReentrantCallbackGroup(), result_timeout=RESULT_TIMEOUT_S)
        self.name = node.resolve_topic_name(ACTION_NAME)
        # one call at a time, in its own group: it waits for the model (the node's inference lock)
        self._objects = node.create_service(GetObjects, OBJECTS_SERVICE, self._get_objects,
                                            callback_group=MutuallyExclusiveCallbackGroup())

    def destroy(self) -> None:
        self._server.destroy()
        self.node.destroy_service(self._objects)

    def _get_objects(self, _request: Any, response: Any) -> Any:
        found = self.node.objects_now()
        response.success, response.message = found.status == "ok", found.text
        response.objects = object_array(found.objects, found.frame_id, found.stamp)
        return response

    def _on_accepted(self, goal_handle: Any) -> None:
        job = AskJob(goal_handle, self.node.context)
        with self._lock:
            self._jobs[bytes(goal_handle.goal_id.uuid)] = job
        queue = self.node._prompts
        if queue.put(job):
            return
        waiting = len(queue)
        self.node.diagnostics.count("prompts_refused_busy")
        self.node.get_logger().warning(f"goal refused: {waiting} prompts are waiting (prompt_queue_depth); counted as "
                                       "prompts_refused_busy", throttle_duration_sec=5.0)
        job.refuse(busy_reply(waiting))

    def _execute(self, goal_handle: Any) -> Any:
        with self._lock:
            job = self._jobs.pop(bytes(goal_handle.goal_id.uuid), None)
        try:
            return self._reply(goal_handle, job)
        finally:
            if job is not None:
                job.done.set()

    def _reply(self, goal_handle: Any, job: AskJob | None) -> Any:
        diagnostics = self.node.diagnostics
        if job is not None and job.refusal:
            goal_handle.abort()
            diagnostics.count("goals_aborted")
            return Ask.Result(text=job.refusal, status=job.refusal)
        if goal_handle.is_cancel_requested:
            goal_handle.canceled()
            diagnostics.count("goals_canceled")
            return Ask.Result(status="canceled")
        pieces: list[str] = []

        def on_piece(piece: str) -> None:
            if goal_handle.is_cancel_requested:
                raise ReplyCanceled()
            if piece:
                pieces.append(piece)
                goal_handle.publish_feedback(Ask.Feedback(text=piece))

        request = goal_handle.request
        min_stamp = (int(request.min_stamp.sec), int(request.min_stamp.nanosec))
        try:
            outcome = self.node.reply(request.prompt, on_piece, source="ask", min_stamp=min_stamp,
                                      canceled=lambda: goal_handle.is_cancel_requested)
        except ReplyCanceled:
            goal_handle.canceled()
            diagnostics.count("goals_canceled")
            self.node.get_logger().info(f"goal {printable(repr(request.prompt), 80)} canceled after "
                                        f"{len(pieces)} pieces: generation stopped")
            return Ask.Result(text="".join(pieces), status="canceled")
        if outcome is None:
            reason = "refused: the prompt is empty; send a question or an instruction"
            goal_handle.abort()
            diagnostics.count("goals_aborted")
            return Ask.Result(status=reason)
        if goal_handle.is_cancel_requested:  # a find or plan reply: canceled during its model call
            goal_handle.canceled()
            diagnostics.count("goals_canceled")
            return Ask.Result(text="".join(pieces), status="canceled")
        if not outcome.streamed and outcome.text:  # one piece: the feedback always joins to the result text
            goal_handle.publish_feedback(Ask.Feedback(text=outcome.text))
        result = result_message(outcome)
        if outcome.status in ("ok", "cut_short"):
            goal_handle.succeed()
            diagnostics.count("goals_succeeded")
        else:
            goal_handle.abort()
            diagnostics.count("goals_aborted")
        return result


def result_message(outcome: "ReplyOutcome") -> Any:
    """The ``Ask`` result of a reply outcome."""
    result = Ask.Result(text=outcome.text, intent=outcome.intent, status=outcome.status,
                        header=header(outcome.frame_id, outcome.stamp),
                        objects=[grounded_object(obj) for obj in outcome.objects])
    if outcome.target is not None:
        result.has_target_pose = True
        result.target_pose = pose_stamped(outcome.target.position, outcome.target.orientation, outcome.frame_id,
                                          outcome.stamp)
    if outcome.plan is not None:
        result.plan = plan_message(outcome.plan, outcome.objects)
    return result
