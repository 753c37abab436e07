"""English for the annotations and programs: synonyms, plurals, articles and referring expressions in words."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from threed_llm_ros.data.relations import SUPERLATIVES

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


def choose(options: Sequence[str], rng: np.random.Generator | None) -> str:
    """The first option (canonical) without an rng, else a random one."""
    return options[0] if rng is None else options[int(rng.integers(len(options)))]


def noun(category: str, rng: np.random.Generator | None = None) -> str:
    """The category's name, or (with an rng) one of its synonyms."""
    return choose(SYNONYMS.get(category, (category,)), rng)


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


def sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def join_words(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]



def describe(expression: dict[str, Any], rng: np.random.Generator | None = None) -> str:
    """Words for an expression, without article ("red cup on the desk"); canonical without an rng."""
    base = noun(expression["category"], rng)
    if expression.get("color"):
        base = f"{expression['color']} {base}"
    relation = expression.get("relation")
    if relation is None:
        return base
    if relation in SUPERLATIVES:
        return choose(SUPERLATIVE_PHRASES[relation], rng).format(b=base)
    anchor_text = describe(expression["anchor"], rng)
    return f"{base} {choose(RELATION_PHRASES[relation], rng).format(a=anchor_text)}"


def combos_of(category: str, color: str, relation: str | None) -> list[list[str]]:
    """The (category, colour, relation) combination an annotation uses, for the compositional split."""
    return [[category, color, relation]] if relation and color else []


def format_distance(metres: float) -> str:
    """The fixed distance answer format: one decimal and " m" ("2.3 m")."""
    return f"{metres:.1f} m"
