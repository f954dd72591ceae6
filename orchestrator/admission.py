"""The Pending phase: pre-flight and admission under the concurrency caps.

A migration is admitted only when the same pre-flight the REST API runs still passes (the pod may
have changed since the request) and no cap is reached: cluster-wide, per namespace, per workload and
per node, counting every migration already admitted. Of two migrations of one pod, the older (or the
already admitted) one wins. Nothing has been touched when this phase refuses, so a refusal ends the
migration with the pod as it was; a cap only makes it wait, until its deadline.
"""

from __future__ import annotations

from collections.abc import Sequence

from apollo_api.podmigration import (
    POD_NAME_LABEL,
    POD_UID_LABEL,
    SUGGESTED_NODE_ANNOTATION,
    Phase,
    PodMigration,
    PodMigrationStatus,
    workload_of,
)
from common.errors import DomainError
from orchestrator import podinfo
from orchestrator.config import CapSettings
from orchestrator.effects import Effect, Json, MachineConfig, PatchMeta, Plan, World, emit_migration
from orchestrator.finishing import finish
from orchestrator.preflight import SPEC_FIELDS, preflight
from orchestrator.status import deadline_of, mark, set_condition

ADMITTED = (Phase.CAPTURING, Phase.EVICTING, Phase.RESCHEDULING)


def workload_key(namespace: str, kind: str, name: str, pod_name: str) -> str:
    return f"{namespace}/{kind}/{name}" if kind else f"{namespace}/Pod/{pod_name}"


def _migration_workload(m: PodMigration) -> str:
    return workload_key(m.namespace, m.status.owner_kind, m.status.owner_name, m.spec.pod_name)


def _nodes_of(m: PodMigration) -> set[str]:
    return {n for n in (m.status.source_node, m.spec.target_node or m.status.suggested_node) if n}


def _admission_block(m: PodMigration, world: World, caps: CapSettings, pod: Json) -> str:
    """Which cap holds this migration back, or ""."""
    admitted = [
        o
        for o in world.migrations
        if o.status.phase in ADMITTED and not o.spec.dry_run and (o.namespace, o.name) != (m.namespace, m.name)
    ]
    if len(admitted) >= caps.total:
        return f"{len(admitted)} migration(s) in progress cluster-wide, the cap is {caps.total}"
    in_ns = sum(o.namespace == m.namespace for o in admitted)
    if in_ns >= caps.per_namespace:
        return f"{in_ns} migration(s) in progress in namespace {m.namespace}, the cap is {caps.per_namespace}"
    kind, wname, _ = workload_of(pod)
    key = workload_key(m.namespace, kind, wname, m.spec.pod_name)
    in_workload = sum(_migration_workload(o) == key for o in admitted)
    if in_workload >= caps.per_workload:
        return f"{in_workload} migration(s) of workload {key} in progress, the cap is {caps.per_workload}"
    for node in {podinfo.node_of(pod), m.spec.target_node} - {""}:
        on_node = sum(node in _nodes_of(o) for o in admitted)
        if on_node >= caps.per_node:
            return f"{on_node} migration(s) in progress on node {node}, the cap is {caps.per_node}"
    return ""


def _older_or_admitted(m: PodMigration, others: Sequence[PodMigration]) -> list[PodMigration]:
    """The migrations that win over `m` for the same pod: a Pending one created later never does."""
    mine = (podinfo.parse_time(m.creation_timestamp) or 0.0, m.name)
    out = []
    for o in others:
        if o.status.phase == Phase.PENDING and (podinfo.parse_time(o.creation_timestamp) or 0.0, o.name) > mine:
            continue
        out.append(o)
    return out


def _refusal_reason(error: DomainError) -> tuple[str, str]:
    """(condition reason, message naming the spec field): the REST API's `target_node` reads spec.targetNode."""
    message = error.message
    if error.field and message.startswith(f"{error.field}: "):
        message = message[len(error.field) + 2 :]
    where = SPEC_FIELDS.get(error.field, error.field)
    return type(error).__name__, f"{where}: {message}" if where else message


def pending(cfg: MachineConfig, world: World, st: PodMigrationStatus) -> Plan:
    """Pre-flight, then admission under the caps; admitted, the pod's identity is recorded and capture begins."""
    m, now, pod = world.migration, world.now, world.pod
    refusal = preflight(m.spec, m.namespace, pod, world.nodes, _older_or_admitted(m, world.migrations), exclude=m.name)
    if refusal is not None:
        reason, message = _refusal_reason(refusal)
        return finish(world, st, Phase.FAILED, reason, f"{message}; nothing was touched")
    assert pod is not None
    deadline = deadline_of(m)
    if not m.spec.dry_run:
        block = _admission_block(m, world, cfg.caps, pod)
        if block:
            if deadline is not None and now >= deadline:
                return finish(world, st, Phase.FAILED, "Timeout", f"no migration slot before the deadline ({block})")
            set_condition(st, "Admitted", "False", "CapReached", block, now)
            st.message = f"waiting for a migration slot: {block}"
            return Plan(st, requeue_after=cfg.cap_retry_seconds)
    kind, wname, owner_uid = workload_of(pod)
    st.phase = Phase.CAPTURING
    st.pod_uid = podinfo.uid(pod)
    st.source_node = podinfo.node_of(pod)
    st.owner_kind, st.owner_name, st.owner_uid = kind, wname, owner_uid
    st.job_completion_index = podinfo.job_index(pod) if kind == "Job" else ""
    st.suggested_node = st.suggested_node or m.annotations.get(SUGGESTED_NODE_ANNOTATION, "")
    mark(st, "accepted", now)
    set_condition(st, "Admitted", "True", "Admitted", "pre-flight passed; a migration slot is held", now)
    st.message = f"capturing {m.spec.pod_name} on {st.source_node}"
    effects: list[Effect] = [
        PatchMeta(
            labels={POD_UID_LABEL: st.pod_uid, POD_NAME_LABEL: m.spec.pod_name[:63]},
            add_finalizer=not owner_uid and not m.spec.dry_run,
        ),
        emit_migration(m, "Normal", "Accepted", f"migrating pod {m.spec.pod_name} from {st.source_node}"),
    ]
    return Plan(st, effects, requeue_after=0.0)
