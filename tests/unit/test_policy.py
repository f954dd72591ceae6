"""Orchestration policy: overload hysteresis, pod and target choice, caps, feedback, scale and provision advice."""

from __future__ import annotations

import math

import numpy as np
import pytest

from apollo.core.decisions import Action, MigrationTarget, PolicyDecision, PolicyOutput, Priority
from apollo.core.domain import (
    NodeCapacity,
    NodeInsight,
    NodeOutlook,
    RunningPod,
    StorageDevice,
    WorkloadOutlook,
)
from apollo.core.domain import (
    PodSignature as Sig,
)
from apollo.core.policy import PolicyContext, PolicyEngine, PolicyInput, PolicySettings, pvc_name_for, request_id
from apollo.core.policy.migrate import MigratePlanner
from apollo.core.scoring.table import NodeTable

GiB = 2**30
H = 10
STEP = 30.0
# The scenarios below are drawn around this overload line (the service default is 0.85).
THRESHOLD = 0.9
# Four steps in a row over 0.9, starting at step 2: "overload coming" with k = 3.
SUSTAINED = [0.5, 0.95, 0.95, 0.95, 0.95, 0.6, 0.5, 0.5, 0.5, 0.5]
LONE_SPIKE = [0.5, 0.97, 0.5, 0.97, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]


def node(name: str, cpu: float | list[float] = 0.3, memory: float = 0.3, *, stale: bool = False) -> NodeOutlook:
    cpu_series = np.array(cpu if isinstance(cpu, list) else [cpu] * H, dtype=np.float64)
    upper = {"cpu": cpu_series, "memory": np.full(H, memory)}
    return NodeOutlook(name, NodeCapacity(8.0, 32 * GiB), mean=upper, upper=upper, stale=stale, step_seconds=STEP)


def pod(name: str, on: str = "hot", cpu: float = 1.0, owner: str = "", **kw: object) -> RunningPod:
    return RunningPod(
        "ns",
        name,
        on,
        owner_kind="Deployment" if owner else "",
        owner_name=owner,
        cpu_request_cores=cpu,
        memory_request_bytes=1 * GiB,
        cpu_usage_cores=cpu,
        memory_usage_bytes=1 * GiB,
        **kw,  # type: ignore[arg-type]
    )


def engine(**kw: object) -> PolicyEngine:
    return PolicyEngine(PolicySettings(**{"overload_threshold": THRESHOLD, **kw}))  # type: ignore[arg-type]


def plan_migrations(eng: PolicyEngine, now: float, nodes: list[NodeOutlook], pods: list[RunningPod]) -> PolicyOutput:
    """A tick with no workloads and pods without signatures: only the migrate planner has work."""
    return eng.evaluate(now, nodes, pods)


def plan_scaling(eng: PolicyEngine, now: float, workloads: list[WorkloadOutlook]) -> PolicyOutput:
    return eng.evaluate(now, [], workloads=workloads)


def plan_provisioning(
    eng: PolicyEngine, now: float, pods: list[RunningPod], insights: dict[str, NodeInsight]
) -> PolicyOutput:
    return eng.evaluate(now, [], pods, insights)


def confirmed(eng: PolicyEngine) -> set[str]:
    return eng.planner(MigratePlanner).confirmed


def cluster(*extra: NodeOutlook) -> list[NodeOutlook]:
    return [node("hot", SUSTAINED), node("cool", 0.3), node("cooler", 0.1), *extra]


def confirm(eng: PolicyEngine, nodes: list[NodeOutlook], pods: list[RunningPod], start: float = 0.0) -> PolicyOutput:
    """Two ticks (confirm_ticks = 2 by default); returns the second tick's output."""
    first = plan_migrations(eng, start, nodes, pods)
    assert not first.decisions
    return plan_migrations(eng, start + STEP, nodes, pods)


def migrated(out: PolicyOutput) -> list[str]:
    return [d.migration.pod_name for d in out.decisions if d.migration is not None]


def reasons(out: PolicyOutput, subject: str) -> str:
    return " | ".join(s.reason for s in out.skipped if s.subject == subject)


