"""``threed-llm bench``: per-stage speed of the inference engine on every backend and device here.

For each backend (torch, onnxruntime, tensorrt where present) and device (cpu, cuda
where present) it loads the engine and measures, as medians over ``--repeats``:
preprocessing, the scene encoder (batch 1), prompt prefill, decode tokens/s, and the
end-to-end latency of a caption, a grounding and a plan on the same simulated 640×480
frame with the same prompts; peak memory (process RSS, sampled; GPU when present). Then
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
import os
import platform
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from threed_llm_ros.errors import ConfigError

SCHEMA = "threed_llm_ros.bench/1"
DEFAULT_OUTPUT = "bench_out/bench.json"
DEFAULT_BACKENDS = ("torch", "onnxruntime", "tensorrt")
CAPTION_PROMPT = "Describe the scene."
GROUNDING_PROMPT = "Where is the chair?"
PLAN_PROMPT = "Bring the cup to the table."
FREE_TEXT_PROMPT = "What would you do in this room?"  # answered by the language model over the scene tokens
OBJECT_STAGES = ("gravity_s", "proposals_s", "recognition_s", "objects_s")
SCENE_SEED = 3
FULL_RATES_HZ = (1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0)
QUICK_RATES_HZ = (5.0, 15.0, 30.0)
MAX_DROP_SHARE = 0.05  # a rate counts as "every frame processed" with at most this share dropped
QUEUE_FRAMES_LIMIT = 8  # memory check: RSS may not grow by more than this many frames in a run's second half


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


def median(values: list[float]) -> float:
    """Median of a non-empty list."""
    return float(statistics.median(values))


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(function: Callable[[], Any], device: str = "cpu") -> tuple[float, Any]:
    """(seconds, result) of one call, the device synchronised before and after."""
    _synchronize(device)
    started = time.perf_counter()
    result = function()
    _synchronize(device)
    return time.perf_counter() - started, result


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description() -> dict[str, Any]:
    """CPU, cores, memory, GPU, library versions, thread settings and the date."""
    import psutil

    description: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average": [round(value, 2) for value in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    for module in ("onnxruntime", "transformers", "onnx"):
        try:
            description[module] = __import__(module).__version__
        except ImportError:
            description[module] = None
    return description


class PeakMemory:
    """Peak resident memory of this process while the block runs (sampled every 5 ms), and GPU peak."""

    def __init__(self, device: str = "cpu") -> None:
        import psutil

        self._process = psutil.Process()
        self.device = device
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_rss = max(self.peak_rss, self._process.memory_info().rss)
            self._stop.wait(0.005)

    def __enter__(self) -> "PeakMemory":
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        self.start_rss = self.peak_rss = self._process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_rss = max(self.peak_rss, self._process.memory_info().rss)

    @property
    def peak_gpu_bytes(self) -> int | None:
        return int(torch.cuda.max_memory_allocated()) if self.device.startswith("cuda") else None


# --------------------------------------------------------------------------- scenes


def bench_frame() -> Any:
    """The simulated 640×480 RGB-D frame every backend sees."""
    from threed_llm_ros.data.sim.frames import simulate

    return simulate(SCENE_SEED)


def fresh_cloud(frame: Any) -> Any:
    """A new SceneCloud object of ``frame`` (the engine caches by object, so this forces preprocessing)."""
    from threed_llm_ros.runtime.replies import SceneCloud

    return SceneCloud(frame.points, frame.colors, "camera_color_optical_frame", (0, 0))


# --------------------------------------------------------------------------- one backend


def bench_backend(checkpoint: Path, backend: str, device: str, frame: Any, options: BenchOptions,
                  lm_backend: str = "torch") -> dict[str, Any]:
    """Stage medians, end-to-end latencies and peak memory of one backend (and language model backend) on one device."""
    from threed_llm_ros.runtime.backends import TorchSceneEncoder
    from threed_llm_ros.runtime.engine import InferenceEngine
    from threed_llm_ros.runtime.engine_settings import EngineSettings

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
        for _ in range(options.repeats):
            objects.append(engine.scene_objects(fresh_cloud(frame)).timings)
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
        "prefill_s": median([reply.timings["prefill_s"] for reply in texts]),
        "decode_tokens_per_s": median(decode_rates) if decode_rates else None,
        "decode_tokens": median([reply.timings["generated_tokens"] for reply in texts]),
        "end_to_end_s": {
            "caption": median([reply.timings["total_s"] for reply in captions]),
            "free_text_answer": median([reply.timings["total_s"] for reply in texts]),
            "grounding": median([reply.timings["total_s"] for reply in groundings]),
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


def _depth_message_payload(frame: Any) -> tuple[np.ndarray, np.ndarray]:
    """The frame as a 16UC1 depth image (mm, 0 = missing) and an RGB image, like the camera sends."""
    depth = np.nan_to_num(frame.depth_m, nan=0.0)
    return np.round(depth * 1000.0).astype(np.uint16), frame.rgb


def sustained_rate_summary(rate: dict[str, Any]) -> str:
    """One sentence on the rates of :func:`sustained_rates` that never claims a rate of 0 Hz: where no rate
    tried qualified, it says so and names the lowest one tried, with its drops."""
    tried = [row["rate_hz"] for row in rate["rates"]]
    if not tried:
        return "no rate was measured."
    lowest = f"{min(tried):g} Hz"
    if rate["input_rate_hz"] > 0:
        accepted = (f"frames accepted on schedule up to **{rate['input_rate_hz']:g} Hz** "
                    f"(highest tried {rate['highest_rate_tried_hz']:g} Hz); ")
    else:
        accepted = f"frames fell behind schedule already at the lowest rate tried, {lowest}; "
    if rate["every_frame_rate_hz"] > 0:
        return accepted + f"every frame preprocessed and encoded up to **{rate['every_frame_rate_hz']:g} Hz**."
    first = rate["rates"][0]
    return accepted + (f"at no rate tried was every frame encoded: the consumer (preprocess + scene encoder) dropped "
                       f"{first['dropped']} of {first['received']} frames at {lowest}, taking the newest each time.")


def sustained_rates(engine: Any, frame: Any, rates_hz: tuple[float, ...], seconds: float) -> dict[str, Any]:
    """The highest input rates the latest-frame pipeline sustains, measured ROS-free.

    A producer thread plays the node's depth callback at a fixed rate: 16UC1 depth (mm)
    → metres → ``depth_to_points`` (the node's conversion) → ``FrameSlot.put``. A
    consumer thread plays the inference side: take the newest frame, preprocess it and
    run the scene encoder. Per rate: frames received / consumed / dropped, the achieved
    input rate, callback time, lateness and RSS growth. ``input_rate_hz`` is the highest
    rate whose callbacks kept the schedule (none started a whole period late) with flat
    memory (RSS grew by less than 8 frames' worth in the run's second half; allocator
    noise aside, a queue would grow linearly): frames are accepted without any queue growing. ``every_frame_rate_hz`` is the highest rate at
    which, in addition, at most 5 % of frames were dropped (each frame became scene tokens).
    """
    import psutil

    from threed_llm_ros.geometry.camera import depth_to_points
    from threed_llm_ros.runtime.backends import TorchSceneEncoder
    from threed_llm_ros.runtime.replies import SceneCloud
    from threed_llm_ros.runtime.frame_slot import FrameSlot

    depth_mm, rgb = _depth_message_payload(frame)
    intrinsics = frame.intrinsics
    encoder = engine.scene_backend or TorchSceneEncoder(engine.model.scene_encoder)
    process = psutil.Process()
    results = []
    # the first pass warms up (allocator arenas, caches) and is not reported
    for pass_index, rate in enumerate((rates_hz[0], *rates_hz)):
        slot: FrameSlot[SceneCloud] = FrameSlot()
        stop = threading.Event()
        processed: list[float] = []

        def consume() -> None:
            while not stop.is_set():
                if not slot.has_new_frame():
                    time.sleep(0.0005)
                    continue
                cloud = slot.take()
                started = time.perf_counter()
                scene = engine._prepare(cloud, {})
                encoder.encode(scene.patches, scene.centers)
                processed.append(time.perf_counter() - started)

        consumer = threading.Thread(target=consume, daemon=True)
        rss_before = rss_middle = process.memory_info().rss
        consumer.start()
        count = max(2, int(round(rate * seconds)))
        callbacks, lateness = [], []
        started = time.perf_counter()
        for index in range(count):
            delay = started + index / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            callback_started = time.perf_counter()
            lateness.append(callback_started - (started + index / rate))
            depth_m = depth_mm.astype(np.float32) * np.float32(0.001)
            depth_m[depth_mm == 0] = np.nan
            xyz, colours = depth_to_points(depth_m, intrinsics, min_range=0.1, max_range=8.0, color=rgb)
            slot.put(SceneCloud(xyz, colours, "camera_color_optical_frame", (index, 0)))
            callbacks.append(time.perf_counter() - callback_started)
            if index == count // 2:
                rss_middle = process.memory_info().rss
        last_start = started + (count - 1) / rate + lateness[-1]
        drain_until = time.perf_counter() + 5.0
        while slot.has_new_frame() and time.perf_counter() < drain_until:  # let the consumer take the last frame
            time.sleep(0.001)
        stop.set()
        consumer.join()
        rss_after = process.memory_info().rss
        rss_growth_mb = (rss_after - rss_before) / 2**20
        second_half_growth_mb = (rss_after - rss_middle) / 2**20
        frame_mb = (xyz.nbytes + colours.nbytes) / 2**20
        counts = slot.counts()
        achieved = (count - 1) / (last_start - started)
        # on schedule: no callback started a whole period late (an executor would be queueing messages)
        keeps_schedule = max(lateness) < 1.0 / rate and second_half_growth_mb < QUEUE_FRAMES_LIMIT * frame_mb
        if pass_index == 0:
            continue
        results.append({
            "rate_hz": rate,
            "achieved_input_hz": achieved,
            "received": counts.received,
            "consumed": counts.consumed,
            "dropped": counts.dropped,
            "callback_median_s": median(callbacks),
            "max_lateness_s": max(lateness),
            "consumer_median_s": median(processed) if processed else None,
            "rss_growth_mb": rss_growth_mb,
            "second_half_rss_growth_mb": second_half_growth_mb,
            "frame_mb": frame_mb,
            "keeps_schedule": keeps_schedule,
            "every_frame": keeps_schedule and counts.dropped <= MAX_DROP_SHARE * counts.received,
        })
        if not keeps_schedule:
            break
    input_rates = [r["rate_hz"] for r in results if r["keeps_schedule"]]
    every_frame = [r["rate_hz"] for r in results if r["every_frame"]]
    return {
        "method": "ROS-free: producer thread = depth callback (16UC1 mm -> m -> depth_to_points -> FrameSlot.put) at a "
                  "fixed rate; consumer thread = newest frame -> preprocess -> scene encoder; "
                  f"{seconds:g} s per rate",
        "frame": f"{depth_mm.shape[1]}x{depth_mm.shape[0]} depth + rgb",
        "input_rate_hz": max(input_rates) if input_rates else 0.0,
        "every_frame_rate_hz": max(every_frame) if every_frame else 0.0,
        "highest_rate_tried_hz": results[-1]["rate_hz"] if results else 0.0,
        "rates": results,
    }


# --------------------------------------------------------------------------- llama.cpp


def llama_cpp_summary(lm_section: dict[str, Any] | None) -> dict[str, Any]:
    """llama.cpp against our default decoder (the exported int8 one), read from the language-model
    table, where both ran in the same run at the same threads and load: per (threads, condition),
    both tokens/s and their ratio."""
    if lm_section is None:
        return {"status": "not measured: the language model section was skipped (--no-lm)"}
    rows = lm_section["rows"]
    if not any(row["backend"] == "llama.cpp" for row in rows):
        return {"status": "llama-cpp-python not installed (make bench-peers)"}
    pairs = []
    for peer in (row for row in rows if row["backend"] == "llama.cpp"):
        ours = next((row for row in rows if row["backend"] == "onnxruntime" and row["precision"] == "int8"
                     and row["threads"] == peer["threads"] and row["condition"] == peer["condition"]), None)
        if ours is not None:
            pairs.append({"threads": peer["threads"], "condition": peer["condition"],
                          "llama_cpp_tokens_per_s": peer["decode_tokens_per_s"],
                          "ours_tokens_per_s": ours["decode_tokens_per_s"], "ours_over_llama_cpp": ours["over_llama_cpp"]})
    return {"status": "measured", "ours": "onnxruntime int8 (the CPU default)", "comparisons": pairs}


# --------------------------------------------------------------------------- report


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value * 1000:.1f} ms"


def markdown_table(report: dict[str, Any]) -> str:
    """The report's main numbers as a Markdown document."""
    runs = report["runs"]
    machine = report["machine"]
    lines = [
        f"# threed-llm bench ({'quick' if report['quick'] else 'full'}), {machine['date']}",
        "",
        f"Machine: {machine['cpu_model']}, {machine['logical_cores']} logical cores, torch {machine['torch']} "
        f"({machine['torch_threads']} threads, OMP_NUM_THREADS={machine['omp_num_threads']}), onnxruntime "
        f"{machine['onnxruntime']}, GPU {machine['gpu'] or 'none'}, load average {machine['load_average']}.",
        f"Checkpoint: {report['checkpoint']['path']} (trained: {report['checkpoint']['trained']}); medians of "
        f"{report['repeats']} repeats; at most {report['max_new_tokens']} new tokens.",
        f"Default language model here (`lm_backend: auto`, as the node, `ask` and `eval`): {report.get('lm_backend_default', '?')}.",
        "",
    ]
    if runs:
        header = "| stage | " + " | ".join(f"{run['backend']} / {run['device']} (LM {run['lm_backend']})" for run in runs) + " |"
        lines += [header, "|" + " --- |" * (len(runs) + 1)]
        rows = [
            ("preprocessing", [_ms(run["preprocess_s"]) for run in runs]),
            ("scene encoder (batch 1)", [_ms(run["encoder_s"]) for run in runs]),
            ("object layer: gravity", [_ms(run["object_layer_s"]["gravity_s"]) for run in runs]),
            ("object layer: proposals", [_ms(run["object_layer_s"]["proposals_s"]) for run in runs]),
            ("object layer: recognition", [_ms(run["object_layer_s"]["recognition_s"]) for run in runs]),
            ("object layer: all", [_ms(run["object_layer_s"]["objects_s"]) for run in runs]),
            ("prompt prefill", [_ms(run["prefill_s"]) for run in runs]),
            ("decode tokens/s", [f"{run['decode_tokens_per_s']:.1f}" if run["decode_tokens_per_s"] else "—"
                                 for run in runs]),
            ("caption, end to end", [_ms(run["end_to_end_s"]["caption"]) for run in runs]),
            ("free-text answer, end to end", [_ms(run["end_to_end_s"]["free_text_answer"]) for run in runs]),
            ("grounding, end to end", [_ms(run["end_to_end_s"]["grounding"]) for run in runs]),
            ("plan, end to end", [_ms(run["end_to_end_s"]["plan"]) for run in runs]),
            ("peak RSS", [f"{run['peak_rss_mb']:.0f} MB" for run in runs]),
            ("peak GPU memory", [f"{run['peak_gpu_mb']:.0f} MB" if run["peak_gpu_mb"] else "—" for run in runs]),
        ]
        lines += [f"| {name} | " + " | ".join(values) + " |" for name, values in rows]
    for skipped in report["skipped"]:
        lines.append(f"\nSkipped {skipped['backend']} / {skipped['device']}: {skipped['reason']}")
    rate = report["sustained_rate"]
    lines += ["", f"Sustained input rate ({rate['frame']}, backend {rate['backend']}): {sustained_rate_summary(rate)} "
                  f"Method: {rate['method']}.",
        "",
        "| rate Hz | achieved Hz | received | consumed | dropped | callback | consumer | RSS growth |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rate["rates"]:
        lines.append(
            f"| {row['rate_hz']:g} | {row['achieved_input_hz']:.1f} | {row['received']} | {row['consumed']} | "
            f"{row['dropped']} | {_ms(row['callback_median_s'])} | {_ms(row['consumer_median_s'])} | "
            f"{row['rss_growth_mb']:.1f} MB |"
        )
    llama = report["llama_cpp"]
    lines += ["", f"llama.cpp: {llama['status']}" + "".join(
        f"; {pair['threads']} thread(s), {pair['condition']}: ours (int8) {pair['ours_tokens_per_s']:.1f} vs "
        f"{pair['llama_cpp_tokens_per_s']:.1f} tokens/s = {pair['ours_over_llama_cpp']:.2f}×"
        for pair in llama.get("comparisons", []) if pair["ours_over_llama_cpp"]), ""]
    if report.get("language_model"):
        from threed_llm_ros.runtime.lm_bench import markdown_rows

        lines += markdown_rows(report["language_model"])
    return "\n".join(lines)


def _tensorrt_missing_reason() -> str:
    from threed_llm_ros.runtime.tensorrt_engine import TensorRTUnavailable, require_tensorrt

    try:
        require_tensorrt()
    except TensorRTUnavailable as error:
        return str(error)
    return "no CUDA device"


def _default_language_backend(checkpoint: Path) -> str:
    """What ``lm_backend: auto`` picks for ``checkpoint`` on the CPU, and why (the rows above name each backend)."""
    from threed_llm_ros.runtime.engine_settings import EngineSettings
    from threed_llm_ros.runtime.lm_backend import choose_language_backend

    choice = choose_language_backend(EngineSettings(checkpoint=str(checkpoint)), checkpoint)
    return f"{choice.backend} ({choice.reason})"


def resolve_bench_checkpoint(value: str | None, output_directory: Path) -> tuple[Path, bool]:
    """(checkpoint directory, trained?): the given one, the trained default, else an untrained one built here."""
    from threed_llm_ros.runtime.engine_settings import build_untrained_checkpoint, resolve_checkpoint

    if value:
        path = resolve_checkpoint(value)
    else:
        try:
            path = resolve_checkpoint("models/threed-llm-mini")
        except ConfigError:
            path = build_untrained_checkpoint(output_directory / "untrained-mini")
    document = json.loads((path / "config.json").read_text())
    return path, bool(document.get("extra", {}).get("trained", True))


def run_bench(
    checkpoint: str | None,
    output: Path,
    backends: tuple[str, ...],
    quick: bool,
    repeats: int | None = None,
    language_model: bool = True,
) -> dict[str, Any]:
    """Measure, write ``output`` (JSON) and ``output`` with ``.md`` (Markdown); returns the report.

    ``language_model``: also the language model section (``runtime/lm_bench.py``: torch vs the exported
    decoders, 1 and 2 threads, quiet and with one core busy; exports them on first use)."""
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
        for backend, lm_backend in [(b, lm) for b in backends
                                    for lm in (("torch", "onnxruntime") if b == "onnxruntime" and device == "cpu" else ("torch",))]:
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
                    from threed_llm_ros.runtime.lm_bench import language_model_bench

                    lm_section = language_model_bench(
                        checkpoint_path, engine.model, engine._prepare(fresh_cloud(frame), {}),
                        precisions=("int8",) if quick else ("int8", "int4"), threads=(1,) if quick else (1, 2),
                        max_new_tokens=options.max_new_tokens, repeats=1 if quick else 2)
            runs.append(run)
            del engine  # the next backend's memory figures start without this one
            gc.collect()
            print(f"bench: {backend} / {device} (LM {lm_backend}) done", file=sys.stderr)
    if not runs or sustained is None:
        raise ConfigError("backends", f"{list(backends)} gave no CPU run here", "include torch or onnxruntime")
    llama = (llama_cpp_summary(lm_section) if measured_lm
             else {"status": "not measured: the torch backend was not benchmarked"})
    report = {
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
        "runs": runs,
        "skipped": skipped,
        "sustained_rate": sustained,
        "llama_cpp": llama,
        "language_model": lm_section,
    }
    output.write_text(json.dumps(report, indent=2) + "\n")
    output.with_suffix(".md").write_text(markdown_table(report))
    return report


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
    arguments = parser.parse_args(argv)
    backends = tuple(name.strip() for name in arguments.backends.split(",") if name.strip())
    unknown = [name for name in backends if name not in DEFAULT_BACKENDS]
    if unknown or (arguments.repeats is not None and arguments.repeats < 1):
        parser.error(f"unknown backends {unknown}" if unknown else "--repeats must be >= 1")
    try:
        report = run_bench(arguments.checkpoint, Path(arguments.output), backends, arguments.quick, arguments.repeats,
                           language_model=not arguments.no_lm)
    except ConfigError as error:
        print(f"threed-llm bench: {error}", file=sys.stderr)
        return 1
    print(markdown_table(report))
    print(f"wrote {arguments.output} and {Path(arguments.output).with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
