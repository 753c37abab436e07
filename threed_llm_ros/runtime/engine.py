"""The inference engine behind ``threed_llm_node``, ROS-free: describe, answer, ground, plan.

It loads a checkpoint, prepares a sensor-frame cloud once per frame, and turns the
model's outputs into what a robot uses. The scene encoder runs on the ``backend``:
``torch`` (eager), ``onnxruntime`` (the exported graph, exported on first use into
``<checkpoint>/onnx`` or the user cache) or ``tensorrt`` (an engine built from that graph;
a :class:`ConfigError` naming ``backend`` where TensorRT or CUDA is missing). The
language model runs on ``lm_backend``: ``auto`` (the default: ``onnxruntime`` on the CPU for
a trained checkpoint, else ``torch``; see ``runtime/lm_backend.py``), ``torch`` (fp32 on the
CPU, bf16/fp16 on CUDA (``dtype``), an opt-in ``torch.compile`` (``compile_language_model``))
or ``onnxruntime`` (the checkpoint's decoder exported with its LoRA adapters merged, mixed (int4
default adapter, int8 programs adapter), int8 or int4 (``lm_precision``), exported on first use
next to the scene encoder's graphs, decoded on the CPU by ``runtime/onnx_decoder.py`` with
``lm_threads`` threads and no spinning; the torch decoder layers are then released). Both give
the same result type: the same text, location-token boxes and ``<box3d>`` head box (from the
graph's hidden states), up to int8 / int4 rounding; program writing uses the exported ``programs``
adapter. Training always uses torch. Each step of loading (the checkpoint, the language model's
runtime, the scene encoder's backend, the object layer, the projector) is in ``runtime/engine_loading.py``.

Every reply is computed from one list of objects per frame, the object layer
(``threed_llm_ros/objects``: gravity from the floor, geometric proposals, a box fitted to
each object's points, a calibrated category and a colour); an object not in its confident
list is "not seen".

* ``describe``: a caption naming only the objects scoring ≥ ``caption_min_confidence`` (0.9).
* ``answer``: a model with ``question_programs`` writes the question's program and runs it
  over the confident objects (count, existence, colour, relations); an object the program
  asks about that is not among them is answered "not seen". Free text from the language
  model (streamed through ``on_token``, :meth:`InferenceEngine.free_text`) only where the program
  does not parse; it reads the object list's tokens (``model/object_tokens.py``) where
  ``free_text_tokens`` is ``objects`` and the checkpoint has a projector, else the scene encoder's.
* ``ground``: the confident object the query names (its ``locate`` program, else the
  category its words name), as a box with its pose in the input frame; none at all when
  it is not seen (no box, no pose), where the text says how far away the likeliest object of
  the category scoring at least ``UNSURE_MIN_SCORE`` (but under ``min_confidence``) might be one.
  ``score`` is the object's calibrated confidence.
* ``plan``: the instruction's program over the objects (``"source": "program"``), else the
  model's plan text (``"model"``), else the rules of :mod:`threed_llm_ros.runtime.intent`
  (``"rules"``). Each ``navigate_to`` target that is seen gets a goal pose on the floor in
  front of it, facing it, by the plan annotations' own rule (:func:`navigation_goal_for_box`:
  past what it rests on, clear of other furniture); one not seen gets ``"seen": false`` and no pose.

Every reply has a deadline, ``reply_timeout_s`` after it starts: the language model stops
decoding there (as it does at ``max_new_tokens``) and the text says it was cut short
(:data:`CUT_SHORT_NOTE`; ``cut_short`` on the reply). The deadline cannot interrupt the
object layer or a prefill, so a reply can overrun it by those.

Every result carries per-stage timings in seconds (``preprocess_s``, ``scene_encoder_s``,
``prefill_s``, ``decode_s``, ``grounding_s``, ``program_s``, ``total_s``).
"""


