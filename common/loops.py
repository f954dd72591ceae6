"""Stoppable background work: periodic loops and queues whose consumers wake up on stop.

Every service runs threads beside its requests (snapshot refresh, pod watches, reporters, ticks,
tuning). They share one rule: `stop()` interrupts every wait at once, including a consumer blocked
on an empty queue, so shutdown and tests never hang on a thread that sleeps or waits for work.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger("common.loops")


class Stopped(Exception):
    """Raised by `ClosableQueue.get` once the queue is closed and drained."""


class ClosableQueue(Generic[T]):
    """A bounded queue whose `close()` wakes every blocked `get()` (a plain Queue cannot be interrupted)."""

    def __init__(self, maxsize: int = 0) -> None:
        self._items: queue.Queue[T] = queue.Queue(maxsize)
        self._cond = threading.Condition()
        self._closed = False

    def put_nowait(self, item: T) -> bool:
        """False when full or closed: producers on a hot path drop rather than block."""
        with self._cond:
            if self._closed:
                return False
            try:
                self._items.put_nowait(item)
            except queue.Full:
                return False
            self._cond.notify()
            return True

    def get(self, timeout: float | None = None) -> T:
        """The next item; raises queue.Empty after `timeout`, Stopped once closed and empty."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                try:
                    return self._items.get_nowait()
                except queue.Empty:
                    pass
                if self._closed:
                    raise Stopped
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise queue.Empty
                self._cond.wait(remaining)

    def drain(self, limit: int) -> list[T]:
        """Up to `limit` items already queued, without waiting."""
        out: list[T] = []
        with self._cond:
            while len(out) < limit:
                try:
                    out.append(self._items.get_nowait())
                except queue.Empty:
                    break
        return out

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def qsize(self) -> int:
        return self._items.qsize()


class BackgroundLoop:
    """A daemon thread that runs `body()` every `interval` seconds until stopped.

    Subclass and override `run_once()` (or pass `body`); an exception in one round is logged and the
    loop goes on, because a bug in background work must not end a serving process. `first_delay`
    waits before the first round (e.g. hourly tuning that should not run at start-up). Long-running
    bodies (a watch) call `self.wait(seconds)` or check `self.stopping` to return promptly.
    """

    def __init__(
        self,
        name: str,
        interval: float,
        body: Callable[[], object] | None = None,
        *,
        first_delay: float = 0.0,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.name = name
        self.interval = interval
        self.first_delay = first_delay
        self._body = body
        self._on_error = on_error
        self._stop = threading.Event()
        self._closables: list[ClosableQueue[object]] = []
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def run_once(self) -> object:
        if self._body is None:
            raise NotImplementedError("pass body or override run_once")
        return self._body()

    def before_loop(self) -> None:
        """Runs once in the thread before the first round (warm-up work)."""

    def closes(self, q: ClosableQueue[T]) -> ClosableQueue[T]:
        """Register a queue to close on stop, so a consumer blocked on it wakes up."""
        self._closables.append(q)  # type: ignore[arg-type]
        return q

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True when stop was requested meanwhile."""
        return self._stop.wait(max(0.0, seconds))

    def start(self) -> BackgroundLoop:
        self._thread.start()
        return self

    def stop(self, timeout: float | None = 5.0) -> None:
        self._stop.set()
        for q in self._closables:
            q.close()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            self.before_loop()
        except Exception as exc:
            log.exception("background start-up failed", extra={"loop": self.name})
            if self._on_error:
                self._on_error(exc)
        if self.first_delay and self.wait(self.first_delay):
            return
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.run_once()
            except Stopped:
                return
            except Exception as exc:
                log.exception("background round failed", extra={"loop": self.name})
                if self._on_error:
                    self._on_error(exc)
            self.wait(self.interval - (time.monotonic() - started))
