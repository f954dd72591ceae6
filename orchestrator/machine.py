"""The migration state machine: one observed world in, the next status and side effects out. Pure.

A reconcile reads the world (the PodMigration, the pod it names, the replacement candidates, the
nodes, the checkpoint claim, the Job), asks :func:`step` what to do, executes the returned effects
(evict, create a pod, emit events, report to APOLLO, patch metadata, delete) and folds their
outcomes into the status with :func:`fold` before writing it once, with the object's resourceVersion.
Everything the machine needs to resume is in the status (phase, step times, attempt count, captured
containers, stored pod spec), so a restart at any step reads the same world and takes the same
decision: the controller is level-triggered, and every effect is idempotent (an eviction of a pod
already going away, a pod created under a name that exists) or recorded before it can repeat.

Phases (DESIGN.md, "Migration, step by step"):

- Pending: pre-flight (shared with the REST API) and admission under the concurrency caps.
- Capturing: container states, requests, the stored spec of a bare pod, the checkpoint claim and
  its topology, the Job's disruption rule, and the target's capacity. Nothing has been touched;
  any refusal here fails the migration with the pod as it was. The status written at the end of
  this phase is the capacity reservation the extender honours.
- Evicting: the Eviction API, retried with backoff while PodDisruptionBudgets refuse (429).
- Rescheduling: the source goes away (a Job's replacement appears only after it has), the
  replacement appears (a bare pod is re-created from the stored spec), is scheduled and runs, and
  reports where it resumed from. Success means resumed, not merely Running.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from apollo_api.podmigration import (
    CANCEL_ANNOTATION,
    CANCEL_BY_ANNOTATION,
    CHECKPOINT_LABEL,
    CHECKPOINT_STEP_ANNOTATION,
    MIN_TIMEOUT_SECONDS,
    POD_NAME_LABEL,
    POD_UID_LABEL,
    RESUMED_FROM_ANNOTATION,
    SUGGESTED_NODE_ANNOTATION,
    Condition,
    Phase,
    PodMigration,
    PodMigrationStatus,
    checkpoint_claim_name,
    workload_of,
)
from common.errors import DomainError
from orchestrator import placement, podinfo
from orchestrator.config import CapSettings, EvictionSettings
from orchestrator.preflight import SPEC_FIELDS, preflight, unmovable_reason

Json = Mapping[str, Any]

FINALIZER = "apollo.io/bare-pod-protection"
ADMITTED = (Phase.CAPTURING, Phase.EVICTING, Phase.RESCHEDULING)
# How soon to look again while something outside moves (the source terminating, the replacement
# starting): watches usually wake the controller first; this is the floor when they do not.
POLL_SECONDS = 2.0
REPORT_RETRY_SECONDS = 10.0


@dataclass(frozen=True)
class MachineConfig:
    caps: CapSettings = field(default_factory=CapSettings)
    eviction: EvictionSettings = field(default_factory=EvictionSettings)
    ttl_seconds_after_finished: int = 86_400
    resume_grace_seconds: float = 10.0
    cap_retry_seconds: float = 2.0
    # Whether ExecutionResults can be sent (an APOLLO link is configured).
    reports: bool = False


@dataclass(frozen=True)
class ClaimInfo:
    """The checkpoint claim as read from the API server, and where its volume can be mounted."""

    name: str
    found: bool
    phase: str = ""
    # The bound PersistentVolume's spec.nodeAffinity.required (None: mountable on any node).
    volume_selector: Json | None = None


@dataclass(frozen=True)
class World:
    """Everything one reconcile observed. `migrations` are every PodMigration known (caps, duplicates,
    reservations); `nodes` the raw nodes pre-flight needs; `usage` what placement needs per node."""

    now: float
    migration: PodMigration
    pod: Json | None = None
    migrations: Sequence[PodMigration] = ()
    nodes: Mapping[str, Json] = field(default_factory=dict)
    usage: Mapping[str, placement.NodeView] = field(default_factory=dict)
    claim: ClaimInfo | None = None
    job: Json | None = None
    candidates: Sequence[Json] = ()


# -- effects -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evict:
    namespace: str
    pod: str
    uid: str


@dataclass(frozen=True)
class CreatePod:
    manifest: dict[str, Any]


@dataclass(frozen=True)
class Emit:
    """A Kubernetes Event on the pod (`kind` "Pod") or on the migration (`kind` "PodMigration")."""

    kind: str
    name: str
    uid: str
    type: str
    reason: str
    message: str


@dataclass(frozen=True)
class Report:
    """An ExecutionResult for APOLLO (the migration carried out one of its policies)."""

    request_id: str
    success: bool
    reason: str
    duration_ms: int
    metrics: dict[str, str]
    pod: str
    namespace: str
    source_node: str
    target_node: str
    migration: str


@dataclass(frozen=True)
class PatchMeta:
    labels: dict[str, str] = field(default_factory=dict)
    add_finalizer: bool = False
    remove_finalizer: bool = False


@dataclass(frozen=True)
class Delete:
    """TTL after finished: the object goes (never a pod, never a claim)."""


Effect = Evict | CreatePod | Emit | Report | PatchMeta | Delete


@dataclass(frozen=True)
class Outcome:
    """What executing an effect did: HTTP-like `code` (0 for effects without one) and the server's words."""

    ok: bool
    code: int = 0
    message: str = ""


