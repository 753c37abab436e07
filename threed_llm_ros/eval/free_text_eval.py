"""``threed-llm eval-free-text``: what the language model's free text names, by what it reads.

The engine's free-text path (:meth:`InferenceEngine.free_text`, what ``answer`` falls back to
where no program parses) is asked the caption prompt on each frame three ways: reading the
object list's tokens (``objects``), the scene encoder's tokens (``scene``) and nothing
(``blind``). Per way, over simulated frames through the real object layer (seeds far from any
training seed):

* ``names_absent``: share of captions naming a category that is not in the frame;
* ``truth_named``: mean share of the frame's categories (objects of at least
  ``MIN_VISIBLE_PIXELS`` pixels) that the caption names;
* ``names_any_present``: share of captions naming at least one category that is there.

And on SUN RGB-D 000001 (a bedroom; ``--real``): each way's caption, the categories it names,
whether it names the bed, and which named categories are not among the labelled ones.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from threed_llm_ros.data.sim.frames import simulate
from threed_llm_ros.errors import ThreeDLLMError
from threed_llm_ros.eval.objects_eval import FIRST_SEED, MIN_VISIBLE_PIXELS
from threed_llm_ros.eval.robot_input import frame_cloud
from threed_llm_ros.objects.describe import named_categories
from threed_llm_ros.runtime.engine import CAPTION_PROMPT, InferenceEngine
from threed_llm_ros.runtime.engine_settings import EngineSettings
from threed_llm_ros.runtime.replies import SceneCloud

WAYS = ("objects", "scene", "blind")


def evaluate_free_text(engine: InferenceEngine, scenes: int, first_seed: int = FIRST_SEED, ways: tuple = WAYS,
                       prompt: str = CAPTION_PROMPT, progress: bool = True) -> dict:
    """The simulated-frame figures of the module docstring, per way, with a few example captions."""
    rows: dict[str, list[tuple[bool, float, bool]]] = {way: [] for way in ways}
    examples: list[dict] = []
    absent_named: list[dict] = []  # per frame and way: the absent categories its caption names
    for seed in tqdm(range(first_seed, first_seed + scenes), desc="frames", disable=not progress):
        frame = simulate(seed)
        cloud = frame_cloud(frame)
        present = {obj.category for obj in frame.objects if obj.visible_pixels > 0}
        truth = {obj.category for obj in frame.objects if obj.visible_pixels >= MIN_VISIBLE_PIXELS}
        example = {"seed": seed, "truth": sorted(truth)}
        absent_named.append({"seed": seed})
        for way in ways:
            text = engine.free_text(cloud, prompt, tokens=way).text
            named = named_categories(text)
            recall = len(named & truth) / len(truth) if truth else 1.0
            rows[way].append((bool(named - present), recall, bool(named & present)))
            example[way] = text
            absent_named[-1][way] = sorted(named - present)
        if len(examples) < 5:
            examples.append(example)
    summary = {}
    for way, values in rows.items():
        array = np.array(values, dtype=np.float64).reshape(-1, 3)
        summary[way] = {"names_absent": round(float(array[:, 0].mean()), 4),
                        "truth_named": round(float(array[:, 1].mean()), 4),
                        "names_any_present": round(float(array[:, 2].mean()), 4)}
    return {"frames": scenes, "first_seed": first_seed, "prompt": prompt, "language_backend": engine.language_backend,
            "ways": summary, "examples": examples, "absent_named": absent_named}


def evaluate_sun(engine: InferenceEngine, root: Path, ways: tuple = WAYS, prompt: str = CAPTION_PROMPT) -> dict:
    """Each way's caption of SUN RGB-D 000001 (the optical-frame cloud with its image, as a robot gets it)."""
    from threed_llm_ros.eval.realdata import sun_frame

    frame, record, _ = sun_frame(root)
    cloud = SceneCloud(frame.points, frame.colors, "camera_color_optical_frame", image=frame.image,
                       intrinsics=frame.intrinsics)
    labelled = sorted({obj.category for obj in record.objects})
    found = engine.scene_objects(cloud)
    result = {"labelled": labelled,
              "confident_objects": [f"{obj.color} {obj.category} {obj.score:.2f}" for obj in found.confident]}
    for way in ways:
        text = engine.free_text(cloud, prompt, tokens=way).text
        named = named_categories(text)
        result[way] = {"caption": text, "names": sorted(named), "names_bed": "bed" in named,
                       "names_labelled": sorted(named & set(labelled)), "names_unlabelled": sorted(named - set(labelled))}
    return result


def main(argv: list[str] | None = None) -> int:
    """``threed-llm eval-free-text --scenes 30 [--real ../shared/realdata] [--output report.json]``."""
    parser = argparse.ArgumentParser(prog="threed-llm eval-free-text", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="models/threed-llm-mini")
    parser.add_argument("--scenes", type=int, default=30)
    parser.add_argument("--first-seed", type=int, default=FIRST_SEED)
    parser.add_argument("--real", type=Path, default=None, help="../shared/realdata: also caption SUN RGB-D 000001")
    parser.add_argument("--lm-backend", default="auto", help="auto (what the node runs), torch or onnxruntime")
    parser.add_argument("--output", type=Path, default=None, help="write the figures as JSON here")
    arguments = parser.parse_args(argv)
    try:
        engine = InferenceEngine(EngineSettings(checkpoint=arguments.checkpoint, free_text_tokens="objects",
                                                lm_backend=arguments.lm_backend))
        print("loading the checkpoint and the language model ...", file=sys.stderr)
        engine.load()
    except ThreeDLLMError as error:
        print(f"threed-llm eval-free-text: {error}", file=sys.stderr)
        return 2
    if engine.object_tokens is None:
        print(f"{arguments.checkpoint} has no object-token projector (object_tokens/): train one with "
              "`threed-llm train-object-tokens`", file=sys.stderr)
        return 2
    report = {"simulated": evaluate_free_text(engine, arguments.scenes, arguments.first_seed)}
    if arguments.real is not None:
        report["sunrgbd_000001"] = evaluate_sun(engine, arguments.real)
    text = json.dumps(report, indent=2)
    print(text)
    if arguments.output is not None:
        arguments.output.parent.mkdir(parents=True, exist_ok=True)
        arguments.output.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
