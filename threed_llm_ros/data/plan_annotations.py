"""Plan annotations: instruction forms, reference steps with navigation goal poses, and
word-only instructions for teaching a parser. The plan's text form lives in ``plans``."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from threed_llm_ros.data.annotation_types import Annotation, AnnotationConfig
from threed_llm_ros.data.catalog import CATEGORY_NAMES, COLOR_NAMES, FLOOR_CATEGORIES, SUPPORT_CATEGORIES, TOP_CATEGORIES
from threed_llm_ros.data.relations import (
    PAIR_RELATIONS, SUPERLATIVES, SceneFacts, distance_to_footprint, make_expression, pick_expression, portable, ray_exit,
)
from threed_llm_ros.data.words import choose, combos_of, describe
from threed_llm_ros.errors import ConfigError
from threed_llm_ros.geometry.boxes import OrientedBox
from threed_llm_ros.geometry.frames import yaw_rotation
from threed_llm_ros.plans import plan_text

if TYPE_CHECKING:  # type hints only: dataset imports this module
    from threed_llm_ros.data.dataset import ObjectRecord

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


# --------------------------------------------------------------------------- goal poses


def _root_support(objects: Sequence[ObjectRecord], index: int) -> int:
    """The floor-standing object at the bottom of the stack holding ``index``."""
    seen = {index}
    while objects[index].on is not None and objects[index].on not in seen:
        index = objects[index].on
        seen.add(index)
    return index


def _round(values: Sequence[float]) -> list[float]:
    """Plain floats rounded to the micrometre, for compact JSON."""
    return [round(float(value), 6) for value in values]


def navigation_goal(
    objects: Sequence[ObjectRecord], index: int, config: AnnotationConfig = AnnotationConfig(),
) -> dict[str, list[float]]:
    """A base goal pose to reach an object (:func:`goal_near_box` over the scene's objects).

    Position z is the floor under the object (the bottom of its root support); the
    orientation (x, y, z, w) is a yaw facing the object's centre. Gravity frame.
    """
    root_index = _root_support(objects, index)
    root = objects[root_index].box
    obstacles = [obj.box for obj in objects if obj.on is None and obj.index != root_index]
    chosen, yaw = goal_near_box(objects[index].box, root, obstacles, config.standoff_m, config.robot_radius_m)
    floor = root.center[2] - root.size[2] / 2.0
    return {
        "position": _round([chosen[0], chosen[1], floor]),
        "orientation": _round([0.0, 0.0, math.sin(yaw / 2.0), math.cos(yaw / 2.0)]),
    }


def goal_near_box(target: OrientedBox, root: OrientedBox, obstacles: Sequence[OrientedBox], standoff_m: float,
                  robot_radius_m: float) -> tuple[np.ndarray, float]:
    """The one rule for where a robot goes to reach a box: (x, y) on the floor and the yaw facing it.

    The goal lies on the ray from the target's centre toward the camera, ``standoff_m`` past the
    footprint of the target and of ``root``, the floor-standing thing it rests on (itself when it
    stands on the floor); if a robot disc of ``robot_radius_m`` there would touch one of the
    ``obstacles`` (other floor-standing furniture), the ray turns by ±30°, ±60°. The plan
    annotations use it over the true objects, the robot over its confident objects.
    """
    center = np.asarray(target.center[:2], dtype=np.float64)
    toward_camera = -center / max(float(np.linalg.norm(center)), 1e-9)
    chosen: np.ndarray | None = None
    for degrees in (0.0, 30.0, -30.0, 60.0, -60.0):
        direction = yaw_rotation(math.radians(degrees))[:2, :2] @ toward_camera
        reach = max(ray_exit(center, direction, target), ray_exit(center, direction, root))
        position = center + direction * (reach + standoff_m)
        if chosen is None:
            chosen = position
        if all(distance_to_footprint(position, box) > robot_radius_m for box in obstacles):
            chosen = position
            break
    assert chosen is not None
    return chosen, math.atan2(center[1] - chosen[1], center[0] - chosen[0])


# --------------------------------------------------------------------------- steps and annotations


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
    objects: Sequence[ObjectRecord], plan_type: str, target: int, target_text: str,
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
            step["pose"] = navigation_goal(objects, index, config)
        if step["action"] in ("navigate_to", "look_at"):
            step["target_position"] = _round(objects[index].box.center)
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
        "pick": [i for i in reliable if portable(facts, i)],
        "put": [i for i in reliable if portable(facts, i)],
        "bring": [i for i in reliable if portable(facts, i)],
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
        expression = pick_expression(facts.unique_expressions(target), rng, _PLAN_TARGET_WEIGHTS)
        if expression is None:
            continue
        destination, destination_expression = None, None
        if plan_type in ("put", "bring", "throw_away"):
            options = [i for i in _plan_destinations(facts, plan_type, target) if facts.simple_expression(i) is not None]
            if not options:
                continue
            destination = options[int(rng.integers(len(options)))]
            destination_expression = facts.simple_expression(destination)
        words = choose(_PLAN_FORMS[plan_type], rng).format(
            t=describe(expression, rng), d="" if destination_expression is None else describe(destination_expression, rng))
        if words in instructions:
            continue
        instructions.add(words)
        steps = build_plan_steps(
            facts.objects, plan_type, target, describe(expression), destination,
            None if destination_expression is None else describe(destination_expression), facts.config,
        )
        category, color = str(facts.categories[target]), str(facts.colors[target])
        combos = combos_of(category, color, expression["relation"])
        if plan_type == "put":
            combos += combos_of(category, color, "on")
        annotations.append(Annotation(
            "plan", words, plan_text(steps), target, facts.objects[target].box,
            plan={"instruction": words, "steps": steps},
            attributes={"plan_type": plan_type, "expression": expression, "destination": destination,
                        "destination_expression": destination_expression, "category": category, "color": color,
                        "relation": expression["relation"], "combos": combos},
        ))
    return annotations


def plan_combos(category: str, color: str | None, relation: str | None, plan_type: str) -> list[list[str]]:
    """The (category, colour, relation) combinations a plan's words use (``plan_annotations``' rule)."""
    combos = combos_of(category, color or "", relation)
    if plan_type == "put":
        combos += combos_of(category, color or "", "on")
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
        "go_to": FLOOR_CATEGORIES,
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
