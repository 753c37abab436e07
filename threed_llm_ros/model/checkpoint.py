"""Save and load ThreeDLLM checkpoints that hold only what training changed.

A checkpoint directory has ``model.safetensors`` (scene encoder, box head, LoRA
adapters, trained norms, and the rows of the added tokens — never the frozen base
language model) and ``config.json`` (the model config, the base LM's file name, size and
sha256, and the added tokens). Loading rebuilds the full model on top of the base LM
file and refuses a base LM whose hash differs from the one trained on.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from threed_llm_ros.errors import ConfigError, ModelFileError
from threed_llm_ros.model.language_model import is_norm_module, language_model_fingerprint
from threed_llm_ros.model.location_tokens import token_row_parameters
from threed_llm_ros.model.threed_llm import ThreeDLLM
from threed_llm_ros.model.threed_llm_config import ThreeDLLMConfig

CHECKPOINT_FORMAT = "threed_llm_ros.checkpoint/1"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
INPUT_ROWS_KEY = "token_rows.input_embeddings"
OUTPUT_ROWS_KEY = "token_rows.output_embeddings"


def _row_parameters(model: ThreeDLLM) -> tuple[torch.nn.Parameter, torch.nn.Parameter | None]:
    parameters = token_row_parameters(model.causal_lm)
    return parameters[0], (parameters[1] if len(parameters) > 1 else None)


def _trained_norm_ids(model: ThreeDLLM) -> set[int]:
    if not model.config.lora.train_norms:
        return set()
    return {
        id(p) for module in model.causal_lm.modules() if is_norm_module(module) for p in module.parameters(recurse=False)
    }


def trained_state_dict(model: ThreeDLLM) -> dict[str, torch.Tensor]:
    """Every tensor training can change, keyed by a stable name; no frozen base weight.

    Membership is structural (LoRA, norms when ``lora.train_norms``, added-token rows,
    scene encoder, box head), not the current ``requires_grad`` flags, so a checkpoint
    saved in a training stage that froze some groups still holds them all.
    """
    state: dict[str, torch.Tensor] = {}
    for name, tensor in model.scene_encoder.state_dict().items():
        state[f"scene_encoder.{name}"] = tensor
    for name, tensor in model.box_head.state_dict().items():
        state[f"box_head.{name}"] = tensor
    input_rows, output_rows = _row_parameters(model)
    norm_ids = _trained_norm_ids(model)
    for name, parameter in model.language_model.named_parameters():
        if "lora_" in name or id(parameter) in norm_ids:
            state[f"language_model.{name}"] = parameter
    first_new_row = model.added_tokens.base_vocab_size
    state[INPUT_ROWS_KEY] = input_rows[first_new_row:]
    if output_rows is not None:
        state[OUTPUT_ROWS_KEY] = output_rows[first_new_row:]
    return {name: tensor.detach().cpu().contiguous().clone() for name, tensor in state.items()}


def load_trained_state_dict(model: ThreeDLLM, state: dict[str, torch.Tensor], *, strict: bool = True) -> list[str]:
    """Copy a :func:`trained_state_dict` into ``model``; returns the names it did not copy.

    ``strict`` (the default): missing, unexpected or reshaped tensors are an error. Otherwise
    only the tensors that fit are copied and the rest keep their built values (starting a
    changed architecture from an older checkpoint, ``init_from`` in the training YAML).
    """
    expected = trained_state_dict(model)
    skipped: list[str] = []
    if not strict:
        fitting = {k: v for k, v in state.items() if k in expected and v.shape == expected[k].shape}
        skipped = sorted((set(expected) | set(state)) - set(fitting))
        state = {**expected, **fitting}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ModelFileError(
            f"checkpoint does not fit the model built from its config: missing {missing[:5]} "
            f"({len(missing)}), unexpected {unexpected[:5]} ({len(unexpected)})"
        )
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise ModelFileError(f"checkpoint tensor {name} has shape {tuple(tensor.shape)}, model expects {tuple(expected[name].shape)}")
    input_rows, output_rows = _row_parameters(model)
    first_new_row = model.added_tokens.base_vocab_size
    language_parameters = dict(model.language_model.named_parameters())
    scene_state = {k.removeprefix("scene_encoder."): v for k, v in state.items() if k.startswith("scene_encoder.")}
    head_state = {k.removeprefix("box_head."): v for k, v in state.items() if k.startswith("box_head.")}
    model.scene_encoder.load_state_dict(scene_state, strict=True)
    model.box_head.load_state_dict(head_state, strict=True)
    with torch.no_grad():
        for name, tensor in state.items():
            if name.startswith("language_model."):
                target = language_parameters[name.removeprefix("language_model.")]
                target.copy_(tensor.to(target.dtype))
        input_rows[first_new_row:] = state[INPUT_ROWS_KEY].to(input_rows.dtype)
        if output_rows is not None:
            output_rows[first_new_row:] = state[OUTPUT_ROWS_KEY].to(output_rows.dtype)
    return skipped


def save_checkpoint(model: ThreeDLLM, directory: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model.safetensors`` (trained tensors only) and ``config.json`` to ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(trained_state_dict(model), str(directory / WEIGHTS_FILE), metadata={"format": CHECKPOINT_FORMAT})
    report = parameter_report(model)
    document = {
        "format": CHECKPOINT_FORMAT,
        "model": model.config.to_dict(),
        "language_model": language_model_fingerprint(model.config.language_model_path),
        "added_tokens": model.added_tokens.to_dict(),
        "parameters": {"trainable": report["trainable"], "total": report["total"]},
        "extra": extra or {},
    }
    (directory / CONFIG_FILE).write_text(json.dumps(document, indent=2) + "\n")
    return directory


def read_checkpoint_config(directory: str | Path) -> dict[str, Any]:
    """The parsed ``config.json`` of a checkpoint directory."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise ModelFileError(f"{path} is missing: {directory} is not a threed_llm_ros checkpoint")
    try:
        document = json.loads(path.read_text())
    except ValueError as error:
        raise ModelFileError(f"{path} is not valid JSON: {error}") from error
    if document.get("format") != CHECKPOINT_FORMAT:
        raise ModelFileError(f"{path} has format {document.get('format')!r}, expected {CHECKPOINT_FORMAT!r}")
    return document


