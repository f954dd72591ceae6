"""The extender's HTTP surface: filter, prioritize, health, readiness and metrics.

The verbs themselves live in `extender.verbs` (bytes in, bytes out). Under gunicorn they are served
by `extender.worker.VerbWorker` straight from the socket (the `RawRoutes` registered here); the Flask
routes for them serve any other WSGI server (and the test client). Probes, metrics and error bodies come from the shared
shell (`common.http`); nothing ever answers with a traceback.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
from flask import Flask, Response, request
from werkzeug.exceptions import RequestEntityTooLarge

from apollo_api.v1 import apollo_pb2_grpc as pb_grpc
from common import kube
from common.http import Readiness, install
from extender.apollo_client import PolicyCache, Refresher, ResultReporter
from extender.config import ExtenderSettings
from extender.metrics import ExtenderMetrics, exposition
from extender.verbs import ExtenderState, filter_verb, prioritize_verb, too_large_message
from extender.worker import RAW_ROUTES, RawRoutes

log = logging.getLogger("extender")
_JSON = "application/json"


def create_app(
    settings: ExtenderSettings,
    *,
    channel: grpc.Channel | None = None,
    core_v1: Any = None,
    metrics: ExtenderMetrics | None = None,
    start_background: bool = True,
) -> Flask:
    """Build the app; background threads (snapshot refresher, pod watcher, reporter) start here."""
    app = Flask("apollo-extender")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    state = ExtenderState(settings=settings, metrics=metrics or ExtenderMetrics.create())
    app.extensions["apollo"] = state
    if channel is None:
        channel = grpc.insecure_channel(settings.apollo_address)
    stub = pb_grpc.SchedulingPolicyServiceStub(channel)
    if settings.policy_mode != "off":
        state.policies = PolicyCache(
            stub, state.metrics, settings.policy_cache_ttl_seconds, settings.grpc_timeout_seconds
        )
    state.refresher = Refresher(
        stub, state.store, state.metrics, settings.refresh_interval_seconds, settings.grpc_timeout_seconds
    )
    state.reporter = ResultReporter(stub, state.metrics, settings.grpc_timeout_seconds)
    if start_background:
        state.refresher.start()
        state.reporter.start()
        if settings.reserve_for_migrations:
            from extender.reservations import ReservationWatcher

            ReservationWatcher(kube.api_client(settings.kubeconfig), state).start()
        if settings.watch_pods:
            from extender.pod_watcher import BindingSink
            from extender.shared_watch import SharedPodWatch

            def client() -> Any:
                return core_v1 if core_v1 is not None else kube.core_v1(settings.kubeconfig)

            sink = BindingSink(state.ledger, state.first_seen, state.reporter.submit)
            state.watcher = SharedPodWatch(client, sink).start()

    def read_body() -> tuple[bytes, str]:
        try:
            return request.get_data(cache=False), ""
        except RequestEntityTooLarge:
            return b"", too_large_message(settings)

    @app.post("/filter")
    def filter_route() -> Response:
        return Response(filter_verb(state, *read_body()), mimetype=_JSON)

    @app.post("/prioritize")
    def prioritize_route() -> Response:
        status, payload = prioritize_verb(state, *read_body())
        return Response(payload, status=status, mimetype=_JSON)

    def readiness() -> Readiness:
        # Fail-open by design: the extender is ready without APOLLO, and says how it is doing.
        snap = state.store.current
        usable, reason = state.store.usable(settings.snapshot_max_age_seconds)
        return Readiness(
            True,
            {
                "apollo": "ok" if usable else reason,
                "snapshot_generation": snap.generation if snap else None,
                "snapshot_age_seconds": round(snap.age(), 3) if snap else None,
                "last_refresh_error": state.store.last_error or None,
                "hot_placements": len(state.ledger),
                # "publisher": this worker runs the pod watch for all; "subscriber": it receives its lines.
                "pod_watch": getattr(state.watcher, "role", None),
                # This worker's ledger covers every binding so far (False while listing or electing).
                "pod_watch_synced": bool(getattr(state.watcher, "synced", False)),
            },
        )

    def metrics_text() -> bytes:
        snap = state.store.current
        state.metrics.snapshot_age.set(snap.age() if snap else float("inf"))
        state.metrics.placements.set(len(state.ledger))
        return exposition(state.metrics)

    install(app, readiness=readiness, metrics=metrics_text, service="apollo-extender")
    too_large = too_large_message(settings)
    app.extensions[RAW_ROUTES] = RawRoutes(
        handlers={
            (b"POST", b"/filter"): lambda body: (
                200,
                filter_verb(state, body or b"", "" if body is not None else too_large),
            ),
            (b"POST", b"/prioritize"): lambda body: prioritize_verb(
                state, body or b"", "" if body is not None else too_large
            ),
        },
        max_body=settings.max_body_bytes,
    )
    return app
