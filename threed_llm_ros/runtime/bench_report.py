"""The ``threed-llm bench`` report as Markdown, and llama.cpp against our default decoder."""

from __future__ import annotations

from typing import Any

from threed_llm_ros.runtime.bench_rates import sustained_rate_summary
from threed_llm_ros.runtime.engine_settings import EngineSettings
from threed_llm_ros.runtime.lm_bench import markdown_rows

# --------------------------------------------------------------------------- llama.cpp


def llama_cpp_summary(lm_section: dict[str, Any] | None) -> dict[str, Any]:
    """llama.cpp against our default decoder (``EngineSettings``' precision and layout), read from the language-model
    table, where both ran in the same run at the same threads and load: per (threads, condition),
    both tokens/s and their ratio."""
    if lm_section is None:
        return {"status": "not measured: the language model section was skipped (--no-lm)"}
    rows = lm_section["rows"]
    if not any(row["backend"] == "llama.cpp" for row in rows):
        return {"status": "llama-cpp-python not installed (make bench-peers)"}
    pairs = []
    for peer in (row for row in rows if row["backend"] == "llama.cpp"):
        ours = next((row for row in rows if row["backend"] == "onnxruntime"
                     and row["precision"] == EngineSettings.lm_precision
                     and row.get("layout", EngineSettings.lm_adapters) == EngineSettings.lm_adapters
                     and row["threads"] == peer["threads"] and row["condition"] == peer["condition"]), None)
        if ours is not None:
            pairs.append({"threads": peer["threads"], "condition": peer["condition"],
                          "llama_cpp_tokens_per_s": peer["decode_tokens_per_s"],
                          "ours_tokens_per_s": ours["decode_tokens_per_s"], "ours_over_llama_cpp": ours["over_llama_cpp"]})
    return {"status": "measured",
            "ours": f"onnxruntime {EngineSettings.lm_precision} {EngineSettings.lm_adapters} (the CPU default)",
            "comparisons": pairs}


# --------------------------------------------------------------------------- report


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value * 1000:.1f} ms"


def _stage_rows(runs: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """(row name, one value per run) of the per-stage table."""
    return [
        ("preprocessing", [_ms(run["preprocess_s"]) for run in runs]),
        ("scene encoder (batch 1)", [_ms(run["encoder_s"]) for run in runs]),
        ("object layer: gravity", [_ms(run["object_layer_s"]["gravity_s"]) for run in runs]),
        ("object layer: proposals", [_ms(run["object_layer_s"]["proposals_s"]) for run in runs]),
        ("object layer: recognition", [_ms(run["object_layer_s"]["recognition_s"]) for run in runs]),
        ("object layer: all", [_ms(run["object_layer_s"]["objects_s"]) for run in runs]),
        ("object layer with the image (RGB-D): recognition",
         [_ms(run["object_layer_rgbd_s"]["recognition_s"]) for run in runs]),
        ("object layer with the image (RGB-D): all", [_ms(run["object_layer_rgbd_s"]["objects_s"]) for run in runs]),
        ("prompt prefill", [_ms(run["prefill_s"]) for run in runs]),
        ("decode tokens/s", [f"{run['decode_tokens_per_s']:.1f}" if run["decode_tokens_per_s"] else "—"
                             for run in runs]),
        ("caption, end to end", [_ms(run["end_to_end_s"]["caption"]) for run in runs]),
        ("free-text answer, end to end", [_ms(run["end_to_end_s"]["free_text_answer"]) for run in runs]),
        ("grounding, end to end", [_ms(run["end_to_end_s"]["grounding"]) for run in runs]),
        ("grounding, end to end, RGB-D", [_ms(run["end_to_end_s"]["grounding_rgbd"]) for run in runs]),
        ("plan, end to end", [_ms(run["end_to_end_s"]["plan"]) for run in runs]),
        ("peak RSS", [f"{run['peak_rss_mb']:.0f} MB" for run in runs]),
        ("peak GPU memory", [f"{run['peak_gpu_mb']:.0f} MB" if run["peak_gpu_mb"] else "—" for run in runs]),
    ]


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
        rows = _stage_rows(runs)
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
    ours = llama.get("ours", "ours")
    lines += ["", f"llama.cpp: {llama['status']}" + "".join(
        f"; {pair['threads']} thread(s), {pair['condition']}: {ours} {pair['ours_tokens_per_s']:.1f} vs "
        f"{pair['llama_cpp_tokens_per_s']:.1f} tokens/s = {pair['ours_over_llama_cpp']:.2f}×"
        for pair in llama.get("comparisons", []) if pair["ours_over_llama_cpp"]), ""]
    if report.get("language_model"):
        lines += markdown_rows(report["language_model"])
    return "\n".join(lines)
