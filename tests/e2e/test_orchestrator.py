"""The orchestrator as deployed, with the webhook, APOLLO and the extender, on the local control plane.

`apollo-orchestrator` runs as its console script (gunicorn, one worker running the leader-elected
controller), with a short lease so hand-overs take seconds. The webhook is registered with the real API
server (it strips completed containers, attaches the checkpoint claim and pins the target), APOLLO reads
the real Prometheus and the cluster, and kube-scheduler consults the extender, which holds capacity on
migration targets. kwok plays kubelet (and so never reports a container's SIGTERM exit: evicted pods
simply go away), the Job, ReplicaSet and disruption controllers are the real ones. There is no volume
provisioner: checkpoint claims bind to hostPath volumes created beforehand, as in the webhook's tests.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from kubernetes import client

from apollo_api.podmigration import (
    CHECKPOINT_STEP_ANNOTATION,
    CHECKPOINT_VOLUME,
    GROUP,
    MIGRATION_ANNOTATION,
    PLURAL,
    RESUMED_FROM_ANNOTATION,
    VERSION,
    Phase,
    PodMigration,
)
from apolloctl.cluster import COMPLETE_ANNOTATION, ExtenderConfig, ScrapeTarget
from apolloctl.cluster.process import free_port
from apolloctl.launch import Service, launch, start_apollo, start_extender
from apolloctl.scenario.services import install_crd
from apolloctl.sim_metrics import CPU_METRIC, MEMORY_METRIC, NodeExporter
from bench.webhook_local import LocalWebhook, unregister, wait_effective
from orchestrator.apollo_link import policy_migration_name
from tests.conftest import ClusterHandle
from tests.e2e.webhook_setup import host_path_pv as prebound_pv
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e
REGISTRATION = "apollo-webhook-orchestrator-e2e"
LEASE = f"orchestrator-e2e-{uuid.uuid4().hex[:6]}"


# -- the stack ---------------------------------------------------------------------------------


@dataclass
class Stack:
    cluster: ClusterHandle
    apollo: Service
    exporter: NodeExporter
    webhook: LocalWebhook
    extender: Service
    replicas: list[Service] = field(default_factory=list)

    def start_orchestrator(self, *, wait_leader: bool = True) -> Service:
        local = self.cluster.local
        port = free_port()
        settings = {
            "kubeconfig": str(local.kubeconfig),
            "log_level": "INFO",
            "server": {"bind": f"127.0.0.1:{port}"},
            "leader": {
                "namespace": "default",
                "lease_name": LEASE,
                "lease_duration_seconds": 4,
                "renew_deadline_seconds": 3,
                "retry_period_seconds": 0.5,
            },
            "apollo": {"address": self.apollo.address("grpc"), "reconnect_max_seconds": 2},
            "resume_grace_seconds": 2,
            "resync_seconds": 5,
            "api": {"authentication": "none"},
        }
        service = launch(
            "apollo-orchestrator",
            "ORCHESTRATOR",
            settings,
            port=port,
            log_path=local.logs_dir / f"orchestrator-e2e-{port}.log",
            env={"PROMETHEUS_MULTIPROC_DIR": str(local.logs_dir / f"orchestrator-metrics-{port}")},
        )
        self.replicas.append(service)
        service.wait_ready(path="/healthz", what="apollo-orchestrator")
        if wait_leader:
            service.wait_ready(lambda b: b.get("leader") is True and b.get("synced") is True, timeout=30, what="leader")
        return service

    def leader(self) -> Service:
        """The replica leading now; a new one if none runs (an earlier test may have killed it)."""
        for s in self.replicas:
            if s.process.exited() is None and (s.probe() or {}).get("leader") is True:
                return s
        return self.start_orchestrator()

    def metric(self, service: Service, name: str, labels: str = "") -> float:
        _, body, _ = service.request("GET", "/metrics")
        total = 0.0
        for line in body.decode().splitlines():
            if line.startswith(name + (("{" + labels) if labels else "")) and not line.startswith("#"):
                head = line.rsplit(" ", 1)[0]
                if labels or head == name or head.startswith(name + "{"):
                    total += float(line.rsplit(" ", 1)[1])
        return total


@pytest.fixture(scope="module")
def stack(cluster: ClusterHandle) -> Iterator[Stack]:
    install_crd(cluster.api)
    local = cluster.local
    assert local.ca is not None
    exporter = NodeExporter()
    local.set_scrape_targets("orchestrator-e2e", [ScrapeTarget(exporter.address)])
    apollo = start_apollo(
        {
            "log_level": "INFO",
            "prometheus": {"url": local.prometheus_url, "queries": {"cpu": CPU_METRIC, "memory": MEMORY_METRIC}},
            "forecast": {"step_seconds": 1.0, "horizon_minutes": 1, "season_minutes": 0, "warmup_samples": 3},
            "policy": {"consecutive_steps": 3, "confirm_ticks": 2},
            "kubernetes": {"enabled": True, "kubeconfig": str(local.kubeconfig)},
        },
        local.logs_dir / "apollo-orchestrator-e2e.log",
    )
    hook = LocalWebhook(local.logs_dir / "webhook-orchestrator-e2e.log", local.ca, local.kubeconfig)
    extender: Service | None = None
    stack: Stack | None = None
    try:
        hook.start()
        hook.register(cluster.api, REGISTRATION)
        wait_effective(cluster.core, "default")
        extender = start_extender(
            apollo.address("grpc"),
            local.logs_dir / "extender-orchestrator-e2e.log",
            settings={"kubeconfig": str(local.kubeconfig), "refresh_interval_seconds": 0.5},
        )
        extender.wait_ready(what="apollo-extender")
        local.restart_scheduler((ExtenderConfig(url_prefix=extender.url, weight=5, http_timeout="2s"),))
        stack = Stack(cluster, apollo, exporter, hook, extender)
        stack.start_orchestrator()
        yield stack
    finally:
        for s in stack.replicas if stack else []:
            s.stop()
        local.restart_scheduler(())
        if extender is not None:
            extender.stop()
        unregister(cluster.api, REGISTRATION)
        hook.stop()
        apollo.stop()
        local.set_scrape_targets("orchestrator-e2e", [])
        exporter.close()


# -- helpers -----------------------------------------------------------------------------------


def pool(cluster: ClusterHandle, namespace: str, count: int = 2, cpu: str = "8") -> list[str]:
    """Nodes only this test's pods select (nodeSelector pool=<namespace>)."""
    return cluster.create_nodes(count, prefix=f"o-{namespace[-6:]}", labels={"pool": namespace}, cpu=cpu, memory="32Gi")


