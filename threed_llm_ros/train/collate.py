"""Turn dataset items (SceneRecord, Annotation) into model batches.

* Scenes: ``prepare_scenes`` on each record's points and colours with the record's
  ``up_axis``; the result is cached per scene id (:class:`SceneCache`), so a scene is
  preprocessed once however many annotations and epochs use it.
* Text: the ``<box>`` marker of prompts and answers becomes the model's 7 location
  tokens of the annotation's ``target_box`` (``ThreeDLLM.box_text_metres``). Grounding
  targets start with the ``<box3d>`` query token, LLMI3D style: its hidden state sees the
  scene and the prompt only and feeds the box head, whose regression target is the
  normalised ``target_box``. At inference the same position is reached by generating, or
  by forcing ``answer_prefix="<box3d>"``; the text after it then writes the description
  and the location tokens, so one generation gives both box outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np
import torch

from threed_llm_ros.data.annotation_types import BOX_TOKEN, Annotation
from threed_llm_ros.data.dataset import SceneRecord
from threed_llm_ros.data.programs import annotation_program, program_prompt
from threed_llm_ros.model.box_head import BOX3D_TOKEN
from threed_llm_ros.model.preprocessing import PreprocessConfig, SceneBatch, boxes_to_normalized, prepare_scenes
from threed_llm_ros.model.scene_encoder import patch_semantic_labels, patch_vote_targets

#: Prefix forced before a grounding answer so the box head reads the ``<box3d>`` state.
GROUNDING_ANSWER_PREFIX = BOX3D_TOKEN


@dataclass
class TrainingBatch:
    """What ``ThreeDLLM.forward`` takes, plus the items' tasks (for logging)."""

    scene: SceneBatch | None  # None: a text-only batch (question programs), run blind
    prompts: list[str]
    targets: list[str]
    target_boxes: list[np.ndarray | None]  # normalised 7-vectors for the box head, None where no <box3d>
    tasks: list[str]
    patch_labels: torch.Tensor | None = None  # (B, G, 2) category/colour per group, for the patch-semantics head
    patch_votes: torch.Tensor | None = None  # (B, G, 6) object centre offset / log size per group, for its votes

    @property
    def size(self) -> int:
        """Number of samples."""
        return len(self.prompts)


def concatenate_scenes(scenes: Sequence[SceneBatch]) -> SceneBatch:
    """One SceneBatch of several (all with the up axis of the first: boxes live in the gravity frame)."""
    if not scenes:
        raise ValueError("concatenate_scenes needs at least one scene batch")
    valid = [s.num_valid_points for s in scenes]
    return SceneBatch(
        patches=torch.cat([s.patches for s in scenes]),
        centers=torch.cat([s.centers for s in scenes]),
        offset=torch.cat([s.offset for s in scenes]),
        scale=torch.cat([s.scale for s in scenes]),
        up_axis=scenes[0].up_axis,
        num_valid_points=None if any(v is None for v in valid) else torch.cat(valid),  # type: ignore[arg-type]
    )


def _read(record: SceneRecord | str, loader: Callable[[str], SceneRecord] | None, missing: str) -> SceneRecord:
    """The record itself, or the scene id's record read through ``loader``."""
    if not isinstance(record, str):
        return record
    if loader is None:
        raise ValueError(f"scene {record!r} {missing} and no loader was given")
    return loader(record)


class SceneCache:
    """Preprocessed scenes (a SceneBatch of one each) keyed by scene id."""

    def __init__(self, config: PreprocessConfig, seed: int = 0) -> None:
        self.config = config
        self.seed = seed
        self._scenes: dict[str, SceneBatch] = {}
        self._labels: dict[tuple[str, tuple[str, ...], tuple[str, ...]], torch.Tensor] = {}
        self._votes: dict[str, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self._scenes)

    def get(self, record: SceneRecord | str, loader: Callable[[str], SceneRecord] | None = None) -> SceneBatch:
        """The prepared scene of a record (or of a scene id, read through ``loader`` only when not cached)."""
        scene_id = record if isinstance(record, str) else record.scene_id
        scene = self._scenes.get(scene_id)
        if scene is None:
            record = _read(record, loader, "is not cached")
            config = replace(self.config, up_axis=record.up_axis)
            scene = prepare_scenes([(record.points, record.colors)], config, seed=self.seed)
            self._scenes[scene_id] = scene
        return scene

    def patch_labels(
        self,
        record: SceneRecord | str,
        categories: Sequence[str],
        colors: Sequence[str],
        loader: Callable[[str], SceneRecord] | None = None,
    ) -> torch.Tensor:
        """(G, 2) category/colour ids per group of the prepared scene (``patch_semantic_labels``), cached."""
        scene_id = record if isinstance(record, str) else record.scene_id
        key = (scene_id, tuple(categories), tuple(colors))
        labels = self._labels.get(key)
        if labels is None:
            record = _read(record, loader, "has no cached labels")
            scene = self.get(record)
            metres = torch.as_tensor(record.boxes_array(), dtype=torch.float64).reshape(1, -1, 7)
            boxes = boxes_to_normalized(metres, scene)[0]
            category_index = {name: i for i, name in enumerate(categories)}
            color_index = {name: i for i, name in enumerate(colors)}
            labels = patch_semantic_labels(
                scene.centers[0].double(),
                boxes,
                torch.tensor([category_index.get(o.category, -1) for o in record.objects], dtype=torch.long),
                torch.tensor([color_index.get(o.color, -1) for o in record.objects], dtype=torch.long),
            )
            self._labels[key] = labels
        return labels

    def patch_votes(self, record: SceneRecord | str, loader: Callable[[str], SceneRecord] | None = None) -> torch.Tensor:
        """(G, 6) vote targets per group of the prepared scene (``patch_vote_targets``), cached."""
        scene_id = record if isinstance(record, str) else record.scene_id
        votes = self._votes.get(scene_id)
        if votes is None:
            record = _read(record, loader, "has no cached vote targets")
            scene = self.get(record)
            metres = torch.as_tensor(record.boxes_array(), dtype=torch.float64).reshape(1, -1, 7)
            votes = patch_vote_targets(scene.centers[0].double(), boxes_to_normalized(metres, scene)[0])
            self._votes[scene_id] = votes
        return votes


