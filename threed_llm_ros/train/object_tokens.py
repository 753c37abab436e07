"""``threed-llm train-object-tokens``: fit the object-token projector to the frozen language model.

MiniGPT-3D's projector-alignment stage, on the object list: the language model and its default
LoRA adapter stay frozen, and only the projector (``model/object_tokens.py``) learns, from the
teacher-forced loss of the simulator's own caption and question-answer targets
(``data/annotations.py``). The object features are built from each scene's ground-truth objects
with the errors the object layer makes, so no frame goes through the object layer and a step is
one language-model pass:

* objects the camera hardly sees are dropped (more often the fewer pixels they have), and the
  targets are re-annotated from the objects that are kept, so the text never names a dropped one;
* box jitter (centre, size, yaw), category distributions softened and now and then confused
  (the top name wrong), colours now and then wrong, confidences from the distribution's top;
* false extras of low confidence (0.5 to 0.7) that no target names.

Scenes are rendered small (160 x 120: every pixel a point, as many as the 320 x 240 data sets keep),
only for the objects' visible-pixel counts. Seeds: scenes from ``scene_seed(seed, i)`` (the train
split only), batch ``k`` from ``(seed, k)``; the run repeats step for step.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from threed_llm_ros.data.annotations import annotate_scene
from threed_llm_ros.data.catalog import CATEGORY_NAMES, COLOR_NAMES
from threed_llm_ros.data.dataset import ObjectRecord, SceneRecord, scene_split
from threed_llm_ros.data.generate import GenerateConfig, generate_scenes
from threed_llm_ros.errors import ThreeDLLMError
from threed_llm_ros.resources import resolve_checkpoint
from threed_llm_ros.model.object_tokens import (
    GEOMETRY_FEATURES, OBJECT_TOKENS_DIRECTORY, ObjectFeatures, ObjectTokenConfig, ObjectTokenProjector, attach_word_embeddings,
    geometry_row, save_object_tokens,
)

TASKS = ("caption", "qa")
MIN_VISIBLE = 10  # the annotations' own threshold: fainter objects are never named by a target


@dataclass(frozen=True)
class ObjectTokenTrainConfig:
    """One run: data, steps, optimiser, noise."""

    checkpoint: str = "models/threed-llm-mini"
    output: str = ""  # '' = <checkpoint>/object_tokens
    scenes: int = 600
    variants: int = 2  # drop patterns (and re-annotations) per scene
    seed: int = 11
    steps: int = 220
    batch: int = 8
    caption_share: float = 0.5  # of each batch; the rest question-answer pairs
    learning_rate: float = 3e-3
    validation_examples: int = 48
    max_objects: int = 12
    tokens_per_object: int = 2
    hidden: int = 256
    drop_faint: float = 0.5  # drop probability of an object with under 100 visible pixels (others a quarter of it)
    confuse: float = 0.1  # probability that an object's top category is wrong
    wrong_color: float = 0.1
    extras: float = 0.5  # expected false extras per scene


@dataclass
class _Example:
    scene: int  # index into the variant list
    prompt: str
    target: str
    task: str


def _kept_record(record: SceneRecord, keep: list[int]) -> SceneRecord:
    """``record`` with only the objects ``keep`` (re-indexed; a support that is dropped becomes none)."""
    new_index = {old: new for new, old in enumerate(keep)}
    objects = [replace(record.objects[old], index=new_index[old], on=new_index.get(record.objects[old].on))
               for old in keep]
    return SceneRecord(record.scene_id, record.points[:0], record.colors[:0], record.up_axis, record.frame_id,
                       objects, record.room_type)


def noisy_features(objects: list[ObjectRecord], floor_z: float, config: ObjectTokenTrainConfig,
                   rng: np.random.Generator) -> ObjectFeatures:
    """Object features as the object layer would give them for ``objects``, with its errors, best first."""
    categories, colors = list(CATEGORY_NAMES), list(COLOR_NAMES)
    rows = []
    for obj in objects:
        category = np.zeros(len(categories), dtype=np.float32)
        top = categories.index(obj.category)
        if rng.random() < config.confuse:
            top = int(rng.integers(len(categories)))
        share = float(rng.uniform(0.45, 1.0))
        others = rng.choice([k for k in range(len(categories)) if k != top], size=2, replace=False)
        split = rng.dirichlet([1.0, 1.0, 1.0]) * (1.0 - share)
        category[top] = share
        category[others] += split[:2].astype(np.float32)
        category += split[2] / len(categories)
        category /= category.sum()
        color = np.zeros(len(colors), dtype=np.float32)
        color_name = obj.color if rng.random() >= config.wrong_color else str(rng.choice(colors))
        color[colors.index(color_name) if color_name in colors else int(rng.integers(len(colors)))] = 1.0
        size = np.asarray(obj.box.size) * np.exp(rng.normal(0.0, 0.2, 3))
        center = np.asarray(obj.box.center) + rng.normal(0.0, 0.04 + 0.08 * float(np.max(obj.box.size)), 3)
        yaw = float(obj.box.yaw) + float(rng.normal(0.0, 0.3))
        score = float(np.clip(share + rng.normal(0.0, 0.05), 0.5, 1.0))
        rows.append((category, color, geometry_row(center, size, yaw, floor_z, score)))
    for _ in range(int(rng.poisson(config.extras))):  # false extras: a wrong thing, unsure
        category = rng.dirichlet(np.full(len(categories), 0.3)).astype(np.float32)
        color = np.zeros(len(colors), dtype=np.float32)
        color[int(rng.integers(len(colors)))] = 1.0
        size = np.exp(rng.uniform(np.log(0.1), np.log(1.5), 3))
        center = (rng.uniform(1.0, 5.0), rng.uniform(-2.0, 2.0), floor_z + size[2] / 2)
        rows.append((category, color, geometry_row(center, size, 0.0, floor_z, float(rng.uniform(0.5, 0.7)))))
    rows.sort(key=lambda row: -row[2][-1])
    rows = rows[: config.max_objects]
    if not rows:
        return ObjectFeatures(np.zeros((0, len(categories)), np.float32), np.zeros((0, len(colors)), np.float32),
                              np.zeros((0, GEOMETRY_FEATURES), np.float32))
    return ObjectFeatures(np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows]), np.stack([r[2] for r in rows]))


def floor_height(objects: list[ObjectRecord]) -> float:
    """The floor of a record's gravity frame: the lowest bottom of the objects that stand on it."""
    bottoms = [obj.box.center[2] - obj.box.size[2] / 2 for obj in objects if obj.on is None]
    return float(min(bottoms)) if bottoms else -1.2


