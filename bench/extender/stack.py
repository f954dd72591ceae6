"""The processes under test, started the way they are deployed: APOLLO, our extender, the no-op extender.

APOLLO and the extender go through `apolloctl.launch` (their console scripts, settings files, the one
readiness probe), exactly as the demo and the end-to-end tests start them. APOLLO reads a scripted
Prometheus (`fixtures.ScriptedPrometheus`) served from this process, so the benchmark decides which
nodes look loaded; it warm-starts from that history and ticks every ``tick_s`` seconds, publishing a new
snapshot generation each time, which every extender worker then fetches and rebuilds, so the latency
figures include what a refresh costs the request path.
"""

from __future__ import annotations

import http.client
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import orjson

from apollo_api.v1 import apollo_pb2 as pb
from apollo_api.v1 import apollo_pb2_grpc as pb_grpc
from apolloctl.cluster.build import build_go_tool
from apolloctl.cluster.process import Process, free_port, tail
from apolloctl.launch import Service, Tls, extender_holds_snapshot, report_node_capacity, start_apollo, start_extender
from bench.extender.fixtures import (
    NODE_CPU,
    NODE_MEMORY_GI,
    ScriptedPrometheus,
    args_template,
    node_names,
    utilisation,
)
from bench.extender.server_metrics import VERBS
from extender.apollo_client import snapshot_from_proto
from extender.config import ExtenderSettings
from extender.snapshot import Snapshot

Json = dict[str, Any]
WORKERS = ExtenderSettings().server.workers  # the production default


@dataclass
class BenchApollo:
    """APOLLO in its own process, its scripted Prometheus, and the snapshot it settled on."""

    service: Service
    prometheus: ScriptedPrometheus
    snapshot: Snapshot
    summary: Json

    @property
    def address(self) -> str:
        return self.service.address("grpc")

    @property
    def pid(self) -> int:
        return self.service.pid

    def stop(self) -> None:
        self.service.stop(10.0)
        self.prometheus.close()


def apollo_settings(prometheus_url: str, tick_s: float) -> Json:
    step = tick_s
    return {
        "prometheus": {
            "url": prometheus_url,
            "queries": {"cpu": "bench:cpu", "memory": "bench:memory"},
            "stale_after_seconds": 3600,
        },
        # A horizon of about 60 steps whatever the tick, as at production's 30 s step and 30 min horizon.
        "forecast": {"step_seconds": step, "season_minutes": 0, "horizon_minutes": max(1, round(step))},
        "tuning": {"enabled": False},  # hourly refits would only add noise to a minutes-long benchmark
    }


def fetch_snapshot(address: str) -> tuple[pb.NodeScoreSnapshot, Snapshot]:
    with grpc.insecure_channel(address) as channel:
        msg = pb_grpc.SchedulingPolicyServiceStub(channel).GetNodeScoreSnapshot(
            pb.NodeScoreSnapshotRequest(columnar=True), timeout=60
        )
    return msg, snapshot_from_proto(msg)


