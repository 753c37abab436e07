"""Annotations agree with the scenes they describe: answers, referring expressions, plans."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from threed_llm_ros.data.annotation_types import PLAN_ACTIONS, QUESTION_TYPES, TASKS, Annotation, AnnotationConfig
from threed_llm_ros.data.annotations import annotate_scene, check_answer
from threed_llm_ros.data.plan_annotations import navigation_goal
from threed_llm_ros.data.relations import footprint_gap, make_expression, resolve_reference, scene_facts
from threed_llm_ros.data.words import describe, plural
from threed_llm_ros.data.catalog import CATEGORY_NAMES, COLOR_NAMES
from threed_llm_ros.data.dataset import ObjectRecord, SceneRecord
from threed_llm_ros.data.generate import record_from_frame
from threed_llm_ros.data.sim.frames import simulate
from threed_llm_ros.plans import parse_plan_text
from threed_llm_ros.geometry.boxes import OrientedBox
from threed_llm_ros.geometry.camera import CameraIntrinsics

SEEDS = range(12)
CONFIG = AnnotationConfig()


@pytest.fixture(scope="module")
def annotated_scenes() -> list[tuple[SceneRecord, list[Annotation]]]:
    """Simulated scenes (small renders) with their annotations, for many seeds."""
    intrinsics = CameraIntrinsics.from_field_of_view(160, 120, 60.0)
    scenes = []
    for seed in SEEDS:
        frame = simulate(1000 + seed, intrinsics)
        record = record_from_frame(frame, f"scene{seed}", 8000, np.random.default_rng(seed), save_images=False)
        scenes.append((record, annotate_scene(record, CONFIG, seed=seed)))
    return scenes


def _all(annotated_scenes, task: str | None = None):
    for record, annotations in annotated_scenes:
        for annotation in annotations:
            if task is None or annotation.task == task:
                yield record, annotation


def test_every_task_and_question_type_is_generated(annotated_scenes) -> None:
    tasks = {annotation.task for _, annotation in _all(annotated_scenes)}
    question_types = {annotation.attributes["question_type"] for _, annotation in _all(annotated_scenes, "qa")}
    assert tasks == set(TASKS)
    assert question_types == set(QUESTION_TYPES)


def test_every_answer_agrees_with_its_scene(annotated_scenes) -> None:
    for record, annotations in annotated_scenes:
        facts = scene_facts(record, CONFIG)
        for annotation in annotations:
            assert check_answer(record, annotation, facts), (record.scene_id, annotation.prompt, annotation.answer)


def test_check_answer_rejects_wrong_answers(annotated_scenes) -> None:
    """Corrupting an answer or a box must make the check fail, or the check proves nothing."""
    rejected = 0
    facts_of = {record.scene_id: scene_facts(record, CONFIG) for record, _ in annotated_scenes}
    for record, annotation in _all(annotated_scenes):
        facts = facts_of[record.scene_id]
        wrong = Annotation(**{**annotation.__dict__, "answer": annotation.answer + " x"})
        assert not check_answer(record, wrong, facts)
        if annotation.target_box is not None:
            moved = OrientedBox.from_array(annotation.target_box.to_array() + np.array([0.3, 0, 0, 0, 0, 0, 0]))
            assert not check_answer(record, Annotation(**{**annotation.__dict__, "target_box": moved}), facts)
        rejected += 1
    assert rejected > 300


def test_qa_answers_recomputed_independently_from_boxes(annotated_scenes) -> None:
    """Counts, distances and left/right/front/behind answers straight from the raw boxes."""
    checked = {"count": 0, "distance": 0, "relation": 0}
    for record, annotation in _all(annotated_scenes, "qa"):
        attributes = annotation.attributes
        kind = attributes["question_type"]
        if kind == "count":
            expected = sum(
                1 for obj in record.objects
                if obj.visible_points > 0 and obj.category == attributes["category"]
                and attributes["color"] in (None, obj.color)
            )
            assert annotation.answer == str(expected)
        elif kind == "distance":
            center = np.asarray(record.objects[annotation.target_object].box.center)
            assert re.fullmatch(r"\d+\.\d m", annotation.answer)
            assert abs(float(annotation.answer[:-2]) - float(np.linalg.norm(center))) <= 0.05 + 1e-9
        elif kind == "relation" and attributes["relation"] in ("left of", "right of", "in front of", "behind"):
            a, b = (resolve_reference(record, expression, CONFIG) for expression in attributes["referents"])
            assert len(a) == 1 and len(b) == 1
            delta = np.asarray(record.objects[a[0]].box.center) - np.asarray(record.objects[b[0]].box.center)
            signed = {"left of": delta[1], "right of": -delta[1], "in front of": -delta[0], "behind": delta[0]}
            value = signed[attributes["relation"]]
            assert (value > CONFIG.side_margin_m) if annotation.answer == "yes" else (value <= 0), annotation.prompt
        else:
            continue
        checked[kind] += 1
    assert min(checked.values()) >= 10, checked


def test_answers_are_short_and_canonical(annotated_scenes) -> None:
    for record, annotation in _all(annotated_scenes, "qa"):
        kind = annotation.attributes["question_type"]
        answer = annotation.answer
        assert answer == answer.strip() and len(answer.split()) <= 4
        if kind in ("existence", "relation"):
            assert answer in ("yes", "no")
        elif kind == "count":
            assert answer.isdigit()
        elif kind == "color":
            assert answer in COLOR_NAMES
        elif kind in ("category", "support"):
            assert answer in CATEGORY_NAMES  # canonical, even where the prompt said "mug" or "couch"


def test_yes_and_no_answers_are_both_common(annotated_scenes) -> None:
    answers = [a.answer for _, a in _all(annotated_scenes, "qa") if a.attributes["question_type"] in ("existence", "relation")]
    assert 0.3 < answers.count("yes") / len(answers) < 0.7


def test_referring_expressions_resolve_to_exactly_their_target(annotated_scenes) -> None:
    count = 0
    relations = set()
    for record, annotation in _all(annotated_scenes, "grounding"):
        expression = annotation.attributes["expression"]
        assert resolve_reference(record, expression, CONFIG) == [annotation.target_object]
        assert resolve_reference(record, expression, CONFIG, lenient=True) == [annotation.target_object]
        target = record.objects[annotation.target_object]
        assert target.category == expression["category"]
        assert expression["color"] in (None, target.color)
        assert annotation.target_box == target.box
        assert annotation.answer == describe(expression) + " <box>"
        relations.add(expression["relation"])
        count += 1
    assert count > 100
    assert {"on", "next to", "left of", "right of", "leftmost", "closest"} <= relations


def test_grounding_relations_hold_geometrically(annotated_scenes) -> None:
    """The target really is on / next to its anchor, recomputed from boxes without the library."""
    checked = 0
    for record, annotation in _all(annotated_scenes, "grounding"):
        expression = annotation.attributes["expression"]
        if expression["relation"] not in ("on", "next to"):
            continue
        target = record.objects[annotation.target_object]
        anchors = [
            obj for obj in record.objects
            if obj.visible_points > 0 and obj.category == expression["anchor"]["category"]
            and expression["anchor"]["color"] in (None, obj.color)
        ]
        assert len(anchors) == 1
        anchor = anchors[0]
        if expression["relation"] == "on":
            assert target.on == anchor.index
            bottom = target.box.center[2] - target.box.size[2] / 2
            assert abs(bottom - (anchor.box.center[2] + anchor.box.size[2] / 2)) < 1e-6
        else:
            # Sampled footprint points: the closest pair is nearer than the "next to" distance.
            a = _footprint_samples(target.box)
            b = _footprint_samples(anchor.box)
            closest = np.min(np.linalg.norm(a[:, None] - b[None], axis=2))
            assert closest < CONFIG.next_to_m + 0.02
        checked += 1
    assert checked >= 10


def _distance_to_footprint(point: np.ndarray, box: OrientedBox) -> float:
    """Horizontal distance from a point to a box's footprint, by dense sampling of its edges (0 inside)."""
    if box.contains(np.array([[point[0], point[1], box.center[2]]]))[0]:
        return 0.0
    return float(np.min(np.linalg.norm(_footprint_samples(box, 400) - point, axis=1)))


