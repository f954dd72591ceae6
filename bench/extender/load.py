"""The load generator: a separate process keeping keep-alive connections busy, closed loop.

It is spawned (it shares no GIL with the extender or APOLLO) and, per new pod (a fresh UID), posts
filter then prioritize for that pod, as kube-scheduler does. Every reply is checked (filter: no
``Error``; prioritize: one score per node). Latency is taken socket to socket in this process, from
just before the request is written to just after the whole reply is read: what kube-scheduler waits.
"""

from __future__ import annotations

import math
import signal
import socket
import ssl
import statistics
import threading
import time
import uuid
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench.extender.fixtures import args_template
from bench.extender.server_metrics import VERBS
from extender.worker import WORKER_HEADER  # which gunicorn worker answered a verb

Json = dict[str, Any]


@dataclass(frozen=True)
class LoadSpec:
    port: int
    nodes: int
    connections: int
    warmup_s: float
    duration_s: float
    workers: int = 1
    policy: bool = False  # pods annotated to ask APOLLO for their own policy
    ca: Path | None = None  # HTTPS, verified with this CA
    max_pairs_per_connection: int = 1_000_000

    def connect(self) -> RawConnection:
        return RawConnection(self.port, self.ca)


class RawConnection:
    """A keep-alive HTTP/1.1 client with as little as possible between the clock and the socket.

    The figure the targets are judged on is meant to be the extender's, as kube-scheduler's Go client
    sees it: so the request bytes are prepared before the clock starts, written in one `sendall`, and
    the reply is framed by its Content-Length (which the extender always sends) with no header objects.
    http.client's own request and response machinery added a few hundred microseconds of Python here.
    """

    def __init__(self, port: int, ca: Path | None = None, timeout: float = 30.0) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ca is not None:
            sock = ssl.create_default_context(cafile=str(ca)).wrap_socket(sock, server_hostname="127.0.0.1")
        self.sock = sock
        self.buffer = b""

    @staticmethod
    def request(path: str, body: bytes) -> bytes:
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        return head.encode() + b"Content-Length: %d\r\n\r\n" % len(body) + body

    def exchange(self, request: bytes) -> tuple[int, bytes, bytes]:
        """(status, raw header block, body) of the reply to one prepared request."""
        self.sock.sendall(request)
        buffer = self.buffer
        while (end := buffer.find(b"\r\n\r\n")) < 0:
            buffer += self._recv()
        head, buffer = buffer[:end], buffer[end + 4 :]
        status = int(head[9:12])
        start = head.lower().find(b"content-length:")
        if start < 0:
            raise OSError(f"reply without Content-Length: {head[:200]!r}")
        line_end = head.find(b"\r\n", start)
        length = int(head[start + 15 : line_end if line_end >= 0 else len(head)])
        while len(buffer) < length:
            buffer += self._recv()
        self.buffer = buffer[length:]
        return status, head, buffer[:length]

    def _recv(self) -> bytes:
        chunk = self.sock.recv(262144)
        if not chunk:
            raise ConnectionResetError("the extender closed the connection")
        return chunk

    def header(self, head: bytes, name: str) -> str | None:
        for line in head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.lower().encode():
                return value.strip().decode()
        return None

    def close(self) -> None:
        self.sock.close()


def balanced_connections(spec: LoadSpec, body: bytes) -> tuple[list[RawConnection], list[int]]:
    """`spec.connections` keep-alive connections spread evenly over the extender's gunicorn workers.

    gunicorn hands a new connection to whichever worker accepts first, so 4 connections can land 4/0 on
    2 workers: one GIL-bound process then serves everything while the other idles (seen here: half the
    rps and 1.7x the p99 of a 2/2 split in the same run). Many clients spread evenly on average, so the
    load does too: connections are opened until each worker holds its share (the X-Extender-Worker
    header says which worker answered), surplus ones are closed. Returns the split achieved.
    """
    share = math.ceil(spec.connections / max(1, spec.workers))
    kept: list[RawConnection] = []
    split: dict[str, int] = {}
    for _ in range(50 * spec.connections):
        if len(kept) == spec.connections:
            break
        conn = spec.connect()
        _status, head, _reply = conn.exchange(RawConnection.request("/filter", body))
        worker = conn.header(head, WORKER_HEADER)
        if worker is None:
            if spec.workers > 1:
                raise RuntimeError(f"the extender's reply has no {WORKER_HEADER} header: cannot balance the load")
            worker = "single"  # one process (the no-op extender): nothing to balance
        if split.get(worker, 0) < share:
            kept.append(conn)
            split[worker] = split.get(worker, 0) + 1
        else:
            conn.close()
    while len(kept) < spec.connections:  # could not balance (a worker down?): load anyway, the split says so
        kept.append(spec.connect())
        split["unknown"] = split.get("unknown", 0) + 1
    return kept, sorted(split.values(), reverse=True)


