"""Room context: what else a frame confidently shows makes some categories likelier than others.

Shape and size cannot tell a dresser from a desk or a cabinet (the catalogue's sizes overlap:
a 0.5 × 1.0 × 0.85 m box can be any of them), but the room can: a dresser stands where beds
and night stands are, a desk where monitors and office chairs are. The kinds of rooms and what
each holds are the catalogue's (``data/catalog.ROOM_TYPES``: bedroom, living room, office,
bathroom, dining room, with relative weights), which is what people put in rooms, not how the
simulator renders them.

For each object, the other confident objects give a posterior over the kinds of room
(uniform prior; each other object's category distribution weighs in through each room's share
of it); the object's category probabilities are then multiplied by
(P(category | that room posterior) / P(category))^``CONTEXT_STRENGTH``, so a frame with no
confident neighbour changes nothing, and ``CONTEXT_FLOOR`` keeps every category possible in
every room (a desk in a bedroom is common in real homes).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from threed_llm_ros.data.catalog import ROOM_TYPES

CONTEXT_STRENGTH = 0.5
CONTEXT_FLOOR = 0.03  # added to every room's share of every category


def room_shares(classes: Sequence[str]) -> np.ndarray:
    """(rooms, classes) share of each category in each kind of room (furniture and small objects
    weighted alike), plus ``CONTEXT_FLOOR``; NaN for classes no room names (``other``)."""
    named = {name for room in ROOM_TYPES.values() for name in (*room.furniture, *room.small_objects)}
    shares = np.full((len(ROOM_TYPES), len(classes)), np.nan)
    for row, room in enumerate(ROOM_TYPES.values()):
        furniture, small = sum(room.furniture.values()), sum(room.small_objects.values())
        for column, name in enumerate(classes):
            if name in named:
                shares[row, column] = CONTEXT_FLOOR + 0.5 * (
                    room.furniture.get(name, 0.0) / furniture + room.small_objects.get(name, 0.0) / small)
    return shares


def with_room_context(probabilities: np.ndarray, classes: Sequence[str], min_confidence: float) -> np.ndarray:
    """``probabilities`` (objects × classes, rows summing to 1) reweighted by the room the other
    confident objects suggest (module docstring); rows of unnamed classes keep their mass."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    shares = room_shares(classes)
    known = ~np.isnan(shares[0])
    if len(probabilities) < 2 or not known.any():
        return probabilities
    category_part = probabilities[:, known]
    confident = category_part.max(axis=1) >= min_confidence
    # log-likelihood of each kind of room from each object: its category distribution over the room's shares
    evidence = np.log(np.maximum(category_part @ shares[:, known].T, 1e-12))  # (objects, rooms)
    evidence[~confident] = 0.0
    others = evidence.sum(axis=0, keepdims=True) - evidence  # every object but itself
    posterior = np.exp(others - others.max(axis=1, keepdims=True))
    posterior /= posterior.sum(axis=1, keepdims=True)
    expected = posterior @ shares[:, known]  # P(category | the others' room), per object
    marginal = shares[:, known].mean(axis=0)  # P(category) under the uniform prior
    reweighted = probabilities.copy()
    reweighted[:, known] = category_part * (expected / marginal) ** CONTEXT_STRENGTH
    return reweighted / reweighted.sum(axis=1, keepdims=True)
