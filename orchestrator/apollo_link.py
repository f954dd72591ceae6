"""APOLLO's conditional migration: policies in, PodMigrations and scale changes out, results back.

The link subscribes to `OrchestrationPolicy` (MIGRATE, SCALE_UP, SCALE_DOWN) and re-subscribes with
exponential backoff and jitter whenever the stream ends. APOLLO re-sends what has not been
acknowledged, so everything here is idempotent: a MIGRATE policy becomes a PodMigration whose name
is derived from the policy's request id (a re-sent policy meets its own object, 409, and nothing
happens twice); the controller reports its outcome with `ReportExecutionResult` when it finishes.
SCALE policies act through the scale subresource, only on workloads annotated
`apollo.io/autoscale: "true"` and within their optional min/max annotations, and are reported at once.

`migration_from_policy` and `scale_plan` are pure; `ApolloLink` is the adapter.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc

from apollo_api.podmigration import (
    API_VERSION,
    DEFAULT_TIMEOUT_SECONDS,
    KIND,
    MAX_TIMEOUT_SECONDS,
    MIN_TIMEOUT_SECONDS,
    SUGGESTED_NODE_ANNOTATION,
    migration_name,
)
from apollo_api.v1 import apollo_pb2 as pb
from apollo_api.v1 import apollo_pb2_grpc as pb_grpc
from common.loops import BackgroundLoop
from orchestrator.config import ApolloLinkSettings
from orchestrator.effects import Outcome, Report
from orchestrator.kube import ApiError, Kube, scalable
from orchestrator.metrics import OrchestratorMetrics

log = logging.getLogger("orchestrator.apollo")
Obj = dict[str, Any]

# Workloads opt in to APOLLO's scaling with this annotation set to "true"; optional bounds beside it.
AUTOSCALE_ANNOTATION = "apollo.io/autoscale"
AUTOSCALE_MIN_ANNOTATION = "apollo.io/autoscale-min"
AUTOSCALE_MAX_ANNOTATION = "apollo.io/autoscale-max"
# On PodMigrations created from a policy: who asked, for `kubectl get -l`.
SOURCE_LABEL = "apollo.io/requested-by"
SOURCE_APOLLO = "apollo-policy"
ACTIONS = (pb.ORCHESTRATION_ACTION_MIGRATE, pb.ORCHESTRATION_ACTION_SCALE_UP, pb.ORCHESTRATION_ACTION_SCALE_DOWN)


def policy_migration_name(pod_name: str, request_id: str) -> str:
    """The same request id always names the same object, whichever replica and however often."""
    digest = hashlib.sha256(request_id.encode()).hexdigest()[:10]
    return migration_name(pod_name, f"apollo-{digest}")


def policy_dry_run(policy: pb.OrchestrationPolicy, forced: bool) -> bool:
    """APOLLO's dry run travels as `constraints.allow_disruption = false`; the orchestrator may force one."""
    return forced or (policy.HasField("constraints") and not policy.constraints.allow_disruption)


