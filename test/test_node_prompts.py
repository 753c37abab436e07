"""Prompts over real DDS: a burst is queued up to ``prompt_queue_depth`` and the rest refused
"busy" at once; every prompt gets exactly one reply and the refusals are counted; a reply
stops at ``reply_timeout_s`` and says so (issue 17)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import PointCloud2  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from test_threed_llm_node import ANSWER_S, FRAME_ID, STARTUP_S, Probe, Publisher, _ask, _start_node  # noqa: E402
from threed_llm_ros.data.sim.frames import simulate  # noqa: E402
from threed_llm_ros.ros.conversions import arrays_to_pointcloud2  # noqa: E402
from threed_llm_ros.runtime.engine_settings import build_untrained_checkpoint  # noqa: E402
from threed_llm_ros.runtime.prompt_queue import busy_reply  # noqa: E402

pytestmark = pytest.mark.ros

BURST = 60
QUEUE_DEPTH = 5
DEEP = QoSProfile(depth=256, reliability=ReliabilityPolicy.RELIABLE)  # the sender must not overwrite its own burst


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return build_untrained_checkpoint(tmp_path_factory.mktemp("prompts") / "untrained-mini")


@pytest.mark.slow
def test_a_burst_of_prompts_gets_one_reply_each(tmp_path: Path, checkpoint: Path) -> None:
    frame = simulate(3)
    keep = np.random.default_rng(0).choice(len(frame.points), 20_000, replace=False)
    cloud = arrays_to_pointcloud2(frame.points[keep], frame.colors[keep], frame_id=FRAME_ID)
    # each answer takes at least 1 s, so the burst (milliseconds) arrives while the first is answered;
    # the deadline passes before the model starts writing, so every answer is cut short (not at max_new_tokens)
    process = _start_node(tmp_path, checkpoint, "burst_node", prompt_queue_depth=QUEUE_DEPTH, inference_delay_s=1.0,
                          reply_timeout_s=0.1, max_new_tokens=48)
    probe = Probe("threed_llm_node_burst_probe")
    sensor = None
    try:
        probe.subscribe(String, "answer", DEEP)
        probe.subscribe(String, "answer/stream", 256)
        probe.subscribe(DiagnosticArray, "/diagnostics")
        cloud_publisher = probe.node.create_publisher(PointCloud2, "points", qos_profile_sensor_data)
        prompt_publisher = probe.node.create_publisher(String, "prompt", DEEP)
        probe.start()
        sensor = Publisher(2.0, lambda: cloud_publisher.publish(cloud))
        probe.wait_for(lambda: probe.latest_diagnostics().get("state") == "active"
                       and int(probe.latest_diagnostics().get("frames_received", 0)) > 0
                       and prompt_publisher.get_subscription_count() > 0, STARTUP_S, process, "active")
        assert probe.latest_diagnostics()["prompts_refused_busy"] == "0"

        for index in range(BURST):
            prompt_publisher.publish(String(data=f"Is there a red cup? ({index})"))
        probe.wait_for(lambda: len(probe.messages("answer")) >= BURST, ANSWER_S + BURST, process, f"{BURST} replies")
        time.sleep(2.0)  # nothing more may come
        answers = [message.data for message in probe.messages("answer")]
        assert len(answers) == BURST
        busy = [text for text in answers if text.startswith("busy: ")]
        assert set(busy) == {busy_reply(QUEUE_DEPTH)}
        answered = [text for text in answers if not text.startswith("busy: ")]
        assert QUEUE_DEPTH <= len(answered) <= QUEUE_DEPTH + 3, answers  # the queue, plus the one being answered
        assert not any(text.startswith("Sorry") for text in answered)
        assert all(text.endswith(" [cut short: reply_timeout_s (0.1 s) reached]") for text in answered), answered
        probe.wait_for(lambda: int(probe.latest_diagnostics().get("received.prompt", 0)) == BURST
                       and probe.latest_diagnostics().get("prompts_refused_busy") == str(len(busy)),
                       30, process, "the refused prompts counted in /diagnostics")
        assert "prompts_refused_busy" in process.output()  # one (throttled) line names the count

        answer, _ = _ask(probe, prompt_publisher, process, "What colour is the sofa?")  # serving as before
        assert answer and not answer.startswith("busy") and process.running()
    finally:
        if sensor is not None:
            sensor.stop()
        probe.close()
        process.stop()
