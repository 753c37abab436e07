"""``threed-llm bench``: per-stage speed of the inference engine on every backend and device here.

For each backend (torch, onnxruntime, tensorrt where present) and device (cpu, cuda
where present) it loads the engine and measures, as medians over ``--repeats``:
preprocessing, the scene encoder (batch 1), prompt prefill, decode tokens/s, and the
end-to-end latency of a caption, a grounding and a plan on the same simulated 640×480
frame with the same prompts, and the object layer and a grounding again with the frame's colour
image and intrinsics (as from an RGB-D camera: each object's crop then goes through ImageNet);
peak memory (process RSS, sampled; GPU when present). Then
the sustained input rate of the node's latest-frame pipeline, measured without ROS
(see :func:`sustained_rates`), and the language model's section (``lm_bench``: torch, the
exported decoders and, when ``llama_cpp`` is importable, llama.cpp on the same GGUF, at 1 and 2
threads, quiet and under a competing load), summarised against llama.cpp. Writes JSON and a
Markdown table next to it.

Numbers depend on the machine's load: the JSON records the machine, the thread counts
and the date. Benchmarks are never assertions; the tests only check the report's shape.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from threed_llm_ros.data.sim.frames import simulate
from threed_llm_ros.errors import ConfigError
from threed_llm_ros.runtime.backends import TorchSceneEncoder
from threed_llm_ros.runtime.bench_measure import PeakMemory, machine_description, median, timed
from threed_llm_ros.runtime.bench_rates import FULL_RATES_HZ, QUICK_RATES_HZ, sustained_rates
from threed_llm_ros.runtime.bench_report import llama_cpp_summary, markdown_table
from threed_llm_ros.runtime.engine import CAPTION_PROMPT, InferenceEngine
from threed_llm_ros.runtime.engine_settings import (
    DEFAULT_CHECKPOINT,
    EngineSettings,
    build_untrained_checkpoint,
    resolve_checkpoint,
)
from threed_llm_ros.runtime.lm_backend import choose_language_backend
from threed_llm_ros.runtime.lm_bench import language_model_bench
from threed_llm_ros.runtime.choices import DEFAULT_LM_PRECISION, LM_LAYOUTS, MIXED
from threed_llm_ros.runtime.lm_export import LM_PRECISIONS
from threed_llm_ros.runtime.replies import SceneCloud
from threed_llm_ros.runtime.tensorrt_engine import TensorRTUnavailable, require_tensorrt

SCHEMA = "threed_llm_ros.bench/1"
DEFAULT_OUTPUT = "bench_out/bench.json"
DEFAULT_BACKENDS = ("torch", "onnxruntime", "tensorrt")
GROUNDING_PROMPT = "Where is the chair?"
PLAN_PROMPT = "Bring the cup to the table."
FREE_TEXT_PROMPT = "What would you do in this room?"  # answered by the language model over the scene tokens
OBJECT_STAGES = ("gravity_s", "proposals_s", "recognition_s", "objects_s")
SCENE_SEED = 3


@dataclass(frozen=True)
class BenchOptions:
    """How much to measure."""

    repeats: int
    max_new_tokens: int
    rates_hz: tuple[float, ...]
    seconds_per_rate: float
    encoder_repeats: int

    @classmethod
    def for_mode(cls, quick: bool, repeats: int | None) -> "BenchOptions":
        if quick:
            return cls(repeats or 1, 4, QUICK_RATES_HZ, 1.0, 5)
        return cls(repeats or 5, 32, FULL_RATES_HZ, 3.0, 21)


# --------------------------------------------------------------------------- scenes


def bench_frame() -> Any:
    """The simulated 640×480 RGB-D frame every backend sees."""
    return simulate(SCENE_SEED)


def fresh_cloud(frame: Any, with_image: bool = False) -> Any:
    """A new SceneCloud object of ``frame`` (the engine caches by object, so this forces preprocessing);
    ``with_image``: with its colour image and intrinsics, as the node gets them from an RGB-D camera."""
    if with_image:
        return SceneCloud(frame.points, frame.colors, "camera_color_optical_frame", (0, 0), image=frame.rgb,
                          intrinsics=frame.intrinsics)
    return SceneCloud(frame.points, frame.colors, "camera_color_optical_frame", (0, 0))


# --------------------------------------------------------------------------- one backend


def bench_backend(checkpoint: Path, backend: str, device: str, frame: Any, options: BenchOptions,
                  lm_backend: str = "torch") -> dict[str, Any]:
    """Stage medians, end-to-end latencies and peak memory of one backend (and language model backend) on one device.

    Length: every stage of one backend is measured in one place, so the report row reads as one record.
    """
    engine = InferenceEngine(
        EngineSettings(checkpoint=str(checkpoint), backend=backend, device=device, max_new_tokens=options.max_new_tokens,
                       lm_backend=lm_backend)
    )
    with PeakMemory(device) as memory:
        load_s = engine.load()
        warm_up_s = engine.warm_up()
        preprocess = []
        for _ in range(options.repeats):
            timings: dict[str, float] = {}
            engine._prepare(fresh_cloud(frame), timings)
            preprocess.append(timings["preprocess_s"])
        scene = engine._prepare(fresh_cloud(frame), {})
        encoder = engine.scene_backend or TorchSceneEncoder(engine.model.scene_encoder)
        encoder.encode(scene.patches, scene.centers)
        encoder_s = [timed(lambda: encoder.encode(scene.patches, scene.centers), device)[0]
                     for _ in range(options.encoder_repeats)]
        captions, groundings, plans, texts, objects = [], [], [], [], []
        objects_rgbd, groundings_rgbd = [], []
        engine.scene_objects(fresh_cloud(frame, with_image=True))  # loads the ImageNet network: not timed
        for _ in range(options.repeats):
            objects.append(engine.scene_objects(fresh_cloud(frame)).timings)
            objects_rgbd.append(engine.scene_objects(fresh_cloud(frame, with_image=True)).timings)
            groundings_rgbd.append(engine.ground(fresh_cloud(frame, with_image=True), GROUNDING_PROMPT))
            texts.append(engine.answer(fresh_cloud(frame), FREE_TEXT_PROMPT, programs=False))
            captions.append(engine.describe(fresh_cloud(frame), prompt=CAPTION_PROMPT))
            groundings.append(engine.ground(fresh_cloud(frame), GROUNDING_PROMPT))
            plans.append(engine.plan(fresh_cloud(frame), PLAN_PROMPT))
    decode_rates = [
        reply.timings["generated_tokens"] / reply.timings["decode_s"]
        for reply in texts if reply.timings.get("decode_s", 0) > 0 and reply.timings.get("generated_tokens", 0) > 0
    ]
    return {
        "backend": backend,
        "device": device,
        "lm_backend": lm_backend,
        "language_model_dtype": str(engine.language_model_dtype()).removeprefix("torch."),
        "scene_encoder": getattr(encoder, "name", "torch"),
        "providers": getattr(encoder, "providers", None),
        "load_s": load_s,
        "warm_up_s": warm_up_s,
        "preprocess_s": median(preprocess),
        "encoder_s": median(encoder_s),
        "encoder_batch": 1,
        "object_layer_s": {stage: median([timings[stage] for timings in objects]) for stage in OBJECT_STAGES},
        "object_layer_rgbd_s": {stage: median([timings[stage] for timings in objects_rgbd]) for stage in OBJECT_STAGES},
        "prefill_s": median([reply.timings["prefill_s"] for reply in texts]),
        "decode_tokens_per_s": median(decode_rates) if decode_rates else None,
        "decode_tokens": median([reply.timings["generated_tokens"] for reply in texts]),
        "end_to_end_s": {
            "caption": median([reply.timings["total_s"] for reply in captions]),
            "free_text_answer": median([reply.timings["total_s"] for reply in texts]),
            "grounding": median([reply.timings["total_s"] for reply in groundings]),
            "grounding_rgbd": median([reply.timings["total_s"] for reply in groundings_rgbd]),
            "plan": median([reply.timings["total_s"] for reply in plans]),
        },
        "plan_generations": median([reply.timings.get("generated_tokens", 0.0) for reply in plans]),
        "prompt_tokens": len(engine.model.tokenizer(
            engine.model.prompt_text(CAPTION_PROMPT, engine.model.config.scene_encoder.num_scene_tokens, blind=False),
            add_special_tokens=False)["input_ids"]),
        "peak_rss_mb": memory.peak_rss / 2**20,
        "rss_increase_mb": (memory.peak_rss - memory.start_rss) / 2**20,
        "peak_gpu_mb": None if memory.peak_gpu_bytes is None else memory.peak_gpu_bytes / 2**20,
        "_engine": engine,
    }


# --------------------------------------------------------------------------- sustained rate




def _tensorrt_missing_reason() -> str:
    try:
        require_tensorrt()
    except TensorRTUnavailable as error:
        return str(error)
    return "no CUDA device"


def _default_language_backend(checkpoint: Path) -> str:
    """What ``lm_backend: auto`` picks for ``checkpoint`` on the CPU, and why (the rows above name each backend)."""
    choice = choose_language_backend(EngineSettings(checkpoint=str(checkpoint)), checkpoint)
    return f"{choice.backend} ({choice.reason})"


def resolve_bench_checkpoint(value: str | None, output_directory: Path) -> tuple[Path, bool]:
    """(checkpoint directory, trained?): the given one, the trained default, else an untrained one built here."""
    if value:
        path = resolve_checkpoint(value)
    else:
        try:
            path = resolve_checkpoint(DEFAULT_CHECKPOINT)
        except ConfigError:
            path = build_untrained_checkpoint(output_directory / "untrained-mini")
    document = json.loads((path / "config.json").read_text())
    return path, bool(document.get("extra", {}).get("trained", True))


def _backend_pairs(backends: tuple[str, ...], device: str) -> list[tuple[str, str]]:
    """(scene backend, language model backend) pairs to measure on ``device``: on the CPU, onnxruntime runs
    with the torch and with the exported language model."""
    return [(backend, lm) for backend in backends
            for lm in (("torch", "onnxruntime") if backend == "onnxruntime" and device == "cpu" else ("torch",))]


def run_bench(
    checkpoint: str | None,
    output: Path,
    backends: tuple[str, ...],
    quick: bool,
    repeats: int | None = None,
    language_model: bool = True,
    lm_options: dict[str, tuple] | None = None,
) -> dict[str, Any]:
    """Measure, write ``output`` (JSON) and ``output`` with ``.md`` (Markdown); returns the report.

    ``language_model``: also the language model section (``runtime/lm_bench.py``: torch vs the exported
    decoders, 1 and 2 threads, quiet and with one core busy; exports them on first use). ``lm_options``:
    ``precisions`` / ``layouts`` / ``threads`` of that section instead of the mode's defaults."""
    options = BenchOptions.for_mode(quick, repeats)
    output.parent.mkdir(parents=True, exist_ok=True)
    checkpoint_path, trained = resolve_bench_checkpoint(checkpoint, output.parent)
    frame = bench_frame()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    runs: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    rate_backend = "onnxruntime" if "onnxruntime" in backends else backends[0]
    sustained: dict[str, Any] | None = None
    measured_lm = False
    lm_section: dict[str, Any] | None = None
    for device in devices:
        for backend, lm_backend in _backend_pairs(backends, device):
            if backend == "tensorrt" and device == "cpu":
                if not torch.cuda.is_available():
                    skipped.append({"backend": backend, "device": "cuda", "reason": _tensorrt_missing_reason()})
                continue
            try:
                run = bench_backend(checkpoint_path, backend, device, frame, options, lm_backend)
            except ConfigError as error:
                skipped.append({"backend": backend, "device": device, "reason": str(error)})
                continue
            engine = run.pop("_engine")
            if sustained is None and backend == rate_backend and device == "cpu":
                sustained = sustained_rates(engine, frame, options.rates_hz, options.seconds_per_rate)
                sustained["backend"] = f"{backend} / {device}"
            if not measured_lm and backend == "torch" and device == "cpu":
                measured_lm = True
                if language_model:
                    lm_section = _language_model_section(checkpoint_path, engine, frame, quick, options, lm_options)
            runs.append(run)
            del engine  # the next backend's memory figures start without this one
            gc.collect()
            print(f"bench: {backend} / {device} (LM {lm_backend}) done", file=sys.stderr)
    if not runs or sustained is None:
        raise ConfigError("backends", f"{list(backends)} gave no CPU run here", "include torch or onnxruntime")
    llama = (llama_cpp_summary(lm_section) if measured_lm
             else {"status": "not measured: the torch backend was not benchmarked"})
    report = _report(quick, options, checkpoint_path, trained, frame)
    report.update({"runs": runs, "skipped": skipped, "sustained_rate": sustained, "llama_cpp": llama,
                   "language_model": lm_section})
    output.write_text(json.dumps(report, indent=2) + "\n")
    output.with_suffix(".md").write_text(markdown_table(report))
    return report


