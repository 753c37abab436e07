"""The latest-frame slot drops stale frames instead of queueing them, and counts the drops."""

from __future__ import annotations

import threading
import time

from threed_llm_ros.runtime.diagnostics import RateMeter, RuntimeDiagnostics
from threed_llm_ros.runtime.frame_slot import FrameSlot


def test_n_puts_then_one_take_drops_n_minus_one() -> None:
    slot: FrameSlot[int] = FrameSlot()
    assert slot.take() is None
    replaced = [slot.put(frame) for frame in range(10)]
    assert replaced == [False] + [True] * 9
    assert slot.take() == 9
    counts = slot.counts()
    assert (counts.received, counts.consumed, counts.dropped) == (10, 1, 9)
    # Taking again returns the same newest frame without counting it twice.
    assert slot.take() == 9 and slot.counts().consumed == 1
    slot.put(10)
    assert slot.counts().dropped == 9, "a frame put after a take replaces nothing unseen"
    assert slot.take(max_age_s=60.0) == 10


def test_stale_frames_are_not_returned_with_max_age() -> None:
    slot: FrameSlot[str] = FrameSlot()
    slot.put("old")
    time.sleep(0.05)
    assert slot.take(max_age_s=0.01) is None
    assert slot.take(max_age_s=10.0) == "old"


def test_concurrent_producer_and_consumer_account_for_every_frame() -> None:
    slot: FrameSlot[int] = FrameSlot()
    seen: set[int] = set()
    done = threading.Event()

    def consume() -> None:
        while not done.is_set():
            frame = slot.take()
            if frame is not None:
                seen.add(frame)

    consumer = threading.Thread(target=consume)
    consumer.start()
    for frame in range(20_000):
        slot.put(frame)
    done.set()
    consumer.join()
    counts = slot.counts()
    assert counts.received == 20_000
    assert counts.consumed == len(seen)
    assert counts.dropped + counts.consumed + int(slot.has_new_frame()) == counts.received
    assert counts.dropped > 0


def test_diagnostics_counts_rates_and_latency() -> None:
    diagnostics = RuntimeDiagnostics()
    meter = RateMeter(window_s=5.0)
    for index in range(11):
        meter.tick(now=100.0 + index * 0.1)
    assert abs(meter.rate(now=101.0) - 10.0) < 1e-6
    for _ in range(3):
        diagnostics.input_received("points")
    diagnostics.bad_input("pointcloud", "data: holds 10 bytes")
    diagnostics.bad_input("pointcloud")
    diagnostics.bad_input("empty_prompt")
    diagnostics.record_timings({"preprocess_s": 0.1, "decode_s": 0.3, "generated_tokens": 5.0, "decode_tokens_per_s": 9.0})
    diagnostics.record_latency("decode", 0.5)
    level, message, values = diagnostics.snapshot({"frames_dropped": 4})
    assert values["received.points"] == "3"
    assert values["bad_messages"] == "3" and values["bad_messages.pointcloud"] == "2"
    assert values["latency.decode.count"] == "2" and values["latency_ms.decode.max"] == "500.0"
    assert "latency.generated_tokens.count" not in values and "latency.decode_tokens_per.count" not in values
    assert values["frames_dropped"] == "4"
    assert "empty_prompt" in message
    assert float(values["input_rate_hz.points"]) > 0
