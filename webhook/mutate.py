"""The admission decision for one pod (pure): what to patch, what to warn about, which claim to create.

Three steps, in this order, on one `PatchBuilder`, so every path is computed on the pod as already patched:

1. A replacement pod of an active migration (see `webhook.match`) loses the containers that had completed
   in the original pod (`migrate: false` in the migration's captured states), never all of them and never
   a sidecar (an init container with `restartPolicy: Always`); optionally also completed init containers
   whose output is on the checkpoint claim.
2. An opted-in pod (the opt-in label), or a replacement whose migration names a claim, gets the checkpoint
   claim of its workload: a volume, a mount at the configured path in the chosen containers (the
   `apollo.io/checkpoint-containers` annotation, default every container) and `CHECKPOINT_DIR`. A pod that
   already carries the volume is left alone, which is also what makes a re-invocation a no-op.
3. The replacement gets node affinity for the migration's target (required when the requester named one,
   preferred towards the suggested node and away from the source otherwise) and the
   `apollo.io/migration` annotation.

Every step checks what the pod already has before adding, so running the decision on its own output adds
nothing: the patch is idempotent when the API server re-invokes the webhook.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from apollo_api.podmigration import (
    CHECKPOINT_CONTAINERS_ANNOTATION,
    CHECKPOINT_ENV,
    CHECKPOINT_VOLUME,
    MIGRATION_ANNOTATION,
    PodMigration,
    checkpoint_claim_name,
    workload_of,
)
from webhook.match import find_migration
from webhook.patch import PatchBuilder

NODE_NAME_FIELD = "metadata.name"
_NODE_AFFINITY = ("spec", "affinity", "nodeAffinity")
_REQUIRED = (*_NODE_AFFINITY, "requiredDuringSchedulingIgnoredDuringExecution", "nodeSelectorTerms")
_PREFERRED = (*_NODE_AFFINITY, "preferredDuringSchedulingIgnoredDuringExecution")


class Mutation:
    """Kinds counted in `apollo_webhook_mutations_total`."""

    CHECKPOINT = "checkpoint_volume"
    STRIP_CONTAINERS = "strip_containers"
    STRIP_INIT_CONTAINERS = "strip_init_containers"
    REQUIRED_AFFINITY = "required_affinity"
    PREFERRED_AFFINITY = "preferred_affinity"
    ANNOTATION = "migration_annotation"


class Skip:
    """Reasons counted in `apollo_webhook_skips_total` (nothing, or less than asked, was done)."""

    NOT_CREATE = "not_create"
    EXCLUDED_NAMESPACE = "excluded_namespace"
    NOT_SELECTED = "not_opted_in"
    HAS_VOLUME = "volume_present"
    NO_STABLE_NAME = "no_stable_claim_name"
    ALL_COMPLETED = "all_containers_completed"
    CONTAINER_CONFLICT = "container_conflict"
    UNKNOWN_CONTAINER = "unknown_container"
    MIGRATIONS_NOT_SYNCED = "migrations_not_synced"
    NODE_NAME_SET = "node_name_set"


@dataclass(frozen=True)
class Policy:
    """The settings the decision reads (a plain value, so the decision needs no settings tree)."""

    opt_in_label: str
    opt_in_value: str
    mount_path: str
    excluded_namespaces: frozenset[str] = frozenset()
    strip_completed_init_containers: bool = False
    suggested_weight: int = 100
    avoid_source_weight: int = 50


@dataclass(frozen=True)
class ClaimRequest:
    """A checkpoint claim the pod references, to be created off the admission path when missing."""

    namespace: str
    name: str
    workload_kind: str
    workload_name: str


@dataclass
class Decision:
    patch: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    mutations: list[str] = field(default_factory=list)
    skips: list[str] = field(default_factory=list)
    claim: ClaimRequest | None = None
    migration: str = ""

    def skip(self, reason: str, warning: str = "") -> None:
        self.skips.append(reason)
        if warning:
            self.warnings.append(warning)


def _is_sidecar(container: Mapping[str, Any]) -> bool:
    return container.get("restartPolicy") == "Always"


def _names(containers: Iterable[Mapping[str, Any]]) -> list[str]:
    return [str(c.get("name")) for c in containers]


def opted_in(pod: Mapping[str, Any], policy: Policy) -> bool:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return bool(labels.get(policy.opt_in_label) == policy.opt_in_value)


def decide(
    pod: Mapping[str, Any],
    namespace: str,
    migrations: Sequence[PodMigration],
    policy: Policy,
    *,
    operation: str = "CREATE",
    migrations_synced: bool = True,
    owned: bool = False,
) -> Decision:
    """What to do with `pod`, created in `namespace`, given the namespace's active migrations.

    With `owned`, `pod` is patched in place (the caller decoded it for this call and keeps no other use).
    """
    decision = Decision()
    if operation != "CREATE":
        decision.skip(Skip.NOT_CREATE, f"{operation} requests are not patched; the pod is admitted unchanged")
        return decision
    if namespace in policy.excluded_namespaces:
        decision.skip(Skip.EXCLUDED_NAMESPACE)
        return decision
    selected = opted_in(pod, policy)
    migration = find_migration(pod, migrations)
    if not migrations_synced and selected:
        decision.skip(
            Skip.MIGRATIONS_NOT_SYNCED,
            "PodMigration objects not read yet: if this pod replaces a migrating one, it is not patched",
        )
    if not selected and migration is None:
        decision.skip(Skip.NOT_SELECTED)
        return decision
    builder = PatchBuilder(pod, owned=owned)
    attach = selected or (migration is not None and bool(migration.status.checkpoint_pvc))
    mounted = _mount_targets(builder, policy, decision) if attach else set()
    if migration is not None:
        decision.migration = migration.name
        _strip_completed(builder, migration, mounted, policy, decision)
    if attach:
        _attach_checkpoint(builder, namespace, migration, mounted, policy, decision)
    if migration is not None:
        _steer(builder, migration, policy, decision)
        annotations = builder.get(("metadata", "annotations")) or {}
        if annotations.get(MIGRATION_ANNOTATION) != migration.name:
            builder.set(("metadata", "annotations", MIGRATION_ANNOTATION), migration.name)
            decision.mutations.append(Mutation.ANNOTATION)
    decision.patch = builder.ops
    return decision


def _mount_targets(builder: PatchBuilder, policy: Policy, decision: Decision) -> set[str]:
    """Names of the containers (and init containers) that get the checkpoint mount."""
    every = set(_names(builder.get(("spec", "containers")) or []))
    every |= set(_names(builder.get(("spec", "initContainers")) or []))
    chosen = (builder.get(("metadata", "annotations")) or {}).get(CHECKPOINT_CONTAINERS_ANNOTATION)
    if chosen is None:
        return every
    wanted = {n.strip() for n in str(chosen).split(",") if n.strip()}
    unknown = sorted(wanted - every)
    if unknown:
        decision.skip(
            Skip.UNKNOWN_CONTAINER,
            f"{CHECKPOINT_CONTAINERS_ANNOTATION} names containers the pod does not have: {', '.join(unknown)}",
        )
    return wanted & every


def _on_claim(container: Mapping[str, Any], mounted: set[str]) -> bool:
    """The container writes to the checkpoint claim: it mounts it already, or will be given the mount."""
    mounts = container.get("volumeMounts") or []
    return container.get("name") in mounted or any(m.get("name") == CHECKPOINT_VOLUME for m in mounts)


def _strip_completed(
    builder: PatchBuilder, migration: PodMigration, mounted: set[str], policy: Policy, decision: Decision
) -> None:
    status = migration.status
    containers = builder.get(("spec", "containers")) or []
    completed = status.completed_containers
    doomed = [i for i, c in enumerate(containers) if c.get("name") in completed]
    if doomed and len(doomed) == len(containers):
        decision.skip(
            Skip.ALL_COMPLETED,
            f"every container of the original pod had completed; none removed (migration {migration.name})",
        )
    elif doomed:
        for index in reversed(doomed):
            builder.remove(("spec", "containers", index))
        decision.mutations.append(Mutation.STRIP_CONTAINERS)
    if not policy.strip_completed_init_containers:
        return
    sidecars_in_status = {c.name for c in status.containers if c.init and c.sidecar}
    completed_init = status.completed_init_containers - sidecars_in_status
    inits = builder.get(("spec", "initContainers")) or []
    doomed = [
        i
        for i, c in enumerate(inits)
        if c.get("name") in completed_init and _on_claim(c, mounted) and not _is_sidecar(c)
    ]
    for index in reversed(doomed):
        builder.remove(("spec", "initContainers", index))
    if doomed:
        decision.mutations.append(Mutation.STRIP_INIT_CONTAINERS)
        if not builder.get(("spec", "initContainers")):
            builder.remove(("spec", "initContainers"))


def _claim_name(pod: Mapping[str, Any], migration: PodMigration | None) -> tuple[str, str, str]:
    """(claim, workload kind, workload name); an empty claim when no stable name exists."""
    kind, name, _uid = workload_of(pod)
    if migration is not None and migration.status.checkpoint_pvc:
        return migration.status.checkpoint_pvc, kind or migration.status.owner_kind, name or migration.status.owner_name
    pod_name = str((pod.get("metadata") or {}).get("name") or "")
    if kind and name and (kind != "StatefulSet" or pod_name):
        return checkpoint_claim_name(pod_name, kind, name), kind, name
    if not kind and pod_name:
        return checkpoint_claim_name(pod_name), "Pod", pod_name
    return "", kind, name


def _attach_checkpoint(
    builder: PatchBuilder,
    namespace: str,
    migration: PodMigration | None,
    mounted: set[str],
    policy: Policy,
    decision: Decision,
) -> None:
    volumes = builder.get(("spec", "volumes")) or []
    if any(v.get("name") == CHECKPOINT_VOLUME for v in volumes):
        decision.skip(Skip.HAS_VOLUME)
        return
    claim, kind, name = _claim_name(builder.document, migration)
    if not claim:
        decision.skip(
            Skip.NO_STABLE_NAME,
            "a pod without a controller and without metadata.name (generateName only) has no stable checkpoint "
            "claim; set metadata.name to opt it in",
        )
        return
    targets: list[tuple[tuple[str, int], Mapping[str, Any]]] = []
    for group in ("initContainers", "containers"):
        for index, container in enumerate(builder.get(("spec", group)) or []):
            if container.get("name") in mounted:
                targets.append(((group, index), container))
    mounting: list[tuple[str, int]] = []
    for (group, index), container in targets:
        mounts = container.get("volumeMounts") or []
        clash = next((m for m in mounts if m.get("mountPath") == policy.mount_path), None)
        if clash is not None:
            decision.skip(
                Skip.CONTAINER_CONFLICT,
                f"container {container.get('name')} already mounts {clash.get('name')} at {policy.mount_path}; "
                "checkpoint not mounted there",
            )
            continue
        mounting.append((group, index))
    if not mounting:
        decision.skip(Skip.CONTAINER_CONFLICT, "no container can take the checkpoint mount; no claim attached")
        return
    builder.append(("spec", "volumes"), {"name": CHECKPOINT_VOLUME, "persistentVolumeClaim": {"claimName": claim}})
    for group, index in mounting:
        path = ("spec", group, index)
        builder.append((*path, "volumeMounts"), {"name": CHECKPOINT_VOLUME, "mountPath": policy.mount_path})
        env = builder.get((*path, "env")) or []
        existing = next((e for e in env if e.get("name") == CHECKPOINT_ENV), None)
        if existing is None:
            builder.append((*path, "env"), {"name": CHECKPOINT_ENV, "value": policy.mount_path})
        elif existing.get("value") != policy.mount_path:
            decision.warnings.append(
                f"container {builder.get((*path, 'name'))} sets {CHECKPOINT_ENV} itself; kept, while the "
                f"checkpoint is mounted at {policy.mount_path}"
            )
    decision.mutations.append(Mutation.CHECKPOINT)
    decision.claim = ClaimRequest(namespace, claim, kind or "Pod", name)


def _term_has(term: Mapping[str, Any], operator: str, node: str) -> bool:
    return any(
        f.get("key") == NODE_NAME_FIELD and f.get("operator") == operator and f.get("values") == [node]
        for f in term.get("matchFields") or []
    )


def _steer(builder: PatchBuilder, migration: PodMigration, policy: Policy, decision: Decision) -> None:
    node_name = builder.get(("spec", "nodeName"))
    if node_name:
        decision.skip(
            Skip.NODE_NAME_SET,
            f"spec.nodeName is already {node_name}; node affinity for migration {migration.name} has no effect",
        )
    target = migration.spec.target_node
    source = migration.status.source_node or migration.spec.source_node
    if target:
        _require_node(builder, target, decision)
        return
    added = False
    if migration.status.suggested_node and migration.status.suggested_node != source:
        added |= _prefer(builder, "In", migration.status.suggested_node, policy.suggested_weight)
    if source:
        added |= _prefer(builder, "NotIn", source, policy.avoid_source_weight)
    if added:
        decision.mutations.append(Mutation.PREFERRED_AFFINITY)


def _require_node(builder: PatchBuilder, node: str, decision: Decision) -> None:
    """Pin to `node`: its field requirement joins every existing term (terms are ORed, requirements ANDed)."""
    requirement = {"key": NODE_NAME_FIELD, "operator": "In", "values": [node]}
    terms = builder.get(_REQUIRED) or []
    if not terms:
        builder.set(_REQUIRED, [{"matchFields": [requirement]}])
        decision.mutations.append(Mutation.REQUIRED_AFFINITY)
        return
    changed = False
    for index, term in enumerate(terms):
        if not _term_has(term, "In", node):
            builder.append((*_REQUIRED, index, "matchFields"), requirement)
            changed = True
    if changed:
        decision.mutations.append(Mutation.REQUIRED_AFFINITY)


def _prefer(builder: PatchBuilder, operator: str, node: str, weight: int) -> bool:
    preferred = builder.get(_PREFERRED) or []
    if any(_term_has(p.get("preference") or {}, operator, node) for p in preferred):
        return False
    builder.append(
        _PREFERRED,
        {
            "weight": weight,
            "preference": {"matchFields": [{"key": NODE_NAME_FIELD, "operator": operator, "values": [node]}]},
        },
    )
    return True
