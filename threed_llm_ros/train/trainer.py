"""``threed-llm train --config config/train_*.yaml [--resume]``: the cascaded training recipe.

MiniGPT-3D's cascade, scaled down; each stage names its steps, learning rate, batch
size, tasks and the parameter groups it trains (:data:`PARAMETER_GROUPS`):

1. ``align``: scene encoder (point encoder, projectors, Q-Former, query experts, router)
   on captions, with the language model frozen (LoRA, norms and token rows frozen; the
   LoRA B matrices start at zero, so LoRA is off).
2. ``instruct``: LoRA + LM norms + Q-Former + projectors + the added token rows +
   the box head, on every task.
3. ``experts``: only the expert query sets and the router.
4. ``ground_head`` (``kind: cached_head``): only the box head, on the frozen
   model's ``<box3d>`` states of every grounding annotation, computed once and reused, so
   the head (with its own point-group encoder) gets thousands of cheap steps.

Optionally before them, ``semantics`` (``kind: semantics``): the point encoder and its
patch-semantics head alone, on every point group's category and colour, with no
language-model pass (for models with word tokens, which read that head).

Every stage: AdamW, linear warm-up then cosine decay to ``min_lr_ratio * lr``, gradient
clipping, fp32 on CPU and bf16 autocast on CUDA (``precision``). Batches are drawn from a generator
seeded with (seed, stage, step) and the torch RNG is re-seeded the same way every step,
so a resumed run repeats an uninterrupted one. Output directory::

    OUTPUT/log.jsonl                   one JSON line per step (losses, lr, grad norm, seconds)
    OUTPUT/loss.png                    loss curves, stage boundaries marked
    OUTPUT/checkpoints/step_NNNNNN/    save_checkpoint() + trainer_state.pt (optimizer, scheduler, step)
    OUTPUT/final/                      the trained model (a checkpoint directory)
    OUTPUT/train_config.yaml           the configuration used

When the data directory does not exist and the YAML asks for it (``data.generate_if_missing:
true``, as the shipped recipes do for their ``runs/data`` caches, or ``--generate-data``), it is
generated first with the YAML's ``data.generate`` settings (the ``generate-data`` options), so
one command does everything. Otherwise a missing directory is an error: a mistyped path to a
real dataset must not silently train on simulated scenes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import yaml
from tqdm import tqdm

from threed_llm_ros.config_io import config_from_dict, require_mapping
from threed_llm_ros.data.annotation_types import TASKS
from threed_llm_ros.data.dataset import SceneDataset, load_dataset
from threed_llm_ros.data.generate import GenerateConfig, generate_dataset
from threed_llm_ros.data.plan_annotations import synthetic_instruction
from threed_llm_ros.data.programs import plan_program_text
from threed_llm_ros.errors import ConfigError, ThreeDLLMError
from threed_llm_ros.model.checkpoint import load_trained_state_dict, save_checkpoint
from threed_llm_ros.model.language_model import PROGRAM_ADAPTER, is_norm_module
from threed_llm_ros.model.location_tokens import token_row_parameters
from threed_llm_ros.model.threed_llm import ThreeDLLM, ThreeDLLMConfig, load_model_config
from threed_llm_ros.train.collate import SceneCache, TrainingBatch, collate, program_batch

PARAMETER_GROUPS: tuple[str, ...] = (
    "point_encoder",  # scene_encoder.point_encoder
    "projector",  # scene_encoder.point_projector + scene_encoder.modality_projector
    "qformer",  # the Q-Former blocks and norms (scene_encoder.query_experts, less queries and router)
    "experts",  # the expert query sets (scene_encoder.query_experts.expert_queries)
    "router",  # scene_encoder.query_experts.router
    "lora",  # LoRA adapters of the language model
    "program_lora",  # the second LoRA adapter, which writes question programs (question_programs models)
    "norms",  # the language model's norms (when the model config trains norms)
    "token_rows",  # embedding rows of the added tokens (location tokens, <box3d>, scene delimiters)
    "box_head",  # the <box3d> regression head
)
STATE_FILE = "trainer_state.pt"
LOG_FILE = "log.jsonl"
PLOT_FILE = "loss.png"
CHECKPOINTS_DIRECTORY = "checkpoints"
FINAL_DIRECTORY = "final"
PRECISIONS = ("auto", "fp32", "bf16")
#: What a stage trains on and how:
#: ``lm``: the language-model pass over every task the stage names (MiniGPT-3D's stages);
#: ``semantics``: the point encoder and its patch-semantics head learn the category and colour of
#: every point group, with no language-model pass (cheap steps; the encoder pre-training
#: MiniGPT-3D gets from a pre-trained Point-BERT); train: [point_encoder];
#: ``cached_head``: the frozen model's <box3d> states of every grounding annotation are computed
#: once, then the box head trains on them for many cheap steps; train: [box_head], tasks: [grounding];
#: ``programs``: the language model's program adapter learns to rewrite each question (qa),
#: referring expression (grounding) and instruction (plan) into its program (``data/programs.py``),
#: reading the words only (no scene tokens: cheap steps); train: [program_lora].
STAGE_KINDS = ("lm", "semantics", "cached_head", "programs")
#: The booleans that chose a stage's kind before ``kind`` (older recipes and saved train configs).
LEGACY_KIND_FLAGS = {"cache_hidden_states": "cached_head", "semantics_only": "semantics", "qa_programs": "programs"}
LOSS_PARTS = ("loss", "language_loss", "box_loss", "load_balance_loss", "semantic_loss")


# --------------------------------------------------------------------------- configuration


@dataclass
class DataSettings:
    """Where the dataset is (relative paths: to the YAML file's directory's parent, i.e. the repo)."""

    directory: str = "data/sim"
    split: str = "train"
    generate: GenerateConfig = field(default_factory=GenerateConfig)  # the generate-data options, when missing
    generate_if_missing: bool = False  # only then is a missing directory generated (else an error)


@dataclass
class StageConfig:
    """One stage of the cascade."""

    name: str
    steps: int
    lr: float
    batch_size: int
    tasks: list[str]
    train: list[str]
    task_weights: dict[str, float] | None = None
    warmup_steps: int = 10
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    kind: str = "lm"  # one of STAGE_KINDS, see there
    max_per_scene: int = 0  # cached_head stage: at most this many grounding annotations per scene (0 = all), seeded
    # programs stage: this many instructions made from words alone (``synthetic_instruction``:
    # any category, colour and relation, the compositional split's combinations excluded) join
    # each batch, so the parser learns to copy the words rather than the scenes' co-occurrences.
    synthetic_instructions: int = 0

    def __post_init__(self) -> None:
        where = f"stages.{self.name}"
        if self.max_per_scene < 0:
            raise ConfigError(f"{where}.max_per_scene", f"{self.max_per_scene} is negative", "use 0 (all) or a positive count")
        if self.kind not in STAGE_KINDS:
            raise ConfigError(f"{where}.kind", f"unknown stage kind {self.kind!r}", f"use one of {list(STAGE_KINDS)}")
        if self.kind == "cached_head" and (self.train != ["box_head"] or self.tasks != ["grounding"]):
            raise ConfigError(
                f"{where}.kind",
                f"cached_head needs train: [box_head] and tasks: [grounding], got train {self.train} and tasks {self.tasks}",
                "train only the box head on grounding in this stage, or use kind: lm",
            )
        if self.kind == "semantics" and self.train != ["point_encoder"]:
            raise ConfigError(
                f"{where}.kind", f"semantics needs train: [point_encoder], got {self.train}",
                "train only the point encoder (with its patch-semantics head) in this stage",
            )
        if self.kind == "programs" and not set(self.tasks) <= {"qa", "grounding", "plan"}:
            raise ConfigError(
                f"{where}.kind", f"programs needs tasks from [qa, grounding, plan], got tasks {self.tasks}",
                "train programs in a stage of their own with tasks: [qa, grounding, plan]",
            )
        if self.synthetic_instructions < 0 or (self.synthetic_instructions and self.kind != "programs"):
            raise ConfigError(
                f"{where}.synthetic_instructions", f"{self.synthetic_instructions} needs a programs stage and a count >= 0",
                "use it only with kind: programs, or set it to 0",
            )
        if self.steps < 0 or self.batch_size < 1:
            raise ConfigError(f"{where}.steps/batch_size", f"{self.steps} steps, batch {self.batch_size}", "use steps >= 0, batch_size >= 1")
        if not self.lr > 0:
            raise ConfigError(f"{where}.lr", f"{self.lr} is not positive", "use e.g. 1e-4")
        unknown_tasks = sorted(set(self.tasks) - set(TASKS))
        if not self.tasks or unknown_tasks:
            raise ConfigError(f"{where}.tasks", f"unknown or no tasks {unknown_tasks or self.tasks}", f"use some of {list(TASKS)}")
        unknown_groups = sorted(set(self.train) - set(PARAMETER_GROUPS))
        if not self.train or unknown_groups:
            raise ConfigError(
                f"{where}.train", f"unknown or no parameter groups {unknown_groups or self.train}", f"use some of {list(PARAMETER_GROUPS)}"
            )
        if self.task_weights is not None:
            extra = sorted(set(self.task_weights) - set(self.tasks))
            if extra or any(w < 0 for w in self.task_weights.values()) or sum(self.task_weights.values()) <= 0:
                raise ConfigError(f"{where}.task_weights", f"{self.task_weights} is invalid", "give non-negative weights for the stage's tasks")
        if self.warmup_steps < 0 or not 0 <= self.min_lr_ratio <= 1 or self.grad_clip <= 0:
            raise ConfigError(f"{where}", "warmup_steps < 0, min_lr_ratio outside [0, 1] or grad_clip <= 0", "fix the stage schedule")


@dataclass
class TrainConfig:
    """A whole training recipe (``config/train_*.yaml``)."""

    output: str
    stages: list[StageConfig]
    model: str = "mini"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    init_from: str = ""  # a checkpoint directory whose trained tensors start the model ('' = fresh weights)
    init_skip: list[str] = field(default_factory=list)  # name prefixes not taken from init_from (e.g. box_head.)
    data: DataSettings = field(default_factory=DataSettings)
    seed: int = 0
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    device: str = "auto"
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU; or fp32 / bf16 on any device
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.stages:
            raise ConfigError("stages", "no stage given", "give at least one stage")
        if self.precision not in PRECISIONS:
            raise ConfigError("precision", f"unknown precision {self.precision!r}", f"use one of {list(PRECISIONS)}")
        if self.checkpoint_every < 1 or self.keep_checkpoints < 1:
            raise ConfigError("checkpoint_every/keep_checkpoints", "must be >= 1", "use e.g. 50 and 2")

    @property
    def total_steps(self) -> int:
        """Steps of all stages."""
        return sum(stage.steps for stage in self.stages)

    def to_dict(self) -> dict[str, Any]:
        """Plain form (written next to the run), in the YAML's shape: ``train_config_from_dict`` reads it back."""
        values = asdict(self)
        values["data"]["generate"] = self.data.generate.options()
        return values


