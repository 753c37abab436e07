"""Spatial relations between boxes: the vocabulary the annotator writes and the runtime executes.

Spatial words are in the CAMERA frame (a gravity-aligned frame: x forward, y left, z up,
origin at the sensor). "A left of B": A's centre is more than ``side_margin_m`` further
left (+y) than B's; "A in front of B": A's centre is more than ``side_margin_m`` closer
along the viewing direction (x); "A on B": B supports A; "A next to B": same support
level, not stacked, footprints less than ``next_to_m`` apart. Superlatives (leftmost,
rightmost, closest, farthest) compare centres (y, or distance from the camera).

Every relation has a strict form (used for facts and answers) and a lenient form (no
margin, wider "next to"); a referring expression is unique only if both forms resolve
to the same single object, so near-ties never make an expression ambiguous.

``SceneFacts`` takes any objects with ``category``, ``color``, ``box``, ``on`` and
``visible_points`` (``dataset.ObjectRecord``): the ground truth of a scene record for the
annotator, or the detected objects for the runtime's programs.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from threed_llm_ros.data.annotation_types import AnnotationConfig
from threed_llm_ros.data.catalog import CATEGORIES, NEAR_COLORS
from threed_llm_ros.errors import ConfigError
from threed_llm_ros.geometry.boxes import OrientedBox
from threed_llm_ros.geometry.frames import yaw_rotation

if TYPE_CHECKING:  # type hints only: dataset imports this module
    from threed_llm_ros.data.dataset import ObjectRecord, SceneRecord

PAIR_RELATIONS: tuple[str, ...] = ("on", "next to", "left of", "right of", "in front of", "behind")
SUPERLATIVES: tuple[str, ...] = ("leftmost", "rightmost", "closest", "farthest")
RELATIONS: tuple[str, ...] = PAIR_RELATIONS + SUPERLATIVES


def make_expression(category: str, color: str | None = None, relation: str | None = None,
                    anchor: dict[str, Any] | None = None) -> dict[str, Any]:
    """A referring-expression attribute dict (the form ``resolve_reference`` takes)."""
    if relation is not None and relation not in RELATIONS:
        raise ConfigError("relation", f"unknown relation {relation!r}", f"use one of {RELATIONS}")
    if (relation in PAIR_RELATIONS) != (anchor is not None):
        raise ConfigError("anchor", "pair relations need an anchor, others none", "pass an anchor with on/next to/left of/...")
    return {"category": category, "color": color or None, "relation": relation, "anchor": anchor}


def expression_kind(expression: dict[str, Any]) -> str:
    """"plain", "superlative" or "relation": how an expression picks its object out."""
    relation = expression.get("relation")
    return "plain" if relation is None else ("superlative" if relation in SUPERLATIVES else "relation")


def pick_expression(
    expressions: list[dict[str, Any]], rng: np.random.Generator, weights: dict[str, float]
) -> dict[str, Any] | None:
    """A random expression, first choosing its kind by weight."""
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for expression in expressions:
        by_kind.setdefault(expression_kind(expression), []).append(expression)
    kinds = [kind for kind in weights if kind in by_kind]
    if not kinds:
        return None
    probabilities = np.array([weights[kind] for kind in kinds])
    kind = kinds[int(rng.choice(len(kinds), p=probabilities / probabilities.sum()))]
    options = by_kind[kind]
    return options[int(rng.integers(len(options)))]


# --------------------------------------------------------------------------- geometry


def footprint_corners(box: np.ndarray) -> np.ndarray:
    """4×2 counter-clockwise footprint corners of a 7-vector box."""
    half = box[3:5] / 2.0
    local = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], dtype=np.float64) * half
    return local @ yaw_rotation(float(box[6]))[:2, :2].T + box[:2]


def _point_segment_distances(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Distances from each point to the closest point on the polygon's boundary."""
    starts, ends = polygon, np.roll(polygon, -1, axis=0)
    edges = ends - starts
    offsets = points[:, None, :] - starts[None, :, :]
    t = np.clip(np.einsum("pei,ei->pe", offsets, edges) / np.einsum("ei,ei->e", edges, edges), 0.0, 1.0)
    closest = starts[None] + t[..., None] * edges[None]
    return np.linalg.norm(points[:, None, :] - closest, axis=2).min(axis=1)


def footprint_gap(first: OrientedBox, second: OrientedBox) -> float:
    """Horizontal gap between two boxes' footprints (0 when they overlap), in metres."""
    a, b = footprint_corners(first.to_array()), footprint_corners(second.to_array())
    for polygon in (a, b):
        edges = np.roll(polygon, -1, axis=0) - polygon
        for normal in np.stack((-edges[:, 1], edges[:, 0]), axis=1):
            pa, pb = a @ normal, b @ normal
            if pa.max() < pb.min() or pb.max() < pa.min():
                return float(min(_point_segment_distances(a, b).min(), _point_segment_distances(b, a).min()))
    return 0.0