def container(name: str, cpu: str = "100m") -> dict[str, Any]:
    return {"name": name, "image": f"registry.invalid/{name}:1", "resources": {"requests": {"cpu": cpu}}}


def host_path_pv(cluster: ClusterHandle, namespace: str, claim: str) -> str:
    """A volume pre-bound to the checkpoint claim the webhook will create (no provisioner runs locally)."""
    name = f"pv-{uuid.uuid4().hex[:8]}"
    cluster.core.create_persistent_volume(prebound_pv(name, namespace, claim))
    return name


def custom(cluster: ClusterHandle) -> Any:
    return client.CustomObjectsApi(cluster.api)


def migrate(cluster: ClusterHandle, namespace: str, pod: str, name: str = "", **spec: Any) -> str:
    name = name or f"{pod}-m-{uuid.uuid4().hex[:4]}"
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "PodMigration",
        "metadata": {"name": name},
        "spec": {"podName": pod, "reason": "e2e", "timeoutSeconds": 120, **spec},
    }
    custom(cluster).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    return name


def read(cluster: ClusterHandle, namespace: str, name: str) -> PodMigration:
    return PodMigration.from_json(custom(cluster).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name))


def finished(cluster: ClusterHandle, namespace: str, name: str, timeout: float = 120) -> PodMigration:
    def done() -> PodMigration | None:
        m = read(cluster, namespace, name)
        return m if m.status.phase in Phase.FINISHED else None

    m: PodMigration = wait_for(done, timeout, interval=0.3, what=f"migration {name} to finish")
    return m


