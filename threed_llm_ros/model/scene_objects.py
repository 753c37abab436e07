"""The objects a scene encoder finds, and answers computed over them from a question's program.

``detect_objects`` reads the patch-semantics head of an encoder with instance votes
(``scene_encoder.word_instances``): the likeliest point groups name a category and a
colour and vote for their object's centre and size; groups that repeat a likelier
group's object are dropped, under the same name as for the instance word tokens and also
under another name. ``answer_by_program`` lets the language model's program adapter write
the question's program (``data/programs.py``) and runs it over those objects;
``locate_by_program`` does the same for a grounding query and returns the object it names,
``plan_by_program`` for an instruction and returns its steps with the objects they act on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from threed_llm_ros.data.programs import (
    DetectedObject, ProgramError, detected_facts, execute_program, locate, missing_referent, parse_program,
    plan_from_program,
    program_prompt,
)
from threed_llm_ros.geometry.boxes import OrientedBox
from threed_llm_ros.model.preprocessing import SceneBatch, boxes_to_metres
from threed_llm_ros.model.scene_encoder import VOTE_OFFSET_UNIT, SceneEncoder
from threed_llm_ros.model.threed_llm import ThreeDLLM, scene_at

#: Tokens a program may take: programs stay under about 30 even with two long referring
#: expressions (generation stops at the end of the program).
PROGRAM_MAX_NEW_TOKENS = 80


def can_detect_objects(encoder: SceneEncoder) -> bool:
    """Whether a scene encoder names and places objects (patch semantics with votes)."""
    head = encoder.patch_semantics
    return bool(encoder.config.word_instances and head is not None and head.geometry is not None)


@torch.no_grad()
def detect_objects(
    encoder: SceneEncoder, scene: SceneBatch, index: int = 0, min_score: float = 0.5, candidates: int | None = None
) -> list[DetectedObject]:
    """Objects in scene ``index`` of ``scene``: category, colour, axis-aligned gravity-frame box in metres.

    The ``candidates`` likeliest groups (default ``word_groups``, as for the word tokens) are
    kept when likelier on an object than on nothing (``min_score``), not a repeat of a
    likelier group's object under the same name (the word tokens' rule) and not the same
    object as a more confident candidate under another name (``keep_distinct_objects``).
    """
    if not can_detect_objects(encoder):
        raise ValueError("this scene encoder has no instance votes (scene_encoder.word_instances)")
    config = encoder.config
    one = scene_at(scene, index).to(next(encoder.parameters()).device)
    patch_tokens = encoder.point_encoder(one.patches, one.centers)[:, 1:]
    category_logits, color_logits = encoder.patch_semantics(patch_tokens)
    category_probs = category_logits.float().softmax(dim=-1)[0]
    color_probs = color_logits.float().softmax(dim=-1)[0]
    on_object = 1.0 - category_probs[:, 0]
    chosen = on_object.topk(min(candidates or config.word_groups, on_object.shape[0])).indices
    votes = encoder.patch_semantics.votes(patch_tokens).float()[0, chosen]
    categories = category_probs[chosen, 1:].argmax(dim=-1)
    colors = color_probs[chosen, 1:].argmax(dim=-1)
    centres = one.centers[0, chosen, :3].float() + VOTE_OFFSET_UNIT * votes[:, :3]
    log_sizes = votes[:, 3:]
    keep = encoder._first_of_each_object(categories[None], centres[None], log_sizes[None])[0].bool()
    keep &= on_object[chosen] > min_score
    confidence = on_object[chosen] * category_probs[chosen, 1:].max(dim=-1).values
    keep &= keep_distinct_objects(centres, log_sizes.exp(), confidence, keep)
    normalized = torch.cat([centres, log_sizes.exp(), torch.zeros_like(centres[:, :1])], dim=-1)
    metres = boxes_to_metres(normalized[None].double().cpu(), one.to("cpu"))[0]
    found = []
    for slot in torch.nonzero(keep).flatten().tolist():
        found.append(DetectedObject(
            category=config.semantic_categories[int(categories[slot])],
            color=config.semantic_colors[int(colors[slot])],
            box=OrientedBox.from_array(metres[slot].numpy()),
            score=float(on_object[chosen[slot]]),
        ))
    return found


def keep_distinct_objects(
    centres: torch.Tensor, sizes: torch.Tensor, confidence: torch.Tensor, candidates: torch.Tensor
) -> torch.Tensor:
    """(N,) bool: candidates that are not another, more confident candidate's object under another name.

    Two candidates are one object when their voted centres are closer than half the smaller
    one's size diagonal: a chair's groups that also voted "table" collapse, a cup on a table
    stays (its centre is far from the table's, measured in the cup's size).
    """
    reach = sizes.norm(dim=-1) / 2.0
    distance = (centres[:, None] - centres[None, :]).norm(dim=-1)
    same_object = distance < torch.minimum(reach[:, None], reach[None, :])
    keep = candidates.clone()
    for slot in confidence.argsort(descending=True).tolist():
        if not keep[slot]:
            continue
        others = same_object[slot] & keep & (confidence <= confidence[slot])
        others[slot] = False
        keep &= ~others
    return keep


@dataclass
class ProgramAnswer:
    """The outcome of running the question's program over the detected objects."""

    answer: str | None  # None: an object the program asks about was not detected
    program: str  # as the language model wrote it
    objects: list[DetectedObject] = field(default_factory=list)
    missing: str | None = None  # the words of the object not detected, where ``answer`` is None


