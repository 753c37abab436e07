"""scene_sim_node in its own process, checked over real DDS against the simulator's arrays."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

rclpy = pytest.importorskip("rclpy")

from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2  # noqa: E402
from visualization_msgs.msg import Marker, MarkerArray  # noqa: E402

from threed_llm_ros.data.sim.frames import RenderedFrame, frame_from_cast, render, simulate  # noqa: E402
from threed_llm_ros.data.sim.placement import SceneConfig  # noqa: E402
from threed_llm_ros.data.sim.scene import Scene  # noqa: E402
from threed_llm_ros.data.sim.sensor import SensorConfig  # noqa: E402
from threed_llm_ros.geometry.camera import CameraIntrinsics  # noqa: E402
from threed_llm_ros.geometry.frames import from_gravity_frame, matrix_from_quaternion, to_gravity_frame  # noqa: E402
from threed_llm_ros.processes import NodeProcess, NodeProcessSpec  # noqa: E402
from threed_llm_ros.ros.conversions import pointcloud2_to_arrays  # noqa: E402
from threed_llm_ros.ros.parameters import defaults_as_yaml_dict  # noqa: E402
from threed_llm_ros.ros.scene_sim_node import NODE_NAME, PARAMETER_SPECS  # noqa: E402

pytestmark = pytest.mark.ros

MODULE = "threed_llm_ros.ros.scene_sim_node"
FRAME_ID = "camera_color_optical_frame"
TOPICS = {
    "color/image_raw": Image,
    "depth/image_raw": Image,
    "color/camera_info": CameraInfo,
    "points": PointCloud2,
    "ground_truth/markers": MarkerArray,
}
TIMEOUT_S = 60.0


def test_yaml_defaults_mirror_the_declared_parameters(repo_root: Path) -> None:
    loaded = yaml.safe_load((repo_root / "config" / "scene_sim.yaml").read_text())
    assert loaded == defaults_as_yaml_dict(NODE_NAME, PARAMETER_SPECS)
    for spec in PARAMETER_SPECS:
        descriptor = spec.descriptor()
        assert descriptor.description, spec.name
        if isinstance(spec.default, (int, float)) and not isinstance(spec.default, bool):
            assert descriptor.integer_range or descriptor.floating_point_range, f"{spec.name} has no range"


class _Listener:
    """Subscribes to every topic of the node in a private rclpy context; groups messages by stamp."""

    def __init__(self, sensor_qos: QoSProfile) -> None:
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("scene_sim_node_test_listener", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.by_stamp: dict[tuple[int, int], dict[str, object]] = {}
        for topic, message_type in TOPICS.items():
            qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE) if message_type is MarkerArray else sensor_qos
            self.node.create_subscription(message_type, topic, self._callback(topic), qos)

    def _callback(self, topic: str):
        def store(message) -> None:
            header = message.markers[0].header if isinstance(message, MarkerArray) else message.header
            stamp = (header.stamp.sec, header.stamp.nanosec)
            self.by_stamp.setdefault(stamp, {})[topic] = message

        return store

    def complete_sets(self) -> list[tuple[tuple[int, int], dict[str, object]]]:
        return sorted((stamp, group) for stamp, group in self.by_stamp.items() if len(group) == len(TOPICS))

    def spin_until(self, condition, process: NodeProcess) -> None:
        deadline = time.monotonic() + TIMEOUT_S
        while not condition():
            assert process.running(), f"node exited early:\n{process.output()}"
            assert time.monotonic() < deadline, f"timed out; got stamps {len(self.by_stamp)}:\n{process.output()}"
            self.executor.spin_once(timeout_sec=0.1)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def _start(tmp_path: Path, parameters: dict) -> NodeProcess:
    spec = NodeProcessSpec(module=MODULE, parameters=parameters)
    return NodeProcess(spec, log_path=tmp_path / "scene_sim_node.log")


def _expected_millimetres(depth_m: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(depth_m), np.rint(np.nan_to_num(depth_m) * 1000.0), 0).astype(np.uint16)


def _check_set(group: dict[str, object], frame: RenderedFrame, depth_encoding: str = "16UC1") -> None:
    """Every message of one published frame equals the simulator's own arrays."""
    intrinsics = frame.intrinsics
    height, width = intrinsics.height, intrinsics.width
    headers = [group[topic].header for topic in TOPICS if topic != "ground_truth/markers"]  # type: ignore[attr-defined]
    markers: MarkerArray = group["ground_truth/markers"]  # type: ignore[assignment]
    headers += [marker.header for marker in markers.markers]
    assert {header.frame_id for header in headers} == {FRAME_ID}
    assert len({(header.stamp.sec, header.stamp.nanosec) for header in headers}) == 1

    color: Image = group["color/image_raw"]  # type: ignore[assignment]
    assert (color.encoding, color.width, color.height, color.step) == ("rgb8", width, height, 3 * width)
    np.testing.assert_array_equal(np.frombuffer(bytes(color.data), np.uint8).reshape(height, width, 3), frame.rgb)

    depth: Image = group["depth/image_raw"]  # type: ignore[assignment]
    assert (depth.encoding, depth.width, depth.height) == (depth_encoding, width, height)
    if depth_encoding == "16UC1":
        received = np.frombuffer(bytes(depth.data), "<u2").reshape(height, width)
        np.testing.assert_array_equal(received, _expected_millimetres(frame.depth_m))
    else:
        received = np.frombuffer(bytes(depth.data), "<f4").reshape(height, width)
        np.testing.assert_array_equal(received, frame.depth_m)

    info: CameraInfo = group["color/camera_info"]  # type: ignore[assignment]
    assert (info.width, info.height) == (width, height)
    np.testing.assert_allclose(
        np.asarray(info.k), [intrinsics.fx, 0, intrinsics.cx, 0, intrinsics.fy, intrinsics.cy, 0, 0, 1], rtol=1e-12
    )

    cloud = pointcloud2_to_arrays(group["points"])  # type: ignore[arg-type]
    np.testing.assert_array_equal(cloud.xyz, frame.points)
    np.testing.assert_array_equal(cloud.rgb, frame.colors)

    assert markers.markers[0].action == Marker.DELETEALL
    cubes = [marker for marker in markers.markers if marker.type == Marker.CUBE]
    labels = [marker for marker in markers.markers if marker.type == Marker.TEXT_VIEW_FACING]
    assert len(cubes) == len(labels) == len(frame.objects) > 0
    for cube, label, obj in zip(cubes, labels, frame.objects):
        expected_position = from_gravity_frame(np.asarray(obj.box.center)[None], "-y")[0]
        position = [cube.pose.position.x, cube.pose.position.y, cube.pose.position.z]
        np.testing.assert_allclose(position, expected_position, atol=1e-9)
        np.testing.assert_allclose([cube.scale.x, cube.scale.y, cube.scale.z], obj.box.size, atol=1e-9)
        # The cube as RViz draws it (pose and scale in the optical frame) has the box's corners.
        np.testing.assert_allclose(to_gravity_frame(_cube_corners(cube), "-y"), obj.box.corners(), atol=1e-6)
        assert label.text == f"{obj.color} {obj.category}"
        # The label floats above the box: smaller optical y is higher.
        assert label.pose.position.y < cube.pose.position.y


