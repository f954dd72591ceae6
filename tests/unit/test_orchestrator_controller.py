"""The controller, leader election and APOLLO link against an in-memory API server (a fake `Kube`).

The fake keeps the API server's rules that matter here: resourceVersions and conflicts, the status
subresource, finalizers holding a deleted object, evictions refused while a budget says so, UID
preconditions, watch streams. A small "cluster" step plays the Job controller, the scheduler and the
kubelet, so whole migrations run through the real controller code.
"""

from __future__ import annotations

import copy
import itertools
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from apollo_api.podmigration import (
    MIGRATION_ANNOTATION,
    RESUMED_FROM_ANNOTATION,
    SUGGESTED_NODE_ANNOTATION,
    Phase,
    PodMigration,
)
from apollo_api.v1 import apollo_pb2 as pb
from apollo_api.v1 import apollo_pb2_grpc as pb_grpc
from common.settings import build
from orchestrator import podinfo
from orchestrator.apollo_link import (
    AUTOSCALE_ANNOTATION,
    AUTOSCALE_MAX_ANNOTATION,
    ApolloLink,
    migration_from_policy,
    policy_migration_name,
    scale_plan,
)
from orchestrator.cache import MigrationCache
from orchestrator.config import ApolloLinkSettings, CapSettings, EvictionSettings, LeaderSettings
from orchestrator.controller import Controller
from orchestrator.effects import FINALIZER, MachineConfig, Outcome, Report
from orchestrator.kube import ApiError
from orchestrator.leader import LeaderElector, Observation, decide
from orchestrator.machine import Machine
from orchestrator.metrics import OrchestratorMetrics
from orchestrator.workqueue import WorkQueue

Obj = dict[str, Any]
NS = "ns"


