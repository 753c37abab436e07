"""The shipped viewer configs (config/foxglove_layout.json, config/threed_llm.rviz) show topics that exist:
the node's outputs, the simulated camera's and the recordings' own, by the names the code uses."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from threed_llm_ros.ros.bag_record import OUTPUT_TOPICS, PROMPT_TOPIC
from threed_llm_ros.ros.demo import CAMERA_TOPICS

CONFIG = Path(__file__).resolve().parent.parent / "config"
OUSTER_CLOUD = "/os1_cloud_node/points"
KNOWN_TOPICS = {*OUTPUT_TOPICS, *CAMERA_TOPICS, PROMPT_TOPIC, OUSTER_CLOUD}


def _leaves(node: dict | str) -> list[str]:
    return [node] if isinstance(node, str) else _leaves(node["first"]) + _leaves(node["second"])


def test_the_foxglove_layout_shows_cloud_boxes_path_and_text() -> None:
    layout = json.loads((CONFIG / "foxglove_layout.json").read_text())
    panels = layout["configById"]
    assert sorted(_leaves(layout["layout"])) == sorted(panels)  # every panel placed, every placed panel set up
    scene = panels["3D!scene"]["topics"]
    assert {"/camera/points", "/grounding/markers", "/grounding/target_pose", "/plan/path"} <= set(scene)
    assert set(scene) <= KNOWN_TOPICS
    paths = [config.get("topicPath", "") for config in panels.values()]
    assert {"/answer.data", f"{PROMPT_TOPIC}.data", "/caption.data"} <= set(paths)
    assert {path.split(".")[0] for path in paths if path} <= KNOWN_TOPICS
    assert panels["Image!color"]["imageMode"]["imageTopic"] in KNOWN_TOPICS


def test_the_rviz_config_shows_cloud_boxes_pose_and_path() -> None:
    rviz = yaml.safe_load((CONFIG / "threed_llm.rviz").read_text())["Visualization Manager"]
    displays = {display["Class"].split("/")[-1] + ":" + display["Topic"]["Value"] for display in rviz["Displays"]
                if "Topic" in display}
    assert {"PointCloud2:/camera/points", "MarkerArray:/grounding/markers", "Pose:/grounding/target_pose",
            "Path:/plan/path"} <= displays
    assert {entry.split(":")[1] for entry in displays} <= KNOWN_TOPICS
    assert rviz["Global Options"]["Fixed Frame"] == "camera_color_optical_frame"  # scene_sim_node's frame_id


def test_up_foxglove_adds_the_live_view_to_the_graph(capsys) -> None:
    from threed_llm_ros.up import main as up_main

    assert up_main(["--print"]) == 0
    graph = capsys.readouterr().out.splitlines()
    assert up_main(["--foxglove", "--print"]) == 0
    commands = capsys.readouterr().out.splitlines()
    assert commands[:-1] == graph and "-m threed_llm_ros.ros.foxglove_live" in commands[-1]
    assert not any("foxglove_live" in command for command in graph)
