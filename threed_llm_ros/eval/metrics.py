"""Evaluation metrics of the quality bars: grounding, captions and answers, plans; and the report table.

* Grounding: Acc@0.25 / Acc@0.5 of the rotated 3D IoU, centre error in metres. A
  missing prediction is a miss for the accuracies and is counted in ``missing``; centre
  errors are over the predictions that exist.
* Text: BLEU-1, BLEU-4, ROUGE-L and CIDEr from pycocoevalcap's scorers, fed with our own
  tokeniser (lowercase words and numbers, punctuation dropped) instead of its Java PTB
  tokeniser. CIDEr weighs n-grams by corpus document frequency, so it needs several
  items (one item always scores 0). QA also gets exact match after ``normalize_answer``.
* Plans: steps (``plans.py``: the text form and its parse) match when action, target and
  destination agree; a plan succeeds when every step matches and each navigation pose is
  near the reference's. Navigation poses come from grounding the step targets, not from the text.
"""

from __future__ import annotations

import math
import re
from typing import Any, Hashable, Mapping, Sequence

import numpy as np
from threed_llm_ros.errors import ConfigError
from threed_llm_ros.geometry.boxes import OrientedBox
from threed_llm_ros.geometry.iou import rotated_box_iou

__all__ = [
    "tokenize", "normalize_answer", "exact_match", "text_metrics", "qa_metrics", "grounding_metrics",
    "steps_match", "plan_metrics", "format_report",
]

_TOKEN = re.compile(r"\d+(?:\.\d+)?|[^\W\d_]+")
_ARTICLES = frozenset({"a", "an", "the"})
_NUMBER_WORDS = {
    word: str(value) for value, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen twenty".split()
    )
}


# --------------------------------------------------------------------------- text


def tokenize(text: str) -> list[str]:
    """Lowercase words and numbers (decimals kept: "2.3"), punctuation dropped."""
    return _TOKEN.findall(text.lower())


def normalize_answer(text: str) -> str:
    """Canonical form for exact match: lowercase, no punctuation or articles, number words as digits."""
    return " ".join(_NUMBER_WORDS.get(token, token) for token in tokenize(text) if token not in _ARTICLES)


def exact_match(prediction: str, references: str | Sequence[str]) -> bool:
    """Whether the prediction equals a reference after ``normalize_answer``."""
    options = [references] if isinstance(references, str) else list(references)
    normalized = normalize_answer(prediction)
    return any(normalized == normalize_answer(reference) for reference in options)


