"""Record topics into an MCAP recording (rosbag2 directory, ROS 2 CDR): the demo's, ``play --record``'s and
``threed-llm record``'s.

    threed-llm record sim_bag.mcap --duration 3 --topics /camera/color/image_raw /camera/depth/image_raw \\
        /camera/color/camera_info /camera/points

:class:`Recorder` subscribes with raw (serialized) messages, so what it writes is byte for byte what
DDS carried. Inputs are kept one of two ways: every message (``threed-llm record``, a small
``ros2 bag record`` for machines without the ROS 2 CLI), or only the latest of each topic, written
when an output of threed_llm_node arrives (the demo and ``play --record``: the frame each reply
answered, so a recording of a long session stays small). On a robot, ``ros2 bag record -s mcap``
does the same job.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.serialization import serialize_message
from std_msgs.msg import String

from threed_llm_ros.bags import McapRecording
from threed_llm_ros.errors import ConfigError
from threed_llm_ros.ros.qos import use_large_message_transport

PROMPT_TOPIC = "/recording/prompt"
ANSWER_TOPIC = "/answer"
# What threed_llm_node publishes (in the root namespace), recorded as outputs.
OUTPUT_TOPICS: dict[str, str] = {
    ANSWER_TOPIC: "std_msgs/msg/String",
    "/caption": "std_msgs/msg/String",
    "/grounding/markers": "visualization_msgs/msg/MarkerArray",
    "/grounding/target_pose": "geometry_msgs/msg/PoseStamped",
    "/objects": "threed_llm_interfaces/msg/GroundedObjectArray",
    "/plan": "threed_llm_interfaces/msg/Plan",
    "/plan/path": "nav_msgs/msg/Path",
}
OUTPUT_QOS = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def message_class(msgtype: str) -> type | None:
    """The rclpy class of 'pkg/msg/Name', or None where that package is not installed."""
    package, _, name = msgtype.partition("/msg/")
    try:
        return getattr(importlib.import_module(f"{package}.msg"), name)
    except (ImportError, AttributeError, ValueError):
        return None


class Recorder:
    """Writes threed_llm_node's outputs as they arrive, and inputs (every message, or the latest with each output).

    ``inputs`` = {topic: type} written through :meth:`keep_input` (or subscribed when in ``subscribe``,
    {topic: QoS}). Spins its own node on its own thread, so a PromptClient can spin in the caller's.
    """

    def __init__(self, recording: McapRecording, inputs: dict[str, str], *, outputs: dict[str, str] | None = None,
                 subscribe: dict[str, QoSProfile] | None = None, every_input: bool = False) -> None:
        outputs = OUTPUT_TOPICS if outputs is None else outputs
        self.recording = recording
        self.every_input = every_input
        self._lock = threading.Lock()
        self._latest: dict[str, bytes] = {}
        self._pending: set[str] = set()
        for topic, msgtype in {**inputs, **outputs, PROMPT_TOPIC: "std_msgs/msg/String"}.items():
            recording.add_topic(topic, msgtype)
        self.node = Node("threed_llm_recorder")
        for topic, msgtype in outputs.items():
            self.node.create_subscription(message_class(msgtype), topic, self._output_writer(topic), OUTPUT_QOS,
                                          raw=True)
        for topic, qos in (subscribe or {}).items():
            self.node.create_subscription(message_class(inputs[topic]), topic,
                                          lambda cdr, topic=topic: self.keep_input(topic, cdr), qos, raw=True)
        self._executor = SingleThreadedExecutor()
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._executor.spin, daemon=True)
        self._thread.start()

    def keep_input(self, topic: str, cdr: bytes) -> None:
        """An input message: written now (every_input), else kept until the next output."""
        with self._lock:
            if self.every_input:
                self.recording.write(topic, time.time_ns(), cdr)
                return
            self._latest[topic] = cdr
            self._pending.add(topic)

    def _flush_inputs(self, now_ns: int) -> None:
        for topic in sorted(self._pending):
            self.recording.write(topic, now_ns, self._latest[topic])
        self._pending.clear()

    def _output_writer(self, topic: str) -> Callable[[bytes], None]:
        def write(cdr: bytes) -> None:
            self.write_output(topic, cdr)

        return write

    def write_output(self, topic: str, cdr: bytes) -> None:
        """Write an output (with the inputs it answered, when those are kept)."""
        with self._lock:
            now_ns = time.time_ns()
            self._flush_inputs(now_ns)
            self.recording.write(topic, now_ns, cdr)

    def prompt(self, text: str) -> None:
        """Record a prompt as it is asked (on /recording/prompt)."""
        with self._lock:
            self.recording.write(PROMPT_TOPIC, time.time_ns(), serialize_message(String(data=text)))

    def answer(self, text: str) -> None:
        """Record the text of an ``~/ask`` result on /answer (the node sends a goal's text in the result only)."""
        self.write_output(ANSWER_TOPIC, serialize_message(String(data=text)))

    def close(self, settle_s: float = 0.5) -> None:
        """Stop spinning, write the inputs not yet written, finish the MCAP."""
        time.sleep(settle_s)  # outputs still in flight
        self._executor.shutdown(timeout_sec=2.0)
        with self._lock:
            self._flush_inputs(time.time_ns())
            self.recording.close()
        self.node.destroy_node()


def _topic_types(node: Node, topics: list[str], timeout_s: float) -> dict[str, str]:
    """The type of each topic, from the graph (waits for discovery up to ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        known = {name: types[0] for name, types in node.get_topic_names_and_types() if types}
        missing = [topic for topic in topics if topic not in known]
        if not missing:
            return {topic: known[topic] for topic in topics}
        if time.monotonic() > deadline:
            raise ConfigError("--topics", f"no publisher of {missing} seen in {timeout_s:.0f} s",
                              "start the publishing nodes first, or check ROS_DOMAIN_ID")
        time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="threed-llm record", description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="OUT.mcap: the rosbag2 directory OUT/ to create")
    parser.add_argument("--topics", nargs="+", required=True, help="topics to record (every message)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds to record")
    parser.add_argument("--outputs", action="store_true", help="also record threed_llm_node's outputs")
    arguments = parser.parse_args(argv)
    use_large_message_transport()
    rclpy.init()
    probe = Node("threed_llm_record_probe")
    try:
        types = _topic_types(probe, arguments.topics, 10.0)
        unknown = [topic for topic, msgtype in types.items() if message_class(msgtype) is None]
        if unknown:
            raise ConfigError("--topics", f"the types of {unknown} are not installed here", "record other topics")
        recording = McapRecording(arguments.output)
        sensor = {topic: (LATCHED_QOS if topic.endswith("markers") else qos_profile_sensor_data) for topic in types}
        recorder = Recorder(recording, types, outputs=None if arguments.outputs else {}, subscribe=sensor,
                            every_input=True)
        time.sleep(arguments.duration)
        recorder.close()
        print(f"wrote {recording.mcap_path}: " + ", ".join(f"{t} {n}" for t, n in recording.counts.items() if n))
        return 0
    except ConfigError as error:
        print(f"threed-llm record: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        probe.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