def running_pod(cluster: ClusterHandle, namespace: str, selector: str, exclude_uid: str = "") -> Any:
    for pod in cluster.core.list_namespaced_pod(namespace, label_selector=selector).items:
        if pod.status.phase == "Running" and pod.metadata.uid != exclude_uid and not pod.metadata.deletion_timestamp:
            return pod
    return None


def claim_of(pod: Any) -> str | None:
    for v in pod.spec.volumes or []:
        if v.name == CHECKPOINT_VOLUME and v.persistent_volume_claim:
            return str(v.persistent_volume_claim.claim_name)
    return None


def events_for(cluster: ClusterHandle, namespace: str, kind: str, name: str) -> list[Any]:
    return [
        e
        for e in cluster.core.list_namespaced_event(namespace).items
        if e.involved_object.kind == kind and e.involved_object.name == name
    ]


def steps(m: PodMigration) -> dict[str, float]:
    from orchestrator.podinfo import parse_time

    return {k: t for k, v in m.status.steps.items() if (t := parse_time(v)) is not None}


def deploy(cluster: ClusterHandle, namespace: str, name: str, cpu: str = "100m") -> None:
    """A one-replica Deployment opted in to checkpointing, with the volume its claim (<name>-ckpt) binds to.

    Opted in, so the webhook handles its replacements (the webhook is only sent labelled pods) and pins
    them to the target; an un-labelled pod's replacement goes wherever the scheduler likes, which the
    orchestrator reports (TargetNotHonoured / ReturnedToSource) but cannot prevent.
    """
    host_path_pv(cluster, namespace, f"{name}-ckpt")
    cluster.apps.create_namespaced_deployment(namespace, deployment(name, namespace, cpu))


def deployment(name: str, namespace: str, cpu: str = "100m") -> dict[str, Any]:
    labels = {"apollo.io/checkpoint": "true"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name, **labels}},
                "spec": {"nodeSelector": {"pool": namespace}, "containers": [container("main", cpu)]},
            },
        },
    }


