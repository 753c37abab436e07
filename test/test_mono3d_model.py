"""The single-image grounder: depth follows the focal length, checkpoints round-trip, data is consistent."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from threed_llm_ros.errors import ConfigError, ModelFileError
from threed_llm_ros.geometry.iou import rotated_box_iou
from threed_llm_ros.mono3d.data import FOV_RANGE_DEG, IMAGE_SIZES, simulate_frame
from threed_llm_ros.mono3d.evaluate import load_sun_sample, score, summarise
from threed_llm_ros.mono3d.model import (
    Mono3DConfig,
    Mono3DGrounder,
    camera_features,
    decode_boxes,
    doubled_angle,
    load_model,
    save_model,
)
from threed_llm_ros.mono3d.projection import box_to_targets

TINY = Mono3DConfig(dim=32, heads=2, decoder_layers=1)


@pytest.fixture(scope="module")
def backbone():
    from threed_llm_ros.mono3d.image_tokens import FrozenBackbone

    return FrozenBackbone()


@pytest.fixture(scope="module")
def frame():
    return simulate_frame(3, TINY)


def _features(backbone, image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return backbone(torch.as_tensor(image, dtype=torch.float32).permute(2, 0, 1)[None])


def _outputs(model: Mono3DGrounder, local, global_, cameras) -> dict[str, torch.Tensor]:
    count = len(cameras)
    with torch.no_grad():
        return model(local.expand(count, -1, -1, -1), global_.expand(count, -1, -1, -1), torch.arange(count),
                     torch.full((count,), model.category_index("chair")), torch.zeros(count, dtype=torch.long),
                     camera_features(cameras, model.config))


def test_predicted_depth_is_proportional_to_the_focal_length(backbone, frame) -> None:
    """The same image with only the focal length changed: the decoded depth scales with it exactly
    and (u, v) stays put; the ablation (no geometry projection) has no such structure."""
    local, global_ = _features(backbone, frame.image)
    base = frame.canvas_camera
    factors = (0.6, 1.0, 1.5, 2.2)
    cameras = [replace(base, fx=base.fx * f, fy=base.fy * f) for f in factors]
    for config in (TINY, replace(TINY, ground_plane_depth=True)):  # with and without the ground-plane depth
        model = Mono3DGrounder(config).eval()
        outputs = _outputs(model, local, global_, cameras)
        boxes = decode_boxes(outputs, cameras, config)
        depths = np.array([box.center[0] for box in boxes])
        np.testing.assert_allclose(depths / np.array(factors), depths[1], rtol=1e-5)
        np.testing.assert_allclose(outputs["uv"].numpy(), outputs["uv"][1:2].expand(4, -1).numpy(), atol=1e-4)
    ablation = Mono3DGrounder(replace(TINY, geometry_projection=False)).eval()
    direct = decode_boxes(_outputs(ablation, local, global_, cameras), cameras, ablation.config)
    ratios = np.array([box.center[0] for box in direct]) / np.array(factors)
    assert not np.allclose(ratios, ratios[1], rtol=1e-3)


def test_ground_plane_depth_inverts_the_simulators_projection(frame) -> None:
    """The true bottom row and drop below the camera give back the true canonical depth exactly, at
    several focal lengths (the model's ground-plane estimate is this formula); it needs geometry projection."""
    from threed_llm_ros.mono3d.projection import ground_plane_canonical_depth
    from threed_llm_ros.mono3d.train import bottom_targets

    for scale in (0.7, 1.0, 1.6):
        camera = replace(frame.canvas_camera, fx=frame.canvas_camera.fx * scale, fy=frame.canvas_camera.fy * scale)
        targets = [box_to_targets(referral.box, camera) for referral in frame.referrals]
        stacked = {key: torch.tensor(np.stack([t[key] for t in targets]), dtype=torch.float64) for key in targets[0]}
        per_query = torch.tensor([[camera.fx, camera.fy, camera.cx, camera.cy]] * len(targets), dtype=torch.float64)
        v_bottom, drop = bottom_targets(stacked, per_query)
        assert bool((drop > 0).all()) and bool((v_bottom > camera.cy).all())  # bottoms below a level camera
        depth = ground_plane_canonical_depth(v_bottom, drop, camera.fx, camera.fy, camera.cy)
        np.testing.assert_allclose(depth.numpy(), stacked["depth_canonical"][:, 0].numpy(), rtol=1e-9)
    with pytest.raises(ConfigError, match="ground_plane_depth"):
        Mono3DGrounder(replace(TINY, ground_plane_depth=True, geometry_projection=False))


def test_checkpoint_round_trip(tmp_path: Path, backbone, frame) -> None:
    """safetensors + JSON config: the loaded model answers exactly as the saved one."""
    model = Mono3DGrounder(replace(TINY, seed=7)).eval()
    save_model(model, tmp_path / "ckpt", extra={"training": {"steps": 1}})
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["seed"] == 7 and config["notes"]["training"]["steps"] == 1
    loaded = load_model(tmp_path / "ckpt")
    local, global_ = _features(backbone, frame.image)
    first = _outputs(model, local, global_, [frame.canvas_camera])
    second = _outputs(loaded, local, global_, [frame.canvas_camera])
    for key in first:
        torch.testing.assert_close(first[key], second[key])
    with pytest.raises(ModelFileError, match="no model.safetensors"):
        load_model(tmp_path / "missing")


def test_same_seed_same_weights() -> None:
    first, second = Mono3DGrounder(TINY), Mono3DGrounder(TINY)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name


def test_unknown_category_is_named() -> None:
    with pytest.raises(ConfigError, match="'spaceship'.*ask for one of"):
        Mono3DGrounder(TINY).category_index("spaceship")


def test_simulated_frames_keep_the_camera_consistent(frame) -> None:
    """The drawn camera is in the robot-camera range, the canvas camera is it scaled, and every
    referral's centre projects inside the rendered image."""
    camera, canvas = frame.camera, frame.canvas_camera
    assert (camera.width, camera.height) in IMAGE_SIZES
    fov = np.degrees(2 * np.arctan(camera.width / 2 / camera.fx))
    assert FOV_RANGE_DEG[0] <= fov <= FOV_RANGE_DEG[1]
    assert canvas.fx / camera.fx == pytest.approx(canvas.width / camera.width, rel=0.01)
    assert frame.image.shape == (TINY.canvas_height, TINY.canvas_width, 3)
    assert frame.referrals
    for referral in frame.referrals:
        u, v = box_to_targets(referral.box, canvas)["uv"]
        assert 0 <= u < canvas.width and 0 <= v < canvas.height
    assert frame.image[:canvas.height, :canvas.width].mean() > 10  # rendered, not blank


def test_perfect_targets_score_full_marks(frame) -> None:
    """Decoding the true targets gives IoU 1 (Acc@0.5 = 1) and no depth error."""
    truth = [referral.box for referral in frame.referrals]
    targets = [box_to_targets(box, frame.canvas_camera) for box in truth]
    outputs = {
        "uv": torch.tensor(np.stack([t["uv"] for t in targets])),
        "log_depth_canonical": torch.log(torch.tensor([t["depth_canonical"][0] for t in targets])),
        "log_size": torch.log(torch.tensor(np.stack([t["size"] for t in targets]))),
        "yaw": doubled_angle(torch.tensor(np.stack([t["yaw"] for t in targets]))),
    }
    boxes = decode_boxes(outputs, [frame.canvas_camera] * len(truth), TINY)
    summary = summarise(score(boxes, truth))
    assert summary["acc_0.5"] == 1.0 and summary["depth_error_m"] < 1e-6


def test_sun_rgbd_sample_frames_agree(realdata) -> None:
    """The real check's frames: the labelled bed, taken into the level-camera frame and through the
    grounder's decoding (u, v, canonical depth with the resized image's intrinsics), comes back to
    itself (the camera's small pitch is the only loss)."""
    sample = load_sun_sample(realdata, TINY)
    assert sample.canvas.shape == (240, 320, 3) and sample.canvas_camera.width == 320
    bed = next(box for name, box in sample.labelled if name == "bed")
    from threed_llm_ros.eval.realdata import transform_box

    level = transform_box(bed, sample.body_from_level.T)
    targets = box_to_targets(level, sample.canvas_camera)
    assert 0 <= targets["uv"][0] < 320 and 0 <= targets["uv"][1] < 240  # the bed's centre is in the image
    outputs = {"uv": torch.tensor(targets["uv"][None]),
               "log_depth_canonical": torch.log(torch.tensor(targets["depth_canonical"])),
               "log_size": torch.log(torch.tensor(targets["size"][None])),
               "yaw": doubled_angle(torch.tensor(targets["yaw"][None]))}
    (decoded,) = decode_boxes(outputs, [sample.canvas_camera], TINY)
    assert rotated_box_iou(sample.to_body(decoded), bed) > 0.95
