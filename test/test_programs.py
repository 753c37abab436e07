"""Question programs: written from annotations, parsed back, and run over objects to the annotated answers."""

from __future__ import annotations

import numpy as np
import pytest

from threed_llm_ros.data.annotation_types import QUESTION_TYPES, AnnotationConfig
from threed_llm_ros.data.annotations import annotate_scene
from threed_llm_ros.data.plan_annotations import PLAN_TYPES, plan_combos, synthetic_instruction
from threed_llm_ros.data.relations import RELATIONS
from threed_llm_ros.data.words import SYNONYMS
from threed_llm_ros.data.catalog import COLOR_NAMES
from threed_llm_ros.data.dataset import SplitConfig, choose_heldout_combinations
from threed_llm_ros.data.generate import record_from_frame
from threed_llm_ros.plans import plan_text
from threed_llm_ros.data.programs import (
    PROGRAM_REQUEST,
    DetectedObject,
    ProgramError,
    annotation_program,
    detected_facts,
    execute_program,
    locate,
    missing_referent,
    parse_program,
    plan_from_program,
    plan_program_text,
    program_prompt,
    program_text,
    supports,
)
from threed_llm_ros.data.sim.frames import simulate
from threed_llm_ros.geometry.boxes import OrientedBox
from threed_llm_ros.geometry.camera import CameraIntrinsics


@pytest.fixture(scope="module")
def questions():
    """(record, QA annotations) of simulated scenes, as the data set generator makes them."""
    intrinsics = CameraIntrinsics.from_field_of_view(160, 120, 60.0)
    found = []
    for seed in range(10):
        record = record_from_frame(simulate(2000 + seed, intrinsics), f"scene{seed}", 8000,
                                   np.random.default_rng(seed), save_images=False)
        found.append((record, [a for a in annotate_scene(record, AnnotationConfig(), seed=seed) if a.task == "qa"]))
    return found


def _ground_truth_objects(record) -> list[DetectedObject]:
    return [DetectedObject(o.category, o.color, o.box) for o in record.objects if o.visible_points > 0]


def test_every_question_types_program_round_trips(questions) -> None:
    seen = set()
    for _, annotations in questions:
        for annotation in annotations:
            text = program_text(annotation.attributes)
            parsed = parse_program(text)
            assert program_text(parsed) == text
            assert parsed["question_type"] == annotation.attributes["question_type"]
            assert "\n" not in text and len(text) < 100
            seen.add(parsed["question_type"])
    assert seen == set(QUESTION_TYPES)


def test_programs_over_the_true_objects_give_the_annotated_answers(questions) -> None:
    """Run on a scene's true objects (support inferred from the boxes alone), every program
    reproduces its annotation's answer: the executor and the annotator agree on the geometry."""
    total = 0
    for record, annotations in questions:
        objects = _ground_truth_objects(record)
        inferred = supports([obj.box for obj in objects])
        truth = [o.on for o in record.objects if o.visible_points > 0]
        visible = [o.index for o in record.objects if o.visible_points > 0]
        assert inferred == [None if on is None or on not in visible else visible.index(on) for on in truth]
        facts = detected_facts(objects)
        for annotation in annotations:
            assert execute_program(parse_program(program_text(annotation.attributes)), facts) == annotation.answer, annotation.prompt
            total += 1
    assert total > 100


def test_every_grounding_and_plan_annotation_has_its_program() -> None:
    intrinsics = CameraIntrinsics.from_field_of_view(160, 120, 60.0)
    record = record_from_frame(simulate(2100, intrinsics), "scene", 8000, np.random.default_rng(0), save_images=False)
    annotations = annotate_scene(record, AnnotationConfig(), seed=0)
    facts = detected_facts(_ground_truth_objects(record))
    visible = [o.index for o in record.objects if o.visible_points > 0]
    tasks = set()
    for annotation in annotations:
        tasks.add(annotation.task)
        if annotation.task == "grounding":
            program = parse_program(annotation_program(annotation))
            assert program["question_type"] == "locate"
            assert visible[locate(program, facts)] == annotation.target_object  # the located object is the target
        elif annotation.task == "plan":
            assert parse_program(annotation_program(annotation))["question_type"] == "plan"
        elif annotation.task != "qa":
            with pytest.raises(ProgramError, match="no program"):
                annotation_program(annotation)
    assert {"grounding", "plan", "caption"} <= tasks


