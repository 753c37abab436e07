"""``threed-llm play BAG``: replay a recorded bag over DDS, optionally start the node, ask, print and record.

    threed-llm play ouster_os1_rosbag2/                          # publish to a running graph
    threed-llm play ouster_os1_rosbag2/ --start --prompt "Describe the scene." --record out.mcap
    threed-llm play sim_bag/ --start --prompt "Where is the red cup?" --at 1.0 --rate 2

The bag (a rosbag2 directory, a .mcap, a ROS 1 .bag or ROS 1 MCAP: :mod:`threed_llm_ros.bags`) is
published at its recorded rate (``--rate`` scales it) under its own topic names (``--topic-map
SRC:DST`` renames), each message's CDR bytes unchanged, so headers (frame_id, stamp) arrive as
recorded. Topics whose type is not installed here are skipped with one line naming them.
On a robot with ROS 2, ``ros2 bag play BAG`` does this first half.

``--start`` also starts ``threed_llm_node`` (config/threed_llm.yaml, in its own process, as
``threed-llm up`` does) wired to the bag: its ``points`` to the bag's PointCloud2 topic, or with
``input: rgbd`` to the bag's colour image, depth image and camera_info. ``up_axis`` follows the
cloud's frame (REP-103: an ``*_optical_frame`` is ``-y``, any other frame ``z``; ``--up-axis``
overrides). Each ``--prompt`` goes to the node's ``~/ask`` action at its ``--at`` second of playback
(without ``--at``: once the bag has played through), and its reply is printed.

``--record OUT.mcap`` writes a rosbag2 directory ``OUT/`` (MCAP storage, ROS 2 CDR) holding the
node's outputs (answers, captions, markers, target pose, objects, plan, plan path), the prompts
asked (``/recording/prompt``) and the input frame each reply answered (the latest message of every
played topic, written when an output arrives: the recording stays small however long the bag).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from threed_llm_ros.bags import Bag, BagTopic, McapRecording, open_bag, recording_directory
from threed_llm_ros.errors import ConfigError
from threed_llm_ros.processes import NodeProcess, NodeProcessSpec
from threed_llm_ros.resources import config_path
from threed_llm_ros.ros.bag_record import Recorder, message_class
from threed_llm_ros.ros.prompt_client import PromptClient, Reply, print_reply
from threed_llm_ros.ros.qos import use_large_message_transport
from threed_llm_ros.up import parse_overrides

LATCHED_TYPES = {"tf2_msgs/msg/TFMessage"}
PUBLISH_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)  # matches best-effort and reliable readers


def parse_topic_map(items: list[str]) -> dict[str, str]:
    """['/a:/b', ...] -> {'/a': '/b'}; ConfigError on a malformed item."""
    mapping = {}
    for item in items:
        source, separator, target = item.partition(":")
        if not separator or not source.startswith("/") or not target.startswith("/"):
            raise ConfigError("--topic-map", f"got {item!r}", "write /recorded/topic:/published/topic")
        mapping[source] = target
    return mapping


@dataclass
class Playback:
    """Publishes a bag's messages at their recorded pace (scaled by ``rate``) on a thread of its own."""

    bag: Bag
    topics: dict[str, str]  # recorded topic -> published topic
    rate: float = 1.0
    loop: bool = False
    on_message: Callable[[str, bytes], None] | None = None
    node: Node = field(init=False)
    passes: int = field(init=False, default=0)
    published: int = field(init=False, default=0)
    error: str = field(init=False, default="")

    def __post_init__(self) -> None:
        self.node = Node("threed_llm_bag_player")
        types = {topic.name: topic.msgtype for topic in self.bag.topics}
        self._publishers = {}
        for source, target in self.topics.items():
            latched = types[source] in LATCHED_TYPES
            qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL) if latched else PUBLISH_QOS
            self._publishers[source] = self.node.create_publisher(message_class(types[source]), target, qos)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.started_at = 0.0

    def wait_for_readers(self, topics: list[str], timeout_s: float) -> list[str]:
        """Wait until each published topic in ``topics`` has a reader; returns those still without one."""
        deadline = time.monotonic() + timeout_s
        waiting = [topic for topic in topics if topic in self.topics.values()]
        publishers = {target: self._publishers[source] for source, target in self.topics.items()}
        while waiting and time.monotonic() < deadline:
            waiting = [topic for topic in waiting if publishers[topic].get_subscription_count() == 0]
            time.sleep(0.1)
        return waiting

    def start(self) -> None:
        self.started_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def elapsed_s(self) -> float:
        return time.monotonic() - self.started_at

    def _run(self) -> None:
        try:
            self._play()
        except Exception as error:  # noqa: BLE001 - said on one line; the prompts then time out
            self.error = f"{type(error).__name__}: {error}"
            print(f"[play] playback stopped: {self.error}", file=sys.stderr, flush=True)

    def _play(self) -> None:
        while not self._stop.is_set():
            first_ns, pass_start = None, time.monotonic()
            for message in self.bag.messages(set(self.topics)):
                first_ns = message.log_time_ns if first_ns is None else first_ns
                due = pass_start + (message.log_time_ns - first_ns) / 1e9 / self.rate
                if self._stop.wait(max(0.0, due - time.monotonic())):
                    return
                self._publishers[message.topic].publish(message.cdr)
                self.published += 1
                if self.on_message is not None:
                    self.on_message(self.topics[message.topic], message.cdr)
            self.passes += 1
            if not self.loop:
                return

    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self.node.destroy_node()


