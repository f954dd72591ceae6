"""Carrying out the machine's effects against the API server, and saying what each one did.

Each effect becomes one API call (an eviction with the pod's UID as precondition, a pod created, a
report sent through the APOLLO link, a metadata patch under the object's resourceVersion, a delete)
and its result an :class:`~orchestrator.effects.Outcome` the machine folds into the status; Events
are recorded last and never fail a reconcile. Kept apart from the controller's loops so that the
translation of API errors into outcomes (429 is a disruption budget, 404/409 a pod already gone)
reads in one place.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from apollo_api.podmigration import API_VERSION, KIND, PodMigration
from orchestrator import podinfo
from orchestrator.cache import key_of
from orchestrator.effects import FINALIZER, CreatePod, Delete, Effect, Emit, Evict, Outcome, PatchMeta, Report
from orchestrator.kube import ApiError, Kube
from orchestrator.metrics import OrchestratorMetrics

# The controller's logger: these lines were always the controller's, and operators filter on the name.
log = logging.getLogger("orchestrator.controller")
Obj = dict[str, Any]
COMPONENT = "apollo-orchestrator"


class Executor:
    """Carries out the machine's effects against the API server and says what happened."""

    def __init__(
        self,
        kube: Kube,
        metrics: OrchestratorMetrics,
        reporter: Callable[[Report], Outcome] | None,
        identity: Callable[[], str],
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.kube = kube
        self.metrics = metrics
        self.reporter = reporter
        self.identity = identity
        self.wall = wall

    def run(self, m: PodMigration, raw: Obj, effect: Effect, rv: str) -> tuple[Outcome, str]:
        """The outcome, and the object's resourceVersion after it (a metadata patch moves it)."""
        if isinstance(effect, Evict):
            return self._evict(effect), rv
        if isinstance(effect, CreatePod):
            try:
                self.kube.create_pod(m.namespace, effect.manifest)
                log.info("re-created bare pod", extra={"migration": key_of(m), "pod": m.spec.pod_name})
                return Outcome(True, 201), rv
            except ApiError as exc:
                return Outcome(False, exc.code, exc.message), rv
        if isinstance(effect, Report):
            return self._report(effect), rv
        if isinstance(effect, PatchMeta):
            return self._patch(m, raw, effect, rv)
        if isinstance(effect, Delete):
            try:
                self.kube.delete_migration(m.namespace, m.name, m.uid)
                log.info("deleted finished migration (TTL)", extra={"migration": key_of(m)})
                return Outcome(True, 200), rv
            except ApiError as exc:
                return Outcome(False, exc.code, exc.message), rv
        return Outcome(True), rv

    def _evict(self, effect: Evict) -> Outcome:
        try:
            self.kube.evict(effect.namespace, effect.pod, effect.uid)
        except ApiError as exc:
            if exc.code == 429:
                self.metrics.evictions.labels("refused-by-budget").inc()
                self.metrics.evictions_refused.labels(effect.namespace).inc()
                return Outcome(False, 429, exc.message)
            if exc.code in (404, 409):
                # 409: the UID precondition failed, so the pod of that name is another incarnation.
                self.metrics.evictions.labels("gone").inc()
                return Outcome(False, 404, exc.message)
            self.metrics.evictions.labels("error").inc()
            return Outcome(False, exc.code, exc.message)
        self.metrics.evictions.labels("accepted").inc()
        log.info("evicted", extra={"namespace": effect.namespace, "pod": effect.pod})
        return Outcome(True, 201)

    def _report(self, effect: Report) -> Outcome:
        if self.reporter is None:
            return Outcome(False, 0, "no APOLLO link configured")
        outcome = self.reporter(effect)
        self.metrics.reports.labels("sent" if outcome.ok else "failed").inc()
        return outcome

    def _patch(self, m: PodMigration, raw: Obj, effect: PatchMeta, rv: str) -> tuple[Outcome, str]:
        meta = raw.get("metadata") or {}
        finalizers = list(meta.get("finalizers") or [])
        wanted = list(finalizers)
        if effect.add_finalizer and FINALIZER not in wanted:
            wanted.append(FINALIZER)
        if effect.remove_finalizer and FINALIZER in wanted:
            wanted.remove(FINALIZER)
        labels = {k: v for k, v in effect.labels.items() if (meta.get("labels") or {}).get(k) != v}
        patch: Obj = {}
        if wanted != finalizers:
            patch["finalizers"] = wanted
        if labels:
            patch["labels"] = labels
        if not patch:
            return Outcome(True), rv
        patch["resourceVersion"] = rv
        try:
            written = self.kube.patch_migration(m.namespace, m.name, {"metadata": patch})
        except ApiError as exc:
            return Outcome(False, exc.code, exc.message), rv
        return Outcome(True, 200), str((written.get("metadata") or {}).get("resourceVersion", rv))

    def emit(self, m: PodMigration, effect: Emit) -> None:
        """A core/v1 Event on the pod or the migration; a failure is logged, never fatal."""
        now = podinfo.rfc3339(self.wall())
        api_version = API_VERSION if effect.kind == KIND else "v1"
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{effect.name}.", "namespace": m.namespace},
            "involvedObject": {
                "apiVersion": api_version,
                "kind": effect.kind,
                "name": effect.name,
                "namespace": m.namespace,
                "uid": effect.uid,
            },
            "reason": effect.reason,
            "message": effect.message[:1024],
            "type": effect.type,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self.identity()[:128],
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self.kube.create_event(m.namespace, body)
        except ApiError as exc:
            log.warning("event not recorded", extra={"reason": effect.reason, "error": str(exc)})
