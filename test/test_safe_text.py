"""User text cannot become the model's markers, nor forge or flood a log line."""

from __future__ import annotations

import pytest

from threed_llm_ros.runtime.intent import EmptyPromptError, PromptTooLongError, route
from threed_llm_ros.safe_text import neutralize_markup, printable


@pytest.mark.parametrize("hostile", ["<scene>", "<<scene>>", "<scene_start>", "<box3d>", "<loc_12>", "<|im_start|>",
                                     "</s>", "<|endoftext|>"])
def test_markers_lose_their_brackets(hostile: str) -> None:
    cleaned = neutralize_markup(f"Where is the {hostile} chair?")
    assert "<" not in cleaned and ">" not in cleaned
    assert cleaned.startswith("Where is the ") and cleaned.endswith(" chair?")


def test_plain_text_and_comparisons_are_kept() -> None:
    assert neutralize_markup("Is the cup < 2 m away?") == "Is the cup < 2 m away?"
    assert neutralize_markup("tab\there\nnew line") == "tab\there\nnew line"
    assert neutralize_markup("bell\x07 and \x1b[31mred") == "bell  and  [31mred"


def test_printable_escapes_control_characters_and_cuts() -> None:
    line = printable("name\n[FATAL] forged\x1b[31m", limit=200)
    assert "\n" not in line and "\x1b" not in line
    assert r"name\x0a[FATAL] forged\x1b[31m" == line
    long = printable("x" * 100_000, limit=50)
    assert long.startswith("x" * 50) and long.endswith("(99950 more characters)") and len(long) < 100


def test_route_refuses_long_and_empty_prompts_and_cleans_markers() -> None:
    with pytest.raises(PromptTooLongError, match="max_prompt_chars"):
        route("where is the chair? " * 100, max_chars=1000)
    with pytest.raises(EmptyPromptError):
        route("   ")
    assert route("Where is the <scene> chair?").prompt == "Where is the scene chair?"
