"""Text from outside the robot: what a prompt may hold, and what a log line may show.

A prompt is user text. It must never become one of the model's own markers (``<scene>``,
``<box3d>``, ``<loc_12>``, the chat template's ``<|im_start|>``): those are control, not
words, and a prompt holding ``<scene>`` once broke the scene-token count of a reply.
:func:`neutralize_markup` takes the angle brackets off anything that looks like such a
marker, so the tokenizer sees plain words. Control characters become spaces.

A log line shows a stranger's text escaped and cut: :func:`printable` writes control
characters (a newline, an ANSI escape) as ``\\xNN`` so nobody can forge a second log line, and
keeps at most ``limit`` characters.
"""

from __future__ import annotations

import re

_MARKUP = re.compile(r"<(/?[\w|:.\-]{1,40})>")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
LOG_LIMIT = 200


def neutralize_markup(text: str) -> str:
    """``text`` with marker-like ``<...>`` spans written without their brackets and control
    characters (other than newline and tab) as spaces."""
    previous = None
    while previous != text:  # "<<scene>>" must not leave a "<scene>" behind
        previous, text = text, _MARKUP.sub(r"\1", text)
    return _CONTROL.sub(" ", text)


def printable(text: object, limit: int = LOG_LIMIT) -> str:
    """``str(text)`` for a log line: control characters escaped, at most ``limit`` characters kept."""
    value = str(text)
    shown = value[:limit]
    escaped = "".join(f"\\x{ord(char):02x}" if char in "\n\r\t" or _CONTROL.match(char) else char for char in shown)
    more = len(value) - len(shown)
    return escaped + (f"... ({more} more characters)" if more > 0 else "")