# ---- overload detection ---------------------------------------------------------------------------


def test_lone_spikes_never_trigger_a_migration() -> None:
    eng = engine()
    nodes = [node("hot", LONE_SPIKE), node("cool")]
    for tick in range(5):
        assert not plan_migrations(eng, tick * STEP, nodes, [pod("a")]).decisions
    assert not confirmed(eng)


def test_k_consecutive_steps_on_confirm_ticks_trigger_a_migration() -> None:
    eng = engine()
    out = confirm(eng, cluster(), [pod("a", checkpointed=True)])
    assert len(out.decisions) == 1
    d = out.decisions[0]
    assert d.action == Action.MIGRATE and not d.dry_run
    assert d.migration == MigrationTarget("a", "ns", "hot", "cooler", True, 300)
    assert d.priority == Priority.CRITICAL  # overload starts at step 2: 30 s away, sooner than a migration takes
    assert "overload predicted on hot in 30s" in d.reason
    assert any("checkpointed" in f for f in d.contributing_factors)
    assert d.request_id.startswith("migrate-")


def test_confirmation_needs_consecutive_ticks() -> None:
    eng = engine()
    band = node("hot", 0.88)  # under the threshold: breaks the streak
    pods = [pod("a")]
    assert not plan_migrations(eng, 0, cluster(), pods).decisions
    assert not plan_migrations(eng, 30, [band, node("cool")], pods).decisions
    assert not plan_migrations(eng, 60, cluster(), pods).decisions
    assert plan_migrations(eng, 90, cluster(), pods).decisions
    # Re-evaluating the same tick does not count as another confirmation.
    fresh = engine()
    plan_migrations(fresh, 0, cluster(), pods)
    assert not plan_migrations(fresh, 0, cluster(), pods).decisions


def test_hysteresis_clears_only_below_threshold_minus_margin() -> None:
    eng = engine(max_migrations_cluster=0)  # watch the state without acting
    confirm(eng, cluster(), [])
    assert confirmed(eng) == {"hot"}
    plan_migrations(eng, 60, [node("hot", 0.88), node("cool")], [])
    assert confirmed(eng) == {"hot"}, "0.88 is above 0.9 - 0.05: still confirmed"
    plan_migrations(eng, 90, [node("hot", 0.84), node("cool")], [])
    assert not confirmed(eng)
    plan_migrations(eng, 120, cluster(), [])
    assert not confirmed(eng), "a fresh warning needs confirm_ticks again"


def test_a_confirmed_node_in_the_band_is_relieved_down_to_the_clear_level() -> None:
    eng = engine(settle_seconds=0.0)
    out = confirm(eng, cluster(), [pod("a", owner="one"), pod("b", cpu=0.3, owner="two")])
    assert migrated(out) == ["a"]
    assert eng.record_result(out.decisions[0].request_id, True, 61.0)
    # Peak 0.88 needs 0.24 cores to reach 0.85: the 0.3-core pod suffices.
    later = plan_migrations(eng, 90, [node("hot", 0.88), node("cool")], [pod("b", cpu=0.3, owner="two")])
    assert migrated(later) == ["b"]


def test_stale_forecasts_never_migrate() -> None:
    eng = engine()
    nodes = [node("hot", SUSTAINED, stale=True), node("cool", stale=True)]
    for tick in range(3):
        out = plan_migrations(eng, tick * STEP, nodes, [pod("a")])
        assert not out.decisions
    assert "stale" in reasons(out, "*")


# ---- which pod, which target ------------------------------------------------------------------------


def test_checkpointed_pod_is_preferred_even_when_more_important() -> None:
    pods = [pod("plain", cpu=2.0), pod("ckpt", checkpointed=True, priority=1000)]
    assert migrated(confirm(engine(), cluster(), pods)) == ["ckpt"]