@dataclass
class Plan:
    status: PodMigrationStatus
    effects: list[Effect] = field(default_factory=list)
    requeue_after: float | None = None


# -- helpers -------------------------------------------------------------------------------------


def set_condition(st: PodMigrationStatus, ctype: str, status: str, reason: str, message: str, now: float) -> None:
    """Upsert a condition; the transition time moves only when its status changes."""
    for i, c in enumerate(st.conditions):
        if c.type == ctype:
            stamp = c.last_transition_time if c.status == status and c.last_transition_time else podinfo.rfc3339(now)
            st.conditions[i] = Condition(ctype, status, reason, message, stamp)
            return
    st.conditions.append(Condition(ctype, status, reason, message, podinfo.rfc3339(now)))


def condition(st: PodMigrationStatus, ctype: str) -> Condition | None:
    return next((c for c in st.conditions if c.type == ctype), None)


def _mark(st: PodMigrationStatus, step_name: str, when: float) -> None:
    st.steps.setdefault(step_name, podinfo.rfc3339(when))


def step_time(st: PodMigrationStatus, step_name: str) -> float | None:
    return podinfo.parse_time(st.steps.get(step_name, ""))


def started_at(m: PodMigration) -> float | None:
    return podinfo.parse_time(m.creation_timestamp) or step_time(m.status, "accepted")


def deadline_of(m: PodMigration) -> float | None:
    start = started_at(m)
    return None if start is None else start + max(m.spec.timeout_seconds, MIN_TIMEOUT_SECONDS)


def eviction_backoff(cfg: EvictionSettings, attempts: int) -> float:
    """Wait after the `attempts`-th refused eviction (exponential, capped)."""
    if attempts <= 0:
        return 0.0
    return float(min(cfg.initial_backoff_seconds * cfg.multiplier ** (attempts - 1), cfg.max_backoff_seconds))


def _fmt_seconds(seconds: float) -> str:
    return f"{seconds:.1f}s" if seconds < 600 else f"{seconds / 60:.1f}m"


def workload_key(namespace: str, kind: str, name: str, pod_name: str) -> str:
    return f"{namespace}/{kind}/{name}" if kind else f"{namespace}/Pod/{pod_name}"


def _migration_workload(m: PodMigration) -> str:
    return workload_key(m.namespace, m.status.owner_kind, m.status.owner_name, m.spec.pod_name)


def _nodes_of(m: PodMigration) -> set[str]:
    return {n for n in (m.status.source_node, m.spec.target_node or m.status.suggested_node) if n}


def cancel_requested(m: PodMigration) -> str:
    """The cancellation message when one was requested, else ""."""
    if CANCEL_ANNOTATION not in m.annotations:
        return ""
    who = m.annotations.get(CANCEL_BY_ANNOTATION, "")
    return f"cancelled{f' by {who}' if who else ''} at {m.annotations[CANCEL_ANNOTATION] or 'an unknown time'}"


def eviction_accepted(m: PodMigration) -> bool:
    return "evicted" in m.status.steps or "sourceTerminated" in m.status.steps


def job_disruption_rule_missing(job: Json) -> str:
    """Why this Job would count an eviction against backoffLimit, or "" when its rule is in place."""
    spec = job.get("spec") or {}
    template = (spec.get("template") or {}).get("spec") or {}
    if template.get("restartPolicy") != "Never":
        return "its pod template's restartPolicy is not Never (podFailurePolicy requires Never)"
    rules = (spec.get("podFailurePolicy") or {}).get("rules") or []
    for rule in rules:
        if rule.get("action") != "Ignore":
            continue
        for pc in rule.get("onPodConditions") or []:
            if pc.get("type") == "DisruptionTarget" and str(pc.get("status", "True")) == "True":
                return ""
    return "it has no podFailurePolicy rule with action Ignore on the DisruptionTarget condition"


def _admission_block(m: PodMigration, world: World, caps: CapSettings, pod: Json) -> str:
    """Which cap holds this migration back, or ""."""
    admitted = [
        o
        for o in world.migrations
        if o.status.phase in ADMITTED and not o.spec.dry_run and (o.namespace, o.name) != (m.namespace, m.name)
    ]
    if len(admitted) >= caps.total:
        return f"{len(admitted)} migration(s) in progress cluster-wide, the cap is {caps.total}"
    in_ns = sum(o.namespace == m.namespace for o in admitted)
    if in_ns >= caps.per_namespace:
        return f"{in_ns} migration(s) in progress in namespace {m.namespace}, the cap is {caps.per_namespace}"
    kind, wname, _ = workload_of(pod)
    key = workload_key(m.namespace, kind, wname, m.spec.pod_name)
    in_workload = sum(_migration_workload(o) == key for o in admitted)
    if in_workload >= caps.per_workload:
        return f"{in_workload} migration(s) of workload {key} in progress, the cap is {caps.per_workload}"
    for node in {podinfo.node_of(pod), m.spec.target_node} - {""}:
        on_node = sum(node in _nodes_of(o) for o in admitted)
        if on_node >= caps.per_node:
            return f"{on_node} migration(s) in progress on node {node}, the cap is {caps.per_node}"
    return ""


