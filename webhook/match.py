"""Which active PodMigration, if any, a new pod is the replacement of (pure).

The rule is the contract in `apollo_api.podmigration`: in the pod's namespace, a migration whose phase is
in `Phase.REPLACING` (the original is being evicted or is gone) claims the new pod when

* the pod's controller owner UID equals `status.ownerUID`, and, for workloads whose pods have an identity,
  that identity matches: a StatefulSet's pod keeps its name (`spec.podName`), an Indexed Job's pod keeps
  its completion index (`status.jobCompletionIndex`) under a new name; or
* the pod has no controller and its name equals `spec.podName` (the orchestrator re-creates a bare pod
  from `status.podTemplate` under the same name); or
* the pod already names the migration in its `apollo.io/migration` annotation (set by the orchestrator on
  a re-created bare pod, or by this webhook on an earlier invocation for the same pod).

`metadata.name` may still be empty at admission (`generateName`), which is why ReplicaSet and Job pods
are matched by owner and index, never by name. When several migrations claim one pod (two pods of one
ReplicaSet moved at once), the one still waiting for its replacement and evicted first wins: the
orchestrator records `status.replacementPod` once it has seen one, so the second new pod goes to the
second migration.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from apollo_api.podmigration import JOB_INDEX_ANNOTATION, MIGRATION_ANNOTATION, Phase, PodMigration


def controller_of(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The owner reference with `controller: true`, if any."""
    for owner in (pod.get("metadata") or {}).get("ownerReferences") or []:
        if isinstance(owner, Mapping) and owner.get("controller"):
            return owner
    return None


def completion_index(pod: Mapping[str, Any]) -> str:
    """An Indexed Job pod's completion index: the annotation, or the label of the same name (1.28+)."""
    meta = pod.get("metadata") or {}
    value = (meta.get("annotations") or {}).get(JOB_INDEX_ANNOTATION)
    if value is None:
        value = (meta.get("labels") or {}).get(JOB_INDEX_ANNOTATION)
    return "" if value is None else str(value)


def replacing(migration: PodMigration) -> bool:
    return migration.status.phase in Phase.REPLACING and not migration.deletion_timestamp


def about_to_replace(pod: Mapping[str, Any], migrations: Iterable[PodMigration]) -> bool:
    """A migration of this pod's workload is active but, as far as memory knows, not evicting yet.

    The orchestrator writes the Evicting phase before it calls the Eviction API, so a replacement can
    only be admitted after that write; if memory still shows an earlier phase, the watch event is in
    flight and worth a short wait (see `migrations.phase_wait_ms`).
    """
    return any(m.active and not replacing(m) and _claims(m, pod) for m in migrations)


def _claims(migration: PodMigration, pod: Mapping[str, Any]) -> bool:
    status, spec = migration.status, migration.spec
    meta = pod.get("metadata") or {}
    owner = controller_of(pod)
    if owner is None:
        return not status.owner_uid and bool(spec.pod_name) and meta.get("name") == spec.pod_name
    if not status.owner_uid or owner.get("uid") != status.owner_uid:
        return False
    if owner.get("kind") == "StatefulSet":
        return bool(meta.get("name")) and meta.get("name") == spec.pod_name
    if status.job_completion_index:
        return completion_index(pod) == status.job_completion_index
    return True


def _rank(migration: PodMigration) -> tuple[bool, str, str, str]:
    """Waiting for a replacement first, then the earliest eviction, then the oldest, then by name."""
    evicted = migration.status.steps.get("evictionRequested") or migration.status.steps.get("evicted") or "~"
    return bool(migration.status.replacement_pod), evicted, migration.creation_timestamp or "~", migration.name


def find_migration(pod: Mapping[str, Any], migrations: Iterable[PodMigration]) -> PodMigration | None:
    """The migration `pod` replaces, from the active migrations of the pod's namespace."""
    candidates = [m for m in migrations if replacing(m)]
    if not candidates:
        return None
    named = ((pod.get("metadata") or {}).get("annotations") or {}).get(MIGRATION_ANNOTATION)
    if named:
        for migration in candidates:
            if migration.name == named:
                return migration
    claiming = [m for m in candidates if _claims(m, pod)]
    return min(claiming, key=_rank) if claiming else None