def _as_references(value: str | Sequence[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def text_metrics(
    predictions: Mapping[Hashable, str], references: Mapping[Hashable, str | Sequence[str]]
) -> dict[str, float]:
    """Corpus BLEU-1, BLEU-4, ROUGE-L and CIDEr of predictions against one or more references each."""
    if set(predictions) != set(references):
        raise ConfigError("predictions", "keys differ from the references' keys", "predict every reference item once")
    if not references:
        return {"BLEU-1": math.nan, "BLEU-4": math.nan, "ROUGE-L": math.nan, "CIDEr": math.nan, "count": 0}
    keys = list(references)
    # The scorers want string ids and space-joined tokens; empty token lists become "" (score 0).
    gts = {str(position): [" ".join(tokenize(reference)) for reference in _as_references(references[key])]
           for position, key in enumerate(keys)}
    res = {str(position): [" ".join(tokenize(predictions[key]))] for position, key in enumerate(keys)}
    # Imported here so the plan parser and grounding metrics work on a robot without pycocoevalcap.
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    return {"BLEU-1": float(bleu[0]), "BLEU-4": float(bleu[3]), "ROUGE-L": float(rouge), "CIDEr": float(cider),
            "count": len(keys)}


def qa_metrics(
    predictions: Mapping[Hashable, str], references: Mapping[Hashable, str | Sequence[str]]
) -> dict[str, float]:
    """Exact match plus the text metrics, for question answering."""
    scores = text_metrics(predictions, references)
    matches = [exact_match(predictions[key], references[key]) for key in references]
    return {"exact_match": float(np.mean(matches)) if matches else math.nan, **scores}


# --------------------------------------------------------------------------- grounding


def grounding_metrics(
    predictions: Mapping[Hashable, OrientedBox | None],
    targets: Mapping[Hashable, OrientedBox],
    thresholds: Sequence[float] = (0.25, 0.5),
) -> dict[str, float]:
    """Acc@IoU per threshold, mean IoU and centre error (mean, median; metres) of predicted boxes."""
    ious, errors, missing = [], [], 0
    for key, target in targets.items():
        prediction = predictions.get(key)
        if prediction is None:
            missing += 1
            ious.append(0.0)
            continue
        ious.append(rotated_box_iou(prediction, target))
        errors.append(float(np.linalg.norm(np.asarray(prediction.center) - np.asarray(target.center))))
    iou_array = np.asarray(ious)
    results: dict[str, float] = {
        f"acc@{threshold:g}": float(np.mean(iou_array >= threshold)) if len(iou_array) else math.nan
        for threshold in thresholds
    }
    results["mean_iou"] = float(iou_array.mean()) if len(iou_array) else math.nan
    results["center_error_mean_m"] = float(np.mean(errors)) if errors else math.nan
    results["center_error_median_m"] = float(np.median(errors)) if errors else math.nan
    results["missing"] = missing
    results["count"] = len(targets)
    return results


# --------------------------------------------------------------------------- plans

def steps_match(prediction: Mapping[str, Any], reference: Mapping[str, Any]) -> bool:
    """Same action, target and destination (after ``normalize_answer``)."""
    if str(prediction.get("action", "")).lower() != str(reference.get("action", "")).lower():
        return False
    if normalize_answer(str(prediction.get("target", ""))) != normalize_answer(str(reference.get("target", ""))):
        return False
    return normalize_answer(str(prediction.get("destination") or "")) == normalize_answer(str(reference.get("destination") or ""))


def _pose_close(prediction: Mapping[str, Any], reference: Mapping[str, Any], tolerance_m: float) -> bool:
    """A reference navigation pose is matched by a predicted one within ``tolerance_m`` horizontally."""
    if "pose" not in reference:
        return True
    pose = prediction.get("pose")
    if not pose:
        return False
    offset = np.asarray(pose["position"][:2], dtype=np.float64) - np.asarray(reference["pose"]["position"][:2])
    return float(np.linalg.norm(offset)) <= tolerance_m


def plan_metrics(
    predictions: Mapping[Hashable, Sequence[Mapping[str, Any]]],
    references: Mapping[Hashable, Sequence[Mapping[str, Any]]],
    pose_tolerance_m: float = 0.5,
    check_poses: bool = True,
) -> dict[str, float]:
    """Step accuracy (position-wise matches over the reference length) and whole-plan success.

    A plan succeeds when it has the reference's length, every step matches, and (with
    ``check_poses``) each navigation pose lies within ``pose_tolerance_m`` of the reference's.
    """
    accuracies, successes = [], []
    for key, reference in references.items():
        prediction = list(predictions.get(key) or [])
        matches = [index < len(prediction) and steps_match(prediction[index], step) for index, step in enumerate(reference)]
        accuracies.append(sum(matches) / len(reference) if reference else float(not prediction))
        success = len(prediction) == len(reference) and all(matches)
        if success and check_poses:
            success = all(_pose_close(predicted, step, pose_tolerance_m) for predicted, step in zip(prediction, reference))
        successes.append(success)
    return {
        "step_accuracy": float(np.mean(accuracies)) if accuracies else math.nan,
        "plan_success": float(np.mean(successes)) if successes else math.nan,
        "count": len(references),
    }


# --------------------------------------------------------------------------- report


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        return "n/a" if math.isnan(value) else f"{float(value):.3f}"
    return str(value)


def format_report(results: Mapping[str, Mapping[str, Any]], title: str | None = None) -> str:
    """A Markdown table with a column per system and a row per (task, metric).

    ``results`` maps a system name ("model (location tokens)", "blind baseline", ...) to
    either ``{task: {metric: value}}`` or a flat ``{metric: value}``; a system without a
    row's value shows "—".
    """
    systems = list(results)
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for system, sections in results.items():
        for name, value in sections.items():
            items = value.items() if isinstance(value, Mapping) else [(name, value)]
            section = name if isinstance(value, Mapping) else ""
            for metric, metric_value in items:
                rows.setdefault((section, metric), {})[system] = metric_value
    lines = [f"### {title}", ""] if title else []
    lines.append("| task | metric | " + " | ".join(systems) + " |")
    lines.append("| --- | --- | " + " | ".join("---:" for _ in systems) + " |")
    for (section, metric), values in rows.items():
        cells = [_cell(values.get(system)) for system in systems]
        lines.append(f"| {section} | {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
