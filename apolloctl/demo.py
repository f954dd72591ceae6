"""The main job: a fresh local cluster running a workload end to end through the APOLLO stack.

Brings the control plane up with three simulated nodes whose utilisation (served by a simulated
exporter, scraped by the real Prometheus) makes one of them hot; starts APOLLO, which forecasts from
Prometheus and flags the hot node; starts the scheduler extender under gunicorn and restarts
kube-scheduler with it; then runs a Deployment and shows where each pod landed and why. The
migration scenario joins once the webhook and the orchestrator exist.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from apolloctl.cluster import (
    ClusterConfig,
    ExtenderConfig,
    LocalCluster,
    ScrapeTarget,
    create_kwok_nodes,
    kwok_node,
)
from apolloctl.cluster.process import free_port, kill_group, wait_until
from apolloctl.sim_metrics import CPU_METRIC, MEMORY_METRIC, NodeExporter


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


# node -> (cpu, memory) utilisation the simulated exporter reports: one hot, one busy, one idle.
UTILISATION = {"node-0": (0.96, 0.90), "node-1": (0.55, 0.50), "node-2": (0.15, 0.20)}


def start_apollo(prometheus_url: str, nodes: list[str]) -> Any:
    """APOLLO in this process, reading the simulated gauges every second; told each node's capacity."""
    # kube-scheduler is restarted (fork + exec) while APOLLO's gRPC threads run: nothing of gRPC's
    # state is needed in the child, so skip its fork handlers (and their warning).
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    import grpc

    from apollo.config import ApolloSettings, ForecastSettings, PrometheusSettings
    from apollo.server import serve
    from apollo_api.v1 import apollo_pb2 as pb
    from apollo_api.v1 import apollo_pb2_grpc as pb_grpc

    settings = ApolloSettings(
        grpc_address="127.0.0.1:0",
        http_address="127.0.0.1:0",
        log_level="WARNING",
        prometheus=PrometheusSettings(
            url=prometheus_url, queries={"cpu": CPU_METRIC, "memory": MEMORY_METRIC}, stale_after_seconds=5
        ),
        # Seconds, not minutes, so the demo shows a forecast within its first half minute.
        forecast=ForecastSettings(
            step_seconds=1.0, horizon_minutes=1, season_minutes=0, overload_consecutive_steps=3, warmup_samples=3
        ),
    ).validate()
    apollo = serve(settings)
    with grpc.insecure_channel(f"127.0.0.1:{apollo.grpc_port}") as channel:
        insight = pb_grpc.InsightServiceStub(channel)
        for node in nodes:
            insight.ReportClusterInsight(
                pb.ClusterInsight(
                    node_name=node,
                    node_resources=pb.NodeResources(cpu_allocatable_cores=4, memory_allocatable_bytes=16 * 2**30),
                ),
                timeout=10,
            )
    return apollo


def start_extender(
    apollo_port: int, kubeconfig: Path, log_path: Path, snapshot_max_age_s: float = 5.0
) -> tuple[subprocess.Popen[bytes], str]:
    """`python -m extender.main` (gunicorn) as deployed, refreshing APOLLO's snapshot twice a second."""
    port = free_port()
    env = dict(
        os.environ,
        EXTENDER_SERVER__BIND=f"127.0.0.1:{port}",
        EXTENDER_APOLLO_ADDRESS=f"127.0.0.1:{apollo_port}",
        EXTENDER_KUBECONFIG=str(kubeconfig),
        EXTENDER_REFRESH_INTERVAL_SECONDS="0.5",
        EXTENDER_SNAPSHOT_MAX_AGE_SECONDS=str(snapshot_max_age_s),
        EXTENDER_LOG_LEVEL="WARNING",
    )
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "extender.main"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return proc, f"http://127.0.0.1:{port}"


def readyz(url: str) -> dict[str, Any]:
    """The extender's /readyz body, or {} while it does not answer."""
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=2) as resp:
            data: dict[str, Any] = json.loads(resp.read())
            return data
    except (OSError, ValueError):
        return {}


