"""Bags in, recordings out, over real DDS: ``make demo``'s MCAP read back with rosbags, and ``threed-llm play``
of the demo's simulator recording (RGB-D + camera_info) and of the real Ouster OS1-64 bag, each starting
threed_llm_node in its own process, asking, and recording the replies."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rosbags.highlevel import AnyReader

pytestmark = [pytest.mark.slow, pytest.mark.ros]

REPO_ROOT = Path(__file__).resolve().parent.parent
CUBE, TEXT = 1, 9  # visualization_msgs/Marker types
RGBD_TOPICS = ["/camera/color/image_raw", "/camera/depth/image_raw", "/camera/color/camera_info"]
OUTPUT_TYPES = {
    "/answer": "std_msgs/msg/String", "/recording/prompt": "std_msgs/msg/String",
    "/grounding/markers": "visualization_msgs/msg/MarkerArray",
    "/grounding/target_pose": "geometry_msgs/msg/PoseStamped",
    "/objects": "threed_llm_interfaces/msg/GroundedObjectArray", "/plan": "threed_llm_interfaces/msg/Plan",
    "/plan/path": "nav_msgs/msg/Path", "/caption": "std_msgs/msg/String",
}
COORDINATES = re.compile(r"at \((-?[\d.]+), (-?[\d.]+), (-?[\d.]+)\) m in (\S+),")


def _run(arguments: list[str], timeout: float = 600.0) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", *arguments], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})
    print(result.stdout[-4000:], result.stderr[-4000:])
    return result


def _read(directory: Path) -> tuple[dict[str, str], dict[str, list]]:
    """Topic -> type, and topic -> decoded messages, of a recording (rosbags, schemas from the MCAP)."""
    with AnyReader([directory]) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        messages: dict[str, list] = {}
        for connection, _, raw in reader.messages():
            messages.setdefault(connection.topic, []).append(reader.deserialize(raw, connection.msgtype))
    return types, messages


def _check_find_reply(answer: str, messages: dict[str, list]) -> None:
    """A find reply's text coordinates are its target pose, and a labelled box of the markers."""
    match = COORDINATES.search(answer)
    assert match, answer
    x, y, z, frame = float(match[1]), float(match[2]), float(match[3]), match[4]
    pose = messages["/grounding/target_pose"][-1]
    assert pose.header.frame_id == frame
    assert (round(pose.pose.position.x, 2), round(pose.pose.position.y, 2), round(pose.pose.position.z, 2)) == (x, y, z)
    markers = messages["/grounding/markers"][-1].markers
    cubes = [m for m in markers if m.type == CUBE]
    labels = {m.id: m.text for m in markers if m.type == TEXT}
    target = [m for m in cubes if abs(m.pose.position.x - pose.pose.position.x) < 1e-4
              and abs(m.pose.position.z - pose.pose.position.z) < 1e-4]
    assert target and target[0].header.frame_id == frame
    # "<label>, confidence <score>" names it
    assert labels[target[0].id].split(",")[0].split(" ")[-1] == answer.split(":")[0].split(" ")[-1]


