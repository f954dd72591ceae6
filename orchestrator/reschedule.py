"""The Rescheduling phase: from the accepted eviction to a replacement that resumed elsewhere.

After the eviction the source goes away (a Job's replacement appears only after it has), a
replacement appears (a bare pod has no controller, so the orchestrator re-creates it from the stored
spec, even past the deadline, so that a failed migration still leaves the pod running), is scheduled
and runs. Success means resumed, not merely Running: a replacement that started from scratch while the
source had a checkpoint lost its state, and the migration fails.
"""

from __future__ import annotations

import contextlib

from apollo_api.podmigration import RESUMED_FROM_ANNOTATION, Phase, PodMigrationStatus
from orchestrator import podinfo
from orchestrator.effects import CreatePod, Effect, Json, MachineConfig, Plan, World, emit_migration
from orchestrator.finishing import finish
from orchestrator.status import POLL_SECONDS, condition, deadline_of, mark, set_condition, step_time, until


def find_replacement(world: World, st: PodMigrationStatus) -> Json | None:
    """The pod that replaces the source: the one already recorded, else the earliest created since the eviction."""
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


def rescheduling(cfg: MachineConfig, world: World, st: PodMigrationStatus) -> Plan:
    """Wait for the source to go and the replacement to run where it should, then judge its resume."""
    m, now, pod = world.migration, world.now, world.pod
    effects: list[Effect] = []
    source_present = pod is not None and podinfo.uid(pod) == st.pod_uid
    if not source_present:
        mark(st, "sourceTerminated", now)
    replacement = find_replacement(world, st)
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
            return finish(world, st, Phase.FAILED, "Timeout", f"still waiting for {waiting} at the deadline", effects)
        st.message = (
            "waiting for the source pod to terminate (a Job with a pod failure policy replaces it only then)"
            if source_present
            else "waiting for the replacement pod"
        )
        return Plan(st, effects, requeue_after=until(deadline, now))

    r_name = podinfo.name(replacement)
    if st.replacement_pod != r_name:
        st.replacement_pod = r_name
        effects.append(emit_migration(m, "Normal", "ReplacementCreated", f"replacement pod {r_name}"))
    mark(st, "replacementCreated", podinfo.created_at(replacement) or now)
    check_stripped(world, st, replacement, effects)
    node = podinfo.node_of(replacement)
    if node:
        mark(st, "scheduled", podinfo.scheduled_time(replacement) or now)
        st.replacement_node = node
        with contextlib.suppress(ValueError):  # keeps the planned requests; the API server validated these
            st.requests_after = podinfo.effective_requests(podinfo.spec(replacement))
        if m.spec.target_node and node != m.spec.target_node:
            return finish(
                world,
                st,
                Phase.FAILED,
                "TargetNotHonoured",
                f"the replacement {r_name} was placed on {node}, not on the requested target {m.spec.target_node}",
                effects,
            )
        if node == st.source_node:
            return finish(
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
            return finish(world, st, Phase.FAILED, "Timeout", text, effects)
        st.message = (
            f"replacement {r_name} running; waiting for the source pod to terminate"
            if running is not None
            else f"replacement {r_name} {'scheduled on ' + node if node else 'pending'}: "
            + podinfo.pending_reason(replacement)
        )
        return Plan(st, effects, requeue_after=until(deadline, now))
    mark(st, "running", running)
    return judge_resume(cfg, world, st, replacement, running, effects)


def judge_resume(
    cfg: MachineConfig, world: World, st: PodMigrationStatus, replacement: Json, running: float, effects: list[Effect]
) -> Plan:
    """Success means resumed: a replacement that started from scratch while a checkpoint existed failed."""
    m, now = world.migration, world.now
    r_name = podinfo.name(replacement)
    if st.checkpoint_pvc and st.checkpoint_pvc not in podinfo.mounted_claims(replacement):
        return finish(
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
        return finish(world, st, Phase.SUCCEEDED, "Migrated", f"{where} (no checkpoint to resume)", effects)
    reported = str(podinfo.annotations_of(replacement).get(RESUMED_FROM_ANNOTATION, "")).strip()
    if reported:
        st.resumed_from = reported
        scratch = reported.startswith("-")
        if scratch and st.checkpoint_step and not st.checkpoint_step.startswith("-"):
            set_condition(st, "Resumed", "False", "StartedFromScratch", f"resumed from {reported}", now)
            return finish(
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
        return finish(world, st, Phase.SUCCEEDED, "Migrated", f"{where}; {text}", effects)
    deadline = deadline_of(m)
    if st.checkpoint_step:
        # The workload reports its checkpoints, so it reports its resume too: wait for it.
        if deadline is not None and now >= deadline:
            return finish(
                world,
                st,
                Phase.FAILED,
                "ResumeNotReported",
                f"{where} but never reported where it resumed from ({RESUMED_FROM_ANNOTATION}) although the "
                f"source had checkpointed step {st.checkpoint_step}",
                effects,
            )
        st.message = f"{where}; waiting for it to report where it resumed from"
        return Plan(st, effects, requeue_after=until(deadline, now))
    grace_end = running + cfg.resume_grace_seconds
    if now < grace_end and (deadline is None or now < deadline):
        st.message = f"{where}; waiting up to {cfg.resume_grace_seconds:g}s for a resume report"
        return Plan(st, effects, requeue_after=min(grace_end - now, until(deadline, now)))
    set_condition(st, "Resumed", "Unknown", "NotReported", "the workload did not report where it resumed from", now)
    return finish(world, st, Phase.SUCCEEDED, "Migrated", f"{where}; resume point not reported", effects)


def check_stripped(world: World, st: PodMigrationStatus, replacement: Json, effects: list[Effect]) -> None:
    """Record (once) whether the completed containers were left out of the replacement, as the webhook does."""
    done = {c.name for c in st.containers if not c.migrate}
    if not done or condition(st, "CompletedContainersStripped") is not None:
        return
    spec = podinfo.spec(replacement)
    present = {str(c.get("name")) for c in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]}
    rerun = sorted(done & present)
    if rerun:
        text = f"the replacement will re-run completed container(s) {', '.join(rerun)} (is the webhook installed?)"
        set_condition(st, "CompletedContainersStripped", "False", "CompletedContainersPresent", text, world.now)
        effects.append(emit_migration(world.migration, "Warning", "CompletedContainersRerun", text))
    else:
        set_condition(
            st,
            "CompletedContainersStripped",
            "True",
            "Stripped",
            f"completed container(s) {', '.join(sorted(done))} are not re-run",
            world.now,
        )
