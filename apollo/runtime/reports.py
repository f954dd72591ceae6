"""What insight agents pushed, as domain values: the latest signature per pod and insight per node.

Reports are converted once, when they arrive (the gRPC adapter), so the engine reads them every tick
without re-converting anything. They expire after a TTL so that a pod or node that disappeared stops
steering decisions; the store is shared by gRPC threads and the engine's tick thread, hence the lock.
"""

from __future__ import annotations

import threading
import time
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


class TTLMap(Generic[K, T]):
    """Latest value per key, forgotten `ttl` seconds after it was put."""

    def __init__(self, ttl: float, clock: Callable[[], float]) -> None:
        self._ttl = ttl
        self._clock = clock
        self._items: dict[K, Entry[T]] = {}
        self._lock = threading.Lock()

    def put(self, key: K, value: T) -> None:
        with self._lock:
            self._items[key] = Entry(value, self._clock())

    def get(self, key: K) -> T | None:
        with self._lock:
            entry = self._items.get(key)
        if entry is None or self._clock() - entry.received_at > self._ttl:
            return None
        return entry.value

    def live(self) -> dict[K, T]:
        """Unexpired entries; expired ones are dropped on the way so the map cannot grow forever."""
        now = self._clock()
        with self._lock:
            expired = [k for k, e in self._items.items() if now - e.received_at > self._ttl]
            for k in expired:
                del self._items[k]
            return {k: e.value for k, e in self._items.items()}


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
