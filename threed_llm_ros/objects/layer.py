"""The object layer: one frame becomes a list of objects, and every reply is computed from it.

    cloud (input frame) → gravity frame from the floor (``gravity.py``)
      → voxels, floor / ceiling / walls removed, clusters (``proposals.py``), as pieces (``pieces.py``)
      → per cluster: a gravity-aligned box fitted to its points (``fit.py``), a category
        distribution from its shape, size and height (``recognition.py``), sharpened by the
        image crop under its points where the frame has an image (``image_evidence.py``),
        its colour from its own points, exposure-corrected by the frame's (``colors.py``)
      → touching fragments joined where one object explains them better than two (a table's
        top and legs), fragments of one large object under one name merged, boxes completed
        to the category's depth behind what the view sees, calibrated confidence
      → :class:`SceneObjects`

An object not in the list is "not seen". ``confident`` objects (score ≥ ``min_confidence``)
are the ones counts, existence answers, captions and grounding use.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from threed_llm_ros.data.catalog import CATEGORIES
from threed_llm_ros.data.programs import DetectedObject
from threed_llm_ros.errors import ConfigError
from threed_llm_ros.geometry.boxes import OrientedBox
from threed_llm_ros.objects.colors import body_colors, exposure_gain, object_color
from threed_llm_ros.objects.context import weigh_by_room
from threed_llm_ros.objects.fit import complete_box
from threed_llm_ros.objects.gravity import GravityFrame, estimate_gravity
from threed_llm_ros.objects.joins import MAX_OBJECTS, FragmentJoins
from threed_llm_ros.objects.pieces import Proposal, cut_apart, footprint_gap, merge_pieces, propose
from threed_llm_ros.objects.recognition import OTHER, ShapeClassifier, load_classifier, shape_features
from threed_llm_ros.objects.plausibility import doubt_implausible
from threed_llm_ros.objects.refine import Refiner, load_refiner, refine, view_features
from threed_llm_ros.objects.visibility import RayGrid, hangs_in_the_air, open_above

MERGE_GAP_M = 0.25  # fragments of one object under one name lie this close
MAX_SUPPORT_GAP_M = 0.2  # an object resting on something floats at most this far above it
ON_FLOOR_M = 0.05
UNSEEN_SUPPORT_FACTOR = 0.35  # a top category's probability where nothing is seen under the thing
# a top object this close above the surface under it rests on it (its bottom edge unseen); a taller
# category reaches further down (a lamp's thin stem)
TOP_SNAP_M = 0.1
FLOOR_CLEARANCE_M = 0.05  # free-space samples start this far above the floor or support


@dataclass(frozen=True)
class SceneObject(DetectedObject):
    """A detected object (category, colour, gravity-frame box, calibrated score) with its evidence."""

    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)), compare=False, repr=False)
    categories: tuple[tuple[str, float], ...] = ()  # the three likeliest categories and probabilities
    on_top: bool = False  # found standing on a support's top surface (a cup on a table)


@dataclass
class SceneObjects:
    """A frame's objects (best first), the gravity frame they are in, and the stage timings."""

    objects: list[SceneObject]
    gravity: GravityFrame
    min_confidence: float
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def confident(self) -> list[SceneObject]:
        return [obj for obj in self.objects if obj.score >= self.min_confidence]


@dataclass(frozen=True)
class PerceptionSettings:
    """How a frame becomes objects (the node's parameters of the same names)."""

    up_axis: str = "-y"
    min_range: float = 0.1
    max_range: float = 8.0
    min_confidence: float = 0.5
    max_points: int = 120_000
    use_image: bool = True  # with an image and intrinsics: ImageNet evidence from each object's crop
    sensor_height: float = 0.0  # the sensor's height above the floor (m) where the robot knows it; 0 = unknown

    def validate(self) -> None:
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ConfigError("min_confidence", f"got {self.min_confidence}", "use a probability in [0, 1], e.g. 0.5")
        if not 0.0 <= self.min_range < self.max_range:
            raise ConfigError("min_range", f"need 0 <= min_range < max_range, got {self.min_range}, {self.max_range}",
                              "use e.g. min_range 0.1 and max_range 8.0 (metres)")
        if not 0.0 <= self.sensor_height < 10.0:
            raise ConfigError("sensor_height", f"got {self.sensor_height}",
                              "give the sensor's height above the floor in metres (from the URDF), or 0 if unknown")


def named_labels(probabilities: np.ndarray, other: int) -> list[int]:
    """Each row's likeliest class other than ``other`` (class indices)."""
    labels = np.delete(probabilities, other, axis=1).argmax(axis=1)
    return [int(label) + int(label >= other) for label in labels]


