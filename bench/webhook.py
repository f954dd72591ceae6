"""Webhook benchmark: admission latency under concurrent load over TLS, and what it costs pod creation.

Run::

    python -m bench.webhook --json           # full: 20 s paced load + 10 s closed loop; 1,000 pods x 3 repeats
    python -m bench.webhook --json --quick   # under 60 s: 4 s paced load; 150 pods x 2 repeats

Human-readable lines first; with ``--json`` the LAST line is one JSON object: ``admit_p50_ms``,
``admit_p99_ms`` (client-side), ``create_pods_per_s_with``, ``create_pods_per_s_without``,
``create_throughput_ratio`` (with / without, same run), and what explains them: server-side quantiles,
rps, the load's mode, CPU milliseconds per created pod of kube-apiserver, etcd and the webhook with and
without it, the CPU other processes on the machine took meanwhile (``cpu_s_foreign``), each run, and pods
left unpatched. ``targets_met`` says whether admit p99 <= 5 ms and ratio >= 0.9 hold.

Why: the webhook sits on the create path of every opted-in pod; the API server waits for it (up to its
timeout) before the pod is stored, so its latency is pod-creation latency and its cost a tax on how fast
a Job or a rollout can create pods.

Everything is real and on 127.0.0.1: the local control plane (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, kwok, Prometheus), the PodMigration CRD with a set of active migrations, and the webhook
exactly as deployed (``apollo-webhook``: gunicorn, 2 gthread workers, TLS from files signed by the
cluster's CA, its PodMigration watch and claim creator running).

1. Create throughput through the API server. ``--pods`` opted-in pods created directly (8 threads,
   keep-alive HTTPS as the cluster admin), timed from the first create to the last response, with the
   webhook registered (``failurePolicy: Ignore``, objectSelector, ``clientConfig.url`` + CA bundle) and
   without it, interleaved and repeated (medians reported), pods deleted between runs. The pods are owned
   by a ConfigMap (a custom controller's pods, as far as the webhook is concerned: one workload, one
   claim, created once in the unmeasured warm-up) and name a scheduler that does not exist, so no
   scheduling or kubelet work mixes into what is measured. Every pod created in a "with" run must come
   back patched (``with_unpatched`` counts those that did not: an ignored failure would look fast).
   Eight creators saturate the API server and etcd on 2 cores, so this ratio is what the webhook costs
   in CPU; the full run adds one creator at a time (``sequential_*``: a single controller creating
   serially), where it is what the webhook costs in latency.
2. Latency. A SEPARATE process (spawned: it shares no GIL with the webhook) drives ``--connections``
   keep-alive HTTPS connections with real AdmissionReviews in a mix: a Deployment's opted-in pod
   (checkpoint claim patch), an Indexed Job pod that replaces an active migration (containers stripped,
   claim, required affinity, annotation), an opted-in bare pod, and an already patched pod (a
   re-invocation: no patch). Every answer is checked. The load is open loop (``admit_rate_rps``): by
   default twice the fastest pod-creation rate part 1 measured with the webhook registered, since the API
   server calls it once per opted-in pod it creates and so cannot ask faster; each request is timed from
   its scheduled send time, so waiting behind a slow one counts. The full run adds a closed-loop pass (back to back)
   for capacity (``capacity_rps``). Reported: client-side p50 / p99 / p99.9 (exact, every request;
   includes TLS, HTTP and the client's own Python), and the server-side p50 / p99 from the webhook's
   histogram (bucket-interpolated, aggregated over workers). The same load then runs against the floor
   (``bench/webhook_floor.py``: the same gunicorn server, TLS context and workers answering
   ``allowed: true`` without deciding anything), so ``floor_p50_ms`` / ``floor_p99_ms`` say what the
   transport alone costs on this machine at this moment.

Caveat: everything shares the machine's 2 cores, the load generator included, and so does whatever else
runs on the machine; the CPU figures per pod are the stable part, the rates and the tail latency move
with the machine's load (printed at the start, and ``cpu_s_foreign`` per run).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import multiprocessing
import os
import ssl
import statistics
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from apollo_api.podmigration import API_VERSION, GROUP, KIND, PLURAL, VERSION, Phase
from apolloctl.cluster import ClusterConfig, LocalCluster
from apolloctl.cluster.process import Process, free_port, wait_until
from bench.webhook_load import UID_PLACEHOLDER, LoadSpec, load_process
from bench.webhook_local import LocalWebhook, install_crd, unregister, wait_effective

Json = dict[str, Any]
NAMESPACE = "bench-webhook"
OWNER = "bench-owner"
JOB_UID = "0b9d4c1e-7f3a-4c2b-9e1d-5a6f7e8d9c01"
TARGET_ADMIT_P99_MS = 5.0
TARGET_RATIO = 0.9


_T0 = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - _T0:5.1f}s] {message}", flush=True)


# ---- AdmissionReview bodies ---------------------------------------------------------------------------


def _container(name: str, **extra: Any) -> Json:
    return {
        "name": name,
        "image": f"registry.example/{name}:1",
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "imagePullPolicy": "IfNotPresent",
        **extra,
    }


def _spec(containers: list[Json], restart: str = "Always") -> Json:
    return {
        "containers": containers,
        "restartPolicy": restart,
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "serviceAccountName": "default",
        "schedulerName": "default-scheduler",
        "enableServiceLinks": True,
        "priority": 0,
        "tolerations": [
            {
                "key": "node.kubernetes.io/not-ready",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
            {
                "key": "node.kubernetes.io/unreachable",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
        ],
        "volumes": [
            {
                "name": "kube-api-access-abcde",
                "projected": {
                    "defaultMode": 420,
                    "sources": [
                        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    ],
                },
            }
        ],
    }


def deployment_pod() -> Json:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "trainer-6f9c7d8b5-",
            "namespace": NAMESPACE,
            "labels": {"app": "trainer", "pod-template-hash": "6f9c7d8b5", "apollo.io/checkpoint": "true"},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "trainer-6f9c7d8b5",
                    "uid": str(uuid.uuid4()),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": _spec([_container("trainer", env=[{"name": "EPOCHS", "value": "10"}]), _container("monitor")]),
    }


def job_replacement_pod(index: int) -> Json:
    labels = {
        "apollo.io/checkpoint": "true",
        "batch.kubernetes.io/controller-uid": JOB_UID,
        "batch.kubernetes.io/job-name": "prep",
        "batch.kubernetes.io/job-completion-index": str(index),
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": f"prep-{index}-",
            "namespace": NAMESPACE,
            "labels": labels,
            "annotations": {"batch.kubernetes.io/job-completion-index": str(index)},
            "ownerReferences": [
                {"apiVersion": "batch/v1", "kind": "Job", "name": "prep", "uid": JOB_UID, "controller": True}
            ],
        },
        "spec": _spec([_container("loader"), _container("trainer")], restart="Never"),
    }


def bare_pod() -> Json:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "notebook-0", "namespace": NAMESPACE, "labels": {"apollo.io/checkpoint": "true"}},
        "spec": _spec([_container("main")]),
    }


def review_body(pod: Json) -> bytes:
    meta = pod["metadata"]
    return orjson.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": UID_PLACEHOLDER,
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
                "requestResource": {"group": "", "version": "v1", "resource": "pods"},
                "name": meta.get("name", ""),
                "namespace": NAMESPACE,
                "operation": "CREATE",
                "userInfo": {"username": "system:serviceaccount:kube-system:job-controller"},
                "object": pod,
                "oldObject": None,
                "dryRun": False,
                "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
            },
        }
    )


def patched_pod(hook: LocalWebhook, pod: Json) -> Json:
    """`pod` as the webhook patched it (to send again, as on a re-invocation)."""
    import base64

    import jsonpatch

    assert hook.service is not None
    body = review_body(pod).replace(UID_PLACEHOLDER.encode(), str(uuid.uuid4()).encode())
    status, reply, _ = hook.service.request("POST", "/mutate", body)
    assert status == 200, reply
    patch = orjson.loads(base64.b64decode(orjson.loads(reply)["response"]["patch"]))
    result: Json = jsonpatch.JsonPatch(patch).apply(pod)
    return result


def migrations(count: int) -> list[Json]:
    """Active migrations in the namespace: one per Job index (the replacement body matches index 0)."""
    out = []
    for i in range(count):
        out.append(
            {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "metadata": {"name": f"prep-{i}-move"},
                "spec": {"podName": f"prep-{i}-x{i}", "targetNode": f"node-{i % 3}"},
                "status": {
                    "phase": Phase.EVICTING,
                    "sourceNode": "node-hot",
                    "ownerKind": "Job",
                    "ownerName": "prep",
                    "ownerUID": JOB_UID,
                    "jobCompletionIndex": str(i),
                    "checkpointPVC": "prep-ckpt",
                    "containers": [
                        {"name": "loader", "state": "terminated", "exitCode": 0, "migrate": False},
                        {"name": "trainer", "state": "running", "migrate": True},
                    ],
                },
            }
        )
    return out


# ---- part 1: latency ----------------------------------------------------------------------------------


def _percentile(values: list[int], q: float) -> float:
    if not values:
        return float("nan")
    rank = q * (len(values) - 1)
    lo = int(rank)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (rank - lo)


def histogram(text: str, name: str) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) of a histogram in Prometheus text, summed over label sets."""
    buckets: dict[float, float] = {}
    prefix = f"{name}_bucket{{"
    for line in text.splitlines():
        if line.startswith(prefix):
            labels, value = line[len(prefix) :].rsplit(" ", 1)
            le = labels.split('le="', 1)[1].split('"', 1)[0]
            bound = float("inf") if le == "+Inf" else float(le)
            buckets[bound] = buckets.get(bound, 0.0) + float(value)
    return sorted(buckets.items())


