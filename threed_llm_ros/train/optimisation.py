"""What a stage trains and how fast: parameter groups, the learning-rate schedule and the seeded batch sampler."""

from __future__ import annotations

import contextlib
import math
from typing import Iterator, Sequence

import numpy as np
import torch

from threed_llm_ros.data.dataset import SceneDataset
from threed_llm_ros.errors import ConfigError
from threed_llm_ros.model.language_model import PROGRAM_ADAPTER, is_norm_module
from threed_llm_ros.model.location_tokens import token_row_parameters
from threed_llm_ros.model.threed_llm import ThreeDLLM
from threed_llm_ros.train.config import StageConfig

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
