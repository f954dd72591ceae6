"""A synthetic cluster as the API server sends it: node and pod JSON, listings as bytes, churn as watch events.

The tick benchmark runs APOLLO's real Kubernetes reader (`apollo.adapters.kubernetes.KubeReader`: its
list-then-watch loops and cache) against :class:`FakeKubeApi`, so what is timed starts from the bytes a
listing or a watch stream carries. Objects are shaped like real ones, with what makes them big and what
the reader must walk: pods with managed fields, owner references, labels, annotations, two containers
(env, ports, mounts, requests and limits), volumes (a projected token, some claims), tolerations,
conditions and container statuses; nodes with labels, conditions, addresses, node info and images.

Every node runs one DaemonSet pod; the other pods belong to Deployments (through their ReplicaSet) and a
few StatefulSets. :class:`PodChurn` replaces Deployment pods as a rollout or rescheduling would: per
replacement, the new pod is bound (ADDED, Pending) and starts (MODIFIED, Running), the old one is marked
for deletion (MODIFIED, deletionTimestamp) and goes (DELETED); four events each.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
import orjson

STAMP = "2026-01-01T00:00:00Z"


def node_json(name: str, index: int, gpus: int) -> dict[str, Any]:
    alloc = {"cpu": "15890m", "memory": "63950328Ki", "pods": "110", "ephemeral-storage": "95551679124"}
    if gpus:
        alloc["nvidia.com/gpu"] = str(gpus)
    return {
        "metadata": {
            "name": name,
            "uid": f"00000000-0000-4000-8000-{index:012d}",
            "resourceVersion": str(1000 + index),
            "creationTimestamp": STAMP,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node.kubernetes.io/instance-type": "m6i.4xlarge" if not gpus else "p4d.24xlarge",
                "topology.kubernetes.io/region": "eu-west-1",
                "topology.kubernetes.io/zone": f"eu-west-1{'abc'[index % 3]}",
                "node-pool": f"pool-{index % 7}",
            },
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
        },
        "spec": {"podCIDR": f"10.{index // 256 % 256}.{index % 256}.0/24", "providerID": f"aws:///i-{index:017x}"},
        "status": {
            "capacity": {**alloc, "cpu": "16", "memory": "65536000Ki"},
            "allocatable": alloc,
            "conditions": [
                {
                    "type": kind,
                    "status": "False" if kind != "Ready" else "True",
                    "lastHeartbeatTime": STAMP,
                    "lastTransitionTime": STAMP,
                    "reason": f"Kubelet{kind}",
                    "message": f"kubelet reports {kind}",
                }
                for kind in ("MemoryPressure", "DiskPressure", "PIDPressure", "Ready")
            ],
            "addresses": [
                {"type": "InternalIP", "address": f"10.0.{index // 256 % 256}.{index % 256}"},
                {"type": "Hostname", "address": name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": f"{index:032x}",
                "systemUUID": f"{index:032x}",
                "bootID": f"{index:032x}",
                "kernelVersion": "6.1.0",
                "osImage": "Bottlerocket OS 1.20",
                "containerRuntimeVersion": "containerd://1.6.28",
                "kubeletVersion": "v1.30.0",
                "kubeProxyVersion": "v1.30.0",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
            "images": [
                {"names": [f"registry.example/app-{k}@sha256:{k:064x}", f"registry.example/app-{k}:v{k}"],
                 "sizeBytes": 2**26}
                for k in range(12)
            ],
        },
    }  # fmt: skip


def pod_json(
    namespace: str, name: str, node: str, owner: tuple[str, str], serial: int, *, phase: str = "Running"
) -> dict[str, Any]:
    """A bound pod; ``owner`` = (kind, name) of its controller (a ReplicaSet ``<deployment>-<hash>``, ...)."""
    kind, owner_name = owner
    labels = {"app": owner_name.rsplit("-", 1)[0] if kind == "ReplicaSet" else owner_name, "tier": "backend"}
    if kind == "ReplicaSet":
        labels["pod-template-hash"] = owner_name.rsplit("-", 1)[1]
    if serial % 3 == 0:
        labels["apollo.io/checkpoint"] = "true"
    cpu, memory = f"{100 + serial % 1900}m", f"{128 + serial % 3968}Mi"
    running = phase == "Running"
    volumes: list[dict[str, Any]] = [
        {"name": "kube-api-access", "projected": {"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        ]}},
    ]  # fmt: skip
    if kind == "StatefulSet":
        volumes.append({"name": "data", "persistentVolumeClaim": {"claimName": f"data-{name}"}})
    container = {
        "name": "app",
        "image": f"registry.example/{labels['app']}:v1.{serial % 40}",
        "ports": [{"containerPort": 8080, "protocol": "TCP"}, {"containerPort": 9090, "name": "metrics"}],
        "env": [{"name": f"VAR_{k}", "value": f"value-{k}"} for k in range(6)],
        "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": "4", "memory": "8Gi"}},
        "volumeMounts": [{"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}],
        "terminationMessagePath": "/dev/termination-log",
        "imagePullPolicy": "IfNotPresent",
    }
    sidecar = {
        "name": "proxy",
        "image": "registry.example/proxy:v2",
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
    }
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"10000000-0000-4000-8000-{serial:012d}",
            "resourceVersion": str(100_000 + serial),
            "creationTimestamp": STAMP,
            "labels": labels,
            "annotations": {"kubectl.kubernetes.io/restartedAt": STAMP, "prometheus.io/scrape": "true"},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": kind,
                    "name": owner_name,
                    "controller": True,
                    "blockOwnerDeletion": True,
                    "uid": f"20000000-0000-4000-8000-{zlib.crc32(owner_name.encode()):012d}",
                }
            ],
            "managedFields": [
                {
                    "manager": "kube-controller-manager",
                    "operation": "Update",
                    "apiVersion": "v1",
                    "time": STAMP,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:metadata": {"f:labels": {k: {} for k in labels}}, "f:spec": {"f:containers": {}}},
                }
            ],
        },
        "spec": {
            "containers": [container, sidecar],
            "volumes": volumes,
            "nodeName": node,
            "serviceAccountName": "default",
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "schedulerName": "default-scheduler",
            "priority": 0,
            "tolerations": [
                {
                    "key": f"node.kubernetes.io/{taint}",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                }
                for taint in ("not-ready", "unreachable")
            ],
        },
        "status": {
            "phase": phase,
            "conditions": [
                {"type": kind_, "status": "True" if running else "False", "lastTransitionTime": STAMP}
                for kind_ in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
            ],
            "hostIP": "10.0.0.1",
            "podIP": f"10.{serial // 65536 % 256}.{serial // 256 % 256}.{serial % 256}",
            "startTime": STAMP,
            "qosClass": "Burstable",
            "containerStatuses": [
                {
                    "name": c["name"],
                    "image": c["image"],
                    "imageID": f"{c['image']}@sha256:{serial:064x}",
                    "containerID": f"containerd://{serial:064x}",
                    "ready": running,
                    "started": running,
                    "restartCount": serial % 3 if running else 0,
                    "state": {"running": {"startedAt": STAMP}}
                    if running
                    else {"waiting": {"reason": "ContainerCreating"}},
                }
                for c in (container, sidecar)
            ],
        },
    }


def listing(items: list[dict[str, Any]], version: int) -> bytes:
    """A LIST answer's body, as the reader receives it with `_preload_content=False`."""
    return orjson.dumps(
        {"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": str(version)}, "items": items}
    )