def bucket_quantile(before: list[tuple[float, float]], after: list[tuple[float, float]], q: float) -> float:
    """The q-quantile of the observations between two scrapes, interpolated inside its bucket (ms)."""
    old = dict(before)
    delta = [(b, c - old.get(b, 0.0)) for b, c in after]
    total = delta[-1][1] if delta else 0.0
    if total <= 0:
        return float("nan")
    target = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in delta:
        if count >= target:
            if bound == float("inf"):
                return prev_bound * 1000
            span = count - prev_count
            frac = (target - prev_count) / span if span else 1.0
            return (prev_bound + (bound - prev_bound) * frac) * 1000
        prev_bound, prev_count = bound, count
    return float("nan")


def run_load(spec: LoadSpec) -> tuple[list[int], dict[str, int], int, float]:
    """The load generator in a spawned process: (latencies ns, errors, requests sent, measured seconds)."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=load_process, args=(spec, child), name="webhook-load")
    proc.start()
    child.close()
    result: tuple[list[int], dict[str, int], int, float] = parent.recv()
    proc.join(30)
    return result


def _summary(spec: LoadSpec, latencies: list[int], errors: dict[str, int], sent: int, seconds: float) -> Json:
    values = sorted(latencies)
    return {
        "mode": f"open loop at {spec.rate:g} rps" if spec.rate > 0 else "closed loop",
        "rate": spec.rate,
        "connections": spec.connections,
        "requests": len(values),
        "sent": sent,
        "errors": errors,
        "rps": round(len(values) / seconds, 1),
        "client_p50_ms": round(_percentile(values, 0.50) / 1e6, 3),
        "client_p99_ms": round(_percentile(values, 0.99) / 1e6, 3),
        "client_p999_ms": round(_percentile(values, 0.999) / 1e6, 3),
    }


def review_mix(hook: LocalWebhook) -> tuple[tuple[bytes, ...], tuple[bool, ...]]:
    """Mostly first admissions of a workload's pods, a replacement, a bare pod and a re-invocation."""
    rs, job, bare = deployment_pod(), job_replacement_pod(0), bare_pod()
    again = patched_pod(hook, deployment_pod())
    pods = [rs, rs, rs, job, bare, again]
    return tuple(review_body(p) for p in pods), (True, True, True, True, True, False)


