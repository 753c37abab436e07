"""The soak report's arithmetic: warm-up, RSS growth after it, latency percentiles, verdicts."""

from __future__ import annotations

import pytest

from threed_llm_ros.runtime.soak_report import latency_summary, rss_growth_mb, soak_report, warm_up_s


def test_warm_up_is_a_quarter_of_the_run_at_most_two_minutes() -> None:
    assert warm_up_s(120.0) == 30.0 and warm_up_s(1800.0) == 120.0


def test_growth_is_measured_after_warm_up_with_medians() -> None:
    warming = [(t, 500.0 + 10 * t) for t in range(0, 30, 5)]  # the allocator settling: not counted
    flat = [(30.0, 800.0), (35.0, 801.0), (40.0, 900.0), (45.0, 800.0), (50.0, 802.0), (55.0, 803.0), (60.0, 801.0)]
    assert rss_growth_mb(warming + flat, 30.0) == pytest.approx(802.0 - 801.0)  # the 900 spike is one sample
    leaking = [(30.0 + 5 * i, 800.0 + 20 * i) for i in range(8)]
    assert rss_growth_mb(leaking, 30.0) == pytest.approx((800 + 20 * 6) - (800 + 20 * 1))
    assert rss_growth_mb([(0.0, 1.0), (40.0, 2.0)], 30.0) is None


def test_latency_percentiles() -> None:
    summary = latency_summary([float(v) for v in range(1, 101)])
    assert summary["count"] == 100 and summary["p50"] == pytest.approx(50.5) and summary["max"] == 100.0
    assert summary["p95"] == pytest.approx(95.05) and summary["p99"] == pytest.approx(99.01)
    assert latency_summary([])["p50"] is None


def test_report_verdicts() -> None:
    samples = [(float(t), 800.0) for t in range(0, 200, 5)]
    report = soak_report(duration_s=200.0, rss_samples=samples, latencies_s=[1.0, 2.0],
                         frames={"sent": 10}, errors={"reply_error": 0}, settings={})
    assert report["flat_memory"] and report["no_errors"] and report["rss_growth_after_warm_up_mb"] == 0.0
    report = soak_report(duration_s=200.0, rss_samples=[(t, m + t) for t, m in samples], latencies_s=[],
                         frames={}, errors={"reply_error": 1}, settings={})
    assert not report["flat_memory"] and not report["no_errors"]


def test_bench_soak_goes_to_the_soak_runner(capsys) -> None:
    """`threed-llm bench --soak MINUTES` reaches the soak's own options (checked before anything starts)."""
    pytest.importorskip("rclpy")
    from threed_llm_ros.cli import main

    with pytest.raises(SystemExit) as raised:
        main(["bench", "--soak", "0"])
    assert raised.value.code == 2 and "--soak must be positive" in capsys.readouterr().err
