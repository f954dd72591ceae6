"""What APOLLO reads from Kubernetes: node capacity and the pods running on each node.

`running_pod_from` / `nodes_from` are pure functions over API objects as plain dicts (tested with real
JSON); `KubeReader` is the thin adapter that lists them (the engine's `ClusterReader`). Migration
decisions need to know which pods exist, who owns them, whether they opted into checkpointing and what
has already completed. The checkpoint label, the migration annotation and the owning workload follow
the rules the whole stack shares (`apollo_api.podmigration`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from apollo.core.domain import ClusterView, NodeCapacity, PodSignature, RunningPod
from apollo_api.podmigration import CHECKPOINT_LABEL, MIGRATION_ANNOTATION, workload_of
from common.kube import api_client
from common.quantity import parse_quantity


def _quantity(value: Any) -> float:
    try:
        return parse_quantity(value) if value not in (None, "") else 0.0
    except ValueError:
        return 0.0


def nodes_from(items: Sequence[Mapping[str, Any]]) -> tuple[dict[str, NodeCapacity], dict[str, dict[str, str]]]:
    capacity: dict[str, NodeCapacity] = {}
    labels: dict[str, dict[str, str]] = {}
    for node in items:
        meta = node.get("metadata") or {}
        name = meta.get("name")
        if not name:
            continue
        alloc = (node.get("status") or {}).get("allocatable") or {}
        capacity[name] = NodeCapacity(
            cpu_cores=_quantity(alloc.get("cpu")),
            memory_bytes=_quantity(alloc.get("memory")),
            gpus=int(_quantity(alloc.get("nvidia.com/gpu"))),
        )
        labels[name] = dict(meta.get("labels") or {})
    return capacity, labels


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
    return RunningPod(
        namespace=meta.get("namespace") or "default",
        name=meta.get("name") or "",
        node=spec["nodeName"],
        owner_kind=kind,
        owner_name=owner,
        cpu_request_cores=cpu,
        memory_request_bytes=mem,
        cpu_usage_cores=signature.cpu_usage_cores if signature else float("nan"),
        memory_usage_bytes=signature.memory_usage_bytes if signature else float("nan"),
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


class KubeReader:
    """Lists nodes and pods each tick (two LISTs; at 5,000 nodes an informer would be the next step)."""

    def __init__(self, core_v1: Any) -> None:
        self.core = core_v1

    @classmethod
    def connect(cls, kubeconfig: str = "") -> KubeReader:
        """From a kubeconfig path, else the pod's service account (the shell's one way to a client)."""
        from kubernetes import client

        return cls(client.CoreV1Api(api_client(kubeconfig)))

    def read(self, signature_of: Callable[[str, str], PodSignature | None]) -> ClusterView:
        api = self.core.api_client
        nodes = [api.sanitize_for_serialization(n) for n in self.core.list_node().items]
        capacity, labels = nodes_from(nodes)
        pods: list[RunningPod] = []
        for raw in self.core.list_pod_for_all_namespaces(field_selector="spec.nodeName!=").items:
            pod = api.sanitize_for_serialization(raw)
            meta = pod.get("metadata") or {}
            running = running_pod_from(pod, signature_of(meta.get("namespace", ""), meta.get("name", "")))
            if running is not None:
                pods.append(running)
        return ClusterView(capacity, labels, tuple(pods))