def train_config_from_dict(values: dict[str, Any], base_directory: Path | None = None) -> TrainConfig:
    """A TrainConfig from parsed YAML; relative ``output``/``data.directory``/``model`` paths resolve against ``base_directory``."""
    values = dict(require_mapping(values, "train config"))
    data = dict(require_mapping(values.pop("data", {}), "data"))
    data["generate"] = GenerateConfig.from_options(data.get("generate", {}), "data.generate")
    values["data"] = config_from_dict(DataSettings, data, name="data")
    stages = values.pop("stages", None)
    if not isinstance(stages, list):
        raise ConfigError("stages", "must be a list of stages", "see config/train_mini.yaml")
    values["stages"] = [stage_from_dict(stage, f"stages[{index}]") for index, stage in enumerate(stages)]
    config = config_from_dict(TrainConfig, values, name="train config")
    if base_directory is not None:
        config.output = str(_resolve(config.output, base_directory))
        config.data.directory = str(_resolve(config.data.directory, base_directory))
        model_path = base_directory / config.model
        if config.model not in ("mini", "base") and not Path(config.model).is_absolute() and model_path.exists():
            config.model = str(model_path)
        if config.init_from:
            config.init_from = str(_resolve(config.init_from, base_directory))
    return config


def stage_from_dict(values: Any, name: str) -> StageConfig:
    """A stage from its YAML mapping. The booleans of older recipes (``LEGACY_KIND_FLAGS``:
    ``cache_hidden_states``, ``semantics_only``, ``qa_programs``) still read, as the kind they name."""
    values = dict(require_mapping(values, name))
    kinds = {values["kind"]} if "kind" in values else set()
    for flag, kind in LEGACY_KIND_FLAGS.items():
        if flag not in values:
            continue
        value = values.pop(flag)
        if not isinstance(value, bool):
            raise ConfigError(f"{name}.{flag}", f"{value!r} is not true or false", f"write kind: {kind} instead")
        if value:
            kinds.add(kind)
    if len(kinds) > 1:
        raise ConfigError(f"{name}.kind", f"names more than one stage kind: {sorted(kinds)}",
                          f"give one kind of {list(STAGE_KINDS)} (and drop the old booleans)")
    if kinds:
        values["kind"] = kinds.pop()
    return config_from_dict(StageConfig, values, name=name)


