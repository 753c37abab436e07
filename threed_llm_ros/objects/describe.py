"""Text from the object list alone: captions and the category a phrase names.

A caption names only objects the layer found with confidence, so it can never describe
a chair that is not there: "I see a bed, two night stands and a brown dresser." Colours
are said where the object's own points gave one.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Sequence

from threed_llm_ros.data.catalog import COLOR_NAMES, NEAR_COLORS
from threed_llm_ros.data.programs import CATEGORY_WORDS, DetectedObject

NOTHING_SEEN = "I see no object I know in this frame."
_NUMBERS = ("no", "a", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _plural(word: str) -> str:
    if word.endswith(("s", "sh", "ch", "x")):
        return word + "es"
    return word + "s"


def _phrase(category: str, colors: list[str]) -> str:
    count = len(colors)
    named = Counter(color for color in colors if color)
    if count == 1:
        color = colors[0]
        words = f"{color} {category}" if color else category
        return f"{'an' if words[0] in 'aeiou' else 'a'} {words}"
    number = _NUMBERS[count] if count < len(_NUMBERS) else str(count)
    if len(named) == 1 and sum(named.values()) == count:
        return f"{number} {next(iter(named))} {_plural(category)}"
    return f"{number} {_plural(category)}"


def caption(objects: Sequence[DetectedObject]) -> str:
    """One sentence naming every object of ``objects`` (the confident ones), largest first."""
    if not objects:
        return NOTHING_SEEN
    by_category: dict[str, list[str]] = {}
    for obj in sorted(objects, key=lambda item: -item.box.size[0] * item.box.size[1] * item.box.size[2]):
        by_category.setdefault(obj.category, []).append(obj.color)
    parts = [_phrase(category, colors) for category, colors in by_category.items()]
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"I see {listed}."


def named_categories(text: str) -> set[str]:
    """Every category ``text`` names, as whole words, by name, synonym or plural ("bookshelf" is
    not "book"; "bedside tables" are night stands, not tables: longer names are read first and taken out)."""
    words = f" {re.sub(r'[^a-z ]+', ' ', text.lower())} "
    found = set()
    for word in sorted(CATEGORY_WORDS, key=len, reverse=True):
        if f" {word} " in words:
            found.add(CATEGORY_WORDS[word])
            words = words.replace(f" {word} ", "  ")
    return found


def category_in_phrase(phrase: str) -> str | None:
    """The category a phrase is about: the first it names ("the brown nightstand" → "night stand",
    "the chair next to the green nightstand" → "chair"), the longest word where several start there."""
    text = f" {re.sub(r'[^a-z ]+', ' ', phrase.lower())} "
    found = [(text.find(f" {word} "), -len(word), CATEGORY_WORDS[word]) for word in CATEGORY_WORDS if f" {word} " in text]
    return min(found)[2] if found else None


def color_in_phrase(phrase: str) -> str | None:
    """The catalogue colour a phrase names ("the grey table" → "grey"), or None."""
    return next((word for word in re.sub(r"[^a-z ]+", " ", phrase.lower()).split() if word in COLOR_NAMES), None)


def color_fits(named: str | None, seen: str) -> bool:
    """Whether an object seen as ``seen`` may be the one a phrase calls ``named``: no colour named,
    the same colour, a lighting neighbour (``catalog.NEAR_COLORS``), or a colour unknown."""
    return not named or not seen or seen == named or seen in NEAR_COLORS.get(named, ())