def _cube_corners(cube: Marker) -> np.ndarray:
    """The 8 corners of a CUBE marker in its frame, ordered like OrientedBox.corners()."""
    q = cube.pose.orientation
    rotation = matrix_from_quaternion((q.x, q.y, q.z, q.w))
    signs = np.array([[1, 1, -1], [-1, 1, -1], [-1, -1, -1], [1, -1, -1], [1, 1, 1], [-1, 1, 1], [-1, -1, 1], [1, -1, 1]])
    local = signs * np.array([cube.scale.x, cube.scale.y, cube.scale.z]) / 2
    position = np.array([cube.pose.position.x, cube.pose.position.y, cube.pose.position.z])
    return local @ rotation.T + position


def _scene_signature(markers: MarkerArray) -> list[tuple[float, float, float]]:
    return [(m.pose.position.x, m.pose.position.y, m.pose.position.z) for m in markers.markers if m.type == Marker.CUBE]


def _matching_scene(markers: MarkerArray, signatures: dict[int, list]) -> int | None:
    """Which simulated scene the markers' box positions belong to."""
    signature = _scene_signature(markers)
    for k, known in signatures.items():
        if len(signature) == len(known) and np.allclose(signature, known, atol=1e-9):
            return k
    return None


@pytest.mark.slow
def test_node_publishes_the_simulators_frames_and_moves_to_new_scenes(tmp_path: Path) -> None:
    seed, frames_per_scene = 7, 15
    parameters = {
        "seed": seed, "width": 200, "height": 150, "horizontal_fov_deg": 70.0, "rate_hz": 10.0,
        "camera_height_m": 1.1, "new_scene_every_n_frames": frames_per_scene,
    }
    intrinsics = CameraIntrinsics.from_field_of_view(200, 150, 70.0)
    # Scene k of the stream is simulate(seed + k); a slow start may skip the first few.
    expected = {k: simulate(seed + k, intrinsics, SceneConfig(camera_height_m=1.1), SensorConfig()) for k in range(10)}
    signatures = {
        k: [tuple(from_gravity_frame(np.asarray(obj.box.center)[None], "-y")[0]) for obj in frame.objects]
        for k, frame in expected.items()
    }
    process = _start(tmp_path, parameters)
    listener = _Listener(qos_profile_sensor_data)
    try:
        def scenes_seen() -> list[int]:
            seen = []
            for _, group in listener.complete_sets():
                k = _matching_scene(group["ground_truth/markers"], signatures)  # type: ignore[arg-type]
                assert k is not None, "a published frame matches none of the simulator's scenes"
                if not seen or seen[-1] != k:
                    seen.append(k)
            return seen

        listener.spin_until(lambda: len(scenes_seen()) >= 2, process)
        seen = scenes_seen()
        assert seen[1] == seen[0] + 1, f"scenes out of order: {seen}"
        checked = set()
        for _, group in listener.complete_sets():
            k = _matching_scene(group["ground_truth/markers"], signatures)  # type: ignore[arg-type]
            _check_set(group, expected[k])
            checked.add(k)
        assert len(checked) >= 2
        # Republished frames carry new stamps.
        stamps = [stamp for stamp, _ in listener.complete_sets()]
        assert len(stamps) == len(set(stamps)) >= 2
    finally:
        listener.close()
        code = process.stop()
    assert code == 0, process.output()


