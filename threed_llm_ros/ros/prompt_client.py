"""``prompt_client``: ask threed_llm_node through its ``~/ask`` action and print each reply.

    python -m threed_llm_ros.ros.prompt_client --prompt "describe the scene" --prompt "where is the red cup?"

Each prompt is one ``threed_llm_interfaces/Ask`` goal: the text pieces print as the model writes
them (the goal's feedback), then the whole reply, its status, the latency (goal sent → result)
and, for grounding and plans, the target pose and the plan's steps. A goal the node refuses
(queue full, no frame, an empty or too long prompt) prints the node's reason and counts as a
failure; Ctrl-C or ``--timeout`` cancels the goal being answered (the node stops generating).
``--objects`` lists what the node's object layer sees now (its ``~/get_objects`` service).
Also a library class (:class:`PromptClient`) for the demo and ``threed-llm ask --node``.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import rclpy
from action_msgs.msg import GoalStatus
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Path
from rclpy.action import ActionClient
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from visualization_msgs.msg import MarkerArray

from threed_llm_ros.ros.interface_messages import Ask, GetObjects, plan_to_dict

NODE_NAME = "prompt_client"
DEFAULT_ACTION = "/threed_llm_node/ask"
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
STATUS_NAMES = {GoalStatus.STATUS_SUCCEEDED: "succeeded", GoalStatus.STATUS_ABORTED: "aborted",
                GoalStatus.STATUS_CANCELED: "canceled"}


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
    status: str = "ok"  # the result's status: ok, cut_short, canceled, busy: ..., refused: ..., error: ...
    goal_status: str = "succeeded"  # succeeded, aborted, canceled, rejected
    intent: str = ""
    frame_id: str = ""  # the sensor frame the reply is about: every coordinate of the reply is in it

    @property
    def answered(self) -> bool:
        return self.goal_status == "succeeded"


class PromptClient(Node):
    """An ``Ask`` action client of threed_llm_node; also keeps the latest grounding markers and plan path."""

    def __init__(self, name: str = NODE_NAME, action: str = DEFAULT_ACTION) -> None:
        super().__init__(name)
        self._client = ActionClient(self, Ask, action)
        self._objects = self.create_client(GetObjects, action.rsplit("/", 1)[0] + "/get_objects")
        self.action = action
        self.latest: dict[str, tuple[float, Any]] = {}
        for topic, message_type in (("grounding/markers", MarkerArray), ("plan/path", Path)):
            self.create_subscription(message_type, topic, self._keeper(topic), LATCHED)

    def _keeper(self, topic: str) -> Callable[[Any], None]:
        def keep(message: Any) -> None:
            self.latest[topic] = (time.monotonic(), message)

        return keep

    def spin_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            rclpy.spin_once(self, timeout_sec=min(0.1, max(0.0, deadline - time.monotonic())))

    def _spin_until(self, future: Any, deadline: float) -> bool:
        while not future.done():
            if time.monotonic() > deadline:
                return False
            rclpy.spin_once(self, timeout_sec=0.1)
        return True

    def wait_for_server(self, timeout_s: float) -> bool:
        """True once the node serves its ``ask`` action (it does while active)."""
        deadline = time.monotonic() + timeout_s
        while not self._client.server_is_ready():
            if time.monotonic() > deadline:
                return False
            rclpy.spin_once(self, timeout_sec=0.2)
        return True

    def ask(self, prompt: str, timeout_s: float = 300.0, on_piece: Callable[[str], None] | None = None) -> Reply | None:
        """Send ``prompt`` as a goal and wait for its result; None when no result came in ``timeout_s``
        (the goal is then canceled). Ctrl-C cancels the goal, then raises KeyboardInterrupt."""
        pieces: list[tuple[float, str]] = []

        def feedback(message: Any) -> None:
            pieces.append((time.monotonic(), message.feedback.text))
            if on_piece is not None:
                on_piece(message.feedback.text)

        if not self.wait_for_server(timeout_s):  # a goal sent before discovery would be lost
            return None
        sent = time.monotonic()
        deadline = sent + timeout_s
        sending = self._client.send_goal_async(Ask.Goal(prompt=prompt), feedback_callback=feedback)
        if not self._spin_until(sending, deadline):
            return None
        handle = sending.result()
        if not handle.accepted:
            return Reply(prompt, "", time.monotonic() - sent, None, status="rejected by the node",
                         goal_status="rejected")
        getting = handle.get_result_async()
        try:
            if not self._spin_until(getting, deadline):
                self._cancel(handle)
                return None
        except KeyboardInterrupt:
            self._cancel(handle)
            raise
        received = time.monotonic()
        response = getting.result()
        result = response.result
        self.spin_for(0.3)  # markers and the path travel on their own topics
        fresh = {topic: message for topic, (stamp, message) in self.latest.items() if stamp >= sent}
        plan = plan_to_dict(result.plan) if result.intent == "plan" else None
        return Reply(prompt, result.text, received - sent, (pieces[0][0] - sent) if pieces else None,
                     fresh.get("grounding/markers"), result.target_pose if result.has_target_pose else None, plan,
                     fresh.get("plan/path"), [piece for _, piece in pieces], result.status,
                     STATUS_NAMES.get(response.status, str(response.status)), result.intent, result.header.frame_id)

    def objects(self, timeout_s: float = 60.0) -> Any | None:
        """The node's ``get_objects`` response (the confident objects of its latest frame); None on timeout."""
        deadline = time.monotonic() + timeout_s
        while not self._objects.service_is_ready():
            if time.monotonic() > deadline:
                return None
            rclpy.spin_once(self, timeout_sec=0.2)
        calling = self._objects.call_async(GetObjects.Request())
        return calling.result() if self._spin_until(calling, deadline) else None

    def _cancel(self, handle: Any) -> None:
        canceling = handle.cancel_goal_async()
        self._spin_until(canceling, time.monotonic() + 5.0)


