"""The language model's speed and faithfulness per backend, quiet and under a competing load.

Part of ``threed-llm bench`` (the ``language_model`` section of its JSON). On the same
simulated scene and prompts (scene tokens spliced in) it measures, for torch (fp32 eager) and
for the exported ONNX Runtime decoders (int8, mixed, int4), at 1 and 2 threads: prompt prefill time
and decode tokens/s (medians), first quiet, then while a busy process spins on one core (a
robot's computer always runs drivers and a navigation stack beside us). The exported
decoders' teacher-forced greedy-token agreement with torch (per LoRA adapter) comes from the quiet run.
Each exported precision can be measured in both adapter layouts (``merged``: one graph per adapter;
``switchable``: one graph, adapters chosen by an input), each with its files' size and, in a fresh
process, the time and memory to open it and run one step per adapter. Where
``llama_cpp`` is importable (``make bench-peers``), llama.cpp on the same GGUF and the same
prompts without scene tokens (it cannot take ours) is measured alike (its prompt cache reset per
prompt, each token timed) and every decode rate gets its ratio to llama.cpp at the same threads and
load. Never assertions, only figures.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import torch

from threed_llm_ros.runtime.choices import MIXED
from threed_llm_ros.runtime.lm_export import SWITCHABLE
from threed_llm_ros.runtime.onnx_decoder import DecoderSettings, OnnxDecoder, load_onnx_generator

LM_PROMPTS = ("What would you do in this room?", "Describe the scene.", "Where is the chair?")
BUSY_LOOP = "while True: pass"
# "quiet" is only the bench adding no load: the machine's own load average is in the report.
QUIET = "no added load"
LOADED = "one core busy added"


@contextlib.contextmanager
def competing_load(cores: int = 1) -> Iterator[None]:
    """``cores`` busy Python processes (one core each) while the block runs."""
    workers = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(cores)]
    try:
        time.sleep(0.5)  # let them reach the CPU
        yield
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()


def _median(values: list[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def _measure(generate: Any, scene: Any, prompts: tuple[str, ...], max_new_tokens: int, repeats: int) -> dict[str, Any]:
    """Prefill and decode medians; decode as llama.cpp's below: one-token steps per second after the prefill
    (``decode_s`` starts at the first token's pick: a reply cut at the limit holds one step fewer than tokens,
    one ended by the end of turn as many, the last giving the end of turn)."""
    prefill, rates = [], []
    generate(scene, prompts[0], max_new_tokens=2)  # warm-up
    for _ in range(repeats):
        for prompt in prompts:
            result = generate(scene, prompt, max_new_tokens=max_new_tokens)
            prefill.append(result.timings["prefill_s"])
            steps = result.token_count - (result.token_count >= max_new_tokens)
            if steps > 0:
                rates.append(steps / result.timings["decode_s"])
    return {"prefill_s": _median(prefill), "decode_tokens_per_s": _median(rates),
            "prompt_tokens": int(result.timings["prompt_tokens"])}


def _llama_cpp(model: Any, prompts: tuple[str, ...], max_new_tokens: int, threads: int, repeats: int) -> dict[str, Any] | None:
    try:
        import llama_cpp
    except ImportError:
        return None
    from threed_llm_ros.model.language_model import resolve_language_model_path  # lazy: transformers

    path = resolve_language_model_path(model.config.language_model_path)
    if path.suffix != ".gguf":
        return None
    # n_threads_batch too: its default (every core) would run the prefill on busy-waiting threads
    llm = llama_cpp.Llama(model_path=str(path), n_threads=threads, n_threads_batch=threads, n_ctx=2048, verbose=False)
    end_of_turn = {llm.token_eos(), *model.eos_ids}
    prefill, rates = [], []
    for _ in range(repeats):
        for prompt in prompts:
            tokens = llm.tokenize(model.prompt_text(prompt, 0, blind=True).encode("utf-8"), add_bos=False, special=True)
            llm.reset()  # no prompt prefix kept from the previous call: each prefill is whole, as ours
            stamps: list[float] = []
            started = time.perf_counter()
            for token in llm.generate(tokens, temp=0.0):  # greedy, one token id per step
                stamps.append(time.perf_counter())
                if token in end_of_turn or len(stamps) >= max_new_tokens:
                    break
            prefill.append(stamps[0] - started)
            if len(stamps) > 1:
                rates.append((len(stamps) - 1) / (stamps[-1] - stamps[0]))
    return {"backend": "llama.cpp", "precision": "Q4_1 (GGUF)", "threads": threads,
            "prefill_s": _median(prefill), "decode_tokens_per_s": _median(rates),
            "note": "prompts without scene tokens; decode: one-token steps per second from the first token to "
                    "the last (as ours)", "version": getattr(llama_cpp, "__version__", None)}


def _agreement(generator: Any, model: Any, scene: Any, prompts: tuple[str, ...], max_new_tokens: int) -> dict[str, Any]:
    """Teacher-forced greedy agreement with torch, for the default adapter and (where the checkpoint has
    it) the ``programs`` one, each on the same prompts."""
    figures: dict[str, Any] = {}
    for adapter in ("default", "programs"):
        if adapter not in generator.decoders:
            continue
        matches = positions = 0
        with (model.program_adapter() if adapter == "programs" else contextlib.nullcontext()), \
                (generator.program_adapter() if adapter == "programs" else contextlib.nullcontext()):
            for prompt in prompts:
                reference = model.generate(scene, prompt, max_new_tokens=max_new_tokens)
                ids = model.tokenizer(reference.text, add_special_tokens=False)["input_ids"]
                found, total = generator.token_agreement(scene, prompt, ids)
                matches, positions = matches + found, positions + total
        suffix = "" if adapter == "default" else f"_{adapter}"
        figures[f"greedy_token_agreement{suffix}"] = matches / positions if positions else None
        figures[f"agreement_positions{suffix}"] = positions
    return figures


def _variant_name(precision: str, layout: str) -> str:
    """``int8`` (the per-adapter merged graphs), ``int8 switchable`` (one graph for every adapter)."""
    return precision if layout != SWITCHABLE else f"{precision} {SWITCHABLE}"


def _status_mb(field: str = "VmRSS") -> float:
    """A memory figure of this process from ``/proc/self/status`` (``VmRSS`` resident now, ``VmHWM`` its peak).
    Not ``getrusage``'s ``ru_maxrss``: Linux carries that over ``exec`` from the forking (bench) process."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def open_decoders_footprint(directories: list[str], threads: int) -> dict[str, Any]:
    """Open the decoder graphs in ``directories`` and run one 64-token prefill and one step per adapter
    (a switchable graph: each of its adapters); load seconds, resident memory before and after, and the
    process's peak. Meant for a fresh process (:func:`decoder_footprint`), where the figures are the graphs' own."""
    import numpy as np

    before = _status_mb()
    started = time.perf_counter()
    decoders = [OnnxDecoder(directory, DecoderSettings(threads=threads)) for directory in directories]
    load_s = time.perf_counter() - started
    views = [decoder.for_adapter(name) for decoder in decoders for name in decoder.adapters] or decoders
    embeddings = np.random.default_rng(0).standard_normal((1, 64, decoders[0].hidden_size)).astype(np.float32) * 0.05
    started = time.perf_counter()
    for view in views:
        _, _, cache = view.step(embeddings, view.empty_cache())
        view.step(embeddings[:, :1], cache)
    first_steps_s = time.perf_counter() - started
    return {"sessions": len(decoders), "load_s": load_s, "first_steps_s": first_steps_s, "rss_before_mb": before,
            "rss_after_mb": _status_mb(), "peak_rss_mb": _status_mb("VmHWM")}


