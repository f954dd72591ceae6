"""What insight agents pushed: the latest WorkloadSignature per pod and ClusterInsight per node.

Reports expire after a TTL so that a pod or node that disappeared stops steering decisions, and
the store is shared by gRPC threads and the engine's tick thread, hence the lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from apollo_api.v1 import apollo_pb2 as pb

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    message: T
    received_at: float


class _TTLMap(Generic[T]):
    def __init__(self, ttl: float, clock: Callable[[], float]) -> None:
        self._ttl = ttl
        self._clock = clock
        self._items: dict[tuple[str, ...], Entry[T]] = {}
        self._lock = threading.Lock()

    def put(self, key: tuple[str, ...], message: T) -> None:
        with self._lock:
            self._items[key] = Entry(message, self._clock())

    def get(self, key: tuple[str, ...]) -> T | None:
        with self._lock:
            entry = self._items.get(key)
        if entry is None or self._clock() - entry.received_at > self._ttl:
            return None
        return entry.message

    def live(self) -> dict[tuple[str, ...], T]:
        """Unexpired entries; expired ones are dropped on the way so the map cannot grow forever."""
        now = self._clock()
        with self._lock:
            expired = [k for k, e in self._items.items() if now - e.received_at > self._ttl]
            for k in expired:
                del self._items[k]
            return {k: e.message for k, e in self._items.items()}


class ReportStore:
    """Latest signature per pod (namespace, name) and insight per node name."""

    def __init__(self, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.signatures: _TTLMap[pb.WorkloadSignature] = _TTLMap(ttl_seconds, clock)
        self.insights: _TTLMap[pb.ClusterInsight] = _TTLMap(ttl_seconds, clock)

    def put_signature(self, sig: pb.WorkloadSignature) -> None:
        self.signatures.put((sig.pod_namespace, sig.pod_name), sig)

    def put_insight(self, insight: pb.ClusterInsight) -> None:
        self.insights.put((insight.node_name,), insight)

    def signature(self, namespace: str, name: str) -> pb.WorkloadSignature | None:
        return self.signatures.get((namespace, name))

    def insight(self, node: str) -> pb.ClusterInsight | None:
        return self.insights.get((node,))
