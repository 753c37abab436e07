"""Question–answer annotations: every question type, with balanced answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from threed_llm_ros.data.annotation_types import Annotation
from threed_llm_ros.data.catalog import CATEGORY_NAMES
from threed_llm_ros.data.relations import SUPERLATIVES, SceneFacts, pick_expression, portable
from threed_llm_ros.data.words import choose, combos_of, describe, format_distance, indefinite, noun, plural, sentence

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
    return pick_expression(expressions, rng, {"plain": 0.4, "relation": 0.4, "superlative": 0.2})


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
        prompt = sentence(choose(forms, rng).format(x=indefinite(words), xs=plural(words)))
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
        questions.append(_Question(sentence(choose(forms, rng).format(xs=plural(words))), str(int(mask.sum())), None,
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
            sentence(choose(forms, rng).format(r=describe(referent, rng))), color, int(index),
            {"question_type": "color", "referent": referent, "category": category, "color": color,
             "relation": referent["relation"], "combos": combos_of(category, color, referent["relation"])},
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


def sole_related(facts: SceneFacts, relation: str, anchor: int) -> int | None:
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
            subject = sole_related(facts, relation, int(anchor))
            if subject is None or not facts.reliable[subject]:
                continue
            category, color = str(facts.categories[subject]), str(facts.colors[subject])
            questions.append(_Question(
                choose(forms, rng).format(a=describe(anchor_expression, rng)), category, subject,
                {"question_type": "category", "relation": relation, "anchor": anchor_expression,
                 "category": category, "color": color, "combos": combos_of(category, color, relation)},
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
            choose(forms, rng).format(r=describe(referent, rng)), str(facts.categories[support]), int(index),
            {"question_type": "support", "referent": referent, "category": category, "color": color,
             "relation": "on", "combos": combos_of(category, color, "on")},
        ))
    return questions


def _named_pairs(facts: SceneFacts) -> list[tuple[int, int]]:
    """Ordered pairs of distinct reliable objects that both have a simple unique description."""
    named = [int(i) for i in np.flatnonzero(facts.reliable) if facts.simple_expression(int(i)) is not None]
    return [(a, b) for a in named for b in named if a != b]


def comparison_winner(facts: SceneFacts, question_type: str, relation: str | None, a: int, b: int) -> int | None:
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
            winner = comparison_winner(facts, question_type, relation, first, second)
            if winner is None:
                continue
            referents = [facts.simple_expression(first), facts.simple_expression(second)]
            forms = _COMPARISON_FORMS[relation or question_type]
            category, color = str(facts.categories[winner]), str(facts.colors[winner])
            questions.append(_Question(
                choose(forms, rng).format(a=describe(referents[0], rng), b=describe(referents[1], rng)),
                describe(facts.simple_expression(winner)), winner,
                {"question_type": question_type, "relation": relation, "referents": referents,
                 "category": category, "color": color, "combos": combos_of(category, color, relation)},
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
            choose(forms, rng).format(r=describe(referent, rng)), format_distance(float(facts.distance[index])),
            int(index), {"question_type": "distance", "referent": referent, "category": category, "color": color,
                         "relation": referent["relation"], "combos": combos_of(category, color, referent["relation"])},
        ))
    return questions



_RELATION_FORMS: dict[str, tuple[str, ...]] = {
    "on": ("Is the {a} on the {b}?", "Is the {a} sitting on the {b}?"),
    "next to": ("Is the {a} next to the {b}?", "Is the {a} beside the {b}?"),
    "left of": ("Is the {a} to the left of the {b}?", "Is the {a} left of the {b}?"),
    "right of": ("Is the {a} to the right of the {b}?", "Is the {a} right of the {b}?"),
    "in front of": ("Is the {a} in front of the {b}?",),
    "behind": ("Is the {a} behind the {b}?",),
}


def relation_answer(facts: SceneFacts, relation: str, a: int, b: int) -> str | None:
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
            if relation == "on" and not (portable(facts, a) and facts.support[b] < 0):
                continue  # only ask whether small things are on furniture
            answer = relation_answer(facts, relation, a, b)
            if answer is None:
                continue
            referents = [facts.simple_expression(a), facts.simple_expression(b)]
            category, color = str(facts.categories[a]), str(facts.colors[a])
            questions.append(_Question(
                choose(forms, rng).format(a=describe(referents[0], rng), b=describe(referents[1], rng)), answer, a,
                {"question_type": "relation", "relation": relation, "referents": referents,
                 "category": category, "color": color, "combos": combos_of(category, color, relation)},
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
            box = None if target is None else facts.objects[target].box
            attributes = {"combos": [], **question.attributes}
            annotations.append(Annotation("qa", question.prompt, question.answer, target, box, attributes=attributes))
    return annotations