def job(name: str, namespace: str, *, disruption_rule: bool = True) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "completionMode": "Indexed",
        "completions": 1,
        "parallelism": 1,
        "backoffLimit": 3,
        "template": {
            "metadata": {
                "labels": {"apollo.io/checkpoint": "true"},
                # kwok terminates the loader with exit code 0 (its work is done); the trainer keeps running.
                "annotations": {COMPLETE_ANNOTATION: "loader"},
            },
            "spec": {
                "restartPolicy": "Never",
                "nodeSelector": {"pool": namespace},
                "containers": [container("loader"), container("trainer")],
            },
        },
    }
    if disruption_rule:
        spec["podFailurePolicy"] = {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": spec}


def loader_done(cluster: ClusterHandle, namespace: str, selector: str) -> Any:
    for pod in cluster.core.list_namespaced_pod(namespace, label_selector=selector).items:
        states = {s.name: s.state for s in pod.status.container_statuses or []}
        if states.get("loader") and states["loader"].terminated and states["trainer"].running:
            return pod
    return None


# -- tests -------------------------------------------------------------------------------------


def test_a_job_pod_with_a_completed_container_migrates_without_a_failure(
    cluster: ClusterHandle, stack: Stack, namespace: str
) -> None:
    stack.leader()
    a, b = pool(cluster, namespace)
    host_path_pv(cluster, namespace, "train-ckpt")
    cluster.batch.create_namespaced_job(namespace, job("train", namespace))
    selector = "batch.kubernetes.io/job-name=train"
    original = wait_for(lambda: loader_done(cluster, namespace, selector), 90, what="the Job pod with its loader done")
    assert claim_of(original) == "train-ckpt"
    source = original.spec.node_name
    target = b if source == a else a

    name = migrate(cluster, namespace, original.metadata.name, targetNode=target)
    m = finished(cluster, namespace, name)
    assert m.status.phase == Phase.SUCCEEDED, m.status.message
    st = m.status
    assert [(c.name, c.state, c.migrate) for c in st.containers] == [
        ("loader", "terminated", False),
        ("trainer", "running", True),
    ]
    assert (st.source_node, st.replacement_node, st.checkpoint_pvc) == (source, target, "train-ckpt")
    assert st.requests_before and st.requests_after and st.requests_after.cpu_cores < st.requests_before.cpu_cores
    # The replacement: a new name, the same completion index and claim, without the completed container.
    new = cluster.core.read_namespaced_pod(st.replacement_pod, namespace)
    assert new.metadata.uid != original.metadata.uid and new.spec.node_name == target
    assert [c.name for c in new.spec.containers] == ["trainer"]
    assert claim_of(new) == "train-ckpt"
    assert new.metadata.annotations["batch.kubernetes.io/job-completion-index"] == "0"
    assert new.metadata.annotations[MIGRATION_ANNOTATION] == name
    # The eviction did not count against backoffLimit.
    assert not cluster.batch.read_namespaced_job("train", namespace).status.failed
    # With a pod failure policy the replacement is created only once the source is gone: the steps show it.
    t = steps(m)
    assert t["evictionRequested"] <= t["evicted"] <= t["sourceTerminated"] <= t["replacementCreated"] + 1.0
    assert t["replacementCreated"] <= t["scheduled"] + 1.0 <= t["running"] + 2.0 <= t["finished"] + 2.0
    reasons = {e.reason for e in events_for(cluster, namespace, "PodMigration", name)}
    assert {"Accepted", "Captured", "Evicted", "ReplacementCreated", "Migrated"} <= reasons
    assert "Migrating" in {e.reason for e in events_for(cluster, namespace, "Pod", original.metadata.name)}
    assert "Migrated" in {e.reason for e in events_for(cluster, namespace, "Pod", new.metadata.name)}


def test_a_job_without_the_disruption_rule_is_warned_about(
    cluster: ClusterHandle, stack: Stack, namespace: str
) -> None:
    stack.leader()
    pool(cluster, namespace)
    host_path_pv(cluster, namespace, "norule-ckpt")
    cluster.batch.create_namespaced_job(namespace, job("norule", namespace, disruption_rule=False))
    selector = "batch.kubernetes.io/job-name=norule"
    original = wait_for(lambda: loader_done(cluster, namespace, selector), 90, what="the Job pod with its loader done")
    name = migrate(cluster, namespace, original.metadata.name)
    m = finished(cluster, namespace, name)
    assert m.status.phase == Phase.SUCCEEDED, m.status.message
    rule = next(c for c in m.status.conditions if c.type == "JobDisruptionRule")
    assert rule.status == "False" and "backoffLimit" in rule.message
    warnings = [e for e in events_for(cluster, namespace, "PodMigration", name) if e.reason == "JobCountsEviction"]
    assert warnings and warnings[0].type == "Warning"
    # (kwok deletes an evicted pod without ever reporting it Failed, so the Job's failed count cannot show
    # here what a kubelet's terminated pod would make the Job controller count.)


def test_a_single_replica_deployment_pod_migrates_where_the_orchestrator_suggests(
    cluster: ClusterHandle, stack: Stack, namespace: str
) -> None:
    stack.leader()
    nodes = pool(cluster, namespace, 3)
    deploy(cluster, namespace, "web")
    original = wait_for(lambda: running_pod(cluster, namespace, "app=web"), 60, what="the web pod running")
    name = migrate(cluster, namespace, original.metadata.name)
    m = finished(cluster, namespace, name)
    assert m.status.phase == Phase.SUCCEEDED, m.status.message
    assert m.status.suggested_node in nodes and m.status.suggested_node != original.spec.node_name
    new = cluster.core.read_namespaced_pod(m.status.replacement_pod, namespace)
    assert new.spec.node_name == m.status.suggested_node  # the webhook's preferred affinity, honoured
    assert (m.status.owner_kind, m.status.owner_name) == ("Deployment", "web")
    assert m.status.checkpoint_pvc == "web-ckpt" and "resume point not reported" in m.status.message


def test_a_bare_pod_is_re_created_on_the_target_and_resumes_from_its_checkpoint(
    cluster: ClusterHandle, stack: Stack, namespace: str
) -> None:
    stack.leader()
    a, b = pool(cluster, namespace)
    host_path_pv(cluster, namespace, "solo-ckpt")
    cluster.core.create_namespaced_pod(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "solo", "labels": {"apollo.io/checkpoint": "true", "app": "solo"}},
            "spec": {"nodeSelector": {"pool": namespace}, "containers": [container("main")]},
        },
    )
    original = wait_for(lambda: running_pod(cluster, namespace, "app=solo"), 60, what="the bare pod running")
    # The workload has written checkpoints (the pod runner mirrors the step it reports).
    cluster.core.patch_namespaced_pod(
        "solo", namespace, {"metadata": {"annotations": {CHECKPOINT_STEP_ANNOTATION: "40"}}}
    )
    target = b if original.spec.node_name == a else a
    name = migrate(cluster, namespace, "solo", targetNode=target)

    new = wait_for(
        lambda: running_pod(cluster, namespace, "app=solo", exclude_uid=original.metadata.uid), 60, what="re-created"
    )
    assert new.metadata.name == "solo" and new.spec.node_name == target and claim_of(new) == "solo-ckpt"
    assert new.metadata.annotations[MIGRATION_ANNOTATION] == name
    time.sleep(3)  # beyond the resume grace: with a checkpoint reported, the orchestrator waits for the resume
    assert read(cluster, namespace, name).status.phase == Phase.RESCHEDULING
    cluster.core.patch_namespaced_pod("solo", namespace, {"metadata": {"annotations": {RESUMED_FROM_ANNOTATION: "40"}}})
    m = finished(cluster, namespace, name)
    assert m.status.phase == Phase.SUCCEEDED and m.status.resumed_from == "40" and m.status.checkpoint_step == "40"
    assert m.status.pod_template["metadata"]["name"] == "solo"
    # The finalizer guarding the bare pod is gone once it is re-created.
    raw = custom(cluster).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    assert not raw["metadata"].get("finalizers")

    # The new incarnation checkpoints in turn; moved back, it starts from scratch: its state was lost.
    cluster.core.patch_namespaced_pod(
        "solo", namespace, {"metadata": {"annotations": {CHECKPOINT_STEP_ANNOTATION: "55"}}}
    )
    again = migrate(cluster, namespace, "solo", targetNode=original.spec.node_name)
    wait_for(
        lambda: (
            (p := running_pod(cluster, namespace, "app=solo", exclude_uid=new.metadata.uid)) is not None
            and p.spec.node_name == original.spec.node_name
        ),
        60,
        what="re-created again",
    )
    cluster.core.patch_namespaced_pod("solo", namespace, {"metadata": {"annotations": {RESUMED_FROM_ANNOTATION: "-1"}}})
    lost = finished(cluster, namespace, again)
    assert lost.status.phase == Phase.FAILED and "started from scratch" in lost.status.message
    assert lost.status.checkpoint_step == "55" and lost.status.resumed_from == "-1"
    assert cluster.core.read_namespaced_persistent_volume_claim("solo-ckpt", namespace)  # never deleted