def migration_from_policy(policy: pb.OrchestrationPolicy, forced_dry_run: bool) -> tuple[Obj | None, str]:
    """The PodMigration a MIGRATE policy asks for, or (None, why it cannot be carried out).

    APOLLO's target is its preference from a forecast, not an order: it becomes the suggested node
    (the replacement prefers it; the scheduler may place it elsewhere if it no longer fits), while
    its source node stays a check that the pod is still where APOLLO saw it.
    """
    if policy.action != pb.ORCHESTRATION_ACTION_MIGRATE or not policy.HasField("migration"):
        return None, "not a MIGRATE policy with a migration target"
    target = policy.migration
    if not policy.request_id:
        return None, "request_id is empty"
    if not target.pod_name or not target.pod_namespace:
        return None, "migration.pod_name and migration.pod_namespace are required"
    timeout = target.timeout_seconds or (policy.constraints.timeout_seconds if policy.HasField("constraints") else 0)
    timeout = timeout or DEFAULT_TIMEOUT_SECONDS
    if not MIN_TIMEOUT_SECONDS <= timeout <= MAX_TIMEOUT_SECONDS:
        return (
            None,
            f"migration.timeout_seconds must be in [{MIN_TIMEOUT_SECONDS}, {MAX_TIMEOUT_SECONDS}], got {timeout}",
        )
    if target.source_node and target.source_node == target.target_node:
        return None, f"source_node and target_node are both {target.source_node!r}"
    spec: Obj = {
        "podName": target.pod_name,
        "preservePV": bool(target.preserve_pv),
        "timeoutSeconds": int(timeout),
        "dryRun": policy_dry_run(policy, forced_dry_run),
        "reason": (policy.reason or f"APOLLO policy {policy.request_id}")[:1024],
        "requestId": policy.request_id[:253],
    }
    if target.source_node:
        spec["sourceNode"] = target.source_node
    metadata: Obj = {
        "name": policy_migration_name(target.pod_name, policy.request_id),
        "namespace": target.pod_namespace,
        "labels": {SOURCE_LABEL: SOURCE_APOLLO},
    }
    if target.target_node:
        metadata["annotations"] = {SUGGESTED_NODE_ANNOTATION: target.target_node}
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": spec}, ""


@dataclass(frozen=True)
class ScalePlan:
    """`replicas` to set (None: do not scale) and the words for the ExecutionResult."""

    replicas: int | None
    success: bool
    reason: str
    current: int = 0


def _bound(annotations: Mapping[str, str], key: str, default: int) -> int:
    raw = annotations.get(key, "")
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ValueError(f"annotation {key}={raw!r} is not an integer") from exc
    if value < 0:
        raise ValueError(f"annotation {key}={raw!r} is negative")
    return value


def scale_plan(policy: pb.OrchestrationPolicy, workload: Obj | None, *, enabled: bool, dry_run: bool) -> ScalePlan:
    """What a SCALE policy may do to this workload (read from the API server; None when it does not exist)."""
    target = policy.autoscaling
    who = f"{target.workload_kind} {target.workload_namespace}/{target.workload_name}"
    if not enabled:
        return ScalePlan(None, False, "the orchestrator does not act on SCALE policies (apollo.scale is off)")
    if not scalable(target.workload_kind):
        return ScalePlan(None, False, f"{who}: only Deployments, StatefulSets and ReplicaSets are scaled")
    if workload is None:
        return ScalePlan(None, False, f"{who} does not exist")
    meta = workload.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    current = int((workload.get("spec") or {}).get("replicas", 1) or 0)
    if str(annotations.get(AUTOSCALE_ANNOTATION, "")).lower() != "true":
        return ScalePlan(None, False, f'{who} has not opted in ({AUTOSCALE_ANNOTATION}: "true")', current)
    try:
        low = _bound(annotations, AUTOSCALE_MIN_ANNOTATION, 1)
        high = _bound(annotations, AUTOSCALE_MAX_ANNOTATION, max(current, target.desired_replicas, 1))
    except ValueError as exc:
        return ScalePlan(None, False, f"{who}: {exc}", current)
    if low > high:
        return ScalePlan(
            None, False, f"{who}: {AUTOSCALE_MIN_ANNOTATION} {low} exceeds {AUTOSCALE_MAX_ANNOTATION} {high}"
        )
    desired = min(max(int(target.desired_replicas), low), high)
    up = policy.action == pb.ORCHESTRATION_ACTION_SCALE_UP
    if (up and desired <= current) or (not up and desired >= current):
        return ScalePlan(
            None, True, f"{who} already at {current} replica(s) (bounds {low}-{high}): nothing to do", current
        )
    if dry_run:
        return ScalePlan(None, True, f"dry run: would scale {who} from {current} to {desired}", current)
    return ScalePlan(desired, True, f"scaled {who} from {current} to {desired}", current)


