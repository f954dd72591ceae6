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

Modules: ``bench.webhook_create`` (part 1), ``bench.webhook_latency`` (part 2), ``bench.webhook_fixtures``
(the pods, reviews and migrations both use); this one prepares the cluster, runs both and reports.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from apollo_api.podmigration import GROUP, PLURAL, VERSION
from apolloctl.cluster import ClusterConfig, LocalCluster
from apolloctl.cluster.process import wait_until
from apolloctl.scenario.services import install_crd
from bench.webhook_create import measure_creation
from bench.webhook_fixtures import NAMESPACE, Json, migrations, say
from bench.webhook_latency import measure_floor, measure_latency
from bench.webhook_local import LocalWebhook

TARGET_ADMIT_P99_MS = 5.0
TARGET_RATIO = 0.9


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