def load_checkpoint(
    directory: str | Path,
    *,
    language_model_path: str | Path | None = None,
    device: str | torch.device = "cpu",
    check_language_model: bool = True,
) -> ThreeDLLM:
    """Rebuild a :class:`ThreeDLLM` from a checkpoint on top of its base language model.

    ``language_model_path`` overrides where the base LM is (else the config's, else the
    SmolLM2 default); its sha256 must match the one recorded at save time.
    """
    directory = Path(directory)
    document = read_checkpoint_config(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelFileError(f"{weights} is missing")
    config = ThreeDLLMConfig.from_dict(document["model"])
    if language_model_path is not None:
        config = replace(config, language_model_path=str(language_model_path))
    if check_language_model:
        found = language_model_fingerprint(config.language_model_path)
        recorded = document["language_model"]
        if found["sha256"] != recorded["sha256"]:
            raise ConfigError(
                "language_model_path",
                f"base model {found['name']} ({found['size']} bytes, sha256 {found['sha256'][:12]}…) is not the one "
                f"the checkpoint was trained on ({recorded['name']}, {recorded['size']} bytes, "
                f"sha256 {recorded['sha256'][:12]}…)",
                "pass language_model_path= the file the checkpoint was trained on",
            )
    model = ThreeDLLM(config)
    if model.added_tokens.to_dict() != document["added_tokens"]:
        raise ModelFileError(
            f"the rebuilt tokenizer's added tokens differ from the checkpoint's ({directory / CONFIG_FILE})"
        )
    load_trained_state_dict(model, load_file(str(weights)))
    return model.to(device).eval()


def _count(parameters: list[torch.nn.Parameter]) -> int:
    return int(sum(p.numel() for p in parameters))


SCENE_ENCODER_COMPONENTS = {
    "point_encoder": "point encoder",
    "point_projector": "projector",
    "query_experts": "Q-Former / MQE",
    "modality_projector": "projector",
    "patch_semantics": "point encoder",  # the encoder's auxiliary training head
    "word_position": "projector",  # position embedding of the word tokens
    "word_size": "projector",  # size embedding of instance word tokens
}


def parameter_report(model: ThreeDLLM) -> dict[str, Any]:
    """Trainable and total parameter counts per component, and overall.

    Components: point encoder, Q-Former / MQE, projector, LoRA, norms (when
    ``lora.train_norms``), token rows (the added tokens' embedding rows), box head, frozen
    LM (everything else of the language model, including the original vocabulary rows).
    "trainable" follows the current ``requires_grad`` flags (a training stage may freeze
    groups); "total" is structural.
    Length: one entry per component, counted in one place so the components add up to the total.
    """
    components: dict[str, dict[str, int]] = {}

    def add(component: str, trainable: int, total: int) -> None:
        entry = components.setdefault(component, {"trainable": 0, "total": 0})
        entry["trainable"] += trainable
        entry["total"] += total

    for child_name, child in model.scene_encoder.named_children():
        parameters = list(child.parameters())
        component = SCENE_ENCODER_COMPONENTS.get(child_name, "point encoder")
        add(component, _count([p for p in parameters if p.requires_grad]), _count(parameters))
    head = list(model.box_head.parameters())
    add("box head", _count([p for p in head if p.requires_grad]), _count(head))

    input_rows, output_rows = _row_parameters(model)
    new_rows = len(model.added_tokens.tokens)
    row_parameters = [p for p in (input_rows, output_rows) if p is not None]
    trainable_rows = sum(new_rows * p.shape[1] for p in row_parameters if p.requires_grad)
    all_rows = sum(new_rows * p.shape[1] for p in row_parameters)
    add("token rows", trainable_rows, all_rows)

    norm_ids = _trained_norm_ids(model)
    row_ids = {id(p) for p in row_parameters}
    seen: set[int] = set()
    add("LoRA", 0, 0)
    add("norms", 0, 0)
    frozen = 0
    for name, parameter in model.language_model.named_parameters():
        if id(parameter) in seen or id(parameter) in row_ids:
            continue
        seen.add(id(parameter))
        trainable = parameter.numel() if parameter.requires_grad else 0
        if "lora_" in name:
            add("LoRA", trainable, parameter.numel())
        elif id(parameter) in norm_ids:
            add("norms", trainable, parameter.numel())
        else:
            frozen += parameter.numel()
            if parameter.requires_grad:
                raise RuntimeError(f"{name} of the base language model is trainable; only LoRA, norms and new rows may be")
    frozen += sum(p.numel() for p in row_parameters) - all_rows  # the original vocabulary rows
    add("frozen LM", 0, frozen)
    trainable = sum(entry["trainable"] for entry in components.values())
    total = sum(entry["total"] for entry in components.values())
    own_total = sum(p.numel() for p in model.parameters())
    if total != own_total:
        raise RuntimeError(f"parameter report covers {total} parameters but the model has {own_total}")
    own_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad) - sum(
        p.numel() - new_rows * p.shape[1] for p in row_parameters if p.requires_grad
    )
    if trainable != own_trainable:
        raise RuntimeError(f"parameter report counts {trainable} trainable parameters but the model has {own_trainable}")
    return {"name": model.config.name, "components": components, "trainable": trainable, "total": total}
