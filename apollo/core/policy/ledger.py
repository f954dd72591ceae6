"""The one record every planner shares: decisions in flight, finished moves settling, cool-downs, request ids.

Why one ledger: the caps and cool-downs of different actions interact (a pod being scaled must not also be
moved; a move in flight is load on its target that the next move must see), and an answer to a decision
(`ExecutionResult`) arrives by request id without saying which planner issued it. Keeping all of it here
means expiry, the in-flight counts and the pending load have one definition.

Issued decisions stay in flight until their result or their deadline plus a grace; an unanswered one is
written off as failed, so a lost report never blocks a cap for good. Plain data, no clock: every method
takes ``now``.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from dataclasses import dataclass, field

from apollo.core.decisions import Action, PolicyDecision
from apollo.core.domain import PlacementCounter


def request_id(action: Action, content: str, now: float, epoch_seconds: float) -> str:
    """Same action + content within one epoch -> same id, so the orchestrator can drop repeats."""
    epoch = int(now // epoch_seconds)
    digest = hashlib.sha256(f"{action.name}|{content}|{epoch}".encode()).hexdigest()
    return f"{action.name.lower().replace('_', '-')}-{digest[:24]}"


@dataclass(frozen=True, slots=True)
class Move:
    """Load a migration takes from its source to its target (cores, bytes, GPUs)."""

    source: str = ""
    target: str = ""
    cpu_cores: float = 0.0
    memory_bytes: float = 0.0
    gpus: int = 0


@dataclass(frozen=True, slots=True)
class InFlight:
    """An issued decision awaiting its result. Migrations carry the load they move."""

    request_id: str
    action: Action
    subject: str
    issued_at: float
    expires_at: float
    workload: str = ""
    move: Move = field(default_factory=Move)


@dataclass(frozen=True, slots=True)
class Settling:
    """A finished move the forecast has not seen yet: relief on the source, load on the target."""

    move: Move
    until: float


@dataclass
class Ledger:
    """Decisions in flight (by request id), moves settling, and cool-downs by key (``"<kind>:<subject>"``)."""

    inflight: dict[str, InFlight] = field(default_factory=dict)
    settling: list[Settling] = field(default_factory=list)
    cooldown_until: dict[str, float] = field(default_factory=dict)
    # Subjects in flight with their count: `busy` is asked for every workload every tick (O(1), not a scan).
    _subjects: Counter[str] = field(default_factory=Counter, repr=False)
    _actions: Counter[Action] = field(default_factory=Counter, repr=False)

    # -- issuing and answering ---------------------------------------------------------------------

    def track(
        self, decision: PolicyDecision, subject: str, now: float, workload: str, grace: float, move: Move | None = None
    ) -> InFlight:
        """Remember an issued decision until its result, or its deadline plus `grace`, whichever first."""
        entry = InFlight(
            decision.request_id,
            decision.action,
            subject,
            now,
            now + decision.deadline_seconds + grace,
            workload,
            move or Move(),
        )
        old = self.inflight.get(decision.request_id)
        if old is not None:
            self._forget(old)
        self.inflight[decision.request_id] = entry
        self._subjects[subject] += 1
        self._actions[entry.action] += 1
        return entry

    def pop(self, request_id: str) -> InFlight | None:
        """The entry answered by a result (None when unknown or already expired)."""
        entry = self.inflight.pop(request_id, None)
        if entry is not None:
            self._forget(entry)
        return entry

    def _forget(self, entry: InFlight) -> None:
        self._actions[entry.action] -= 1
        self._subjects[entry.subject] -= 1
        if self._subjects[entry.subject] <= 0:
            del self._subjects[entry.subject]

    def expire(self, now: float) -> list[InFlight]:
        """Remove and return decisions past their deadline (the caller counts them as failed); forget
        settled moves."""
        expired = [e for e in self.inflight.values() if e.expires_at <= now]
        for entry in expired:
            del self.inflight[entry.request_id]
            self._forget(entry)
        self.settling = [x for x in self.settling if x.until > now]
        return expired

    def settle(self, move: Move, until: float) -> None:
        """A move succeeded: count it on both nodes until the forecast has seen it."""
        self.settling.append(Settling(move, until))

    # -- reading -----------------------------------------------------------------------------------

    def count(self, action: Action, *, source: str = "", workload: str = "") -> int:
        """Decisions of `action` in flight, optionally off one source node or for one workload."""
        if not source and not workload:
            return self._actions[action]
        return sum(
            1
            for e in self.inflight.values()
            if e.action == action
            and (not source or e.move.source == source)
            and (not workload or e.workload == workload)
        )

    def busy(self, subject: str) -> bool:
        """Some decision about `subject` (a pod, a workload, a claim) is in flight."""
        return subject in self._subjects

    def moves(self) -> list[Move]:
        """Migrations in flight and moves settling: load the forecast cannot see yet."""
        live = [e.move for e in self.inflight.values() if e.action == Action.MIGRATE]
        return live + [x.move for x in self.settling]

    def pending_placements(self) -> list[PlacementCounter]:
        """The moves in flight or settling, as load on their targets (scoring's hot value)."""
        return [PlacementCounter(m.target, 1, m.cpu_cores, m.memory_bytes, m.gpus) for m in self.moves() if m.target]

    def leaving_all(self) -> dict[str, tuple[float, float]]:
        """(cores, bytes) on their way off each node, for every node with relief under way."""
        out: dict[str, tuple[float, float]] = {}
        for m in self.moves():
            cpu, mem = out.get(m.source, (0.0, 0.0))
            out[m.source] = (cpu + m.cpu_cores, mem + m.memory_bytes)
        return out

    def leaving(self, node: str) -> tuple[float, float]:
        """(cores, bytes) already on their way off `node`: relief the next move need not provide."""
        cpu = mem = 0.0
        for m in self.moves():
            if m.source == node:
                cpu, mem = cpu + m.cpu_cores, mem + m.memory_bytes
        return cpu, mem

    # -- cool-downs --------------------------------------------------------------------------------

    def cool(self, key: str, until: float) -> None:
        self.cooldown_until[key] = until

    def cooling(self, key: str, now: float) -> float:
        """Seconds of cool-down left for `key` (0 when none)."""
        return max(0.0, self.cooldown_until.get(key, -math.inf) - now)
