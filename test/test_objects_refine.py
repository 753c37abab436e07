"""The look-alike refiner (objects/refine.py): view features, fusion, loading."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from threed_llm_ros.geometry.boxes import OrientedBox
from threed_llm_ros.objects.fit import fit_box
from threed_llm_ros.objects.layer import ObjectLayer
from threed_llm_ros.objects.recognition import OTHER
from threed_llm_ros.objects.refine import VIEW_FEATURE_NAMES, load_refiner, refine, view_features
from threed_llm_ros.resources import default_object_classifier

FLOOR_Z = -1.2


def _plane(rng: np.random.Generator, x: tuple[float, float], y: tuple[float, float], z: tuple[float, float],
           count: int) -> np.ndarray:
    """``count`` points spread over an axis-aligned patch, in the gravity frame (sensor at the origin)."""
    return np.column_stack([rng.uniform(*x, count), rng.uniform(*y, count), FLOOR_Z + rng.uniform(*z, count)])


def _features(points: np.ndarray) -> dict[str, float]:
    box: OrientedBox = fit_box(points, FLOOR_Z)
    return dict(zip(VIEW_FEATURE_NAMES, view_features(points, box).tolist()))


def test_view_features_see_a_desks_knee_space_and_a_bookshelfs_open_shelves() -> None:
    rng = np.random.default_rng(0)
    # a cabinet's closed front, 3 m ahead, faces the sensor: every cell filled, nothing recessed
    cabinet = _features(_plane(rng, (3.0, 3.02), (-0.5, 0.5), (0.0, 0.8), 1500))
    assert min(cabinet[name] for name in VIEW_FEATURE_NAMES[:9]) > 0.8
    assert cabinet["centre_recess"] < 0.05
    # a desk: its top's edge, a side panel, a drawer pedestal and a knee panel 0.4 m back; the
    # knee space under the middle is open
    desk = _features(np.concatenate([
        _plane(rng, (3.0, 3.6), (-0.6, 0.6), (0.72, 0.75), 600),
        _plane(rng, (3.0, 3.02), (-0.6, -0.55), (0.0, 0.72), 300),
        _plane(rng, (3.0, 3.02), (0.2, 0.6), (0.0, 0.72), 500),
        _plane(rng, (3.4, 3.42), (-0.55, 0.2), (0.33, 0.72), 400),
    ]))
    assert desk["silhouette_low_centre"] < 0.2 < cabinet["silhouette_low_centre"]
    # a bookshelf: its frame in front, its back panel 0.3 m behind the opening
    bookshelf = _features(np.concatenate([
        _plane(rng, (3.0, 3.02), (-0.5, -0.45), (0.0, 1.8), 300), _plane(rng, (3.0, 3.02), (0.45, 0.5), (0.0, 1.8), 300),
        _plane(rng, (3.0, 3.3), (-0.45, 0.45), (1.77, 1.8), 200), _plane(rng, (3.3, 3.32), (-0.45, 0.45), (0.0, 1.77), 900),
    ]))
    assert bookshelf["centre_recess"] > 0.2


def test_refine_speaks_only_between_look_alikes_and_keeps_other() -> None:
    classes = ["table", "desk", "cabinet", "bed", OTHER]
    objects = classes[:-1]
    shape = np.array([[0.1, 0.5, 0.1, 0.0, 0.3], [0.0, 0.0, 0.0, 0.0, 1.0], [0.1, 0.0, 0.0, 0.6, 0.3]])
    refined = np.array([[0.05, 0.05, 0.9, 0.0], [0.2, 0.2, 0.6, 0.0], [0.0, 0.0, 0.1, 0.9]])
    result = refine(shape, classes, refined, objects)
    np.testing.assert_allclose(result[:, -1], shape[:, -1])
    np.testing.assert_allclose(result.sum(axis=1), 1.0)
    assert result[0, 2] > result[0, 1]  # the view's surer opinion wins between two look-alikes
    np.testing.assert_allclose(result[1], shape[1])  # junk stays junk
    np.testing.assert_allclose(result[2], shape[2])  # a bed is no look-alike: the shape classifier's name stays


def test_a_classifier_without_a_refiner_still_loads(tmp_path: Path) -> None:
    for name in ("config.json", "model.safetensors"):
        shutil.copy(default_object_classifier() / name, tmp_path / name)
    assert load_refiner(tmp_path) is None
    assert ObjectLayer.load(tmp_path).refiner is None
    assert ObjectLayer.load(default_object_classifier()).refiner is not None


def test_a_box_on_a_table_is_a_box_not_a_lamp() -> None:
    """Two simulated frames (never trained on) where the shape classifier alone calls a cardboard
    box on a table a lamp (0.56–0.70): sized like a lamp's shade, its silhouette is a full block
    where a lamp's lower sides are empty, and the refiner says so."""
    from threed_llm_ros.data.sim.frames import simulate
    from threed_llm_ros.geometry.iou import rotated_box_iou
    from threed_llm_ros.objects.layer import PerceptionSettings

    layer = ObjectLayer.load(default_object_classifier(), PerceptionSettings(sensor_height=1.2))
    for seed in (91_011, 91_031):
        frame = simulate(seed)
        truth = next(obj for obj in frame.objects if obj.category == "box")
        found = layer.perceive(frame.points, frame.colors, image=frame.rgb, intrinsics=frame.intrinsics).confident
        best = max(found, key=lambda obj: rotated_box_iou(obj.box, truth.box))
        assert best.category == "box" and rotated_box_iou(best.box, truth.box) >= 0.25, (seed, best.category)
