"""Pods bound recently, counted against their node (the "hot value").

APOLLO's forecast cannot see a pod that was bound a second ago; without this ledger a burst of pods
would all land on the node that looked idlest at the last sample (Trimaran and Crane account for it
the same way). Entries bound well before the snapshot's sample (`hot_value_lag_seconds`: metrics need
that long to show a new pod) are in APOLLO's numbers and are dropped as the sample time moves on.

Requests read the per-node sums on every verb call while the pod watch adds a binding for every
pod, so both sides are O(1) amortised: sums are kept up to date incrementally, published as a fresh
immutable dict (readers take the reference, no lock), and expired entries leave through a heap
ordered by binding time. Recomputing from all entries per request cost O(pods bound) and grew
without bound on a cluster whose pods are never deleted. Each published mapping (`HotValue`) also
says which nodes changed since the previous ones, so the ranking's per-row columns follow a binding
by updating one row instead of re-reading every node with recent bindings.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Mapping
from dataclasses import dataclass

MAX_CHANGE_LOG = 65_536  # changes kept per epoch; past it readers rebuild from the mapping once


class HotValue(dict[str, tuple[float, float]]):
    """Per node (cpu cores, memory bytes) of recent bindings, never mutated once published.

    `changes[:position]` names the nodes changed, in order, since the start of this mapping's epoch (an
    epoch ends when the sample time moves and every sum is recomputed). Two mappings sharing `changes`
    differ only in the nodes listed between their positions.
    """

    __slots__ = ("changes", "position")

    def __init__(self, sums: Mapping[str, tuple[float, float]], changes: list[str]) -> None:
        super().__init__(sums)
        self.changes = changes
        self.position = len(changes)

    def changed_since(self, earlier: Mapping[str, tuple[float, float]]) -> list[str] | None:
        """Nodes whose sums may differ from `earlier`'s, or None when that is not known (rebuild)."""
        if not isinstance(earlier, HotValue) or earlier.changes is not self.changes:
            return None
        if earlier.position > self.position:
            return None
        return self.changes[earlier.position : self.position]


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
        self._expiry: list[tuple[float, str]] = []  # (bound_at, uid), a min-heap; may hold stale pairs
        self._lock = threading.Lock()
        self._max = max_entries
        self._since = float("-inf")
        self._changes: list[str] = []
        self._usage = HotValue({}, self._changes)

    def _add(self, p: Placement, sign: float) -> None:
        """Copy-on-write update of one node's sums; readers keep whatever mapping they already hold."""
        cpu, mem = self._usage.get(p.node, (0.0, 0.0))
        cpu, mem = cpu + sign * p.cpu_cores, mem + sign * p.memory_bytes
        if len(self._changes) >= MAX_CHANGE_LOG:
            self._changes = []  # a new epoch: readers holding the old log rebuild once
        self._changes.append(p.node)
        usage = HotValue(self._usage, self._changes)
        if cpu <= 1e-9 and mem <= 1e-3:
            usage.pop(p.node, None)
        else:
            usage[p.node] = (cpu, mem)
        self._usage = usage

    def _drop(self, uid: str) -> None:
        p = self._by_uid.pop(uid, None)
        if p is not None and p.bound_at >= self._since:
            self._add(p, -1.0)

    def record(self, uid: str, placement: Placement) -> bool:
        """Remember a binding once; returns False for a pod already recorded."""
        with self._lock:
            if uid in self._by_uid:
                return False
            while len(self._by_uid) >= self._max and self._expiry:
                _, oldest = heapq.heappop(self._expiry)
                self._drop(oldest)
            self._by_uid[uid] = placement
            heapq.heappush(self._expiry, (placement.bound_at, uid))
            if placement.bound_at >= self._since:
                self._add(placement, 1.0)
            return True

    def entries(self) -> list[tuple[str, Placement]]:
        """Every binding held (uid, placement): what a newly connected worker is sent first."""
        with self._lock:
            return list(self._by_uid.items())

    def __contains__(self, uid: str) -> bool:
        return uid in self._by_uid

    def forget(self, uid: str) -> None:
        with self._lock:
            self._drop(uid)

    def usage_since(self, since: float) -> HotValue:
        """Per node (cpu cores, memory bytes) of pods bound at or after `since`; do not mutate.

        `since` is the snapshot's sample time, which only moves forward: entries bound before it are
        discarded for good. An older `since` (a restarted APOLLO) is answered from what is left.
        """
        if since <= self._since:
            return self._usage
        with self._lock:
            if since > self._since:
                self._since = since
                while self._expiry and self._expiry[0][0] < since:
                    _, uid = heapq.heappop(self._expiry)
                    p = self._by_uid.get(uid)
                    if p is not None and p.bound_at < since:
                        del self._by_uid[uid]
                self._changes = []
                self._usage = HotValue(self._sums(since), self._changes)
            return self._usage

    def _sums(self, since: float) -> dict[str, tuple[float, float]]:
        usage: dict[str, tuple[float, float]] = {}
        for p in self._by_uid.values():
            if p.bound_at >= since:
                cpu, mem = usage.get(p.node, (0.0, 0.0))
                usage[p.node] = (cpu + p.cpu_cores, mem + p.memory_bytes)
        return usage

    def __len__(self) -> int:
        return len(self._by_uid)