@pytest.mark.parametrize(
    ("pods", "expected"),
    [
        ([pod("important", priority=100), pod("cheap", priority=0)], "cheap"),
        ([pod("fresh", completed_fraction=0.0), pod("far-along", completed_fraction=2 / 3)], "far-along"),
        ([pod("flaky", restarts=5), pod("steady", restarts=0)], "steady"),
        ([pod("tiny", cpu=0.2), pod("fits", cpu=1.0)], "fits"),
        ([pod("huge", cpu=4.0), pod("fits", cpu=1.0)], "fits"),
        ([pod("tiny", cpu=0.2), pod("small", cpu=0.5)], "small"),
    ],
)
def test_least_disruptive_pod_with_enough_relief_is_chosen(pods: list[RunningPod], expected: str) -> None:
    assert migrated(confirm(engine(), cluster(), pods)) == [expected]


def test_pod_already_migrating_is_skipped() -> None:
    out = confirm(engine(), cluster(), [pod("moving", checkpointed=True, is_migrating=True), pod("other")])
    assert migrated(out) == ["other"]
    assert "already migrating" in reasons(out, "ns/moving")
    alone = confirm(engine(), cluster(), [pod("moving", is_migrating=True)])
    assert not alone.decisions and "no movable pod" in reasons(alone, "hot")


def test_daemonset_pods_stay_on_their_node() -> None:
    ds = RunningPod("ns", "agent", "hot", "DaemonSet", "agent", 2.0, GiB, 2.0, GiB)
    out = confirm(engine(), cluster(), [ds])
    assert not out.decisions and "DaemonSet" in reasons(out, "ns/agent")


def test_target_is_the_best_predicted_headroom_never_the_source_or_an_infeasible_node() -> None:
    busy = node("busy", 0.85)  # 0.85 + 1/8 > 0.9 with the pod
    out = confirm(engine(), [node("hot", SUSTAINED), busy, node("cool", 0.4), node("cooler", 0.2)], [pod("a")])
    assert out.decisions[0].migration is not None
    assert out.decisions[0].migration.target_node == "cooler"
    stuck = confirm(engine(), [node("hot", SUSTAINED), busy], [pod("a")])
    assert not stuck.decisions
    assert "no feasible target" in reasons(stuck, "ns/a") and "no feasible target" in reasons(stuck, "hot")


def test_moves_in_flight_count_as_load_on_their_target() -> None:
    nodes = [node("hot1", SUSTAINED), node("hot2", SUSTAINED), node("roomy", 0.55), node("ok", 0.6)]
    pods = [pod("a", on="hot1", cpu=2.0), pod("b", on="hot2", cpu=2.0)]
    out = confirm(engine(), nodes, pods)
    targets = {d.migration.pod_name: d.migration.target_node for d in out.decisions if d.migration}
    assert targets == {"a": "roomy", "b": "ok"}  # roomy cannot take both: 0.55 + 2 * 0.25 > 0.9


def test_on_demand_advice_uses_the_planners_target_rules_and_settings() -> None:
    """GetOrchestrationPolicy's advice: never a node confirmed overloading, preserve_pv and epoch from settings."""
    eng = engine(max_migrations_cluster=0, preserve_pv=False, decision_epoch_seconds=3600.0)
    confirm(eng, [node("hot", SUSTAINED), node("twin", SUSTAINED), node("cool", 0.4)], [])
    assert confirmed(eng) == {"hot", "twin"}  # the cap keeps the planner itself from acting
    small = pod("web", on="hot", cpu=0.1)
    # twin now sits in the hysteresis band: still confirmed, yet a small pod would fit under the line.
    band = NodeTable.build([node("hot", SUSTAINED), node("twin", 0.88)])
    fresh = engine().advise_migration(small, band, 100.0)
    assert isinstance(fresh, PolicyDecision) and fresh.migration is not None
    assert fresh.migration.target_node == "twin" and fresh.migration.preserve_pv
    refused = eng.advise_migration(small, band, 100.0)
    assert not isinstance(refused, PolicyDecision) and "no feasible target" in refused.reason
    advice = eng.advise_migration(
        small, NodeTable.build([node("hot", SUSTAINED), node("twin", 0.88), node("cool", 0.4)]), 100.0
    )
    assert isinstance(advice, PolicyDecision) and advice.migration is not None
    assert (advice.migration.source_node, advice.migration.target_node) == ("hot", "cool")
    assert not advice.migration.preserve_pv and advice.migration.timeout_seconds == 300
    assert advice.request_id == request_id(Action.MIGRATE, "ns/web|hot|cool", 3599.0, 3600.0)  # one epoch
    assert not eng.ledger.inflight  # advice is not counted against the caps


