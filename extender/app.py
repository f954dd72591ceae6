"""The extender's HTTP surface: filter, prioritize, health, readiness and metrics.

Verbs do in-memory work only (snapshot lookups, the hot-value ledger, at most a budgeted wait for
a per-pod policy). Every failure is answered in the protocol's own terms and counted: filter gets
HTTP 200 with `Error` set (kube-scheduler logs it), prioritize, whose reply has no error field, gets
HTTP 400 with a JSON `Error`; nothing ever answers 500 with a traceback.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import grpc
from flask import Flask, Response, request
from prometheus_client import CONTENT_TYPE_LATEST
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from apollo.v1 import apollo_pb2_grpc as pb_grpc
from extender.apollo_client import PolicyCache, Refresher, ResultReporter
from extender.config import ExtenderSettings
from extender.metrics import ExtenderMetrics, exposition
from extender.placements import PlacementLedger
from extender.podspec import PodDemand, pod_demand
from extender.protocol import (
    ExtenderArgs,
    ProtocolError,
    decode_args,
    encode_filter_result,
    encode_priorities,
)
from extender.ranking import PodPolicy, filter_nodes, prioritize_nodes
from extender.snapshot import Snapshot, SnapshotStore

log = logging.getLogger("extender")
_JSON = "application/json"


@dataclass
class ExtenderState:
    settings: ExtenderSettings
    metrics: ExtenderMetrics
    store: SnapshotStore = field(default_factory=SnapshotStore)
    ledger: PlacementLedger = field(default_factory=PlacementLedger)
    policies: PolicyCache | None = None
    reporter: ResultReporter | None = None
    refresher: Refresher | None = None
    threads: list[Any] = field(default_factory=list)
    _seen: OrderedDict[str, float] = field(default_factory=OrderedDict)
    _seen_lock: threading.Lock = field(default_factory=threading.Lock)
    _last_fallback_log: float = 0.0

    def mark_seen(self, uid: str) -> None:
        if not uid:
            return
        with self._seen_lock:
            if uid not in self._seen:
                self._seen[uid] = time.monotonic()
                if len(self._seen) > 100_000:
                    self._seen.popitem(last=False)

    def first_seen(self, uid: str) -> float | None:
        with self._seen_lock:
            return self._seen.pop(uid, None)

    def note_fallback(self, verb: str, reason: str) -> None:
        self.metrics.fallbacks.labels(verb, reason).inc()
        now = time.monotonic()
        if now - self._last_fallback_log > 10:  # one line per 10 s, the counter has the rest
            self._last_fallback_log = now
            log.warning("answering fail-open", extra={"verb": verb, "reason": reason})


def _context(
    state: ExtenderState, args: ExtenderArgs
) -> tuple[Snapshot | None, str, PodDemand, dict[str, tuple[float, float]], PodPolicy | None]:
    try:
        demand = pod_demand(args.pod)
    except ValueError as exc:
        raise ProtocolError(f"ExtenderArgs.Pod has an invalid resource request: {exc}") from None
    snap, reason = state.store.usable(state.settings.snapshot_max_age_seconds)
    hot = state.ledger.usage_since(snap.created_at) if snap else {}
    policy = None
    if snap is not None and state.policies is not None and _wants_policy(state.settings.policy_mode, args.pod):
        policy = state.policies.get(args.pod, demand, args.node_names, state.settings.policy_budget_ms / 1000.0)
    state.mark_seen(demand.uid)
    return snap, reason, demand, hot, policy


POLICY_ANNOTATION = "apollo.io/scheduling-policy"


def _wants_policy(mode: str, pod: dict[str, Any]) -> bool:
    if mode == "all":
        return True
    if mode == "off":
        return False
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(POLICY_ANNOTATION, "")).lower() == "true"


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
        state.threads += [state.refresher, state.reporter]
        if settings.watch_pods:
            from extender.pod_watcher import PodWatcher

            if core_v1 is None:
                core_v1 = _kube_client(settings)
            watcher = PodWatcher(core_v1, state.ledger, state.first_seen, state.reporter.submit)
            watcher.start()
            state.threads.append(watcher)

    def body() -> bytes:
        return request.get_data(cache=False)

    @app.post("/filter")
    def filter_verb() -> Response:
        t0 = time.perf_counter()
        args: ExtenderArgs | None = None
        try:
            args = decode_args(body(), settings.max_nodes)
            snap, reason, demand, hot, policy = _context(state, args)
            outcome = filter_nodes(snap, reason, demand, args.node_names, hot, policy)
        except (ProtocolError, RequestEntityTooLarge) as exc:
            message = _message(exc, settings)
            state.metrics.request_errors.labels("filter", "bad-request").inc()
            log.info("rejected filter request", extra={"error": message})
            return Response(encode_filter_result(None, [], {}, {}, message), mimetype=_JSON)
        if outcome.fallback:
            state.note_fallback("filter", outcome.fallback)
        state.metrics.filtered_nodes.labels("resolvable").inc(len(outcome.failed))
        state.metrics.filtered_nodes.labels("unresolvable").inc(len(outcome.unresolvable))
        payload = encode_filter_result(args, outcome.passed, outcome.failed, outcome.unresolvable)
        state.metrics.request_seconds.labels("filter").observe(time.perf_counter() - t0)
        return Response(payload, mimetype=_JSON)

    @app.post("/prioritize")
    def prioritize_verb() -> Response:
        t0 = time.perf_counter()
        try:
            args = decode_args(body(), settings.max_nodes)
            snap, reason, demand, hot, policy = _context(state, args)
        except (ProtocolError, RequestEntityTooLarge) as exc:
            message = _message(exc, settings)
            state.metrics.request_errors.labels("prioritize", "bad-request").inc()
            log.info("rejected prioritize request", extra={"error": message})
            return Response(_error_json(message), status=400, mimetype=_JSON)
        if snap is None:
            state.note_fallback("prioritize", reason)
        payload = encode_priorities(prioritize_nodes(snap, demand, args.node_names, hot, policy))
        state.metrics.request_seconds.labels("prioritize").observe(time.perf_counter() - t0)
        return Response(payload, mimetype=_JSON)

    @app.get("/healthz")
    def healthz() -> Response:
        return Response(b'{"status":"ok"}', mimetype=_JSON)

    @app.get("/readyz")
    def readyz() -> Response:
        # Fail-open by design: the extender is ready without APOLLO, and says how it is doing.
        snap = state.store.current
        usable, reason = state.store.usable(settings.snapshot_max_age_seconds)
        import orjson

        return Response(
            orjson.dumps(
                {
                    "status": "ok",
                    "apollo": "ok" if usable else reason,
                    "snapshot_generation": snap.generation if snap else None,
                    "snapshot_age_seconds": round(snap.age(), 3) if snap else None,
                    "last_refresh_error": state.store.last_error or None,
                    "hot_placements": len(state.ledger),
                }
            ),
            mimetype=_JSON,
        )

    @app.get("/metrics")
    def metrics_endpoint() -> Response:
        snap = state.store.current
        state.metrics.snapshot_age.set(snap.age() if snap else float("inf"))
        state.metrics.placements.set(len(state.ledger))
        return Response(exposition(state.metrics), mimetype=CONTENT_TYPE_LATEST)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        return Response(
            _error_json(f"{exc.code} {exc.name}: {exc.description}"), status=exc.code or 400, mimetype=_JSON
        )

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        # A bug must not take a gunicorn worker down nor leak a traceback to the caller.
        log.exception("unexpected error", extra={"path": request.path})
        verb = request.path.strip("/") or "unknown"
        state.metrics.request_errors.labels(verb, "internal").inc()
        if request.path == "/filter":
            return Response(
                encode_filter_result(None, [], {}, {}, f"internal error: {type(exc).__name__}"),
                mimetype=_JSON,
            )
        return Response(_error_json(f"internal error: {type(exc).__name__}"), status=500, mimetype=_JSON)

    return app


def _message(exc: Exception, settings: ExtenderSettings) -> str:
    if isinstance(exc, RequestEntityTooLarge):
        return f"request body exceeds the limit of {settings.max_body_bytes} bytes"
    return str(exc)


def _error_json(message: str) -> bytes:
    import orjson

    return orjson.dumps({"Error": message})


def _kube_client(settings: ExtenderSettings) -> Any:
    from kubernetes import client, config

    if settings.kubeconfig:
        api = config.new_client_from_config(config_file=settings.kubeconfig)  # type: ignore[no-untyped-call]
    else:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
        api = client.ApiClient()
    return client.CoreV1Api(api)
