"""``threed-llm eval --checkpoint DIR --dataset DIR --split test [--limit N] [--output report]``.

Runs a checkpoint on a dataset split, task by task, always next to the **blind
baseline** (the same model with ``blind=True``: no scene tokens, boxes still decoded in
the scene's normalised frame, so it is the language prior's best guess):

* caption, dense_caption: greedy answers → BLEU-1/4, ROUGE-L, CIDEr;
* qa: the same plus exact match;
* grounding: one generation with ``answer_prefix="<box3d>"`` gives both box outputs
  side by side: the 3D query head's box (the ``<box3d>`` state, as trained) and the
  location tokens the text then writes → Acc@0.25 / Acc@0.5, mean IoU, centre error;
* plan: the plan text → :func:`parse_plan_text` → step accuracy and whole-plan success,
  navigation poses from grounding each ``navigate_to`` target ("Where is the X?"; the
  head's box, else the location tokens') with :func:`navigation_goal_for_box`.

Those columns probe the model itself. The **robot** column is what a robot gets: each
prompt goes through :class:`~threed_llm_ros.runtime.engine.InferenceEngine` — the same
``answer`` / ``ground`` / ``plan`` calls the node and ``threed-llm ask`` make, over the
object layer, with the same model — on the record's cloud. A model with
``question_programs`` writes programs there, and the column adds how often the program was
written exactly as annotated, parsed, and answered. Prompts holding the model's box
markers (``<box>``) are for the model alone: the robot column skips them.

**Scene use** (``scene_use``, on by default): per task, the teacher-forced loss of the reference
answers given each item's own scene, given another scene of the same selection, and blind. A model
that reads its scene has a clearly lower loss with its own scene than with another; equal losses
mean the scene tokens carry nothing the language model uses, whatever the blind gap says
(the first shipped checkpoint: 0.6510 vs 0.6510 on training questions).

Writes ``OUTPUT/report.md`` (:func:`format_report`, one column per system) and
``OUTPUT/report.json`` (metrics per system, trainable-parameter count, per-sample
predictions; the robot's reply and the program behind it sit next to the annotated one). NaN metrics (no sample) are ``null`` in the JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm import tqdm

from threed_llm_ros.data.annotation_types import TASKS, Annotation
from threed_llm_ros.data.dataset import DATASET_FIX, INDEX_FILE, SPLITS, SceneDataset, SceneRecord, load_dataset
from threed_llm_ros.data.programs import annotation_program
from threed_llm_ros.errors import ConfigError, ModelFileError, ThreeDLLMError
from threed_llm_ros.eval.metrics import format_report, grounding_metrics, plan_metrics, qa_metrics, text_metrics
from threed_llm_ros.geometry.boxes import OrientedBox
from threed_llm_ros.model.checkpoint import load_checkpoint, parameter_report
from threed_llm_ros.model.preprocessing import SceneBatch
from threed_llm_ros.model.threed_llm import ThreeDLLM
from threed_llm_ros.plans import NAVIGATION_ACTIONS, parse_plan_text
from threed_llm_ros.runtime.choices import LM_BACKENDS
from threed_llm_ros.runtime.engine import InferenceEngine
from threed_llm_ros.runtime.engine_settings import LM_PRECISIONS, EngineSettings
from threed_llm_ros.eval.robot_input import robot_cloud
from threed_llm_ros.runtime.replies import SceneCloud
from threed_llm_ros.train.collate import GROUNDING_ANSWER_PREFIX, SceneCache, model_prompt, model_target
from threed_llm_ros.runtime.lm_backend import serving_generator
from threed_llm_ros.runtime.onnx_decoder import OnnxGenerator
from threed_llm_ros.runtime.replies import navigation_goal_for_box

MODEL_TOKENS = "model (location tokens)"
MODEL_HEAD = "model (3D query head)"
BLIND_TOKENS = "blind baseline"
BLIND_HEAD = "blind baseline (3D query head)"
ROBOT = "robot (the node's reply path)"
SYSTEMS = (ROBOT, MODEL_TOKENS, MODEL_HEAD, BLIND_TOKENS, BLIND_HEAD)
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
    robot: bool = True  # also answer every prompt through the engine (the node's reply path)
    lm_backend: str = "auto"  # the language model of every column, as the node's lm_backend (a model passed in is used as given)
    lm_precision: str = EngineSettings.lm_precision  # the exported decoders' weights when lm_backend is onnxruntime


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
    """The floor in the gravity frame: a low percentile of the record's cloud heights. The eval's own
    estimate for the model's plan poses (the robot column's engine takes the object layer's floor)."""
    heights = record.points_gravity()[:, 2]
    heights = heights[np.isfinite(heights)]
    return float(np.percentile(heights, 2.0)) if len(heights) else 0.0