def test_plan_programs_over_the_true_objects_give_the_annotated_plans() -> None:
    """Every instruction's program, run over its scene's true objects, gives the annotated plan
    text and acts on the annotated objects; from the words alone it gives the same text except
    a trash can the words leave open."""
    intrinsics = CameraIntrinsics.from_field_of_view(160, 120, 60.0)
    seen, total, open_destinations = set(), 0, 0
    for seed in [*range(30), 46, 54, 74, 76, 94]:  # the last ones: throw_away without a named trash can, some with several
        record = record_from_frame(simulate(2200 + seed, intrinsics), f"scene{seed}", 8000,
                                   np.random.default_rng(seed), save_images=False)
        visible = [o.index for o in record.objects if o.visible_points > 0]
        objects = _ground_truth_objects(record)
        facts = detected_facts(objects)
        cans = sum(obj.category == "trash can" for obj in objects)
        for annotation in annotate_scene(record, AnnotationConfig(), seed=seed):
            if annotation.task != "plan":
                continue
            text = annotation_program(annotation)
            program = parse_program(text)
            assert plan_program_text(program["plan_type"], program["target"], program["destination"]) == text
            seen.add(program["plan_type"])
            open_destination = program["plan_type"] == "throw_away" and program["destination"] is None
            steps = plan_from_program(program, facts)
            reference = annotation.plan["steps"]
            if not (open_destination and cans > 1):  # of several trash cans the annotation picked one at random
                assert plan_text(steps) == annotation.answer, (annotation.prompt, text)
                for step, expected in zip(steps, reference):
                    assert visible[step["object"]] == expected["object"], (annotation.prompt, step)
            words_only = plan_text(plan_from_program(program))
            if open_destination:
                open_destinations += 1
                assert words_only.endswith("navigate_to(trash can) ; place(" + steps[0]["target"] + ", trash can)")
            else:
                assert words_only == annotation.answer
            total += 1
    assert total > 100 and seen == set(PLAN_TYPES) and open_destinations > 0, (total, seen, open_destinations)


def test_plan_programs_on_a_hand_built_room() -> None:
    room = _room()
    steps = plan_from_program(parse_program("bring: cup, red ; chair"), detected_facts(room))
    assert plan_text(steps) == "navigate_to(red cup) ; pick(red cup) ; navigate_to(chair) ; place(red cup, chair)"
    assert [step["object"] for step in steps] == [1, 1, 3, 1] and steps[-1]["destination_object"] == 3
    assert plan_text(plan_from_program(parse_program("go_to: chair, -, left of, table"), detected_facts(room))) == \
        "navigate_to(chair to the left of the table)"
    # No trash can in the room: the words' default, and nothing to drive to.
    steps = plan_from_program(parse_program("throw_away: book"), detected_facts(room))
    assert steps[2] == {"action": "navigate_to", "target": "trash can", "object": None}
    # Two trash cans: the one nearest the book, named so that it is the only one meant.
    room += [DetectedObject("trash can", "pink", OrientedBox((3.2, -1.0, -1.0), (0.3, 0.3, 0.4))),
             DetectedObject("trash can", "grey", OrientedBox((0.5, 2.0, -1.0), (0.3, 0.3, 0.4)))]
    steps = plan_from_program(parse_program("throw_away: book"), detected_facts(room))
    assert (steps[2]["target"], steps[2]["object"], steps[3]["destination"]) == ("pink trash can", 4, "pink trash can")
    steps = plan_from_program(parse_program("throw_away: book ; trash can, grey"), detected_facts(room))
    assert (steps[2]["target"], steps[2]["object"]) == ("grey trash can", 5)
    # A target that is not there keeps its words; the caller grounds it another way.
    assert plan_from_program(parse_program("pick: lamp"), detected_facts(room))[0] == \
        {"action": "navigate_to", "target": "lamp", "object": None}
    with pytest.raises(ProgramError, match="not an instruction"):
        plan_from_program(parse_program("count: cup"))
    with pytest.raises(ProgramError, match="has steps, not an answer"):
        execute_program(parse_program("pick: cup"), detected_facts(room))