def _resolve(path: str, base: Path) -> Path:
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else (base / candidate)


def load_train_config(path: str | Path) -> TrainConfig:
    """Read a training YAML; relative paths in it are relative to the repository root (the YAML's parent's parent
    when it lives in ``config/``, else its own directory)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("--config", f"{path} does not exist", "give a training YAML such as config/train_mini.yaml")
    values = yaml.safe_load(path.read_text())
    base = path.resolve().parent
    if base.name == "config":
        base = base.parent
    return train_config_from_dict(values, base)


def _deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def model_config_of(config: TrainConfig) -> ThreeDLLMConfig:
    """The model config: a preset / YAML / checkpoint config, with ``model_overrides`` deep-merged in."""
    base = load_model_config(config.model).to_dict()
    merged = _deep_merge(base, config.model_overrides)
    encoder = merged["scene_encoder"]
    # the encoder's grouping must follow the preprocessing's; keep them together when only one is overridden
    for key in ("num_groups", "group_size"):
        override = config.model_overrides.get("scene_encoder", {})
        if key in override.get("preprocess", {}) and key not in override.get("encoder", {}):
            encoder["encoder"][key] = encoder["preprocess"][key]
    return ThreeDLLMConfig.from_dict(merged)


# --------------------------------------------------------------------------- parameters


def _of_program_adapter(name: str) -> bool:
    return f".{PROGRAM_ADAPTER}." in name


def parameter_group_members(model: ThreeDLLM) -> dict[str, list[torch.nn.Parameter]]:
    """The parameters of each of :data:`PARAMETER_GROUPS` (disjoint)."""
    encoder = model.scene_encoder
    experts = encoder.query_experts
    special = {id(experts.expert_queries)} | {id(p) for p in experts.router.parameters()}
    norms = [
        p for module in model.causal_lm.modules() if is_norm_module(module) for p in module.parameters(recurse=False)
    ]
    if not model.config.lora.train_norms:
        norms = []
    return {
        "point_encoder": [
            *encoder.point_encoder.parameters(),
            *(encoder.patch_semantics.parameters() if encoder.patch_semantics is not None else ()),
        ],
        "projector": [
            *encoder.point_projector.parameters(),
            *encoder.modality_projector.parameters(),
            *(encoder.word_position.parameters() if encoder.word_position is not None else ()),
            *(encoder.word_size.parameters() if encoder.word_size is not None else ()),
        ],
        "qformer": [p for p in experts.parameters() if id(p) not in special],
        "experts": [experts.expert_queries],
        "router": list(experts.router.parameters()),
        "lora": [p for name, p in model.language_model.named_parameters() if "lora_" in name and not _of_program_adapter(name)],
        "program_lora": [p for name, p in model.language_model.named_parameters() if "lora_" in name and _of_program_adapter(name)],
        "norms": norms,
        "token_rows": token_row_parameters(model.causal_lm),
        "box_head": list(model.box_head.parameters()),
    }


def set_trainable(model: ThreeDLLM, groups: Sequence[str]) -> int:
    """Train exactly ``groups``; everything else frozen. Returns the number of trainable tensors."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    members = parameter_group_members(model)
    count = 0
    for group in groups:
        for parameter in members[group]:
            parameter.requires_grad_(True)
            count += 1
    return count


