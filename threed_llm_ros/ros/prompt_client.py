"""``prompt_client``: send prompts to threed_llm_node and print each reply with its latency.

    python -m threed_llm_ros.ros.prompt_client --prompt "describe the scene" --prompt "where is the red cup?"

Streams the answer's pieces as they arrive (``answer/stream``), then prints the whole
answer, the latency (prompt sent → answer received) and, for grounding and plans, the
target pose and the plan's steps. Also a library class (:class:`PromptClient`) for the demo.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import rclpy
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Path
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String
from visualization_msgs.msg import MarkerArray

NODE_NAME = "prompt_client"
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


@dataclass
class Reply:
    """Everything the node sent back for one prompt."""

    prompt: str
    answer: str
    latency_s: float
    first_piece_s: float | None
    markers: MarkerArray | None = None
    target_pose: PoseStamped | None = None
    plan: dict[str, Any] | None = None
    path: Path | None = None
    pieces: list[str] = field(default_factory=list)


class PromptClient(Node):
    """Publishes on ``prompt``; collects ``answer``, ``answer/stream``, grounding and plan outputs."""

    def __init__(self, name: str = NODE_NAME) -> None:
        super().__init__(name)
        self._prompt = self.create_publisher(String, "prompt", RELIABLE)
        self.answers: list[tuple[float, str]] = []
        self.pieces: list[tuple[float, str]] = []
        self.latest: dict[str, tuple[float, Any]] = {}
        self.create_subscription(String, "answer", lambda m: self.answers.append((time.monotonic(), m.data)), RELIABLE)
        self.create_subscription(String, "answer/stream", lambda m: self.pieces.append((time.monotonic(), m.data)),
                                 QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        for topic, message_type, qos in (("grounding/markers", MarkerArray, LATCHED), ("grounding/target_pose", PoseStamped, RELIABLE),
                                         ("plan", String, LATCHED), ("plan/path", Path, LATCHED)):
            self.create_subscription(message_type, topic, self._keeper(topic), qos)

    def _keeper(self, topic: str) -> Callable[[Any], None]:
        def keep(message: Any) -> None:
            self.latest[topic] = (time.monotonic(), message)

        return keep

    def spin_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            rclpy.spin_once(self, timeout_sec=min(0.1, max(0.0, deadline - time.monotonic())))

    def wait_for_server(self, timeout_s: float) -> bool:
        """True once the node subscribes to ``prompt`` (it does when active)."""
        deadline = time.monotonic() + timeout_s
        while self._prompt.get_subscription_count() == 0:
            if time.monotonic() > deadline:
                return False
            rclpy.spin_once(self, timeout_sec=0.2)
        return True

    def ask(self, prompt: str, timeout_s: float = 300.0, on_piece: Callable[[str], None] | None = None) -> Reply | None:
        """Send ``prompt`` and wait for its answer (and the end of its stream); None on timeout."""
        answers_before, pieces_before = len(self.answers), len(self.pieces)
        sent = time.monotonic()
        self._prompt.publish(String(data=prompt))
        deadline = sent + timeout_s
        shown = pieces_before
        while time.monotonic() < deadline:
            rclpy.spin_once(self, timeout_sec=0.1)
            for _, piece in self.pieces[shown:]:
                if on_piece is not None and piece:
                    on_piece(piece)
            shown = len(self.pieces)
            stream = [piece for _, piece in self.pieces[pieces_before:]]
            if len(self.answers) > answers_before and "" in stream:
                break
        else:
            return None
        received, answer = self.answers[answers_before]
        self.spin_for(0.5)  # the other outputs travel on other topics
        pieces = self.pieces[pieces_before:]
        fresh = {topic: message for topic, (stamp, message) in self.latest.items() if stamp >= sent}
        plan = json.loads(fresh["plan"].data) if "plan" in fresh else None
        return Reply(prompt, answer, received - sent, (pieces[0][0] - sent) if pieces and pieces[0][1] else None,
                     fresh.get("grounding/markers"), fresh.get("grounding/target_pose"), plan, fresh.get("plan/path"),
                     [piece for _, piece in pieces])


def print_reply(reply: Reply | None, prompt: str) -> None:
    """Human-readable reply."""
    if reply is None:
        print(f"\n>>> {prompt}\n(no answer: timed out)")
        return
    first = f", first piece after {reply.first_piece_s:.2f} s" if reply.first_piece_s is not None else ""
    print(f"\n>>> {reply.prompt}\n{reply.answer}\n    (latency {reply.latency_s:.2f} s{first})")
    if reply.target_pose is not None:
        position = reply.target_pose.pose.position
        print(f"    target pose in {reply.target_pose.header.frame_id}: ({position.x:.2f}, {position.y:.2f}, {position.z:.2f})")
    if reply.plan is not None:
        for index, step in enumerate(reply.plan["steps"], 1):
            pose = step.get("pose")
            where = f" goal {pose['position']}" if pose else ""
            print(f"    {index}. {step['action']}({step['target']}{', ' + step['destination'] if step.get('destination') else ''}){where}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", action="append", required=True, help="a prompt (repeat for several)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for each answer")
    parser.add_argument("--wait", type=float, default=120.0, help="seconds to wait for the node to be active")
    arguments, ros_arguments = parser.parse_known_args(argv)
    rclpy.init(args=[sys.argv[0], *ros_arguments])
    client = PromptClient()
    try:
        if not client.wait_for_server(arguments.wait):
            print(f"no node subscribes to {client.resolve_topic_name('prompt')} (is threed_llm_node active?)", file=sys.stderr)
            return 1
        failures = 0
        for prompt in arguments.prompt:
            reply = client.ask(prompt, arguments.timeout)
            print_reply(reply, prompt)
            failures += reply is None
        return 1 if failures else 0
    except KeyboardInterrupt:
        return 130
    finally:
        client.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