def decoder_footprint(directories: list[str], threads: int) -> dict[str, Any]:
    """:func:`open_decoders_footprint` in a fresh Python process (so earlier sessions do not blur its memory)."""
    code = ("import json, sys; from threed_llm_ros.runtime.lm_bench import open_decoders_footprint; "
            "print(json.dumps(open_decoders_footprint(sys.argv[2:], int(sys.argv[1]))))")
    completed = subprocess.run([sys.executable, "-c", code, str(threads), *directories], capture_output=True,
                               text=True, check=False)
    if completed.returncode != 0:
        return {"error": (completed.stderr.strip().splitlines() or ["failed"])[-1][:300]}
    figures = json.loads(completed.stdout.strip().splitlines()[-1])
    figures["added_rss_mb"] = figures["peak_rss_mb"] - figures["rss_before_mb"]
    return {key: round(value, 3) if isinstance(value, float) else value for key, value in figures.items()}


def language_model_bench(
    checkpoint: Path,
    model: Any,
    scene: Any,
    *,
    precisions: tuple[str, ...] = ("int8", MIXED, "int4"),
    layouts: tuple[str, ...] = ("merged",),
    threads: tuple[int, ...] = (1, 2),
    max_new_tokens: int = 32,
    repeats: int = 2,
    loaded: bool = True,
    export_directory: str | None = None,
) -> dict[str, Any]:
    """Prefill and decode figures of torch, the exported decoders (each precision in each adapter
    ``layouts``) and llama.cpp (where importable), quiet and (``loaded``) with one core kept busy;
    agreement with torch per adapter; export time, files' size, load time and memory.

    Length: one loop over backends, variants, threads and load conditions, whose rows are built in one place.
    """
    exports, generators = {}, {}
    variants = [(precision, layout) for layout in layouts for precision in precisions
                if not (precision == MIXED and layout == SWITCHABLE)]  # mixed: a graph per adapter only
    for precision, layout in variants:
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        for count in threads:
            generators[(precision, layout, count)] = load_onnx_generator(
                checkpoint, model, precision=precision, settings=DecoderSettings(threads=count),
                directory=export_directory, layout=layout)
        directories = sorted({str(decoder.export.directory)
                              for decoder in generators[(precision, layout, threads[0])].decoders.values()})
        first = generators[(precision, layout, threads[0])].decoders["default"].export
        exports[_variant_name(precision, layout)] = {
            "directory": ", ".join(directories), "graphs": len(directories), "layout": layout,
            "size_mb": round(sum(file.stat().st_size for directory in directories for file in Path(directory).iterdir()
                                 if file.is_file()) / 1e6, 1),
            "export_s": first.metadata.get("export_seconds"),
            "cached": str(first.metadata.get("exported_at", "")) < started,
            **decoder_footprint(directories, threads[0]),
        }
    agreement = {variant: _agreement(generators[(*variant, threads[0])], model, scene, LM_PROMPTS, max_new_tokens)
                 for variant in variants}
    load_before = os.getloadavg()
    previous_threads = torch.get_num_threads()
    rows: list[dict[str, Any]] = []
    conditions = (QUIET, LOADED) if loaded else (QUIET,)
    try:
        for condition in conditions:
            with competing_load(1) if condition != QUIET else contextlib.nullcontext():
                for count in threads:
                    torch.set_num_threads(count)
                    rows.append({"backend": "torch", "precision": "fp32", "threads": count, "condition": condition,
                                 **_measure(model.generate, scene, LM_PROMPTS, max_new_tokens, repeats)})
                    for precision, layout in variants:
                        rows.append({"backend": "onnxruntime", "precision": precision, "layout": layout,
                                     "threads": count, "condition": condition, **agreement[(precision, layout)],
                                     **_measure(generators[(precision, layout, count)].generate, scene, LM_PROMPTS,
                                                max_new_tokens, repeats)})
                    llama = _llama_cpp(model, LM_PROMPTS, max_new_tokens, count, repeats)
                    if llama is not None:
                        rows.append({**llama, "condition": condition})
    finally:
        torch.set_num_threads(previous_threads)
    for row in rows:
        peer = next((other for other in rows if other["backend"] == "llama.cpp" and other["threads"] == row["threads"]
                     and other["condition"] == row["condition"]), None)
        rate = row.get("decode_tokens_per_s")
        row["over_llama_cpp"] = rate / peer["decode_tokens_per_s"] if peer and rate and peer["decode_tokens_per_s"] else None
        quiet = next((other for other in rows if other["condition"] == QUIET and other["backend"] == row["backend"]
                      and other["precision"] == row["precision"] and other.get("layout") == row.get("layout")
                      and other["threads"] == row["threads"]), None)
        row["loaded_over_quiet"] = (rate / quiet["decode_tokens_per_s"]
                                    if row["condition"] != QUIET and quiet and rate and quiet["decode_tokens_per_s"] else None)
    return {
        "prompts": list(LM_PROMPTS),
        "max_new_tokens": max_new_tokens,
        "repeats": repeats,
        "competing_load": "a busy Python process on one core" if loaded else None,
        "llama_cpp": "measured" if any(row["backend"] == "llama.cpp" for row in rows)
        else "llama-cpp-python not installed (make bench-peers)",
        "agreement": "teacher-forced greedy-token agreement with the torch fp32 model, measured once (no added load)",
        "load_average_before": [round(value, 2) for value in load_before],
        "load_average_after": [round(value, 2) for value in os.getloadavg()],
        "exports": exports,
        "rows": rows,
    }


