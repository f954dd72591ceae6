"""Part 1 of `bench.webhook`: what the webhook costs pod creation through the API server.

Opted-in pods are created directly (keep-alive HTTPS as the cluster admin) with the webhook registered
and without it, interleaved and repeated, and timed from the first create to the last answer; the CPU
each process tree spent per pod (API server, etcd, webhook) is read from /proc around each run, with
what other processes on the machine took meanwhile. Kept apart from the latency part because it
drives the API server rather than the webhook, and needs its own client and CPU accounting.
"""

from __future__ import annotations

import http.client
import os
import ssl
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from apolloctl.cluster import LocalCluster
from apolloctl.cluster.process import wait_until
from bench.webhook_fixtures import NAMESPACE, OWNER, Json, container, say
from bench.webhook_local import LocalWebhook, unregister, wait_effective

# ---- CPU accounting ---------------------------------------------------------------------------------------


def _proc_table() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, user+system CPU seconds) for every process."""
    tick = os.sysconf("SC_CLK_TCK")
    table: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        table[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    return table


def _busy_s() -> float:
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds of named process trees (a process and its descendants), and of the whole machine."""

    def __init__(self, roots: dict[str, int]) -> None:
        self.roots = roots

    def sample(self) -> dict[str, float]:
        table = _proc_table()
        children: dict[int, list[int]] = {}
        for pid, (ppid, _cpu) in table.items():
            children.setdefault(ppid, []).append(pid)
        out: dict[str, float] = {"machine": _busy_s()}
        for name, root in self.roots.items():
            total, stack = 0.0, [root]
            while stack:
                pid = stack.pop()
                total += table.get(pid, (0, 0.0))[1]
                stack.extend(children.get(pid, []))
            out[name] = total
        return out

    @staticmethod
    def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        return {k: after[k] - before[k] for k in after}


# ---- create throughput through the API server ------------------------------------------------------


class Kube:
    """Keep-alive HTTPS to the API server as the cluster admin, one connection per thread."""

    def __init__(self, cluster: LocalCluster) -> None:
        assert cluster.pki is not None
        self.port = cluster.endpoints.apiserver
        self.ctx = ssl.create_default_context(cafile=str(cluster.pki.ca.cert))
        self.ctx.load_cert_chain(str(cluster.pki.admin.cert), str(cluster.pki.admin.key))
        self._local = threading.local()

    def call(self, method: str, path: str, body: Json | None = None, ok: tuple[int, ...] = (200,)) -> Any:
        conn: http.client.HTTPSConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=60)
        data = orjson.dumps(body) if body is not None else None
        conn.request(method, path, data, {"Content-Type": "application/json", "Accept": "application/json"})
        resp = conn.getresponse()
        reply = resp.read()
        if resp.status not in ok:
            raise RuntimeError(f"{method} {path}: HTTP {resp.status}: {reply[:300]!r}")
        return orjson.loads(reply) if reply else None


def bench_pod(name: str, owner_uid: str) -> Json:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {"app": "bench", "apollo.io/checkpoint": "true"},
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": OWNER, "uid": owner_uid, "controller": True}
            ],
        },
        "spec": {
            # No such scheduler: the pods stay Pending, so no scheduling or kubelet work is measured.
            "schedulerName": "bench-no-scheduler",
            "containers": [container("trainer"), container("monitor")],
        },
    }


def create_run(kube: Kube, count: int, threads: int, owner_uid: str, prefix: str) -> tuple[float, int]:
    """(seconds from the first create to the last answer, pods that came back without the checkpoint)."""
    path = f"/api/v1/namespaces/{NAMESPACE}/pods"
    names = [f"{prefix}-{i}" for i in range(count)]

    def create(name: str) -> bool:
        pod = kube.call("POST", path, bench_pod(name, owner_uid), ok=(201,))
        return any(v.get("name") == "apollo-checkpoint" for v in pod["spec"].get("volumes") or [])

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda _i: kube.call("GET", f"/api/v1/namespaces/{NAMESPACE}"), range(threads)))  # connect
        t0 = time.perf_counter()
        patched = list(pool.map(create, names))
        seconds = time.perf_counter() - t0
    return seconds, sum(1 for p in patched if not p)


