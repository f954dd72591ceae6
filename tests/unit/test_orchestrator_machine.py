"""The migration state machine with a fake clock: every phase, every refusal, restarts and deadlines."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest

from apollo_api.podmigration import (
    CANCEL_ANNOTATION,
    CHECKPOINT_LABEL,
    CHECKPOINT_STEP_ANNOTATION,
    MIGRATION_ANNOTATION,
    POD_UID_LABEL,
    RESUMED_FROM_ANNOTATION,
    SUGGESTED_NODE_ANNOTATION,
    Phase,
    PodMigration,
)
from orchestrator import podinfo
from orchestrator.capture import job_disruption_rule_missing
from orchestrator.config import CapSettings, EvictionSettings
from orchestrator.effects import (
    ClaimInfo,
    CreatePod,
    Delete,
    Emit,
    Evict,
    MachineConfig,
    Outcome,
    PatchMeta,
    Plan,
    Report,
    World,
)
from orchestrator.machine import Machine
from orchestrator.placement import NodeView, node_view
from orchestrator.status import condition, eviction_backoff

T0 = 1_800_000_000.0
NS = "ns"


def ts(t: float) -> str:
    return podinfo.rfc3339(t)


def node(
    name: str, cpu: str = "4", memory: str = "8Gi", labels: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
        "spec": spec,
        "status": {
            "allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def pod(
    name: str = "p",
    *,
    on: str = "a",
    uid: str = "uid-p",
    owner: tuple[str, str, str] | None = None,
    containers: list[tuple[str, str]] | None = None,
    states: dict[str, Any] | None = None,
    restart: str = "Never",
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    claim: str = "",
    created: float = T0 - 100,
    phase: str = "Running",
    deleting: bool = False,
    init: list[tuple[str, str, bool]] | None = None,
) -> dict[str, Any]:
    """A pod as the API server returns it; `containers` are (name, cpu), `states` name -> running|exit code."""
    containers = containers or [("main", "1")]
    states = states or {}
    meta: dict[str, Any] = {
        "name": name,
        "namespace": NS,
        "uid": uid,
        "creationTimestamp": ts(created),
        "labels": labels or {},
        "annotations": annotations or {},
    }
    if owner:
        meta["ownerReferences"] = [{"kind": owner[0], "name": owner[1], "uid": owner[2], "controller": True}]
    if deleting:
        meta["deletionTimestamp"] = ts(T0)

    def status_of(cname: str) -> dict[str, Any]:
        state = states.get(cname, "running")
        if state == "running":
            return {"name": cname, "restartCount": 0, "state": {"running": {"startedAt": ts(created)}}}
        return {"name": cname, "restartCount": 1, "state": {"terminated": {"exitCode": state}}}

    spec: dict[str, Any] = {
        "nodeName": on,
        "restartPolicy": restart,
        "containers": [
            {"name": c, "image": "x", "resources": {"requests": {"cpu": cpu, "memory": "1Gi"}}} for c, cpu in containers
        ],
    }
    if init:
        spec["initContainers"] = [
            {
                "name": c,
                "image": "x",
                "resources": {"requests": {"cpu": cpu}},
                **({"restartPolicy": "Always"} if side else {}),
            }
            for c, cpu, side in init
        ]
    if claim:
        spec["volumes"] = [{"name": "apollo-checkpoint", "persistentVolumeClaim": {"claimName": claim}}]
    status: dict[str, Any] = {
        "phase": phase,
        "startTime": ts(created + 1),
        "containerStatuses": [status_of(c) for c, _ in containers],
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": ts(created)},
            {
                "type": "Ready",
                "status": "True" if phase == "Running" else "False",
                "lastTransitionTime": ts(created + 1),
            },
        ],
    }
    if init:
        status["initContainerStatuses"] = [
            {"name": c, "state": {"running": {}} if side else {"terminated": {"exitCode": 0}}} for c, _, side in init
        ]
    return {"metadata": meta, "spec": spec, "status": status}


def migration(
    name: str = "m1",
    *,
    pod_name: str = "p",
    status: dict[str, Any] | None = None,
    created: float = T0 - 5,
    annotations: dict[str, str] | None = None,
    deleting: bool = False,
    **spec: Any,
) -> PodMigration:
    obj = {
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": f"uid-{name}",
            "resourceVersion": "10",
            "creationTimestamp": ts(created),
            "annotations": annotations or {},
            **({"deletionTimestamp": ts(T0)} if deleting else {}),
        },
        "spec": {"podName": pod_name, "timeoutSeconds": 300, "preservePV": True, **spec},
        "status": status or {},
    }
    return PodMigration.from_json(obj)


def usage(*nodes: dict[str, Any], bound: dict[str, list[dict[str, Any]]] | None = None) -> dict[str, NodeView]:
    return {n["metadata"]["name"]: node_view(n, (bound or {}).get(n["metadata"]["name"], [])) for n in nodes}


CFG = MachineConfig(
    caps=CapSettings(total=4, per_node=2, per_namespace=2, per_workload=1),
    eviction=EvictionSettings(initial_backoff_seconds=1.0, max_backoff_seconds=8.0, multiplier=2.0),
    ttl_seconds_after_finished=600,
    resume_grace_seconds=5.0,
    cap_retry_seconds=2.0,
    reports=True,
)


def run(world: World, outcomes: Mapping[Any, Outcome] | None = None, cfg: MachineConfig = CFG) -> Plan:
    """step + fold, with the given outcome per effect type (success by default)."""
    machine = Machine(cfg)
    plan = machine.step(world)
    done = [(e, (outcomes or {}).get(type(e), Outcome(True, 201))) for e in plan.effects if not isinstance(e, Emit)]
    folded = machine.fold(world, plan, done)
    folded.effects = plan.effects + folded.effects
    return folded


def advance(m: PodMigration, plan: Plan) -> PodMigration:
    """The object after the controller wrote the plan's status."""
    return replace(m, status=copy.deepcopy(plan.status))


