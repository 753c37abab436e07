"""Ground a referred object in one RGB image: the runtime side of ``mono3d_node`` and ``mono3d-ask``.

:class:`ImageGrounder` loads a checkpoint and the frozen backbone once; :meth:`ImageGrounder.ground`
takes an image, its intrinsics and a prompt, finds the referred category and colour in the
prompt's words (:func:`parse_referral`: the language model is not in this path yet) and
returns the box in the camera's optical frame, as a pose a robot can use.

The model's presence output says whether the referred label is in the image at all: below
the checkpoint's calibrated ``presence_threshold`` the answer is "not seen", with no box and no
pose (a wrong confident answer is worse than "I don't see it": a robot would drive to it).
A box that is given comes from the image alone, and the reply says so.

The model assumes a level camera. Where the camera's tilt is known (``level_from_optical``: from
TF on a robot, or a pitch the user gives), the image is levelled first (``projection.level_image``)
and the box is turned back into the camera's optical frame, so the pose is always in the frame the
image names. Where the camera's height above the floor is known (``camera_height_m``: TF's translation
on a robot, or a height the user gives), the model's ground-plane depth uses it instead of the 1.2 m
of its training frames (``model.Mono3DGrounder.height_shift``); None keeps 1.2 m.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from threed_llm_ros.errors import ConfigError
from threed_llm_ros.geometry.boxes import OrientedBox
from threed_llm_ros.geometry.camera import CameraIntrinsics
from threed_llm_ros.mono3d.data import image_to_canvas
from threed_llm_ros.geometry.frames import quaternion_from_matrix, rotation_to_gravity, yaw_rotation
from threed_llm_ros.mono3d.model import Mono3DGrounder, camera_features, decode_boxes, load_model
from threed_llm_ros.mono3d.projection import camera_height_problem, level_image

OPTICAL_UP_AXIS = "-y"


@dataclass(frozen=True)
class Referral:
    """What a prompt refers to: a category and, where said, a colour."""

    category: str
    color: str | None


def parse_referral(prompt: str, categories: tuple[str, ...], colors: tuple[str, ...]) -> Referral:
    """The category (longest name first, plurals too) and colour named in ``prompt``; ConfigError
    naming the known categories where it names none."""
    text = " " + re.sub(r"[^a-z ]+", " ", prompt.lower()) + " "
    for category in sorted(categories, key=len, reverse=True):
        if re.search(rf" {re.escape(category)}(e?s)? ", text):
            color = next((name for name in colors if f" {name} " in text), None)
            return Referral(category, color)
    raise ConfigError("prompt", f"{prompt.strip()[:80]!r} names no object category this model locates",
                      f"ask for one of {', '.join(categories)} (e.g. 'where is the bed?')")


@dataclass(frozen=True)
class ImageGrounding:
    """One referral's answer: the box (level-camera gravity frame), its pose in the camera's optical
    frame, the reply text; box, position and orientation are None when it is not seen."""

    referral: Referral
    box: OrientedBox | None
    position: tuple[float, float, float] | None
    orientation: tuple[float, float, float, float] | None
    score: float  # the centre pointer's largest probability: how sure it is where the object is
    text: str
    seconds: float
    presence: float = 1.0  # the presence output's probability that the referred label is in the image
    up: tuple[float, float, float] = (0.0, -1.0, 0.0)  # the level frame's up in the camera's optical frame
    camera_height_m: float | None = None  # the camera height above the floor that was given (None: 1.2 m assumed)

    @property
    def seen(self) -> bool:
        """Whether there is a box (the presence reached the checkpoint's threshold)."""
        return self.box is not None


class ImageGrounder:
    """A mono3d checkpoint and the frozen backbone, loaded once."""

    def __init__(self, checkpoint: str | Path, torch_threads: int | None = None) -> None:
        """``torch_threads``: torch's process-wide thread count, where the caller owns the process (a node);
        its threads spin, and on two shared cores one thread held up best (docs/benchmarks.md)."""
        from threed_llm_ros.mono3d.image_tokens import FrozenBackbone

        if torch_threads is not None:
            torch.set_num_threads(torch_threads)
        self.model: Mono3DGrounder = load_model(checkpoint)
        self.backbone = FrozenBackbone()
        self.checkpoint = Path(checkpoint)

    @torch.no_grad()
    def ground(self, image: np.ndarray, intrinsics: CameraIntrinsics, prompt: str, frame_id: str = "camera",
               level_from_optical: np.ndarray | None = None, camera_height_m: float | None = None) -> ImageGrounding:
        """The referred object's box from ``image`` (H×W×3 uint8 RGB) and its camera alone; with the
        camera's tilt (``level_from_optical``: optical frame → a level camera's) the image is levelled first;
        ``camera_height_m`` (above the floor; None: the training frames' 1.2 m) scales floor objects' depth."""
        started = time.perf_counter()
        config = self.model.config
        problem = camera_height_problem(camera_height_m)
        if problem:
            raise ConfigError("camera height", problem, "give the camera's height above the floor in metres")
        referral = parse_referral(prompt, config.categories, config.colors[1:])
        if image.shape[:2] != (intrinsics.height, intrinsics.width):
            raise ConfigError("camera_info", f"image is {image.shape[1]}x{image.shape[0]} but the camera is "
                              f"{intrinsics.width}x{intrinsics.height}", "give the intrinsics of this image")
        optical_from_level = np.eye(3) if level_from_optical is None else np.asarray(level_from_optical).T
        if level_from_optical is not None:
            image, intrinsics = level_image(image, intrinsics, level_from_optical)
        canvas, canvas_camera = image_to_canvas(image, intrinsics, config)
        local, global_ = self.backbone(torch.as_tensor(canvas, dtype=torch.float32).permute(2, 0, 1)[None])
        outputs = self.model(local, global_, torch.zeros(1, dtype=torch.long),
                             torch.tensor([self.model.category_index(referral.category)]),
                             torch.tensor([self.model.color_index(referral.color)]),
                             camera_features([canvas_camera], config),
                             None if camera_height_m is None else torch.tensor([float(camera_height_m)]))
        score = float(outputs["pointer_logits"].softmax(dim=-1).max())
        presence = float(torch.sigmoid(outputs["presence_logit"][0]))
        label = f"{referral.color} {referral.category}" if referral.color else referral.category
        if presence < config.presence_threshold:
            article = "an" if label[0] in "aeiou" else "a"
            text = f"I don't see {article} {label} in this image (not seen; presence {presence:.2f})."
            return ImageGrounding(referral, None, None, None, score, text, time.perf_counter() - started, presence,
                                  camera_height_m=camera_height_m)
        (box,) = decode_boxes(outputs, [canvas_camera], config)
        position, orientation = pose_in_optical_frame(box, optical_from_level)
        up = optical_from_level @ np.array([0.0, -1.0, 0.0])
        x, y, z = (float(v) for v in position)
        text = (f"The {label}: at ({x:.2f}, {y:.2f}, {z:.2f}) m in {frame_id}, size "
                f"{' x '.join(f'{s:.2f}' for s in box.size)} m (from the RGB image alone; presence {presence:.2f}).")
        return ImageGrounding(referral, box, (x, y, z), tuple(float(v) for v in orientation),  # type: ignore[arg-type]
                              score, text, time.perf_counter() - started, presence,
                              tuple(float(v) for v in up), camera_height_m)  # type: ignore[arg-type]


def pose_in_optical_frame(box: OrientedBox, optical_from_level: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position and (x, y, z, w) orientation in the real camera's optical frame of a box in the level
    camera's gravity frame (``optical_from_level``: the identity for a level camera)."""
    level_from_gravity = rotation_to_gravity(OPTICAL_UP_AXIS).T
    position = optical_from_level @ level_from_gravity @ np.asarray(box.center, dtype=np.float64)
    rotation = optical_from_level @ level_from_gravity @ yaw_rotation(box.yaw)
    return position, quaternion_from_matrix(rotation)
