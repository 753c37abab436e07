"""Room context (objects/context.py): what else a frame shows reweights the categories shape cannot tell apart."""

from __future__ import annotations

import numpy as np

from threed_llm_ros.objects.context import room_shares, with_room_context
from threed_llm_ros.objects.recognition import OTHER

CLASSES = ("bed", "night stand", "dresser", "desk", "cabinet", "monitor", "chair", OTHER)


def _row(**probabilities: float) -> np.ndarray:
    row = np.array([probabilities.get(name.replace(" ", "_"), 0.0) for name in CLASSES])
    row[-1] = 1.0 - row.sum()
    return row


def test_a_bedroom_makes_the_ambiguous_box_a_dresser_an_office_a_desk() -> None:
    ambiguous = _row(dresser=0.40, desk=0.45, cabinet=0.10)
    bedroom = with_room_context(np.stack([_row(bed=0.95), _row(night_stand=0.8), ambiguous]), CLASSES, 0.5)[2]
    office = with_room_context(np.stack([_row(monitor=0.9), _row(chair=0.85), ambiguous]), CLASSES, 0.5)[2]
    dresser, desk = CLASSES.index("dresser"), CLASSES.index("desk")
    assert bedroom[dresser] > bedroom[desk] and office[desk] > office[dresser]
    assert np.allclose(bedroom.sum(), 1.0) and np.allclose(office.sum(), 1.0)


def test_no_confident_neighbour_changes_nothing_and_nothing_is_ruled_out() -> None:
    ambiguous = _row(dresser=0.40, desk=0.45, cabinet=0.10)
    unsure = _row(bed=0.3, monitor=0.3)  # below min_confidence: no evidence about the room
    alone = with_room_context(np.stack([unsure, ambiguous]), CLASSES, 0.5)
    assert np.allclose(alone, np.stack([unsure, ambiguous]))
    assert np.allclose(with_room_context(ambiguous[None], CLASSES, 0.5), ambiguous[None])
    # a desk in a bedroom is common in real homes: it stays the likeliest where its shape says so clearly
    bedroom = with_room_context(np.stack([_row(bed=0.95), _row(desk=0.9, dresser=0.05)]), CLASSES, 0.5)[1]
    assert int(np.argmax(bedroom)) == CLASSES.index("desk") and bedroom.max() > 0.8


def test_room_shares_name_every_catalogue_category_and_not_other() -> None:
    shares = room_shares(CLASSES)
    assert np.isnan(shares[:, -1]).all() and (shares[:, :-1] > 0).all()