def measure_latency(hook: LocalWebhook, connections: int, warmup_s: float, duration_s: float, rate: float) -> Json:
    bodies, expect = review_mix(hook)
    spec = LoadSpec(hook.port, str(hook.tls.ca), bodies, expect, connections, warmup_s, duration_s, rate)
    name = "apollo_webhook_admission_seconds"
    before = histogram(hook.metrics(), name)
    summary = _summary(spec, *run_load(spec))
    after = histogram(hook.metrics(), name)
    return summary | {
        "server_p50_ms": round(bucket_quantile(before, after, 0.50), 3),
        "server_p99_ms": round(bucket_quantile(before, after, 0.99), 3),
    }


def measure_floor(
    hook: LocalWebhook, log_path: Path, connections: int, warmup_s: float, duration_s: float, rate: float
) -> Json:
    """The same load against `bench.webhook_floor` (same server, TLS and workers; no decision, no patch)."""
    bodies, _expect = review_mix(hook)
    port = free_port()
    tls = hook.tls
    workers = str(hook.settings.server.workers)
    floor = Process(
        "webhook-floor",
        [sys.executable, "-m", "bench.webhook_floor", str(port), str(tls.certfile), str(tls.keyfile), workers],
        log_path,
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(log_path.parent / f"floor-metrics-{port}")},
    )
    floor.start()
    try:
        floor.wait_ready(lambda: _answers(port, tls.client_context()), 60)
        spec = LoadSpec(port, str(tls.ca), bodies, (False,) * len(bodies), connections, warmup_s, duration_s, rate)
        return _summary(spec, *run_load(spec))
    finally:
        floor.stop(grace=2.0)


