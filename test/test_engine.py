"""The ROS-free inference engine on a real (untrained) checkpoint and the real SmolLM2.

Tests that need a TRAINED model to pass (grounding accuracy, plan poses at the right
objects, captions naming objects) are at the end and skip until the default checkpoint
``models/threed-llm-mini`` exists.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from threed_llm_ros.data.catalog import COLOR_NAMES, NEAR_COLORS
from threed_llm_ros.data.sim.frames import simulate
from threed_llm_ros.errors import ConfigError
from threed_llm_ros.geometry.boxes import OrientedBox
from threed_llm_ros.geometry.frames import to_gravity_frame
from threed_llm_ros.geometry.iou import rotated_box_iou
from threed_llm_ros.objects.describe import caption
from threed_llm_ros.plans import Plan, plan_problems
from threed_llm_ros.runtime.engine import InferenceEngine
from threed_llm_ros.runtime.engine_settings import EngineSettings, build_untrained_checkpoint
from threed_llm_ros.runtime.replies import SceneCloud, navigation_goal_for_box
from threed_llm_helpers import TRAINED_CHECKPOINT, engine_floors

needs_trained_model = pytest.mark.skipif(
    not (TRAINED_CHECKPOINT / "config.json").is_file(),
    reason="needs the trained default checkpoint (issue: data/training)",
)
FRAME_ID = "camera_color_optical_frame"

needs_trained_grounding = pytest.mark.skipif(
    "grounding_acc_at_0.25" not in engine_floors(),
    reason="the shipped checkpoint's model card sets no grounding floor: its grounding does not yet beat the "
    "blind baseline clearly (models/threed-llm-mini/README.md; issue: data/training)",
)


@pytest.fixture(scope="module")
def frame():
    return simulate(3)


@pytest.fixture(scope="module")
def cloud(frame) -> SceneCloud:
    return SceneCloud(frame.points, frame.colors, FRAME_ID, (1700000000, 250))


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> InferenceEngine:
    checkpoint = build_untrained_checkpoint(tmp_path_factory.mktemp("engine") / "untrained-mini")
    engine = InferenceEngine(EngineSettings(checkpoint=str(checkpoint), up_axis="-y", max_new_tokens=4))
    engine.load()
    assert engine.warm_up() > 0
    return engine


def test_navigation_goal_stands_off_the_footprint_and_faces_the_box() -> None:
    box = OrientedBox((3.0, 0.0, 0.4), (1.0, 1.0, 0.8), 0.0)
    goal, yaw = navigation_goal_for_box(box, floor_z=-1.2, standoff_m=0.6)
    assert np.allclose(goal, [1.9, 0.0, -1.2]) and math.isclose(yaw, 0.0, abs_tol=1e-9)
    rotated = OrientedBox((0.0, 2.0, 0.4), (2.0, 1.0, 0.8), math.pi / 2)  # long side along x after the turn
    goal, yaw = navigation_goal_for_box(rotated, floor_z=0.0, standoff_m=0.5)
    assert np.allclose(goal, [0.0, 0.5, 0.0]) and math.isclose(yaw, math.pi / 2)


def test_not_seen_replies_name_what_is_missing() -> None:
    from threed_llm_ros.runtime.replies import not_seen_text

    assert not_seen_text("Where is the grey table?", "grey table", ["red table"]) == \
        "I don't see a grey table here (not seen); I see a red table."
    assert not_seen_text("What is on top of the red table?", "anything on the red table") == \
        "I don't see anything on the red table here (not seen)."
    assert not_seen_text("Which is closer, the bed or the black book?", "black book") == \
        "I don't see a black book here (not seen)."
    assert not_seen_text("Where is the orange?") == "I don't see that here (not seen)."
    assert not_seen_text("Where is the apple chair?") == "I don't see a chair here (not seen)."
    assert not_seen_text("Where is the dresser?", "dresser", unsure=(2.04, 0.42)) == \
        "I don't see a dresser here (not seen); something about 2.0 m away might be one (0.42), too unsure to mark."


def test_the_robots_goal_is_the_plan_annotations_goal() -> None:
    """One rule for goal poses: a cup on a table gets a goal past the table, and a chair where that goal
    would be turns it by 30°; the annotator, given the same boxes as true objects, puts it in the same place."""
    from threed_llm_ros.data.annotation_types import AnnotationConfig
    from threed_llm_ros.data.dataset import ObjectRecord
    from threed_llm_ros.data.plan_annotations import navigation_goal

    table = OrientedBox((3.0, 0.0, -0.85), (1.2, 0.8, 0.7), 0.0)
    cup = OrientedBox((2.9, 0.1, -0.45), (0.1, 0.1, 0.1), 0.0)
    chair = OrientedBox((1.8, 0.1, -0.75), (0.5, 0.5, 0.9), 0.0)
    plain, _ = navigation_goal_for_box(cup, -1.2, support=table)
    assert plain[0] < 1.81  # past the table's front edge (x 2.4) by the standoff (0.6 m), not the cup's
    goal, yaw = navigation_goal_for_box(cup, -1.2, support=table, obstacles=[chair])
    assert not np.allclose(goal[:2], plain[:2]) and np.linalg.norm(goal[:2] - np.array(chair.center[:2])) > 0.55
    objects = [ObjectRecord(0, "table", "brown", table, None, 500), ObjectRecord(1, "cup", "red", cup, 0, 50),
               ObjectRecord(2, "chair", "green", chair, None, 300)]
    annotated = navigation_goal(objects, 1, AnnotationConfig())
    assert np.allclose(annotated["position"][:2], goal[:2], atol=1e-5)
    assert math.isclose(2 * math.atan2(annotated["orientation"][2], annotated["orientation"][3]), yaw, abs_tol=1e-5)


@pytest.mark.parametrize(
    ("settings", "parameter"),
    [
        ({"checkpoint": "/nonexistent/threed-llm-mini"}, "checkpoint"),
        ({"checkpoint": ""}, "checkpoint"),
        ({"checkpoint": "x", "backend": "openvino"}, "backend"),
        ({"checkpoint": "x", "backend": "tensorrt"}, "backend"),
        ({"checkpoint": "x", "up_axis": "y"}, "up_axis"),
        ({"checkpoint": "x", "device": "gpu"}, "device"),
        ({"checkpoint": "x", "min_range": 5.0, "max_range": 1.0}, "min_range"),
        ({"checkpoint": "x", "reply_timeout_s": 0.0}, "reply_timeout_s"),
        ({"checkpoint": "x", "reply_timeout_s": float("nan")}, "reply_timeout_s"),
        ({"checkpoint": "x", "torch_threads": 0}, "torch_threads"),
    ],
)
def test_bad_settings_name_the_parameter(settings: dict, parameter: str) -> None:
    with pytest.raises(ConfigError) as raised:
        InferenceEngine(EngineSettings(**settings)).load()
    assert raised.value.parameter == parameter
    assert "Fix:" in str(raised.value)


@pytest.mark.slow
def test_answer_streams_text_with_timings(engine: InferenceEngine, cloud: SceneCloud) -> None:
    pieces: list[str] = []
    reply = engine.answer(cloud, "Is there a red cup?", on_token=pieces.append)
    assert isinstance(reply.text, str)
    assert "".join(pieces) == reply.text
    for stage in ("preprocess_s", "scene_encoder_s", "prefill_s", "decode_s", "total_s"):
        assert reply.timings[stage] >= 0.0, stage
    assert reply.timings["total_s"] >= reply.timings["prefill_s"] + reply.timings["decode_s"]
    assert 1 <= reply.timings["generated_tokens"] <= 4


@pytest.mark.slow
def test_the_reply_deadline_cuts_the_answer_short_and_says_so(engine: InferenceEngine, cloud: SceneCloud) -> None:
    settings = engine.settings
    engine.settings = replace(settings, reply_timeout_s=1e-6)  # passed before the first token
    try:
        pieces: list[str] = []
        reply = engine.answer(cloud, "Is there a red cup?", on_token=pieces.append, programs=False)
        plan = engine.plan(cloud, "Bring the cup to the table.")
        note = engine.cut_short_note()
    finally:
        engine.settings = settings
    assert reply.cut_short and reply.timings["generated_tokens"] == 1
    assert reply.text.endswith(note) and "reply_timeout_s" in note
    assert "".join(pieces) == reply.text
    assert plan.cut_short  # its program, cut at one token, does not parse: the free-text plan is cut too
    assert not engine.answer(cloud, "Is there a red cup?", programs=False).cut_short


@pytest.mark.slow
def test_caption_names_only_the_confident_objects(engine: InferenceEngine, cloud: SceneCloud) -> None:
    found = engine.scene_objects(cloud)
    assert engine.scene_objects(cloud) is found, "one object list per frame, reused by every reply"
    for stage in ("gravity_s", "proposals_s", "recognition_s", "objects_s"):
        assert found.timings[stage] >= 0.0, stage
    text = engine.describe(cloud).text
    assert text == caption([obj for obj in found.objects if obj.score >= engine.settings.caption_min_confidence])
    assert engine.answer(cloud, "Describe the scene.").text == text, "describe requests get the same caption"


@pytest.mark.slow
def test_ground_gives_a_seen_object_with_its_pose_or_nothing(engine: InferenceEngine, cloud: SceneCloud) -> None:
    found = engine.scene_objects(cloud)
    assert found.confident, "the simulated frame shows objects"
    seen = found.confident[0]
    reply = engine.ground(cloud, f"Where is the {seen.category}?")
    assert len(reply.objects) == 1
    grounded = reply.target
    assert grounded.box == seen.box and grounded.score == pytest.approx(seen.score)
    expected = found.gravity.to_input(np.asarray(grounded.box.center)[None])[0]
    assert np.allclose(grounded.position, expected)
    assert math.isclose(float(np.linalg.norm(grounded.orientation)), 1.0, abs_tol=1e-6)
    absent = next(name for name in ("bathtub", "toilet", "bed", "sofa", "bookshelf", "monitor")
                  if name not in {obj.category for obj in found.confident})
    missing = engine.ground(cloud, f"Where is the {absent}?")
    assert missing.objects == [] and missing.target is None
    assert "not seen" in missing.text and absent in missing.text


@pytest.mark.slow
def test_plan_has_the_published_schema(engine: InferenceEngine, cloud: SceneCloud) -> None:
    found = engine.scene_objects(cloud)
    seen = found.confident[0].category
    reply = engine.plan(cloud, f"Bring the unicorn to the {seen}.")
    assert Plan.from_json(reply.plan.to_json()) == reply.plan  # the published form reads back whole
    plan = reply.plan.to_dict()
    assert plan_problems(plan) == []
    assert plan["frame_id"] == FRAME_ID and plan["stamp"] == {"sec": 1700000000, "nanosec": 250}
    assert plan["source"] in ("program", "model", "rules")
    navigation = [step for step in plan["steps"] if step["action"] == "navigate_to"]
    assert navigation, plan
    floor = engine.floor_height(cloud)
    posed = [step for step in navigation if "pose" in step]
    assert [step["target"] for step in posed] == [seen], "only the seen target gets a goal pose"
    assert all(step.get("seen") is False for step in navigation if "pose" not in step)
    for step in posed:
        goal = found.gravity.to_gravity(np.asarray([step["pose"]["position"]]))[0]
        assert goal[2] == pytest.approx(floor, abs=1e-3), "goals lie on the floor"
        target = found.gravity.to_gravity(np.asarray([step["target_position"]]))[0]
        assert np.linalg.norm(goal[:2]) < np.linalg.norm(target[:2]) + 1e-6 or np.allclose(target[:2], 0)
    assert len(reply.targets) == len(posed)


# --------------------------------------------------------------------------- trained model


@pytest.fixture(scope="module")
def trained_engine() -> InferenceEngine:
    engine = InferenceEngine(EngineSettings(checkpoint=str(TRAINED_CHECKPOINT), up_axis="-y", max_new_tokens=48))
    engine.load()
    return engine


def _grounding_floor() -> float:
    """Acc@0.25 floor stated by the model card (models/threed-llm-mini/model_card.json, engine_floors)."""
    return float(engine_floors()["grounding_acc_at_0.25"])


@needs_trained_model
@needs_trained_grounding
@pytest.mark.slow
def test_trained_grounding_reaches_the_model_card_floor(trained_engine: InferenceEngine) -> None:
    hits, total = 0, 0
    for seed in (101, 102, 103, 104):
        frame = simulate(seed)
        cloud = SceneCloud(frame.points, frame.colors, FRAME_ID)
        for obj in [o for o in frame.objects if o.visible_pixels > 500][:3]:
            reply = trained_engine.ground(cloud, f"Where is the {obj.label}?")
            total += 1
            hits += bool(reply.target and rotated_box_iou(reply.target.box, obj.box) >= 0.25)
    assert hits / total >= _grounding_floor()


@needs_trained_model
@needs_trained_grounding
@pytest.mark.slow
def test_trained_plan_poses_are_at_the_targets(trained_engine: InferenceEngine, frame, cloud: SceneCloud) -> None:
    objects = [o for o in frame.objects if o.visible_pixels > 500]
    portable = next(o for o in objects if o.category in ("cup", "bottle", "box", "book"))
    furniture = next(o for o in objects if o.category in ("table", "desk", "sofa", "bed", "dresser", "cabinet"))
    reply = trained_engine.plan(cloud, f"Bring the {portable.label} to the {furniture.label}.")
    assert reply.plan.source == ("program" if _shipped_question_programs() else "model"), reply.plan
    navigation = [step for step in reply.plan.steps if step["action"] == "navigate_to"]
    assert [step["target"] for step in navigation] == [portable.label, furniture.label]
    posed = [(step, obj) for step, obj in zip(navigation, (portable, furniture)) if "pose" in step]
    assert posed, "at least one target is seen"
    assert all(step.get("seen") is False for step in navigation if "pose" not in step), "an unseen target says so"
    assert len(reply.targets) == len(posed)
    errors = []
    for (step, obj), grounded in zip(posed, reply.targets):
        target = to_gravity_frame(np.asarray([step["target_position"]]), "-y")[0]
        errors.append(float(np.linalg.norm(target[:2] - np.asarray(obj.box.center[:2]))))
        goal = to_gravity_frame(np.asarray([step["pose"]["position"]]), "-y")[0]
        # the goal stands off the grounded box by the standoff, outside its footprint
        assert np.linalg.norm(goal[:2] - target[:2]) < 0.6 + float(np.hypot(*grounded.box.size[:2])) / 2 + 0.05
    assert np.mean(errors) <= float(engine_floors()["plan_target_mean_error_m"]), errors


@needs_trained_model
@pytest.mark.slow
def test_trained_captions_name_only_what_is_there(trained_engine: InferenceEngine) -> None:
    """Over unseen frames, captions name no category that is absent, and most name something."""
    from threed_llm_ros.objects.describe import named_categories

    naming = 0
    for seed in (101, 102, 103, 104, 105, 106):
        frame = simulate(seed)
        caption = trained_engine.describe(SceneCloud(frame.points, frame.colors, FRAME_ID)).text.lower()
        named = named_categories(caption)
        assert named <= {obj.category for obj in frame.objects}, caption
        naming += bool(named)
    assert naming >= 3


def _shipped_question_programs() -> bool:
    path = TRAINED_CHECKPOINT / "config.json"
    if not path.is_file():
        return False
    values = json.loads(path.read_text())
    return bool(values.get("model", values).get("question_programs", False))


@needs_trained_model
@pytest.mark.skipif(not _shipped_question_programs(), reason="the shipped checkpoint answers in free text")
@pytest.mark.slow
def test_trained_answers_come_from_programs_over_detected_objects(trained_engine: InferenceEngine) -> None:
    """Existence questions about the large furniture of unseen frames: the program runs over what
    the encoder detects, so present things get "yes" and absent categories "no"."""
    right, total = 0, 0
    for seed in (101, 102, 103, 104):
        frame = simulate(seed)
        cloud = SceneCloud(frame.points, frame.colors, FRAME_ID)
        present = {o.category for o in frame.objects if o.visible_pixels > 0}
        furniture = [o.category for o in frame.objects if o.visible_pixels > 5000][:2]
        absent = [name for name in ("bathtub", "toilet", "bed", "sofa", "bookshelf") if name not in present][:2]
        for category, expected in [(name, "yes") for name in furniture] + [(name, "no") for name in absent]:
            reply = trained_engine.answer(cloud, f"Is there a {category} in the room?")
            assert "program_s" in reply.timings
            total += 1
            right += reply.text == expected
    assert total >= 8 and right / total >= 0.75, f"{right}/{total}"


@needs_trained_model
@pytest.mark.skipif(not _shipped_question_programs(), reason="the shipped checkpoint answers in free text")
@pytest.mark.slow
def test_a_seen_category_in_another_colour_is_not_seen(trained_engine: InferenceEngine, frame, cloud: SceneCloud) -> None:
    """The demo's "grey table" when only a red one is seen: no box, no goal, and the reply says what is seen."""
    seen = trained_engine.objects(cloud)
    largest = max(seen, key=lambda obj: float(np.prod(obj.box.size)))
    same_category = {obj.color for obj in seen if obj.category == largest.category}
    wrong = next(name for name in COLOR_NAMES if name not in same_category
                 and not any(name in NEAR_COLORS[color] for color in same_category if color))
    reply = trained_engine.ground(cloud, f"Where is the {wrong} {largest.category}?")
    assert reply.target is None, reply.text
    assert "; I see " in reply.text and f"{largest.color} {largest.category}" in reply.text.split("; I see ")[1], reply.text
    planned = trained_engine.plan(cloud, f"Go to the {wrong} {largest.category}.")
    assert planned.plan.steps[0]["action"] == "navigate_to" and "pose" not in planned.plan.steps[0], planned.plan.steps
    assert not planned.targets
    reply = trained_engine.ground(cloud, f"Where is the {largest.color} {largest.category}?")
    assert reply.target is not None and reply.target.category == largest.category


