"""The object layer end to end: the shipped classifier on simulated frames it never trained on,
on the real SUN RGB-D bedroom (labelled) in every frame it can come in, and its training."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from threed_llm_ros.data.sim.frames import simulate
from threed_llm_ros.errors import ModelFileError
from threed_llm_ros.geometry.iou import rotated_box_iou
from threed_llm_ros.geometry.boxes import OrientedBox
from threed_llm_ros.geometry.camera import CameraIntrinsics
from threed_llm_ros.objects.fit import fit_box
from threed_llm_ros.objects.joins import beyond_long_ends, with_their_stems
from threed_llm_ros.objects.layer import ObjectLayer, PerceptionSettings, hidden_depth
from threed_llm_ros.objects.pieces import Proposal
from threed_llm_ros.objects.recognition import OTHER, load_classifier
from threed_llm_ros.objects.refine import load_refiner
from threed_llm_ros.resources import default_object_classifier

#: Floors measured with the shipped classifier (models/object-classifier/README.md), a little under.
SIM_FOUND_FLOOR = 0.6
SIM_INVENTED_CEILING = 0.25


@pytest.fixture(scope="module")
def layer() -> ObjectLayer:
    return ObjectLayer.load(default_object_classifier())


def test_shipped_classifier_is_calibrated_and_complete(layer: ObjectLayer) -> None:
    config = layer.classifier.config
    assert OTHER in config.classes and "bed" in config.classes
    assert 0.2 < config.temperature < 5.0
    report = json.loads((default_object_classifier() / "config.json").read_text())["report"]
    assert report["loss_first_last"][1] < report["loss_first_last"][0]


def test_bad_classifier_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="config.json"):
        load_classifier(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelFileError, match="cannot be read"):
        load_classifier(tmp_path)


def test_simulated_frames_unseen_in_training(layer: ObjectLayer) -> None:
    """Large visible objects are found under their category; few confident objects are invented."""
    found, total, invented, confident = 0, 0, 0, 0
    for seed in range(201, 209):
        frame = simulate(seed)
        objects = layer.perceive(frame.points, frame.colors).confident
        present = {obj.category for obj in frame.objects if obj.visible_pixels > 0}
        for truth in [obj for obj in frame.objects if obj.visible_pixels > 3000]:
            total += 1
            found += any(obj.category == truth.category and rotated_box_iou(obj.box, truth.box) >= 0.25 for obj in objects)
        confident += len(objects)
        invented += sum(obj.category not in present for obj in objects)
    assert total >= 15
    assert found / total >= SIM_FOUND_FLOOR, f"{found}/{total}"
    assert invented / max(confident, 1) <= SIM_INVENTED_CEILING, f"{invented}/{confident}"


def test_a_pitched_high_camera_sees_the_same_objects(layer: ObjectLayer) -> None:
    """The frame pitched 28° down and turned: gravity comes from the floor, boxes stay put."""
    frame = simulate(203)
    level = layer.perceive(frame.points, frame.colors)
    pitch = math.radians(28.0)
    turn = np.array([[1, 0, 0], [0, math.cos(pitch), -math.sin(pitch)], [0, math.sin(pitch), math.cos(pitch)]])
    pitched = layer.perceive(frame.points @ turn.T, frame.colors)  # the same points in a camera pitched about x
    assert pitched.gravity.floor_found
    back = turn.T  # pitched optical → level optical
    assert abs(pitched.gravity.floor_z - level.gravity.floor_z) < 0.03
    for obj in level.confident[:4]:  # each is in the pitched list, at the same place (its score may differ a little)
        centre_input = pitched.gravity.to_input(np.array([o.box.center for o in pitched.objects]))
        centre_level = level.gravity.to_gravity(centre_input @ back.T)
        distances = np.linalg.norm(centre_level - np.asarray(obj.box.center), axis=1)
        assert distances.min() < 0.15, (obj.category, distances.min())


def test_a_table_seen_in_pieces_is_one_table_and_keeps_the_book_on_it(layer: ObjectLayer) -> None:
    """Simulated frame 90000: the table's top and its legs come apart in the cloud, and the legs
    alone are confidently a table; they join into one table box. The book lying on the table
    stays an object of its own."""
    frame = simulate(90_000)
    objects = layer.perceive(frame.points, frame.colors).confident
    table = next(obj for obj in frame.objects if obj.category == "table")
    book = next(obj for obj in frame.objects if obj.category == "book")
    assert max(rotated_box_iou(obj.box, table.box) for obj in objects if obj.category == "table") >= 0.5
    assert any(obj.category == "book" and np.linalg.norm(np.subtract(obj.box.center, book.box.center)) < 0.1
               for obj in objects)


def test_the_demos_grey_table_is_one_table_and_its_lamp_one_lamp() -> None:
    """``make demo``'s frame (seed 3, 640×480, 60°), with its image, cut to the layer's
    ``max_points`` as the node's is. The grey table's top hangs over the visible floor and its
    legs came apart from it: the legs hold the top up, so the three are one table, not a top
    that is nothing and two legs that are "tables"; the lamp's stem holds up its shade. Both
    boxes overlap the truth, and the frame has exactly its two tables."""
    frame = simulate(3, CameraIntrinsics.from_field_of_view(640, 480, 60.0))
    layer = ObjectLayer.load(default_object_classifier(), PerceptionSettings(up_axis="-y", sensor_height=1.2))
    found = layer.perceive(frame.points, frame.colors, image=frame.rgb, intrinsics=frame.intrinsics).confident
    truth = [obj for obj in frame.objects if obj.category in ("table", "lamp") and obj.color in ("grey", "pink")]
    grey_table = next(obj for obj in truth if obj.category == "table")
    lamp = max((obj for obj in truth if obj.category == "lamp"), key=lambda obj: obj.visible_pixels)
    assert max(rotated_box_iou(obj.box, grey_table.box) for obj in found if obj.category == "table") >= 0.5
    assert max(rotated_box_iou(obj.box, lamp.box) for obj in found if obj.category == "lamp") >= 0.3
    assert sum(obj.category == "table" for obj in found) == 2


def test_a_lamp_on_a_desk_whose_stem_gave_few_points_is_one_lamp() -> None:
    """Simulated frame 91036 (eval-objects' seeds): the red lamp on the red desk returns a 307-point
    shade and a 16-point stem, too few to be named alone. The stem holds the shade up, so the two
    are one lamp on its truth; the shade hanging over the desk's seen top is no floor object
    whose lower part the desk hides (it read "cabinet" 0.75, 1.27 m tall, from the floor up)."""
    frame = simulate(91_036)
    layer = ObjectLayer.load(default_object_classifier(), PerceptionSettings(up_axis="-y", sensor_height=1.2))
    found = layer.perceive(frame.points, frame.colors, image=frame.rgb, intrinsics=frame.intrinsics).confident
    lamp = next(obj for obj in frame.objects if obj.category == "lamp")
    assert max(rotated_box_iou(obj.box, lamp.box) for obj in found if obj.category == "lamp") >= 0.4
    assert not any(obj.category in ("cabinet", "bookshelf", "dresser") for obj in found), [
        (obj.category, round(obj.score, 2)) for obj in found]


@pytest.mark.parametrize("seed", [90_032, 91_019])
def test_a_cabinet_seen_from_the_front_is_completed_back_to_the_wall_it_stands_against(seed: int) -> None:
    """Simulated frames 90032 and 91019 (eval-objects' seeds): a cabinet with its back 2 cm off
    a wall. Its front alone, completed to the category's expected depth, ended short of the
    wall, its centre 0.09-0.12 m too near (IoU 0.61 and 0.68); grown on to the wall it is 0.8+."""
    frame = simulate(seed)
    layer = ObjectLayer.load(default_object_classifier(), PerceptionSettings(up_axis="-y", sensor_height=1.2))
    found = layer.perceive(frame.points, frame.colors, image=frame.rgb, intrinsics=frame.intrinsics).confident
    cabinet = next(obj for obj in frame.objects if obj.category == "cabinet")
    box = next(obj.box for obj in found if obj.category == "cabinet")
    assert rotated_box_iou(box, cabinet.box) >= 0.78
    assert abs(np.linalg.norm(box.center) - np.linalg.norm(cabinet.box.center)) <= 0.06


def _piece(rng: np.random.Generator, low: tuple[float, float, float], high: tuple[float, float, float],
           count: int) -> Proposal:
    points = rng.uniform(low, high, (count, 3))
    return Proposal(points, None, fit_box(points, -1.2), 1.0, 0.0)


def test_a_stem_too_small_to_name_joins_the_shade_it_holds_up_and_a_cup_beside_it_does_not() -> None:
    rng = np.random.default_rng(0)
    shade = _piece(rng, (3.0, -0.15, -0.2), (3.15, 0.15, 0.05), 300)
    stem = _piece(rng, (3.05, -0.01, -0.45), (3.07, 0.01, -0.22), 14)
    cup = _piece(rng, (3.0, 0.4, -0.47), (3.08, 0.48, -0.38), 14)
    kept = with_their_stems([shade, stem, cup], -1.2)
    assert len(kept) == 2 and any(proposal is cup for proposal in kept)
    lamp = next(proposal for proposal in kept if proposal is not cup)
    bottom = lamp.box.center[2] - lamp.box.size[2] / 2
    assert len(lamp.points) == 314 and bottom < shade.box.center[2] - shade.box.size[2] / 2 - 0.1  # reaches down the stem


def _table_points(rng: np.random.Generator, corner: tuple[float, float], size: tuple[float, float], height: float
                  ) -> np.ndarray:
    """A table's top, its front apron and four legs (gravity frame, floor at 0)."""
    (x0, y0), (length, width) = corner, size
    top = np.column_stack([rng.uniform(x0, x0 + length, 1500), rng.uniform(y0, y0 + width, 1500), np.full(1500, height)])
    apron = np.column_stack([np.full(300, x0), rng.uniform(y0, y0 + width, 300), rng.uniform(height - 0.1, height, 300)])
    legs = [np.column_stack([rng.normal(x, 0.01, 120), rng.normal(y, 0.01, 120), rng.uniform(0, height, 120)])
            for x in (x0 + 0.03, x0 + length - 0.03) for y in (y0 + 0.03, y0 + width - 0.03)]
    return np.vstack([top, apron, *legs])


def test_two_tables_pushed_together_are_two_tables() -> None:
    """Two 0.8 × 1.2 m tables end to end make one 2.4 m cluster, a "desk" longer than any desk:
    it is cut where both parts are sure tables, and the two parts do not rejoin, each boxed on
    its truth."""
    rng = np.random.default_rng(3)
    floor = np.column_stack([rng.uniform(0.5, 6, 8000), rng.uniform(-3, 3, 8000), np.zeros(8000)])
    wall = np.column_stack([np.full(4000, 6.0), rng.uniform(-3, 3, 4000), rng.uniform(0, 2.5, 4000)])
    tables = [_table_points(rng, (2.5, y0), (0.8, 1.2), 0.74) for y0 in (-1.2, 0.0)]
    points = np.vstack([floor, wall, *tables])
    points = points + rng.normal(0, 0.004, points.shape) - np.array([0.0, 0.0, 1.2])  # the sensor 1.2 m up
    layer = ObjectLayer.load(default_object_classifier(), PerceptionSettings(up_axis="z", sensor_height=1.2))
    found = [obj for obj in layer.perceive(points).confident if obj.category in ("table", "desk")]
    truth = [OrientedBox((2.9, y, -0.83), (0.8, 1.2, 0.74), 0.0) for y in (-0.6, 0.6)]
    assert len(found) == 2, [(obj.category, obj.box.size) for obj in found]
    for box in truth:
        assert max(rotated_box_iou(obj.box, box) for obj in found) >= 0.7


def test_two_tables_side_by_side_stay_two_tables() -> None:
    """Two 1.4 × 0.8 m tables side by side, 0.15 m apart, are two clusters named table. Merged they
    would be 1.4 m long, as a table may be, but 1.75 m deep, as no table is: fragments of one
    object under one name merge only where the whole fits the category on both sides (seen in
    the card's scene sim0_000007, where a blue and a purple table became one)."""
    rng = np.random.default_rng(5)
    floor = np.column_stack([rng.uniform(0.5, 6, 8000), rng.uniform(-3, 3, 8000), np.zeros(8000)])
    wall = np.column_stack([np.full(4000, 6.0), rng.uniform(-3, 3, 4000), rng.uniform(0, 2.5, 4000)])
    tables = [_table_points(rng, (x0, -0.7), (0.8, 1.4), 0.74) for x0 in (2.2, 3.15)]
    points = np.vstack([floor, wall, *tables])
    points = points + rng.normal(0, 0.004, points.shape) - np.array([0.0, 0.0, 1.2])  # the sensor 1.2 m up
    layer = ObjectLayer.load(default_object_classifier(), PerceptionSettings(up_axis="z", sensor_height=1.2))
    found = [obj for obj in layer.perceive(points).confident if obj.category in ("table", "desk")]
    truth = [OrientedBox((x, 0.0, -0.83), (0.8, 1.4, 0.74), 0.0) for x in (2.6, 3.55)]
    assert len(found) == 2, [(obj.category, obj.box.size) for obj in found]
    for box in truth:
        assert max(rotated_box_iou(obj.box, box) for obj in found) >= 0.5


def test_a_classifier_for_other_features_is_refused(tmp_path: Path) -> None:
    config = json.loads((default_object_classifier() / "config.json").read_text())
    config["features"] = config["features"][:-1]
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").write_bytes((default_object_classifier() / "model.safetensors").read_bytes())
    with pytest.raises(ModelFileError):
        load_classifier(tmp_path)


def test_training_on_a_few_frames_lowers_the_loss(tmp_path: Path) -> None:
    from threed_llm_ros.objects.train import ObjectTrainConfig, train_object_classifier

    reports = train_object_classifier(ObjectTrainConfig(scenes=4, validation_scenes=2, steps=60, batch=64), tmp_path,
                                      progress=False)
    assert set(reports) == {"classifier", "refiner"}
    for report in reports.values():
        first, last = report["loss_first_last"]
        assert last < first
    assert load_classifier(tmp_path).config.temperature > 0
    refiner = load_refiner(tmp_path)
    assert refiner is not None and OTHER not in refiner.classes


@pytest.mark.slow
def test_frames_rendered_by_two_processes_give_the_same_rows_as_one() -> None:
    """``train-objects --workers``: every frame has its own seed and the rows keep the frames'
    order, so the training set does not depend on how many processes made it."""
    from threed_llm_ros.objects.recognition import ClassifierConfig
    from threed_llm_ros.objects.train import ObjectTrainConfig, build_examples

    config, classes = ObjectTrainConfig(), ClassifierConfig().classes
    one = build_examples(0, 3, config, classes, "one process", progress=False)
    two = build_examples(0, 3, config, classes, "two processes", progress=False, workers=2)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])


