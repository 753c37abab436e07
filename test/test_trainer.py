"""Training on the real SmolLM2: collation, loss going down, stage freezing, resume, log and plot."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from threed_llm_ros.config_io import config_from_dict
from threed_llm_ros.data.annotation_types import BOX_TOKEN, QUESTION_TYPES
from threed_llm_ros.data.programs import PROGRAM_REQUEST, parse_program
from threed_llm_ros.data.dataset import load_dataset
from threed_llm_ros.errors import ConfigError
from threed_llm_ros.geometry.iou import rotated_box_iou
from threed_llm_ros.model.box_head import BOX3D_TOKEN
from threed_llm_ros.model.location_tokens import LOCATION_TOKEN_PATTERN
from threed_llm_ros.model.threed_llm import ThreeDLLM
from threed_llm_ros.train import trainer as trainer_module
from threed_llm_ros.train.collate import SceneCache, collate
from threed_llm_ros.train.config import (
    StageConfig, load_train_config, model_config_of, stage_from_dict, train_config_from_dict,
)
from threed_llm_ros.train.optimisation import StageSampler, parameter_group_members
from threed_llm_ros.train.run_log import LOG_FILE, PLOT_FILE, read_log
from threed_llm_ros.train.trainer import Trainer, ensure_dataset, train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_config(repo_root: Path, tmp_path_factory):
    """config/train_tiny.yaml with its data generated into a temporary directory (by the trainer's own path)."""
    config = load_train_config(repo_root / "config" / "train_tiny.yaml")
    config.data.directory = str(tmp_path_factory.mktemp("data") / "sim_tiny")
    config.output = str(tmp_path_factory.mktemp("run"))
    config.progress = False
    ensure_dataset(config.data, progress=False)
    return config


def _config(tiny_config, tmp_path: Path, **changes):
    config = copy.deepcopy(tiny_config)
    config.output = str(tmp_path / "run")
    for key, value in changes.items():
        setattr(config, key, value)
    return config


def test_dataset_is_generated_when_missing(tiny_config) -> None:
    dataset = load_dataset(tiny_config.data.directory, splits="train")
    assert len(dataset.scene_ids) == 3
    assert set(dataset.counts()["tasks"]) == {"caption", "dense_caption", "qa", "grounding", "plan"}


def test_collate_fills_boxes_and_caches_scenes(tiny_config, smollm2) -> None:
    model = ThreeDLLM(model_config_of(tiny_config))
    dataset = load_dataset(tiny_config.data.directory, splits="train")
    grounding = next(i for i, e in enumerate(dataset.entries) if e.annotation.task == "grounding")
    dense = next(i for i, e in enumerate(dataset.entries) if e.annotation.task == "dense_caption")
    caption = next(i for i, e in enumerate(dataset.entries) if e.annotation.task == "caption")
    loads: list[str] = []

    def loader(scene_id: str):
        loads.append(scene_id)
        return dataset.scene(scene_id)

    cache = SceneCache(model.config.scene_encoder.preprocess)
    items = [(dataset.entries[p].scene_id, dataset.entries[p].annotation) for p in (grounding, dense, caption)]
    batch = collate(model, items, cache, loader=loader)
    assert batch.scene.batch_size == 3 and batch.tasks == ["grounding", "dense_caption", "caption"]
    assert all(BOX_TOKEN not in text for text in batch.prompts + batch.targets)
    # grounding: <box3d> first (the head's query), then the description and exactly 7 location tokens
    assert batch.targets[0].startswith(BOX3D_TOKEN + " ") and len(LOCATION_TOKEN_PATTERN.findall(batch.targets[0])) == 7
    assert batch.target_boxes[0] is not None and batch.target_boxes[1] is None and batch.target_boxes[2] is None
    assert len(LOCATION_TOKEN_PATTERN.findall(batch.prompts[1])) == 7  # the dense caption's box is in the prompt
    # the location tokens decode back to the annotated box (up to quantisation)
    target = dataset.entries[grounding].annotation.target_box
    decoded = model.boxes_in_text(batch.targets[0], cache.get(items[0][0]))
    assert len(decoded) == 1 and rotated_box_iou(decoded[0], target) > 0.6
    # the head's target is the same box in normalised units
    normalized = model.codec.find_boxes(batch.targets[0])[0]
    assert np.allclose(normalized[:3], batch.target_boxes[0][:3], atol=2.4 / 128)
    # patch semantics: per group the category/colour of the object it lies on, only names the scene holds
    encoder_config = model.config.scene_encoder
    assert batch.patch_labels is not None and batch.patch_labels.shape == (3, encoder_config.encoder.num_groups, 2)
    for index, (scene_id, _) in enumerate(items):
        record = dataset.scene(scene_id)
        categories = {encoder_config.semantic_categories.index(o.category) + 1 for o in record.objects}
        colours = {encoder_config.semantic_colors.index(o.color) + 1 for o in record.objects}
        on_object = batch.patch_labels[index, :, 0] > 0
        assert int(on_object.sum()) < encoder_config.encoder.num_groups  # walls and floor are background
        assert set(batch.patch_labels[index, on_object, 0].tolist()) <= categories
        assert set(batch.patch_labels[index, on_object, 1].tolist()) <= colours
    # 16 far-apart groups land mostly on walls and floor; some must land on objects in the 3 scenes
    names = (encoder_config.semantic_categories, encoder_config.semantic_colors)
    every_scene = SceneCache(model.config.scene_encoder.preprocess)
    all_labels = torch.stack([every_scene.patch_labels(dataset.scene(s), *names) for s in dataset.scene_ids])
    assert int((all_labels[..., 0] > 0).sum()) > 0
    # each scene was read and preprocessed once; a second batch reuses the cache
    assert sorted(set(loads)) == sorted(loads) and len(cache) == len(set(loads))
    again = collate(model, items, cache, loader=loader)
    assert len(loads) == len(set(loads)) and torch.equal(again.scene.patches, batch.scene.patches)


def test_training_steps_lower_the_loss(tiny_config, tmp_path: Path) -> None:
    trainer = Trainer(_config(tiny_config, tmp_path))
    trainer.prepare_stage(1)  # instruct: every task, LoRA + rows + head trained
    stage = tiny_config.stages[1]
    batch = trainer.batch(StageSampler(trainer.load_data(), stage, 1, seed=3), 0)
    steps = [trainer.train_step(batch, stage, seed=step) for step in range(5)]
    losses = [step["loss"] for step in steps]
    assert np.mean(losses[-2:]) < 0.8 * np.mean(losses[:2]), losses
    assert all(step["semantic_loss"] > 0 for step in steps)  # the mini preset's patch-semantics head trains too


def test_bf16_autocast_trains_and_computes_in_bf16(tiny_config, tmp_path: Path) -> None:
    """The GPU recipe's bf16 autocast, exercised on CPU: the same model code runs under bf16 and learns."""
    assert not Trainer(_config(tiny_config, tmp_path)).bf16  # auto on CPU: fp32
    trainer = Trainer(_config(tiny_config, tmp_path, precision="bf16"))
    assert trainer.bf16
    trainer.prepare_stage(1)
    # One short question per step: bf16 matmuls are slow on CPUs without bf16 units (measured here: 11 s a
    # step for one question, 21 s for the stage's two samples; fp32 1.2 s), and the GPU recipe is what uses it.
    stage = dataclasses.replace(tiny_config.stages[1], batch_size=1, tasks=["qa"], task_weights=None)
    batch = trainer.batch(StageSampler(trainer.load_data(), stage, 1, seed=3), 0)
    dtypes: set[torch.dtype] = set()
    output_layer = trainer.model.causal_lm.get_output_embeddings()
    hook = output_layer.register_forward_hook(lambda _module, _inputs, output: dtypes.add(output.dtype))
    steps = [trainer.train_step(batch, stage, seed=step) for step in range(3)]
    hook.remove()
    assert dtypes == {torch.bfloat16}
    losses = [step["loss"] for step in steps]
    assert all(np.isfinite(losses)) and losses[-1] < 0.8 * losses[0], losses  # measured: 4.48, 3.06, 2.02
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # master weights stay fp32
    with pytest.raises(ConfigError, match="precision"):
        _config(tiny_config, tmp_path, precision="fp16").__post_init__()


def test_a_program_stage_trains_the_program_adapter_on_words_only(tiny_config, tmp_path: Path) -> None:
    """Questions and referring expressions in, their programs out, no scene: only the program
    adapter learns, so what the default adapter writes (captions, answers, plans) is unchanged."""
    stage = StageConfig(name="programs", steps=5, lr=1e-3, batch_size=4, tasks=["qa", "grounding", "plan"],
                        train=["program_lora"], kind="programs", warmup_steps=0, synthetic_instructions=2)
    overrides = copy.deepcopy(tiny_config.model_overrides)
    overrides["question_programs"] = True
    overrides.setdefault("scene_encoder", {}).update(word_groups=4, word_instances=True)
    trainer = Trainer(_config(tiny_config, tmp_path, stages=[stage], model_overrides=overrides))
    trainer.prepare_stage(0)
    sampler = StageSampler(trainer.load_data(), stage, 0, seed=3)
    batch = trainer.batch(sampler, 0)
    assert batch.scene is None and set(batch.tasks) <= {"qa", "grounding", "plan"}
    assert len(batch.prompts) == 4 + 2 and batch.tasks[-2:] == ["plan", "plan"]  # two made from words alone
    assert batch.prompts == trainer.batch(sampler, 0).prompts, "batches are deterministic, the made-up ones too"
    for prompt, target in zip(batch.prompts, batch.targets):
        assert prompt.startswith(PROGRAM_REQUEST + "\n")
        assert parse_program(target)["question_type"] in (*QUESTION_TYPES, "locate", "plan")
    model = trainer.model
    question = "How many chairs are there?"
    before_text = model.generate(None, question, max_new_tokens=6, blind=True).text
    before = _snapshot(trainer)
    losses = [trainer.train_step(batch, stage, seed=step)["loss"] for step in range(5)]
    assert np.mean(losses[-2:]) < 0.8 * np.mean(losses[:2]), losses
    changed = _changed(before, trainer)
    assert changed["program_lora"] and not any(value for group, value in changed.items() if group != "program_lora")
    assert model.generate(None, question, max_new_tokens=6, blind=True).text == before_text
    with pytest.raises(ConfigError, match="programs needs tasks"):
        StageConfig(name="mixed", steps=1, lr=1e-3, batch_size=1, tasks=["qa", "caption"], train=["lora"], kind="programs")
    with pytest.raises(ConfigError, match="synthetic_instructions"):
        StageConfig(name="words", steps=1, lr=1e-3, batch_size=1, tasks=["plan"], train=["lora"], synthetic_instructions=2)
    plain = Trainer(_config(tiny_config, tmp_path / "plain", stages=[stage]))
    with pytest.raises(ConfigError, match="question_programs: true"):
        plain.prepare_stage(0)


def _snapshot(trainer: Trainer) -> dict[str, list[torch.Tensor]]:
    return {group: [p.detach().clone() for p in params] for group, params in parameter_group_members(trainer.model).items()}


def _changed(before: dict[str, list[torch.Tensor]], trainer: Trainer) -> dict[str, bool]:
    after = parameter_group_members(trainer.model)
    return {group: any(not torch.equal(b, a) for b, a in zip(before[group], after[group])) for group in before}


def test_stage_freezing(tiny_config, tmp_path: Path) -> None:
    trainer = Trainer(_config(tiny_config, tmp_path))
    dataset = trainer.load_data()
    embedding = trainer.model.causal_lm.get_input_embeddings().weight
    lora_a = next(p for n, p in trainer.model.named_parameters() if "lora_A" in n)
    for stage_index, expected in ((0, {"point_encoder", "projector", "qformer", "experts", "router"}), (2, {"experts", "router"})):
        stage = tiny_config.stages[stage_index]
        trainer.prepare_stage(stage_index)
        before = _snapshot(trainer)
        lora_before, embedding_before = lora_a.detach().clone(), embedding.detach().clone()
        batch = trainer.batch(StageSampler(dataset, stage, stage_index, seed=0), 0)
        trainer.train_step(batch, stage, seed=0)
        changed = {group for group, moved in _changed(before, trainer).items() if moved}
        assert changed == expected, (stage.name, changed)
        assert torch.equal(lora_a, lora_before) and torch.equal(embedding, embedding_before)
    # a checkpoint saved mid-stage still holds every tensor a fresh model has (frozen ones included)
    trainer.position.global_step = 1
    directory = trainer.save()
    from safetensors.torch import load_file

    saved = load_file(str(directory / "model.safetensors"))
    assert any("lora_A" in key for key in saved) and torch.equal(saved["box_head.network.0.weight"], trainer.model.box_head.network[0].weight)
    assert [p.requires_grad for p in parameter_group_members(trainer.model)["lora"]] == [False] * len(parameter_group_members(trainer.model)["lora"])


def test_resume_repeats_the_uninterrupted_run_and_writes_log_and_plot(tiny_config, tmp_path: Path) -> None:
    stages = copy.deepcopy(tiny_config.stages[:2])
    stages[0].steps, stages[1].steps = 1, 2  # the checkpoint at step 2 falls inside the instruct stage
    whole = _config(tiny_config, tmp_path / "whole", stages=stages, checkpoint_every=2)
    final = train(whole)
    assert final is not None and (final / "model.safetensors").is_file()
    records = read_log(Path(whole.output) / LOG_FILE)
    assert [r["step"] for r in records] == [0, 1, 2] and [r["stage"] for r in records] == ["align", "instruct", "instruct"]
    for record in records:
        assert {"loss", "language_loss", "box_loss", "load_balance_loss", "lr", "seconds", "grad_norm"} <= set(record)
        assert np.isfinite(record["loss"]) and record["lr"] > 0 and record["seconds"] > 0
    assert (Path(whole.output) / PLOT_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    parted = _config(tiny_config, tmp_path / "parted", stages=stages, checkpoint_every=2)
    assert train(parted, max_steps=2) is None  # interrupted after the checkpoint at step 2
    with pytest.raises(ConfigError, match="--resume"):
        train(parted)
    resumed = Trainer(parted)
    checkpoint = resumed.resume()
    assert checkpoint is not None and checkpoint.name == "step_000002"
    assert resumed.position.global_step == 2 and resumed.position.stage_index == 1 and resumed.position.stage_step == 1
    assert resumed.optimizer is not None and len(resumed.optimizer.state) > 0  # AdamW moments restored
    assert resumed.run() is not None
    resumed_records = read_log(Path(parted.output) / LOG_FILE)
    assert [r["step"] for r in resumed_records] == [0, 1, 2]
    assert resumed_records[2]["loss"] == pytest.approx(records[2]["loss"], rel=1e-5, abs=1e-6)
    assert resumed_records[2]["lr"] == pytest.approx(records[2]["lr"])


def test_bad_configs_fail_clearly(tiny_config, tmp_path: Path, capsys) -> None:
    with pytest.raises(ConfigError, match="train"):
        config_from_dict(StageConfig, {
            "name": "x", "steps": 1, "lr": 1e-3, "batch_size": 1, "tasks": ["caption"], "train": ["everything"],
        }, name="stages[0]")
    with pytest.raises(ConfigError, match="unknown key"):
        train_config_from_dict({"output": "x", "stages": [], "epochs": 3})
    assert trainer_module.main(["--config", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_every_training_yaml_reads_back_from_the_form_written_next_to_the_run(repo_root: Path) -> None:
    for path in sorted((repo_root / "config").glob("train_*.yaml")):
        config = load_train_config(path)
        assert train_config_from_dict(config.to_dict()) == config, path.name


def test_cached_head_stage_trains_only_the_head_and_lowers_its_loss(tiny_config, tmp_path: Path) -> None:
    trainer = Trainer(_config(tiny_config, tmp_path))
    stage_index = next(i for i, s in enumerate(tiny_config.stages) if s.kind == "cached_head")
    stage = copy.deepcopy(tiny_config.stages[stage_index])
    stage.warmup_steps, stage.lr = 0, 3e-3
    trainer.config.stages[stage_index] = stage
    trainer.prepare_stage(stage_index)
    states = trainer.cache_box_states(stage)
    grounding = sum(entry.annotation.task == "grounding" for entry in trainer.load_data().entries)
    assert states["hidden"].shape == (grounding, trainer.model.causal_lm.config.hidden_size)
    assert states["boxes"].shape == (grounding, 7)
    assert set(trainer.model.box_head.scene_inputs) <= set(states)
    # the cached state is the one the teacher-forced forward pass gives the head
    dataset = trainer.load_data()
    first = next(e for e in dataset.entries if e.annotation.task == "grounding")
    batch = collate(trainer.model, [(first.scene_id, first.annotation)], trainer.cache, loader=dataset.scene)
    trainer.model.eval()
    with torch.no_grad():
        output = trainer.model(batch.scene, batch.prompts, batch.targets, batch.target_boxes, return_logits=False)
        again = trainer.model.box_head(states["hidden"][:1], **{k: states[k][:1] for k in trainer.model.box_head.scene_inputs})
    assert torch.allclose(output.box_prediction.center, again.center, atol=1e-4)
    before = _snapshot(trainer)
    losses = [trainer.cached_head_step(states, stage, stage_index, step)["box_loss"] for step in range(40)]
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses
    assert {group for group, moved in _changed(before, trainer).items() if moved} == {"box_head"}


def test_cached_and_semantics_stages_must_train_only_their_part() -> None:
    with pytest.raises(ConfigError) as raised:
        StageConfig(name="bad", steps=1, lr=1e-3, batch_size=2, tasks=["grounding", "qa"], train=["box_head"],
                    kind="cached_head")
    assert raised.value.parameter == "stages.bad.kind" and "cached_head needs" in str(raised.value)
    with pytest.raises(ConfigError) as raised:
        StageConfig(name="words", steps=1, lr=1e-3, batch_size=2, tasks=["caption"], train=["point_encoder", "lora"],
                    kind="semantics")
    assert raised.value.parameter == "stages.words.kind" and "semantics needs" in str(raised.value)
    with pytest.raises(ConfigError) as raised:
        StageConfig(name="odd", steps=1, lr=1e-3, batch_size=2, tasks=["caption"], train=["lora"], kind="head")
    assert raised.value.parameter == "stages.odd.kind"


def test_the_stage_booleans_of_older_recipes_read_as_their_kind(repo_root: Path) -> None:
    """A saved train config from before ``kind`` (the shipped model's) still loads; two kinds at once do not."""
    shipped = load_train_config(repo_root / "models" / "threed-llm-mini" / "train_config.yaml")
    assert [stage.kind for stage in shipped.stages] == ["programs"]
    base = {"name": "s", "steps": 1, "lr": 1e-3, "batch_size": 1, "tasks": ["grounding"], "train": ["box_head"]}
    assert stage_from_dict({**base, "cache_hidden_states": True, "semantics_only": False}, "stages[0]").kind == "cached_head"
    assert stage_from_dict({**base, "qa_programs": False}, "stages[0]").kind == "lm"
    with pytest.raises(ConfigError) as raised:
        stage_from_dict({**base, "kind": "lm", "cache_hidden_states": True}, "stages[0]")
    assert raised.value.parameter == "stages[0].kind" and "more than one stage kind" in str(raised.value)
    with pytest.raises(ConfigError) as raised:
        stage_from_dict({**base, "semantics_only": "yes"}, "stages[0]")
    assert raised.value.parameter == "stages[0].semantics_only"


def test_every_shipped_recipe_loads_with_its_model_and_starting_checkpoint(repo_root: Path) -> None:
    """config/train_*.yaml are documented commands: each must validate (stages, groups, tasks), build its model
    config, and name a starting checkpoint that exists or that another recipe writes (inside its output)."""
    recipes = sorted((repo_root / "config").glob("train_*.yaml"))
    assert {"train_tiny.yaml", "train_mini.yaml", "train_mini_head.yaml", "train_mini_programs.yaml"} <= {
        recipe.name for recipe in recipes}
    configs = {recipe: load_train_config(recipe) for recipe in recipes}
    outputs = {recipe: Path(config.output) for recipe, config in configs.items()}
    for recipe, config in configs.items():
        assert config.stages, recipe
        model_config_of(config)
        if config.init_from:
            start = Path(config.init_from)
            written_by = [other for other, output in outputs.items() if other != recipe and start.is_relative_to(output)]
            assert (start / "model.safetensors").is_file() or written_by, (recipe, config.init_from)


def test_init_from_starts_a_changed_model_from_a_checkpoint(tiny_config, tmp_path: Path, capsys) -> None:
    source = Trainer(_config(tiny_config, tmp_path / "source"))
    source.position.global_step = 1
    saved = source.save()
    overrides = copy.deepcopy(tiny_config.model_overrides)
    overrides["box_head"] = {"context": "encoder", "attention_dim": 32}
    started = Trainer(_config(tiny_config, tmp_path / "changed", model_overrides=overrides, init_from=str(saved)))
    assert started.not_initialised and all(name.startswith("box_head.") for name in started.not_initialised)
    assert "did not fit" in capsys.readouterr().err
    for name, tensor in started.model.scene_encoder.state_dict().items():
        assert torch.equal(tensor, source.model.scene_encoder.state_dict()[name]), name
    fresh_head = Trainer(_config(tiny_config, tmp_path / "fresh", init_from=str(saved), init_skip=["box_head."]))
    assert fresh_head.not_initialised and all(name.startswith("box_head.") for name in fresh_head.not_initialised)
    seeded_head = Trainer(_config(tiny_config, tmp_path / "plain")).model.box_head.state_dict()
    for name, tensor in fresh_head.model.box_head.state_dict().items():  # the seeded fresh head, not the saved one
        assert torch.equal(tensor, seeded_head[name]), name
    for name, tensor in fresh_head.model.scene_encoder.state_dict().items():
        assert torch.equal(tensor, source.model.scene_encoder.state_dict()[name]), name
    with pytest.raises(ConfigError, match="init_from"):
        Trainer(_config(tiny_config, tmp_path / "missing", init_from=str(tmp_path / "nowhere")))


def test_the_whole_tiny_recipe_runs_every_stage_including_the_cached_one(tiny_config, tmp_path: Path) -> None:
    config = _config(tiny_config, tmp_path, checkpoint_every=100)
    final = train(config)
    assert final is not None and (final / "model.safetensors").is_file()
    records = read_log(Path(config.output) / LOG_FILE)
    stages = [stage.name for stage in config.stages]
    assert [r["stage"] for r in records] == [s.name for s in config.stages for _ in range(s.steps)]
    cached = [r for r in records if r["stage"] == stages[-1]]
    assert cached and all(r["language_loss"] == 0.0 and r["box_loss"] > 0 for r in cached)
    assert all(r["tasks"] == {"grounding": config.stages[-1].batch_size} for r in cached)


@pytest.mark.parametrize("instances", [False, True], ids=["groups", "instances"])
def test_word_token_model_trains_a_semantics_stage_without_the_language_model(tiny_config, tmp_path: Path, instances: bool) -> None:
    """The semantics-only stage moves the point encoder (and its head) alone and lowers the semantic
    loss (with instances, its votes too); the model's word rows are the language model's own
    embeddings of the names."""
    config = _config(tiny_config, tmp_path)
    config.model_overrides = copy.deepcopy(config.model_overrides)
    config.model_overrides["scene_encoder"]["word_groups"] = 4
    config.model_overrides["scene_encoder"]["word_instances"] = instances
    semantics = StageConfig(name="semantics", steps=12, lr=3e-3, batch_size=3, warmup_steps=1, tasks=["caption"],
                            train=["point_encoder"], kind="semantics")
    config.stages = [semantics, *config.stages]
    trainer = Trainer(config)
    model = trainer.model
    encoder_config = model.config.scene_encoder
    assert encoder_config.num_scene_tokens == encoder_config.qformer.queries_per_expert + 8
    table = model.causal_lm.get_input_embeddings().weight
    sofa = model.tokenizer.encode(" sofa", add_special_tokens=False)
    assert torch.allclose(model.scene_encoder.category_words[encoder_config.semantic_categories.index("sofa")],
                          table[sofa].mean(dim=0))
    trainer.prepare_stage(0)
    before = _snapshot(trainer)
    batch = trainer.batch(StageSampler(trainer.load_data(), semantics, 0, seed=3), 0)
    groups = encoder_config.encoder.num_groups
    if instances:  # vote targets exactly where a group lies on an object
        assert batch.patch_votes is not None and batch.patch_votes.shape == (batch.size, groups, 6)
        assert torch.equal(torch.isfinite(batch.patch_votes).all(dim=-1), batch.patch_labels[..., 0] != 0)
        assert "patch_semantics.geometry" in " ".join(name for name, _ in model.scene_encoder.named_parameters())
    else:
        assert batch.patch_votes is None
    steps = [trainer.train_step(batch, semantics, seed=step) for step in range(12)]
    losses = [step["semantic_loss"] for step in steps]
    assert all(step["language_loss"] == 0.0 for step in steps)
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3]), losses
    assert {group for group, moved in _changed(before, trainer).items() if moved} == {"point_encoder"}
    # the instruct stage then runs the language model over queries + word tokens, word positions trained
    trainer.prepare_stage(2)
    instruct = config.stages[2]
    before = _snapshot(trainer)
    batch = trainer.batch(StageSampler(trainer.load_data(), instruct, 2, seed=3), 0)
    values = trainer.train_step(batch, instruct, seed=0)
    assert values["language_loss"] > 0
    if instances:
        return  # a tiny head this fresh blanks every pair (likelier on nothing); gradients: test_scene_encoder
    word_position = {id(p) for p in model.scene_encoder.word_position.parameters()}
    after = dict(zip(map(id, parameter_group_members(model)["projector"]), parameter_group_members(model)["projector"]))
    moved = [not torch.equal(b, after[i]) for b, i in zip(before["projector"], after) if i in word_position]
    assert moved and all(moved)