class WatchResponse:
    """A client response opened with `_preload_content=False`: a body, or a stream of watch lines."""

    def __init__(self, data: bytes = b"", lines: tuple[bytes, ...] = ()) -> None:
        self.data = data
        self.lines = lines

    def stream(self, size: int) -> Any:
        yield from self.lines

    def release_conn(self) -> None:
        pass


class FakeKubeApi:
    """`list_node` / `list_pod_for_all_namespaces` answering the prebuilt listings; their watches end at once."""

    def __init__(self, nodes: bytes, pods: bytes) -> None:
        self.bodies = {"nodes": nodes, "pods": pods}

    def _answer(self, kind: str, kw: dict[str, Any]) -> WatchResponse:
        return WatchResponse() if kw.get("watch") else WatchResponse(self.bodies[kind])

    def list_node(self, **kw: Any) -> WatchResponse:
        return self._answer("nodes", kw)

    def list_pod_for_all_namespaces(self, **kw: Any) -> WatchResponse:
        return self._answer("pods", kw)


class SyntheticCluster:
    """``nodes`` nodes, ``pods_per_node`` pods each (one DaemonSet pod, the rest Deployments and StatefulSets).

    Only the listings' bytes and what churn needs (each Deployment pod's owner, node and serial) are kept,
    so the benchmark's process holds about what APOLLO's would, not a second copy of every object.
    """

    def __init__(self, nodes: list[str], pods_per_node: int, seed: int, workloads: int = 500) -> None:
        self.nodes = nodes
        self.rng = np.random.default_rng(seed)
        self.serial = 0
        self.pods: dict[str, tuple[str, str, int]] = {}  # Deployment pods: name -> ReplicaSet, node, serial
        items = []
        for i, node in enumerate(nodes):
            for k in range(pods_per_node):
                if k == 0:
                    items.append(self.pod("monitoring", node, ("DaemonSet", "node-exporter"), f"node-exporter-{i}"))
                    continue
                w = (i * pods_per_node + k) % workloads
                owner = ("StatefulSet", f"db-{w}") if w % 10 == 0 else ("ReplicaSet", f"svc-{w}-5d8f7c9b4")
                items.append(self.pod("apps", node, owner))
        self.pod_listing = listing(items, 2)
        del items
        self.node_listing = listing([node_json(n, i, 8 if i % 10 == 0 else 0) for i, n in enumerate(nodes)], 1)

    def pod(self, namespace: str, node: str, owner: tuple[str, str], name: str = "", **kw: Any) -> dict[str, Any]:
        """A new pod (next serial); Deployment pods are remembered for churn."""
        self.serial += 1
        name = name or f"{owner[1]}-{self.serial:06x}"
        if owner[0] == "ReplicaSet":
            self.pods[name] = (owner[1], node, self.serial)
        return pod_json(namespace, name, node, owner, self.serial, **kw)

    def api(self) -> FakeKubeApi:
        return FakeKubeApi(self.node_listing, self.pod_listing)