def print_reply(reply: Reply | None, prompt: str, streamed: bool = False) -> None:
    """Human-readable reply, its text once. ``streamed``: ``>>> prompt`` and the text's pieces are already on the
    screen (printed as they came), so only the rest of the text follows, then the status,
    latency and poses. Coordinates are given with the frame they are in."""
    if not streamed:
        print(f"\n>>> {prompt if reply is None else reply.prompt}")
    if reply is None:
        print(("\n" if streamed else "") + "(no answer: timed out; the goal was canceled)")
        return
    already = "".join(reply.pieces) if streamed else ""
    if not reply.answered:
        print(("\n" if already else "") + f"({reply.goal_status}: {reply.status})")
        return
    print(reply.answer[len(already):] if reply.answer.startswith(already) else "\n" + reply.answer)
    first = f", first piece after {reply.first_piece_s:.2f} s" if reply.first_piece_s is not None else ""
    print(f"    ({reply.intent}, {reply.status}, latency {reply.latency_s:.2f} s{first})")
    if reply.target_pose is not None:
        position = reply.target_pose.pose.position
        print(f"    target pose: ({position.x:.2f}, {position.y:.2f}, {position.z:.2f}) m "
              f"in {reply.target_pose.header.frame_id}")
    if reply.plan is not None:
        for index, step in enumerate(reply.plan["steps"], 1):
            pose = step.get("pose")
            where = (f" goal ({', '.join(f'{value:.2f}' for value in pose['position'])}) m in {reply.frame_id}"
                     if pose else "")
            print(f"    {index}. {step['action']}({step['target']}{', ' + step['destination'] if step.get('destination') else ''}){where}")


def print_objects(response: Any | None) -> None:
    """Human-readable ``get_objects`` response."""
    if response is None:
        print("(no objects: the node did not answer in time)")
        return
    if not response.success:
        print(f"(no objects: {response.message})")
        return
    frame = response.objects.header.frame_id
    print(f"{response.message} in {frame}:")
    for obj in response.objects.objects:
        p = obj.pose.position
        print(f"    {obj.color} {obj.category} (confidence {obj.confidence:.2f}, {obj.point_count} points): "
              f"({p.x:.2f}, {p.y:.2f}, {p.z:.2f}) m, size {obj.size.x:.2f} x {obj.size.y:.2f} x {obj.size.z:.2f} m")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", action="append", default=[], help="a prompt (repeat for several)")
    parser.add_argument("--objects", action="store_true", help="list the objects the node sees now (~/get_objects)")
    parser.add_argument("--action", default=DEFAULT_ACTION, help="the node's Ask action (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for each answer (then cancel)")
    parser.add_argument("--wait", type=float, default=120.0, help="seconds to wait for the node to be active")
    parser.add_argument("--quiet", action="store_true", help="do not print the pieces as they arrive")
    arguments, ros_arguments = parser.parse_known_args(argv)
    if not arguments.prompt and not arguments.objects:
        parser.error("give --prompt (one or more) and/or --objects")
    rclpy.init(args=[sys.argv[0], *ros_arguments])
    client = PromptClient(action=arguments.action)
    try:
        if not client.wait_for_server(arguments.wait):
            print(f"no node serves the action {arguments.action} (is threed_llm_node active? else give --action)",
                  file=sys.stderr)
            return 1
        failures = 0
        if arguments.objects:
            response = client.objects(arguments.timeout)
            print_objects(response)
            failures += response is None or not response.success
        for prompt in arguments.prompt:
            on_piece = None if arguments.quiet else (lambda piece: print(piece, end="", flush=True))
            if on_piece is not None:
                print(f">>> {prompt}")
            reply = client.ask(prompt, arguments.timeout, on_piece)
            print_reply(reply, prompt, streamed=on_piece is not None)
            failures += reply is None or not reply.answered
        return 1 if failures else 0
    except KeyboardInterrupt:
        print("\ncanceled", file=sys.stderr)
        return 130
    finally:
        client.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
