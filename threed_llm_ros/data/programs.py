"""Question programs: a question rewritten as a small query that runs over the scene's objects.

Neuro-symbolic answering (NS-VQA style; LLMI3D's point that geometry should be computed,
not guessed): the language model rewrites a question into a program, learned from the
question annotations' attributes; the program then runs over the objects the scene
encoder detects (category, colour, box), with the same relation definitions the
annotations use (``SceneFacts``). The language model reads the question, the encoder
reads the scene, and neither has to do the other's job.

Program text, one line::

    <question type>: <field> ; <field> ...

with the fields of each type (``PROGRAM_FIELDS``): an expression is
``category, colour, relation, anchor category, anchor colour`` with ``-`` for an empty
slot and trailing empty slots dropped ("chair, red", "cup, -, on, table"); a relation is
one of ``RELATIONS``. Examples::

    count: chair, red
    color: cup, -, on, desk, white
    choice: leftmost ; lamp ; sofa, blue
    locate: chair, -, next to, table        (a grounding query: which object)

An instruction's program names its plan type (``PLAN_PROGRAM_FIELDS``), what to act on and,
where the words name one, the destination::

    bring: cup, red ; sofa
    throw_away: bottle, blue                 (the scene supplies the trash can)
    go_to: sofa, -, rightmost

and ``plan_from_program`` turns it into the plan's steps with the canonical object words
(``describe``) and, over detected objects, the object each step acts on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from threed_llm_ros.data.annotation_types import QUESTION_TYPES, Annotation, AnnotationConfig
from threed_llm_ros.data.catalog import CATEGORIES, CATEGORY_NAMES, COLOR_NAMES
from threed_llm_ros.data.dataset import ObjectRecord
from threed_llm_ros.data.plan_annotations import PLAN_TYPES, plan_steps
from threed_llm_ros.data.relations import PAIR_RELATIONS, RELATIONS, SUPERLATIVES, SceneFacts, make_expression
from threed_llm_ros.data.words import SYNONYMS, describe, format_distance, plural
from threed_llm_ros.geometry.boxes import OrientedBox

#: Asked in place of the question itself when the model should write the question's program.
PROGRAM_REQUEST = "Rewrite the question as a scene query."
EMPTY_SLOT = "-"

#: The fields of each question type's program, in order.
PROGRAM_FIELDS: dict[str, tuple[str, ...]] = {
    "existence": ("subject",),
    "count": ("subject",),
    "color": ("referent",),
    "support": ("referent",),
    "distance": ("referent",),
    "category": ("relation", "anchor"),
    "bigger": ("first", "second"),
    "taller": ("first", "second"),
    "choice": ("relation", "first", "second"),
    "relation": ("relation", "first", "second"),
    "locate": ("referent",),  # a referring expression (grounding): which object, not an answer
}
assert set(PROGRAM_FIELDS) == set(QUESTION_TYPES) | {"locate"}

#: The fields of each instruction type's program; a destination in brackets is optional
#: (throw_away: "Throw away the cup" leaves the trash can to the scene, "Put the cup in the
#: bin" names it).
PLAN_PROGRAM_FIELDS: dict[str, tuple[str, ...]] = {
    "go_to": ("target",),
    "look_at": ("target",),
    "pick": ("target",),
    "put": ("target", "destination"),
    "bring": ("target", "destination"),
    "throw_away": ("target", "[destination]"),
}
assert set(PLAN_PROGRAM_FIELDS) == set(PLAN_TYPES)
DISPOSAL_CATEGORY = "trash can"  # where throw_away puts things when the words name no destination

#: Relations decided without a margin on detected objects: "next to" halfway between the
#: annotations' strict and lenient gaps, left/right/front/behind by the sign of the offset.
DECISION_CONFIG = AnnotationConfig(side_margin_m=0.0, next_to_m=0.6, not_next_to_m=0.6, min_visible_points=1)
ON_TOLERANCE_M = 0.2  # an object rests on another when its bottom is this close to the other's top
FOOTPRINT_GROWTH_M = 0.15  # ... and its centre lies within the other's footprint grown by this much
ABOVE_FLOOR_M = 0.2  # objects whose bottom is lower than this above the floor stand on the floor


class ProgramError(ValueError):
    """Program text that does not parse."""


def _category_words() -> dict[str, str]:
    words: dict[str, str] = {}
    for category in CATEGORY_NAMES:
        for name in (category, *SYNONYMS.get(category, ())):
            words[name] = words[plural(name)] = category
    return words


#: Every word a program may use for a category -> its canonical name. Programs are trained on
#: canonical names, but a model that copies the question's own word ("nightstand", "books")
#: still means that category, so the parser accepts synonyms and plurals.
CATEGORY_WORDS: dict[str, str] = _category_words()


def program_prompt(question: str) -> str:
    """The prompt that asks the model for a question's program (not its answer)."""
    return f"{PROGRAM_REQUEST}\n{question.strip()}"


