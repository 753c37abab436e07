"""The shipped default checkpoint (models/threed-llm-mini) stays as good as its model card says.

A small fixed subset is regenerated deterministically (the first scenes of the training
recipe's dataset, whose test split the card's table comes from), evaluated with the same
code as `threed-llm eval` and the torch language model the card was measured with, and the
language model's own columns must stay at or above the floors recorded in `model_card.json`.
A broken checkpoint, loader, preprocessing or prompt format fails this test. The robot's
replies (the node's path) and the blind baseline cost as much again each; they are held to
their floors once, on the decoders the robot runs by default
(`test_onnx_decoder.test_exported_decoders_hold_the_cards_floors`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from threed_llm_ros.data.generate import GenerateConfig, generate_dataset
from threed_llm_ros.eval.evaluate import (
    BLIND_HEAD, BLIND_TOKENS, MODEL_HEAD, MODEL_TOKENS, ROBOT, EvalSettings, evaluate,
)
from threed_llm_ros.model.checkpoint import load_checkpoint

CHECKPOINT = Path(__file__).resolve().parent.parent / "models" / "threed-llm-mini"
CARD = json.loads((CHECKPOINT / "model_card.json").read_text()) if (CHECKPOINT / "model_card.json").is_file() else {}


def test_checkpoint_is_small_and_complete() -> None:
    assert (CHECKPOINT / "config.json").is_file() and (CHECKPOINT / "model.safetensors").is_file()
    from threed_llm_ros.runtime.export import EXPORT_DIRECTORY

    # the shipped files; onnx/ is the git-ignored export cache (`make lm-export`, lm_backend auto), not shipped
    exports = CHECKPOINT / EXPORT_DIRECTORY
    size = sum(path.stat().st_size for path in CHECKPOINT.rglob("*")
               if path.is_file() and exports not in path.parents)
    assert size < 50 * 2**20, f"the default checkpoint is {size / 2**20:.1f} MiB; it must stay well under 50 MB"
    assert CARD.get("floors"), "model_card.json must record the CI floors"


def subset_dataset(directory: Path) -> Path:
    """The CI subset: the first scenes of the training recipe's dataset, regenerated, with their
    RGB and depth images (the robot column's node path takes the whole RGB-D frame, as the node does)."""
    subset = CARD["ci_subset"]
    generate = subset["generate"]
    config = GenerateConfig.from_options({**generate, "scenes": subset["scenes"], "save_images": True})
    generate_dataset(directory, config, progress=False)
    return directory


@pytest.mark.slow
def test_shipped_checkpoint_stays_above_its_floors(tmp_path: Path) -> None:
    """The language model's floors with the torch model (`threed-llm eval --lm-backend torch`)."""
    subset = CARD["ci_subset"]
    dataset = subset_dataset(tmp_path / "dataset")
    model = load_checkpoint(CHECKPOINT)
    settings = EvalSettings(split=subset["split"], limit=subset["limit"], tasks=tuple(subset["tasks"]), progress=False,
                            seed=subset.get("seed", 0), scene_use=False, blind=False, robot=False)
    report = evaluate(CHECKPOINT, dataset, tmp_path / "report", settings, model=model)["systems"]
    assert ROBOT not in report
    failures = floor_failures(report, systems=[system for system in CARD["floors"] if system != ROBOT])
    assert not failures, "\n".join(failures)


def floor_failures(report: dict, systems: list[str] | None = None) -> list[str]:
    """One line per floor of the card (of ``systems``, default all) that ``report`` does not reach."""
    return [
        f"{system} / {task} / {metric}: {report[system][task][metric]} < floor {floor}"
        for system, tasks in CARD["floors"].items() if systems is None or system in systems
        for task, metrics in tasks.items() for metric, floor in metrics.items()
        if report[system][task][metric] is None or report[system][task][metric] < floor
    ]


def assert_the_scene_matters(report: dict) -> None:
    """Where the card shows the scene matters: the robot's replies (the node's path: programs over the
    object layer) beat the language prior's answers and plans, plan goals reach their targets far more
    often, and the boxes (the robot's objects, the 3D query head) land on the targets far more often and
    far nearer than the blind head's."""
    robot, model, blind = report[ROBOT], report[MODEL_TOKENS], report[BLIND_TOKENS]
    assert robot["qa"]["exact_match"] > blind["qa"]["exact_match"] + 0.1
    assert robot["plan"]["step_accuracy"] > blind["plan"]["step_accuracy"]
    assert robot["plan"]["plan_success"] > blind["plan"]["plan_success"] + 0.15
    assert model["plan"]["step_accuracy"] > blind["plan"]["step_accuracy"]
    assert model["grounding"]["missing"] < blind["grounding"]["missing"]
    blind_head = report[BLIND_HEAD]["grounding"]
    for boxes in (report[MODEL_HEAD]["grounding"], report[ROBOT]["grounding"]):
        assert boxes["mean_iou"] > blind_head["mean_iou"] + 0.05
        assert boxes["center_error_median_m"] < 0.5 * blind_head["center_error_median_m"]
