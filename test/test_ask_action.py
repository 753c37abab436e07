"""The ``~/ask`` action and the typed ``objects`` / ``plan`` topics over real DDS (issue 21).

threed_llm_node runs in its own process with an untrained checkpoint; the test process plays
the sensor and the action client (rclpy's ActionClient on its own node).
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("threed_llm_interfaces", reason="threed_llm_interfaces not built: run `make`")

from action_msgs.msg import GoalStatus  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from nav_msgs.msg import Path as PathMessage  # noqa: E402
from rclpy.action import ActionClient  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import PointCloud2  # noqa: E402
from threed_llm_interfaces.action import Ask  # noqa: E402
from threed_llm_interfaces.msg import GroundedObjectArray, Plan  # noqa: E402

from test_threed_llm_node import (  # noqa: E402
    FRAME_ID, LATCHED, STARTUP_S, Probe, Publisher, _now, _seen_and_absent, _start_node,
)
from threed_llm_ros.data.sim.frames import simulate  # noqa: E402
from threed_llm_ros.plans import plan_text  # noqa: E402
from threed_llm_ros.processes import NodeProcess  # noqa: E402
from threed_llm_ros.ros.interface_messages import plan_to_dict  # noqa: E402
from threed_llm_ros.ros.conversions import arrays_to_pointcloud2, tuple_to_stamp  # noqa: E402
from threed_llm_ros.runtime.engine_settings import build_untrained_checkpoint  # noqa: E402
from threed_llm_ros.runtime.prompt_queue import busy_reply  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

QUEUE_DEPTH = 3  # three goals sent at once all fit, even before the worker takes the first
GOAL_S = 180.0
ACTION = "/threed_llm_node/ask"


class Goal:
    """One goal sent by the test: its feedback pieces, handle and result as they arrive."""

    def __init__(self, client: ActionClient, prompt: str, **goal_fields: Any) -> None:
        self.prompt = prompt
        self.pieces: list[str] = []
        self.handle: Any = None
        self.result: Any = None
        self.sent = time.monotonic()
        self._future = client.send_goal_async(Ask.Goal(prompt=prompt, **goal_fields),
                                              feedback_callback=lambda m: self.pieces.append(m.feedback.text))
        self._future.add_done_callback(self._accepted)

    def _accepted(self, future: Any) -> None:
        self.handle = future.result()
        if self.handle.accepted:
            self.handle.get_result_async().add_done_callback(lambda f: setattr(self, "result", f.result()))

    def done(self) -> bool:
        return self.result is not None


class Session:
    """The node process, a probe node with the action client, and a cloud publisher."""

    def __init__(self, process: NodeProcess, probe: Probe, client: ActionClient, sensor: Publisher,
                 stamps: set[tuple[int, int]], frame: Any) -> None:
        self.process, self.probe, self.client, self.sensor, self.stamps, self.frame = (
            process, probe, client, sensor, stamps, frame)

    def wait(self, goals: list[Goal], timeout: float = GOAL_S) -> None:
        self.probe.wait_for(lambda: all(goal.done() for goal in goals), timeout, self.process,
                            f"results of {[goal.prompt for goal in goals]}")


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> Session:
    directory = tmp_path_factory.mktemp("ask")
    checkpoint = build_untrained_checkpoint(directory / "untrained-mini")
    frame = simulate(3)
    keep = np.random.default_rng(0).choice(len(frame.points), 20_000, replace=False)
    cloud = arrays_to_pointcloud2(frame.points[keep], frame.colors[keep], frame_id=FRAME_ID)
    # replies of up to 160 tokens, so that a cancel lands mid-generation; the 0.3 s pause after
    # each inference keeps the queue full while the refusal test sends its goals
    process = _start_node(directory, checkpoint, "ask_node", prompt_queue_depth=QUEUE_DEPTH, max_new_tokens=160,
                          reply_timeout_s=120.0, inference_delay_s=0.3)
    probe = Probe("threed_llm_ask_probe")
    stamps: set[tuple[int, int]] = set()
    sensor = None
    try:
        probe.subscribe(GroundedObjectArray, "objects", LATCHED)
        probe.subscribe(Plan, "plan", LATCHED)
        probe.subscribe(PathMessage, "plan/path", LATCHED)
        probe.subscribe(DiagnosticArray, "/diagnostics")
        publisher = probe.node.create_publisher(PointCloud2, "points", qos_profile_sensor_data)
        client = ActionClient(probe.node, Ask, ACTION)
        probe.start()

        def publish_cloud() -> None:
            stamp = _now()
            cloud.header.stamp = tuple_to_stamp(stamp)
            stamps.add(stamp)
            publisher.publish(cloud)

        sensor = Publisher(4.0, publish_cloud)
        probe.wait_for(lambda: probe.latest_diagnostics().get("state") == "active"
                       and int(probe.latest_diagnostics().get("frames_received", 0)) > 0
                       and client.server_is_ready(), STARTUP_S, process, "the node active with ~/ask served")
        yield Session(process, probe, client, sensor, stamps, (frame.points[keep], frame.colors[keep]))
    finally:
        if sensor is not None:
            sensor.stop()
        probe.close()
        process.stop()


def _stamp(header: Any) -> tuple[int, int]:
    return header.stamp.sec, header.stamp.nanosec


def _pose(pose: Any) -> list[float]:
    return [pose.position.x, pose.position.y, pose.position.z,
            pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w]


def test_three_concurrent_goals_get_their_own_result_and_feedback(session: Session) -> None:
    prompts = ["Is there a red cup?", "What colour is the sofa?", "How many chairs are there?"]
    goals = [Goal(session.client, prompt) for prompt in prompts]  # all sent at once, from one client
    session.wait(goals)
    for goal in goals:
        assert goal.handle.accepted
        assert goal.result.status == GoalStatus.STATUS_SUCCEEDED, goal.result.result.status
        result = goal.result.result
        assert result.status == "ok" and result.intent == "question"
        assert result.text and "".join(goal.pieces) == result.text, (goal.pieces, result.text)
        assert result.header.frame_id == FRAME_ID and _stamp(result.header) in session.stamps
    assert len({id(goal.result) for goal in goals}) == 3


def test_typed_objects_and_plan_carry_the_reply(session: Session) -> None:
    seen, _ = _seen_and_absent(*session.frame)
    probe = session.probe
    objects_before = len(probe.messages("objects"))
    find = Goal(session.client, f"Where is the {seen}?")
    session.wait([find])
    result = find.result.result
    assert find.result.status == GoalStatus.STATUS_SUCCEEDED and result.intent == "find", result.status
    assert result.objects and result.objects[0].category == seen
    assert result.has_target_pose and result.target_pose.header.frame_id == FRAME_ID
    assert _pose(result.target_pose.pose) == _pose(result.objects[0].pose)
    assert "".join(find.pieces) == result.text
    probe.wait_for(lambda: len(probe.messages("objects")) > objects_before, 10, session.process, "typed objects")
    published = probe.messages("objects")[-1]
    assert published.header == result.header and list(published.objects) == list(result.objects)
    found = result.objects[0]
    assert 0.0 < found.confidence <= 1.0 and found.point_count > 0 and found.size.z > 0
    assert found.color, "the object layer names a colour"

    plans_before, paths_before = len(probe.messages("plan")), len(probe.messages("plan/path"))
    plan_goal = Goal(session.client, f"Go to the {seen} and look at it")
    session.wait([plan_goal])
    result = plan_goal.result.result
    assert result.intent == "plan" and result.status in ("ok", "cut_short"), result.status
    probe.wait_for(lambda: len(probe.messages("plan")) > plans_before and len(probe.messages("plan/path")) > paths_before,
                   10, session.process, "typed plan and path")
    plan, path = probe.messages("plan")[-1], probe.messages("plan/path")[-1]
    assert plan == result.plan
    assert plan.header.frame_id == FRAME_ID and _stamp(plan.header) in session.stamps
    assert plan.steps and result.text.startswith(plan_text(plan_to_dict(plan)["steps"]))
    assert plan.source in ("program", "model", "rules")
    goals = [step for step in plan.steps if step.has_goal_pose]
    assert [_pose(step.goal_pose) for step in goals] == [_pose(pose.pose) for pose in path.poses]  # the Path stays
    for step in goals:
        assert step.seen and step.target_object and step.target_object[0].category == seen


def test_goal_beyond_the_queue_depth_is_refused_with_the_reason(session: Session) -> None:
    running = Goal(session.client, "What is on the table, and what colour is it?")
    session.probe.wait_for(lambda: running.pieces or running.done(), GOAL_S, session.process, "the first goal running")
    waiting = [Goal(session.client, f"Is there a chair? ({index})") for index in range(QUEUE_DEPTH)]
    time.sleep(1.0)  # the waiting goals reach the node's queue first
    refused = Goal(session.client, "Is there a table?")
    session.wait([refused], 60)
    assert refused.handle.accepted  # accepted, then aborted at once with the reason in its result
    assert refused.result.status == GoalStatus.STATUS_ABORTED
    assert refused.result.result.status == busy_reply(QUEUE_DEPTH)
    waiting[-1].handle.cancel_goal_async()  # canceled while it waits: finished without a model call
    session.wait([running, *waiting])
    assert all(goal.result.status == GoalStatus.STATUS_SUCCEEDED for goal in [running, *waiting[:-1]])
    assert waiting[-1].result.status == GoalStatus.STATUS_CANCELED and not waiting[-1].pieces
    assert waiting[-1].result.result.status == "canceled"
    session.probe.wait_for(lambda: int(session.probe.latest_diagnostics().get("prompts_refused_busy", 0)) >= 1, 30,
                           session.process, "the refusal counted in /diagnostics")


def test_a_canceled_goal_stops_generating(session: Session) -> None:
    goal = Goal(session.client, "What is on the table, and what colour is it?")
    session.probe.wait_for(lambda: len(goal.pieces) >= 2 or goal.done(), GOAL_S, session.process, "feedback")
    assert not goal.done(), "the reply ended before the cancel: make it longer"
    canceled_at = time.monotonic()
    cancel = goal.handle.cancel_goal_async()
    session.wait([goal], 60)
    stopped_after = time.monotonic() - canceled_at
    pieces_then = len(goal.pieces)
    assert cancel.done() and len(cancel.result().goals_canceling) == 1
    assert goal.result.status == GoalStatus.STATUS_CANCELED
    assert goal.result.result.status == "canceled"
    assert stopped_after < 10.0, stopped_after
    assert len(goal.pieces) < 160, "generation ran to max_new_tokens"
    assert "".join(goal.pieces).startswith(goal.result.result.text)
    assert "canceled after" in session.process.output() and "generation stopped" in session.process.output()
    time.sleep(1.0)
    assert len(goal.pieces) == pieces_then, "feedback after the cancel"
    session.probe.wait_for(lambda: int(session.probe.latest_diagnostics().get("goals_canceled", 0)) >= 1, 30,
                           session.process, "the cancel counted in /diagnostics")
    after = Goal(session.client, "Is there a red cup?")  # the node keeps serving
    session.wait([after])
    assert after.result.status == GoalStatus.STATUS_SUCCEEDED



def _run(*arguments: str, timeout: float = 240.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *arguments], capture_output=True, text=True, timeout=timeout)


def test_prompt_client_streams_and_reports_refusal_and_cancel(session: Session) -> None:
    done = _run("threed_llm_ros.ros.prompt_client", "--wait", "60", "--prompt", "Is there a red cup?", "--prompt", "   ")
    assert done.returncode == 1, done.stdout + done.stderr  # the empty prompt is refused
    assert done.stdout.startswith(">>> Is there a red cup?\n") and done.stdout.count(">>> Is there a red cup?") == 1
    text, _, rest = done.stdout.removeprefix(">>> Is there a red cup?\n").partition("\n    (question, ok, latency")
    assert text and rest, done.stdout  # the pieces as they came, then the status line: the answer is not repeated
    assert done.stdout.count(text) == 1, done.stdout
    assert "(aborted: refused: the prompt is empty; send a question or an instruction)" in done.stdout

    canceled_before = int(session.probe.latest_diagnostics().get("goals_canceled", 0))
    timed_out = _run("threed_llm_ros.ros.prompt_client", "--wait", "60", "--timeout", "0.5", "--quiet",
                     "--prompt", "What is on the table, and what colour is it?")
    assert timed_out.returncode == 1
    assert "(no answer: timed out; the goal was canceled)" in timed_out.stdout
    session.probe.wait_for(lambda: int(session.probe.latest_diagnostics().get("goals_canceled", 0)) > canceled_before,
                           60, session.process, "the client's cancel reaching the node")


def test_threed_llm_ask_talks_to_a_running_node(session: Session) -> None:
    done = _run("threed_llm_ros.cli", "ask", "--node", "Is there a red cup?")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "(question, ok, latency" in done.stdout


def test_get_objects_lists_what_the_object_layer_sees(session: Session) -> None:
    from threed_llm_interfaces.srv import GetObjects

    seen, _ = _seen_and_absent(*session.frame)
    client = session.probe.node.create_client(GetObjects, "/threed_llm_node/get_objects")
    session.probe.wait_for(client.service_is_ready, 30, session.process, "the get_objects service")
    future = client.call_async(GetObjects.Request())
    session.probe.wait_for(future.done, 60, session.process, "the objects")
    response = future.result()
    assert response.success and response.message == f"{len(response.objects.objects)} objects"
    assert response.objects.header.frame_id == FRAME_ID and _stamp(response.objects.header) in session.stamps
    assert seen in {obj.category for obj in response.objects.objects}
    assert all(obj.confidence >= 0.5 and obj.point_count > 0 for obj in response.objects.objects)  # min_confidence

    listed = _run("threed_llm_ros.ros.prompt_client", "--wait", "60", "--objects")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert f"objects in {FRAME_ID}:" in listed.stdout and f" {seen} (" in listed.stdout
