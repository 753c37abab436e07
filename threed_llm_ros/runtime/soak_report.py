"""The numbers of a soak run, ROS-free: memory growth after warm-up and reply latency percentiles.

``threed-llm bench --soak MINUTES`` (:mod:`threed_llm_ros.ros.soak`) samples the node's RSS
and times every reply; this module turns those samples into the JSON report, so the
arithmetic is tested without running a node for minutes.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

MIB = 2**20
WARM_UP_FRACTION = 0.25  # the first quarter of a run (at most WARM_UP_MAX_S) is warm-up
WARM_UP_MAX_S = 120.0
RSS_GROWTH_LIMIT_MB = 50.0  # issue 17's bar: growth after warm-up below this


def warm_up_s(duration_s: float) -> float:
    """How long the warm-up of a run of ``duration_s`` lasts (memory settles: allocator arenas, caches)."""
    return min(WARM_UP_MAX_S, WARM_UP_FRACTION * duration_s)


def rss_growth_mb(samples: Sequence[tuple[float, float]], warm_up: float) -> float | None:
    """Growth of RSS (MB) after warm-up: the median of the last three samples minus the median
    of the first three after ``warm_up`` seconds (medians: one sample taken mid-reply does not
    decide it). None with fewer than two samples after warm-up."""
    after = [mb for t, mb in samples if t >= warm_up]
    if len(after) < 2:
        return None
    return float(np.median(after[-3:]) - np.median(after[:3]))


def latency_summary(latencies_s: Sequence[float]) -> dict[str, Any]:
    """Count, p50, p95, p99 and max of reply latencies (seconds); null values when there is none."""
    if not latencies_s:
        return {"count": 0, "p50": None, "p95": None, "p99": None, "max": None}
    values = np.asarray(latencies_s, dtype=np.float64)
    return {"count": int(values.size), "p50": round(float(np.percentile(values, 50)), 3),
            "p95": round(float(np.percentile(values, 95)), 3), "p99": round(float(np.percentile(values, 99)), 3),
            "max": round(float(values.max()), 3)}


def soak_report(*, duration_s: float, rss_samples: Sequence[tuple[float, float]], latencies_s: Sequence[float],
                frames: dict[str, int], errors: dict[str, int], settings: dict[str, Any]) -> dict[str, Any]:
    """The soak JSON: settings, RSS over time and its growth after warm-up, frames, latency, errors, verdict."""
    warm_up = warm_up_s(duration_s)
    growth = rss_growth_mb(rss_samples, warm_up)
    return {
        "settings": settings,
        "duration_s": round(duration_s, 1),
        "warm_up_s": round(warm_up, 1),
        "rss_mb": [[round(t, 1), round(mb, 1)] for t, mb in rss_samples],
        "rss_growth_after_warm_up_mb": None if growth is None else round(growth, 1),
        "frames": frames,
        "reply_latency_s": latency_summary(latencies_s),
        "errors": errors,
        "flat_memory": growth is not None and growth < RSS_GROWTH_LIMIT_MB,
        "no_errors": not any(errors.values()),
    }
