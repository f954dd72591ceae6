"""The two verbs kube-scheduler calls for every pod, from request bytes to reply bytes.

Kept free of any web framework so the WSGI fast path (`extender.wsgi`) and the Flask routes serve
exactly the same code. Every failure is answered in the protocol's own terms and counted: filter
gets HTTP 200 with `Error` set (kube-scheduler logs it), prioritize, whose reply has no error field,
gets HTTP 400 with a JSON `Error`; nothing raises, nothing answers with a traceback.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from common.loops import BackgroundLoop
from extender.apollo_client import PolicyCache, Refresher, ResultReporter
from extender.config import ExtenderSettings
from extender.metrics import ExtenderMetrics
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
from extender.reservations import ReservationBook
from extender.snapshot import Snapshot, SnapshotStore

log = logging.getLogger("extender")

POLICY_ANNOTATION = "apollo.io/scheduling-policy"


@dataclass(frozen=True)
class RequestMeters:
    """The metric children every request updates, looked up once.

    A label lookup costs a lock and a dict per call, and in gunicorn's multiprocess mode every update
    takes a lock and writes a file: a few microseconds per request, so children are bound once and
    zero increments are skipped (the series exist from the start, at zero).
    """

    filter_seconds: Callable[[float], None]
    prioritize_seconds: Callable[[float], None]
    filtered_resolvable: Callable[[float], None]
    filtered_unresolvable: Callable[[float], None]

    @classmethod
    def of(cls, m: ExtenderMetrics) -> RequestMeters:
        return cls(
            filter_seconds=m.request_seconds.labels("filter").observe,
            prioritize_seconds=m.request_seconds.labels("prioritize").observe,
            filtered_resolvable=m.filtered_nodes.labels("resolvable").inc,
            filtered_unresolvable=m.filtered_nodes.labels("unresolvable").inc,
        )


@dataclass
class ExtenderState:
    """What the verbs share: settings, metrics, APOLLO's snapshot, the hot-value ledger."""

    settings: ExtenderSettings
    metrics: ExtenderMetrics
    store: SnapshotStore = field(default_factory=SnapshotStore)
    ledger: PlacementLedger = field(default_factory=PlacementLedger)
    policies: PolicyCache | None = None
    reporter: ResultReporter | None = None
    refresher: Refresher | None = None
    watcher: BackgroundLoop | None = None
    # Capacity active migrations hold on their targets (extender.reservations); replaced whole, never mutated.
    reservations: ReservationBook = field(default_factory=ReservationBook)
    _seen: OrderedDict[str, float] = field(default_factory=OrderedDict)
    _seen_lock: threading.Lock = field(default_factory=threading.Lock)
    _last_fallback_log: float = 0.0
    _demands: dict[tuple[str, str], PodDemand] = field(default_factory=dict)
    meters: RequestMeters = field(init=False)

    def __post_init__(self) -> None:
        self.meters = RequestMeters.of(self.metrics)

    def mark_seen(self, uid: str) -> None:
        if not uid:
            return
        with self._seen_lock:
            if uid not in self._seen:
                self._seen[uid] = time.monotonic()
                if len(self._seen) > 100_000:
                    self._seen.popitem(last=False)

    def demand_of(self, pod: dict[str, Any]) -> PodDemand:
        """The pod's demand; filter's parse is reused by the prioritize call for the same pod version.

        Keyed by UID and resourceVersion (a resized pod is a new version); a few entries are enough,
        since kube-scheduler calls prioritize right after filter for one pod at a time.
        """
        meta = pod.get("metadata") or {}
        key = (str(meta.get("uid") or ""), str(meta.get("resourceVersion") or ""))
        cached = self._demands.get(key) if key[0] else None
        if cached is not None:
            return cached
        try:
            demand = pod_demand(pod)
        except ValueError as exc:
            raise ProtocolError(f"ExtenderArgs.Pod has an invalid resource request: {exc}") from None
        if key[0]:
            if len(self._demands) >= 64:
                self._demands.clear()
            self._demands[key] = demand
        return demand

    def first_seen(self, uid: str) -> float | None:
        with self._seen_lock:
            return self._seen.pop(uid, None)

    def note_fallback(self, verb: str, reason: str) -> None:
        self.metrics.fallbacks.labels(verb, reason).inc()
        now = time.monotonic()
        if now - self._last_fallback_log > 10:  # one line per 10 s, the counter has the rest
            self._last_fallback_log = now
            log.warning("answering fail-open", extra={"verb": verb, "reason": reason})


