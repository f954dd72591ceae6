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

This module holds the dispatcher (:class:`Machine`), the Evicting phase (short, and the one whose
outcome :meth:`Machine.fold` interprets) and deletion while active. The other phases live in their own
modules (`admission`, `capture`, `reschedule`, `finishing`), the vocabulary (World, Plan, effects) in
`effects`, and the status and timing helpers in `status`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from apollo_api.podmigration import Phase, PodMigrationStatus
from orchestrator import podinfo
from orchestrator.admission import pending
from orchestrator.capture import capturing
from orchestrator.effects import (
    CreatePod,
    Effect,
    Evict,
    MachineConfig,
    Outcome,
    PatchMeta,
    Plan,
    Report,
    World,
    emit_migration,
    emit_pod,
)
from orchestrator.finishing import finish, finished
from orchestrator.reschedule import find_replacement, rescheduling
from orchestrator.status import (
    POLL_SECONDS,
    REPORT_RETRY_SECONDS,
    cancel_requested,
    condition,
    deadline_of,
    eviction_accepted,
    eviction_backoff,
    mark,
    set_condition,
    step_time,
)


class Machine:
    """The pure state machine: :meth:`step` plans the next move, :meth:`fold` takes in what the effects did."""

    def __init__(self, cfg: MachineConfig) -> None:
        self.cfg = cfg

    def step(self, world: World) -> Plan:
        """The next status and effects for what `world` shows; the phase decides which step runs."""
        m = world.migration
        st = copy.deepcopy(m.status)
        if st.phase not in Phase.ALL:
            st.phase = Phase.PENDING
        if st.phase in Phase.ACTIVE:
            st.observed_generation = m.generation
        if st.phase in Phase.FINISHED:
            return finished(self.cfg, world, st)
        if m.deletion_timestamp:
            return self._deleting(world, st)
        cancel = cancel_requested(m)
        if cancel and not self._evicting_now(world):
            return finish(world, st, Phase.CANCELLED, "Cancelled", f"{cancel}; nothing was touched")
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
            return pending(self.cfg, world, st)
        if st.phase == Phase.CAPTURING:
            return capturing(world, st)
        if st.phase == Phase.EVICTING:
            return self._evicting(world, st)
        return rescheduling(self.cfg, world, st)

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

    # -- Evicting --------------------------------------------------------------------------------

    def _evicting(self, world: World, st: PodMigrationStatus) -> Plan:
        """Ask for the eviction, after the settle time and between backoffs, until it is accepted or too late."""
        m, now, pod = world.migration, world.now, world.pod
        gone = pod is None or podinfo.uid(pod) != st.pod_uid
        if gone or (pod is not None and podinfo.meta(pod).get("deletionTimestamp")):
            # Accepted (by our request, possibly before a restart) or the pod went away on its own.
            mark(st, "evicted", now)
            if gone:
                mark(st, "sourceTerminated", now)
            st.phase = Phase.RESCHEDULING
            set_condition(st, "Evicted", "True", "Evicted", "the source pod is going away", now)
            st.message = "source evicted; waiting for the replacement"
            return Plan(st, requeue_after=0.0)
        assert pod is not None
        deadline = deadline_of(m)
        if deadline is not None and now >= deadline:
            last = condition(st, "Evicted")
            detail = f": {last.message}" if last and last.message else ""
            return finish(
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
        mark(st, "evictionRequested", now)
        return Plan(st, [Evict(m.namespace, m.spec.pod_name, st.pod_uid)])

    def _deleting(self, world: World, st: PodMigrationStatus) -> Plan:
        """Deleted while active: a bare pod already evicted is re-created first, then the object may go."""
        m = world.migration
        source_gone = world.pod is None or podinfo.uid(world.pod) != st.pod_uid
        bare = st.pod_template and not st.owner_uid
        if bare and eviction_accepted(m) and source_gone and find_replacement(world, st) is None:
            manifest = podinfo.replacement_manifest(st.pod_template, m.namespace, m.name)
            return Plan(st, [CreatePod(manifest)], requeue_after=POLL_SECONDS)
        return Plan(st, [PatchMeta(remove_finalizer=True)])

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
                    mark(st, "replacementCreated", now)
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
            mark(st, "evicted", now)
            if outcome.code == 404:
                mark(st, "sourceTerminated", now)
            st.phase = Phase.RESCHEDULING
            set_condition(st, "Evicted", "True", "Evicted", f"evicted after {st.eviction_attempts} attempt(s)", now)
            st.message = "evicted; waiting for the replacement"
            text = f"evicted from {st.source_node} by PodMigration {m.name}"
            extra.append(emit_migration(m, "Normal", "Evicted", f"pod {m.spec.pod_name} {text}"))
            if world.pod is not None:
                extra.append(emit_pod(world.pod, "Normal", "Migrating", text))
            return 0.0
        wait = eviction_backoff(self.cfg.eviction, st.eviction_attempts)
        reason = "DisruptionBudget" if outcome.code == 429 else "EvictionFailed"
        text = f"attempt {st.eviction_attempts} refused ({outcome.code}): {outcome.message}; retrying in {wait:g}s"
        previous = condition(st, "Evicted")
        set_condition(st, "Evicted", "False", reason, text, now)
        st.message = f"eviction {'blocked by a PodDisruptionBudget' if outcome.code == 429 else 'failed'}: {text}"
        if previous is None or previous.reason != reason:
            extra.append(emit_migration(m, "Warning", "EvictionRefused", text))
        deadline = deadline_of(m)
        return wait if deadline is None else max(0.0, min(wait, deadline - now))
