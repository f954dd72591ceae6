"""PodMigration objects as the seed's REST shapes, and the figures of `GET /api/v1/metrics`.

Pure functions of the objects the API server returns: the API keeps no state, so every answer is a
view of `apollo.io/v1alpha1` PodMigrations. The seed's fields keep their names and meaning
(`status` in its five-word vocabulary, `details` with times, resources, container states, claim and
new pod); what this design adds (the exact phase, step timings, nodes, conditions) sits beside them
under new names, so existing clients read what they always read.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from apollo_api.podmigration import (
    BATCH_LABEL,
    CANCEL_ANNOTATION,
    CHECKPOINT_ENV,
    CHECKPOINT_VOLUME,
    STEP_NAMES,
    ContainerState,
    Phase,
    PodMigration,
    Resources,
)
from orchestrator.api.request import STATUS_OF_PHASE, ListQuery, migration_id

SERVICE = "apollo-orchestrator"


def parse_time(value: str) -> datetime | None:
    """An RFC 3339 time as the API server and the controller write it; None when absent or unreadable."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 3)


def start_time(m: PodMigration) -> str:
    return m.status.steps.get("accepted") or m.creation_timestamp


def end_time(m: PodMigration) -> str:
    if m.status.phase not in Phase.FINISHED:
        return ""
    return m.status.steps.get("finished", "")


def duration_seconds(m: PodMigration) -> float | None:
    """Seconds from acceptance to the end, for a finished migration whose times were recorded."""
    return _seconds(parse_time(start_time(m)), parse_time(end_time(m)))


def status_word(phase: str) -> str:
    return STATUS_OF_PHASE.get(phase, "pending")


def _container_state(c: ContainerState) -> str:
    """The seed's words: waiting, running, completed (exit 0), failed (any other exit)."""
    if c.state == "terminated":
        return "completed" if c.exit_code == 0 else "failed"
    return "running" if c.state == "running" else "waiting"


def _resources(r: Resources | None, at: str) -> dict[str, Any] | None:
    if r is None:
        return None
    return {"cpu_usage": r.cpu_cores, "memory_usage": r.memory_bytes, "timestamp": at or None}


def checkpoint_path(pod: Mapping[str, Any] | None) -> str:
    """Where the application writes checkpoints: its CHECKPOINT_DIR, else the checkpoint volume's mount."""
    if not pod:
        return ""
    # A stored pod template may be the whole pod ({metadata, spec}) or the spec alone.
    spec = (pod.get("spec") or {}) if "spec" in pod else pod
    containers = [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]
    for c in containers:
        for env in c.get("env") or []:
            if env.get("name") == CHECKPOINT_ENV and env.get("value"):
                return str(env["value"])
    for c in containers:
        for mount in c.get("volumeMounts") or []:
            if mount.get("name") == CHECKPOINT_VOLUME and mount.get("mountPath"):
                return str(mount["mountPath"])
    return ""


def step_timings(m: PodMigration) -> list[dict[str, Any]]:
    """Recorded steps in the order they happen, each with the seconds since the previous recorded one."""
    out: list[dict[str, Any]] = []
    previous: datetime | None = None
    names = [*STEP_NAMES, *sorted(k for k in m.status.steps if k not in STEP_NAMES)]
    for name in names:
        at = m.status.steps.get(name)
        if not at:
            continue
        when = parse_time(at)
        out.append({"step": name, "time": at, "seconds_since_previous": _seconds(previous, when)})
        previous = when or previous
    return out


