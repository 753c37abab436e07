"""The language model's speed and faithfulness per backend, quiet and under a competing load.

Part of ``threed-llm bench`` (the ``language_model`` section of its JSON). On the same
simulated scene and prompts (scene tokens spliced in) it measures, for torch (fp32 eager) and
for the exported ONNX Runtime decoders (int8, int4), at 1 and 2 threads: prompt prefill time
and decode tokens/s (medians), first quiet, then while a busy process spins on one core (a
robot's computer always runs drivers and a navigation stack beside us). The exported
decoders' teacher-forced greedy-token agreement with torch comes from the quiet run. Where
``llama_cpp`` is importable (``make bench-peers``), llama.cpp on the same GGUF and the same
prompts without scene tokens (it cannot take ours) is measured alike and every decode rate
gets its ratio to llama.cpp at the same threads and load. Never assertions, only figures.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import torch

from threed_llm_ros.runtime.lm_export import ensure_lm_exported
from threed_llm_ros.runtime.onnx_decoder import DecoderSettings, OnnxDecoder, OnnxGenerator

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
    prefill, rates = [], []
    generate(scene, prompts[0], max_new_tokens=2)  # warm-up
    for _ in range(repeats):
        for prompt in prompts:
            result = generate(scene, prompt, max_new_tokens=max_new_tokens)
            prefill.append(result.timings["prefill_s"])
            if result.token_count > 1:
                rates.append(result.token_count / result.timings["decode_s"])
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
    llm = llama_cpp.Llama(model_path=str(path), n_threads=threads, n_ctx=2048, verbose=False)
    prefill, rates = [], []
    for _ in range(repeats):
        for prompt in prompts:
            text = model.prompt_text(prompt, 0, blind=True)
            started = time.perf_counter()
            llm.create_completion(text, max_tokens=1, temperature=0.0)
            first = time.perf_counter() - started
            started = time.perf_counter()
            output = llm.create_completion(text, max_tokens=max_new_tokens, temperature=0.0)
            full = time.perf_counter() - started
            generated = int(output["usage"]["completion_tokens"])
            prefill.append(first)
            if generated > 1 and full > first:
                rates.append((generated - 1) / (full - first))
    return {"backend": "llama.cpp", "precision": "Q4_1 (GGUF)", "threads": threads,
            "prefill_s": _median(prefill), "decode_tokens_per_s": _median(rates),
            "note": "prompts without scene tokens", "version": getattr(llama_cpp, "__version__", None)}


def _agreement(generator: Any, model: Any, scene: Any, prompts: tuple[str, ...], max_new_tokens: int) -> dict[str, Any]:
    matches = positions = 0
    for prompt in prompts:
        reference = model.generate(scene, prompt, max_new_tokens=max_new_tokens)
        ids = model.tokenizer(reference.text, add_special_tokens=False)["input_ids"]
        found, total = generator.token_agreement(scene, prompt, ids)
        matches, positions = matches + found, positions + total
    return {"greedy_token_agreement": matches / positions if positions else None, "agreement_positions": positions}


def language_model_bench(
    checkpoint: Path,
    model: Any,
    scene: Any,
    *,
    precisions: tuple[str, ...] = ("int8", "int4"),
    threads: tuple[int, ...] = (1, 2),
    max_new_tokens: int = 32,
    repeats: int = 2,
    loaded: bool = True,
    export_directory: str | None = None,
) -> dict[str, Any]:
    """Prefill and decode figures of torch, the exported decoders and llama.cpp (where importable), quiet
    and (``loaded``) with one core kept busy; agreement with torch; export time and size.

    Length: one loop over backends, precisions, threads and load conditions, whose rows are built in one place.
    """
    exports, generators = {}, {}
    for precision in precisions:
        started = time.perf_counter()
        exported = ensure_lm_exported(checkpoint, model, precision=precision, directory=export_directory)
        exports[precision] = {
            "directory": str(exported.directory),
            "size_mb": round(sum(f.stat().st_size for f in exported.directory.iterdir() if f.is_file()) / 1e6, 1),
            "export_s": exported.metadata.get("export_seconds"),
            "cached": time.perf_counter() - started < 5.0,
        }
        for count in threads:
            generators[(precision, count)] = OnnxGenerator(model, {"default": OnnxDecoder(exported, DecoderSettings(threads=count))})
    agreement = {precision: _agreement(generators[(precision, threads[0])], model, scene, LM_PROMPTS, max_new_tokens)
                 for precision in precisions}
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
                    for precision in precisions:
                        rows.append({"backend": "onnxruntime", "precision": precision, "threads": count,
                                     "condition": condition, **agreement[precision],
                                     **_measure(generators[(precision, count)].generate, scene, LM_PROMPTS,
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
                      and other["precision"] == row["precision"] and other["threads"] == row["threads"]), None)
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
        "exports": exports,
        "rows": rows,
    }


def markdown_rows(section: dict[str, Any]) -> list[str]:
    """The section as Markdown lines (a table per the bench report)."""
    lines = [
        "", f"Language model ({section['max_new_tokens']} new tokens, {len(section['prompts'])} prompts with scene "
        f"tokens × {section['repeats']}; medians; competing load: {section['competing_load']}; llama.cpp: "
        f"{section['llama_cpp']}; machine load average before: {section['load_average_before']}):", "",
        "| backend | weights | threads | condition | prefill | decode tokens/s | vs llama.cpp | loaded / unloaded | agreement |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in section["rows"]:
        def fmt(value: Any, pattern: str) -> str:
            return "—" if value is None else pattern.format(value)

        lines.append(
            f"| {row['backend']} | {row['precision']} | {row['threads']} | {row['condition']} | "
            f"{fmt(row['prefill_s'] and row['prefill_s'] * 1000, '{:.0f} ms')} | {fmt(row['decode_tokens_per_s'], '{:.1f}')} | "
            f"{fmt(row['over_llama_cpp'], '{:.2f}×')} | {fmt(row['loaded_over_quiet'], '{:.2f}')} | "
            f"{fmt(row.get('greedy_token_agreement'), '{:.1%}')} |"
        )
    for precision, export in section["exports"].items():
        lines.append(f"\nExport {precision}: {export['size_mb']} MB, {export['export_s']} s ({export['directory']}).")
    return lines