def _unplayable(bag: Bag, topic: BagTopic) -> str:
    """Why ``topic`` cannot be published here ('' = it can)."""
    message_type = message_class(topic.msgtype)
    if message_type is None:
        return f"its type {topic.msgtype} is not installed here"
    if topic.problem:
        return topic.problem
    if bag.is_ros1 and bag.field_names(topic.msgtype) != list(message_type.get_fields_and_field_types()):
        return f"its ROS 1 fields {bag.field_names(topic.msgtype)} are not ROS 2's {topic.msgtype}"
    return ""


def node_wiring(bag: Bag, topics: dict[str, str], up_axis: str | None) -> tuple[dict[str, Any], dict[str, str]]:
    """threed_llm_node's parameters and remappings for this bag: its cloud, else its RGB-D streams."""
    published = {topic.name: (topics[topic.name], topic.msgtype) for topic in bag.topics if topic.name in topics}
    clouds = [target for target, msgtype in published.values() if msgtype == "sensor_msgs/msg/PointCloud2"]
    images = [target for target, msgtype in published.values() if msgtype == "sensor_msgs/msg/Image"]
    infos = [target for target, msgtype in published.values() if msgtype == "sensor_msgs/msg/CameraInfo"]
    depth = [topic for topic in images if "depth" in topic]
    colour = [topic for topic in images if "depth" not in topic and ("color" in topic or "rgb" in topic)]
    if clouds:
        frame = _first_frame_id(bag, [s for s, (t, _) in published.items() if t == clouds[0]][0])
        axis = up_axis or ("-y" if frame.endswith("optical_frame") else "z")
        print(f"[play] threed_llm_node: input pointcloud from {clouds[0]} (frame {frame!r}, up_axis {axis})")
        return {"input": "pointcloud", "up_axis": axis}, {"points": clouds[0]}
    if depth and colour and infos:
        axis = up_axis or "-y"
        print(f"[play] threed_llm_node: input rgbd from {colour[0]}, {depth[0]}, {infos[0]} (up_axis {axis})")
        return ({"input": "rgbd", "up_axis": axis},
                {"color/image_raw": colour[0], "depth/image_raw": depth[0], "color/camera_info": infos[0]})
    raise ConfigError("BAG", f"{bag.path} has no PointCloud2 topic and no colour + depth Image + CameraInfo",
                      "record the camera's points, or its color/depth image_raw and camera_info")


