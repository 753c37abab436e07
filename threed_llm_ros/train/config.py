"""A training recipe (``config/train_*.yaml``): its stages, data and model, read and checked.

Each stage names its steps, learning rate, batch size, tasks, the parameter groups it trains
(:data:`PARAMETER_GROUPS`) and its :data:`kind <STAGE_KINDS>`. Relative paths in a recipe
resolve against the repository root; ``TrainConfig.to_dict`` writes the form
``train_config_from_dict`` reads back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from threed_llm_ros.config_io import config_from_dict, require_mapping
from threed_llm_ros.data.annotation_types import TASKS
from threed_llm_ros.data.generate import GenerateConfig
from threed_llm_ros.errors import ConfigError
from threed_llm_ros.model.threed_llm_config import ThreeDLLMConfig, load_model_config

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
