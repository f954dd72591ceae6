"""Kubernetes API objects as APOLLO's domain values: pure functions over the objects' JSON as plain dicts.

Migration decisions need to know which pods exist, who owns them, whether they opted into checkpointing
and what has already completed; capacity comes from each node's allocatable. The checkpoint label, the
migration annotation and the owning workload follow the rules the whole stack shares
(`apollo_api.podmigration`). Tested with real JSON; the watch adapter (`apollo.adapters.kubernetes`)
converts each object once per event.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from apollo.core.domain import NodeCapacity, PodSignature, RunningPod
from apollo_api.podmigration import CHECKPOINT_LABEL, MIGRATION_ANNOTATION, workload_of
from common.quantity import parse_quantity


def _quantity(value: Any) -> float:
    try:
        return parse_quantity(value) if value not in (None, "") else 0.0
    except ValueError:
        return 0.0


def node_from(node: Mapping[str, Any]) -> tuple[str, NodeCapacity, dict[str, str]] | None:
    """Name, allocatable and labels of one node; None without a name."""
    meta = node.get("metadata") or {}
    name = meta.get("name")
    if not name:
        return None
    alloc = (node.get("status") or {}).get("allocatable") or {}
    capacity = NodeCapacity(
        cpu_cores=_quantity(alloc.get("cpu")),
        memory_bytes=_quantity(alloc.get("memory")),
        gpus=int(_quantity(alloc.get("nvidia.com/gpu"))),
    )
    return str(name), capacity, dict(meta.get("labels") or {})


def nodes_from(items: Sequence[Mapping[str, Any]]) -> tuple[dict[str, NodeCapacity], dict[str, dict[str, str]]]:
    capacity: dict[str, NodeCapacity] = {}
    labels: dict[str, dict[str, str]] = {}
    for node in items:
        converted = node_from(node)
        if converted is not None:
            name, capacity[name], labels[name] = converted
    return capacity, labels


def usage_of(signature: PodSignature | None) -> tuple[float, float]:
    """The pod's measured cpu cores and memory bytes as its signature says; NaN unknown.

    Always the same NaN object, so two conversions of an unchanged pod compare equal.
    """
    if signature is None:
        return math.nan, math.nan
    return signature.cpu_usage_cores, signature.memory_usage_bytes


def running_pod_from(pod: Mapping[str, Any], signature: PodSignature | None = None) -> RunningPod | None:
    """A bound, live pod as the policy sees it; None for unbound, finished or terminating pods.

    Checkpointed = carries the checkpoint opt-in label; migrating = carries the orchestrator's migration
    annotation (so the policy never picks it twice).
    """
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    if not spec.get("nodeName") or meta.get("deletionTimestamp") or status.get("phase") in ("Succeeded", "Failed"):
        return None
    containers = spec.get("containers") or []
    cpu = sum(_quantity(((c.get("resources") or {}).get("requests") or {}).get("cpu")) for c in containers)
    mem = sum(_quantity(((c.get("resources") or {}).get("requests") or {}).get("memory")) for c in containers)
    gpus = sum(_quantity(((c.get("resources") or {}).get("requests") or {}).get("nvidia.com/gpu")) for c in containers)
    statuses = status.get("containerStatuses") or []
    completed = sum(1 for s in statuses if ((s.get("state") or {}).get("terminated") or {}).get("exitCode") == 0)
    kind, owner, _ = workload_of(pod)
    labels = dict(meta.get("labels") or {})
    pvcs = tuple(
        v["persistentVolumeClaim"]["claimName"] for v in spec.get("volumes") or [] if v.get("persistentVolumeClaim")
    )
    cpu_usage, memory_usage = usage_of(signature)
    return RunningPod(
        namespace=meta.get("namespace") or "default",
        name=meta.get("name") or "",
        node=spec["nodeName"],
        owner_kind=kind,
        owner_name=owner,
        cpu_request_cores=cpu,
        memory_request_bytes=mem,
        cpu_usage_cores=cpu_usage,
        memory_usage_bytes=memory_usage,
        gpus=int(gpus),
        checkpointed=labels.get(CHECKPOINT_LABEL, "").lower() in ("true", "enabled", "1"),
        priority=int(spec.get("priority") or 0),
        restarts=sum(int(s.get("restartCount") or 0) for s in statuses),
        completed_fraction=completed / len(containers) if containers else 0.0,
        is_migrating=MIGRATION_ANNOTATION in (meta.get("annotations") or {}),
        labels=labels,
        pvc_names=pvcs,
        signature=signature,
    )