def test_cached_features_made_by_other_proposal_code_are_rebuilt(tmp_path: Path) -> None:
    """The feature cache is keyed on the configuration and on the proposal code: a cache from
    other code (here: a stale key with the same configuration) is not reused."""
    from dataclasses import asdict

    from threed_llm_ros.objects.recognition import ClassifierConfig
    from threed_llm_ros.objects.train import ObjectTrainConfig, _examples, pipeline_fingerprint

    config = ObjectTrainConfig(scenes=2, validation_scenes=1)
    classes = ClassifierConfig().classes
    stale = np.zeros((3, len(ClassifierConfig().features)), dtype=np.float32)
    cache = tmp_path / "features.npz"
    key = json.dumps({**asdict(config), "code": "0" * 16}, sort_keys=True)
    np.savez_compressed(cache, key=np.array(key), train_x=stale, train_y=np.zeros(3), val_x=stale, val_y=np.zeros(3))
    assert len(pipeline_fingerprint()) == 16 and pipeline_fingerprint() != "0" * 16
    train_x, *_ = _examples(config, classes, cache, progress=False)
    assert train_x.shape != stale.shape or np.any(train_x != 0)
    again, *_ = _examples(config, classes, cache, progress=False)  # now cached under this code's key
    np.testing.assert_array_equal(again, train_x)


