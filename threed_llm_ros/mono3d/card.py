"""The shipped single-image grounder's model card and the CI subset its floors hold on.

``threed-llm mono3d-card --model models/mono3d`` reads the training run's ``metrics.json``
(the full simulated test split, the blind baseline, the SUN RGB-D bed), measures the checkpoint
on the fixed CI subset (:func:`ci_subset_metrics`: the first ``CI_FRAMES`` frames of the test
split, rendered afresh, plus the SUN RGB-D bed) and writes ``model_card.json`` (the figures and
the CI floors, a margin under them) and ``README.md``. ``test/test_mono3d_checkpoint.py`` holds
the shipped checkpoint to those floors.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from threed_llm_ros.mono3d.model import Mono3DGrounder

CI_FRAMES = 24  # the first frames of the test split (seeds TEST_SEED_OFFSET…)
FLOOR_MARGIN = 0.05  # floors sit this far under the measured figure (ceilings this far over)


def ci_subset_metrics(model: Mono3DGrounder, realdata: Path | None, frames: int = CI_FRAMES) -> dict[str, Any]:
    """Acc@0.25, mean IoU, absent-query "not seen" rate and present miss rate on the CI subset,
    and the SUN RGB-D 000001 bed IoU (None without the real data)."""
    from threed_llm_ros.mono3d.data import TEST_SEED_OFFSET, simulated_feature_set
    from threed_llm_ros.mono3d.evaluate import (
        predict_boxes,
        presence_probabilities,
        presence_summary,
        real_check_or_reason,
        score,
    )
    from threed_llm_ros.mono3d.image_tokens import FrozenBackbone

    features = simulated_feature_set(range(TEST_SEED_OFFSET, TEST_SEED_OFFSET + frames), FrozenBackbone(),
                                     model.config)
    iou = score(predict_boxes(model, features), features.boxes)["iou"]
    presence = presence_summary(*presence_probabilities(model, features), model.config.presence_threshold)
    sun = real_check_or_reason(model, realdata) if realdata is not None else {"skipped": "no real data"}
    return {"frames": frames, "queries": int(iou.size), "acc_0.25": round(float((iou >= 0.25).mean()), 4),
            "mean_iou": round(float(np.mean(iou)), 4), "absent_not_seen_rate": presence["absent_not_seen_rate"],
            "present_miss_rate": presence["present_miss_rate"], "sun_rgbd_bed_iou": sun.get("iou")}


def floors_from(measured: dict[str, Any]) -> dict[str, float]:
    """CI floors (``min_*``) and ceilings (``max_*``) a margin under / over the measured subset figures."""
    floors = {f"min_{key}": round(max(0.0, measured[key] - FLOOR_MARGIN), 2)
              for key in ("acc_0.25", "mean_iou", "absent_not_seen_rate") if measured.get(key) is not None}
    if measured.get("sun_rgbd_bed_iou") is not None:
        floors["min_sun_rgbd_bed_iou"] = round(max(0.0, measured["sun_rgbd_bed_iou"] - FLOOR_MARGIN), 2)
    floors["max_present_miss_rate"] = round(min(1.0, measured["present_miss_rate"] + FLOOR_MARGIN), 2)
    return floors


def failed_floors(measured: dict[str, Any], floors: dict[str, float]) -> list[str]:
    """The floors (and ceilings) ``measured`` breaks, each as one readable line."""
    failures = []
    for name, bound in floors.items():
        key = name.removeprefix("min_").removeprefix("max_")
        value = measured.get(key)
        if value is None:
            continue
        if (name.startswith("min_") and value < bound) or (name.startswith("max_") and value > bound):
            failures.append(f"{key} = {value} breaks {name} = {bound}")
    return failures


def _sun_text(sun: dict[str, Any]) -> str:
    if "iou" not in sun:
        return sun.get("skipped", "not run")
    seen = "seen" if sun.get("seen") else "under the threshold: the node would answer \"not seen\""
    predicted, labelled = sun["predicted"], sun["labelled"] or {}
    return (f"IoU **{sun['iou']:.3f}**, presence {sun.get('presence', float('nan')):.2f} ({seen}); predicted centre "
            f"{predicted['center']} size {predicted['size']} vs labelled centre {labelled.get('center')} size "
            f"{labelled.get('size')} (m, SUN's upright frame).{_levelled_text(sun)}")


def _levelled_text(sun: dict[str, Any]) -> str:
    levelled = sun.get("levelled")
    if not levelled:
        return ""
    return (f" Levelled first with SUN's known gravity (Rtilt; `projection.level_image`): IoU {levelled['iou']:.3f}, "
            f"presence {levelled['presence']:.2f}, predicted centre {levelled['predicted']['center']} size "
            f"{levelled['predicted']['size']}.")


def render_readme(card: dict[str, Any]) -> str:
    """The card as Markdown (every figure from ``card``)."""
    full, training = card["test_split"], card["training"]
    lines = [f"# {card['name']}: single-image 3D grounding (RGB + intrinsics, no depth)", "",
             card["summary"], "", "## Training", "",
             f"    {training['command']}", "",
             f"{training['frames']} simulated frames ({training['queries']} referrals), {training['steps']} steps of "
             f"{training['frames_per_step']} frames; rendering + features {training['data_seconds']:.0f} s, training "
             f"{training['train_seconds']:.0f} s on {card['hardware']}. Presence threshold "
             f"{training['presence_threshold']:.3f}, calibrated on {training['calibration_frames']} held-out frames.",
             "", "## Simulated test split", "",
             "| model | FOV bucket | queries | Acc@0.25 | Acc@0.5 | mean IoU | depth err (m) | depth err (rel) | "
             "size err (rel) |", "|---|---|---|---|---|---|---|---|---|"]
    for name in ("model", "blind"):
        for split, values in full[name].items():
            if values.get("queries"):
                lines.append(f"| {name} | {split} | {values['queries']} | {values['acc_0.25']:.3f} | "
                             f"{values['acc_0.5']:.3f} | {values['mean_iou']:.3f} | {values['depth_error_m']:.3f} | "
                             f"{values['depth_error_rel']:.3f} | {values['size_error_rel']:.3f} |")
    presence = full["presence"]
    lines += ["", f"Absent queries (labels the frame does not show): **{presence['absent_not_seen_rate']:.3f}** "
              f"answered \"not seen\" ({presence['absent_queries']} queries); present objects missed: "
              f"{presence['present_miss_rate']:.3f} ({presence['present_queries']}); Acc@0.25 counting \"not "
              f"seen\" as a miss: {presence['acc_0.25_not_seen_as_miss']:.3f}.", "",
              f"SUN RGB-D 000001 bed from its image alone: {_sun_text(card['sun_rgbd_000001'])}", "",
              "## Ablation", "", card["ablation"], "",
              "## CI subset and floors", "",
              f"`test/test_mono3d_checkpoint.py` renders the first {card['ci_subset']['frames']} test frames and "
              "holds the checkpoint to these floors:", "",
              "```json", json.dumps({"measured": card["ci_subset"], "floors": card["ci_floors"]}, indent=2), "```",
              "", "## Limits", "", *[f"- {limit}" for limit in card["limits"]]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``threed-llm mono3d-card``: model_card.json + README.md next to the checkpoint."""
    from threed_llm_ros.mono3d.model import load_model

    parser = argparse.ArgumentParser(prog="threed-llm mono3d-card", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/mono3d"))
    parser.add_argument("--realdata", type=Path, default=Path("../shared/realdata"))
    parser.add_argument("--notes", type=Path, required=True,
                        help="JSON with name, summary, hardware, ablation and limits (the words of the card)")
    arguments = parser.parse_args(argv)
    metrics = json.loads((arguments.model / "metrics.json").read_text(encoding="utf-8"))
    measured = ci_subset_metrics(load_model(arguments.model), arguments.realdata)
    card = {**json.loads(arguments.notes.read_text(encoding="utf-8")),
            "training": metrics["training"], "test_split": {k: metrics[k] for k in ("model", "blind", "presence")},
            "sun_rgbd_000001": metrics["sun_rgbd_000001"], "ci_subset": measured, "ci_floors": floors_from(measured)}
    (arguments.model / "model_card.json").write_text(json.dumps(card, indent=1) + "\n", encoding="utf-8")
    (arguments.model / "README.md").write_text(render_readme(card), encoding="utf-8")
    print(json.dumps({"ci_subset": measured, "ci_floors": card["ci_floors"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