# --------------------------------------------------------------------------- text form


def _expression_text(expression: dict[str, Any]) -> str:
    anchor = expression.get("anchor") or {}
    slots = [expression["category"], expression.get("color") or "", expression.get("relation") or "",
             anchor.get("category") or "", anchor.get("color") or ""]
    while slots and not slots[-1]:
        slots.pop()
    return ", ".join(slot or EMPTY_SLOT for slot in slots)


def annotation_program(annotation: Annotation) -> str:
    """The program of a QA, grounding or plan annotation, as the model should write it."""
    if annotation.task == "qa":
        return program_text(annotation.attributes)
    if annotation.task == "grounding":
        return program_text({"question_type": "locate", "referent": annotation.attributes["expression"]})
    if annotation.task == "plan":
        attributes = annotation.attributes
        plan_type = attributes["plan_type"]
        destination = attributes.get("destination_expression")
        if plan_type == "throw_away" and not _names_destination(annotation.prompt):
            destination = None
        return plan_program_text(plan_type, attributes["expression"], destination)
    raise ProgramError(f"{annotation.task} annotations have no program (only qa, grounding and plan)")


def _names_destination(instruction: str) -> bool:
    """Whether a throw_away instruction names its trash can: of the generator's forms only
    "Put the {t} in the {d}." does (``plan_annotations._PLAN_FORMS``)."""
    return instruction.strip().lower().startswith("put the ")


def plan_program_text(plan_type: str, target: dict[str, Any], destination: dict[str, Any] | None = None) -> str:
    """An instruction's program: ``<plan type>: <target> [; <destination>]``."""
    if plan_type not in PLAN_PROGRAM_FIELDS:
        raise ProgramError(f"unknown plan type {plan_type!r}")
    fields = [_expression_text(target)]
    if destination is not None:
        fields.append(_expression_text(destination))
    return f"{plan_type}: " + " ; ".join(fields)


def program_text(attributes: dict[str, Any]) -> str:
    """The program of parsed or QA-annotation ``attributes`` (``question_type`` and its fields)."""
    question_type = attributes.get("question_type")
    if question_type not in PROGRAM_FIELDS:
        raise ProgramError(f"no program for question type {question_type!r}")
    fields: list[str] = []
    for name in PROGRAM_FIELDS[question_type]:
        if name == "relation":
            fields.append(str(attributes["relation"]))
        elif name == "subject":
            fields.append(_expression_text(make_expression(attributes["category"], attributes.get("color"))))
        elif name in ("referent", "anchor"):
            fields.append(_expression_text(attributes[name]))
        else:
            fields.append(_expression_text(attributes["referents"][0 if name == "first" else 1]))
    return f"{question_type}: " + " ; ".join(fields)


def _parse_expression(text: str) -> dict[str, Any]:
    slots = [slot.strip() for slot in text.split(",")]
    slots = [("" if slot == EMPTY_SLOT else slot) for slot in slots] + [""] * (5 - len(slots))
    if len(slots) > 5:
        raise ProgramError(f"an expression has at most 5 slots: {text!r}")
    category_word, color, relation, anchor_word, anchor_color = slots
    category = CATEGORY_WORDS.get(category_word)
    anchor_category = CATEGORY_WORDS.get(anchor_word, anchor_word)
    if category is None:
        raise ProgramError(f"unknown category {category_word!r}")
    for name in (color, anchor_color):
        if name and name not in COLOR_NAMES:
            raise ProgramError(f"unknown colour {name!r}")
    if relation and relation not in RELATIONS:
        raise ProgramError(f"unknown relation {relation!r}")
    anchor = None
    if relation in PAIR_RELATIONS:
        if anchor_category not in CATEGORY_NAMES:
            raise ProgramError(f"relation {relation!r} needs a known anchor category, got {anchor_category!r}")
        anchor = make_expression(anchor_category, anchor_color or None)
    elif anchor_category or anchor_color:
        raise ProgramError(f"an anchor without a pair relation: {text!r}")
    return make_expression(category, color or None, relation or None, anchor)


