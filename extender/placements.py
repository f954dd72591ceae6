"""Pods bound since APOLLO's last sample, counted against their node (the "hot value").

APOLLO's forecast cannot see a pod that was bound a second ago; without this ledger a burst of pods
would all land on the node that looked idlest at the last sample (Trimaran and Crane account for it
the same way). Entries older than the snapshot's sample are already in APOLLO's numbers and pruned.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class Placement:
    node: str
    cpu_cores: float
    memory_bytes: float
    bound_at: float


class PlacementLedger:
    """Thread-safe: the pod watcher writes, request threads read."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._by_uid: dict[str, Placement] = {}
        self._lock = threading.Lock()
        self._max = max_entries
        self._cache_key: float | None = None
        self._cache: dict[str, tuple[float, float]] = {}

    def record(self, uid: str, placement: Placement) -> bool:
        """Remember a binding once; returns False for a pod already recorded."""
        with self._lock:
            if uid in self._by_uid:
                return False
            if len(self._by_uid) >= self._max:
                oldest = min(self._by_uid, key=lambda k: self._by_uid[k].bound_at)
                del self._by_uid[oldest]
            self._by_uid[uid] = placement
            self._cache_key = None
            return True

    def __contains__(self, uid: str) -> bool:
        return uid in self._by_uid

    def forget(self, uid: str) -> None:
        with self._lock:
            if self._by_uid.pop(uid, None) is not None:
                self._cache_key = None

    def prune(self, before: float) -> None:
        with self._lock:
            stale = [uid for uid, p in self._by_uid.items() if p.bound_at < before]
            for uid in stale:
                del self._by_uid[uid]
            if stale:
                self._cache_key = None

    def usage_since(self, since: float) -> dict[str, tuple[float, float]]:
        """Per node (cpu cores, memory bytes) of pods bound after `since`; cached per `since`."""
        with self._lock:
            if self._cache_key == since:
                return self._cache
            usage: dict[str, tuple[float, float]] = {}
            for p in self._by_uid.values():
                if p.bound_at >= since:
                    cpu, mem = usage.get(p.node, (0.0, 0.0))
                    usage[p.node] = (cpu + p.cpu_cores, mem + p.memory_bytes)
            self._cache_key, self._cache = since, usage
            return usage

    def __len__(self) -> int:
        return len(self._by_uid)
