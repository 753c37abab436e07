"""A latest-frame slot: sensors overwrite, the model takes the newest, stale frames are dropped.

A slow model must never build a queue of sensor frames. Sensor callbacks :meth:`put`
each frame into the slot; the inference thread :meth:`take`\\ s the newest one. A frame
overwritten before anyone took it counts as **dropped**; so after N puts and one take,
N - 1 frames were dropped. Thread-safe: one lock guards the slot and its counters.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class SlotCounts:
    """Counters of a slot: frames put, frames taken (first take of each), frames dropped unseen."""

    received: int
    consumed: int
    dropped: int


class FrameSlot(Generic[T]):
    """Holds only the latest frame; counts frames that were replaced before being taken."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._frame: T | None = None
        self._stored_at = 0.0
        self._taken = True
        self._received = 0
        self._consumed = 0
        self._dropped = 0

    def put(self, frame: T) -> bool:
        """Store ``frame`` as the latest; True when it replaced a frame nobody took (a drop)."""
        with self._lock:
            dropped = not self._taken
            if dropped:
                self._dropped += 1
            self._frame = frame
            self._stored_at = time.monotonic()
            self._taken = False
            self._received += 1
            return dropped

    def take(self, max_age_s: float | None = None) -> T | None:
        """The latest frame (again if it was taken before), or None when empty or older than ``max_age_s``."""
        with self._lock:
            if self._frame is None:
                return None
            if max_age_s is not None and time.monotonic() - self._stored_at > max_age_s:
                return None
            if not self._taken:
                self._consumed += 1
                self._taken = True
            return self._frame

    def has_new_frame(self) -> bool:
        """True when a frame was put since the last take."""
        with self._lock:
            return not self._taken

    def counts(self) -> SlotCounts:
        """A consistent snapshot of the counters."""
        with self._lock:
            return SlotCounts(self._received, self._consumed, self._dropped)

    def clear(self) -> None:
        """Forget the stored frame (counters stay)."""
        with self._lock:
            self._frame = None
            self._taken = True


class ApproximateTimeSync:
    """Pairs messages of several streams whose stamps lie within ``tolerance_s`` of each other.

    Keeps the last ``history`` items per stream. When an item arrives, the closest-stamped
    item of every other stream is looked up; if the whole set spans at most
    ``tolerance_s`` it is returned, and it and everything older are forgotten.
    (message_filters' ApproximateTimeSynchronizer is not available from pip.)
    """

    def __init__(self, streams: tuple[str, ...], tolerance_s: float, history: int = 5) -> None:
        if tolerance_s < 0:
            raise ValueError(f"tolerance_s must be >= 0, got {tolerance_s}")
        self.streams = streams
        self.tolerance_s = tolerance_s
        self._lock = threading.Lock()
        self._items: dict[str, list[tuple[float, object]]] = {stream: [] for stream in streams}
        self._history = history

    def add(self, stream: str, stamp_s: float, item: object) -> dict[str, object] | None:
        """Add one item; returns {stream: item} for every stream when a matching set is complete."""
        with self._lock:
            queue = self._items[stream]
            queue.append((stamp_s, item))
            del queue[: max(0, len(queue) - self._history)]
            chosen: dict[str, tuple[float, object]] = {stream: (stamp_s, item)}
            for other in self.streams:
                if other == stream:
                    continue
                if not self._items[other]:
                    return None
                chosen[other] = min(self._items[other], key=lambda entry: abs(entry[0] - stamp_s))
            stamps = [entry[0] for entry in chosen.values()]
            if max(stamps) - min(stamps) > self.tolerance_s:
                return None
            for name, (stamp, _) in chosen.items():
                self._items[name] = [entry for entry in self._items[name] if entry[0] > stamp]
            return {name: entry[1] for name, entry in chosen.items()}
