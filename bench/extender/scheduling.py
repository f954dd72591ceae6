"""Part 2: kube-scheduler throughput on the local control plane, without an extender, with the no-op one, with ours.

Configurations are interleaved and repeated, each from a freshly restarted kube-scheduler, pods deleted
and gone in between, after a small unmeasured warm-up. Each repetition runs them in a rotated order, so no
configuration always follows the same one; ratios are taken within a repetition (`bench.extender.cli`).
The no-op extender (`bench/noop_extender`, Go standard library) measures what the protocol itself costs here (two HTTP
round trips and kube-scheduler's own JSON per pod): the floor under any extender, and the figure ours
is judged against, each ratio in the same run as its floor. Counters prove each extender was consulted
for every pod (an ignorable extender that fails would look fast). Besides the headline (names only,
plain HTTP, unannotated pods), single runs exercise every mode as deployed: ``nodeCacheCapable: false``
(filter gets a NodeList, prioritize too), HTTPS (the manifests' ``enableHTTPS: true``), and pods
annotated for the per-pod policy, so policy lookups really happen.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apolloctl.cluster import ClusterConfig, ExtenderConfig, LocalCluster
from apolloctl.cluster.build import ensure_binaries
from apolloctl.cluster.process import wait_until
from apolloctl.launch import Service, Tls
from bench.extender.cpu import CpuMeter
from bench.extender.fixtures import node_names
from bench.extender.kube import Kube, create_nodes, delete_pods, run_line, schedule_run
from bench.extender.server_metrics import VERBS, Delta, metrics_delta, scrape, server_latency
from bench.extender.stack import BenchApollo, NoopExtender, start_bench_extender

Json = dict[str, Any]
SCHED_NAMESPACE = "bench-sched"


@dataclass(frozen=True)
class SchedConfig:
    """One kube-scheduler configuration: which extender (none, "noop", "ours") and how it is called."""

    name: str
    extender: str | None
    node_cache_capable: bool = True
    https: bool = False
    policy_pods: bool = False


WITHOUT = SchedConfig("without", None)
NOOP = SchedConfig("noop", "noop")
OURS = SchedConfig("with", "ours")
HEADLINE = (WITHOUT, NOOP, OURS)
MODES = (
    SchedConfig("noop-nodelist", "noop", node_cache_capable=False),
    SchedConfig("with-nodelist", "ours", node_cache_capable=False),
    SchedConfig("noop-https", "noop", https=True),
    SchedConfig("with-https", "ours", https=True),
    SchedConfig("with-policy-pods", "ours", policy_pods=True),
)


def rotated(configs: tuple[SchedConfig, ...], rep: int) -> tuple[SchedConfig, ...]:
    """Repetition `rep`'s order: what runs first (after a deletion, a restart) changes every repetition."""
    k = rep % len(configs)
    return configs[k:] + configs[:k]


def extender_report(delta: Delta, pods: int, label: str, say: Callable[[str], None]) -> Json:
    consulted = {v: server_latency(delta, v) for v in VERBS}
    say(
        f"    extender during {label}: "
        + "; ".join(
            f"{v} {consulted[v]['count']} requests, server p50 {consulted[v]['p50_ms']} p99 {consulted[v]['p99_ms']} ms"
            for v in VERBS
        )
    )
    say("    extender counters: " + (", ".join(f"{k} +{v:g}" for k, v in delta.counters.items()) or "none"))
    if consulted["filter"]["count"] < pods or consulted["prioritize"]["count"] < pods:
        raise RuntimeError(
            f"{label}: kube-scheduler consulted the extender fewer times than there were pods ({consulted}); "
            "an ignorable extender that fails would make the WITH run look fast"
        )
    return {
        "server": consulted,
        "counters": delta.counters,
        "policy_lookups": int(delta.counter("policy_lookups_total")),
    }