def camera_resolution(intrinsics: Any, camera_from_input: np.ndarray | None) -> tuple[float, float] | None:
    """The camera's (fx, fy) where the cloud is that camera's own depth image (its intrinsics given,
    and the cloud's origin the camera's: no transform, or a rotation only); None otherwise (a lidar
    beside a camera, or a bare cloud)."""
    if intrinsics is None:
        return None
    if camera_from_input is not None and float(np.linalg.norm(np.asarray(camera_from_input)[:3, 3])) > 0.01:
        return None
    return float(intrinsics.fx), float(intrinsics.fy)


def hidden_depth(category: str, box: OrientedBox) -> float:
    """How deep a box of ``category`` is completed behind the face a view sees: a round thing as
    deep as the width the view shows (within its category's sizes), anything else the category's
    expected depth, halfway between its least and its greatest (with the least, Acc@0.5 on
    simulated frames was 3-8 points lower)."""
    spec = CATEGORIES[category]
    if spec.round_footprint:
        return min(max(min(spec.size_min[:2]), max(box.size[:2])), max(spec.size_max[:2]))
    return (min(spec.size_min[:2]) + min(spec.size_max[:2])) / 2


def absorb_parts(objects: list[SceneObject], min_confidence: float, share: float = 0.7) -> list[SceneObject]:
    """Drop objects whose points lie mostly (``share``) inside the completed box of a larger,
    more confident, confident object: a mattress patch inside a bed is the bed, not a table. A
    thing found on a support's top surface stays (a book lying on a table). ``objects`` are
    sorted by score, best first."""
    kept: list[SceneObject] = []
    for obj in objects:
        volume = float(np.prod(obj.box.size))
        inside = len(obj.points) > 0 and not obj.on_top and any(
            other.score >= min_confidence and float(np.prod(other.box.size)) > volume
            and float(other.box.contains(obj.points, margin=0.05).mean()) >= share for other in kept)
        if not inside:
            kept.append(obj)
    return kept