# --------------------------------------------------------------------------- the real SUN RGB-D bedroom


@pytest.fixture(scope="module")
def real_results(realdata: Path, layer: ObjectLayer, tmp_path_factory) -> dict:
    from threed_llm_ros.eval.realdata import evaluate_real

    return evaluate_real(layer, realdata, tmp_path_factory.mktemp("real"))


@pytest.fixture(scope="module")
def sun_results(real_results: dict) -> dict:
    return real_results["sunrgbd_000001"]


def _variants(results: dict) -> dict:
    """The scored inputs that come with the camera image (all but ``optical_no_image``)."""
    return {name: scored for name, scored in results.items() if name not in ("timings", "optical_no_image")}


@pytest.mark.slow
def test_sun_dresser_and_ottoman_are_boxed_in_every_frame(sun_results: dict) -> None:
    """The camera's optical frame (pitched down) and the upright cloud turned by any angle, each
    with the image: the dresser and the ottoman (which no category names) each get a box with
    IoU >= 0.25, and the dresser's is a confident one."""
    assert len(_variants(sun_results)) == 7
    for name, scored in _variants(sun_results).items():
        assert scored["found_iou_0.25"]["dresser"], (name, scored["objects"])
        assert scored["boxed_iou_0.25"]["ottoman"], (name, scored["objects"])