def reason(plan: Plan) -> str:
    done = next((c for c in plan.status.conditions if c.type in ("Complete", "Failed", "Cancelled")), None)
    return done.reason if done else ""


# -- Pending: pre-flight and admission ---------------------------------------------------------


def test_admission_records_identity_labels_and_guards_bare_pods_with_a_finalizer() -> None:
    plan = run(World(T0, migration(), pod(), nodes={}))
    st = plan.status
    assert st.phase == Phase.CAPTURING and plan.requeue_after == 0.0
    assert (st.pod_uid, st.source_node, st.owner_kind, st.owner_uid) == ("uid-p", "a", "", "")
    assert "accepted" in st.steps and condition(st, "Admitted").status == "True"  # type: ignore[union-attr]
    patch = next(e for e in plan.effects if isinstance(e, PatchMeta))
    assert patch.labels[POD_UID_LABEL] == "uid-p" and patch.add_finalizer  # bare pod: deletion must not lose it

    job_pod = pod(owner=("Job", "train", "uid-job"), annotations={"batch.kubernetes.io/job-completion-index": "3"})
    st = run(World(T0, migration(), job_pod)).status
    assert (st.owner_kind, st.owner_name, st.owner_uid, st.job_completion_index) == ("Job", "train", "uid-job", "3")
    assert not next(e for e in run(World(T0, migration(), job_pod)).effects if isinstance(e, PatchMeta)).add_finalizer


def test_a_replicaset_pod_is_recorded_as_its_deployment_with_the_replicaset_uid() -> None:
    p = pod(owner=("ReplicaSet", "web-7d9f", "uid-rs"), labels={"pod-template-hash": "7d9f"})
    st = run(World(T0, migration(), p)).status
    assert (st.owner_kind, st.owner_name, st.owner_uid) == ("Deployment", "web", "uid-rs")


@pytest.mark.parametrize(
    ("the_pod", "spec", "nodes", "kind", "text"),
    [
        (None, {}, {}, "NotFound", "does not exist"),
        (pod(), {"sourceNode": "b"}, {"b": node("b")}, "Unprocessable", "runs on node 'a', not on 'b'"),
        (pod(), {"targetNode": "a"}, {"a": node("a")}, "Unprocessable", "target must differ"),
        (pod(), {"targetNode": "ghost"}, {}, "NotFound", "node 'ghost' does not exist"),
        (pod(owner=("DaemonSet", "agent", "u")), {}, {}, "Unprocessable", "DaemonSet"),
        (pod(annotations={"kubernetes.io/config.mirror": "x"}), {}, {}, "Unprocessable", "static pod"),
        (pod(phase="Succeeded"), {}, {}, "Unprocessable", "has finished"),
        (pod(), {"timeoutSeconds": 5}, {}, "Unprocessable", "timeout must be between 10 and 3600"),
        (pod(), {"sourceNode": "a", "targetNode": "a"}, {}, "Unprocessable", "must move the pod"),
    ],
)
def test_bad_requests_fail_with_a_condition_and_touch_nothing(
    the_pod: dict[str, Any] | None, spec: dict[str, Any], nodes: dict[str, Any], kind: str, text: str
) -> None:
    plan = run(World(T0, migration(**spec), the_pod, nodes=nodes))
    assert plan.status.phase == Phase.FAILED
    assert reason(plan) == kind and text in plan.status.message and "nothing was touched" in plan.status.message
    assert not [e for e in plan.effects if isinstance(e, Evict | CreatePod)]
    assert "finished" in plan.status.steps and plan.status.duration


