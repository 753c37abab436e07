"""The live Foxglove view (``threed-llm view``, foxglove-sdk's WebSocket server) with a real WebSocket client:
it advertises the graph's topics with their ros2msg schemas, and a subscriber receives a scene update whose
CDR decodes to the simulated camera's ground-truth boxes."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import websocket

from threed_llm_ros.bags import ros2_typestore
from threed_llm_ros.processes import NodeProcess, NodeProcessSpec

pytestmark = [pytest.mark.slow, pytest.mark.ros]

REPO_ROOT = Path(__file__).resolve().parent.parent
SUBPROTOCOL = "foxglove.sdk.v1"  # the subprotocol foxglove-sdk 0.30 accepts
MESSAGE_DATA = 0x01  # binary opcode: subscription id (u32), log time (u64), payload
MARKERS = "/camera/ground_truth/markers"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _advertised(client: websocket.WebSocket, topic: str, deadline: float) -> dict:
    while time.monotonic() < deadline:
        try:
            frame = client.recv()
        except websocket.WebSocketTimeoutException:
            continue
        if isinstance(frame, str):
            message = json.loads(frame)
            for channel in message.get("channels", []) if message.get("op") == "advertise" else []:
                if channel["topic"] == topic:
                    return channel
    raise AssertionError(f"{topic} was not advertised")


def test_a_websocket_client_receives_the_scene_boxes(tmp_path: Path) -> None:
    port = _free_port()
    camera = NodeProcessSpec(module="threed_llm_ros.ros.scene_sim_node", namespace="/camera",
                             parameters={"rate_hz": 2.0, "width": 160, "height": 120, "seed": 3})
    view = subprocess.Popen([sys.executable, "-m", "threed_llm_ros.cli", "view", "--port", str(port)], cwd=REPO_ROOT,
                            stdout=open(tmp_path / "view.log", "w"), stderr=subprocess.STDOUT,  # noqa: SIM115
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        with NodeProcess(camera, log_path=tmp_path / "scene_sim_node.log"):
            deadline = time.monotonic() + 60
            client = None
            while client is None:
                try:
                    client = websocket.create_connection(f"ws://127.0.0.1:{port}", subprotocols=[SUBPROTOCOL],
                                                         timeout=1.0)
                except OSError:
                    assert view.poll() is None and time.monotonic() < deadline, (tmp_path / "view.log").read_text()
                    time.sleep(0.5)
            channel = _advertised(client, MARKERS, deadline)
            assert (channel["encoding"], channel["schemaName"]) == ("cdr", "visualization_msgs/msg/MarkerArray")
            assert channel["schemaEncoding"] == "ros2msg"
            client.send(json.dumps({"op": "subscribe", "subscriptions": [{"id": 7, "channelId": channel["id"]}]}))
            payload = None
            while payload is None and time.monotonic() < deadline:
                try:
                    frame = client.recv()
                except websocket.WebSocketTimeoutException:
                    continue
                if isinstance(frame, bytes) and frame[0] == MESSAGE_DATA:
                    subscription, _log_time = struct.unpack_from("<IQ", frame, 1)
                    assert subscription == 7
                    payload = frame[13:]
            client.close()
    finally:
        view.terminate()
        view.wait(timeout=20)
    assert payload is not None, (tmp_path / "view.log").read_text()
    markers = ros2_typestore().deserialize_cdr(payload, "visualization_msgs/msg/MarkerArray").markers
    cubes = [marker for marker in markers if marker.type == 1]
    labels = [marker.text for marker in markers if marker.type == 9]
    assert cubes and len(labels) == len(cubes) and all(labels)
    assert cubes[0].header.frame_id == "camera_color_optical_frame"
