"""Parameters a node does not declare (a misspelled key in its YAML) stop it with one line
naming the key and the closest declared name, instead of being ignored (issue 17)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

rclpy = pytest.importorskip("rclpy")

from rclpy.context import Context  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from threed_llm_ros.errors import ConfigError  # noqa: E402
from threed_llm_ros.processes import NodeProcess, NodeProcessSpec  # noqa: E402
from threed_llm_ros.ros.parameters import ParameterSpec, declare_parameters, read_parameters  # noqa: E402

pytestmark = pytest.mark.ros

SPECS = [ParameterSpec("max_new_tokens", 48, "Most tokens per reply.", 1, 1024),
         ParameterSpec("caption_rate_hz", 0.0, "Caption rate (Hz).", 0.0, 10.0)]


def _read(overrides: dict) -> dict:
    context = Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node("parameter_test_node", context=context,
                                 parameter_overrides=[Parameter(name, value=value) for name, value in overrides.items()])
        try:
            declare_parameters(node, SPECS)
            return read_parameters(node, SPECS)
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


def test_declared_parameters_are_read() -> None:
    assert _read({"max_new_tokens": 12, "use_sim_time": False}) == {"max_new_tokens": 12, "caption_rate_hz": 0.0}


def test_a_misspelled_parameter_names_the_closest_declared_one() -> None:
    with pytest.raises(ConfigError) as raised:
        _read({"max_new_tokns": 48})
    assert raised.value.parameter == "max_new_tokns"
    message = str(raised.value)
    assert "did you mean 'max_new_tokens'" in message and "Fix: rename it to 'max_new_tokens'" in message
    assert "\n" not in message


def test_several_unknown_parameters_are_named_in_one_line() -> None:
    with pytest.raises(ConfigError) as raised:
        _read({"caption_rate": 1.0, "zzz_unrelated": 3})
    message = str(raised.value)
    assert "'caption_rate' (did you mean 'caption_rate_hz'?)" in message and "'zzz_unrelated'" in message
    assert "ros2 param list" in message and "\n" not in message


def test_the_node_fails_to_start_on_a_misspelled_key_in_its_yaml(tmp_path: Path, repo_root: Path) -> None:
    """The issue's case: `max_new_tokns: 48` in a parameter file; the node exits 1 naming the fix."""
    config = tmp_path / "typo.yaml"
    config.write_text(yaml.safe_dump({"threed_llm_node": {"ros__parameters": {"max_new_tokns": 48}}}))
    spec = NodeProcessSpec(module="threed_llm_ros.ros.threed_llm_node",
                           parameter_files=[repo_root / "config" / "threed_llm.yaml", config])
    process = NodeProcess(spec, log_path=tmp_path / "typo.log")
    try:
        code = process.process.wait(timeout=120)
        output = process.output()
    finally:
        process.stop()
    assert code == 1, output
    assert "parameter 'max_new_tokns'" in output and "Fix: rename it to 'max_new_tokens'" in output, output


def test_the_inference_delay_is_a_test_hook_not_a_parameter() -> None:
    """The deliberate per-inference sleep comes from the environment, never from a parameter file."""
    from threed_llm_ros.ros.node_settings import (
        PARAMETER_SPECS as NODE_SPECS, TEST_INFERENCE_DELAY_ENV, inference_delay_for_tests,
    )

    assert "inference_delay_s" not in {spec.name for spec in NODE_SPECS}
    assert inference_delay_for_tests({}) == 0.0
    assert inference_delay_for_tests({TEST_INFERENCE_DELAY_ENV: "0.25"}) == 0.25
    for bad in ("soon", "-1", "nan"):
        with pytest.raises(ConfigError) as raised:
            inference_delay_for_tests({TEST_INFERENCE_DELAY_ENV: bad})
        assert raised.value.parameter == TEST_INFERENCE_DELAY_ENV