@needs_trained_model
@pytest.mark.slow
def test_a_not_seen_reply_says_where_an_unsure_one_might_be(trained_engine: InferenceEngine, cloud: SceneCloud) -> None:
    """An object of the asked category scoring under ``min_confidence`` gets no box and no pose,
    but the reply says how far away something might be one, and how sure that is."""
    from threed_llm_ros.runtime.engine import UNSURE_MIN_SCORE

    found = trained_engine.scene_objects(cloud)
    confident = {obj.category for obj in found.confident}
    unsure = [obj for obj in found.objects
              if UNSURE_MIN_SCORE <= obj.score < found.min_confidence and obj.category not in confident]
    assert unsure, "frame 3 has no unsure object of an unseen category any more: pick a frame that has one"
    best = max((obj for obj in unsure if obj.category == unsure[0].category), key=lambda obj: obj.score)
    reply = trained_engine.ground(cloud, f"Where is the {best.category}?")
    assert reply.target is None, reply.text
    distance = float(np.linalg.norm(best.box.center))  # the cloud is in the sensor's frame: the origin is the sensor
    assert reply.text.endswith(f"about {distance:.1f} m away might be one ({best.score:.2f}), too unsure to mark."), reply.text
    planned = trained_engine.plan(cloud, f"Go to the {best.category}.")
    assert not planned.targets and "pose" not in planned.plan.steps[0]


