"""One AdmissionReview, bytes in and bytes out: parse, decide, queue the claim, answer, count.

The only place where the webhook's two failure rules meet:

* input that is not a usable pod AdmissionReview is answered 400 with a Status body naming the problem
  (with `failurePolicy: Ignore` the API server then admits the pod as it is);
* anything that fails on our side (a bug, an unexpected pod shape) is answered `allowed: true` with no
  patch and a warning, so a user's pod is never blocked for a reason that is ours.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import orjson

from apollo_api.podmigration import PodMigration
from common.errors import InvalidArgument, document_for
from webhook.claims import ClaimCreator
from webhook.config import WebhookSettings
from webhook.match import about_to_replace, find_migration
from webhook.metrics import WebhookMetrics
from webhook.migrations import MigrationIndex
from webhook.mutate import Decision, Policy, decide
from webhook.review import AdmissionRequest, parse_review, review_response

log = logging.getLogger("webhook")


def policy_from(settings: WebhookSettings) -> Policy:
    return Policy(
        opt_in_label=settings.opt_in_label,
        opt_in_value=settings.opt_in_value,
        mount_path=settings.mount_path,
        excluded_namespaces=frozenset(settings.excluded_namespaces),
        strip_completed_init_containers=settings.strip_completed_init_containers,
        suggested_weight=settings.affinity.suggested_weight,
        avoid_source_weight=settings.affinity.avoid_source_weight,
    )


@dataclass
class WebhookState:
    """What a request reads: settings, the decision's policy, the migrations in memory, the claim queue."""

    settings: WebhookSettings
    metrics: WebhookMetrics
    index: MigrationIndex
    claims: ClaimCreator | None = None

    def __post_init__(self) -> None:
        self.policy = policy_from(self.settings)


def _record(state: WebhookState, request: AdmissionRequest, decision: Decision) -> None:
    m = state.metrics
    for kind in decision.mutations:
        m.mutations.labels(kind).inc()
    for reason in decision.skips:
        m.skips.labels(reason).inc()
    m.admissions.labels("patched" if decision.patch else "unchanged").inc()
    if decision.patch:
        meta = request.pod.get("metadata") or {}
        log.info(
            "pod patched",
            extra={
                "namespace": request.namespace,
                "pod": meta.get("name") or f"{meta.get('generateName', '')}*",
                "mutations": decision.mutations,
                "migration": decision.migration or None,
                "claim": decision.claim.name if decision.claim else None,
                "dry_run": request.dry_run,
            },
        )


def _migrations_for(state: WebhookState, request: AdmissionRequest) -> tuple[PodMigration, ...]:
    """The namespace's active migrations, after a short wait when one of them is about to claim this pod."""
    index = state.index
    version = index.version
    migrations = index.in_namespace(request.namespace)
    wait_s = state.settings.migrations.phase_wait_ms / 1000
    if (
        wait_s <= 0
        or request.operation != "CREATE"
        or find_migration(request.pod, migrations) is not None
        or not about_to_replace(request.pod, migrations)
    ):
        return migrations
    deadline = time.monotonic() + wait_s
    outcome = "timeout"
    while (remaining := deadline - time.monotonic()) > 0 and index.wait_for_change(version, remaining):
        version = index.version
        migrations = index.in_namespace(request.namespace)
        if find_migration(request.pod, migrations) is not None:
            outcome = "matched"
            break
        if not about_to_replace(request.pod, migrations):
            outcome = "gone"  # finished or cancelled meanwhile
            break
    state.metrics.phase_waits.labels(outcome).inc()
    return migrations


def admit(state: WebhookState, body: bytes, rejected: str = "") -> tuple[int, bytes]:
    """(HTTP status, body) for one POST /mutate; `rejected` is set when the body was refused unread."""
    started = time.perf_counter()
    try:
        if rejected:
            raise InvalidArgument(rejected, field="body")
        request = parse_review(body, state.settings.max_body_bytes)
    except InvalidArgument as exc:
        state.metrics.errors.labels("bad_request").inc()
        state.metrics.admissions.labels("rejected").inc()
        log.info("bad admission request", extra={"error": exc.message, "field": exc.field})
        return 400, orjson.dumps(document_for(exc))
    try:
        decision = decide(
            request.pod,
            request.namespace,
            _migrations_for(state, request),
            state.policy,
            operation=request.operation,
            migrations_synced=state.index.synced,
            owned=True,
        )
        if decision.claim is not None and not request.dry_run and state.claims is not None:
            state.claims.submit(decision.claim)
        payload = review_response(request.uid, decision.patch, decision.warnings)
        _record(state, request, decision)
    except Exception as exc:
        # Ours, not the user's: admit unchanged and say so, never a 500 with a traceback.
        log.exception("admission failed; pod admitted unchanged", extra={"namespace": request.namespace})
        state.metrics.errors.labels("internal").inc()
        state.metrics.admissions.labels("failed_open").inc()
        payload = review_response(
            request.uid, (), [f"internal error ({type(exc).__name__}); the pod is admitted unchanged"]
        )
    state.metrics.admission_seconds.observe(time.perf_counter() - started)
    return 200, payload
