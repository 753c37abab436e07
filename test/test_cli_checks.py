"""A new user's mistakes on the command line: one line naming the problem and the fix (issue 17)."""

from __future__ import annotations

from pathlib import Path

import yaml

from threed_llm_ros.eval import evaluate as evaluate_module
from threed_llm_ros.train import trainer as trainer_module
from threed_llm_ros.train.config import load_train_config


def _recipe_with_data(tmp_path: Path, repo_root: Path, directory: Path, generate_if_missing: bool | None) -> Path:
    values = yaml.safe_load((repo_root / "config" / "train_tiny.yaml").read_text())
    values["data"]["directory"] = str(directory)
    values["data"].pop("generate_if_missing", None)
    if generate_if_missing is not None:
        values["data"]["generate_if_missing"] = generate_if_missing
    values["output"] = str(tmp_path / "run")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(values))
    return recipe


def test_train_on_a_missing_dataset_is_an_error_unless_generation_was_asked(tmp_path: Path, repo_root: Path, capsys) -> None:
    missing = tmp_path / "my_real_data_typo"
    for asked in (None, False):
        assert trainer_module.main(["--config", str(_recipe_with_data(tmp_path, repo_root, missing, asked)), "--quiet"]) == 2
        error = capsys.readouterr().err.strip()
        assert error.count("\n") == 0, error
        assert "parameter 'data.directory'" in error and "does not exist" in error and str(missing) in error
        assert "generate_if_missing: true" in error and "--generate-data" in error
        assert not missing.exists()  # nothing generated there
    missing.mkdir()
    assert trainer_module.main(["--config", str(_recipe_with_data(tmp_path, repo_root, missing, None)), "--quiet"]) == 2
    assert "is empty" in capsys.readouterr().err


def test_generation_when_asked(tmp_path: Path, repo_root: Path) -> None:
    directory = tmp_path / "generated"
    config = load_train_config(_recipe_with_data(tmp_path, repo_root, directory, True))
    assert trainer_module.ensure_dataset(config.data, progress=False) == directory
    assert (directory / "index.jsonl").is_file()


def test_shipped_recipes_ask_for_generation_of_their_data_caches(repo_root: Path) -> None:
    for recipe in sorted((repo_root / "config").glob("train_*.yaml")):
        assert load_train_config(recipe).data.generate_if_missing, recipe


def test_eval_on_a_missing_dataset_names_the_option_and_the_command_that_makes_one(tmp_path: Path, capsys) -> None:
    for dataset in (tmp_path / "no-data", tmp_path):
        code = evaluate_module.main(["--checkpoint", str(tmp_path / "any"), "--dataset", str(dataset),
                                     "--output", str(tmp_path / "r"), "--quiet"])
        error = capsys.readouterr().err.strip()
        assert code == 2 and error.count("\n") == 0, error
        assert "parameter '--dataset'" in error and str(dataset) in error
        assert "threed-llm generate-data --output DIR" in error and "write_dataset" not in error
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------- issue 17, item 5: checks that came too late


def test_a_garbage_or_empty_npz_is_one_clear_line(tmp_path: Path) -> None:
    from threed_llm_ros.ask import read_cloud_file
    from threed_llm_ros.errors import ConfigError

    empty, garbage, flat = tmp_path / "empty.npz", tmp_path / "garbage.npz", tmp_path / "flat.npz"
    empty.write_bytes(b"")
    garbage.write_bytes(b"PK\x03\x04 this is not a zip archive")
    import numpy as np

    np.savez(flat, points=np.zeros((10, 2)))
    for path, problem in ((empty, "cannot be read"), (garbage, "cannot be read"), (flat, "shape (10, 2)")):
        try:
            read_cloud_file(path)
        except ConfigError as error:
            assert problem in str(error) and "Fix:" in str(error) and "\n" not in str(error), str(error)
        else:
            raise AssertionError(f"{path.name} was read")


def test_a_malformed_graph_yaml_names_line_and_column(tmp_path: Path) -> None:
    import pytest

    from threed_llm_ros.errors import ConfigError
    from threed_llm_ros.up import load_graph, parse_overrides

    broken = tmp_path / "graph.yaml"
    broken.write_text("nodes:\n  - name: a\n    module: [unclosed\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line \d+, column \d+"):
        load_graph(broken)
    broken.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="not a mapping"):
        load_graph(broken)
    with pytest.raises(ConfigError, match="not a YAML scalar"):
        parse_overrides(["node.parameter=a: b: c"])


def test_stamps_and_focal_lengths_no_reply_can_use_are_refused_on_arrival() -> None:
    import pytest
    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import CameraInfo

    from threed_llm_ros.errors import CameraInfoError, MessageFormatError
    from threed_llm_ros.ros.conversions import camera_info_to_intrinsics, stamp_to_tuple

    assert stamp_to_tuple(Time(sec=3, nanosec=999_999_999)) == (3, 999_999_999)
    with pytest.raises(MessageFormatError, match="header.stamp.nanosec"):
        stamp_to_tuple(Time(sec=3, nanosec=1_000_000_000))
    info = CameraInfo(width=640, height=480)
    info.k = [5e-324, 0.0, 320.0, 0.0, 5e-324, 240.0, 0.0, 0.0, 1.0]
    with pytest.raises(CameraInfoError, match="focal lengths"):
        camera_info_to_intrinsics(info)
    info.k = [525.0, 0.0, 320.0, 0.0, 525.0, 240.0, 0.0, 0.0, 1.0]
    assert camera_info_to_intrinsics(info).fx == 525.0
