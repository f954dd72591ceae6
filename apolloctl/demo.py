"""The main job: a fresh local cluster running a workload end to end.

Brings the control plane up, adds simulated nodes, runs a Deployment and shows where the real
kube-scheduler placed each pod once kwok reports it Running.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from apolloctl.cluster import ClusterConfig, LocalCluster, create_kwok_nodes, kwok_node


def _say(msg: str) -> None:
    print(msg, flush=True)


def deployment(name: str, replicas: int, cpu: str = "500m", memory: str = "512Mi") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "main",
                            "image": "registry.invalid/trainer:1",
                            "resources": {"requests": {"cpu": cpu, "memory": memory}},
                        }
                    ]
                },
            },
        },
    }


def wait_running(core: Any, namespace: str, selector: str, count: int, timeout: float = 120.0) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        pods = core.list_namespaced_pod(namespace, label_selector=selector).items
        running = [p for p in pods if p.status.phase == "Running" and p.spec.node_name]
        if len(running) >= count:
            return running
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(running)}/{count} pods Running after {timeout:.0f}s")
        time.sleep(0.3)


def run_demo(run_dir: Path, keep: bool = False) -> int:
    from kubernetes import client

    cluster = LocalCluster(ClusterConfig(run_dir=run_dir, die_with_parent=not keep), log=_say)
    cluster.start()
    try:
        api = cluster.api_client()
        core: Any = client.CoreV1Api(api)
        apps: Any = client.AppsV1Api(api)  # manifests are plain dicts, which the client accepts
        names = create_kwok_nodes(core, [kwok_node(f"node-{i}", cpu="4", memory="16Gi") for i in range(3)])
        _say(f"kwok nodes Ready: {', '.join(names)}")
        apps.create_namespaced_deployment("default", deployment("trainer", 6))
        t0 = time.monotonic()
        pods = wait_running(core, "default", "app=trainer", 6)
        _say(f"{len(pods)} pods scheduled by kube-scheduler and Running in {time.monotonic() - t0:.1f}s:")
        for pod in sorted(pods, key=lambda p: p.metadata.name):
            _say(f"  {pod.metadata.name:<32} {pod.spec.node_name:<8} {pod.status.phase}")
        if keep:
            _say(f"cluster left running; export KUBECONFIG={cluster.kubeconfig}\n`apolloctl cluster down` stops it")
        return 0
    finally:
        if not keep:
            cluster.stop()
            _say("cluster stopped")


if __name__ == "__main__":
    sys.exit(run_demo(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".run/demo")))