class FakeKube:
    """An in-memory API server implementing `orchestrator.kube.Kube`."""

    def __init__(self) -> None:
        self.rv = itertools.count(100)
        self.migrations: dict[tuple[str, str], Obj] = {}
        self.pods: dict[tuple[str, str], Obj] = {}
        self.nodes: dict[str, Obj] = {}
        self.pvcs: dict[tuple[str, str], Obj] = {}
        self.jobs: dict[tuple[str, str], Obj] = {}
        self.workloads: dict[tuple[str, str, str], Obj] = {}
        self.leases: dict[tuple[str, str], Obj] = {}
        self.events: list[Obj] = []
        self.evictions: list[str] = []
        self.budget_blocks: set[str] = set()  # pod names whose eviction a PDB refuses
        self.fail_status_writes = 0  # the next N status writes conflict
        self.fail_leases = False
        self.watchers: list[queue.Queue[tuple[str, Obj]]] = []
        self.lock = threading.RLock()

    # helpers
    def _stamp(self, obj: Obj) -> Obj:
        obj.setdefault("metadata", {})["resourceVersion"] = str(next(self.rv))
        return obj

    def _notify(self, kind: str, obj: Obj) -> None:
        for w in list(self.watchers):
            w.put((kind, copy.deepcopy(obj)))

    def add_pod(self, pod: Obj) -> Obj:
        with self.lock:
            meta = pod["metadata"]
            meta.setdefault("uid", f"uid-{meta['name']}-{next(self.rv)}")
            meta.setdefault("creationTimestamp", podinfo.rfc3339(time.time()))
            self.pods[(meta["namespace"], meta["name"])] = self._stamp(pod)
            self._notify("ADDED", pod)
            return pod

    def remove_pod(self, namespace: str, name: str) -> None:
        with self.lock:
            pod = self.pods.pop((namespace, name), None)
            if pod is not None:
                self._notify("DELETED", pod)

    # PodMigrations
    def list_migrations(self) -> tuple[list[Obj], str]:
        with self.lock:
            return [copy.deepcopy(o) for o in self.migrations.values()], str(next(self.rv))

    def watch_migrations(self, resource_version: str, stopping: Callable[[], bool]) -> Iterator[tuple[str, Obj]]:
        return self._watch(stopping, lambda o: o.get("kind") == "PodMigration")

    def _watch(self, stopping: Callable[[], bool], want: Callable[[Obj], bool]) -> Iterator[tuple[str, Obj]]:
        q: queue.Queue[tuple[str, Obj]] = queue.Queue()
        self.watchers.append(q)
        try:
            while not stopping():
                try:
                    kind, obj = q.get(timeout=0.05)
                except queue.Empty:
                    continue
                if want(obj):
                    yield kind, obj
        finally:
            self.watchers.remove(q)

    def read_migration(self, namespace: str, name: str) -> Obj | None:
        with self.lock:
            obj = self.migrations.get((namespace, name))
            return copy.deepcopy(obj) if obj else None

    def create_migration(self, namespace: str, body: Obj) -> Obj:
        with self.lock:
            key = (namespace, body["metadata"]["name"])
            if key in self.migrations:
                raise ApiError(409, "already exists", "AlreadyExists")
            obj = copy.deepcopy(body)
            obj["kind"] = "PodMigration"
            obj["metadata"].update(
                namespace=namespace, uid=f"uid-{key[1]}", creationTimestamp=podinfo.rfc3339(time.time())
            )
            obj["spec"].setdefault("timeoutSeconds", 300)
            obj["spec"].setdefault("preservePV", True)
            obj.pop("status", None)
            self.migrations[key] = self._stamp(obj)
            self._notify("ADDED", obj)
            return copy.deepcopy(obj)

    def _check_rv(self, held: Obj, body: Obj) -> None:
        want = (body.get("metadata") or {}).get("resourceVersion")
        if want and want != held["metadata"]["resourceVersion"]:
            raise ApiError(409, "the object has been modified", "Conflict")

    def replace_migration_status(self, namespace: str, name: str, body: Obj) -> Obj:
        with self.lock:
            held = self.migrations.get((namespace, name))
            if held is None:
                raise ApiError(404, "not found", "NotFound")
            if self.fail_status_writes:
                self.fail_status_writes -= 1
                self._stamp(held)  # someone else wrote meanwhile
                raise ApiError(409, "the object has been modified", "Conflict")
            self._check_rv(held, body)
            held["status"] = copy.deepcopy(body["status"])
            self._stamp(held)
            self._notify("MODIFIED", held)
            return copy.deepcopy(held)

    def patch_migration(self, namespace: str, name: str, patch: Obj) -> Obj:
        with self.lock:
            held = self.migrations.get((namespace, name))
            if held is None:
                raise ApiError(404, "not found", "NotFound")
            meta = patch.get("metadata") or {}
            self._check_rv(held, patch)
            if "labels" in meta:
                held["metadata"].setdefault("labels", {}).update(meta["labels"])
            if "annotations" in meta:
                held["metadata"].setdefault("annotations", {}).update(meta["annotations"])
            if "finalizers" in meta:
                held["metadata"]["finalizers"] = list(meta["finalizers"])
            self._stamp(held)
            if held["metadata"].get("deletionTimestamp") and not held["metadata"].get("finalizers"):
                del self.migrations[(namespace, name)]
                self._notify("DELETED", held)
            else:
                self._notify("MODIFIED", held)
            return copy.deepcopy(held)

    def delete_migration(self, namespace: str, name: str, uid: str = "") -> None:
        with self.lock:
            held = self.migrations.get((namespace, name))
            if held is None:
                return
            if held["metadata"].get("finalizers"):
                held["metadata"]["deletionTimestamp"] = podinfo.rfc3339(time.time())
                self._stamp(held)
                self._notify("MODIFIED", held)
                return
            del self.migrations[(namespace, name)]
            self._notify("DELETED", held)

    # pods
    def read_pod(self, namespace: str, name: str) -> Obj | None:
        with self.lock:
            pod = self.pods.get((namespace, name))
            return copy.deepcopy(pod) if pod else None

    def list_pods(self, namespace: str) -> list[Obj]:
        with self.lock:
            return [copy.deepcopy(p) for (ns, _), p in self.pods.items() if ns == namespace]

    def list_bound_pods(self, node: str = "") -> list[Obj]:
        with self.lock:
            return [
                copy.deepcopy(p)
                for p in self.pods.values()
                if podinfo.node_of(p) and (not node or podinfo.node_of(p) == node)
            ]

    def pods_resource_version(self) -> str:
        return str(next(self.rv))

    def watch_pods(self, resource_version: str, stopping: Callable[[], bool]) -> Iterator[tuple[str, Obj]]:
        return self._watch(stopping, lambda o: "spec" in o and o.get("kind") != "PodMigration")

    def evict(self, namespace: str, name: str, uid: str) -> None:
        with self.lock:
            pod = self.pods.get((namespace, name))
            if pod is None:
                raise ApiError(404, "pods not found", "NotFound")
            if uid and pod["metadata"]["uid"] != uid:
                raise ApiError(409, "Precondition failed: UID in precondition", "Conflict")
            if name in self.budget_blocks:
                raise ApiError(429, "Cannot evict pod as it would violate the pod's disruption budget.", "TooMany")
            self.evictions.append(name)
            pod["metadata"]["deletionTimestamp"] = podinfo.rfc3339(time.time())
            self._stamp(pod)
            self._notify("MODIFIED", pod)

    def create_pod(self, namespace: str, body: Obj) -> Obj:
        with self.lock:
            if (namespace, body["metadata"]["name"]) in self.pods:
                raise ApiError(409, "already exists", "AlreadyExists")
            pod = copy.deepcopy(body)
            pod["metadata"]["namespace"] = namespace
            pod.setdefault("status", {"phase": "Pending"})
            return copy.deepcopy(self.add_pod(pod))

    # the rest
    def read_node(self, name: str) -> Obj | None:
        return copy.deepcopy(self.nodes.get(name))

    def list_nodes(self) -> list[Obj]:
        return [copy.deepcopy(n) for n in self.nodes.values()]

    def read_pvc(self, namespace: str, name: str) -> Obj | None:
        return copy.deepcopy(self.pvcs.get((namespace, name)))

    def read_pv(self, name: str) -> Obj | None:
        return None

    def read_job(self, namespace: str, name: str) -> Obj | None:
        return copy.deepcopy(self.jobs.get((namespace, name)))

    def read_workload(self, kind: str, namespace: str, name: str) -> Obj | None:
        return copy.deepcopy(self.workloads.get((kind, namespace, name)))

    def scale_workload(self, kind: str, namespace: str, name: str, replicas: int) -> Obj:
        held = self.workloads.get((kind, namespace, name))
        if held is None:
            raise ApiError(404, "not found", "NotFound")
        held["spec"]["replicas"] = replicas
        return copy.deepcopy(held)

    def create_event(self, namespace: str, body: Obj) -> None:
        self.events.append(body)

    def read_lease(self, namespace: str, name: str) -> Obj | None:
        if self.fail_leases:
            raise ApiError(0, "connection refused", "Unreachable")
        return copy.deepcopy(self.leases.get((namespace, name)))

    def create_lease(self, namespace: str, body: Obj) -> Obj:
        with self.lock:
            if (namespace, body["metadata"]["name"]) in self.leases:
                raise ApiError(409, "exists", "AlreadyExists")
            lease = copy.deepcopy(body)
            self.leases[(namespace, body["metadata"]["name"])] = self._stamp(lease)
            return copy.deepcopy(lease)

    def replace_lease(self, namespace: str, name: str, body: Obj) -> Obj:
        with self.lock:
            if self.fail_leases:
                raise ApiError(0, "connection refused", "Unreachable")
            held = self.leases[(namespace, name)]
            self._check_rv(held, body)
            lease = copy.deepcopy(body)
            self.leases[(namespace, name)] = self._stamp(lease)
            return copy.deepcopy(lease)

    def event_reasons(self, kind: str) -> list[str]:
        return [e["reason"] for e in self.events if e["involvedObject"]["kind"] == kind]