def test_only_one_migration_per_pod_the_older_one_wins() -> None:
    older = migration("m0", created=T0 - 50, status={"phase": Phase.EVICTING, "podUID": "uid-p"})
    plan = run(World(T0, migration("m1"), pod(), migrations=[older]))
    assert (
        plan.status.phase == Phase.FAILED and reason(plan) == "Conflict" and "already migrating" in plan.status.message
    )
    # Two Pending requests for one pod: the younger fails, the older proceeds.
    young = migration("m2", created=T0 - 1)
    assert run(World(T0, migration("m1"), pod(), migrations=[young])).status.phase == Phase.CAPTURING
    assert run(World(T0, young, pod(), migrations=[migration("m1")])).status.phase == Phase.FAILED


def _admitted(name: str, namespace: str = NS, source: str = "x", owner: str = "", target: str = "") -> PodMigration:
    m = migration(name, pod_name=f"pod-{name}", status={"phase": Phase.EVICTING, "sourceNode": source})
    m.namespace = namespace
    m.status.owner_uid = m.status.owner_name = owner
    m.status.owner_kind = "Job" if owner else ""
    m.spec.target_node = target
    return m


@pytest.mark.parametrize(
    ("others", "text"),
    [
        ([_admitted(f"o{i}", f"n{i}") for i in range(4)], "cluster-wide, the cap is 4"),
        ([_admitted("o1"), _admitted("o2"), _admitted("o3", "n3")], "in namespace ns, the cap is 2"),
        ([_admitted("o1", owner="train")], "of workload ns/Job/train"),
        ([_admitted("o1", "n1", source="a"), _admitted("o2", "n2", target="a")], "on node a, the cap is 2"),
    ],
)
def test_caps_hold_a_migration_pending_until_a_slot_frees(others: list[PodMigration], text: str) -> None:
    p = pod(owner=("Job", "train", "train"))
    plan = run(World(T0, migration(), p, migrations=others))
    assert plan.status.phase == Phase.PENDING and text in plan.status.message
    assert condition(plan.status, "Admitted").reason == "CapReached"  # type: ignore[union-attr]
    assert plan.requeue_after == CFG.cap_retry_seconds and not plan.effects
    # Dry runs touch nothing and take no slot.
    assert run(World(T0, migration(dryRun=True), p, migrations=others)).status.phase == Phase.CAPTURING
    # Past the deadline, waiting ends in a clear failure.
    late = run(World(T0 + 400, migration(), p, migrations=others))
    assert late.status.phase == Phase.FAILED and reason(late) == "Timeout" and text in late.status.message


# -- Capturing ---------------------------------------------------------------------------------


def captured(m: PodMigration, p: dict[str, Any], **world: Any) -> Plan:
    admitted = advance(m, run(World(T0, m, p, nodes=world.get("nodes") or {})))
    assert admitted.status.phase == Phase.CAPTURING, admitted.status.message
    return run(World(T0 + 1, admitted, p, **world))


def job_pod(**kw: Any) -> dict[str, Any]:
    return pod(
        owner=("Job", "train", "uid-job"),
        containers=[("loader", "1"), ("trainer", "2")],
        states={"loader": 0},
        labels={CHECKPOINT_LABEL: "true"},
        claim="train-ckpt",
        **kw,
    )


PINNED_TO_A = {"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["a"]}]}]}
JOB_OK = {
    "spec": {
        "podFailurePolicy": {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]},
        "template": {"spec": {"restartPolicy": "Never"}},
    }
}
BOUND = ClaimInfo("train-ckpt", True, "Bound")


def test_capture_records_containers_requests_checkpoint_and_reserves_the_target() -> None:
    p = job_pod(annotations={CHECKPOINT_STEP_ANNOTATION: "120"})
    plan = captured(migration(), p, usage=usage(node("a"), node("b"), node("c", cpu="2")), claim=BOUND, job=JOB_OK)
    st = plan.status
    assert st.phase == Phase.EVICTING, st.message
    assert [(c.name, c.state, c.exit_code, c.migrate) for c in st.containers] == [
        ("loader", "terminated", 0, False),
        ("trainer", "running", None, True),
    ]
    assert st.requests_before and st.requests_before.cpu_cores == 3.0
    assert st.requests_after and st.requests_after.cpu_cores == 2.0  # the completed loader is not re-run
    assert (st.checkpoint_pvc, st.checkpoint_step) == ("train-ckpt", "120")
    assert st.suggested_node == "b"  # roomiest feasible node; c has 2 cores for a 2-core pod: no room left
    assert {"captured", "checkpointReady"} <= set(st.steps) and not st.pod_template  # a Job re-creates it
    assert condition(st, "JobDisruptionRule").status == "True"  # type: ignore[union-attr]


