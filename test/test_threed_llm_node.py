"""threed_llm_node in its own process over real DDS, with a real (untrained) checkpoint.

The test process plays the sensor: it publishes clouds (or RGB-D trios) from the scene
simulator with its own frame_id and stamps, sends prompts, and reads the node's outputs
and /diagnostics.
"""

from __future__ import annotations

import copy
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

import psutil  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import PoseStamped  # noqa: E402
from lifecycle_msgs.msg import State as LifecycleState  # noqa: E402
from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from visualization_msgs.msg import Marker, MarkerArray  # noqa: E402

from threed_llm_helpers import TRAINED_CHECKPOINT, engine_floors  # noqa: E402
from threed_llm_ros.objects.describe import named_categories  # noqa: E402
from threed_llm_ros.data.sim.frames import simulate  # noqa: E402
from threed_llm_ros.geometry.camera import CameraIntrinsics  # noqa: E402
from threed_llm_ros.processes import NodeProcess, NodeProcessSpec  # noqa: E402
from threed_llm_ros.ros.conversions import (  # noqa: E402
    array_to_image,
    arrays_to_pointcloud2,
    depth_metres_to_image,
    intrinsics_to_camera_info,
    tuple_to_stamp,
)
from threed_llm_ros.ros.node_settings import TEST_INFERENCE_DELAY_ENV  # noqa: E402
from threed_llm_ros.ros.threed_llm_node import NODE_NAME  # noqa: E402
from threed_llm_ros.runtime.engine_settings import EngineSettings, build_untrained_checkpoint  # noqa: E402

pytestmark = pytest.mark.ros

MODULE = "threed_llm_ros.ros.threed_llm_node"
FRAME_ID = "test_sensor_optical_frame"
STARTUP_S = 180.0
ANSWER_S = 180.0
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return build_untrained_checkpoint(tmp_path_factory.mktemp("node") / "untrained-mini")


class Probe:
    """The test's own ROS node (private context), spun in a background thread."""

    def __init__(self, name: str) -> None:
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.received: dict[str, list[Any]] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._running = True

    def subscribe(self, message_type: Any, topic: str, qos: Any = 10) -> None:
        self.received[topic] = []

        def store(message: Any) -> None:
            with self._lock:
                self.received[topic].append(message)

        self.node.create_subscription(message_type, topic, store, qos)

    def start(self) -> "Probe":
        self._thread.start()
        return self

    def _spin(self) -> None:
        while self._running:
            self.executor.spin_once(timeout_sec=0.05)

    def messages(self, topic: str) -> list[Any]:
        with self._lock:
            return list(self.received[topic])

    def wait_for(self, condition: Callable[[], bool], timeout: float, process: NodeProcess, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert process.running(), f"node exited early while waiting for {what}:\n{process.output()[-4000:]}"
            assert time.monotonic() < deadline, (
                f"timed out waiting for {what}; messages received per topic "
                f"{ {topic: len(messages) for topic, messages in self.received.items()} }; the node's latest "
                f"diagnostics {self.latest_diagnostics()}; its output:\n{process.output()[-4000:]}")
            time.sleep(0.1)

    def latest_diagnostics(self) -> dict[str, str]:
        arrays = self.messages("/diagnostics")
        if not arrays:
            return {}
        return {value.key: value.value for value in arrays[-1].status[0].values}

    def close(self) -> None:
        self._running = False
        self._thread.join(timeout=5)
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


class Publisher:
    """Publishes a message factory at a fixed rate from a background thread."""

    def __init__(self, rate_hz: float, publish: Callable[[], None]) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(1.0 / rate_hz, publish), daemon=True)
        self._thread.start()

    def _run(self, period: float, publish: Callable[[], None]) -> None:
        while not self._stop.is_set():
            publish()
            self._stop.wait(period)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _now() -> tuple[int, int]:
    now = time.time_ns()
    return now // 1_000_000_000, now % 1_000_000_000


def _start_node(tmp_path: Path, checkpoint: Path | str, name: str, inference_delay_s: float = 0.0,
                **parameters: Any) -> NodeProcess:
    """The node in its own process; ``inference_delay_s`` sets the test hook that emulates a slower model."""
    values = {"checkpoint": str(checkpoint), "max_new_tokens": 4, "diagnostics_period_s": 0.5, **parameters}
    spec = NodeProcessSpec(module=MODULE, parameter_files=[Path(__file__).parent.parent / "config" / "threed_llm.yaml"],
                           parameters=values)
    return NodeProcess(spec, log_path=tmp_path / f"{name}.log",
                       env={TEST_INFERENCE_DELAY_ENV: str(inference_delay_s)})


