"""``threed-llm eval --checkpoint DIR --dataset DIR --split test [--limit N] [--output report]``.

Runs a checkpoint on a dataset split, task by task, always next to the **blind
baseline** (the same model with ``blind=True``: no scene tokens, boxes still decoded in
the scene's normalised frame, so it is the language prior's best guess):

* caption, dense_caption: greedy answers → BLEU-1/4, ROUGE-L, CIDEr;
* qa: the same plus exact match; a model with ``question_programs`` writes each question's
  program and runs it over the objects its encoder detects (``model/scene_objects.py``),
  answering in free text only where the program does not parse or names an undetected
  object; the report adds how often the program was written exactly as annotated, parsed,
  and answered. The blind baseline always answers in free text (it has no objects);
* grounding: one generation with ``answer_prefix="<box3d>"`` gives both box outputs
  side by side: the 3D query head's box (the ``<box3d>`` state, as trained) and the
  location tokens the text then writes → Acc@0.25 / Acc@0.5, mean IoU, centre error; a
  model with ``question_programs`` adds a third column, the box of the detected object the
  query's ``locate`` program names (the head's box where it names none that was found);
* plan: the plan text → :func:`parse_plan_text` → step accuracy and whole-plan success,
  navigation poses from grounding each ``navigate_to`` target ("Where is the X?"; the
  head's box, else the location tokens') with :func:`navigation_goal_for_box`. A model with
  ``question_programs`` writes the instruction's program instead and takes its steps over
  the detected objects (``plan_from_program``: the objects give the goal poses and a trash
  can the words leave open), in free text where the program does not parse; the report
  adds the program rates and the step accuracy of the program's words alone, without any
  scene (what the scene cannot have contributed to the step accuracy).

**Scene use** (``scene_use``, on by default): per task, the teacher-forced loss of the reference
answers given each item's own scene, given another scene of the same selection, and blind. A model
that reads its scene has a clearly lower loss with its own scene than with another; equal losses
mean the scene tokens carry nothing the language model uses, whatever the blind gap says
(the first shipped checkpoint: 0.6510 vs 0.6510 on training questions).

Writes ``OUTPUT/report.md`` (:func:`format_report`, one column per system) and
``OUTPUT/report.json`` (metrics per system, trainable-parameter count, per-sample
predictions; with programs each keeps the program the model wrote, also one that did not
parse, next to the annotated one). NaN metrics (no sample) are ``null`` in the JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm import tqdm

from threed_llm_ros.data.annotations import TASKS, Annotation, plan_text
from threed_llm_ros.data.dataset import DATASET_FIX, INDEX_FILE, SPLITS, SceneDataset, SceneRecord, load_dataset
from threed_llm_ros.data.programs import annotation_program
from threed_llm_ros.errors import ConfigError, ModelFileError, ThreeDLLMError
from threed_llm_ros.eval.metrics import format_report, grounding_metrics, parse_plan_text, plan_metrics, qa_metrics, text_metrics
from threed_llm_ros.geometry.boxes import OrientedBox
from threed_llm_ros.model.checkpoint import load_checkpoint, parameter_report
from threed_llm_ros.model.preprocessing import SceneBatch
from threed_llm_ros.model.scene_objects import (
    LocatedObject, answer_by_program, locate_by_program, plan_by_program, write_program,
)
from threed_llm_ros.model.threed_llm import ThreeDLLM
from threed_llm_ros.train.collate import GROUNDING_ANSWER_PREFIX, SceneCache, model_prompt, model_target

MODEL_TOKENS = "model (location tokens)"
MODEL_HEAD = "model (3D query head)"
BLIND_TOKENS = "blind baseline"
BLIND_HEAD = "blind baseline (3D query head)"
MODEL_OBJECTS = "model (detected objects)"
SYSTEMS = (MODEL_TOKENS, MODEL_HEAD, MODEL_OBJECTS, BLIND_TOKENS, BLIND_HEAD)
NAVIGATION_ACTIONS = ("navigate_to",)
GROUNDING_QUERY = "Where is the {target}?"
MAX_NEW_TOKENS = {"caption": 64, "dense_caption": 40, "qa": 12, "grounding": 32, "plan": 64}


@dataclass
class EvalSettings:
    """What to evaluate and how."""

    split: str = "test"
    limit: int | None = None  # at most this many annotations per task (a seeded choice)
    tasks: tuple[str, ...] = TASKS
    blind: bool = True  # also run the blind baseline
    seed: int = 0
    standoff_m: float = 0.6
    pose_tolerance_m: float = 0.5
    max_new_tokens: int | None = None  # cap on every task's answer length (default: per task, MAX_NEW_TOKENS)
    progress: bool = True
    scene_use: bool = True  # also measure answer losses with the own scene, another scene and none


def select_items(dataset: SceneDataset, settings: EvalSettings) -> dict[str, list[int]]:
    """Dataset positions per task: all, or a seeded choice of ``limit`` (kept in index order)."""
    positions: dict[str, list[int]] = {task: [] for task in settings.tasks}
    for position, entry in enumerate(dataset.entries):
        if entry.annotation.task in positions:
            positions[entry.annotation.task].append(position)
    if settings.limit is not None:
        rng = np.random.default_rng(settings.seed)
        positions = {
            task: sorted(int(p) for p in rng.permutation(items)[: settings.limit]) if items else []
            for task, items in positions.items()
        }
    return positions


def floor_height(record: SceneRecord) -> float:
    """The floor in the gravity frame: a low percentile of the cloud's heights (as the inference engine does)."""
    heights = record.points_gravity()[:, 2]
    heights = heights[np.isfinite(heights)]
    return float(np.percentile(heights, 2.0)) if len(heights) else 0.0


