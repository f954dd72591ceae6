"""Closed-loop AdmissionReview load from a separate process, over TLS with keep-alive (bench.webhook part 1).

Runs in a spawned process (no GIL shared with the webhook): `connections` threads, each with its own
keep-alive HTTPS connection verified against the CA, post AdmissionReviews cycling over prepared bodies,
each with a fresh `request.uid` (a fixed placeholder replaced per request). The request bytes are built
before the clock starts and written in one `sendall`, and the reply is framed by its Content-Length
without header objects (`RawConnection`): the figure is meant to be the webhook's as the API server's Go
client sees it, and http.client's request and response machinery adds a few hundred microseconds of
Python. Every answer is checked (200, the uid echoed, allowed, a patch exactly when the body expects
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

import socket
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

UID_PLACEHOLDER = "00000000-0000-4000-8000-000000000000"


class RawConnection:
    """A keep-alive HTTPS/1.1 client with as little Python as possible between the clock and the socket."""

    def __init__(self, port: int, ca_file: str, timeout: float = 10.0) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = ssl.create_default_context(cafile=ca_file).wrap_socket(raw, server_hostname="127.0.0.1")
        self.buffer = b""

    @staticmethod
    def request(body: bytes) -> bytes:
        head = b"POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        return head + b"Content-Length: %d\r\n\r\n" % len(body) + body

    def exchange(self, request: bytes) -> tuple[int, bytes]:
        """(status, body) of the reply to one prepared request."""
        self.sock.sendall(request)
        buffer = self.buffer
        while (end := buffer.find(b"\r\n\r\n")) < 0:
            buffer += self._recv()
        head, buffer = buffer[:end], buffer[end + 4 :]
        start = head.lower().find(b"content-length:")
        if start < 0:
            raise OSError(f"reply without Content-Length: {head[:200]!r}")
        line_end = head.find(b"\r\n", start)
        length = int(head[start + 15 : line_end if line_end >= 0 else len(head)])
        while len(buffer) < length:
            buffer += self._recv()
        self.buffer = buffer[length:]
        return int(head[9:12]), buffer[:length]

    def _recv(self) -> bytes:
        chunk = self.sock.recv(262144)
        if not chunk:
            raise ConnectionResetError("the server closed the connection")
        return chunk

    def close(self) -> None:
        self.sock.close()


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
    conn = RawConnection(spec.port, spec.ca_file)
    latencies: list[int] = []
    errors: dict[str, int] = {}
    sent = 0
    warm_until = start + spec.warmup_s
    stop_at = warm_until + spec.duration_s
    interval = spec.connections / spec.rate if spec.rate > 0 else 0.0
    due = start + interval * index / spec.connections  # staggered: the connections do not fire together
    i = index
    while True:
        k = i % len(spec.bodies)
        i += 1
        uid = str(uuid.uuid4()).encode()
        request = RawConnection.request(spec.bodies[k].replace(UID_PLACEHOLDER.encode(), uid, 1))
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
        t0 = int(planned * 1e9) if interval else time.perf_counter_ns()
        try:
            status, reply = conn.exchange(request)
        except OSError as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            conn.close()
            conn = RawConnection(spec.port, spec.ca_file)
            continue
        elapsed = int(time.perf_counter() * 1e9) - t0 if interval else time.perf_counter_ns() - t0
        sent += 1
        ok = (
            status == 200
            and uid in reply
            and b'"allowed":true' in reply
            and (b'"patch":' in reply) == spec.expect_patch[k]
        )
        if not ok:
            key = f"bad answer {status}"
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
