"""``threed-llm mono3d-ask IMAGE --camera-info K.yaml "where is the bed?"``: ground from one image, no ROS.

The camera file is a ROS camera-calibration YAML (what ``camera_calibration`` writes and
``camera_info_manager`` reads): ``image_width``, ``image_height`` and ``camera_matrix``
(``rows: 3, cols: 3, data: [fx, 0, cx, 0, fy, cy, 0, 0, 1]``). Prints the reply and, with
``--json``, the box as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from threed_llm_ros.errors import ConfigError, ModelFileError
from threed_llm_ros.geometry.camera import CameraIntrinsics


def load_camera_yaml(path: Path) -> CameraIntrinsics:
    """Intrinsics from a ROS camera-calibration YAML; ConfigError naming the missing or bad field."""
    import yaml

    if not path.is_file():
        raise ConfigError("camera-info", f"{path} does not exist", "give a camera-calibration YAML file")
    values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    try:
        data = [float(v) for v in values["camera_matrix"]["data"]]
        width, height = int(values["image_width"]), int(values["image_height"])
    except (KeyError, TypeError, ValueError) as error:
        raise ConfigError("camera-info", f"{path} lacks a usable {error} field",
                          "write image_width, image_height and camera_matrix: "
                          "{rows: 3, cols: 3, data: [9 values]}") from error
    if len(data) != 9:
        raise ConfigError("camera-info", f"camera_matrix has {len(data)} values", "give the 9 values of K, row by row")
    return CameraIntrinsics(fx=data[0], fy=data[4], cx=data[2], cy=data[5], width=width, height=height)


def main(argv: list[str] | None = None) -> int:
    """Ground the prompt's object in IMAGE; print the reply (exit 2 with one line on bad input)."""
    from PIL import Image

    from threed_llm_ros.mono3d.grounder import ImageGrounder
    from threed_llm_ros.resources import models_directory

    parser = argparse.ArgumentParser(prog="threed-llm mono3d-ask", description=__doc__.splitlines()[0])
    parser.add_argument("image", type=Path)
    parser.add_argument("prompt")
    parser.add_argument("--camera-info", type=Path, required=True, help="ROS camera-calibration YAML of the image")
    parser.add_argument("--model", type=Path, default=None, help="mono3d checkpoint (default: models/mono3d)")
    parser.add_argument("--json", action="store_true", help="also print the box as JSON")
    arguments = parser.parse_args(argv)
    try:
        intrinsics = load_camera_yaml(arguments.camera_info)
        if not arguments.image.is_file():
            raise ConfigError("image", f"{arguments.image} does not exist", "give an image file (PNG, JPEG)")
        image = np.asarray(Image.open(arguments.image).convert("RGB"))
        grounder = ImageGrounder(arguments.model or models_directory() / "mono3d")
        grounding = grounder.ground(image, intrinsics, arguments.prompt, frame_id="the camera's optical frame")
    except (ConfigError, ModelFileError) as error:
        print(f"threed-llm mono3d-ask: {error}", file=sys.stderr)
        return 2
    print(grounding.text)
    if arguments.json:
        box = grounding.box
        print(json.dumps({"category": grounding.referral.category, "color": grounding.referral.color,
                          "seen": grounding.seen, "presence": round(grounding.presence, 4),
                          "position_optical": grounding.position, "orientation_optical": grounding.orientation,
                          "size": list(box.size) if box is not None else None, "score": round(grounding.score, 4)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
