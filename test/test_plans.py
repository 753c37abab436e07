"""A plan's text form, its parse, its published JSON and its check (``threed_llm_ros/plans.py``)."""

from __future__ import annotations

import json

import pytest

from threed_llm_ros.errors import MessageFormatError
from threed_llm_ros.plans import Plan, parse_plan_text, plan_problems, plan_text

STEPS = [
    {"action": "navigate_to", "target": "red cup"},
    {"action": "pick", "target": "red cup"},
    {"action": "navigate_to", "target": "sofa"},
    {"action": "place", "target": "red cup", "destination": "sofa"},
]


def test_plan_text_round_trip_and_parser_tolerance() -> None:
    text = plan_text(STEPS)
    assert text == "navigate_to(red cup) ; pick(red cup) ; navigate_to(sofa) ; place(red cup, sofa)"
    assert parse_plan_text(text) == STEPS
    assert parse_plan_text("1. navigate_to(red cup)\n2) pick( red cup )\nthen I will rest\nplace(red cup, sofa).") == [
        STEPS[0], STEPS[1], STEPS[3],
    ]
    assert parse_plan_text("I cannot do that.") == []


def test_published_plan_reads_back_and_names_its_goals() -> None:
    steps = [dict(STEPS[0], pose={"position": [1.0, 0.5, 0.0], "orientation": [0.0, 0.0, 0.0, 1.0]}), STEPS[1],
             dict(STEPS[2], seen=False), STEPS[3]]
    plan = Plan("Bring the red cup to the sofa.", steps, "camera_link", (17, 250), "program", plan_text(steps))
    published = json.loads(plan.to_json())
    assert published["stamp"] == {"sec": 17, "nanosec": 250} and published["frame_id"] == "camera_link"
    assert plan_problems(published) == []
    assert Plan.from_json(plan.to_json()) == plan
    assert plan.goals() == [([1.0, 0.5, 0.0], [0.0, 0.0, 0.0, 1.0])]  # the unseen sofa has no goal
    assert plan.summary() == f"{plan_text(steps)} [program]"
    assert Plan("Dance.").summary() == "no plan [rules]"


@pytest.mark.parametrize("broken, problem", [
    ("not json", "is not JSON"),
    ("[]", "expected an object"),
    ('{"instruction": "x", "steps": [{"action": "pick"}], "stamp": {}, "frame_id": "f"}', "steps[0]: needs string action and target"),
    ('{"instruction": "x", "steps": [{"action": "navigate_to", "target": "t", "pose": {"position": [0, 0, 0], '
     '"orientation": [0, 0, 0, 2]}}], "stamp": {}, "frame_id": "f"}', "not a unit quaternion"),
    ('{"steps": []}', "instruction: missing"),
])
def test_a_broken_plan_is_refused_naming_the_problem(broken: str, problem: str) -> None:
    with pytest.raises(MessageFormatError, match="plan") as raised:
        Plan.from_json(broken)
    assert problem in str(raised.value)
