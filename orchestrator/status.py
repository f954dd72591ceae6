"""Reading and stamping a PodMigration's status: conditions, step times, deadlines and backoff.

Every phase of the machine records what happened in the status (it is all a restarted controller has
to resume from) and derives its timing from it: when the migration started, when its deadline falls,
how long to back off after a refused eviction, how soon to look again. These helpers are the one
place that arithmetic and the status conventions (a condition's transition time moves only when its
status changes; a step time is written once) are kept.
"""

from __future__ import annotations

from apollo_api.podmigration import (
    CANCEL_ANNOTATION,
    CANCEL_BY_ANNOTATION,
    MIN_TIMEOUT_SECONDS,
    Condition,
    PodMigration,
    PodMigrationStatus,
)
from orchestrator import podinfo
from orchestrator.config import EvictionSettings

# How soon to look again while something outside moves (the source terminating, the replacement
# starting): watches usually wake the controller first; this is the floor when they do not.
POLL_SECONDS = 2.0
REPORT_RETRY_SECONDS = 10.0


def set_condition(st: PodMigrationStatus, ctype: str, status: str, reason: str, message: str, now: float) -> None:
    """Upsert a condition; the transition time moves only when its status changes."""
    for i, c in enumerate(st.conditions):
        if c.type == ctype:
            stamp = c.last_transition_time if c.status == status and c.last_transition_time else podinfo.rfc3339(now)
            st.conditions[i] = Condition(ctype, status, reason, message, stamp)
            return
    st.conditions.append(Condition(ctype, status, reason, message, podinfo.rfc3339(now)))


def condition(st: PodMigrationStatus, ctype: str) -> Condition | None:
    return next((c for c in st.conditions if c.type == ctype), None)


def mark(st: PodMigrationStatus, step_name: str, when: float) -> None:
    st.steps.setdefault(step_name, podinfo.rfc3339(when))


def step_time(st: PodMigrationStatus, step_name: str) -> float | None:
    return podinfo.parse_time(st.steps.get(step_name, ""))


def started_at(m: PodMigration) -> float | None:
    return podinfo.parse_time(m.creation_timestamp) or step_time(m.status, "accepted")


def deadline_of(m: PodMigration) -> float | None:
    start = started_at(m)
    return None if start is None else start + max(m.spec.timeout_seconds, MIN_TIMEOUT_SECONDS)


def eviction_backoff(cfg: EvictionSettings, attempts: int) -> float:
    """Wait after the `attempts`-th refused eviction (exponential, capped)."""
    if attempts <= 0:
        return 0.0
    return float(min(cfg.initial_backoff_seconds * cfg.multiplier ** (attempts - 1), cfg.max_backoff_seconds))


def fmt_seconds(seconds: float) -> str:
    return f"{seconds:.1f}s" if seconds < 600 else f"{seconds / 60:.1f}m"


def cancel_requested(m: PodMigration) -> str:
    """The cancellation message when one was requested, else ""."""
    if CANCEL_ANNOTATION not in m.annotations:
        return ""
    who = m.annotations.get(CANCEL_BY_ANNOTATION, "")
    return f"cancelled{f' by {who}' if who else ''} at {m.annotations[CANCEL_ANNOTATION] or 'an unknown time'}"


def eviction_accepted(m: PodMigration) -> bool:
    return "evicted" in m.status.steps or "sourceTerminated" in m.status.steps


def until(deadline: float | None, now: float) -> float:
    """How soon to look again while waiting on the world: the poll floor, sooner at the deadline."""
    return POLL_SECONDS if deadline is None else max(0.0, min(POLL_SECONDS * 5, deadline - now))