def _older_or_admitted(m: PodMigration, others: Sequence[PodMigration]) -> list[PodMigration]:
    """The migrations that win over `m` for the same pod: a Pending one created later never does."""
    mine = (podinfo.parse_time(m.creation_timestamp) or 0.0, m.name)
    out = []
    for o in others:
        if o.status.phase == Phase.PENDING and (podinfo.parse_time(o.creation_timestamp) or 0.0, o.name) > mine:
            continue
        out.append(o)
    return out


def _refusal_reason(error: DomainError) -> tuple[str, str]:
    """(condition reason, message naming the spec field): the REST API's `target_node` reads spec.targetNode."""
    message = error.message
    if error.field and message.startswith(f"{error.field}: "):
        message = message[len(error.field) + 2 :]
    where = SPEC_FIELDS.get(error.field, error.field)
    return type(error).__name__, f"{where}: {message}" if where else message


# -- the machine ---------------------------------------------------------------------------------


class Machine:
    def __init__(self, cfg: MachineConfig) -> None:
        self.cfg = cfg

    def step(self, world: World) -> Plan:
        m = world.migration
        st = copy.deepcopy(m.status)
        if st.phase not in Phase.ALL:
            st.phase = Phase.PENDING
        if st.phase in Phase.ACTIVE:
            st.observed_generation = m.generation
        if st.phase in Phase.FINISHED:
            return self._finished(world, st)
        if m.deletion_timestamp:
            return self._deleting(world, st)
        cancel = cancel_requested(m)
        if cancel and not self._evicting_now(world):
            return self._finish(world, st, Phase.CANCELLED, "Cancelled", f"{cancel}; nothing was touched")
        if cancel and condition(st, "CancelRefused") is None:
            set_condition(
                st,
                "CancelRefused",
                "True",
                "TooLate",
                f"{cancel}, after the eviction was accepted: the move completes",
                world.now,
            )
        if st.phase == Phase.PENDING:
            return self._pending(world, st)
        if st.phase == Phase.CAPTURING:
            return self._capturing(world, st)
        if st.phase == Phase.EVICTING:
            return self._evicting(world, st)
        return self._rescheduling(world, st)

    def _evicting_now(self, world: World) -> bool:
        """Past the point of no return: the eviction was accepted or the source is already going away."""
        m = world.migration
        if eviction_accepted(m):
            return True
        if m.status.phase == Phase.EVICTING and m.status.pod_uid:
            pod = world.pod
            if pod is None or podinfo.uid(pod) != m.status.pod_uid or podinfo.meta(pod).get("deletionTimestamp"):
                return True
        return False

    # -- Pending ---------------------------------------------------------------------------------

    def _pending(self, world: World, st: PodMigrationStatus) -> Plan:
        m, now, pod = world.migration, world.now, world.pod
        refusal = preflight(
            m.spec, m.namespace, pod, world.nodes, _older_or_admitted(m, world.migrations), exclude=m.name
        )
        if refusal is not None:
            reason, message = _refusal_reason(refusal)
            return self._finish(world, st, Phase.FAILED, reason, f"{message}; nothing was touched")
        assert pod is not None
        deadline = deadline_of(m)
        if not m.spec.dry_run:
            block = _admission_block(m, world, self.cfg.caps, pod)
            if block:
                if deadline is not None and now >= deadline:
                    return self._finish(
                        world, st, Phase.FAILED, "Timeout", f"no migration slot before the deadline ({block})"
                    )
                set_condition(st, "Admitted", "False", "CapReached", block, now)
                st.message = f"waiting for a migration slot: {block}"
                return Plan(st, requeue_after=self.cfg.cap_retry_seconds)
        kind, wname, owner_uid = workload_of(pod)
        st.phase = Phase.CAPTURING
        st.pod_uid = podinfo.uid(pod)
        st.source_node = podinfo.node_of(pod)
        st.owner_kind, st.owner_name, st.owner_uid = kind, wname, owner_uid
        st.job_completion_index = podinfo.job_index(pod) if kind == "Job" else ""
        st.suggested_node = st.suggested_node or m.annotations.get(SUGGESTED_NODE_ANNOTATION, "")
        _mark(st, "accepted", now)
        set_condition(st, "Admitted", "True", "Admitted", "pre-flight passed; a migration slot is held", now)
        st.message = f"capturing {m.spec.pod_name} on {st.source_node}"
        effects: list[Effect] = [
            PatchMeta(
                labels={POD_UID_LABEL: st.pod_uid, POD_NAME_LABEL: m.spec.pod_name[:63]},
                add_finalizer=not owner_uid and not m.spec.dry_run,
            ),
            self._emit_migration(m, "Normal", "Accepted", f"migrating pod {m.spec.pod_name} from {st.source_node}"),
        ]
        return Plan(st, effects, requeue_after=0.0)

    # -- Capturing -------------------------------------------------------------------------------

    def _capturing(self, world: World, st: PodMigrationStatus) -> Plan:
        m, now, pod = world.migration, world.now, world.pod
        if pod is None or podinfo.uid(pod) != st.pod_uid:
            return self._finish(world, st, Phase.FAILED, "PodGone", "the pod went away before the eviction")
        why = unmovable_reason(pod)
        if why:
            return self._finish(world, st, Phase.FAILED, "Unmovable", f"pod {m.spec.pod_name} {why}")
        containers = podinfo.capture_containers(pod)
        if not any(c.migrate for c in containers if not c.init):
            return self._finish(
                world, st, Phase.FAILED, "NothingToMigrate", "every container of the pod has completed: nothing to move"
            )
        spec = podinfo.unpinned_spec(pod)  # a pin an earlier migration left does not bind this one
        try:
            st.requests_before = podinfo.effective_requests(spec)
            st.requests_after = podinfo.effective_requests(spec, podinfo.not_migrating(containers))
        except ValueError as exc:
            return self._finish(world, st, Phase.FAILED, "InvalidRequests", f"cannot read the pod's requests: {exc}")
        st.containers = containers
        st.pod_template = podinfo.bare_pod_template(pod) if not st.owner_uid else {}
        effects: list[Effect] = []

        # Checkpoint: the claim must exist, be bound, be mounted by the pod and be reachable from the target.
        labels = podinfo.meta(pod).get("labels") or {}
        opted_in = str(labels.get(CHECKPOINT_LABEL, "")).lower() == "true"
        volume_selector: Json | None = None
        if opted_in and m.spec.preserve_pv:
            claim = checkpoint_claim_name(m.spec.pod_name, st.owner_kind, st.owner_name)
            info = world.claim
            if claim not in podinfo.mounted_claims(pod):
                return self._finish(
                    world,
                    st,
                    Phase.FAILED,
                    "CheckpointNotMounted",
                    f"the pod opted in to checkpointing ({CHECKPOINT_LABEL}) but does not mount its claim {claim} "
                    "(the webhook attaches it when the pod is created): its state could not follow it",
                )
            if info is None or not info.found:
                return self._finish(
                    world, st, Phase.FAILED, "CheckpointClaimMissing", f"checkpoint claim {claim} does not exist"
                )
            if info.phase != "Bound":
                return self._finish(
                    world,
                    st,
                    Phase.FAILED,
                    "CheckpointClaimUnbound",
                    f"checkpoint claim {claim} is {info.phase or 'not bound'}, not Bound",
                )
            st.checkpoint_pvc = claim
            volume_selector = info.volume_selector
            st.checkpoint_step = str(podinfo.annotations_of(pod).get(CHECKPOINT_STEP_ANNOTATION, ""))

        # Jobs: an eviction must not count against backoffLimit.
        if st.owner_kind == "Job" and world.job is not None:
            missing = job_disruption_rule_missing(world.job)
            if missing:
                text = (
                    f"Job {st.owner_name}: {missing}; this eviction will count against its backoffLimit. Add "
                    "podFailurePolicy.rules: [{action: Ignore, onPodConditions: [{type: DisruptionTarget}]}] "
                    "with restartPolicy Never"
                )
                set_condition(st, "JobDisruptionRule", "False", "EvictionCountsAsFailure", text, now)
                effects.append(self._emit_migration(m, "Warning", "JobCountsEviction", text))
                effects.append(self._emit_pod(m, pod, "Warning", "JobCountsEviction", text))
            else:
                set_condition(
                    st, "JobDisruptionRule", "True", "Ignored", "the Job ignores disruptions (DisruptionTarget)", now
                )

        # Target: the requested one must fit; otherwise the suggestion if it fits, else the roomiest node.
        target, why_not = self._target(world, st, spec, volume_selector)
        if not target:
            return self._finish(world, st, Phase.FAILED, "NoTarget", why_not)
        if not m.spec.target_node:
            st.suggested_node = target
        _mark(st, "captured", now)
        if st.checkpoint_pvc:
            _mark(st, "checkpointReady", now)
        done = [c.name for c in containers if not c.migrate]
        capture_text = (
            f"captured {len(containers)} container(s)"
            + (f"; completed, not re-run: {', '.join(done)}" if done else "")
            + (f"; checkpoint claim {st.checkpoint_pvc}" if st.checkpoint_pvc else "; no checkpoint claim")
        )
        set_condition(st, "Captured", "True", "Captured", capture_text, now)
        if m.spec.dry_run:
            return self._finish(
                world,
                st,
                Phase.SUCCEEDED,
                "DryRun",
                f"dry run: would evict {m.spec.pod_name} from {st.source_node} towards {target}; {capture_text}",
                effects,
            )
        st.phase = Phase.EVICTING
        st.message = f"{capture_text}; capacity reserved on {target}; evicting"
        effects.append(self._emit_migration(m, "Normal", "Captured", f"{capture_text}; target {target}"))
        return Plan(st, effects, requeue_after=0.0)

    def _target(
        self, world: World, st: PodMigrationStatus, spec: Json, volume_selector: Json | None
    ) -> tuple[str, str]:
        m = world.migration
        demand = st.requests_after or st.requests_before
        assert demand is not None
        held = placement.reservations_by_node(world.migrations, exclude=f"{m.namespace}/{m.name}")
        views = {
            name: replace(
                v,
                reserved_cpu=held[name].cpu_cores if name in held else 0.0,
                reserved_memory=float(held[name].memory_bytes) if name in held else 0.0,
            )
            for name, v in world.usage.items()
        }

        def fits(node: str) -> str:
            view = views.get(node)
            if view is None:
                return f"node {node} does not exist"
            if volume_selector is not None and not placement.selector_matches(volume_selector, node, view.labels):
                return f"checkpoint claim {st.checkpoint_pvc}'s volume cannot be mounted on node {node}"
            return placement.refusal(spec, demand, view)

        if m.spec.target_node:
            why = fits(m.spec.target_node)
            return ("", f"target {why}") if why else (m.spec.target_node, "")
        if st.suggested_node and st.suggested_node != st.source_node and not fits(st.suggested_node):
            return st.suggested_node, ""
        reachable = [
            v
            for v in views.values()
            if volume_selector is None or placement.selector_matches(volume_selector, v.name, v.labels)
        ]
        if len(reachable) < len(views) and not [v for v in reachable if v.name != st.source_node]:
            return "", f"checkpoint claim {st.checkpoint_pvc}'s volume is reachable from the source node only"
        return placement.choose_target(spec, demand, reachable, st.source_node)

    # -- Evicting --------------------------------------------------------------------------------

    def _evicting(self, world: World, st: PodMigrationStatus) -> Plan:
        m, now, pod = world.migration, world.now, world.pod
        gone = pod is None or podinfo.uid(pod) != st.pod_uid
        if gone or (pod is not None and podinfo.meta(pod).get("deletionTimestamp")):
            # Accepted (by our request, possibly before a restart) or the pod went away on its own.
            _mark(st, "evicted", now)
            if gone:
                _mark(st, "sourceTerminated", now)
            st.phase = Phase.RESCHEDULING
            set_condition(st, "Evicted", "True", "Evicted", "the source pod is going away", now)
            st.message = "source evicted; waiting for the replacement"
            return Plan(st, requeue_after=0.0)
        assert pod is not None
        deadline = deadline_of(m)
        if deadline is not None and now >= deadline:
            last = condition(st, "Evicted")
            detail = f": {last.message}" if last and last.message else ""
            return self._finish(
                world,
                st,
                Phase.FAILED,
                "EvictionTimeout",
                f"the eviction was refused until the deadline after {st.eviction_attempts} attempt(s){detail}; "
                "the pod was left where it was",
            )
        captured = step_time(st, "captured")
        if st.eviction_attempts == 0 and captured is not None and now < captured + self.cfg.eviction.settle_seconds:
            # Let the webhook and the extender see the Evicting phase and the reservation first.
            return Plan(st, requeue_after=captured + self.cfg.eviction.settle_seconds - now)
        last_try = podinfo.parse_time(st.last_eviction_attempt)
        if last_try is not None:
            wait = last_try + eviction_backoff(self.cfg.eviction, st.eviction_attempts) - now
            if wait > 0:
                return Plan(st, requeue_after=wait if deadline is None else min(wait, max(deadline - now, 0.0)))
        st.eviction_attempts += 1
        st.last_eviction_attempt = podinfo.rfc3339(now)
        _mark(st, "evictionRequested", now)
        return Plan(st, [Evict(m.namespace, m.spec.pod_name, st.pod_uid)])

    # -- Rescheduling ----------------------------------------------------------------------------

    def _replacement(self, world: World, st: PodMigrationStatus) -> Json | None:
        m = world.migration
        not_before = step_time(st, "evictionRequested") or step_time(st, "evicted")
        pool = list(world.candidates)
        if world.pod is not None and all(podinfo.uid(world.pod) != podinfo.uid(p) for p in pool):
            pool.append(world.pod)
        found = [p for p in pool if podinfo.is_replacement(m, p, not_before)]
        if not found:
            return None
        recorded = [p for p in found if podinfo.name(p) == st.replacement_pod]
        if recorded:
            return recorded[0]
        return min(found, key=lambda p: (podinfo.created_at(p) or 0.0, podinfo.name(p)))

    def _rescheduling(self, world: World, st: PodMigrationStatus) -> Plan:
        m, now, pod = world.migration, world.now, world.pod
        effects: list[Effect] = []
        source_present = pod is not None and podinfo.uid(pod) == st.pod_uid
        if not source_present:
            _mark(st, "sourceTerminated", now)
        replacement = self._replacement(world, st)
        if replacement is None and not source_present and st.pod_template and not st.owner_uid:
            # A bare pod has no controller: the orchestrator re-creates it, even past the deadline, so a
            # failed migration still leaves the pod as it was (elsewhere or back on its node).
            manifest = podinfo.replacement_manifest(st.pod_template, m.namespace, m.name)
            st.message = "source terminated; re-creating the bare pod from its stored spec"
            return Plan(st, [CreatePod(manifest)], requeue_after=POLL_SECONDS)
        deadline = deadline_of(m)
        late = deadline is not None and now >= deadline
        if replacement is None:
            if late:
                waiting = "the source pod to terminate" if source_present else "a replacement pod"
                return self._finish(
                    world, st, Phase.FAILED, "Timeout", f"still waiting for {waiting} at the deadline", effects
                )
            st.message = (
                "waiting for the source pod to terminate (a Job with a pod failure policy replaces it only then)"
                if source_present
                else "waiting for the replacement pod"
            )
            return Plan(st, effects, requeue_after=self._until(deadline, now))

        r_name = podinfo.name(replacement)
        if st.replacement_pod != r_name:
            st.replacement_pod = r_name
            effects.append(self._emit_migration(m, "Normal", "ReplacementCreated", f"replacement pod {r_name}"))
        _mark(st, "replacementCreated", podinfo.created_at(replacement) or now)
        self._check_stripped(world, st, replacement, effects)
        node = podinfo.node_of(replacement)
        if node:
            _mark(st, "scheduled", podinfo.scheduled_time(replacement) or now)
            st.replacement_node = node
            with contextlib.suppress(ValueError):  # keeps the planned requests; the API server validated these
                st.requests_after = podinfo.effective_requests(podinfo.spec(replacement))
            if m.spec.target_node and node != m.spec.target_node:
                return self._finish(
                    world,
                    st,
                    Phase.FAILED,
                    "TargetNotHonoured",
                    f"the replacement {r_name} was placed on {node}, not on the requested target {m.spec.target_node}",
                    effects,
                )
            if node == st.source_node:
                return self._finish(
                    world,
                    st,
                    Phase.FAILED,
                    "ReturnedToSource",
                    f"the scheduler placed the replacement {r_name} back on the source node {node}",
                    effects,
                )
        running = podinfo.running_time(replacement)
        if running is None or source_present:
            if late:
                why = podinfo.pending_reason(replacement) if running is None else "the source pod still terminating"
                text = f"replacement {r_name} not running at the deadline: {why}"
                return self._finish(world, st, Phase.FAILED, "Timeout", text, effects)
            st.message = (
                f"replacement {r_name} running; waiting for the source pod to terminate"
                if running is not None
                else f"replacement {r_name} {'scheduled on ' + node if node else 'pending'}: "
                + podinfo.pending_reason(replacement)
            )
            return Plan(st, effects, requeue_after=self._until(deadline, now))
        _mark(st, "running", running)
        return self._judge_resume(world, st, replacement, running, effects)

    def _judge_resume(
        self, world: World, st: PodMigrationStatus, replacement: Json, running: float, effects: list[Effect]
    ) -> Plan:
        """Success means resumed: a replacement that started from scratch while a checkpoint existed failed."""
        m, now = world.migration, world.now
        r_name = podinfo.name(replacement)
        if st.checkpoint_pvc and st.checkpoint_pvc not in podinfo.mounted_claims(replacement):
            return self._finish(
                world,
                st,
                Phase.FAILED,
                "CheckpointNotMounted",
                f"the replacement {r_name} does not mount checkpoint claim {st.checkpoint_pvc}: its state is lost",
                effects,
            )
        where = f"{r_name} running on {st.replacement_node}"
        if not st.checkpoint_pvc:
            set_condition(st, "Resumed", "Unknown", "NoCheckpoint", "the pod does not checkpoint", now)
            return self._finish(world, st, Phase.SUCCEEDED, "Migrated", f"{where} (no checkpoint to resume)", effects)
        reported = str(podinfo.annotations_of(replacement).get(RESUMED_FROM_ANNOTATION, "")).strip()
        if reported:
            st.resumed_from = reported
            scratch = reported.startswith("-")
            if scratch and st.checkpoint_step and not st.checkpoint_step.startswith("-"):
                set_condition(st, "Resumed", "False", "StartedFromScratch", f"resumed from {reported}", now)
                return self._finish(
                    world,
                    st,
                    Phase.FAILED,
                    "StartedFromScratch",
                    f"{where} started from scratch although the source had checkpointed step {st.checkpoint_step}: "
                    "its state was lost",
                    effects,
                )
            text = "started from scratch (no checkpoint yet)" if scratch else f"resumed from step {reported}"
            set_condition(st, "Resumed", "True" if not scratch else "False", "Reported", text, now)
            return self._finish(world, st, Phase.SUCCEEDED, "Migrated", f"{where}; {text}", effects)
        deadline = deadline_of(m)
        if st.checkpoint_step:
            # The workload reports its checkpoints, so it reports its resume too: wait for it.
            if deadline is not None and now >= deadline:
                return self._finish(
                    world,
                    st,
                    Phase.FAILED,
                    "ResumeNotReported",
                    f"{where} but never reported where it resumed from ({RESUMED_FROM_ANNOTATION}) although the "
                    f"source had checkpointed step {st.checkpoint_step}",
                    effects,
                )
            st.message = f"{where}; waiting for it to report where it resumed from"
            return Plan(st, effects, requeue_after=self._until(deadline, now))
        grace_end = running + self.cfg.resume_grace_seconds
        if now < grace_end and (deadline is None or now < deadline):
            st.message = f"{where}; waiting up to {self.cfg.resume_grace_seconds:g}s for a resume report"
            return Plan(st, effects, requeue_after=min(grace_end - now, self._until(deadline, now)))
        set_condition(st, "Resumed", "Unknown", "NotReported", "the workload did not report where it resumed from", now)
        return self._finish(world, st, Phase.SUCCEEDED, "Migrated", f"{where}; resume point not reported", effects)

    def _check_stripped(self, world: World, st: PodMigrationStatus, replacement: Json, effects: list[Effect]) -> None:
        done = {c.name for c in st.containers if not c.migrate}
        if not done or condition(st, "CompletedContainersStripped") is not None:
            return
        spec = podinfo.spec(replacement)
        present = {str(c.get("name")) for c in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]}
        rerun = sorted(done & present)
        if rerun:
            text = f"the replacement will re-run completed container(s) {', '.join(rerun)} (is the webhook installed?)"
            set_condition(st, "CompletedContainersStripped", "False", "CompletedContainersPresent", text, world.now)
            effects.append(self._emit_migration(world.migration, "Warning", "CompletedContainersRerun", text))
        else:
            set_condition(
                st,
                "CompletedContainersStripped",
                "True",
                "Stripped",
                f"completed container(s) {', '.join(sorted(done))} are not re-run",
                world.now,
            )

    @staticmethod
    def _until(deadline: float | None, now: float) -> float:
        return POLL_SECONDS if deadline is None else max(0.0, min(POLL_SECONDS * 5, deadline - now))

    # -- finishing -------------------------------------------------------------------------------

    def _finish(
        self,
        world: World,
        st: PodMigrationStatus,
        phase: str,
        reason: str,
        message: str,
        effects: list[Effect] | None = None,
    ) -> Plan:
        m, now = world.migration, world.now
        effects = list(effects or [])
        st.phase = phase
        st.message = message
        _mark(st, "finished", now)
        start = started_at(m) or now
        st.duration = _fmt_seconds(max(0.0, now - start))
        ctype = {Phase.SUCCEEDED: "Complete", Phase.FAILED: "Failed", Phase.CANCELLED: "Cancelled"}[phase]
        set_condition(st, ctype, "True", reason, message, now)
        kind = "Normal" if phase == Phase.SUCCEEDED else "Warning"
        verb = {Phase.SUCCEEDED: "Migrated", Phase.FAILED: "MigrationFailed", Phase.CANCELLED: "MigrationCancelled"}
        effects.append(self._emit_migration(m, kind, verb[phase], message))
        # On the replacement once there is one (the pod the user now looks at), else on the source.
        pool = [*world.candidates, *([world.pod] if world.pod is not None else [])]
        subject = next((p for p in pool if st.replacement_pod and podinfo.name(p) == st.replacement_pod), world.pod)
        if subject is not None:
            effects.append(self._emit_pod(m, subject, kind, verb[phase], f"PodMigration {m.name}: {message}"))
        effects.append(PatchMeta(remove_finalizer=True))
        return Plan(st, effects, requeue_after=0.0)

    def _finished(self, world: World, st: PodMigrationStatus) -> Plan:
        """Report to APOLLO until it has the result, drop the finalizer, and delete after the TTL."""
        m, now = world.migration, world.now
        effects: list[Effect] = []
        requeue: float | None = None
        if m.spec.request_id and self.cfg.reports:
            reported = condition(st, "Reported")
            if reported is None or reported.status != "True":
                retry_at = (podinfo.parse_time(reported.last_transition_time) or 0.0) if reported else 0.0
                if reported is None or now >= retry_at + REPORT_RETRY_SECONDS:
                    effects.append(self._report(m, st, now))
                    requeue = REPORT_RETRY_SECONDS
                else:
                    requeue = retry_at + REPORT_RETRY_SECONDS - now
        if m.deletion_timestamp:
            effects.append(PatchMeta(remove_finalizer=True))
            return Plan(st, effects, requeue_after=requeue)
        finished = step_time(st, "finished") or now
        expires = finished + self.cfg.ttl_seconds_after_finished
        if now >= expires:
            # A report still owed is tried once more first; the object goes either way (APOLLO writes an
            # unanswered policy off at its own deadline).
            effects.append(Delete())
            return Plan(st, effects)
        until_ttl = max(0.0, expires - now)
        return Plan(st, effects, requeue_after=until_ttl if requeue is None else min(requeue, until_ttl))

    def _deleting(self, world: World, st: PodMigrationStatus) -> Plan:
        """Deleted while active: a bare pod already evicted is re-created first, then the object may go."""
        m = world.migration
        source_gone = world.pod is None or podinfo.uid(world.pod) != st.pod_uid
        bare = st.pod_template and not st.owner_uid
        if bare and eviction_accepted(m) and source_gone and self._replacement(world, st) is None:
            manifest = podinfo.replacement_manifest(st.pod_template, m.namespace, m.name)
            return Plan(st, [CreatePod(manifest)], requeue_after=POLL_SECONDS)
        return Plan(st, [PatchMeta(remove_finalizer=True)])

    def _report(self, m: PodMigration, st: PodMigrationStatus, now: float) -> Report:
        start = started_at(m) or now
        finished = step_time(st, "finished") or now
        metrics: dict[str, str] = {"phase": st.phase, "migration": m.name}
        if st.requests_before is not None:
            metrics["cpu_request_cores_before"] = f"{st.requests_before.cpu_cores:g}"
            metrics["memory_request_bytes_before"] = str(st.requests_before.memory_bytes)
        if st.requests_after is not None and st.phase == Phase.SUCCEEDED:
            metrics["cpu_request_cores_after"] = f"{st.requests_after.cpu_cores:g}"
            metrics["memory_request_bytes_after"] = str(st.requests_after.memory_bytes)
        if st.requests_before is not None and st.requests_after is not None and st.phase == Phase.SUCCEEDED:
            # Freed on the source node: everything it held there, since the pod now runs elsewhere.
            metrics["cpu_cores_freed_on_source"] = f"{st.requests_before.cpu_cores:g}"
            metrics["memory_bytes_freed_on_source"] = str(st.requests_before.memory_bytes)
            metrics["cpu_cores_not_rerun"] = f"{st.requests_before.cpu_cores - st.requests_after.cpu_cores:g}"
        if st.resumed_from:
            metrics["resumed_from"] = st.resumed_from
        if m.spec.dry_run:
            metrics["dry_run"] = "true"
        for name in ("evictionRequested", "sourceTerminated", "replacementCreated", "scheduled", "running"):
            at = step_time(st, name)
            if at is not None:
                metrics[f"step_{name}_ms"] = str(int(max(0.0, at - start) * 1000))
        failed = next((c for c in st.conditions if c.type in ("Failed", "Cancelled") and c.status == "True"), None)
        return Report(
            request_id=m.spec.request_id,
            success=st.phase == Phase.SUCCEEDED,
            reason="" if st.phase == Phase.SUCCEEDED else f"{failed.reason if failed else st.phase}: {st.message}",
            duration_ms=int(max(0.0, finished - start) * 1000),
            metrics=metrics,
            pod=m.spec.pod_name,
            namespace=m.namespace,
            source_node=st.source_node,
            target_node=st.replacement_node or m.spec.target_node or st.suggested_node,
            migration=m.name,
        )

    # -- events ----------------------------------------------------------------------------------

    @staticmethod
    def _emit_migration(m: PodMigration, kind: str, reason: str, message: str) -> Emit:
        return Emit("PodMigration", m.name, m.uid, kind, reason, message)

    @staticmethod
    def _emit_pod(m: PodMigration, pod: Json, kind: str, reason: str, message: str) -> Emit:
        return Emit("Pod", podinfo.name(pod), podinfo.uid(pod), kind, reason, message)

    # -- outcomes --------------------------------------------------------------------------------

    def fold(self, world: World, plan: Plan, outcomes: Sequence[tuple[Effect, Outcome]]) -> Plan:
        """Fold what the effects did into the status to write; the returned plan's effects are the events
        those outcomes call for (still to emit), its requeue the next look."""
        m, now, st = world.migration, world.now, plan.status
        requeue = plan.requeue_after
        extra: list[Effect] = []
        for effect, outcome in outcomes:
            if isinstance(effect, Evict):
                requeue = self._after_eviction(world, st, outcome, extra)
            elif isinstance(effect, CreatePod):
                if outcome.ok or outcome.code == 409:
                    st.message = f"bare pod {m.spec.pod_name} re-created from its stored spec"
                    _mark(st, "replacementCreated", now)
                    requeue = 0.0 if outcome.ok else POLL_SECONDS
                else:
                    st.message = f"re-creating bare pod {m.spec.pod_name} failed: {outcome.message}; retrying"
                    requeue = POLL_SECONDS
            elif isinstance(effect, Report):
                if outcome.ok:
                    text = f"ExecutionResult sent to APOLLO: {outcome.message}"
                    set_condition(st, "Reported", "True", "Reported", text, now)
                else:
                    set_condition(st, "Reported", "False", "ReportFailed", outcome.message, now)
                    requeue = REPORT_RETRY_SECONDS
        return Plan(st, extra, requeue)

    def _after_eviction(self, world: World, st: PodMigrationStatus, outcome: Outcome, extra: list[Effect]) -> float:
        m, now = world.migration, world.now
        if outcome.ok or outcome.code == 404:
            _mark(st, "evicted", now)
            if outcome.code == 404:
                _mark(st, "sourceTerminated", now)
            st.phase = Phase.RESCHEDULING
            set_condition(st, "Evicted", "True", "Evicted", f"evicted after {st.eviction_attempts} attempt(s)", now)
            st.message = "evicted; waiting for the replacement"
            text = f"evicted from {st.source_node} by PodMigration {m.name}"
            extra.append(self._emit_migration(m, "Normal", "Evicted", f"pod {m.spec.pod_name} {text}"))
            if world.pod is not None:
                extra.append(self._emit_pod(m, world.pod, "Normal", "Migrating", text))
            return 0.0
        wait = eviction_backoff(self.cfg.eviction, st.eviction_attempts)
        reason = "DisruptionBudget" if outcome.code == 429 else "EvictionFailed"
        text = f"attempt {st.eviction_attempts} refused ({outcome.code}): {outcome.message}; retrying in {wait:g}s"
        previous = condition(st, "Evicted")
        set_condition(st, "Evicted", "False", reason, text, now)
        st.message = f"eviction {'blocked by a PodDisruptionBudget' if outcome.code == 429 else 'failed'}: {text}"
        if previous is None or previous.reason != reason:
            extra.append(self._emit_migration(m, "Warning", "EvictionRefused", text))
        deadline = deadline_of(m)
        return wait if deadline is None else max(0.0, min(wait, deadline - now))
