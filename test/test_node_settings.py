"""threed_llm_node's parameters have one source: the engine's take their defaults and types from
EngineSettings, and config/threed_llm.yaml must state every declared default with its type (issue 19)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("rclpy")

from threed_llm_ros.ros.node_settings import NODE_NAME, PARAMETER_SPECS, NodeSettings  # noqa: E402
from threed_llm_ros.ros.parameters import defaults_as_yaml_dict  # noqa: E402
from threed_llm_ros.runtime.engine_settings import EngineSettings  # noqa: E402

# Engine settings that are deliberately not node parameters (set in code, not by a robot's YAML).
NOT_PARAMETERS = {"dtype", "compile_language_model", "standoff_m"}


def _typed(value: Any) -> Any:
    """``value`` with the type of every leaf kept, so that 0 and 0.0 (an integer and a double parameter) differ."""
    if isinstance(value, dict):
        return {key: _typed(item) for key, item in value.items()}
    return (type(value).__name__, value)


def test_yaml_defaults_mirror_the_declared_parameters_with_their_types(repo_root: Path) -> None:
    loaded = yaml.safe_load((repo_root / "config" / "threed_llm.yaml").read_text())
    assert _typed(loaded) == _typed(defaults_as_yaml_dict(NODE_NAME, PARAMETER_SPECS))
    for spec in PARAMETER_SPECS:
        assert spec.descriptor().description, spec.name


def test_every_engine_setting_is_a_parameter_with_the_engines_default() -> None:
    specs = {spec.name: spec for spec in PARAMETER_SPECS}
    defaults = EngineSettings()
    for field in dataclasses.fields(EngineSettings):
        if field.name in NOT_PARAMETERS:
            assert field.name not in specs, field.name
            continue
        assert field.name in specs, f"EngineSettings.{field.name} is not declared as a node parameter"
        default = getattr(defaults, field.name)
        assert specs[field.name].default == default and type(specs[field.name].default) is type(default), field.name


def test_the_declared_defaults_read_back_into_the_default_engine_settings(monkeypatch) -> None:
    monkeypatch.delenv("THREED_LLM_TEST_INFERENCE_DELAY_S", raising=False)
    settings = NodeSettings.from_parameters({spec.name: spec.default for spec in PARAMETER_SPECS})
    assert settings.engine == EngineSettings()
    assert settings.inference_delay_s == 0.0
