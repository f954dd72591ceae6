"""Reading the world one reconcile needs: the pod, and what the migration's current phase looks at.

The machine is pure, so everything it decides on is read here first, and only what the phase needs:
Pending reads the nodes pre-flight checks, Capturing the nodes' usage, the checkpoint claim and its
volume's node affinity, and the Job; Rescheduling (and deletion while active) the namespace's pods,
among which the replacement is found. A finished migration needs nothing but itself.
"""

from __future__ import annotations

from typing import Any

from apollo_api.podmigration import CHECKPOINT_LABEL, Phase, PodMigration, checkpoint_claim_name
from orchestrator import podinfo
from orchestrator.effects import ClaimInfo, World
from orchestrator.kube import Kube
from orchestrator.placement import NodeView, node_view

Obj = dict[str, Any]


class WorldReader:
    """Reads what a migration's current phase needs, and only that."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def observe(self, m: PodMigration, migrations: list[PodMigration], now: float) -> World:
        phase = m.status.phase if m.status.phase in Phase.ALL else Phase.PENDING
        if phase in Phase.FINISHED and not m.deletion_timestamp:
            return World(now, m, migrations=migrations)
        pod = self.kube.read_pod(m.namespace, m.spec.pod_name) if m.spec.pod_name else None
        nodes: dict[str, Obj] = {}
        usage: dict[str, NodeView] = {}
        claim: ClaimInfo | None = None
        job: Obj | None = None
        candidates: list[Obj] = []
        if phase == Phase.PENDING:
            for name in {m.spec.source_node, m.spec.target_node} - {""}:
                node = self.kube.read_node(name)
                if node is not None:
                    nodes[name] = node
        elif phase == Phase.CAPTURING and pod is not None:
            usage = self._usage(m)
            claim = self._claim(m, pod)
            if m.status.owner_kind == "Job" and m.status.owner_name:
                job = self.kube.read_job(m.namespace, m.status.owner_name)
        elif phase == Phase.RESCHEDULING or m.deletion_timestamp:
            candidates = self.kube.list_pods(m.namespace)
        return World(now, m, pod, migrations, nodes, usage, claim, job, candidates)

    def _usage(self, m: PodMigration) -> dict[str, NodeView]:
        if m.spec.target_node:
            node = self.kube.read_node(m.spec.target_node)
            if node is None:
                return {}
            return {m.spec.target_node: node_view(node, self.kube.list_bound_pods(m.spec.target_node))}
        by_node: dict[str, list[Obj]] = {}
        for pod in self.kube.list_bound_pods():
            by_node.setdefault(podinfo.node_of(pod), []).append(pod)
        views = {}
        for node in self.kube.list_nodes():
            name = str((node.get("metadata") or {}).get("name", ""))
            views[name] = node_view(node, by_node.get(name, ()))
        return views

    def _claim(self, m: PodMigration, pod: Obj) -> ClaimInfo | None:
        labels = podinfo.meta(pod).get("labels") or {}
        if str(labels.get(CHECKPOINT_LABEL, "")).lower() != "true" or not m.spec.preserve_pv:
            return None
        name = checkpoint_claim_name(m.spec.pod_name, m.status.owner_kind, m.status.owner_name)
        pvc = self.kube.read_pvc(m.namespace, name)
        if pvc is None:
            return ClaimInfo(name, False)
        phase = str((pvc.get("status") or {}).get("phase", ""))
        selector = None
        volume = str((pvc.get("spec") or {}).get("volumeName", "") or "")
        if volume:
            pv = self.kube.read_pv(volume)
            if pv is not None:
                selector = ((pv.get("spec") or {}).get("nodeAffinity") or {}).get("required")
        return ClaimInfo(name, True, phase, selector)
