"""What the end-to-end tests that go through the admission webhook set up: nodes, the webhook, claim volumes.

Each test module keeps its own fixtures (their scope, names and log files are its own) and builds them
from these, so that starting, registering and removing the webhook is written once: the PodMigration
CRD installed, `apollo-webhook` started over TLS with a certificate from the cluster's CA, registered
with the real API server, and unregistered and stopped however the module ends. There is no volume
provisioner on the local control plane: `PreboundVolumes` creates hostPath PersistentVolumes already
bound to the claim name the webhook will choose, so the claims bind and the pods schedule.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

from kubernetes import client

from apolloctl.scenario.services import install_crd
from bench.webhook_local import LocalWebhook, unregister, wait_effective
from tests.conftest import ClusterHandle


@contextlib.contextmanager
def webhook_nodes(cluster: ClusterHandle, prefix: str) -> Iterator[list[str]]:
    """Three kwok nodes of 8 CPU / 32 GiB named `prefix`-<random>-<i>, deleted afterwards."""
    names = cluster.create_nodes(3, prefix=f"{prefix}-{uuid.uuid4().hex[:4]}", cpu="8", memory="32Gi")
    try:
        yield names
    finally:
        cluster.delete_nodes(names)


@contextlib.contextmanager
def registered_webhook(
    cluster: ClusterHandle, log_name: str, registration: str, *, effective_in: str = ""
) -> Iterator[LocalWebhook]:
    """The webhook running and registered as `registration` (its log in the cluster's logs as `log_name`).

    With `effective_in`, it returns only once the API server sends that namespace's opted-in pods to it
    (a registration takes a moment to reach the API server's webhook cache).
    """
    install_crd(cluster.api)
    local = cluster.local
    assert local.ca is not None
    hook = LocalWebhook(local.logs_dir / log_name, local.ca, local.kubeconfig)
    hook.start()
    try:
        hook.register(cluster.api, registration)
        if effective_in:
            wait_effective(cluster.core, effective_in)
        yield hook
    finally:
        unregister(cluster.api, registration)
        hook.stop()


def host_path_pv(name: str, namespace: str, claim: str) -> dict[str, Any]:
    """A 1Gi hostPath volume pre-bound to `namespace/claim` (no provisioner runs locally)."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "hostPath": {"path": f"/tmp/apollo-e2e/{name}", "type": "DirectoryOrCreate"},
            "claimRef": {"namespace": namespace, "name": claim},
        },
    }


class PreboundVolumes:
    """hostPath volumes made for the claims a test expects, each pre-bound to its claim; `delete_all` after."""

    def __init__(self, core: Any) -> None:
        self.core = core
        self.names: list[str] = []

    def __call__(self, namespace: str, claim: str) -> str:
        """A new volume for `namespace/claim`; returns its name."""
        name = f"pv-{uuid.uuid4().hex[:8]}"
        self.core.create_persistent_volume(host_path_pv(name, namespace, claim))
        self.names.append(name)
        return name

    def delete_all(self) -> None:
        """Delete every volume made here (one already gone is fine)."""
        for name in self.names:
            try:
                self.core.delete_persistent_volume(name)
            except client.ApiException as exc:
                if exc.status != 404:
                    raise


def claim_bound(core: Any, namespace: str, name: str) -> bool:
    """Whether the claim exists and is Bound."""
    try:
        pvc = core.read_namespaced_persistent_volume_claim(name, namespace)
    except client.ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return bool(pvc.status.phase == "Bound")
