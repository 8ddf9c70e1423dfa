"""Two sides of a pairing as two threads, for tests that need both ends in one process."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def two_sides(make: Callable[[int], T]) -> list[T]:
    """``make(0)`` and ``make(1)`` in two threads (60 s at most); their results. If either
    raised, the other's socket (if it made one) is closed and the first error re-raised."""
    results: dict[int, T | BaseException] = {}

    def run(i: int) -> None:
        try:
            results[i] = make(i)
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    errors = [r for r in results.values() if isinstance(r, BaseException)]
    if errors:
        for result in results.values():
            if isinstance(result, socket.socket):
                result.close()
        raise errors[0]
    return [results[0], results[1]]  # type: ignore[list-item]
