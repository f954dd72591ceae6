"""APOLLO's Kubernetes informer against the real API server: a pod bound to a node appears, and goes on delete.

First the reader itself (`KubeReader`: node and bound-pod list-then-watch) in this process, then the
`apollo` process, whose on-demand MIGRATE advice (`GetOrchestrationPolicy`) answers for a pod only while
the pod is in the cluster view the watches keep (NOT_FOUND otherwise).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from apollo.adapters.kubernetes import KubeReader
from apollo.core.domain import ClusterView, PodSignature
from apollo.runtime.reports import ReportStore
from apollo_api.v1 import apollo_pb2 as pb
from apollo_api.v1 import apollo_pb2_grpc as pb_grpc
from apolloctl.cluster import ScrapeTarget
from apolloctl.cluster.process import tail
from apolloctl.launch import start_apollo
from apolloctl.sim_metrics import CPU_METRIC, MEMORY_METRIC, NodeExporter
from tests.conftest import ClusterHandle
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e


def _bound_pod(name: str, node: str) -> dict[str, Any]:
    """A pod already bound (spec.nodeName), as a controller or the scheduler leaves it; kwok runs it."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name, "apollo.io/checkpoint": "true"}},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "main", "image": "registry.invalid/t:1", "resources": {"requests": {"cpu": "2"}}}],
        },
    }


def _pods(view: ClusterView, namespace: str) -> dict[str, str]:
    return {p.name: p.node for p in view.pods if p.namespace == namespace}


@pytest.fixture
def reader(cluster: ClusterHandle) -> Iterator[tuple[KubeReader, ReportStore]]:
    reports = ReportStore(600.0)
    kube = KubeReader(cluster.core, reports.signatures).start()  # relists only after 300 s: events must do it
    yield kube, reports
    kube.stop()


def test_the_reader_follows_a_bound_pod_and_keeps_its_view_while_nothing_changes(
    cluster: ClusterHandle, namespace: str, reader: tuple[KubeReader, ReportStore]
) -> None:
    kube, reports = reader
    (node,) = cluster.create_nodes(1, labels={"pool": namespace}, cpu="8", memory="16Gi")
    wait_for(lambda: (r := kube.read()) is not None and node in r.view.nodes, what="the new node in the view")
    assert kube.read().view.nodes[node].cpu_cores == 8.0  # type: ignore[union-attr]
    cluster.core.create_namespaced_pod(namespace, _bound_pod("worker", node))
    wait_for(lambda: _pods(kube.read().view, namespace) == {"worker": node}, what="the bound pod in the view")  # type: ignore[union-attr]
    running = kube.read()
    assert running is not None
    pod = next(p for p in running.view.pods if p.namespace == namespace)
    assert (pod.cpu_request_cores, pod.checkpointed, pod.owner_kind) == (2.0, True, "")
    reports.put_signature(namespace, "worker", PodSignature(cpu_usage_cores=1.5))
    signed = kube.read()
    assert signed is not None and signed.view is not running.view
    assert next(p for p in signed.view.pods if p.name == "worker" and p.namespace == namespace).cpu_usage_cores == 1.5
    cluster.core.delete_namespaced_pod("worker", namespace, grace_period_seconds=0)
    wait_for(lambda: _pods(kube.read().view, namespace) == {}, what="the deleted pod gone from the view")  # type: ignore[union-attr]
    cluster.delete_nodes([node])
    wait_for(lambda: node not in kube.read().view.nodes, what="the deleted node gone")  # type: ignore[union-attr]


@pytest.fixture
def exporter(cluster: ClusterHandle) -> Iterator[NodeExporter]:
    exp = NodeExporter()
    cluster.local.set_scrape_targets("apollo-informer-nodes", [ScrapeTarget(exp.address)])
    yield exp
    cluster.local.set_scrape_targets("apollo-informer-nodes", [])
    exp.close()


def test_apollo_sees_a_pod_bound_to_a_node_and_forgets_it_on_delete(
    cluster: ClusterHandle, namespace: str, exporter: NodeExporter
) -> None:
    busy, spare = cluster.create_nodes(2, labels={"pool": namespace}, cpu="16", memory="64Gi")
    exporter.cpu.update({busy: 0.5, spare: 0.1})
    exporter.memory.update({busy: 0.4, spare: 0.2})
    settings = {
        "prometheus": {"url": cluster.local.prometheus_url, "queries": {"cpu": CPU_METRIC, "memory": MEMORY_METRIC}},
        "forecast": {"step_seconds": 1.0, "horizon_minutes": 1, "season_minutes": 0, "warmup_samples": 3},
        "kubernetes": {"enabled": True, "kubeconfig": str(cluster.local.kubeconfig)},
    }
    apollo = start_apollo(settings, cluster.local.logs_dir / f"apollo-informer-{namespace}.log")
    channel = grpc.insecure_channel(apollo.address("grpc"))
    stub = pb_grpc.OrchestrationPolicyServiceStub(channel)
    request = pb.OrchestrationPolicyRequest(pod_name="worker", pod_namespace=namespace)

    def advice() -> grpc.StatusCode | pb.OrchestrationPolicy:
        try:
            return stub.GetOrchestrationPolicy(request, timeout=5)
        except grpc.RpcError as exc:
            return exc.code()

    try:
        # Fresh forecasts first (UNAVAILABLE while warming up), with no such pod yet.
        wait_for(lambda: advice() == grpc.StatusCode.NOT_FOUND, timeout=90, what="APOLLO serving, without the pod")
        cluster.core.create_namespaced_pod(namespace, _bound_pod("worker", busy))
        policy = wait_for(
            lambda: isinstance(got := advice(), pb.OrchestrationPolicy) and got,
            timeout=60,
            what=f"advice for the bound pod; APOLLO's log: {tail(apollo.log_path, 20)}",
        )
        assert (policy.migration.pod_name, policy.migration.source_node) == ("worker", busy)
        assert policy.migration.target_node == spare
        cluster.core.delete_namespaced_pod("worker", namespace, grace_period_seconds=0)
        wait_for(lambda: advice() == grpc.StatusCode.NOT_FOUND, timeout=60, what="the deleted pod forgotten")
    finally:
        channel.close()
        apollo.stop()
        cluster.delete_nodes([busy, spare])
