"""The sustained input rate of the node's latest-frame pipeline, measured without ROS (``threed-llm bench``)."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import psutil

from threed_llm_ros.geometry.camera import depth_to_points
from threed_llm_ros.runtime.backends import TorchSceneEncoder
from threed_llm_ros.runtime.bench_measure import median
from threed_llm_ros.runtime.frame_slot import FrameSlot
from threed_llm_ros.runtime.replies import SceneCloud

FULL_RATES_HZ = (1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0)
QUICK_RATES_HZ = (5.0, 15.0, 30.0)
MAX_DROP_SHARE = 0.05  # a rate counts as "every frame processed" with at most this share dropped
QUEUE_FRAMES_LIMIT = 8  # memory check: RSS may not grow by more than this many frames in a run's second half


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


def _consume_newest(slot: FrameSlot[SceneCloud], stop: threading.Event, engine: Any, encoder: Any,
                    processed: list[float]) -> None:
    """The inference side: take the newest frame, preprocess it and run the scene encoder, until ``stop``."""
    while not stop.is_set():
        if not slot.has_new_frame():
            time.sleep(0.0005)
            continue
        cloud = slot.take()
        started = time.perf_counter()
        scene = engine._prepare(cloud, {})
        encoder.encode(scene.patches, scene.centers)
        processed.append(time.perf_counter() - started)


def _measure_rate(engine: Any, encoder: Any, depth_mm: np.ndarray, rgb: np.ndarray, intrinsics: Any, rate: float,
                  seconds: float) -> dict[str, Any]:
    """One rate of :func:`sustained_rates`: the producer at ``rate`` for ``seconds``, the consumer beside it."""
    process = psutil.Process()
    slot: FrameSlot[SceneCloud] = FrameSlot()
    stop = threading.Event()
    processed: list[float] = []
    consumer = threading.Thread(target=_consume_newest, args=(slot, stop, engine, encoder, processed), daemon=True)
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
    second_half_growth_mb = (rss_after - rss_middle) / 2**20
    frame_mb = (xyz.nbytes + colours.nbytes) / 2**20
    counts = slot.counts()
    # on schedule: no callback started a whole period late (an executor would be queueing messages)
    keeps_schedule = max(lateness) < 1.0 / rate and second_half_growth_mb < QUEUE_FRAMES_LIMIT * frame_mb
    return {
        "rate_hz": rate,
        "achieved_input_hz": (count - 1) / (last_start - started),
        "received": counts.received,
        "consumed": counts.consumed,
        "dropped": counts.dropped,
        "callback_median_s": median(callbacks),
        "max_lateness_s": max(lateness),
        "consumer_median_s": median(processed) if processed else None,
        "rss_growth_mb": (rss_after - rss_before) / 2**20,
        "second_half_rss_growth_mb": second_half_growth_mb,
        "frame_mb": frame_mb,
        "keeps_schedule": keeps_schedule,
        "every_frame": keeps_schedule and counts.dropped <= MAX_DROP_SHARE * counts.received,
    }


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
    depth_mm, rgb = _depth_message_payload(frame)
    encoder = engine.scene_backend or TorchSceneEncoder(engine.model.scene_encoder)
    results = []
    # the first pass warms up (allocator arenas, caches) and is not reported
    for pass_index, rate in enumerate((rates_hz[0], *rates_hz)):
        row = _measure_rate(engine, encoder, depth_mm, rgb, frame.intrinsics, rate, seconds)
        if pass_index == 0:
            continue
        results.append(row)
        if not row["keeps_schedule"]:
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