def test_a_disruption_budget_delays_the_migration_then_allows_it(
    cluster: ClusterHandle, stack: Stack, namespace: str
) -> None:
    leader = stack.leader()
    pool(cluster, namespace)
    deploy(cluster, namespace, "guarded")
    cluster.policy.create_namespaced_pod_disruption_budget(
        namespace,
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "guarded"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "guarded"}}},
        },
    )
    original = wait_for(lambda: running_pod(cluster, namespace, "app=guarded"), 60, what="the guarded pod running")
    refused_before = stack.metric(
        leader, "apollo_orchestrator_evictions_refused_by_pdb_total", f'namespace="{namespace}"'
    )
    name = migrate(cluster, namespace, original.metadata.name)
    blocked = wait_for(
        lambda: (m := read(cluster, namespace, name)).status.eviction_attempts >= 2 and m, 60, what="two refusals"
    )
    assert blocked.status.phase == Phase.EVICTING
    cond = next(c for c in blocked.status.conditions if c.type == "Evicted")
    assert cond.reason == "DisruptionBudget" and "disruption budget" in cond.message
    assert cluster.core.read_namespaced_pod(original.metadata.name, namespace).metadata.uid == original.metadata.uid
    refused = stack.metric(leader, "apollo_orchestrator_evictions_refused_by_pdb_total", f'namespace="{namespace}"')
    assert refused - refused_before >= 2
    cluster.policy.patch_namespaced_pod_disruption_budget("guarded", namespace, {"spec": {"minAvailable": 0}})
    m = finished(cluster, namespace, name)
    assert m.status.phase == Phase.SUCCEEDED, m.status.message
    assert m.status.eviction_attempts >= 3 and "evictionRequested" in m.status.steps


