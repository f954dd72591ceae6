"""The real kube-scheduler consults the extender, which ranks nodes from APOLLO, which reads a real Prometheus.

Chain under test: exporter -> Prometheus (scrape) -> APOLLO (PromQL, forecast, snapshot over gRPC)
-> extender (gunicorn, HTTP or HTTPS) -> kube-scheduler (extender config, node names or a NodeList)
-> binding in the API server.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from apolloctl.cluster import ExtenderConfig, ScrapeTarget
from apolloctl.demo import apollo_settings, extender_settings
from apolloctl.launch import (
    Service,
    Tls,
    apollo_verdicts,
    extender_holds_snapshot,
    loopback_tls,
    report_node_capacity,
    start_apollo,
    start_extender,
)
from apolloctl.sim_metrics import NodeExporter
from tests.conftest import ClusterHandle
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e


@contextlib.contextmanager
def running_stack(
    cluster: ClusterHandle, *, tls: Tls | None = None, node_cache_capable: bool = True
) -> Iterator[dict[str, Any]]:
    """Exporter, APOLLO and the extender (over HTTPS when `tls`), kube-scheduler restarted to call it."""
    exporter = NodeExporter()
    cluster.local.set_scrape_targets("test-nodes", [ScrapeTarget(exporter.address)])
    logs = cluster.local.logs_dir
    apollo = start_apollo(apollo_settings(cluster.local.prometheus_url), logs / "apollo-e2e.log")
    extender = start_extender(
        apollo.address("grpc"),
        logs / "extender-e2e.log",
        settings=extender_settings(cluster.local.kubeconfig, snapshot_max_age_s=3),
        tls=tls,
    )
    config = ExtenderConfig(
        url_prefix=extender.url,
        weight=5,
        http_timeout="1s",
        node_cache_capable=node_cache_capable,
        ca_pem=tls.ca.read_bytes() if tls else None,
    )
    cluster.local.restart_scheduler((config,))
    try:
        yield {"apollo": apollo, "exporter": exporter, "extender": extender}
    finally:
        cluster.local.restart_scheduler(())
        extender.stop()
        apollo.stop()
        exporter.close()
        cluster.local.set_scrape_targets("test-nodes", [])


@pytest.fixture
def stack(cluster: ClusterHandle) -> Iterator[dict[str, Any]]:
    with running_stack(cluster) as running:
        yield running


def _three_nodes(cluster: ClusterHandle, namespace: str, stack: dict[str, Any]) -> tuple[str, str, str]:
    """Idle, medium and hot nodes; returns once APOLLO flags the hot one and every extender worker holds that."""
    idle, medium, hot = cluster.create_nodes(3, labels={"pool": namespace}, cpu="8", memory="32Gi")
    exporter: NodeExporter = stack["exporter"]
    exporter.cpu.update({idle: 0.10, medium: 0.50, hot: 0.97})
    exporter.memory.update({idle: 0.20, medium: 0.40, hot: 0.90})
    apollo: Service = stack["apollo"]
    report_node_capacity(apollo.address("grpc"), [idle, medium, hot], cpu_cores=8, memory_bytes=32 * 2**30)

    def verdicts() -> int | None:
        generation, stale, view = apollo_verdicts(apollo.address("grpc"))
        if stale or not {hot, idle} <= set(view):
            return None
        return generation if view[hot].overload and not view[idle].overload else None

    generation = wait_for(
        verdicts, timeout=60, what="APOLLO to forecast overload on the hot node only, from Prometheus data"
    )
    # Every gunicorn worker holds it: a streak of fresh connections, each answered by whichever worker accepts.
    stack["extender"].wait_ready(extender_holds_snapshot(generation), streak=6, timeout=30, what="APOLLO's verdicts")
    return idle, medium, hot


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


def _counter(service: Service, name: str, **labels: str) -> float:
    """A counter's value from the service's /metrics (0 when it has no such sample yet)."""
    status, body, _ = service.request("GET", "/metrics")
    assert status == 200, body[:200]
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def _placements(cluster: ClusterHandle, namespace: str, names: list[str]) -> dict[str, str]:
    pods = cluster.core.list_namespaced_pod(namespace).items
    return {p.metadata.name: p.spec.node_name for p in pods if p.metadata.name in names and p.spec.node_name}


def test_scheduler_places_pods_by_apollo_and_survives_outages(
    cluster: ClusterHandle, namespace: str, stack: dict[str, Any]
) -> None:
    idle, medium, hot = _three_nodes(cluster, namespace, stack)
    apollo: Service = stack["apollo"]
    extender: Service = stack["extender"]

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
        lambda: _counter(apollo, "apollo_scheduling_results_total", outcome="success") >= 4,
        what="scheduling results reported to APOLLO",
    )

    # APOLLO goes away: the extender's snapshot ages out and it answers fail-open; scheduling goes on.
    apollo.stop()
    wait_for(lambda: (extender.probe() or {}).get("apollo") == "snapshot-too-old", timeout=30, what="fail-open")
    more = [f"no-apollo-{i}" for i in range(3)]
    for name in more:
        cluster.core.create_namespaced_pod(namespace, _pod(name, namespace))
    wait_for(lambda: len(_placements(cluster, namespace, more)) == 3, what="pods bound without APOLLO")

    # The extender itself is killed: ignorable=true lets kube-scheduler carry on without it.
    extender.kill()
    last = [f"no-extender-{i}" for i in range(3)]
    for name in last:
        cluster.core.create_namespaced_pod(namespace, _pod(name, namespace))
    wait_for(lambda: len(_placements(cluster, namespace, last)) == 3, what="pods bound without the extender")
    cluster.delete_nodes([idle, medium, hot])


def test_node_list_mode_over_https_as_the_manifests_deploy_it(
    cluster: ClusterHandle, namespace: str, tmp_path: Path
) -> None:
    """nodeCacheCapable: false (filter and prioritize get a NodeList) and enableHTTPS with the CA in tlsConfig."""
    tls = loopback_tls(tmp_path / "tls", "apollo-extender")
    with running_stack(cluster, tls=tls, node_cache_capable=False) as stack:
        idle, medium, hot = _three_nodes(cluster, namespace, stack)
        extender: Service = stack["extender"]
        names = ["listed-0", "listed-1", "choice"]
        cluster.core.create_namespaced_pod(namespace, _pod("listed-0", namespace))
        cluster.core.create_namespaced_pod(namespace, _pod("listed-1", namespace))
        cluster.core.create_namespaced_pod(namespace, _pod("choice", namespace, only=[hot, medium]))
        placed = wait_for(lambda: len(p := _placements(cluster, namespace, names)) == 3 and p, what="3 pods bound")
        # The filter answered with the NodeList it was given, minus the hot node; prioritize ranked idle first.
        assert placed == {"listed-0": idle, "listed-1": idle, "choice": medium}
        assert _counter(extender, "apollo_extender_request_seconds_count", verb="filter") >= 3
        # kube-scheduler scores only when more than one node is feasible: not for "choice" after the filter.
        assert _counter(extender, "apollo_extender_request_seconds_count", verb="prioritize") >= 2
        assert _counter(extender, "apollo_extender_request_errors_total") == 0
        cluster.delete_nodes([idle, medium, hot])