def _footprint_samples(box: OrientedBox, count: int = 40) -> np.ndarray:
    corners = box.corners()[:4, :2]
    t = np.linspace(0, 1, count, endpoint=False)[:, None]
    return np.concatenate([corners[i] + t * (corners[(i + 1) % 4] - corners[i]) for i in range(4)])


def test_plan_navigation_poses_are_near_and_in_front_of_targets(annotated_scenes) -> None:
    checked = 0
    for record, annotation in _all(annotated_scenes, "plan"):
        steps = annotation.plan["steps"]
        assert annotation.plan["instruction"] == annotation.prompt
        assert parse_plan_text(annotation.answer) == [
            {key: step[key] for key in ("action", "target", "destination") if key in step} for step in steps
        ]
        for step in steps:
            assert step["action"] in PLAN_ACTIONS
            if step["action"] != "navigate_to":
                continue
            obj = record.objects[step["object"]]
            center = np.asarray(obj.box.center)
            position = np.asarray(step["pose"]["position"])
            x, y, z, w = step["pose"]["orientation"]
            assert x == 0 and y == 0 and abs(z * z + w * w - 1) < 1e-5
            heading = 2 * math.atan2(z, w)
            to_object = center[:2] - position[:2]
            # Facing the object, within reach, and on the camera's side of it.
            assert abs(math.remainder(heading - math.atan2(to_object[1], to_object[0]), 2 * math.pi)) < 1e-3
            root = obj
            while root.on is not None:
                root = record.objects[root.on]
            # Outside the furniture, at most the standoff from it, and not further than its diagonal.
            gap = min(_distance_to_footprint(position[:2], obj.box), _distance_to_footprint(position[:2], root.box))
            assert 0.05 < gap <= CONFIG.standoff_m + 5e-3
            assert np.linalg.norm(to_object) <= math.hypot(*root.box.size[:2]) + CONFIG.standoff_m
            assert np.dot(position[:2] - center[:2], -center[:2]) > 0
            assert abs(position[2] - (root.box.center[2] - root.box.size[2] / 2)) < 1e-3
            checked += 1
    assert checked > 20


