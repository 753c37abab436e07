"""The prompt routing table of runtime/intent.py and its rule-based plan fallback."""

from __future__ import annotations

import pytest

from threed_llm_ros.runtime.intent import EmptyPromptError, Intent, route, rule_based_plan

ROUTING_TABLE = [
    # prompt, intent, target, destination
    ("Describe the scene.", "describe", "", ""),
    ("What is in this room?", "describe", "", ""),
    ("what do you see", "describe", "", ""),
    ("Please summarise the scene", "describe", "", ""),
    ("Give a short description of the room.", "describe", "", ""),
    ("Where is the red cup?", "find", "red cup", ""),
    ("Robot, where's the sofa?", "find", "sofa", ""),
    ("Find the blue chair next to the table.", "find", "blue chair next to the table", ""),
    ("Locate the lamp", "find", "lamp", ""),
    ("Give the 3D box of the white desk.", "find", "white desk", ""),
    ("Bring the red cup to the sofa.", "plan", "red cup", "sofa"),
    ("Can you put the book on the desk?", "plan", "book", "desk"),
    ("Take the cup over to the table", "plan", "cup", "table"),
    ("Go to the bed.", "plan", "bed", ""),
    ("Navigate to the white desk.", "plan", "white desk", ""),
    ("Pick up the green box", "plan", "green box", ""),
    ("Look at the lamp", "plan", "lamp", ""),
    ("Throw away the bottle.", "plan", "bottle", ""),
    ("Is there a red cup?", "question", "", ""),
    ("How many chairs are there?", "question", "", ""),
    ("Describe the red chair.", "question", "", ""),  # one object, not the scene
    ("What colour is the sofa?", "question", "", ""),
]


@pytest.mark.parametrize(("prompt", "kind", "target", "destination"), ROUTING_TABLE)
def test_routing_table(prompt: str, kind: str, target: str, destination: str) -> None:
    intent = route(prompt)
    assert (intent.kind, intent.target, intent.destination) == (kind, target, destination)
    assert intent.prompt == prompt.strip()


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
def test_empty_prompt_is_a_format_error(prompt: str) -> None:
    with pytest.raises(EmptyPromptError, match="prompt"):
        route(prompt)


def test_rule_based_plans_use_the_plan_text_actions() -> None:
    bring = rule_based_plan(route("Bring the red cup to the sofa."))
    assert bring == [
        {"action": "navigate_to", "target": "red cup"},
        {"action": "pick", "target": "red cup"},
        {"action": "navigate_to", "target": "sofa"},
        {"action": "place", "target": "red cup", "destination": "sofa"},
    ]
    assert rule_based_plan(route("Go to the bed")) == [{"action": "navigate_to", "target": "bed"}]
    assert rule_based_plan(route("Face the lamp")) == [{"action": "look_at", "target": "lamp"}]
    assert rule_based_plan(route("Throw away the bottle"))[-1] == {
        "action": "place", "target": "bottle", "destination": "trash can"}
    assert rule_based_plan(route("Where is the cup?")) == []
    assert rule_based_plan(Intent("plan", "do something")) == []
