"""Can the target take the pod, and which node if nobody named one: the capacity side of a migration.

The controller checks the target before it evicts anything, so a migration that cannot land fails
with the pod untouched. It applies the scheduler's hard rules that a wrong guess would turn into a
Pending replacement: node readiness and cordon, nodeSelector and required node affinity, NoSchedule
and NoExecute taints, and requests against allocatable minus what is bound there and what other
migrations have reserved. Pure functions over node and pod JSON; kube-scheduler (with the extender)
still makes the real placement.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from apollo_api.podmigration import PodMigration, Resources
from common.quantity import parse_quantity
from orchestrator import podinfo

Json = Mapping[str, Any]


@dataclass(frozen=True)
class NodeView:
    """A node as placement sees it: labels, taints, readiness and what is left of its allocatable."""

    name: str
    labels: Mapping[str, str]
    taints: tuple[Mapping[str, Any], ...]
    ready: bool
    unschedulable: bool
    alloc_cpu: float
    alloc_memory: float
    free_cpu: float
    free_memory: float
    free_pods: int
    reserved_cpu: float = 0.0
    reserved_memory: float = 0.0


def _is_ready(node: Json) -> bool:
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def node_view(node: Json, bound_pods: Iterable[Json], reserved: Resources | None = None) -> NodeView:
    """Allocatable minus the requests of the non-terminal pods bound to the node."""
    alloc = (node.get("status") or {}).get("allocatable") or {}
    used_cpu = used_mem = 0.0
    count = 0
    for pod in bound_pods:
        if podinfo.status(pod).get("phase") in ("Succeeded", "Failed"):
            continue
        try:
            req = podinfo.effective_requests(podinfo.spec(pod))
        except ValueError:
            continue  # the API server validated it; an unparsable quantity here is our subset's limit
        used_cpu += req.cpu_cores
        used_mem += req.memory_bytes
        count += 1
    meta = node.get("metadata") or {}
    alloc_cpu, alloc_mem = parse_quantity(alloc.get("cpu", 0)), parse_quantity(alloc.get("memory", 0))
    return NodeView(
        name=str(meta.get("name", "")),
        labels=dict(meta.get("labels") or {}),
        taints=tuple((node.get("spec") or {}).get("taints") or ()),
        ready=_is_ready(node),
        unschedulable=bool((node.get("spec") or {}).get("unschedulable")),
        alloc_cpu=alloc_cpu,
        alloc_memory=alloc_mem,
        free_cpu=alloc_cpu - used_cpu,
        free_memory=alloc_mem - used_mem,
        free_pods=int(parse_quantity(alloc.get("pods", 110))) - count,
        reserved_cpu=reserved.cpu_cores if reserved else 0.0,
        reserved_memory=float(reserved.memory_bytes) if reserved else 0.0,
    )


def reservations_by_node(migrations: Iterable[PodMigration], exclude: str = "") -> dict[str, Resources]:
    """Capacity other active migrations hold on their targets (`PodMigration.reservation`, the rule the
    extender applies too), summed per node; `exclude` ("namespace/name") leaves one migration out."""
    out: dict[str, Resources] = {}
    for m in migrations:
        held = m.reservation
        if held is None or f"{m.namespace}/{m.name}" == exclude:
            continue
        node, req = held
        prev = out.get(node, Resources())
        out[node] = Resources(prev.cpu_cores + req.cpu_cores, prev.memory_bytes + req.memory_bytes)
    return out


def _expr_matches(expr: Json, labels: Mapping[str, str]) -> bool:
    key, op = str(expr.get("key", "")), str(expr.get("operator", ""))
    values = [str(v) for v in expr.get("values") or []]
    present = key in labels
    if op == "In":
        return present and labels[key] in values
    if op == "NotIn":
        return not present or labels[key] not in values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt") and present and values:
        try:
            have, want = int(labels[key]), int(values[0])
        except ValueError:
            return False
        return have > want if op == "Gt" else have < want
    return False


def selector_matches(selector: Json | None, node_name: str, labels: Mapping[str, str]) -> bool:
    """A core/v1 NodeSelector (terms ORed, expressions ANDed); no selector or no terms matches every node."""
    terms = (selector or {}).get("nodeSelectorTerms") or []
    if not terms:
        return True
    fields = {"metadata.name": node_name}
    for term in terms:
        exprs = term.get("matchExpressions") or []
        field_exprs = term.get("matchFields") or []
        if not exprs and not field_exprs:
            continue  # an empty term matches nothing (core/v1 semantics)
        if all(_expr_matches(e, labels) for e in exprs) and all(_expr_matches(e, fields) for e in field_exprs):
            return True
    return False


def _tolerates(tolerations: Sequence[Json], taint: Json) -> bool:
    for t in tolerations:
        if t.get("effect") and t.get("effect") != taint.get("effect"):
            continue
        if t.get("operator") == "Exists":
            if not t.get("key") or t.get("key") == taint.get("key"):
                return True
        elif t.get("key") == taint.get("key") and str(t.get("value", "")) == str(taint.get("value", "")):
            return True
    return False


def refusal(pod_spec: Json, demand: Resources, node: NodeView) -> str:
    """Why the node cannot take a pod with this spec and these requests, or "" when it can."""
    if not node.ready:
        return f"node {node.name} is not Ready"
    if node.unschedulable:
        return f"node {node.name} is cordoned"
    for key, value in (pod_spec.get("nodeSelector") or {}).items():
        if node.labels.get(key) != value:
            return f"node {node.name} does not match the pod's nodeSelector {key}={value}"
    required = ((pod_spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    )
    if required and not selector_matches(required, node.name, node.labels):
        return f"node {node.name} does not match the pod's required node affinity"
    tolerations = pod_spec.get("tolerations") or []
    for taint in node.taints:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not _tolerates(tolerations, taint):
            return f"node {node.name} has taint {taint.get('key')}={taint.get('value', '')}:{taint.get('effect')}"
    if node.free_pods < 1:
        return f"node {node.name} has no pod slot left"
    cpu_left = node.free_cpu - node.reserved_cpu
    mem_left = node.free_memory - node.reserved_memory
    if demand.cpu_cores > cpu_left + 1e-9:
        return (
            f"node {node.name} has {max(cpu_left, 0):.3f} CPU cores free (reservations counted), "
            f"the pod requests {demand.cpu_cores:.3f}"
        )
    if demand.memory_bytes > mem_left:
        return (
            f"node {node.name} has {max(mem_left, 0) / 2**20:.0f}Mi memory free (reservations counted), "
            f"the pod requests {demand.memory_bytes / 2**20:.0f}Mi"
        )
    return ""


def headroom_after(demand: Resources, node: NodeView) -> float:
    """Fraction of the scarcer resource left after placing the pod (higher is roomier)."""
    cpu_left = node.free_cpu - node.reserved_cpu - demand.cpu_cores
    mem_left = node.free_memory - node.reserved_memory - demand.memory_bytes
    cpu = cpu_left / node.alloc_cpu if node.alloc_cpu > 0 else 1.0
    mem = mem_left / node.alloc_memory if node.alloc_memory > 0 else 1.0
    return min(cpu, mem)


def choose_target(pod_spec: Json, demand: Resources, nodes: Sequence[NodeView], exclude: str) -> tuple[str, str]:
    """(node, "") for the feasible node with the most headroom left as a fraction of its allocatable, or
    ("", why no node is feasible)."""
    best, best_room = "", -1.0
    reasons: list[str] = []
    for node in nodes:
        if node.name == exclude:
            continue
        why = refusal(pod_spec, demand, node)
        if why:
            reasons.append(why)
            continue
        room = headroom_after(demand, node)
        if room > best_room or (room == best_room and node.name < best):
            best, best_room = node.name, room
    if best:
        return best, ""
    if not reasons:
        return "", "no other node exists"
    shown = "; ".join(reasons[:3]) + (f"; and {len(reasons) - 3} more" if len(reasons) > 3 else "")
    return "", f"no node can take the pod: {shown}"
