"""Checkpoint claims created off the admission path.

Admission only records which claim a pod references (`ClaimRequest`) and hands it to `ClaimCreator`,
a `BackgroundLoop` draining a bounded `ClosableQueue`: a pod is never held up by a PVC create call. The
pod may reach the scheduler a few milliseconds before its claim exists; kube-scheduler keeps such a pod
pending and retries when the claim appears, which is the ordinary StatefulSet flow.

One create per claim is enough: every pod of a Deployment or Job names the same claim, so a claim
created or found (409 AlreadyExists) is remembered for `remember_seconds` and not asked for again, and a
claim already queued is not queued twice. Transient failures (429, 5xx, connection) are retried with a
doubling backoff; permanent ones (403: RBAC, 404: namespace gone, 422: bad storage class) are counted and
logged once per claim. Nothing is ever created for a dry-run request (the caller does not submit it).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from apollo_api.podmigration import CHECKPOINT_LABEL
from common.loops import BackgroundLoop, ClosableQueue
from webhook.config import ClaimSettings
from webhook.mutate import ClaimRequest

log = logging.getLogger("webhook.claims")
MANAGED_BY = "apollo-webhook"
WORKLOAD_ANNOTATION = "apollo.io/workload"
_TRANSIENT = {0, 408, 429, 500, 502, 503, 504}


class Outcome:
    CREATED = "created"
    EXISTS = "exists"
    FAILED = "failed"
    DROPPED = "dropped"


def claim_manifest(request: ClaimRequest, settings: ClaimSettings) -> dict[str, Any]:
    """The PersistentVolumeClaim for `request`; an empty storage class means the cluster's default."""
    spec: dict[str, Any] = {
        "accessModes": [settings.access_mode],
        "resources": {"requests": {"storage": settings.size}},
    }
    if settings.storage_class:
        spec["storageClassName"] = settings.storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": request.name,
            "namespace": request.namespace,
            "labels": {CHECKPOINT_LABEL: "true", "app.kubernetes.io/managed-by": MANAGED_BY},
            "annotations": {WORKLOAD_ANNOTATION: f"{request.workload_kind}/{request.workload_name}"},
        },
        "spec": spec,
    }


class ClaimCreator(BackgroundLoop):
    """Creates the claims admission asked for, one at a time, in the background."""

    def __init__(
        self,
        core_v1: Any,
        settings: ClaimSettings,
        record: Callable[[str], None] = lambda outcome: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__("checkpoint-claims", 0.0)
        self.core = core_v1
        self.settings = settings
        self.record = record
        self.clock = clock
        self.queue: ClosableQueue[ClaimRequest] = self.closes(ClosableQueue(settings.queue_size))
        self._lock = threading.Lock()
        self._known: dict[tuple[str, str], float] = {}  # (namespace, name) -> when known to exist
        self._pending: set[tuple[str, str]] = set()

    def submit(self, request: ClaimRequest) -> bool:
        """Queue `request` unless it is known to exist or already queued; False when it had to be dropped."""
        key = (request.namespace, request.name)
        now = self.clock()
        with self._lock:
            known = self._known.get(key)
            if known is not None and now - known < self.settings.remember_seconds:
                return True
            if key in self._pending:
                return True
            if not self.queue.put_nowait(request):
                self.record(Outcome.DROPPED)
                return False
            self._pending.add(key)
        return True

    def run_once(self) -> None:
        try:
            request = self.queue.get(timeout=1.0)
        except queue.Empty:
            return
        key = (request.namespace, request.name)
        try:
            outcome = self.ensure(request)
        finally:
            with self._lock:
                self._pending.discard(key)
        if outcome in (Outcome.CREATED, Outcome.EXISTS):
            with self._lock:
                self._known[key] = self.clock()
                if len(self._known) > 4 * self.settings.queue_size:
                    self._forget_old()

    def _forget_old(self) -> None:
        horizon = self.clock() - self.settings.remember_seconds
        self._known = {k: t for k, t in self._known.items() if t >= horizon}

    def ensure(self, request: ClaimRequest) -> str:
        """Create the claim; `exists` when it already did. Retries transient failures, then gives up."""
        body = claim_manifest(request, self.settings)
        delay = self.settings.retry_backoff_seconds
        for attempt in range(1, self.settings.attempts + 1):
            try:
                self.core.create_namespaced_persistent_volume_claim(
                    request.namespace, body, _request_timeout=self.settings.request_timeout_seconds
                )
                outcome = Outcome.CREATED
                log.info("checkpoint claim created", extra={"namespace": request.namespace, "claim": request.name})
            except Exception as exc:
                status = int(getattr(exc, "status", 0) or 0)
                if status == 409:
                    outcome = Outcome.EXISTS
                elif status in _TRANSIENT and attempt < self.settings.attempts and not self.stopping:
                    if self.wait(delay):
                        return Outcome.FAILED
                    delay *= 2
                    continue
                else:
                    outcome = Outcome.FAILED
                    log.warning(
                        "checkpoint claim not created",
                        extra={
                            "namespace": request.namespace,
                            "claim": request.name,
                            "status": status,
                            "error": f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"[:300],
                            "attempts": attempt,
                        },
                    )
            self.record(outcome)
            return outcome
        self.record(Outcome.FAILED)
        return Outcome.FAILED