def build_examples(config: ObjectTokenTrainConfig, progress: bool = True
                   ) -> tuple[list[list[ObjectRecord]], list[float], list[_Example]]:
    """Per scene variant its kept objects and floor, and every caption / QA example over them."""
    generate = GenerateConfig(scenes=config.scenes, seed=config.seed, width=160, height=120, points_per_scene=20_000,
                              save_images=False)
    variants: list[list[ObjectRecord]] = []
    floors: list[float] = []
    examples: list[_Example] = []
    for index, (record, _) in enumerate(tqdm(generate_scenes(generate), total=config.scenes, desc="scenes",
                                             disable=not progress)):
        if scene_split(record.scene_id) != "train":
            continue
        floor = floor_height(record.objects)
        for variant in range(config.variants):
            rng = np.random.default_rng([config.seed, index, variant])
            keep = [obj.index for obj in record.objects if obj.visible_points >= MIN_VISIBLE
                    and rng.random() >= config.drop_faint * (1.0 if obj.visible_points < 100 else 0.25) * (variant > 0)]
            kept = _kept_record(record, keep)
            for annotation in annotate_scene(kept, seed=[config.seed, index, variant]):
                if annotation.task in TASKS:
                    examples.append(_Example(len(variants), annotation.prompt, annotation.answer, annotation.task))
            variants.append(kept.objects)
            floors.append(floor)
    return variants, floors, examples


def _batch(examples: list[_Example], count: int, caption_share: float, rng: np.random.Generator) -> list[_Example]:
    captions = [e for e in examples if e.task == "caption"]
    others = [e for e in examples if e.task != "caption"]
    chosen = []
    for _ in range(count):
        pool = captions if (rng.random() < caption_share and captions) or not others else others
        chosen.append(pool[int(rng.integers(len(pool)))])
    return chosen


