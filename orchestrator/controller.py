"""The PodMigration controller: watches, a work queue, and reconciles that apply the state machine.

Level-triggered: a reconcile of one PodMigration reads the current world (`WorldReader`), asks the
pure machine for the next step, executes the effects (`Executor`), and writes the status once,
with the object's resourceVersion (a conflict re-reads the object and reconciles again). Events
only decide *when* to look: the PodMigration watch enqueues the object, the pod watch enqueues the
migrations a pod concerns (its source, its replacement), timers enqueue backoffs and deadlines, and
a periodic resync enqueues every active migration as a safety net.

One worker thread reconciles: admission under the caps must see every earlier admission, so the
cache applies the controller's own writes at once instead of waiting for their watch events (a
second worker would need the same serialisation around admission for little gain: a reconcile is a
few API calls, and slow steps, such as waiting for a pod, are requeued rather than waited on).

The pieces it drives live beside it: the cache (`cache`), the reads (`observe`), the effects'
execution (`executor`) and the pure machine (`machine`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from apollo_api.podmigration import API_VERSION, KIND, Phase, PodMigration
from common.loops import BackgroundLoop
from orchestrator.cache import MigrationCache, Obj, key_of
from orchestrator.effects import Delete, Effect, Emit, Outcome, Plan, Report
from orchestrator.executor import COMPONENT, Executor
from orchestrator.kube import ApiError, Kube
from orchestrator.machine import Machine
from orchestrator.metrics import OrchestratorMetrics
from orchestrator.observe import WorldReader
from orchestrator.status import started_at
from orchestrator.workqueue import WorkQueue

log = logging.getLogger("orchestrator.controller")
RELIST_BACKOFF_SECONDS = 1.0


class Controller:
    """Runs while this replica leads: two watches, a resync timer and one reconcile worker."""

    def __init__(
        self,
        kube: Kube,
        machine: Machine,
        metrics: OrchestratorMetrics,
        *,
        is_leader: Callable[[], bool],
        reporter: Callable[[Report], Outcome] | None = None,
        identity: Callable[[], str] = lambda: COMPONENT,
        resync_seconds: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kube = kube
        self.machine = machine
        self.metrics = metrics
        self.is_leader = is_leader
        self.clock = clock
        self.resync_seconds = resync_seconds
        self.cache = MigrationCache()
        self.queue = WorkQueue()
        self.reader = WorldReader(kube)
        self.executor = Executor(kube, metrics, reporter, identity, clock)
        self._loops: list[BackgroundLoop] = []
        self.reconciles = 0

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Controller:
        self._loops = [
            BackgroundLoop("migration-watch", RELIST_BACKOFF_SECONDS, self._watch_migrations),
            BackgroundLoop("pod-watch", RELIST_BACKOFF_SECONDS, self._watch_pods),
            BackgroundLoop("resync", self.resync_seconds, self.resync, first_delay=self.resync_seconds),
            BackgroundLoop("reconcile-worker", 0.0, self._work),
        ]
        for loop in self._loops:
            loop.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self.queue.close()
        for loop in self._loops:
            loop.stop(timeout=0)
        for loop in self._loops:
            loop.join(timeout)

    @property
    def synced(self) -> bool:
        return self.cache.synced

    # -- watches ---------------------------------------------------------------------------------

    def _stopping(self) -> bool:
        return any(loop.stopping for loop in self._loops)

    def _watch_migrations(self) -> None:
        try:
            items, version = self.kube.list_migrations()
            for key in self.cache.replace_all(items):
                self.queue.add(key)
            self._gauge()
            for kind, obj in self.kube.watch_migrations(version, self._stopping):
                if kind == "ERROR":
                    log.info("migration watch expired; listing again", extra={"status": obj.get("message")})
                    return
                if kind == "BOOKMARK":
                    continue
                key = key_of(obj)
                if kind == "DELETED":
                    self.cache.delete(key)
                elif self.cache.upsert(obj):
                    self.queue.add(key)
                self._gauge()
        except ApiError as exc:
            log.warning("migration watch interrupted; retrying", extra={"error": str(exc)})

    def _watch_pods(self) -> None:
        try:
            version = self.kube.pods_resource_version()
            for kind, pod in self.kube.watch_pods(version, self._stopping):
                if kind == "ERROR":
                    log.info("pod watch expired; starting again", extra={"status": pod.get("message")})
                    return
                if kind == "BOOKMARK":
                    continue
                for key in self.cache.keys_for_pod(pod):
                    self.queue.add(key)
        except ApiError as exc:
            log.warning("pod watch interrupted; retrying", extra={"error": str(exc)})

    def resync(self) -> None:
        """Every active migration, and finished ones (TTL, owed reports), looked at again."""
        for key in self.cache.active_keys() + self.cache.finished_keys():
            self.queue.add(key)

    def _gauge(self) -> None:
        phases = self.cache.phases()
        for phase in Phase.ACTIVE:
            self.metrics.active.labels(phase).set(phases.get(phase, 0))

    # -- reconcile -------------------------------------------------------------------------------

    def _work(self) -> None:
        key = self.queue.get(timeout=0.5)  # raises Stopped once closed, which ends the loop
        if key is None:
            return
        t0 = time.perf_counter()
        try:
            requeue = self.reconcile(key)
        except ApiError as exc:
            self.metrics.reconcile_errors.labels("api").inc()
            log.warning("reconcile failed; retrying", extra={"migration": key, "error": str(exc)})
            requeue = 2.0
        except Exception:  # a bug must not stop the controller; the object is retried later
            self.metrics.reconcile_errors.labels("bug").inc()
            log.exception("reconcile crashed; retrying", extra={"migration": key})
            requeue = 10.0
        finally:
            self.metrics.reconcile_seconds.observe(time.perf_counter() - t0)
        if requeue is not None:
            self.queue.add(key, requeue)

    def reconcile(self, key: str) -> float | None:
        """One step of one migration; returns when to look again (None: on events and resync only)."""
        raw = self.cache.get(key)
        if raw is None:
            return None
        m = PodMigration.from_json(raw)
        world = self.reader.observe(m, self.cache.migrations(), self.clock())
        plan = self.machine.step(world)
        if not self.is_leader():
            return None  # lost the lease while reading: act on nothing
        self.reconciles += 1
        rv = m.resource_version
        outcomes: list[tuple[Effect, Outcome]] = []
        for effect in plan.effects:
            if isinstance(effect, Emit):
                continue
            if not self.is_leader():
                return None
            outcome, rv = self.executor.run(m, raw, effect, rv)
            outcomes.append((effect, outcome))
            if isinstance(effect, Delete) and outcome.ok:
                self.cache.delete(key)
                return None
        folded = self.machine.fold(world, plan, outcomes)
        if folded.status.to_json() != m.status.to_json() and not self._write_status(m, raw, folded, rv):
            return 0.0
        for effect in [e for e in plan.effects if isinstance(e, Emit)] + list(folded.effects):
            if isinstance(effect, Emit):
                self.executor.emit(m, effect)
        self._after(m, folded)
        if folded.requeue_after is not None:
            return folded.requeue_after
        return self.resync_seconds if folded.status.phase in Phase.ACTIVE else None

    def _write_status(self, m: PodMigration, raw: Obj, plan: Plan, rv: str) -> bool:
        body = {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": m.name, "namespace": m.namespace, "resourceVersion": rv},
            "spec": raw.get("spec") or {},
            "status": plan.status.to_json(),
        }
        try:
            written = self.kube.replace_migration_status(m.namespace, m.name, body)
        except ApiError as exc:
            if exc.code == 404:
                self.cache.delete(key_of(m))
                return True
            if exc.code != 409:
                raise
            self.metrics.reconcile_errors.labels("conflict").inc()
            fresh = self.kube.read_migration(m.namespace, m.name)
            if fresh is None:
                self.cache.delete(key_of(m))
            else:
                self.cache.upsert(fresh)
            return False
        self.cache.upsert(written)
        self._gauge()
        return True

    def _after(self, m: PodMigration, plan: Plan) -> None:
        """Log and count transitions; a finished migration frees a slot, so pending ones look again."""
        before, after = m.status.phase, plan.status.phase
        if before == after:
            return
        log.info(
            "migration advanced",
            extra={"migration": key_of(m), "from": before, "to": after, "detail": plan.status.message},
        )
        if after in Phase.FINISHED:
            done = next((c for c in plan.status.conditions if c.type in ("Complete", "Failed", "Cancelled")), None)
            self.metrics.observe_finished(after, done.reason if done else after, plan.status.steps, started_at(m))
            for key in self.cache.pending_keys():
                self.queue.add(key)