def delete_pods(kube: Kube, timeout: float = 120.0) -> None:
    path = f"/api/v1/namespaces/{NAMESPACE}/pods"
    kube.call("DELETE", f"{path}?labelSelector=app%3Dbench&gracePeriodSeconds=0")
    wait_until(
        lambda: not kube.call("GET", f"{path}?labelSelector=app%3Dbench&limit=1")["items"],
        timeout,
        "benchmark pods to be deleted",
    )


def measure_creation(
    cluster: LocalCluster, hook: LocalWebhook, api: Any, core: Any, pods: int, repeats: int, threads: int
) -> Json:
    kube = Kube(cluster)
    configmaps = f"/api/v1/namespaces/{NAMESPACE}/configmaps"
    owner = kube.call(
        "POST", configmaps, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": OWNER}}, ok=(201, 409)
    )
    if owner.get("kind") != "ConfigMap":
        owner = kube.call("GET", f"{configmaps}/{OWNER}")
    owner_uid = owner["metadata"]["uid"]
    hook.register(api)
    wait_effective(core, NAMESPACE)
    create_run(kube, min(50, pods), threads, owner_uid, "warm")  # unmeasured: connections, the claim, caches
    claim = f"/api/v1/namespaces/{NAMESPACE}/persistentvolumeclaims/{OWNER}-ckpt"
    wait_until(lambda: kube.call("GET", claim, ok=(200, 404)).get("kind") == "PersistentVolumeClaim", 30, "the claim")
    delete_pods(kube)
    assert hook.service is not None
    meter = CpuMeter(
        {
            "apiserver": cluster.processes["kube-apiserver"].pid or 0,
            "etcd": cluster.processes["etcd"].pid or 0,
            "webhook": hook.service.pid,
            "bench": os.getpid(),
        }
    )
    runs: list[Json] = []
    rates: dict[str, list[float]] = {"with": [], "without": []}
    cpu: dict[str, dict[str, list[float]]] = {"with": {}, "without": {}}
    unpatched = 0
    for r in range(repeats):
        for config in ("without", "with") if r % 2 == 0 else ("with", "without"):
            if config == "with":
                hook.register(api)
            else:
                unregister(api)
            wait_effective(core, NAMESPACE, registered=config == "with")
            before = meter.sample()
            seconds, missing = create_run(kube, pods, threads, owner_uid, f"{config}-{r}")
            used = CpuMeter.delta(before, meter.sample())
            if config == "with":
                unpatched += missing
            elif missing != pods:
                raise RuntimeError(f"{pods - missing} pods patched while the webhook was unregistered")
            rate = pods / seconds
            rates[config].append(rate)
            ours = sum(used[k] for k in ("apiserver", "etcd", "webhook", "bench"))
            per_pod = {k: used[k] * 1000 / pods for k in ("apiserver", "etcd", "webhook")}
            for k, v in per_pod.items():
                cpu[config].setdefault(k, []).append(v)
            runs.append(
                {
                    "config": config,
                    "repeat": r,
                    "seconds": round(seconds, 3),
                    "pods_per_s": round(rate, 1),
                    "cpu_ms_per_pod": {k: round(v, 2) for k, v in per_pod.items()},
                    "cpu_s_foreign": round(max(0.0, used["machine"] - ours), 2),
                    "machine_busy": round(used["machine"] / seconds / (os.cpu_count() or 1), 2),
                }
            )
            say(
                f"  {config:>7} #{r + 1}: {pods} pods in {seconds:.2f}s = {rate:.0f} pods/s; CPU ms/pod: "
                + ", ".join(f"{k} {v:.2f}" for k, v in per_pod.items())
                + f"; other processes {runs[-1]['cpu_s_foreign']} CPU-s, machine {runs[-1]['machine_busy']:.0%} busy"
            )
            delete_pods(kube)
    with_rate = statistics.median(rates["with"])
    without_rate = statistics.median(rates["without"])
    cpu_median = {c: {k: round(statistics.median(v), 2) for k, v in per.items()} for c, per in cpu.items()}
    return {
        "create_pods_per_s_with": round(with_rate, 1),
        "create_pods_per_s_without": round(without_rate, 1),
        "create_throughput_ratio": round(with_rate / without_rate, 3),
        "create_pods": pods,
        "create_repeats": repeats,
        "create_threads": threads,
        "with_unpatched": unpatched,
        "create_cpu_ms_per_pod": cpu_median,
        "create_runs": runs,
    }
