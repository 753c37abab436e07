"""Fuzzing threed_llm_node over real DDS (issue 17): hypothesis-generated PointCloud2, Image,
CameraInfo and prompt messages, sent from this process to the node in its own process.

The node must stay alive, count every bad input in /diagnostics (as many as the same
decoders reject here), give every prompt one reply, and answer a valid prompt afterwards.
Sensor topics are reliable with a deep queue here (``qos_reliability: reliable``), so every
message sent reaches the node and the counts can be exact. Bounded: a few hundred messages
per input type, derandomized (the same messages every run), no shrinking.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
hypothesis = pytest.importorskip("hypothesis")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from test_threed_llm_node import ANSWER_S, FRAME_ID, STARTUP_S, Probe, _ask, _now, _start_node  # noqa: E402
from threed_llm_ros.data.sim.frames import simulate  # noqa: E402
from threed_llm_ros.errors import MessageFormatError  # noqa: E402
from threed_llm_ros.geometry.camera import CameraIntrinsics  # noqa: E402
from threed_llm_ros.ros.conversions import (  # noqa: E402
    array_to_image,
    arrays_to_pointcloud2,
    camera_info_to_intrinsics,
    depth_image_to_metres,
    depth_metres_to_image,
    image_to_rgb,
    intrinsics_to_camera_info,
    pointcloud2_to_arrays,
    tuple_to_stamp,
)
from threed_llm_ros.runtime.engine_settings import build_untrained_checkpoint  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

MESSAGES = 300  # per sensor input type
PROMPTS = 200
DEEP = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
NODE = {"qos_reliability": "reliable", "qos_depth": 1000, "reply_timeout_s": 3.0, "max_prompt_chars": 300}
FUZZ = settings(max_examples=MESSAGES, deadline=None, database=None, derandomize=True, phases=[Phase.generate],
                suppress_health_check=list(HealthCheck))

# --------------------------------------------------------------------------- strategies

uint32 = st.one_of(st.integers(0, 64), st.sampled_from([2**31 - 1, 2**31, 2**32 - 1]))
names = st.one_of(st.sampled_from(["x", "y", "z", "rgb", "rgba", "r", "g", "b", "intensity", ""]),
                  st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12))
floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, 5e-324, 1e308, -1.0, 525.0]))


@st.composite
def point_clouds(draw: Callable[..., Any]) -> PointCloud2:
    """Mostly near-valid clouds (a real cloud's layout, then some fields, sizes or bytes changed)."""
    count = draw(st.integers(0, 40))
    xyz = draw(st.sampled_from([np.float32, np.float64]))
    points = np.asarray(draw(st.lists(st.tuples(floats, floats, floats), min_size=count, max_size=count)) or
                        np.empty((0, 3)), dtype=np.float64).reshape(-1, 3)
    with np.errstate(over="ignore", invalid="ignore"):
        points = points.astype(xyz)
    colours = np.full((len(points), 3), 128, np.uint8) if draw(st.booleans()) else None
    message = arrays_to_pointcloud2(points, colours, frame_id=FRAME_ID, xyz_dtype=np.dtype(xyz).name)
    mutations = draw(st.lists(st.sampled_from(["fields", "datatype", "offset", "count", "steps", "size", "data",
                                               "endian", "duplicate"]), max_size=3))
    fields = list(message.fields)
    for mutation in mutations:
        if mutation == "fields" and fields:
            fields.pop(draw(st.integers(0, len(fields) - 1)))
        elif mutation == "datatype" and fields:
            field = fields[draw(st.integers(0, len(fields) - 1))]
            field.datatype = draw(st.integers(0, 255))
        elif mutation == "offset" and fields:
            fields[draw(st.integers(0, len(fields) - 1))].offset = draw(uint32)
        elif mutation == "count" and fields:
            fields[draw(st.integers(0, len(fields) - 1))].count = draw(uint32)
        elif mutation == "steps":
            message.point_step, message.row_step = draw(uint32), draw(uint32)
        elif mutation == "size":
            message.height, message.width = draw(uint32), draw(uint32)
        elif mutation == "data":
            message.data = draw(st.binary(max_size=2048))
        elif mutation == "endian":
            message.is_bigendian = not message.is_bigendian
        elif mutation == "duplicate" and fields:
            fields.append(PointField(name=draw(names), offset=draw(uint32), datatype=draw(st.integers(0, 12)),
                                     count=draw(st.integers(0, 3))))
    message.fields = fields
    return message


ENCODINGS = ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "8UC1", "mono16", "16UC1", "32FC1", "yuv422", "", "rgb8\n"]