def run_demo(run_dir: Path, keep: bool = False) -> int:
    from kubernetes import client

    cluster = LocalCluster(ClusterConfig(run_dir=run_dir, die_with_parent=not keep), log=_say)
    cluster.start()
    exporter = NodeExporter()
    apollo: Any = None
    extender: subprocess.Popen[bytes] | None = None
    try:
        api = cluster.api_client()
        core: Any = client.CoreV1Api(api)
        apps: Any = client.AppsV1Api(api)  # manifests are plain dicts, which the client accepts
        names = create_kwok_nodes(core, [kwok_node(name, cpu="4", memory="16Gi") for name in UTILISATION])
        _say(f"kwok nodes Ready: {', '.join(names)}")
        for node, (cpu, memory) in UTILISATION.items():
            exporter.cpu[node], exporter.memory[node] = cpu, memory
        cluster.set_scrape_targets("simulated-nodes", [ScrapeTarget(exporter.address)])
        _say("simulated node utilisation (cpu, memory): " + ", ".join(f"{n} {u}" for n, u in UTILISATION.items()))

        apollo = start_apollo(cluster.prometheus_url, names)
        wait_until(lambda: _flags_hot(apollo, "node-0"), 90, "APOLLO forecasting overload on node-0 from Prometheus")
        view = apollo.engine.view
        _say("APOLLO, from Prometheus: " + "; ".join(
            f"{node} score {int(view.scores.score[i])}{' (overload predicted)' if view.scores.overload[i] else ''}"
            for i, node in enumerate(view.scores.nodes)
        ))  # fmt: skip

        extender, url = start_extender(apollo.grpc_port, cluster.kubeconfig, cluster.logs_dir / "extender.log")
        generation = view.generation
        wait_until(
            lambda: (r := readyz(url)).get("apollo") == "ok" and (r.get("snapshot_generation") or 0) >= generation,
            60,
            f"the extender holding APOLLO's snapshot (log: {cluster.logs_dir / 'extender.log'})",
        )
        cluster.restart_scheduler((ExtenderConfig(url_prefix=url, weight=5, http_timeout="1s"),))
        _say(f"scheduler extender ready at {url}; kube-scheduler restarted with it")

        apps.create_namespaced_deployment("default", deployment("trainer", 6))
        t0 = time.monotonic()
        pods = wait_running(core, "default", "app=trainer", 6)
        _say(
            f"{len(pods)} pods scheduled by kube-scheduler + APOLLO extender, Running in {time.monotonic() - t0:.1f}s:"
        )
        for pod in sorted(pods, key=lambda p: p.metadata.name):
            _say(f"  {pod.metadata.name:<32} {pod.spec.node_name:<8} {pod.status.phase}")
        per_node = {n: sum(p.spec.node_name == n for p in pods) for n in names}
        _say("pods per node: " + ", ".join(f"{n} {c}" for n, c in per_node.items()))
        if per_node["node-0"]:
            _say("FAILED: a pod landed on node-0, which APOLLO predicts will overload")
            return 1
        _say("node-0, predicted to overload, got no pod")
        if keep:
            _say(f"cluster left running; export KUBECONFIG={cluster.kubeconfig}\n`apolloctl cluster down` stops it")
        return 0
    finally:
        if extender is not None:
            kill_group(extender.pid, 20.0, extender)
        if apollo is not None:
            apollo.stop(0.5)
        exporter.close()
        if not keep:
            cluster.stop()
            _say("cluster stopped")


def _flags_hot(apollo: Any, hot: str) -> bool:
    view = apollo.engine.view
    s = view.scores
    if view.stale or s is None or hot not in s.nodes:
        return False
    return bool(s.overload[s.nodes.index(hot)]) and int(s.overload.sum()) == 1


if __name__ == "__main__":
    sys.exit(run_demo(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".run/demo")))