def test_instructions_made_from_words_alone_say_what_their_programs_say() -> None:
    """The parser's extra training items: any combination but the held-out ones, and the words
    name the program's category and colour."""
    heldout = set(choose_heldout_combinations(SplitConfig()))
    rng = np.random.default_rng(5)
    seen = set()
    for _ in range(600):
        words, plan_type, destination, target = synthetic_instruction(rng, heldout)
        seen.add(plan_type)
        assert not any(tuple(combo) in heldout for combo in plan_combos(target["category"], target["color"], target["relation"], plan_type))
        program = parse_program(plan_program_text(plan_type, target, destination))
        assert (program["target"], program["destination"]) == (target, destination)
        lowered = words.lower()
        assert any(name in lowered for name in SYNONYMS.get(target["category"], (target["category"],))), words
        if target["color"]:
            assert target["color"] in lowered.split(), words
        steps = plan_from_program(program)  # every made-up instruction has a plan
        assert steps[0]["target"] and len(steps) in (1, 2, 4)
    assert seen == set(PLAN_TYPES)
    # Held out: every combination of cups with a colour and a relation; no such cup comes back.
    no_cups = {("cup", color, relation) for color in COLOR_NAMES for relation in RELATIONS}
    for _ in range(300):
        _, plan_type, _, target = synthetic_instruction(rng, no_cups)
        assert not (target["category"] == "cup" and target["color"] and (target["relation"] or plan_type == "put"))
    same = [synthetic_instruction(np.random.default_rng(9), heldout) for _ in range(2)]
    assert same[0] == same[1]


def test_malformed_programs_are_refused_with_the_reason() -> None:
    for text, reason in [
        ("how many chairs", "not a program"),
        ("volume: chair", "unknown or missing question type"),
        ("count: chair ; table", "takes 1 fields"),
        ("count: throne", "unknown category"),
        ("count: chair, plaid", "unknown colour"),
        ("color: cup, -, under, table", "unknown relation"),
        ("color: cup, -, on", "anchor category"),
        ("color: cup, -, -, table", "anchor without a pair relation"),
        ("choice: on ; cup ; table", "choice needs a relation"),
        ("count: cup, red, leftmost", "category and colour only"),
        ("bring: cup", "bring takes target, destination, got 1"),
        ("go_to: sofa ; bed", "go_to takes target, got 2"),
        ("throw_away: cup ; trash can ; sofa", "got 3"),
        ("put: cup ; shelf", "unknown category"),
    ]:
        with pytest.raises(ProgramError, match=reason):
            parse_program(text)
    assert program_prompt("  How many chairs are there? ") == f"{PROGRAM_REQUEST}\nHow many chairs are there?"


def test_programs_may_name_categories_by_synonym_or_plural() -> None:
    """A model that copies the question's word ("nightstand", "books") still means the category."""
    assert parse_program("count: books, green") == parse_program("count: book, green")
    assert parse_program("distance: nightstand, -, right of, bedside table, green") == parse_program(
        "distance: night stand, -, right of, night stand, green")
    assert parse_program("choice: leftmost ; bookcase ; book, green")["referents"][0]["category"] == "bookshelf"
    assert parse_program("bring: mug ; couch")["destination"]["category"] == "sofa"
    assert parse_program("count: bookshelves")["category"] == "bookshelf"
    for text in ("count: throne", "count: chairz", "color: cup, -, on, tables2"):
        with pytest.raises(ProgramError, match="category"):
            parse_program(text)


def _room() -> list[DetectedObject]:
    """A table 3 m ahead with a red cup on it, a book beside the cup, a green chair left of the table."""
    return [
        DetectedObject("table", "brown", OrientedBox((3.0, 0.0, -0.85), (1.2, 0.8, 0.7))),
        DetectedObject("cup", "red", OrientedBox((3.0, 0.3, -0.45), (0.1, 0.1, 0.1))),
        DetectedObject("book", "blue", OrientedBox((3.1, 0.1, -0.48), (0.25, 0.2, 0.04))),
        DetectedObject("chair", "green", OrientedBox((3.0, 0.9, -0.75), (0.5, 0.5, 0.9))),
    ]


def test_programs_on_a_hand_built_room() -> None:
    facts = detected_facts(_room())
    assert list(facts.support) == [-1, 0, 0, -1]  # the cup rests on the table, not on the book
    answers = {
        "existence: cup, red": "yes",
        "existence: cup, blue": "no",
        "count: cup": "1",
        "count: bed": "0",
        "color: chair, -, next to, table": "green",
        "support: cup": "table",
        "distance: chair": f"{np.linalg.norm([3.0, 0.9, -0.75]):.1f} m",
        "category: left of ; table": "chair",
        "bigger: cup, red ; chair": "chair",
        "taller: chair ; table": "chair",
        "choice: leftmost ; chair ; table": "chair",
        "choice: closest ; chair ; cup": "cup",
        "relation: on ; cup ; table": "yes",
        "relation: right of ; chair ; table": "no",
    }
    for text, answer in answers.items():
        assert execute_program(parse_program(text), facts) == answer, text


