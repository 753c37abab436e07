"""Training the single-image grounder on a few simulated frames: the loss falls; evaluation runs."""

from __future__ import annotations

import numpy as np
import pytest

from threed_llm_ros.mono3d.data import FeatureSet, simulated_feature_set
from threed_llm_ros.mono3d.evaluate import FOV_BUCKETS_DEG, evaluate, format_metrics
from threed_llm_ros.mono3d.model import Mono3DConfig, Mono3DGrounder
from threed_llm_ros.mono3d.train import train

TINY = Mono3DConfig(dim=32, heads=2, decoder_layers=1)


@pytest.fixture(scope="module")
def features() -> FeatureSet:
    from threed_llm_ros.mono3d.image_tokens import FrozenBackbone

    return simulated_feature_set(range(6), FrozenBackbone(), TINY)


def test_loss_falls_on_a_tiny_config(features: FeatureSet) -> None:
    """40 steps on 6 frames: the mean loss of the last 10 steps is well below that of the first 5."""
    assert len(features) >= 10
    from dataclasses import replace

    for config in (TINY, replace(TINY, ground_plane_depth=True)):
        history = train(Mono3DGrounder(config), features, steps=40, frames_per_step=6, learning_rate=3e-3,
                        progress=False)
        assert len(history) == 40 and all(np.isfinite(history))
        assert np.mean(history[-10:]) < 0.6 * np.mean(history[:5])


def test_evaluation_reports_every_bucket_and_the_ablation(features: FeatureSet, tmp_path) -> None:
    """The metrics name every FOV bucket for the model and the blind baseline; the cache round-trips."""
    features.save(tmp_path / "set.pt")
    reloaded = FeatureSet.load(tmp_path / "set.pt")
    assert len(reloaded) == len(features) and reloaded.boxes[0] == features.boxes[0]
    for projection in (True, False):
        model = Mono3DGrounder(Mono3DConfig(dim=32, heads=2, decoder_layers=1, geometry_projection=projection))
        metrics = evaluate(model, reloaded, reloaded)
        assert metrics["geometry_projection"] is projection
        for name in ("model", "blind"):
            assert metrics[name]["all"]["queries"] == len(features)
            assert sum(metrics[name][key].get("queries", 0) for key in metrics[name] if key != "all") == len(features)
            assert len(metrics[name]) == 1 + len(FOV_BUCKETS_DEG)
        assert "Acc@0.25" in format_metrics(metrics)


def test_training_command_writes_a_checkpoint_and_its_metrics(tmp_path, realdata) -> None:
    """`threed-llm mono3d-train` end to end on a tiny run: checkpoint, config with the command, metrics
    with the blind baseline and the SUN RGB-D check; `mono3d-eval` reloads it from the cache."""
    import json

    from threed_llm_ros.cli import main as cli
    from threed_llm_ros.mono3d.model import load_model

    output = tmp_path / "model"
    common = ["--test-frames", "2", "--cache", str(tmp_path / "cache"), "--realdata", str(realdata)]
    assert cli(["mono3d-train", "--frames", "4", "--steps", "3", "--dim", "32", "--calibration-frames", "2",
                "--output", str(output), *common]) == 0
    config = json.loads((output / "config.json").read_text())
    assert "mono3d-train" in config["notes"]["training"]["command"]
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["model"]["all"]["queries"] > 0 and "blind" in metrics
    assert 0.0 < config["presence_threshold"] < 1.0
    assert metrics["presence"]["absent_queries"] > 0 and 0.0 <= metrics["presence"]["absent_not_seen_rate"] <= 1.0
    assert 0.0 <= metrics["sun_rgbd_000001"]["iou"] <= 1.0
    assert load_model(output).config.dim == 32
    assert cli(["mono3d-eval", "--model", str(output), "--train-frames", "4", *common]) == 0
    assert json.loads((output / "evaluation.json").read_text())["model"] == metrics["model"]


def test_absent_queries_name_only_labels_the_frame_does_not_show(features: FeatureSet) -> None:
    """Every drawn absent query names a label with no visible pixel in its frame; about half are the
    hard kind (a category that is seen, in a colour that is not)."""
    import torch

    from threed_llm_ros.mono3d.data import draw_absent_queries

    image_index, category, color = draw_absent_queries(features.visible, torch.Generator().manual_seed(0), 20)
    assert len(image_index) > 60
    assert not bool(features.visible[image_index, category, color].any())
    hard = features.visible[image_index, category, 0]
    assert 0.2 < float(hard.float().mean()) < 0.8
    # the referrals themselves are all seen
    assert bool(features.visible[features.image_index, features.category, features.color].all())


def test_presence_threshold_calibration_weighs_absent_answers_twice() -> None:
    """Separable scores: the threshold lies between them; overlapping scores: it moves up, past the
    absent ones, because answering for an absent object costs twice a miss."""
    from threed_llm_ros.mono3d.evaluate import calibrate_presence_threshold, presence_summary

    present, absent = np.array([0.7, 0.8, 0.9]), np.array([0.1, 0.2, 0.3])
    threshold = calibrate_presence_threshold(present, absent)
    assert 0.3 < threshold < 0.7
    summary = presence_summary(present, absent, threshold)
    assert summary["absent_not_seen_rate"] == 1.0 and summary["present_miss_rate"] == 0.0
    overlapping = calibrate_presence_threshold(np.array([0.4, 0.8, 0.9]), np.array([0.1, 0.5]))
    assert 0.5 < overlapping < 0.8