def test_a_new_planner_is_one_class_the_facade_iterates() -> None:
    """The Planner protocol: the facade runs it each tick and routes answers to its actions."""

    class Quiet:
        actions = frozenset({Action.PROVISION})

        def __init__(self, ctx: PolicyContext) -> None:
            self.ctx, self.ticks, self.answers = ctx, [], []  # type: ignore[var-annotated]

        def plan(self, tick: PolicyInput) -> PolicyOutput:
            self.ticks.append(tick.now)
            return PolicyOutput()

        def finish(self, entry: object, success: bool, now: float) -> None:
            self.answers.append((entry, success))

    eng = PolicyEngine(PolicySettings(), planners=(MigratePlanner, Quiet))
    eng.evaluate(0.0, cluster())
    eng.evaluate(30.0, cluster())
    assert eng.planner(Quiet).ticks == [0.0, 30.0]
    assert not eng.record_result("unknown", True, 31.0)


# ---- caps, cooldowns, feedback ------------------------------------------------------------------------


def test_per_node_cap_and_relief_in_flight() -> None:
    eng = engine()
    pods = [pod("a", owner="one"), pod("b", owner="two")]
    assert migrated(confirm(eng, cluster(), pods)) == ["a"]
    again = plan_migrations(eng, 60, cluster(), pods)
    assert not again.decisions and "node at its cap" in reasons(again, "hot")
    roomier = engine(max_migrations_per_node=2)
    confirm(roomier, cluster(), pods)
    out = plan_migrations(roomier, 60, cluster(), pods)
    assert not out.decisions and "relief already under way" in reasons(out, "hot")


def test_per_workload_cap() -> None:
    nodes = [node("hot1", SUSTAINED), node("hot2", SUSTAINED), node("cool"), node("cooler", 0.1)]
    pods = [pod("train-0", on="hot1", owner="train"), pod("train-1", on="hot2", owner="train")]
    out = confirm(engine(), nodes, pods)
    assert len(out.decisions) == 1
    assert any("workload ns/Deployment/train at its cap" in s.reason for s in out.skipped)


def test_cluster_cap_and_rate_limit() -> None:
    hot = [node(f"hot{i}", SUSTAINED) for i in range(3)]
    nodes = [*hot, node("cool", 0.1), node("cooler", 0.1)]
    pods = [pod(f"p{i}", on=f"hot{i}") for i in range(3)]
    out = confirm(engine(max_migrations_cluster=2), nodes, pods)
    assert len(out.decisions) == 2 and "cluster at its cap" in reasons(out, "hot2")
    eng = engine(rate_limit=1, rate_window_seconds=600.0)
    out = confirm(eng, nodes, pods)
    assert len(out.decisions) == 1 and "rate limit" in reasons(out, "hot1")
    eng.record_result(out.decisions[0].request_id, True, 60)
    assert not plan_migrations(eng, 90, nodes, pods).decisions
    assert plan_migrations(eng, 631, nodes, pods).decisions  # the first issue left the window


def test_workload_cooldown_after_success_and_shorter_after_failure() -> None:
    eng = engine(settle_seconds=0.0)
    out = confirm(eng, cluster(), [pod("train-a", owner="train")])
    eng.record_result(out.decisions[0].request_id, True, 100.0)
    replacement = [pod("train-b", owner="train")]
    blocked = plan_migrations(eng, 130, cluster(), replacement)
    assert not blocked.decisions and "cooling down" in reasons(blocked, "ns/train-b")
    assert not plan_migrations(eng, 699, cluster(), replacement).decisions
    retry = plan_migrations(eng, 701, cluster(), replacement)
    assert migrated(retry) == ["train-b"]
    eng.record_result(retry.decisions[0].request_id, False, 710.0)
    assert not plan_migrations(eng, 1009, cluster(), replacement).decisions
    assert plan_migrations(eng, 1011, cluster(), replacement).decisions  # failure cooldown is 300 s