class ApolloLink:
    """The subscription loop (a BackgroundLoop) and the ExecutionResult reporter, over one channel."""

    def __init__(
        self,
        settings: ApolloLinkSettings,
        kube: Kube,
        metrics: OrchestratorMetrics,
        *,
        channel: grpc.Channel | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.kube = kube
        self.metrics = metrics
        self.channel = channel or grpc.insecure_channel(settings.address)
        self.stub = pb_grpc.OrchestrationPolicyServiceStub(self.channel)
        self._rng = rng or random.Random()
        self._call: Any = None
        self._lock = threading.Lock()
        self._loop: BackgroundLoop | None = None
        self.connected = False
        self.received = 0

    # -- reporting -------------------------------------------------------------------------------

    def report(self, r: Report, action: int = pb.ORCHESTRATION_ACTION_MIGRATE) -> Outcome:
        msg = pb.ExecutionResult(
            request_id=r.request_id,
            action=action,  # type: ignore[arg-type]
            success=r.success,
            failure_reason=r.reason[:2048],
            execution_duration_ms=r.duration_ms,
            metrics=r.metrics,
            pod_name=r.pod,
            pod_namespace=r.namespace,
            source_node=r.source_node,
            target_node=r.target_node,
            migration_id=r.migration,
        )
        try:
            reply = self.stub.ReportExecutionResult(msg, timeout=self.settings.grpc_timeout_seconds)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            return Outcome(False, 0, f"ReportExecutionResult failed: {code}: {exc.details() if code else exc}")
        log.info("reported execution result", extra={"request_id": r.request_id, "success": r.success})
        return Outcome(True, 200, reply.message)

    # -- subscription ----------------------------------------------------------------------------

    def start(self) -> ApolloLink:
        self._loop = BackgroundLoop("apollo-subscription", 0.0, self._subscribe_forever)
        self._loop.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        if self._loop is not None:
            self._loop.stop(timeout=0)
        with self._lock:
            if self._call is not None:
                self._call.cancel()
        if self._loop is not None:
            self._loop.join(timeout)

    def close(self) -> None:
        self.channel.close()

    def _subscribe_forever(self) -> None:
        loop = self._loop
        assert loop is not None
        backoff = self.settings.reconnect_initial_seconds
        while not loop.stopping:
            opened = time.monotonic()
            self._stream_once()
            if loop.stopping:
                return
            if time.monotonic() - opened > self.settings.reconnect_max_seconds:
                backoff = self.settings.reconnect_initial_seconds  # it was a healthy stream that ended
            delay = backoff * (0.5 + self._rng.random())
            log.info("re-subscribing to APOLLO", extra={"in_seconds": round(delay, 2)})
            if loop.wait(delay):
                return
            backoff = min(backoff * 2, self.settings.reconnect_max_seconds)

    def _stream_once(self) -> None:
        request = pb.PolicySubscription(
            subscriber_id=self.settings.subscriber_id,
            action_filters=list(ACTIONS),
            namespace_filters=list(self.settings.namespaces),
        )
        with self._lock:
            self._call = self.stub.SubscribePolicies(request)
            call = self._call
        try:
            self.connected = True
            self.metrics.apollo_connected.set(1)
            for policy in call:
                self.received += 1
                self.handle(policy)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                log.warning("policy stream ended", extra={"code": str(exc.code()), "details": exc.details()})
        finally:
            self.connected = False
            self.metrics.apollo_connected.set(0)
            with self._lock:
                self._call = None

    def handle(self, policy: pb.OrchestrationPolicy) -> str:
        """Carry out one policy; returns the outcome label (also counted)."""
        action = pb.OrchestrationAction.Name(policy.action)
        try:
            if policy.action == pb.ORCHESTRATION_ACTION_MIGRATE:
                outcome = self._migrate(policy)
            elif policy.action in (pb.ORCHESTRATION_ACTION_SCALE_UP, pb.ORCHESTRATION_ACTION_SCALE_DOWN):
                outcome = self._scale(policy)
            else:
                self._refuse(policy, f"{action} is not carried out by the orchestrator")
                outcome = "refused"
        except Exception:  # one bad policy must not end the subscription
            log.exception("policy handling failed", extra={"request_id": policy.request_id})
            outcome = "error"
        self.metrics.policies.labels(action, outcome).inc()
        return outcome

    def _refuse(self, policy: pb.OrchestrationPolicy, why: str, started: float | None = None) -> None:
        log.warning("policy refused", extra={"request_id": policy.request_id, "reason": why})
        elapsed = int((time.monotonic() - started) * 1000) if started else 0
        target = policy.migration if policy.HasField("migration") else None
        self.report(
            Report(
                request_id=policy.request_id,
                success=False,
                reason=why,
                duration_ms=elapsed,
                metrics={},
                pod=target.pod_name if target else "",
                namespace=target.pod_namespace if target else "",
                source_node=target.source_node if target else "",
                target_node="",
                migration="",
            ),
            action=policy.action,
        )

    def _migrate(self, policy: pb.OrchestrationPolicy) -> str:
        body, why = migration_from_policy(policy, self.settings.dry_run)
        if body is None:
            self._refuse(policy, why)
            return "refused"
        meta = body["metadata"]
        for attempt in range(3):
            try:
                self.kube.create_migration(meta["namespace"], body)
                log.info(
                    "migration created from policy",
                    extra={"request_id": policy.request_id, "migration": f"{meta['namespace']}/{meta['name']}"},
                )
                return "dry-run" if body["spec"]["dryRun"] else "created"
            except ApiError as exc:
                if exc.code == 409:
                    return "duplicate"  # a re-sent policy: its PodMigration exists and reports when it finishes
                if exc.code in (400, 403, 404, 422):
                    self._refuse(policy, f"PodMigration refused by the API server ({exc.code}): {exc.message}")
                    return "refused"
                log.warning("creating the migration failed", extra={"attempt": attempt + 1, "error": str(exc)})
                time.sleep(0.5 * (attempt + 1))
        return "error"  # not acknowledged: APOLLO re-sends it on the next subscription

    def _scale(self, policy: pb.OrchestrationPolicy) -> str:
        started = time.monotonic()
        target = policy.autoscaling
        workload = None
        if scalable(target.workload_kind):
            try:
                workload = self.kube.read_workload(
                    target.workload_kind, target.workload_namespace, target.workload_name
                )
            except ApiError as exc:
                log.warning("reading the workload failed", extra={"error": str(exc)})
                return "error"
        plan = scale_plan(
            policy, workload, enabled=self.settings.scale, dry_run=policy_dry_run(policy, self.settings.dry_run)
        )
        outcome = "scaled"
        success, reason = plan.success, plan.reason
        if plan.replicas is not None:
            try:
                self.kube.scale_workload(
                    target.workload_kind, target.workload_namespace, target.workload_name, plan.replicas
                )
            except ApiError as exc:
                success, reason, outcome = False, f"scaling failed ({exc.code}): {exc.message}", "failed"
        elif not plan.success:
            outcome = "refused"
        else:
            outcome = "dry-run" if reason.startswith("dry run") else "unchanged"
        self.metrics.scaled.labels(outcome).inc()
        log.info("scale policy", extra={"request_id": policy.request_id, "outcome": outcome, "reason": reason})
        metrics = {"replicas_before": str(plan.current)}
        if plan.replicas is not None and success:
            metrics["replicas_after"] = str(plan.replicas)
        self.report(
            Report(
                request_id=policy.request_id,
                success=success,
                reason="" if success else reason,
                duration_ms=int((time.monotonic() - started) * 1000),
                metrics=metrics,
                pod="",
                namespace=target.workload_namespace,
                source_node="",
                target_node="",
                migration="",
            ),
            action=policy.action,
        )
        return outcome


def link_factory(
    settings: ApolloLinkSettings, kube: Kube, metrics: OrchestratorMetrics
) -> Callable[[], ApolloLink] | None:
    """None when no APOLLO address is configured (the link is optional)."""
    if not settings.address:
        return None
    return lambda: ApolloLink(settings, kube, metrics)
