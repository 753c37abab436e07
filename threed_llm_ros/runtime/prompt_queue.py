"""The bounded queue of prompts waiting for the model, ROS-free.

The node answers one prompt at a time, and one answer can take seconds. Prompts that
arrive meanwhile wait here, in order, up to ``depth`` of them; one more is refused at
once (the node replies :func:`busy_reply` to it and counts it), so no question is lost
silently and a burst cannot build an unbounded backlog of minutes of work.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")

PROMPT_QUEUE_DEPTH = 20


class ReplyCanceled(Exception):
    """Raised from a reply's token callback when its asker canceled it: generation stops there."""


def busy_reply(waiting: int) -> str:
    """The reply to a prompt refused because ``waiting`` prompts already wait."""
    return f"busy: {waiting} prompts are waiting; ask again shortly"


class PromptQueue(Generic[T]):
    """Thread-safe FIFO of at most ``depth`` items: :meth:`put` refuses one more instead of blocking."""

    def __init__(self, depth: int = PROMPT_QUEUE_DEPTH) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.depth = depth
        self._items: deque[T] = deque()
        self._lock = threading.Lock()

    def put(self, item: T) -> bool:
        """Queue ``item`` at the end; False (and nothing queued) when ``depth`` items already wait."""
        with self._lock:
            if len(self._items) >= self.depth:
                return False
            self._items.append(item)
            return True

    def pop(self) -> T | None:
        """The oldest waiting item, or None when none waits."""
        with self._lock:
            return self._items.popleft() if self._items else None

    def drain(self) -> list[T]:
        """Every waiting item, oldest first, leaving the queue empty."""
        with self._lock:
            items = list(self._items)
            self._items.clear()
            return items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
