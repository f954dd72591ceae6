"""APOLLO against the real Prometheus and the real API server: from scraped load to a MIGRATE policy.

Chain: exporter -> Prometheus -> APOLLO (PromQL instant + range queries, forecast, Kubernetes
reader for pods and capacity) -> SubscribePolicies stream naming a real pod.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest

from apollo.adapters.prometheus import PrometheusSource
from apollo.config import PrometheusSettings
from apollo_api.v1 import apollo_pb2 as pb
from apollo_api.v1 import apollo_pb2_grpc as pb_grpc
from apolloctl.cluster import ScrapeTarget
from apolloctl.cluster.process import tail
from apolloctl.launch import start_apollo
from apolloctl.sim_metrics import CPU_METRIC, MEMORY_METRIC, NodeExporter
from tests.conftest import ClusterHandle
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def exporter(cluster: ClusterHandle) -> Iterator[NodeExporter]:
    exp = NodeExporter()
    cluster.local.set_scrape_targets("apollo-policy-nodes", [ScrapeTarget(exp.address)])
    yield exp
    cluster.local.set_scrape_targets("apollo-policy-nodes", [])
    exp.close()


def _settings(cluster: ClusterHandle) -> dict[str, Any]:
    """APOLLO's settings tree for the `apollo` process: seconds-scale forecasts, pods read from the cluster."""
    return {
        "prometheus": {"url": cluster.local.prometheus_url, "queries": {"cpu": CPU_METRIC, "memory": MEMORY_METRIC}},
        "forecast": {
            "step_seconds": 1.0,
            "horizon_minutes": 1,
            "season_minutes": 0,
            "warmup_samples": 3,
        },
        "policy": {"consecutive_steps": 3, "confirm_ticks": 2},
        "kubernetes": {"enabled": True, "kubeconfig": str(cluster.local.kubeconfig)},
    }


def test_prometheus_source_reads_instant_and_range_queries(cluster: ClusterHandle, exporter: NodeExporter) -> None:
    exporter.cpu.update({"node-x": 0.25, "node-y": 0.75})
    source = PrometheusSource(PrometheusSettings(**_settings(cluster)["prometheus"]))
    sample = wait_for(lambda: (s := source.latest()).items().get(("node-y", "cpu")) == 0.75 and s, what="instant query")
    assert sample.items()[("node-x", "cpu")] == 0.25
    assert "memory" not in {k[1] for k in sample.items()}  # no memory series exported: none invented
    time.sleep(3)
    end = dt.datetime.now(dt.UTC)
    history = source.history(end - dt.timedelta(seconds=5), end, 1.0)
    row = history.keys.index(("node-y", "cpu"))
    observed = history.values[row][np.isfinite(history.values[row])]
    assert observed.size >= 3 and np.all(observed == 0.75)


def test_overload_on_a_node_yields_a_migration_policy_for_a_real_pod(
    cluster: ClusterHandle, namespace: str, exporter: NodeExporter
) -> None:
    hot, idle = cluster.create_nodes(2, labels={"pool": namespace}, cpu="16", memory="64Gi")
    exporter.cpu.update({hot: 0.96, idle: 0.10})
    exporter.memory.update({hot: 0.50, idle: 0.20})
    cluster.apps.create_namespaced_deployment(
        namespace,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "trainer"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "trainer"}},
                "template": {
                    "metadata": {"labels": {"app": "trainer", "apollo.io/checkpoint": "true"}},
                    "spec": {
                        "nodeSelector": {"kubernetes.io/hostname": hot},
                        "containers": [
                            {"name": "main", "image": "registry.invalid/t:1", "resources": {"requests": {"cpu": "4"}}}
                        ],
                    },
                },
            },
        },
    )
    pod = wait_for(
        lambda: [p for p in cluster.core.list_namespaced_pod(namespace).items if p.status.phase == "Running"],
        what="trainer pod running on the hot node",
    )[0]
    apollo = start_apollo(_settings(cluster), cluster.local.logs_dir / f"apollo-{namespace}.log")
    channel = grpc.insecure_channel(apollo.address("grpc"))
    try:
        stub = pb_grpc.OrchestrationPolicyServiceStub(channel)
        stream: Any = stub.SubscribePolicies(
            pb.PolicySubscription(
                subscriber_id="e2e", namespace_filters=[namespace], action_filters=[pb.ORCHESTRATION_ACTION_MIGRATE]
            ),
            timeout=90,
        )
        got: list[pb.OrchestrationPolicy] = []
        reader = threading.Thread(target=lambda: got.append(next(stream)), daemon=True)
        reader.start()
        reader.join(timeout=90)
        stream.cancel()
        assert got, f"no MIGRATE policy; APOLLO's log: {tail(apollo.log_path, 20)}"
        target = got[0].migration
        assert (target.pod_name, target.pod_namespace) == (pod.metadata.name, namespace)
        assert (target.source_node, target.target_node) == (hot, idle)
        assert target.preserve_pv and got[0].reason
        result = stub.ReportExecutionResult(
            pb.ExecutionResult(request_id=got[0].request_id, action=got[0].action, success=True)
        )
        assert result.message == "recorded"
        prediction = pb_grpc.ForecastServiceStub(channel).GetResourcePrediction(pb.PredictionRequest(node_name=hot))
        assert prediction.upper_bound[0].cpu_usage > 0.85 and prediction.recommendations
    finally:
        channel.close()
        apollo.stop()
        cluster.delete_nodes([hot, idle])
