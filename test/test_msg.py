"""The msg/ definitions parse with the ROS 2 interface tool chain and match the JSON plan schema."""

from __future__ import annotations

from pathlib import Path

import pytest
from rosidl_adapter.parser import parse_message_file
from rosidl_adapter.msg import convert_msg_to_idl
from rosidl_parser.parser import parse_idl_file
from rosidl_parser.definition import IdlLocator

MSG_DIRECTORY = Path(__file__).resolve().parent.parent / "msg"
MESSAGE_FILES = sorted(MSG_DIRECTORY.glob("*.msg"))


def test_message_files_present() -> None:
    assert {path.stem for path in MESSAGE_FILES} >= {"Plan", "PlanStep", "GroundedObject"}


@pytest.mark.parametrize("path", MESSAGE_FILES, ids=lambda path: path.name)
def test_message_parses_with_rosidl_adapter(path: Path) -> None:
    spec = parse_message_file("threed_llm_ros", str(path))
    assert spec.msg_name == path.stem
    assert spec.fields, f"{path.name} defines no fields"


@pytest.mark.parametrize("path", MESSAGE_FILES, ids=lambda path: path.name)
def test_message_converts_to_idl_and_parses(path: Path, tmp_path: Path) -> None:
    output = convert_msg_to_idl(MSG_DIRECTORY.parent, "threed_llm_ros", path.relative_to(MSG_DIRECTORY.parent), tmp_path)
    idl = parse_idl_file(IdlLocator(tmp_path, output.relative_to(tmp_path)))
    messages = [element for element in idl.content.elements if type(element).__name__ == "Message"]
    assert len(messages) == 1
    assert messages[0].structure.namespaced_type.name == path.stem


def test_plan_step_fields_match_json_schema() -> None:
    """The JSON plan steps carry action, target and an optional pose: the .msg must too."""
    spec = parse_message_file("threed_llm_ros", str(MSG_DIRECTORY / "PlanStep.msg"))
    names = {field.name: str(field.type) for field in spec.fields}
    assert names["action"] == "string"
    assert names["target"] == "string"
    assert names["pose"] == "geometry_msgs/Pose"
    plan = parse_message_file("threed_llm_ros", str(MSG_DIRECTORY / "Plan.msg"))
    plan_fields = {field.name: str(field.type) for field in plan.fields}
    assert plan_fields["steps"] == "threed_llm_ros/PlanStep[]"
    assert plan_fields["header"] == "std_msgs/Header"
