"""The gunicorn embedding every HTTP service shares: an app factory in, a production server out.

Why embedded rather than a `gunicorn` command line: the settings tree is the only source of
configuration (file + variables, validated, documented), so the worker count or TLS files cannot
disagree between a manifest's args and the service's own settings. Each worker builds its own app
(background threads do not survive a fork); Prometheus metrics are shared across workers through
`PROMETHEUS_MULTIPROC_DIR`, and a dead worker's files are marked in `child_exit`.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import ssl
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication

from common.logs import configure
from common.settings import ConfigError, host_port, int_range, positive, setting

WsgiApp = Callable[..., Any]
_log = logging.getLogger("common.server")

# The interpreter's default (5 ms) lets a background thread (pod watch, snapshot refresh) keep the GIL
# for up to 5 ms while a request thread waits: that, not the request's own work, set the p99.
GIL_SWITCH_INTERVAL_S = 0.0005


@dataclass(frozen=True)
class ServerSettings:
    """How a service's HTTP(S) port is served (gunicorn gthread workers)."""

    bind: str = setting("0.0.0.0:8888", "Address and port to listen on.", host_port())
    workers: int = setting(
        2,
        "Processes. The GIL caps a worker at one core; a second keeps concurrent callers from queueing behind "
        "each other. Each worker runs its own background threads, so more is not free.",
        int_range(1, 64),
    )
    threads: int = setting(
        8, "Threads per worker: probes and /metrics are served beside the hot path.", int_range(1, 256)
    )
    certfile: str = setting("", "TLS certificate (PEM). Empty: plain HTTP.", None)
    keyfile: str = setting("", "TLS private key (PEM), required with certfile.", None)
    keepalive_seconds: int = setting(
        75, "Idle keep-alive; above kube-apiserver's and kube-scheduler's idle timeouts.", int_range(1, 3600)
    )
    timeout_seconds: int = setting(30, "A worker silent this long is replaced.", int_range(1, 3600))
    graceful_timeout_seconds: float = setting(
        20.0, "On SIGTERM, requests in progress get this long to finish (rolling updates).", positive()
    )

    def check_relations(self) -> None:
        if bool(self.certfile) != bool(self.keyfile):
            raise ConfigError("server.certfile and server.keyfile must be set together")

    @property
    def tls(self) -> bool:
        return bool(self.certfile)


def gunicorn_options(server: ServerSettings, log_level: str) -> dict[str, Any]:
    """Production options: gthread (keep-alive), no access log on the hot path, no request recycling."""
    options: dict[str, Any] = {
        "bind": server.bind,
        "workers": server.workers,
        "worker_class": "gthread",
        "threads": server.threads,
        "keepalive": server.keepalive_seconds,
        "timeout": server.timeout_seconds,
        "graceful_timeout": math.ceil(server.graceful_timeout_seconds),  # gunicorn validates an int
        "max_requests": 0,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": log_level.lower(),
        "preload_app": False,
        "backlog": 2048,
        "limit_request_line": 8190,
    }
    if server.tls:
        options |= {
            "certfile": server.certfile,
            "keyfile": server.keyfile,
            "ssl_context": ReloadingSSLContext(server.certfile, server.keyfile),
        }
    return options


FileSignature = tuple[tuple[int, int, int, int], ...]


class ReloadingSSLContext:
    """gunicorn's `ssl_context` hook: one TLS context per worker, rebuilt when the certificate files change.

    gunicorn asks for a context on every new connection, and its default builds a fresh one each time
    (reading the key pair and the system CA bundle: milliseconds per connection). This hook keeps the
    context it built and returns it while the files are unchanged, so a rotated certificate (a renewed
    Secret, which the kubelet swaps in atomically through a symlink) is served from the next connection
    on, without a restart and without reading files per connection. Kept-alive connections finish on
    the certificate they started with. A pair that fails to load (the key written before the
    certificate, by a non-atomic rotation) keeps the previous context until both files agree.
    """

    def __init__(self, certfile: str, keyfile: str) -> None:
        self.paths = (certfile, keyfile)
        self._lock = threading.Lock()
        self._context: ssl.SSLContext | None = None
        self._signature: FileSignature | None = None
        self.reloads = 0

    def _stat(self) -> FileSignature:
        out = []
        for path in self.paths:
            st = os.stat(path)  # follows the Secret volume's symlinks: a swap changes the inode
            out.append((st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev))
        return tuple(out)

    def __call__(self, conf: Any, factory: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        try:
            signature: FileSignature | None = self._stat()
        except OSError as exc:
            if self._context is None:
                raise
            _log.warning("TLS files unreadable; serving the previous certificate", extra={"error": str(exc)})
            return self._context
        with self._lock:
            if self._context is not None and signature == self._signature:
                return self._context
            try:
                context = factory()
            except (OSError, ssl.SSLError) as exc:
                if self._context is None:
                    raise
                _log.warning(
                    "TLS files changed but do not load; serving the previous certificate", extra={"error": str(exc)}
                )
                return self._context
            if self._context is not None:
                self.reloads += 1
                _log.info("TLS certificate reloaded", extra={"certfile": self.paths[0]})
            self._context, self._signature = context, signature
            return context


def tune_worker_runtime() -> None:
    """Per worker, once the app is built: short GIL hand-offs, and start-up objects out of the GC's way.

    gc.freeze() moves everything allocated so far (modules, the app, settings) to a permanent
    generation, so the collections that the requests' short-lived dicts trigger scan only new objects.
    """
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    gc.collect()
    gc.freeze()


def use_multiprocess_values() -> None:
    """Metrics created from now on write to `PROMETHEUS_MULTIPROC_DIR` (in a worker, before the app exists).

    prometheus_client picks its value class once, at import; a service's main imports it before
    `prepare_multiprocess_metrics` sets the directory, so without this every worker kept its values in
    memory and the aggregated /metrics came back empty.
    """
    from prometheus_client import values

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


def _child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def prepare_multiprocess_metrics(service: str) -> Path:
    """Workers share metrics through files; set before they fork, emptied so old pids do not count."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        path = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
    else:
        path = Path(tempfile.mkdtemp(prefix=f"{service}-metrics-"))
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    return path


class GunicornService(BaseApplication):  # type: ignore[misc]
    """gunicorn around an app factory: each worker calls `factory()` after the fork."""

    def __init__(
        self,
        service: str,
        factory: Callable[[], WsgiApp],
        server: ServerSettings,
        log_level: str,
        extra_options: dict[str, Any] | None = None,
    ) -> None:
        self.service = service
        self.factory = factory
        self.options = gunicorn_options(server, log_level) | (extra_options or {})
        self.log_level = log_level
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)
        self.cfg.set("child_exit", _child_exit)

    def load(self) -> WsgiApp:
        configure(self.service, self.log_level)
        use_multiprocess_values()
        app = self.factory()
        tune_worker_runtime()
        return app


def run_gunicorn(service: str, factory: Callable[[], WsgiApp], server: ServerSettings, log_level: str) -> int:
    """Serve until SIGTERM; returns the exit code for `main`."""
    prepare_multiprocess_metrics(service)
    GunicornService(service, factory, server, log_level).run()
    return 0
