"""Objects from an instance encoder's votes: names, metric boxes, one detection per object."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from threed_llm_ros.model.preprocessing import prepare_scenes
from threed_llm_ros.model.scene_encoder import SceneEncoder
from threed_llm_ros.model.scene_objects import can_detect_objects, detect_objects, keep_distinct_objects

from threed_llm_helpers import box_cloud, tiny_config

CATEGORIES = ["cup", "chair", "table"]
COLORS = ["red", "blue"]


def _instance_encoder(word_instances: bool = True) -> SceneEncoder:
    config = replace(tiny_config().scene_encoder, semantic_categories=CATEGORIES, semantic_colors=COLORS,
                     word_groups=6, word_instances=word_instances)
    torch.manual_seed(0)
    return SceneEncoder(config).eval()


def _set_head(encoder: SceneEncoder, category: int, color: int, log_size: float) -> None:
    """Every group: the given category (1-based) and colour (0-based), voting for its own centre with one size."""
    head = encoder.patch_semantics
    with torch.no_grad():
        head.classify.weight.zero_()
        head.classify.bias.fill_(-5.0)
        head.classify.bias[category] = 5.0
        head.classify.bias[len(CATEGORIES) + 2 + color] = 5.0  # after the "none" colour
        last = head.geometry[-1]
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.0, 0.0, 0.0, log_size, log_size, log_size]))


def test_detections_carry_the_heads_names_and_metric_boxes() -> None:
    encoder = _instance_encoder()
    assert can_detect_objects(encoder) and not can_detect_objects(_instance_encoder(word_instances=False))
    xyz, rgb = box_cloud(3)
    scene = prepare_scenes([(xyz, rgb)], encoder.config.preprocess, seed=0)
    # one big size: every group's vote lies inside the first one's sphere -> a single chair
    _set_head(encoder, category=2, color=1, log_size=np.log(4.0))
    found = detect_objects(encoder, scene)
    assert len(found) == 1
    chair = found[0]
    assert (chair.category, chair.color) == ("chair", "blue") and chair.score > 0.99
    scale = float(scene.scale[0])
    assert np.allclose(chair.box.size, [4.0 * scale] * 3, atol=1e-4) and chair.box.yaw == 0.0
    # the box centre is one of the group centres, in metres: normalised * scale + offset
    group_metres = scene.centers[0].double().numpy() * scale + scene.offset[0].double().numpy()
    assert np.min(np.linalg.norm(group_metres - np.asarray(chair.box.center), axis=1)) < 1e-4
    xyz_min, xyz_max = xyz.min(axis=0) - 0.1, xyz.max(axis=0) + 0.1
    assert np.all(np.asarray(chair.box.center) >= xyz_min) and np.all(np.asarray(chair.box.center) <= xyz_max)
    # tiny sizes: every candidate is its own object, as many as the word groups
    _set_head(encoder, category=1, color=0, log_size=np.log(1e-3))
    found = detect_objects(encoder, scene)
    assert len(found) == encoder.config.word_groups and {(o.category, o.color) for o in found} == {("cup", "red")}
    assert len(detect_objects(encoder, scene, candidates=10)) == 10
    # groups likelier on nothing are not objects
    with torch.no_grad():
        encoder.patch_semantics.classify.bias[0] = 20.0
    assert detect_objects(encoder, scene) == []
    with pytest.raises(ValueError, match="instance votes"):
        detect_objects(_instance_encoder(word_instances=False), scene)


def test_one_object_under_two_names_is_kept_once() -> None:
    """A chair whose groups also voted "table" at almost the same place is one object (the more
    confident name wins); a cup on that table, far from its centre in cup sizes, stays."""
    centres = torch.tensor([[0.0, 0.0, 0.0], [0.2, 0.1, 0.0], [0.3, 0.0, 0.45], [2.0, 0.0, 0.0]])
    sizes = torch.tensor([[0.5, 0.5, 0.9], [1.0, 0.8, 0.7], [0.1, 0.1, 0.1], [0.5, 0.5, 0.9]])
    confidence = torch.tensor([0.9, 0.6, 0.8, 0.7])
    keep = keep_distinct_objects(centres, sizes, confidence, torch.ones(4, dtype=torch.bool))
    assert keep.tolist() == [True, False, True, True]
    # the more confident of the two decides, whatever the order
    keep = keep_distinct_objects(centres, sizes, torch.tensor([0.5, 0.6, 0.8, 0.7]), torch.ones(4, dtype=torch.bool))
    assert keep.tolist() == [False, True, True, True]
    # candidates already dropped neither stay nor drop others
    candidates = torch.tensor([False, True, True, True])
    assert keep_distinct_objects(centres, sizes, confidence, candidates).tolist() == [False, True, True, True]
