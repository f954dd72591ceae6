"""Fan-out of orchestration policies to SubscribePolicies streams, at least once, never after an ack.

A policy stays pending until an ExecutionResult acknowledges its request_id or its deadline
passes. A subscriber that (re)connects first receives the pending policies that match its filters,
then new ones; acknowledged policies are never sent again, so an orchestrator that restarts does
not execute twice what it already reported, and one that crashed before reporting gets it again.

The broker holds the core's decisions; the gRPC adapter turns each into a message as it sends it.
Action filters are the wire's action numbers, which the core's `Action` values are by design.
"""

from __future__ import annotations

import heapq
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from apollo.core.decisions import PolicyDecision


@dataclass(frozen=True)
class _Entry:
    decision: PolicyDecision
    expires_at: float


@dataclass
class Subscription:
    subscriber_id: str
    actions: frozenset[int]
    namespaces: frozenset[str]
    queue: queue.Queue[PolicyDecision] = field(default_factory=lambda: queue.Queue(maxsize=10_000))
    dropped: int = 0

    def wants(self, decision: PolicyDecision) -> bool:
        return (not self.actions or int(decision.action) in self.actions) and (
            not self.namespaces or decision.namespace in self.namespaces
        )

    def offer(self, decision: PolicyDecision) -> None:
        try:
            self.queue.put_nowait(decision)
        except queue.Full:
            # A subscriber that does not drain is not allowed to grow memory; it gets the policy
            # again from the pending set when it reconnects.
            self.dropped += 1

    def stream(self, active: Callable[[], bool], poll: float = 0.5) -> Iterator[PolicyDecision]:
        while active():
            try:
                yield self.queue.get(timeout=poll)
            except queue.Empty:
                continue


class PolicyBroker:
    def __init__(self, clock: Callable[[], float] = time.time, max_pending: int = 10_000) -> None:
        self._clock = clock
        self._max = max_pending
        self._pending: OrderedDict[str, _Entry] = OrderedDict()
        # Deadlines of pending entries, soonest first: deadlines differ per action, so insertion order is
        # not expiry order, and scanning every pending entry on each of a tick's publishes is O(n^2).
        # Entries acknowledged, evicted or replaced stay here until they surface and are skipped.
        self._deadlines: list[tuple[float, int, str, _Entry]] = []
        self._seq = 0
        self._acked: OrderedDict[str, float] = OrderedDict()
        self._subs: dict[int, Subscription] = {}
        self._lock = threading.Lock()

    def _expire(self, now: float) -> None:
        """Drop every pending entry whose deadline passed (``expires_at < now``), soonest first."""
        heap = self._deadlines
        while heap and heap[0][0] < now:
            _, _, rid, entry = heapq.heappop(heap)
            if self._pending.get(rid) is entry:
                del self._pending[rid]
        if len(heap) > 2 * len(self._pending) + 64:
            # Mostly entries already gone (acknowledged or evicted): rebuild from what is pending.
            self._deadlines = [item for item in heap if self._pending.get(item[2]) is item[3]]
            heapq.heapify(self._deadlines)
        while len(self._acked) > 4 * self._max:
            self._acked.popitem(last=False)

    def publish(self, decision: PolicyDecision) -> bool:
        """Queue a decision for every matching subscriber; a repeat of a known request_id is ignored."""
        now = self._clock()
        with self._lock:
            self._expire(now)
            rid = decision.request_id
            if rid in self._pending or rid in self._acked:
                return False
            entry = _Entry(decision, decision.expires_at)
            self._pending[rid] = entry
            self._seq += 1
            heapq.heappush(self._deadlines, (entry.expires_at, self._seq, rid, entry))
            while len(self._pending) > self._max:
                self._pending.popitem(last=False)
            subscribers = list(self._subs.values())
        for sub in subscribers:
            if sub.wants(decision):
                sub.offer(decision)
        return True

    def ack(self, request_id: str) -> bool:
        """ExecutionResult arrived: never send this policy again. False if it was not pending."""
        with self._lock:
            self._acked[request_id] = self._clock()
            return self._pending.pop(request_id, None) is not None

    def subscribe(self, subscriber_id: str, actions: frozenset[int], namespaces: frozenset[str]) -> Subscription:
        sub = Subscription(subscriber_id, actions, namespaces)
        with self._lock:
            self._expire(self._clock())
            for entry in self._pending.values():
                if sub.wants(entry.decision):
                    sub.offer(entry.decision)
            self._subs[id(sub)] = sub
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subs.pop(id(sub), None)

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def subscribers(self) -> int:
        return len(self._subs)