def _client_thread(
    spec: LoadSpec,
    parts: list[bytes],
    conn: RawConnection,
    warmed: threading.Barrier,
    go: threading.Event,
    start_at: list[float],
    out: dict[str, Any],
) -> None:
    """One keep-alive connection: warm up, wait for "go", then filter+prioritize pairs until the deadline."""
    host_count = spec.nodes
    lat: dict[str, list[int]] = {v: [] for v in VERBS}
    errors: list[str] = []

    def run_pairs(deadline: float, record: bool) -> None:
        nonlocal conn
        pairs = 0
        while time.perf_counter() < deadline and pairs < spec.max_pairs_per_connection:
            pairs += 1
            body = uuid.uuid4().hex.encode().join(parts)
            for verb in VERBS:
                request = RawConnection.request(f"/{verb}", body)
                t0 = time.perf_counter_ns()
                try:
                    status, _head, reply = conn.exchange(request)
                except (OSError, ValueError) as exc:
                    errors.append(f"{verb}: {type(exc).__name__}: {exc}")
                    conn.close()
                    conn = spec.connect()
                    break
                elapsed = time.perf_counter_ns() - t0
                ok = status == 200 and (
                    b'"Error":""' in reply if verb == "filter" else reply.count(b'"Host"') == host_count
                )
                if not ok:
                    errors.append(f"{verb}: HTTP {status}: {reply[:200]!r}")
                elif record:
                    lat[verb].append(elapsed)

    try:
        run_pairs(time.perf_counter() + spec.warmup_s, record=False)
        warmed.wait(120)
        go.wait(120)
        run_pairs(start_at[0] + spec.duration_s, record=True)
    finally:
        conn.close()
        out.update(latencies=lat, errors=errors, finished=time.perf_counter())


def load_process(spec: LoadSpec, pipe: Connection) -> None:
    """Child process: `spec.connections` client threads; reports "warm", waits for "go", sends results."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops this process
    parts = args_template(spec.nodes, policy=spec.policy)
    warmed = threading.Barrier(spec.connections + 1)
    go = threading.Event()
    start_at = [0.0]
    outs: list[dict[str, Any]] = [{} for _ in range(spec.connections)]
    conns, split = balanced_connections(spec, uuid.uuid4().hex.encode().join(parts))
    threads = [
        threading.Thread(target=_client_thread, args=(spec, parts, conn, warmed, go, start_at, out), daemon=True)
        for conn, out in zip(conns, outs, strict=True)
    ]
    for t in threads:
        t.start()
    warmed.wait(120)
    pipe.send("warm")
    if not pipe.poll(120) or pipe.recv() != "go":
        return
    start_at[0] = time.perf_counter()
    go.set()
    for t in threads:
        t.join(spec.duration_s + 60)
    pipe.send(
        {
            "latencies": {v: [x for o in outs for x in o.get("latencies", {}).get(v, [])] for v in VERBS},
            "errors": [e for o in outs for e in o.get("errors", [])],
            "wall_s": max(float(o.get("finished", start_at[0])) for o in outs) - start_at[0],
            "connections_per_worker": split,
        }
    )
    pipe.poll(60)  # the parent reads this process's CPU time first, then says "bye"


def percentile_ms(sorted_values: list[int], q: float) -> float:
    """Nearest-rank percentile of nanosecond values, in milliseconds."""
    if not sorted_values:
        return math.nan
    index = max(0, math.ceil(q * len(sorted_values)) - 1)
    return sorted_values[index] / 1e6


def client_latency(values: list[int]) -> Json:
    data = sorted(values)
    return {
        "count": len(data),
        "p50_ms": round(percentile_ms(data, 0.50), 3),
        "p99_ms": round(percentile_ms(data, 0.99), 3),
        "mean_ms": round(statistics.fmean(data) / 1e6, 3) if data else None,
    }
