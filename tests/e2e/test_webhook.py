"""The webhook called by the real kube-apiserver over TLS, on the local control plane.

The webhook runs as deployed (`apollo-webhook`: gunicorn, 2 workers, TLS from certificate files signed by
the cluster's CA) and is registered with the `MutatingWebhookConfiguration` its settings produce (URL +
CA bundle, objectSelector, Ignore, NoneOnDryRun, IfNeeded). Pods come from the real controllers
(Deployment -> ReplicaSet, Job), so the AdmissionReviews are what a cluster sends. There is no volume
provisioner here: each test pre-creates a hostPath PersistentVolume bound to the claim name the webhook
must choose, so the claim binds and the pods really schedule and run (kwok plays kubelet).

The migration is driven as the orchestrator would drive it (it is built separately): a PodMigration with
its status filled from the running pod (captured container states, owner, completion index, claim,
source), phase Evicting, then the pod evicted through the Eviction API; the Job controller re-creates it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from apollo_api.podmigration import (
    API_VERSION,
    CHECKPOINT_VOLUME,
    GROUP,
    KIND,
    MIGRATION_ANNOTATION,
    PLURAL,
    VERSION,
    Phase,
)
from apolloctl.cluster import COMPLETE_ANNOTATION
from bench.webhook_local import LocalWebhook, wait_effective
from tests.conftest import ClusterHandle
from tests.e2e.webhook_setup import PreboundVolumes, claim_bound, registered_webhook, webhook_nodes
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e
REGISTRATION = "apollo-webhook-e2e"


@pytest.fixture(scope="module")
def nodes(cluster: ClusterHandle) -> Iterator[list[str]]:
    with webhook_nodes(cluster, "wh") as names:
        yield names


@pytest.fixture(scope="module")
def webhook(cluster: ClusterHandle, nodes: list[str]) -> Iterator[LocalWebhook]:
    with registered_webhook(cluster, "webhook-e2e.log", REGISTRATION) as hook:
        yield hook


@pytest.fixture
def volumes(cluster: ClusterHandle) -> Iterator[PreboundVolumes]:
    made = PreboundVolumes(cluster.core)
    yield made
    made.delete_all()


def _container(name: str) -> dict[str, Any]:
    return {"name": name, "image": f"registry.invalid/{name}:1", "resources": {"requests": {"cpu": "100m"}}}


def _volume_claim(pod: Any) -> str | None:
    for v in pod.spec.volumes or []:
        if v.name == CHECKPOINT_VOLUME and v.persistent_volume_claim:
            return str(v.persistent_volume_claim.claim_name)
    return None


def _metric(hook: LocalWebhook, name: str) -> float:
    total = 0.0
    for line in hook.metrics().splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_opted_in_deployment_pods_get_the_workload_claim(
    cluster: ClusterHandle, webhook: LocalWebhook, namespace: str, volumes: PreboundVolumes
) -> None:
    wait_effective(cluster.core, namespace)
    # A dry run is patched but creates nothing: no claim appears for the probe pods.
    time.sleep(0.5)
    assert cluster.core.list_namespaced_persistent_volume_claim(namespace).items == []

    volumes(namespace, "trainer-ckpt")
    sent_before = _metric(webhook, "apollo_webhook_admissions_total")
    labels = {"app": "trainer", "apollo.io/checkpoint": "true"}
    cluster.apps.create_namespaced_deployment(
        namespace,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "trainer"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "trainer"}},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [_container("trainer"), _container("monitor")]},
                },
            },
        },
    )
    # Not opted in: the API server must not even send these (objectSelector).
    cluster.core.create_namespaced_pod(
        namespace,
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "plain"}, "spec": {"containers": [_container("x")]}},
    )

    def running() -> list[Any]:
        pods = cluster.core.list_namespaced_pod(namespace, label_selector="app=trainer").items
        up = [p for p in pods if p.status.phase == "Running"]
        return up if len(up) == 2 else []

    pods = wait_for(running, 90, what="both trainer pods Running with their claim")
    for pod in pods:
        assert _volume_claim(pod) == "trainer-ckpt"
        for c in pod.spec.containers:
            assert [(m.name, m.mount_path) for m in c.volume_mounts if m.name == CHECKPOINT_VOLUME] == [
                (CHECKPOINT_VOLUME, "/checkpoint")
            ]
            assert {e.name: e.value for e in c.env or []}["CHECKPOINT_DIR"] == "/checkpoint"
    pvc = cluster.core.read_namespaced_persistent_volume_claim("trainer-ckpt", namespace)
    assert pvc.metadata.labels["app.kubernetes.io/managed-by"] == "apollo-webhook"
    assert pvc.metadata.annotations["apollo.io/workload"] == "Deployment/trainer"
    assert claim_bound(cluster.core, namespace, "trainer-ckpt")
    plain = cluster.core.read_namespaced_pod("plain", namespace)
    assert _volume_claim(plain) is None
    # Exactly the two trainer pods were reviewed (the unlabelled pod was never sent), plus re-invocations
    # at most (none: no other webhook changes these pods).
    assert _metric(webhook, "apollo_webhook_admissions_total") - sent_before == 2


def _status_from(pod: Any, job: Any, target: str) -> dict[str, Any]:
    """What the orchestrator's capture step writes, from the pod as it runs now."""
    containers = []
    for s in pod.status.container_statuses or []:
        term = s.state.terminated
        entry: dict[str, Any] = {"name": s.name, "restartCount": s.restart_count}
        if term is not None:
            entry |= {"state": "terminated", "exitCode": term.exit_code, "migrate": term.exit_code != 0}
        else:
            entry |= {"state": "running" if s.state.running else "waiting", "migrate": True}
        containers.append(entry)
    return {
        "phase": Phase.EVICTING,
        "podUID": pod.metadata.uid,
        "sourceNode": pod.spec.node_name,
        "ownerKind": "Job",
        "ownerName": job.metadata.name,
        "ownerUID": job.metadata.uid,
        "jobCompletionIndex": pod.metadata.annotations["batch.kubernetes.io/job-completion-index"],
        "containers": containers,
        "checkpointPVC": _volume_claim(pod),
        "steps": {"evictionRequested": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
    }


def test_job_pod_recreated_during_migration_comes_back_stripped_with_claim_and_target(
    cluster: ClusterHandle, webhook: LocalWebhook, namespace: str, volumes: PreboundVolumes, nodes: list[str]
) -> None:
    volumes(namespace, "prep-ckpt")
    job = cluster.batch.create_namespaced_job(
        namespace,
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "prep"},
            "spec": {
                "completionMode": "Indexed",
                "completions": 1,
                "parallelism": 1,
                "backoffLimit": 4,
                "podFailurePolicy": {
                    "rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]
                },
                "template": {
                    "metadata": {
                        "labels": {"apollo.io/checkpoint": "true"},
                        # kwok terminates the loader with exit code 0; the trainer keeps running.
                        "annotations": {COMPLETE_ANNOTATION: "loader"},
                    },
                    "spec": {"restartPolicy": "Never", "containers": [_container("loader"), _container("trainer")]},
                },
            },
        },
    )
    selector = f"batch.kubernetes.io/job-name={job.metadata.name}"

    def loader_completed() -> Any:
        for pod in cluster.core.list_namespaced_pod(namespace, label_selector=selector).items:
            states = {s.name: s.state for s in pod.status.container_statuses or []}
            if states.get("loader") and states["loader"].terminated and states["trainer"].running:
                return pod
        return None

    original = wait_for(loader_completed, 90, what="the Job pod running with its loader completed")
    assert _volume_claim(original) == "prep-ckpt"
    assert [c.name for c in original.spec.containers] == ["loader", "trainer"]
    target = next(n for n in nodes if n != original.spec.node_name)

    custom = client.CustomObjectsApi(cluster.api)
    name = f"{original.metadata.name}-m1"
    custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": name},
            "spec": {"podName": original.metadata.name, "targetNode": target, "reason": "e2e"},
        },
    )
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, name, {"status": _status_from(original, job, target)}
    )
    # Every worker holds the migration before the eviction (admission never asks the API server).
    assert webhook.service is not None
    webhook.service.wait_ready(lambda body: body.get("active_migrations", 0) >= 1, streak=6, timeout=30)

    cluster.core.create_namespaced_pod_eviction(
        original.metadata.name,
        namespace,
        {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": original.metadata.name, "namespace": namespace},
        },
    )

    def replacement_running() -> Any:
        for pod in cluster.core.list_namespaced_pod(namespace, label_selector=selector).items:
            if pod.metadata.uid != original.metadata.uid and pod.status.phase == "Running":
                return pod
        return None

    pod = wait_for(replacement_running, 90, what="the replacement pod Running")
    assert pod.metadata.name != original.metadata.name
    assert [c.name for c in pod.spec.containers] == ["trainer"]
    assert _volume_claim(pod) == "prep-ckpt"
    assert pod.metadata.annotations[MIGRATION_ANNOTATION] == name
    assert pod.metadata.annotations["batch.kubernetes.io/job-completion-index"] == "0"
    terms = pod.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution.node_selector_terms
    assert [(f.key, f.operator, f.values) for t in terms for f in t.match_fields] == [("metadata.name", "In", [target])]
    assert pod.spec.node_name == target
    assert _metric(webhook, 'apollo_webhook_mutations_total{kind="strip_containers"}') >= 1


def test_pods_are_admitted_while_the_webhook_is_down(
    cluster: ClusterHandle, webhook: LocalWebhook, namespace: str
) -> None:
    webhook.stop()
    try:
        started = time.monotonic()
        pod = cluster.core.create_namespaced_pod(
            namespace,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "unpatched", "labels": {"apollo.io/checkpoint": "true"}},
                "spec": {"containers": [_container("main")]},
            },
        )
        elapsed = time.monotonic() - started
        assert _volume_claim(pod) is None  # admitted as sent: failurePolicy Ignore
        assert elapsed < 5.0, f"a create took {elapsed:.1f}s with the webhook down"
    finally:
        webhook.start()
    wait_effective(cluster.core, namespace)