def test_a_reserved_target_is_not_taken_by_a_pod_created_during_the_migration(
    cluster: ClusterHandle, stack: Stack, namespace: str
) -> None:
    stack.leader()
    a, b = pool(cluster, namespace, cpu="1")  # room for exactly one 1-core pod each
    deploy(cluster, namespace, "big", cpu="1")
    cluster.policy.create_namespaced_pod_disruption_budget(
        namespace,
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "big"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "big"}}},
        },
    )
    original = wait_for(lambda: running_pod(cluster, namespace, "app=big"), 60, what="the big pod running")
    source = original.spec.node_name
    target = b if source == a else a
    name = migrate(cluster, namespace, original.metadata.name, targetNode=target)
    wait_for(lambda: read(cluster, namespace, name).status.eviction_attempts >= 1, 60, what="the eviction held back")
    # The move is under way (captured, reservation written, eviction refused for now). A pod created now
    # would fit on the target by kube-scheduler's own accounting; the extender keeps it off.
    intruder = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "intruder"},
        "spec": {"nodeSelector": {"pool": namespace}, "containers": [container("main", "1")]},
    }
    cluster.core.create_namespaced_pod(namespace, intruder)

    def refused_for_reservation() -> bool:
        return any(
            e.reason == "FailedScheduling" and "capacity reserved for migration" in (e.message or "")
            for e in events_for(cluster, namespace, "Pod", "intruder")
        )

    wait_for(refused_for_reservation, 60, what="the scheduler to refuse the intruder the reserved node")
    assert not cluster.core.read_namespaced_pod("intruder", namespace).spec.node_name
    cluster.policy.patch_namespaced_pod_disruption_budget("big", namespace, {"spec": {"minAvailable": 0}})
    m = finished(cluster, namespace, name)
    assert m.status.phase == Phase.SUCCEEDED and m.status.replacement_node == target, m.status.message
    # The replacement got the reserved room; the intruder takes what the source freed.
    placed = wait_for(
        lambda: cluster.core.read_namespaced_pod("intruder", namespace).spec.node_name, 60, what="the intruder bound"
    )
    assert placed == source


def test_killed_between_the_eviction_and_the_rescheduling_the_migration_still_finishes(
    cluster: ClusterHandle, stack: Stack, namespace: str
) -> None:
    leader = stack.leader()
    a, b = pool(cluster, namespace)
    deploy(cluster, namespace, "phoenix")
    original = wait_for(lambda: running_pod(cluster, namespace, "app=phoenix"), 60, what="the pod running")
    target = b if original.spec.node_name == a else a
    name = migrate(cluster, namespace, original.metadata.name, targetNode=target)
    # Between capture and the eviction (the settle pause), cordon the target: the replacement, pinned there by
    # the webhook, then waits in Pending, so the orchestrator is surely killed before it is rescheduled.
    wait_for(lambda: read(cluster, namespace, name).status.phase == Phase.EVICTING, 30, interval=0.05, what="Evicting")
    cluster.core.patch_node(target, {"spec": {"unschedulable": True}})
    try:
        wait_for(
            lambda: (
                cluster.core.list_namespaced_pod(
                    namespace, field_selector=f"metadata.name={original.metadata.name}"
                ).items
                == []
            ),
            30,
            interval=0.05,
            what="the source pod evicted",
        )
        leader.kill()
        at_kill = read(cluster, namespace, name)
        assert at_kill.status.phase in (Phase.EVICTING, Phase.RESCHEDULING)
        assert not at_kill.status.replacement_node
        replacement = wait_for(
            lambda: (
                running_pod(cluster, namespace, "app=phoenix") is None
                and cluster.core.list_namespaced_pod(namespace, label_selector="app=phoenix").items
            ),
            30,
            what="the replacement created and pending",
        )
        assert not replacement[0].spec.node_name
    finally:
        cluster.core.patch_node(target, {"spec": {"unschedulable": False}})
    stack.start_orchestrator()  # a new process: it waits for the dead one's lease, then resumes
    m = finished(cluster, namespace, name, timeout=90)
    assert m.status.phase == Phase.SUCCEEDED, m.status.message
    assert m.status.eviction_attempts == 1  # resumed, not redone
    assert m.status.replacement_node == target
    # Never a second eviction. The first one's Event may be lost: it is posted after the eviction, and the
    # process can be killed in between (the status, written first, is what the resumed controller reads).
    evicted = [e for e in events_for(cluster, namespace, "PodMigration", name) if e.reason == "Evicted"]
    assert len(evicted) <= 1