def _ask(probe: Probe, prompt_publisher: Any, process: NodeProcess, prompt: str) -> tuple[str, list[str]]:
    """Send a prompt; the answer and the stream pieces of that answer (up to its end marker)."""
    answers_before = len(probe.messages("answer"))
    stream_before = len(probe.messages("answer/stream"))
    prompt_publisher.publish(String(data=prompt))

    def done() -> bool:
        stream = [m.data for m in probe.messages("answer/stream")[stream_before:]]
        return len(probe.messages("answer")) > answers_before and "" in stream

    probe.wait_for(done, ANSWER_S, process, f"the answer to {prompt!r}")
    answer = probe.messages("answer")[answers_before].data
    stream = [m.data for m in probe.messages("answer/stream")[stream_before:]]
    return answer, stream[: stream.index("")]


def _publish_until(probe: Probe, process: NodeProcess, publish: Callable[[], None], condition: Callable[[], bool],
                   what: str, timeout: float = 30.0, period: float = 0.5) -> None:
    """Publish (best effort) again every period until the condition holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        publish()
        next_send = time.monotonic() + period
        probe.wait_for(lambda: condition() or time.monotonic() > next_send, deadline - time.monotonic(), process, what)


def _bad_clouds(good: PointCloud2) -> list[PointCloud2]:
    short = copy.deepcopy(good)
    short.data = bytes(good.data)[: len(good.data) - 7]
    no_x = copy.deepcopy(good)
    no_x.fields = [field for field in good.fields if field.name != "x"]
    wrong_type = copy.deepcopy(good)
    wrong_type.fields = [PointField(name=f.name, offset=f.offset, datatype=99, count=1) for f in good.fields]
    return [short, no_x, wrong_type]


def _seen_and_absent(xyz: np.ndarray, rgb: np.ndarray) -> tuple[str, str]:
    """A category the shipped object layer sees with confidence in this cloud, and one it does not."""
    from threed_llm_ros.objects.layer import ObjectLayer
    from threed_llm_ros.resources import default_object_classifier

    confident = ObjectLayer.load(default_object_classifier()).perceive(xyz, rgb).confident
    assert confident, "the simulated frame shows objects"
    seen = {obj.category for obj in confident}
    absent = next(name for name in ("bathtub", "toilet", "bed", "sofa", "bookshelf", "monitor") if name not in seen)
    return confident[0].category, absent


@pytest.mark.slow
def test_node_answers_streams_grounds_and_survives_bad_input(tmp_path: Path, checkpoint: Path) -> None:
    frame = simulate(3)
    keep = np.random.default_rng(0).choice(len(frame.points), 20_000, replace=False)  # small: best-effort over DDS
    cloud = arrays_to_pointcloud2(frame.points[keep], frame.colors[keep], frame_id=FRAME_ID)
    published_stamps: set[tuple[int, int]] = set()
    process = _start_node(tmp_path, checkpoint, "pointcloud_node", autostart=True)
    probe = Probe("threed_llm_node_test_probe")
    sensor: Publisher | None = None
    try:
        for topic, message_type, qos in (("answer", String, 10), ("answer/stream", String, 100),
                                         ("/diagnostics", DiagnosticArray, 10), ("grounding/markers", MarkerArray, LATCHED),
                                         ("grounding/target_pose", PoseStamped, 10)):
            probe.subscribe(message_type, topic, qos)
        cloud_publisher = probe.node.create_publisher(PointCloud2, "points", qos_profile_sensor_data)
        prompt_publisher = probe.node.create_publisher(String, "prompt", 10)
        probe.start()

        def publish_cloud() -> None:
            stamp = _now()
            cloud.header.stamp = tuple_to_stamp(stamp)
            published_stamps.add(stamp)
            cloud_publisher.publish(cloud)

        sensor = Publisher(4.0, publish_cloud)
        probe.wait_for(lambda: probe.latest_diagnostics().get("state") == "active"
                       and int(probe.latest_diagnostics().get("frames_received", 0)) > 0, STARTUP_S, process, "active")

        answer, pieces = _ask(probe, prompt_publisher, process, "Is there a red cup?")
        assert "".join(pieces) == answer
        assert len(pieces) >= 1 or answer == ""
        assert probe.latest_diagnostics()["frame_id"] == FRAME_ID

        seen, absent = _seen_and_absent(frame.points[keep], frame.colors[keep])
        answer, _ = _ask(probe, prompt_publisher, process, f"Where is the {seen}?")
        assert FRAME_ID in answer
        probe.wait_for(lambda: probe.messages("grounding/target_pose"), 10, process, "target pose")
        pose = probe.messages("grounding/target_pose")[-1]
        assert pose.header.frame_id == FRAME_ID
        assert (pose.header.stamp.sec, pose.header.stamp.nanosec) in published_stamps
        markers = probe.messages("grounding/markers")[-1].markers
        assert markers[0].action == Marker.DELETEALL
        assert {marker.header.frame_id for marker in markers} == {FRAME_ID}
        assert [m.type for m in markers[1:3]] == [Marker.CUBE, Marker.TEXT_VIEW_FACING]

        # an object that is not there: "not seen", no pose, and markers that only clear the display
        poses_before, markers_before = len(probe.messages("grounding/target_pose")), len(probe.messages("grounding/markers"))
        answer, _ = _ask(probe, prompt_publisher, process, f"Where is the {absent}?")
        assert "not seen" in answer and absent in answer, answer
        probe.wait_for(lambda: len(probe.messages("grounding/markers")) > markers_before, 10, process, "clearing markers")
        assert [m.action for m in probe.messages("grounding/markers")[-1].markers] == [Marker.DELETEALL]
        assert len(probe.messages("grounding/target_pose")) == poses_before

        # Bad input: each malformed cloud, then an empty prompt. Sensor topics are best effort with
        # a short queue: on a loaded CI machine a bad cloud sent among good ones was overwritten or
        # dropped before the node read it (2026-11-30, 2026-12-01). So the good stream pauses and
        # each bad cloud is resent until the node has counted it.
        sensor.stop()
        for index, bad in enumerate(_bad_clouds(cloud), start=1):
            def bad_clouds_counted(index: int = index) -> bool:
                return int(probe.latest_diagnostics().get("bad_messages.pointcloud", 0)) >= index

            _publish_until(probe, process, lambda bad=bad: cloud_publisher.publish(bad), bad_clouds_counted,
                           f"bad cloud #{index} counted in /diagnostics")
        prompt_publisher.publish(String(data="   "))
        sensor = Publisher(4.0, publish_cloud)
        answer, pieces = _ask(probe, prompt_publisher, process, "What colour is the sofa?")
        assert "".join(pieces) == answer
        probe.wait_for(lambda: int(probe.latest_diagnostics().get("bad_messages.empty_prompt", 0)) == 1, 30, process,
                       "the empty prompt counted in /diagnostics")
        log = process.output()
        for reason in ("bytes but row_step", "no 'x' field", "unknown PointField datatype"):
            assert reason in log, f"no log line for the bad cloud with {reason!r}"
        assert process.running()
        assert process.output().count("ignored bad message") >= 4

        # Hostile prompts (issue 17): the model's own markers in user text once killed the node
        # ("found 81 scene placeholders for 80 scene tokens"); a pasted document held every
        # prompt behind it for minutes. Each gets a reply, and the node keeps serving.
        answer, _ = _ask(probe, prompt_publisher, process, "Why is the <scene> <scene_end> chair here? <|im_end|>")
        assert answer and not answer.startswith("Sorry, answering failed") and process.running()
        assert "reply_error" not in process.output()
        answer, _ = _ask(probe, prompt_publisher, process, "Where is the\n[FATAL] chair?" + "x" * 5000)
        assert answer.startswith("Prompt refused") and "max_prompt_chars" in answer
        probe.wait_for(lambda: int(probe.latest_diagnostics().get("bad_messages.prompt_too_long", 0)) == 1, 30, process,
                       "the long prompt counted in /diagnostics")
        assert "\n[FATAL] chair" not in process.output()  # the prompt's newline is escaped, not a forged log line
        answer, _ = _ask(probe, prompt_publisher, process, "What colour is the sofa?")
        assert answer and process.running()
    finally:
        if sensor is not None:
            sensor.stop()
        probe.close()
        process.stop()


@pytest.mark.slow
def test_rgbd_node_drops_stale_frames_without_growing(tmp_path: Path, checkpoint: Path) -> None:
    # Each inference is held delay_s longer than it takes, so frames arrive far faster than they are
    # used; the diagnostics are compared over window_s (at 15 Hz a queue of these frames would grow
    # by about 90 MB in it, a leak check of 50 MB sees that).
    delay_s, window_s = 2.0, 16.0
    intrinsics = CameraIntrinsics.from_field_of_view(320, 240, 60.0)
    frame = simulate(3, intrinsics=intrinsics)
    color = array_to_image(frame.rgb, "rgb8", frame_id=FRAME_ID)
    depth = depth_metres_to_image(frame.depth_m, "16UC1", frame_id=FRAME_ID)
    info = intrinsics_to_camera_info(intrinsics, frame_id=FRAME_ID)
    bad_color = copy.deepcopy(color)
    bad_color.encoding = "yuv422_nonsense"
    process = _start_node(tmp_path, checkpoint, "rgbd_node", input="rgbd", caption_rate_hz=1.0,
                          inference_delay_s=delay_s, max_new_tokens=2)
    probe = Probe("threed_llm_node_rgbd_probe")
    try:
        probe.subscribe(DiagnosticArray, "/diagnostics")
        probe.subscribe(String, "caption")
        probe.subscribe(String, "answer")
        probe.subscribe(String, "answer/stream")
        publishers = {topic: probe.node.create_publisher(kind, topic, qos_profile_sensor_data)
                      for topic, kind in (("color/image_raw", Image), ("depth/image_raw", Image), ("color/camera_info", CameraInfo))}
        prompt_publisher = probe.node.create_publisher(String, "prompt", 10)
        probe.start()

        def publish_trio() -> None:
            stamp = tuple_to_stamp(_now())
            for topic, message in (("color/image_raw", color), ("depth/image_raw", depth), ("color/camera_info", info)):
                message.header.stamp = stamp
                publishers[topic].publish(message)

        sensor = Publisher(15.0, publish_trio)
        probe.wait_for(lambda: len(probe.messages("caption")) >= 1, STARTUP_S, process, "a caption from RGB-D input")
        # Sensor topics are best effort with a short keep-last queue, and 15 Hz good frames
        # follow: one bad image can be overwritten before a busy node reads it. Resend it
        # until the node has counted it.
        bad_images_sent = 0

        def publish_bad_color() -> None:
            nonlocal bad_images_sent
            publishers["color/image_raw"].publish(bad_color)
            bad_images_sent += 1

        _publish_until(probe, process, publish_bad_color,
                       lambda: int(probe.latest_diagnostics().get("bad_messages.image", 0)) >= 1,
                       "the bad image counted in /diagnostics", timeout=120)
        # Let the allocator settle first: each executor thread that runs the model grows its own
        # malloc arena once (measured: RSS plateaus after ~6 inferences), which is not a queue.
        # Generous wait: with another test sharing the 2 cores one inference took up to 38 s
        # (prefill 25 s; CI, 2026-11-30), so six captions took longer than 120 s.
        probe.wait_for(lambda: len(probe.messages("caption")) >= 6, 360, process, "six captions")
        first = probe.latest_diagnostics()
        rss_first = psutil.Process(process.process.pid).memory_info().rss
        captions_first = len(probe.messages("caption"))
        time.sleep(window_s)
        last = probe.latest_diagnostics()
        rss_last = psutil.Process(process.process.pid).memory_info().rss
        sensor.stop()

        assert last["frame_id"] == FRAME_ID
        # How many frames arrive depends on the machine's load; what must hold is that the
        # slow model consumes few of them and the rest are dropped, not queued.
        received = int(last["frames_received"]) - int(first["frames_received"])
        dropped = int(last["frames_dropped"]) - int(first["frames_dropped"])
        consumed = int(last["frames_consumed"]) - int(first["frames_consumed"])
        assert received >= 10, (first, last)
        assert consumed <= window_s / delay_s + 1, (first, last)  # at most one per inference (delay_s each)
        assert dropped >= received - consumed - 1, (first, last)  # everything else dropped: no queue
        assert int(last["frames_consumed"]) < int(last["frames_received"]) / 5
        # A queue or a leak only grows; RSS that falls is the allocator handing memory back
        # (CI, 2026-12-07: 1622 -> 1564 MiB in the second window), so only growth counts.
        if rss_last - rss_first >= 50 * 2**20:
            # A busy machine slows the warm-up, and the allocator may still be growing its arenas
            # (a one-time plateau). A queue or a leak keeps growing: look at a second window.
            sensor = Publisher(15.0, publish_trio)
            rss_first = rss_last
            time.sleep(window_s)
            rss_last = psutil.Process(process.process.pid).memory_info().rss
            sensor.stop()
        assert rss_last - rss_first < 50 * 2**20, f"RSS grew {rss_first / 2**20:.0f} -> {rss_last / 2**20:.0f} MiB"
        assert 1 <= int(last.get("bad_messages.image", 0)) <= bad_images_sent
        # Captions continue after the bad image (each one takes the delay plus inference,
        # which is slow on a loaded 2-core machine, so wait for it rather than assume a window).
        sensor = Publisher(15.0, publish_trio)
        probe.wait_for(lambda: len(probe.messages("caption")) > captions_first, 180, process,
                       "a caption after the bad image")
        # Captions are due back to back (1 Hz, each takes over delay_s); a prompt still comes first,
        # after at most the caption already running (and one that started as it arrived).
        captions_before = len(probe.messages("caption"))
        answer, _ = _ask(probe, prompt_publisher, process, "What is in front of the camera?")
        assert answer
        assert len(probe.messages("caption")) - captions_before <= 2, "periodic captions starved the prompt"
        sensor.stop()
    finally:
        probe.close()
        process.stop()


def test_missing_checkpoint_fails_configure_naming_the_parameter(tmp_path: Path) -> None:
    process = _start_node(tmp_path, tmp_path / "no-such-checkpoint", "missing_checkpoint", autostart=True)
    code = process.process.wait(timeout=120)
    output = process.output()
    process.stop()
    assert code == 1, output
    assert "parameter 'checkpoint'" in output and "Fix:" in output, output


def test_lifecycle_services_report_a_failed_configure(tmp_path: Path) -> None:
    process = _start_node(tmp_path, tmp_path / "no-such-checkpoint", "lifecycle", autostart=False)
    probe = Probe("threed_llm_node_lifecycle_probe")
    try:
        get_state = probe.node.create_client(GetState, f"/{NODE_NAME}/get_state")
        change_state = probe.node.create_client(ChangeState, f"/{NODE_NAME}/change_state")
        probe.start()
        assert get_state.wait_for_service(timeout_sec=60), process.output()
        state = get_state.call(GetState.Request(), timeout_sec=10)
        assert state.current_state.id == LifecycleState.PRIMARY_STATE_UNCONFIGURED
        result = change_state.call(ChangeState.Request(transition=Transition(id=Transition.TRANSITION_CONFIGURE)),
                                   timeout_sec=60)
        assert result.success is False
        state = get_state.call(GetState.Request(), timeout_sec=10)
        assert state.current_state.id == LifecycleState.PRIMARY_STATE_UNCONFIGURED
        assert "parameter 'checkpoint'" in process.output()
        assert process.running()
    finally:
        probe.close()
        process.stop()


# --------------------------------------------------------------------------- trained model, end to end

@pytest.mark.slow
@pytest.mark.skipif("grounding_acc_at_0.25" not in engine_floors(),
                    reason="the shipped checkpoint's model card sets no grounding floor (models/threed-llm-mini)")
def test_trained_node_grounds_plans_and_captions_over_dds(tmp_path: Path) -> None:
    """The shipped checkpoint in its own process: boxes at the named objects, plan goals at the
    targets, a caption naming an object, all in the sensor's frame and stamp."""
    from threed_llm_ros.geometry.frames import to_gravity_frame
    from threed_llm_ros.geometry.iou import rotated_box_iou
    from threed_llm_ros.ros.markers import marker_box

    floors = engine_floors()
    process = _start_node(tmp_path, TRAINED_CHECKPOINT, "trained_node", autostart=True, max_new_tokens=48,
                          up_axis="-y", caption_rate_hz=0.2)
    probe = Probe("threed_llm_node_trained_probe")
    try:
        from nav_msgs.msg import Path as PathMessage
        from threed_llm_interfaces.msg import Plan as PlanMessage

        from threed_llm_ros.ros.interface_messages import plan_to_dict

        for topic, message_type, qos in (("answer", String, 10), ("answer/stream", String, 100),
                                         ("/diagnostics", DiagnosticArray, 10), ("grounding/markers", MarkerArray, LATCHED),
                                         ("plan", PlanMessage, LATCHED), ("plan/path", PathMessage, LATCHED),
                                         ("caption", String, 10)):
            probe.subscribe(message_type, topic, qos)
        cloud_publisher = probe.node.create_publisher(PointCloud2, "points", qos_profile_sensor_data)
        prompt_publisher = probe.node.create_publisher(String, "prompt", 10)
        probe.start()
        hits, total, planned = 0, 0, False
        for seed in (101, 102, 103, 104):  # the scenes of the engine-level floor (test_engine.py)
            frame = simulate(seed)
            keep = np.random.default_rng(seed).choice(len(frame.points), min(len(frame.points), 20_000), replace=False)
            cloud = arrays_to_pointcloud2(frame.points[keep], frame.colors[keep], frame_id=FRAME_ID)
            stamp = _now()
            cloud.header.stamp = tuple_to_stamp(stamp)
            def frames_received() -> int:
                return int(probe.latest_diagnostics().get("frames_received", 0))

            received_before = frames_received()
            sensor = Publisher(2.0, lambda: cloud_publisher.publish(cloud))
            try:  # the node keeps only the latest frame: once two of this scene arrived, prompts see it
                probe.wait_for(lambda: probe.latest_diagnostics().get("state") == "active"
                               and frames_received() >= received_before + 2, STARTUP_S, process, f"scene {seed}")
                labels = [o.label for o in frame.objects]
                for obj in [o for o in frame.objects if o.visible_pixels > 500 and labels.count(o.label) == 1][:3]:
                    markers_before = len(probe.messages("grounding/markers"))
                    _ask(probe, prompt_publisher, process, f"Where is the {obj.label}?")
                    probe.wait_for(lambda: len(probe.messages("grounding/markers")) > markers_before, 10, process, "markers")
                    markers = probe.messages("grounding/markers")[-1].markers
                    cubes = [m for m in markers if m.type == Marker.CUBE]
                    assert {m.header.frame_id for m in markers} == {FRAME_ID}
                    assert all((m.header.stamp.sec, m.header.stamp.nanosec) == stamp for m in markers)
                    total += 1
                    hits += bool(cubes and rotated_box_iou(marker_box(cubes[0], "-y"), obj.box) >= 0.25)
                objects = [o for o in frame.objects if o.visible_pixels > 500]
                portables = [o for o in objects if o.category in ("cup", "bottle", "box", "book")]
                furniture_pieces = [o for o in objects if o.category in ("table", "desk", "sofa", "bed", "dresser", "cabinet")]
                if not planned and portables and furniture_pieces:  # a plan and a caption on the first scene that allows one
                    planned = True
                    portable, furniture = portables[0], furniture_pieces[0]
                    plans_before = len(probe.messages("plan/path"))
                    _ask(probe, prompt_publisher, process, f"Bring the {portable.label} to the {furniture.label}.")
                    probe.wait_for(lambda: len(probe.messages("plan/path")) > plans_before, 10, process, "plan path")
                    plan = plan_to_dict(probe.messages("plan")[-1])  # the typed plan, as the library's dict
                    path = probe.messages("plan/path")[-1]
                    navigation = [step for step in plan["steps"] if step["action"] == "navigate_to"]
                    assert path.header.frame_id == FRAME_ID and (path.header.stamp.sec, path.header.stamp.nanosec) == stamp
                    assert len(navigation) == 2
                    posed = [(step, obj) for step, obj in zip(navigation, (portable, furniture)) if "pose" in step]
                    assert len(path.poses) == len(posed) >= 1, "a goal for every seen target, none for an unseen one"
                    errors = []
                    for (step, obj), pose in zip(posed, path.poses):
                        assert step["target"] == obj.label
                        goal = [pose.pose.position.x, pose.pose.position.y, pose.pose.position.z]
                        assert np.allclose(goal, step["pose"]["position"], atol=1e-3), "the Path carries the plan's goals"
                        target = to_gravity_frame(np.asarray([step["target_position"]]), "-y")[0]
                        goal_gravity = to_gravity_frame(np.asarray([goal]), "-y")[0]
                        assert np.linalg.norm(goal_gravity[:2] - target[:2]) < 0.6 + 2.5, "goal stands off its target"
                        errors.append(float(np.linalg.norm(target[:2] - np.asarray(obj.box.center[:2]))))
                    assert np.mean(errors) <= float(floors["plan_target_mean_error_m"]), errors
                    captions_before = len(probe.messages("caption"))
                    probe.wait_for(lambda: len(probe.messages("caption")) > captions_before, 60, process, "a caption")
                    caption = probe.messages("caption")[-1].data.lower()
                    named = named_categories(caption)
                    assert caption and named <= {o.category for o in frame.objects}, caption
            finally:
                sensor.stop()
        assert total >= 8 and planned
        assert hits / total >= float(floors["grounding_acc_at_0.25"]), f"{hits}/{total} boxes with IoU >= 0.25"
        assert process.running()
        # the default lm_backend (auto) serves the trained checkpoint with its exported decoders, and says so
        assert f"language model: onnxruntime {EngineSettings.lm_precision}" in process.output()
        assert "lm_backend auto" in process.output()
        assert probe.latest_diagnostics()["lm_backend"] == "onnxruntime"
    finally:
        probe.close()
        process.stop()


