"""``threed-llm eval`` on a tiny generated dataset with a real (untrained) checkpoint."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from threed_llm_ros.data.annotation_types import QUESTION_TYPES, TASKS
from threed_llm_ros.data.programs import parse_program
from threed_llm_ros.eval import evaluate as evaluate_module
from threed_llm_ros.eval.evaluate import BLIND_HEAD, BLIND_TOKENS, MODEL_HEAD, MODEL_TOKENS, ROBOT, navigation_pose
from threed_llm_ros.geometry.boxes import OrientedBox
from threed_llm_ros.model.checkpoint import parameter_report, save_checkpoint
from threed_llm_ros.model.threed_llm import ThreeDLLM
from threed_llm_ros.train.config import load_train_config, model_config_of
from threed_llm_ros.train.trainer import ensure_dataset

pytestmark = pytest.mark.slow

TEXT_METRICS = ("BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr")
GROUNDING_METRICS = ("acc@0.25", "acc@0.5", "mean_iou", "center_error_mean_m", "center_error_median_m", "missing", "count")


@pytest.fixture(scope="module")
def setup(repo_root: Path, tmp_path_factory, smollm2):
    """A 3-scene dataset and an untrained tiny checkpoint."""
    config = load_train_config(repo_root / "config" / "train_tiny.yaml")
    config.data.directory = str(tmp_path_factory.mktemp("data") / "sim_tiny")
    dataset = ensure_dataset(config.data, progress=False)
    model = ThreeDLLM(model_config_of(config))
    checkpoint = save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "tiny")
    return dataset, checkpoint, parameter_report(model)["trainable"]


def _in_unit_range(value) -> bool:
    return value is not None and 0.0 <= value <= 1.0


def test_eval_writes_every_metric_for_model_and_blind_baseline(setup, tmp_path: Path) -> None:
    dataset, checkpoint, trainable = setup
    output = tmp_path / "report"
    code = evaluate_module.main([
        "--checkpoint", str(checkpoint), "--dataset", str(dataset), "--split", "train", "--limit", "1",
        "--max-new-tokens", "6", "--output", str(output), "--quiet", "--lm-backend", "torch",
    ])
    assert code == 0
    document = json.loads((output / "report.json").read_text())
    assert document["language_model"] == "torch"
    systems = document["systems"]
    assert set(systems) == {ROBOT, MODEL_TOKENS, MODEL_HEAD, BLIND_TOKENS, BLIND_HEAD}
    # the robot column: every prompt without the model's box markers through the engine's reply path
    robot = systems[ROBOT]
    assert {"qa", "grounding", "plan"} <= set(robot)
    assert _in_unit_range(robot["qa"]["exact_match"]) and robot["qa"]["count"] == 1
    assert _in_unit_range(robot["grounding"]["acc@0.25"]) and robot["grounding"]["count"] == 1
    assert _in_unit_range(robot["plan"]["plan_success"]) and robot["plan"]["count"] == 1
    for system in (MODEL_TOKENS, BLIND_TOKENS):
        results = systems[system]
        assert set(results) == set(TASKS) | {"trainable parameters"}
        assert results["trainable parameters"] == trainable == document["trainable_parameters"]
        for task in ("caption", "dense_caption", "qa"):
            assert results[task]["count"] == 1
            for metric in ("BLEU-1", "BLEU-4", "ROUGE-L"):
                assert _in_unit_range(results[task][metric]), (system, task, metric)
            assert results[task]["CIDEr"] is not None and results[task]["CIDEr"] >= 0.0
        assert _in_unit_range(results["qa"]["exact_match"])
        assert _in_unit_range(results["plan"]["step_accuracy"]) and _in_unit_range(results["plan"]["plan_success"])
    for system in (MODEL_TOKENS, MODEL_HEAD, BLIND_TOKENS, BLIND_HEAD):
        grounding = systems[system]["grounding"]
        assert set(GROUNDING_METRICS) <= set(grounding)
        assert _in_unit_range(grounding["acc@0.25"]) and _in_unit_range(grounding["acc@0.5"])
        assert grounding["acc@0.5"] <= grounding["acc@0.25"] and grounding["count"] == 1
        assert grounding["center_error_mean_m"] is None or grounding["center_error_mean_m"] >= 0.0
    # the head's box always exists (the <box3d> state is forced), for the blind baseline too
    assert systems[MODEL_HEAD]["grounding"]["missing"] == 0 and systems[BLIND_HEAD]["grounding"]["missing"] == 0
    assert systems[MODEL_HEAD]["grounding"]["center_error_mean_m"] is not None
    # one prediction per task and mode, blind ones marked
    predictions = document["predictions"]
    assert len(predictions) == 2 * len(TASKS) and sum(p["blind"] for p in predictions) == len(TASKS)
    report = (output / "report.md").read_text()
    assert f"| task | metric | {ROBOT} | {MODEL_TOKENS} | {MODEL_HEAD} | {BLIND_TOKENS} | {BLIND_HEAD} |" in report
    robot_samples = [p for p in predictions if "robot" in p]
    assert robot_samples and all(not p["blind"] and "text" in p["robot"] for p in robot_samples)
    assert "| grounding | acc@0.25 |" in report and "| qa | exact_match |" in report


def test_bad_checkpoint_and_dataset_fail_clearly(setup, tmp_path: Path, capsys) -> None:
    dataset, checkpoint, _ = setup
    broken = tmp_path / "broken"
    shutil.copytree(checkpoint, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated weights
    arguments = ["--dataset", str(dataset), "--split", "train", "--limit", "1", "--output", str(tmp_path / "r"), "--quiet"]
    assert evaluate_module.main(["--checkpoint", str(broken), *arguments]) == 2
    assert "cannot load checkpoint" in capsys.readouterr().err
    assert evaluate_module.main(["--checkpoint", str(tmp_path / "nowhere"), *arguments]) == 2
    assert "not a threed_llm_ros checkpoint" in capsys.readouterr().err
    assert evaluate_module.main(["--checkpoint", str(checkpoint), "--dataset", str(tmp_path / "no-data"),
                                 "--output", str(tmp_path / "r"), "--quiet"]) == 2
    assert "index.jsonl" in capsys.readouterr().err
    assert not (tmp_path / "r" / "report.json").exists()


def test_navigation_pose_faces_the_box_from_the_sensor_side() -> None:
    box = OrientedBox((3.0, 0.0, 0.4), (0.8, 0.6, 0.8), 0.0)
    pose = navigation_pose(box, floor_z=0.0, standoff_m=0.6)
    assert pose["position"] == pytest.approx([3.0 - 0.4 - 0.6, 0.0, 0.0])
    assert pose["orientation"] == pytest.approx([0.0, 0.0, 0.0, 1.0])  # facing +x, toward the box
    assert math.isclose(sum(v * v for v in pose["orientation"]), 1.0)


def test_scene_use_separates_a_model_that_reads_its_scene_from_one_that_cannot(setup, tmp_path: Path) -> None:
    """Own-scene vs other-scene answer loss: different for a model whose scene tokens depend on the scene,
    equal once the scene tokens are made constant (what the first shipped checkpoint's encoder had become)."""
    import torch

    from threed_llm_ros.data.dataset import load_dataset
    from threed_llm_ros.eval.evaluate import EvalSettings, Evaluator, evaluate
    from threed_llm_ros.model.checkpoint import load_checkpoint

    dataset_directory, checkpoint, _ = setup
    model = load_checkpoint(checkpoint)
    settings = EvalSettings(split="train", tasks=("qa",), limit=6, progress=False, max_new_tokens=4, lm_backend="torch")
    dataset = load_dataset(dataset_directory, splits="train", tasks=["qa"])
    reading = Evaluator(model, dataset, settings).scene_use()["qa"]
    assert reading["items"] == 6
    assert all(math.isfinite(reading[name]) for name in ("own scene", "other scene", "no scene"))
    assert abs(reading["own scene"] - reading["other scene"]) > 1e-4, reading

    last_linear = [m for m in model.scene_encoder.modality_projector if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last_linear.weight.zero_()  # every scene now gives the same scene tokens
    constant = Evaluator(model, dataset, settings).scene_use()["qa"]
    assert abs(constant["own scene"] - constant["other scene"]) < 1e-5, constant

    document = evaluate(checkpoint, dataset_directory, tmp_path / "report", settings)
    assert set(document["scene_use"]) == {"qa"} and document["scene_use"]["qa"]["items"] == 6
    assert "| qa | 6 |" in (tmp_path / "report" / "report.md").read_text()


def test_a_program_model_reports_how_the_robots_programs_fared(setup, tmp_path: Path) -> None:
    """With question_programs the robot column gains the program rates. An untrained language
    model writes no parsable program, so the robot answers in free text, grounds by the words'
    category over the object layer and plans by rules; nothing is a copy of the engine's logic."""
    dataset, _, _ = setup
    config = model_config_of(load_train_config(Path(__file__).parents[1] / "config" / "train_tiny.yaml"))
    config.scene_encoder = replace(config.scene_encoder, word_groups=4, word_instances=True)
    config.question_programs = True
    checkpoint = save_checkpoint(ThreeDLLM(config), tmp_path / "programs")
    settings = evaluate_module.EvalSettings(split="train", limit=2, tasks=("qa", "grounding", "plan"), scene_use=False,
                                            progress=False, max_new_tokens=4, lm_backend="torch")
    document = evaluate_module.evaluate(checkpoint, dataset, tmp_path / "report", settings)
    systems = document["systems"]
    assert set(systems) == {ROBOT, MODEL_TOKENS, MODEL_HEAD, BLIND_TOKENS, BLIND_HEAD}
    robot = systems[ROBOT]
    for task in ("qa", "grounding", "plan"):
        assert robot[task]["program parsed"] == 0.0 and robot[task]["answered by program"] == 0.0, task
        assert robot[task]["program exact"] in (0.0, None), task
    assert robot["grounding"]["count"] == 2 and robot["plan"]["count"] == 2
    sources = set()
    for prediction in document["predictions"]:
        if not prediction["blind"]:
            expected = {"grounding": ("locate",), "plan": ("plan",)}.get(prediction["task"], QUESTION_TYPES)
            reply = prediction["robot"]
            if reply["expected_program"] is not None:
                assert parse_program(reply["expected_program"])["question_type"] in expected
            assert reply["program"] is None
            sources.add(reply.get("source"))
    assert "rules" in sources or "model" in sources  # the engine's plan fallbacks, as the node runs them