def _answers(port: int, ctx: ssl.SSLContext) -> bool:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=2)
    try:
        conn.request("POST", "/mutate", review_body(bare_pod()).replace(UID_PLACEHOLDER.encode(), b"probe"))
        return conn.getresponse().status == 200
    finally:
        conn.close()


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


# ---- part 2: create throughput through the API server -----------------------------------------------


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
            "containers": [_container("trainer"), _container("monitor")],
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


# ---- main -----------------------------------------------------------------------------------------------


def prepare(cluster: LocalCluster, api: Any, core: Any, active: int) -> None:
    from kubernetes import client

    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    wait_until(
        lambda: any(sa.metadata.name == "default" for sa in core.list_namespaced_service_account(NAMESPACE).items),
        30,
        "the namespace's default ServiceAccount",
    )
    install_crd(api)
    custom = client.CustomObjectsApi(api)
    for body in migrations(active):
        status = body.pop("status")
        custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, body)
        custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, NAMESPACE, PLURAL, body["metadata"]["name"], {"status": status}
        )


def _latency_line(lat: Json, what: str = "the webhook") -> str:
    server = f"server p50 {lat['server_p50_ms']} ms, p99 {lat['server_p99_ms']} ms; " if "server_p50_ms" in lat else ""
    return (
        f"{what} over TLS, {lat['mode']}, {lat['connections']} keep-alive connections from another process: "
        f"client p50 {lat['client_p50_ms']} ms, p99 {lat['client_p99_ms']} ms, p99.9 {lat['client_p999_ms']} ms; "
        f"{server}{lat['rps']} rps; errors {lat['errors'] or 'none'}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.webhook", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="end with one JSON object on the last line")
    parser.add_argument("--quick", action="store_true", help="under 60 s: shorter load, fewer pods and repeats")
    parser.add_argument("--connections", type=int, default=4, help="concurrent keep-alive connections (part 1)")
    parser.add_argument("--duration", type=float, default=0.0, help="seconds of measured load (part 1)")
    parser.add_argument(
        "--rate",
        type=float,
        default=-1.0,
        help="requests/s of the open-loop load (part 1); default: twice the fastest pod creation measured in part 2; "
        "0: closed loop",
    )
    parser.add_argument("--pods", type=int, default=0, help="pods per creation run (part 2)")
    parser.add_argument("--repeats", type=int, default=0, help="creation runs per configuration (part 2)")
    parser.add_argument("--migrations", type=int, default=20, help="active PodMigrations the webhook holds")
    parser.add_argument("--workers", type=int, default=0, help="gunicorn workers (default: the webhook's own)")
    args = parser.parse_args(argv)
    duration = args.duration or (4.0 if args.quick else 20.0)
    pods = args.pods or (150 if args.quick else 1000)
    repeats = args.repeats or (2 if args.quick else 3)
    started = time.monotonic()
    say(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} cores)")

    with tempfile.TemporaryDirectory(prefix="apollo-bench-webhook-") as tmp:
        cluster = LocalCluster(ClusterConfig(run_dir=Path(tmp) / "cluster"), log=lambda _m: None)
        cluster.start()
        hook: LocalWebhook | None = None
        try:
            from kubernetes import client

            api = cluster.api_client()
            core = client.CoreV1Api(api)
            prepare(cluster, api, core, args.migrations)
            assert cluster.ca is not None
            overrides = {"server": {"workers": args.workers}} if args.workers else {}
            hook = LocalWebhook(Path(tmp) / "webhook.log", cluster.ca, cluster.kubeconfig, overrides)
            hook.start()
            assert hook.service is not None
            hook.service.wait_ready(
                lambda body: body.get("active_migrations", 0) >= args.migrations, streak=6, what="migrations held"
            )
            say(f"cluster and webhook ready in {time.monotonic() - started:.1f}s")
            say(f"pod creation through the API server ({pods} pods per run, {repeats} repeats, interleaved):")
            create = measure_creation(cluster, hook, api, core, pods, repeats, threads=8)
            say(
                f"create throughput: {create['create_pods_per_s_with']} pods/s with the webhook vs "
                f"{create['create_pods_per_s_without']} without: ratio {create['create_throughput_ratio']} "
                f"({create['with_unpatched']} pods left unpatched)"
            )
            sequential: Json = {}
            if not args.quick:
                say("one pod at a time (a single controller creating serially, latency-bound):")
                sequential = measure_creation(cluster, hook, api, core, pods // 4, 2, threads=1)
                say(f"sequential create ratio {sequential['create_throughput_ratio']}")
            # The API server calls the webhook once per opted-in pod it creates with the webhook in place, so
            # it cannot ask faster than that: twice the fastest such rate of this run is a load it will not
            # reach here.
            fastest = max(r["pods_per_s"] for r in create["create_runs"] if r["config"] == "with")
            rate = args.rate if args.rate >= 0 else round(2 * fastest)
            warmup = 1.0 if args.quick else 2.0
            lat = measure_latency(hook, args.connections, warmup, duration, rate)
            say(_latency_line(lat))
            floor = measure_floor(hook, Path(tmp) / "floor.log", args.connections, warmup, duration, rate)
            say(_latency_line(floor, "a no-decision answerer on the same server (floor)"))
            capacity: Json = {}
            if not args.quick and rate > 0:
                capacity = measure_latency(hook, args.connections, 2.0, duration / 2, 0.0)
                say(_latency_line(capacity))
        finally:
            stopping = time.monotonic()
            if hook is not None and hook.service is not None:
                hook.service.stop(grace=2.0)  # nothing is in flight any more; no need for the 20 s drain
                hook.service = None
            # A throw-away cluster: no component needs its full grace period to leave a consistent state.
            for process in reversed(list(cluster.processes.values())):
                with contextlib.suppress(Exception):
                    process.stop(grace=2.0)
            cluster.stop()
            say(f"stopped in {time.monotonic() - stopping:.1f}s")

    result = {
        "admit_p50_ms": lat["client_p50_ms"],
        "admit_p99_ms": lat["client_p99_ms"],
        "admit_p999_ms": lat["client_p999_ms"],
        "admit_server_p50_ms": lat["server_p50_ms"],
        "admit_server_p99_ms": lat["server_p99_ms"],
        "admit_rps": lat["rps"],
        "admit_requests": lat["requests"],
        "admit_errors": sum(lat["errors"].values()),
        "admit_connections": lat["connections"],
        "admit_mode": lat["mode"],
        "floor_p50_ms": floor["client_p50_ms"],
        "floor_p99_ms": floor["client_p99_ms"],
        "admit_rate_rps": lat["rate"],
        "webhook_workers": hook.settings.server.workers if hook else None,
        **({"capacity_rps": capacity["rps"], "capacity_client_p50_ms": capacity["client_p50_ms"]} if capacity else {}),
        **create,
        **(
            {
                "sequential_pods_per_s_with": sequential["create_pods_per_s_with"],
                "sequential_pods_per_s_without": sequential["create_pods_per_s_without"],
                "sequential_throughput_ratio": sequential["create_throughput_ratio"],
            }
            if sequential
            else {}
        ),
        "quick": args.quick,
        "seconds": round(time.monotonic() - started, 1),
        "targets_met": bool(
            lat["client_p99_ms"] <= TARGET_ADMIT_P99_MS
            and create["create_throughput_ratio"] >= TARGET_RATIO
            and create["with_unpatched"] == 0
            and not lat["errors"]
        ),
    }
    say(f"done in {result['seconds']}s; targets met: {result['targets_met']}")
    if args.json:
        print(orjson.dumps(result).decode(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
