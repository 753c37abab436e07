"""Dataset format: write/load round trip, splits, compositional split, real SUN RGB-D conversion."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from threed_llm_ros.data.annotations import annotate_scene, check_answer
from threed_llm_ros.data.relations import scene_facts
from threed_llm_ros.data.dataset import (
    SPLITS,
    SceneRecord,
    SplitConfig,
    choose_heldout_combinations,
    convert_sunrgbd_sample,
    load_dataset,
    read_scene,
    scene_split,
    write_dataset,
    write_scene,
)
from threed_llm_ros.data.generate import record_from_frame
from threed_llm_ros.data.sim.frames import simulate
from threed_llm_ros.geometry.camera import CameraIntrinsics
from threed_llm_ros.geometry.frames import to_gravity_frame

SPLIT_CONFIG = SplitConfig(seed=5, val_fraction=0.25, test_fraction=0.25, heldout_fraction=0.25)


@pytest.fixture(scope="module")
def scenes() -> list[tuple[SceneRecord, list]]:
    intrinsics = CameraIntrinsics.from_field_of_view(128, 96, 60.0)
    result = []
    for index in range(16):
        frame = simulate(500 + index, intrinsics)
        record = record_from_frame(frame, f"s{index:03d}", 3000, np.random.default_rng(index), save_images=index < 2)
        result.append((record, annotate_scene(record, seed=index)))
    return result


@pytest.fixture(scope="module")
def dataset_directory(scenes, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("dataset")
    write_dataset(directory, scenes, SPLIT_CONFIG, metadata={"note": "test"})
    return directory


def assert_records_equal(first: SceneRecord, second: SceneRecord) -> None:
    assert first.scene_id == second.scene_id
    np.testing.assert_array_equal(first.points, second.points)
    np.testing.assert_array_equal(first.colors, second.colors)
    assert (first.up_axis, first.frame_id, first.room_type) == (second.up_axis, second.frame_id, second.room_type)
    assert first.objects == second.objects
    assert first.intrinsics == second.intrinsics
    assert set(first.images) == set(second.images)
    for key in first.images:
        np.testing.assert_array_equal(first.images[key], second.images[key])


def test_scene_round_trip(scenes, tmp_path) -> None:
    for record, _ in scenes[:3]:
        path = tmp_path / f"{record.scene_id}.npz"
        write_scene(path, record)
        loaded = read_scene(path)
        assert_records_equal(record, loaded)
        assert loaded.points.dtype == np.float32 and loaded.colors.dtype == np.uint8
    assert set(read_scene(tmp_path / "s000.npz").images) == {"rgb", "depth", "instance"}


def test_dataset_round_trip(scenes, dataset_directory) -> None:
    dataset = load_dataset(dataset_directory)
    meta = json.loads((dataset_directory / "meta.json").read_text())
    assert meta["note"] == "test" and meta["scenes"] == len(scenes)
    assert len(dataset) == meta["annotations"]
    originals = {record.scene_id: (record, [a.to_dict() for a in annotations]) for record, annotations in scenes}
    facts = {}
    for record, annotation in dataset:
        original_record, original_annotations = originals[record.scene_id]
        if record.scene_id not in facts:
            assert_records_equal(original_record, record)
            facts[record.scene_id] = scene_facts(record)
        assert annotation.to_dict() in original_annotations
        assert check_answer(record, annotation, facts[record.scene_id])
    dropped = meta["dropped_heldout_from_train"]
    assert len(dataset) + dropped == sum(len(annotations) for _, annotations in scenes)


def test_index_lines_have_the_documented_fields(dataset_directory) -> None:
    lines = (dataset_directory / "index.jsonl").read_text().splitlines()
    for line in lines:
        entry = json.loads(line)
        assert set(entry) == {"scene_id", "split", "task", "prompt", "answer", "target_object", "target_box", "plan",
                              "attributes"}
        assert entry["target_box"] is None or len(entry["target_box"]) == 7
    with np.load(dataset_directory / "scenes" / "s003.npz") as data:
        assert {"points", "colors", "boxes", "labels", "color_names", "support", "up_axis", "frame_id"} <= set(data.files)
        assert data["boxes"].shape == (len(data["labels"]), 7)


def test_splits_are_disjoint_at_scene_level(dataset_directory) -> None:
    scenes_of = {split: set(load_dataset(dataset_directory, splits=split).scene_ids) for split in SPLITS}
    assert scenes_of["train"] and scenes_of["val"] and scenes_of["test"]
    assert not scenes_of["train"] & (scenes_of["val"] | scenes_of["test"] | scenes_of["test_compositional"])
    assert not scenes_of["val"] & scenes_of["test"]
    assert scenes_of["test_compositional"] <= scenes_of["val"] | scenes_of["test"]


def test_compositional_combinations_never_reach_training(dataset_directory) -> None:
    heldout = {tuple(combo) for combo in choose_heldout_combinations(SPLIT_CONFIG)}
    train = load_dataset(dataset_directory, splits="train")
    compositional = load_dataset(dataset_directory, splits="test_compositional")
    assert len(compositional) > 0
    for entry in train.entries:
        assert not {tuple(combo) for combo in entry.annotation.attributes.get("combos", [])} & heldout
    for entry in compositional.entries:
        assert {tuple(combo) for combo in entry.annotation.attributes["combos"]} & heldout
    # Training still sees the parts: categories, colours and relations of held-out combinations.
    seen = {tuple(combo) for entry in train.entries for combo in entry.annotation.attributes.get("combos", [])}
    assert {combo[2] for combo in seen} >= {"on", "next to"}


def test_scene_split_is_stable_and_fractions_hold() -> None:
    ids = [f"scene{index}" for index in range(4000)]
    splits = [scene_split(scene_id, SplitConfig(seed=1)) for scene_id in ids]
    assert splits[:100] == [scene_split(scene_id, SplitConfig(seed=1)) for scene_id in ids[:100]]
    assert abs(splits.count("test") / len(ids) - 0.1) < 0.02 and abs(splits.count("val") / len(ids) - 0.1) < 0.02
    assert splits != [scene_split(scene_id, SplitConfig(seed=2)) for scene_id in ids]
    assert choose_heldout_combinations(SplitConfig(seed=1)) == choose_heldout_combinations(SplitConfig(seed=1))
    assert choose_heldout_combinations(SplitConfig(seed=1)) != choose_heldout_combinations(SplitConfig(seed=2))


def test_dataset_filters_and_cache(dataset_directory) -> None:
    grounding = load_dataset(dataset_directory, splits=["train", "val"], tasks="grounding", cache_size=2)
    assert len(grounding) > 0
    assert {entry.annotation.task for entry in grounding.entries} == {"grounding"}
    assert {entry.split for entry in grounding.entries} <= {"train", "val"}
    first = grounding.scene(grounding.scene_ids[0])
    assert grounding.scene(grounding.scene_ids[0]) is first  # cached
    for scene_id in grounding.scene_ids:
        grounding.scene(scene_id)
    assert len(grounding._cache) == 2
    with pytest.raises(ValueError):
        load_dataset(dataset_directory, splits="training")


def test_duplicate_scene_ids_are_rejected(scenes, tmp_path) -> None:
    record, annotations = scenes[0]
    with pytest.raises(ValueError, match="appears twice"):
        write_dataset(tmp_path, [(record, annotations), (record, annotations)])


def test_sunrgbd_sample_converts(realdata) -> None:
    root = realdata / "sunrgbd_mmdet3d"
    record = convert_sunrgbd_sample(root / "label" / "000001.txt", root / "lidar" / "000001.npz", room_type="bedroom")
    assert record.up_axis == "z" and len(record.points) == 50000
    assert [obj.category for obj in record.objects] == ["bed", "night stand", "ottoman", "dresser mirror", "dresser", "lamp"]
    gravity = to_gravity_frame(record.points, record.up_axis)
    for obj in record.objects:
        inside = int(obj.box.contains(gravity).sum())
        assert inside == obj.visible_points and inside >= 30, obj.category
    # The lamp stands on the night stand (support inferred from the boxes); the others on the floor.
    assert [obj.on for obj in record.objects] == [None, None, None, None, None, 1]
    # Upright depth (x right, y forward) became x forward, y left: the bed is ahead and to the right.
    bed = record.objects[0].box
    assert bed.center[0] > 3.5 and bed.center[1] < 0
    annotations = annotate_scene(record, seed=0)
    facts = scene_facts(record)
    assert {annotation.task for annotation in annotations} == {"caption", "dense_caption", "qa", "grounding", "plan"}
    assert all(check_answer(record, annotation, facts) for annotation in annotations)
    assert all("bedroom" in annotation.answer.lower() for annotation in annotations if annotation.task == "caption")
