"""Simulated (kwok) nodes: manifests and the waits tests need around them."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from apolloctl.cluster.configs import KWOK_NODE_ANNOTATION


def kwok_node(
    name: str,
    *,
    cpu: str = "32",
    memory: str = "128Gi",
    pods: str = "110",
    gpus: int = 0,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Node object kwok will adopt: it carries kwok's annotation and declares its capacity.

    Capacity is set here, not by kwok, so tests decide how much fits on each node.
    """
    resources: dict[str, str] = {"cpu": cpu, "memory": memory, "pods": pods}
    if gpus:
        resources["nvidia.com/gpu"] = str(gpus)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                **(labels or {}),
            },
        },
        "status": {"allocatable": dict(resources), "capacity": dict(resources)},
    }


def node_is_ready(node: Any) -> bool:
    conditions = (node.status.conditions if node.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def create_kwok_nodes(core_v1: Any, manifests: Iterable[dict[str, Any]], timeout: float = 60.0) -> list[str]:
    """Create the nodes and wait until kwok reports every one Ready, so pods can land on them."""
    names = []
    for manifest in manifests:
        core_v1.create_node(manifest)
        names.append(manifest["metadata"]["name"])
    wait_nodes_ready(core_v1, names, timeout)
    return names


def wait_nodes_ready(core_v1: Any, names: list[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    pending = set(names)
    while pending:
        for node in core_v1.list_node().items:
            if node.metadata.name in pending and node_is_ready(node):
                pending.discard(node.metadata.name)
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"kwok nodes not Ready after {timeout:.0f}s: {sorted(pending)}")
        time.sleep(0.2)