def _loss(model: Any, projector: ObjectTokenProjector, batch: list[_Example], variants: list, floors: list,
          config: ObjectTokenTrainConfig, rng: np.random.Generator) -> torch.Tensor:
    token_sets = []
    for example in batch:
        features = noisy_features(variants[example.scene], floors[example.scene], config, rng)
        stacked = torch.as_tensor(features.stacked(), device=model.device)
        token_sets.append(projector(stacked[None])[0] if len(features) else stacked.new_zeros((0, projector.config.output_dim)))
    return model.language_loss_given_tokens(token_sets, [e.prompt for e in batch], [e.target for e in batch])


def train_object_tokens(config: ObjectTokenTrainConfig, model: Any | None = None, progress: bool = True) -> dict:
    """Train and save the projector; returns the run's record (also in the projector's config.json)."""
    from threed_llm_ros.model.checkpoint import load_checkpoint  # lazy: transformers

    started = time.perf_counter()
    torch.manual_seed(config.seed)
    checkpoint = resolve_checkpoint(config.checkpoint)
    model = model if model is not None else load_checkpoint(checkpoint)
    model.eval()  # LoRA dropout off: the adapter is frozen and read as at inference
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    projector = ObjectTokenProjector(ObjectTokenConfig(
        max_objects=config.max_objects, tokens_per_object=config.tokens_per_object, hidden=config.hidden,
        output_dim=int(model.causal_lm.config.hidden_size), seed=config.seed))
    attach_word_embeddings(projector, model)
    variants, floors, examples = build_examples(config, progress)
    if not examples:
        raise ValueError("no caption or question-answer example was made: give more scenes")
    check_rng = np.random.default_rng([config.seed, 999])
    validation = _batch(examples, config.validation_examples, config.caption_share, check_rng)

    def validation_loss() -> float:
        projector.eval()
        rng = np.random.default_rng([config.seed, 998])
        with torch.no_grad():
            losses = [float(_loss(model, projector, validation[i : i + 8], variants, floors, config, rng))
                      for i in range(0, len(validation), 8)]
        projector.train()
        return float(np.mean(losses))

    first = validation_loss()
    optimizer = torch.optim.AdamW(projector.mlp.parameters(), lr=config.learning_rate, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / 20) * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * step / config.steps))))
    losses = []
    bar = tqdm(range(config.steps), desc="object tokens", disable=not progress)
    projector.train()
    for step in bar:
        rng = np.random.default_rng([config.seed, step])
        loss = _loss(model, projector, _batch(examples, config.batch, config.caption_share, rng), variants, floors,
                     config, rng)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(projector.mlp.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    projector.eval()
    last = validation_loss()
    record = {"training": {
        "config": asdict(config), "examples": len(examples), "scene_variants": len(variants),
        "validation_loss_before": round(first, 4), "validation_loss_after": round(last, 4),
        "first_losses": [round(v, 4) for v in losses[:10]], "last_losses": [round(v, 4) for v in losses[-10:]],
        "seconds": round(time.perf_counter() - started, 1), "torch_threads": torch.get_num_threads(),
    }}
    output = Path(config.output) if config.output else checkpoint / OBJECT_TOKENS_DIRECTORY
    save_object_tokens(projector, output, record)
    return {**record["training"], "output": str(output)}


def main(argv: list[str] | None = None) -> int:
    """``threed-llm train-object-tokens [--steps N] [--scenes N] [--output DIR]`` (defaults: the shipped run)."""
    defaults = ObjectTokenTrainConfig()
    parser = argparse.ArgumentParser(prog="threed-llm train-object-tokens", description=__doc__.splitlines()[0])
    for name, value in asdict(defaults).items():
        parser.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    arguments = vars(parser.parse_args(argv))
    try:
        record = train_object_tokens(ObjectTokenTrainConfig(**arguments))
    except ThreeDLLMError as error:
        print(f"threed-llm train-object-tokens: {error}", file=sys.stderr)
        return 2
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