DEFAULT_TRAINABLE = (
    "point_encoder", "projector", "qformer", "experts", "router", "lora", "program_lora", "norms", "token_rows", "box_head",
)


@contextlib.contextmanager
def default_trainable(model: ThreeDLLM) -> Iterator[None]:
    """Temporarily the trainable set of a freshly built model (what checkpoints save and load)."""
    flags = [parameter.requires_grad for parameter in model.parameters()]
    set_trainable(model, DEFAULT_TRAINABLE)
    try:
        yield
    finally:
        for parameter, flag in zip(model.parameters(), flags):
            parameter.requires_grad_(flag)


# --------------------------------------------------------------------------- schedule and sampling


def lr_factor(step: int, stage: StageConfig) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine from 1 down to ``min_lr_ratio``."""
    if stage.warmup_steps and step < stage.warmup_steps:
        return (step + 1) / stage.warmup_steps
    span = max(1, stage.steps - stage.warmup_steps)
    progress = min(1.0, (step - stage.warmup_steps) / span)
    return stage.min_lr_ratio + (1 - stage.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(model: ThreeDLLM, stage: StageConfig) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the currently trainable parameters and its warm-up + cosine schedule."""
    groups = [group for group in model.parameter_groups(stage.weight_decay) if group["params"]]
    optimizer = torch.optim.AdamW(groups, lr=stage.lr, betas=(0.9, 0.98), eps=1e-8)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, stage))
    return optimizer, scheduler


class StageSampler:
    """Deterministic batches of one stage: batch ``step`` depends only on (seed, stage index, step)."""

    def __init__(self, dataset: SceneDataset, stage: StageConfig, stage_index: int, seed: int) -> None:
        self.stage = stage
        self.stage_index = stage_index
        self.seed = seed
        self.positions: dict[str, list[int]] = {task: [] for task in stage.tasks}
        for position, entry in enumerate(dataset.entries):
            if entry.annotation.task in self.positions:
                self.positions[entry.annotation.task].append(position)
        self.positions = {task: items for task, items in self.positions.items() if items}
        if not self.positions:
            raise ConfigError(
                f"stages.{stage.name}.tasks", f"the training split has no annotation of {stage.tasks}", "generate more scenes or change the tasks"
            )
        self.all_positions = [p for items in self.positions.values() for p in items]

    def batch_positions(self, step: int) -> list[int]:
        """Dataset positions of batch ``step`` (with replacement, by task weight when given)."""
        rng = np.random.default_rng([self.seed, self.stage_index, step])
        size = self.stage.batch_size
        if self.stage.task_weights is None:
            return [int(p) for p in rng.choice(self.all_positions, size=size)]
        tasks = [t for t in self.positions if self.stage.task_weights.get(t, 0.0) > 0]
        if not tasks:
            raise ConfigError(f"stages.{self.stage.name}.task_weights", "no weighted task has data", "weight a task present in the split")
        weights = np.array([self.stage.task_weights[t] for t in tasks], dtype=np.float64)
        chosen = rng.choice(len(tasks), size=size, p=weights / weights.sum())
        return [int(rng.choice(self.positions[tasks[index]])) for index in chosen]


# --------------------------------------------------------------------------- data