def _first_frame_id(bag: Bag, topic: str) -> str:
    for message in bag.messages({topic}):
        return str(bag.deserialize(message).header.frame_id)
    return ""


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="threed-llm play", description=__doc__.splitlines()[0])
    parser.add_argument("bag", help="rosbag2 directory, .mcap (ROS 2 or ROS 1) or ROS 1 .bag")
    parser.add_argument("--topic-map", action="append", default=[], metavar="SRC:DST", help="publish SRC as DST")
    parser.add_argument("--topics", nargs="+", default=None, metavar="TOPIC", help="play only these recorded topics")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed (2 = twice as fast)")
    parser.add_argument("--loop", action="store_true", help="play again and again (until the prompts are answered "
                        "or Ctrl-C)")
    parser.add_argument("--start", action="store_true", help="also start threed_llm_node wired to the bag")
    parser.add_argument("--up-axis", choices=("-y", "z"), default=None, help="the node's up_axis (default: from the "
                        "cloud's frame: *_optical_frame -> -y, else z)")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="a threed_llm_node parameter (with --start), e.g. max_range=20.0")
    parser.add_argument("--prompt", action="append", default=[], help="ask this (repeat for several)")
    parser.add_argument("--at", action="append", type=float, default=[], metavar="SECONDS",
                        help="when to ask each prompt, in playback seconds (default: after the bag played through)")
    parser.add_argument("--record", type=Path, default=None, metavar="OUT.mcap",
                        help="write inputs and outputs as a rosbag2 MCAP directory OUT/")
    parser.add_argument("--replies", type=Path, default=None, metavar="FILE.json", help="write the replies as JSON")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds to wait for each answer")
    parser.add_argument("--wait", type=float, default=300.0, help="seconds to wait for the node to be active")
    parser.add_argument("--log-dir", type=Path, default=None, help="with --start: write the node's output there")
    arguments = parser.parse_args(argv)
    if arguments.rate <= 0:
        parser.error("--rate must be positive")
    if arguments.at and len(arguments.at) != len(arguments.prompt):
        parser.error(f"give one --at per --prompt (got {len(arguments.at)} --at for {len(arguments.prompt)} prompts)")
    return arguments


def _node_spec(parameters: dict[str, Any], remappings: dict[str, str], extra: list[str]) -> NodeProcessSpec:
    overrides = parse_overrides([f"threed_llm_node.{item}" for item in extra]).get("threed_llm_node", {})
    return NodeProcessSpec(module="threed_llm_ros.ros.threed_llm_node", name="threed_llm_node",
                           parameter_files=[config_path("threed_llm.yaml")],
                           parameters={"autostart": True, **parameters, **overrides}, remappings=remappings)


def _frames_received(client: PromptClient) -> Callable[[], int]:
    """How many frames threed_llm_node has taken in, from its /diagnostics (0 until it reports)."""
    seen = {"frames": 0}

    def on_diagnostics(message: DiagnosticArray) -> None:
        for status in message.status:
            if status.name.startswith("threed_llm_node"):
                for value in status.values:
                    if value.key == "frames_received" and value.value.isdigit():
                        seen["frames"] = int(value.value)

    client.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    return lambda: seen["frames"]


def _ask_all(client: PromptClient, playback: Playback, recorder: Recorder | None,
             arguments: argparse.Namespace) -> list[Reply | None]:
    """Ask each prompt at its time, once the node has a frame; print each reply."""
    frames = _frames_received(client)
    replies: list[Reply | None] = []
    times = arguments.at or [None] * len(arguments.prompt)
    for prompt, at in zip(arguments.prompt, times):
        while (playback.elapsed_s() < at if at is not None else playback.passes < 1 and playback.running()):
            client.spin_for(0.05)
        deadline = time.monotonic() + arguments.wait
        while frames() == 0 and time.monotonic() < deadline and not playback.error:  # else "No sensor frame yet"
            client.spin_for(0.1)
        if recorder is not None:
            recorder.prompt(prompt)
        reply = client.ask(prompt, arguments.timeout)
        print_reply(reply, prompt)
        if recorder is not None and reply is not None:
            recorder.answer(reply.answer)
        replies.append(reply)
    return replies


def _playable_topics(bag: Any, arguments: argparse.Namespace) -> dict[str, str]:
    """Recorded topic -> topic to publish on, for the topics asked for that can be played (the others are named)."""
    mapping = parse_topic_map(arguments.topic_map)
    known = {topic.name: topic for topic in bag.topics}
    unknown = [topic for topic in (arguments.topics or []) + list(mapping) if topic not in known]
    if unknown:
        raise ConfigError("--topics/--topic-map", f"{unknown} not in {bag.path}",
                          f"use recorded topics: {sorted(known)}")
    topics: dict[str, str] = {}
    for topic in bag.topics:
        if arguments.topics is not None and topic.name not in arguments.topics:
            continue
        problem = _unplayable(bag, topic)
        if problem:
            print(f"[play] skipping {topic.name}: {problem}")
            continue
        topics[topic.name] = mapping.get(topic.name, topic.name)
    print(f"[play] {bag.path}: {sum(known[t].count for t in topics)} messages on {len(topics)} topics, "
          f"{bag.duration_s:.2f} s recorded, rate {arguments.rate:g}")
    return topics


