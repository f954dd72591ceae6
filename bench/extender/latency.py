"""Part 1: latency and rps of /filter and /prioritize under closed-loop load, and where the time goes.

For each configuration (node count, per-pod policy, HTTP or HTTPS, connections) a fresh extender is
started as deployed, warmed, then loaded from a separate process (`bench.extender.load`). The latency
cases call the way kube-scheduler does, one scheduling loop on one keep-alive connection, filter then
prioritize per pod, back to back; a throughput case adds concurrent callers (several schedulers or
profiles) and reports rps and the queueing they cause. Reported:

- client-side p50/p99, exact, socket to socket in the load process: what kube-scheduler waits, and the
  figure the targets are judged on;
- server-side p50/p99 from the extender's histogram (bucket-bounded, narrowed by the client figure);
- rps = completed requests / wall time of the loaded phase; CPU seconds per process;
- in-process baselines on the same bodies, to show where the time goes: the JSON codec alone (stdlib
  ``json`` vs ``orjson``) and the production verb functions (``extender.verbs``) without HTTP.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson

from apolloctl.launch import Tls
from bench.extender.cpu import CpuMeter, cpu_line
from bench.extender.fixtures import args_template
from bench.extender.load import LoadSpec, client_latency, load_process
from bench.extender.server_metrics import VERBS, bracket_by_client, metrics_delta, scrape, server_latency
from bench.extender.stack import WORKERS, BenchApollo, NoopExtender, start_bench_extender
from extender.config import ExtenderSettings
from extender.metrics import ExtenderMetrics
from extender.verbs import ExtenderState, filter_verb, prioritize_verb

Json = dict[str, Any]
T = TypeVar("T")


@dataclass(frozen=True)
class LatencyCase:
    """One configuration of part 1."""

    nodes: int
    policy_pods: bool = False  # every pod annotated: the extender asks APOLLO for its policy
    policy_mode: str = "annotated"  # the production default
    tls: Tls | None = None
    connections: int = 1  # kube-scheduler's pattern: one scheduling loop, one call at a time

    @property
    def label(self) -> str:
        parts = [f"{self.nodes}"] + ([f"x{self.connections}"] if self.connections != 1 else [])
        if self.policy_pods:
            parts.append("policy-pods")
        if self.policy_mode != "annotated":
            parts.append(f"policy-{self.policy_mode}")
        if self.tls is not None:
            parts.append("https")
        return "-".join(parts)


def _median_ms(fn: Callable[[], object], budget_s: float = 0.6, min_reps: int = 5) -> float:
    """Median wall time of fn() in ms over as many repetitions as fit in the budget."""
    times: list[float] = []
    stop = time.perf_counter() + budget_s
    while len(times) < min_reps or time.perf_counter() < stop:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times) * 1000, 3)


def baselines(nodes: int, apollo: BenchApollo, budget_s: float) -> Json:
    """The JSON codec alone (stdlib vs orjson) and the production verb functions without HTTP, same bodies.

    The verbs run on an `ExtenderState` holding APOLLO's snapshot, with no background threads and no
    policy lookups: the extender's own work per call, which the HTTP figures add transport to.
    """
    body = uuid.uuid4().hex.encode().join(args_template(nodes))
    state = ExtenderState(settings=ExtenderSettings(policy_mode="off"), metrics=ExtenderMetrics.create())
    state.store.replace(apollo.snapshot)
    replies = {"filter": filter_verb(state, body), "prioritize": prioritize_verb(state, body)[1]}
    if b'"Error":""' not in replies["filter"] or replies["prioritize"].count(b'"Host"') != nodes:
        raise RuntimeError(f"in-process verbs failed: {replies['filter'][:200]!r} {replies['prioritize'][:200]!r}")
    decoded = {verb: orjson.loads(reply) for verb, reply in replies.items()}

    def stdlib(verb: str) -> None:
        json.loads(body)
        json.dumps(decoded[verb]).encode()

    def fast(verb: str) -> None:
        orjson.loads(body)
        orjson.dumps(decoded[verb])

    def verb_fn(verb: str) -> None:
        state.store.touch()  # the snapshot never ages out while it is measured
        filter_verb(state, body) if verb == "filter" else prioritize_verb(state, body)

    per = budget_s / 6
    return {
        "request_body_kb": round(len(body) / 1024, 1),
        "reply_kb": {v: round(len(replies[v]) / 1024, 1) for v in VERBS},
        "codec_stdlib_json_ms": {v: _median_ms(functools.partial(stdlib, v), per) for v in VERBS},
        "codec_orjson_ms": {v: _median_ms(functools.partial(fast, v), per) for v in VERBS},
        "verb_inprocess_ms": {v: _median_ms(functools.partial(verb_fn, v), per) for v in VERBS},
    }


def run_load(
    spec: LoadSpec, roots: dict[int, str], before: Callable[[], T], after: Callable[[], T]
) -> tuple[Json, Json, T, T]:
    """The load process against a ready server: (its result, CPU per process, before(), after()).

    `before` runs once the load generator is warm, right before "go"; `after` once it has reported.
    """
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    loader = ctx.Process(target=load_process, args=(spec, child), name="bench-load", daemon=True)
    try:
        loader.start()
        child.close()
        assert loader.pid is not None
        meter = CpuMeter(roots | {loader.pid: "load-generator"})
        if not parent.poll(120) or parent.recv() != "warm":
            raise RuntimeError("load generator did not warm up")
        first = before()
        cpu_before = meter.sample()
        parent.send("go")
        if not parent.poll(spec.duration_s + 120):
            raise RuntimeError("load generator did not report")
        result: Json = parent.recv()
        cpu = CpuMeter.delta(cpu_before, meter.sample())
        parent.send("bye")
        return result, cpu, first, after()
    finally:
        parent.close()
        if loader.pid is not None:
            loader.join(10)
            if loader.is_alive():
                loader.terminate()
                loader.join(5)


def measure_noop_latency(nodes: int, workdir: Path, warmup_s: float, duration_s: float) -> Json:
    """The same load against the no-op Go extender: what the protocol and the loopback cost, the floor."""
    noop = NoopExtender(workdir / f"noop-latency-{nodes}.log").start(lambda _m: None)
    try:
        spec = LoadSpec(noop.port, nodes, 1, warmup_s, duration_s, workers=1)
        result, cpu, _, _ = run_load(spec, {noop.pid: "noop-extender"}, lambda: None, lambda: None)
    finally:
        noop.stop()
    lat: dict[str, list[int]] = result["latencies"]
    completed = sum(len(v) for v in lat.values())
    return {
        "nodes": nodes,
        "case": f"{nodes}-noop",
        "requests": completed,
        "errors": len(result["errors"]),
        "rps": round(completed / result["wall_s"], 1),
        "client": {v: client_latency(lat[v]) for v in VERBS},
        "cpu_ms_per_request": round(1000 * cpu["cpu_s_by_process"].get("noop-extender", 0.0) / max(1, completed), 3),
        "cpu": cpu,
    }


def measure_latency(apollo: BenchApollo, case: LatencyCase, workdir: Path, warmup_s: float, duration_s: float) -> Json:
    base = baselines(case.nodes, apollo, budget_s=0.6 if duration_s < 10 else 3.0)
    server = start_bench_extender(
        apollo, workdir / f"extender-{case.label}.log", nodes=case.nodes, policy_mode=case.policy_mode, tls=case.tls
    )
    spec = LoadSpec(
        server.port,
        case.nodes,
        case.connections,
        warmup_s,
        duration_s,
        workers=WORKERS,
        policy=case.policy_pods,
        ca=case.tls.ca if case.tls else None,
    )
    try:
        roots = {apollo.pid: "apollo", server.pid: "extender"}
        result, cpu, before, after = run_load(spec, roots, lambda: scrape(server), lambda: scrape(server))
    finally:
        server.stop()
    delta = metrics_delta(before, after)
    lat: dict[str, list[int]] = result["latencies"]
    completed = sum(len(v) for v in lat.values())
    errors: list[str] = result["errors"]
    server_side = {v: server_latency(delta, v) for v in VERBS}
    client_side = {v: client_latency(lat[v]) for v in VERBS}
    bracket_by_client(server_side, client_side)
    return {
        "nodes": case.nodes,
        "case": case.label,
        "policy_pods": case.policy_pods,
        "policy_mode": case.policy_mode,
        "transport": "https" if case.tls else "http",
        "connections": case.connections,
        "duration_s": round(result["wall_s"], 2),
        "requests": completed,
        "errors": len(errors),
        "error_samples": errors[:3],
        "rps": round(completed / result["wall_s"], 1),
        "client": client_side,
        "server": server_side,
        "connections_per_worker": result["connections_per_worker"],
        "extender_counters": delta.counters,
        "policy_lookups": int(delta.counter("policy_lookups_total")),
        "cpu": cpu,
        "cpu_ms_per_request": {
            name: round(1000 * cpu["cpu_s_by_process"].get(name, 0.0) / max(1, completed), 3)
            for name in ("extender", "load-generator", "apollo")
        },
        "baseline": base,
    }


def print_latency(r: Json, say: Callable[[str], None]) -> None:
    b = r["baseline"]
    say(
        f"  {r['case']}: {r['transport']}, {r['connections']} connections, {r['duration_s']}s: "
        f"{r['requests']} requests, {r['rps']} rps, {r['errors']} errors; connections per worker "
        f"{r['connections_per_worker']}; request body {b['request_body_kb']} KiB; "
        f"extender CPU {r['cpu_ms_per_request']['extender']} ms per request"
    )
    for verb in VERBS:
        s, c = r["server"][verb], r["client"][verb]
        say(
            f"    {verb:<10} client p50 {c['p50_ms']} p99 {c['p99_ms']} ms | server p50 {s['p50_ms']} ms "
            f"(in {s['p50_range_ms']}) p99 {s['p99_ms']} ms (in {s['p99_range_ms']}) mean {s['mean_ms']}"
        )
        say(
            f"    {'':<10} in-process verb {b['verb_inprocess_ms'][verb]} ms; codec alone "
            f"orjson {b['codec_orjson_ms'][verb]} ms vs stdlib json {b['codec_stdlib_json_ms'][verb]} ms"
        )
    counters = r["extender_counters"]
    say("    extender counters during load: " + (", ".join(f"{k} +{v:g}" for k, v in counters.items()) or "none"))
    say("    " + cpu_line(r["cpu"]))
