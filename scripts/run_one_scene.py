#!/usr/bin/env python3
"""Run the whole 3D-LLM on one scene on the CPU: print the answer as it streams, and a box.

The scene comes from the project's RGB-D simulator (``threed_llm_ros.data.sim``);
``--synthetic`` uses a few coloured boxes of points instead. Without ``--checkpoint`` the
model is untrained (the scene encoder, LoRA and new tokens are at their initial values),
so the text is SmolLM2 talking and the box is a guess: this shows the plumbing and the
timings, not quality.

    python scripts/run_one_scene.py --seed 3 --prompt "Describe the room."
    python scripts/run_one_scene.py --checkpoint models/threed-llm-mini --ground "red chair"
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a source checkout

from threed_llm_ros.geometry.boxes import OrientedBox  # noqa: E402
from threed_llm_ros.model.preprocessing import prepare_scenes  # noqa: E402


def synthetic_cloud(seed: int) -> tuple[np.ndarray, np.ndarray, list[tuple[str, OrientedBox]]]:
    """A floor with three coloured boxes of surface points, z up; returns (xyz, rgb, labelled boxes)."""
    rng = np.random.default_rng(seed)
    floor = np.column_stack([rng.uniform(0.5, 4.5, 3000), rng.uniform(-2, 2, 3000), np.zeros(3000)])
    parts, colours, labelled = [floor], [np.full((3000, 3), 150, dtype=np.uint8)], []
    for name, rgb in (("red box", (220, 30, 30)), ("green box", (30, 200, 60)), ("blue box", (40, 60, 220))):
        size = rng.uniform(0.3, 0.9, 3)
        center = np.array([rng.uniform(1.5, 4.0), rng.uniform(-1.5, 1.5), size[2] / 2])
        yaw = float(rng.uniform(-np.pi, np.pi))
        box = OrientedBox(tuple(center), tuple(size), yaw)
        local = rng.uniform(-0.5, 0.5, (1500, 3)) * size
        face = rng.integers(0, 3, 1500)
        local[np.arange(1500), face] = np.sign(local[np.arange(1500), face]) * size[face] / 2
        rotation = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
        parts.append(local @ rotation.T + center)
        colours.append(np.tile(np.array(rgb, dtype=np.uint8), (1500, 1)))
        labelled.append((name, box))
    return np.concatenate(parts).astype(np.float32), np.concatenate(colours), labelled


def describe(box: OrientedBox) -> str:
    """One line: centre, size (metres) and yaw (degrees)."""
    centre = ", ".join(f"{v:+.2f}" for v in box.center)
    size = " x ".join(f"{v:.2f}" for v in box.size)
    return f"centre ({centre}) m, size {size} m, yaw {np.degrees(box.yaw):+.0f} deg"


def main(argv: list[str] | None = None) -> int:
    """Build (or load) the model, encode one scene, generate, ground one object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="mini", help="preset, config file or checkpoint dir (default: mini)")
    parser.add_argument("--checkpoint", default=None, help="a trained checkpoint directory")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--synthetic", action="store_true", help="use coloured boxes of points, not the simulator")
    parser.add_argument("--prompt", default="Describe the scene in one sentence.")
    parser.add_argument("--ground", default=None, help="object to ground (default: the first one in the scene)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    arguments = parser.parse_args(argv)

    from threed_llm_ros.model.checkpoint import load_checkpoint, parameter_report
    from threed_llm_ros.model.threed_llm import ThreeDLLM, load_model_config

    start = time.perf_counter()
    if arguments.checkpoint:
        model = load_checkpoint(arguments.checkpoint)
    else:
        model = ThreeDLLM(load_model_config(arguments.config))
    print(f"model {model.config.name}: {parameter_report(model)['trainable']:,} trainable parameters, "
          f"built in {time.perf_counter() - start:.1f} s" + ("" if arguments.checkpoint else " (untrained)"))

    preprocess = model.config.scene_encoder.preprocess
    try:
        if arguments.synthetic:
            raise ImportError("synthetic scene requested")
        from threed_llm_ros.data.sim.frames import simulate

        frame = simulate(arguments.seed)
        cloud = (frame.points, frame.colors)  # optical frame: up is -y, the preprocessing default
        labelled = [(obj.label, obj.box) for obj in frame.objects]
        print(f"simulated scene {arguments.seed}: {len(frame.points)} points, objects: "
              + ", ".join(label for label, _ in labelled))
    except ImportError:
        xyz, rgb, labelled = synthetic_cloud(arguments.seed)
        cloud = (xyz, rgb)
        from dataclasses import replace

        preprocess = replace(preprocess, up_axis="z")
        print(f"synthetic scene: {len(xyz)} points, objects: " + ", ".join(label for label, _ in labelled))

    start = time.perf_counter()
    scene = prepare_scenes([cloud], preprocess, seed=arguments.seed)
    print(f"preprocessing: {1000 * (time.perf_counter() - start):.0f} ms")

    print(f"\nQ: {arguments.prompt}\nA: ", end="", flush=True)
    answer = model.generate(
        scene, arguments.prompt, max_new_tokens=arguments.max_new_tokens, on_token=lambda piece: print(piece, end="", flush=True)
    )
    t = answer.timings
    print(f"\n[{answer.token_count} tokens; encoder {1000 * t['scene_encoder_s']:.0f} ms, prefill "
          f"{1000 * t['prefill_s']:.0f} ms for {int(t['prompt_tokens'])} tokens, {t['decode_tokens_per_s']:.1f} tokens/s]")

    target_label, target_box = labelled[0] if labelled else ("object", None)
    if arguments.ground:
        target_label = arguments.ground
        target_box = next((box for label, box in labelled if label == arguments.ground), None)
    question = f"Where is the {target_label}?"
    grounding = model.generate(scene, question, answer_prefix="<box3d>", max_new_tokens=8)
    print(f"\nQ: {question}\nA: <box3d>{grounding.text}")
    if grounding.box_from_head is not None:
        print(f"box head   : {describe(grounding.box_from_head)} (gravity frame of the sensor)")
    for box in grounding.boxes_from_tokens:
        print(f"loc tokens : {describe(box)}")
    if target_box is not None:
        print(f"truth      : {describe(target_box)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
