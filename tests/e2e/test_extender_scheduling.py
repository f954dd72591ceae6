"""The real kube-scheduler consults the extender, which ranks nodes from APOLLO, which reads a real Prometheus.

Chain under test: exporter -> Prometheus (scrape) -> APOLLO (PromQL, forecast, snapshot over gRPC)
-> extender (gunicorn, HTTP) -> kube-scheduler (extender config) -> binding in the API server.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from apollo.config import ApolloSettings, ForecastSettings, PrometheusSettings
from apollo.server import Apollo, serve
from apollo_api.v1 import apollo_pb2 as pb
from apollo_api.v1 import apollo_pb2_grpc as pb_grpc
from apolloctl.cluster import ExtenderConfig, ScrapeTarget
from apolloctl.demo import readyz, start_extender
from apolloctl.sim_metrics import CPU_METRIC, MEMORY_METRIC, NodeExporter
from tests.conftest import ClusterHandle
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def stack(cluster: ClusterHandle) -> Iterator[dict[str, Any]]:
    exporter = NodeExporter()
    cluster.local.set_scrape_targets("test-nodes", [ScrapeTarget(exporter.address)])
    settings = ApolloSettings(
        grpc_address="127.0.0.1:0",
        http_address="127.0.0.1:0",
        prometheus=PrometheusSettings(
            url=cluster.local.prometheus_url,
            queries={"cpu": CPU_METRIC, "memory": MEMORY_METRIC},
            stale_after_seconds=5,
        ),
        forecast=ForecastSettings(
            step_seconds=1.0, horizon_minutes=1, season_minutes=0, overload_consecutive_steps=3, warmup_samples=3
        ),
    ).validate()
    apollo: Apollo = serve(settings)
    extender, url = start_extender(
        apollo.grpc_port, cluster.local.kubeconfig, cluster.local.logs_dir / "extender.log", snapshot_max_age_s=3
    )
    cluster.local.restart_scheduler((ExtenderConfig(url_prefix=url, weight=5, http_timeout="1s"),))
    try:
        yield {"apollo": apollo, "exporter": exporter, "extender": extender, "url": url}
    finally:
        cluster.local.restart_scheduler(())
        if extender.poll() is None:
            extender.terminate()
            extender.wait(timeout=30)
        apollo.stop(0.5)
        exporter.close()
        cluster.local.set_scrape_targets("test-nodes", [])


def _pod(name: str, pool: str, only: list[str] | None = None) -> dict[str, Any]:
    affinity = (
        {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": only}]}
                    ]
                }
            }
        }
        if only
        else None
    )
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "affinity": affinity,
            "nodeSelector": {"pool": pool},
            "containers": [
                {"name": "main", "image": "registry.invalid/x:1", "resources": {"requests": {"cpu": "100m"}}}
            ],
        },
    }


def _placements(cluster: ClusterHandle, namespace: str, names: list[str]) -> dict[str, str]:
    pods = cluster.core.list_namespaced_pod(namespace).items
    return {p.metadata.name: p.spec.node_name for p in pods if p.metadata.name in names and p.spec.node_name}


def test_scheduler_places_pods_by_apollo_and_survives_outages(
    cluster: ClusterHandle, namespace: str, stack: dict[str, Any]
) -> None:
    idle, medium, hot = cluster.create_nodes(3, labels={"pool": namespace}, cpu="8", memory="32Gi")
    exporter: NodeExporter = stack["exporter"]
    exporter.cpu.update({idle: 0.10, medium: 0.50, hot: 0.97})
    exporter.memory.update({idle: 0.20, medium: 0.40, hot: 0.90})
    apollo: Apollo = stack["apollo"]
    insight = pb_grpc.InsightServiceStub(__import__("grpc").insecure_channel(f"127.0.0.1:{apollo.grpc_port}"))
    for node in (idle, medium, hot):
        insight.ReportClusterInsight(
            pb.ClusterInsight(
                node_name=node,
                node_resources=pb.NodeResources(cpu_allocatable_cores=8, memory_allocatable_bytes=32 * 2**30),
            )
        )

    # APOLLO has read Prometheus and flags the hot node; the extender holds that snapshot.
    def verdicts() -> bool:
        view = apollo.engine.view
        s = view.scores
        if view.stale or s is None or not {hot, idle} <= set(s.nodes):
            return False
        return bool(s.overload[s.nodes.index(hot)] and not s.overload[s.nodes.index(idle)])

    wait_for(verdicts, timeout=60, what="APOLLO to forecast overload on the hot node only, from Prometheus data")
    generation = apollo.engine.view.generation
    wait_for(
        lambda: (r := readyz(stack["url"])).get("apollo") == "ok" and (r.get("snapshot_generation") or 0) >= generation,
        timeout=30,
        what="extender to hold APOLLO's snapshot with those verdicts",
    )
    time.sleep(1.0)  # two refresh intervals: the other gunicorn worker holds it too

    names = [f"ranked-{i}" for i in range(4)]
    for name in names:
        cluster.core.create_namespaced_pod(namespace, _pod(name, namespace))
    placed = wait_for(lambda: len(p := _placements(cluster, namespace, names)) == 4 and p, what="4 pods bound")
    assert set(placed.values()) == {idle}, placed  # best-ranked node, never the overloaded one
    events = cluster.core.list_namespaced_event(namespace).items
    assert not [e.message for e in events if e.reason == "FailedScheduling"]

    # Filter verdict: allowed on {hot, medium} only, the pod must avoid the node predicted to overload...
    cluster.core.create_namespaced_pod(namespace, _pod("choice", namespace, only=[hot, medium]))
    # ...but a pod pinned to the hot node alone (a chosen migration target) is scored, never filtered.
    cluster.core.create_namespaced_pod(namespace, _pod("pinned", namespace, only=[hot]))
    verdict = wait_for(
        lambda: len(p := _placements(cluster, namespace, ["choice", "pinned"])) == 2 and p, what="choice + pinned"
    )
    assert verdict == {"choice": medium, "pinned": hot}
    # Bindings went back to APOLLO as SchedulingResults, off the request path.
    wait_for(
        lambda: apollo.metrics.scheduling_results.labels("success")._value.get() >= 4,
        what="scheduling results reported to APOLLO",
    )

    # APOLLO goes away: the extender's snapshot ages out and it answers fail-open; scheduling goes on.
    apollo.stop(0.5)
    wait_for(lambda: readyz(stack["url"]).get("apollo") == "snapshot-too-old", timeout=30, what="fail-open")
    more = [f"no-apollo-{i}" for i in range(3)]
    for name in more:
        cluster.core.create_namespaced_pod(namespace, _pod(name, namespace))
    wait_for(lambda: len(_placements(cluster, namespace, more)) == 3, what="pods bound without APOLLO")

    # The extender itself is killed: ignorable=true lets kube-scheduler carry on without it.
    stack["extender"].kill()
    stack["extender"].wait(timeout=10)
    last = [f"no-extender-{i}" for i in range(3)]
    for name in last:
        cluster.core.create_namespaced_pod(namespace, _pod(name, namespace))
    wait_for(lambda: len(_placements(cluster, namespace, last)) == 3, what="pods bound without the extender")
    cluster.delete_nodes([idle, medium, hot])
