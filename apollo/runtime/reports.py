"""What insight agents pushed, as domain values: the latest signature per pod and insight per node.

Reports are converted once, when they arrive (the gRPC adapter), so the engine reads them every tick
without re-converting anything. They expire after a TTL so that a pod or node that disappeared stops
steering decisions; the store is shared by gRPC threads and the engine's tick thread, hence the lock.

A reader that attaches reports to thousands of objects (the Kubernetes cache puts each pod's signature
on its `RunningPod`) must not look every key up again on every tick: :class:`TTLFollower` tells it which
keys changed since it last asked (new reports and expiries), at a cost proportional to the changes.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from apollo.core.domain import NodeInsight, PodSignature

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    value: T
    received_at: float
    seq: int = 0  # the map's version when it was put: orders puts, so followers find what is new


class TTLMap(Generic[K, T]):
    """Latest value per key, forgotten `ttl` seconds after it was put.

    Entries are kept in the order they were put (a new put of a key moves it last), so the puts after a
    given `version` are the map's tail and expiries happen front first (for a clock that never goes back,
    as `time.monotonic`).
    """

    def __init__(self, ttl: float, clock: Callable[[], float]) -> None:
        self._ttl = ttl
        self._clock = clock
        self._items: dict[K, Entry[T]] = {}
        self._version = 0
        self._lock = threading.Lock()

    @property
    def ttl(self) -> float:
        return self._ttl

    def now(self) -> float:
        return self._clock()

    def expired(self, entry: Entry[T], now: float) -> bool:
        """The one expiry rule, shared by `get`, `live` and followers."""
        return now - entry.received_at > self._ttl

    def put(self, key: K, value: T) -> None:
        with self._lock:
            self._version += 1
            self._items.pop(key, None)
            self._items[key] = Entry(value, self._clock(), self._version)

    def get(self, key: K) -> T | None:
        with self._lock:
            entry = self._items.get(key)
        if entry is None or self.expired(entry, self._clock()):
            return None
        return entry.value

    def live(self) -> dict[K, T]:
        """Unexpired entries; expired ones are dropped on the way so the map cannot grow forever."""
        now = self._clock()
        with self._lock:
            expired = [k for k, e in self._items.items() if self.expired(e, now)]
            for k in expired:
                del self._items[k]
            return {k: e.value for k, e in self._items.items()}

    def puts_since(self, version: int) -> tuple[int, list[tuple[K, Entry[T]]]]:
        """The map's version now and every entry put after `version` (the latest per key, oldest first).

        Walks back from the newest put and stops at the first older one: the cost is the number of puts
        since, not the size of the map. An entry that was put and already dropped as expired is not
        returned; for a follower that is the same as its expiry.
        """
        out: list[tuple[K, Entry[T]]] = []
        with self._lock:
            for key, entry in reversed(self._items.items()):
                if entry.seq <= version:
                    break
                out.append((key, entry))
            current = self._version
        out.reverse()
        return current, out


class TTLFollower(Generic[K, T]):
    """A reader's own copy of a :class:`TTLMap`'s live values, told what changed since it last looked.

    `changes()` returns the keys whose value, as `TTLMap.get` would answer now, differs from the last
    answer: new puts (the new value) and expiries (None). It costs the puts since the last call plus the
    expiries due, so a reader can keep attached values current every tick whatever the map's size.
    Not thread-safe: one reader, under its own lock.
    """

    def __init__(self, source: TTLMap[K, T]) -> None:
        self.source = source
        self._version = 0
        self._current: dict[K, Entry[T]] = {}
        self._due: deque[tuple[K, Entry[T]]] = deque()  # in put order = expiry order

    def get(self, key: K) -> T | None:
        """The value as of the last `changes()` (None when unknown or expired then)."""
        entry = self._current.get(key)
        return None if entry is None else entry.value

    def changes(self) -> dict[K, T | None]:
        """Keys whose live value changed since the previous call, with the value now (None: expired)."""
        self._version, puts = self.source.puts_since(self._version)
        out: dict[K, T | None] = {}
        now = self.source.now()
        for key, entry in puts:
            self._current[key] = entry
            self._due.append((key, entry))
            out[key] = entry.value
        while self._due and self.source.expired(self._due[0][1], now):
            key, entry = self._due.popleft()
            if self._current.get(key) is entry:  # not replaced by a later put
                del self._current[key]
                out[key] = None
        return out


class ReportStore:
    """Latest signature per pod (namespace, name) and insight per node name."""

    def __init__(self, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.signatures: TTLMap[tuple[str, str], PodSignature] = TTLMap(ttl_seconds, clock)
        self.insights: TTLMap[str, NodeInsight] = TTLMap(ttl_seconds, clock)

    def put_signature(self, namespace: str, name: str, signature: PodSignature) -> None:
        self.signatures.put((namespace, name), signature)

    def put_insight(self, insight: NodeInsight) -> None:
        self.insights.put(insight.node, insight)

    def signature(self, namespace: str, name: str) -> PodSignature | None:
        return self.signatures.get((namespace, name))

    def insight(self, node: str) -> NodeInsight | None:
        return self.insights.get(node)

    def live_insights(self) -> dict[str, NodeInsight]:
        return self.insights.live()