def ensure_dataset(settings: DataSettings, progress: bool = True) -> Path:
    """The dataset directory, generated with ``settings.generate`` when it does not exist yet and
    ``settings.generate_if_missing`` asks for it (else ConfigError naming ``data.directory``)."""
    directory = Path(settings.directory)
    if (directory / "index.jsonl").is_file():
        meta_path = directory / "meta.json"
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        generator = meta.get("generator")
        if generator is not None and (meta.get("scenes"), generator.get("seed")) != (settings.generate.scenes, settings.generate.seed):
            print(
                f"threed-llm train: warning: {directory} holds {meta.get('scenes')} scenes of seed {generator.get('seed')}, "
                f"the config asks for {settings.generate.scenes} of seed {settings.generate.seed}; using the existing data "
                "(delete the directory to regenerate)",
                file=sys.stderr,
            )
        return directory
    if directory.exists() and any(directory.iterdir()):
        raise ConfigError("data.directory", f"{directory} exists but holds no index.jsonl", "point to a dataset or an empty/new directory")
    if not settings.generate_if_missing:
        raise ConfigError("data.directory", f"{directory} {'is empty' if directory.exists() else 'does not exist'}",
                          "point it to a dataset (index.jsonl + scenes/), or set data.generate_if_missing: true "
                          "(or pass --generate-data) to generate a simulated one there")
    print(f"threed-llm train: generating a simulated dataset in {directory} (data.generate_if_missing)", file=sys.stderr)
    generate_dataset(directory, settings.generate, progress=progress)
    return directory


# --------------------------------------------------------------------------- loop