def navigation_pose(box: OrientedBox, floor_z: float, standoff_m: float) -> dict[str, list[float]]:
    """A navigation goal pose for a grounded box (gravity frame), as the plan annotations store it."""
    from threed_llm_ros.runtime.engine import navigation_goal_for_box

    goal, yaw = navigation_goal_for_box(box, floor_z, standoff_m)
    return {
        "position": [float(v) for v in goal],
        "orientation": [0.0, 0.0, math.sin(yaw / 2.0), math.cos(yaw / 2.0)],
    }


class Evaluator:
    """Runs one model over the selected annotations and gathers metrics per system."""

    def __init__(self, model: ThreeDLLM, dataset: SceneDataset, settings: EvalSettings) -> None:
        self.model = model
        self.dataset = dataset
        self.settings = settings
        self.cache = SceneCache(model.config.scene_encoder.preprocess, seed=settings.seed)
        self.predictions: list[dict[str, Any]] = []
        self._detected: dict[str, list] = {}  # scene id -> detected objects (programs), computed once per scene

    def _generate(self, scene: SceneBatch, prompt: str, task: str, blind: bool, answer_prefix: str = ""):
        limit = MAX_NEW_TOKENS[task]
        if self.settings.max_new_tokens is not None:
            limit = min(limit, self.settings.max_new_tokens)
        return self.model.generate(scene, prompt, max_new_tokens=limit, blind=blind, answer_prefix=answer_prefix)

    def ground(self, scene: SceneBatch, prompt: str, blind: bool) -> tuple[str, OrientedBox | None, OrientedBox | None]:
        """(text, location-token box, head box) of a grounding prompt."""
        result = self._generate(scene, prompt, "grounding", blind, GROUNDING_ANSWER_PREFIX)
        token_box = result.boxes_from_tokens[0] if result.boxes_from_tokens else None
        return result.text, token_box, result.box_from_head

    def run(self) -> dict[str, Any]:
        """Metrics per system (``{system: {task: {metric: value}}}``)."""
        selected = select_items(self.dataset, self.settings)
        modes = [False, True] if self.settings.blind else [False]
        results: dict[str, dict[str, Any]] = {
            system: {} for system in SYSTEMS
            if (self.settings.blind or "blind" not in system) and (system != MODEL_OBJECTS or self.model.config.question_programs)
        }
        total = sum(len(items) for items in selected.values()) * len(modes)
        with tqdm(total=total, desc="eval", unit="sample", disable=not self.settings.progress) as bar:
            for task, positions in selected.items():
                if not positions:
                    continue
                for blind in modes:
                    tokens_system, head_system = (BLIND_TOKENS, BLIND_HEAD) if blind else (MODEL_TOKENS, MODEL_HEAD)
                    metrics = self._run_task(task, positions, blind, bar)
                    if task == "grounding":
                        results[tokens_system][task] = metrics["tokens"]
                        results[head_system][task] = metrics["head"]
                        if "objects" in metrics:
                            results[MODEL_OBJECTS][task] = metrics["objects"]
                    else:
                        results[tokens_system][task] = metrics
        return results

    def _run_task(self, task: str, positions: Sequence[int], blind: bool, bar: tqdm) -> dict[str, Any]:
        texts: dict[int, str] = {}
        references: dict[int, str] = {}
        token_boxes: dict[int, OrientedBox | None] = {}
        head_boxes: dict[int, OrientedBox | None] = {}
        target_boxes: dict[int, OrientedBox] = {}
        plans: dict[int, list[dict[str, Any]]] = {}
        programs: dict[int, tuple[dict[str, Any], str | None]] = {}
        object_boxes: dict[int, OrientedBox | None] = {}
        reference_plans: dict[int, list[dict[str, Any]]] = {}
        words_only_plans: dict[int, list[dict[str, Any]]] = {}
        for position in positions:
            entry = self.dataset.entries[position]
            annotation: Annotation = entry.annotation
            record = self.dataset.scene(entry.scene_id)
            scene = self.cache.get(record)
            prompt = model_prompt(self.model, annotation, scene)
            sample: dict[str, Any] = {"position": position, "scene_id": entry.scene_id, "task": task, "blind": blind, "prompt": prompt}
            if task == "grounding":
                text, token_box, head_box = self.ground(scene, prompt, blind)
                token_boxes[position], head_boxes[position] = token_box, head_box
                target_boxes[position] = annotation.target_box
                sample.update(text=text, token_box=_box_list(token_box), head_box=_box_list(head_box),
                              target_box=_box_list(annotation.target_box))
                if not blind and self.model.config.question_programs:
                    located = self.locate(scene, entry.scene_id, prompt)
                    found = None if located is None or located.found is None else located.found.box
                    object_boxes[position] = found if found is not None else head_box
                    programs[position] = ({"text": self._program_text(located, prompt),
                                           "answered": found is not None, "parsed": located is not None},
                                          annotation_program(annotation))
                    sample.update(object_box=_box_list(object_boxes[position]), program=programs[position][0],
                                  expected_program=programs[position][1])
            elif task == "plan":
                reference_plans[position] = list((annotation.plan or {}).get("steps", []))
                planned = None
                if not blind and self.model.config.question_programs:
                    planned = self.plan_by_program(scene, record, prompt)
                    programs[position] = ({"text": planned["program"] if planned else write_program(self.model, prompt),
                                           "parsed": planned is not None,
                                           "answered": planned is not None}, annotation_program(annotation))
                    sample.update(program=programs[position][0], expected_program=programs[position][1])
                if planned is not None:
                    text, steps = plan_text(planned["steps"]), planned["steps"]
                    words_only_plans[position] = planned["words_only"]
                else:
                    text = self._generate(scene, prompt, task, blind).text
                    steps = self._plan_with_poses(text, scene, record, blind)
                    if programs:
                        words_only_plans[position] = []  # no program: the words alone give no steps
                plans[position] = steps
                sample.update(text=text, steps=steps, reference=annotation.answer)
            elif task == "qa" and not blind and self.model.config.question_programs:
                text, program = self.answer_question(scene, entry.scene_id, prompt)
                texts[position] = text
                references[position] = annotation.answer
                expected = annotation_program(annotation) if "question_type" in annotation.attributes else None
                programs[position] = (program, expected)
                sample.update(text=text, reference=annotation.answer, program=program, expected_program=expected)
            else:
                text = self._generate(scene, prompt, task, blind).text
                texts[position] = text
                references[position] = annotation.answer
                sample.update(text=text, reference=annotation.answer)
            self.predictions.append(sample)
            bar.update(1)
        if task == "grounding":
            metrics = {"tokens": grounding_metrics(token_boxes, target_boxes), "head": grounding_metrics(head_boxes, target_boxes)}
            if object_boxes:
                located = program_metrics(programs)
                located["located by program"] = located.pop("answered by program")
                metrics["objects"] = {**grounding_metrics(object_boxes, target_boxes), **located}
            return metrics
        if task == "plan":
            metrics = plan_metrics(plans, reference_plans, pose_tolerance_m=self.settings.pose_tolerance_m)
            if programs:
                planned = program_metrics(programs)
                planned["planned by program"] = planned.pop("answered by program")
                words_only = plan_metrics(words_only_plans, reference_plans, check_poses=False)
                metrics.update(planned, **{"step accuracy, program words only": words_only["step_accuracy"]})
            return metrics
        if task == "qa":
            return {**qa_metrics(texts, references), **program_metrics(programs)}
        return text_metrics(texts, references)

    def answer_question(self, scene: SceneBatch, scene_id: str, question: str) -> tuple[str, dict[str, Any]]:
        """(answer, how it came about) by the question's program over the detected objects, in free
        text where the program does not parse or names an object that was not detected."""
        reply = self._by_program(answer_by_program, scene, scene_id, question)
        if reply is not None and reply.answer is not None:
            return reply.answer, {"text": reply.program, "parsed": True, "answered": True, "objects": len(reply.objects)}
        text = self._generate(scene, question, "qa", False).text
        return text, {"text": self._program_text(reply, question), "parsed": reply is not None, "answered": False}

    def _program_text(self, reply: Any, prompt: str) -> str:
        """The program behind a reply; where none came back (it did not parse, or was not of the
        prompt's kind) the program is written again (greedy, so the same text) for the report."""
        return reply.program if reply is not None else write_program(self.model, prompt)

    def _by_program(self, function: Any, scene: SceneBatch, scene_id: str, prompt: str) -> Any:
        """``answer_by_program``, ``locate_by_program`` or ``plan_by_program`` with the scene's
        detections computed once per scene."""
        reply = function(self.model, scene, prompt, objects=self._detected.get(scene_id))
        if reply is not None:
            self._detected[scene_id] = reply.objects
        return reply

    def locate(self, scene: SceneBatch, scene_id: str, query: str) -> LocatedObject | None:
        """:func:`locate_by_program` with the scene's detections computed once per scene."""
        return self._by_program(locate_by_program, scene, scene_id, query)

    def scene_use(self) -> dict[str, dict[str, float]]:
        """Per task: mean teacher-forced answer loss with the own scene, another scene and no scene.

        "Another scene" is the scene of the next selected item from a different scene (the
        selection taken as a ring), so every item is paired with a real scene of the split.
        """
        selected = select_items(self.dataset, self.settings)
        measured: dict[str, dict[str, float]] = {}
        for task, positions in selected.items():
            scene_ids = [self.dataset.entries[p].scene_id for p in positions]
            if len(set(scene_ids)) < 2:
                continue
            losses: dict[str, list[float]] = {"own scene": [], "other scene": [], "no scene": []}
            for index, position in enumerate(positions):
                entry = self.dataset.entries[position]
                scene = self.cache.get(entry.scene_id, loader=self.dataset.scene)
                other_index = next(
                    (index + step) % len(positions)
                    for step in range(1, len(positions))
                    if scene_ids[(index + step) % len(positions)] != entry.scene_id
                )
                other = self.cache.get(scene_ids[other_index], loader=self.dataset.scene)
                prompt = model_prompt(self.model, entry.annotation, scene)
                target, _ = model_target(self.model, entry.annotation, scene)
                with torch.no_grad():
                    for name, scene_batch, blind in (("own scene", scene, False), ("other scene", other, False), ("no scene", None, True)):
                        output = self.model(scene_batch, [prompt], [target], blind=blind, return_logits=False)
                        losses[name].append(float(output.language_loss))
            measured[task] = {name: float(np.mean(values)) for name, values in losses.items()}
            measured[task]["items"] = len(positions)
        return measured

    def plan_by_program(self, scene: SceneBatch, record: SceneRecord, instruction: str) -> dict[str, Any] | None:
        """The instruction's steps through its program over the scene's detected objects, with
        goal poses (a target that was not detected is grounded by the box head, as in free-text
        plans), and the steps its words alone give; None when the program does not parse."""
        planned = self._by_program(plan_by_program, scene, record.scene_id, instruction)
        if planned is None:
            return None
        floor_z = floor_height(record)
        steps: list[dict[str, Any]] = []
        for step in planned.steps:
            index = step.get("object")
            step = {key: value for key, value in step.items() if key not in ("object", "destination_object")}
            if step["action"] in NAVIGATION_ACTIONS:
                box = planned.objects[index].box if index is not None else None
                if box is None:
                    _, token_box, head_box = self.ground(scene, GROUNDING_QUERY.format(target=step["target"]), False)
                    box = head_box if head_box is not None else token_box
                if box is not None:
                    step["pose"] = navigation_pose(box, floor_z, self.settings.standoff_m)
            steps.append(step)
        return {"steps": steps, "words_only": planned.words_only, "program": planned.program}

    def _plan_with_poses(self, text: str, scene: SceneBatch, record: SceneRecord, blind: bool) -> list[dict[str, Any]]:
        steps = [dict(step) for step in parse_plan_text(text)]
        grounded: dict[str, OrientedBox | None] = {}
        floor_z = floor_height(record)
        for step in steps:
            if step["action"] not in NAVIGATION_ACTIONS:
                continue
            target = step["target"]
            if target not in grounded:
                query = GROUNDING_QUERY.format(target=target)
                _, token_box, head_box = self.ground(scene, query, blind)
                grounded[target] = head_box if head_box is not None else token_box
                if not blind and self.model.config.question_programs:
                    located = self.locate(scene, record.scene_id, query)
                    if located is not None and located.found is not None:
                        grounded[target] = located.found.box
            box = grounded[target]
            if box is not None:
                step["pose"] = navigation_pose(box, floor_z, self.settings.standoff_m)
        return steps


