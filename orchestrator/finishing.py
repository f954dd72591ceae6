"""The end of a migration: the final status and Events, the report owed to APOLLO, and the TTL.

Every phase can end a migration (a refusal, a timeout, success), and all of them end it the same way
through :func:`finish`. A finished migration still has work: an ExecutionResult to deliver to APOLLO
when APOLLO asked for the move (retried until it is acknowledged), the finalizer to drop, and the
object to delete once its time-to-live has passed; :func:`finished` plans that part.
"""

from __future__ import annotations

from apollo_api.podmigration import Phase, PodMigration, PodMigrationStatus
from orchestrator import podinfo
from orchestrator.effects import (
    Delete,
    Effect,
    MachineConfig,
    PatchMeta,
    Plan,
    Report,
    World,
    emit_migration,
    emit_pod,
)
from orchestrator.status import (
    REPORT_RETRY_SECONDS,
    condition,
    fmt_seconds,
    mark,
    set_condition,
    started_at,
    step_time,
)


def finish(
    world: World,
    st: PodMigrationStatus,
    phase: str,
    reason: str,
    message: str,
    effects: list[Effect] | None = None,
) -> Plan:
    """End the migration: final phase, duration and condition, the Events, and the finalizer dropped."""
    m, now = world.migration, world.now
    effects = list(effects or [])
    st.phase = phase
    st.message = message
    mark(st, "finished", now)
    start = started_at(m) or now
    st.duration = fmt_seconds(max(0.0, now - start))
    ctype = {Phase.SUCCEEDED: "Complete", Phase.FAILED: "Failed", Phase.CANCELLED: "Cancelled"}[phase]
    set_condition(st, ctype, "True", reason, message, now)
    kind = "Normal" if phase == Phase.SUCCEEDED else "Warning"
    verb = {Phase.SUCCEEDED: "Migrated", Phase.FAILED: "MigrationFailed", Phase.CANCELLED: "MigrationCancelled"}
    effects.append(emit_migration(m, kind, verb[phase], message))
    # On the replacement once there is one (the pod the user now looks at), else on the source.
    pool = [*world.candidates, *([world.pod] if world.pod is not None else [])]
    subject = next((p for p in pool if st.replacement_pod and podinfo.name(p) == st.replacement_pod), world.pod)
    if subject is not None:
        effects.append(emit_pod(subject, kind, verb[phase], f"PodMigration {m.name}: {message}"))
    effects.append(PatchMeta(remove_finalizer=True))
    return Plan(st, effects, requeue_after=0.0)


def finished(cfg: MachineConfig, world: World, st: PodMigrationStatus) -> Plan:
    """Report to APOLLO until it has the result, drop the finalizer, and delete after the TTL."""
    m, now = world.migration, world.now
    effects: list[Effect] = []
    requeue: float | None = None
    if m.spec.request_id and cfg.reports:
        reported = condition(st, "Reported")
        if reported is None or reported.status != "True":
            retry_at = (podinfo.parse_time(reported.last_transition_time) or 0.0) if reported else 0.0
            if reported is None or now >= retry_at + REPORT_RETRY_SECONDS:
                effects.append(report(m, st, now))
                requeue = REPORT_RETRY_SECONDS
            else:
                requeue = retry_at + REPORT_RETRY_SECONDS - now
    if m.deletion_timestamp:
        effects.append(PatchMeta(remove_finalizer=True))
        return Plan(st, effects, requeue_after=requeue)
    finished = step_time(st, "finished") or now
    expires = finished + cfg.ttl_seconds_after_finished
    if now >= expires:
        # A report still owed is tried once more first; the object goes either way (APOLLO writes an
        # unanswered policy off at its own deadline).
        effects.append(Delete())
        return Plan(st, effects)
    until_ttl = max(0.0, expires - now)
    return Plan(st, effects, requeue_after=until_ttl if requeue is None else min(requeue, until_ttl))


def report(m: PodMigration, st: PodMigrationStatus, now: float) -> Report:
    """The ExecutionResult for APOLLO: outcome, duration, requests freed and step timings as metrics."""
    start = started_at(m) or now
    finished = step_time(st, "finished") or now
    metrics: dict[str, str] = {"phase": st.phase, "migration": m.name}
    if st.requests_before is not None:
        metrics["cpu_request_cores_before"] = f"{st.requests_before.cpu_cores:g}"
        metrics["memory_request_bytes_before"] = str(st.requests_before.memory_bytes)
    if st.requests_after is not None and st.phase == Phase.SUCCEEDED:
        metrics["cpu_request_cores_after"] = f"{st.requests_after.cpu_cores:g}"
        metrics["memory_request_bytes_after"] = str(st.requests_after.memory_bytes)
    if st.requests_before is not None and st.requests_after is not None and st.phase == Phase.SUCCEEDED:
        # Freed on the source node: everything it held there, since the pod now runs elsewhere.
        metrics["cpu_cores_freed_on_source"] = f"{st.requests_before.cpu_cores:g}"
        metrics["memory_bytes_freed_on_source"] = str(st.requests_before.memory_bytes)
        metrics["cpu_cores_not_rerun"] = f"{st.requests_before.cpu_cores - st.requests_after.cpu_cores:g}"
    if st.resumed_from:
        metrics["resumed_from"] = st.resumed_from
    if m.spec.dry_run:
        metrics["dry_run"] = "true"
    for name in ("evictionRequested", "sourceTerminated", "replacementCreated", "scheduled", "running"):
        at = step_time(st, name)
        if at is not None:
            metrics[f"step_{name}_ms"] = str(int(max(0.0, at - start) * 1000))
    failed = next((c for c in st.conditions if c.type in ("Failed", "Cancelled") and c.status == "True"), None)
    return Report(
        request_id=m.spec.request_id,
        success=st.phase == Phase.SUCCEEDED,
        reason="" if st.phase == Phase.SUCCEEDED else f"{failed.reason if failed else st.phase}: {st.message}",
        duration_ms=int(max(0.0, finished - start) * 1000),
        metrics=metrics,
        pod=m.spec.pod_name,
        namespace=m.namespace,
        source_node=st.source_node,
        target_node=st.replacement_node or m.spec.target_node or st.suggested_node,
        migration=m.name,
    )
