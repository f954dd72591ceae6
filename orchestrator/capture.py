"""The Capturing phase: what the move needs, recorded before anything is touched, and where it goes.

The phase reads the container states, the requests before and after (completed containers are not
re-run), the stored spec of a bare pod, the checkpoint claim and where its volume can be mounted, the
Job's disruption rule, and the target's capacity net of other migrations' reservations. Nothing has
been touched yet, so any refusal here fails the migration with the pod as it was. The status written
at the end of this phase is the capacity reservation the extender honours.
"""

from __future__ import annotations

from dataclasses import replace

from apollo_api.podmigration import (
    CHECKPOINT_LABEL,
    CHECKPOINT_STEP_ANNOTATION,
    Phase,
    PodMigrationStatus,
    checkpoint_claim_name,
)
from orchestrator import placement, podinfo
from orchestrator.effects import Effect, Json, Plan, World, emit_migration, emit_pod
from orchestrator.finishing import finish
from orchestrator.preflight import unmovable_reason
from orchestrator.status import mark, set_condition


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


def capturing(world: World, st: PodMigrationStatus) -> Plan:
    """Capture everything the move needs and choose the target; any refusal leaves the pod as it was."""
    m, now, pod = world.migration, world.now, world.pod
    if pod is None or podinfo.uid(pod) != st.pod_uid:
        return finish(world, st, Phase.FAILED, "PodGone", "the pod went away before the eviction")
    why = unmovable_reason(pod)
    if why:
        return finish(world, st, Phase.FAILED, "Unmovable", f"pod {m.spec.pod_name} {why}")
    containers = podinfo.capture_containers(pod)
    if not any(c.migrate for c in containers if not c.init):
        return finish(
            world, st, Phase.FAILED, "NothingToMigrate", "every container of the pod has completed: nothing to move"
        )
    spec = podinfo.unpinned_spec(pod)  # a pin an earlier migration left does not bind this one
    try:
        st.requests_before = podinfo.effective_requests(spec)
        st.requests_after = podinfo.effective_requests(spec, podinfo.not_migrating(containers))
    except ValueError as exc:
        return finish(world, st, Phase.FAILED, "InvalidRequests", f"cannot read the pod's requests: {exc}")
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
            return finish(
                world,
                st,
                Phase.FAILED,
                "CheckpointNotMounted",
                f"the pod opted in to checkpointing ({CHECKPOINT_LABEL}) but does not mount its claim {claim} "
                "(the webhook attaches it when the pod is created): its state could not follow it",
            )
        if info is None or not info.found:
            return finish(world, st, Phase.FAILED, "CheckpointClaimMissing", f"checkpoint claim {claim} does not exist")
        if info.phase != "Bound":
            return finish(
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
            effects.append(emit_migration(m, "Warning", "JobCountsEviction", text))
            effects.append(emit_pod(pod, "Warning", "JobCountsEviction", text))
        else:
            set_condition(
                st, "JobDisruptionRule", "True", "Ignored", "the Job ignores disruptions (DisruptionTarget)", now
            )

    # Target: the requested one must fit; otherwise the suggestion if it fits, else the roomiest node.
    target, why_not = choose_target(world, st, spec, volume_selector)
    if not target:
        return finish(world, st, Phase.FAILED, "NoTarget", why_not)
    if not m.spec.target_node:
        st.suggested_node = target
    mark(st, "captured", now)
    if st.checkpoint_pvc:
        mark(st, "checkpointReady", now)
    done = [c.name for c in containers if not c.migrate]
    capture_text = (
        f"captured {len(containers)} container(s)"
        + (f"; completed, not re-run: {', '.join(done)}" if done else "")
        + (f"; checkpoint claim {st.checkpoint_pvc}" if st.checkpoint_pvc else "; no checkpoint claim")
    )
    set_condition(st, "Captured", "True", "Captured", capture_text, now)
    if m.spec.dry_run:
        return finish(
            world,
            st,
            Phase.SUCCEEDED,
            "DryRun",
            f"dry run: would evict {m.spec.pod_name} from {st.source_node} towards {target}; {capture_text}",
            effects,
        )
    st.phase = Phase.EVICTING
    st.message = f"{capture_text}; capacity reserved on {target}; evicting"
    effects.append(emit_migration(m, "Normal", "Captured", f"{capture_text}; target {target}"))
    return Plan(st, effects, requeue_after=0.0)


def choose_target(world: World, st: PodMigrationStatus, spec: Json, volume_selector: Json | None) -> tuple[str, str]:
    """(target, "") or ("", why not): the requested node must fit; else the suggestion if it fits, else the roomiest."""
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
