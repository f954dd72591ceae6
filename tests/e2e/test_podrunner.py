"""The local pod runner on the real control plane: real processes behind kwok's pods, a real checkpoint.

The seed's Job (data-prep, trainer, monitor over one checkpoint claim) runs with its processes;
data-prep's exit reaches kwok and the API; an eviction stops the trainer with SIGTERM, which
checkpoints; the Job controller's replacement resumes from exactly that step, which the pod
carries as `apollo.io/resumed-from`. Also: non-zero exits, start errors, and SIGKILL after the grace.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from apollo_api.podmigration import CHECKPOINT_STEP_ANNOTATION, RESUMED_FROM_ANNOTATION
from apolloctl.cluster.configs import COMPLETE_ANNOTATION, LOCAL_RUN_ANNOTATION
from apolloctl.podrunner import PodRunner, RunnerSettings, hostpath_pv
from apolloctl.workloads import RESUMED_FROM_FILE, TRAINER_DIR
from apolloctl.workloads.checkpoint import CheckpointStore
from common.kube import core_v1
from tests.conftest import ClusterHandle
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e
MOUNT = "/var/checkpoint"


@pytest.fixture
def runner(cluster: ClusterHandle, tmp_path: Path) -> Iterator[PodRunner]:
    settings = RunnerSettings(
        kubeconfig=str(cluster.local.kubeconfig),
        state_dir=str(tmp_path / "podrunner"),
        allowed_volume_roots=(str(cluster.local.volumes_dir),),
        tick_seconds=0.1,
        restart_backoff_seconds=1.0,
        shutdown_grace_seconds=5.0,
    ).validate()
    r = PodRunner(core_v1(settings.kubeconfig), settings).start()
    yield r
    r.stop()


def _checkpoint_claim(cluster: ClusterHandle, namespace: str) -> Path:
    directory = cluster.local.volumes_dir / namespace
    cluster.core.create_persistent_volume(hostpath_pv(f"pv-{namespace}", directory, labels={"for": namespace}))
    cluster.core.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "train-ckpt"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "",
                "resources": {"requests": {"storage": "1Gi"}},
                "selector": {"matchLabels": {"for": namespace}},
            },
        },
    )
    wait_for(
        lambda: cluster.core.read_namespaced_persistent_volume_claim("train-ckpt", namespace).status.phase == "Bound",
        what="checkpoint claim Bound",
    )
    return directory


def _container(name: str, module: str, *args: str) -> dict[str, Any]:
    return {
        "name": name,
        "image": "apollo-stack:0.1.0",
        "command": ["python", "-m", f"apolloctl.workloads.{module}", *args],
        "env": [{"name": "CHECKPOINT_DIR", "value": MOUNT}],
        "volumeMounts": [{"name": "apollo-checkpoint", "mountPath": MOUNT}],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
    }


def _job(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "train"},
        "spec": {
            "backoffLimit": 0,
            # An eviction must not count as a failure of the Job (see DESIGN, "Jobs").
            "podFailurePolicy": {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]},
            "template": {
                "metadata": {"annotations": {LOCAL_RUN_ANNOTATION: "true"}},
                "spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 20,
                    "nodeSelector": {"pool": namespace},
                    "containers": [
                        _container("data-prep", "dataprep", "--samples", "1500", "--signal-length", "256"),
                        _container(
                            "trainer",
                            "trainer",
                            "--checkpoint-seconds",
                            "1",
                            "--steps-per-second",
                            "100",
                            "--batch",
                            "256",
                        ),
                        _container("monitor", "monitor", "--interval", "1"),
                    ],
                    "volumes": [{"name": "apollo-checkpoint", "persistentVolumeClaim": {"claimName": "train-ckpt"}}],
                },
            },
        },
    }


def _job_pods(cluster: ClusterHandle, namespace: str) -> list[Any]:
    return list(cluster.core.list_namespaced_pod(namespace, label_selector="job-name=train").items)


def _states(pod: Any) -> dict[str, Any]:
    return {c.name: c.state for c in pod.status.container_statuses or []}


def test_job_runs_checkpoints_and_resumes_after_eviction(
    cluster: ClusterHandle, namespace: str, runner: PodRunner
) -> None:
    nodes = cluster.create_nodes(2, labels={"pool": namespace})
    ckpt = _checkpoint_claim(cluster, namespace)
    cluster.batch.create_namespaced_job(namespace, _job(namespace))

    # data-prep runs for real, exits 0, and kwok reports it completed while the others run on.
    def prep_done() -> Any:
        pods = _job_pods(cluster, namespace)
        if len(pods) != 1:
            return None
        st = _states(pods[0])
        return pods[0] if st.get("data-prep") and st["data-prep"].terminated else None

    first = wait_for(prep_done, timeout=90, what="data-prep to complete")
    st = _states(first)
    assert st["data-prep"].terminated.exit_code == 0 and st["data-prep"].terminated.reason == "Completed"
    assert st["trainer"].running and st["monitor"].running and first.status.phase == "Running"
    assert first.metadata.annotations[COMPLETE_ANNOTATION] == "data-prep"
    assert (ckpt / "data" / "manifest.json").exists()

    # The trainer started from scratch, said so, and the runner mirrored it onto the pod.
    wait_for(
        lambda: (
            cluster.core.read_namespaced_pod(first.metadata.name, namespace).metadata.annotations.get(
                RESUMED_FROM_ANNOTATION
            )
            == "-1"
        ),
        what="resumed-from -1 on the first pod",
    )
    store = CheckpointStore(ckpt / TRAINER_DIR)
    wait_for(lambda: len(store.candidates()) >= 2, timeout=60, what="two periodic checkpoints")
    # ... and each checkpoint's step reaches the pod, where the orchestrator captures it.
    checkpoint_steps = {str(step) for step, _ in store.candidates()}
    wait_for(
        lambda: (
            cluster.core.read_namespaced_pod(first.metadata.name, namespace).metadata.annotations.get(
                CHECKPOINT_STEP_ANNOTATION
            )
            in checkpoint_steps | {str(s) for s, _ in store.candidates()}
        ),
        what="apollo.io/checkpoint-step mirrored from the trainer",
    )

    # Evict: SIGTERM within the grace period; the trainer checkpoints and exits 143.
    cluster.core.create_namespaced_pod_eviction(
        first.metadata.name,
        namespace,
        client.V1Eviction(metadata=client.V1ObjectMeta(name=first.metadata.name, namespace=namespace)),
    )
    wait_for(
        lambda: first.metadata.uid not in {p.metadata.uid for p in _job_pods(cluster, namespace)},
        timeout=60,
        what="evicted pod stopped and removed",
    )
    final_step = store.candidates()[0][0]
    records = [r for r in runner.ledger.records() if r["uid"] == first.metadata.uid]
    by_container = {r["container"]: r for r in records}
    assert by_container["data-prep"]["exit_code"] == 0 and by_container["data-prep"]["reason"] == "completed"
    assert by_container["trainer"]["exit_code"] == 143 and by_container["trainer"]["reason"] == "terminated"
    assert by_container["monitor"]["exit_code"] == 0
    assert by_container["data-prep"]["cpu_seconds"] > 0 and by_container["trainer"]["cpu_seconds"] > 0
    assert by_container["trainer"]["resumed_from"] == -1

    # The Job controller re-creates the pod (the eviction does not count) and its trainer resumes
    # from the checkpoint its predecessor wrote on SIGTERM.
    def replacement_resumed() -> Any:
        pods = [p for p in _job_pods(cluster, namespace) if p.metadata.uid != first.metadata.uid]
        if not pods:
            return None
        return pods[0] if (pods[0].metadata.annotations or {}).get(RESUMED_FROM_ANNOTATION) else None

    second = wait_for(replacement_resumed, timeout=120, what="replacement pod reporting where it resumed")
    assert second.metadata.annotations[RESUMED_FROM_ANNOTATION] == str(final_step)
    # The predecessor's checkpoint-step.json (step final_step) is not taken for the replacement's own,
    # whose first checkpoint holds a later step.
    own = second.metadata.annotations.get(CHECKPOINT_STEP_ANNOTATION)
    assert own is None or int(own) > final_step
    doc = json.loads((ckpt / RESUMED_FROM_FILE).read_text())
    assert doc["pod"] == second.metadata.name and doc["resumed_from"] == final_step
    job = cluster.batch.read_namespaced_job("train", namespace)
    assert not job.status.failed

    cluster.batch.delete_namespaced_job("train", namespace, propagation_policy="Background")
    wait_for(lambda: not _job_pods(cluster, namespace), timeout=60, what="job pods gone")
    wait_for(lambda: not any(r["state"] == "running" for r in runner.ledger.records()), what="every process ended")
    cluster.delete_nodes(nodes)
    with contextlib.suppress(client.ApiException):
        cluster.core.delete_persistent_volume(f"pv-{namespace}")


def _bare_pod(name: str, namespace: str, containers: list[dict[str, Any]], grace: int = 30) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": {LOCAL_RUN_ANNOTATION: "true"}},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": grace,
            "nodeSelector": {"pool": namespace},
            "containers": [{"image": "registry.invalid/x:1", **c} for c in containers],
        },
    }


def test_exit_codes_reach_the_api_and_the_pod_fails(cluster: ClusterHandle, namespace: str, runner: PodRunner) -> None:
    nodes = cluster.create_nodes(1, labels={"pool": namespace})
    cluster.core.create_namespaced_pod(
        namespace,
        _bare_pod(
            "codes",
            namespace,
            [
                {"name": "ok", "command": ["sh", "-c", "sleep 1; exit 0"]},
                {"name": "bad", "command": ["sh", "-c", "sleep 2; exit 3"]},
                {"name": "noentry"},  # no command: cannot run locally, a start error
            ],
        ),
    )

    def failed() -> Any:
        pod = cluster.core.read_namespaced_pod("codes", namespace)
        return pod if pod.status.phase == "Failed" else None

    pod = wait_for(failed, timeout=60, what="pod Failed once every container has exited")
    st = _states(pod)
    assert st["ok"].terminated.exit_code == 0 and st["ok"].terminated.reason == "Completed"
    assert st["bad"].terminated.exit_code == 3 and st["bad"].terminated.reason == "Error"
    assert st["noentry"].terminated.exit_code == 128
    assert runner.log_path(namespace, "codes", "ok").exists()
    start_error = [r for r in runner.ledger.records() if r["pod"] == "codes" and r["container"] == "noentry"]
    assert start_error[0]["state"] == "failed-to-start" and "no command" in start_error[0]["reason"]
    cluster.core.delete_namespaced_pod("codes", namespace)
    wait_for(lambda: not cluster.core.list_namespaced_pod(namespace).items, what="pod removed by the runner")
    cluster.delete_nodes(nodes)


def test_sigkill_after_the_grace_period(cluster: ClusterHandle, namespace: str, runner: PodRunner) -> None:
    nodes = cluster.create_nodes(1, labels={"pool": namespace})
    cluster.core.create_namespaced_pod(
        namespace,
        _bare_pod("stubborn", namespace, [{"name": "main", "command": ["sh", "-c", 'trap "" TERM; sleep 600']}], 2),
    )
    wait_for(
        lambda: any(r["pod"] == "stubborn" and r["state"] == "running" for r in runner.ledger.records()),
        what="process started",
    )
    cluster.core.delete_namespaced_pod("stubborn", namespace)
    # Still there while its process ignores SIGTERM: the runner, as its kubelet, has not confirmed.
    assert cluster.core.read_namespaced_pod("stubborn", namespace).metadata.deletion_timestamp
    wait_for(lambda: not cluster.core.list_namespaced_pod(namespace).items, timeout=30, what="pod removed")
    (rec,) = [r for r in runner.ledger.records() if r["pod"] == "stubborn"]
    assert rec["exit_code"] == 137 and rec["reason"] == "killed"
    assert 1.5 <= rec["finished_at"] - rec["started_at"] < 15
    cluster.delete_nodes(nodes)