from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from threed_llm_ros.data.programs import supports
from threed_llm_ros.errors import FrameTooSparseError
from threed_llm_ros.geometry.frames import rotation_to_gravity
from threed_llm_ros.plans import NAVIGATION_ACTIONS, Plan, parse_plan_text, plan_text
from threed_llm_ros.runtime.engine_loading import (
    configure_language_model,
    language_backend_of,
    language_model_dtype,
    load_model,
    load_object_layer,
    load_object_tokens,
    make_scene_backend,
    preprocessing_of,
)
from threed_llm_ros.runtime.engine_settings import EngineSettings, resolve_checkpoint
from threed_llm_ros.runtime.intent import Intent, route, rule_based_plan
from threed_llm_ros.runtime.replies import (
    GroundedObject,
    GroundingReply,
    PlanReply,
    SceneCloud,
    TextReply,
    navigation_goal_for_box,
    not_seen_text,
)
from threed_llm_ros.model.object_tokens import tokens_of_scene
from threed_llm_ros.model.preprocessing import prepare_scenes
from threed_llm_ros.objects.describe import caption, category_in_phrase, color_fits, color_in_phrase
from threed_llm_ros.runtime.lm_backend import release_torch_decoder

CAPTION_PROMPT = "Describe the scene."
MIN_FRAME_POINTS = 100  # fewer valid points: "the frame is too sparse", not an answer
CUT_SHORT_NOTE = " [cut short: reply_timeout_s ({:g} s) reached]"
UNSURE_MIN_SCORE = 0.3  # a "not seen" reply names the likeliest object of the category scoring this much


