"""`threed-llm bench --quick` writes a complete report (shape only: benchmarks never assert timings)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from threed_llm_ros.runtime import bench, bench_rates, lm_bench
from threed_llm_ros.runtime.engine_settings import EngineSettings, build_untrained_checkpoint

RUN_KEYS = {
    "backend", "device", "language_model_dtype", "scene_encoder", "providers", "load_s", "warm_up_s", "preprocess_s",
    "encoder_s", "encoder_batch", "prefill_s", "decode_tokens_per_s", "decode_tokens", "end_to_end_s",
    "plan_generations", "prompt_tokens", "peak_rss_mb", "rss_increase_mb", "peak_gpu_mb", "object_layer_s", "lm_backend",
    "object_layer_rgbd_s",
}
POSITIVE_RUN_KEYS = ("load_s", "warm_up_s", "preprocess_s", "encoder_s", "prefill_s", "decode_tokens_per_s",
                     "decode_tokens", "prompt_tokens", "peak_rss_mb")
RATE_KEYS = {"rate_hz", "achieved_input_hz", "received", "consumed", "dropped", "callback_median_s", "max_lateness_s",
             "consumer_median_s", "rss_growth_mb", "second_half_rss_growth_mb", "frame_mb", "keeps_schedule",
             "every_frame"}


def _positive_finite(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_quick_bench_writes_every_field(tmp_path: Path) -> None:
    checkpoint = build_untrained_checkpoint(tmp_path / "untrained-mini")
    output = tmp_path / "out" / "bench.json"
    code = bench.main(["--quick", "--output", str(output), "--checkpoint", str(checkpoint),
                       "--backends", "torch,onnxruntime,tensorrt"])
    assert code == 0
    report = json.loads(output.read_text())
    assert output.with_suffix(".md").read_text().startswith("# threed-llm bench (quick)")
    assert report["schema"] == bench.SCHEMA and report["quick"] is True
    assert set(report) >= {"machine", "checkpoint", "scene", "prompts", "runs", "skipped", "sustained_rate",
                           "llama_cpp", "repeats", "max_new_tokens"}
    machine = report["machine"]
    for key in ("cpu_model", "logical_cores", "torch", "onnxruntime", "date", "torch_threads"):
        assert machine[key], key
    assert report["checkpoint"] == {"path": str(checkpoint), "trained": False}
    assert {(run["backend"], run["device"], run["lm_backend"]) for run in report["runs"]} >= {
        ("torch", "cpu", "torch"), ("onnxruntime", "cpu", "torch"), ("onnxruntime", "cpu", "onnxruntime")}
    for run in report["runs"]:
        assert set(run) == RUN_KEYS
        for key in POSITIVE_RUN_KEYS:
            assert _positive_finite(run[key]), (run["backend"], key, run[key])
        assert set(run["end_to_end_s"]) == {"caption", "grounding", "plan", "free_text_answer", "grounding_rgbd"}
        assert all(_positive_finite(value) for value in run["end_to_end_s"].values())
        assert run["end_to_end_s"]["free_text_answer"] >= run["prefill_s"]
        assert set(run["object_layer_s"]) == set(run["object_layer_rgbd_s"]) == {
            "gravity_s", "proposals_s", "recognition_s", "objects_s"}
        assert all(_positive_finite(value) for value in run["object_layer_rgbd_s"].values())
    onnx_run = next(run for run in report["runs"] if run["backend"] == "onnxruntime")
    assert onnx_run["scene_encoder"] == "onnxruntime" and "CPUExecutionProvider" in onnx_run["providers"]
    if not any(run["backend"] == "tensorrt" for run in report["runs"]):
        assert any(entry["backend"] == "tensorrt" and entry["reason"] for entry in report["skipped"])
    rate = report["sustained_rate"]
    assert rate["rates"] and all(set(row) == RATE_KEYS for row in rate["rates"])
    for row in rate["rates"]:
        assert row["received"] == row["consumed"] + row["dropped"], "every frame is either consumed or dropped"
        assert _positive_finite(row["achieved_input_hz"]) and _positive_finite(row["callback_median_s"])
    assert rate["input_rate_hz"] >= rate["every_frame_rate_hz"] >= 0
    assert report["llama_cpp"]["status"] in ("measured", "llama-cpp-python not installed (make bench-peers)",
                                             "not measured: the language model section was skipped (--no-lm)")
    language_model = report["language_model"]
    rows = {(row["backend"], row["precision"], row["condition"]): row for row in language_model["rows"]}
    default = EngineSettings.lm_precision  # what --quick measures: the serving default
    assert set(rows) >= {(backend, weights, condition)
                         for backend, weights in (("torch", "fp32"), ("onnxruntime", default))
                         for condition in (lm_bench.QUIET, lm_bench.LOADED)}
    for row in rows.values():
        assert _positive_finite(row["prefill_s"]) and row["threads"] == 1
        assert row["decode_tokens_per_s"] is None or _positive_finite(row["decode_tokens_per_s"])
    assert 0.0 <= rows[("onnxruntime", default, lm_bench.QUIET)]["greedy_token_agreement"] <= 1.0
    assert language_model["exports"][default]["size_mb"] > 0
    assert "Language model" in output.with_suffix(".md").read_text()


def _rate_row(rate_hz: float, received: int, dropped: int, keeps_schedule: bool) -> dict:
    return {"rate_hz": rate_hz, "received": received, "dropped": dropped, "keeps_schedule": keeps_schedule,
            "every_frame": keeps_schedule and dropped <= bench_rates.MAX_DROP_SHARE * received}


@pytest.mark.parametrize(("rows", "said"), [
    ([_rate_row(5, 5, 0, True), _rate_row(15, 15, 9, True)],
     "up to **15 Hz** (highest tried 15 Hz); every frame preprocessed and encoded up to **5 Hz**."),
    ([_rate_row(5, 5, 3, True), _rate_row(15, 15, 12, True)],
     "at no rate tried was every frame encoded: the consumer (preprocess + scene encoder) "
     "dropped 3 of 5 frames at 5 Hz"),
    ([_rate_row(5, 5, 3, False)], "frames fell behind schedule already at the lowest rate tried, 5 Hz"),
])
def test_the_rate_sentence_never_claims_zero_hz(rows: list, said: str) -> None:
    input_rates = [row["rate_hz"] for row in rows if row["keeps_schedule"]]
    every = [row["rate_hz"] for row in rows if row["every_frame"]]
    summary = bench_rates.sustained_rate_summary({"rates": rows, "input_rate_hz": max(input_rates, default=0.0),
                                            "every_frame_rate_hz": max(every, default=0.0),
                                            "highest_rate_tried_hz": rows[-1]["rate_hz"]})
    assert said in summary and "0 Hz**" not in summary, summary


def test_language_model_options_are_checked(capsys) -> None:
    for option, value in (("--lm-layouts", "shared"), ("--lm-precisions", "int2"), ("--lm-threads", "0"),
                          ("--lm-threads", "one")):
        with pytest.raises(SystemExit):
            bench.main([option, value])
        assert option in capsys.readouterr().err


def test_markdown_names_each_adapter_layout() -> None:
    row = {"backend": "onnxruntime", "precision": "int8", "threads": 1, "condition": lm_bench.QUIET, "prefill_s": 0.3,
           "decode_tokens_per_s": 50.0, "over_llama_cpp": None, "loaded_over_quiet": None,
           "greedy_token_agreement": 0.9, "greedy_token_agreement_programs": 0.95}
    export = {"graphs": 1, "size_mb": 168.5, "export_s": 30.2, "load_s": 0.4, "first_steps_s": 0.4,
              "added_rss_mb": 250.0, "peak_rss_mb": 470.0}
    section = {"max_new_tokens": 32, "prompts": ["a"], "repeats": 2, "competing_load": None, "llama_cpp": "no",
               "load_average_before": [1.0], "rows": [{**row, "layout": "merged"}, {**row, "layout": "switchable"}],
               "exports": {"int8": {**export, "graphs": 2}, "int8 switchable": export}}
    text = "\n".join(lm_bench.markdown_rows(section))
    assert "| int8, merged |" in text and "| int8, switchable |" in text and "90.0% / 95.0%" in text
    assert "| int8 switchable | 1 | 168.5 MB |" in text and "| int8 | 2 |" in text