def test_a_job_without_the_disruption_rule_is_migrated_with_a_warning() -> None:
    plan = captured(migration(), job_pod(), usage=usage(node("a"), node("b")), claim=BOUND, job={"spec": {}})
    assert plan.status.phase == Phase.EVICTING
    assert condition(plan.status, "JobDisruptionRule").status == "False"  # type: ignore[union-attr]
    warnings = [e for e in plan.effects if isinstance(e, Emit) and e.reason == "JobCountsEviction"]
    assert {e.kind for e in warnings} == {"Pod", "PodMigration"} and "backoffLimit" in warnings[0].message


def test_job_rule_detection() -> None:
    assert job_disruption_rule_missing(JOB_OK) == ""
    assert "restartPolicy" in job_disruption_rule_missing({"spec": {**JOB_OK["spec"], "template": {"spec": {}}}})
    fail_rule = {"action": "FailJob", "onPodConditions": [{"type": "DisruptionTarget"}]}
    assert "no podFailurePolicy rule" in job_disruption_rule_missing(
        {"spec": {"podFailurePolicy": {"rules": [fail_rule]}, "template": {"spec": {"restartPolicy": "Never"}}}}
    )


@pytest.mark.parametrize(
    ("the_pod", "claim", "text"),
    [
        (job_pod(), ClaimInfo("train-ckpt", False), "checkpoint claim train-ckpt does not exist"),
        (job_pod(), ClaimInfo("train-ckpt", True, "Pending"), "is Pending, not Bound"),
        ({**job_pod(), "spec": {**job_pod()["spec"], "volumes": []}}, BOUND, "does not mount its claim train-ckpt"),
        (
            job_pod(),
            ClaimInfo(
                "train-ckpt",
                True,
                "Bound",
                {"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["a"]}]}]},
            ),
            "reachable from the source node only",
        ),
        (pod(states={"main": 0}), None, "every container of the pod has completed"),
    ],
)
def test_capture_refusals_leave_the_pod_untouched(the_pod: dict[str, Any], claim: ClaimInfo | None, text: str) -> None:
    plan = captured(migration(), the_pod, usage=usage(node("a"), node("b")), claim=claim, job=JOB_OK)
    assert plan.status.phase == Phase.FAILED and text in plan.status.message
    assert not [e for e in plan.effects if isinstance(e, Evict)]


def test_target_rules_named_suggested_and_chosen() -> None:
    nodes = usage(node("a"), node("b", cpu="1"), node("c", labels={"zone": "z2"}), node("d", unschedulable=True))
    named = captured(migration(targetNode="b"), pod(), nodes={"b": node("b")}, usage=nodes)
    assert named.status.phase == Phase.EVICTING  # 1 core free, the pod requests 1
    too_small = captured(
        migration(targetNode="b"), pod(containers=[("main", "2")]), nodes={"b": node("b")}, usage=nodes
    )
    assert too_small.status.phase == Phase.FAILED and "has 1.000 CPU cores free" in too_small.status.message
    suggested = migration(annotations={SUGGESTED_NODE_ANNOTATION: "b"})
    assert captured(suggested, pod(), usage=nodes).status.suggested_node == "b"  # APOLLO's choice, still fits
    cordoned = migration(annotations={SUGGESTED_NODE_ANNOTATION: "d"})
    assert captured(cordoned, pod(), usage=nodes).status.suggested_node == "c"  # unfit suggestion: the roomiest
    selective = pod()
    selective["spec"]["nodeSelector"] = {"zone": "z9"}
    failed = captured(migration(), selective, usage=nodes)
    assert (
        failed.status.phase == Phase.FAILED and reason(failed) == "NoTarget" and "nodeSelector" in failed.status.message
    )


def test_other_migrations_reservations_count_on_the_target() -> None:
    holder = migration("other", pod_name="q", status={"phase": Phase.EVICTING, "requestsAfter": {"cpuCores": 3.5}})
    holder.spec.target_node = "b"
    plan = captured(
        migration(targetNode="b"), pod(), nodes={"b": node("b")}, usage=usage(node("b")), migrations=[holder]
    )
    assert plan.status.phase == Phase.FAILED and "reservations counted" in plan.status.message


def test_dry_run_validates_and_captures_without_evicting() -> None:
    plan = captured(migration(dryRun=True, requestId="r1"), pod(), usage=usage(node("a"), node("b")))
    assert plan.status.phase == Phase.SUCCEEDED and reason(plan) == "DryRun"
    assert "would evict p from a towards b" in plan.status.message
    assert not [e for e in plan.effects if isinstance(e, Evict)]


def test_sidecars_always_migrate_and_completed_init_containers_do_not() -> None:
    p = pod(init=[("setup", "2", False), ("proxy", "0.5", True)], restart="Always")
    containers = podinfo.capture_containers(p)
    assert [(c.name, c.init, c.sidecar, c.migrate) for c in containers] == [
        ("setup", True, False, False),
        ("proxy", True, True, True),
        ("main", False, False, True),
    ]
    # Effective requests: max(main + sidecar, largest init) = max(1.5, 2).
    assert podinfo.effective_requests(p["spec"]).cpu_cores == 2.0
    assert podinfo.effective_requests(p["spec"], frozenset({"setup"})).cpu_cores == 1.5


def test_restart_always_containers_that_exited_zero_still_migrate() -> None:
    p = pod(states={"main": 0}, restart="Always", containers=[("main", "1"), ("side", "1")])
    assert all(c.migrate for c in podinfo.capture_containers(p))


# -- Evicting ----------------------------------------------------------------------------------


def evicting(m: PodMigration | None = None, p: dict[str, Any] | None = None) -> tuple[PodMigration, dict[str, Any]]:
    p = p or job_pod()
    m = m or migration()
    plan = captured(m, p, usage=usage(node("a"), node("b")), claim=BOUND, job=JOB_OK)
    return advance(m, plan), p


def test_the_first_eviction_waits_for_the_watchers_to_see_the_migration() -> None:
    m, p = evicting()  # captured at T0+1, settle 1 s
    early = run(World(T0 + 1.4, m, p))
    assert not early.effects and early.requeue_after == pytest.approx(0.6) and early.status.phase == Phase.EVICTING


def test_eviction_accepted_moves_to_rescheduling_with_events() -> None:
    m, p = evicting()
    plan = run(World(T0 + 2, m, p))
    assert [e for e in plan.effects if isinstance(e, Evict)] == [Evict(NS, "p", "uid-p")]
    st = plan.status
    assert st.phase == Phase.RESCHEDULING and st.eviction_attempts == 1
    assert {"evictionRequested", "evicted"} <= set(st.steps)
    assert {(e.kind, e.reason) for e in plan.effects if isinstance(e, Emit)} >= {
        ("PodMigration", "Evicted"),
        ("Pod", "Migrating"),
    }


def test_a_budget_refusal_is_retried_with_backoff_until_the_deadline() -> None:
    m, p = evicting()
    refused = {Evict: Outcome(False, 429, "Cannot evict pod as it would violate the pod's disruption budget.")}
    plan = run(World(T0 + 2, m, p), refused)
    st = plan.status
    assert st.phase == Phase.EVICTING and st.eviction_attempts == 1 and plan.requeue_after == 1.0
    assert condition(st, "Evicted").reason == "DisruptionBudget"  # type: ignore[union-attr]
    assert [e.reason for e in plan.effects if isinstance(e, Emit)] == ["EvictionRefused"]
    m = advance(m, plan)
    # Within the backoff nothing is attempted (a watch event must not cause an early retry).
    early = run(World(T0 + 2.5, m, p))
    assert not early.effects and early.requeue_after == pytest.approx(0.5)
    second = run(World(T0 + 3.1, m, p), refused)
    assert second.status.eviction_attempts == 2 and second.requeue_after == 2.0
    assert not [e for e in second.effects if isinstance(e, Emit)]  # same refusal: no second event
    assert eviction_backoff(CFG.eviction, 10) == 8.0
    late = run(World(T0 + 301, advance(m, second), p))
    assert late.status.phase == Phase.FAILED and reason(late) == "EvictionTimeout"
    assert "after 2 attempt(s)" in late.status.message and "disruption budget" in late.status.message
    assert not [e for e in late.effects if isinstance(e, Evict)]


def test_a_restart_after_the_eviction_never_evicts_again() -> None:
    m, p = evicting()
    # The eviction went through, then the controller died before writing its status: on restart the
    # pod is terminating (or gone) and the machine records it instead of evicting again.
    terminating = {**p, "metadata": {**p["metadata"], "deletionTimestamp": ts(T0 + 2)}}
    plan = run(World(T0 + 5, m, terminating))
    assert plan.status.phase == Phase.RESCHEDULING and not [e for e in plan.effects if isinstance(e, Evict)]
    gone = run(World(T0 + 5, m, None))
    assert gone.status.phase == Phase.RESCHEDULING and "sourceTerminated" in gone.status.steps


def test_cancellation_is_honoured_before_the_eviction_only() -> None:
    m, p = evicting()
    cancelled = replace(m, annotations={CANCEL_ANNOTATION: ts(T0), "apollo.io/cancel-requested-by": "alice"})
    plan = run(World(T0 + 2, cancelled, p))
    assert plan.status.phase == Phase.CANCELLED and "by alice" in plan.status.message
    assert not [e for e in plan.effects if isinstance(e, Evict)]
    after = advance(m, run(World(T0 + 2, m, p)))
    late = replace(after, annotations={CANCEL_ANNOTATION: ts(T0 + 3)})
    plan = run(World(T0 + 3, late, None, candidates=[]))
    assert plan.status.phase == Phase.RESCHEDULING
    assert condition(plan.status, "CancelRefused").reason == "TooLate"  # type: ignore[union-attr]


# -- Rescheduling ------------------------------------------------------------------------------


def rescheduling(p: dict[str, Any] | None = None, m: PodMigration | None = None) -> tuple[PodMigration, dict[str, Any]]:
    m, p = evicting(m, p)
    return advance(m, run(World(T0 + 2, m, p))), p


def replacement(name: str = "p2", *, created: float = T0 + 4, on: str = "b", **kw: Any) -> dict[str, Any]:
    kw.setdefault("owner", ("Job", "train", "uid-job"))
    kw.setdefault("claim", "train-ckpt")
    kw.setdefault("containers", [("trainer", "2")])
    return pod(name, uid=f"uid-{name}", created=created, on=on, **kw)


def test_a_job_replacement_appears_only_after_the_source_terminated_and_the_timing_shows_it() -> None:
    m, p = rescheduling()
    terminating = {**p, "metadata": {**p["metadata"], "deletionTimestamp": ts(T0 + 2)}}
    waiting = run(World(T0 + 3, m, terminating, candidates=[terminating]))
    assert waiting.status.phase == Phase.RESCHEDULING and "to terminate" in waiting.status.message
    m = advance(m, waiting)
    gone = run(World(T0 + 4, m, None, candidates=[]))  # the Job controller has not replaced it yet
    assert gone.status.phase == Phase.RESCHEDULING and "waiting for the replacement" in gone.status.message
    m = advance(m, gone)
    new = replacement(created=T0 + 5, annotations={RESUMED_FROM_ANNOTATION: "118"})
    plan = run(World(T0 + 7, m, None, candidates=[new]))
    st = plan.status
    assert st.phase == Phase.SUCCEEDED, st.message
    assert (st.replacement_pod, st.replacement_node, st.resumed_from) == ("p2", "b", "118")
    steps = {k: podinfo.parse_time(v) for k, v in st.steps.items()}
    assert steps["evicted"] <= steps["sourceTerminated"] <= steps["replacementCreated"] <= steps["running"]  # type: ignore[operator]
    assert steps["sourceTerminated"] == T0 + 4 and steps["replacementCreated"] == T0 + 5  # observed times
    assert st.requests_after and st.requests_after.cpu_cores == 2.0
    assert condition(st, "CompletedContainersStripped").status == "True"  # type: ignore[union-attr]
    assert condition(st, "Resumed").status == "True"  # type: ignore[union-attr]


def test_replacements_are_matched_by_owner_index_annotation_and_time() -> None:
    m, _ = rescheduling(job_pod(annotations={"batch.kubernetes.io/job-completion-index": "2"}))
    assert m.status.job_completion_index == "2"
    idx = "batch.kubernetes.io/job-completion-index"
    sibling = replacement("p-old", created=T0 - 50, annotations={idx: "2"})  # same owner, created before
    other_index = replacement("p-1", annotations={idx: "1"})
    marked_elsewhere = replacement("p-x", annotations={idx: "2", MIGRATION_ANNOTATION: "another"})
    right = replacement("p-2b", annotations={idx: "2", RESUMED_FROM_ANNOTATION: "5"})
    plan = run(World(T0 + 6, m, None, candidates=[sibling, other_index, marked_elsewhere, right]))
    assert plan.status.replacement_pod == "p-2b" and plan.status.phase == Phase.SUCCEEDED


@pytest.mark.parametrize(
    ("annotations", "claim", "phase", "why"),
    [
        ({RESUMED_FROM_ANNOTATION: "-1"}, "train-ckpt", Phase.FAILED, "StartedFromScratch"),
        ({}, "", Phase.FAILED, "CheckpointNotMounted"),
    ],
)
def test_a_replacement_that_lost_the_state_is_a_failed_migration(
    annotations: dict[str, str], claim: str, phase: str, why: str
) -> None:
    m, _ = rescheduling(job_pod(annotations={CHECKPOINT_STEP_ANNOTATION: "120"}))
    plan = run(World(T0 + 6, m, None, candidates=[replacement(annotations=annotations, claim=claim)]))
    assert plan.status.phase == phase and reason(plan) == why, plan.status.message
    assert not [e for e in plan.effects if isinstance(e, Evict | CreatePod | Delete)]  # nothing deleted


def test_resume_reports_are_awaited_when_the_workload_reports_checkpoints() -> None:
    m, _ = rescheduling(job_pod(annotations={CHECKPOINT_STEP_ANNOTATION: "7"}))
    new = replacement()
    waiting = run(World(T0 + 6, m, None, candidates=[new]))
    assert waiting.status.phase == Phase.RESCHEDULING and "report where it resumed" in waiting.status.message
    late = run(World(T0 + 400, advance(m, waiting), None, candidates=[new]))
    assert late.status.phase == Phase.FAILED and reason(late) == "ResumeNotReported"


def test_without_a_checkpoint_report_the_grace_ends_in_success_with_resume_unknown() -> None:
    m, _ = rescheduling()
    new = replacement(created=T0 + 4)  # running since T0+5
    waiting = run(World(T0 + 6, m, None, candidates=[new]))
    assert waiting.status.phase == Phase.RESCHEDULING and waiting.requeue_after == pytest.approx(4.0)
    done = run(World(T0 + 10.5, advance(m, waiting), None, candidates=[new]))
    assert done.status.phase == Phase.SUCCEEDED
    assert condition(done.status, "Resumed").status == "Unknown"  # type: ignore[union-attr]


def test_a_pod_without_checkpointing_succeeds_once_running() -> None:
    src = pod(owner=("ReplicaSet", "web-1", "uid-rs"), restart="Always")
    m, _ = rescheduling(src)
    new = pod("web-1-b", uid="uid-w", owner=("ReplicaSet", "web-1", "uid-rs"), on="b", created=T0 + 3, restart="Always")
    plan = run(World(T0 + 4, m, None, candidates=[src, new]))
    assert plan.status.phase == Phase.SUCCEEDED and "no checkpoint" in plan.status.message


@pytest.mark.parametrize(("target", "on", "why"), [("c", "b", "TargetNotHonoured"), ("", "a", "ReturnedToSource")])
def test_a_replacement_placed_elsewhere_is_reported(target: str, on: str, why: str) -> None:
    src = pod(owner=("ReplicaSet", "web-1", "uid-rs"), restart="Always")
    m0 = migration(targetNode=target) if target else migration()
    m = advance(m0, captured(m0, src, nodes={"c": node("c")}, usage=usage(node("a"), node("b"), node("c"))))
    m = advance(m, run(World(T0 + 2, m, src)))
    assert m.status.phase == Phase.RESCHEDULING
    new = pod("web-1-b", uid="uid-w", owner=("ReplicaSet", "web-1", "uid-rs"), on=on, created=T0 + 3, restart="Always")
    plan = run(World(T0 + 4, m, None, candidates=[new]))
    assert plan.status.phase == Phase.FAILED and reason(plan) == why


def test_a_replacement_that_never_runs_times_out_with_the_scheduler_s_words() -> None:
    m, _ = rescheduling()
    pending = replacement(on="", phase="Pending")
    pending["status"]["conditions"] = [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes are available"}
    ]
    plan = run(World(T0 + 400, m, None, candidates=[pending]))
    assert plan.status.phase == Phase.FAILED and "0/3 nodes are available" in plan.status.message


def test_completed_containers_left_in_the_replacement_are_flagged() -> None:
    m, _ = rescheduling()
    rerun = replacement(containers=[("loader", "1"), ("trainer", "2")], annotations={RESUMED_FROM_ANNOTATION: "1"})
    plan = run(World(T0 + 6, m, None, candidates=[rerun]))
    assert condition(plan.status, "CompletedContainersStripped").status == "False"  # type: ignore[union-attr]
    assert any(isinstance(e, Emit) and e.reason == "CompletedContainersRerun" for e in plan.effects)


# -- bare pods ---------------------------------------------------------------------------------


def test_a_bare_pod_is_re_created_from_its_stored_spec() -> None:
    bare = pod(labels={"app": "solo"})
    m, _ = evicting(migration(), bare)
    assert m.status.pod_template["metadata"]["name"] == "p" and "nodeName" not in m.status.pod_template["spec"]
    assert "uid" not in m.status.pod_template["metadata"]
    m = advance(m, run(World(T0 + 2, m, bare)))
    plan = run(World(T0 + 3, m, None, candidates=[]))
    (create,) = [e for e in plan.effects if isinstance(e, CreatePod)]
    assert create.manifest["metadata"]["annotations"][MIGRATION_ANNOTATION] == "m1"
    assert create.manifest["metadata"]["labels"] == {"app": "solo"} and "nodeName" not in create.manifest["spec"]
    assert "replacementCreated" in plan.status.steps
    m = advance(m, plan)
    # Created already (a restart between create and status write): 409 is fine.
    again = run(World(T0 + 3, m, None, candidates=[]), {CreatePod: Outcome(False, 409, "exists")})
    assert again.status.phase == Phase.RESCHEDULING
    new = pod(uid="uid-new", on="b", created=T0 + 3, annotations={MIGRATION_ANNOTATION: "m1"})
    done = run(World(T0 + 4, m, new, candidates=[new]))
    assert done.status.phase == Phase.SUCCEEDED and done.status.replacement_pod == "p"


def test_a_deleted_bare_pod_migration_re_creates_the_pod_before_letting_go() -> None:
    bare = pod()
    m, _ = evicting(migration(), bare)
    m = advance(m, run(World(T0 + 2, m, bare)))
    deleting = replace(m, deletion_timestamp=ts(T0 + 3))
    plan = run(World(T0 + 3, deleting, None, candidates=[]))
    assert [type(e) for e in plan.effects] == [CreatePod]
    new = pod(uid="uid-new", on="b", annotations={MIGRATION_ANNOTATION: "m1"}, created=T0 + 3)
    assert [type(e) for e in run(World(T0 + 4, deleting, new, candidates=[new])).effects] == [PatchMeta]


# -- finished ----------------------------------------------------------------------------------


def finished(request_id: str = "req-1") -> PodMigration:
    m, _ = rescheduling(m=migration(requestId=request_id))
    new = replacement(annotations={RESUMED_FROM_ANNOTATION: "3"})
    return advance(m, run(World(T0 + 6, m, None, candidates=[new])))


def test_an_apollo_request_is_reported_once_with_duration_and_resources() -> None:
    m = finished()
    plan = run(World(T0 + 7, m))
    (report,) = [e for e in plan.effects if isinstance(e, Report)]
    assert report.success and report.request_id == "req-1" and report.migration == "m1"
    assert (report.source_node, report.target_node) == ("a", "b") and report.duration_ms == 11_000
    assert report.metrics["cpu_cores_freed_on_source"] == "3" and report.metrics["resumed_from"] == "3"
    assert report.metrics["cpu_cores_not_rerun"] == "1"
    assert condition(plan.status, "Reported").status == "True"  # type: ignore[union-attr]
    assert not [e for e in run(World(T0 + 8, advance(m, plan))).effects if isinstance(e, Report)]
    failed = run(World(T0 + 7, m), {Report: Outcome(False, 0, "unavailable")})
    assert failed.requeue_after == 10.0 and condition(failed.status, "Reported").status == "False"  # type: ignore[union-attr]
    assert not run(World(T0 + 7, m), cfg=replace(CFG, reports=False)).effects  # no link: nothing to send


def test_finished_objects_are_deleted_after_the_ttl() -> None:
    m = finished(request_id="")
    keep = run(World(T0 + 100, m))
    assert not keep.effects and keep.requeue_after == pytest.approx(600 - 94)
    assert [type(e) for e in run(World(T0 + 607, m)).effects] == [Delete]


def test_a_pin_left_by_an_earlier_migration_is_not_inherited() -> None:
    moved = pod(
        on="b",
        annotations={
            MIGRATION_ANNOTATION: "earlier",
            RESUMED_FROM_ANNOTATION: "40",
            CHECKPOINT_STEP_ANNOTATION: "41",
            "keep": "me",
        },
    )
    zone = {"key": "zone", "operator": "In", "values": ["z1"]}
    moved["spec"]["affinity"] = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [zone],
                        "matchFields": [{"key": "metadata.name", "operator": "In", "values": ["b"]}],
                    }
                ]
            },
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 50,
                    "preference": {"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["a"]}]},
                }
            ],
        }
    }
    back = captured(
        migration(targetNode="a"), moved, nodes={"a": node("a")}, usage=usage(node("a", labels={"zone": "z1"}))
    )
    assert back.status.phase == Phase.EVICTING, back.status.message
    template = back.status.pod_template
    assert template["metadata"]["annotations"] == {"keep": "me"}  # the old incarnation's reports are dropped
    assert template["spec"]["affinity"] == {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [zone]}]}
        }
    }
    # The user's own constraint still counts: a node outside zone z1 is refused.
    elsewhere = captured(migration(targetNode="a"), moved, nodes={"a": node("a")}, usage=usage(node("a")))
    assert elsewhere.status.phase == Phase.FAILED and "required node affinity" in elsewhere.status.message
