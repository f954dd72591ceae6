"""The API-server side of part 2: a keep-alive HTTPS client, a binding watch, and one timed scheduling run.

`schedule_run` creates pods and times until a watch has seen every one bound, in burst mode (the clock
starts at the first create, kube-scheduler running) or drain mode (pods created while kube-scheduler is
stopped; the clock starts when it starts, so pod creation is off the critical path).
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from apolloctl.cluster import kwok_node
from apolloctl.cluster.process import wait_until
from bench.extender.cpu import CpuMeter, cpu_line
from bench.extender.fixtures import NODE_CPU, NODE_MEMORY_GI, sched_pod

Json = dict[str, Any]


class Kube:
    """Just enough of the API over keep-alive HTTPS (one connection per thread), bodies through orjson."""

    def __init__(self, port: int, ca: Path, cert: Path, key: Path) -> None:
        self.port = port
        self.ctx = ssl.create_default_context(cafile=str(ca))
        self.ctx.load_cert_chain(str(cert), str(key))
        self._local = threading.local()

    def connect(self, timeout: float = 30.0) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=timeout)

    def call(self, method: str, path: str, body: Json | bytes | None = None, ok: tuple[int, ...] = (200,)) -> Any:
        data = orjson.dumps(body) if isinstance(body, dict) else body
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        for attempt in (1, 2):
            conn: http.client.HTTPSConnection | None = getattr(self._local, "conn", None)
            if conn is None:
                conn = self._local.conn = self.connect()
            try:
                conn.request(method, path, data, headers)
                resp = conn.getresponse()
                reply = resp.read()
                break
            except (OSError, http.client.HTTPException):
                conn.close()
                self._local.conn = None
                if attempt == 2:
                    raise
        if resp.status not in ok:
            raise RuntimeError(f"{method} {path}: HTTP {resp.status}: {reply[:300]!r}")
        return orjson.loads(reply) if reply else None


class BindWatch(threading.Thread):
    """Watches a namespace's pods and notes, per pod, the first moment it is seen with spec.nodeName.

    The first watch is opened before any pod is created, so nothing is missed; if the server ends a watch
    early it is resumed from the last resourceVersion seen (or relisted after "410 Gone").
    """

    def __init__(self, kube: Kube, namespace: str, resource_version: str, expected: int, timeout_s: float) -> None:
        super().__init__(name="bind-watch", daemon=True)
        self.kube = kube
        self.namespace = namespace
        self.rv = resource_version
        self.expected = expected
        self.deadline = time.monotonic() + timeout_s
        self.bound: dict[str, float] = {}
        self.done = threading.Event()
        self.error = ""
        self.events = 0
        self.resumed = 0
        self._conn: http.client.HTTPSConnection | None = None
        self._resp: http.client.HTTPResponse | None = None
        self._open()

    def _open(self) -> None:
        remaining = max(1, int(self.deadline - time.monotonic()))
        conn = self.kube.connect(timeout=remaining + 30)
        conn.request(
            "GET",
            f"/api/v1/namespaces/{self.namespace}/pods?watch=true&allowWatchBookmarks=true"
            f"&resourceVersion={self.rv}&timeoutSeconds={remaining}",
            headers={"Accept": "application/json"},
        )
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"watch failed: HTTP {resp.status}: {resp.read()[:300]!r}")
        self._conn, self._resp = conn, resp

    def _note(self, pod: Json) -> None:
        name = (pod.get("metadata") or {}).get("name")
        if name and name not in self.bound and (pod.get("spec") or {}).get("nodeName"):
            self.bound[name] = time.monotonic()
            if len(self.bound) >= self.expected:
                self.done.set()

    def run(self) -> None:
        try:
            while not self.done.is_set() and time.monotonic() < self.deadline:
                assert self._resp is not None and self._conn is not None
                line = self._resp.readline()
                if not line:  # the server ended this watch: resume where it stopped
                    self._conn.close()
                    self.resumed += 1
                    self._open()
                    continue
                event = orjson.loads(line)
                self.events += 1
                obj = event.get("object") or {}
                if event.get("type") == "ERROR":  # typically 410 Gone: relist, then watch from there
                    listing = self.kube.call("GET", f"/api/v1/namespaces/{self.namespace}/pods")
                    for pod in listing["items"]:
                        self._note(pod)
                    self.rv = listing["metadata"]["resourceVersion"]
                    self._conn.close()
                    self.resumed += 1
                    self._open()
                    continue
                self.rv = (obj.get("metadata") or {}).get("resourceVersion") or self.rv
                if event.get("type") != "BOOKMARK":
                    self._note(obj)
        except Exception as exc:  # reported with the run's result; the run then fails with the reason
            if not self.done.is_set():
                self.error = f"watch failed after {self.events} events: {type(exc).__name__}: {exc}"
        finally:
            self.done.set()

    def close(self) -> None:
        self.done.set()
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(OSError):
                if conn.sock is not None:
                    conn.sock.shutdown(socket.SHUT_RDWR)
            conn.close()


def create_nodes(kube: Kube, names: list[str], batch: int = 100) -> None:
    """kwok nodes in batches, each batch Ready before the next (kwok's heartbeats keep pace)."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        for start in range(0, len(names), batch):
            chunk = names[start : start + batch]
            list(
                pool.map(
                    lambda n: kube.call(
                        "POST", "/api/v1/nodes", kwok_node(n, cpu=str(NODE_CPU), memory=f"{NODE_MEMORY_GI}Gi"), (201,)
                    ),
                    chunk,
                )
            )

            def ready(chunk: list[str] = chunk) -> bool:
                items = kube.call("GET", "/api/v1/nodes?labelSelector=type%3Dkwok")["items"]
                ok = {
                    n["metadata"]["name"]
                    for n in items
                    if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))
                }
                return ok.issuperset(chunk)

            wait_until(ready, 120, f"kwok nodes {chunk[0]}..{chunk[-1]} Ready")