def distance_to_footprint(point: np.ndarray, box: OrientedBox) -> float:
    """Horizontal distance from a 2-D point to the box's footprint (0 inside it)."""
    local = (point - np.asarray(box.center[:2])) @ yaw_rotation(box.yaw)[:2, :2]
    return float(np.linalg.norm(np.maximum(np.abs(local) - np.asarray(box.size[:2]) / 2.0, 0.0)))


def ray_exit(origin: np.ndarray, direction: np.ndarray, box: OrientedBox) -> float:
    """How far a horizontal ray from ``origin`` travels before leaving the box's footprint."""
    rotation = yaw_rotation(box.yaw)[:2, :2]
    local_origin = (origin - np.asarray(box.center[:2])) @ rotation
    local_direction = direction @ rotation
    half = np.asarray(box.size[:2]) / 2.0
    exits = []
    for axis in range(2):
        if local_direction[axis] > 1e-12:
            exits.append((half[axis] - local_origin[axis]) / local_direction[axis])
        elif local_direction[axis] < -1e-12:
            exits.append((-half[axis] - local_origin[axis]) / local_direction[axis])
    return max(0.0, float(min(exits))) if exits else 0.0


# --------------------------------------------------------------------------- scene facts


class SceneFacts:
    """Per-scene geometry shared by the annotators, the resolver, the checks and the runtime's programs.

    ``objects`` are ``ObjectRecord``-like (``category``, ``color``, ``box``, ``on``,
    ``visible_points``), indexed by position. ``strict[relation]`` and
    ``lenient[relation]`` are M×M boolean matrices: entry [i, j] says "object i
    <relation> object j". ``unknown_level`` (detected objects only): per object, whether it is
    raised with no support found under it; such an object is "next to" nothing.
    """

    def __init__(self, objects: Sequence[ObjectRecord], config: AnnotationConfig = AnnotationConfig(),
                 room_type: str = "", unknown_level: Sequence[bool] | None = None) -> None:
        self.objects = list(objects)
        self.room_type = room_type
        self.config = config
        objects = self.objects
        count = len(objects)
        self.count = count
        self.categories = np.array([obj.category for obj in objects], dtype=object)
        self.colors = np.array([obj.color for obj in objects], dtype=object)
        boxes = np.array([obj.box.to_array() for obj in objects], dtype=np.float64).reshape(-1, 7)
        self.centers = boxes[:, :3]
        self.sizes = boxes[:, 3:6]
        visible = np.array([obj.visible_points for obj in objects], dtype=np.int64)
        self.in_view = visible > 0
        self.reliable = visible >= max(1, config.min_visible_points)
        self.support = np.array([-1 if obj.on is None else obj.on for obj in objects], dtype=np.int64)
        self.distance = np.linalg.norm(self.centers, axis=1)
        self.gaps = np.zeros((count, count))
        for i in range(count):
            for j in range(i + 1, count):
                self.gaps[i, j] = self.gaps[j, i] = footprint_gap(objects[i].box, objects[j].box)
        indices = np.arange(count)
        on = self.support[:, None] == indices[None, :]
        stacked = on | on.T
        level = self.support.copy()  # an object's support level: what it rests on, -1 the floor
        if unknown_level is not None:  # ... or a level of its own (raised, its support not found)
            unknown = np.flatnonzero(np.asarray(unknown_level, dtype=bool))
            level[unknown] = -2 - unknown
        same_level = level[:, None] == level[None, :]
        not_self = ~np.eye(count, dtype=bool)
        dy = self.centers[:, 1][:, None] - self.centers[:, 1][None, :]
        dx = self.centers[:, 0][:, None] - self.centers[:, 0][None, :]
        horizontal = np.hypot(dx, dy)
        self.horizontal_distance = horizontal

        def relations(margin: float, next_to: float) -> dict[str, np.ndarray]:
            free = ~stacked & not_self
            return {
                "on": on,
                "next to": (self.gaps < next_to) & same_level & free,
                "left of": (dy > margin) & free,
                "right of": (dy < -margin) & free,
                "in front of": (dx < -margin) & free,
                "behind": (dx > margin) & free,
            }

        self.strict = relations(config.side_margin_m, config.next_to_m)
        self.lenient = relations(0.0, config.not_next_to_m)
        self._simple: dict[int, dict[str, Any] | None] = {}
        self._unique_expressions: dict[int, list[dict[str, Any]]] = {}

    def matches(self, category: str, color: str | None = None, near: bool = False) -> np.ndarray:
        """Mask of in-view objects of a category (and colour). ``near``: a colour also matches
        its lighting neighbours (``catalog.NEAR_COLORS``) and an object whose colour is unknown."""
        mask = self.in_view & (self.categories == category)
        if color:
            allowed = {color} | (set(NEAR_COLORS.get(color, ())) | {""} if near else set())
            mask &= np.isin(self.colors.astype(str), sorted(allowed))
        return mask

    def superlative_values(self, relation: str) -> np.ndarray:
        """Per-object score that the superlative maximises."""
        return {
            "leftmost": self.centers[:, 1],
            "rightmost": -self.centers[:, 1],
            "closest": -self.distance,
            "farthest": self.distance,
        }[relation]

    def resolve(self, expression: dict[str, Any], lenient: bool = False, near_color: bool = False) -> list[int]:
        """Indices of the in-view objects an expression refers to (strict or lenient relations;
        ``near_color``: its colour also matches the colour's lighting neighbours)."""
        mask = self.matches(expression["category"], expression.get("color"), near=near_color)
        relation = expression.get("relation")
        if relation is None:
            return [int(index) for index in np.flatnonzero(mask)]
        if relation in SUPERLATIVES:
            candidates = np.flatnonzero(mask)
            if len(candidates) == 0:
                return []
            values = self.superlative_values(relation)[candidates]
            if lenient:
                keep = candidates[values >= values.max() - self.config.superlative_margin_m]
                return [int(index) for index in keep]
            return [int(candidates[int(np.argmax(values))])]
        anchor = expression["anchor"]
        anchors = self.matches(anchor["category"], anchor.get("color"), near=near_color)
        matrix = (self.lenient if lenient else self.strict)[relation]
        related = matrix[:, anchors].any(axis=1)
        return [int(index) for index in np.flatnonzero(mask & related)]

    def simple_expression(self, index: int) -> dict[str, Any] | None:
        """The shortest relation-free description that picks out the object alone, if any."""
        if index not in self._simple:
            category, color = str(self.categories[index]), str(self.colors[index])
            found = None
            for candidate in (make_expression(category), make_expression(category, color) if color else None):
                if candidate is not None and self.resolve(candidate) == [index]:
                    found = candidate
                    break
            self._simple[index] = found
        return self._simple[index]

    def is_unique(self, expression: dict[str, Any], index: int) -> bool:
        """Whether the expression picks out exactly ``index`` under both strict and lenient relations."""
        return self.resolve(expression) == [index] and self.resolve(expression, lenient=True) == [index]

    def unique_expressions(self, index: int) -> list[dict[str, Any]]:
        """Every generated referring expression that resolves to exactly this object (cached)."""
        if index not in self._unique_expressions:
            self._unique_expressions[index] = self._find_unique_expressions(index)
        return list(self._unique_expressions[index])

    def _find_unique_expressions(self, index: int) -> list[dict[str, Any]]:
        category, color = str(self.categories[index]), str(self.colors[index])
        reliable = np.flatnonzero(self.reliable)
        found: dict[str, dict[str, Any]] = {}
        for with_color in ([None, color] if color else [None]):
            candidates = [make_expression(category, with_color)]
            if self.matches(category, with_color).sum() >= 2:
                candidates += [make_expression(category, with_color, relation) for relation in SUPERLATIVES]
            for relation in PAIR_RELATIONS:
                directional = relation in ("left of", "right of", "in front of", "behind")
                for anchor in reliable:
                    if anchor == index or not self.strict[relation][index, anchor]:
                        continue
                    if directional and self.horizontal_distance[index, anchor] > self.config.anchor_range_m:
                        continue
                    anchor_expression = self.simple_expression(int(anchor))
                    if anchor_expression is not None:
                        candidates.append(make_expression(category, with_color, relation, anchor_expression))
            for candidate in candidates:
                if self.is_unique(candidate, index):
                    found.setdefault(json.dumps(candidate, sort_keys=True), candidate)
        return list(found.values())

    def object_phrase(self, index: int) -> str:
        """"red chair" (or "chair" when the colour is unknown), canonical words, for dense captions."""
        color = str(self.colors[index])
        name = str(self.categories[index])
        return f"{color} {name}" if color else name


def scene_facts(record: SceneRecord, config: AnnotationConfig = AnnotationConfig()) -> SceneFacts:
    """Precomputed relations of a record's ground truth (reuse it across many checks of one scene)."""
    return SceneFacts(record.objects, config, record.room_type)


def resolve_reference(
    record: SceneRecord, expression_attributes: dict[str, Any], config: AnnotationConfig = AnnotationConfig(),
    lenient: bool = False,
) -> list[int]:
    """Indices of the objects a referring expression (``make_expression`` dict) denotes."""
    return scene_facts(record, config).resolve(expression_attributes, lenient=lenient)




def portable(facts: SceneFacts, index: int) -> bool:
    """Whether the object is a small thing that can be carried (a top-placed category, or one resting on another)."""
    spec = CATEGORIES.get(str(facts.categories[index]))
    return (spec.placement == "top") if spec is not None else bool(facts.support[index] >= 0)
