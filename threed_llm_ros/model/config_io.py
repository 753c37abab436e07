"""JSON round trips for the model's configuration dataclasses.

Configs are plain dataclasses of numbers and strings (or nested configs); these two
helpers turn them into JSON-serialisable dicts and back, rejecting unknown keys with a
``ConfigError`` so a typo in a config file fails loudly instead of being ignored.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from threed_llm_ros.errors import ConfigError

ConfigT = TypeVar("ConfigT")


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-serialisable dict of a (possibly nested) config dataclass."""
    return dataclasses.asdict(config)


def config_from_dict(
    config_class: type[ConfigT], data: dict[str, Any], nested: dict[str, type] | None = None
) -> ConfigT:
    """Build ``config_class`` from a dict; ``nested`` maps field names to config classes built recursively."""
    if not isinstance(data, dict):
        raise ConfigError(
            config_class.__name__, f"expected a mapping, got {type(data).__name__}", "pass a dict/JSON object"
        )
    known = {field.name for field in dataclasses.fields(config_class)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"{config_class.__name__}.{unknown[0]}",
            f"unknown key(s) {unknown}",
            f"use only {sorted(known)}",
        )
    values = dict(data)
    for name, nested_class in (nested or {}).items():
        if name in values and not isinstance(values[name], nested_class):
            values[name] = nested_class.from_dict(values[name])  # type: ignore[attr-defined]
    return config_class(**values)
