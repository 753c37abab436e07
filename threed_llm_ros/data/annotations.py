"""All annotations of a scene (``annotate_scene``) and the re-check of a stored answer against its scene.

The tasks and the ``Annotation`` record are in ``annotation_types``; the generators in
``descriptions`` (captions, dense captions, grounding), ``questions`` (qa) and
``plan_annotations`` (plans); the spatial vocabulary in ``relations``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from threed_llm_ros.data.annotation_types import Annotation, AnnotationConfig
from threed_llm_ros.data.descriptions import (
    caption_annotations, dense_caption_annotations, grounding_annotations, grounding_answer, render_caption,
    render_dense_caption,
)
from threed_llm_ros.data.plan_annotations import build_plan_steps, plan_annotations
from threed_llm_ros.data.questions import comparison_winner, qa_annotations, relation_answer, sole_related
from threed_llm_ros.data.relations import SceneFacts, scene_facts
from threed_llm_ros.data.words import describe, format_distance
from threed_llm_ros.plans import plan_text

if TYPE_CHECKING:  # type hints only: dataset imports this module
    from threed_llm_ros.data.dataset import SceneRecord

def annotate_scene(
    record: SceneRecord, config: AnnotationConfig = AnnotationConfig(), seed: int | Sequence[int] = 0
) -> list[Annotation]:
    """All annotations of a record (every task), deterministic for ``seed``."""
    facts = scene_facts(record, config)
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
    facts = facts or scene_facts(record)
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
        return format_distance(float(np.linalg.norm(facts.objects[index].box.center)))
    if question_type == "category":
        anchor = _unique(facts, attributes["anchor"])
        subject = None if anchor is None else sole_related(facts, attributes["relation"], anchor)
        return None if subject is None else str(facts.categories[subject])
    referents = [_unique(facts, expression) for expression in attributes["referents"]]
    if None in referents:
        return None
    a, b = referents
    if question_type == "relation":
        return relation_answer(facts, attributes["relation"], a, b)
    if question_type in ("bigger", "taller", "choice"):
        winner = comparison_winner(facts, question_type, attributes["relation"], a, b)
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
    steps = build_plan_steps(record.objects, attributes["plan_type"], target, describe(attributes["expression"]),
                             destination, destination_text, facts.config)
    if annotation.plan is None or steps != annotation.plan["steps"]:
        return None
    return plan_text(steps)


def check_answer(record: SceneRecord, annotation: Annotation, facts: SceneFacts | None = None) -> bool:
    """Whether the stored answer (and target box, plan) agrees with the record's boxes."""
    facts = facts or scene_facts(record)
    if annotation.target_object is not None:
        box = annotation.target_box
        if box is None or not np.allclose(box.to_array(), record.objects[annotation.target_object].box.to_array()):
            return False
    expected = recompute_answer(record, annotation, facts)
    return expected is not None and expected == annotation.answer
