"""Language annotations for every task, computed only from a scene record's ground truth.

Tasks: ``caption`` (whole scene), ``dense_caption`` (one object, given its box),
``qa`` (short exact-matchable answers), ``grounding`` (referring expression → one
object's box) and ``plan`` (instruction → steps with navigation poses).

Conventions (see docs/dataset_format.md for the full list):

* Spatial words are in the CAMERA frame (the record's gravity-aligned frame: x forward,
  y left, z up, origin at the sensor). "A left of B": A's centre is more than
  ``side_margin_m`` further left (+y) than B's; "A in front of B": A's centre is more than
  ``side_margin_m`` closer along the viewing direction (x); "A on B": B supports A;
  "A next to B": same support level, not stacked, footprints less than ``next_to_m``
  apart. Superlatives (leftmost, rightmost, closest, farthest) compare centres
  (y, or distance from the camera).
* Every relation has a strict form (used for facts and answers) and a lenient form (no
  margin, wider "next to"); a referring expression is kept only if both forms resolve
  to the same single object, so near-ties never make an expression ambiguous.
* Answers use canonical category names (prompts may use synonyms such as "mug"), digits
  for counts, colour names from the catalog, "yes"/"no", and distances as metres with
  one decimal: ``"2.3 m"`` (camera-to-box-centre Euclidean distance).
* ``<box>`` in a prompt or answer stands for a box the model encodes itself: a dense
  caption prompt's box is ``target_box``; a grounding answer is
  ``"<canonical description> <box>"`` with ``target_box`` as the box to emit.
* Plans: ``{"instruction", "steps": [{"action", "target", "object", "destination"?,
  "destination_object"?, "pose"?, "target_position"?}]}``; actions navigate_to, look_at,
  pick, place; navigation poses are in the gravity frame (see ``navigation_goal``). The
  plan's text form, what a model emits, is ``plan_text``:
  ``"navigate_to(red cup) ; pick(red cup) ; navigate_to(sofa) ; place(red cup, sofa)"``.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from threed_llm_ros.data.catalog import CATEGORIES, CATEGORY_NAMES, COLOR_NAMES, SUPPORT_CATEGORIES, TOP_CATEGORIES
from threed_llm_ros.errors import ConfigError
from threed_llm_ros.geometry.boxes import OrientedBox
from threed_llm_ros.geometry.frames import yaw_rotation
from threed_llm_ros.plans import plan_text

if TYPE_CHECKING:
    from threed_llm_ros.data.dataset import SceneRecord

TASKS: tuple[str, ...] = ("caption", "dense_caption", "qa", "grounding", "plan")
BOX_TOKEN = "<box>"
PAIR_RELATIONS: tuple[str, ...] = ("on", "next to", "left of", "right of", "in front of", "behind")
SUPERLATIVES: tuple[str, ...] = ("leftmost", "rightmost", "closest", "farthest")
RELATIONS: tuple[str, ...] = PAIR_RELATIONS + SUPERLATIVES
PLAN_ACTIONS: tuple[str, ...] = ("navigate_to", "look_at", "pick", "place")
QUESTION_TYPES: tuple[str, ...] = (
    "existence", "count", "color", "category", "support", "bigger", "taller", "distance", "relation", "choice",
)

# Prompt-side synonyms; answers always use the canonical (first) name.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "cup": ("cup", "mug"),
    "sofa": ("sofa", "couch"),
    "trash can": ("trash can", "bin", "waste basket"),
    "monitor": ("monitor", "screen"),
    "bookshelf": ("bookshelf", "bookcase"),
    "night stand": ("night stand", "nightstand", "bedside table"),
    "cabinet": ("cabinet", "cupboard"),
}
RELATION_PHRASES: dict[str, tuple[str, ...]] = {
    "on": ("on the {a}", "on top of the {a}", "sitting on the {a}"),
    "next to": ("next to the {a}", "beside the {a}", "by the {a}"),
    "left of": ("to the left of the {a}", "left of the {a}", "on the left side of the {a}"),
    "right of": ("to the right of the {a}", "right of the {a}", "on the right side of the {a}"),
    "in front of": ("in front of the {a}",),
    "behind": ("behind the {a}", "further back than the {a}"),
}
SUPERLATIVE_PHRASES: dict[str, tuple[str, ...]] = {
    "leftmost": ("leftmost {b}", "{b} farthest to the left", "{b} on the far left"),
    "rightmost": ("rightmost {b}", "{b} farthest to the right", "{b} on the far right"),
    "closest": ("{b} closest to the camera", "nearest {b}", "{b} nearest to the camera"),
    "farthest": ("{b} farthest from the camera", "most distant {b}", "{b} farthest away"),
}
_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


@dataclass(frozen=True)
class AnnotationConfig:
    """Thresholds of the spatial vocabulary and how many annotations of each task a scene gets."""

    min_visible_points: int = 10  # fewer points: the object is too faint to ask about or refer to
    side_margin_m: float = 0.15  # left/right and in front/behind need this gap between centres
    next_to_m: float = 0.4  # footprint gap below which two objects are next to each other
    not_next_to_m: float = 0.8  # gap above which they clearly are not
    superlative_margin_m: float = 0.2  # the runner-up must trail the leftmost/closest... by this much
    anchor_range_m: float = 2.5  # left/right/front/behind only relative to anchors this close (centres)
    bigger_ratio: float = 1.5  # "bigger" needs this volume ratio
    taller_margin_m: float = 0.1
    closer_margin_m: float = 0.2
    standoff_m: float = 0.6  # navigation goal distance from the footprint
    robot_radius_m: float = 0.3  # goals keep this clearance from other furniture
    captions_per_scene: int = 2
    caption_facts: int = 3
    dense_captions_per_scene: int = 6
    grounding_per_object: int = 2
    qa_per_type: int = 2
    plans_per_scene: int = 4

    def __post_init__(self) -> None:
        if self.not_next_to_m < self.next_to_m:
            raise ConfigError("not_next_to_m", "is below next_to_m", "use not_next_to_m >= next_to_m")
        for name in ("side_margin_m", "next_to_m", "superlative_margin_m", "standoff_m", "robot_radius_m"):
            if getattr(self, name) < 0:
                raise ConfigError(name, "is negative", "use a length >= 0")


@dataclass
class Annotation:
    """One training/evaluation example of a scene."""

    task: str
    prompt: str
    answer: str
    target_object: int | None = None
    target_box: OrientedBox | None = None
    plan: dict[str, Any] | None = None
    attributes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError("task", f"unknown task {self.task!r}", f"use one of {TASKS}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the box as 7 floats)."""
        return {
            "task": self.task,
            "prompt": self.prompt,
            "answer": self.answer,
            "target_object": self.target_object,
            "target_box": None if self.target_box is None else [float(value) for value in self.target_box.to_array()],
            "plan": self.plan,
            "attributes": self.attributes,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Annotation":
        """Inverse of ``to_dict``."""
        box = values.get("target_box")
        return cls(
            task=values["task"],
            prompt=values["prompt"],
            answer=values["answer"],
            target_object=values.get("target_object"),
            target_box=None if box is None else OrientedBox.from_array(np.asarray(box)),
            plan=values.get("plan"),
            attributes=dict(values.get("attributes") or {}),
        )


# --------------------------------------------------------------------------- words


def _choose(options: Sequence[str], rng: np.random.Generator | None) -> str:
    """The first option (canonical) without an rng, else a random one."""
    return options[0] if rng is None else options[int(rng.integers(len(options)))]


def noun(category: str, rng: np.random.Generator | None = None) -> str:
    """The category's name, or (with an rng) one of its synonyms."""
    return _choose(SYNONYMS.get(category, (category,)), rng)


def plural(phrase: str) -> str:
    """English plural of a noun phrase (last word inflected)."""
    head, _, last = phrase.rpartition(" ")
    if last.endswith("shelf"):
        last = last[:-1] + "ves"
    elif last.endswith(("s", "x", "ch", "sh")):
        last += "es"
    elif last.endswith("y") and len(last) > 1 and last[-2] not in "aeiou":
        last = last[:-1] + "ies"
    else:
        last += "s"
    return f"{head} {last}" if head else last


def indefinite(phrase: str) -> str:
    """The phrase with "a" or "an"."""
    return ("an " if phrase[:1] in "aeiou" else "a ") + phrase


def number_word(count: int) -> str:
    """"two" for 2 (digits above ten)."""
    return _NUMBER_WORDS[count] if 0 <= count < len(_NUMBER_WORDS) else str(count)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _join(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def make_expression(category: str, color: str | None = None, relation: str | None = None,
                    anchor: dict[str, Any] | None = None) -> dict[str, Any]:
    """A referring-expression attribute dict (the form ``resolve_reference`` takes)."""
    if relation is not None and relation not in RELATIONS:
        raise ConfigError("relation", f"unknown relation {relation!r}", f"use one of {RELATIONS}")
    if (relation in PAIR_RELATIONS) != (anchor is not None):
        raise ConfigError("anchor", "pair relations need an anchor, others none", "pass an anchor with on/next to/left of/...")
    return {"category": category, "color": color or None, "relation": relation, "anchor": anchor}


def describe(expression: dict[str, Any], rng: np.random.Generator | None = None) -> str:
    """Words for an expression, without article ("red cup on the desk"); canonical without an rng."""
    base = noun(expression["category"], rng)
    if expression.get("color"):
        base = f"{expression['color']} {base}"
    relation = expression.get("relation")
    if relation is None:
        return base
    if relation in SUPERLATIVES:
        return _choose(SUPERLATIVE_PHRASES[relation], rng).format(b=base)
    anchor_text = describe(expression["anchor"], rng)
    return f"{base} {_choose(RELATION_PHRASES[relation], rng).format(a=anchor_text)}"


def _combo(category: str, color: str, relation: str | None) -> list[list[str]]:
    """The (category, colour, relation) combination an annotation uses, for the compositional split."""
    return [[category, color, relation]] if relation and color else []


# --------------------------------------------------------------------------- geometry


def _footprint(box: np.ndarray) -> np.ndarray:
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
    a, b = _footprint(first.to_array()), _footprint(second.to_array())
    for polygon in (a, b):
        edges = np.roll(polygon, -1, axis=0) - polygon
        for normal in np.stack((-edges[:, 1], edges[:, 0]), axis=1):
            pa, pb = a @ normal, b @ normal
            if pa.max() < pb.min() or pb.max() < pa.min():
                return float(min(_point_segment_distances(a, b).min(), _point_segment_distances(b, a).min()))
    return 0.0


def _distance_to_footprint(point: np.ndarray, box: OrientedBox) -> float:
    local = (point - np.asarray(box.center[:2])) @ yaw_rotation(box.yaw)[:2, :2]
    return float(np.linalg.norm(np.maximum(np.abs(local) - np.asarray(box.size[:2]) / 2.0, 0.0)))


def _ray_exit(origin: np.ndarray, direction: np.ndarray, box: OrientedBox) -> float:
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


def _root_support(record: SceneRecord, index: int) -> int:
    """The floor-standing object at the bottom of the stack holding ``index``."""
    seen = {index}
    while record.objects[index].on is not None and record.objects[index].on not in seen:
        index = record.objects[index].on
        seen.add(index)
    return index


def _round(values: Sequence[float]) -> list[float]:
    """Plain floats rounded to the micrometre, for compact JSON."""
    return [round(float(value), 6) for value in values]


def navigation_goal(record: SceneRecord, index: int, config: AnnotationConfig = AnnotationConfig()) -> dict[str, list[float]]:
    """A base goal pose to reach an object: on the floor, facing it, ``standoff_m`` outside its footprint.

    The goal lies on the ray from the object's centre toward the camera, past the
    footprint of the object and of the furniture it rests on; if a robot disc of
    ``robot_radius_m`` there would touch other furniture, the ray turns by ±30°, ±60°.
    Position z is the floor under the object (the bottom of its root support); the
    orientation (x, y, z, w) is a yaw facing the object's centre. Gravity frame.
    """
    target = record.objects[index].box
    root = record.objects[_root_support(record, index)].box
    center = np.asarray(target.center[:2], dtype=np.float64)
    toward_camera = -center / max(float(np.linalg.norm(center)), 1e-9)
    obstacles = [obj.box for obj in record.objects if obj.on is None and obj.index != _root_support(record, index)]
    chosen: np.ndarray | None = None
    for degrees in (0.0, 30.0, -30.0, 60.0, -60.0):
        direction = yaw_rotation(math.radians(degrees))[:2, :2] @ toward_camera
        reach = max(_ray_exit(center, direction, target), _ray_exit(center, direction, root))
        position = center + direction * (reach + config.standoff_m)
        if chosen is None:
            chosen = position
        if all(_distance_to_footprint(position, box) > config.robot_radius_m for box in obstacles):
            chosen = position
            break
    assert chosen is not None
    yaw = math.atan2(center[1] - chosen[1], center[0] - chosen[0])
    floor = root.center[2] - root.size[2] / 2.0
    return {
        "position": _round([chosen[0], chosen[1], floor]),
        "orientation": _round([0.0, 0.0, math.sin(yaw / 2.0), math.cos(yaw / 2.0)]),
    }


# --------------------------------------------------------------------------- scene facts


class SceneFacts:
    """Per-scene geometry shared by the annotators, the resolver and the checks.

    ``strict[relation]`` and ``lenient[relation]`` are M×M boolean matrices: entry
    [i, j] says "object i <relation> object j".
    """

    def __init__(self, record: SceneRecord, config: AnnotationConfig = AnnotationConfig()) -> None:
        self.record = record
        self.config = config
        objects = record.objects
        count = len(objects)
        self.count = count
        self.categories = np.array([obj.category for obj in objects], dtype=object)
        self.colors = np.array([obj.color for obj in objects], dtype=object)
        boxes = record.boxes_array()
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
        same_level = self.support[:, None] == self.support[None, :]
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

    def matches(self, category: str, color: str | None = None) -> np.ndarray:
        """Mask of in-view objects of a category (and colour)."""
        mask = self.in_view & (self.categories == category)
        if color:
            mask &= self.colors == color
        return mask

    def superlative_values(self, relation: str) -> np.ndarray:
        """Per-object score that the superlative maximises."""
        return {
            "leftmost": self.centers[:, 1],
            "rightmost": -self.centers[:, 1],
            "closest": -self.distance,
            "farthest": self.distance,
        }[relation]

    def resolve(self, expression: dict[str, Any], lenient: bool = False) -> list[int]:
        """Indices of the in-view objects an expression refers to (strict or lenient relations)."""
        mask = self.matches(expression["category"], expression.get("color"))
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
        anchors = self.matches(anchor["category"], anchor.get("color"))
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
    """Precomputed relations of a record (reuse it across many checks of one scene)."""
    return SceneFacts(record, config)


def resolve_reference(
    record: SceneRecord, expression_attributes: dict[str, Any], config: AnnotationConfig = AnnotationConfig(),
    lenient: bool = False,
) -> list[int]:
    """Indices of the objects a referring expression (``make_expression`` dict) denotes."""
    return SceneFacts(record, config).resolve(expression_attributes, lenient=lenient)


def _expression_kind(expression: dict[str, Any]) -> str:
    relation = expression.get("relation")
    return "plain" if relation is None else ("superlative" if relation in SUPERLATIVES else "relation")


def _pick_expression(
    expressions: list[dict[str, Any]], rng: np.random.Generator, weights: dict[str, float]
) -> dict[str, Any] | None:
    """A random expression, first choosing its kind by weight."""
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for expression in expressions:
        by_kind.setdefault(_expression_kind(expression), []).append(expression)
    kinds = [kind for kind in weights if kind in by_kind]
    if not kinds:
        return None
    probabilities = np.array([weights[kind] for kind in kinds])
    kind = kinds[int(rng.choice(len(kinds), p=probabilities / probabilities.sum()))]
    options = by_kind[kind]
    return options[int(rng.integers(len(options)))]


# --------------------------------------------------------------------------- captions


_CAPTION_PROMPTS = (
    "Describe the scene.", "What is in this room?", "Give a short description of the room.",
    "Describe what you see.", "Summarise the scene.",
)
_CAPTION_INTROS = (
    "This {room} contains {items}.", "A {room} with {items}.", "The {room} has {items}.",
    "You can see {items} in this {room}.",
)
_FACT_SENTENCES: dict[str, tuple[str, ...]] = {
    "on": ("The {s} is on the {a}.", "There is {s_indef} on the {a}.", "{S_indef} sits on the {a}."),
    "next to": ("The {s} is next to the {a}.", "{S_indef} stands beside the {a}."),
    "left of": ("The {s} is to the left of the {a}.", "To the left of the {a} there is {s_indef}."),
    "right of": ("The {s} is to the right of the {a}.", "To the right of the {a} there is {s_indef}."),
}


def _caption_facts(facts: SceneFacts, rng: np.random.Generator) -> list[tuple[str, int, int]]:
    """Candidate (relation, subject, anchor) facts between reliable objects, in caption priority order."""
    reliable = set(np.flatnonzero(facts.reliable).tolist())
    chosen: list[tuple[str, int, int]] = []
    for relation in ("on", "next to", "left of", "right of"):
        pairs = [
            (relation, int(i), int(j)) for i, j in zip(*np.nonzero(facts.strict[relation]))
            if i in reliable and j in reliable and (relation != "next to" or i < j)
            and (relation in ("on", "next to") or facts.horizontal_distance[i, j] <= facts.config.anchor_range_m)
        ]
        order = rng.permutation(len(pairs))
        chosen += [pairs[position] for position in order]
    return chosen


def render_caption(facts: SceneFacts, structure: dict[str, Any]) -> str | None:
    """A scene caption from its wording choices and the scene's own counts, colours and relations.

    ``structure``: "nouns" {category: word}, "order" [categories], "colored" [categories
    named with their colour], "intro" (template index) and "facts" [{"relation",
    "subject", "anchor", "template"}]. Returns None when the structure no longer fits
    the scene (other categories, a colour or relation that does not hold).
    """
    reliable = np.flatnonzero(facts.reliable)
    counts = Counter(str(facts.categories[index]) for index in reliable)
    if sorted(structure["order"]) != sorted(counts):
        return None
    names = structure["nouns"]

    def phrase(index: int) -> str:
        color = str(facts.colors[index])
        name = names[str(facts.categories[index])]
        return f"{color} {name}" if color else name

    items = []
    for category in structure["order"]:
        if counts[category] > 1:
            items.append(f"{number_word(counts[category])} {plural(names[category])}")
            continue
        index = int(next(i for i in reliable if facts.categories[i] == category))
        if category in structure["colored"] and not facts.colors[index]:
            return None
        items.append(indefinite(phrase(index) if category in structure["colored"] else names[category]))
    room = facts.record.room_type or "room"
    sentences = [_sentence(_CAPTION_INTROS[structure["intro"]].format(room=room, items=_join(items)))]
    for fact in structure["facts"]:
        subject, anchor = fact["subject"], fact["anchor"]
        if not (facts.reliable[subject] and facts.reliable[anchor] and facts.strict[fact["relation"]][subject, anchor]):
            return None
        subject_text = phrase(subject)
        sentences.append(_FACT_SENTENCES[fact["relation"]][fact["template"]].format(
            s=subject_text, a=phrase(anchor), s_indef=indefinite(subject_text), S_indef=_sentence(indefinite(subject_text)),
        ))
    return " ".join(sentences)


def caption_annotations(facts: SceneFacts, rng: np.random.Generator) -> list[Annotation]:
    """Scene captions: room type, what it holds (counts) and a few relations."""
    config = facts.config
    reliable = np.flatnonzero(facts.reliable)
    if len(reliable) == 0:
        return []
    counts = Counter(str(facts.categories[index]) for index in reliable)
    candidates = _caption_facts(facts, rng)
    annotations = []
    seen: set[str] = set()
    for _ in range(config.captions_per_scene):
        # One word per category within a caption, so synonyms never look like two objects.
        order = list(counts)
        rng.shuffle(order)
        structure: dict[str, Any] = {
            "nouns": {category: noun(category, rng) for category in order},
            "order": order,
            "colored": [
                category for category in order if counts[category] == 1 and rng.random() < 0.6
                and facts.colors[next(i for i in reliable if facts.categories[i] == category)]
            ],
            "intro": int(rng.integers(len(_CAPTION_INTROS))),
            "facts": [],
        }
        subjects: set[int] = set()
        for relation, subject, anchor in candidates:
            if len(structure["facts"]) >= config.caption_facts or subject in subjects or rng.random() < 0.3:
                continue
            subjects.add(subject)
            structure["facts"].append({"relation": relation, "subject": subject, "anchor": anchor,
                                       "template": int(rng.integers(len(_FACT_SENTENCES[relation])))})
        text = render_caption(facts, structure)
        if text is None or text in seen:
            continue
        seen.add(text)
        combos = [combo for fact in structure["facts"] for combo in _combo(
            str(facts.categories[fact["subject"]]), str(facts.colors[fact["subject"]]), fact["relation"])]
        annotations.append(Annotation(
            "caption", _choose(_CAPTION_PROMPTS, rng), text,
            attributes={"room_type": facts.record.room_type, "counts": dict(counts), "structure": structure,
                        "combos": combos},
        ))
    return annotations


_DENSE_PROMPTS = (
    f"Describe the object at {BOX_TOKEN}.", f"What is the object in {BOX_TOKEN}?",
    f"Caption the object at {BOX_TOKEN}.", f"Tell me about the object at {BOX_TOKEN}.",
)
_DENSE_FORMS = ("{x}{rest}.", "This is {x}{rest}.", "It is {x}{rest}.")


def _dense_relation(facts: SceneFacts, index: int) -> tuple[str | None, int | None]:
    """The relation a dense caption mentions: support, else nearest neighbour, else nearest left/right object."""
    reliable = facts.reliable
    support = int(facts.support[index])
    if support >= 0 and reliable[support]:
        return "on", support
    for relation in ("next to", "left of", "right of"):
        partners = np.flatnonzero(facts.strict[relation][index] & reliable)
        if relation != "next to":
            partners = partners[facts.horizontal_distance[index, partners] <= facts.config.anchor_range_m]
        if len(partners):
            nearest = partners[int(np.argmin(facts.horizontal_distance[index, partners]))]
            return relation, int(nearest)
    return None, None


def render_dense_caption(facts: SceneFacts, index: int, relation: str | None, anchor: int | None, form: int) -> str:
    """"It is a red cup on the brown table." from the scene's colours and categories (canonical words)."""
    rest = "" if relation is None else " " + RELATION_PHRASES[relation][0].format(a=facts.object_phrase(int(anchor)))
    return _sentence(_DENSE_FORMS[form].format(x=indefinite(facts.object_phrase(index)), rest=rest))


def dense_caption_annotations(facts: SceneFacts, rng: np.random.Generator) -> list[Annotation]:
    """Per-object captions (colour, category, one relation to a neighbour), prompted with the object's box."""
    reliable = np.flatnonzero(facts.reliable)
    chosen = rng.permutation(reliable)[: facts.config.dense_captions_per_scene]
    annotations = []
    for index in sorted(int(i) for i in chosen):
        relation, anchor = _dense_relation(facts, index)
        form = int(rng.integers(len(_DENSE_FORMS)))
        category, color = str(facts.categories[index]), str(facts.colors[index])
        annotations.append(Annotation(
            "dense_caption", _choose(_DENSE_PROMPTS, rng), render_dense_caption(facts, index, relation, anchor, form),
            index, facts.record.objects[index].box,
            attributes={"category": category, "color": color, "relation": relation, "anchor": anchor, "form": form,
                        "combos": _combo(category, color, relation)},
        ))
    return annotations


# --------------------------------------------------------------------------- grounding


_GROUNDING_PROMPTS = (
    "Where is the {r}?", "Find the {r}.", "Locate the {r}.", "Show me the {r}.", "Point out the {r}.",
    "Give the 3D box of the {r}.",
)
_GROUNDING_WEIGHTS = {"relation": 0.5, "superlative": 0.25, "plain": 0.25}


def grounding_answer(expression: dict[str, Any]) -> str:
    """Target text of a grounding annotation: canonical description then the box placeholder."""
    return f"{describe(expression)} {BOX_TOKEN}"


def grounding_annotations(facts: SceneFacts, rng: np.random.Generator) -> list[Annotation]:
    """Referring expressions that each resolve to exactly one object, with its box."""
    annotations = []
    for index in np.flatnonzero(facts.reliable):
        index = int(index)
        expressions = facts.unique_expressions(index)
        for _ in range(facts.config.grounding_per_object):
            expression = _pick_expression(expressions, rng, _GROUNDING_WEIGHTS)
            if expression is None:
                break
            expressions = [other for other in expressions if other is not expression]
            category, color = str(facts.categories[index]), str(facts.colors[index])
            annotations.append(Annotation(
                "grounding", _choose(_GROUNDING_PROMPTS, rng).format(r=describe(expression, rng)),
                grounding_answer(expression), index, facts.record.objects[index].box,
                attributes={"expression": expression, "category": category, "color": color,
                            "relation": expression["relation"], "combos": _combo(category, color, expression["relation"])},
            ))
    return annotations


# --------------------------------------------------------------------------- question answering


@dataclass
class _Question:
    prompt: str
    answer: str
    target: int | None
    attributes: dict[str, Any]


def _referent(facts: SceneFacts, index: int, rng: np.random.Generator, *, allow_color: bool = True,
              exclude_relation: str | None = None) -> dict[str, Any] | None:
    expressions = [
        expression for expression in facts.unique_expressions(index)
        if (allow_color or not expression["color"]) and expression["relation"] != exclude_relation
    ]
    return _pick_expression(expressions, rng, {"plain": 0.4, "relation": 0.4, "superlative": 0.2})


def _existence_questions(facts: SceneFacts, rng: np.random.Generator) -> list[_Question]:
    forms = ("Is there {x} in the room?", "Do you see any {xs}?", "Are there any {xs} here?", "Can you see {x}?")
    present = {str(facts.categories[i]) for i in np.flatnonzero(facts.reliable)}
    in_view = {str(facts.categories[i]) for i in np.flatnonzero(facts.in_view)}
    absent = sorted(set(CATEGORY_NAMES) - in_view)
    questions = []
    options: list[tuple[str, str | None]] = [(category, None) for category in sorted(present | set(absent))]
    for index in np.flatnonzero(facts.reliable):
        options.append((str(facts.categories[index]), str(facts.colors[index]) or None))
        other = str(rng.choice(sorted({str(c) for c in facts.colors if c} or {""})))
        if other:
            options.append((str(facts.categories[index]), other))
    for category, color in dict.fromkeys(options):
        mask = facts.matches(category, color)
        if mask.any() and not (mask & facts.reliable).any():
            continue  # only faintly visible: neither answer is fair
        words = f"{color} {noun(category, rng)}" if color else noun(category, rng)
        prompt = _sentence(_choose(forms, rng).format(x=indefinite(words), xs=plural(words)))
        questions.append(_Question(prompt, "yes" if mask.any() else "no", None,
                                   {"question_type": "existence", "category": category, "color": color}))
    return questions


def _count_questions(facts: SceneFacts, rng: np.random.Generator) -> list[_Question]:
    forms = ("How many {xs} are there?", "How many {xs} can you see?", "Count the {xs} in the room.",
             "What is the number of {xs} here?")
    questions = []
    options = dict.fromkeys(
        (str(facts.categories[i]), color) for i in np.flatnonzero(facts.reliable)
        for color in (None, str(facts.colors[i]) or None)
    )
    for category, color in options:
        mask = facts.matches(category, color)
        if (mask & ~facts.reliable).any():
            continue
        words = f"{color} {noun(category, rng)}" if color else noun(category, rng)
        questions.append(_Question(_sentence(_choose(forms, rng).format(xs=plural(words))), str(int(mask.sum())), None,
                                   {"question_type": "count", "category": category, "color": color}))
    return questions


def _color_questions(facts: SceneFacts, rng: np.random.Generator) -> list[_Question]:
    forms = ("What colour is the {r}?", "What color is the {r}?", "Which colour does the {r} have?")
    questions = []
    for index in np.flatnonzero(facts.reliable):
        color = str(facts.colors[index])
        referent = _referent(facts, int(index), rng, allow_color=False) if color else None
        if referent is None:
            continue
        category = str(facts.categories[index])
        questions.append(_Question(
            _sentence(_choose(forms, rng).format(r=describe(referent, rng))), color, int(index),
            {"question_type": "color", "referent": referent, "category": category, "color": color,
             "relation": referent["relation"], "combos": _combo(category, color, referent["relation"])},
        ))
    return questions


_CATEGORY_FORMS: dict[str, tuple[str, ...]] = {
    "on": ("What is on the {a}?", "What is on top of the {a}?", "What can you see on the {a}?"),
    "next to": ("What is next to the {a}?", "What stands beside the {a}?"),
    "left of": ("What is to the left of the {a}?",),
    "right of": ("What is to the right of the {a}?",),
    "in front of": ("What is in front of the {a}?",),
    "behind": ("What is behind the {a}?",),
}


def _sole_related(facts: SceneFacts, relation: str, anchor: int) -> int | None:
    """The one in-view object in ``relation`` to the anchor (strict and lenient agree), if exactly one."""
    strict = np.flatnonzero(facts.in_view & facts.strict[relation][:, anchor])
    lenient = np.flatnonzero(facts.in_view & facts.lenient[relation][:, anchor])
    if len(strict) == 1 and list(strict) == list(lenient):
        return int(strict[0])
    return None


def _category_questions(facts: SceneFacts, rng: np.random.Generator) -> list[_Question]:
    questions = []
    for anchor in np.flatnonzero(facts.reliable):
        anchor_expression = facts.simple_expression(int(anchor))
        if anchor_expression is None:
            continue
        for relation, forms in _CATEGORY_FORMS.items():
            subject = _sole_related(facts, relation, int(anchor))
            if subject is None or not facts.reliable[subject]:
                continue
            category, color = str(facts.categories[subject]), str(facts.colors[subject])
            questions.append(_Question(
                _choose(forms, rng).format(a=describe(anchor_expression, rng)), category, subject,
                {"question_type": "category", "relation": relation, "anchor": anchor_expression,
                 "category": category, "color": color, "combos": _combo(category, color, relation)},
            ))
    return questions


def _support_questions(facts: SceneFacts, rng: np.random.Generator) -> list[_Question]:
    forms = ("What is the {r} on?", "What is the {r} standing on?", "What is the {r} resting on?")
    questions = []
    for index in np.flatnonzero(facts.reliable & (facts.support >= 0)):
        support = int(facts.support[index])
        referent = _referent(facts, int(index), rng, exclude_relation="on")
        if referent is None or not facts.reliable[support]:
            continue
        category, color = str(facts.categories[index]), str(facts.colors[index])
        questions.append(_Question(
            _choose(forms, rng).format(r=describe(referent, rng)), str(facts.categories[support]), int(index),
            {"question_type": "support", "referent": referent, "category": category, "color": color,
             "relation": "on", "combos": _combo(category, color, "on")},
        ))
    return questions


def _named_pairs(facts: SceneFacts) -> list[tuple[int, int]]:
    """Ordered pairs of distinct reliable objects that both have a simple unique description."""
    named = [int(i) for i in np.flatnonzero(facts.reliable) if facts.simple_expression(int(i)) is not None]
    return [(a, b) for a in named for b in named if a != b]


def _comparison_winner(facts: SceneFacts, question_type: str, relation: str | None, a: int, b: int) -> int | None:
    """Which of two objects wins a comparison, or None when they are too close to call."""
    config = facts.config
    if question_type == "bigger":
        volume_a, volume_b = float(np.prod(facts.sizes[a])), float(np.prod(facts.sizes[b]))
        if max(volume_a, volume_b) < config.bigger_ratio * min(volume_a, volume_b):
            return None
        return a if volume_a > volume_b else b
    if question_type == "taller":
        height_a, height_b = facts.sizes[a, 2], facts.sizes[b, 2]
        if abs(height_a - height_b) < config.taller_margin_m:
            return None
        return a if height_a > height_b else b
    values = facts.superlative_values(str(relation))
    margin = config.side_margin_m if relation in ("leftmost", "rightmost") else config.closer_margin_m
    if abs(values[a] - values[b]) < margin:
        return None
    return a if values[a] > values[b] else b


_COMPARISON_FORMS: dict[str, tuple[str, ...]] = {
    "bigger": ("Which is bigger, the {a} or the {b}?", "Which one is larger: the {a} or the {b}?"),
    "taller": ("Which is taller, the {a} or the {b}?", "Which one is taller: the {a} or the {b}?"),
    "leftmost": ("Which is further to the left, the {a} or the {b}?",),
    "rightmost": ("Which is further to the right, the {a} or the {b}?",),
    "closest": ("Which is closer to the camera, the {a} or the {b}?", "Which is nearer to the camera: the {a} or the {b}?"),
    "farthest": ("Which is farther from the camera, the {a} or the {b}?",),
}


def _comparison_questions(facts: SceneFacts, rng: np.random.Generator, question_type: str) -> list[_Question]:
    questions = []
    relations = [None] if question_type in ("bigger", "taller") else list(SUPERLATIVES)
    for a, b in _named_pairs(facts):
        if a > b:
            continue
        first, second = (a, b) if rng.random() < 0.5 else (b, a)
        for relation in relations:
            winner = _comparison_winner(facts, question_type, relation, first, second)
            if winner is None:
                continue
            referents = [facts.simple_expression(first), facts.simple_expression(second)]
            forms = _COMPARISON_FORMS[relation or question_type]
            category, color = str(facts.categories[winner]), str(facts.colors[winner])
            questions.append(_Question(
                _choose(forms, rng).format(a=describe(referents[0], rng), b=describe(referents[1], rng)),
                describe(facts.simple_expression(winner)), winner,
                {"question_type": question_type, "relation": relation, "referents": referents,
                 "category": category, "color": color, "combos": _combo(category, color, relation)},
            ))
    return questions


def _distance_questions(facts: SceneFacts, rng: np.random.Generator) -> list[_Question]:
    forms = ("How far is the {r} from the camera?", "What is the distance to the {r}?",
             "How many metres away is the {r}?")
    questions = []
    for index in np.flatnonzero(facts.reliable):
        referent = _referent(facts, int(index), rng)
        if referent is None:
            continue
        category, color = str(facts.categories[index]), str(facts.colors[index])
        questions.append(_Question(
            _choose(forms, rng).format(r=describe(referent, rng)), format_distance(float(facts.distance[index])),
            int(index), {"question_type": "distance", "referent": referent, "category": category, "color": color,
                         "relation": referent["relation"], "combos": _combo(category, color, referent["relation"])},
        ))
    return questions


def format_distance(metres: float) -> str:
    """The fixed distance answer format: one decimal and " m" ("2.3 m")."""
    return f"{metres:.1f} m"


_RELATION_FORMS: dict[str, tuple[str, ...]] = {
    "on": ("Is the {a} on the {b}?", "Is the {a} sitting on the {b}?"),
    "next to": ("Is the {a} next to the {b}?", "Is the {a} beside the {b}?"),
    "left of": ("Is the {a} to the left of the {b}?", "Is the {a} left of the {b}?"),
    "right of": ("Is the {a} to the right of the {b}?", "Is the {a} right of the {b}?"),
    "in front of": ("Is the {a} in front of the {b}?",),
    "behind": ("Is the {a} behind the {b}?",),
}


def _relation_answer(facts: SceneFacts, relation: str, a: int, b: int) -> str | None:
    """"yes"/"no" for "is a <relation> b", None in the margin where neither is clear or the pair is stacked."""
    stacked = facts.support[a] == b or facts.support[b] == a
    if relation != "on" and stacked:
        return None
    if facts.strict[relation][a, b]:
        return "yes"
    if not facts.lenient[relation][a, b]:
        return "no"
    return None


def _relation_questions(facts: SceneFacts, rng: np.random.Generator) -> list[_Question]:
    questions = []
    for a, b in _named_pairs(facts):
        for relation, forms in _RELATION_FORMS.items():
            if relation in ("left of", "right of", "in front of", "behind") and \
                    facts.horizontal_distance[a, b] > facts.config.anchor_range_m:
                continue
            if relation == "on" and not (_portable(facts, a) and facts.support[b] < 0):
                continue  # only ask whether small things are on furniture
            answer = _relation_answer(facts, relation, a, b)
            if answer is None:
                continue
            referents = [facts.simple_expression(a), facts.simple_expression(b)]
            category, color = str(facts.categories[a]), str(facts.colors[a])
            questions.append(_Question(
                _choose(forms, rng).format(a=describe(referents[0], rng), b=describe(referents[1], rng)), answer, a,
                {"question_type": "relation", "relation": relation, "referents": referents,
                 "category": category, "color": color, "combos": _combo(category, color, relation)},
            ))
    return questions


def _sample_questions(questions: list[_Question], count: int, rng: np.random.Generator) -> list[_Question]:
    """Up to ``count`` questions, alternating answers so yes/no (and other answers) stay balanced."""
    by_answer: dict[str, list[_Question]] = {}
    for question in questions:
        by_answer.setdefault(question.answer, []).append(question)
    answers = list(by_answer)
    rng.shuffle(answers)
    for answer in answers:
        rng.shuffle(by_answer[answer])
    chosen: list[_Question] = []
    prompts: set[str] = set()
    while len(chosen) < count and any(by_answer.values()):
        for answer in answers:
            if by_answer[answer] and len(chosen) < count:
                question = by_answer[answer].pop()
                if question.prompt not in prompts:
                    prompts.add(question.prompt)
                    chosen.append(question)
    return chosen


def qa_annotations(facts: SceneFacts, rng: np.random.Generator) -> list[Annotation]:
    """Question–answer pairs of every question type, a few of each."""
    generators: dict[str, Callable[[], list[_Question]]] = {
        "existence": lambda: _existence_questions(facts, rng),
        "count": lambda: _count_questions(facts, rng),
        "color": lambda: _color_questions(facts, rng),
        "category": lambda: _category_questions(facts, rng),
        "support": lambda: _support_questions(facts, rng),
        "bigger": lambda: _comparison_questions(facts, rng, "bigger"),
        "taller": lambda: _comparison_questions(facts, rng, "taller"),
        "distance": lambda: _distance_questions(facts, rng),
        "relation": lambda: _relation_questions(facts, rng),
        "choice": lambda: _comparison_questions(facts, rng, "choice"),
    }
    annotations = []
    for question_type, generate in generators.items():
        count = facts.config.qa_per_type * (2 if question_type == "relation" else 1)
        for question in _sample_questions(generate(), count, rng):
            target = question.target
            box = None if target is None else facts.record.objects[target].box
            attributes = {"combos": [], **question.attributes}
            annotations.append(Annotation("qa", question.prompt, question.answer, target, box, attributes=attributes))
    return annotations


# --------------------------------------------------------------------------- plans


_PLAN_FORMS: dict[str, tuple[str, ...]] = {
    "go_to": ("Go to the {t}.", "Navigate to the {t}.", "Drive over to the {t}.", "Move to the {t}.", "Head to the {t}."),
    "look_at": ("Look at the {t}.", "Turn towards the {t}.", "Face the {t}."),
    "pick": ("Pick up the {t}.", "Grab the {t}.", "Take the {t}."),
    "put": ("Put the {t} on the {d}.", "Place the {t} on the {d}.", "Move the {t} onto the {d}.", "Set the {t} down on the {d}."),
    "bring": ("Bring the {t} to the {d}.", "Take the {t} over to the {d}.", "Carry the {t} to the {d}."),
    "throw_away": ("Throw away the {t}.", "Put the {t} in the {d}.", "Dispose of the {t}."),
}
PLAN_TYPES: tuple[str, ...] = tuple(_PLAN_FORMS)
_PLAN_TARGET_WEIGHTS = {"plain": 0.6, "relation": 0.25, "superlative": 0.15}
_DISPOSABLE = ("cup", "bottle", "box", "book")
_PUT_DESTINATIONS = frozenset(SUPPORT_CATEGORIES) | {"bed", "sofa"}
_BRING_DESTINATIONS = frozenset(SUPPORT_CATEGORIES) | {"bed", "sofa", "chair", "bookshelf"}


def _portable(facts: SceneFacts, index: int) -> bool:
    spec = CATEGORIES.get(str(facts.categories[index]))
    return (spec.placement == "top") if spec is not None else bool(facts.support[index] >= 0)


def plan_steps(
    plan_type: str, target_text: str, target: int | None = None,
    destination_text: str | None = None, destination: int | None = None,
) -> list[dict[str, Any]]:
    """The steps of an instruction type (``action``, ``target``, ``destination``), each with the
    object it acts on (``object``, ``destination_object``: an index, None where unknown)."""
    navigate = {"action": "navigate_to", "target": target_text, "object": target}
    if plan_type == "go_to":
        return [navigate]
    if plan_type == "look_at":
        return [{"action": "look_at", "target": target_text, "object": target}]
    steps = [navigate, {"action": "pick", "target": target_text, "object": target}]
    if plan_type == "pick":
        return steps
    if destination_text is None:
        raise ConfigError("destination", f"plan type {plan_type!r} needs a destination", "give the destination object")
    return steps + [
        {"action": "navigate_to", "target": destination_text, "object": destination},
        {"action": "place", "target": target_text, "object": target,
         "destination": destination_text, "destination_object": destination},
    ]


def build_plan_steps(
    record: SceneRecord, plan_type: str, target: int, target_text: str,
    destination: int | None = None, destination_text: str | None = None,
    config: AnnotationConfig = AnnotationConfig(),
) -> list[dict[str, Any]]:
    """The reference steps of an instruction type, with navigation poses from ``navigation_goal``."""
    if plan_type in ("put", "bring", "throw_away") and destination is None:
        raise ConfigError("destination", f"plan type {plan_type!r} needs a destination", "give the destination object")
    steps = plan_steps(plan_type, target_text, target, destination_text, destination)
    for step in steps:
        index = step["object"]
        if step["action"] == "navigate_to":
            step["pose"] = navigation_goal(record, index, config)
        if step["action"] in ("navigate_to", "look_at"):
            step["target_position"] = _round(record.objects[index].box.center)
    return steps


def _plan_destinations(facts: SceneFacts, plan_type: str, target: int) -> list[int]:
    reliable = [int(i) for i in np.flatnonzero(facts.reliable)]
    current = int(facts.support[target])
    if plan_type == "put":
        return [i for i in reliable if i not in (target, current) and facts.categories[i] in _PUT_DESTINATIONS]
    if plan_type == "bring":
        return [i for i in reliable if i not in (target, current) and facts.categories[i] in _BRING_DESTINATIONS]
    if plan_type == "throw_away":
        return [i for i in reliable if facts.categories[i] == "trash can" and i != target]
    return []


def plan_annotations(facts: SceneFacts, rng: np.random.Generator) -> list[Annotation]:
    """Instruction → plan pairs (navigation and manipulation) over uniquely describable objects."""
    reliable = [int(i) for i in np.flatnonzero(facts.reliable)]
    targets: dict[str, list[int]] = {
        "go_to": [i for i in reliable if facts.support[i] < 0],
        "look_at": reliable,
        "pick": [i for i in reliable if _portable(facts, i)],
        "put": [i for i in reliable if _portable(facts, i)],
        "bring": [i for i in reliable if _portable(facts, i)],
        "throw_away": [i for i in reliable if facts.categories[i] in _DISPOSABLE],
    }
    annotations: list[Annotation] = []
    instructions: set[str] = set()
    for _ in range(facts.config.plans_per_scene * 3):
        if len(annotations) >= facts.config.plans_per_scene:
            break
        available = [plan_type for plan_type in PLAN_TYPES if targets[plan_type]]
        if not available:
            break
        plan_type = available[int(rng.integers(len(available)))]
        target = targets[plan_type][int(rng.integers(len(targets[plan_type])))]
        expression = _pick_expression(facts.unique_expressions(target), rng, _PLAN_TARGET_WEIGHTS)
        if expression is None:
            continue
        destination, destination_expression = None, None
        if plan_type in ("put", "bring", "throw_away"):
            options = [i for i in _plan_destinations(facts, plan_type, target) if facts.simple_expression(i) is not None]
            if not options:
                continue
            destination = options[int(rng.integers(len(options)))]
            destination_expression = facts.simple_expression(destination)
        words = _choose(_PLAN_FORMS[plan_type], rng).format(
            t=describe(expression, rng), d="" if destination_expression is None else describe(destination_expression, rng))
        if words in instructions:
            continue
        instructions.add(words)
        steps = build_plan_steps(
            facts.record, plan_type, target, describe(expression), destination,
            None if destination_expression is None else describe(destination_expression), facts.config,
        )
        category, color = str(facts.categories[target]), str(facts.colors[target])
        combos = _combo(category, color, expression["relation"])
        if plan_type == "put":
            combos += _combo(category, color, "on")
        annotations.append(Annotation(
            "plan", words, plan_text(steps), target, facts.record.objects[target].box,
            plan={"instruction": words, "steps": steps},
            attributes={"plan_type": plan_type, "expression": expression, "destination": destination,
                        "destination_expression": destination_expression, "category": category, "color": color,
                        "relation": expression["relation"], "combos": combos},
        ))
    return annotations


def plan_combos(category: str, color: str | None, relation: str | None, plan_type: str) -> list[list[str]]:
    """The (category, colour, relation) combinations a plan's words use (``plan_annotations``' rule)."""
    combos = _combo(category, color or "", relation)
    if plan_type == "put":
        combos += _combo(category, color or "", "on")
    return combos


def synthetic_instruction(
    rng: np.random.Generator, heldout: set[tuple[str, str, str]] | frozenset = frozenset(),
) -> tuple[str, str, dict[str, Any] | None, dict[str, Any]]:
    """An instruction made from words alone, for teaching a parser to copy what the words say:
    ``(words, plan type, destination expression or None, target expression)``.

    Any category, colour and relation the generator's forms allow, in any combination except
    ``heldout`` (the compositional split's, so that they still never reach training), so no
    co-occurrence of the scenes ("lamps stand on night stands") can stand in for the words.
    There is no scene: nothing says the objects exist or where.
    """
    targets = {
        "go_to": tuple(name for name in CATEGORY_NAMES if CATEGORIES[name].placement == "floor"),
        "look_at": CATEGORY_NAMES,
        "pick": TOP_CATEGORIES, "put": TOP_CATEGORIES, "bring": TOP_CATEGORIES, "throw_away": _DISPOSABLE,
    }
    destinations = {"put": sorted(_PUT_DESTINATIONS), "bring": sorted(_BRING_DESTINATIONS), "throw_away": ["trash can"]}

    def pick_from(options: Sequence[str]) -> str:
        return str(options[int(rng.integers(len(options)))])

    def simple(options: Sequence[str], exclude: str | None = None) -> dict[str, Any]:
        category = pick_from([name for name in options if name != exclude] or options)
        return make_expression(category, pick_from(COLOR_NAMES) if rng.random() < 0.5 else None)

    while True:
        plan_type = pick_from(PLAN_TYPES)
        target = simple(targets[plan_type])
        roll = rng.random()
        if roll < 0.15:
            target = make_expression(target["category"], target["color"], pick_from(SUPERLATIVES))
        elif roll < 0.4:
            relation = pick_from(PAIR_RELATIONS)
            anchors = SUPPORT_CATEGORIES if relation == "on" else CATEGORY_NAMES
            target = make_expression(target["category"], target["color"], relation, simple(anchors, target["category"]))
        combos = plan_combos(target["category"], target["color"], target["relation"], plan_type)
        if any(tuple(combo) in heldout for combo in combos):
            continue
        form = pick_from(_PLAN_FORMS[plan_type])
        destination = simple(destinations[plan_type], target["category"]) if "{d}" in form else None
        words = form.format(t=describe(target, rng), d="" if destination is None else describe(destination, rng))
        return words, plan_type, destination, target


# --------------------------------------------------------------------------- whole scenes and checks


def annotate_scene(
    record: SceneRecord, config: AnnotationConfig = AnnotationConfig(), seed: int | Sequence[int] = 0
) -> list[Annotation]:
    """All annotations of a record (every task), deterministic for ``seed``."""
    facts = SceneFacts(record, config)
    rng = np.random.default_rng(seed)
    return (
        caption_annotations(facts, rng)
        + dense_caption_annotations(facts, rng)
        + qa_annotations(facts, rng)
        + grounding_annotations(facts, rng)
        + plan_annotations(facts, rng)
    )


def _unique(facts: SceneFacts, expression: dict[str, Any] | None) -> int | None:
    """The single object an expression denotes under both strict and lenient relations, else None."""
    if expression is None:
        return None
    strict = facts.resolve(expression)
    return strict[0] if len(strict) == 1 and facts.resolve(expression, lenient=True) == strict else None


def recompute_answer(record: SceneRecord, annotation: Annotation, facts: SceneFacts | None = None) -> str | None:
    """The annotation's answer recomputed from the record's boxes; None when its premises fail.

    Captions are re-rendered from their stored wording choices with the scene's own
    counts, colours and (re-checked) relations.
    """
    facts = facts or SceneFacts(record)
    attributes = annotation.attributes
    task = annotation.task
    if task == "grounding":
        target = _unique(facts, attributes["expression"])
        return None if target is None or target != annotation.target_object else grounding_answer(attributes["expression"])
    if task == "plan":
        return _recompute_plan(record, annotation, facts)
    if task == "caption":
        return render_caption(facts, attributes["structure"])
    if task == "dense_caption":
        index = annotation.target_object
        relation, anchor = attributes["relation"], attributes["anchor"]
        if index is None or not facts.reliable[index]:
            return None
        if relation is not None and not (facts.reliable[anchor] and facts.strict[relation][index, anchor]):
            return None
        return render_dense_caption(facts, index, relation, anchor, attributes["form"])
    return _recompute_qa(annotation, facts)


def _recompute_qa(annotation: Annotation, facts: SceneFacts) -> str | None:
    attributes = annotation.attributes
    question_type = attributes["question_type"]
    if question_type == "existence":
        mask = facts.matches(attributes["category"], attributes["color"])
        return "yes" if mask.any() else "no"
    if question_type == "count":
        mask = facts.matches(attributes["category"], attributes["color"])
        return None if (mask & ~facts.reliable).any() else str(int(mask.sum()))
    if question_type in ("color", "support", "distance"):
        index = _unique(facts, attributes["referent"])
        if index is None or index != annotation.target_object:
            return None
        if question_type == "color":
            return str(facts.colors[index]) or None
        if question_type == "support":
            return None if facts.support[index] < 0 else str(facts.categories[facts.support[index]])
        return format_distance(float(np.linalg.norm(facts.record.objects[index].box.center)))
    if question_type == "category":
        anchor = _unique(facts, attributes["anchor"])
        subject = None if anchor is None else _sole_related(facts, attributes["relation"], anchor)
        return None if subject is None else str(facts.categories[subject])
    referents = [_unique(facts, expression) for expression in attributes["referents"]]
    if None in referents:
        return None
    a, b = referents
    if question_type == "relation":
        return _relation_answer(facts, attributes["relation"], a, b)
    if question_type in ("bigger", "taller", "choice"):
        winner = _comparison_winner(facts, question_type, attributes["relation"], a, b)
        expression = None if winner is None else facts.simple_expression(winner)
        return None if expression is None else describe(expression)
    return None


def _recompute_plan(record: SceneRecord, annotation: Annotation, facts: SceneFacts) -> str | None:
    attributes = annotation.attributes
    target = _unique(facts, attributes["expression"])
    if target is None or target != annotation.target_object:
        return None
    destination, destination_text = None, None
    if attributes["destination_expression"] is not None:
        destination = _unique(facts, attributes["destination_expression"])
        if destination is None or destination != attributes["destination"]:
            return None
        destination_text = describe(attributes["destination_expression"])
    steps = build_plan_steps(record, attributes["plan_type"], target, describe(attributes["expression"]),
                             destination, destination_text, facts.config)
    if annotation.plan is None or steps != annotation.plan["steps"]:
        return None
    return plan_text(steps)


def check_answer(record: SceneRecord, annotation: Annotation, facts: SceneFacts | None = None) -> bool:
    """Whether the stored answer (and target box, plan) agrees with the record's boxes."""
    facts = facts or SceneFacts(record)
    if annotation.target_object is not None:
        box = annotation.target_box
        if box is None or not np.allclose(box.to_array(), record.objects[annotation.target_object].box.to_array()):
            return False
    expected = recompute_answer(record, annotation, facts)
    return expected is not None and expected == annotation.answer
