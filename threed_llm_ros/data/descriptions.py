"""Annotations that describe: scene captions, dense (per-object) captions and grounding expressions."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from threed_llm_ros.data.annotation_types import BOX_TOKEN, Annotation
from threed_llm_ros.data.relations import SceneFacts, pick_expression
from threed_llm_ros.data.words import (
    RELATION_PHRASES, choose, combos_of, describe, indefinite, join_words, noun, number_word, plural, sentence,
)

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
    room = facts.room_type or "room"
    sentences = [sentence(_CAPTION_INTROS[structure["intro"]].format(room=room, items=join_words(items)))]
    for fact in structure["facts"]:
        subject, anchor = fact["subject"], fact["anchor"]
        if not (facts.reliable[subject] and facts.reliable[anchor] and facts.strict[fact["relation"]][subject, anchor]):
            return None
        subject_text = phrase(subject)
        sentences.append(_FACT_SENTENCES[fact["relation"]][fact["template"]].format(
            s=subject_text, a=phrase(anchor), s_indef=indefinite(subject_text), S_indef=sentence(indefinite(subject_text)),
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
        combos = [combo for fact in structure["facts"] for combo in combos_of(
            str(facts.categories[fact["subject"]]), str(facts.colors[fact["subject"]]), fact["relation"])]
        annotations.append(Annotation(
            "caption", choose(_CAPTION_PROMPTS, rng), text,
            attributes={"room_type": facts.room_type, "counts": dict(counts), "structure": structure,
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
    return sentence(_DENSE_FORMS[form].format(x=indefinite(facts.object_phrase(index)), rest=rest))


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
            "dense_caption", choose(_DENSE_PROMPTS, rng), render_dense_caption(facts, index, relation, anchor, form),
            index, facts.objects[index].box,
            attributes={"category": category, "color": color, "relation": relation, "anchor": anchor, "form": form,
                        "combos": combos_of(category, color, relation)},
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
            expression = pick_expression(expressions, rng, _GROUNDING_WEIGHTS)
            if expression is None:
                break
            expressions = [other for other in expressions if other is not expression]
            category, color = str(facts.categories[index]), str(facts.colors[index])
            annotations.append(Annotation(
                "grounding", choose(_GROUNDING_PROMPTS, rng).format(r=describe(expression, rng)),
                grounding_answer(expression), index, facts.objects[index].box,
                attributes={"expression": expression, "category": category, "color": color,
                            "relation": expression["relation"], "combos": combos_of(category, color, expression["relation"])},
            ))
    return annotations