def start_bench_apollo(count: int, tick_s: float, workdir: Path, timeout: float = 300.0) -> BenchApollo:
    """APOLLO for `count` nodes with capacity, waited for until its snapshot covers them all."""
    prometheus = ScriptedPrometheus(utilisation(node_names(count)))
    service: Service | None = None
    try:
        # Thousands of nodes: the warm start and the first forecast take a while on a busy machine.
        service = start_apollo(apollo_settings(prometheus.url, tick_s), workdir / "apollo.log", timeout=timeout)
        report_node_capacity(
            service.address("grpc"), node_names(count), cpu_cores=NODE_CPU, memory_bytes=NODE_MEMORY_GI * 2**30
        )
        deadline = time.monotonic() + timeout
        while True:
            msg, snap = fetch_snapshot(service.address("grpc"))
            if not msg.stale and len(snap) == count and bool((snap.cpu_allocatable > 0).all()):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"APOLLO snapshot unusable after {timeout:.0f}s: stale={msg.stale} ({msg.stale_reason}) "
                    f"nodes={len(snap)}; log: {tail(service.log_path)}"
                )
            time.sleep(0.5)
        scores = sorted(snap.score.astype(int).tolist())
        summary = {
            "nodes": count,
            "generation": msg.generation,
            "overloaded": int(snap.overload.sum()),
            "score_p10_p50_p90": [scores[len(scores) // 10], scores[len(scores) // 2], scores[len(scores) * 9 // 10]],
        }
        return BenchApollo(service, prometheus, snap, summary)
    except BaseException:
        if service is not None:
            service.stop(5.0)
        prometheus.close()
        raise


def start_bench_extender(
    apollo: BenchApollo,
    log_path: Path,
    *,
    nodes: int,
    watch_pods: bool = False,
    kubeconfig: str = "",
    policy_mode: str = "annotated",
    tls: Tls | None = None,
) -> Service:
    """`apollo-extender` with production settings, ready (every worker holds APOLLO's snapshot and, when it
    watches pods, a synced ledger) and warm (both verbs served by every worker)."""
    settings = {
        "watch_pods": watch_pods,
        "kubeconfig": kubeconfig,
        "policy_mode": policy_mode,
        "reserve_for_migrations": bool(kubeconfig),  # it watches PodMigrations: only with a cluster
    }
    service = start_extender(apollo.address, log_path, settings=settings, tls=tls)
    holds = extender_holds_snapshot()

    def warm_state(body: Json) -> bool:
        # As a long-running extender would be: APOLLO's snapshot held and, when it watches pods, the ledger
        # complete (the first listing counted, or replayed to this worker), so no start-up work is measured.
        return holds(body) and (not watch_pods or bool(body.get("pod_watch_synced")))

    try:
        service.wait_ready(warm_state, streak=3 * WORKERS, what="holding APOLLO's snapshot, pod watch synced")
        warm(service, nodes)
    except BaseException:
        service.stop(5.0)
        raise
    return service


def warm(service: Service, nodes: int, rounds: int = 4) -> None:
    """Filter+prioritize pairs on bursts of fresh connections, so every worker has served both verbs."""
    parts = args_template(nodes)

    def pair(_i: int) -> None:
        body = uuid.uuid4().hex.encode().join(parts)
        for verb in VERBS:
            status, reply, _ = service.request("POST", f"/{verb}", body)
            if status != 200:
                raise RuntimeError(f"warm-up {verb} answered {status}: {reply[:300]!r}")

    with ThreadPoolExecutor(max_workers=4 * WORKERS) as pool:
        list(pool.map(pair, range(rounds * 4 * WORKERS)))


class NoopExtender:
    """bench/noop_extender (Go, standard library): the extender protocol with no work behind it.

    kube-scheduler with it shows what the protocol itself costs on this machine (two HTTP round trips
    and the JSON on kube-scheduler's side per pod), the floor under any extender's ratio.
    """

    def __init__(self, log_path: Path, tls: Tls | None = None) -> None:
        self.log_path = log_path
        self.tls = tls
        self.port = 0
        self.process: Process | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return (self.process.pid if self.process else None) or 0

    def start(self, say: Any = print) -> NoopExtender:
        binary = build_go_tool("noop-extender", Path(__file__).resolve().parent.parent / "noop_extender", log=say)
        self.port = free_port()
        argv = [str(binary), f"127.0.0.1:{self.port}"]
        if self.tls is not None:
            argv += [str(self.tls.certfile), str(self.tls.keyfile)]
        self.process = Process("noop-extender", argv, self.log_path)
        self.process.start()
        self.process.wait_ready(lambda: self.served() is not None, 30)
        return self

    def served(self) -> dict[str, int] | None:
        """Requests served per verb (GET /stats), None while it does not answer."""
        conn: http.client.HTTPConnection
        if self.tls is not None:
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=5, context=self.tls.client_context())
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("GET", "/stats")
            resp = conn.getresponse()
            body = resp.read()
        except OSError:
            return None
        finally:
            conn.close()
        return {k: int(v) for k, v in orjson.loads(body).items()} if resp.status == 200 else None

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(5.0)
            self.process = None
