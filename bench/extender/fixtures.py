"""What the benchmark feeds the stack: node names, request bodies, pods, and APOLLO's scripted Prometheus.

Everything here is deterministic (seeded), so two runs send the same bodies and APOLLO scores the same
nodes the same way; only the pod identity changes per request (a fresh UID, as kube-scheduler's pods do).
"""

from __future__ import annotations

import random
import re
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

NODE_CPU = 32
NODE_MEMORY_GI = 128
SEED = 20240611
TOKEN = b"@@POD@@"  # replaced per request by a fresh pod id (name suffix and UID)
POLICY_ANNOTATION = "apollo.io/scheduling-policy"  # the extender's per-pod policy opt-in
Json = dict[str, Any]


def node_names(count: int) -> list[str]:
    return [f"bench-node-{i:05d}" for i in range(count)]


def bench_pod(name: str, uid: str, *, cpu: str, memory: str, namespace: str = "bench", policy: bool = False) -> Json:
    """A Pod as kube-scheduler sends it: owner, labels, managed fields, tolerations, two containers.

    `policy` adds the annotation that makes the extender ask APOLLO for this pod's own policy.
    """
    now = "2025-01-01T00:00:00Z"
    annotations = {"apollo.io/profile": "inference"} | ({POLICY_ANNOTATION: "true"} if policy else {})
    return {
        "metadata": {
            "name": name,
            "generateName": "bench-pod-",
            "namespace": namespace,
            "uid": uid,
            "resourceVersion": "123456",
            "creationTimestamp": now,
            "labels": {"app": "bench", "pod-template-hash": "7d4b9c8f6d", "apollo.io/workload": "bench"},
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "bench-7d4b9c8f6d",
                    "uid": "0d6c1a52-6a3f-4c1e-9a51-3f2d4c5b6a7e",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
            "managedFields": [
                {
                    "manager": "kube-controller-manager",
                    "operation": "Update",
                    "apiVersion": "v1",
                    "time": now,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:metadata": {"f:generateName": {}, "f:labels": {".": {}, "f:app": {}}}},
                }
            ],
        },
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": "registry.invalid/bench/server:1.0",
                    "args": ["--port=8080"],
                    "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                    "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": memory}},
                    "terminationMessagePath": "/dev/termination-log",
                    "imagePullPolicy": "IfNotPresent",
                },
                {
                    "name": "sidecar",
                    "image": "registry.invalid/bench/proxy:1.0",
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                },
            ],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default",
            "schedulerName": "default-scheduler",
            "priority": 0,
            "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
            ],
        },
        "status": {"phase": "Pending", "qosClass": "Burstable"},
    }


def args_template(nodes: int, *, policy: bool = False) -> list[bytes]:
    """ExtenderArgs with `nodes` NodeNames, split at the pod-id placeholder: b(token).join(parts) is a body."""
    token = TOKEN.decode()
    pod = bench_pod(f"bench-pod-{token}", token, cpu="250m", memory="512Mi", policy=policy)
    return orjson.dumps({"Pod": pod, "NodeNames": node_names(nodes)}).split(TOKEN)


def sched_pod(name: str, *, policy: bool = False) -> Json:
    """A small pod for the scheduling runs (10m CPU, 16Mi), optionally asking for its own policy."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench-sched"}}
        | ({"annotations": {POLICY_ANNOTATION: "true"}} if policy else {}),
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": "registry.invalid/bench/server:1.0",
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                }
            ],
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 0,
        },
    }


def utilisation(names: list[str]) -> dict[str, dict[str, float]]:
    """Seeded, varied per-node utilisation: mostly moderate, a tail near the overload threshold.

    Capped at 0.9: APOLLO's upper quantile then stays below 100 %, so a few percent of nodes are flagged
    overloaded (the filter removes them) and none predicts more than the node has.
    """
    rng = random.Random(SEED)
    return {
        resource: {n: min(0.9, max(0.03, rng.betavariate(2.0, 3.0))) for n in names} for resource in ("cpu", "memory")
    }


_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, "y": 31536000.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")


def prometheus_duration(text: str) -> float:
    """Seconds from a Prometheus step: a float of seconds, or a duration such as `5000ms`, `1m30s`."""
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


class ScriptedPrometheus:
    """Prometheus' query API (instant and range) answering `bench:cpu` / `bench:memory` from fixed values.

    APOLLO runs as deployed (its own process, prometheus_api_client over HTTP) and reads this instead of a
    real Prometheus, so the benchmark controls exactly which nodes look loaded. Range queries return the
    same values over at most `history_steps` steps before the end, enough for APOLLO's warm start to lift
    its warm-up guard at once without shipping days of flat history.
    """

    def __init__(self, values: dict[str, dict[str, float]], history_steps: int = 20) -> None:
        self.values = values
        self.history_steps = history_steps
        self.queries = 0
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                params = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
                scripted.queries += 1
                if url.path == "/api/v1/query":
                    body = scripted.instant(params.get("query", ""))
                elif url.path == "/api/v1/query_range":
                    body = scripted.range(params)
                else:
                    self.send_error(404)
                    return
                payload = orjson.dumps({"status": "success", "data": body})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, name="scripted-prometheus", daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def _series(self, query: str) -> dict[str, float]:
        return self.values.get(query.split(":", 1)[-1], {})

    def instant(self, query: str) -> Json:
        now = time.time()
        return {
            "resultType": "vector",
            "result": [{"metric": {"node": n}, "value": [now, repr(v)]} for n, v in self._series(query).items()],
        }

    def range(self, params: dict[str, str]) -> Json:
        start, end = float(params["start"]), float(params["end"])
        step = prometheus_duration(params.get("step", "30"))
        first = max(start, end - self.history_steps * step)
        stamps = [first + i * step for i in range(int((end - first) // step) + 1)]
        return {
            "resultType": "matrix",
            "result": [
                {"metric": {"node": n}, "values": [[t, repr(v)] for t in stamps]}
                for n, v in self._series(params.get("query", "")).items()
            ],
        }

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
