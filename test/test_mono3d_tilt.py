"""A tilted camera: levelling the image with its known tilt (TF, a parameter, or --camera-pitch) before the
single-image grounder, and the pose given back in the camera's own optical frame."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest

from threed_llm_ros.data.sim.placement import generate_scene
from threed_llm_ros.data.sim.render import ray_cast
from threed_llm_ros.geometry.camera import CameraIntrinsics
from threed_llm_ros.geometry.frames import matrix_from_quaternion, quaternion_from_matrix
from threed_llm_ros.geometry.iou import rotated_box_iou
from threed_llm_ros.geometry.transform_tree import TransformTree
from threed_llm_ros.mono3d.data import tilted_camera_rgb
from threed_llm_ros.mono3d.projection import (
    level_camera,
    level_from_gravity_frame,
    level_image,
    pitch_and_roll,
    pitch_rotation,
    seen_by_tilted_camera,
)

CAMERA = CameraIntrinsics.from_field_of_view(320, 240, 90.0)
# base_link (x forward, y left, z up) from a level camera's optical frame (x right, y down, z forward)
BASE_FROM_LEVEL_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
SHIPPED = Path(__file__).resolve().parents[1] / "models" / "mono3d"


def _yaw(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


@pytest.mark.parametrize(("pitch", "roll"), ((-20.0, 0.0), (-7.0, 12.0), (15.0, -30.0)))
def test_tilt_from_a_gravity_frame_keeps_pitch_and_roll_and_drops_the_heading(pitch: float, roll: float) -> None:
    """The camera's rotation in base_link, turned by any heading, levels with the rotation of its pitch and
    roll alone; pitch_and_roll reads them back."""
    tilt = pitch_rotation(pitch, roll)
    for heading in (0.0, 0.7, -2.5):
        gravity_from_optical = _yaw(heading) @ BASE_FROM_LEVEL_OPTICAL @ tilt
        np.testing.assert_allclose(level_from_gravity_frame(gravity_from_optical), tilt, atol=1e-12)
    np.testing.assert_allclose(pitch_and_roll(tilt), (pitch, roll), atol=1e-9)
    # y is down: a negative pitch looks down
    assert (tilt @ [0.0, 0.0, 1.0])[1] == pytest.approx(-math.sin(math.radians(pitch)))


def test_transform_tree_composes_chains_to_a_common_root() -> None:
    """base_link -> camera_link -> optical and base_link -> arm: the rotation between any two frames is the
    product along the chains; unconnected frames give None; a zero quaternion is refused naming the frames."""
    tree = TransformTree()
    link = _yaw(0.3) @ np.array([[math.cos(0.4), 0.0, math.sin(0.4)], [0.0, 1.0, 0.0],
                                 [-math.sin(0.4), 0.0, math.cos(0.4)]])
    optical = BASE_FROM_LEVEL_OPTICAL
    tree.set("base_link", "camera_link", tuple(quaternion_from_matrix(link)))
    tree.set("/camera_link", "camera_optical", tuple(quaternion_from_matrix(optical)))
    tree.set("base_link", "arm", tuple(quaternion_from_matrix(_yaw(-1.0))))
    np.testing.assert_allclose(tree.rotation("base_link", "camera_optical"), link @ optical, atol=1e-12)
    np.testing.assert_allclose(tree.rotation("arm", "camera_optical"), _yaw(-1.0).T @ link @ optical, atol=1e-12)
    np.testing.assert_allclose(tree.rotation("camera_optical", "camera_optical"), np.eye(3), atol=1e-12)
    assert tree.rotation("map", "camera_optical") is None
    with pytest.raises(ValueError, match="base_link -> bad"):
        tree.set("base_link", "bad", (0.0, 0.0, 0.0, 0.0))


def test_levelled_tilted_image_is_the_level_render_the_model_is_trained_on() -> None:
    """A tilted camera's image levelled with its tilt (what the node and `ask` do) shows what the training
    data shows for the same tilt: the level render through level_camera, black where the tilted camera saw
    nothing. Pixels agree up to resampling, and the optical axis lands on the principal point."""
    scene = generate_scene(3)
    tilt = pitch_rotation(-20.0)
    levelled, camera = level_image(tilted_camera_rgb(scene, CAMERA, tilt), CAMERA, tilt)
    assert camera == level_camera(CAMERA, tilt)
    assert camera.cy == pytest.approx(CAMERA.cy - CAMERA.fy * math.tan(math.radians(20.0)))
    seen = seen_by_tilted_camera(camera, CAMERA, tilt)
    assert 0.8 < seen.mean() < 1.0  # the keystone corners are black
    truth = np.clip(ray_cast(scene, camera).color, 0, 255)
    inner = seen & np.pad(np.ones((camera.height - 8, camera.width - 8), bool), 4)
    inner &= np.pad(seen[8:] & seen[:-8], ((4, 4), (0, 0)))  # away from the wedge edges
    difference = np.abs(levelled.astype(float) - truth)[inner]
    assert np.median(difference) < 6.0 and difference.mean() < 12.0, (np.median(difference), difference.mean())
    assert levelled[~seen].max(initial=0) <= 40  # black (bilinear blur at the edge only)


def test_tilted_training_frames_are_levelled_views_at_the_drawn_pitch_and_height() -> None:
    """simulate_frame(tilt=True): the drawn pitch and height are in their ranges; the frame's camera is
    level_camera of the tilted one (horizon above the centre), the image is black where the tilted
    camera saw nothing, every referred centre projects inside what it saw, and floor objects stand
    the drawn height below the camera. The same seed without tilt is the old level frame."""
    from threed_llm_ros.mono3d.data import (
        CAMERA_HEIGHT_RANGE_M, PITCH_RANGE_DEG, draw_tilt, simulate_frame,
    )
    from threed_llm_ros.mono3d.model import Mono3DConfig
    from threed_llm_ros.mono3d.projection import box_to_targets, fit_to_canvas

    config = Mono3DConfig()
    for seed in (3, 5, 8):
        pitch, height = draw_tilt(seed)
        assert PITCH_RANGE_DEG[0] <= pitch <= PITCH_RANGE_DEG[1]
        assert CAMERA_HEIGHT_RANGE_M[0] <= height <= CAMERA_HEIGHT_RANGE_M[1]
        frame = simulate_frame(seed, config, tilt=True)
        level = simulate_frame(seed, config)
        assert frame.pitch_deg == pitch and level.pitch_deg == 0.0 and level.camera == frame.camera
        _, tilted = fit_to_canvas(frame.camera, config.canvas_width, config.canvas_height)
        tilt = pitch_rotation(pitch)
        assert frame.canvas_camera == level_camera(tilted, tilt) and frame.canvas_camera.cy < tilted.cy
        seen = seen_by_tilted_camera(frame.canvas_camera, tilted, tilt)
        image = frame.image[:frame.canvas_camera.height, :frame.canvas_camera.width]
        assert image[~seen].max(initial=0) == 0 and image[seen].mean() > 20
        assert frame.referrals
        for referral in frame.referrals:
            u, v = box_to_targets(referral.box, frame.canvas_camera)["uv"]
            assert seen[int(v), int(u)]
        bottoms = [r.box.center[2] - r.box.size[2] / 2 for r in frame.referrals]
        assert min(bottoms) == pytest.approx(-height, abs=1e-9)


@pytest.mark.skipif(not (SHIPPED / "model.safetensors").is_file(), reason="no shipped checkpoint")
def test_levelling_turns_a_tilted_view_of_the_table_back_into_the_right_box() -> None:
    """The shipped checkpoint on a camera pitched 20 degrees down: unlevelled, the grey table's box is
    metres off (IoU 0); levelled with the known tilt it is found (IoU measured 0.525, floor 0.4), and the
    pose given in the tilted camera's optical frame is the levelled box turned back into it."""
    from threed_llm_ros.mono3d.grounder import ImageGrounder

    scene = generate_scene(3)
    (truth,) = [box for obj, box in zip(scene.objects, scene.boxes_in_camera())
                if (obj.color, obj.category) == ("grey", "table")]
    tilt = pitch_rotation(-20.0)
    image = tilted_camera_rgb(scene, CAMERA, tilt)
    grounder = ImageGrounder(SHIPPED)
    raw = grounder.ground(image, CAMERA, "Where is the grey table?", "camera")
    levelled = grounder.ground(image, CAMERA, "Where is the grey table?", "camera", tilt)
    assert raw.box is not None and rotated_box_iou(raw.box, truth) < 0.1
    assert levelled.box is not None and rotated_box_iou(levelled.box, truth) >= 0.4
    level_optical = np.array([-levelled.box.center[1], -levelled.box.center[2], levelled.box.center[0]])
    np.testing.assert_allclose(levelled.position, tilt.T @ level_optical, atol=1e-9)
    np.testing.assert_allclose(levelled.up, tilt.T @ [0.0, -1.0, 0.0], atol=1e-12)
    turned = tilt @ matrix_from_quaternion(levelled.orientation)  # the box's axes in the level optical frame
    assert turned[1, 2] == pytest.approx(-1.0, abs=1e-9)  # its z (up) is the level camera's up