def test_annotations_are_deterministic_for_a_seed(annotated_scenes) -> None:
    record, annotations = annotated_scenes[0]
    again = annotate_scene(record, CONFIG, seed=0)
    other = annotate_scene(record, CONFIG, seed=99)
    assert [a.to_dict() for a in again] == [a.to_dict() for a in annotations]
    assert [a.prompt for a in other] != [a.prompt for a in annotations]


# --------------------------------------------------------------------------- a hand-built scene


def _hand_scene() -> SceneRecord:
    """Table 3 m ahead; a red cup (left) and a blue cup (right) on it; a chair 0.25 m left of it."""
    objects = [
        ObjectRecord(0, "table", "brown", OrientedBox((3.0, 0.0, -0.85), (1.2, 0.8, 0.7)), None, 500),
        ObjectRecord(1, "cup", "red", OrientedBox((3.0, 0.3, -0.45), (0.1, 0.1, 0.1)), 0, 40),
        ObjectRecord(2, "cup", "blue", OrientedBox((3.0, -0.3, -0.45), (0.1, 0.1, 0.1)), 0, 40),
        ObjectRecord(3, "chair", "green", OrientedBox((3.0, 0.9, -0.75), (0.5, 0.5, 0.9)), None, 300),
        ObjectRecord(4, "bed", "white", OrientedBox((5.0, -2.0, -0.9), (2.0, 1.5, 0.6), 0.3), None, 0),
    ]
    points = np.zeros((10, 3), dtype=np.float32)
    return SceneRecord("hand", points, np.zeros((10, 3), np.uint8), "z", "base_link", objects, "dining room")


