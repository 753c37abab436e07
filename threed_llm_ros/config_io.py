"""JSON/YAML round trips for the configuration dataclasses: the one home of config dict I/O.

Configs are plain dataclasses of numbers and strings (or nested configs); these helpers
turn them into JSON-serialisable dicts and back, rejecting unknown keys with a
``ConfigError`` so a typo in a config file fails loudly instead of being ignored. It sits
beside ``errors`` (below ``data`` and ``model``) so every layer's configs can use it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from threed_llm_ros.errors import ConfigError

ConfigT = TypeVar("ConfigT")


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-serialisable dict of a (possibly nested) config dataclass."""
    return dataclasses.asdict(config)


def require_mapping(values: Any, name: str) -> dict[str, Any]:
    """``values`` itself when it is a mapping, else a ConfigError naming ``name``."""
    if not isinstance(values, dict):
        raise ConfigError(name, f"expected a mapping, got {type(values).__name__}", "give a mapping (a JSON/YAML object)")
    return values


def config_from_dict(
    config_class: type[ConfigT], data: Any, nested: dict[str, type] | None = None, name: str | None = None,
) -> ConfigT:
    """Build ``config_class`` from a dict; ``nested`` maps field names to config classes built recursively.

    ``name`` is where the dict sits in its file (``"data.generate"``, ``"lora"``), for the
    error messages; the class name by default.
    """
    name = name or config_class.__name__
    require_mapping(data, name)
    known = {field.name for field in dataclasses.fields(config_class)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{name}.{unknown[0]}", f"unknown key(s) {unknown}", f"use only {sorted(known)}")
    values = dict(data)
    for field_name, nested_class in (nested or {}).items():
        if field_name in values and not isinstance(values[field_name], nested_class):
            values[field_name] = nested_class.from_dict(values[field_name])  # type: ignore[attr-defined]
    try:
        return config_class(**values)
    except TypeError as error:  # a required key is missing
        raise ConfigError(name, str(error), f"give the required keys of {sorted(known)}") from error
