"""A gunicorn worker that serves the two verbs with almost nothing between the socket and the verb function.

Why: kube-scheduler waits for the extender twice per pod, from its single scheduling loop, on cores it
shares with the rest of the control plane. Measured on gunicorn's gthread worker, the server path
(selector and thread-pool hand-offs, gunicorn's pure-Python HTTP parser, the WSGI environ, the
response object) cost about 0.4 ms of CPU per request, more than the verb itself at 1,000 nodes.

This worker keeps gunicorn for what it is good at (the master: binding, forking, restarting workers,
graceful shutdown, TLS settings) and replaces the request path. Each connection gets a thread that
blocks in `recv` (kube-scheduler holds one or two keep-alive connections per extender, so there are
few), feeds the bytes to `httptools` (the llhttp parser Node.js uses, in C), and hands the body of
`POST /filter` and `POST /prioritize` straight to the verb functions registered as `RawRoutes` in the
app's `extensions`; the reply goes back in one `sendall`. Every other request (probes, /metrics) is
turned into a WSGI environ and served by the Flask app unchanged, so there is still one app and one
set of routes. HTTPS uses gunicorn's own `ssl_wrap_socket` (and so the shell's cached, reloading TLS
context). Idle keep-alive connections are closed after `keepalive` seconds; on SIGTERM the worker
stops accepting, lets requests in progress finish (up to `graceful_timeout`) and closes idle ones.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import select
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httptools
import orjson
from gunicorn import sock as gsock
from gunicorn.workers.base import Worker

log = logging.getLogger("extender.worker")

RAW_ROUTES = "raw_routes"  # the key under which an app registers its RawRoutes in `app.extensions`
# Which gunicorn worker answered: gunicorn leaves a connection to whichever worker accepts it first, and
# an operator (or the benchmark's load generator) needs to see where keep-alive connections landed.
WORKER_HEADER = "X-Extender-Worker"
RawHandler = Callable[[bytes | None], tuple[int, bytes]]
"""Body bytes in (None: refused unread, larger than `max_body`), (HTTP status, JSON bytes) out."""

_REASONS = {100: "Continue", 200: "OK", 400: "Bad Request", 404: "Not Found", 500: "Internal Server Error"}
_POLL_S = 0.5  # how often blocked threads look at `alive` (shutdown latency, not request latency)


@dataclass(frozen=True)
class RawRoutes:
    """Routes served without WSGI: (method, path) -> handler, and the largest body read."""

    handlers: Mapping[tuple[bytes, bytes], RawHandler]
    max_body: int


@dataclass
class _Request:
    url: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: list[bytes] = field(default_factory=list)
    size: int = 0
    too_large: bool = False
    method: bytes = b""
    keep_alive: bool = True


class _Connection:
    """One client connection: parse, dispatch, answer, until the client or the worker is done."""

    def __init__(self, worker: VerbWorker, sock: socket.socket, client: tuple[str, int] | Any) -> None:
        self.worker = worker
        self.sock = sock
        self.client = client
        self.parser = httptools.HttpRequestParser(self)
        self.current = _Request()
        self.in_message = False
        self.ready: list[_Request] = []

    # ---- httptools callbacks (C calls these while parsing) -----------------------------------------------

    def on_message_begin(self) -> None:
        self.current = _Request()
        self.in_message = True

    def on_url(self, url: bytes) -> None:
        self.current.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.current.headers.append((name, value))

    def on_headers_complete(self) -> None:
        request = self.current
        request.method = self.parser.get_method()
        request.keep_alive = self.parser.should_keep_alive()
        if any(n.lower() == b"expect" and v.lower() == b"100-continue" for n, v in request.headers):
            self.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        request = self.current
        request.size += len(body)
        if request.size > self.worker.max_body:
            request.too_large = True
            request.body.clear()  # read and dropped, so the connection stays in step
        else:
            request.body.append(body)

    def on_message_complete(self) -> None:
        self.in_message = False
        self.ready.append(self.current)

    # ---- the loop ------------------------------------------------------------------------------------------

    def serve(self) -> None:
        keepalive = self.worker.cfg.keepalive
        idle_since = time.monotonic()
        try:
            while True:
                try:
                    data = self.sock.recv(262144)
                except TimeoutError:
                    if not self.in_message and (not self.worker.alive or time.monotonic() - idle_since > keepalive):
                        return
                    continue
                if not data:
                    return
                try:
                    self.parser.feed_data(data)
                except httptools.HttpParserError as exc:
                    self._send_simple(400, f"malformed HTTP request: {exc}", close=True)
                    return
                while self.ready:
                    request = self.ready.pop(0)
                    if not self.answer(request) or not self.worker.alive:
                        return
                idle_since = time.monotonic()
        except (OSError, ValueError):
            return  # the client went away (reset, TLS error): nothing to answer
        finally:
            self.worker.forget(self)
            with contextlib.suppress(OSError):
                self.sock.close()

    def answer(self, request: _Request) -> bool:
        """Serve one request; False when the connection must close afterwards."""
        path = request.url.split(b"?", 1)[0]
        handler = self.worker.routes.get((request.method, path))
        keep = request.keep_alive and self.worker.alive
        if handler is not None:
            body = None if request.too_large else b"".join(request.body)
            status, payload = handler(body)
            head = b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s%s\r\n" % (
                status,
                _REASONS.get(status, "Unknown").encode(),
                len(payload),
                self.worker.identity,
                b"" if keep else b"Connection: close\r\n",
            )
            self.sock.sendall(head + payload)
            return keep
        if request.too_large:
            self._send_simple(400, "request body too large", close=True)
            return False
        return self._wsgi(request, keep)

    def _send_simple(self, status: int, message: str, *, close: bool) -> None:
        payload = b'{"status": "Failure", "message": %s}' % _json_string(message)
        head = b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n" % (
            status,
            _REASONS.get(status, "Unknown").encode(),
            len(payload),
            b"Connection: close\r\n" if close else b"",
        )
        with contextlib.suppress(OSError):
            self.sock.sendall(head + payload)

    def _wsgi(self, request: _Request, keep: bool) -> bool:
        """Everything but the verbs: a WSGI call into the app, answered with its own status and headers."""
        environ = self.environ(request)
        response: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[..., Any]:
            response[:] = [status, headers]
            return lambda _data: None  # the legacy write() callable; Flask never uses it

        try:
            result: Iterable[bytes] = self.worker.wsgi(environ, start_response)
            try:
                payload = b"".join(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        except Exception:
            log.exception("WSGI application failed", extra={"path": environ["PATH_INFO"]})
            self._send_simple(500, "internal error", close=True)
            return False
        status, headers = response
        lines = [f"HTTP/1.1 {status}\r\n".encode("latin-1")]
        lines += [
            f"{k}: {v}\r\n".encode("latin-1") for k, v in headers if k.lower() not in ("content-length", "connection")
        ]
        if request.method == b"HEAD":
            payload = b""
        lines.append(b"Content-Length: %d\r\n" % len(payload))
        if not keep:
            lines.append(b"Connection: close\r\n")
        lines.append(b"\r\n")
        self.sock.sendall(b"".join(lines) + payload)
        return keep

    def environ(self, request: _Request) -> dict[str, Any]:
        url = httptools.parse_url(request.url)
        host, port = self.worker.server_address
        environ: dict[str, Any] = {
            "REQUEST_METHOD": request.method.decode("latin-1"),
            "SCRIPT_NAME": "",
            "PATH_INFO": urllib.parse.unquote_to_bytes(url.path or b"/").decode("latin-1"),
            "QUERY_STRING": (url.query or b"").decode("latin-1"),
            "SERVER_NAME": host,
            "SERVER_PORT": str(port),
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": self.client[0] if isinstance(self.client, tuple) else "",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "https" if self.worker.cfg.is_ssl else "http",
            "wsgi.input": io.BytesIO(b"".join(request.body)),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": self.worker.cfg.workers > 1,
            "wsgi.run_once": False,
        }
        for name, value in request.headers:
            key = name.decode("latin-1").upper().replace("-", "_")
            text = value.decode("latin-1")
            if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                environ[key] = text
            else:
                environ[f"HTTP_{key}"] = f"{environ[f'HTTP_{key}']},{text}" if f"HTTP_{key}" in environ else text
        return environ


def _json_string(text: str) -> bytes:
    return orjson.dumps(text)


class VerbWorker(Worker):  # type: ignore[misc]
    """gunicorn worker class: `worker_class = "extender.worker.VerbWorker"` (see the module docstring)."""

    alive: bool  # set by gunicorn's Worker; False once SIGTERM (or a lost master) asks the worker to stop

    def run(self) -> None:
        extensions = getattr(self.wsgi, "extensions", {})
        raw: RawRoutes | None = extensions.get(RAW_ROUTES) if isinstance(extensions, dict) else None
        self.routes: Mapping[tuple[bytes, bytes], RawHandler] = raw.handlers if raw else {}
        self.max_body = raw.max_body if raw else 64 * 2**20
        self.identity = f"{WORKER_HEADER}: {os.getpid()}\r\n".encode()
        self.server_address = _address(self.sockets[0]) if self.sockets else ("", 0)
        self._lock = threading.Lock()
        self._connections: set[_Connection] = set()
        acceptors = [
            threading.Thread(target=self._accept_loop, args=(listener,), name="accept", daemon=True)
            for listener in self.sockets
        ]
        for t in acceptors:
            t.start()
        while self.alive:
            self.notify()
            if self.ppid != os.getppid():
                self.log.info("Parent changed, shutting down: %s", self)
                self.alive = False
                break
            time.sleep(_POLL_S)
        self._drain(time.monotonic() + self.cfg.graceful_timeout)

    def _accept_loop(self, listener: Any) -> None:
        """Accept while alive; listeners are shared with the other workers, so losing a race is normal."""
        limit = max(1, int(self.cfg.worker_connections))
        while self.alive:
            try:
                readable, _, _ = select.select([listener], [], [], _POLL_S)
            except (OSError, ValueError):
                return
            if not readable:
                continue
            try:
                client, address = listener.accept()
            except (BlockingIOError, InterruptedError):
                continue  # another worker took it
            except OSError:
                return
            with self._lock:
                crowded = len(self._connections) >= limit
            if crowded:
                client.close()  # the client reconnects; a worker must not grow threads without bound
                continue
            threading.Thread(target=self._serve, args=(client, address), name="conn", daemon=True).start()

    def _serve(self, client: socket.socket, address: Any) -> None:
        try:
            client.setblocking(True)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.cfg.is_ssl:
                client = gsock.ssl_wrap_socket(client, self.cfg)
            client.settimeout(_POLL_S)
        except (OSError, ValueError) as exc:
            log.info("connection refused before the first request", extra={"error": str(exc)})
            client.close()
            return
        connection = _Connection(self, client, address)
        with self._lock:
            self._connections.add(connection)
        connection.serve()

    def forget(self, connection: _Connection) -> None:
        with self._lock:
            self._connections.discard(connection)

    def _drain(self, deadline: float) -> None:
        """Requests in progress finish (each connection closes after its answer); then the worker exits."""
        while time.monotonic() < deadline:
            with self._lock:
                if not self._connections:
                    return
            self.notify()
            time.sleep(0.05)


def _address(listener: Any) -> tuple[str, int]:
    try:
        host, port = listener.getsockname()[:2]
        return str(host), int(port)
    except (OSError, TypeError, ValueError):
        return "", 0
