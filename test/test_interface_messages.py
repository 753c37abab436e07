"""The typed messages of a reply (threed_llm_interfaces) carry what the library's reply holds."""

from __future__ import annotations

import pytest

pytest.importorskip("rclpy")
pytest.importorskip("threed_llm_interfaces", reason="threed_llm_interfaces not built: run `make`")

from threed_llm_ros.geometry.boxes import OrientedBox  # noqa: E402
from threed_llm_ros.plans import Plan  # noqa: E402
from threed_llm_ros.ros.interface_messages import grounded_object, object_array, plan_message, plan_to_dict  # noqa: E402
from threed_llm_ros.runtime.replies import GroundedObject  # noqa: E402

pytestmark = pytest.mark.ros


def _cup() -> GroundedObject:
    return GroundedObject("red cup", 0.83, OrientedBox((1.0, 0.2, 0.5), (0.1, 0.08, 0.12), 0.3), (1.0, -0.5, 2.0),
                          (0.0, 0.0, 0.1494, 0.9888), "objects", category="cup", color="red", point_count=412)


def test_grounded_object_fields() -> None:
    message = grounded_object(_cup())
    assert (message.category, message.color, message.point_count) == ("cup", "red", 412)
    assert message.confidence == pytest.approx(0.83)
    assert (message.pose.position.x, message.pose.position.y, message.pose.position.z) == (1.0, -0.5, 2.0)
    assert message.pose.orientation.w == pytest.approx(0.9888)
    assert (message.size.x, message.size.y, message.size.z) == pytest.approx((0.1, 0.08, 0.12))


def test_object_array_carries_the_frame_and_stamp() -> None:
    array = object_array([_cup()], "camera_optical", (12, 345))
    assert array.header.frame_id == "camera_optical"
    assert (array.header.stamp.sec, array.header.stamp.nanosec) == (12, 345)
    assert [obj.category for obj in array.objects] == ["cup"]


def test_plan_round_trips_through_the_typed_message() -> None:
    plan = Plan("bring the red cup to the sofa", [
        {"action": "navigate_to", "target": "red cup", "pose": {"position": [0.5, -0.4, 1.6], "orientation": [0, 0, 0.1, 0.99]},
         "target_position": [1.0, -0.5, 2.0]},
        {"action": "pick", "target": "red cup"},
        {"action": "navigate_to", "target": "sofa", "seen": False},
        {"action": "place", "target": "red cup", "destination": "sofa"},
    ], "camera_optical", (7, 8), "program", "")
    message = plan_message(plan, [_cup()])
    assert message.header.frame_id == "camera_optical" and message.source == "program"
    assert [step.has_goal_pose for step in message.steps] == [True, False, False, False]
    assert [step.seen for step in message.steps] == [True, True, False, True]
    assert message.steps[0].target_object[0].category == "cup" and message.steps[1].target_object  # by label
    assert not message.steps[2].target_object
    assert plan_to_dict(message) == {**plan.to_dict(), "steps": [
        {**plan.steps[0], "pose": {"position": [0.5, -0.4, 1.6], "orientation": [0.0, 0.0, 0.1, 0.99]}},
        {"action": "pick", "target": "red cup", "target_position": [1.0, -0.5, 2.0]},
        plan.steps[2], plan.steps[3] | {"target_position": [1.0, -0.5, 2.0]}]}
