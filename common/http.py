"""HTTP pieces every service shares: probes, /metrics, and one error body for every failure.

`install(app, ...)` gives a Flask app `/healthz` (the process answers), `/readyz` (the service can do
its job; 503 with the reason otherwise) and `/metrics` (Prometheus text, aggregated across gunicorn
workers when `PROMETHEUS_MULTIPROC_DIR` is set), and turns every error into the Status-shaped body
of `common.errors`: a DomainError into its status, an HTTP error into its code, and a bug into a 500
that names only the exception type. No route ever answers with a traceback.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from flask import Flask, Response, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from werkzeug.exceptions import HTTPException
from werkzeug.serving import BaseWSGIServer, make_server

from common.errors import DomainError, document_for, error_document, http_status

JSON = "application/json"
log = logging.getLogger("common.http")


@dataclass(frozen=True)
class Readiness:
    """Whether the service can do its job now, and what it wants an operator to see."""

    ready: bool
    detail: Mapping[str, Any] = field(default_factory=dict)
    reason: str = ""


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload, option=orjson.OPT_NON_STR_KEYS), status=status, mimetype=JSON)


def error_response(status: int, reason: str, message: str, field: str = "") -> Response:
    return json_response(error_document(status, reason, message, field), status)


def metrics_exposition(registry: CollectorRegistry | None) -> bytes:
    """The registry's text, or the multiprocess aggregate across gunicorn workers."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        return generate_latest(merged)
    if registry is None:
        from prometheus_client import REGISTRY

        registry = REGISTRY
    return generate_latest(registry)


def install(
    app: Flask,
    *,
    readiness: Callable[[], Readiness],
    metrics: Callable[[], bytes],
    service: str,
) -> Flask:
    """Add the probe and metrics routes and the error handlers to `app`."""

    @app.get("/healthz")
    def healthz() -> Response:
        return json_response({"status": "ok", "service": service})

    @app.get("/readyz")
    def readyz() -> Response:
        state = readiness()
        body = {"status": "ok" if state.ready else "not ready", "service": service, **state.detail}
        if state.reason:
            body["reason"] = state.reason
        return json_response(body, 200 if state.ready else 503)

    @app.get("/metrics")
    def metrics_route() -> Response:
        return Response(metrics(), mimetype=CONTENT_TYPE_LATEST)

    install_error_handlers(app)
    return app


def install_error_handlers(app: Flask) -> None:
    @app.errorhandler(DomainError)
    def domain_error(exc: DomainError) -> Response:
        return json_response(document_for(exc), http_status(exc))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        code = exc.code or 400
        return error_response(code, exc.name.replace(" ", ""), str(exc.description or exc.name))

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        # A bug must not take a worker down nor leak a traceback to the caller; the log has it.
        log.exception("unexpected error", extra={"path": request.path})
        return error_response(500, "InternalError", f"internal error: {type(exc).__name__}")


class ThreadedServer:
    """A small threaded WSGI server in a daemon thread: probes and metrics for non-gunicorn processes."""

    def __init__(self, app: Flask, address: str) -> None:
        host, _, port = address.rpartition(":")
        self._server: BaseWSGIServer = make_server(host, int(port), app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def start(self) -> ThreadedServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)