@pytest.mark.slow
def test_node_renders_a_scene_spec_with_explicit_focal_lengths(tmp_path: Path) -> None:
    spec = {
        "room": {"size": [5.0, 4.0, 2.6]},
        "camera": {"position": [0.5, 2.0, 1.2], "yaw_deg": 10},
        "objects": [
            {"category": "table", "color": "brown", "size": [1.2, 0.8, 0.74], "position": [2.8, 2.0], "yaw_deg": 20},
            {"category": "cup", "color": "red", "size": [0.1, 0.1, 0.1], "position": [2.9, 2.1], "on": 0},
            {"category": "chair", "color": "blue", "size": [0.5, 0.5, 0.9], "position": [2.6, 1.1], "yaw_deg": 90},
        ],
    }
    spec_path = tmp_path / "scene.json"
    spec_path.write_text(json.dumps(spec))
    parameters = {
        "scene_spec": str(spec_path), "width": 160, "height": 100, "fx": 150.0, "fy": 120.0, "rate_hz": 10.0,
        "noise": False, "depth_encoding": "32FC1", "qos_reliability": "reliable", "frame_id": FRAME_ID, "seed": 3,
    }
    intrinsics = CameraIntrinsics(fx=150.0, fy=120.0, cx=80.0, cy=50.0, width=160, height=100)
    frame = render(Scene.from_dict(spec), intrinsics, SensorConfig(enabled=False), 3)
    assert np.isfinite(frame.depth_m).all()
    process = _start(tmp_path, parameters)
    # A reliable subscription only matches a reliable publisher: this checks qos_reliability took effect.
    listener = _Listener(QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
    try:
        listener.spin_until(lambda: len(listener.complete_sets()) >= 1, process)
        _check_set(listener.complete_sets()[0][1], frame, depth_encoding="32FC1")
    finally:
        listener.close()
        process.stop()


@pytest.mark.slow
def test_full_size_frames_arrive_over_best_effort(tmp_path: Path) -> None:
    # 640x480: a ~5 MB cloud and 0.9 MB image per frame, with sensor-data (best-effort) QoS.
    seed = 2
    process = _start(tmp_path, {"seed": seed, "rate_hz": 10.0})
    listener = _Listener(qos_profile_sensor_data)
    try:
        # Small camera_info messages always arrive: they count the frames sent while listening.
        def frames_sent() -> list[tuple[int, int]]:
            return sorted(stamp for stamp, group in listener.by_stamp.items() if "color/camera_info" in group)

        listener.spin_until(lambda: len(frames_sent()) >= 25, process)
        for _ in range(10):  # let the last large messages land
            listener.executor.spin_once(timeout_sec=0.05)
        sent = frames_sent()[:-2]
        complete = {stamp for stamp, _ in listener.complete_sets()}
        delivered = sum(stamp in complete for stamp in sent) / len(sent)
        # With Fast DDS's default 512 KB shared-memory segment this is about 5%.
        assert delivered >= 0.6, f"only {delivered:.0%} of full-size frames arrived complete"
        _check_set(listener.complete_sets()[-1][1], simulate(seed))
    finally:
        listener.close()
        process.stop()


@pytest.mark.slow
def test_node_resamples_sensor_noise_every_frame_when_asked(tmp_path: Path) -> None:
    seed = 4
    parameters = {"seed": seed, "width": 120, "height": 90, "rate_hz": 20.0, "resample_noise": True}
    intrinsics = CameraIntrinsics.from_field_of_view(120, 90, 60.0)
    first = simulate(seed, intrinsics)
    # Frame n > 0 of scene 0 draws its noise from the seed sequence (seed, n).
    candidates = {0: first} | {n: frame_from_cast(first.scene, first.cast, SensorConfig(), [seed, n]) for n in range(1, 400)}
    process = _start(tmp_path, parameters)
    listener = _Listener(qos_profile_sensor_data)
    try:
        listener.spin_until(lambda: len(listener.complete_sets()) >= 3, process)
        matched = []
        for _, group in listener.complete_sets()[:3]:
            color = np.frombuffer(bytes(group["color/image_raw"].data), np.uint8).reshape(90, 120, 3)  # type: ignore[attr-defined]
            n = next((n for n, frame in candidates.items() if np.array_equal(frame.rgb, color)), None)
            assert n is not None, "a published frame matches no noise draw of the scene"
            _check_set(group, candidates[n])
            matched.append(n)
        assert len(set(matched)) == 3, f"frames repeat their noise: {matched}"
    finally:
        listener.close()
        process.stop()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("parameters", "named"),
    [
        ({"width": 0}, "width"),
        ({"rate_hz": -1.0}, "rate_hz"),
        ({"scene_spec": "/nonexistent/scene.json"}, "scene_spec"),
        ({"qos_reliability": "sometimes"}, "qos_reliability"),
        ({"sensor.min_range_m": 5.0, "sensor.max_range_m": 2.0}, "sensor.max_range_m"),
    ],
)
def test_bad_parameters_stop_the_node_with_the_parameter_named(tmp_path: Path, parameters: dict, named: str) -> None:
    process = _start(tmp_path, parameters)
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while process.running() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not process.running(), "the node kept running with a bad parameter"
    finally:
        code = process.stop()
    output = process.output()
    assert code != 0
    assert f"parameter '{named}'" in output and "Fix:" in output, output
