"""Shared fixtures: one real local control plane per test session, a namespace per test."""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from apolloctl.cluster import ClusterConfig, LocalCluster, create_kwok_nodes, kwok_node


@dataclass
class ClusterHandle:
    """What an end-to-end test needs: typed API clients and helpers over the running cluster."""

    local: LocalCluster
    api: Any
    core: Any
    apps: Any
    batch: Any
    policy: Any
    _nodes: list[str] = field(default_factory=list)

    def create_nodes(
        self, count: int, prefix: str | None = None, labels: dict[str, str] | None = None, **capacity: Any
    ) -> list[str]:
        """Create `count` kwok nodes and wait until they are Ready; they are removed at session end."""
        prefix = prefix or f"kwok-{uuid.uuid4().hex[:6]}"
        manifests = [kwok_node(f"{prefix}-{i}", labels=labels, **capacity) for i in range(count)]
        names = create_kwok_nodes(self.core, manifests)
        self._nodes.extend(names)
        return names

    def delete_nodes(self, names: list[str]) -> None:
        for name in names:
            with contextlib.suppress(Exception):
                self.core.delete_node(name)
            if name in self._nodes:
                self._nodes.remove(name)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterHandle]:
    """A ready control plane (etcd, apiserver, scheduler, controller-manager, kwok, Prometheus)."""
    from kubernetes import client

    run_dir = Path(os.environ.get("APOLLO_TEST_RUN_DIR") or tmp_path_factory.mktemp("cluster"))
    local = LocalCluster(ClusterConfig(run_dir=run_dir), log=lambda m: print(f"[cluster] {m}"))
    local.start()
    try:
        api = local.api_client()
        handle = ClusterHandle(
            local=local,
            api=api,
            core=client.CoreV1Api(api),
            apps=client.AppsV1Api(api),
            batch=client.BatchV1Api(api),
            policy=client.PolicyV1Api(api),
        )
        yield handle
    finally:
        local.stop()


@pytest.fixture
def namespace(cluster: ClusterHandle) -> Iterator[str]:
    """A fresh namespace whose default ServiceAccount exists (pods are refused before it does)."""
    from kubernetes import client

    name = f"t-{uuid.uuid4().hex[:8]}"
    cluster.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    deadline = time.monotonic() + 30
    while True:
        try:
            cluster.core.read_namespaced_service_account("default", name)
            break
        except client.ApiException as exc:
            if exc.status != 404 or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    yield name
    cluster.core.delete_namespace(name)
