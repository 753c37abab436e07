"""Runtime health of the inference node, ROS-free: counters, input rates, per-stage latency.

:class:`RuntimeDiagnostics` is filled from several threads (sensor callbacks, the
inference thread) and read by the diagnostics timer as flat ``key → string`` pairs,
ready for a ``diagnostic_msgs/DiagnosticStatus``. Memory stays bounded: rates and
latency statistics keep only a fixed window of recent samples.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass

import numpy as np

OK, WARN, ERROR = 0, 1, 2
RATE_WINDOW_S = 5.0
LATENCY_WINDOW = 200


class RateMeter:
    """Events per second over the last ``window_s`` seconds."""

    def __init__(self, window_s: float = RATE_WINDOW_S, max_events: int = 10_000) -> None:
        self.window_s = window_s
        self._times: deque[float] = deque(maxlen=max_events)

    def tick(self, now: float | None = None) -> None:
        self._times.append(time.monotonic() if now is None else now)

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        while self._times and now - self._times[0] > self.window_s:
            self._times.popleft()
        if len(self._times) < 2:
            return 0.0
        span = max(now - self._times[0], 1e-9)
        return (len(self._times) - 1) / span if span < self.window_s else len(self._times) / self.window_s


@dataclass(frozen=True)
class LatencySummary:
    """Latency statistics of one stage over the recent window (seconds)."""

    count: int
    last: float
    mean: float
    p50: float
    p95: float
    max: float


class LatencyStats:
    """Recent samples of one stage's duration."""

    def __init__(self, window: int = LATENCY_WINDOW) -> None:
        self._samples: deque[float] = deque(maxlen=window)
        self.count = 0

    def add(self, seconds: float) -> None:
        self._samples.append(float(seconds))
        self.count += 1

    def summary(self) -> LatencySummary | None:
        if not self._samples:
            return None
        values = np.asarray(self._samples)
        return LatencySummary(
            self.count, float(values[-1]), float(values.mean()), float(np.percentile(values, 50)),
            float(np.percentile(values, 95)), float(values.max()),
        )


class RuntimeDiagnostics:
    """Thread-safe counters and statistics of one node."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rates: dict[str, RateMeter] = {}
        self._received: Counter[str] = Counter()
        self._bad: Counter[str] = Counter()
        self._events: Counter[str] = Counter()
        self._latency: dict[str, LatencyStats] = {}
        self._values: dict[str, str] = {}
        self._last_problem = ""

    def input_received(self, topic: str) -> None:
        """A message arrived on ``topic``."""
        with self._lock:
            self._received[topic] += 1
            self._rates.setdefault(topic, RateMeter()).tick()

    def bad_input(self, kind: str, problem: str = "") -> int:
        """Count one bad message of ``kind``; returns the new count of that kind."""
        with self._lock:
            self._bad[kind] += 1
            self._last_problem = f"{kind}: {problem}" if problem else kind
            return self._bad[kind]

    def count(self, event: str, amount: int = 1) -> None:
        """Count an event (prompts answered, captions, ...)."""
        with self._lock:
            self._events[event] += amount

    def record_latency(self, stage: str, seconds: float) -> None:
        with self._lock:
            self._latency.setdefault(stage, LatencyStats()).add(seconds)

    def record_timings(self, timings: dict[str, float]) -> None:
        """Record every ``*_s`` entry (durations; not ``*_per_s`` rates) of an engine timing dict as a stage latency."""
        for key, value in timings.items():
            if key.endswith("_s") and not key.endswith("_per_s"):
                self.record_latency(key.removesuffix("_s"), value)

    def set_value(self, key: str, value: object) -> None:
        """A free-form value shown as is (frame_id, state, ...)."""
        with self._lock:
            self._values[key] = str(value)

    def bad_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._bad)

    def latency(self, stage: str) -> LatencySummary | None:
        with self._lock:
            stats = self._latency.get(stage)
            return None if stats is None else stats.summary()

    def snapshot(self, extra: dict[str, object] | None = None) -> tuple[int, str, dict[str, str]]:
        """(level, message, values) for a DiagnosticStatus.

        Keys: ``input_rate_hz.<topic>``, ``received.<topic>``, ``bad_messages``,
        ``bad_messages.<kind>``, ``<event>``, ``latency_ms.<stage>.{last,mean,p95,max}``,
        ``latency.<stage>.count``, the free-form values and ``extra``.
        """
        now = time.monotonic()
        with self._lock:
            values: dict[str, str] = {}
            for topic, meter in sorted(self._rates.items()):
                values[f"input_rate_hz.{topic}"] = f"{meter.rate(now):.2f}"
                values[f"received.{topic}"] = str(self._received[topic])
            values["bad_messages"] = str(sum(self._bad.values()))
            for kind, number in sorted(self._bad.items()):
                values[f"bad_messages.{kind}"] = str(number)
            for event, number in sorted(self._events.items()):
                values[event] = str(number)
            for stage, stats in sorted(self._latency.items()):
                summary = stats.summary()
                if summary is None:
                    continue
                values[f"latency.{stage}.count"] = str(summary.count)
                for name in ("last", "mean", "p95", "max"):
                    values[f"latency_ms.{stage}.{name}"] = f"{getattr(summary, name) * 1000:.1f}"
            values.update(self._values)
            for key, value in (extra or {}).items():
                values[key] = str(value)
            receiving = any(meter.rate(now) > 0 for meter in self._rates.values())
            last_problem = self._last_problem
        if not receiving:
            return WARN, "no sensor input", values
        if last_problem:
            return OK, f"running; last bad input: {last_problem}", values
        return OK, "running", values