def details(m: PodMigration, pod: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The seed's `details` object plus this design's extensions."""
    s = m.status
    steps = s.steps
    return {
        "start_time": start_time(m) or None,
        "end_time": end_time(m) or None,
        "duration": duration_seconds(m),
        "original_resources": _resources(s.requests_before, steps.get("captured", "")),
        "optimized_resources": _resources(s.requests_after, steps.get("running") or steps.get("finished", "")),
        "container_states": [
            {
                "name": c.name,
                "state": _container_state(c),
                "restart_count": c.restart_count,
                "should_migrate": c.migrate,
                "init": c.init,
                "exit_code": c.exit_code,
            }
            for c in s.containers
        ],
        "checkpoint_path": checkpoint_path(s.pod_template or pod) or None,
        "pv_claim_name": s.checkpoint_pvc or None,
        "new_pod_name": s.replacement_pod or None,
        # Extensions.
        "steps": step_timings(m),
        "source_node": s.source_node or m.spec.source_node or None,
        "target_node": m.spec.target_node or None,
        "suggested_node": s.suggested_node or None,
        "replacement_node": s.replacement_node or None,
        "owner": {"kind": s.owner_kind, "name": s.owner_name} if s.owner_kind else None,
        "resumed_from": s.resumed_from or None,
        "eviction_attempts": s.eviction_attempts,
        "conditions": [
            {"type": c.type, "status": c.status, "reason": c.reason, "message": c.message} for c in s.conditions
        ],
    }


def migration_view(m: PodMigration, pod: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """`POST`/`GET /api/v1/migrations/{id}`: the seed's MigrationResponse, extended."""
    return {
        "migration_id": migration_id(m.namespace, m.name),
        "status": status_word(m.status.phase),
        "message": m.status.message or _default_message(m),
        "details": details(m, pod),
        # Extensions.
        "phase": m.status.phase,
        "name": m.name,
        "pod_name": m.spec.pod_name,
        "pod_namespace": m.namespace,
        "preserve_pv": m.spec.preserve_pv,
        "timeout": m.spec.timeout_seconds,
        "dry_run": m.spec.dry_run,
        "reason": m.spec.reason or None,
        "batch_id": m.labels.get(BATCH_LABEL) or None,
        "cancel_requested": m.annotations.get(CANCEL_ANNOTATION) or None,
        "created": m.creation_timestamp or None,
    }


def _default_message(m: PodMigration) -> str:
    if m.status.phase == Phase.PENDING and not m.status.steps:
        if m.annotations.get(CANCEL_ANNOTATION):
            return "cancellation requested; waiting for the controller"
        return "accepted; waiting for the controller"
    return ""


def status_view(m: PodMigration) -> dict[str, Any]:
    """`GET /api/v1/migrations/{id}/status`: the seed's short form."""
    return {
        "migration_id": migration_id(m.namespace, m.name),
        "status": status_word(m.status.phase),
        "message": m.status.message or _default_message(m),
        "start_time": start_time(m) or None,
        "end_time": end_time(m) or None,
        "duration_seconds": duration_seconds(m),
        "phase": m.status.phase,
    }


def summary_view(m: PodMigration) -> dict[str, Any]:
    """One row of `GET /api/v1/migrations`: what a table shows, without the captured details."""
    s = m.status
    return {
        "migration_id": migration_id(m.namespace, m.name),
        "status": status_word(s.phase),
        "phase": s.phase,
        "message": s.message or _default_message(m),
        "pod_name": m.spec.pod_name,
        "pod_namespace": m.namespace,
        "source_node": s.source_node or m.spec.source_node or None,
        "target_node": m.spec.target_node or None,
        "replacement_node": s.replacement_node or None,
        "new_pod_name": s.replacement_pod or None,
        "start_time": start_time(m) or None,
        "end_time": end_time(m) or None,
        "duration": duration_seconds(m),
        "batch_id": m.labels.get(BATCH_LABEL) or None,
    }


def matches(m: PodMigration, query: ListQuery) -> bool:
    """Whether `m` passes the list filters (the namespace is applied by the list call itself)."""
    if query.namespace and m.namespace != query.namespace:
        return False
    if query.phases and m.status.phase not in query.phases:
        return False
    if query.batch and m.labels.get(BATCH_LABEL) != query.batch:
        return False
    if query.pod and m.spec.pod_name != query.pod:
        return False
    if query.node:
        nodes = {m.spec.source_node, m.spec.target_node, m.status.source_node, m.status.replacement_node}
        if query.node not in nodes:
            return False
    return True


def sort_key(m: PodMigration) -> tuple[str, str, str]:
    """Oldest first, as kubectl lists by creation; ties by namespace and name for a stable order."""
    return (m.creation_timestamp, m.namespace, m.name)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default) of a non-empty sequence; q in [0, 100]."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _savings(before: float, after: float) -> float | None:
    if before <= 0:
        return None
    return round(100.0 * (before - after) / before, 2)


def metrics_view(migrations: Iterable[PodMigration]) -> dict[str, Any]:
    """`GET /api/v1/metrics`: counts, durations and the request savings measured on finished migrations.

    Savings compare the requests of the containers that ran before the move with those of the
    replacement (completed containers are not re-run), summed over succeeded migrations that
    recorded both; with none recorded they are null, never an assumed figure.
    """
    items = list(migrations)
    succeeded = [m for m in items if m.status.phase == Phase.SUCCEEDED]
    durations = [d for d in (duration_seconds(m) for m in succeeded) if d is not None]
    measured = [m for m in succeeded if m.status.requests_before is not None and m.status.requests_after is not None]
    cpu_before = sum(m.status.requests_before.cpu_cores for m in measured if m.status.requests_before)
    cpu_after = sum(m.status.requests_after.cpu_cores for m in measured if m.status.requests_after)
    mem_before = sum(m.status.requests_before.memory_bytes for m in measured if m.status.requests_before)
    mem_after = sum(m.status.requests_after.memory_bytes for m in measured if m.status.requests_after)
    by_phase = {p: 0 for p in Phase.ALL}
    for m in items:
        by_phase[m.status.phase] = by_phase.get(m.status.phase, 0) + 1
    return {
        "total_migrations": len(items),
        "successful_migrations": len(succeeded),
        "failed_migrations": by_phase[Phase.FAILED],
        "average_duration": round(sum(durations) / len(durations), 3) if durations else None,
        "cpu_savings_percentage": _savings(cpu_before, cpu_after) if measured else None,
        "memory_savings_percentage": _savings(mem_before, mem_after) if measured else None,
        # Extensions.
        "cancelled_migrations": by_phase[Phase.CANCELLED],
        "active_migrations": sum(by_phase[p] for p in Phase.ACTIVE),
        "by_phase": by_phase,
        "duration_percentiles": (
            {f"p{q}": round(percentile(durations, q), 3) for q in (50, 90, 99)} if durations else None
        ),
        "savings_sample_size": len(measured),
        "cpu_cores_saved": round(cpu_before - cpu_after, 3) if measured else None,
        "memory_bytes_saved": (mem_before - mem_after) if measured else None,
    }


def health_view(version: str) -> dict[str, Any]:
    return {"status": "healthy", "service": SERVICE, "version": version}
