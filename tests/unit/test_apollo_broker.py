"""The broker's expiry by a deadline heap sends exactly what a scan of every pending policy would.

The reference below is the broker's earlier rule written out plainly (before each publish and subscribe,
drop every pending policy whose deadline passed; evict the oldest beyond the cap; remember a bounded
number of acknowledged ids); random publishes with
mixed deadlines, acknowledgements, clock steps and re-publishes of expired ids must leave the real broker
sending the same policies in the same order.
"""

from __future__ import annotations

import random
from collections import OrderedDict

import pytest

from apollo.core.decisions import Action, AutoscalingTarget, PolicyDecision, Priority
from apollo.runtime.broker import PolicyBroker


def _decision(rid: str, created_at: float, deadline: int) -> PolicyDecision:
    return PolicyDecision(
        request_id=rid,
        action=Action.SCALE_UP,
        priority=Priority.MEDIUM,
        reason="test",
        contributing_factors=(),
        created_at=created_at,
        deadline_seconds=deadline,
        autoscaling=AutoscalingTarget("w", "ns", "Deployment", 1, 2, "test"),
    )


class _ScanningBroker:
    """Pending policies by the plain rule: a full scan for expired ones before every publish/subscribe."""

    def __init__(self, max_pending: int) -> None:
        self.max = max_pending
        self.pending: OrderedDict[str, float] = OrderedDict()
        self.acked: OrderedDict[str, None] = OrderedDict()

    def expire(self, now: float) -> None:
        for rid in [r for r, at in self.pending.items() if at < now]:
            del self.pending[rid]
        while len(self.acked) > 4 * self.max:  # acknowledged ids are remembered up to a bound
            self.acked.popitem(last=False)

    def publish(self, decision: PolicyDecision, now: float) -> bool:
        self.expire(now)
        rid = decision.request_id
        if rid in self.pending or rid in self.acked:
            return False
        self.pending[rid] = decision.expires_at
        while len(self.pending) > self.max:
            self.pending.popitem(last=False)
        return True

    def ack(self, rid: str) -> bool:
        self.acked[rid] = None
        return self.pending.pop(rid, None) is not None

    def sent_on_subscribe(self, now: float) -> list[str]:
        self.expire(now)
        return list(self.pending)


@pytest.mark.parametrize("seed", range(6))
def test_heap_expiry_sends_what_a_full_scan_would(seed: int) -> None:
    rng = random.Random(seed)
    now = [1000.0]
    max_pending = rng.choice([5, 40, 10_000])
    broker = PolicyBroker(clock=lambda: now[0], max_pending=max_pending)
    reference = _ScanningBroker(max_pending)
    ids = [f"r{i}" for i in range(60)]  # few ids: repeats, re-publishes after expiry and acks all happen
    for _ in range(1500):
        op = rng.random()
        if op < 0.6:
            # Deadlines differ per decision (migrations vs scaling), some already past when published.
            created = now[0] - rng.choice([0.0, 0.0, 5.0, 400.0])
            decision = _decision(rng.choice(ids), created, rng.choice([0, 10, 60, 300, 301]))
            assert broker.publish(decision) == reference.publish(decision, now[0])
        elif op < 0.7:
            rid = rng.choice(ids)
            assert broker.ack(rid) == reference.ack(rid)
        elif op < 0.9:
            now[0] += rng.choice([0.0, 1.0, 30.0, 120.0])
        else:
            sub = broker.subscribe("all", frozenset(), frozenset())
            sent = []
            while not sub.queue.empty():
                sent.append(sub.queue.get_nowait().request_id)
            broker.unsubscribe(sub)
            assert sent == reference.sent_on_subscribe(now[0])
            assert broker.pending == len(reference.pending)