@st.composite
def images(draw: Callable[..., Any]) -> Image:
    message = Image(encoding=draw(st.sampled_from(ENCODINGS)), height=draw(st.integers(0, 12)),
                    width=draw(st.integers(0, 12)), is_bigendian=draw(st.integers(0, 1)))
    message.header.frame_id = FRAME_ID
    message.header.stamp.sec = draw(st.integers(0, 3))
    bytes_per_pixel = draw(st.sampled_from([1, 2, 3, 4]))
    message.step = draw(st.one_of(st.just(message.width * bytes_per_pixel), uint32))
    length = message.step * message.height if message.step * message.height <= 4096 else 0
    message.data = draw(st.one_of(st.binary(min_size=length, max_size=length), st.binary(max_size=600)))
    return message


@st.composite
def camera_infos(draw: Callable[..., Any]) -> CameraInfo:
    message = CameraInfo(height=draw(uint32), width=draw(uint32), distortion_model=draw(st.sampled_from(["plumb_bob", "", "x"])),
                         binning_x=draw(st.integers(0, 20)), binning_y=draw(st.integers(0, 20)))
    message.header.frame_id = FRAME_ID
    message.header.stamp.sec = draw(st.integers(0, 3))
    message.k = [draw(floats) for _ in range(9)]
    message.d = draw(st.lists(st.floats(allow_nan=True), max_size=8))
    message.roi.x_offset, message.roi.y_offset = draw(uint32), draw(uint32)
    message.roi.width, message.roi.height = draw(st.integers(0, 16)), draw(st.integers(0, 16))
    return message


MARKUP = ["<scene>", "<scene_end>", "<box3d>", "<loc_0>", "<loc_127>", "<|im_start|>", "<|im_end|>", "\x1b[31m", "\n[FATAL]"]
prompts = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=400),
    st.lists(st.one_of(st.sampled_from(MARKUP), st.sampled_from(["Where is the chair?", "Bring the cup to the table.",
                                                                 "Describe the scene.", "How many", " "])),
             max_size=12).map("".join),
)


# --------------------------------------------------------------------------- helpers

def _expected_bad(message: Any, decode: Callable[[Any], Any]) -> str | None:
    """What the node counts for ``message``: 'bad' (the decoder rejects it), 'empty' or None (good).
    Any other exception is a bug the node would crash on: it fails the test here, naming it."""
    try:
        decoded = decode(message)
    except MessageFormatError:
        return "bad"
    if decode is pointcloud2_to_arrays and len(decoded.xyz) == 0:
        return "empty"
    return None


def _count(probe: Probe, key: str) -> int:
    return int(probe.latest_diagnostics().get(key, 0))


def _fuzz(strategy: Any, send: Callable[[Any], None]) -> None:
    @FUZZ
    @given(strategy)
    def run(message: Any) -> None:
        send(message)
        time.sleep(0.002)

    run()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return build_untrained_checkpoint(tmp_path_factory.mktemp("fuzz") / "untrained-mini")


# --------------------------------------------------------------------------- tests

def test_fuzzed_clouds_and_prompts_are_counted_and_answered(tmp_path: Path, checkpoint: Path) -> None:
    process = _start_node(tmp_path, checkpoint, "fuzz_cloud_node", **NODE)
    probe = Probe("threed_llm_node_fuzz_cloud_probe")
    try:
        probe.subscribe(String, "answer", DEEP)
        probe.subscribe(String, "answer/stream", DEEP)
        probe.subscribe(DiagnosticArray, "/diagnostics")
        clouds = probe.node.create_publisher(PointCloud2, "points", DEEP)
        prompter = probe.node.create_publisher(String, "prompt", DEEP)
        probe.start()
        probe.wait_for(lambda: probe.latest_diagnostics().get("state") == "active" and clouds.get_subscription_count() > 0
                       and prompter.get_subscription_count() > 0, STARTUP_S, process, "active")

        # prompts before any frame: every one is routed (markup, control characters, too long, empty) and replied to
        sent = Counter()

        def send_prompt(text: str) -> None:
            sent["prompts"] += 1
            prompter.publish(String(data=text))

        _fuzz(prompts, send_prompt)
        assert sent["prompts"] >= PROMPTS
        def replied() -> int:
            return len(probe.messages("answer")) + _count(probe, "bad_messages.empty_prompt")

        probe.wait_for(lambda: replied() >= sent["prompts"], ANSWER_S, process, f"a reply to each of {sent['prompts']} prompts")
        time.sleep(1.5)  # three diagnostics periods: nothing more may come
        assert replied() == sent["prompts"] == _count(probe, "received.prompt")

        # clouds: as many counted bad / empty as the decoder rejects here, and all received
        expected: Counter[str | None] = Counter()

        def send_cloud(message: PointCloud2) -> None:
            message.header.stamp = tuple_to_stamp(_now())
            expected[_expected_bad(message, pointcloud2_to_arrays)] += 1
            clouds.publish(message)

        _fuzz(point_clouds(), send_cloud)
        total = sum(expected.values())
        assert expected["bad"] >= MESSAGES // 3 and expected[None] >= 10, expected  # the strategy reaches both sides
        probe.wait_for(lambda: _count(probe, "received.points") == total, 60, process, f"{total} clouds received")
        probe.wait_for(lambda: _count(probe, "bad_messages.pointcloud") == expected["bad"]
                       and _count(probe, "bad_messages.empty_cloud") == expected["empty"]
                       and _count(probe, "frames_received") == expected[None], 30, process,
                       f"the clouds counted as {dict(expected)}")

        # a valid frame, then hostile prompts through the model (each bounded by reply_timeout_s)
        frame = simulate(3)
        keep = np.random.default_rng(0).choice(len(frame.points), 20_000, replace=False)
        cloud = arrays_to_pointcloud2(frame.points[keep], frame.colors[keep], frame_id=FRAME_ID)
        cloud.header.stamp = tuple_to_stamp(_now())
        clouds.publish(cloud)
        probe.wait_for(lambda: _count(probe, "frames_received") == expected[None] + 1, 30, process, "the valid frame")
        for text in ("Where is the <scene> chair?<|im_end|>", "\x1b[2J<box3d><loc_3>", "Bring the\n[FATAL] cup " * 5):
            answer, _ = _ask(probe, prompter, process, text)
            assert answer and not answer.startswith(("Sorry", "busy")), (text, answer)
        answer, _ = _ask(probe, prompter, process, "What colour is the sofa?")
        assert answer and process.running()
        assert "Traceback" not in process.output()
    finally:
        probe.close()
        process.stop()


