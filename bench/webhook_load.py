"""Closed-loop AdmissionReview load from a separate process, over TLS with keep-alive (bench.webhook part 1).

Runs in a spawned process (no GIL shared with the webhook): `connections` threads, each with its own
keep-alive HTTPS connection verified against the CA, post AdmissionReviews cycling over prepared bodies,
each with a fresh `request.uid` (a fixed placeholder replaced per request, so building a request costs
nothing). Every answer is checked (200, the uid echoed, allowed, a patch exactly when the body expects
one).

With `rate` > 0 the load is open-loop, as the API server's is (it calls when pods are created, not when
the webhook is free): each connection sends on a fixed schedule (`rate / connections` per second,
connections staggered), and latency runs from the scheduled send time to the last byte of the answer,
so a request held back by a slow predecessor counts its wait (no coordinated omission). With `rate` 0
the connections send back to back (closed loop), which measures capacity, not latency: there latency
is mostly queueing behind the other connections. Latencies are in nanoseconds, recorded after the
warm-up only. Kept light on imports so the process starts quickly.
"""

from __future__ import annotations

import http.client
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

UID_PLACEHOLDER = "00000000-0000-4000-8000-000000000000"


@dataclass(frozen=True)
class LoadSpec:
    port: int
    ca_file: str
    bodies: tuple[bytes, ...]  # each contains UID_PLACEHOLDER once
    expect_patch: tuple[bool, ...]  # per body
    connections: int
    warmup_s: float
    duration_s: float
    rate: float = 0.0  # requests per second over all connections; 0: closed loop


def _worker(spec: LoadSpec, index: int, start: float, out: dict[str, Any]) -> None:
    ctx = ssl.create_default_context(cafile=spec.ca_file)
    conn = http.client.HTTPSConnection("127.0.0.1", spec.port, context=ctx, timeout=10)
    headers = {"Content-Type": "application/json"}
    latencies: list[int] = []
    errors: dict[str, int] = {}
    sent = 0
    warm_until = start + spec.warmup_s
    stop_at = warm_until + spec.duration_s
    interval = spec.connections / spec.rate if spec.rate > 0 else 0.0
    due = start + interval * index / spec.connections  # staggered: the connections do not fire together
    i = index
    while True:
        now = time.perf_counter()
        if interval:
            if due > now:
                time.sleep(due - now)
            planned = due
            due += interval
        else:
            planned = now
        if planned >= stop_at:
            break
        k = i % len(spec.bodies)
        i += 1
        uid = str(uuid.uuid4())
        body = spec.bodies[k].replace(UID_PLACEHOLDER.encode(), uid.encode(), 1)
        t0 = int(planned * 1e9) if interval else time.perf_counter_ns()
        try:
            conn.request("POST", "/mutate", body, headers)
            resp = conn.getresponse()
            reply = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            conn.close()
            conn = http.client.HTTPSConnection("127.0.0.1", spec.port, context=ctx, timeout=10)
            continue
        elapsed = int(time.perf_counter() * 1e9) - t0 if interval else time.perf_counter_ns() - t0
        sent += 1
        ok = (
            resp.status == 200
            and uid.encode() in reply
            and b'"allowed":true' in reply
            and (b'"patch":' in reply) == spec.expect_patch[k]
        )
        if not ok:
            key = f"bad answer {resp.status}"
            errors[key] = errors.get(key, 0) + 1
        elif planned >= warm_until:
            latencies.append(elapsed)
    conn.close()
    out[f"w{index}"] = (latencies, errors, sent)


def load_process(spec: LoadSpec, pipe: Connection) -> None:
    """Entry point of the spawned process: run the load, send back (latencies ns, errors, sent, seconds)."""
    results: dict[str, Any] = {}
    start = time.perf_counter()
    threads = [
        threading.Thread(target=_worker, args=(spec, i, start, results), daemon=True) for i in range(spec.connections)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    latencies: list[int] = []
    errors: dict[str, int] = {}
    sent = 0
    for lat, err, n in results.values():
        latencies.extend(lat)
        sent += n
        for k, v in err.items():
            errors[k] = errors.get(k, 0) + v
    pipe.send((latencies, errors, sent, spec.duration_s))
    pipe.close()