def _language_model_section(checkpoint_path: Path, engine: Any, frame: Any, quick: bool, options: BenchOptions,
                            lm_options: dict[str, tuple] | None) -> dict[str, Any]:
    """The language model section on the torch engine's model and the bench frame: the mode's
    precisions, adapter layouts and thread counts unless ``lm_options`` names others."""
    lm_defaults = {"precisions": (DEFAULT_LM_PRECISION,) if quick else ("int8", MIXED, "int4"),
                   "layouts": ("merged",) if quick else LM_LAYOUTS,
                   "threads": (1,) if quick else (1, 2)}
    return language_model_bench(checkpoint_path, engine.model, engine._prepare(fresh_cloud(frame), {}),
                                **{**lm_defaults, **(lm_options or {})},
                                max_new_tokens=options.max_new_tokens, repeats=1 if quick else 2)


def _report(quick: bool, options: BenchOptions, checkpoint_path: Path, trained: bool, frame: Any) -> dict[str, Any]:
    """The report's header: what was measured, where, with which checkpoint, scene and prompts."""
    return {
        "schema": SCHEMA,
        "quick": quick,
        "repeats": options.repeats,
        "encoder_repeats": options.encoder_repeats,
        "max_new_tokens": options.max_new_tokens,
        "machine": machine_description(),
        "checkpoint": {"path": str(checkpoint_path), "trained": trained},
        "lm_backend_default": _default_language_backend(checkpoint_path),
        "scene": {"source": f"scene_sim seed {SCENE_SEED}", "image": f"{frame.intrinsics.width}x{frame.intrinsics.height}",
                  "points": int(len(frame.points))},
        "prompts": {"caption": CAPTION_PROMPT, "grounding": GROUNDING_PROMPT, "plan": PLAN_PROMPT,
                    "free_text_answer": FREE_TEXT_PROMPT},
    }


