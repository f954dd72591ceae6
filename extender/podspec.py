"""What the extender needs to know about a pod, read from its (JSON) spec.

Pure functions over the dict kube-scheduler sends, so they are tested with real Pod JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common.quantity import parse_quantity


@dataclass(frozen=True)
class PodDemand:
    """The pod's effective requests and the nodes its required affinity pins it to."""

    namespace: str
    name: str
    uid: str
    cpu_cores: float
    memory_bytes: float
    gpus: int
    pinned_nodes: frozenset[str]


def _requests(containers: list[dict[str, Any]]) -> list[tuple[float, float, float]]:
    out = []
    for c in containers or []:
        req = ((c.get("resources") or {}).get("requests")) or {}
        out.append(
            (
                parse_quantity(req.get("cpu", 0)),
                parse_quantity(req.get("memory", 0)),
                parse_quantity(req.get("nvidia.com/gpu", 0)),
            )
        )
    return out


def pinned_nodes(pod: dict[str, Any]) -> frozenset[str]:
    """The node a *required* node affinity pins the pod to, when it names exactly one.

    One named node was chosen on purpose (a migration target, an operator's pin), so predicted load
    alone must never filter it out: it is scored instead. A choice among several nodes is an
    ordinary candidate set, and load may filter within it.
    """
    affinity = ((pod.get("spec") or {}).get("affinity") or {}).get("nodeAffinity") or {}
    required = affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or {}
    names: set[str] = set()
    for term in required.get("nodeSelectorTerms") or []:
        for expr in term.get("matchFields") or []:
            if expr.get("key") == "metadata.name" and expr.get("operator") == "In":
                names.update(expr.get("values") or [])
        for expr in term.get("matchExpressions") or []:
            if expr.get("key") == "kubernetes.io/hostname" and expr.get("operator") == "In":
                names.update(expr.get("values") or [])
    node_name = (pod.get("spec") or {}).get("nodeName")
    if node_name:
        names.add(node_name)
    return frozenset(names) if len(names) == 1 else frozenset()


def pod_demand(pod: dict[str, Any]) -> PodDemand:
    """Effective requests: the sum over containers, or the largest init container if that is more.

    Malformed quantities raise ValueError, which the caller turns into a protocol error.
    """
    spec = pod.get("spec") or {}
    meta = pod.get("metadata") or {}
    main = _requests(spec.get("containers") or [])
    init = _requests(spec.get("initContainers") or [])
    totals = [sum(r[i] for r in main) for i in range(3)]
    for i in range(3):
        totals[i] = max([totals[i], *(r[i] for r in init)])
    return PodDemand(
        namespace=meta.get("namespace") or "default",
        name=meta.get("name") or "",
        uid=meta.get("uid") or "",
        cpu_cores=totals[0],
        memory_bytes=totals[1],
        gpus=int(totals[2]),
        pinned_nodes=pinned_nodes(pod),
    )