def test_a_second_replica_never_acts_while_the_first_holds_the_lease(
    cluster: ClusterHandle, stack: Stack, namespace: str
) -> None:
    first = stack.leader()
    standby = stack.start_orchestrator(wait_leader=False)
    state = standby.wait_ready(lambda b: b.get("lease_holder") not in ("", None), timeout=30, what="standby")
    assert state["leader"] is False and state["lease_holder"] == (first.probe() or {}).get("identity")
    pool(cluster, namespace)
    deploy(cluster, namespace, "duo")
    original = wait_for(lambda: running_pod(cluster, namespace, "app=duo"), 60, what="the pod running")
    name = migrate(cluster, namespace, original.metadata.name)
    m = finished(cluster, namespace, name)
    assert m.status.phase == Phase.SUCCEEDED
    leader_id = (first.probe() or {}).get("identity")
    instances = {e.reporting_instance for e in events_for(cluster, namespace, "PodMigration", name)}
    assert instances == {leader_id}
    assert stack.metric(standby, "apollo_orchestrator_reconcile_seconds_count") == 0
    assert stack.metric(standby, "apollo_orchestrator_evictions_total") == 0

    first.kill()  # the standby takes over once the lease expires
    standby.wait_ready(lambda b: b.get("leader") is True and b.get("synced") is True, timeout=30, what="take-over")
    moved = running_pod(cluster, namespace, "app=duo")
    second = migrate(cluster, namespace, moved.metadata.name)
    m2 = finished(cluster, namespace, second)
    assert m2.status.phase == Phase.SUCCEEDED
    standby_id = (standby.probe() or {}).get("identity")
    assert {e.reporting_instance for e in events_for(cluster, namespace, "PodMigration", second)} == {standby_id}
    standby.stop()  # SIGTERM: a clean stop releases the lease, so a successor need not wait for it to expire
    lease = client.CoordinationV1Api(cluster.api).read_namespaced_lease(LEASE, "default")
    assert lease.spec is not None and not lease.spec.holder_identity


