"""A delaying work queue of object keys, client-go style: each key at most once, at its earliest due time.

Watches add keys now, timers add them later (a backoff, a deadline, a TTL); a key added again
while queued keeps the earlier of the two times, so a burst of pod events costs one reconcile.
`close()` wakes a blocked `get()`, so shutdown never waits on an idle queue.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable

from common.loops import Stopped


class WorkQueue:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._due: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        self._closed = False

    def add(self, key: str, delay: float = 0.0) -> None:
        with self._cond:
            if self._closed:
                return
            due = self._clock() + max(0.0, delay)
            current = self._due.get(key)
            if current is not None and current <= due:
                return
            self._due[key] = due
            heapq.heappush(self._heap, (due, key))
            self._cond.notify()

    def get(self, timeout: float | None = None) -> str | None:
        """The next due key; None after `timeout` with nothing due; raises Stopped once closed."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while True:
                if self._closed:
                    raise Stopped
                now = self._clock()
                while self._heap:
                    due, key = self._heap[0]
                    if self._due.get(key) != due:
                        heapq.heappop(self._heap)  # superseded by an earlier add
                        continue
                    if due <= now:
                        heapq.heappop(self._heap)
                        del self._due[key]
                        return key
                    break
                wait = self._heap[0][0] - now if self._heap else None
                if deadline is not None:
                    left = deadline - now
                    if left <= 0:
                        return None
                    wait = left if wait is None else min(wait, left)
                self._cond.wait(wait)

    def due_in(self, key: str) -> float | None:
        with self._cond:
            due = self._due.get(key)
            return None if due is None else due - self._clock()

    def __len__(self) -> int:
        with self._cond:
            return len(self._due)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