def test_a_raised_thing_whose_support_is_unseen_is_next_to_nothing() -> None:
    """A lamp standing 0.7 m up on a table the layer did not name (sim0_000007 of the card's CI
    subset: the blue table too unsure) is at no known level: it is not "next to" the purple table
    beside it on the floor, while two floor-standing things side by side still are."""
    objects = [
        DetectedObject("table", "purple", OrientedBox((3.0, -1.0, -0.85), (1.2, 0.8, 0.7))),
        DetectedObject("lamp", "red", OrientedBox((3.0, 0.0, -0.3), (0.3, 0.3, 0.5))),
        DetectedObject("chair", "green", OrientedBox((3.0, -1.8, -0.75), (0.5, 0.5, 0.9))),
    ]
    facts = detected_facts(objects)
    assert list(facts.support) == [-1, -1, -1]
    assert execute_program(parse_program("relation: next to ; lamp, red ; table, purple"), facts) == "no"
    assert execute_program(parse_program("relation: next to ; chair ; table, purple"), facts) == "yes"
    assert execute_program(parse_program("category: next to ; lamp"), facts) != "table"


def test_objects_the_scene_lacks() -> None:
    """What a program cannot find it does not make up; missing things are small things, so they
    are in no relation and lose size comparisons."""
    facts = detected_facts(_room())
    for text in ("color: lamp", "support: bottle", "distance: lamp", "category: on ; bed", "choice: leftmost ; lamp ; chair"):
        assert execute_program(parse_program(text), facts) is None, text
    assert execute_program(parse_program("relation: next to ; lamp ; table"), facts) == "no"
    assert execute_program(parse_program("bigger: lamp ; table"), facts) == "table"
    assert execute_program(parse_program("taller: chair ; lamp, red"), facts) == "chair"
    # a missing piece of furniture is not seen, not smaller: the cup is not "taller than the bookshelf"
    assert execute_program(parse_program("taller: cup ; bookshelf"), facts) is None
    assert missing_referent(parse_program("taller: cup ; bookshelf"), facts) == "bookshelf"
    assert missing_referent(parse_program("choice: closest ; table ; book, black"), facts) == "black book"
    assert missing_referent(parse_program("color: chair, -, next to, table"), facts) is None
    assert missing_referent(parse_program("category: on ; chair"), facts) == "anything on the chair"
    assert missing_referent(parse_program("support: chair"), facts) == "what the chair rests on"
    # no lamp at all: "I don't see a lamp", not "a nearest lamp"
    assert missing_referent(parse_program("locate: lamp, -, closest"), facts) == "lamp"
    # a colour the scene does not show is not dropped: the red cup is not "the blue cup"; a
    # lighting neighbour of the seen colour (pink for red) still finds it
    assert execute_program(parse_program("support: cup, blue"), facts) is None
    assert execute_program(parse_program("support: cup, pink"), facts) == "table"
    assert execute_program(parse_program("count: chair"), detected_facts([])) == "0"


def test_a_named_colour_is_never_dropped_for_the_robot() -> None:
    """Asked for the grey table where only a brown one is seen, locate and plans find nothing (no
    goal to drive to); the colour's lighting neighbours (``NEAR_COLORS``) and an exact match first."""
    facts = detected_facts(_room())
    assert locate(parse_program("locate: table, grey"), facts) is None
    assert locate(parse_program("locate: chair, blue, left of, table"), facts) is None
    assert locate(parse_program("locate: table, orange"), facts) == 0  # brown and orange: lighting neighbours
    assert locate(parse_program("locate: chair, green, right of, table"), facts) == 3  # the relation is loosened, not the colour
    steps = plan_from_program(parse_program("go_to: table, grey"), facts)
    assert steps == [{"action": "navigate_to", "target": "grey table", "object": None}]
    steps = plan_from_program(parse_program("bring: cup, blue ; table"), facts)
    assert steps[0]["object"] is None and steps[-1]["destination_object"] == 0
    two_chairs = detected_facts(_room() + [DetectedObject("chair", "white", OrientedBox((1.0, -1.0, -0.75), (0.5, 0.5, 0.9)))])
    assert locate(parse_program("locate: chair, grey"), two_chairs) == 4  # white is grey's neighbour, green is not
    assert locate(parse_program("locate: chair, green"), two_chairs) == 3
