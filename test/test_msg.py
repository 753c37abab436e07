"""The msg/, srv/ and action/ definitions parse with the ROS 2 interface tool chain and match the JSON plan schema."""

from __future__ import annotations

from pathlib import Path

import pytest
from rosidl_adapter.parser import parse_message_file
from rosidl_adapter.msg import convert_msg_to_idl
from rosidl_parser.parser import parse_idl_file
from rosidl_parser.definition import IdlLocator

MSG_DIRECTORY = Path(__file__).resolve().parent.parent / "msg"
MESSAGE_FILES = sorted(MSG_DIRECTORY.glob("*.msg"))
PACKAGE = "threed_llm_interfaces"


def test_message_files_present() -> None:
    assert {path.stem for path in MESSAGE_FILES} >= {"Plan", "PlanStep", "GroundedObject", "GroundedObjectArray"}


@pytest.mark.parametrize("path", MESSAGE_FILES, ids=lambda path: path.name)
def test_message_parses_with_rosidl_adapter(path: Path) -> None:
    spec = parse_message_file(PACKAGE, str(path))
    assert spec.msg_name == path.stem
    assert spec.fields, f"{path.name} defines no fields"


@pytest.mark.parametrize("path", MESSAGE_FILES, ids=lambda path: path.name)
def test_message_converts_to_idl_and_parses(path: Path, tmp_path: Path) -> None:
    output = convert_msg_to_idl(MSG_DIRECTORY.parent, PACKAGE, path.relative_to(MSG_DIRECTORY.parent), tmp_path)
    idl = parse_idl_file(IdlLocator(tmp_path, output.relative_to(tmp_path)))
    messages = [element for element in idl.content.elements if type(element).__name__ == "Message"]
    assert len(messages) == 1
    assert messages[0].structure.namespaced_type.name == path.stem


def test_plan_step_fields_match_json_schema() -> None:
    """The JSON plan steps carry action, target, destination, seen and a goal pose: the .msg must too."""
    spec = parse_message_file(PACKAGE, str(MSG_DIRECTORY / "PlanStep.msg"))
    names = {field.name: str(field.type) for field in spec.fields}
    assert names["action"] == "string"
    assert names["target"] == "string"
    assert names["destination"] == "string"
    assert names["seen"] == "bool"
    assert names["goal_pose"] == "geometry_msgs/Pose"
    assert names["target_object"] == f"{PACKAGE}/GroundedObject[<=1]"
    plan = parse_message_file(PACKAGE, str(MSG_DIRECTORY / "Plan.msg"))
    plan_fields = {field.name: str(field.type) for field in plan.fields}
    assert plan_fields["steps"] == f"{PACKAGE}/PlanStep[]"
    assert plan_fields["header"] == "std_msgs/Header"


def test_grounded_object_says_what_its_confidence_is() -> None:
    """Issue 19: the score is the object layer's, not the language model's confidence."""
    text = (MSG_DIRECTORY / "GroundedObject.msg").read_text()
    assert "object layer" in text and "model confidence" not in text.lower()


def test_ask_action_parses(tmp_path: Path) -> None:
    from rosidl_adapter.action import convert_action_to_idl

    root = MSG_DIRECTORY.parent
    output = convert_action_to_idl(root, PACKAGE, Path("action/Ask.action"), tmp_path)
    idl = parse_idl_file(IdlLocator(tmp_path, output.relative_to(tmp_path)))
    actions = [element for element in idl.content.elements if type(element).__name__ == "Action"]
    assert [action.namespaced_type.name for action in actions] == ["Ask"]
    goal = {member.name for member in actions[0].goal.structure.members}
    assert goal == {"prompt", "min_stamp"}


def test_get_objects_service_parses(tmp_path: Path) -> None:
    from rosidl_adapter.srv import convert_srv_to_idl

    output = convert_srv_to_idl(MSG_DIRECTORY.parent, PACKAGE, Path("srv/GetObjects.srv"), tmp_path)
    idl = parse_idl_file(IdlLocator(tmp_path, output.relative_to(tmp_path)))
    services = [element for element in idl.content.elements if type(element).__name__ == "Service"]
    assert [service.namespaced_type.name for service in services] == ["GetObjects"]