@pytest.mark.slow
def test_sun_counts_one_bed_boxes_it_and_invents_nothing(sun_results: dict) -> None:
    """In every input, with the image and without: "How many beds?" counts one, its box has
    IoU >= 0.45 with the labelled bed (0.58 measured: its headboard, pillows, the strip of
    mattress seen at a grazing angle and the footboard are one bed), and no lamp, night stand or other confident object of
    a category that is not in the room is put where nothing of its kind is (the mirror's
    reflections included)."""
    for name, scored in sun_results.items():
        if name == "timings":
            continue
        assert scored["bed_count"] == 1, name
        assert scored["found_iou_0.25"]["bed"], (name, scored["objects"])
        bed = next(entry for entry in scored["objects"] if entry["category"] == "bed")
        assert bed["best_iou"] >= 0.45 and bed["matched_as"] == "bed", (name, bed)
        assert not scored["invented"], (name, scored["invented"])


@pytest.mark.slow
def test_sun_night_stand_is_not_taken_into_the_bed(sun_results: dict) -> None:
    """The night stand beside the headboard (66 points, with its lamp's foot) lies beyond the
    headboard's end: it is no piece of the bed, so something of its own, named or uncertain, is
    where it stands in every input (it was inside the bed's box, best IoU 0.02)."""
    for name, scored in sun_results.items():
        if name == "timings":
            continue
        stand = next(entry for entry in scored["objects"] if entry["category"] == "night stand")
        assert stand["best_iou_any_object"] >= 0.1, (name, stand)


