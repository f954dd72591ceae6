"""The local control plane behaves like Kubernetes: what later components rely on, checked for real."""

from __future__ import annotations

import json
import threading
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from kubernetes import client

from apolloctl.cluster import COMPLETE_ANNOTATION, ScrapeTarget
from tests.conftest import ClusterHandle
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e


def _pod_spec(node_selector: dict[str, str], containers: list[dict[str, Any]], restart: str) -> dict[str, Any]:
    return {"nodeSelector": node_selector, "restartPolicy": restart, "containers": containers}


def _container(name: str, cpu: str = "100m") -> dict[str, Any]:
    return {"name": name, "image": f"registry.invalid/{name}:1", "resources": {"requests": {"cpu": cpu}}}


def test_kwok_nodes_become_ready(cluster: ClusterHandle) -> None:
    names = cluster.create_nodes(2, cpu="8", memory="32Gi")
    for name in names:
        node = cluster.core.read_node(name)
        ready = [c for c in node.status.conditions if c.type == "Ready"]
        assert ready and ready[0].status == "True"
        assert node.status.allocatable["cpu"] == "8"
        assert any(a.address == "127.0.0.1" for a in node.status.addresses)
    cluster.delete_nodes(names)


def test_deployment_pods_are_scheduled_and_run(cluster: ClusterHandle, namespace: str) -> None:
    nodes = cluster.create_nodes(2, labels={"pool": namespace}, cpu="2", memory="8Gi")
    cluster.apps.create_namespaced_deployment(
        namespace,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 4,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": _pod_spec({"pool": namespace}, [_container("main", cpu="600m")], "Always"),
                },
            },
        },
    )

    def running() -> list[Any]:
        pods = cluster.core.list_namespaced_pod(namespace, label_selector="app=web").items
        return [p for p in pods if p.status.phase == "Running"] if len(pods) == 4 else []

    pods = wait_for(lambda: len(running()) == 4 and running(), what="4 Running pods")
    placed = {p.spec.node_name for p in pods}
    # 4 x 600m cannot fit in one 2-CPU node: the real scheduler must have used both.
    assert placed == set(nodes)
    for pod in pods:
        cond = {c.type: c.status for c in pod.status.conditions}
        assert cond["PodScheduled"] == "True" and cond["Ready"] == "True"
    cluster.delete_nodes(nodes)


def test_job_container_completes_while_other_keeps_running(cluster: ClusterHandle, namespace: str) -> None:
    nodes = cluster.create_nodes(1, labels={"pool": namespace})
    cluster.batch.create_namespaced_job(
        namespace,
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "train"},
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "metadata": {"annotations": {COMPLETE_ANNOTATION: "loader"}},
                    "spec": _pod_spec({"pool": namespace}, [_container("loader"), _container("trainer")], "Never"),
                },
            },
        },
    )

    def states() -> dict[str, Any] | None:
        pods = cluster.core.list_namespaced_pod(namespace, label_selector="job-name=train").items
        if not pods or not pods[0].status.container_statuses:
            return None
        st = {c.name: c.state for c in pods[0].status.container_statuses}
        return st if st["loader"].terminated is not None else None

    st = wait_for(states, what="loader container to terminate")
    assert st["loader"].terminated.exit_code == 0
    assert st["loader"].terminated.reason == "Completed"
    assert st["trainer"].running is not None and st["trainer"].terminated is None
    pod = cluster.core.list_namespaced_pod(namespace, label_selector="job-name=train").items[0]
    assert pod.status.phase == "Running"
    job = cluster.batch.read_namespaced_job("train", namespace)
    assert not job.status.succeeded and not job.status.failed
    cluster.delete_nodes(nodes)


