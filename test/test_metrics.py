"""Metrics against values computed by hand on tiny inputs."""

from __future__ import annotations

import math

import pytest

from threed_llm_ros.eval.metrics import (
    exact_match,
    format_report,
    grounding_metrics,
    normalize_answer,
    plan_metrics,
    qa_metrics,
    text_metrics,
    tokenize,
)
from threed_llm_ros.geometry.boxes import OrientedBox


def test_tokenize_and_normalize() -> None:
    assert tokenize("The red cup, 2.3 m away!") == ["the", "red", "cup", "2.3", "m", "away"]
    assert normalize_answer("  The TWO red cups. ") == "2 red cups"
    assert normalize_answer("An orange lamp") == "orange lamp"
    assert normalize_answer("2.3 m") == "2.3 m" != normalize_answer("23 m")
    assert exact_match("Yes.", "yes") and exact_match("three", ["2", "3"]) and not exact_match("no", "yes")
    assert exact_match("the night stand", "night stand") and not exact_match("night stand", "stand")


def test_bleu_on_known_pairs() -> None:
    # 5/6 unigrams, 4/5 bigrams, 3/4 trigrams, 2/3 four-grams match; same length, so no brevity penalty.
    scores = text_metrics({"a": "a b c d e f"}, {"a": ["a b c d e g"]})
    assert scores["BLEU-1"] == pytest.approx(5 / 6, abs=1e-6)
    assert scores["BLEU-4"] == pytest.approx((5 / 6 * 4 / 5 * 3 / 4 * 2 / 3) ** 0.25, abs=1e-6)
    # All n-grams match but the hypothesis is 4 tokens against 6: brevity penalty exp(1 - 6/4).
    short = text_metrics({"a": "a b c d"}, {"a": ["a b c d e f"]})
    assert short["BLEU-1"] == pytest.approx(math.exp(-0.5), abs=1e-6)
    assert short["BLEU-4"] == pytest.approx(math.exp(-0.5), abs=1e-6)


def test_rouge_l_on_a_known_lcs() -> None:
    # LCS("a b c d", "a x c d y") = 3: precision 3/4, recall 3/5, beta 1.2.
    precision, recall, beta = 3 / 4, 3 / 5, 1.2
    expected = (1 + beta**2) * precision * recall / (recall + beta**2 * precision)
    assert text_metrics({"a": "A b, c d."}, {"a": ["a x c d y"]})["ROUGE-L"] == pytest.approx(expected, abs=1e-9)


def test_cider_prefers_the_right_captions() -> None:
    references = {
        1: ["the red cup is on the table", "a red cup sits on the table"],
        2: ["a bedroom with a bed and two night stands"],
        3: ["two chairs stand next to the desk"],
    }
    exact = {1: "the red cup is on the table", 2: "a bedroom with a bed and two night stands", 3: "two chairs stand next to the desk"}
    close = {1: "a red cup on the table", 2: "a bedroom with a bed", 3: "two chairs next to a desk"}
    swapped = {1: exact[3], 2: exact[1], 3: exact[2]}
    scores = [text_metrics(predictions, references)["CIDEr"] for predictions in (exact, close, swapped)]
    assert scores[0] > scores[1] > scores[2] >= 0.0
    assert text_metrics({1: ""}, {1: ["a bed"]})["BLEU-1"] == 0.0  # an empty prediction scores 0, no crash


def test_qa_exact_match() -> None:
    scores = qa_metrics({1: "Two", 2: "the red chair", 3: "2.4 m", 4: "no"}, {1: "2", 2: "red chair", 3: "2.3 m", 4: "yes"})
    assert scores["exact_match"] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        qa_metrics({1: "yes"}, {2: "yes"})


