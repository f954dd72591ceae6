"""The main job: a fresh local cluster running a workload end to end through the APOLLO stack.

Brings the control plane up with three simulated nodes whose utilisation (served by a simulated
exporter, scraped by the real Prometheus) makes one of them hot; starts APOLLO, which forecasts from
Prometheus and flags the hot node; starts the scheduler extender under gunicorn and restarts
kube-scheduler with it; then runs a Deployment and shows where each pod landed and why. Then the
main job's story (`apolloctl.scenario.continue_demo`): the seed's AI Job runs as real processes, load
rises on its node, APOLLO forecasts the overload and emits MIGRATE, the orchestrator migrates it, and
the replacement resumes from its checkpoint on another node without the completed data-prep container.
"""

from __future__ import annotations

import sys
import time
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
from apolloctl.launch import (
    NodeVerdict,
    Service,
    apollo_verdicts,
    extender_holds_snapshot,
    poll,
    report_node_capacity,
    start_apollo,
    start_extender,
)
from apolloctl.scenario import continue_demo, demo_apollo_settings, simulated_prometheus
from apolloctl.sim_metrics import NodeExporter


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


def apollo_settings(prometheus_url: str) -> dict[str, Any]:
    """APOLLO reading the simulated gauges every second, forecasting in seconds rather than minutes."""
    return {
        "prometheus": simulated_prometheus(prometheus_url),
        # Seconds, not minutes, so the demo shows a forecast within its first half minute.
        "forecast": {
            "step_seconds": 1.0,
            "horizon_minutes": 1,
            "season_minutes": 0,
            "warmup_samples": 3,
        },
        "policy": {"consecutive_steps": 3},
    }


def extender_settings(kubeconfig: Path, snapshot_max_age_s: float = 5.0) -> dict[str, Any]:
    """The extender as deployed, refreshing APOLLO's snapshot twice a second (the demo's clock is fast)."""
    return {
        "kubeconfig": str(kubeconfig),
        "refresh_interval_seconds": 0.5,
        "snapshot_max_age_seconds": snapshot_max_age_s,
    }


def flags_only(address: str, hot: str) -> tuple[int, dict[str, NodeVerdict]] | None:
    """APOLLO's generation and verdicts once it predicts overload on `hot` and on no other node."""
    generation, stale, verdicts = apollo_verdicts(address)
    flagged = [name for name, v in verdicts.items() if v.overload]
    return (generation, verdicts) if not stale and flagged == [hot] else None


def run_demo(run_dir: Path, keep: bool = False) -> int:
    from kubernetes import client

    cluster = LocalCluster(ClusterConfig(run_dir=run_dir, die_with_parent=not keep), log=_say)
    cluster.start()
    exporter = NodeExporter()
    apollo: Service | None = None
    extender: Service | None = None
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

        apollo = start_apollo(
            demo_apollo_settings(apollo_settings(cluster.prometheus_url), cluster.kubeconfig),
            cluster.logs_dir / "apollo.log",
            die_with_parent=not keep,
        )
        report_node_capacity(apollo.address("grpc"), names, cpu_cores=4, memory_bytes=16 * 2**30)
        generation, verdicts = poll(
            lambda: flags_only(apollo.address("grpc"), "node-0"), 90, "APOLLO forecasting overload on node-0"
        )
        _say("APOLLO, from Prometheus: " + "; ".join(
            f"{node} score {v.score}{' (overload predicted)' if v.overload else ''}"
            for node, v in sorted(verdicts.items())
        ))  # fmt: skip

        extender = start_extender(
            apollo.address("grpc"),
            cluster.logs_dir / "extender.log",
            settings=extender_settings(cluster.kubeconfig),
            die_with_parent=not keep,
        )
        extender.wait_ready(extender_holds_snapshot(generation), what="holding APOLLO's snapshot")
        cluster.restart_scheduler((ExtenderConfig(url_prefix=extender.url, weight=5, http_timeout="1s"),))
        _say(f"scheduler extender ready at {extender.url}; kube-scheduler restarted with it")

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
        return continue_demo(cluster, exporter, apollo.address("grpc"), keep=keep, say=_say)
    finally:
        for name, service in (("apollo-extender", extender), ("apollo", apollo)):
            if service is not None and keep:
                cluster.adopt(name, service.process)  # `apolloctl cluster down` stops it
            elif service is not None:
                service.stop()
        exporter.close()
        if not keep:
            cluster.stop()
            _say("cluster stopped")


if __name__ == "__main__":
    sys.exit(run_demo(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".run/demo")))