def test_a_migrate_policy_from_apollo_ends_as_a_succeeded_migration_and_a_result(
    cluster: ClusterHandle, stack: Stack, namespace: str
) -> None:
    stack.leader()
    nodes = pool(cluster, namespace, cpu="16")
    for node in nodes:
        stack.exporter.cpu[node], stack.exporter.memory[node] = 0.10, 0.20
    deploy(cluster, namespace, "trainer", cpu="4")
    original = wait_for(lambda: running_pod(cluster, namespace, "app=trainer"), 60, what="the trainer running")
    hot = original.spec.node_name
    idle = next(n for n in nodes if n != hot)
    stack.exporter.cpu[hot], stack.exporter.memory[hot] = 0.96, 0.50  # the trainer's node runs hot

    def policy_migration() -> dict[str, Any] | None:
        items = custom(cluster).list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
        return next((o for o in items if o["spec"].get("requestId")), None)

    try:
        obj = wait_for(policy_migration, 120, interval=0.5, what="APOLLO's MIGRATE policy as a PodMigration")
    finally:
        stack.exporter.cpu[hot] = 0.10
    request_id = obj["spec"]["requestId"]
    assert obj["metadata"]["name"] == policy_migration_name(original.metadata.name, request_id)
    assert obj["metadata"]["annotations"]["apollo.io/suggested-node"] == idle
    m = finished(cluster, namespace, obj["metadata"]["name"])
    assert m.status.phase == Phase.SUCCEEDED, m.status.message
    assert m.status.replacement_node == idle and m.status.checkpoint_pvc == "trainer-ckpt"
    reported = wait_for(
        lambda: next((c for c in read(cluster, namespace, m.name).status.conditions if c.type == "Reported"), None),
        30,
        what="the ExecutionResult report",
    )
    assert reported.status == "True" and reported.message.endswith(": recorded")  # APOLLO knew the request
    log = stack.apollo.log_path.read_text()
    assert re.search(rf'"msg": "execution result".*"id": "{re.escape(request_id)}".*"success": true', log)


def test_bad_requests_end_in_a_clear_condition_and_touch_nothing(
    cluster: ClusterHandle, stack: Stack, namespace: str
) -> None:
    stack.leader()
    nodes = pool(cluster, namespace)
    cluster.apps.create_namespaced_daemon_set(
        namespace,
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": "agent"},
            "spec": {
                "selector": {"matchLabels": {"app": "agent"}},
                "template": {
                    "metadata": {"labels": {"app": "agent"}},
                    "spec": {"nodeSelector": {"pool": namespace}, "containers": [container("agent")]},
                },
            },
        },
    )
    deploy(cluster, namespace, "busy")
    agent = wait_for(lambda: running_pod(cluster, namespace, "app=agent"), 60, what="a DaemonSet pod running")
    busy = wait_for(lambda: running_pod(cluster, namespace, "app=busy"), 60, what="the busy pod running")
    cluster.policy.create_namespaced_pod_disruption_budget(
        namespace,
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "busy"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "busy"}}},
        },
    )
    first = migrate(cluster, namespace, busy.metadata.name)  # held by the budget: stays active
    wait_for(lambda: read(cluster, namespace, first).status.phase == Phase.EVICTING, 30, what="the first one active")
    cases = {
        migrate(cluster, namespace, "ghost"): ("NotFound", "spec.podName: pod"),
        migrate(cluster, namespace, busy.metadata.name, targetNode="no-such-node"): ("NotFound", "spec.targetNode"),
        migrate(cluster, namespace, agent.metadata.name): ("Unprocessable", "DaemonSet agent"),
        migrate(cluster, namespace, busy.metadata.name, targetNode=busy.spec.node_name): (
            "Unprocessable",
            "target must differ",
        ),
        migrate(cluster, namespace, busy.metadata.name): ("Conflict", "already migrating"),
    }
    for name, (reason, text) in cases.items():
        m = finished(cluster, namespace, name, timeout=30)
        failed = next(c for c in m.status.conditions if c.type == "Failed")
        assert (m.status.phase, failed.reason) == (Phase.FAILED, reason), m.status.message
        assert text in m.status.message and "nothing was touched" in m.status.message
    # The API server itself refuses what the schema rules out: a timeout out of range, source equal to target.
    for spec in ({"timeoutSeconds": 5}, {"sourceNode": nodes[0], "targetNode": nodes[0]}):
        with pytest.raises(client.ApiException) as refused:
            migrate(cluster, namespace, busy.metadata.name, **spec)
        assert refused.value.status == 422
    # Nothing was evicted: both pods are the ones that were there.
    assert cluster.core.read_namespaced_pod(busy.metadata.name, namespace).metadata.uid == busy.metadata.uid
    assert cluster.core.read_namespaced_pod(agent.metadata.name, namespace).metadata.uid == agent.metadata.uid
    cluster.policy.delete_namespaced_pod_disruption_budget("busy", namespace)
    assert finished(cluster, namespace, first).status.phase == Phase.SUCCEEDED
