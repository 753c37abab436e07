"""The camera's height above the floor as an input to single-image grounding: the ground-plane drop below
the camera is the reference camera's (1.2 m) plus the height difference, so a known height (TF, a
parameter, --camera-height) puts floor objects at the right depth without retraining."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from threed_llm_ros.geometry.frames import quaternion_from_matrix
from threed_llm_ros.geometry.transform_tree import TransformTree
from threed_llm_ros.mono3d.data import TEST_SEED_OFFSET, build_feature_set, simulate_frame
from threed_llm_ros.mono3d.model import MIN_DROP_M, Mono3DConfig, Mono3DGrounder, camera_features, load_model

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "mono3d"
TINY = Mono3DConfig(dim=32, heads=2, decoder_layers=1, ground_plane_depth=True)


@pytest.fixture(scope="module")
def backbone():
    from threed_llm_ros.mono3d.image_tokens import FrozenBackbone

    return FrozenBackbone()


def test_transform_tree_gives_the_camera_origin_in_the_level_frame() -> None:
    """base_link -> camera_link (turned, 1.1 m up) -> optical (5 cm forward of the link): the optical
    frame's origin in base_link is the chain's translation, and back the other way it is the inverse."""
    tree = TransformTree()
    c, s = math.cos(0.5), math.sin(0.5)
    link = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    tree.set("base_link", "camera_link", tuple(quaternion_from_matrix(link)), (0.2, 0.0, 1.1))
    tree.set("camera_link", "optical", (0.0, 0.0, 0.0, 1.0), (0.05, 0.0, 0.0))
    rotation, origin = tree.transform("base_link", "optical")
    np.testing.assert_allclose(rotation, link, atol=1e-12)
    np.testing.assert_allclose(origin, [0.2 + 0.05 * c, 0.05 * s, 1.1], atol=1e-12)
    back_rotation, back_origin = tree.transform("optical", "base_link")
    np.testing.assert_allclose(back_rotation @ origin + back_origin, 0.0, atol=1e-12)
    assert tree.transform("map", "optical") is None
    with pytest.raises(ValueError, match="non-finite translation"):
        tree.set("base_link", "bad", (0.0, 0.0, 0.0, 1.0), (0.0, float("nan"), 0.0))


def test_a_known_height_shifts_the_drop_of_the_ground_plane_depth(backbone) -> None:
    """The same image and queries at several camera heights: the ground-plane depth is the reference one
    times (drop + H − 1.2) / drop (the drop head's own output), the direct depth does not move, an
    unknown height (None, NaN) is the reference's, and a height that puts the bottom above the camera
    leaves the direct depth alone."""
    frame = simulate_frame(3, TINY)
    model = Mono3DGrounder(TINY).eval()
    local, global_ = backbone(torch.as_tensor(frame.image, dtype=torch.float32).permute(2, 0, 1)[None])
    count = 4
    arguments = (local, global_, torch.zeros(count, dtype=torch.long), torch.arange(count),
                 torch.zeros(count, dtype=torch.long), camera_features([frame.canvas_camera], TINY))
    with torch.no_grad():
        reference = model(*arguments)
        drop = torch.exp(reference["log_drop"])
        for height in (0.6, 1.8):
            shifted = model(*arguments, torch.tensor([height]))
            torch.testing.assert_close(shifted["log_depth_estimates"][:, 0], reference["log_depth_estimates"][:, 0])
            expected = reference["log_depth_estimates"][:, 1] + torch.log((drop + height - 1.2) / drop)
            usable = drop + height - 1.2 >= MIN_DROP_M
            torch.testing.assert_close(shifted["log_depth_estimates"][usable, 1], expected[usable])
            assert not torch.allclose(shifted["log_depth_canonical"], reference["log_depth_canonical"])
        for unknown in (None, torch.tensor([float("nan")]), torch.tensor([1.2])):
            torch.testing.assert_close(model(*arguments, unknown)["log_depth_canonical"],
                                       reference["log_depth_canonical"])
        above = model(*arguments, torch.tensor([1.2 - float(drop.max()) - 0.1]))  # every bottom above the camera
        torch.testing.assert_close(above["log_depth_canonical"], reference["log_depth_estimates"][:, 0])


def test_training_with_known_heights_targets_the_reference_cameras_drop(backbone) -> None:
    """Frames rendered at 0.6 and 1.8 m, their heights given (as `mono3d-train --tilt` does): the drop loss
    compares the head with the drop below a 1.2 m camera, which is 1.2 m for every floor object whatever the
    real height, so the head need not guess the height; with the heights hidden it is the real drop."""
    from threed_llm_ros.mono3d.image_tokens import token_centers
    from threed_llm_ros.mono3d.train import bottom_targets, forward_features, query_losses

    frames = [simulate_frame(3, TINY, camera_height_m=0.6), simulate_frame(5, TINY, camera_height_m=1.8)]
    features = build_feature_set(frames, backbone, TINY)
    torch.testing.assert_close(features.camera_height, torch.tensor([0.6, 1.8]))
    model = Mono3DGrounder(TINY).eval()
    centers = token_centers(*features.local.shape[-2:], TINY.canvas_height, TINY.canvas_width)
    camera = camera_features(features.canvas_cameras, TINY)[features.image_index] * TINY.canvas_width
    _, true_drop = bottom_targets(features.targets, camera)
    floor = torch.tensor([abs(box.center[2] - box.size[2] / 2 + height) < 0.02
                          for box, height in zip(features.boxes, features.camera_height[features.image_index])])
    assert floor.sum() >= 4 and not torch.allclose(true_drop[floor], torch.full_like(true_drop[floor], 1.2))
    below_reference = true_drop - (features.camera_height[features.image_index] - 1.2)
    torch.testing.assert_close(below_reference[floor], torch.full_like(below_reference[floor], 1.2),
                               atol=1e-5, rtol=0)
    with torch.no_grad():
        for known, target in ((True, below_reference), (False, true_drop)):
            outputs = forward_features(model, features, known_height=known)
            losses = query_losses(model, outputs, features.targets, centers, camera)
            expected = (outputs["log_drop"] - torch.log(target.clamp(min=MIN_DROP_M))).abs().mean()
            torch.testing.assert_close(losses["drop"], expected)


@pytest.mark.skipif(not (SHIPPED / "model.safetensors").is_file(), reason="no shipped checkpoint")
@pytest.mark.parametrize("height", (0.6, 1.8))
def test_the_true_camera_height_puts_floor_objects_at_the_right_depth(backbone, height: float) -> None:
    """The shipped checkpoint (trained at 1.2 m only) on 12 test frames rendered with the camera at 0.6 m and
    at 1.8 m: given the true height, the depth error of floor objects falls by more than half and Acc@0.25
    rises (measured on 40 frames: 0.6 m 1.65 -> 0.56 m, Acc 0.03 -> 0.27; 1.8 m 0.85 -> 0.34 m, Acc 0.04
    -> 0.44); without it they are as far off as a 1.2 m camera would put them."""
    from threed_llm_ros.mono3d.evaluate import predict_boxes, score

    model = load_model(SHIPPED)
    frames = [simulate_frame(TEST_SEED_OFFSET + index, model.config, camera_height_m=height) for index in range(12)]
    assert {frame.camera_height_m for frame in frames} == {height}
    features = build_feature_set(frames, backbone, model.config)
    floor = np.array([abs(box.center[2] - box.size[2] / 2 + height) < 0.02 for box in features.boxes])
    assert floor.sum() >= 20
    assumed = score(predict_boxes(model, features, known_height=False), features.boxes)
    given = score(predict_boxes(model, features, known_height=True), features.boxes)
    assert given["depth_error_m"][floor].mean() < 0.5 * assumed["depth_error_m"][floor].mean(), (
        given["depth_error_m"][floor].mean(), assumed["depth_error_m"][floor].mean())
    assert (given["iou"][floor] >= 0.25).mean() >= (assumed["iou"][floor] >= 0.25).mean() + 0.15
    assert given["iou"].mean() > assumed["iou"].mean()


@pytest.mark.skipif(not (SHIPPED / "model.safetensors").is_file(), reason="no shipped checkpoint")
def test_ask_takes_the_camera_height(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`threed-llm ask IMAGE --camera-info K.yaml --camera-height 0.7 --json` and `threed-llm mono3d-ask` give
    the library's grounding at that height, not the 1.2 m one; a height out of range is one line, exit 2."""
    import yaml
    from PIL import Image

    from threed_llm_ros.ask import main as ask_main
    from threed_llm_ros.mono3d.ask import main as mono3d_ask_main
    from threed_llm_ros.mono3d.grounder import ImageGrounder

    grounder = ImageGrounder(SHIPPED)
    frame = simulate_frame(TEST_SEED_OFFSET, grounder.model.config, camera_height_m=0.7)
    camera = frame.canvas_camera
    rgb = frame.image[:camera.height, :camera.width]
    for referral in frame.referrals:  # the first referred object the model sees
        prompt = f"where is the {referral.color or ''} {referral.category}?"
        at_height = grounder.ground(rgb, camera, prompt, "camera", camera_height_m=0.7)
        if at_height.seen:
            break
    assumed = grounder.ground(rgb, camera, prompt, "camera")
    assert at_height.seen and assumed.seen, (at_height.text, assumed.text)
    assert np.linalg.norm(np.subtract(at_height.position, assumed.position)) > 0.1
    image_path, camera_path = tmp_path / "room.png", tmp_path / "camera.yaml"
    Image.fromarray(rgb).save(image_path)
    camera_path.write_text(yaml.safe_dump({"image_width": camera.width, "image_height": camera.height,
                                           "camera_matrix": {"rows": 3, "cols": 3, "data": [
                                               camera.fx, 0.0, camera.cx, 0.0, camera.fy, camera.cy, 0.0, 0.0, 1.0]}}))
    for main, extra in ((ask_main, ["--checkpoint", str(SHIPPED)]), (mono3d_ask_main, ["--model", str(SHIPPED)])):
        assert main([str(image_path), prompt, "--camera-info", str(camera_path), "--camera-height", "0.7",
                     "--json", *extra]) == 0
        payload = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert payload["camera_height_m"] == 0.7
        np.testing.assert_allclose(payload["position_optical"], at_height.position, atol=1e-5)
        with pytest.raises(SystemExit) as exit_info:
            main([str(image_path), prompt, "--camera-info", str(camera_path), "--camera-height", "0", *extra])
        assert exit_info.value.code == 2
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert "--camera-height 0 m is out of range: give metres between 0.05 and 5" in error, error


@pytest.mark.ros
@pytest.mark.parametrize(("parameters", "said"), (
    ({"camera_height_m": 0.0}, "parameter 'camera_height_m'"),
    ({"camera_hieght_m": 0.8}, "camera_hieght_m"),
))
def test_a_bad_camera_height_parameter_fails_configure_in_one_line(tmp_path: Path, parameters: dict,
                                                                  said: str) -> None:
    """mono3d_node with camera_height_m out of range, or misspelled, exits 1 with one line naming it and the fix."""
    import time

    from threed_llm_ros.processes import NodeProcess, NodeProcessSpec

    node = NodeProcess(NodeProcessSpec(module="threed_llm_ros.ros.mono3d_node",
                                       parameters={"checkpoint": str(SHIPPED), **parameters}),
                       log_path=tmp_path / "mono3d_node.log")
    deadline = time.monotonic() + 60
    while node.running() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert node.stop() == 1
    failures = [line for line in node.output().splitlines() if "[FATAL]" in line and said in line]
    assert len(failures) == 1 and "Fix:" in failures[0], node.output()