# -- a tiny cluster around the fake: Job controller, scheduler and kubelet ----------------------


def node(name: str, cpu: str = "4") -> Obj:
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {},
        "status": {
            "allocatable": {"cpu": cpu, "memory": "16Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def running(pod: Obj, on: str) -> Obj:
    now = podinfo.rfc3339(time.time())
    pod["spec"]["nodeName"] = on
    pod["status"] = {
        "phase": "Running",
        "startTime": now,
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            {"type": "Ready", "status": "True", "lastTransitionTime": now},
        ],
        "containerStatuses": [{"name": c["name"], "state": {"running": {}}} for c in pod["spec"]["containers"]],
    }
    return pod


def job_pod(name: str, on: str = "a", **annotations: str) -> Obj:
    return running(
        {
            "metadata": {
                "name": name,
                "namespace": NS,
                "labels": {"job-name": "train"},
                "annotations": dict(annotations),
                "ownerReferences": [{"kind": "Job", "name": "train", "uid": "uid-job", "controller": True}],
            },
            "spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "trainer", "image": "x", "resources": {"requests": {"cpu": "1"}}}],
            },
        },
        on,
    )


def bare_pod(name: str = "solo", on: str = "a") -> Obj:
    return running(
        {
            "metadata": {"name": name, "namespace": NS, "labels": {"app": "solo"}},
            "spec": {"containers": [{"name": "main", "image": "x", "resources": {"requests": {"cpu": "1"}}}]},
        },
        on,
    )


