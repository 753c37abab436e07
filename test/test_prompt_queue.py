"""The bounded prompt queue: order, refusal beyond its depth, thread safety."""

from __future__ import annotations

import threading

import pytest

from threed_llm_ros.runtime.prompt_queue import PromptQueue, busy_reply


def test_fifo_up_to_the_depth_then_refuses() -> None:
    queue: PromptQueue[str] = PromptQueue(3)
    assert [queue.put(text) for text in ("a", "b", "c", "d")] == [True, True, True, False]
    assert len(queue) == 3
    assert queue.pop() == "a"
    assert queue.put("e")  # room again
    assert [queue.pop(), queue.pop(), queue.pop(), queue.pop()] == ["b", "c", "e", None]
    assert queue.put("f") and queue.put("g")
    assert queue.drain() == ["f", "g"] and len(queue) == 0


def test_busy_reply_says_how_many_wait() -> None:
    assert busy_reply(20) == "busy: 20 prompts are waiting; ask again shortly"


def test_bad_depth_is_refused() -> None:
    with pytest.raises(ValueError, match="depth"):
        PromptQueue(0)


def test_concurrent_producers_lose_nothing_silently() -> None:
    """Every put is either queued or refused, never both or neither, and the depth holds."""
    queue: PromptQueue[int] = PromptQueue(50)
    accepted: list[int] = []
    lock = threading.Lock()

    def produce(start: int) -> None:
        for value in range(start, start + 100):
            if queue.put(value):
                with lock:
                    accepted.append(value)

    threads = [threading.Thread(target=produce, args=(i * 100,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(accepted) == 50 == len(queue)
    assert sorted(queue.drain()) == sorted(accepted)