def navigation_pose(box: OrientedBox, floor_z: float, standoff_m: float) -> dict[str, list[float]]:
    """A navigation goal pose for a grounded box (gravity frame), as the plan annotations store it."""
    goal, yaw = navigation_goal_for_box(box, floor_z, standoff_m)
    return {
        "position": [float(v) for v in goal],
        "orientation": [0.0, 0.0, math.sin(yaw / 2.0), math.cos(yaw / 2.0)],
    }


class Evaluator:
    """Runs one model over the selected annotations and gathers metrics per system."""

    def __init__(self, model: ThreeDLLM, dataset: SceneDataset, settings: EvalSettings,
                 engine: InferenceEngine | None = None) -> None:
        self.model = model
        self.dataset = dataset
        self.settings = settings
        self.engine = engine  # the robot column: the node's reply path over the same model
        self.cache = SceneCache(model.config.scene_encoder.preprocess, seed=settings.seed)
        self.predictions: list[dict[str, Any]] = []
        self._clouds: dict[str, SceneCloud] = {}  # one cloud object per scene: the engine caches its objects by it

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
            if (self.settings.blind or "blind" not in system) and (system != ROBOT or self.engine is not None)
        }
        total = sum(len(items) for items in selected.values()) * len(modes)
        with tqdm(total=total, desc="eval", unit="sample", disable=not self.settings.progress) as bar:
            for task, positions in selected.items():
                if not positions:
                    continue
                for blind in modes:
                    tokens_system, head_system = (BLIND_TOKENS, BLIND_HEAD) if blind else (MODEL_TOKENS, MODEL_HEAD)
                    metrics = self._run_task(task, positions, blind, bar)
                    if "robot" in metrics:
                        results[ROBOT][task] = metrics.pop("robot")
                    if task == "grounding":
                        results[tokens_system][task] = metrics["tokens"]
                        results[head_system][task] = metrics["head"]
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
        reference_plans: dict[int, list[dict[str, Any]]] = {}
        robot: dict[int, Any] = {}  # the robot's reply value per position (text, box or steps)
        programs: dict[int, tuple[dict[str, Any], str | None]] = {}
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
            elif task == "plan":
                reference_plans[position] = list((annotation.plan or {}).get("steps", []))
                text = self._generate(scene, prompt, task, blind).text
                plans[position] = self._plan_with_poses(text, scene, record, blind)
                sample.update(text=text, steps=plans[position], reference=annotation.answer)
            else:
                texts[position] = self._generate(scene, prompt, task, blind).text
                references[position] = annotation.answer
                sample.update(text=texts[position], reference=annotation.answer)
            if self.engine is not None and not blind and "<" not in annotation.prompt:
                robot[position], program, sample["robot"] = self._robot_reply(task, annotation, record)
                if self.model.config.question_programs and task in ("qa", "grounding", "plan"):
                    expected = annotation_program(annotation) if task != "qa" or "question_type" in annotation.attributes else None
                    programs[position] = ({"text": program, "parsed": program is not None,
                                           "answered": program is not None}, expected)
                    sample["robot"].update(program=program, expected_program=expected)
            self.predictions.append(sample)
            bar.update(1)
        metrics = self._task_metrics(task, texts, references, token_boxes, head_boxes, target_boxes, plans, reference_plans)
        if robot:
            if task == "grounding":
                robot_metrics = grounding_metrics(robot, {key: target_boxes[key] for key in robot})
            elif task == "plan":
                robot_metrics = plan_metrics(robot, {key: reference_plans[key] for key in robot},
                                             pose_tolerance_m=self.settings.pose_tolerance_m)
            else:
                robot_references = {key: self.dataset.entries[key].annotation.answer for key in robot}
                robot_metrics = (qa_metrics if task == "qa" else text_metrics)(robot, robot_references)
            metrics["robot"] = {**robot_metrics, **program_metrics(programs)}
        return metrics

    def _task_metrics(self, task: str, texts: dict, references: dict, token_boxes: dict, head_boxes: dict,
                      target_boxes: dict, plans: dict, reference_plans: dict) -> dict[str, Any]:
        if task == "grounding":
            return {"tokens": grounding_metrics(token_boxes, target_boxes), "head": grounding_metrics(head_boxes, target_boxes)}
        if task == "plan":
            return plan_metrics(plans, reference_plans, pose_tolerance_m=self.settings.pose_tolerance_m)
        if task == "qa":
            return qa_metrics(texts, references)
        return text_metrics(texts, references)

    def _robot_reply(self, task: str, annotation: Annotation, record: SceneRecord) -> tuple[Any, str | None, dict[str, Any]]:
        """The robot's reply to the annotation's prompt (the engine's ``answer`` / ``ground`` /
        ``plan`` on the record's cloud): (value to score, program behind it, what the report keeps)."""
        assert self.engine is not None
        if record.scene_id not in self._clouds:
            self._clouds = {record.scene_id: robot_cloud(record)}
        cloud = self._clouds[record.scene_id]
        if task == "grounding":
            reply = self.engine.ground(cloud, annotation.prompt)
            box = reply.target.box if reply.target is not None else None
            return box, reply.program, {"text": reply.text, "box": _box_list(box)}
        if task == "plan":
            planned = self.engine.plan(cloud, annotation.prompt)
            steps = planned.plan.steps
            return steps, planned.program, {"text": planned.text, "steps": steps, "source": planned.plan.source}
        answered = self.engine.answer(cloud, annotation.prompt)
        return answered.text, answered.program, {"text": answered.text}

    def scene_use(self) -> dict[str, dict[str, float]]:
        """Per task: mean teacher-forced answer loss with the own scene, another scene and no scene.

        "Another scene" is the scene of the next selected item from a different scene (the
        selection taken as a ring), so every item is paired with a real scene of the split.
        """
        selected = select_items(self.dataset, self.settings)
        measured: dict[str, dict[str, float]] = {}
        torch_model = _torch_model(self.model)  # teacher-forced losses are a torch forward pass
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
                prompt = model_prompt(torch_model, entry.annotation, scene)
                target, _ = model_target(torch_model, entry.annotation, scene)
                with torch.no_grad():
                    for name, scene_batch, blind in (("own scene", scene, False), ("other scene", other, False), ("no scene", None, True)):
                        output = torch_model(scene_batch, [prompt], [target], blind=blind, return_logits=False)
                        losses[name].append(float(output.language_loss))
            measured[task] = {name: float(np.mean(values)) for name, values in losses.items()}
            measured[task]["items"] = len(positions)
        return measured

    def _plan_with_poses(self, text: str, scene: SceneBatch, record: SceneRecord, blind: bool) -> list[dict[str, Any]]:
        """The model's plan text as steps, each ``navigate_to`` target grounded by the model's own
        box (the head's, else the location tokens')."""
        steps = [dict(step) for step in parse_plan_text(text)]
        grounded: dict[str, OrientedBox | None] = {}
        floor_z = floor_height(record)
        for step in steps:
            if step["action"] not in NAVIGATION_ACTIONS:
                continue
            target = step["target"]
            if target not in grounded:
                _, token_box, head_box = self.ground(scene, GROUNDING_QUERY.format(target=target), blind)
                grounded[target] = head_box if head_box is not None else token_box
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