class Cluster:
    """Plays kubelet (terminating pods vanish, bound pods run), the Job controller and the scheduler."""

    def __init__(self, kube: FakeKube, target: str = "b") -> None:
        self.kube = kube
        self.target = target
        self.created = 0

    def step(self) -> None:
        with self.kube.lock:
            for (ns, name), pod in list(self.kube.pods.items()):
                if pod["metadata"].get("deletionTimestamp"):
                    self.kube.remove_pod(ns, name)
                    if (ns, "train") in self.kube.jobs and name.startswith("train"):
                        self.created += 1
                        self.kube.add_pod(
                            job_pod(f"train-r{self.created}", self.target, **{RESUMED_FROM_ANNOTATION: "9"})
                        )
                elif not podinfo.node_of(pod):
                    self.kube.pods[(ns, name)] = running(pod, self.target)
                    self.kube._stamp(pod)
                    self.kube._notify("MODIFIED", pod)


def new_controller(kube: FakeKube, *, leader: Callable[[], bool] = lambda: True, **cfg: Any) -> Controller:
    settings = {
        "ttl_seconds_after_finished": 3600,
        "resume_grace_seconds": 0.0,
        "eviction": EvictionSettings(settle_seconds=0.0),
        **cfg,
    }
    return Controller(kube, Machine(MachineConfig(**settings)), OrchestratorMetrics.create(), is_leader=leader)


def migration_body(name: str, pod: str, **spec: Any) -> Obj:
    return {
        "apiVersion": "apollo.io/v1alpha1",
        "kind": "PodMigration",
        "metadata": {"name": name},
        "spec": {"podName": pod, **spec},
    }


def drive(ctl: Controller, kube: FakeKube, cluster: Cluster, key: str, rounds: int = 30) -> PodMigration:
    """Reconcile and let the cluster move until the migration finishes (no threads)."""
    for _ in range(rounds):
        ctl.cache.replace_all(kube.list_migrations()[0])
        ctl.reconcile(key)
        cluster.step()
        raw = kube.read_migration(*key.split("/"))
        assert raw is not None
        m = PodMigration.from_json(raw)
        if m.status.phase in Phase.FINISHED:
            return m
    raise AssertionError(f"not finished: {m.status.phase} {m.status.message}")


@pytest.fixture
def kube() -> FakeKube:
    k = FakeKube()
    for name in ("a", "b"):
        k.nodes[name] = node(name)
    return k


def test_a_job_pod_migrates_end_to_end_through_the_controller(kube: FakeKube) -> None:
    kube.jobs[(NS, "train")] = {"spec": {"template": {"spec": {"restartPolicy": "Never"}}}}  # no disruption rule
    kube.add_pod(job_pod("train-0"))
    kube.create_migration(NS, migration_body("mig", "train-0"))
    ctl = new_controller(kube)
    m = drive(ctl, kube, Cluster(kube), f"{NS}/mig")
    assert m.status.phase == Phase.SUCCEEDED, m.status.message
    assert (m.status.replacement_pod, m.status.replacement_node) == ("train-r1", "b")
    assert "no checkpoint to resume" in m.status.message  # the pod did not opt in: Running is the end
    assert kube.evictions == ["train-0"]
    assert {"evicted", "sourceTerminated", "replacementCreated", "running", "finished"} <= set(m.status.steps)
    assert m.labels["apollo.io/pod-name"] == "train-0"  # labelled for lookups
    assert {"Accepted", "JobCountsEviction", "Evicted", "Migrated"} <= set(kube.event_reasons("PodMigration"))
    assert {"JobCountsEviction", "Migrating", "Migrated"} <= set(kube.event_reasons("Pod"))
    counted = ctl.metrics.registry.get_sample_value(
        "apollo_orchestrator_migrations_total", {"phase": "Succeeded", "reason": "Migrated"}
    )
    assert counted == 1.0
    assert (
        ctl.metrics.registry.get_sample_value("apollo_orchestrator_step_seconds_count", {"step": "sourceTerminated"})
        == 1.0
    )