def markdown_rows(section: dict[str, Any]) -> list[str]:
    """The section as Markdown lines (a table per the bench report)."""
    lines = [
        "", f"Language model ({section['max_new_tokens']} new tokens, {len(section['prompts'])} prompts with scene "
        f"tokens × {section['repeats']}; medians; competing load: {section['competing_load']}; llama.cpp: "
        f"{section['llama_cpp']}; machine load average before / after: {section['load_average_before']} / "
        f"{section.get('load_average_after')}):", "",
        "| backend | weights | threads | condition | prefill | decode tokens/s | vs llama.cpp | loaded / unloaded "
        "| agreement (default / programs) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def fmt(value: Any, pattern: str) -> str:
        return "—" if value is None else pattern.format(value)

    for row in section["rows"]:
        weights = row["precision"] + (f", {row['layout']}" if row.get("layout") else "")
        agreement = fmt(row.get("greedy_token_agreement"), "{:.1%}")
        if row.get("greedy_token_agreement_programs") is not None:
            agreement += f" / {row['greedy_token_agreement_programs']:.1%}"
        lines.append(
            f"| {row['backend']} | {weights} | {row['threads']} | {row['condition']} | "
            f"{fmt(row['prefill_s'] and row['prefill_s'] * 1000, '{:.0f} ms')} | {fmt(row['decode_tokens_per_s'], '{:.1f}')} | "
            f"{fmt(row['over_llama_cpp'], '{:.2f}×')} | {fmt(row['loaded_over_quiet'], '{:.2f}')} | {agreement} |"
        )
    lines += ["", "| export | graphs | files | export time | open (fresh process) | first steps "
              "| memory added (peak) |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, export in section["exports"].items():
        lines.append(f"| {name} | {export['graphs']} | {export['size_mb']} MB | {fmt(export['export_s'], '{} s')} | "
                     f"{fmt(export.get('load_s'), '{:.2f} s')} | {fmt(export.get('first_steps_s'), '{:.2f} s')} | "
                     f"{fmt(export.get('added_rss_mb'), '{:.0f} MB')} "
                     f"({fmt(export.get('peak_rss_mb'), '{:.0f} MB')}) |")
    return lines