def _torch_model(model: Any) -> ThreeDLLM:
    """The torch model behind ``model`` (itself, or the one an exported-decoder OnnxGenerator wraps)."""
    return model.model if isinstance(model, OnnxGenerator) else model


def language_model_description(model: Any) -> str:
    """``torch``, or ``onnxruntime int8`` (the exported decoders' precision; ``onnxruntime int4 default, int8
    programs`` where the adapters' differ) for an OnnxGenerator."""
    if not isinstance(model, OnnxGenerator):
        return "torch"
    precisions = {name: decoder.export.metadata.get("precision", "?") for name, decoder in model.decoders.items()}
    if len(set(precisions.values())) == 1:
        return f"onnxruntime {precisions['default']}"
    return "onnxruntime " + ", ".join(f"{precision} {name}" for name, precision in precisions.items())


def _language_backend(checkpoint: str | Path, model: ThreeDLLM, settings: EvalSettings) -> Any:
    """``model``, or an OnnxGenerator over its exported decoders where ``settings.lm_backend`` resolves to
    onnxruntime (as the node's would: ``runtime/lm_backend.py``); says which on stderr."""
    engine_settings = EngineSettings(checkpoint=str(checkpoint), lm_backend=settings.lm_backend,
                                     lm_precision=settings.lm_precision)
    engine_settings.validate()
    generator, _, note = serving_generator(engine_settings, Path(checkpoint), model)
    print(note, file=sys.stderr)
    return generator


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
    if model is None:
        model = _language_backend(checkpoint, _load(checkpoint), settings)
    torch.manual_seed(settings.seed)
    started = time.perf_counter()
    # the robot column: the node's own reply path, fed the record's gravity-frame cloud (z up), so
    # its boxes and goal poses are in the frame of the annotations
    robot_settings = EngineSettings(checkpoint=str(checkpoint), up_axis="z")
    if settings.max_new_tokens is not None:  # a quick run caps the robot's answers too
        robot_settings = replace(robot_settings, max_new_tokens=min(robot_settings.max_new_tokens, settings.max_new_tokens))
    engine = InferenceEngine.around(model, robot_settings) if settings.robot else None
    evaluator = Evaluator(model, dataset, settings, engine)
    results = evaluator.run()
    was_training = model.training
    model.eval()
    scene_use = evaluator.scene_use() if settings.scene_use else {}
    model.train(was_training)
    report = parameter_report(_torch_model(model))
    for system in results:
        if "3D query head" not in system:
            results[system]["trainable parameters"] = report["trainable"]
    document = {
        "checkpoint": str(checkpoint),
        "dataset": str(dataset_directory),
        "split": settings.split,
        "limit": settings.limit,
        "language_model": language_model_description(model),
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
    title += f", language model {document['language_model']}"
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
    parser.add_argument("--no-robot", action="store_true",
                        help="skip the robot column (every prompt through the node's reply path)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int, help="cap every answer at N tokens (quick runs)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--lm-backend", choices=LM_BACKENDS, default="auto",
                        help="language model for every column: auto (as the node: onnxruntime on the CPU for a "
                             "trained checkpoint, else torch), torch or onnxruntime (default: %(default)s)")
    parser.add_argument("--lm-precision", choices=LM_PRECISIONS, default=EngineSettings.lm_precision,
                        help="onnxruntime decoder weights (default: %(default)s)")
    arguments = parser.parse_args(argv)
    if arguments.limit is not None and arguments.limit < 1:
        print("threed-llm eval: --limit must be at least 1", file=sys.stderr)
        return 2
    settings = EvalSettings(split=arguments.split, limit=arguments.limit, tasks=tuple(arguments.tasks),
                            blind=not arguments.no_blind, scene_use=not arguments.no_scene_use, robot=not arguments.no_robot, seed=arguments.seed, progress=not arguments.quiet,
                            max_new_tokens=arguments.max_new_tokens, lm_backend=arguments.lm_backend,
                            lm_precision=arguments.lm_precision)
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