@pytest.mark.slow
def test_onnxruntime_node_grounds_like_the_torch_engine(tmp_path: Path, checkpoint: Path) -> None:
    """backend: onnxruntime in the node process gives the torch engine's text and box for the same cloud."""
    from threed_llm_ros.ros.conversions import pointcloud2_to_arrays
    from threed_llm_ros.runtime.engine import InferenceEngine
    from threed_llm_ros.runtime.replies import SceneCloud

    frame = simulate(3)  # the demo's room: tables, lamps, cups the layer is sure of in 20 000 points
    keep = np.random.default_rng(5).choice(len(frame.points), 20_000, replace=False)
    cloud = arrays_to_pointcloud2(frame.points[keep], frame.colors[keep], frame_id=FRAME_ID)
    stamp = _now()
    cloud.header.stamp = tuple_to_stamp(stamp)
    prompt = f"Where is the {_seen_and_absent(frame.points[keep], frame.colors[keep])[0]}?"
    process = _start_node(tmp_path, checkpoint, "onnx_node", autostart=True, backend="onnxruntime",
                          export_directory=str(tmp_path / "onnx"))
    probe = Probe("threed_llm_node_onnx_probe")
    try:
        for topic, message_type, qos in (("answer", String, 10), ("answer/stream", String, 100),
                                         ("/diagnostics", DiagnosticArray, 10), ("grounding/markers", MarkerArray, LATCHED)):
            probe.subscribe(message_type, topic, qos)
        cloud_publisher = probe.node.create_publisher(PointCloud2, "points", qos_profile_sensor_data)
        prompt_publisher = probe.node.create_publisher(String, "prompt", 10)
        probe.start()
        sensor = Publisher(2.0, lambda: cloud_publisher.publish(cloud))
        probe.wait_for(lambda: probe.latest_diagnostics().get("state") == "active"
                       and int(probe.latest_diagnostics().get("frames_received", 0)) > 0, STARTUP_S, process, "active")
        assert probe.latest_diagnostics()["backend"] == "onnxruntime"
        answer, _ = _ask(probe, prompt_publisher, process, prompt)
        probe.wait_for(lambda: probe.messages("grounding/markers"), 10, process, "markers")
        node_cubes = [m for m in probe.messages("grounding/markers")[-1].markers if m.type == Marker.CUBE]
        sensor.stop()
    finally:
        probe.close()
        process.stop()
    arrays = pointcloud2_to_arrays(cloud)  # what the node decodes from the same message
    engine = InferenceEngine(EngineSettings(checkpoint=str(checkpoint), up_axis="-y", max_new_tokens=4))
    engine.load()
    reply = engine.ground(SceneCloud(arrays.xyz, arrays.rgb, FRAME_ID, stamp), prompt)
    assert reply.text in answer, (reply.text, answer)
    assert len(node_cubes) == len(reply.objects) >= 1
    for marker, expected in zip(node_cubes, reply.objects):
        position = marker.pose.position
        assert np.abs(np.array([position.x, position.y, position.z]) - np.asarray(expected.position)).max() < 1e-3
        assert np.abs(np.array([marker.scale.x, marker.scale.y, marker.scale.z]) - np.asarray(expected.box.size)).max() < 1e-3