def test_dry_run_decisions_are_marked_and_still_capped() -> None:
    eng = engine(dry_run=True)
    pods = [pod("a", owner="one"), pod("b", owner="two")]
    out = confirm(eng, cluster(), pods)
    assert out.decisions and all(d.dry_run for d in out.decisions)
    assert not plan_migrations(eng, 60, cluster(), pods).decisions


def test_record_result_frees_the_slot_and_rejects_unknown_ids() -> None:
    eng = engine(settle_seconds=0.0)
    pods = [pod("a", owner="one"), pod("b", owner="two")]
    rid = confirm(eng, cluster(), pods).decisions[0].request_id
    assert eng.record_result(rid, True, 61.0)
    assert not eng.record_result(rid, True, 62.0)
    assert not eng.record_result("migrate-unknown", False, 62.0)
    assert migrated(plan_migrations(eng, 90, cluster(), [pods[1]])) == ["b"]


def test_unanswered_decision_expires_as_failed() -> None:
    eng = engine()
    d = confirm(eng, cluster(), [pod("a", owner="one")]).decisions[0]
    assert d.deadline_seconds == 300
    still = plan_migrations(eng, 30 + 300 + 119, cluster(), [])
    assert d.request_id in eng.ledger.inflight and not reasons(still, "ns/a")
    out = plan_migrations(eng, 30 + 300 + 120, cluster(), [])
    assert not eng.ledger.inflight and "counted as failed" in reasons(out, "ns/a")
    assert eng.ledger.cooling("migrate:ns/Deployment/one", 450.0) == pytest.approx(300.0)


def test_request_ids_are_deterministic_per_content_and_epoch() -> None:
    first = confirm(engine(), cluster(), [pod("a")]).decisions[0].request_id
    second = confirm(engine(), cluster(), [pod("a")]).decisions[0].request_id
    later = confirm(engine(), cluster(), [pod("a")], start=6000.0).decisions[0].request_id
    assert first == second != later
    assert request_id(Action.MIGRATE, "x", 10.0, 600) == request_id(Action.MIGRATE, "x", 599.0, 600)
    assert request_id(Action.MIGRATE, "x", 10.0, 600) != request_id(Action.SCALE_UP, "x", 10.0, 600)


def test_decision_must_carry_its_own_target() -> None:
    with pytest.raises(ValueError, match="MIGRATE"):
        PolicyDecision("id", Action.MIGRATE, Priority.LOW, "r", (), 0.0, 60)


# ---- scaling --------------------------------------------------------------------------------------