def wants_policy(mode: str, pod: dict[str, Any]) -> bool:
    if mode == "all":
        return True
    if mode == "off":
        return False
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(POLICY_ANNOTATION, "")).lower() == "true"


def _context(
    state: ExtenderState, args: ExtenderArgs
) -> tuple[Snapshot | None, str, PodDemand, Mapping[str, tuple[float, float]], PodPolicy | None]:
    demand = state.demand_of(args.pod)
    snap, reason = state.store.usable(state.settings.snapshot_max_age_seconds)
    hot = state.ledger.usage_since(snap.created_at - state.settings.hot_value_lag_seconds) if snap else {}
    policy = None
    if snap is not None and state.policies is not None and wants_policy(state.settings.policy_mode, args.pod):
        policy = state.policies.get(args.pod, demand, args.node_names, state.settings.policy_budget_ms / 1000.0)
    state.mark_seen(demand.uid)
    return snap, reason, demand, hot, policy


def too_large_message(settings: ExtenderSettings) -> str:
    return f"request body exceeds the limit of {settings.max_body_bytes} bytes"


def error_json(message: str) -> bytes:
    return orjson.dumps({"Error": message})


def _parse(
    state: ExtenderState, body: bytes, rejected: str
) -> tuple[ExtenderArgs, Snapshot | None, str, PodDemand, Mapping[str, tuple[float, float]], PodPolicy | None]:
    """The request and everything ranking needs; ProtocolError says precisely what is wrong."""
    if rejected:
        raise ProtocolError(rejected)
    args = decode_args(body, state.settings.max_nodes)
    return (args, *_context(state, args))


def _failed(state: ExtenderState, verb: str, exc: Exception) -> str:
    """Count and log a failed request; the message for the caller (never a traceback)."""
    if isinstance(exc, ProtocolError):
        state.metrics.request_errors.labels(verb, "bad-request").inc()
        log.info(f"rejected {verb} request", extra={"error": str(exc)})
        return str(exc)
    log.error("unexpected error", exc_info=exc, extra={"verb": verb})
    state.metrics.request_errors.labels(verb, "internal").inc()
    return f"internal error: {type(exc).__name__}"


def filter_verb(state: ExtenderState, body: bytes, rejected: str = "") -> bytes:
    """ExtenderFilterResult bytes; always HTTP 200. `rejected` is set when the body was refused unread."""
    t0 = time.perf_counter()
    try:
        args, snap, reason, demand, hot, policy = _parse(state, body, rejected)
        outcome = filter_nodes(snap, reason, demand, args.node_names, hot, policy)
        outcome = state.reservations.apply(outcome, args.pod, demand)  # even fail-open: capacity, not load
        if outcome.fallback:
            state.note_fallback("filter", outcome.fallback)
        if outcome.failed:
            state.meters.filtered_resolvable(len(outcome.failed))
        if outcome.unresolvable:
            state.meters.filtered_unresolvable(len(outcome.unresolvable))
        payload = encode_filter_result(args, outcome.passed, outcome.failed, outcome.unresolvable)
    except Exception as exc:  # a bug must not take the worker down nor leak a traceback
        return encode_filter_result(None, [], {}, {}, _failed(state, "filter", exc))
    state.meters.filter_seconds(time.perf_counter() - t0)
    return payload


def prioritize_verb(state: ExtenderState, body: bytes, rejected: str = "") -> tuple[int, bytes]:
    """(HTTP status, HostPriorityList or {"Error": ...} bytes): 400 for bad input, 500 for a bug."""
    t0 = time.perf_counter()
    try:
        args, snap, reason, demand, hot, policy = _parse(state, body, rejected)
        if snap is None:
            state.note_fallback("prioritize", reason)
        payload = encode_priorities(prioritize_nodes(snap, demand, args.node_names, hot, policy))
    except Exception as exc:  # a bug must not take the worker down nor leak a traceback
        return (400 if isinstance(exc, ProtocolError) else 500), error_json(_failed(state, "prioritize", exc))
    state.meters.prioritize_seconds(time.perf_counter() - t0)
    return 200, payload
