"""The simulated RGB-D camera: determinism, ground truth, geometry and sensor effects."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from threed_llm_ros.data.catalog import CATEGORIES, COLORS
from threed_llm_ros.data.sim import cli as sim_cli
from threed_llm_ros.data.sim.frames import DEFAULT_INTRINSICS, RenderedFrame, render, simulate
from threed_llm_ros.data.sim.placement import SceneConfig, footprints_overlap, generate_scene
from threed_llm_ros.data.sim.render import ray_cast
from threed_llm_ros.data.sim.scene import Scene, SceneObject, SceneSpecError, load_scene, save_scene
from threed_llm_ros.data.sim.sensor import SensorConfig
from threed_llm_ros.errors import ConfigError
from threed_llm_ros.geometry.camera import CameraIntrinsics, depth_to_points, project_points
from threed_llm_ros.geometry.frames import from_gravity_frame, to_gravity_frame

SMALL = CameraIntrinsics.from_field_of_view(320, 240, 60.0)
PERFECT = SensorConfig(enabled=False)
# Only one effect at a time: everything else off.
NO_EFFECTS = SensorConfig(
    depth_noise_coefficient=0.0,
    dropout_probability=0.0,
    min_range_m=0.0,
    max_range_m=1e6,
    grazing_angle_deg=90.0,
    edge_dropout_probability=0.0,
    flying_pixel_probability=0.0,
    rgb_noise_std=0.0,
)

# A hand-authored scene with known geometry: camera 1.2 m high at (0.5, 2, 1.2) looking
# along +x into a 6 x 4 x 2.6 m room; a 0.4 m deep box whose front face is 2.3 m ahead and
# a 0.2 m radius trash can 2.5 m ahead and 1 m to the right.
ANALYTIC_SPEC = {
    "room": {"size": [6.0, 4.0, 2.6]},
    "camera": {"position": [0.5, 2.0, 1.2], "yaw_deg": 0},
    "objects": [
        {"category": "box", "color": "red", "size": [0.4, 0.8, 1.0], "position": [3.0, 2.0], "yaw_deg": 0},
        {"category": "trash can", "color": "blue", "size": [0.4, 0.4, 0.5], "position": [3.0, 1.0], "yaw": 0.0},
    ],
}
ANALYTIC_CAMERA = CameraIntrinsics(fx=500.0, fy=500.0, cx=320.0, cy=240.0, width=640, height=480)


def _assert_frames_equal(a: RenderedFrame, b: RenderedFrame) -> None:
    for name in ("rgb", "depth_m", "depth_clean_m", "instance_mask", "points", "colors"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    np.testing.assert_array_equal(a.boxes_array(), b.boxes_array())


def test_same_seed_gives_identical_frames_and_other_seeds_differ() -> None:
    first, second = simulate(5, SMALL), simulate(5, SMALL)
    _assert_frames_equal(first, second)
    assert first.scene == second.scene
    other = simulate(6, SMALL)
    assert other.scene != first.scene
    assert not np.array_equal(other.rgb, first.rgb)
    assert not np.array_equal(other.depth_clean_m, first.depth_clean_m)


def test_all_categories_and_colours_are_reachable() -> None:
    categories, colors, room_types = set(), set(), set()
    for seed in range(80):
        scene = generate_scene(seed)
        categories |= {obj.category for obj in scene.objects}
        colors |= {obj.color for obj in scene.objects}
        room_types.add(scene.room_type)
    assert len(categories) >= 15 and categories == set(CATEGORIES)
    assert len(colors) >= 8 and colors == set(COLORS)
    assert len(room_types) == 5


def test_scenes_have_several_objects_mostly_in_view() -> None:
    for seed in range(10):
        frame = simulate(seed, SMALL, sensor=PERFECT)
        floor_objects = [obj for obj in frame.objects if obj.on is None]
        assert len(floor_objects) >= 2, f"seed {seed}"
        # Every piece of furniture is placed in front of the camera and shows up in the image.
        assert all(obj.visible_pixels > 0 for obj in floor_objects), f"seed {seed}"
        assert all(obj.box.center[0] > 1.0 for obj in frame.objects)


def _object_points(frame: RenderedFrame, index: int) -> np.ndarray:
    depth = np.where(frame.instance_mask == index, frame.depth_clean_m, np.nan)
    points, _ = depth_to_points(depth, frame.intrinsics)
    return to_gravity_frame(points.astype(np.float64), "-y")


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 8])
def test_ground_truth_boxes_hold_their_objects_visible_points_and_little_else(seed: int) -> None:
    frame = simulate(seed, SMALL, sensor=PERFECT)
    everything, _ = depth_to_points(frame.depth_clean_m, frame.intrinsics)
    everything = to_gravity_frame(everything.astype(np.float64), "-y")
    owner = frame.instance_mask[np.isfinite(frame.depth_clean_m)]
    checked = 0
    for obj in frame.objects:
        if obj.visible_pixels < 20:
            continue
        own = _object_points(frame, obj.index)
        assert len(own) == obj.visible_pixels
        inside = obj.box.contains(own, margin=0.01)
        assert inside.mean() >= 0.99, f"{obj.label}: only {inside.mean():.1%} of its points in its box"
        # Points of unrelated surfaces (not the object, its support or what rests on it) stay outside.
        related = {obj.index} | ({obj.on} if obj.on is not None else set())
        related |= {other.index for other in frame.objects if other.on == obj.index}
        foreign = ~np.isin(owner, list(related))
        intruders = obj.box.contains(everything[foreign], margin=-0.01).sum()
        assert intruders <= 0.01 * obj.visible_pixels, f"{obj.label}: {intruders} foreign points inside"
        checked += 1
    assert checked >= 3


def test_box_centres_in_the_optical_frame_project_onto_their_objects() -> None:
    frame = simulate(3, SMALL, sensor=PERFECT)
    for obj in frame.objects:
        if obj.visible_pixels < 300:
            continue
        center_optical = from_gravity_frame(np.asarray(obj.box.center)[None], "-y")
        uv, in_front = project_points(center_optical, frame.intrinsics)
        assert in_front[0]
        rows, columns = np.nonzero(frame.instance_mask == obj.index)
        # The box centre projects inside the bounding rectangle of the object's pixels.
        assert columns.min() - 2 <= uv[0, 0] <= columns.max() + 2, obj.label
        assert rows.min() - 2 <= uv[0, 1] <= rows.max() + 2 or uv[0, 1] > rows.max(), obj.label


def test_small_objects_rest_on_their_supports() -> None:
    resting = 0
    for seed in range(20):
        scene = generate_scene(seed)
        boxes = scene.boxes_in_camera()
        for index, obj in enumerate(scene.objects):
            if obj.on is None:
                assert CATEGORIES[obj.category].placement == "floor"
                assert boxes[index].center[2] - boxes[index].size[2] / 2 == pytest.approx(-scene.camera.position[2])
                continue
            support, support_box = scene.objects[obj.on], boxes[obj.on]
            assert CATEGORIES[support.category].is_support
            bottom = boxes[index].center[2] - boxes[index].size[2] / 2
            top = support_box.center[2] + support_box.size[2] / 2
            assert bottom == pytest.approx(top, abs=1e-9)
            # The whole footprint lies on the support's top.
            corners = boxes[index].corners()[:4].copy()
            corners[:, 2] = top - 0.005
            assert support_box.contains(corners).all(), f"seed {seed}: {obj.category} overhangs {support.category}"
            resting += 1
    assert resting >= 40


def test_rendered_small_objects_touch_the_top_they_rest_on() -> None:
    frame = simulate(2, DEFAULT_INTRINSICS, sensor=PERFECT)
    checked = 0
    for obj in frame.objects:
        if obj.on is None or obj.visible_pixels < 100:
            continue
        points = _object_points(frame, obj.index)
        support_points = _object_points(frame, obj.on)
        support_top = frame.objects[obj.on].box.center[2] + frame.objects[obj.on].box.size[2] / 2
        assert points[:, 2].min() == pytest.approx(support_top, abs=0.02)
        assert support_points[:, 2].max() == pytest.approx(support_top, abs=0.005)
        checked += 1
    assert checked >= 2


def _overlapping_in_3d(a: SceneObject, b: SceneObject) -> bool:
    """Independent check: grid points inside a's box, tested against b's box."""
    low = max(a.position[2], b.position[2])
    high = min(a.top, b.top)
    if high - low <= 1e-9:
        return False
    box_a, box_b = a.world_box(), b.world_box()
    grid = np.stack(np.meshgrid(np.linspace(-0.49, 0.49, 15), np.linspace(-0.49, 0.49, 15)), axis=-1).reshape(-1, 2)
    local = np.column_stack((grid * np.asarray(a.size[:2]), np.zeros(len(grid))))
    c, s = math.cos(a.yaw), math.sin(a.yaw)
    world = local @ np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]]) + np.array([*box_a.center[:2], (low + high) / 2])
    return bool(box_b.contains(world).any())


def test_objects_do_not_interpenetrate() -> None:
    # The checker itself catches an overlap.
    table = SceneObject("table", "red", (1.0, 0.6, 0.75), (2.0, 2.0, 0.0), 0.3)
    chair = SceneObject("chair", "red", (0.5, 0.5, 0.9), (2.3, 2.1, 0.0), 1.0)
    assert _overlapping_in_3d(table, chair) and footprints_overlap(table, chair)
    far_chair = SceneObject("chair", "red", (0.5, 0.5, 0.9), (3.5, 2.1, 0.0), 1.0)
    assert not _overlapping_in_3d(table, far_chair) and not footprints_overlap(table, far_chair)
    pairs = 0
    for seed in range(30):
        scene = generate_scene(seed)
        for a, b in itertools.combinations(scene.objects, 2):
            assert not _overlapping_in_3d(a, b), f"seed {seed}: {a.category} and {b.category} overlap"
            assert not _overlapping_in_3d(b, a), f"seed {seed}: {b.category} and {a.category} overlap"
            pairs += 1
        for obj in scene.objects:
            box = obj.world_box()
            corners = box.corners()
            room = scene.room
            assert corners[:, 0].min() >= 0 and corners[:, 0].max() <= room.length
            assert corners[:, 1].min() >= 0 and corners[:, 1].max() <= room.width
    assert pairs > 500


def test_depth_equals_the_analytic_value_in_an_authored_scene() -> None:
    scene = Scene.from_dict(ANALYTIC_SPEC)
    cast = ray_cast(scene, ANALYTIC_CAMERA)
    depth, mask = cast.depth_m, cast.instance_mask
    f, cx, cy = 500.0, 320.0, 240.0
    # Box front face: x = 3.0 - 0.2 - 0.5 = 2.3 m ahead, 0.4 m either side, top 0.2 m below the camera.
    face_rows = slice(int(cy + 0.2 / 2.3 * f) + 2, 480)
    face_columns = slice(int(cx - 0.4 / 2.3 * f) + 2, int(cx + 0.4 / 2.3 * f) - 1)
    np.testing.assert_allclose(depth[face_rows, face_columns], 2.3, atol=1e-5)
    assert (mask[face_rows, face_columns] == 0).all()
    # Far wall 5.5 m ahead, above the box (whose top face shows from row cy + 0.2 f / 2.7), below the ceiling.
    wall_rows = slice(int(cy - 1.4 / 5.5 * f) + 2, int(cy + 0.2 / 2.7 * f) - 1)
    wall_columns = slice(int(cx - 2.0 / 5.5 * f) + 2, int(cx + 2.0 / 5.5 * f) - 1)
    np.testing.assert_allclose(depth[wall_rows, wall_columns], 5.5, atol=1e-5)
    assert (mask[wall_rows, wall_columns] == -1).all()
    # Floor at column 150 (left of the box, right of the side-wall hit): depth = 1.2 f / (v - cy).
    rows = np.arange(int(cy + 1.2 / 5.5 * f) + 2, 480)
    np.testing.assert_allclose(depth[rows, 150], 1.2 * f / (rows - cy), rtol=1e-6)
    # Left wall (y = +2 m from the camera) at column 0: depth = 2 / ((cx - u) / f).
    np.testing.assert_allclose(depth[200:280, 0], 2.0 / (cx / f), rtol=1e-6)
    # Trash can: 2.5 m ahead, 1 m right: the column through its axis is u = cx + 0.4 f = 520.
    # Along that ray the side is hit at range |c| - r, i.e. depth (|c| - r) / sqrt(1 + 0.4²).
    expected = (math.hypot(2.5, 1.0) - 0.2) / math.hypot(1.0, 0.4)
    can_rows = np.arange(int(cy + 0.7 / 2.3 * f) + 3, 480)
    assert (mask[can_rows, 520] == 1).all()
    np.testing.assert_allclose(depth[can_rows, 520], expected, rtol=1e-6)


def test_perfect_sensor_returns_the_clean_render() -> None:
    frame = simulate(4, SMALL, sensor=PERFECT)
    np.testing.assert_array_equal(frame.depth_m, frame.depth_clean_m)
    np.testing.assert_array_equal(frame.rgb, np.round(frame.cast.color).astype(np.uint8))
    assert len(frame.points) == SMALL.width * SMALL.height


def test_depth_noise_grows_with_range_like_kinect() -> None:
    coefficient = 0.002
    scene = Scene.from_dict(ANALYTIC_SPEC)
    frame = render(scene, ANALYTIC_CAMERA, SensorConfig(**{**NO_EFFECTS.__dict__, "depth_noise_coefficient": coefficient}), 3)
    clean, noisy = frame.depth_clean_m, frame.depth_m
    residual = noisy - clean
    near = (clean > 1.5) & (clean < 2.5)
    far = (clean > 4.5) & (clean < 6.0)
    assert near.sum() > 5000 and far.sum() > 5000
    near_std, far_std = residual[near].std(), residual[far].std()
    assert far_std > 3 * near_std
    # sigma = k z²: normalised residuals have unit spread at every range.
    for region in (near, far):
        assert (residual[region] / (coefficient * clean[region] ** 2)).std() == pytest.approx(1.0, abs=0.05)


def test_dropout_fraction_and_range_limits() -> None:
    frame = simulate(1, SMALL, sensor=SensorConfig(**{**NO_EFFECTS.__dict__, "dropout_probability": 0.1}))
    assert np.isnan(frame.depth_m).mean() == pytest.approx(0.1, abs=0.01)
    limited = simulate(1, SMALL, sensor=SensorConfig(**{**NO_EFFECTS.__dict__, "min_range_m": 2.0, "max_range_m": 3.5}))
    clean = limited.depth_clean_m
    np.testing.assert_array_equal(np.isnan(limited.depth_m), (clean < 2.0) | (clean > 3.5))
    assert np.isnan(limited.depth_m).any() and np.isfinite(limited.depth_m).any()
    # The cloud holds exactly the pixels with a return.
    assert len(limited.points) == np.isfinite(limited.depth_m).sum()
    assert limited.points[:, 2].min() >= 2.0 and limited.points[:, 2].max() <= 3.5


def test_no_return_at_grazing_angles() -> None:
    scene = Scene.from_dict(ANALYTIC_SPEC)
    frame = render(scene, ANALYTIC_CAMERA, SensorConfig(**{**NO_EFFECTS.__dict__, "grazing_angle_deg": 75.0}), 0)
    # Floor pixels in column 150: the ray meets the floor at cos = (v - cy)/f / |ray|.
    rows = np.arange(int(240 + 1.2 / 5.5 * 500) + 2, 480)
    ray_y, ray_z = (320 - 150) / 500, (rows - 240) / 500
    cosine = ray_z / np.sqrt(1 + ray_y**2 + ray_z**2)
    expected_missing = cosine < math.cos(math.radians(75.0))
    assert expected_missing.any() and (~expected_missing).any()
    np.testing.assert_array_equal(np.isnan(frame.depth_m[rows, 150]), expected_missing)
    # The far wall faces the camera and keeps its returns.
    assert np.isfinite(frame.depth_m[150:200, 300:340]).all()


def test_edge_artifacts_stay_on_depth_discontinuities() -> None:
    threshold = 0.1
    sensor = SensorConfig(**{**NO_EFFECTS.__dict__, "edge_threshold_m": threshold,
                             "edge_dropout_probability": 0.3, "flying_pixel_probability": 0.4})
    frame = simulate(0, SMALL, sensor=sensor)
    clean, depth = frame.depth_clean_m, frame.depth_m
    padded = np.pad(clean, 1, mode="edge")
    windows = np.stack([padded[i:i + clean.shape[0], j:j + clean.shape[1]] for i in range(3) for j in range(3)])
    low, high = windows.min(axis=0), windows.max(axis=0)
    edge = (high - low) > threshold
    changed = np.isnan(depth) | (depth != clean)
    assert edge.sum() > 500
    assert not (changed & ~edge).any()
    assert changed[edge].mean() == pytest.approx(0.7, abs=0.05)
    assert np.isnan(depth[edge]).mean() == pytest.approx(0.3, abs=0.05)
    flying = edge & np.isfinite(depth) & (depth != clean)
    assert flying.sum() > 100
    assert (depth[flying] >= low[flying] - 1e-6).all() and (depth[flying] <= high[flying] + 1e-6).all()
    # Flying pixels float between surfaces: many are far from both the foreground and background.
    gap = np.minimum(depth[flying] - low[flying], high[flying] - depth[flying])
    assert (gap > 0.05).mean() > 0.3


def test_scene_json_round_trip_renders_identically(tmp_path) -> None:
    scene = generate_scene(11)
    path = tmp_path / "scene.json"
    save_scene(scene, path)
    loaded = load_scene(path)
    assert loaded == scene
    _assert_frames_equal(render(scene, SMALL, seed=4), render(loaded, SMALL, seed=4))
    # The file is plain JSON a person can edit.
    spec = json.loads(path.read_text())
    assert {"room", "camera", "objects"} <= set(spec)
    assert spec["objects"][0]["category"] == scene.objects[0].category


def test_authored_positions_default_to_the_floor_or_the_support_top() -> None:
    spec = {
        "room": {"size": [5, 4, 2.7]},
        "camera": {"position": [0.5, 2, 1.2]},
        "objects": [
            {"category": "table", "color": "brown", "size": [1.2, 0.8, 0.74], "position": [3, 2]},
            {"category": "cup", "color": "red", "size": [0.1, 0.1, 0.1], "position": [3.1, 2.1], "on": 0},
            {"category": "lamp", "color": "white", "size": [0.3, 0.3, 0.5], "position": [2.8, 1.9, 0.74], "yaw_deg": 90},
        ],
    }
    scene = Scene.from_dict(spec)
    assert scene.objects[0].position == (3.0, 2.0, 0.0)
    assert scene.objects[1].position == (3.1, 2.1, 0.74)
    assert scene.objects[2].yaw == pytest.approx(math.pi / 2)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda spec: spec["objects"][0].update(category="spaceship"), "objects[0].category"),
        (lambda spec: spec["objects"][1].update(color="mauve"), "objects[1].color"),
        (lambda spec: spec["objects"][0].update(size=[0.4, -1, 1]), "objects[0].size"),
        (lambda spec: spec["objects"][0].update(on=1), "objects[0].on"),
        (lambda spec: spec["objects"][1].pop("position"), "objects[1].position"),
        (lambda spec: spec["camera"].update(position=[1, 2]), "camera.position"),
        (lambda spec: spec.pop("room"), "room"),
    ],
)
def test_bad_scene_specs_name_the_field(change, field: str) -> None:
    spec = json.loads(json.dumps(ANALYTIC_SPEC))
    change(spec)
    with pytest.raises(SceneSpecError) as error:
        Scene.from_dict(spec)
    assert error.value.parameter == field
    assert field in str(error.value)


def test_missing_spec_file_is_a_config_error(tmp_path) -> None:
    with pytest.raises(SceneSpecError) as error:
        load_scene(tmp_path / "nope.json")
    assert error.value.parameter == "scene_spec"


def test_bad_configs_name_the_parameter() -> None:
    with pytest.raises(ConfigError, match="dropout_probability"):
        SensorConfig(dropout_probability=1.5)
    with pytest.raises(ConfigError, match="max_range_m"):
        SensorConfig(min_range_m=3.0, max_range_m=2.0)
    with pytest.raises(ConfigError, match="camera_height_m"):
        SceneConfig(camera_height_m=4.0)
    with pytest.raises(ConfigError, match="room_types"):
        SceneConfig(room_types=("garage",))


def _centroids(mask: np.ndarray, indices: list[int]) -> dict[int, np.ndarray]:
    centroids = {}
    for index in indices:
        rows, columns = np.nonzero(mask == index)
        centroids[index] = np.array([columns.mean(), rows.mean()])
    return centroids


def _interior_objects(frame: RenderedFrame, minimum_pixels: int) -> list[int]:
    """Objects with enough pixels whose silhouette does not touch the image border."""
    mask = frame.instance_mask
    border = set(np.unique(np.concatenate((mask[0], mask[-1], mask[:, 0], mask[:, -1]))).tolist())
    return [obj.index for obj in frame.objects if obj.visible_pixels >= minimum_pixels and obj.index not in border]


def test_resolution_and_focal_length_scale_the_image_consistently() -> None:
    scene = generate_scene(3)
    low = render(scene, SMALL, PERFECT)
    high = render(scene, SMALL.scaled(2.0), PERFECT)
    indices = [index for index in _interior_objects(low, 100) if index in _interior_objects(high, 400)]
    assert len(indices) >= 2
    low_centroids, high_centroids = _centroids(low.instance_mask, indices), _centroids(high.instance_mask, indices)
    for index in indices:
        # Pixel u at 320 px sees the same ray as pixel 2u at 640 px.
        np.testing.assert_allclose(high_centroids[index], 2 * low_centroids[index], atol=2.0)
        ratio = high.objects[index].visible_pixels / low.objects[index].visible_pixels
        assert ratio == pytest.approx(4.0, rel=0.15)
    # Projected box centres scale the same way.
    centers = from_gravity_frame(low.boxes_array()[:, :3], "-y")
    uv_low, _ = project_points(centers, low.intrinsics)
    uv_high, _ = project_points(centers, high.intrinsics)
    np.testing.assert_allclose(uv_high, 2 * uv_low, atol=1e-6)

    # A longer focal length magnifies offsets from the principal point by the focal ratio.
    wide = CameraIntrinsics(fx=400.0, fy=400.0, cx=320.0, cy=240.0, width=640, height=480)
    tele = CameraIntrinsics(fx=600.0, fy=600.0, cx=320.0, cy=240.0, width=640, height=480)
    wide_frame, tele_frame = render(scene, wide, PERFECT), render(scene, tele, PERFECT)
    indices = [index for index in _interior_objects(wide_frame, 300) if index in _interior_objects(tele_frame, 300)]
    assert indices
    principal = np.array([320.0, 240.0])
    wide_centroids = _centroids(wide_frame.instance_mask, indices)
    tele_centroids = _centroids(tele_frame.instance_mask, indices)
    for index in indices:
        np.testing.assert_allclose(tele_centroids[index] - principal, 1.5 * (wide_centroids[index] - principal), atol=2.0)


def test_command_line_renders_saves_and_reloads(tmp_path, capsys) -> None:
    npz, png, spec = tmp_path / "frame.npz", tmp_path / "preview.png", tmp_path / "scene.json"
    code = sim_cli.main(["--seed", "2", "--width", "160", "--height", "120", "--save", str(npz),
                           "--png", str(png), "--save-spec", str(spec)])
    assert code == 0
    printed = capsys.readouterr().out
    saved = np.load(npz)
    assert saved["rgb"].shape == (120, 160, 3) and saved["depth_m"].shape == (120, 160)
    assert saved["boxes"].shape == (len(saved["categories"]), 7)
    for category, color in zip(saved["categories"], saved["object_colors"]):
        assert f"{color} {category}" in printed
    assert "160x120" in printed
    from PIL import Image

    width, height = Image.open(png).size
    assert width > 2 * height, "three panels side by side"
    # Re-rendering the saved spec with the same seed reproduces the frame.
    assert sim_cli.main(["--spec", str(spec), "--seed", "2", "--width", "160", "--height", "120",
                           "--save", str(tmp_path / "again.npz")]) == 0
    again = np.load(tmp_path / "again.npz")
    np.testing.assert_array_equal(again["rgb"], saved["rgb"])
    np.testing.assert_array_equal(again["depth_m"], saved["depth_m"])
    # A bad spec fails with the field named.
    spec.write_text(json.dumps({**ANALYTIC_SPEC, "camera": {}}))
    assert sim_cli.main(["--spec", str(spec)]) == 2
    assert "camera.position" in capsys.readouterr().err