def pick_device(name: str) -> torch.device:
    """``auto``: CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def uses_bf16(precision: str, device: torch.device) -> bool:
    """Whether a run computes under bf16 autocast (``auto``: on CUDA only; master weights stay fp32)."""
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def _autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    if bf16:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _step_seed(seed: int, stage_index: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, stage_index, step, 7]).generate_state(1)[0])


@dataclass
class Position:
    """Where training stands: next step to run, counted globally and within its stage."""

    stage_index: int = 0
    stage_step: int = 0
    global_step: int = 0


def initialise_from(model: ThreeDLLM, checkpoint: str | Path, skip: Sequence[str] = ()) -> list[str]:
    """Start ``model`` from a checkpoint's trained tensors; returns the names that did not fit or were
    skipped (names starting with a ``skip`` prefix), which keep their freshly built values."""
    from safetensors.torch import load_file

    from threed_llm_ros.model.checkpoint import WEIGHTS_FILE

    weights = Path(checkpoint) / WEIGHTS_FILE
    if not weights.is_file():
        raise ConfigError("init_from", f"{weights} does not exist", "give a checkpoint directory (config.json + model.safetensors) or ''")
    state = {name: tensor for name, tensor in load_file(str(weights)).items() if not name.startswith(tuple(skip))}
    skipped = load_trained_state_dict(model, state, strict=False)
    if skipped:
        print(f"init_from {checkpoint}: {len(skipped)} tensors did not fit or were skipped and start fresh: {skipped[:6]}", file=sys.stderr)
    return skipped


def checkpoint_directories(output: Path) -> list[Path]:
    """Checkpoint directories with a trainer state, oldest first."""
    root = output / CHECKPOINTS_DIRECTORY
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step_*") if (p / STATE_FILE).is_file())


class Trainer:
    """Runs a :class:`TrainConfig`: builds the model, walks the stages, checkpoints, logs and plots."""

    def __init__(self, config: TrainConfig, model: ThreeDLLM | None = None) -> None:
        self.config = config
        self.output = Path(config.output)
        self.device = pick_device(config.device)
        self.bf16 = uses_bf16(config.precision, self.device)
        self.model_config = model_config_of(config) if model is None else model.config
        self.model = (model or ThreeDLLM(self.model_config)).to(self.device)
        self.not_initialised: list[str] = []  # tensors init_from could not supply or skipped (kept as built)
        if config.init_from:
            self.not_initialised = initialise_from(self.model, config.init_from, skip=config.init_skip)
        self.dataset: SceneDataset | None = None
        self.cache = SceneCache(self.model_config.scene_encoder.preprocess, seed=config.seed)
        self.position = Position()
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: torch.optim.lr_scheduler.LambdaLR | None = None
        self._prepared_stage: int | None = None

    # ---------------------------------------------------------------- data

    def load_data(self) -> SceneDataset:
        """The training split (generated first when missing)."""
        if self.dataset is None:
            directory = ensure_dataset(self.config.data, progress=self.config.progress)
            self.dataset = load_dataset(directory, splits=self.config.data.split, cache_size=64)
            if len(self.dataset) == 0:
                raise ConfigError("data.split", f"{directory} has no {self.config.data.split!r} annotation", "generate more scenes")
        return self.dataset

    def batch(self, sampler: StageSampler, step: int) -> TrainingBatch:
        """Collated batch ``step`` of a stage."""
        dataset = self.load_data()
        items = [(dataset.entries[p].scene_id, dataset.entries[p].annotation) for p in sampler.batch_positions(step)]
        if sampler.stage.kind == "programs":
            synthetic = []
            if sampler.stage.synthetic_instructions:
                rng = np.random.default_rng([self.config.seed, sampler.stage_index, step, 13])
                heldout = {tuple(combo) for combo in dataset.meta.get("heldout_combinations", [])}
                synthetic = [synthetic_instruction(rng, heldout) for _ in range(sampler.stage.synthetic_instructions)]
            return program_batch([annotation for _, annotation in items],
                                 [(words, plan_program_text(plan_type, target, destination))
                                  for words, plan_type, destination, target in synthetic])
        return collate(self.model, items, self.cache, loader=dataset.scene)

    # ---------------------------------------------------------------- stages

    def prepare_stage(self, stage_index: int) -> None:
        """Freeze/unfreeze for the stage and build its optimizer and schedule."""
        stage = self.config.stages[stage_index]
        if stage.kind == "programs" and not self.model.config.question_programs:
            raise ConfigError(
                f"stages.{stage.name}.kind", "a programs stage needs the model's program adapter; the model has none",
                "set model_overrides.question_programs: true (with scene_encoder.word_instances)",
            )
        set_trainable(self.model, stage.train)
        self.optimizer, self.scheduler = make_optimizer(self.model, stage)
        self._prepared_stage = stage_index

    def cache_box_states(self, stage: StageConfig) -> dict[str, torch.Tensor]:
        """The frozen model's ``<box3d>`` states, head scene inputs and target boxes of every grounding annotation."""
        dataset = self.load_data()
        by_scene: dict[str, list[Any]] = {}
        for entry in dataset.entries:
            if entry.annotation.task == "grounding":
                by_scene.setdefault(entry.scene_id, []).append(entry.annotation)
        rng = np.random.default_rng([self.config.seed, 11])
        items = []
        for scene_id, of_scene in by_scene.items():
            if stage.max_per_scene and len(of_scene) > stage.max_per_scene:
                of_scene = [of_scene[int(i)] for i in sorted(rng.choice(len(of_scene), stage.max_per_scene, replace=False))]
            items.extend((scene_id, annotation) for annotation in of_scene)
        if not items:
            raise ConfigError(f"stages.{stage.name}.tasks", "the training split has no grounding annotation", "generate more scenes")
        parts: dict[str, list[torch.Tensor]] = {}
        chunk = 16
        self.model.eval()
        for start in tqdm(range(0, len(items), chunk), desc=f"{stage.name}: <box3d> states", unit="batch",
                          disable=not self.config.progress):
            batch = collate(self.model, items[start : start + chunk], self.cache, loader=dataset.scene)
            with torch.no_grad(), _autocast(self.device, self.bf16):
                states = self.model.box_query_states(batch.scene, batch.prompts, batch.targets, batch.target_boxes)
            for name, tensor in states.items():
                parts.setdefault(name, []).append(tensor.float().cpu())
        return {name: torch.cat(tensors) for name, tensors in parts.items()}

    def cached_head_step(self, states: dict[str, torch.Tensor], stage: StageConfig, stage_index: int, step: int) -> dict[str, float]:
        """One optimiser step of the box head on a seeded sample of the cached states."""
        assert self.optimizer is not None and self.scheduler is not None
        torch.manual_seed(_step_seed(self.config.seed, stage_index, step))
        rng = np.random.default_rng([self.config.seed, stage_index, step])
        rows = torch.as_tensor(rng.choice(len(states["hidden"]), size=stage.batch_size), dtype=torch.long)
        head = self.model.box_head.train()
        lr = self.optimizer.param_groups[0]["lr"]
        inputs = {name: states[name][rows].to(self.device) for name in head.scene_inputs}
        with _autocast(self.device, self.bf16):
            prediction = head(states["hidden"][rows].to(self.device), **inputs)
            loss = self.model.config.box_loss_weight * head.loss(prediction, states["boxes"][rows].to(self.device))
        grad_norm = self._optimise(loss, stage)
        value = float(loss.detach())
        return {"loss": value, "language_loss": 0.0, "box_loss": value, "load_balance_loss": 0.0, "semantic_loss": 0.0,
                "lr": float(lr), "grad_norm": float(grad_norm)}

    def _optimise(self, loss: torch.Tensor, stage: StageConfig) -> float:
        """Backward, clip to ``stage.grad_clip``, step the optimiser and the schedule; the gradient norm."""
        assert self.optimizer is not None and self.scheduler is not None
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trainable = [p for group in self.optimizer.param_groups for p in group["params"]]
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, stage.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return float(grad_norm)

    def train_step(self, batch: TrainingBatch, stage: StageConfig, seed: int) -> dict[str, float]:
        """One optimiser step on ``batch``; returns the losses, lr and gradient norm."""
        assert self.optimizer is not None and self.scheduler is not None
        torch.manual_seed(seed)
        self.model.train()
        lr = self.optimizer.param_groups[0]["lr"]
        if stage.kind == "semantics":
            return self._semantics_step(batch, stage, float(lr))
        adapter = self.model.program_adapter() if stage.kind == "programs" else contextlib.nullcontext()
        with _autocast(self.device, self.bf16), adapter:
            output = self.model(
                batch.scene, batch.prompts, batch.targets, batch.target_boxes,
                return_logits=False, patch_labels=batch.patch_labels, patch_votes=batch.patch_votes,
                blind=True if batch.scene is None else None,
            )
        grad_norm = self._optimise(output.loss, stage)
        return {
            "loss": float(output.loss.detach()),
            "language_loss": float(output.language_loss.detach()),
            "box_loss": float(output.box_loss.detach()),
            "load_balance_loss": float(output.load_balance_loss.detach()),
            "semantic_loss": 0.0 if output.semantic_loss is None else float(output.semantic_loss.detach()),
            "lr": float(lr),
            "grad_norm": float(grad_norm),
        }

    def _semantics_step(self, batch: TrainingBatch, stage: StageConfig, lr: float) -> dict[str, float]:
        """One step of the point encoder and its patch-semantics head alone (no language model)."""
        if batch.patch_labels is None or self.model.scene_encoder.patch_semantics is None:
            raise ConfigError(
                f"stages.{stage.name}.kind", "a semantics stage needs a patch-semantics head; the model's scene encoder has none",
                "use a model preset with semantic_categories/semantic_colors, or drop this stage",
            )
        scene = batch.scene.to(self.device)
        with _autocast(self.device, self.bf16):
            patch_tokens = self.model.scene_encoder.point_encoder(scene.patches, scene.centers)[:, 1:]
            semantic = self.model.patch_semantics_loss(patch_tokens, batch.patch_labels, batch.patch_votes)
            loss = self.model.config.semantic_loss_weight * semantic
        grad_norm = self._optimise(loss, stage)
        return {"loss": float(loss.detach()), "language_loss": 0.0, "box_loss": 0.0, "load_balance_loss": 0.0,
                "semantic_loss": float(semantic.detach()), "lr": lr, "grad_norm": grad_norm}

    # ---------------------------------------------------------------- checkpoints

    def save(self) -> Path:
        """A resumable checkpoint at the current position; keeps the newest ``keep_checkpoints``."""
        directory = self.output / CHECKPOINTS_DIRECTORY / f"step_{self.position.global_step:06d}"
        extra = {"global_step": self.position.global_step, "stage": self.config.stages[min(self.position.stage_index, len(self.config.stages) - 1)].name}
        with default_trainable(self.model):
            save_checkpoint(self.model, directory, extra=extra)
        state = {
            "position": asdict(self.position),
            "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "prepared_stage": self._prepared_stage,
        }
        torch.save(state, directory / STATE_FILE)
        for old in checkpoint_directories(self.output)[: -self.config.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        return directory

    def resume(self) -> Path | None:
        """Load the newest checkpoint of the output directory; None when there is none."""
        directories = checkpoint_directories(self.output)
        if not directories:
            _truncate_log(self.output / LOG_FILE, 0)
            return None
        directory = directories[-1]
        from safetensors.torch import load_file

        with default_trainable(self.model):
            load_trained_state_dict(self.model, load_file(str(directory / "model.safetensors")))
        state = torch.load(directory / STATE_FILE, map_location=self.device, weights_only=False)
        self.position = Position(**state["position"])
        if state.get("prepared_stage") is not None and state["prepared_stage"] == self.position.stage_index:
            self.prepare_stage(self.position.stage_index)
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        _truncate_log(self.output / LOG_FILE, self.position.global_step)
        return directory

    # ---------------------------------------------------------------- run

    def run(self, max_steps: int | None = None) -> Path | None:
        """Train from the current position to the end (or ``max_steps`` more steps); returns the final checkpoint.

        Returns None when stopped early by ``max_steps``.
        """
        self.output.mkdir(parents=True, exist_ok=True)
        (self.output / "train_config.yaml").write_text(yaml.safe_dump(self.config.to_dict(), sort_keys=False))
        self.load_data()
        total = self.config.total_steps
        budget = total if max_steps is None else max_steps
        bar = tqdm(total=total, initial=self.position.global_step, desc="train", unit="step", disable=not self.config.progress)
        started = time.perf_counter()
        steps_done = 0
        try:
            with open(self.output / LOG_FILE, "a", encoding="utf-8") as log:
                while self.position.stage_index < len(self.config.stages):
                    stage_index = self.position.stage_index
                    stage = self.config.stages[stage_index]
                    if self.position.stage_step >= stage.steps:
                        self.position = Position(stage_index + 1, 0, self.position.global_step)
                        continue
                    if self._prepared_stage != stage_index:
                        self.prepare_stage(stage_index)
                    sampler = StageSampler(self.load_data(), stage, stage_index, self.config.seed)
                    states = self.cache_box_states(stage) if stage.kind == "cached_head" else None
                    while self.position.stage_step < stage.steps:
                        if steps_done >= budget:
                            return None
                        step_started = time.perf_counter()
                        if states is not None:
                            values = self.cached_head_step(states, stage, stage_index, self.position.stage_step)
                            tasks = {"grounding": stage.batch_size}
                        else:
                            batch = self.batch(sampler, self.position.stage_step)
                            values = self.train_step(batch, stage, _step_seed(self.config.seed, stage_index, self.position.stage_step))
                            tasks = {t: batch.tasks.count(t) for t in sorted(set(batch.tasks))}
                        seconds = time.perf_counter() - step_started
                        record = {
                            "step": self.position.global_step, "stage": stage.name, "stage_step": self.position.stage_step,
                            **values, "seconds": round(seconds, 4), "elapsed": round(time.perf_counter() - started, 2),
                            "tasks": tasks,
                        }
                        log.write(json.dumps(record) + "\n")
                        log.flush()
                        self.position = Position(stage_index, self.position.stage_step + 1, self.position.global_step + 1)
                        steps_done += 1
                        bar.update(1)
                        bar.set_postfix(stage=stage.name, loss=f"{values['loss']:.3f}", s_per_step=f"{seconds:.2f}")
                        if self.position.global_step % self.config.checkpoint_every == 0:
                            self.save()
                            plot_losses(self.output / LOG_FILE, self.output / PLOT_FILE)
                    self.position = Position(stage_index + 1, 0, self.position.global_step)
        finally:
            bar.close()
        final = self.output / FINAL_DIRECTORY
        with default_trainable(self.model):
            save_checkpoint(self.model, final, extra={"global_step": self.position.global_step, "train_config": self.config.to_dict()})
        if not checkpoint_directories(self.output) or checkpoint_directories(self.output)[-1].name != f"step_{self.position.global_step:06d}":
            self.save()
        plot_losses(self.output / LOG_FILE, self.output / PLOT_FILE)
        return final


def _truncate_log(path: Path, next_step: int) -> None:
    """Drop log lines of steps at or after ``next_step`` (they will be run again)."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] < next_step]
    path.write_text("".join(line + "\n" for line in kept))


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines training log."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_losses(log_path: Path, image_path: Path, window: int = 10) -> Path | None:
    """PNG of the loss parts against the step (raw and a moving average), stage boundaries dashed."""
    if not log_path.is_file():
        return None
    records = read_log(log_path)
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.array([r["step"] for r in records])
    figure, axes = plt.subplots(len(LOSS_PARTS), 1, figsize=(9, 2.4 * len(LOSS_PARTS)), sharex=True)
    for axis, part in zip(axes, LOSS_PARTS):
        values = np.array([r.get(part, 0.0) for r in records], dtype=np.float64)  # older logs lack newer parts
        axis.plot(steps, values, color="0.7", linewidth=0.8, label="per step")
        if len(values) >= window:
            smooth = np.convolve(values, np.ones(window) / window, mode="valid")
            axis.plot(steps[window - 1 :], smooth, color="C0", linewidth=1.5, label=f"mean of {window}")
        axis.set_ylabel(part)
        axis.grid(alpha=0.3)
        for index in range(1, len(records)):
            if records[index]["stage"] != records[index - 1]["stage"]:
                axis.axvline(steps[index], color="C3", linestyle="--", linewidth=1)
    axes[0].set_title("training losses (" + " → ".join(dict.fromkeys(r["stage"] for r in records)) + ")")
    axes[0].legend(loc="upper right", fontsize=8)
    axes[-1].set_xlabel("step")
    figure.tight_layout()
    image_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(image_path, dpi=100)
    plt.close(figure)
    return image_path


# --------------------------------------------------------------------------- command


def train(config: TrainConfig, resume: bool = False, max_steps: int | None = None) -> Path | None:
    """Run (or resume) a recipe; returns the final checkpoint directory."""
    output = Path(config.output)
    if checkpoint_directories(output) and not resume:
        raise ConfigError(
            "output", f"{output} already holds checkpoints", "pass --resume to continue, or use another output directory"
        )
    ensure_dataset(config.data, progress=config.progress)  # a missing dataset fails before the model loads
    trainer = Trainer(config)
    if resume:
        trainer.resume()
    else:
        (output / LOG_FILE).unlink(missing_ok=True)
    return trainer.run(max_steps=max_steps)


def main(argv: list[str] | None = None) -> int:
    """``threed-llm train --config config/train_mini.yaml [--resume] [--max-steps N] [--output DIR]``."""
    parser = argparse.ArgumentParser(prog="threed-llm train", description="Train the 3D-LLM with the cascaded recipe.")
    parser.add_argument("--config", required=True, help="training YAML, e.g. config/train_mini.yaml")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in the output directory")
    parser.add_argument("--output", help="override the YAML's output directory")
    parser.add_argument("--max-steps", type=int, help="stop after this many steps (for timing runs)")
    parser.add_argument("--device", help="override the YAML's device (auto, cpu, cuda)")
    parser.add_argument("--precision", choices=PRECISIONS,
                        help="override the YAML's precision (auto: bf16 autocast on CUDA, fp32 on CPU)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--generate-data", action="store_true",
                        help="generate a simulated dataset in data.directory if it is missing (data.generate_if_missing)")
    arguments = parser.parse_args(argv)
    try:
        config = load_train_config(arguments.config)
        if arguments.generate_data:
            config.data.generate_if_missing = True
        if arguments.output:
            config.output = arguments.output
        if arguments.device:
            config.device = arguments.device
        if arguments.precision:
            config.precision = arguments.precision
        if arguments.quiet:
            config.progress = False
        final = train(config, resume=arguments.resume, max_steps=arguments.max_steps)
    except ThreeDLLMError as error:
        print(f"threed-llm train: {error}", file=sys.stderr)
        return 2
    if final is None:
        print(f"stopped after --max-steps; resume with --resume (output {config.output})")
    else:
        print(f"trained model written to {final}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