def delete_pods(kube: Kube, namespace: str, timeout: float = 120.0) -> None:
    kube.call("DELETE", f"/api/v1/namespaces/{namespace}/pods?gracePeriodSeconds=0")
    wait_until(
        lambda: not kube.call("GET", f"/api/v1/namespaces/{namespace}/pods?limit=1")["items"],
        timeout,
        "the benchmark's pods to be gone",
    )


def schedule_run(
    kube: Kube,
    namespace: str,
    label: str,
    count: int,
    timeout: float,
    meter: CpuMeter,
    start_scheduler: Callable[[], None] | None = None,
    *,
    policy: bool = False,
) -> Json:
    """Create `count` pods (8 threads) and time until every pod is bound.

    Burst mode (the headline): kube-scheduler is running; the clock starts at the first create.
    Drain mode (`start_scheduler` given): kube-scheduler is stopped; all pods are created first, the clock
    starts when kube-scheduler is started, so pod creation is off the critical path. `policy` annotates
    the pods so that the extender asks APOLLO for each one's own policy.
    """
    listing = kube.call("GET", f"/api/v1/namespaces/{namespace}/pods")
    if listing["items"]:
        raise RuntimeError(f"namespace {namespace} is not empty before run {label!r}")
    names = [f"{label}-{i:05d}" for i in range(count)]
    bodies = [orjson.dumps(sched_pod(n, policy=policy)) for n in names]
    # The watch outlives the creates (drain mode creates everything before the clock starts).
    watch = BindWatch(kube, namespace, listing["metadata"]["resourceVersion"], count, 2 * timeout)
    watch.start()
    created_at: list[float] = []

    def create_all() -> None:
        with ThreadPoolExecutor(max_workers=8) as pool:
            for _ in pool.map(lambda b: kube.call("POST", f"/api/v1/namespaces/{namespace}/pods", b, (201,)), bodies):
                created_at.append(time.monotonic())

    try:
        if start_scheduler is None:
            cpu_before = meter.sample()
            t0 = time.monotonic()
            create_all()
            ready_s = 0.0
        else:
            create_all()
            if watch.bound:
                raise RuntimeError(f"run {label!r}: pods were bound while kube-scheduler was stopped")
            cpu_before = meter.sample()
            t0 = time.monotonic()
            start_scheduler()
            ready_s = time.monotonic() - t0
        watch.done.wait(max(1.0, timeout - (time.monotonic() - t0)))
        cpu = CpuMeter.delta(cpu_before, meter.sample())
    finally:
        watch.close()
        watch.join(5)
    bound = sorted(watch.bound.values())
    if len(bound) < count:
        raise RuntimeError(
            f"run {label!r}: only {len(bound)} of {count} pods bound within {timeout:.0f}s; {watch.error}".strip()
        )
    total = bound[-1] - t0
    return {
        "mode": "burst" if start_scheduler is None else "drain",
        "pods": count,
        "seconds": round(total, 3),
        "pods_per_s": round(count / total, 1),
        # burst: when the last create returned; drain: creates happen before the clock starts
        "create_s": round(max(created_at) - t0, 3) if start_scheduler is None else None,
        "scheduler_start_s": round(ready_s, 3) if start_scheduler is not None else None,
        "first_bound_s": round(bound[0] - t0, 3),
        # Binding rate from first to last binding: the scheduler's own pace, whatever fed it.
        "bind_window_pods_per_s": round((count - 1) / (bound[-1] - bound[0]), 1) if bound[-1] > bound[0] else None,
        "watch_resumed": watch.resumed,
        "cpu": cpu,
    }


def run_line(label: str, r: Json) -> str:
    extra = (
        f"creates done at {r['create_s']}s"
        if r["mode"] == "burst"
        else f"pods created beforehand, kube-scheduler healthy after {r['scheduler_start_s']}s"
    )
    return (
        f"  {label}: {r['pods']} pods bound in {r['seconds']}s = {r['pods_per_s']} pods/s ({extra}, first binding "
        f"{r['first_bound_s']}s, first-to-last binding rate {r['bind_window_pods_per_s']} pods/s)\n"
        f"    {cpu_line(r['cpu'])}"
    )
