"""``threed_llm_node``: the 3D-LLM on a robot, as a lifecycle node.

Topics (relative to the node namespace; see docs/design.md "The node's interface"):

    in   points                     sensor_msgs/PointCloud2          (input: pointcloud)
    in   color/image_raw, depth/image_raw, color/camera_info         (input: rgbd; paired by stamp)
    in   prompt                     std_msgs/String                  a question or an instruction (quick use)
    action ~/ask                    threed_llm_interfaces/Ask        a question as an action goal: feedback =
                                    text pieces, result = text + intent + objects + target pose + plan + status
    srv  ~/get_objects              threed_llm_interfaces/GetObjects the confident objects of the latest frame
    out  caption                    std_msgs/String                  every 1/caption_rate_hz s (0 = off)
    out  answer                     std_msgs/String                  one reply per prompt
    out  answer/stream              std_msgs/String                  pieces while generating; their
                                    concatenation equals the answer; an empty message ends each answer
    out  grounding/markers          visualization_msgs/MarkerArray   DELETEALL, then box + label per object
    out  grounding/target_pose      geometry_msgs/PoseStamped        best box of a "find" prompt
    out  objects                    threed_llm_interfaces/GroundedObjectArray  the objects of each find/plan reply
    out  plan                       threed_llm_interfaces/Plan       the steps of each plan reply (typed; the JSON
                                    String this topic carried before is gone: see README "Interfaces")
    out  plan/path                  nav_msgs/Path                    the plan's navigation goals in order
    out  /diagnostics               diagnostic_msgs/DiagnosticArray  rates, dropped frames, bad inputs, latency

Every output carries the ``header.frame_id`` and stamp of the sensor frame it answers.
Prompts are routed by :mod:`threed_llm_ros.runtime.intent` (describe / question / find / plan).

Lifecycle: *configure* reads the parameters and loads + warms up the model (a missing
checkpoint fails naming ``checkpoint`` and the fix); *activate* subscribes; with
``autostart: true`` the node configures and activates itself at start (and exits with
status 1 if configuring fails). The lifecycle services ``~/change_state`` /
``~/get_state`` drive it otherwise.

Threading: sensor callbacks only decode and store the latest frame (``FrameSlot``);
inference (prompts, captions) runs on a multi-threaded executor, one inference at a time,
so while the model works new frames replace old ones (counted as dropped) instead of
queueing. Prompts are never dropped silently: the ``prompt`` subscription (reliable, a
deep history) only queues each prompt (:class:`~threed_llm_ros.runtime.prompt_queue.PromptQueue`,
``prompt_queue_depth``), and a worker answers the queue in order; a prompt that finds the
queue full gets the reply "busy: N prompts are waiting; ask again shortly" on ``answer`` at
once (not on ``answer/stream``, where it would split the answer being streamed) and is
counted as ``prompts_refused_busy`` in /diagnostics. Prompts come first: a periodic caption
is skipped while a prompt waits, so a caption rate faster than the model cannot starve
questions (a prompt waits for at most the caption already running). Tests can emulate a
slower model with a deliberate sleep after each inference, set in the node process's
environment (``node_settings.TEST_INFERENCE_DELAY_ENV``; not a parameter).

``~/ask`` goals join the same queue as topic prompts and go through the same reply path
(:class:`~threed_llm_ros.ros.ask_server.AskServer`); a goal that finds the queue full is aborted at
once with the busy reason in its result.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, Callable

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Path
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import String
from visualization_msgs.msg import MarkerArray

from threed_llm_ros.errors import ConfigError
try:  # our interfaces: built by `make` or colcon; without them, one line saying so (not a traceback)
    from threed_llm_ros.ros.ask_server import AskJob, AskServer
    from threed_llm_ros.ros.interface_messages import GroundedObjectArray, PlanMessage
    from threed_llm_ros.ros.node_replies import ReplyOutcome, respond
except ConfigError as _missing:
    if __name__ == "__main__":
        sys.exit(f"threed_llm_node: cannot start: {_missing}")
    raise
from threed_llm_ros.ros.node_inputs import SensorInput
from threed_llm_ros.ros.node_main import run_lifecycle_node
from threed_llm_ros.ros.node_settings import (  # re-exported: tests and launch files read them here
    INPUTS, NODE_NAME, PARAMETER_SPECS, PROMPT_HISTORY_DEPTH, PROMPT_WORKER_PERIOD_S, RGBD_STREAMS, NodeSettings,
)
from threed_llm_ros.ros.parameters import declare_parameters, read_parameters
from threed_llm_ros.ros.qos import latched_qos, sensor_qos
from threed_llm_ros.runtime.diagnostics import RuntimeDiagnostics
from threed_llm_ros.runtime.engine import InferenceEngine
from threed_llm_ros.runtime.engine_settings import REPLY_TIMEOUT_S
from threed_llm_ros.runtime.replies import SceneCloud
from threed_llm_ros.runtime.frame_slot import ApproximateTimeSync, FrameSlot
from threed_llm_ros.runtime.intent import MAX_PROMPT_CHARS, EmptyPromptError, PromptTooLongError, route
from threed_llm_ros.runtime.prompt_queue import PROMPT_QUEUE_DEPTH, PromptQueue, ReplyCanceled, busy_reply
from threed_llm_ros.safe_text import printable

__all__ = ["INPUTS", "NODE_NAME", "PARAMETER_SPECS", "RGBD_STREAMS", "NodeSettings", "ReplyOutcome", "ThreeDLLMNode", "main"]


def _reliable(depth: int = 10) -> QoSProfile:
    return QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE)


class ThreeDLLMNode(SensorInput, LifecycleNode):
    """Sensor frames + prompts in; captions, answers, boxes, goal poses and plans out."""

    def __init__(self, **node_arguments: Any) -> None:
        super().__init__(NODE_NAME, **node_arguments)
        declare_parameters(self, PARAMETER_SPECS)
        self.settings: NodeSettings | None = None
        self.engine: InferenceEngine | None = None
        self.diagnostics = RuntimeDiagnostics()
        self.frames: FrameSlot[SceneCloud] = FrameSlot()
        self._sync: ApproximateTimeSync | None = None
        self._inference_group = MutuallyExclusiveCallbackGroup()  # periodic captions
        self._prompt_group = MutuallyExclusiveCallbackGroup()  # the worker answering queued prompts
        self._intake_group = MutuallyExclusiveCallbackGroup()  # the prompt subscription: only queues
        self._sensor_group = MutuallyExclusiveCallbackGroup()
        self._inference_lock = threading.Lock()  # one model call at a time, from either group
        self._prompts: PromptQueue[str | AskJob] = PromptQueue(PROMPT_QUEUE_DEPTH)
        self._ask: AskServer | None = None
        self._outputs: dict[str, Any] = {}
        self._inputs: list[Any] = []
        self._io_timers: list[Any] = []
        self._last_frame = ("", (0, 0))
        self._sensor_topics: list[str] = []  # what the node listens to for frames (named in "no frame" replies)
        self._active_since = time.monotonic()
        self.diagnostics.set_value("state", "unconfigured")

    # ------------------------------------------------------------------ lifecycle

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        logger = self.get_logger()
        try:
            self.settings = NodeSettings.from_parameters(read_parameters(self, PARAMETER_SPECS))
            engine = InferenceEngine(self.settings.engine, progress=logger.info)  # says what each slow step is
            load_s = engine.load()
            warm_up_s = engine.warm_up()
        except ConfigError as error:
            logger.fatal(f"configure failed: {error}")
            return TransitionCallbackReturn.FAILURE
        except Exception as error:  # noqa: BLE001 - any load failure must fail the transition, not crash
            logger.fatal(f"configure failed while loading the model: {type(error).__name__}: {error}")
            return TransitionCallbackReturn.FAILURE
        self.engine = engine
        self._prompts = PromptQueue(self.settings.prompt_queue_depth)
        for counter in ("prompts_refused_busy", "goals_succeeded", "goals_canceled", "goals_aborted"):
            self.diagnostics.count(counter, 0)  # shown from the start, not only after the first
        self.diagnostics.set_value("prompt_queue_depth", self.settings.prompt_queue_depth)
        self._sync = ApproximateTimeSync(RGBD_STREAMS, self.settings.sync_tolerance_s)
        latched = latched_qos()
        for topic, message_type, qos in (
            ("caption", String, _reliable()), ("answer", String, _reliable(PROMPT_HISTORY_DEPTH)),
            ("answer/stream", String, _reliable(100)),
            ("grounding/markers", MarkerArray, latched), ("grounding/target_pose", PoseStamped, _reliable()),
            ("objects", GroundedObjectArray, latched), ("plan", PlanMessage, latched), ("plan/path", Path, latched),
            ("/diagnostics", DiagnosticArray, _reliable()),
        ):
            self._outputs[topic] = self.create_lifecycle_publisher(message_type, topic, qos)
        self.diagnostics.set_value("checkpoint", engine.checkpoint_path)
        self.diagnostics.set_value("backend", self.settings.engine.backend)
        self.diagnostics.set_value("lm_backend", engine.language_backend)
        self.diagnostics.set_value("state", "inactive")
        logger.info(f"configured: checkpoint {engine.checkpoint_path} ({self.settings.engine.backend}, "
                    f"{self.settings.engine.device}) loaded in {load_s:.1f} s, warm-up {warm_up_s:.1f} s")
        logger.info(engine.language_backend_note)
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        assert self.settings is not None
        settings = self.settings
        qos = sensor_qos(settings.qos_reliability, settings.qos_depth)
        group = self._sensor_group
        if settings.input == "pointcloud":
            self._inputs.append(self.create_subscription(PointCloud2, "points", self._on_points, qos, callback_group=group))
        else:
            for topic, message_type, stream in (("color/image_raw", Image, "color"), ("depth/image_raw", Image, "depth"),
                                                ("color/camera_info", CameraInfo, "info")):
                self._inputs.append(self.create_subscription(
                    message_type, topic, self._rgbd_callback(topic, stream), qos, callback_group=group))
        self._sensor_topics = [subscription.topic_name for subscription in self._inputs]
        self._active_since = time.monotonic()
        self._inputs.append(self.create_subscription(
            String, "prompt", self._on_prompt, _reliable(PROMPT_HISTORY_DEPTH), callback_group=self._intake_group))
        self._io_timers.append(self.create_timer(PROMPT_WORKER_PERIOD_S, self._serve_prompts,
                                                 callback_group=self._prompt_group))
        self._io_timers.append(self.create_timer(settings.diagnostics_period_s, self._publish_diagnostics, callback_group=group))
        if settings.caption_rate_hz > 0:
            self._io_timers.append(self.create_timer(1.0 / settings.caption_rate_hz, self._on_caption_timer,
                                                  callback_group=self._inference_group))
        self._ask = AskServer(self)
        self.diagnostics.set_value("state", "active")
        self.get_logger().info(f"active: input {settings.input}, listening for prompts on {self.resolve_topic_name('prompt')} "
                               f"and goals on {self._ask.name}")
        return super().on_activate(state)

    def _release_io(self) -> None:
        if self._ask is not None:
            self._ask.destroy()
            self._ask = None
        for subscription in self._inputs:
            self.destroy_subscription(subscription)
        for timer in self._io_timers:
            self.destroy_timer(timer)
        self._inputs, self._io_timers = [], []

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._refuse_waiting_prompts("the node is being deactivated")  # before ~/ask goes: goals get their reason
        self._release_io()
        self.diagnostics.set_value("state", "inactive")
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._release_io()
        for publisher in self._outputs.values():
            self.destroy_lifecycle_publisher(publisher)
        self._outputs, self.engine = {}, None
        self.frames.clear()
        self.diagnostics.set_value("state", "unconfigured")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._refuse_waiting_prompts("the node is shutting down")
        self._release_io()
        return TransitionCallbackReturn.SUCCESS

    # ------------------------------------------------------------------ inference

    def _publish(self, topic: str, message: Any) -> None:
        publisher = self._outputs.get(topic)
        if publisher is not None:
            publisher.publish(message)

    def _take_frame(self) -> SceneCloud | None:
        cloud = self.frames.take()
        if cloud is not None:
            self._last_frame = (cloud.frame_id, cloud.stamp)
            self.diagnostics.set_value("frame_id", cloud.frame_id)
        return cloud

    def _on_prompt(self, message: String) -> None:
        """Only queue the prompt (fast: a burst must not back up in DDS); a full queue refuses it at once."""
        self.diagnostics.input_received("prompt")
        if self._prompts.put(message.data):
            return
        waiting = len(self._prompts)
        self.diagnostics.count("prompts_refused_busy")
        self.get_logger().warning(f"prompt refused: {waiting} prompts are waiting (prompt_queue_depth); counted as "
                                  "prompts_refused_busy", throttle_duration_sec=5.0)
        self._publish("answer", String(data=busy_reply(waiting)))

    def _serve_prompts(self) -> None:
        """The worker: answer the waiting prompts and goals in order, one model call at a time."""
        while True:
            with self._inference_lock:
                item = self._prompts.pop()
                if item is None:
                    return
                if isinstance(item, AskJob):
                    item.run_and_wait()  # the goal's execute callback replies; this worker holds the lock for it
                else:
                    self._answer_prompt(item)

    def _refuse_waiting_prompts(self, reason: str) -> None:
        """Reply to every queued prompt that it will not be answered (a transition must not lose them silently)."""
        waiting = self._prompts.drain()
        if not waiting:
            return
        self.diagnostics.count("prompts_not_answered", len(waiting))
        self.get_logger().warning(f"{len(waiting)} waiting prompts not answered: {reason}")
        text = f"not answered: {reason}; ask again when it is active"
        goals = [item for item in waiting if isinstance(item, AskJob)]
        for item in waiting:
            if isinstance(item, AskJob):
                item.refuse(text)
            else:
                self._publish("answer", String(data=text))
        deadline = time.monotonic() + 2.0  # let the refused goals send their results before ~/ask goes
        for goal in goals:
            goal.done.wait(max(0.0, deadline - time.monotonic()))

    def _answer_prompt(self, prompt: str) -> None:
        """A topic prompt: its reply on ``answer``, its pieces on ``answer/stream`` (none for an empty prompt)."""
        outcome = self.reply(prompt, lambda piece: self._publish("answer/stream", String(data=piece)))
        if outcome is not None:
            self._finish_answer(outcome.text, streamed=outcome.streamed)

    def reply(self, prompt: str, on_piece: Callable[[str], None], *, source: str = "prompt",
              min_stamp: tuple[int, int] | None = None, canceled: Callable[[], bool] | None = None) -> ReplyOutcome | None:
        """The one reply path of topic prompts and ``~/ask`` goals: route the prompt, take the frame,
        answer, publish the grounding/plan outputs. Whatever happens there is one outcome: a bad prompt
        gets one naming the problem, an unexpected failure an error one; the node keeps serving.
        None for an empty prompt (counted as bad input). :class:`ReplyCanceled` (raised by ``on_piece``
        or ``canceled``) propagates: the generation stops there."""
        limit = self.settings.engine.max_prompt_chars if self.settings is not None else MAX_PROMPT_CHARS
        if min_stamp is not None and tuple(min_stamp) == (0, 0):
            min_stamp = None  # zero: the latest frame
        try:
            intent = route(prompt, limit)
        except EmptyPromptError as error:
            self._bad_input("empty_prompt", source, error)
            return None
        except PromptTooLongError as error:
            self._bad_input("prompt_too_long", source, error)
            return ReplyOutcome(f"Prompt refused: {error.problem}.", status=f"refused: {error.problem}")
        cloud = self._frame_for(min_stamp, canceled)
        if cloud is None:
            text = (self._no_frame_text() if not min_stamp else
                    f"No frame stamped at or after {min_stamp[0]}.{min_stamp[1]:09d} s arrived within reply_timeout_s.")
            self.get_logger().warning(f"prompt {printable(repr(intent.prompt))}: {text}")
            return ReplyOutcome(text, intent.kind, f"refused: {text}")
        started = time.perf_counter()
        try:
            assert self.engine is not None
            outcome = respond(self.engine, intent, cloud, on_piece, self._publish, self.diagnostics)
        except ReplyCanceled:
            raise
        except ValueError as error:  # e.g. no point left after range cropping
            self._bad_input("unusable_cloud", "points", error)
            text = f"Cannot use the latest frame: {error}"
            outcome = ReplyOutcome(text, intent.kind, f"error: {text}", cloud.frame_id, cloud.stamp)
        except Exception as error:  # noqa: BLE001 - one failed reply must not take the node down
            count = self.diagnostics.bad_input("reply_error", f"{type(error).__name__}: {error}")
            self.get_logger().error(f"reply to {printable(repr(intent.prompt), 80)} failed (reply_error #{count}): "
                                    f"{type(error).__name__}: {printable(error)}; the node keeps serving")
            text = f"Sorry, answering failed ({type(error).__name__}); the error is logged."
            outcome = ReplyOutcome(text, intent.kind, f"error: {text}", cloud.frame_id, cloud.stamp)
        self.diagnostics.record_latency(f"prompt.{intent.kind}", time.perf_counter() - started)
        self.diagnostics.count("prompts_answered")
        self._delay()
        return outcome

    def objects_now(self) -> ReplyOutcome:
        """The confident objects of the latest frame (``~/get_objects``); waits for the model's lock."""
        with self._inference_lock:
            cloud = self._take_frame()
            if cloud is None or self.engine is None:
                return ReplyOutcome(self._no_frame_text(), status="refused")
            try:
                objects = self.engine.objects(cloud)
            except ValueError as error:  # too sparse, nothing in range
                self._bad_input("unusable_cloud", "points", error)
                return ReplyOutcome(f"Cannot use the latest frame: {error}", "", "refused", cloud.frame_id, cloud.stamp)
        return ReplyOutcome(f"{len(objects)} objects", "objects", "ok", cloud.frame_id, cloud.stamp, objects)

    def _no_frame_text(self) -> str:
        """Why there is no frame to answer about: the topics listened to, for how long, and what to check."""
        topics = ", ".join(self._sensor_topics) or "the input topics"
        since = time.monotonic() - self._active_since
        return (f"No sensor frame yet: nothing has arrived on {topics} in the {since:.0f} s since the node became "
                f"active (prompts wait for the first frame until reply_timeout_s after activation). "
                f"Check that the camera publishes there.")

    def _frame_for(self, min_stamp: tuple[int, int] | None, canceled: Callable[[], bool] | None) -> SceneCloud | None:
        """The latest frame; with ``min_stamp``, one stamped at or after it, waiting up to reply_timeout_s. Before the
        first frame, a prompt waits for it until reply_timeout_s after activation (a camera starting with the node),
        not longer: with no camera at all, prompts are refused at once after that, not each after a wait."""
        timeout = self.settings.engine.reply_timeout_s if self.settings is not None else REPLY_TIMEOUT_S
        deadline = time.monotonic() + timeout if min_stamp is not None else self._active_since + timeout
        said = False
        while True:
            cloud = self._take_frame()
            if cloud is not None and (min_stamp is None or tuple(cloud.stamp) >= tuple(min_stamp)):
                return cloud
            if cloud is None and not said and time.monotonic() <= deadline:
                said = True
                self.get_logger().info(f"a prompt waits for the first sensor frame on {', '.join(self._sensor_topics)} "
                                       f"(until reply_timeout_s, {timeout:g} s, after activation)")
            if time.monotonic() > deadline:
                return None
            if canceled is not None and canceled():
                raise ReplyCanceled()
            time.sleep(0.05)

    def _delay(self) -> None:
        if self.settings is not None and self.settings.inference_delay_s > 0:
            time.sleep(self.settings.inference_delay_s)

    def _finish_answer(self, text: str, *, streamed: bool) -> None:
        if not streamed and text:
            self._publish("answer/stream", String(data=text))
        self._publish("answer/stream", String(data=""))  # end of this answer
        self._publish("answer", String(data=text))

    def _on_caption_timer(self) -> None:
        if len(self._prompts):
            return  # prompts first; the next tick captions
        if not self._inference_lock.acquire(blocking=False):
            return
        try:
            self._caption()
        finally:
            self._inference_lock.release()

    def _caption(self) -> None:
        if not self.frames.has_new_frame() or self.engine is None:
            return
        cloud = self._take_frame()
        if cloud is None:
            return
        try:
            reply = self.engine.describe(cloud)
        except ValueError as error:
            self._bad_input("unusable_cloud", "points", error)
        else:
            self.diagnostics.record_timings(reply.timings)
            self._publish("caption", String(data=reply.text))
            self.diagnostics.count("captions_published")
        self._delay()

    # ------------------------------------------------------------------ diagnostics

    def _publish_diagnostics(self) -> None:
        counts = self.frames.counts()
        level, text, values = self.diagnostics.snapshot(
            {"frames_received": counts.received, "frames_consumed": counts.consumed, "frames_dropped": counts.dropped})
        frame_id = self._last_frame[0]
        status = DiagnosticStatus(
            level=bytes([level]), name=f"{self.get_name()}: inference", message=text, hardware_id=frame_id,
            values=[KeyValue(key=key, value=value) for key, value in values.items()],
        )
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        array.header.frame_id = frame_id
        self._publish("/diagnostics", array)


def main(args: list[str] | None = None) -> int:
    """Run the node; with ``autostart`` configure + activate at once (exit 1 if configuring fails)."""
    # four threads: a goal holds two (the worker waits while its execute callback replies)
    return run_lifecycle_node(ThreeDLLMNode, NODE_NAME, threads=4, args=args)


if __name__ == "__main__":
    sys.exit(main())
