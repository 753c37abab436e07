"""A prompt that reaches threed_llm_node before its first sensor frame (issue 18): the node waits for
that frame (up to reply_timeout_s) instead of refusing at once, and when none comes it says which
topics it listened to and for how long. Real node process, real DDS."""

from __future__ import annotations

import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("threed_llm_interfaces", reason="threed_llm_interfaces not built: run `make`")

from action_msgs.msg import GoalStatus  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.action import ActionClient  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import PointCloud2  # noqa: E402
from threed_llm_interfaces.action import Ask  # noqa: E402

from test_ask_action import ACTION, Goal  # noqa: E402
from test_threed_llm_node import FRAME_ID, STARTUP_S, Probe, Publisher, _start_node  # noqa: E402
from threed_llm_ros.data.scene_sim import simulate  # noqa: E402
from threed_llm_ros.ros.conversions import arrays_to_pointcloud2  # noqa: E402
from threed_llm_ros.runtime.engine import build_untrained_checkpoint  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

REPLY_TIMEOUT_S = 4.0


def test_a_prompt_before_the_first_frame_waits_for_it_or_says_what_it_waited_for(tmp_path) -> None:
    checkpoint = build_untrained_checkpoint(tmp_path / "untrained-mini")
    frame = simulate(3)
    keep = np.random.default_rng(0).choice(len(frame.points), 20_000, replace=False)
    cloud = arrays_to_pointcloud2(frame.points[keep], frame.colors[keep], frame_id=FRAME_ID)
    process = _start_node(tmp_path, checkpoint, "first_frame_node", reply_timeout_s=REPLY_TIMEOUT_S)
    probe = Probe("threed_llm_first_frame_probe")
    sensor = None
    try:
        probe.subscribe(DiagnosticArray, "/diagnostics")
        publisher = probe.node.create_publisher(PointCloud2, "points", qos_profile_sensor_data)
        client = ActionClient(probe.node, Ask, ACTION)
        probe.start()
        probe.wait_for(lambda: probe.latest_diagnostics().get("state") == "active" and client.server_is_ready(),
                       STARTUP_S, process, "the node active with ~/ask served")

        refused = Goal(client, "Is there a red cup?")  # no camera at all: refused after the wait, saying so
        probe.wait_for(refused.done, 60, process, "the refusal")
        waited = time.monotonic() - refused.sent
        assert refused.result.status == GoalStatus.STATUS_ABORTED
        reason = refused.result.result.status
        assert reason.startswith("refused: No sensor frame yet: nothing has arrived on /points in the "), reason
        assert "since the node became active" in reason and "reply_timeout_s" in reason
        assert waited >= REPLY_TIMEOUT_S - 0.5, f"refused after {waited:.1f} s without waiting for a frame"

        answered = Goal(client, "Is there a red cup?")  # the camera starts while this prompt waits
        time.sleep(1.0)
        sensor = Publisher(4.0, lambda: publisher.publish(cloud))
        probe.wait_for(answered.done, 120, process, "the answer once the first frame came")
        assert answered.result.status == GoalStatus.STATUS_SUCCEEDED, answered.result.result.status
        assert answered.result.result.header.frame_id == FRAME_ID
    finally:
        if sensor is not None:
            sensor.stop()
        probe.close()
        process.stop()
