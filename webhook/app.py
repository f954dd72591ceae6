"""The webhook's HTTP surface: POST /mutate, health, readiness and metrics.

`/mutate` is served by `MutateFastPath`, a WSGI layer in front of Flask that hands the body bytes to
`webhook.admit.admit` (Flask's per-request machinery costs a few hundred microseconds, which the API
server would wait for on every opted-in pod create); the Flask route for it remains for bodies without a
Content-Length. Probes, metrics and error bodies come from the shared shell (`common.http`).

Background work per worker (gunicorn builds one app per worker): the PodMigration watch that admission
reads from memory, and the claim creator that admission hands claims to.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, Response, request

from common import kube
from common.http import JSON, Readiness, install, metrics_exposition
from webhook.admit import WebhookState, admit
from webhook.claims import ClaimCreator
from webhook.config import WebhookSettings
from webhook.metrics import WebhookMetrics
from webhook.migrations import MigrationIndex, MigrationWatcher
from webhook.review import too_large

log = logging.getLogger("webhook")
MUTATE_PATH = "/mutate"
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
_STATUS = {200: "200 OK", 400: "400 Bad Request"}


class MutateFastPath:
    """Serves POST /mutate with a Content-Length straight from the WSGI environ; the rest goes to Flask."""

    def __init__(self, inner: WsgiApp, state: WebhookState) -> None:
        self.inner = inner
        self.state = state

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "POST" or environ.get("PATH_INFO") != MUTATE_PATH:
            return self.inner(environ, start_response)
        try:
            length = int(environ.get("CONTENT_LENGTH") or "")
        except ValueError:
            return self.inner(environ, start_response)  # chunked or absent: Flask's reader handles it
        limit = self.state.settings.max_body_bytes
        if length > limit:
            # Refused unread; gunicorn discards the rest of the body before the next keep-alive request.
            status, payload = admit(self.state, b"", too_large(length, limit).message)
        else:
            status, payload = admit(self.state, environ["wsgi.input"].read(length))
        start_response(_STATUS[status], [("Content-Type", JSON), ("Content-Length", str(len(payload)))])
        return [payload]


def create_app(
    settings: WebhookSettings,
    *,
    api_client: Any = None,
    metrics: WebhookMetrics | None = None,
    start_background: bool = True,
) -> Flask:
    """Build the app; with `start_background` the PodMigration watch and the claim creator start here."""
    app = Flask("apollo-webhook")
    state = WebhookState(settings=settings, metrics=metrics or WebhookMetrics.create(), index=MigrationIndex())
    app.extensions["apollo-webhook"] = state
    watcher: MigrationWatcher | None = None
    if start_background:
        from kubernetes import client

        api = api_client if api_client is not None else kube.api_client(settings.kubeconfig)
        if settings.claim.create:
            creator = ClaimCreator(
                client.CoreV1Api(api), settings.claim, lambda outcome: state.metrics.claims.labels(outcome).inc()
            )
            creator.start()
            state.claims = creator
        w = settings.migrations

        def observed() -> None:
            # Per watch event, so every worker's gauge is current, not only the one a scrape reaches.
            state.metrics.active_migrations.set(len(state.index))
            state.metrics.migrations_synced.set(1 if state.index.synced else 0)

        watcher = MigrationWatcher(
            client.CustomObjectsApi(api),
            state.index,
            relist_backoff_seconds=w.relist_backoff_seconds,
            watch_timeout_seconds=w.watch_timeout_seconds,
            request_timeout_seconds=w.request_timeout_seconds,
            on_event=observed,
        )
        watcher.start()
    app.extensions["apollo-webhook-watcher"] = watcher

    @app.post(MUTATE_PATH)
    def mutate_route() -> Response:
        limit = settings.max_body_bytes
        body = request.stream.read(limit + 1)
        if len(body) > limit:
            status, payload = admit(state, b"", too_large(len(body), limit).message)
        else:
            status, payload = admit(state, body)
        return Response(payload, status=status, mimetype=JSON)

    def readiness() -> Readiness:
        index = state.index
        detail: dict[str, Any] = {"active_migrations": len(index), "crd_installed": not index.crd_missing}
        if state.claims is not None:
            detail["claims_queued"] = state.claims.queue.qsize()
        if not index.synced:
            # Until PodMigrations are listed, a replacement pod would be admitted unpatched.
            return Readiness(False, detail, index.last_error or "PodMigrations not listed yet")
        return Readiness(True, detail)

    def metrics_text() -> bytes:
        state.metrics.active_migrations.set(len(state.index))
        state.metrics.migrations_synced.set(1 if state.index.synced else 0)
        return metrics_exposition(state.metrics.registry)

    install(app, readiness=readiness, metrics=metrics_text, service="apollo-webhook")
    app.wsgi_app = MutateFastPath(app.wsgi_app, state)  # type: ignore[method-assign]
    return app