def _lm_options(parser: argparse.ArgumentParser, arguments: argparse.Namespace) -> dict[str, tuple]:
    """The language-model section's ``--lm-*`` choices (only those given); a bad value is a usage error."""
    options: dict[str, tuple] = {}
    for key, choices, convert in (("precisions", (*LM_PRECISIONS, MIXED), str), ("layouts", LM_LAYOUTS, str),
                                  ("threads", None, int)):
        given = getattr(arguments, f"lm_{key}")
        if given is None:
            continue
        try:
            values = tuple(convert(value.strip()) for value in given.split(",") if value.strip())
        except ValueError:
            parser.error(f"--lm-{key}: expected comma-separated integers, got {given!r}")
        unknown = [value for value in values if value not in choices] if choices else [v for v in values if v < 1]
        if not values or unknown:
            parser.error(f"--lm-{key}: got {given!r}; use "
                         + (f"some of {list(choices)}" if choices else "threads >= 1"))
        options[key] = values
    return options


def main(argv: list[str] | None = None) -> int:
    """``threed-llm bench [--quick] [--output FILE] [--checkpoint DIR] [--backends a,b] [--repeats N]``."""
    parser = argparse.ArgumentParser(prog="threed-llm bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="one repeat, 4 new tokens, three input rates: 1.5 to 3.5 minutes on a 2-core CPU "
                             "(86 s on 2026-12-06, a decoder export included; 200 s on a busier machine)")
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help=f"JSON report (default {DEFAULT_OUTPUT}); "
                        "the Markdown table goes next to it (.md)")
    parser.add_argument("--checkpoint", default=None, help="checkpoint directory (default: models/threed-llm-mini, "
                        "else an untrained mini checkpoint built next to the output)")
    parser.add_argument("--backends", default=",".join(DEFAULT_BACKENDS), help="comma-separated backends")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per measurement (default 5, quick 1)")
    parser.add_argument("--no-lm", action="store_true", help="skip the language model section (torch vs exported "
                        "decoders vs llama.cpp, quiet and loaded)")
    parser.add_argument("--lm-precisions", default=None, help="exported decoder weights to measure, e.g. "
                        "int8,int4,mixed (default: the lm_precision default quick, int8,mixed,int4 full)")
    parser.add_argument("--lm-layouts", default=None, help="adapter layouts to measure: merged (one graph per LoRA "
                        "adapter), switchable (one graph for all); default: merged quick, both full")
    parser.add_argument("--lm-threads", default=None,
                        help="decoder threads to measure, e.g. 1,2 (default: 1 quick, 1,2 full)")
    arguments = parser.parse_args(argv)
    backends = tuple(name.strip() for name in arguments.backends.split(",") if name.strip())
    unknown = [name for name in backends if name not in DEFAULT_BACKENDS]
    if unknown or (arguments.repeats is not None and arguments.repeats < 1):
        parser.error(f"unknown backends {unknown}" if unknown else "--repeats must be >= 1")
    lm_options = _lm_options(parser, arguments)
    try:
        report = run_bench(arguments.checkpoint, Path(arguments.output), backends, arguments.quick, arguments.repeats,
                           language_model=not arguments.no_lm, lm_options=lm_options)
    except ConfigError as error:
        print(f"threed-llm bench: {error}", file=sys.stderr)
        return 1
    print(markdown_table(report))
    print(f"wrote {arguments.output} and {Path(arguments.output).with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
