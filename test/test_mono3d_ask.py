"""Prompt parsing and the no-ROS `mono3d-ask` command on a real image (SUN RGB-D 000001)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from threed_llm_ros.data.catalog import CATEGORY_NAMES, COLOR_NAMES
from threed_llm_ros.errors import ConfigError
from threed_llm_ros.mono3d.ask import load_camera_yaml, main
from threed_llm_ros.mono3d.grounder import ImageGrounder, parse_referral
from threed_llm_ros.mono3d.model import Mono3DConfig, Mono3DGrounder, save_model


@pytest.mark.parametrize("prompt, category, color", [
    ("Where is the bed?", "bed", None),
    ("find the red chair", "chair", "red"),
    ("show me the night stand", "night stand", None),
    ("where are the BOOKS", "book", None),
    ("the blue trash can please", "trash can", "blue"),
])
def test_parse_referral(prompt: str, category: str, color: str | None) -> None:
    referral = parse_referral(prompt, CATEGORY_NAMES, COLOR_NAMES)
    assert (referral.category, referral.color) == (category, color)


def test_parse_referral_names_the_known_categories() -> None:
    with pytest.raises(ConfigError, match="names no object category.*bed"):
        parse_referral("where is the spaceship?", CATEGORY_NAMES, COLOR_NAMES)


def _sun_camera_yaml(realdata: Path, tmp_path: Path) -> Path:
    values = [float(v) for v in (realdata / "sunrgbd_mmdet3d" / "calib" / "000001.txt").read_text().split()]
    k = np.array(values[9:18]).reshape(3, 3).T  # column-major
    path = tmp_path / "camera.yaml"
    path.write_text(yaml.safe_dump({"image_width": 730, "image_height": 530,
                                    "camera_matrix": {"rows": 3, "cols": 3, "data": k.ravel().tolist()}}))
    return path


def test_ask_grounds_in_a_real_image(realdata: Path, tmp_path: Path, capsys) -> None:
    """The command answers from the SUN RGB-D image and its K alone, with the same box as the library;
    a camera file of another size is refused in one line."""
    camera = _sun_camera_yaml(realdata, tmp_path)
    intrinsics = load_camera_yaml(camera)
    assert (intrinsics.fx, intrinsics.cx, intrinsics.cy) == (529.5, 365.0, 265.0)
    untrained = Mono3DConfig(dim=32, heads=2, decoder_layers=1, presence_threshold=0.0)  # always answers a box
    checkpoint = save_model(Mono3DGrounder(untrained), tmp_path / "ckpt")
    image = realdata / "sunrgbd_mmdet3d" / "image" / "000001.jpg"
    arguments = [str(image), "where is the bed?", "--camera-info", str(camera), "--model", str(checkpoint)]
    assert main([*arguments, "--json"]) == 0
    text, payload = capsys.readouterr().out.strip().splitlines()
    from PIL import Image

    expected = ImageGrounder(checkpoint).ground(np.asarray(Image.open(image).convert("RGB")), intrinsics,
                                                "where is the bed?", "the camera's optical frame")
    assert text == expected.text
    assert json.loads(payload)["position_optical"] == pytest.approx(list(expected.position))
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(camera.read_text().replace("730", "640"))
    assert main([str(image), "where is the bed?", "--camera-info", str(wrong), "--model", str(checkpoint)]) == 2
    assert "image is 730x530 but the camera is 640x530" in capsys.readouterr().err


def test_threed_llm_ask_routes_an_image_to_the_single_image_path(realdata: Path, tmp_path: Path, capsys) -> None:
    """`threed-llm ask IMAGE --camera-info K.yaml PROMPT...` answers as `mono3d-ask` does, one reply per
    prompt; an image without --camera-info, --camera-info with a cloud, and a missing image are refused
    in one line each."""
    from threed_llm_ros.ask import main as ask

    camera = _sun_camera_yaml(realdata, tmp_path)
    checkpoint = save_model(Mono3DGrounder(Mono3DConfig(dim=32, heads=2, decoder_layers=1, presence_threshold=0.0)),
                            tmp_path / "ckpt")
    image = str(realdata / "sunrgbd_mmdet3d" / "image" / "000001.jpg")
    assert main([image, "where is the bed?", "--camera-info", str(camera), "--model", str(checkpoint), "--json"]) == 0
    expected = capsys.readouterr().out
    assert ask([image, "--camera-info", str(camera), "where is the bed?", "find the chair",
                "--checkpoint", str(checkpoint), "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "\n".join(lines[:2]) + "\n" == expected and lines[2].startswith("The chair")
    assert ask([image, "where is the spaceship?", "--camera-info", str(camera), "--checkpoint", str(checkpoint)]) == 1
    assert "names no object category" in capsys.readouterr().err
    for arguments, said in (([image, "where is the bed?"], "give its intrinsics with --camera-info"),
                            (["room.ply", "where is the bed?", "--camera-info", str(camera)], "not with room.ply")):
        with pytest.raises(SystemExit) as exit_info:
            ask(arguments)
        assert exit_info.value.code == 2 and said in capsys.readouterr().err
    assert ask([str(tmp_path / "none.png"), "where is the bed?", "--camera-info", str(camera)]) == 2
    assert "none.png does not exist" in capsys.readouterr().err