def test_resolver_on_a_hand_built_scene() -> None:
    record = _hand_scene()
    table = make_expression("table")
    assert resolve_reference(record, make_expression("cup")) == [1, 2]
    assert resolve_reference(record, make_expression("cup", "red")) == [1]
    assert resolve_reference(record, make_expression("cup", relation="on", anchor=table)) == [1, 2]
    assert resolve_reference(record, make_expression("cup", relation="leftmost")) == [1]
    assert resolve_reference(record, make_expression("cup", relation="rightmost")) == [2]
    assert resolve_reference(record, make_expression("chair", relation="next to", anchor=table)) == [3]
    assert resolve_reference(record, make_expression("chair", relation="left of", anchor=table)) == [3]
    assert resolve_reference(record, make_expression("chair", relation="right of", anchor=table)) == []
    # Stacked objects are not "left of" their support, and an object out of view is never referred to.
    assert resolve_reference(record, make_expression("cup", relation="left of", anchor=table)) == []
    assert resolve_reference(record, make_expression("bed")) == []
    assert describe(make_expression("cup", "red", "on", table)) == "red cup on the table"
    assert describe(make_expression("cup", relation="leftmost")) == "leftmost cup"


def test_hand_built_scene_annotations() -> None:
    record = _hand_scene()
    annotations = annotate_scene(record, CONFIG, seed=3)
    facts = scene_facts(record, CONFIG)
    assert all(check_answer(record, annotation, facts) for annotation in annotations)
    for annotation in annotations:
        if annotation.task == "grounding" and annotation.attributes["expression"] == make_expression("cup"):
            pytest.fail("'the cup' is ambiguous with two cups")
        assert annotation.target_object != 4  # the bed has no visible points
    counts = {a.attributes["category"]: a.answer for a in annotations
              if a.task == "qa" and a.attributes["question_type"] == "count" and a.attributes["color"] is None}
    assert counts.get("cup", "2") == "2"
    assert all(value == "1" for key, value in counts.items() if key != "cup")


def test_navigation_goal_of_a_cup_stands_in_front_of_the_table() -> None:
    record = _hand_scene()
    goal = navigation_goal(record.objects, 1, CONFIG)
    # The cup sits at x=3.0 on a table whose near edge is x=2.4: goal 0.6 m before that edge, on the floor.
    position = np.asarray(goal["position"])
    assert position[2] == pytest.approx(-1.2)
    assert np.linalg.norm(position[:2] - np.array([3.0, 0.3])) == pytest.approx(0.6 + 0.6 / np.cos(np.arctan2(0.3, 3.0)), abs=0.05)
    assert position[0] < 2.4 - 0.5


def test_footprint_gap_known_values() -> None:
    a = OrientedBox((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    assert footprint_gap(a, OrientedBox((2.0, 0.0, 0.0), (1.0, 1.0, 1.0))) == pytest.approx(1.0)
    assert footprint_gap(a, OrientedBox((0.9, 0.0, 0.0), (1.0, 1.0, 1.0))) == 0.0
    # A diamond (45°) whose corner points at the square: gap = 2 - 0.5 - sqrt(0.5).
    diamond = OrientedBox((2.0, 0.0, 0.0), (1.0, 1.0, 1.0), math.pi / 4)
    assert footprint_gap(a, diamond) == pytest.approx(2 - 0.5 - math.sqrt(0.5))


def test_plural_forms() -> None:
    assert [plural(word) for word in ("box", "bookshelf", "night stand", "glass", "trash can")] == [
        "boxes", "bookshelves", "night stands", "glasses", "trash cans",
    ]