def test_a_piece_beyond_the_long_sides_end_is_measured_from_it() -> None:
    """``beyond_long_ends``: 0 for a piece alongside a headboard, the overshoot past its end
    otherwise, whichever of the box's sides is the long one."""
    headboard = OrientedBox((5.0, -1.0, 0.0), (0.16, 1.8, 0.8), 0.0)  # long along y
    assert beyond_long_ends(headboard, OrientedBox((3.8, -1.5, -0.4), (0.3, 0.5, 0.2), 0.0)) == 0.0
    assert beyond_long_ends(headboard, OrientedBox((4.7, -2.3, -0.4), (0.4, 0.4, 0.7), 0.0)) == pytest.approx(0.4)
    turned = OrientedBox((5.0, -1.0, 0.0), (1.8, 0.16, 0.8), math.pi / 2)  # the same board
    assert beyond_long_ends(turned, OrientedBox((4.7, -2.3, -0.4), (0.4, 0.4, 0.7), 0.0)) == pytest.approx(0.4)


@pytest.mark.slow
def test_sun_objects_agree_across_headings(sun_results: dict) -> None:
    """Turning the cloud about the vertical moves the voxel grid, not the objects: the large
    objects' IoUs stay within 0.05 (the ottoman's 0.1, see below) and the confident categories mostly agree."""
    turned = [scored for name, scored in sun_results.items() if name.startswith("upright_turned_")]
    reference = {entry["category"]: entry["best_iou_any_object"] for entry in turned[0]["objects"]}
    first = {entry["category"] for entry in turned[0]["detections"]}
    for scored in turned[1:]:
        for entry in scored["objects"]:
            if entry["category"] in ("bed", "dresser", "ottoman"):
                # the ottoman, which the catalogue has no word for, reads "dresser" at some headings
                # and "sofa" at others, and each category completes the hidden depth differently
                tolerance = 0.1 if entry["category"] == "ottoman" else 0.05
                assert abs(entry["best_iou_any_object"] - reference[entry["category"]]) <= tolerance + 1e-9, entry
        categories = {entry["category"] for entry in scored["detections"]}
        assert len(categories & first) >= 0.6 * len(categories | first), (categories, first)


