"""``threed-llm eval-objects``: the robot's replies on simulated frames, through the engine's own path.

Every figure comes from :class:`~threed_llm_ros.runtime.engine.InferenceEngine` — the same
``ground`` / ``answer`` / ``describe`` calls the node and ``threed-llm ask`` make — on
simulated frames whose seeds the object classifier never trained on:

* grounding: "Where is the <category>?" for each visible object of a category that occurs
  once in the frame → Acc@0.25 / Acc@0.5 of the box the reply publishes (a "not seen"
  reply counts as a miss, and also as a present object missed);
* absent: "Where is the <category>?" for categories not in the frame → share answered
  "not seen" (no box);
* existence and counts: "Is there a <category>?" (present and absent), "How many <category>s
  are there?" (objects with at least ``MIN_VISIBLE_PIXELS`` pixels) → accuracy;
* captions: share of frames whose caption names a category that is not in the frame;
* score reliability: every object the layer finds (confident or not), binned by its score, and
  the share of each bin that is right (a true object of its category overlaps its box at IoU ≥
  0.25), with the expected calibration error: whether a score of 0.7 means right 7 times in 10.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from threed_llm_ros.data.catalog import CATEGORY_NAMES
from threed_llm_ros.data.programs import CATEGORY_WORDS
from threed_llm_ros.objects.describe import named_categories
from threed_llm_ros.data.sim.frames import simulate
from threed_llm_ros.geometry.iou import rotated_box_iou
from threed_llm_ros.eval.robot_input import frame_cloud
from threed_llm_ros.runtime.engine import InferenceEngine
from threed_llm_ros.runtime.engine_settings import EngineSettings

MIN_VISIBLE_PIXELS = 800
FIRST_SEED = 90_000  # far from the classifier's training seeds (scene_seed hashes) and the tests' small seeds


def _plural(category: str) -> str:
    return next((word for word, name in CATEGORY_WORDS.items() if name == category and word.endswith("s")), category + "s")


def evaluate_objects(engine: InferenceEngine, scenes: int, first_seed: int = FIRST_SEED, progress: bool = True,
                     with_image: bool = True) -> dict:
    """The figures of the module docstring over ``scenes`` simulated frames; ``with_image``: each
    frame's cloud comes with its RGB image and intrinsics, as an RGB-D camera gives the node."""
    rng = np.random.default_rng(first_seed)
    ious, absent_not_seen, present_missed = [], [], []
    existence, counts, caption_invents = [], [], []
    scored: list[tuple[float, bool]] = []
    for seed in tqdm(range(first_seed, first_seed + scenes), desc="frames", disable=not progress):
        frame = simulate(seed)
        cloud = frame_cloud(frame, with_image)
        visible = [obj for obj in frame.objects if obj.visible_pixels >= MIN_VISIBLE_PIXELS]
        present = {obj.category for obj in frame.objects if obj.visible_pixels > 0}
        per_category = Counter(obj.category for obj in visible)
        for obj in visible:
            if per_category[obj.category] != 1 or sum(o.category == obj.category for o in frame.objects) != 1:
                continue
            reply = engine.ground(cloud, f"Where is the {obj.category}?")
            iou = rotated_box_iou(reply.target.box, obj.box) if reply.target is not None else 0.0
            ious.append(iou)
            present_missed.append(reply.target is None)
        absent = [name for name in CATEGORY_NAMES if name not in present]
        for name in rng.choice(absent, size=min(2, len(absent)), replace=False):
            reply = engine.ground(cloud, f"Where is the {name}?")
            absent_not_seen.append(reply.target is None)
            answer = engine.answer(cloud, f"Is there a {name} in the room?").text.strip().lower()
            existence.append(answer == "no")
        for name in list(per_category)[:2]:
            answer = engine.answer(cloud, f"Is there a {name} in the room?").text.strip().lower()
            existence.append(answer == "yes")
            answer = engine.answer(cloud, f"How many {_plural(name)} are there?").text.strip().lower()
            counts.append(answer == str(per_category[name]))
        caption_invents.append(bool(named_categories(engine.describe(cloud).text) - present))
        scored.extend((found.score, _is_right(found, frame.objects)) for found in engine.scene_objects(cloud).objects)

    def share(values: list) -> float | None:
        return round(float(np.mean(values)), 4) if values else None

    return {
        "frames": scenes,
        "grounding_queries": len(ious),
        "grounding_acc_at_0.25": share([iou >= 0.25 for iou in ious]),
        "grounding_acc_at_0.5": share([iou >= 0.5 for iou in ious]),
        "present_missed": share(present_missed),
        "absent_queries": len(absent_not_seen),
        "absent_not_seen": share(absent_not_seen),
        "existence_accuracy": share(existence),
        "count_accuracy": share(counts),
        "captions_naming_absent": share(caption_invents),
        **score_reliability(scored),
    }


def _is_right(found, truth) -> bool:
    """A found object is right when a true object of its category overlaps its box at IoU ≥ 0.25."""
    return any(obj.category == found.category and rotated_box_iou(found.box, obj.box) >= 0.25 for obj in truth)


def score_reliability(scored: list[tuple[float, bool]], bins: int = 10) -> dict:
    """(score, right) pairs → the share right per score bin of width 1/``bins`` (bins holding
    objects only) and the expected calibration error (the objects' mean gap between score and
    share right, bin by bin)."""
    scores = np.array([score for score, _ in scored], dtype=float)
    right = np.array([is_right for _, is_right in scored], dtype=bool)
    index = np.minimum((scores * bins).astype(int), bins - 1)
    rows, gap = [], 0.0
    for b in range(bins):
        members = index == b
        if not members.any():
            continue
        share_right = float(right[members].mean())
        rows.append({"score": f"{b / bins:.1f}-{(b + 1) / bins:.1f}", "objects": int(members.sum()),
                     "right": round(share_right, 4), "mean_score": round(float(scores[members].mean()), 4)})
        gap += members.sum() * abs(float(scores[members].mean()) - share_right)
    return {"score_reliability": rows,
            "expected_calibration_error": round(gap / len(scored), 4) if scored else None}


def main(argv: list[str] | None = None) -> int:
    """``threed-llm eval-objects --scenes 20 [--checkpoint DIR] [--output report.json]``."""
    parser = argparse.ArgumentParser(prog="threed-llm eval-objects", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="models/threed-llm-mini")
    parser.add_argument("--object-classifier", default="", help="'' = the shipped models/object-classifier")
    parser.add_argument("--scenes", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=FIRST_SEED,
                        help=f"the first simulated frame's seed (default {FIRST_SEED}; keep clear of the training seeds)")
    parser.add_argument("--sensor-height", type=float, default=0.0,
                        help="the simulated camera's height above the floor, as a robot knows it (1.2); 0 = unknown")
    parser.add_argument("--no-image", action="store_true",
                        help="the depth cloud alone (default: with the RGB image and intrinsics, as from an RGB-D camera)")
    parser.add_argument("--output", type=Path, default=None, help="write the figures as JSON here")
    arguments = parser.parse_args(argv)
    engine = InferenceEngine(EngineSettings(checkpoint=arguments.checkpoint, object_classifier=arguments.object_classifier,
                                            sensor_height=arguments.sensor_height))
    print("loading the checkpoint and the language model ...", file=sys.stderr)
    engine.load()
    report = evaluate_objects(engine, arguments.scenes, arguments.first_seed, with_image=not arguments.no_image)
    text = json.dumps(report, indent=2)
    print(text)
    if arguments.output is not None:
        arguments.output.parent.mkdir(parents=True, exist_ok=True)
        arguments.output.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
