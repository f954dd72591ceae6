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
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable
from typing import Any

from apollo_api.podmigration import (
    API_VERSION,
    CHECKPOINT_LABEL,
    KIND,
    MIGRATION_ANNOTATION,
    Phase,
    PodMigration,
    checkpoint_claim_name,
)
from common.loops import BackgroundLoop
from orchestrator import podinfo
from orchestrator.kube import ApiError, Kube
from orchestrator.machine import (
    FINALIZER,
    ClaimInfo,
    CreatePod,
    Delete,
    Effect,
    Emit,
    Evict,
    Machine,
    Outcome,
    PatchMeta,
    Plan,
    Report,
    World,
    started_at,
)
from orchestrator.metrics import OrchestratorMetrics
from orchestrator.placement import NodeView, node_view
from orchestrator.workqueue import WorkQueue

log = logging.getLogger("orchestrator.controller")
Obj = dict[str, Any]
RELIST_BACKOFF_SECONDS = 1.0
COMPONENT = "apollo-orchestrator"


def key_of(obj: Obj | PodMigration) -> str:
    if isinstance(obj, PodMigration):
        return f"{obj.namespace}/{obj.name}"
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def _rv(obj: Obj) -> int:
    text = str((obj.get("metadata") or {}).get("resourceVersion", "") or "")
    return int(text) if text.isdigit() else -1


class MigrationCache:
    """Every PodMigration from list+watch, with the controller's own writes applied as they return.

    A watch event older than what the cache holds (our write came back first) is ignored, so the
    cache never steps back; resourceVersions are compared as integers, which etcd-backed servers use.
    """

    def __init__(self) -> None:
        self._items: dict[str, Obj] = {}
        self._parsed: dict[str, PodMigration] = {}
        self._lock = threading.Lock()
        self.synced = False

    def replace_all(self, items: Iterable[Obj]) -> list[str]:
        with self._lock:
            self._items = {key_of(o): o for o in items}
            self._parsed = {k: PodMigration.from_json(o) for k, o in self._items.items()}
            self.synced = True
            return list(self._items)

    def upsert(self, obj: Obj) -> bool:
        key = key_of(obj)
        with self._lock:
            held = self._items.get(key)
            if held is not None and 0 <= _rv(obj) < _rv(held):
                return False
            self._items[key] = obj
            self._parsed[key] = PodMigration.from_json(obj)
            return True

    def delete(self, key: str) -> None:
        with self._lock:
            self._items.pop(key, None)
            self._parsed.pop(key, None)

    def get(self, key: str) -> Obj | None:
        with self._lock:
            return self._items.get(key)

    def migrations(self) -> list[PodMigration]:
        with self._lock:
            return list(self._parsed.values())

    def active_keys(self) -> list[str]:
        with self._lock:
            return [k for k, m in self._parsed.items() if m.status.phase not in Phase.FINISHED or m.deletion_timestamp]

    def finished_keys(self) -> list[str]:
        with self._lock:
            return [k for k, m in self._parsed.items() if m.status.phase in Phase.FINISHED]

    def pending_keys(self) -> list[str]:
        with self._lock:
            pending = [m for m in self._parsed.values() if m.status.phase == Phase.PENDING]
        pending.sort(key=lambda m: (m.creation_timestamp, m.name))
        return [key_of(m) for m in pending]

    def phases(self) -> Tally[str]:
        with self._lock:
            return Tally(m.status.phase for m in self._parsed.values() if m.status.phase in Phase.ACTIVE)

    def keys_for_pod(self, pod: Obj) -> list[str]:
        """The active migrations a pod event concerns: its source, a replacement candidate, a bare re-creation."""
        meta = pod.get("metadata") or {}
        namespace = str(meta.get("namespace", ""))
        uid, name = str(meta.get("uid", "")), str(meta.get("name", ""))
        marked = (meta.get("annotations") or {}).get(MIGRATION_ANNOTATION, "")
        _, _, owner = podinfo.controller_ref(pod)
        out = []
        with self._lock:
            for key, m in self._parsed.items():
                if m.namespace != namespace or m.status.phase in Phase.FINISHED:
                    continue
                st = m.status
                if (
                    m.spec.pod_name == name
                    or (uid and st.pod_uid == uid)
                    or marked == m.name
                    or (owner and st.owner_uid == owner)
                ):
                    out.append(key)
        return out


class WorldReader:
    """Reads what a migration's current phase needs, and only that."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def observe(self, m: PodMigration, migrations: list[PodMigration], now: float) -> World:
        phase = m.status.phase if m.status.phase in Phase.ALL else Phase.PENDING
        if phase in Phase.FINISHED and not m.deletion_timestamp:
            return World(now, m, migrations=migrations)
        pod = self.kube.read_pod(m.namespace, m.spec.pod_name) if m.spec.pod_name else None
        nodes: dict[str, Obj] = {}
        usage: dict[str, NodeView] = {}
        claim: ClaimInfo | None = None
        job: Obj | None = None
        candidates: list[Obj] = []
        if phase == Phase.PENDING:
            for name in {m.spec.source_node, m.spec.target_node} - {""}:
                node = self.kube.read_node(name)
                if node is not None:
                    nodes[name] = node
        elif phase == Phase.CAPTURING and pod is not None:
            usage = self._usage(m)
            claim = self._claim(m, pod)
            if m.status.owner_kind == "Job" and m.status.owner_name:
                job = self.kube.read_job(m.namespace, m.status.owner_name)
        elif phase == Phase.RESCHEDULING or m.deletion_timestamp:
            candidates = self.kube.list_pods(m.namespace)
        return World(now, m, pod, migrations, nodes, usage, claim, job, candidates)

    def _usage(self, m: PodMigration) -> dict[str, NodeView]:
        if m.spec.target_node:
            node = self.kube.read_node(m.spec.target_node)
            if node is None:
                return {}
            return {m.spec.target_node: node_view(node, self.kube.list_bound_pods(m.spec.target_node))}
        by_node: dict[str, list[Obj]] = {}
        for pod in self.kube.list_bound_pods():
            by_node.setdefault(podinfo.node_of(pod), []).append(pod)
        views = {}
        for node in self.kube.list_nodes():
            name = str((node.get("metadata") or {}).get("name", ""))
            views[name] = node_view(node, by_node.get(name, ()))
        return views

    def _claim(self, m: PodMigration, pod: Obj) -> ClaimInfo | None:
        labels = podinfo.meta(pod).get("labels") or {}
        if str(labels.get(CHECKPOINT_LABEL, "")).lower() != "true" or not m.spec.preserve_pv:
            return None
        name = checkpoint_claim_name(m.spec.pod_name, m.status.owner_kind, m.status.owner_name)
        pvc = self.kube.read_pvc(m.namespace, name)
        if pvc is None:
            return ClaimInfo(name, False)
        phase = str((pvc.get("status") or {}).get("phase", ""))
        selector = None
        volume = str((pvc.get("spec") or {}).get("volumeName", "") or "")
        if volume:
            pv = self.kube.read_pv(volume)
            if pv is not None:
                selector = ((pv.get("spec") or {}).get("nodeAffinity") or {}).get("required")
        return ClaimInfo(name, True, phase, selector)


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