@needs_trained_model
@pytest.mark.slow
def test_eval_objects_scores_the_robots_replies_on_unseen_frames(trained_engine: InferenceEngine) -> None:
    """``threed-llm eval-objects`` on three frames of its seed range (RGB-D, the default): every figure is
    there and in range, and the grounding and absent-object figures are far from chance (measured over
    40 frames: 0.83 / 0.93)."""
    from threed_llm_ros.eval.objects_eval import FIRST_SEED, evaluate_objects

    report = evaluate_objects(trained_engine, scenes=3, first_seed=FIRST_SEED, progress=False)
    assert report["frames"] == 3 and report["grounding_queries"] >= 5 and report["absent_queries"] == 6
    for key in ("grounding_acc_at_0.25", "grounding_acc_at_0.5", "present_missed", "absent_not_seen",
                "existence_accuracy", "count_accuracy", "captions_naming_absent"):
        assert 0.0 <= report[key] <= 1.0, key
    assert report["grounding_acc_at_0.25"] >= 0.5 and report["absent_not_seen"] >= 0.5, report
    # The scores mean what they say: objects found at 0.8 or more are right (a true object of that
    # category under the box) at least 8 times in 10. Measured: 18 of 18 here; 0.93 / 0.92 over
    # seeds 90000 / 91000 x 40 with the sensor height given, where the expected calibration error is 0.042.
    reliability = report["score_reliability"]
    assert all(0.0 <= row["right"] <= 1.0 for row in reliability) and report["expected_calibration_error"] is not None
    sure = [row for row in reliability if float(row["score"].split("-")[0]) >= 0.8]
    sure_objects = sum(row["objects"] for row in sure)
    assert sure_objects >= 5 and sum(row["objects"] * row["right"] for row in sure) >= 0.8 * sure_objects, reliability


def test_a_frame_too_sparse_to_see_anything_gets_no_answer(engine: InferenceEngine) -> None:
    """A 1-point cloud, or a depth frame whose points all lie outside the range, is "too sparse",
    never an answer about a chair (issue 17: such frames once gave "chair ... score 0.00")."""
    from threed_llm_ros.errors import FrameTooSparseError

    for xyz in (np.array([[0.0, 0.0, 1.5]]), np.full((5000, 3), 50.0)):
        sparse = SceneCloud(xyz, None, FRAME_ID)
        for ask in (lambda: engine.answer(sparse, "Is there a chair?"), lambda: engine.ground(sparse, "Where is the chair?"),
                    lambda: engine.plan(sparse, "Go to the chair."), lambda: engine.describe(sparse)):
            with pytest.raises(FrameTooSparseError, match="too sparse|at least"):
                ask()