class InferenceEngine:
    """A loaded model and the robot-facing tasks on top of it. Not thread-safe: one caller at a time."""

    def __init__(self, settings: EngineSettings, progress: Callable[[str], None] | None = None) -> None:
        settings.validate()
        self.settings = settings
        self.progress = progress  # told what each slow step of load() and warm_up() is doing, before it starts
        self.model: Any = None
        self.checkpoint_path: Path | None = None
        self._preprocess: Any = None
        self._cached: tuple[SceneCloud, Any] | None = None  # the last cloud's scene batch (language model)
        self._objects: tuple[SceneCloud, Any] | None = None  # the last cloud's object layer output
        self.object_layer: Any = None
        self.object_tokens: Any = None  # the object-token projector free text reads through (None: scene tokens)
        self.scene_backend: Any = None  # None = the model's own torch encoder inside generate
        self.generator: Any = None  # what generates replies: the model (torch) or an OnnxGenerator
        self.language_backend = ""  # the backend that serves replies: torch or onnxruntime (``lm_backend`` resolved)
        self.language_backend_note = ""  # one line: which backend serves and why (the node logs it)

    # ------------------------------------------------------------------ loading

    def load(self) -> float:
        """Load the checkpoint on the device; returns the seconds it took. ConfigError names the parameter."""
        started = time.perf_counter()
        # torch's pool is process-wide and its threads spin: on two cores with one kept busy, two of
        # them made an RGB-D grounding reply 1.76 s against 1.21 s at one (docs/benchmarks.md)
        torch.set_num_threads(self.settings.torch_threads)
        self.checkpoint_path = resolve_checkpoint(self.settings.checkpoint)
        self._say(f"loading {self.checkpoint_path}: SmolLM2-135M from its GGUF (dequantised once into the cache, "
                  "about 15 s, then read from there), then the trained tensors")
        self.model = load_model(self.checkpoint_path, self.settings)
        self._finish_loading()
        return time.perf_counter() - started

    @classmethod
    def around(cls, model: Any, settings: EngineSettings) -> "InferenceEngine":
        """An engine over a model already in memory (``threed-llm eval`` measures the robot's
        reply path with the model it also probes directly)."""
        engine = cls(settings)
        engine.model = model
        engine._finish_loading(owns_model=False)
        return engine

    def _finish_loading(self, owns_model: bool = True) -> None:
        """Everything after the model (each step in ``runtime/engine_loading.py``): preprocessing, language-model
        settings, backends, object layer. ``owns_model``: False for :meth:`around` (the caller's model is used as
        given, never released)."""
        self._preprocess = preprocessing_of(self.model, self.settings)
        if owns_model:
            self._say(f"preparing the language model's runtime (lm_backend {self.settings.lm_backend}; a decoder "
                      "not yet exported for these weights is exported now, about 15 s per adapter)")
        self.generator, self.language_backend, self.language_backend_note = language_backend_of(
            self.settings, self.checkpoint_path, self.model, owns_model)
        if owns_model and self.language_backend == "onnxruntime":
            release_torch_decoder(self.model)  # the exported decoders serve; the torch layers would sit unused
        configure_language_model(self.model, self.settings, self.language_backend)
        self.scene_backend = make_scene_backend(self.settings, self.checkpoint_path, self.model)
        self._say("loading the object layer (its classifier and the image model)")
        self.object_layer = load_object_layer(self.settings)
        self.object_tokens = load_object_tokens(self.settings, self.model, self.checkpoint_path)

    def language_model_dtype(self) -> torch.dtype:
        """The dtype the language model runs in (``engine_loading.language_model_dtype`` of the settings)."""
        return language_model_dtype(self.settings)

    @property
    def loaded(self) -> bool:
        return self.model is not None

    def warm_up(self) -> float:
        """One tiny generation and one pass of the object layer on a synthetic cloud, so the first
        real request is not the slowest (open3d and the language model initialise here)."""
        rng = np.random.default_rng(0)
        up = rotation_to_gravity(self.settings.up_axis)
        gravity = np.column_stack([rng.uniform(1.0, 3.0, 4096), rng.uniform(-1.0, 1.0, 4096), rng.uniform(-1.0, 1.0, 4096)])
        cloud = SceneCloud((gravity @ up).astype(np.float32), rng.integers(0, 256, (4096, 3), dtype=np.uint8), "warm_up")
        self._say("warming up: one one-token reply and one object-layer pass on a synthetic cloud, "
                  "so that the first real reply is not the slowest")
        started = time.perf_counter()
        self._generate(cloud, CAPTION_PROMPT, {}, max_new_tokens=1)
        self.scene_objects(cloud)
        self._cached = self._objects = None
        return time.perf_counter() - started

    def _say(self, note: str) -> None:
        if self.progress is not None:
            self.progress(note)

    def _require_model(self) -> None:
        if self.model is None:
            raise RuntimeError("the engine is not loaded: call load() first")

    # ------------------------------------------------------------------ scenes

    def _require_evidence(self, cloud: SceneCloud) -> None:
        """FrameTooSparseError unless ``cloud`` has ``MIN_FRAME_POINTS`` finite points in range: a
        1-point cloud or a 1×1 depth image says nothing about a room, and no reply may pretend it does."""
        xyz = np.asarray(cloud.xyz, dtype=np.float64).reshape(-1, 3)
        distance = np.linalg.norm(xyz, axis=1)
        valid = int((np.isfinite(distance) & (distance >= self.settings.min_range) & (distance <= self.settings.max_range)).sum())
        if valid < MIN_FRAME_POINTS:
            raise FrameTooSparseError(
                "points", f"only {valid} valid points within [{self.settings.min_range:g}, {self.settings.max_range:g}] m; "
                          f"a frame needs at least {MIN_FRAME_POINTS} to be answered about: check the sensor, its "
                          "range or min_range/max_range")

    def _prepare(self, cloud: SceneCloud, timings: dict[str, float]) -> Any:
        """The model's scene batch of ``cloud`` (cached for the last cloud)."""
        self._require_model()
        if self._cached is not None and self._cached[0] is cloud:
            timings.setdefault("preprocess_s", 0.0)
            return self._cached[1]
        self._require_evidence(cloud)
        started = time.perf_counter()
        xyz = np.asarray(cloud.xyz, dtype=np.float32).reshape(-1, 3)
        scene = prepare_scenes([(xyz, cloud.rgb)], self._preprocess, seed=0, device=self.settings.device)
        timings["preprocess_s"] = time.perf_counter() - started
        self._cached = (cloud, scene)
        return scene

    def scene_objects(self, cloud: SceneCloud, timings: dict[str, float] | None = None) -> Any:
        """The cloud's object layer output (``objects.layer.SceneObjects``), computed once per cloud."""
        self._require_model()
        if self._objects is not None and self._objects[0] is cloud:
            return self._objects[1]
        self._require_evidence(cloud)
        found = self.object_layer.perceive(cloud.xyz, cloud.rgb, cloud.frame_id, image=cloud.image,
                                           intrinsics=cloud.intrinsics, camera_from_input=cloud.camera_from_input)
        if timings is not None:
            timings.update(found.timings)
        self._objects = (cloud, found)
        return found

    def _by_program(self, function: Callable[..., Any], cloud: SceneCloud, prompt: str, timings: dict[str, float],
                    deadline: float | None = None) -> Any:
        """``function`` (``answer_by_program``, ``locate_by_program`` or ``plan_by_program``) on
        ``prompt`` over the confident objects of the cloud's object layer."""
        confident = self.scene_objects(cloud, timings).confident
        started = time.perf_counter()
        reply = function(self.generator or self.model, None, prompt, objects=confident, deadline=deadline)
        timings["program_s"] = time.perf_counter() - started
        return reply

    def reply_deadline(self) -> float:
        """The ``time.monotonic()`` deadline of a reply that starts now."""
        return time.monotonic() + self.settings.reply_timeout_s

    def cut_short_note(self) -> str:
        """What a reply that the deadline stopped ends with."""
        return CUT_SHORT_NOTE.format(self.settings.reply_timeout_s)

    def _has_programs(self) -> bool:
        return self.model is not None and self.model.config.question_programs

    def _generate(self, cloud: SceneCloud, prompt: str, timings: dict[str, float], **options: Any) -> Any:
        scene = self._prepare(cloud, timings)
        options.setdefault("max_new_tokens", self.settings.max_new_tokens)
        if self.scene_backend is not None and options.get("scene_tokens") is None and not options.get("blind"):
            started = time.perf_counter()
            options["scene_tokens"], _, options["patch_tokens"] = self.scene_backend.encode(scene.patches, scene.centers)
            timings["scene_encoder_s"] = timings.get("scene_encoder_s", 0.0) + time.perf_counter() - started
        result = (self.generator or self.model).generate(scene, prompt, **options)
        for key, value in result.timings.items():
            if key.endswith("_s"):
                timings[key] = timings.get(key, 0.0) + value
        timings["generated_tokens"] = timings.get("generated_tokens", 0.0) + result.token_count
        return result

    # ------------------------------------------------------------------ tasks

    def describe(self, cloud: SceneCloud, on_token: Callable[[str], None] | None = None,
                 prompt: str = CAPTION_PROMPT) -> TextReply:
        """A caption naming only the frame's objects that score at least ``caption_min_confidence``
        (``objects/describe.py``): it cannot name what the object layer did not find, and an
        unasked claim needs more certainty than an answer does."""
        started = time.perf_counter()
        timings: dict[str, float] = {}
        found = self.scene_objects(cloud, timings)
        text = caption([obj for obj in found.objects if obj.score >= self.settings.caption_min_confidence])
        if on_token is not None:
            on_token(text)
        timings["total_s"] = time.perf_counter() - started
        return TextReply(text, timings)

    def answer(self, cloud: SceneCloud, prompt: str, on_token: Callable[[str], None] | None = None,
               programs: bool = True) -> TextReply:
        """The reply to ``prompt`` about the scene, streamed through ``on_token``.

        A request to describe the scene gets :meth:`describe`'s caption. A model with
        ``question_programs`` writes the question's program and runs it over the confident
        objects; where the program asks about an object that is not among them, the reply says
        it is not seen. Free text from the language model only where the program does not
        parse (or ``programs=False``).
        """
        if route(prompt, self.settings.max_prompt_chars).kind == "describe":
            return self.describe(cloud, on_token, prompt)
        started = time.perf_counter()
        deadline = self.reply_deadline()
        timings: dict[str, float] = {}
        if programs and self._has_programs():
            from threed_llm_ros.model.scene_objects import answer_by_program  # lazy: transformers (see load_model)

            reply = self._by_program(answer_by_program, cloud, prompt, timings, deadline)
            if reply is not None:
                text = reply.answer if reply.answer is not None else not_seen_text(prompt, reply.missing or "")
                if on_token is not None:
                    on_token(text)
                timings["total_s"] = time.perf_counter() - started
                return TextReply(text, timings, program=reply.program)
        return self.free_text(cloud, prompt, on_token, deadline, timings, started)

    def free_text(self, cloud: SceneCloud, prompt: str, on_token: Callable[[str], None] | None = None,
                  deadline: float | None = None, timings: dict[str, float] | None = None,
                  started: float | None = None, tokens: str = "") -> TextReply:
        """The language model's own reply to ``prompt`` (no program, no routing), streamed through ``on_token``,
        reading ``tokens``: ``objects`` (the object list's confident objects as object tokens), ``scene``
        (the scene encoder's tokens), ``blind`` (none) or '' (objects where the engine has a projector)."""
        started = time.perf_counter() if started is None else started
        timings = {} if timings is None else timings
        deadline = self.reply_deadline() if deadline is None else deadline
        tokens = tokens or ("objects" if self.object_tokens is not None else "scene")
        options: dict[str, Any] = {"on_token": on_token, "deadline": deadline}
        if tokens == "blind":
            options["blind"] = True
        elif tokens == "objects":
            if self.object_tokens is None:
                raise ValueError("object tokens asked for, but the engine has no object-token projector "
                                 "(free_text_tokens: objects and a checkpoint with object_tokens/)")
            found = self.scene_objects(cloud, timings)
            options["scene_tokens"] = tokens_of_scene(self.object_tokens, found, timings)
        elif tokens != "scene":
            raise ValueError(f"tokens must be objects, scene, blind or '', got {tokens!r}")
        result = self._generate(cloud, prompt, timings, **options)
        text = result.text
        if result.cut_short:
            text += self.cut_short_note()
            if on_token is not None:
                on_token(self.cut_short_note())
        timings["total_s"] = time.perf_counter() - started
        return TextReply(text, timings, result.cut_short)

    def ground(self, cloud: SceneCloud, prompt: str, label: str = "", programs: bool = True,
               deadline: float | None = None) -> GroundingReply:
        """The confident object ``prompt`` refers to, or no object at all ("not seen": no box, no pose).

        A model with ``question_programs`` writes the query's ``locate`` program and resolves it
        over the confident objects (colour, relations); otherwise, or where the program does
        not parse (or the ``deadline`` cut it short), the likeliest confident object of the
        category the words name.
        """
        started = time.perf_counter()
        timings: dict[str, float] = {}
        found = self.scene_objects(cloud, timings)
        target = label or (route(prompt, self.settings.max_prompt_chars).target if prompt.strip() else "") or "object"
        chosen, resolved, program = None, False, None
        if programs and self._has_programs():
            from threed_llm_ros.model.scene_objects import locate_by_program  # lazy: transformers (see load_model)

            located = self._by_program(locate_by_program, cloud, prompt, timings,
                                       self.reply_deadline() if deadline is None else deadline)
            if located is not None:
                chosen, resolved, program = located.found, True, located.program
        if not resolved:  # the words alone: their category, in their colour (or its lighting neighbours)
            category = category_in_phrase(target) or category_in_phrase(prompt)
            color = color_in_phrase(target) or color_in_phrase(prompt)
            matches = [obj for obj in found.confident if obj.category == category and color_fits(color, obj.color)]
            chosen = max(matches, key=lambda obj: obj.score) if matches else None
        timings["total_s"] = time.perf_counter() - started
        if chosen is None:
            category = category_in_phrase(target) or category_in_phrase(prompt)
            others = [f"{obj.color} {obj.category}".strip() for obj in found.confident if obj.category == category]
            color = color_in_phrase(target) or color_in_phrase(prompt)
            # an unsure candidate is named only for a category (and colour) alone: whether it stands
            # where a relation says ("left of the bed") is not checked
            plain = program is None or len(program.split(":", 1)[-1].split(",")) <= 2
            unsure = [obj for obj in found.objects if plain and obj.category == category and color_fits(color, obj.color)
                      and UNSURE_MIN_SCORE <= obj.score < found.min_confidence]
            maybe = max(unsure, key=lambda obj: obj.score, default=None)
            where = None if maybe is None else (
                float(np.linalg.norm(found.gravity.pose_in_input(np.asarray(maybe.box.center), maybe.box.yaw)[0])), maybe.score)
            return GroundingReply([], not_seen_text(prompt, target, others[:3], where), timings, program)
        grounded = self._grounded(chosen, target, found.gravity)
        return GroundingReply([grounded], f"{chosen.color} {chosen.category}".strip(), timings, program)

    def objects(self, cloud: SceneCloud) -> list[GroundedObject]:
        """The frame's confident objects (score >= ``min_confidence``) as boxes in the input frame, best first."""
        found = self.scene_objects(cloud)
        return [self._grounded(obj, f"{obj.color} {obj.category}".strip(), found.gravity) for obj in found.confident]

    def _grounded(self, obj: Any, label: str, gravity: Any) -> GroundedObject:
        """An object of the layer as a grounded box with its pose in the input frame."""
        position, orientation = gravity.pose_in_input(np.asarray(obj.box.center), obj.box.yaw)
        up = tuple(float(v) for v in gravity.rotation[2])
        points = getattr(obj, "points", None)
        return GroundedObject(label, float(obj.score), obj.box, position, orientation, "objects", up,
                              str(getattr(obj, "category", "")), str(getattr(obj, "color", "")),
                              0 if points is None else len(points))

    def _navigation_goal(self, box: Any, found: Any) -> tuple[np.ndarray, float]:
        """The goal for a seen object by the plan annotations' rule over the frame's confident objects:
        past the footprint of the floor-standing thing it rests on, clear of other floor-standing ones."""
        boxes = [obj.box for obj in found.confident]
        if box not in boxes:
            boxes.append(box)
        rests_on = supports(boxes)
        index, seen = boxes.index(box), set()
        while rests_on[index] is not None and index not in seen:  # down the stack to what stands on the floor
            seen.add(index)
            index = rests_on[index]
        root = boxes[index]
        obstacles = [other for other, under in zip(boxes, rests_on) if under is None and other is not root and other != box]
        return navigation_goal_for_box(box, found.gravity.floor_z, self.settings.standoff_m, support=root,
                                       obstacles=obstacles)

    def floor_height(self, cloud: SceneCloud) -> float:
        """Height of the floor in the frame's gravity frame (the object layer's estimate)."""
        return float(self.scene_objects(cloud).gravity.floor_z)

    def plan(self, cloud: SceneCloud, instruction: str) -> PlanReply:
        """Steps for ``instruction``; navigation steps to a seen object get goal poses in the input frame."""
        started = time.perf_counter()
        deadline = self.reply_deadline()
        cut_short = False
        timings: dict[str, float] = {}
        found = self.scene_objects(cloud, timings)
        planned = None
        if self._has_programs():
            from threed_llm_ros.model.scene_objects import plan_by_program  # lazy: transformers (see load_model)

            planned = self._by_program(plan_by_program, cloud, instruction, timings, deadline)
        detected: dict[str, GroundedObject] = {}
        if planned is not None:
            steps = []
            for step in planned.steps:
                index = step.get("object")
                if step["action"] in NAVIGATION_ACTIONS and index is not None:
                    detected[step["target"]] = self._grounded(planned.objects[index], step["target"], found.gravity)
                steps.append({key: value for key, value in step.items() if key not in ("object", "destination_object")})
            text, source = plan_text(steps), "program"
        else:
            result = self._generate(cloud, instruction, timings, deadline=deadline)
            text, cut_short = result.text, result.cut_short
            steps = [dict(step) for step in parse_plan_text(text)]
            source = "model"
        if not steps:
            intent = route(instruction, self.settings.max_prompt_chars)
            steps = [dict(step) for step in rule_based_plan(intent if intent.kind == "plan" else Intent("plan", instruction))]
            source = "rules"
        targets: list[GroundedObject] = []
        grounded: dict[str, GroundedObject | None] = {}
        grounding_started = time.perf_counter()
        for step in steps:
            if step["action"] not in NAVIGATION_ACTIONS:
                continue
            name = step["target"]
            if name in detected:
                grounded[name] = detected[name]
            elif name not in grounded and planned is not None:
                grounded[name] = None  # the program looked among the objects (colour and all) and found none
            elif name not in grounded:
                reply = self.ground(cloud, f"Where is the {name}?", label=name, deadline=deadline)
                grounded[name] = reply.target
            target = grounded[name]
            if target is None:
                step["seen"] = False  # not seen: no goal pose, a robot must not drive there
                continue
            goal, yaw = self._navigation_goal(target.box, found)
            position, orientation = found.gravity.pose_in_input(goal, yaw)
            step["pose"] = {"position": [round(v, 4) for v in position], "orientation": [round(v, 6) for v in orientation]}
            step["target_position"] = [round(v, 4) for v in target.position]
            targets.append(target)
        timings["grounding_s"] = time.perf_counter() - grounding_started
        plan = Plan(instruction, steps, cloud.frame_id, (int(cloud.stamp[0]), int(cloud.stamp[1])), source, text)
        timings["total_s"] = time.perf_counter() - started
        return PlanReply(plan, targets, text, timings, cut_short, planned.program if planned is not None else None)
