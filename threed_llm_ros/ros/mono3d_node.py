"""``mono3d_node``: the referred object's 3D box from one RGB image and its intrinsics (no depth).

Topics (relative to the node namespace):

    in   image_raw              sensor_msgs/Image                rgb8/bgr8/mono8…; sensor-data QoS
    in   camera_info            sensor_msgs/CameraInfo           its intrinsics (K, size, binning, ROI)
    in   prompt                 std_msgs/String                  "where is the bed?", "find the red chair"
    in   /tf, /tf_static        tf2_msgs/TFMessage               the camera's tilt (level_frame <- image frame)
    out  answer                 std_msgs/String                  one reply per prompt
    out  grounding/markers      visualization_msgs/MarkerArray   DELETEALL, then the box + label (latched)
    out  grounding/target_pose  geometry_msgs/PoseStamped        the box's pose in the image's optical frame
    out  /diagnostics           diagnostic_msgs/DiagnosticArray  input rates, bad inputs, dropped frames, latency

Outputs carry the ``header.frame_id`` and stamp of the image they answer: poses and boxes are in
the camera's optical frame the image names. The model assumes a level camera, so each image is
levelled first with the camera's tilt: from TF (the rotation of the image's frame in
``level_frame``, a gravity-aligned frame such as ``base_link``), else from the ``camera_pitch_deg`` /
``camera_roll_deg`` parameters; /diagnostics says which (``tilt_source``) and the pitch and roll
used (``ros/camera_tilt.py``). The camera's height above the floor, which sets the depth of floor
objects, comes from the same transform (its translation: ``level_frame`` must sit on the floor), else
from the ``camera_height_m`` parameter (``height_source``, ``camera_height_m_used``). The model and its
limits are those of :mod:`threed_llm_ros.mono3d` (the prompt's category and colour are read
from its words). An object the model does not see (presence below the checkpoint's calibrated
threshold) is answered "not seen": the markers are cleared (DELETEALL alone) and no pose is
published.

Lifecycle, QoS, latest-frame and bad-input behaviour follow ``threed_llm_node``: *configure*
reads the parameters (declared with descriptors; defaults in ``config/mono3d.yaml``) and loads
the checkpoint (a missing one fails naming ``checkpoint``); *activate* subscribes;
``autostart`` does both at start and exits with status 1 if configuring fails. The image
callback only decodes and keeps the latest frame (frames replaced while the model works are
counted as dropped); prompts come on a reliable, deep subscription and are answered one at
a time in their own callback group. A bad message is ignored with one warning naming it and
counted in /diagnostics; a prompt that cannot be answered (no image yet, no camera_info, a
size mismatch, no known category) gets a reply saying why.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String
from visualization_msgs.msg import MarkerArray

from threed_llm_ros.errors import ConfigError, MessageFormatError
from threed_llm_ros.geometry.camera import CameraIntrinsics
from threed_llm_ros.ros.camera_tilt import TILT_PARAMETER_SPECS, CameraTilt, TiltReading
from threed_llm_ros.ros.conversions import camera_info_to_intrinsics, image_to_rgb, stamp_to_tuple
from threed_llm_ros.ros.markers import grounding_markers, pose_stamped
from threed_llm_ros.ros.node_main import run_lifecycle_node
from threed_llm_ros.ros.parameters import ParameterSpec, declare_parameters, read_parameters
from threed_llm_ros.ros.qos import latched_qos, qos_parameter_specs, sensor_qos
from threed_llm_ros.runtime.diagnostics import RuntimeDiagnostics
from threed_llm_ros.runtime.frame_slot import FrameSlot
from threed_llm_ros.runtime.intent import MAX_PROMPT_CHARS
from threed_llm_ros.safe_text import printable

NODE_NAME = "mono3d_node"
PROMPT_HISTORY_DEPTH = 256
CHECKPOINT_FIX = "train one with `threed-llm mono3d-train --output DIR` and set checkpoint to that DIR"

PARAMETER_SPECS: list[ParameterSpec] = [
    ParameterSpec("checkpoint", "models/mono3d", "Single-image grounder checkpoint directory (config.json + "
                  "model.safetensors, made by `threed-llm mono3d-train`); relative paths are also looked up in the "
                  "package share directory.", fix="give an existing checkpoint directory"),
    ParameterSpec("max_prompt_chars", MAX_PROMPT_CHARS, "Longer prompts are refused with a reply saying so.",
                  1, 100_000),
    ParameterSpec("torch_threads", 1, "Threads of torch in this process (the ImageNet backbone and the grounder); "
                  "1 holds up best on shared cores (one core busy: 41 ms a prompt at 1 thread, 86 ms at 2).", 1, 64),
    *TILT_PARAMETER_SPECS,
    *qos_parameter_specs(),
    ParameterSpec("autostart", True, "Configure and activate at start-up (else drive it with ~/change_state)."),
    ParameterSpec("diagnostics_period_s", 1.0, "Period of the /diagnostics message (s).", 0.1, 60.0),
]


@dataclass
class ImageFrame:
    """The latest image: RGB pixels, its frame and stamp."""

    rgb: np.ndarray
    frame_id: str
    stamp: tuple[int, int]


def _reliable(depth: int = 10) -> QoSProfile:
    return QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE)


class Mono3DNode(LifecycleNode):
    """RGB image + camera_info + prompt in; answer, box markers and target pose out."""

    def __init__(self, **node_arguments: Any) -> None:
        super().__init__(NODE_NAME, **node_arguments)
        declare_parameters(self, PARAMETER_SPECS)
        self.values: dict[str, Any] = {}
        self.grounder = None
        self.diagnostics = RuntimeDiagnostics()
        self.frames: FrameSlot[ImageFrame] = FrameSlot()
        self.intrinsics: CameraIntrinsics | None = None
        self._sensor_group = MutuallyExclusiveCallbackGroup()
        self._prompt_group = MutuallyExclusiveCallbackGroup()
        self._outputs: dict[str, Any] = {}
        self._inputs: list[Any] = []
        self._timers: list[Any] = []
        self.tilt: CameraTilt | None = None
        self._last_frame_id = self._image_frame_id = ""
        self.diagnostics.set_value("state", "unconfigured")

    # ------------------------------------------------------------------ lifecycle

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        from threed_llm_ros.mono3d.grounder import ImageGrounder
        from threed_llm_ros.runtime.engine_settings import resolve_checkpoint

        logger = self.get_logger()
        try:
            self.values = read_parameters(self, PARAMETER_SPECS)
            sensor_qos(self.values["qos_reliability"], self.values["qos_depth"])  # validates
            started = time.perf_counter()
            try:
                path = resolve_checkpoint(str(self.values["checkpoint"]))
            except ConfigError as error:  # its fix names the 3D-LLM checkpoint: say how to make this one
                raise ConfigError("checkpoint", error.problem, CHECKPOINT_FIX) from error
            if not (path / "model.safetensors").is_file():
                raise ConfigError("checkpoint", f"{path} holds no model.safetensors", CHECKPOINT_FIX)
            self.grounder = ImageGrounder(path, torch_threads=int(self.values["torch_threads"]))
        except ConfigError as error:
            logger.fatal(f"configure failed: {error}")
            return TransitionCallbackReturn.FAILURE
        except Exception as error:  # noqa: BLE001 - any load failure must fail the transition, not crash
            logger.fatal(f"configure failed while loading the model: {type(error).__name__}: {error}")
            return TransitionCallbackReturn.FAILURE
        for topic, message_type, qos in (
            ("answer", String, _reliable(PROMPT_HISTORY_DEPTH)), ("grounding/markers", MarkerArray, latched_qos()),
            ("grounding/target_pose", PoseStamped, _reliable()), ("/diagnostics", DiagnosticArray, _reliable()),
        ):
            self._outputs[topic] = self.create_lifecycle_publisher(message_type, topic, qos)
        self.diagnostics.set_value("checkpoint", str(path))
        self.diagnostics.set_value("state", "inactive")
        logger.info(f"configured: mono3d checkpoint {path} loaded in {time.perf_counter() - started:.1f} s")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        qos = sensor_qos(self.values["qos_reliability"], self.values["qos_depth"])
        self._inputs = [
            self.create_subscription(Image, "image_raw", self._on_image, qos, callback_group=self._sensor_group),
            self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, qos,
                                     callback_group=self._sensor_group),
            self.create_subscription(String, "prompt", self._on_prompt, _reliable(PROMPT_HISTORY_DEPTH),
                                     callback_group=self._prompt_group),
        ]
        self._timers = [self.create_timer(float(self.values["diagnostics_period_s"]), self._publish_diagnostics,
                                          callback_group=self._sensor_group)]
        self.tilt = CameraTilt(self, self.values, self._sensor_group,
                               lambda error: self._bad_input("transform", "/tf", error))
        self._inputs += self.tilt.subscriptions
        self.diagnostics.set_value("state", "active")
        self.get_logger().info(f"active: image {self.resolve_topic_name('image_raw')}, prompts on "
                               f"{self.resolve_topic_name('prompt')}")
        return super().on_activate(state)

    def _release_io(self) -> None:
        for subscription in self._inputs:
            self.destroy_subscription(subscription)
        for timer in self._timers:
            self.destroy_timer(timer)
        self._inputs, self._timers, self.tilt = [], [], None

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._release_io()
        self.diagnostics.set_value("state", "inactive")
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._release_io()
        for publisher in self._outputs.values():
            self.destroy_lifecycle_publisher(publisher)
        self._outputs, self.grounder, self.intrinsics = {}, None, None
        self.frames.clear()
        self.diagnostics.set_value("state", "unconfigured")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._release_io()
        return TransitionCallbackReturn.SUCCESS

    # ------------------------------------------------------------------ input

    def _bad_input(self, kind: str, topic: str, error: Exception | str) -> None:
        count = self.diagnostics.bad_input(kind, printable(error))
        self.get_logger().warning(f"ignored bad message on {topic} ({kind} #{count}): {printable(error)}")

    def _on_image(self, message: Image) -> None:
        self.diagnostics.input_received("image_raw")
        try:
            rgb = image_to_rgb(message)
            stamp = stamp_to_tuple(message.header.stamp)
        except MessageFormatError as error:
            self._bad_input("image", "image_raw", error)
            return
        self.frames.put(ImageFrame(rgb, str(message.header.frame_id), stamp))
        self._image_frame_id = str(message.header.frame_id)

    def _on_camera_info(self, message: CameraInfo) -> None:
        self.diagnostics.input_received("camera_info")
        try:
            self.intrinsics = camera_info_to_intrinsics(message)
        except (MessageFormatError, ConfigError) as error:
            self._bad_input("camera_info", "camera_info", error)

    # ------------------------------------------------------------------ prompts

    def _publish(self, topic: str, message: Any) -> None:
        publisher = self._outputs.get(topic)
        if publisher is not None:
            publisher.publish(message)

    def _on_prompt(self, message: String) -> None:
        self.diagnostics.input_received("prompt")
        text = self.answer(message.data)
        if text is not None:
            self._publish("answer", String(data=text))

    def answer(self, prompt: str) -> str | None:
        """The reply to one prompt (publishing markers and pose when grounded); None for an empty prompt."""
        from threed_llm_ros.mono3d.grounder import ImageGrounding
        from threed_llm_ros.runtime.replies import GroundedObject

        if not prompt.strip():
            self._bad_input("empty_prompt", "prompt",
                            "the prompt is empty; send a question such as 'where is the bed?'")
            return None
        limit = int(self.values.get("max_prompt_chars", MAX_PROMPT_CHARS))
        if len(prompt) > limit:
            self._bad_input("prompt_too_long", "prompt",
                            f"{len(prompt)} characters, more than max_prompt_chars {limit}")
            return f"Prompt refused: {len(prompt)} characters, more than max_prompt_chars ({limit})."
        frame, intrinsics = self.frames.take(), self.intrinsics
        if frame is None:
            return "No image yet: nothing has arrived on image_raw."
        self._last_frame_id = frame.frame_id
        if intrinsics is None:
            return "No camera_info yet: the image cannot be measured without the camera's intrinsics."
        if (intrinsics.height, intrinsics.width) != frame.rgb.shape[:2]:
            problem = (f"image is {frame.rgb.shape[1]}x{frame.rgb.shape[0]} but camera_info says "
                       f"{intrinsics.width}x{intrinsics.height}")
            self._bad_input("camera_info_mismatch", "camera_info", problem + "; publish the camera_info of this image")
            return f"Cannot use the latest image: {problem}."
        started = time.perf_counter()
        assert self.grounder is not None and self.tilt is not None
        tilt = self._tilt_reading(frame.frame_id)
        try:
            grounding: ImageGrounding = self.grounder.ground(frame.rgb, intrinsics, prompt, frame.frame_id,
                                                             tilt.level_from_optical, tilt.camera_height_m)
        except ConfigError as error:  # no known category named
            self._bad_input("unknown_object", "prompt", error)
            return f"Cannot ground that: {error.problem}; {error.fix}."
        except Exception as error:  # noqa: BLE001 - one failed reply must not take the node down
            count = self.diagnostics.bad_input("reply_error", f"{type(error).__name__}: {error}")
            self.get_logger().error(f"reply failed (reply_error #{count}): {type(error).__name__}: {printable(error)}")
            return f"Sorry, grounding failed ({type(error).__name__}); the error is logged."
        self.diagnostics.record_latency("prompt.find", time.perf_counter() - started)
        if not grounding.seen:  # not seen: old markers deleted, no pose (a robot must not drive there)
            self._publish("grounding/markers", grounding_markers([], frame.frame_id, frame.stamp))
            self.diagnostics.count("prompts_not_seen")
            return grounding.text
        assert grounding.box is not None and grounding.position is not None and grounding.orientation is not None
        label = " ".join(part for part in (grounding.referral.color, grounding.referral.category) if part)
        grounded = GroundedObject(label, grounding.score, grounding.box, grounding.position, grounding.orientation,
                                  "mono3d", up=grounding.up, category=grounding.referral.category)
        self._publish("grounding/markers", grounding_markers([grounded], frame.frame_id, frame.stamp))
        self._publish("grounding/target_pose", pose_stamped(grounding.position, grounding.orientation,
                                                            frame.frame_id, frame.stamp))
        self.diagnostics.count("prompts_answered")
        return grounding.text

    # ------------------------------------------------------------------ diagnostics

    def _tilt_reading(self, frame_id: str) -> TiltReading:
        """The camera's tilt and height for an image in ``frame_id``, recorded in /diagnostics (which source,
        what angles, what height)."""
        assert self.tilt is not None
        tilt = self.tilt.reading(frame_id)
        self.diagnostics.set_value("tilt_source", tilt.source)
        self.diagnostics.set_value("camera_pitch_deg_used", f"{tilt.pitch_deg:.2f}")
        self.diagnostics.set_value("camera_roll_deg_used", f"{tilt.roll_deg:.2f}")
        self.diagnostics.set_value("height_source", tilt.height_source)
        self.diagnostics.set_value("camera_height_m_used", f"{tilt.camera_height_m:.3f}")
        return tilt

    def _publish_diagnostics(self) -> None:
        if self.tilt is not None and self._image_frame_id:  # what the next image would be levelled with
            self._tilt_reading(self._image_frame_id)
        counts = self.frames.counts()
        level, text, values = self.diagnostics.snapshot(
            {"frames_received": counts.received, "frames_consumed": counts.consumed, "frames_dropped": counts.dropped})
        status = DiagnosticStatus(level=bytes([level]), name=f"{self.get_name()}: inference", message=text,
                                  hardware_id=self._last_frame_id,
                                  values=[KeyValue(key=key, value=value) for key, value in values.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        array.header.frame_id = self._last_frame_id
        self._publish("/diagnostics", array)


def main(args: list[str] | None = None) -> int:
    """Run the node; with ``autostart`` configure + activate at once (exit 1 if configuring fails)."""
    return run_lifecycle_node(Mono3DNode, NODE_NAME, threads=2, args=args)


if __name__ == "__main__":
    sys.exit(main())
