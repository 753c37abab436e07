"""``threed-llm generate-data`` writes a loadable, consistent, reproducible dataset."""

from __future__ import annotations

import json

import numpy as np

from threed_llm_ros.data.annotations import check_answer
from threed_llm_ros.data.dataset import load_dataset
from threed_llm_ros.data.generate import main


def _generate(directory, seed: int = 4) -> int:
    return main([
        "--output", str(directory), "--scenes", "3", "--seed", str(seed), "--width", "96", "--height", "72",
        "--points-per-scene", "2000", "--quiet",
    ])


def test_generate_data_writes_a_loadable_dataset(tmp_path, capsys) -> None:
    assert _generate(tmp_path / "data") == 0
    assert "3 scenes" in capsys.readouterr().out
    dataset = load_dataset(tmp_path / "data")
    meta = json.loads((tmp_path / "data" / "meta.json").read_text())
    assert meta["scenes"] == 3 and meta["generator"]["width"] == 96 and meta["scenes_per_second"] > 0
    assert len(dataset.scene_ids) == 3 and len(dataset) == meta["annotations"] > 0
    for scene_id in dataset.scene_ids:
        record = dataset.scene(scene_id)
        assert record.up_axis == "-y" and 0 < len(record.points) <= 2000
        assert record.images["rgb"].shape == (72, 96, 3) and record.intrinsics.width == 96
        # Points are in the optical frame (z forward): in the gravity frame they fill their objects' boxes.
        assert np.median(record.points[:, 2]) > 1.0
        gravity = record.points_gravity()
        for obj in record.objects:
            if obj.visible_points >= 20:
                inside = int(obj.box.contains(gravity, margin=0.05).sum())
                assert inside >= 0.8 * obj.visible_points, (scene_id, obj)
    for record, annotation in dataset:
        assert check_answer(record, annotation)


def test_generate_data_is_deterministic(tmp_path) -> None:
    assert _generate(tmp_path / "a") == 0 and _generate(tmp_path / "b") == 0 and _generate(tmp_path / "c", seed=5) == 0
    index_a = (tmp_path / "a" / "index.jsonl").read_text()
    assert index_a == (tmp_path / "b" / "index.jsonl").read_text()
    assert index_a != (tmp_path / "c" / "index.jsonl").read_text()
    for name in load_dataset(tmp_path / "a").scene_ids:
        with np.load(tmp_path / "a" / "scenes" / f"{name}.npz") as first, np.load(tmp_path / "b" / "scenes" / f"{name}.npz") as second:
            np.testing.assert_array_equal(first["points"], second["points"])


def test_generate_data_rejects_bad_arguments(tmp_path, capsys) -> None:
    assert main(["--output", str(tmp_path), "--scenes", "0", "--quiet"]) == 2
    assert "scenes" in capsys.readouterr().err


def test_the_flat_generate_options_are_one_config() -> None:
    """``generate-data``'s flags and a training YAML's ``data.generate`` build the same GenerateConfig."""
    import pytest

    from threed_llm_ros.data.generate import GenerateConfig
    from threed_llm_ros.errors import ConfigError

    options = {"scenes": 3, "seed": 5, "width": 96, "height": 72, "points_per_scene": 2000, "save_images": False,
               "val_fraction": 0.2, "test_fraction": 0.0, "heldout_fraction": 0.3}
    config = GenerateConfig.from_options(options)
    assert (config.scenes, config.split.seed, config.split.val_fraction, config.split.heldout_fraction) == (3, 5, 0.2, 0.3)
    assert GenerateConfig.from_options(config.options()) == config
    assert GenerateConfig.from_options({}) == GenerateConfig()
    with pytest.raises(ConfigError) as raised:
        GenerateConfig.from_options({"scenes": 3, "sceens": 4}, "data.generate")
    assert raised.value.parameter == "data.generate.sceens"