def test_a_pdb_refusal_is_counted_and_retried_then_allowed(kube: FakeKube) -> None:
    kube.add_pod(bare_pod())
    kube.budget_blocks.add("solo")
    kube.create_migration(NS, migration_body("mig", "solo"))
    ctl = new_controller(kube)
    key = f"{NS}/mig"
    for _ in range(3):
        ctl.cache.replace_all(kube.list_migrations()[0])
        ctl.reconcile(key)
    m = PodMigration.from_json(kube.read_migration(NS, "mig") or {})
    assert m.status.phase == Phase.EVICTING and m.status.eviction_attempts == 1
    assert kube.migrations[(NS, "mig")]["metadata"]["finalizers"] == [FINALIZER]  # a bare pod is guarded
    assert (
        ctl.metrics.registry.get_sample_value("apollo_orchestrator_evictions_refused_by_pdb_total", {"namespace": NS})
        == 1.0
    )
    kube.budget_blocks.clear()
    time.sleep(1.05)  # the first backoff
    m = drive(ctl, kube, Cluster(kube), key)
    assert m.status.phase == Phase.SUCCEEDED and m.status.eviction_attempts == 2
    # The bare pod was re-created by the orchestrator under its own name, annotated, and the finalizer is gone.
    pod = kube.pods[(NS, "solo")]
    assert pod["metadata"]["annotations"][MIGRATION_ANNOTATION] == "mig" and podinfo.node_of(pod) == "b"
    assert (
        "finalizers" not in kube.migrations[(NS, "mig")]["metadata"]
        or not kube.migrations[(NS, "mig")]["metadata"]["finalizers"]
    )


def test_a_status_conflict_is_re_read_and_retried(kube: FakeKube) -> None:
    kube.add_pod(bare_pod())
    kube.create_migration(NS, migration_body("mig", "solo"))
    ctl = new_controller(kube)
    ctl.cache.replace_all(kube.list_migrations()[0])
    kube.fail_status_writes = 1
    assert ctl.reconcile(f"{NS}/mig") == 0.0  # conflict: look again at once
    assert not kube.migrations[(NS, "mig")].get("status")
    ctl.reconcile(f"{NS}/mig")
    assert kube.migrations[(NS, "mig")]["status"]["phase"] == Phase.CAPTURING
    assert (
        ctl.metrics.registry.get_sample_value("apollo_orchestrator_reconcile_errors_total", {"kind": "conflict"}) == 1.0
    )


def test_a_replica_that_is_not_leader_acts_on_nothing(kube: FakeKube) -> None:
    kube.add_pod(bare_pod())
    kube.create_migration(NS, migration_body("mig", "solo"))
    ctl = new_controller(kube, leader=lambda: False)
    ctl.cache.replace_all(kube.list_migrations()[0])
    assert ctl.reconcile(f"{NS}/mig") is None
    assert not kube.migrations[(NS, "mig")].get("status") and not kube.events and not kube.evictions


def test_the_cache_sees_our_own_admissions_before_their_watch_events(kube: FakeKube) -> None:
    for i in range(2):
        kube.add_pod(bare_pod(f"solo-{i}"))
        kube.create_migration(NS, migration_body(f"mig-{i}", f"solo-{i}"))
    ctl = new_controller(kube, caps=CapSettings(total=1))
    ctl.cache.replace_all(kube.list_migrations()[0])  # listed once; no watch delivers our writes
    ctl.reconcile(f"{NS}/mig-0")
    ctl.reconcile(f"{NS}/mig-1")
    phases = {k[1]: o["status"]["phase"] for k, o in kube.migrations.items()}
    assert phases == {"mig-0": Phase.CAPTURING, "mig-1": Phase.PENDING}
    assert "cluster-wide, the cap is 1" in kube.migrations[(NS, "mig-1")]["status"]["message"]


def test_cache_ignores_stale_events_and_indexes_pods() -> None:
    cache = MigrationCache()
    new = {
        "metadata": {"name": "m", "namespace": NS, "resourceVersion": "20"},
        "spec": {"podName": "p"},
        "status": {"phase": "Evicting", "ownerUID": "o1"},
    }
    old = copy.deepcopy(new)
    old["metadata"]["resourceVersion"] = "19"
    assert cache.upsert(new) and not cache.upsert(old)
    replacement = {"metadata": {"name": "q", "namespace": NS, "ownerReferences": [{"controller": True, "uid": "o1"}]}}
    assert cache.keys_for_pod(replacement) == [f"{NS}/m"]
    assert cache.keys_for_pod({"metadata": {"name": "q", "namespace": "other"}}) == []


def test_finished_migrations_go_after_their_ttl_and_deleting_releases_the_finalizer(kube: FakeKube) -> None:
    kube.add_pod(bare_pod())
    kube.create_migration(NS, migration_body("mig", "solo"))
    ctl = new_controller(kube, ttl_seconds_after_finished=0)
    drive(ctl, kube, Cluster(kube), f"{NS}/mig")
    ctl.cache.replace_all(kube.list_migrations()[0])
    ctl.reconcile(f"{NS}/mig")
    assert (NS, "mig") not in kube.migrations


