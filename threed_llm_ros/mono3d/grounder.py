"""Ground a referred object in one RGB image: the runtime side of ``mono3d_node`` and ``mono3d-ask``.

:class:`ImageGrounder` loads a checkpoint and the frozen backbone once; :meth:`ImageGrounder.ground`
takes an image, its intrinsics and a prompt, finds the referred category and colour in the
prompt's words (:func:`parse_referral`: the language model is not in this path yet) and
returns the box in the camera's optical frame, as a pose a robot can use.

A single image always yields a box: the model cannot yet say that the object is absent, and
the reply says the box comes from the image alone.
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
from threed_llm_ros.mono3d.model import Mono3DGrounder, camera_features, decode_boxes, load_model

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
    """One grounded referral: the box (level-camera gravity frame), its optical-frame pose, the reply text."""

    referral: Referral
    box: OrientedBox
    position: tuple[float, float, float]
    orientation: tuple[float, float, float, float]
    score: float  # the centre pointer's largest probability: how sure it is where the object is
    text: str
    seconds: float


class ImageGrounder:
    """A mono3d checkpoint and the frozen backbone, loaded once."""

    def __init__(self, checkpoint: str | Path) -> None:
        from threed_llm_ros.mono3d.image_tokens import FrozenBackbone

        self.model: Mono3DGrounder = load_model(checkpoint)
        self.backbone = FrozenBackbone()
        self.checkpoint = Path(checkpoint)

    @torch.no_grad()
    def ground(self, image: np.ndarray, intrinsics: CameraIntrinsics, prompt: str,
               frame_id: str = "camera") -> ImageGrounding:
        """The referred object's box from ``image`` (H×W×3 uint8 RGB) and its camera alone."""
        started = time.perf_counter()
        config = self.model.config
        referral = parse_referral(prompt, config.categories, config.colors[1:])
        canvas, canvas_camera = image_to_canvas(image, intrinsics, config)
        local, global_ = self.backbone(torch.as_tensor(canvas, dtype=torch.float32).permute(2, 0, 1)[None])
        outputs = self.model(local, global_, torch.zeros(1, dtype=torch.long),
                             torch.tensor([self.model.category_index(referral.category)]),
                             torch.tensor([self.model.color_index(referral.color)]),
                             camera_features([canvas_camera], config))
        (box,) = decode_boxes(outputs, [canvas_camera], config)
        score = float(outputs["pointer_logits"].softmax(dim=-1).max())
        position, orientation = box.pose_in_frame(OPTICAL_UP_AXIS)
        label = f"{referral.color} {referral.category}" if referral.color else referral.category
        x, y, z = (float(v) for v in position)
        text = (f"The {label}: at ({x:.2f}, {y:.2f}, {z:.2f}) m in {frame_id}, size "
                f"{' x '.join(f'{s:.2f}' for s in box.size)} m (from the RGB image alone).")
        return ImageGrounding(referral, box, (x, y, z), tuple(float(v) for v in orientation),  # type: ignore[arg-type]
                              score, text, time.perf_counter() - started)