def write_program(model: ThreeDLLM, question: str, deadline: float | None = None) -> str:
    """The program the language model's program adapter writes for a question (no scene tokens:
    it reads only the words); ``deadline`` (monotonic s) cuts it short (it then rarely parses)."""
    with model.program_adapter():
        result = model.generate(None, program_prompt(question), max_new_tokens=PROGRAM_MAX_NEW_TOKENS, blind=True,
                                deadline=deadline)
    return result.text.strip()


def _parsed_program(model: ThreeDLLM, text: str, deadline: float | None = None) -> tuple[str, dict | None]:
    """The program the model writes for ``text`` and its parse (None when it does not parse)."""
    program = write_program(model, text, deadline)
    try:
        return program, parse_program(program)
    except ProgramError:
        return program, None


def answer_by_program(
    model: ThreeDLLM, scene: SceneBatch, question: str, index: int = 0, objects: list[DetectedObject] | None = None,
    deadline: float | None = None,
) -> ProgramAnswer | None:
    """The question's program and its result over the detected objects, or None when the model's
    program does not parse; with either None or a None answer the caller answers in free text.
    ``objects``: this scene's detections from an earlier call, reused instead of detecting again."""
    program, parsed = _parsed_program(model, question, deadline)
    if parsed is None or parsed["question_type"] in ("locate", "plan"):
        return None  # unparsable, or a referring expression or an instruction rather than a question
    if objects is None:
        objects = detect_objects(model.scene_encoder, scene, index)
    facts = detected_facts(objects)
    answer = execute_program(parsed, facts)
    return ProgramAnswer(answer, program, objects, missing_referent(parsed, facts) if answer is None else None)


@dataclass
class LocatedObject:
    """The detected object a grounding query's program names (None when it names none that was found)."""

    found: DetectedObject | None
    program: str
    objects: list[DetectedObject] = field(default_factory=list)


def locate_by_program(
    model: ThreeDLLM, scene: SceneBatch, query: str, index: int = 0, objects: list[DetectedObject] | None = None,
    deadline: float | None = None,
) -> LocatedObject | None:
    """The detected object a grounding query ("Where is the red cup?") refers to, through its
    program; None when the program does not parse. ``objects`` as for :func:`answer_by_program`."""
    program, parsed = _parsed_program(model, query, deadline)
    if parsed is None or "referent" not in parsed:
        return None  # unparsable, or a question about the scene rather than about one object
    if objects is None:
        objects = detect_objects(model.scene_encoder, scene, index)
    found = locate(parsed, detected_facts(objects))
    return LocatedObject(None if found is None else objects[found], program, objects)


@dataclass
class ProgramPlan:
    """An instruction's steps from its program, each with the detected object it acts on."""

    steps: list[dict]  # plan_from_program's steps; "object"/"destination_object" index ``objects`` (None: not found)
    words_only: list[dict]  # the same program's steps from its words alone (what no scene can add)
    program: str
    objects: list[DetectedObject] = field(default_factory=list)


def plan_by_program(
    model: ThreeDLLM, scene: SceneBatch, instruction: str, index: int = 0, objects: list[DetectedObject] | None = None,
    deadline: float | None = None,
) -> ProgramPlan | None:
    """The steps of an instruction through its program, over the detected objects; None when the
    program does not parse or is not an instruction's (the caller plans in free text).
    ``objects`` as for :func:`answer_by_program`."""
    program, parsed = _parsed_program(model, instruction, deadline)
    if parsed is None or parsed["question_type"] != "plan":
        return None
    if objects is None:
        objects = detect_objects(model.scene_encoder, scene, index)
    try:
        steps = plan_from_program(parsed, detected_facts(objects))
        words_only = plan_from_program(parsed)
    except ProgramError:
        return None
    return ProgramPlan(steps, words_only, program, objects)
