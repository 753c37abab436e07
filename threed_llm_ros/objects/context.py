"""What else the room holds settles look-alikes: a case good beside a toilet is a cabinet.

From its points and its view alone, a cabinet, a dresser and a desk of one size are often a
toss-up (``refine.py``). A person settles it from the room: beside a toilet or a bathtub it is a
bathroom cabinet, not a desk or a dresser; beside a sofa it is not a night stand. A few
categories name their room when they are seen surely (``ROOM_CUES``), and each room makes some
look-alikes rare (``RARE_IN_ROOM``). These are common-sense rules about rooms, written down, not
learned from the simulator's room recipes, and they only weigh: a rare category's probability is
multiplied by ``RARE_FACTOR`` within its ``LOOK_ALIKES`` group, whose total stays as it was, so
context never makes junk an object or a doubt sure; it only moves the name within the group.
A cue must itself be very sure (``CUE_MIN_SCORE``) and is never a look-alike, so no
object is named from another's guessed name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

import numpy as np

from threed_llm_ros.objects.refine import LOOK_ALIKES

ROOM_CUES: Mapping[str, str] = MappingProxyType({
    "toilet": "bathroom", "bathtub": "bathroom",
    "bed": "bedroom",
    "sofa": "living room",
})
RARE_IN_ROOM: Mapping[str, frozenset[str]] = MappingProxyType({
    "bathroom": frozenset({"desk", "dresser", "night stand", "table", "bookshelf"}),
    "bedroom": frozenset({"table", "desk"}),
    "living room": frozenset({"night stand", "dresser"}),
})
RARE_FACTOR = 0.3  # how much likelier a category is where its room does not make it rare
CUE_MIN_SCORE = 0.9  # a cue names its room only this sure: one wrong cue (a trash can called a toilet) misleads every look-alike


def rooms_seen(probabilities: np.ndarray, classes: Sequence[str]) -> list[set[str]]:
    """Per row, the rooms that the other rows' sure (``CUE_MIN_SCORE``) cue objects (``ROOM_CUES``) name."""
    cues = [(row, ROOM_CUES[name]) for row in range(len(probabilities)) for name in ROOM_CUES
            if name in classes and probabilities[row, classes.index(name)] >= CUE_MIN_SCORE]
    return [{room for cue_row, room in cues if cue_row != row} for row in range(len(probabilities))]


def weigh_by_room(probabilities: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """``probabilities`` (N, classes) where each row's likeliest category, ``other`` included, is in
    a ``LOOK_ALIKES`` group and another row surely names a room: the group's mass shared again with the room's rare
    categories weighed down by ``RARE_FACTOR``. Every other entry, and the group's total, stay."""
    result = probabilities.copy()
    for row, rooms in enumerate(rooms_seen(probabilities, classes)):
        rare = set().union(*(RARE_IN_ROOM.get(room, frozenset()) for room in rooms))
        if not rare:
            continue
        top = classes[int(np.argmax(probabilities[row]))]  # junk (``other``) first: no name to move
        group = next((names for names in LOOK_ALIKES if top in names), None)
        if group is None:
            continue
        columns = [classes.index(name) for name in group if name in classes]
        weights = np.array([RARE_FACTOR if classes[column] in rare else 1.0 for column in columns])
        mass = float(probabilities[row, columns].sum())
        weighed = probabilities[row, columns] * weights
        if weighed.sum() > 1e-12:
            result[row, columns] = mass * weighed / weighed.sum()
    return result
