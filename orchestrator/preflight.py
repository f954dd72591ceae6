"""Pre-flight checks of a migration request: pure functions over plain Kubernetes JSON.

Two callers need the same verdicts: the REST API, which must refuse bad requests with a 4xx before it
creates anything, and the controller, which must refuse a PodMigration created some other way
(kubectl, APOLLO's policy) with a status condition before it touches the pod. Both pass what they
read from the API server (the pod, the nodes the request names, the migrations that exist) and get
back either nothing or one typed refusal from `common.errors` whose `field` names the culprit, so
a refusal reads the same over REST, in a condition and in the logs.

`field` uses the REST request's names (`pod_name`, `source_node`, `target_node`, `timeout`);
`SPEC_FIELDS` maps them to the PodMigration spec for a condition message.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from apollo_api.podmigration import (
    MAX_TIMEOUT_SECONDS,
    MIN_TIMEOUT_SECONDS,
    PodMigration,
    PodMigrationSpec,
)
from common.errors import Conflict, DomainError, NotFound, Unprocessable

SPEC_FIELDS = {
    "pod_name": "spec.podName",
    "source_node": "spec.sourceNode",
    "target_node": "spec.targetNode",
    "timeout": "spec.timeoutSeconds",
}

# The kubelet marks the API server's copy of a static pod (a "mirror pod") with this annotation; the
# pod itself lives in a manifest file on the node, so evicting the mirror achieves nothing.
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
CONFIG_SOURCE_ANNOTATION = "kubernetes.io/config.source"


def check_spec(spec: PodMigrationSpec) -> DomainError | None:
    """What can be refused from the request alone, before anything is read from the cluster."""
    if not spec.pod_name:
        return Unprocessable("pod_name: must name the pod to migrate", field="pod_name")
    timeout = spec.timeout_seconds
    if isinstance(timeout, bool) or not isinstance(timeout, int):
        return Unprocessable(f"timeout must be an integer number of seconds, got {timeout!r}", field="timeout")
    if not MIN_TIMEOUT_SECONDS <= timeout <= MAX_TIMEOUT_SECONDS:
        return Unprocessable(
            f"timeout must be between {MIN_TIMEOUT_SECONDS} and {MAX_TIMEOUT_SECONDS} seconds, got {timeout}",
            field="timeout",
        )
    if spec.source_node and spec.source_node == spec.target_node:
        return Unprocessable(
            f"source_node and target_node are both {spec.source_node!r}: a migration must move the pod",
            field="target_node",
        )
    return None


def controller_of(pod: Mapping[str, Any]) -> tuple[str, str]:
    """(kind, name) of the pod's controlling owner reference; ("", "") for a bare pod."""
    for owner in (pod.get("metadata") or {}).get("ownerReferences") or []:
        if owner.get("controller"):
            return str(owner.get("kind", "")), str(owner.get("name", ""))
    return "", ""


def unmovable_reason(pod: Mapping[str, Any]) -> str:
    """Why this pod can never be migrated (a DaemonSet or static pod, finished, going away), or "".

    Shared with batch planning, which skips such pods with this reason instead of refusing the batch.
    """
    meta = pod.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    kind, name = controller_of(pod)
    if kind == "DaemonSet":
        return f"belongs to DaemonSet {name}, which runs one pod on every node: it cannot move"
    if MIRROR_ANNOTATION in annotations or kind == "Node" or annotations.get(CONFIG_SOURCE_ANNOTATION, "api") != "api":
        return "is a static pod (its manifest lives on the node and the kubelet runs it there): it cannot move"
    if meta.get("deletionTimestamp"):
        return "is being deleted"
    phase = (pod.get("status") or {}).get("phase", "")
    if phase in ("Succeeded", "Failed"):
        return f"has finished (phase {phase}): there is nothing left to move"
    if not (pod.get("spec") or {}).get("nodeName"):
        return "is not scheduled to a node yet: there is nothing to move"
    return ""


def active_migration_of(
    namespace: str, pod: Mapping[str, Any], migrations: Iterable[PodMigration], *, exclude: str = ""
) -> PodMigration | None:
    """The active migration of this pod other than `exclude` (by name, or by UID once captured)."""
    meta = pod.get("metadata") or {}
    name, uid = str(meta.get("name", "")), str(meta.get("uid", ""))
    for m in migrations:
        if m.namespace != namespace or m.name == exclude or not m.active:
            continue
        if m.spec.pod_name == name or (uid and m.status.pod_uid == uid):
            return m
    return None


def _node_refusal(field: str, node_name: str, nodes: Mapping[str, Mapping[str, Any]]) -> DomainError | None:
    node = nodes.get(node_name)
    if node is None:
        return NotFound(f"{field}: node {node_name!r} does not exist", field=field)
    if field == "target_node" and (node.get("spec") or {}).get("unschedulable"):
        return Unprocessable(
            f"{field}: node {node_name!r} is cordoned (spec.unschedulable): the pod could not be placed there",
            field=field,
        )
    return None


def preflight(
    spec: PodMigrationSpec,
    namespace: str,
    pod: Mapping[str, Any] | None,
    nodes: Mapping[str, Mapping[str, Any]],
    migrations: Iterable[PodMigration],
    *,
    exclude: str = "",
) -> DomainError | None:
    """The first reason this migration must not start, or None.

    `pod` is the pod as the API server returns it (None: not found); `nodes` holds at least the nodes
    the spec names that exist (a missing key means the node does not exist); `migrations` the
    PodMigrations of the namespace; `exclude` the name of the migration being checked (the controller
    checks an object that already exists).
    """
    refusal = check_spec(spec)
    if refusal is not None:
        return refusal
    if pod is None:
        return NotFound(f"pod_name: pod {namespace}/{spec.pod_name} does not exist", field="pod_name")
    reason = unmovable_reason(pod)
    if reason:
        return Unprocessable(f"pod_name: pod {namespace}/{spec.pod_name} {reason}", field="pod_name")
    current = str((pod.get("spec") or {}).get("nodeName", ""))
    if spec.source_node:
        refusal = _node_refusal("source_node", spec.source_node, nodes)
        if refusal is not None:
            return refusal
        if spec.source_node != current:
            return Unprocessable(
                f"source_node: pod {namespace}/{spec.pod_name} runs on node {current!r}, not on {spec.source_node!r}",
                field="source_node",
            )
    if spec.target_node:
        if spec.target_node == current:
            return Unprocessable(
                f"target_node: pod {namespace}/{spec.pod_name} already runs on node {current!r}: the target "
                "must differ from the source",
                field="target_node",
            )
        refusal = _node_refusal("target_node", spec.target_node, nodes)
        if refusal is not None:
            return refusal
    other = active_migration_of(namespace, pod, migrations, exclude=exclude)
    if other is not None:
        return Conflict(
            f"pod_name: pod {namespace}/{spec.pod_name} is already migrating: migration "
            f"{other.namespace}.{other.name} is {other.status.phase}",
            field="pod_name",
        )
    return None
