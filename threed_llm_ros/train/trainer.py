"""``threed-llm train --config config/train_*.yaml [--resume]``: the cascaded training recipe.

MiniGPT-3D's cascade, scaled down; each stage names its steps, learning rate, batch
size, tasks and the parameter groups it trains (``config.PARAMETER_GROUPS``; the recipe's
form and checks are in ``train.config``, the groups, schedule and sampler in
``train.optimisation``, the loss log and plot in ``train.run_log``):

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
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import yaml
from tqdm import tqdm

from threed_llm_ros.data.dataset import SceneDataset, load_dataset
from threed_llm_ros.data.generate import generate_dataset
from threed_llm_ros.data.plan_annotations import synthetic_instruction
from threed_llm_ros.data.programs import plan_program_text
from threed_llm_ros.errors import ConfigError, ThreeDLLMError
from threed_llm_ros.model.checkpoint import load_trained_state_dict, save_checkpoint
from threed_llm_ros.model.threed_llm import ThreeDLLM
from threed_llm_ros.train.collate import SceneCache, TrainingBatch, collate, program_batch
from threed_llm_ros.train.config import (
    PRECISIONS, DataSettings, StageConfig, TrainConfig, load_train_config, model_config_of,
)
from threed_llm_ros.train.optimisation import StageSampler, default_trainable, make_optimizer, set_trainable
from threed_llm_ros.train.run_log import LOG_FILE, PLOT_FILE, plot_losses, truncate_log
from threed_llm_ros.model.checkpoint import WEIGHTS_FILE

STATE_FILE = "trainer_state.pt"
CHECKPOINTS_DIRECTORY = "checkpoints"
FINAL_DIRECTORY = "final"


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
            truncate_log(self.output / LOG_FILE, 0)
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
        truncate_log(self.output / LOG_FILE, self.position.global_step)
        return directory

    # ---------------------------------------------------------------- run

    def run(self, max_steps: int | None = None) -> Path | None:
        """Train from the current position to the end (or ``max_steps`` more steps); returns the final checkpoint.

        Returns None when stopped early by ``max_steps``.
        Length: the training loop reads best whole (steps, logging, checkpoints and stopping in one place).
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
