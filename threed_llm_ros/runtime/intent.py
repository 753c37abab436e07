"""Route a prompt to one of four intents: describe, question, find, plan.

The rules, checked in this order on the lower-cased prompt with a polite opener
("please", "can you", "could you", "robot,", ...) removed:

1. empty (only white space)            → :class:`EmptyPromptError` (bad input, counted);
   longer than ``max_chars``             → :class:`PromptTooLongError` (bad input, counted).
   Marker-like text (``<scene>``, ``<|im_start|>``) loses its brackets (``safe_text.py``).
2. **describe**: asks about the whole scene — "describe the scene/room/what you see",
   "what is in this room", "what do you see", "summarise/summarize the scene",
   "caption", "give a (short) description of the room/scene".
   ("describe the red chair" is about one object: a *question*.)
3. **find**: asks where one object is — starts with "where is/are/'s", "find", "locate",
   "show me", "point out", "point to", "give the 3d box of", "ground". ``target`` is the
   rest without articles and final punctuation ("Where is the red cup?" → "red cup").
4. **plan**: an instruction to act — starts with a verb of :data:`PLAN_VERBS`
   ("bring", "take", "carry", "put", "place", "move", "set", "go", "navigate", "drive",
   "head", "pick up", "grab", "look at", "turn towards", "face", "throw away",
   "dispose of", "fetch"). ``target`` and ``destination`` come from "<verb> the X
   to/on/onto/in/into the Y".
5. **question**: everything else ("is there a red cup?", "how many chairs are there?").

:func:`rule_based_plan` turns a plan intent into the steps of the plan text format
(``navigate_to(x) ; pick(x) ; navigate_to(y) ; place(x, y)``); the engine uses it only
when the model's own text does not parse as a plan, and says so (``"source": "rules"``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from threed_llm_ros.errors import MessageFormatError
from threed_llm_ros.safe_text import neutralize_markup

INTENTS: tuple[str, ...] = ("describe", "question", "find", "plan")

_OPENERS = re.compile(
    r"^(?:(?:hey\s+)?robot\s*[,:]?\s*|please\s+|can you\s+|could you\s+|would you\s+|will you\s+|kindly\s+|now\s+)+"
)
_DESCRIBE = re.compile(
    r"^(?:describe\s+(?:the\s+|this\s+)?(?:scene|room|surroundings|environment|space|everything|what you see)\b"
    r"|describe\s*[.!?]?$"
    r"|what(?:'s| is) (?:in|around) (?:this|the) (?:room|scene|space)"
    r"|what do you see|what can you see"
    r"|summari[sz]e\b|caption\b"
    r"|give (?:me )?an? (?:short |brief )?(?:description|summary|caption) of (?:the |this )?(?:room|scene)"
    r"|tell me about (?:the |this )?(?:room|scene))"
)
_FIND = re.compile(
    r"^(?:where(?:'s| is| are)|find|locate|show me|point out|point to|point at|ground"
    r"|give (?:me )?the 3d box of|what is the (?:3d )?box of)\s+(?P<rest>.+)$"
)
PLAN_VERBS: tuple[str, ...] = (
    "bring", "take", "carry", "fetch", "put", "place", "move", "set", "go", "navigate", "drive", "head",
    "pick up", "pick", "grab", "look at", "turn towards", "turn toward", "turn to", "face", "throw away",
    "dispose of", "get",
)
_PLAN = re.compile(r"^(?P<verb>" + "|".join(re.escape(verb) for verb in PLAN_VERBS) + r")\b\s*(?P<rest>.*)$")
_DESTINATION_SPLIT = re.compile(r"\s+(?:over\s+)?(?:to|on|onto|in|into|next to|towards)\s+")
_ARTICLES = re.compile(r"^(?:the|a|an|my|this|that)\s+")
_DIRECTION_WORDS = re.compile(r"^(?:over\s+)?(?:to|towards|toward)\s+")

GO_VERBS = ("go", "navigate", "drive", "head", "move")
LOOK_VERBS = ("look at", "turn towards", "turn toward", "turn to", "face")
DISPOSE_VERBS = ("throw away", "dispose of")
DEFAULT_DISPOSAL = "trash can"


MAX_PROMPT_CHARS = 1000  # a question to a robot fits; a pasted document does not (it took minutes)


class EmptyPromptError(MessageFormatError):
    """The prompt holds no text."""

    def __init__(self) -> None:
        super().__init__("prompt.data", "is empty; send a question or an instruction")


class PromptTooLongError(MessageFormatError):
    """The prompt is longer than the node takes (``max_prompt_chars``)."""

    def __init__(self, length: int, limit: int) -> None:
        super().__init__("prompt.data", f"has {length} characters, more than max_prompt_chars ({limit}); "
                                        "ask a shorter question, or raise the max_prompt_chars parameter")


@dataclass(frozen=True)
class Intent:
    """What a prompt asks for: ``kind`` in :data:`INTENTS`, and the objects it names."""

    kind: str
    prompt: str
    target: str = ""
    destination: str = ""
    verb: str = ""


def _object_phrase(text: str) -> str:
    """'the red cup?' → 'red cup'."""
    text = text.strip().rstrip(" ?.!,;:")
    text = _DIRECTION_WORDS.sub("", text)
    return _ARTICLES.sub("", text).strip()


def route(prompt: str, max_chars: int = MAX_PROMPT_CHARS) -> Intent:
    """The intent of ``prompt`` by the rules of this module's docstring."""
    if len(prompt) > max_chars:
        raise PromptTooLongError(len(prompt), max_chars)
    original = neutralize_markup(prompt).strip()
    if not original:
        raise EmptyPromptError()
    text = _OPENERS.sub("", re.sub(r"\s+", " ", original.lower())).strip()
    if _DESCRIBE.match(text):
        return Intent("describe", original)
    found = _FIND.match(text)
    if found:
        return Intent("find", original, target=_object_phrase(found.group("rest")))
    planned = _PLAN.match(text)
    if planned:
        verb, rest = planned.group("verb"), planned.group("rest").rstrip(" ?.!")
        if verb == "pick" and rest.startswith("up "):
            verb, rest = "pick up", rest[3:]
        if verb in ("throw away", "dispose of") or rest.endswith(" away"):
            verb = "throw away" if verb not in DISPOSE_VERBS else verb
            rest = rest.removesuffix(" away")
        parts = _DESTINATION_SPLIT.split(" " + rest, maxsplit=1) if verb not in GO_VERBS + LOOK_VERBS else [rest]
        target = _object_phrase(parts[0])
        destination = _object_phrase(parts[1]) if len(parts) > 1 else ""
        if verb in GO_VERBS and not destination:
            target = _object_phrase(rest)
        return Intent("plan", original, target=target, destination=destination, verb=verb)
    return Intent("question", original)


def rule_based_plan(intent: Intent) -> list[dict[str, str]]:
    """Steps {"action", "target", "destination"?} of a plan intent, in the plan text format's actions."""
    if intent.kind != "plan" or not intent.target:
        return []
    target, destination = intent.target, intent.destination
    if intent.verb in LOOK_VERBS:
        return [{"action": "look_at", "target": target}]
    if intent.verb in GO_VERBS and not destination:
        return [{"action": "navigate_to", "target": target}]
    if intent.verb in DISPOSE_VERBS:
        destination = destination or DEFAULT_DISPOSAL
    steps = [{"action": "navigate_to", "target": target}, {"action": "pick", "target": target}]
    if not destination:
        return steps
    return steps + [
        {"action": "navigate_to", "target": destination},
        {"action": "place", "target": target, "destination": destination},
    ]
