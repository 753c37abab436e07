"""A prompt that reaches threed_llm_node before its first sensor frame (issue 18). Until reply_timeout_s after
activation the node waits for that frame instead of refusing at once (a camera started with the node); after
that, with still no frame, it refuses at once, saying which topics it listened to and for how long. Two real
node processes (one whose camera starts late, one with none), real DDS."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("threed_llm_interfaces", reason="threed_llm_interfaces not built: run `make`")

from action_msgs.msg import GoalStatus  # noqa: E402
from rclpy.action import ActionClient  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import PointCloud2  # noqa: E402
from threed_llm_interfaces.action import Ask  # noqa: E402

from test_ask_action import Goal  # noqa: E402
from test_threed_llm_node import FRAME_ID, MODULE, STARTUP_S, Probe, Publisher  # noqa: E402
from threed_llm_ros.data.sim.frames import simulate  # noqa: E402
from threed_llm_ros.processes import NodeProcess, NodeProcessSpec  # noqa: E402
from threed_llm_ros.ros.conversions import arrays_to_pointcloud2  # noqa: E402
from threed_llm_ros.runtime.engine_settings import build_untrained_checkpoint  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

REPLY_TIMEOUT_S = 8.0
CONFIG = Path(__file__).parent.parent / "config" / "threed_llm.yaml"


def _node(tmp_path: Path, checkpoint: Path, namespace: str) -> NodeProcess:
    spec = NodeProcessSpec(module=MODULE, namespace=namespace, parameter_files=[CONFIG], parameters={
        "checkpoint": str(checkpoint), "max_new_tokens": 4, "reply_timeout_s": REPLY_TIMEOUT_S})
    return NodeProcess(spec, log_path=tmp_path / f"{namespace.strip('/')}.log")


def test_a_prompt_before_the_first_frame_waits_for_it_or_says_what_it_waited_for(tmp_path: Path) -> None:
    checkpoint = build_untrained_checkpoint(tmp_path / "untrained-mini")
    frame = simulate(3)
    keep = np.random.default_rng(0).choice(len(frame.points), 20_000, replace=False)
    cloud = arrays_to_pointcloud2(frame.points[keep], frame.colors[keep], frame_id=FRAME_ID)
    late, blind = _node(tmp_path, checkpoint, "/late_camera"), _node(tmp_path, checkpoint, "/no_camera")
    probe = Probe("threed_llm_first_frame_probe")
    sensor = None
    try:
        publisher = probe.node.create_publisher(PointCloud2, "/late_camera/points", qos_profile_sensor_data)
        late_client = ActionClient(probe.node, Ask, "/late_camera/threed_llm_node/ask")
        blind_client = ActionClient(probe.node, Ask, "/no_camera/threed_llm_node/ask")
        probe.start()

        # the camera starts a second after the prompt: the prompt waits for its first frame and is answered
        probe.wait_for(late_client.server_is_ready, STARTUP_S, late, "the late-camera node active")
        answered = Goal(late_client, "Is there a red cup?")
        time.sleep(1.0)
        sensor = Publisher(4.0, lambda: publisher.publish(cloud))
        probe.wait_for(answered.done, 120, late, "the answer once the first frame came")
        assert answered.result.status == GoalStatus.STATUS_SUCCEEDED, answered.result.result.status
        assert answered.result.result.header.frame_id == FRAME_ID

        # no camera at all: refused once the window after activation has passed, saying what it listened to
        probe.wait_for(blind_client.server_is_ready, STARTUP_S, blind, "the no-camera node active")
        refused = Goal(blind_client, "Is there a red cup?")
        probe.wait_for(refused.done, 60, blind, "the refusal")
        assert refused.result.status == GoalStatus.STATUS_ABORTED
        reason = refused.result.result.status
        listened = re.match(r"refused: No sensor frame yet: nothing has arrived on /no_camera/points in the (\d+) s "
                            r"since the node became active \(prompts wait for the first frame until reply_timeout_s",
                            reason)
        assert listened and int(listened.group(1)) >= REPLY_TIMEOUT_S, reason
        again = Goal(blind_client, "Is there a red cup?")  # after the window: at once, not after another wait
        probe.wait_for(again.done, 60, blind, "the second refusal")
        assert again.result.status == GoalStatus.STATUS_ABORTED and time.monotonic() - again.sent < 3.0
    finally:
        if sensor is not None:
            sensor.stop()
        probe.close()
        late.stop()
        blind.stop()