def parse_program(text: str) -> dict[str, Any]:
    """Program text -> attributes in the annotations' form (``question_type``, ``category``/``referent``/...).

    An instruction's program gives ``question_type`` "plan", ``plan_type``, ``target`` and
    ``destination`` (an expression or None).
    """
    head, separator, rest = text.strip().partition(":")
    question_type = head.strip()
    if separator and question_type in PLAN_PROGRAM_FIELDS:
        return _parse_plan_program(question_type, rest)
    if not separator or question_type not in PROGRAM_FIELDS:
        raise ProgramError(f"not a program (unknown or missing question type): {text.strip()[:80]!r}")
    fields = [field.strip() for field in rest.split(";")]
    names = PROGRAM_FIELDS[question_type]
    if len(fields) != len(names):
        raise ProgramError(f"{question_type} takes {len(names)} fields ({', '.join(names)}), got {len(fields)}")
    attributes: dict[str, Any] = {"question_type": question_type}
    referents = []
    for name, field_text in zip(names, fields):
        if name == "relation":
            allowed = SUPERLATIVES if question_type == "choice" else PAIR_RELATIONS
            if field_text not in allowed:
                raise ProgramError(f"{question_type} needs a relation from {allowed}, got {field_text!r}")
            attributes["relation"] = field_text
            continue
        expression = _parse_expression(field_text)
        if name == "subject":
            if expression["relation"] is not None:
                raise ProgramError(f"{question_type} takes a category and colour only, got {field_text!r}")
            attributes["category"], attributes["color"] = expression["category"], expression["color"]
        elif name in ("referent", "anchor"):
            attributes[name] = expression
        else:
            referents.append(expression)
    if referents:
        attributes["referents"] = referents
    return attributes


def _parse_plan_program(plan_type: str, rest: str) -> dict[str, Any]:
    fields = [field.strip() for field in rest.split(";")]
    names = PLAN_PROGRAM_FIELDS[plan_type]
    required = [name for name in names if not name.startswith("[")]
    if not len(required) <= len(fields) <= len(names):
        raise ProgramError(f"{plan_type} takes {', '.join(names)}, got {len(fields)} fields")
    return {
        "question_type": "plan",
        "plan_type": plan_type,
        "target": _parse_expression(fields[0]),
        "destination": _parse_expression(fields[1]) if len(fields) > 1 else None,
    }


# --------------------------------------------------------------------------- detected scenes


@dataclass(frozen=True)
class DetectedObject:
    """An object the scene encoder found: category and colour names, a gravity-frame box in metres, a score."""

    category: str
    color: str
    box: OrientedBox
    score: float = 1.0


def raised(boxes: Sequence[OrientedBox], by_centre: bool = True) -> list[bool]:
    """Per box, whether it may stand on something: its bottom ``ABOVE_FLOOR_M`` clear of the floor
    (the lowest bottom), or, ``by_centre``, its centre twice that high (detected bottoms are rough)."""
    if not boxes:
        return []
    bottoms = [box.center[2] - box.size[2] / 2 for box in boxes]
    floor = min(bottoms)
    return [bottom - floor >= ABOVE_FLOOR_M or (by_centre and box.center[2] - floor >= 2 * ABOVE_FLOOR_M)
            for bottom, box in zip(bottoms, boxes)]


def supports(boxes: Sequence[OrientedBox]) -> list[int | None]:
    """Per box, the index of the box it rests on, or None (on the floor, or nothing under it).

    A rests on B when A's centre lies over B's footprint (grown by ``FOOTPRINT_GROWTH_M``),
    above B's centre and at most ``ON_TOLERANCE_M`` below B's top, A's footprint is the
    smaller, and A's bottom is clear of the floor (the lowest bottom); of several such B, the
    largest (the table, not the book beside the cup). Centres rather than bottoms, because detected heights are rough.
    """
    if not boxes:
        return []
    centres = np.array([box.center for box in boxes], dtype=np.float64)
    sizes = np.array([box.size for box in boxes], dtype=np.float64)
    tops = centres[:, 2] + sizes[:, 2] / 2
    areas = sizes[:, 0] * sizes[:, 1]
    result: list[int | None] = []
    for index, clear in enumerate(raised(boxes)):
        best: int | None = None
        if clear:
            for other, base in enumerate(boxes):
                if other == index or areas[other] <= areas[index] or centres[other, 2] >= centres[index, 2]:
                    continue
                if tops[other] - ON_TOLERANCE_M > centres[index, 2]:
                    continue
                local = _to_box_frame(centres[index, :2] - centres[other, :2], base.yaw)
                if np.all(np.abs(local) <= sizes[other, :2] / 2 + FOOTPRINT_GROWTH_M):
                    if best is None or areas[other] > areas[best]:
                        best = other
        result.append(best)
    return result