class ObjectLayer(FragmentJoins):
    """The trained object classifier and :meth:`perceive`; load once, call per frame."""

    def __init__(self, classifier: ShapeClassifier, settings: PerceptionSettings = PerceptionSettings(),
                 refiner: Refiner | None = None) -> None:
        settings.validate()
        self.classifier = classifier
        self.refiner = refiner
        self.settings = settings
        self.classes = list(classifier.config.classes)
        self._image_evidence: Any = None

    @classmethod
    def load(cls, directory: str | Path, settings: PerceptionSettings = PerceptionSettings()) -> "ObjectLayer":
        return cls(load_classifier(directory), settings, load_refiner(directory))

    def with_settings(self, settings: PerceptionSettings) -> "ObjectLayer":
        """This layer's trained models under other perception settings (another up axis)."""
        return ObjectLayer(self.classifier, settings, self.refiner)

    def _recognise(self, proposals: list[Proposal], gravity: GravityFrame, camera: tuple = (None, None, None),
                   rays: RayGrid | None = None, final: bool = True) -> np.ndarray:
        """(N, classes) probabilities: the shape classifier's (for the ``final`` objects, shared between
        look-alikes with the refiner where the checkpoint has one, ``refine.py``; joins and cuts are
        judged on shape alone), times the image's evidence where the frame has an image, then physics:
        a floor category stands on the floor and a top category on something. An object whose bottom
        is above that may have its lower part hidden; it is ruled out only where the sensor's rays
        saw the space beneath it empty (``visibility.py``; without ``rays``, always), or saw empty the space
        between it and a top under it (no floor object passes through a desk's top). The simulator
        never shows floating junk, so the classifier alone cannot know."""
        if not proposals:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        floor_z = gravity.floor_z
        features = np.stack([shape_features(p.points, p.box, floor_z, p.wall_distance, p.support_gap) for p in proposals])
        probabilities = self.classifier.probabilities(features)
        if self.refiner is not None and final:  # which object it is: the view tells look-alikes apart
            views = np.stack([view_features(p.points, p.box) for p in proposals])
            probabilities = refine(probabilities, self.classes, self.refiner.probabilities(features, views),
                                   self.refiner.classes)
        image, intrinsics, camera_from_input = camera
        if image is not None and intrinsics is not None and self.settings.use_image:
            probabilities = self._with_image(probabilities, proposals, gravity, image, intrinsics, camera_from_input)
        placement = np.array([CATEGORIES[name].placement if name in CATEGORIES else "" for name in self.classes])
        other = self.classes.index(OTHER)
        for row, proposal in zip(probabilities, proposals):
            bottom = proposal.box.center[2] - proposal.box.size[2] / 2
            off_floor = bottom - floor_z >= ON_FLOOR_M and (
                rays is None or hangs_in_the_air(rays, proposal.box, floor_z + FLOOR_CLEARANCE_M))
            floating = proposal.support_gap > MAX_SUPPORT_GAP_M and (
                rays is None or hangs_in_the_air(rays, proposal.box, bottom - proposal.support_gap + FLOOR_CLEARANCE_M))
            # over something's seen top, with the space between seen empty (a lamp's shade over the
            # desk, its stem unseen): no floor object stands there, its lower part hidden, as no
            # object passes through that top
            over_a_top = floating and bottom - proposal.support_gap - floor_z >= ON_FLOOR_M
            row[(placement == "floor") & (off_floor | over_a_top)] = 0.0
            too_low = self._seen_too_low(proposal, floor_z, rays)
            row[other] += row[too_low].sum()  # none of those, so something no category names
            row[too_low] = 0.0
            row[(placement == "top") & floating] = 0.0
            row /= max(float(row.sum()), 1e-9)
            if proposal.support_gap > MAX_SUPPORT_GAP_M and not floating:
                # a small thing with nothing seen under it (its support hidden, or a reflection in a
                # mirror, which no ray can prove false): possible, but not sure
                doubt = row[placement == "top"] * (1.0 - UNSEEN_SUPPORT_FACTOR)
                row[placement == "top"] -= doubt
                row[self.classes.index(OTHER)] += float(doubt.sum())
            if row.sum() < 0.5:  # every category ruled out: it is not an object we know
                row[self.classes.index(OTHER)] = 1.0
        return probabilities

    def _seen_too_low(self, proposal: Proposal, floor_z: float, rays: RayGrid | None) -> np.ndarray:
        """(classes,) bool: floor categories ``proposal`` cannot be, as it reaches less than half their
        least height while the sensor saw the space over it, up to that height, empty (a chair's star
        base whose seat went elsewhere, floor clutter: not a 0.12 m "chair"). Where that space is
        hidden the rest of the object may stand there, and nothing is ruled out."""
        ruled_out = np.zeros(len(self.classes), dtype=bool)
        if rays is None:
            return ruled_out
        seen_top = proposal.box.center[2] + proposal.box.size[2] / 2 - floor_z
        for index, name in enumerate(self.classes):
            spec = CATEGORIES.get(name)
            if spec is not None and spec.placement == "floor" and seen_top < 0.5 * spec.size_min[2]:
                ruled_out[index] = open_above(rays, proposal.box, floor_z + 0.9 * spec.size_min[2])
        return ruled_out

    def _with_image(self, probabilities: np.ndarray, proposals: list[Proposal], gravity: GravityFrame,
                    image: np.ndarray, intrinsics: Any, camera_from_input: np.ndarray | None) -> np.ndarray:
        from threed_llm_ros.objects.image_evidence import ImageEvidence, fuse

        if self._image_evidence is None:
            self._image_evidence = ImageEvidence()
        other = self.classes.index(OTHER)
        worth = [row for row, values in enumerate(probabilities) if values[other] < 0.95]
        if not worth:
            return probabilities
        transform = np.eye(4) if camera_from_input is None else np.asarray(camera_from_input, dtype=np.float64)
        in_camera = [gravity.to_input(proposals[row].points) @ transform[:3, :3].T + transform[:3, 3] for row in worth]
        evidence = self._image_evidence.category_evidence(image, intrinsics, in_camera, self.classes)
        fused = probabilities.copy()
        fused[worth] = fuse(probabilities[worth], evidence)
        return fused

    def perceive(self, xyz: np.ndarray, rgb: np.ndarray | None = None, frame_id: str = "",
                 gravity: GravityFrame | None = None, image: np.ndarray | None = None, intrinsics: Any = None,
                 camera_from_input: np.ndarray | None = None) -> SceneObjects:
        """The objects of one input-frame cloud (N×3 metres; colours N×3 uint8 or None). ``image``
        (H×W×3 uint8) and ``intrinsics``: a camera image of the scene; ``camera_from_input``
        (4×4, default identity: the cloud is in that camera's optical frame) the transform
        from the cloud's frame into the camera's optical frame (tf)."""
        timings: dict[str, float] = {}
        started = time.perf_counter()
        xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
        finite = np.isfinite(xyz).all(axis=1)
        distance = np.linalg.norm(xyz, axis=1)
        keep = finite & (distance >= self.settings.min_range) & (distance <= self.settings.max_range)
        xyz = xyz[keep]
        colors = None if rgb is None else np.asarray(rgb).reshape(-1, 3)[keep].astype(np.float64) / 255.0
        if len(xyz) > self.settings.max_points:
            chosen = np.random.default_rng(0).choice(len(xyz), self.settings.max_points, replace=False)
            xyz, colors = xyz[chosen], None if colors is None else colors[chosen]
        if gravity is None:
            gravity = estimate_gravity(xyz, self.settings.up_axis, frame_id, sensor_height=self.settings.sensor_height)
        timings["gravity_s"] = time.perf_counter() - started
        stage = time.perf_counter()
        in_gravity = gravity.to_gravity(xyz)
        proposals, walls, _, _ = propose(in_gravity, colors, gravity)
        proposals = proposals[: 3 * MAX_OBJECTS]
        timings["proposals_s"] = time.perf_counter() - stage
        stage = time.perf_counter()
        objects = self._objects(proposals, walls, gravity, (image, intrinsics, camera_from_input), RayGrid(in_gravity),
                                exposure_gain(colors))
        timings["recognition_s"] = time.perf_counter() - stage
        timings["objects_s"] = time.perf_counter() - started
        return SceneObjects(objects, gravity, self.settings.min_confidence, timings)

    def _best_named(self, candidates: list[Proposal], gravity: GravityFrame, rays: RayGrid
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Each candidate's likeliest category other than ``OTHER`` (class indices) and its
        probability, from shape and physics (no image: joins and cuts are judged before it)."""
        other = self.classes.index(OTHER)
        kept = np.delete(self._recognise(candidates, gravity, rays=rays, final=False), other, axis=1)
        labels = kept.argmax(axis=1)
        return kept.max(axis=1), labels + (labels >= other)

    def _objects(self, proposals: list[Proposal], walls: list, gravity: GravityFrame, camera: tuple,
                 rays: RayGrid, color_gain: float = 1.0) -> list[SceneObject]:
        if not proposals:
            return []
        floor_z = gravity.floor_z
        proposals = self._join_fragments(self._split_oversized(proposals, gravity, rays), gravity, rays)
        probabilities = self._recognise(proposals, gravity, camera, rays)
        other = self.classes.index(OTHER)
        labels = named_labels(probabilities, other)
        # fragments of one object seen under one name (a bed's headboard and footboard): merge
        # while the merged box still fits the category's largest size (each pair looked at once,
        # a merged one against the rest again)
        i = 0
        while i < len(proposals):
            j = i + 1
            while j < len(proposals):
                if labels[i] == labels[j] != other and footprint_gap(proposals[i].box, proposals[j].box) <= MERGE_GAP_M:
                    candidate = merge_pieces(proposals[i], proposals[j], floor_z)
                    if self._fits_both_sides(candidate.box, labels[i]) and not cut_apart(proposals[i], proposals[j]):
                        proposals[i] = candidate
                        probabilities[i] = np.maximum(probabilities[i], probabilities[j])
                        del proposals[j], labels[j]
                        probabilities = np.delete(probabilities, j, axis=0)
                        j = i + 1
                        continue
                j += 1
            i += 1
        probabilities = weigh_by_room(probabilities, self.classes)
        labels = named_labels(probabilities, other)
        objects = []
        for proposal, label, row in zip(proposals, labels, probabilities):
            category = self.classes[label]
            spec = CATEGORIES[category]
            box = proposal.box
            top = box.center[2] + box.size[2] / 2
            if spec.placement == "floor":  # its hidden lower part reaches the floor
                bottom = floor_z
            elif proposal.rest_gap <= max(TOP_SNAP_M, spec.size_max[2] - box.size[2]):
                # it rests on what is under it: its lowest part unseen (a book's edge in the
                # surface's band, a lamp's thin stem), and its category is tall enough to reach
                bottom = box.center[2] - box.size[2] / 2 - proposal.rest_gap
            else:
                bottom = box.center[2] - box.size[2] / 2
            box = OrientedBox((box.center[0], box.center[1], (top + bottom) / 2), (box.size[0], box.size[1], top - bottom), box.yaw)
            box = complete_box(box, hidden_depth(category, box), walls, max(spec.size_min[:2]),
                               max(spec.size_max[:2]) if spec.wall_affinity >= 0.5 else None)
            ranked = np.argsort(row)[::-1][:3]
            color = object_color(body_colors(proposal.points, proposal.colors), color_gain)
            objects.append(SceneObject(
                category=category, color=color, box=box, score=float(row[label]),
                points=proposal.points, categories=tuple((self.classes[k], round(float(row[k]), 4)) for k in ranked),
                on_top=proposal.on_top,
            ))
        objects = doubt_implausible(objects, self.settings.min_confidence, floor_z, camera_resolution(*camera[1:]))
        objects.sort(key=lambda obj: -obj.score)
        return absorb_parts(objects, self.settings.min_confidence)[:MAX_OBJECTS]
