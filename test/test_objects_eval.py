"""``threed-llm eval-objects``'s score reliability (the end-to-end figures: test_engine.py)."""

from __future__ import annotations

import pytest

from threed_llm_ros.eval.objects_eval import score_reliability


def test_score_reliability_bins_scores_and_weighs_the_gap_by_objects() -> None:
    report = score_reliability([(0.95, True), (0.91, False), (0.55, True), (1.0, True)])
    rows = {row["score"]: row for row in report["score_reliability"]}
    assert set(rows) == {"0.5-0.6", "0.9-1.0"}  # a score of 1.0 is in the last bin; empty bins are left out
    assert rows["0.9-1.0"]["objects"] == 3 and rows["0.9-1.0"]["right"] == pytest.approx(2 / 3, abs=1e-4)
    assert rows["0.5-0.6"] == {"score": "0.5-0.6", "objects": 1, "right": 1.0, "mean_score": 0.55}
    expected_gap = (3 * abs((0.95 + 0.91 + 1.0) / 3 - 2 / 3) + abs(0.55 - 1.0)) / 4
    assert report["expected_calibration_error"] == pytest.approx(expected_gap, abs=1e-4)
    assert score_reliability([]) == {"score_reliability": [], "expected_calibration_error": None}
