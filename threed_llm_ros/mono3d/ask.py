"""``threed-llm mono3d-ask IMAGE --camera-info K.yaml "where is the bed?"``: ground from one image, no ROS.

The camera file is a ROS camera-calibration YAML (what ``camera_calibration`` writes and
``camera_info_manager`` reads): ``image_width``, ``image_height`` and ``camera_matrix``
(``rows: 3, cols: 3, data: [fx, 0, cx, 0, fy, cy, 0, 0, 1]``). ``--camera-pitch DEG`` (negative:
looking down) and ``--camera-roll DEG`` give the camera's tilt: the image is levelled before the
model, and the pose is still given in the camera's optical frame. ``--camera-height M`` gives its height
above the floor (default: the 1.2 m of the training frames), which sets the depth of floor objects.
Prints the reply and, with ``--json``, the box as JSON. ``threed-llm ask IMAGE --camera-info K.yaml "where is the bed?"``
comes here too (:func:`ask_image`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from threed_llm_ros.errors import ConfigError, ModelFileError
from threed_llm_ros.geometry.camera import CameraIntrinsics
from threed_llm_ros.mono3d.projection import camera_height_problem


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


def tilt_problem(pitch_deg: float | None, roll_deg: float | None) -> str | None:
    """What is wrong with --camera-pitch / --camera-roll (None when nothing is)."""
    for name, value, limit in (("--camera-pitch", pitch_deg, 89.0), ("--camera-roll", roll_deg, 180.0)):
        if value is not None and not -limit <= value <= limit:
            return f"{name} {value:g} is out of range: give degrees between {-limit:g} and {limit:g}"
    return None




IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def read_image(path: Path) -> np.ndarray:
    """The image as H×W×3 uint8 RGB; ConfigError naming the file where it is missing or unreadable."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise ConfigError("image", f"{path} does not exist", "give an image file (PNG, JPEG)")
    try:
        return np.asarray(Image.open(path).convert("RGB"))
    except (OSError, UnidentifiedImageError) as error:
        raise ConfigError("image", f"{path} cannot be read as an image ({type(error).__name__})",
                          "give a PNG or JPEG file") from None


def reply_json(grounding) -> str:  # noqa: ANN001 - ImageGrounding (its module imports torch)
    """One grounding as a JSON line: seen or not, presence, pose in the optical frame, size."""
    box = grounding.box
    return json.dumps({"category": grounding.referral.category, "color": grounding.referral.color,
                       "seen": grounding.seen, "presence": round(grounding.presence, 4),
                       "camera_height_m": grounding.camera_height_m,
                       "position_optical": grounding.position, "orientation_optical": grounding.orientation,
                       "size": list(box.size) if box is not None else None, "score": round(grounding.score, 4)})


def ask_image(image_path: Path, camera_path: Path, prompts: list[str], model: Path | None, as_json: bool,
              program: str, pitch_deg: float | None = None, roll_deg: float | None = None,
              height_m: float | None = None) -> int:
    """Ground each prompt in one image from its intrinsics alone (levelled first where the camera's
    ``pitch_deg`` / ``roll_deg`` are given; ``height_m`` above the floor, None: 1.2 m) and print the
    replies; the image and camera file are checked before torch is imported. Exit 0, 1 if a prompt named no known object, 2 (one line on stderr) on bad
    input or a missing checkpoint."""
    try:
        intrinsics = load_camera_yaml(camera_path)
        image = read_image(image_path)
        if image.shape[:2] != (intrinsics.height, intrinsics.width):
            raise ConfigError("camera-info", f"image is {image.shape[1]}x{image.shape[0]} but the camera is "
                              f"{intrinsics.width}x{intrinsics.height}", "give the intrinsics of this image")
        from threed_llm_ros.mono3d.grounder import ImageGrounder
        from threed_llm_ros.mono3d.projection import pitch_rotation
        from threed_llm_ros.resources import models_directory

        tilted = pitch_deg is not None or roll_deg is not None
        level_from_optical = pitch_rotation(pitch_deg or 0.0, roll_deg or 0.0) if tilted else None

        grounder = ImageGrounder(model or models_directory() / "mono3d")
    except (ConfigError, ModelFileError) as error:
        print(f"{program}: {error}", file=sys.stderr)
        return 2
    failures = 0
    for prompt in prompts:
        try:
            grounding = grounder.ground(image, intrinsics, prompt, frame_id="the camera's optical frame",
                                        level_from_optical=level_from_optical, camera_height_m=height_m)
        except ConfigError as error:  # the prompt names no category the model knows
            print(f"{program}: {error}", file=sys.stderr)
            failures += 1
            continue
        print(grounding.text)
        if as_json:
            print(reply_json(grounding))
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    """Ground the prompt's object in IMAGE; print the reply (exit 2 with one line on bad input)."""
    parser = argparse.ArgumentParser(prog="threed-llm mono3d-ask", description=__doc__.splitlines()[0])
    parser.add_argument("image", type=Path)
    parser.add_argument("prompt")
    parser.add_argument("--camera-info", type=Path, required=True, help="ROS camera-calibration YAML of the image")
    parser.add_argument("--model", type=Path, default=None, help="mono3d checkpoint (default: models/mono3d)")
    parser.add_argument("--camera-pitch", type=float, default=None, metavar="DEG",
                        help="the optical axis above the horizon (negative: looking down); the image is levelled")
    parser.add_argument("--camera-roll", type=float, default=None, metavar="DEG",
                        help="roll about the optical axis (positive: clockwise seen from behind the camera)")
    parser.add_argument("--camera-height", type=float, default=None, metavar="M",
                        help="the camera's height above the floor in metres (default: 1.2, the training frames')")
    parser.add_argument("--json", action="store_true", help="also print the box as JSON")
    arguments = parser.parse_args(argv)
    problem = tilt_problem(arguments.camera_pitch, arguments.camera_roll)
    problem = problem or camera_height_problem(arguments.camera_height, "--camera-height")
    if problem:
        parser.error(problem)
    return ask_image(arguments.image, arguments.camera_info, [arguments.prompt], arguments.model, arguments.json,
                     "threed-llm mono3d-ask", arguments.camera_pitch, arguments.camera_roll, arguments.camera_height)


if __name__ == "__main__":
    sys.exit(main())