def measure_scheduling(
    apollo: BenchApollo,
    workdir: Path,
    nodes: int,
    pods: int,
    *,
    repeats: int,
    drain: bool,
    modes: bool,
    tls: Tls,
    say: Callable[[str], None],
) -> Json:
    """The headline configurations interleaved `repeats` times in burst then drain mode; the other modes once each."""
    ensure_binaries(lambda _m: None)
    cluster = LocalCluster(ClusterConfig(run_dir=workdir / "cluster"), log=lambda _m: None)
    floors: dict[bool, NoopExtender] = {}
    meter = CpuMeter({apollo.pid: "apollo"})
    t_start = time.monotonic()
    out: Json = {"nodes": nodes, "pods": pods, "repeats": repeats}
    cluster.start()
    try:
        assert cluster.pki is not None
        kube = Kube(cluster.endpoints.apiserver, cluster.pki.ca.cert, cluster.pki.admin.cert, cluster.pki.admin.key)
        say(f"  control plane up in {cluster.started_at:.1f}s")
        kube.call("POST", "/api/v1/namespaces", {"metadata": {"name": SCHED_NAMESPACE}}, (201,))
        wait_until(
            lambda: any(
                sa["metadata"]["name"] == "default"
                for sa in kube.call("GET", f"/api/v1/namespaces/{SCHED_NAMESPACE}/serviceaccounts")["items"]
            ),
            60,
            "the namespace's default service account",
        )
        t = time.monotonic()
        create_nodes(kube, node_names(nodes))
        say(f"  {nodes} kwok nodes Ready in {time.monotonic() - t:.1f}s")
        timeout = max(60.0, pods / 5)
        # The first pods pay cold caches in the apiserver and the scheduler: not measured.
        schedule_run(kube, SCHED_NAMESPACE, "warmup", max(20, pods // 20), timeout, meter)
        delete_pods(kube, SCHED_NAMESPACE)
        for https in (False, True):
            floor = NoopExtender(workdir / f"noop-extender{'-https' if https else ''}.log", tls if https else None)
            floors[https] = floor.start(say)
            meter.roots[floor.pid] = "noop-extender"

        def run(config: SchedConfig, prefix: str, drain_mode: bool) -> Json:
            ours: Service | None = None
            if config.extender == "ours":
                # A fresh extender per run: its pod watch would otherwise burn CPU during the other runs.
                ours = start_bench_extender(
                    apollo,
                    workdir / f"extender-{prefix}.log",
                    nodes=nodes,
                    watch_pods=True,
                    kubeconfig=str(cluster.kubeconfig),
                    tls=tls if config.https else None,
                )
                meter.roots[ours.pid] = "extender"
            floor = floors[config.https]
            url = ours.url if ours else floor.url
            extenders = (
                (
                    ExtenderConfig(
                        url_prefix=url,
                        weight=5,
                        node_cache_capable=config.node_cache_capable,
                        ignorable=True,
                        http_timeout="2s",
                        ca_pem=tls.ca.read_bytes() if config.https else None,
                    ),
                )
                if config.extender
                else ()
            )
            try:
                before_noop = (floor.served() or {}) if config.extender == "noop" else {}
                before = scrape(ours) if ours else None
                if drain_mode:
                    proc = cluster.processes.get("kube-scheduler")
                    if proc is not None:
                        proc.stop()
                    r = schedule_run(
                        kube,
                        SCHED_NAMESPACE,
                        prefix,
                        pods,
                        timeout,
                        meter,
                        lambda: cluster.restart_scheduler(extenders),
                        policy=config.policy_pods,
                    )
                else:
                    cluster.restart_scheduler(extenders)  # every run starts from a fresh kube-scheduler
                    r = schedule_run(kube, SCHED_NAMESPACE, prefix, pods, timeout, meter, policy=config.policy_pods)
                say(run_line(f"{config.name + (' (drain)' if drain_mode else ''):<24}", r))
                if ours is not None and before is not None:
                    r["extender"] = extender_report(metrics_delta(before, scrape(ours)), pods, f"run {prefix}", say)
                elif config.extender == "noop":
                    served = {k: v - before_noop.get(k, 0) for k, v in (floor.served() or {}).items()}
                    if not served or min(served.values()) < pods:
                        raise RuntimeError(f"run {prefix}: the no-op extender was consulted only {served}")
                    r["noop_served"] = served
            finally:
                if ours is not None:
                    ours.stop()
                    meter.roots.pop(ours.pid, None)
            delete_pods(kube, SCHED_NAMESPACE)
            return r

        burst: dict[str, list[Json]] = {c.name: [] for c in HEADLINE}
        for rep in range(repeats):
            for config in rotated(HEADLINE, rep):
                burst[config.name].append(run(config, f"{config.name}-{rep}", False))
        out["runs"] = burst
        for config in HEADLINE:
            out[config.name] = {
                "pods_per_s": round(statistics.median(r["pods_per_s"] for r in burst[config.name]), 1),
                "pods_per_s_each": [r["pods_per_s"] for r in burst[config.name]],
            }
        if drain:
            drained: dict[str, list[Json]] = {c.name: [] for c in HEADLINE}
            for rep in range(repeats):
                for config in rotated(HEADLINE, rep):
                    drained[config.name].append(run(config, f"drain-{config.name}-{rep}", True))
            for name, runs in drained.items():
                # The run with the median binding rate stands for the configuration (its CPU figures too).
                ranked = sorted(runs, key=lambda r: r["bind_window_pods_per_s"] or 0.0)
                out[f"drain_{name}"] = ranked[(len(ranked) - 1) // 2] | {
                    "bind_window_pods_per_s_each": [r["bind_window_pods_per_s"] for r in runs]
                }
        if modes:
            for config in MODES:
                out[f"mode_{config.name}"] = run(config, config.name, False)
    finally:
        for floor in floors.values():
            floor.stop()
        cluster.stop()
    out["wall_s"] = round(time.monotonic() - t_start, 1)
    return out