@pytest.fixture(scope="module")
def demo_output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``make demo`` (threed_llm_ros.ros.demo) run once: the simulated camera + the node, three prompts."""
    output = tmp_path_factory.mktemp("demo")
    result = _run(["threed_llm_ros.ros.demo", "--output", str(output)])
    assert result.returncode == 0, result.stderr[-2000:]
    return output


def test_the_demo_recording_holds_inputs_and_outputs_matching_the_replies(demo_output: Path) -> None:
    types, messages = _read(demo_output / "recording")
    assert (demo_output / "recording" / "recording.mcap").is_file()
    for topic, msgtype in {**OUTPUT_TYPES, "/camera/points": "sensor_msgs/msg/PointCloud2",
                           "/camera/color/image_raw": "sensor_msgs/msg/Image",
                           "/camera/depth/image_raw": "sensor_msgs/msg/Image",
                           "/camera/color/camera_info": "sensor_msgs/msg/CameraInfo",
                           "/camera/ground_truth/markers": "visualization_msgs/msg/MarkerArray"}.items():
        assert types[topic] == msgtype
    replies = json.loads((demo_output / "replies.json").read_text())
    assert [m.data for m in messages["/recording/prompt"]] == [r["prompt"] for r in replies]
    assert [m.data for m in messages["/answer"]] == [r["answer"] for r in replies]
    for topic in ("/camera/points", "/camera/color/image_raw", "/camera/depth/image_raw", "/grounding/markers",
                  "/plan", "/plan/path"):
        assert messages.get(topic), f"nothing recorded on {topic}"
    frame = messages["/camera/points"][0].header.frame_id
    assert messages["/plan/path"][-1].header.frame_id == frame
    plan = messages["/plan"][-1]
    assert plan.instruction == replies[2]["prompt"] and [s.action for s in plan.steps] == \
        [s["action"] for s in replies[2]["plan"]["steps"]]
    if replies[1]["answer"] and "at (" in replies[1]["answer"]:
        _check_find_reply(replies[1]["answer"], messages)
    # the second question, answered by mono3d_node from the RGB image alone: a box with a pose, or "not seen"
    image_reply = json.loads((demo_output / "mono3d_reply.json").read_text())
    assert image_reply["prompt"].startswith("Where is the"), image_reply
    if image_reply["answer"].startswith("I don't see"):
        assert "target_pose" not in image_reply
    else:
        assert "(from the RGB image alone" in image_reply["answer"], image_reply
        assert image_reply["target_pose"]["frame_id"] == messages["/camera/color/image_raw"][0].header.frame_id


def test_play_of_the_simulator_recording_answers_over_rgbd(demo_output: Path, tmp_path: Path) -> None:
    """The demo's recording replayed as an RGB-D camera (colour, depth, camera_info) to a node play starts."""
    result = _run(["threed_llm_ros.cli", "play", str(demo_output / "recording"), "--topics", *RGBD_TOPICS,
                   "--start", "--prompt", "Describe the scene.", "--record", str(tmp_path / "replay.mcap"),
                   "--replies", str(tmp_path / "replies.json"), "--log-dir", str(tmp_path / "logs")])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "input rgbd from /camera/color/image_raw" in result.stdout
    replies = json.loads((tmp_path / "replies.json").read_text())
    assert replies[0]["status"] == "ok" and replies[0]["answer"].startswith("I see")
    types, messages = _read(tmp_path / "replay")
    assert [m.data for m in messages["/answer"]] == [replies[0]["answer"]]
    assert {topic: types[topic] for topic in RGBD_TOPICS} == {
        RGBD_TOPICS[0]: "sensor_msgs/msg/Image", RGBD_TOPICS[1]: "sensor_msgs/msg/Image",
        RGBD_TOPICS[2]: "sensor_msgs/msg/CameraInfo"}
    assert messages[RGBD_TOPICS[1]], "the depth frame the reply answered is recorded"


def test_play_of_the_ouster_bag_answers_in_the_lidar_frame(realdata: Path, tmp_path: Path) -> None:
    """The real OS1-64 bag as it comes (REP-103 frame os1_lidar, z up): the node takes up_axis z from the frame."""
    result = _run(["threed_llm_ros.cli", "play", str(realdata / "rosbag" / "ouster_os1_rosbag2"), "--start",
                   "--param", "max_range=20.0", "--prompt", "Describe the scene.", "--prompt", "Where is the chair?",
                   "--at", "0.0", "--at", "0.0", "--record", str(tmp_path / "ouster.mcap"),
                   "--replies", str(tmp_path / "replies.json"), "--log-dir", str(tmp_path / "logs")])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "frame 'os1_lidar', up_axis z" in result.stdout
    # tf2_msgs is built into the venv (make interfaces, vendor/tf2_msgs): /tf_static plays with the rest
    assert "skipping" not in result.stdout and "published 26 messages" in result.stdout
    replies = json.loads((tmp_path / "replies.json").read_text())
    assert all(reply["status"] == "ok" for reply in replies)
    types, messages = _read(tmp_path / "ouster")
    assert types["/os1_cloud_node/points"] == "sensor_msgs/msg/PointCloud2"
    assert messages["/os1_cloud_node/points"][0].header.frame_id == "os1_lidar"
    assert [m.data for m in messages["/answer"]] == [reply["answer"] for reply in replies]
    if "at (" in replies[1]["answer"]:
        _check_find_reply(replies[1]["answer"], messages)
    else:  # not seen: the markers say nothing is there
        assert not [m for m in messages["/grounding/markers"][-1].markers if m.type == CUBE]


def test_record_writes_every_message_of_the_simulated_camera(tmp_path: Path) -> None:
    """``threed-llm record`` (no ROS 2 CLI needed) of scene_sim_node: every frame, as published."""
    from threed_llm_ros.processes import NodeProcess, NodeProcessSpec

    spec = NodeProcessSpec(module="threed_llm_ros.ros.scene_sim_node", namespace="/camera",
                           parameters={"rate_hz": 4.0, "width": 160, "height": 120, "seed": 5})
    with NodeProcess(spec, log_path=tmp_path / "scene_sim_node.log"):
        result = _run(["threed_llm_ros.cli", "record", str(tmp_path / "sim.mcap"), "--duration", "2.0",
                       "--topics", *RGBD_TOPICS, "/camera/points"], timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    types, messages = _read(tmp_path / "sim")
    assert types["/camera/points"] == "sensor_msgs/msg/PointCloud2"
    for topic in [*RGBD_TOPICS, "/camera/points"]:
        assert len(messages[topic]) >= 4, topic  # 4 Hz for 2 s, a few lost to discovery at most
        assert messages[topic][0].header.frame_id == "camera_color_optical_frame"
    assert (messages["/camera/color/image_raw"][0].height, messages["/camera/color/image_raw"][0].width) == (120, 160)