class PodChurn:
    """Watch events replacing Deployment pods: 4 events per replacement (bound, running, terminating, gone)."""

    def __init__(self, cluster: SyntheticCluster, events_per_tick: int) -> None:
        self.cluster = cluster
        self.replacements = max(0, events_per_tick // 4)
        self.version = 10**9  # resourceVersions after the listings'

    @property
    def events_per_tick(self) -> int:
        return 4 * self.replacements

    def _event(self, event_type: str, obj: dict[str, Any]) -> bytes:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        return orjson.dumps({"type": event_type, "object": obj})

    def tick(self) -> bytes:
        """One tick's watch stream: JSON lines as the API server sends them."""
        c = self.cluster
        lines = []
        names = list(c.pods)
        for k in c.rng.choice(len(names), size=min(self.replacements, len(names)), replace=False).tolist():
            owner, old_node, old_serial = c.pods.pop(names[k])
            node = c.nodes[int(c.rng.integers(0, len(c.nodes)))]
            new = c.pod("apps", node, ("ReplicaSet", owner), phase="Pending")
            name = new["metadata"]["name"]
            lines.append(self._event("ADDED", new))
            lines.append(self._event("MODIFIED", pod_json("apps", name, node, ("ReplicaSet", owner), c.serial)))
            leaving = pod_json("apps", names[k], old_node, ("ReplicaSet", owner), old_serial)
            leaving["metadata"]["deletionTimestamp"] = STAMP
            lines.append(self._event("MODIFIED", leaving))
            lines.append(self._event("DELETED", leaving))
        return b"\n".join(lines) + b"\n" if lines else b""
