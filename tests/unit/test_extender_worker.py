"""The extender's gunicorn worker (extender.worker.VerbWorker) over real sockets: the HTTP it must get right."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from apolloctl.launch import Service, start_extender

# No cluster either: nothing to watch.
NO_CLUSTER = {"watch_pods": False, "reserve_for_migrations": False}
POD = {"metadata": {"name": "p", "namespace": "ns", "uid": "u"}, "spec": {"containers": []}}
BODY = orjson.dumps({"Pod": POD, "NodeNames": ["a", "b", "c"]})


@pytest.fixture(scope="module")
def extender(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """No APOLLO behind it: the verbs answer fail-open (every node passes, neutral scores)."""
    log = tmp_path_factory.mktemp("worker") / "extender.log"
    settings = {"watch_pods": False, "reserve_for_migrations": False, "max_body_bytes": 4096, "server": {"workers": 1}}
    service = start_extender("127.0.0.1:1", log, settings=settings)
    service.wait_ready(timeout=30)
    yield service
    service.stop()


def _exchange(service: Service, raw: bytes, responses: int = 1) -> list[tuple[int, dict[str, str], bytes]]:
    """Send raw bytes on one connection; read `responses` HTTP responses (Content-Length framed)."""
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
        sock.sendall(raw)
        buffer = b""
        out: list[tuple[int, dict[str, str], bytes]] = []
        while len(out) < responses:
            while b"\r\n\r\n" not in buffer:
                chunk = sock.recv(65536)
                assert chunk, f"connection closed after {len(out)} responses: {buffer!r}"
                buffer += chunk
            head, buffer = buffer.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
            if status == 100:
                continue
            length = int(headers["content-length"])
            while len(buffer) < length:
                buffer += sock.recv(65536)
            out.append((status, headers, buffer[:length]))
            buffer = buffer[length:]
        return out


def _post(path: str, body: bytes, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"{extra}\r\n"
    ).encode() + body


def test_pipelined_verbs_on_one_keep_alive_connection(extender: Service) -> None:
    replies = _exchange(extender, _post("/filter", BODY) + _post("/prioritize", BODY), responses=2)
    (s1, h1, b1), (s2, h2, b2) = replies
    assert s1 == s2 == 200 and h1["x-extender-worker"] == h2["x-extender-worker"]
    assert orjson.loads(b1)["NodeNames"] == ["a", "b", "c"] and orjson.loads(b1)["Error"] == ""
    assert orjson.loads(b2) == [{"Host": n, "Score": 5} for n in "abc"]


def test_chunked_body_and_expect_continue(extender: Service) -> None:
    half = len(BODY) // 2
    chunked = (
        b"POST /prioritize HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
        + b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (half, BODY[:half], len(BODY) - half, BODY[half:])
    )
    [(status, _, body)] = _exchange(extender, chunked)
    assert status == 200 and len(orjson.loads(body)) == 3


def test_bad_input_gets_a_precise_answer(extender: Service) -> None:
    [(status, headers, body)] = _exchange(extender, _post("/prioritize", b"[1, 2]"))
    assert status == 400 and b"must be a JSON object" in body and headers["content-type"] == "application/json"
    big = orjson.dumps({"Pod": POD, "NodeNames": [f"node-{i}" for i in range(1000)]})
    [(status, _, body)] = _exchange(extender, _post("/filter", big))
    assert status == 200 and b"exceeds the limit of 4096 bytes" in body  # filter reports in its Error field
    [(status, headers, body)] = _exchange(extender, b"GARBAGE / HTTP/1.1\r\n\r\n")
    assert status == 400 and b"malformed HTTP request" in body and headers.get("connection") == "close"


def test_probes_and_other_routes_go_through_flask(extender: Service) -> None:
    get = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /nowhere?x=1 HTTP/1.1\r\nHost: x\r\n\r\n"
    (s1, _, b1), (s2, _, b2) = _exchange(extender, get, responses=2)
    assert s1 == 200 and orjson.loads(b1)["service"] == "apollo-extender"
    assert s2 == 404 and orjson.loads(b2)["status"] == "Failure"  # the shell's Status-shaped error body
    [(status, headers, body)] = _exchange(extender, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status == 200 and b"apollo_extender_request_seconds" in body and headers["connection"] == "close"


def test_sigterm_closes_idle_keep_alive_connections_and_exits(tmp_path: Path) -> None:
    service = start_extender("127.0.0.1:1", tmp_path / "extender.log", settings=NO_CLUSTER)
    service.wait_ready(timeout=30)
    idle = socket.create_connection(("127.0.0.1", service.port), timeout=10)
    try:
        idle.sendall(_post("/filter", BODY))
        assert idle.recv(65536).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        service.stop(grace=15)
        assert time.monotonic() - started < 10  # not held open by the idle keep-alive connection
        assert idle.recv(65536) == b""
    finally:
        idle.close()