def test_pvc_binds_to_precreated_pv(cluster: ClusterHandle, namespace: str) -> None:
    pv_name = f"pv-{namespace}"
    cluster.core.create_persistent_volume(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": pv_name, "labels": {"for": namespace}},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "manual",
                "hostPath": {"path": f"/tmp/apollo-pv/{namespace}"},
            },
        }
    )
    cluster.core.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "ckpt"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "manual",
                "resources": {"requests": {"storage": "1Gi"}},
                "selector": {"matchLabels": {"for": namespace}},
            },
        },
    )
    pvc = wait_for(
        lambda: (
            (c := cluster.core.read_namespaced_persistent_volume_claim("ckpt", namespace)).status.phase == "Bound" and c
        ),
        what="PVC Bound",
    )
    assert pvc.spec.volume_name == pv_name
    assert cluster.core.read_persistent_volume(pv_name).status.phase == "Bound"
    cluster.core.delete_persistent_volume(pv_name)


def test_eviction_respects_pod_disruption_budget(cluster: ClusterHandle, namespace: str) -> None:
    nodes = cluster.create_nodes(1, labels={"pool": namespace})
    cluster.apps.create_namespaced_deployment(
        namespace,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "guarded"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "guarded"}},
                "template": {
                    "metadata": {"labels": {"app": "guarded"}},
                    "spec": _pod_spec({"pool": namespace}, [_container("main")], "Always"),
                },
            },
        },
    )
    cluster.policy.create_namespaced_pod_disruption_budget(
        namespace,
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "guard"},
            "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "guarded"}}},
        },
    )

    def ready_pods() -> list[Any]:
        pods = cluster.core.list_namespaced_pod(namespace, label_selector="app=guarded").items
        return [p for p in pods if p.status.phase == "Running"]

    wait_for(lambda: len(ready_pods()) == 2, what="2 guarded pods Running")
    wait_for(
        lambda: (
            (pdb := cluster.policy.read_namespaced_pod_disruption_budget("guard", namespace)).status
            and pdb.status.current_healthy == 2
        ),
        what="PDB status observed by the disruption controller",
    )
    victim = ready_pods()[0].metadata.name
    eviction = client.V1Eviction(metadata=client.V1ObjectMeta(name=victim, namespace=namespace))
    with pytest.raises(client.ApiException) as refused:
        cluster.core.create_namespaced_pod_eviction(victim, namespace, eviction)
    assert refused.value.status == 429
    assert "disruption budget" in json.loads(refused.value.body or "{}")["message"]

    cluster.policy.patch_namespaced_pod_disruption_budget("guard", namespace, {"spec": {"minAvailable": 1}})
    wait_for(
        lambda: (
            cluster.policy.read_namespaced_pod_disruption_budget("guard", namespace).status.disruptions_allowed == 1
        ),
        what="PDB to allow one disruption",
    )
    cluster.core.create_namespaced_pod_eviction(victim, namespace, eviction)
    wait_for(
        lambda: victim not in {p.metadata.name for p in ready_pods()} and len(ready_pods()) == 2,
        what="evicted pod replaced by its ReplicaSet",
    )
    cluster.delete_nodes(nodes)


class _Exporter(BaseHTTPRequestHandler):
    body = b"# TYPE apollo_probe_value gauge\napollo_probe_value 42.5\n"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


def test_prometheus_answers_promql_over_scraped_data(cluster: ClusterHandle) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Exporter)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        address = f"127.0.0.1:{server.server_address[1]}"
        cluster.local.set_scrape_targets("probe", [ScrapeTarget(address, {"node": "node-a"})])

        def query() -> list[Any]:
            q = urllib.parse.urlencode({"query": 'apollo_probe_value{node="node-a"}'})
            with urllib.request.urlopen(f"{cluster.local.prometheus_url}/api/v1/query?{q}", timeout=5) as r:
                data = json.loads(r.read())
            assert data["status"] == "success"
            result: list[Any] = data["data"]["result"]
            return result

        result = wait_for(query, timeout=30, what="Prometheus to scrape the exporter")
        assert float(result[0]["value"][1]) == 42.5
        assert result[0]["metric"]["instance"] == address
    finally:
        server.shutdown()
