"""Second looks at a frame's objects, for what the shape classifier cannot know. Each rule
lowers a score: the object stays in the list, uncertain, not named. Two rules: a small thing
on soft furniture is most likely a pillow, a cushion or a tuft of upholstery; and an object
whose points cover a sliver of the smallest face its category has is a guess, not a sighting.

Tried and not kept (2026-12-06): a thing seen *through* a confident dresser, cabinet or
bookshelf (rays from the sensor crossing its box) as a reflection in its mirror. Fitted boxes
are too loose at their edges: on 80 simulated frames it demoted a real monitor and a real book
behind loosely completed boxes, while the real SUN mirror's "chair" was not behind any box.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Callable

import numpy as np

from threed_llm_ros.data.catalog import CATEGORIES
from threed_llm_ros.objects.proposals import VOXEL_M

if TYPE_CHECKING:
    from threed_llm_ros.objects.layer import SceneObject

# Furniture whose top is soft and carries things no category names: pillows, cushions, folded
# blankets, the tufts of upholstery. A small thing on it is most likely one of those, and the
# simulator never puts a book or a cup there; its top category keeps this share. (Not chairs:
# one pushed under a desk has the desk's things above its box.)
SOFT_FURNITURE = ("bed", "sofa")
ON_SOFT_FURNITURE_FACTOR = 0.35
# Whatever it is called, a long surface this low is a bed, a sofa, an ottoman or a bench: the
# simulator's supports that long (tables, desks, dressers) stand at 0.7 m or more.
LOW_SURFACE_M = 0.62
LOW_SURFACE_LENGTH_M = 0.7
# An object's points cover at least this share of its category's smallest front face. On 80
# simulated RGB-D frames (seeds 91000-91039, 92000-92039) the confident objects under 0.1 were
# 11 wrong and 1 right. With the bar at 0.1 (2026-12-06), those at 0.1-0.2 were another 5 wrong
# and none right, and on the real TUM frame two "chairs" of 43 and 48 points (a desk leg's foot,
# a thing on the floor) covered 0.11-0.12 and read 0.53-0.58; from 0.2 they are uncertain.
MIN_FACE_SHARE = 0.2


def _scaled(obj: "SceneObject", factor: float, which: Callable[[str], bool]) -> "SceneObject":
    """``obj`` with its score and the probabilities of the categories ``which`` accepts times ``factor``."""
    return replace(obj, score=obj.score * factor, categories=tuple(
        (name, round(p * factor, 4) if name in CATEGORIES and which(name) else p) for name, p in obj.categories))


def doubt_things_on_soft_furniture(objects: list["SceneObject"], min_confidence: float, floor_z: float
                                    ) -> list["SceneObject"]:
    """``objects`` with the score of each top-category thing lowered by ``ON_SOFT_FURNITURE_FACTOR``
    where it lies on soft furniture (``SOFT_FURNITURE``): over a confident bed or sofa (its
    footprint centre over their completed box, its bottom above their lowest part), or found on a
    top surface lower than ``LOW_SURFACE_M`` of something at least ``LOW_SURFACE_LENGTH_M`` long,
    whatever that is called (an ottoman, a bench, a bed's foot)."""
    soft = [obj for obj in objects if obj.category in SOFT_FURNITURE and obj.score >= min_confidence]
    doubted = []
    for obj in objects:
        bottom = obj.box.center[2] - obj.box.size[2] / 2

        def over(under: "SceneObject") -> bool:
            probe = np.array([[*obj.box.center[:2], under.box.center[2]]])
            return under is not obj and bool(under.box.contains(probe, margin=0.05)[0])

        on_soft = any(over(under) and bottom >= under.box.center[2] - under.box.size[2] / 2 + 0.1 for under in soft)
        on_low = obj.on_top and bottom - floor_z <= LOW_SURFACE_M and any(
            over(under) and max(under.box.size[:2]) >= LOW_SURFACE_LENGTH_M
            and under.box.center[2] + under.box.size[2] / 2 >= bottom - 0.1 for under in objects)
        if CATEGORIES[obj.category].placement == "top" and (on_soft or on_low):
            obj = _scaled(obj, ON_SOFT_FURNITURE_FACTOR, lambda name: CATEGORIES[name].placement == "top")
        doubted.append(obj)
    return doubted


def face_share(obj: "SceneObject", resolution: tuple[float, float]) -> float:
    """How much of the smallest front face ``obj``'s category has (its least length times its
    least height) its points cover: each point of the voxelised cloud stands for a ``VOXEL_M``
    cell, or for one pixel's footprint where the camera (``resolution``: fx, fy in pixels) sees
    coarser than that at the object's range (the sensor is at the gravity frame's origin)."""
    spec = CATEGORIES[obj.category]
    face = max(spec.size_min[:2]) * spec.size_min[2]
    distance = max(float(np.linalg.norm(obj.box.center)), 0.1)
    cell = max(VOXEL_M ** 2, (distance / resolution[0]) * (distance / resolution[1]))
    return len(obj.points) * cell / face


def doubt_thin_evidence(objects: list["SceneObject"], resolution: tuple[float, float] | None) -> list["SceneObject"]:
    """``objects`` with the score of each one whose points cover less than ``MIN_FACE_SHARE`` of
    its category's smallest face (:func:`face_share`) scaled by how far short it falls: 24 points
    far away are no table, whatever their shape reads. Only for a dense cloud from the camera
    whose ``resolution`` is known (a depth image); a lidar's rings or a bare cloud (None) are not
    judged, for their density is not known."""
    if resolution is None:
        return objects
    doubted = []
    for obj in objects:
        share = face_share(obj, resolution)
        if share < MIN_FACE_SHARE:
            obj = _scaled(obj, share / MIN_FACE_SHARE, lambda name: True)
        doubted.append(obj)
    return doubted


def doubt_implausible(objects: list["SceneObject"], min_confidence: float, floor_z: float,
                      resolution: tuple[float, float] | None = None) -> list["SceneObject"]:
    """Every rule of this module, in order (``resolution``: see :func:`doubt_thin_evidence`)."""
    return doubt_thin_evidence(doubt_things_on_soft_furniture(objects, min_confidence, floor_z), resolution)
