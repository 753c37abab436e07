"""Offline use: `threed-llm ask` reads clouds from files and answers through the inference engine."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from threed_llm_ros.ask import main, read_cloud_file
from threed_llm_ros.data.dataset import write_scene
from threed_llm_ros.data.generate import record_from_frame
from threed_llm_ros.data.sim.frames import simulate
from threed_llm_ros.errors import ConfigError
from threed_llm_ros.geometry.camera import CameraIntrinsics


def test_reads_real_organised_pcd_dropping_invalid_points(realdata: Path) -> None:
    points, colors, up_axis = read_cloud_file(realdata / "pcl" / "office1.pcd")
    assert up_axis is None
    # SOURCES.md: 254k valid points of 640x480, z 1.8-5.4 m, with colour.
    assert 250_000 < len(points) < 260_000
    assert np.isfinite(points).all()
    assert 1.7 < points[:, 2].min() and points[:, 2].max() < 5.5
    assert colors is not None and colors.dtype == np.uint8 and colors.shape == points.shape


def test_reads_sunrgbd_pc_array(realdata: Path) -> None:
    points, colors, up_axis = read_cloud_file(realdata / "sunrgbd_mmdet3d" / "lidar" / "000001.npz")
    assert up_axis == "z", "SUN RGB-D `pc` arrays are upright depth coordinates: never read as an optical frame"
    raw = np.load(realdata / "sunrgbd_mmdet3d" / "lidar" / "000001.npz")["pc"]
    np.testing.assert_array_equal(points, raw[:, :3])
    np.testing.assert_array_equal(colors, np.clip(raw[:, 3:6] * 255, 0, 255).astype(np.uint8))


def test_reads_dataset_scene_with_its_up_axis(tmp_path: Path) -> None:
    frame = simulate(2, intrinsics=CameraIntrinsics.from_field_of_view(160, 120, 60.0))
    record = record_from_frame(frame, "scene_2", max_points=5000, rng=np.random.default_rng(0), save_images=False)
    write_scene(tmp_path / "scene.npz", record)
    points, colors, up_axis = read_cloud_file(tmp_path / "scene.npz")
    assert up_axis == "-y"
    np.testing.assert_array_equal(points, record.points)
    np.testing.assert_array_equal(colors, record.colors)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [("missing.ply", None, "does not exist"), ("cloud.xyz", b"1 2 3\n", "unsupported"), ("empty.npz", "npz", "none of the keys")],
)
def test_bad_files_raise_config_error(tmp_path: Path, name: str, content, message: str) -> None:
    path = tmp_path / name
    if content == "npz":
        np.savez(path, other=np.zeros(3))
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        read_cloud_file(path)


def test_missing_checkpoint_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scene = tmp_path / "scene.npz"
    np.savez(scene, xyz=np.random.default_rng(0).uniform(-1, 1, (500, 3)).astype(np.float32) + [0, 0, 2])
    assert main([str(scene), "describe the scene", "--checkpoint", str(tmp_path / "nothing")]) == 2
    error = capsys.readouterr().err
    assert "checkpoint" in error and "Fix:" in error


def _ask_in_a_fresh_process(*arguments: str) -> tuple[int, str, bool]:
    """Exit status, stderr and whether torch was imported, of `threed-llm ask ARGUMENTS` in a new interpreter."""
    script = ("import sys; from threed_llm_ros.cli import main; status = main(sys.argv[1:]); "
              "print('torch' in sys.modules); sys.exit(status)")
    done = subprocess.run([sys.executable, "-c", script, "ask", *arguments], capture_output=True, text=True, timeout=60)
    return done.returncode, done.stderr, done.stdout.strip().endswith("True")


@pytest.mark.parametrize(("arguments", "said"), [
    (("{scene}", "   "), "the prompt '   ' is empty; send a question or an instruction"),
    (("{scene}", "where is the cup?", "x" * 1001), "has 1001 characters, more than max_prompt_chars (1000)"),
    (("{missing}", "where is the cup?"), "does not exist. Fix: give a .ply, .pcd or .npz point cloud file"),
    (("{scene}",), "give a prompt after"),
    (("--node",), "give a prompt to send to the node"),
    (("{scene}", "hi", "--lm-backend", "tensorflow"), "invalid choice: 'tensorflow'"),
])
def test_bad_input_is_refused_before_torch_is_imported(tmp_path: Path, arguments: tuple[str, ...], said: str) -> None:
    scene = tmp_path / "scene.npz"
    np.savez(scene, xyz=np.zeros((10, 3), dtype=np.float32))
    filled = [argument.format(scene=scene, missing=tmp_path / "absent.ply") for argument in arguments]
    status, error, imported_torch = _ask_in_a_fresh_process(*filled)
    assert status == 2 and said in error, error
    assert not imported_torch, "input was checked only after the heavy imports"


@pytest.mark.slow
def test_ask_routes_and_answers_with_a_real_model(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from threed_llm_ros.runtime.engine_settings import build_untrained_checkpoint

    checkpoint = build_untrained_checkpoint(tmp_path / "checkpoint")
    frame = simulate(4, intrinsics=CameraIntrinsics.from_field_of_view(160, 120, 60.0))
    record = record_from_frame(frame, "scene_4", max_points=8000, rng=np.random.default_rng(0), save_images=False)
    write_scene(tmp_path / "scene.npz", record)

    # one load serves several prompts: two as arguments, two typed (the empty one is refused and skipped)
    monkeypatch.setattr("sys.stdin", io.StringIO("what do you see?\n   \n"))
    assert main([str(tmp_path / "scene.npz"), "where is the chair?", "bring the cup to the table",
                 "--checkpoint", str(checkpoint), "--max-new-tokens", "8", "--json", "--interactive"]) == 0
    printed = capsys.readouterr()
    found, planned, described = (json.loads(line) for line in printed.out.splitlines())
    assert printed.err.count("loaded in ") == 1 and "loading the object layer" in printed.err  # one load
    assert described["intent"] == "describe"
    assert found["frame"] == planned["frame"] == "the frame of scene.npz (up axis -y)"
    assert found["intent"] == "find"
    assert found["boxes"] or "not seen" in found["text"], "a box of a seen chair, or an honest 'not seen'"
    for box in found["boxes"]:
        assert np.isfinite(box["position"]).all() and all(size > 0 for size in box["size"])

    assert planned["intent"] == "plan"
    actions = [step["action"] for step in planned["plan"]["steps"]]
    assert actions[0] == "navigate_to" and "pick" in actions
    assert all("pose" in step or step.get("seen") is False
               for step in planned["plan"]["steps"] if step["action"] == "navigate_to"), "a goal, or 'not seen'"
