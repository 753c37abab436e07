"""Room context (objects/context.py): a sure cue object moves a look-alike's name within its group."""

from __future__ import annotations

import numpy as np

from threed_llm_ros.data.sim.frames import simulate
from threed_llm_ros.geometry.iou import rotated_box_iou
from threed_llm_ros.objects.context import CUE_MIN_SCORE, weigh_by_room
from threed_llm_ros.objects.layer import ObjectLayer, PerceptionSettings
from threed_llm_ros.objects.recognition import OTHER
from threed_llm_ros.resources import default_object_classifier

CLASSES = [OTHER, "toilet", "bed", "chair", "desk", "dresser", "cabinet", "table", "night stand", "bookshelf"]


def _row(**probabilities: float) -> np.ndarray:
    row = np.zeros(len(CLASSES))
    for name, value in probabilities.items():
        row[CLASSES.index(name.replace("_", " "))] = value
    return row


def test_a_toss_up_beside_a_sure_toilet_is_a_cabinet() -> None:
    rows = np.stack([_row(toilet=0.95, other=0.05),
                     _row(desk=0.45, cabinet=0.4, dresser=0.1, other=0.05),
                     _row(chair=0.6, desk=0.3, other=0.1)])
    weighed = weigh_by_room(rows, CLASSES)
    case_good = dict(zip(CLASSES, weighed[1]))
    assert max(("desk", "cabinet", "dresser"), key=case_good.get) == "cabinet"
    group = [CLASSES.index(name) for name in ("table", "desk", "night stand", "dresser", "cabinet", "bookshelf")]
    assert np.isclose(weighed[1, group].sum(), rows[1, group].sum())  # the group's total stays
    assert weighed[1, CLASSES.index(OTHER)] == rows[1, CLASSES.index(OTHER)]
    np.testing.assert_array_equal(weighed[0], rows[0])  # the cue itself
    np.testing.assert_array_equal(weighed[2], rows[2])  # a chair is no look-alike


def test_an_unsure_cue_names_no_room() -> None:
    """A trash can called "toilet 0.62" must not make the bookshelf beside it a cabinet."""
    rows = np.stack([_row(toilet=CUE_MIN_SCORE - 0.05, other=0.95 - CUE_MIN_SCORE),
                     _row(bookshelf=0.5, cabinet=0.3, dresser=0.2)])
    np.testing.assert_array_equal(weigh_by_room(rows, CLASSES), rows)


def test_junk_stays_junk_beside_a_sure_bed() -> None:
    """A row whose likeliest class is ``other`` has no name to move (a merged fragment may read
    other 0.98 and bookshelf 0.44: context must not make it a sure bookshelf)."""
    rows = np.stack([_row(bed=0.95, other=0.05), _row(other=0.98, bookshelf=0.44, dresser=0.2, table=0.1)])
    np.testing.assert_array_equal(weigh_by_room(rows, CLASSES), rows)


def test_a_case_good_beside_a_bed_is_no_longer_a_sure_desk() -> None:
    rows = np.stack([_row(bed=0.98, other=0.02), _row(desk=0.59, table=0.2, dresser=0.13, other=0.08)])
    weighed = weigh_by_room(rows, CLASSES)
    assert weighed[1, CLASSES.index("desk")] < 0.5 < rows[1, CLASSES.index("desk")]
    assert weighed[1, CLASSES.index("dresser")] > rows[1, CLASSES.index("dresser")]


def test_the_cabinet_beside_the_bathtub_is_a_cabinet() -> None:
    """Simulated frame 91011 (a bathroom): from its points and view the red cabinet was a 0.68
    dresser; the sure bathtub beside it makes it a cabinet, boxed on its truth."""
    frame = simulate(91_011)
    layer = ObjectLayer.load(default_object_classifier(), PerceptionSettings(up_axis="-y", sensor_height=1.2))
    found = layer.perceive(frame.points, frame.colors, image=frame.rgb, intrinsics=frame.intrinsics).confident
    cabinet = next(obj for obj in frame.objects if obj.category == "cabinet")
    assert any(obj.category == "bathtub" and obj.score >= CUE_MIN_SCORE for obj in found)
    assert max((rotated_box_iou(obj.box, cabinet.box) for obj in found if obj.category == "cabinet"), default=0) >= 0.5
    assert not any(obj.category == "dresser" for obj in found)