@pytest.mark.slow
def test_tum_chair_beside_the_desk_stays_a_chair(real_results: dict) -> None:
    """TUM: the red office chair touches the desk's cluster. A vague desk-shaped blob must not
    swallow it: it stays a confident, chair-sized chair."""
    chairs = [obj for obj in real_results["tum"]["objects"] if obj["category"] == "chair" and obj["score"] >= 0.9]
    assert any(0.8 <= obj["size"][2] <= 1.2 for obj in chairs), real_results["tum"]["objects"]


def test_a_hidden_depth_is_the_categorys_expected_one() -> None:
    """Behind the face a view sees, a dresser is completed to its expected depth (halfway between
    the catalogue's 0.45 and 0.6 m), not its least; a round lamp as deep as it is seen wide,
    within its sizes."""
    front = OrientedBox((2.0, 0.0, -0.8), (1.2, 0.05, 0.9), 0.0)
    assert hidden_depth("dresser", front) == pytest.approx((0.45 + 0.6) / 2)
    assert hidden_depth("lamp", OrientedBox((2.0, 0.0, -0.3), (0.3, 0.1, 0.4), 0.0)) == pytest.approx(0.3)
    assert hidden_depth("lamp", OrientedBox((2.0, 0.0, -0.3), (0.1, 0.05, 0.4), 0.0)) == pytest.approx(0.2)
    assert hidden_depth("lamp", OrientedBox((2.0, 0.0, -0.3), (0.9, 0.1, 0.4), 0.0)) == pytest.approx(0.4)


@pytest.mark.slow
def test_tum_names_no_chair_from_a_desk_legs_foot(real_results: dict) -> None:
    """TUM: the lower part of the desk's middle leg (43 points, 0.14-0.40 m above the floor) and an
    orange thing on the floor at the image's edge (48 points) each covered 11-12 % of a chair's
    smallest face and read "chair" at 0.53 and 0.58, boxed 0.3-0.4 m tall. Thin evidence is no
    sighting: every confident chair is at least 0.6 m tall (the catalogue's lowest chair is 0.8 m)."""
    chairs = [obj for obj in real_results["tum"]["objects"] if obj["category"] == "chair"]
    assert chairs and all(obj["size"][2] >= 0.6 for obj in chairs), chairs


@pytest.mark.slow
def test_tum_office_chair_on_its_star_base_is_a_chair(real_results: dict) -> None:
    """TUM has two office chairs. The yellow one's seat and back (0.44-0.90 m up) had no floor
    under them that the sensor saw, for its gas spring is thin and dark, so they read "box 0.93";
    its five-star base was a clump on the floor. Over its base, the seat stands on it: two
    confident chairs, each as tall as a chair."""
    chairs = [obj for obj in real_results["tum"]["objects"] if obj["category"] == "chair"]
    assert len(chairs) == 2 and all(0.8 <= obj["size"][2] <= 1.2 for obj in chairs), chairs
