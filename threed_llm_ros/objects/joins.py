"""Joins and cuts of an object layer's pieces, judged by shape and physics before the image is asked.

Touching fragments that are likelier one object than two join (a table's top and legs, a lamp's
stem and shade, an office chair's seat over its star base); a proposal larger than the category it
is sure of is cut in two (two tables pushed together); a confident large object takes the thin
pieces it was seen in (a bed's headboard, pillows and footboard). :class:`FragmentJoins` holds the
rules; :class:`~threed_llm_ros.objects.layer.ObjectLayer` uses them, giving ``classes`` and
``_best_named`` (each candidate's likeliest category and its probability).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from threed_llm_ros.data.catalog import CATEGORIES
from threed_llm_ros.geometry.boxes import OrientedBox
from threed_llm_ros.geometry.frames import yaw_rotation
from threed_llm_ros.objects.fit import fit_box
from threed_llm_ros.objects.gravity import GravityFrame
from threed_llm_ros.objects.pieces import Proposal, cut_apart, footprint_gap, holds_up, merge_pieces, stands_on_base
from threed_llm_ros.objects.visibility import RayGrid

JOIN_GAP_M = 0.1  # fragments this close may be one object
JOIN_MARGIN = 0.1  # ... when the joined shape's best category is this much surer than either part's
JOIN_MIN_SCORE = 0.5  # ... or is the surer part's category, this sure and as sure as the less sure part
# Farther apart, a large object seen in pieces is completed: a real bed seen from its foot gives
# its footboard, a thin strip of the mattress seen at a grazing angle, the pillows and the
# headboard, 0.3-0.6 m apart; each pair alone is ambiguous, all together plainly a bed. Thin
# pieces (a board, a strip, a pillow: some side at most COMPLETE_THIN_M) join a confident object
# of a category at least COMPLETE_MIN_LENGTH_M long when the whole keeps that category at
# JOIN_MIN_SCORE or more, within its size. A chair or a night stand beside a bed is no thin
# piece, and the confident piece shows the object's whole length along its long side (a
# headboard is as wide as the bed), so a piece whose centre lies more than COMPLETE_THIN_M beyond
# that side's ends is something beside it: the real SUN night stand (with its lamp's foot) beside
# the headboard, 0.4 m past its end, was taken into the bed. The whole need not be as sure as its
# best piece: where part of the object is hidden (that bed's foot behind an ottoman) the pieces
# seen span less than the category's size, and the headboard alone read bed 0.88, all the pieces
# bed 0.67.
COMPLETE_GAP_M = 0.6
COMPLETE_MIN_LENGTH_M = 1.5
COMPLETE_THIN_M = 0.25
SIZE_SLACK = 1.3  # a merged object may exceed its category's largest size by this factor
LARGEST_SIDE_M = 1.1 * max(max(spec.size_max[:2]) for spec in CATEGORIES.values())
MIN_JOIN_POINTS = 20
# Two tables pushed together: one cluster larger than any table. It is cut across its long side
# where both parts are surer things of one category that fit it.
SPLIT_CUTS = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7)  # where along the long side a cut is tried
MAX_OBJECTS = 40


def beyond_long_ends(box: OrientedBox, other: OrientedBox) -> float:
    """How far ``other``'s centre lies beyond the ends of ``box``'s long horizontal side (0 within them)."""
    yaw = box.yaw if box.size[0] >= box.size[1] else box.yaw + np.pi / 2
    along = abs(float(np.dot(np.asarray(other.center[:2]) - np.asarray(box.center[:2]), (np.cos(yaw), np.sin(yaw)))))
    return max(0.0, along - max(box.size[:2]) / 2)


def with_their_stems(proposals: list[Proposal], floor_z: float) -> list[Proposal]:
    """``proposals`` where each piece too small to be named alone (under ``MIN_JOIN_POINTS``) that
    holds a larger one up (``pieces.holds_up``: a lamp's thin stem under its shade) is part of it.
    Named alone, the stem is a 0.2 m "lamp" and the shade, hanging over the desk, nothing."""
    large = [k for k, proposal in enumerate(proposals) if len(proposal.points) >= MIN_JOIN_POINTS]
    merged = list(proposals)
    taken: set[int] = set()
    for k, piece in enumerate(proposals):
        if len(piece.points) >= MIN_JOIN_POINTS:
            continue
        holder = next((m for m in large if holds_up(piece.box, proposals[m].box)
                       and not cut_apart(piece, proposals[m])), None)
        if holder is not None:
            merged[holder] = merge_pieces(merged[holder], piece, floor_z)
            taken.add(k)
    return [proposal for k, proposal in enumerate(merged) if k not in taken]


class FragmentJoins:
    """The join and cut rules of the object layer (see the module docstring)."""

    classes: list[str]

    def _best_named(self, candidates: list[Proposal], gravity: GravityFrame, rays: RayGrid
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Each candidate's likeliest category and its probability: the layer's to give."""
        raise NotImplementedError

    def _fits(self, box: OrientedBox, label: int, slack: float = SIZE_SLACK) -> bool:
        """Whether ``box`` is no larger than category ``label`` gets (with ``slack``)."""
        spec = CATEGORIES[self.classes[label]]
        return max(box.size[:2]) <= max(spec.size_max[:2]) * slack and box.size[2] <= spec.size_max[2] * slack

    def _fits_both_sides(self, box: OrientedBox, label: int, slack: float = SIZE_SLACK) -> bool:
        """Whether ``box``'s footprint fits category ``label``'s on its long and its short side
        (with ``slack``): two tables side by side make a box as long as one table but twice as deep."""
        short = min(box.size[:2])
        short_max = min(CATEGORIES[self.classes[label]].size_max[:2])
        return self._fits(box, label, slack) and short <= short_max * slack

    def _join_fragments(self, proposals: list[Proposal], gravity: GravityFrame, rays: RayGrid) -> list[Proposal]:
        """Touching proposals that are likelier one object than two join: a table's top and its
        legs, split where the sensor saw little of the joint. Two join when the joined shape's
        best category is ``JOIN_MARGIN`` surer than either part's, or when it is the surer part's
        category, as sure as the less sure part and at least ``JOIN_MIN_SCORE``, and the joined
        box fits that category's size (a confidently named table leg must not keep the table's
        top out, and a vague desk must not swallow the chair beside it). Shape and physics only:
        the image is asked about the final objects. A thing split off a support's top surface
        rejoins its support only where the whole is surer and no support (a chair's seat).
        A low piece on the floor under a piece hanging above it (``pieces.stands_on_base``: an
        office chair's star base under its seat) joins it where the whole is a floor category at
        ``JOIN_MIN_SCORE`` that fits, as tall as that category gets (its whole height is seen; the
        base and rim of a trash can whose middle a chair hides are no 0.5 m "chair"). Up to
        ``COMPLETE_GAP_M`` apart, a thin piece completes a confident large object (a bed's
        footboard, mattress strip and pillows join its headboard). First, a piece too small to be
        named alone joins the piece it holds up (``with_their_stems``: a lamp's stem)."""

        def best(candidates: list[Proposal]) -> tuple[np.ndarray, np.ndarray]:
            return self._best_named(candidates, gravity, rays)

        proposals = sorted(with_their_stems(proposals, gravity.floor_z), key=lambda p: -len(p.points))
        # the largest MAX_OBJECTS with enough points: bounded work on a cluttered 360° lidar frame
        joinable = min(MAX_OBJECTS, sum(len(p.points) >= MIN_JOIN_POINTS for p in proposals))
        scores, labels = (list(values) for values in best(proposals[:joinable])) if joinable else ([], [])
        i = 0
        while i < joinable:
            j = i + 1
            while j < joinable:
                lower, upper = (i, j) if proposals[i].box.center[2] < proposals[j].box.center[2] else (j, i)
                held = holds_up(proposals[lower].box, proposals[upper].box)
                based = stands_on_base(proposals[lower].box, proposals[upper].box, gravity.floor_z)
                if cut_apart(proposals[i], proposals[j]):
                    j += 1
                    continue
                if held or footprint_gap(proposals[i].box, proposals[j].box) <= JOIN_GAP_M:
                    candidate = merge_pieces(proposals[i], proposals[j], gravity.floor_z)
                    if max(candidate.box.size[:2]) <= LARGEST_SIDE_M:
                        score, label = (float(values[0]) for values in best([candidate]))
                        if self._one_object((proposals[i], proposals[j]), (scores[i], scores[j]), (labels[i], labels[j]),
                                            int(upper == j), candidate, score, int(label), held, based):
                            proposals[i], scores[i], labels[i] = candidate, score, int(label)
                            del proposals[j], scores[j], labels[j]
                            joinable -= 1
                            j = i + 1
                            continue
                j += 1
            i += 1
        return self._complete_large(proposals, scores, labels, best, gravity.floor_z)

    def _one_object(self, pair: tuple[Proposal, Proposal], scores: tuple[float, float], labels: tuple[int, int],
                    upper: int, candidate: Proposal, score: float, label: int, held: bool, based: bool) -> bool:
        """Whether the two parts of ``pair`` (their best ``scores`` and ``labels``; ``upper``: which of
        them is higher) are one object, ``candidate``, named ``label`` at ``score``; ``held``: the lower
        part holds the upper up (``holds_up``), ``based``: the upper stands on the lower as on its
        base (``stands_on_base``). The rules are :meth:`_join_fragments`'."""
        spec = CATEGORIES[self.classes[label]]
        fits = self._fits(candidate.box, label)
        # a thing split off a support's top rejoins it only where the whole is clearly surer and
        # no support (a chair's back and seat); a book stays off its table, a box off its cabinet
        same_level = pair[0].on_top == pair[1].on_top
        surer = score > max(scores) + JOIN_MARGIN and score >= JOIN_MIN_SCORE and (same_level or not spec.is_support)
        surer_part = 0 if scores[0] >= scores[1] else 1
        completes = same_level and label == labels[surer_part] and score >= max(min(scores), JOIN_MIN_SCORE) and fits
        # a slender piece under a wider one holds it up: one thing, named as the upper piece (a
        # lamp's stem and shade), or named at all where the upper piece alone, hanging in the air,
        # could not be
        held = held and score >= JOIN_MIN_SCORE and (label == labels[upper] or scores[upper] < JOIN_MIN_SCORE) and fits
        # a base on the floor under a piece that hangs above it: one floor object (an office
        # chair's seat and back over its star base), whose whole height is seen, so it is as
        # tall as its category gets
        based = (based and score >= JOIN_MIN_SCORE and fits and spec.placement == "floor"
                 and candidate.box.size[2] >= 0.9 * spec.size_min[2])
        return surer or completes or held or based

    def _split_oversized(self, proposals: list[Proposal], gravity: GravityFrame, rays: RayGrid) -> list[Proposal]:
        """Each proposal sure of a category (``JOIN_MIN_SCORE``) but larger than it gets, cut in
        two across its long side at the cut (``SPLIT_CUTS``) where the less sure part is surest,
        when both parts are one category, fit it, and are as sure as the whole: two touching
        tables of one height are two tables, not one 2.4 m "desk". A vague blob is not cut into
        sure things (a real basement's shelves and pillars). The two parts never rejoin. Shape and
        physics only, like joins."""

        def best(candidates: list[Proposal]) -> tuple[np.ndarray, np.ndarray]:
            return self._best_named(candidates, gravity, rays)

        result: list[Proposal] = []
        for number, proposal in enumerate(proposals):
            box = proposal.box
            long_side = 0 if box.size[0] >= box.size[1] else 1
            if len(proposal.points) < 2 * MIN_JOIN_POINTS or proposal.on_top or max(box.size[:2]) < 1.0:
                result.append(proposal)
                continue
            (whole_score,), (label,) = best([proposal])
            spec = CATEGORIES[self.classes[int(label)]]
            fits = self._fits(box, int(label), 1.0) and min(box.size[:2]) <= min(spec.size_max[:2])
            if whole_score < JOIN_MIN_SCORE or fits:
                result.append(proposal)
                continue
            axis = yaw_rotation(box.yaw)[:2, long_side]
            along = (proposal.points[:, :2] - np.asarray(box.center[:2])) @ axis / box.size[long_side] + 0.5
            choice, choice_score = None, max(JOIN_MIN_SCORE, float(whole_score))
            for cut in SPLIT_CUTS:
                sides = [along < cut, along >= cut]
                if min(int(side.sum()) for side in sides) < MIN_JOIN_POINTS:
                    continue
                parts = [self._part(proposal, side, gravity.floor_z) for side in sides]
                scores, labels = best(parts)
                one_kind = labels[0] == labels[1] and all(self._fits(part.box, int(labels[0])) for part in parts)
                if float(scores.min()) >= choice_score and one_kind:
                    choice, choice_score = parts, float(scores.min())
            if choice is None:
                result.append(proposal)
            else:
                result += [replace(part, cut=number) for part in choice]
        return result

    @staticmethod
    def _part(proposal: Proposal, chosen: np.ndarray, floor_z: float) -> Proposal:
        """The proposal of ``proposal``'s points where ``chosen``."""
        points = proposal.points[chosen]
        colors = proposal.colors[chosen] if proposal.colors is not None else None
        return Proposal(points, colors, fit_box(points, floor_z), proposal.wall_distance, proposal.support_gap,
                        proposal.surface_z)

    def _complete_large(self, proposals: list[Proposal], scores: list, labels: list, best: Any,
                        floor_z: float) -> list[Proposal]:
        """Each confident object of a large category (``COMPLETE_MIN_LENGTH_M``), most confident
        first, takes the thin pieces within ``COMPLETE_GAP_M`` of it or of a piece it took and not
        beyond the ends of its long side, while the whole fits the category; the whole replaces
        them when it keeps the category at ``JOIN_MIN_SCORE`` or more (see ``COMPLETE_GAP_M``)."""
        taken: set[int] = set()
        for first in sorted(range(len(scores)), key=lambda k: -scores[k]):
            spec = CATEGORIES[self.classes[labels[first]]]
            if first in taken or scores[first] < JOIN_MIN_SCORE or max(spec.size_min[:2]) < COMPLETE_MIN_LENGTH_M:
                continue
            whole, members, grew = proposals[first], [first], True
            while grew:
                grew = False
                for k in range(len(scores)):
                    piece = proposals[k]
                    if (k in taken or k in members or piece.on_top or min(piece.box.size) > COMPLETE_THIN_M
                            or min(footprint_gap(proposals[m].box, piece.box) for m in members) > COMPLETE_GAP_M
                            or beyond_long_ends(proposals[first].box, piece.box) > COMPLETE_THIN_M):
                        continue
                    candidate = merge_pieces(whole, piece, floor_z)
                    if self._fits(candidate.box, labels[first]):
                        whole, grew = candidate, True
                        members.append(k)
            if len(members) == 1:
                continue
            score, label = (float(values[0]) for values in best([whole]))
            if int(label) == labels[first] and score >= JOIN_MIN_SCORE:
                proposals[first], scores[first] = whole, score
                taken.update(members[1:])
        return [proposal for k, proposal in enumerate(proposals) if k not in taken]