def box_tokens(model, annotation: Annotation, scene: SceneBatch) -> str:
    """The location-token text of the annotation's target box in ``scene`` (a batch of one)."""
    if annotation.target_box is None:
        raise ValueError(f"a {annotation.task} annotation uses {BOX_TOKEN} but has no target_box")
    return model.box_text_metres(annotation.target_box, scene, 0)


def fill_box_marker(text: str, model, annotation: Annotation, scene: SceneBatch) -> str:
    """``text`` with every ``<box>`` replaced by the target box's location tokens."""
    if BOX_TOKEN not in text:
        return text
    return text.replace(BOX_TOKEN, box_tokens(model, annotation, scene))


def model_prompt(model, annotation: Annotation, scene: SceneBatch) -> str:
    """The prompt as the model reads it (``<box>`` filled)."""
    return fill_box_marker(annotation.prompt, model, annotation, scene)


def model_target(model, annotation: Annotation, scene: SceneBatch) -> tuple[str, np.ndarray | None]:
    """The answer as the model writes it and, for grounding, the normalised box for the ``<box3d>`` head."""
    answer = fill_box_marker(annotation.answer, model, annotation, scene)
    if annotation.task != "grounding" or annotation.target_box is None:
        return answer, None
    metres = torch.as_tensor(annotation.target_box.to_array(), dtype=torch.float64).reshape(1, 1, 7)
    normalized = boxes_to_normalized(metres, scene)[0, 0].numpy()
    return f"{GROUNDING_ANSWER_PREFIX} {answer}", normalized


def collate(
    model,
    items: Sequence[tuple[SceneRecord | str, Annotation]],
    cache: SceneCache,
    loader: Callable[[str], SceneRecord] | None = None,
) -> TrainingBatch:
    """A training batch of (record or scene id, annotation) items; scenes come from (and fill) ``cache``."""
    scenes, prompts, targets, boxes, tasks, labels, votes = [], [], [], [], [], [], []
    encoder_config = model.config.scene_encoder
    for record, annotation in items:
        if encoder_config.semantic_categories:  # first: it prepares the scene from the same record read
            labels.append(cache.patch_labels(record, encoder_config.semantic_categories, encoder_config.semantic_colors, loader))
        if encoder_config.word_instances:
            votes.append(cache.patch_votes(record, loader))
        scene = cache.get(record, loader)
        scenes.append(scene)
        prompts.append(model_prompt(model, annotation, scene))
        target, box = model_target(model, annotation, scene)
        targets.append(target)
        boxes.append(box)
        tasks.append(annotation.task)
    patch_labels = torch.stack(labels) if labels else None
    patch_votes = torch.stack(votes) if votes else None
    return TrainingBatch(concatenate_scenes(scenes), prompts, targets, boxes, tasks, patch_labels, patch_votes)


def program_batch(annotations: Sequence[Annotation], extra: Sequence[tuple[str, str]] = ()) -> TrainingBatch:
    """A text-only batch: each question, referring expression or instruction (qa, grounding,
    plan), asked for its program, with the program as the target; ``extra`` adds
    ``(instruction, program)`` pairs made without a scene (counted as plan items)."""
    prompts = [program_prompt(annotation.prompt) for annotation in annotations] + [program_prompt(words) for words, _ in extra]
    targets = [annotation_program(annotation) for annotation in annotations] + [program for _, program in extra]
    tasks = [a.task for a in annotations] + ["plan"] * len(extra)
    return TrainingBatch(None, prompts, targets, [None] * len(prompts), tasks)