def _to_box_frame(offset: np.ndarray, yaw: float) -> np.ndarray:
    cos, sin = np.cos(yaw), np.sin(yaw)
    return np.array([offset[0] * cos + offset[1] * sin, -offset[0] * sin + offset[1] * cos])


def detected_facts(objects: Sequence[DetectedObject], config: AnnotationConfig = DECISION_CONFIG) -> SceneFacts:
    """``SceneFacts`` of detected objects (support inferred from the boxes), for running programs.
    A raised object whose support was not found (a lamp on a table too unsure to be named) stands
    at no known level: it is next to nothing, where the floor's level would make it "next to"
    every floor-standing thing near it."""
    boxes = [obj.box for obj in objects]
    rests_on = supports(boxes)
    records = [
        ObjectRecord(index, obj.category, obj.color, obj.box, on=support, visible_points=max(config.min_visible_points, 1))
        for index, (obj, support) in enumerate(zip(objects, rests_on))
    ]
    unknown_level = [support is None and clear for support, clear in zip(rests_on, raised(boxes, by_centre=False))]
    return SceneFacts(records, config, unknown_level=unknown_level)


# --------------------------------------------------------------------------- execution


def _pick(facts: SceneFacts, expression: dict[str, Any]) -> int | None:
    """The detected object an expression most likely means, or None: its strict match, else looser
    readings of its relation and of its colour's lighting neighbours (``catalog.NEAR_COLORS``).

    A named colour is never dropped: asked for the grey table where only a red one is seen, the
    answer is that no grey table is seen, not the red table's pose (a robot would drive to it)."""
    found: list[int] = []
    for near_color in (False, True):
        found = facts.resolve(expression, near_color=near_color) or facts.resolve(
            expression, lenient=True, near_color=near_color)
        if found:
            break
    if not found:  # the relation does not hold as detected: any object of the category (and colour)
        mask = facts.matches(expression["category"], expression.get("color"), near=True)
        found = [int(i) for i in np.flatnonzero(mask)]
    if not found:
        return None
    anchor = expression.get("anchor")
    if len(found) > 1 and anchor is not None:
        anchors = np.flatnonzero(facts.matches(anchor["category"], anchor.get("color"), near=True))
        if len(anchors):
            return min(found, key=lambda index: float(facts.gaps[index, anchors].min()))
    return found[0]


def missing_referent(program: dict[str, Any], facts: SceneFacts) -> str | None:
    """The words of the first object ``program`` names that is not among ``facts`` (the reply's
    "I don't see the black book"), or None when every one is found."""
    expressions = [program[key] for key in ("referent", "anchor") if isinstance(program.get(key), dict)]
    expressions += list(program.get("referents") or [])
    missing = next((describe(_without_superlative(expression)) for expression in expressions
                    if _pick(facts, expression) is None), None)
    if missing is None and program["question_type"] == "category":  # the anchor is seen, nothing in that relation
        return f"anything {program['relation']} the {describe(program['anchor'])}"
    if missing is None and program["question_type"] == "support":  # the thing is seen, nothing under it
        return f"what the {describe(program['referent'])} rests on"
    return missing


def _without_superlative(expression: dict[str, Any]) -> dict[str, Any]:
    """``expression`` without a superlative: where no book is seen, "I don't see a book", not
    "a nearest book" (a superlative always picks one when any is there)."""
    if expression.get("relation") in SUPERLATIVES:
        return {key: value for key, value in expression.items() if key != "relation"}
    return expression


def _winner(facts: SceneFacts, question_type: str, relation: str | None, a: int, b: int) -> int:
    if question_type == "bigger":
        values = np.prod(facts.sizes, axis=1)
    elif question_type == "taller":
        values = facts.sizes[:, 2]
    else:
        values = facts.superlative_values(str(relation))
    return a if values[a] >= values[b] else b


def locate(program: dict[str, Any], facts: SceneFacts) -> int | None:
    """The index of the object a ``locate`` program (or any program's referent) means, None when absent."""
    return _pick(facts, program["referent"])