def workload(replicas: int, cpu_mean: float, cpu_upper: float, **kw: object) -> WorkloadOutlook:
    """Requests: 1 core and 1 GiB per replica; memory use stays low so cpu decides."""
    return WorkloadOutlook(
        "ns", str(kw.pop("kind", "Deployment")), "web", replicas, 1.0, float(GiB),
        np.full(H, cpu_mean), np.full(H, cpu_upper), np.full(H, 0.1 * GiB), np.full(H, 0.1 * GiB),
        **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def scaled(out: PolicyOutput) -> list[tuple[Action, int, int]]:
    return [
        (d.action, d.autoscaling.current_replicas, d.autoscaling.desired_replicas)
        for d in out.decisions
        if d.autoscaling
    ]


def test_scale_up_follows_mean_over_target_and_upper_over_limit() -> None:
    out = plan_scaling(engine(), 0, [workload(2, cpu_mean=1.8, cpu_upper=2.2)])
    assert scaled(out) == [(Action.SCALE_UP, 2, 3)]  # 2 * max(0.9 / 0.7, 1.1 / 1.0) = 2.57
    assert out.decisions[0].priority == Priority.HIGH  # upper beyond requests


def test_scale_up_is_bounded_by_step_and_max_replicas() -> None:
    surge = workload(2, cpu_mean=14.0, cpu_upper=16.0)
    assert scaled(plan_scaling(engine(), 0, [surge])) == [(Action.SCALE_UP, 2, 6)]  # +4 per decision
    capped = workload(2, cpu_mean=14.0, cpu_upper=16.0, max_replicas=5)
    assert scaled(plan_scaling(engine(), 0, [capped])) == [(Action.SCALE_UP, 2, 5)]
    at_max = plan_scaling(engine(), 0, [workload(5, cpu_mean=14.0, cpu_upper=16.0, max_replicas=5)])
    assert not at_max.decisions and "replica bound" in reasons(at_max, "ns/Deployment/web")


def test_scale_down_waits_for_confirmation_and_steps_by_one() -> None:
    eng = engine()
    idle = [workload(6, cpu_mean=1.2, cpu_upper=1.8)]
    assert not plan_scaling(eng, 0, idle).decisions
    waiting = plan_scaling(eng, 30, idle)
    assert "waits 1 more tick" in reasons(waiting, "ns/Deployment/web")
    out = plan_scaling(eng, 60, idle)
    assert scaled(out) == [(Action.SCALE_DOWN, 6, 5)] and out.decisions[0].priority == Priority.LOW
    floor = plan_scaling(engine(scale_down_confirm_ticks=1), 0, [workload(2, 0.1, 0.1, min_replicas=2)])
    assert not floor.decisions


def test_no_scale_advice_within_tolerance_or_for_foreign_owners() -> None:
    eng = engine(scale_down_confirm_ticks=1)
    assert plan_scaling(eng, 0, [workload(4, cpu_mean=2.8, cpu_upper=3.0)]) == PolicyOutput()
    out = plan_scaling(eng, 0, [workload(2, 1.8, 2.2, has_autoscaler=True), workload(2, 1.8, 2.2, kind="Job")])
    assert not out.decisions
    assert "autoscaler" in reasons(out, "ns/Deployment/web") and "not scalable" in reasons(out, "ns/Job/web")


def test_scale_advice_is_not_repeated_while_in_flight_or_cooling_down() -> None:
    eng = engine()
    hot = [workload(2, cpu_mean=1.8, cpu_upper=2.2)]
    rid = plan_scaling(eng, 0, hot).decisions[0].request_id
    assert "in flight" in reasons(plan_scaling(eng, 30, hot), "ns/Deployment/web")
    eng.record_result(rid, True, 40)
    assert "cooling down" in reasons(plan_scaling(eng, 60, hot), "ns/Deployment/web")
    assert plan_scaling(eng, 221, hot).decisions  # scale-up cooldown 180 s


# ---- provisioning ---------------------------------------------------------------------------------


def loader(name: str, on: str = "hdd", **sig: object) -> RunningPod:
    signature = Sig(**{"io_pattern": "IO_PATTERN_READ_HEAVY", **sig})  # type: ignore[arg-type]
    return RunningPod("ns", name, on, "Deployment", "loader", 1.0, GiB, signature=signature)


INSIGHTS = {
    "hdd": NodeInsight("hdd", storage=(StorageDevice("sda", "hdd", 100 * GiB, 50 * GiB),)),
    "nvme": NodeInsight("nvme", storage=(StorageDevice("nvme0", "nvme", 100 * GiB, 50 * GiB),)),
}


def test_provision_advice_for_io_heavy_pod_without_fast_storage_is_deduplicated() -> None:
    eng = engine()
    out = plan_provisioning(eng, 0, [loader("loader-0"), loader("loader-1")], INSIGHTS)
    assert len(out.decisions) == 1
    target = out.decisions[0].provisioning
    assert target is not None
    assert (target.pvc_name, target.namespace, target.storage_class) == ("loader-ckpt", "ns", "STORAGE_CLASS_FAST")
    assert (target.size_bytes, target.iops, target.throughput_mbps) == (10 * GiB, 3000, 125)
    assert "already requested" in reasons(out, "ns/loader-1")
    assert not plan_provisioning(eng, 30, [loader("loader-0")], INSIGHTS).decisions
    eng.record_result(out.decisions[0].request_id, True, 40)
    after = plan_provisioning(eng, 60, [loader("loader-0")], INSIGHTS)
    assert not after.decisions and "already exists" in reasons(after, "ns/loader-0")


def test_failed_provisioning_cools_down_then_retries() -> None:
    eng = engine()
    rid = plan_provisioning(eng, 0, [loader("loader-0")], INSIGHTS).decisions[0].request_id
    eng.record_result(rid, False, 10)
    assert "cooling down" in reasons(plan_provisioning(eng, 20, [loader("loader-0")], INSIGHTS), "ns/loader-0")
    assert plan_provisioning(eng, 911, [loader("loader-0")], INSIGHTS).decisions


def test_provision_uses_the_recommendation_and_skips_what_needs_none() -> None:
    wants_csd = loader(
        "etl", on="nvme", storage_class="STORAGE_CLASS_CSD", storage_pvc_name="etl-scratch",
        storage_size_bytes=50 * GiB, storage_iops=20000, storage_throughput_mbps=900,
    )  # fmt: skip
    out = plan_provisioning(engine(), 0, [wants_csd], INSIGHTS)
    assert out.decisions[0].provisioning is not None
    assert out.decisions[0].provisioning.pvc_name == "etl-scratch"
    assert out.decisions[0].provisioning.storage_class == "STORAGE_CLASS_CSD"
    assert out.decisions[0].provisioning.size_bytes == 50 * GiB
    quiet = [
        loader("fast-node", on="nvme"),
        loader("balanced", io_pattern="IO_PATTERN_BALANCED"),
        loader("unknown-node", on="elsewhere"),
        RunningPod("ns", "mounted", "hdd", "Deployment", "loader", 1.0, GiB, pvc_names=("loader-ckpt",),
                   signature=Sig(io_pattern="IO_PATTERN_WRITE_HEAVY")),
    ]  # fmt: skip
    assert not plan_provisioning(engine(), 0, quiet, INSIGHTS).decisions


def test_pvc_name_is_dns_safe() -> None:
    assert pvc_name_for(RunningPod("ns", "Train_Job.0", "n")) == "train-job-0-ckpt"
    assert pvc_name_for(RunningPod("ns", "web-7d9f-x2", "n", "Deployment", "web")) == "web-ckpt"
    assert pvc_name_for(RunningPod("ns", "db-1", "n", "StatefulSet", "db")) == "db-1-ckpt"  # one claim per ordinal
    assert len(pvc_name_for(RunningPod("ns", "x" * 300, "n"))) == 253


# ---- settings and the combined tick ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("overload_threshold", 1.5),
        ("overload_threshold", 0.0),
        ("confirm_ticks", 0),
        ("consecutive_steps", 1.5),
        ("hysteresis_margin", 0.95),
        ("max_migrations_cluster", -1),
        ("rate_window_seconds", 0.0),
        ("workload_cooldown_seconds", math.nan),
        ("dry_run", "yes"),
        ("preserve_pv", 1),
        ("migration_timeout_seconds", 5),
        ("scale_target_utilization", 1.2),
    ],
)
def test_invalid_settings_raise_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        PolicySettings(**{field: value})  # type: ignore[arg-type]


def test_evaluate_runs_every_policy_once() -> None:
    eng = engine()
    pods = [pod("a"), loader("loader-0")]
    eng.evaluate(0, cluster(), pods, INSIGHTS, workloads=[workload(2, 1.8, 2.2)])
    out = eng.evaluate(30, cluster(), pods, INSIGHTS)
    assert {d.action for d in out.decisions} == {Action.MIGRATE}
    assert {e.action for e in eng.ledger.inflight.values()} == {Action.MIGRATE, Action.SCALE_UP, Action.PROVISION}