def test_ask_levels_with_the_given_pitch_and_roll(realdata: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """`threed-llm ask IMAGE --camera-info K.yaml --camera-pitch P --camera-roll R --json` gives the library's
    grounding with that tilt (pose in the camera's optical frame), not the unlevelled one."""
    import json

    import yaml
    from PIL import Image

    from threed_llm_ros.ask import main
    from threed_llm_ros.mono3d.grounder import ImageGrounder
    from threed_llm_ros.mono3d.model import Mono3DConfig, Mono3DGrounder, save_model

    image_path = realdata / "sunrgbd_mmdet3d" / "image" / "000001.jpg"
    camera = tmp_path / "camera.yaml"
    camera.write_text(yaml.safe_dump({"image_width": 730, "image_height": 530, "camera_matrix": {
        "rows": 3, "cols": 3, "data": [529.5, 0.0, 365.0, 0.0, 529.5, 265.0, 0.0, 0.0, 1.0]}}))
    checkpoint = save_model(Mono3DGrounder(Mono3DConfig(dim=32, heads=2, decoder_layers=1, presence_threshold=0.0)),
                            tmp_path / "ckpt")
    assert main([str(image_path), "--camera-info", str(camera), "--camera-pitch", "-7.1", "--camera-roll", "-11.7",
                 "where is the bed?", "--checkpoint", str(checkpoint), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    image = np.asarray(Image.open(image_path).convert("RGB"))
    intrinsics = CameraIntrinsics(529.5, 529.5, 365.0, 265.0, 730, 530)
    grounder = ImageGrounder(checkpoint)
    levelled = grounder.ground(image, intrinsics, "where is the bed?", "camera", pitch_rotation(-7.1, -11.7))
    plain = grounder.ground(image, intrinsics, "where is the bed?", "camera")
    np.testing.assert_allclose(payload["position_optical"], levelled.position, atol=1e-5)
    assert np.linalg.norm(np.subtract(levelled.position, plain.position)) > 0.05


def test_ask_refuses_a_pitch_out_of_range_in_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from threed_llm_ros.ask import main

    image = tmp_path / "room.png"
    with pytest.raises(SystemExit) as exit_info:
        main([str(image), "where is the bed?", "--camera-info", "k.yaml", "--camera-pitch", "-95"])
    assert exit_info.value.code == 2
    assert "--camera-pitch -95 is out of range" in capsys.readouterr().err


# --------------------------------------------------------------------------- over DDS

FRAME_ID = "camera_color_optical_frame"
TIMEOUT_S = 90.0


def _transform(parent: str, child: str, rotation: np.ndarray, translation: tuple[float, float, float]):  # noqa: ANN202
    from geometry_msgs.msg import TransformStamped

    message = TransformStamped()
    message.header.frame_id, message.child_frame_id = parent, child
    message.transform.translation.x, message.transform.translation.y, message.transform.translation.z = translation
    q = quaternion_from_matrix(rotation)
    rotation_message = message.transform.rotation
    rotation_message.x, rotation_message.y, rotation_message.z, rotation_message.w = (float(v) for v in q)
    return message


@pytest.mark.ros
@pytest.mark.slow
@pytest.mark.skipif(not (SHIPPED / "model.safetensors").is_file(), reason="no shipped checkpoint")
def test_node_levels_with_the_camera_tilt_from_tf_else_its_parameter(tmp_path: Path) -> None:
    """mono3d_node in its own process, a camera pitched 20 degrees down, 1.2 m above the floor, publishing
    RGB + camera_info from this one. Before any transform the node levels with its camera_pitch_deg parameter
    (-10, on purpose wrong) at its camera_height_m parameter (0.9, wrong too) and /diagnostics says so; once
    /tf_static gives base_link -> camera_link (pitched, 1.2 m up) -> camera_color_optical_frame, it takes tilt
    and height from TF: the pose (in the image's optical frame) is the library's grounding with the true
    tilt and height, and that box finds the grey table."""
    rclpy = pytest.importorskip("rclpy")
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseStamped
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import String
    from tf2_msgs.msg import TFMessage

    from threed_llm_ros.mono3d.grounder import ImageGrounder
    from threed_llm_ros.processes import NodeProcess, NodeProcessSpec
    from threed_llm_ros.ros.conversions import array_to_image, intrinsics_to_camera_info
    from threed_llm_ros.ros.qos import latched_qos

    scene = generate_scene(3)
    (truth,) = [box for obj, box in zip(scene.objects, scene.boxes_in_camera())
                if (obj.color, obj.category) == ("grey", "table")]
    tilt = pitch_rotation(-20.0)
    rgb = tilted_camera_rgb(scene, CAMERA, tilt)
    node = NodeProcess(NodeProcessSpec(
        module="threed_llm_ros.ros.mono3d_node",
        parameters={"checkpoint": str(SHIPPED), "level_frame": "base_link", "camera_pitch_deg": -10.0,
                    "camera_height_m": 0.9, "diagnostics_period_s": 0.2},
        remappings={"image_raw": "tilted/image_raw", "camera_info": "tilted/camera_info"}),
        log_path=tmp_path / "mono3d_node.log")
    context = Context()
    rclpy.init(context=context)
    client = rclpy.create_node("mono3d_tilt_test_client", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(client)
    reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    images = client.create_publisher(Image, "tilted/image_raw", qos_profile_sensor_data)
    infos = client.create_publisher(CameraInfo, "tilted/camera_info", qos_profile_sensor_data)
    prompts = client.create_publisher(String, "prompt", reliable)
    static = client.create_publisher(TFMessage, "/tf_static", latched_qos(10))
    answers: list[str] = []
    poses: list[PoseStamped] = []
    diagnostics: dict[str, str] = {}

    def publish_frame() -> None:
        stamp = client.get_clock().now().to_msg()
        image = array_to_image(rgb, "rgb8", frame_id=FRAME_ID, stamp=(stamp.sec, stamp.nanosec))
        info = intrinsics_to_camera_info(CAMERA, frame_id=FRAME_ID, stamp=(stamp.sec, stamp.nanosec))
        images.publish(image)
        infos.publish(info)

    def read_diagnostics(message: DiagnosticArray) -> None:
        for status in message.status:
            diagnostics.update({value.key: value.value for value in status.values})

    client.create_timer(0.25, publish_frame)
    client.create_subscription(String, "answer", lambda m: answers.append(m.data), reliable)
    client.create_subscription(PoseStamped, "grounding/target_pose", poses.append, reliable)
    client.create_subscription(DiagnosticArray, "/diagnostics", read_diagnostics, reliable)

    def spin_until(condition, what: str) -> None:  # noqa: ANN001
        deadline = time.monotonic() + TIMEOUT_S
        while not condition():
            assert node.running(), f"the node exited early:\n{node.output()}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{node.output()}"
            executor.spin_once(timeout_sec=0.05)

    def ask(prompt: str) -> str:
        while True:
            count = len(answers)
            prompts.publish(String(data=prompt))
            spin_until(lambda: len(answers) > count, f"the answer to {prompt!r}")
            if not answers[count].startswith("No "):  # "No image yet" until the node's first frame
                return answers[count]
            time.sleep(0.3)

    def answered_pose(prompt: str) -> np.ndarray:
        count = len(poses)
        answer = ask(prompt)
        assert answer.startswith("The grey table:"), answer
        spin_until(lambda: len(poses) > count, "the pose")
        pose = poses[-1]
        assert pose.header.frame_id == FRAME_ID
        return np.array([pose.pose.position.x, pose.pose.position.y, pose.pose.position.z])

    grounder = ImageGrounder(SHIPPED)
    try:
        spin_until(lambda: "active" in node.output() and prompts.get_subscription_count() > 0
                   and client.count_publishers("answer") > 0, "the node to activate and be discovered")
        position = answered_pose("Where is the grey table?")
        by_parameter = grounder.ground(rgb, CAMERA, "Where is the grey table?", FRAME_ID, pitch_rotation(-10.0),
                                       camera_height_m=0.9)
        np.testing.assert_allclose(position, by_parameter.position, atol=1e-4)
        spin_until(lambda: "tilt_source" in diagnostics, "diagnostics")
        assert diagnostics["tilt_source"].startswith("parameters camera_pitch_deg -10"), diagnostics
        assert "no transform base_link <- camera_color_optical_frame" in diagnostics["tilt_source"]
        assert diagnostics["height_source"].startswith("parameter camera_height_m 0.9 (no transform"), diagnostics
        assert diagnostics["camera_height_m_used"] == "0.900"

        camera_link = np.array([[math.cos(math.radians(20.0)), 0.0, math.sin(math.radians(20.0))], [0.0, 1.0, 0.0],
                                [-math.sin(math.radians(20.0)), 0.0, math.cos(math.radians(20.0))]])  # 20° down
        static.publish(TFMessage(transforms=[
            _transform("base_link", "camera_link", _yaw(0.4) @ camera_link, (0.1, 0.0, 1.2)),
            _transform("camera_link", FRAME_ID, BASE_FROM_LEVEL_OPTICAL, (0.0, 0.0, 0.0))]))
        diagnostics.clear()
        spin_until(lambda: diagnostics.get("tilt_source", "").startswith("tf"), "the node to take the tilt from TF")
        assert diagnostics["tilt_source"] == diagnostics["height_source"] == f"tf base_link <- {FRAME_ID}"
        assert float(diagnostics["camera_pitch_deg_used"]) == pytest.approx(-20.0, abs=0.01)
        assert diagnostics["camera_height_m_used"] == "1.200"
        position = answered_pose("Where is the grey table?")
        by_tf = grounder.ground(rgb, CAMERA, "Where is the grey table?", FRAME_ID, tilt, camera_height_m=1.2)
        # TF's quaternions compose to the tilt up to rounding, which moves the resampled pixels a hair: 1 cm
        np.testing.assert_allclose(position, by_tf.position, atol=0.01)
        assert np.linalg.norm(np.subtract(by_tf.position, by_parameter.position)) > 0.1  # the tilt mattered
        assert by_tf.box is not None and rotated_box_iou(by_tf.box, truth) >= 0.4
    finally:
        executor.shutdown()
        client.destroy_node()
        rclpy.shutdown(context=context)
        code = node.stop()
    assert code == 0, node.output()