def program_metrics(programs: dict[int, tuple[dict[str, Any], str | None]]) -> dict[str, float]:
    """How question programs fared: written exactly as annotated, parsed, and answered by the program."""
    if not programs:
        return {}
    written = [info for info, _ in programs.values()]
    exact = [info["text"] is not None and info["text"] == expected for info, expected in programs.values() if expected]
    return {
        "program exact": float(np.mean(exact)) if exact else math.nan,
        "program parsed": float(np.mean([info["parsed"] for info in written])),
        "answered by program": float(np.mean([info["answered"] for info in written])),
    }


def format_scene_use(scene_use: dict[str, dict[str, float]]) -> str:
    """Markdown table of :meth:`Evaluator.scene_use`: answer loss per task with the own, another and no scene."""
    lines = [
        "#### Scene use: teacher-forced loss of the reference answers (lower is better)",
        "",
        "| task | items | own scene | other scene | no scene |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for task, values in scene_use.items():
        lines.append(
            f"| {task} | {int(values['items'])} | {values['own scene']:.4f} | {values['other scene']:.4f} | {values['no scene']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def _box_list(box: OrientedBox | None) -> list[float] | None:
    return None if box is None else [round(float(v), 4) for v in box.to_array()]


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(float(value)) else float(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    return value


def _load(checkpoint: str | Path) -> ThreeDLLM:
    """load_checkpoint with every failure (missing, truncated or foreign files) as a ModelFileError."""
    try:
        return load_checkpoint(checkpoint)
    except ThreeDLLMError:
        raise
    except Exception as error:  # safetensors / JSON / shape errors of a damaged checkpoint
        raise ModelFileError(f"cannot load checkpoint {checkpoint}: {type(error).__name__}: {error}") from error


def evaluate(checkpoint: str | Path, dataset_directory: str | Path, output: str | Path, settings: EvalSettings,
             model: ThreeDLLM | None = None) -> dict[str, Any]:
    """Evaluate a checkpoint on a dataset split; writes ``report.md`` and ``report.json`` to ``output``."""
    if settings.split not in SPLITS:
        raise ConfigError("--split", f"unknown split {settings.split!r}", f"use one of {SPLITS}")
    directory = Path(dataset_directory)
    if not (directory / INDEX_FILE).is_file():
        problem = "does not exist" if not directory.exists() else f"holds no {INDEX_FILE}"
        raise ConfigError("--dataset", f"{directory} {problem}", DATASET_FIX)
    dataset = load_dataset(dataset_directory, splits=settings.split, tasks=list(settings.tasks), cache_size=64)
    if len(dataset) == 0:
        raise ConfigError("--split", f"{dataset_directory} has no {settings.split!r} annotation of {list(settings.tasks)}",
                          "choose another split or generate more scenes")
    model = model or _load(checkpoint)
    torch.manual_seed(settings.seed)
    started = time.perf_counter()
    evaluator = Evaluator(model, dataset, settings)
    results = evaluator.run()
    was_training = model.training
    model.eval()
    scene_use = evaluator.scene_use() if settings.scene_use else {}
    model.train(was_training)
    report = parameter_report(model)
    for system in results:
        if "3D query head" not in system:
            results[system]["trainable parameters"] = report["trainable"]
    document = {
        "checkpoint": str(checkpoint),
        "dataset": str(dataset_directory),
        "split": settings.split,
        "limit": settings.limit,
        "systems": results,
        "trainable_parameters": report["trainable"],
        "total_parameters": report["total"],
        "parameter_components": report["components"],
        "scene_use": scene_use,
        "seconds": round(time.perf_counter() - started, 2),
        "predictions": evaluator.predictions,
    }
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    title = f"{model.config.name} on {Path(dataset_directory).name}/{settings.split}"
    if settings.limit is not None:
        title += f" (at most {settings.limit} per task)"
    markdown = format_report(results, title=title)
    if scene_use:
        markdown += "\n" + format_scene_use(scene_use)
    (output / "report.md").write_text(markdown)
    (output / "report.json").write_text(json.dumps(_json_safe(document), indent=2) + "\n")
    return document


def main(argv: list[str] | None = None) -> int:
    """``threed-llm eval --checkpoint DIR --dataset DIR [--split test] [--limit N] [--output report]``."""
    parser = argparse.ArgumentParser(prog="threed-llm eval", description="Evaluate a checkpoint and its blind baseline.")
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory (e.g. models/threed-llm-mini)")
    parser.add_argument("--dataset", required=True, help="dataset directory (index.jsonl + scenes/)")
    parser.add_argument("--split", default="test", choices=SPLITS)
    parser.add_argument("--limit", type=int, help="at most N annotations per task (seeded choice)")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--output", default="report", help="directory for report.md and report.json")
    parser.add_argument("--no-blind", action="store_true", help="skip the blind baseline")
    parser.add_argument("--no-scene-use", action="store_true",
                        help="skip the answer losses with the own scene, another scene and none")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int, help="cap every answer at N tokens (quick runs)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    arguments = parser.parse_args(argv)
    if arguments.limit is not None and arguments.limit < 1:
        print("threed-llm eval: --limit must be at least 1", file=sys.stderr)
        return 2
    settings = EvalSettings(split=arguments.split, limit=arguments.limit, tasks=tuple(arguments.tasks),
                            blind=not arguments.no_blind, scene_use=not arguments.no_scene_use, seed=arguments.seed, progress=not arguments.quiet,
                            max_new_tokens=arguments.max_new_tokens)
    try:
        document = evaluate(arguments.checkpoint, arguments.dataset, arguments.output, settings)
    except ThreeDLLMError as error:
        print(f"threed-llm eval: {error}", file=sys.stderr)
        return 2
    print((Path(arguments.output) / "report.md").read_text())
    print(f"wrote {arguments.output}/report.md and report.json in {document['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
