"""Everything the extender asks APOLLO, kept off the request path.

- `Refresher`: a daemon thread that keeps `SnapshotStore` current (GetNodeScoreSnapshot, with
  known_generation so an unchanged snapshot costs a few bytes).
- `PolicyCache`: per-pod GetSchedulingPolicy, awaited for at most a small budget; a late answer is
  still cached for the prioritize call that follows the filter call for the same pod.
- `ResultReporter`: ReportSchedulingResult from a queue, so a slow APOLLO never slows a request.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import grpc
import numpy as np

from apollo_api.v1 import apollo_pb2 as pb
from apollo_api.v1 import apollo_pb2_grpc as pb_grpc
from common.loops import BackgroundLoop, ClosableQueue
from extender.metrics import ExtenderMetrics
from extender.podspec import PodDemand
from extender.protocol import prepare
from extender.ranking import PodPolicy
from extender.snapshot import NodeEntry, Snapshot, SnapshotStore

log = logging.getLogger("extender.apollo")


def snapshot_from_proto(msg: pb.NodeScoreSnapshot) -> Snapshot:
    """The extender's snapshot from either answer form; columns are preferred (no per-node loop).

    Raises ValueError when the columns disagree in length, so a corrupt answer is refused as a
    failed refresh rather than ranking nodes by the wrong rows.
    """
    created = msg.created_at.seconds + msg.created_at.nanos / 1e9 if msg.HasField("created_at") else time.time()
    if msg.HasField("columns"):
        c = msg.columns
        return Snapshot(
            generation=msg.generation,
            created_at=created,
            names=list(c.node_names),
            score=np.array(c.score, dtype=np.float64),
            overload=np.array(c.predicted_overload, dtype=np.bool_),
            cpu_headroom=np.array(c.cpu_headroom_cores, dtype=np.float64),
            memory_headroom=np.array(c.memory_headroom_bytes, dtype=np.float64),
            cpu_allocatable=np.array(c.cpu_allocatable_cores, dtype=np.float64),
            memory_allocatable=np.array(c.memory_allocatable_bytes, dtype=np.float64),
            reasons=dict(c.overload_reasons),
            stale=msg.stale,
            stale_reason=msg.stale_reason,
        )
    nodes = {
        n.node_name: NodeEntry(
            score=n.score,
            reason=n.reason,
            overload=n.predicted_overload,
            cpu_headroom_cores=n.cpu_headroom_cores if n.cpu_allocatable_cores > 0 else math.nan,
            memory_headroom_bytes=float(n.memory_headroom_bytes) if n.memory_allocatable_bytes > 0 else math.nan,
            cpu_allocatable_cores=n.cpu_allocatable_cores if n.cpu_allocatable_cores > 0 else math.nan,
            memory_allocatable_bytes=float(n.memory_allocatable_bytes) if n.memory_allocatable_bytes > 0 else math.nan,
        )
        for n in msg.nodes
    }
    return Snapshot.from_entries(msg.generation, created, nodes, stale=msg.stale, stale_reason=msg.stale_reason)


class Refresher(BackgroundLoop):
    """Polls APOLLO for the snapshot; on errors keeps the old one until it ages out."""

    def __init__(
        self,
        stub: pb_grpc.SchedulingPolicyServiceStub,
        store: SnapshotStore,
        metrics: ExtenderMetrics,
        interval: float,
        timeout: float,
    ) -> None:
        super().__init__("apollo-snapshot-refresher", interval)
        self.stub = stub
        self.store = store
        self.metrics = metrics
        self.timeout = timeout

    def refresh_once(self) -> bool:
        held = self.store.current
        request = pb.NodeScoreSnapshotRequest(known_generation=held.generation if held else 0, columnar=True)
        try:
            reply: pb.NodeScoreSnapshot = self.stub.GetNodeScoreSnapshot(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            code = exc.code().name if hasattr(exc, "code") and exc.code() else "UNKNOWN"
            self.metrics.snapshot_refresh_errors.labels(code).inc()
            if self.store.last_error != code:
                log.warning("APOLLO snapshot refresh failed", extra={"code": code, "detail": str(exc.details())})
            self.store.last_error = code
            return False
        if reply.not_modified and held is not None:
            self.store.touch()
        else:
            try:
                snap = prepare(snapshot_from_proto(reply))  # replies' repeated parts encoded here, not per request
            except ValueError as exc:
                self.metrics.snapshot_refresh_errors.labels("MALFORMED").inc()
                if self.store.last_error != "MALFORMED":
                    log.warning("APOLLO snapshot refused", extra={"error": str(exc)})
                self.store.last_error = "MALFORMED"
                return False
            if held is None or held.stale != snap.stale:
                log.info(
                    "APOLLO snapshot received",
                    extra={"generation": snap.generation, "nodes": len(snap), "stale": snap.stale},
                )
            self.store.replace(snap)
            self.metrics.snapshot_generation.set(snap.generation)
        return True

    def run_once(self) -> None:
        self.refresh_once()
        snap = self.store.current
        self.metrics.snapshot_age.set(snap.age() if snap else float("inf"))


def policy_from_proto(msg: pb.SchedulingPolicy) -> PodPolicy:
    scores = {p.node_name: p.score for p in msg.node_preferences}
    infeasible = {p.node_name: p.reason or "infeasible per APOLLO" for p in msg.node_preferences if p.infeasible}
    return PodPolicy(scores=scores, infeasible=infeasible)


class PolicyCache:
    """Per-pod policies keyed by pod UID (or namespace/name), each fetched at most once per TTL."""

    def __init__(
        self,
        stub: pb_grpc.SchedulingPolicyServiceStub,
        metrics: ExtenderMetrics,
        ttl: float,
        timeout: float,
        max_entries: int = 50_000,
    ) -> None:
        self.stub = stub
        self.metrics = metrics
        self.ttl = ttl
        self.timeout = timeout
        self.max_entries = max_entries
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="apollo-policy")
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, Future[PodPolicy | None]]] = {}

    def _fetch(self, pod: dict[str, object], demand: PodDemand, candidates: list[str]) -> PodPolicy | None:
        meta = pod.get("metadata") if isinstance(pod.get("metadata"), dict) else {}
        assert isinstance(meta, dict)
        request = pb.SchedulingPolicyRequest(
            pod_name=demand.name,
            pod_namespace=demand.namespace,
            pod_uid=demand.uid,
            pod_labels={str(k): str(v) for k, v in (meta.get("labels") or {}).items()},
            pod_annotations={str(k): str(v) for k, v in (meta.get("annotations") or {}).items()},
            cpu_request_cores=demand.cpu_cores,
            memory_request_bytes=int(demand.memory_bytes),
            gpu_request=demand.gpus,
            candidate_nodes=candidates,
        )
        try:
            return policy_from_proto(self.stub.GetSchedulingPolicy(request, timeout=self.timeout))
        except grpc.RpcError as exc:
            self.metrics.policy_lookups.labels("error").inc()
            log.debug(
                "GetSchedulingPolicy failed",
                extra={"pod": f"{demand.namespace}/{demand.name}", "err": str(exc)},
            )
            return None

    def get(self, pod: dict[str, object], demand: PodDemand, candidates: list[str], budget: float) -> PodPolicy | None:
        key = demand.uid or f"{demand.namespace}/{demand.name}"
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or now - entry[0] > self.ttl:
                if len(self._entries) >= self.max_entries:
                    self._entries = {k: v for k, v in self._entries.items() if now - v[0] <= self.ttl}
                future = self._pool.submit(self._fetch, pod, demand, candidates)
                self._entries[key] = (now, future)
                fresh = True
            else:
                future = entry[1]
                fresh = False
        if future.done():
            self.metrics.policy_lookups.labels("hit").inc()
            return future.result()
        if budget <= 0 or not fresh:
            # Never wait twice for one lookup (prioritize right after filter), nor at all by default.
            self.metrics.policy_lookups.labels("pending").inc()
            return None
        try:
            result = future.result(timeout=budget)
        except FutureTimeout:
            self.metrics.policy_lookups.labels("timeout").inc()
            return None
        self.metrics.policy_lookups.labels("fetched").inc()
        return result


class ResultReporter(BackgroundLoop):
    """Drains scheduling results to APOLLO in batches, one client stream per batch, off the hot path.

    A burst binds hundreds of pods a second; one unary RPC per pod cost the extender and APOLLO more
    CPU than the requests themselves, on the cores kube-scheduler needs. Results wait at most
    `linger` seconds. The queue is bounded: when APOLLO is slow, results are dropped and counted,
    never allowed to grow memory. An APOLLO without the streaming RPC gets them one by one.
    """

    def __init__(
        self,
        stub: pb_grpc.SchedulingPolicyServiceStub,
        metrics: ExtenderMetrics,
        timeout: float,
        *,
        linger: float = 0.5,
        max_batch: int = 1000,
    ) -> None:
        super().__init__("apollo-result-reporter", 0.0)
        self.stub = stub
        self.metrics = metrics
        self.timeout = timeout
        self.linger = linger
        self.max_batch = max_batch
        # Closed on stop, which wakes a consumer blocked on an empty queue.
        self.queue: ClosableQueue[pb.SchedulingResult] = self.closes(ClosableQueue(maxsize=10_000))
        self._streaming = True

    def submit(self, result: pb.SchedulingResult) -> None:
        if not self.queue.put_nowait(result):
            self.metrics.results_reported.labels("dropped").inc()

    def next_batch(self) -> list[pb.SchedulingResult]:
        """Blocks for the first result, lingers so a burst shares the call, then takes what is queued.

        Raises Stopped once stopped with nothing left to send.
        """
        batch = [self.queue.get()]
        self.wait(self.linger)
        batch += self.queue.drain(self.max_batch - 1)
        return batch

    def send(self, batch: list[pb.SchedulingResult]) -> None:
        if self._streaming:
            try:
                reply = self.stub.StreamSchedulingResults(iter(batch), timeout=self.timeout)
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                    self.metrics.results_reported.labels("error").inc(len(batch))
                    return
                log.info("APOLLO has no StreamSchedulingResults; reporting results one by one")
                self._streaming = False
            else:
                self.metrics.results_reported.labels("sent").inc(reply.messages_processed)
                if reply.messages_processed < len(batch):
                    self.metrics.results_reported.labels("rejected").inc(len(batch) - reply.messages_processed)
                return
        for result in batch:
            try:
                self.stub.ReportSchedulingResult(result, timeout=self.timeout)
                self.metrics.results_reported.labels("sent").inc()
            except grpc.RpcError:
                self.metrics.results_reported.labels("error").inc()

    def run_once(self) -> None:
        self.send(self.next_batch())