def _start_node(bag: Any, topics: dict[str, str], arguments: argparse.Namespace) -> tuple[NodeProcess, Any, list[str]]:
    """threed_llm_node wired to the bag's topics, in its own process: (process, its log path, its input topics)."""
    parameters, remappings = node_wiring(bag, topics, arguments.up_axis)
    spec = _node_spec(parameters, remappings, arguments.param)
    log_path = None
    if arguments.log_dir is not None:
        arguments.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = arguments.log_dir / "threed_llm_node.log"
    use_large_message_transport()  # before the node starts: it inherits the profile
    node_process = NodeProcess(spec, log_path=log_path)
    print(f"[play] started threed_llm_node (pid {node_process.process.pid})", flush=True)
    return node_process, log_path, sorted(set(remappings.values()))


def _write_replies(path: Any, prompts: list[str], replies: list[Any]) -> None:
    """The replies as JSON: prompt, answer, status ("timed out" where none came), latency and plan."""
    path.write_text(json.dumps([
        {"prompt": prompt, "answer": reply.answer if reply else None, "status": reply.status if reply else
         "timed out", "latency_s": round(reply.latency_s, 3) if reply else None,
         "plan": reply.plan if reply else None} for prompt, reply in zip(prompts, replies)],
        indent=2) + "\n")


def run(arguments: argparse.Namespace) -> int:
    """Play the bag (and start, ask, record as asked); the exit status: 0 when every prompt was answered."""
    bag = open_bag(arguments.bag)
    topics = _playable_topics(bag, arguments)
    if arguments.record is not None and recording_directory(arguments.record).exists():
        raise ConfigError("--record", f"{recording_directory(arguments.record)} exists already",
                          "remove it or give another name")
    node_process, log_path, node_inputs = None, None, sorted(set(topics.values()))
    if arguments.start:
        node_process, log_path, node_inputs = _start_node(bag, topics, arguments)
    use_large_message_transport()
    rclpy.init()
    recorder = playback = client = None
    try:
        recording = McapRecording(arguments.record) if arguments.record is not None else None
        types = {topic.name: topic.msgtype for topic in bag.topics}
        if recording is not None:
            recorder = Recorder(recording, {target: types[source] for source, target in topics.items()})
        playback = Playback(bag, topics, arguments.rate, arguments.loop,
                            on_message=recorder.keep_input if recorder is not None else None)
        if arguments.start or arguments.prompt:
            client = PromptClient("threed_llm_play_client")
            print("[play] waiting for threed_llm_node to be active ...", flush=True)
            if not client.wait_for_server(arguments.wait):
                print(f"[play] threed_llm_node did not become active in {arguments.wait:.0f} s"
                      + (f"; see {log_path}" if log_path else ""), file=sys.stderr)
                return 1
        unread = playback.wait_for_readers(node_inputs, 10.0 if client is not None else 2.0)
        if unread and (arguments.start or len(unread) == len(node_inputs)):
            print(f"[play] no reader yet on {unread}; publishing anyway")
        playback.start()
        replies = _ask_all(client, playback, recorder, arguments) if client is not None and arguments.prompt else []
        while playback.running() and not (arguments.loop and arguments.prompt):
            time.sleep(0.1)
        print(f"[play] published {playback.published} messages in {playback.passes} pass(es)")
        if arguments.replies is not None:
            _write_replies(arguments.replies, arguments.prompt, replies)
        failed = playback.error or not all(reply is not None and reply.answered for reply in replies)
        return 1 if failed else 0
    except KeyboardInterrupt:
        return 130
    finally:
        if playback is not None:
            playback.stop()
        if client is not None:
            client.destroy_node()
        if recorder is not None:
            recorder.close()
            print(f"[play] wrote {recorder.recording.mcap_path} ({sum(recorder.recording.counts.values())} messages)")
        rclpy.try_shutdown()
        if node_process is not None:
            node_process.stop()


def main(argv: list[str] | None = None) -> int:
    arguments = _arguments(argv)
    try:
        return run(arguments)
    except ConfigError as error:
        print(f"threed-llm play: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
