"""Part 2 of `bench.webhook`: admission latency from a separate process over TLS, and its floor.

The load runs in a spawned process (`bench.webhook_load`: it shares no GIL with the webhook) over
keep-alive HTTPS connections, open or closed loop, with the review mix from `bench.webhook_fixtures`;
client-side quantiles are exact, server-side ones come from the webhook's histogram between two
scrapes. :func:`measure_floor` runs the same load against `bench.webhook_floor` (the same server and
TLS, no decision) to say what the transport alone costs. Kept apart from the create-throughput part,
which measures the API server, not the webhook's own answers.
"""

from __future__ import annotations

import http.client
import multiprocessing
import os
import ssl
import sys
from pathlib import Path

from apolloctl.cluster.process import Process, free_port
from bench.webhook_fixtures import Json, bare_pod, deployment_pod, job_replacement_pod, patched_pod, review_body
from bench.webhook_load import UID_PLACEHOLDER, LoadSpec, load_process
from bench.webhook_local import LocalWebhook


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