def test_watches_drive_a_migration_to_the_end_in_the_background(kube: FakeKube) -> None:
    kube.jobs[(NS, "train")] = {
        "spec": {
            "podFailurePolicy": {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]},
            "template": {"spec": {"restartPolicy": "Never"}},
        }
    }
    kube.add_pod(job_pod("train-0"))
    ctl = new_controller(kube).start()
    cluster = Cluster(kube)
    stop = threading.Event()

    def play() -> None:
        while not stop.is_set():
            cluster.step()
            time.sleep(0.05)

    player = threading.Thread(target=play, daemon=True)
    player.start()
    try:
        deadline = time.monotonic() + 3
        while not ctl.synced and time.monotonic() < deadline:
            time.sleep(0.02)
        kube.create_migration(NS, migration_body("mig", "train-0"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            status = kube.migrations[(NS, "mig")].get("status") or {}
            if status.get("phase") in Phase.FINISHED:
                break
            time.sleep(0.05)
        assert status.get("phase") == Phase.SUCCEEDED, status
        assert "JobCountsEviction" not in kube.event_reasons("PodMigration")
    finally:
        stop.set()
        ctl.stop()
        player.join(2)
    assert not any(
        t.name in ("reconcile-worker", "migration-watch", "pod-watch") and t.is_alive() for t in threading.enumerate()
    )


def test_work_queue_keeps_the_earliest_due_time_and_closes() -> None:
    now = [0.0]
    q = WorkQueue(clock=lambda: now[0])
    q.add("a", 5)
    q.add("a", 1)
    q.add("b", 3)
    q.add("a", 10)  # later: ignored
    assert len(q) == 2 and q.get(timeout=0) is None
    now[0] = 1.0
    assert q.get(timeout=0) == "a"
    now[0] = 3.0
    assert q.get(timeout=0) == "b"
    q.close()
    from common.loops import Stopped

    with pytest.raises(Stopped):
        q.get(timeout=1)


# -- leader election ---------------------------------------------------------------------------


LEASE = LeaderSettings(lease_duration_seconds=15, renew_deadline_seconds=10, retry_period_seconds=2)


def test_decide_creates_renews_waits_and_takes_over_by_local_observation() -> None:
    move = decide(None, "me", Observation(), 100.0, 1e9, LEASE, "ns", "l")
    assert move.action == "create" and move.body and move.body["spec"]["holderIdentity"] == "me"
    # MicroTime: the API server refuses anything but six fractional digits.
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", move.body["spec"]["renewTime"])
    theirs: Obj = {
        "metadata": {"resourceVersion": "5"},
        "spec": {"holderIdentity": "them", "renewTime": "t1", "leaseDurationSeconds": 15, "leaseTransitions": 2},
    }
    first = decide(theirs, "me", Observation(), 100.0, 1e9, LEASE, "ns", "l")
    assert first.action == "wait" and first.observation.seen_at == 100.0
    # The same record 14 s later (local clock): still theirs. 15 s: expired, taken over with a transition.
    assert decide(theirs, "me", first.observation, 114.0, 1e9, LEASE, "ns", "l").action == "wait"
    takeover = decide(theirs, "me", first.observation, 115.0, 1e9, LEASE, "ns", "l")
    assert takeover.action == "acquire" and takeover.body
    assert takeover.body["spec"]["leaseTransitions"] == 3 and takeover.body["metadata"]["resourceVersion"] == "5"
    # A renewal by the holder resets the observation: the standby waits again.
    renewed = {**theirs, "metadata": {"resourceVersion": "6"}, "spec": {**theirs["spec"], "renewTime": "t2"}}
    assert decide(renewed, "me", first.observation, 115.0, 1e9, LEASE, "ns", "l").action == "wait"
    released = {**theirs, "spec": {**theirs["spec"], "holderIdentity": ""}}
    assert decide(released, "me", Observation(), 100.0, 1e9, LEASE, "ns", "l").action == "acquire"
    mine = {**theirs, "spec": {**theirs["spec"], "holderIdentity": "me"}}
    assert decide(mine, "me", Observation(), 100.0, 1e9, LEASE, "ns", "l").action == "renew"


def test_two_electors_never_lead_together_and_hand_over(kube: FakeKube) -> None:
    now = [1000.0]
    state = {"a": 0, "b": 0}

    def elector(name: str) -> LeaderElector:
        def started() -> None:
            state[name] += 1

        def stopped() -> None:
            state[name] -= 1

        return LeaderElector(kube, LEASE, started, stopped, identity=name, clock=lambda: now[0], wall=lambda: now[0])

    a, b = elector("a"), elector("b")
    a.run_once()
    b.run_once()
    assert a.is_leader() and not b.is_leader() and state == {"a": 1, "b": 0}
    for _ in range(10):  # both keep running: a renews, b keeps waiting
        now[0] += 2
        a.run_once()
        b.run_once()
        assert a.is_leader() and not b.is_leader()
    # a cannot reach the API server: it stops acting after the renew deadline, before b may take over.
    kube.fail_leases = True
    lost_at = None
    for _ in range(10):
        now[0] += 2
        a.run_once()
        if not a.is_leader() and lost_at is None:
            lost_at = now[0]
    kube.fail_leases = False
    assert state["a"] == 0 and lost_at is not None
    b.run_once()
    assert b.is_leader() and state["b"] == 1 and b.holder == "b"
    a.run_once()
    assert not a.is_leader()  # the lease is b's now
    # A clean stop releases the lease: a takes over at its next try, not a lease duration later.
    b.stop(timeout=0)
    assert state["b"] == 0
    now[0] += 0.1
    a.run_once()
    assert a.is_leader()


# -- APOLLO link -------------------------------------------------------------------------------


def migrate_policy(rid: str = "r-1", **target: Any) -> pb.OrchestrationPolicy:
    fields = {
        "pod_name": "train-0",
        "pod_namespace": NS,
        "source_node": "a",
        "target_node": "b",
        "preserve_pv": True,
        "timeout_seconds": 120,
        **target,
    }
    return pb.OrchestrationPolicy(
        request_id=rid,
        action=pb.ORCHESTRATION_ACTION_MIGRATE,
        migration=pb.MigrationTarget(**fields),
        constraints=pb.ExecutionConstraints(allow_disruption=True),
        reason="overload predicted on a",
    )


def test_a_migrate_policy_becomes_a_podmigration_with_apollo_s_target_preferred() -> None:
    body, why = migration_from_policy(migrate_policy(), forced_dry_run=False)
    assert body is not None and not why
    assert body["metadata"]["name"] == policy_migration_name("train-0", "r-1")
    assert body["metadata"]["annotations"] == {SUGGESTED_NODE_ANNOTATION: "b"}
    spec = body["spec"]
    assert (spec["podName"], spec["sourceNode"], spec["timeoutSeconds"], spec["requestId"]) == (
        "train-0",
        "a",
        120,
        "r-1",
    )
    assert "targetNode" not in spec and spec["dryRun"] is False
    dry = migrate_policy()
    dry.constraints.allow_disruption = False
    assert migration_from_policy(dry, forced_dry_run=False)[0]["spec"]["dryRun"] is True  # type: ignore[index]
    assert migration_from_policy(migrate_policy(), forced_dry_run=True)[0]["spec"]["dryRun"] is True  # type: ignore[index]
    assert "timeout_seconds must be in [10, 3600]" in migration_from_policy(migrate_policy(timeout_seconds=5), False)[1]
    assert "both 'a'" in migration_from_policy(migrate_policy(target_node="a"), False)[1]
    assert "required" in migration_from_policy(migrate_policy(pod_name=""), False)[1]


def scale_policy(desired: int, up: bool = True) -> pb.OrchestrationPolicy:
    return pb.OrchestrationPolicy(
        request_id="s-1",
        action=pb.ORCHESTRATION_ACTION_SCALE_UP if up else pb.ORCHESTRATION_ACTION_SCALE_DOWN,
        autoscaling=pb.AutoscalingTarget(
            workload_name="web",
            workload_namespace=NS,
            workload_kind="Deployment",
            current_replicas=2,
            desired_replicas=desired,
        ),
        constraints=pb.ExecutionConstraints(allow_disruption=True),
    )


def deployment(annotations: dict[str, str] | None = None, replicas: int = 2) -> Obj:
    return {
        "metadata": {"name": "web", "namespace": NS, "annotations": annotations or {}},
        "spec": {"replicas": replicas},
    }


def test_scale_policies_act_only_on_opted_in_workloads_within_bounds() -> None:
    opted = deployment({AUTOSCALE_ANNOTATION: "true", AUTOSCALE_MAX_ANNOTATION: "4"})
    assert scale_plan(scale_policy(3), opted, enabled=True, dry_run=False).replicas == 3
    assert scale_plan(scale_policy(9), opted, enabled=True, dry_run=False).replicas == 4  # clamped
    assert scale_plan(scale_policy(1, up=False), opted, enabled=True, dry_run=False).replicas == 1
    refused = scale_plan(scale_policy(3), deployment(), enabled=True, dry_run=False)
    assert refused.replicas is None and not refused.success and "not opted in" in refused.reason
    assert "does not exist" in scale_plan(scale_policy(3), None, enabled=True, dry_run=False).reason
    assert "off" in scale_plan(scale_policy(3), opted, enabled=False, dry_run=False).reason
    dry = scale_plan(scale_policy(3), opted, enabled=True, dry_run=True)
    assert dry.replicas is None and dry.success and dry.reason.startswith("dry run")
    bad = deployment({AUTOSCALE_ANNOTATION: "true", AUTOSCALE_MAX_ANNOTATION: "many"})
    assert "not an integer" in scale_plan(scale_policy(3), bad, enabled=True, dry_run=False).reason


class PolicyServer(pb_grpc.OrchestrationPolicyServiceServicer):
    """An APOLLO stand-in on a real gRPC port: streams queued policies, ends streams on demand, records results."""

    def __init__(self) -> None:
        self.outbox: queue.Queue[pb.OrchestrationPolicy | None] = queue.Queue()
        self.results: list[pb.ExecutionResult] = []
        self.subscriptions: list[pb.PolicySubscription] = []

    def SubscribePolicies(
        self, request: pb.PolicySubscription, context: grpc.ServicerContext
    ) -> Iterator[pb.OrchestrationPolicy]:
        self.subscriptions.append(request)
        while context.is_active():
            try:
                item = self.outbox.get(timeout=0.05)
            except queue.Empty:
                continue
            if item is None:
                context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
            yield item

    def GetOrchestrationPolicy(
        self, request: pb.OrchestrationPolicyRequest, context: grpc.ServicerContext
    ) -> pb.OrchestrationPolicy:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not used by the orchestrator")
        raise AssertionError("unreachable")

    def ReportExecutionResult(self, request: pb.ExecutionResult, context: grpc.ServicerContext) -> pb.ReportResponse:
        self.results.append(request)
        return pb.ReportResponse(success=True, message="recorded", request_id=request.request_id)


def test_the_link_creates_migrations_once_reconnects_and_reports(kube: FakeKube) -> None:
    servicer = PolicyServer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_OrchestrationPolicyServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    kube.workloads[("Deployment", NS, "web")] = deployment({AUTOSCALE_ANNOTATION: "true"})
    settings = build(
        ApolloLinkSettings,
        {"address": f"127.0.0.1:{port}", "reconnect_initial_seconds": 0.05, "reconnect_max_seconds": 0.2},
    )
    link = ApolloLink(settings, kube, OrchestratorMetrics.create()).start()
    try:
        servicer.outbox.put(migrate_policy())
        servicer.outbox.put(None)  # APOLLO restarts: the stream fails, the link re-subscribes...
        servicer.outbox.put(migrate_policy())  # ...and APOLLO re-sends what was not acknowledged
        servicer.outbox.put(scale_policy(3))
        bad = migrate_policy("r-bad", timeout_seconds=99999)
        servicer.outbox.put(bad)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (link.received < 4 or len(servicer.results) < 2):
            time.sleep(0.02)
        assert len(servicer.subscriptions) >= 2
        assert servicer.subscriptions[0].action_filters == [1, 3, 4]
        assert list(kube.migrations) == [(NS, policy_migration_name("train-0", "r-1"))]  # once, despite the resend
        assert kube.workloads[("Deployment", NS, "web")]["spec"]["replicas"] == 3
        by_id = {r.request_id: r for r in servicer.results}
        assert by_id["s-1"].success and by_id["s-1"].metrics["replicas_after"] == "3"
        assert not by_id["r-bad"].success and "timeout_seconds" in by_id["r-bad"].failure_reason
        outcome = link.report(Report("r-1", True, "", 1234, {"phase": "Succeeded"}, "train-0", NS, "a", "b", "mig"))
        assert outcome == Outcome(True, 200, "recorded")
        assert servicer.results[-1].execution_duration_ms == 1234 and servicer.results[-1].migration_id == "mig"
    finally:
        link.stop()
        link.close()
        server.stop(0)
    assert not link.connected
    down = ApolloLink(settings, kube, OrchestratorMetrics.create())
    assert not down.report(Report("x", True, "", 0, {}, "", NS, "", "", "")).ok  # APOLLO gone: a failed outcome
    down.close()