def plan_from_program(program: dict[str, Any], facts: SceneFacts | None = None) -> list[dict[str, Any]]:
    """The steps of a parsed instruction program, in the plan annotations' form (``action``,
    ``target``, ``destination``; ``plan_annotations.plan_steps``) without poses.

    Over ``facts`` (detected objects) each step also names the object it acts on (``object``,
    ``destination_object``: an index into the facts, None when not found), and a throw_away
    whose words name no destination goes to the trash can nearest the target, described as
    the scene requires ("pink trash can" where there are two). Without facts the steps hold
    only what the words say.
    """
    if program.get("question_type") != "plan":
        raise ProgramError("not an instruction's program")
    plan_type = program["plan_type"]
    found = facts is not None and facts.count > 0
    target_expression = program["target"]
    target = _pick(facts, target_expression) if found else None
    destination_expression = program.get("destination")
    destination = None
    if destination_expression is not None:
        destination = _pick(facts, destination_expression) if found else None
    elif plan_type == "throw_away":
        destination_expression = make_expression(DISPOSAL_CATEGORY)
        if found:
            destination = _nearest_disposal(facts, target)
            if destination is not None:
                destination_expression = facts.simple_expression(destination) or make_expression(
                    DISPOSAL_CATEGORY, str(facts.colors[destination]) or None)
    if destination_expression is None and plan_type in ("put", "bring"):
        raise ProgramError(f"{plan_type} needs a destination")
    destination_text = None if destination_expression is None else describe(destination_expression)
    return plan_steps(plan_type, describe(target_expression), target, destination_text, destination)


def _nearest_disposal(facts: SceneFacts, target: int | None) -> int | None:
    """The detected trash can nearest the target (nearest the camera when the target is missing)."""
    cans = [int(index) for index in np.flatnonzero(facts.matches(DISPOSAL_CATEGORY)) if index != target]
    if not cans:
        return None
    origin = facts.centers[target, :2] if target is not None else np.zeros(2)
    return min(cans, key=lambda index: float(np.linalg.norm(facts.centers[index, :2] - origin)))


def execute_program(program: dict[str, Any], facts: SceneFacts) -> str | None:
    """The answer of a parsed program over a scene, in the annotations' answer format, or None
    when an object the program asks about is not in the scene (then nothing here can answer).
    Two exceptions, because a detector misses small things first: an object that is missing
    is in no relation ("no"), and of a compared pair where a small (top-placed) thing is missing,
    the one that was found is bigger/taller (a missing piece of furniture gives None).

    A referent found only under a looser reading (its relation loosened or dropped, its colour read
    as a lighting neighbour; never without its colour) still counts, and a near-tie is decided
    without the annotations' margins.
    """
    question_type = program["question_type"]
    if question_type == "locate":
        raise ProgramError("a locate program names an object, it has no answer: use locate()")
    if question_type == "plan":
        raise ProgramError("an instruction's program has steps, not an answer: use plan_from_program()")
    if question_type == "existence":
        return "yes" if facts.matches(program["category"], program.get("color")).any() else "no"
    if question_type == "count":
        return str(int(facts.matches(program["category"], program.get("color")).sum()))
    if question_type in ("color", "support", "distance"):
        index = _pick(facts, program["referent"])
        if index is None:
            return None
        if question_type == "color":
            return str(facts.colors[index]) or None
        if question_type == "support":
            support = int(facts.support[index])
            return None if support < 0 else str(facts.categories[support])
        return format_distance(float(facts.distance[index]))
    if question_type == "category":
        anchor = _pick(facts, program["anchor"])
        if anchor is None:
            return None
        related = np.flatnonzero(facts.strict[program["relation"]][:, anchor])
        if len(related) == 0:
            related = np.flatnonzero(facts.lenient[program["relation"]][:, anchor])
        if len(related) == 0:
            return None
        return str(facts.categories[min(related, key=lambda index: float(facts.gaps[index, anchor]))])
    first, second = program["referents"]
    a, b = _pick(facts, first), _pick(facts, second)
    if question_type == "relation":
        # An undetected object is taken as not in that relation.
        return "no" if a is None or b is None else ("yes" if facts.strict[program["relation"]][a, b] else "no")
    if question_type in ("bigger", "taller") and (a is None) != (b is None):
        # the detector misses small things, not big ones: a missing small thing loses the comparison,
        # a missing piece of furniture is not seen (the found book is not "taller than the bookshelf")
        missing = second if b is None else first
        if CATEGORIES[missing["category"]].placement == "top":
            return describe(first if b is None else second)
        return None
    if a is None or b is None:
        return None
    return describe(first if _winner(facts, question_type, program.get("relation"), a, b) == a else second)