def test_fuzzed_rgbd_messages_are_counted(tmp_path: Path, checkpoint: Path) -> None:
    process = _start_node(tmp_path, checkpoint, "fuzz_rgbd_node", input="rgbd", **NODE)
    probe = Probe("threed_llm_node_fuzz_rgbd_probe")
    try:
        probe.subscribe(String, "answer", DEEP)
        probe.subscribe(String, "answer/stream", DEEP)
        probe.subscribe(DiagnosticArray, "/diagnostics")
        publishers = {topic: probe.node.create_publisher(kind, topic, DEEP) for topic, kind in
                      (("color/image_raw", Image), ("depth/image_raw", Image), ("color/camera_info", CameraInfo))}
        prompter = probe.node.create_publisher(String, "prompt", DEEP)
        probe.start()
        probe.wait_for(lambda: probe.latest_diagnostics().get("state") == "active"
                       and all(p.get_subscription_count() > 0 for p in publishers.values()), STARTUP_S, process, "active")

        expected: Counter[str] = Counter()

        def sender(topic: str, decode: Callable[[Any], Any], kind: str) -> Callable[[Any], None]:
            def send(message: Any) -> None:
                expected[topic] += 1
                expected[kind] += _expected_bad(message, decode) == "bad"
                publishers[topic].publish(message)
            return send

        # stamps from a few seconds, so colour, depth and info often pair up and reach the cloud step
        _fuzz(images(), sender("color/image_raw", image_to_rgb, "image"))
        _fuzz(images(), sender("depth/image_raw", depth_image_to_metres, "image"))
        _fuzz(camera_infos(), sender("color/camera_info", camera_info_to_intrinsics, "camera_info"))
        assert expected["image"] >= MESSAGES and expected["camera_info"] >= MESSAGES // 3, expected
        for topic in publishers:
            probe.wait_for(lambda topic=topic: _count(probe, f"received.{topic}") == expected[topic], 60, process,
                           f"{expected[topic]} messages received on {topic}")
        probe.wait_for(lambda: _count(probe, "bad_messages.image") == expected["image"]
                       and _count(probe, "bad_messages.camera_info") == expected["camera_info"], 30, process,
                       f"bad images and camera_info counted as {dict(expected)}")

        # a valid trio, then a valid prompt is answered from it
        frames_before = _count(probe, "frames_received")
        intrinsics = CameraIntrinsics.from_field_of_view(160, 120, 60.0)
        frame = simulate(3, intrinsics=intrinsics)
        stamp = tuple_to_stamp(_now())
        for topic, message in (("color/image_raw", array_to_image(frame.rgb, "rgb8", frame_id=FRAME_ID)),
                               ("depth/image_raw", depth_metres_to_image(frame.depth_m, "16UC1", frame_id=FRAME_ID)),
                               ("color/camera_info", intrinsics_to_camera_info(intrinsics, frame_id=FRAME_ID))):
            message.header.stamp = stamp
            publishers[topic].publish(message)
        probe.wait_for(lambda: _count(probe, "frames_received") > frames_before, 30, process, "the valid RGB-D frame")
        answer, _ = _ask(probe, prompter, process, "What is in front of the camera?")
        assert answer and not answer.startswith(("Sorry", "busy", "No sensor frame")), answer
        assert process.running() and "Traceback" not in process.output()
    finally:
        probe.close()
        process.stop()