def test_grounding_accuracy_with_known_boxes() -> None:
    target = OrientedBox((2.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    targets = {"same": target, "half": target, "rotated": target, "far": target, "missing": target}
    predictions = {
        "same": target,  # IoU 1
        "half": OrientedBox((2.5, 0.0, 0.0), (1.0, 1.0, 1.0)),  # overlap 0.5, union 1.5: IoU 1/3
        "rotated": OrientedBox((2.0, 0.0, 0.0), (1.0, 1.0, 1.0), math.pi / 4),  # octagon overlap
        "far": OrientedBox((5.0, 0.0, 0.0), (1.0, 1.0, 1.0)),  # IoU 0
    }
    overlap = 2 * math.sqrt(2) - 2  # area of the square ∩ its 45° rotation (unit squares)
    rotated_iou = overlap / (2 - overlap)
    assert rotated_iou > 0.5
    scores = grounding_metrics(predictions, targets)
    assert scores["acc@0.25"] == pytest.approx(3 / 5)
    assert scores["acc@0.5"] == pytest.approx(2 / 5)
    assert scores["mean_iou"] == pytest.approx((1 + 1 / 3 + rotated_iou + 0 + 0) / 5)
    assert scores["missing"] == 1 and scores["count"] == 5
    assert scores["center_error_mean_m"] == pytest.approx((0 + 0.5 + 0 + 3.0) / 4)
    assert scores["center_error_median_m"] == pytest.approx(0.25)


def _navigate(target: str, x: float) -> dict:
    return {"action": "navigate_to", "target": target, "pose": {"position": [x, 0.0, -1.2], "orientation": [0, 0, 0, 1]}}


def test_step_accuracy_and_success_on_small_plans() -> None:
    reference = {
        "bring": [_navigate("red cup", 2.0), {"action": "pick", "target": "red cup"}, _navigate("sofa", 4.0),
                  {"action": "place", "target": "red cup", "destination": "sofa"}],
        "go": [_navigate("bed", 3.0)],
        "look": [{"action": "look_at", "target": "monitor"}],
    }
    perfect = {
        "bring": [_navigate("the red cup", 2.1), {"action": "pick", "target": "Red cup"}, _navigate("sofa", 3.9),
                  {"action": "place", "target": "red cup", "destination": "the sofa"}],
        "go": [_navigate("bed", 3.0)],
        "look": [{"action": "look_at", "target": "monitor"}],
    }
    scores = plan_metrics(perfect, reference)
    assert scores == {"step_accuracy": 1.0, "plan_success": 1.0, "count": 3}
    flawed = {
        # Third step wrong target; plan fails, 3 of 4 steps right.
        "bring": [_navigate("red cup", 2.0), {"action": "pick", "target": "red cup"}, _navigate("bed", 4.0),
                  {"action": "place", "target": "red cup", "destination": "sofa"}],
        # Right step, pose 1 m off: step counts, plan fails on the pose.
        "go": [_navigate("bed", 4.0)],
        # Missing prediction.
    }
    scores = plan_metrics(flawed, reference)
    assert scores["step_accuracy"] == pytest.approx((3 / 4 + 1 + 0) / 3)
    assert scores["plan_success"] == pytest.approx(0.0)
    assert plan_metrics(flawed, reference, check_poses=False)["plan_success"] == pytest.approx(1 / 3)
    # An extra step does not lower step accuracy but fails the plan.
    longer = {"go": [_navigate("bed", 3.0), {"action": "pick", "target": "bed"}]}
    assert plan_metrics(longer, {"go": reference["go"]}) == {"step_accuracy": 1.0, "plan_success": 0.0, "count": 1}


def test_format_report_table() -> None:
    report = format_report({
        "model (location tokens)": {"grounding": {"acc@0.25": 0.41234, "missing": 3}, "qa": {"exact_match": 0.5}},
        "model (3D query head)": {"grounding": {"acc@0.25": 0.5}},
        "blind baseline": {"grounding": {"acc@0.25": float("nan")}, "trainable parameters": 1234567},
    }, title="Results")
    lines = report.strip().splitlines()
    assert lines[0] == "### Results"
    assert lines[2] == "| task | metric | model (location tokens) | model (3D query head) | blind baseline |"
    assert "| grounding | acc@0.25 | 0.412 | 0.500 | n/a |" in lines
    assert "| grounding | missing | 3 | — | — |" in lines
    assert "| qa | exact_match | 0.500 | — | — |" in lines
    assert "|  | trainable parameters | — | — | 1,234,567 |" in lines
