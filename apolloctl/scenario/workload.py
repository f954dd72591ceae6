"""The seed's AI workload: its Job, the claim its checkpoints live on, what its pods request.

Shared by the story, the migration benchmark (`bench.migration`) and the end-to-end tests, so that the
Job they move is the same one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apollo_api.podmigration import CHECKPOINT_LABEL, checkpoint_claim_name
from apolloctl.cluster import LocalCluster
from apolloctl.cluster.configs import LOCAL_RUN_ANNOTATION
from apolloctl.launch import poll
from apolloctl.podrunner import hostpath_pv
from apolloctl.workloads import TRAINER_DIR
from apolloctl.workloads.checkpoint import CheckpointStore, decode
from common.quantity import parse_quantity

NAMESPACE = "ml"
JOB_NAME = "train"
APP_LABEL = "app.kubernetes.io/name"
APP = "seed-training"
# The story's Job runs on the nodes carrying this label (the story's own, not the demo's first ones).
STORY_LABEL = {"apollo.io/scenario": "story"}


@dataclass(frozen=True)
class WorkloadShape:
    """How big the seed's Job is: the work of each program and what each container requests.

    data-prep is the CPU-heavy step (a full core while it featurises), the trainer a paced numpy loop,
    the monitor almost nothing; the requests say so. Defaults take a few seconds of data-prep and
    train at 20 steps per second, checkpointing every 2 s.
    """

    samples: int = 20_000
    signal_length: int = 1024
    batch: int = 2048
    steps_per_second: float = 20.0
    checkpoint_seconds: float = 2.0
    grace_seconds: int = 30
    requests: Mapping[str, tuple[str, str]] = field(
        default_factory=lambda: {
            "data-prep": ("1", "1Gi"),
            "trainer": ("1", "1Gi"),
            "monitor": ("100m", "128Mi"),
        }
    )


def _container(name: str, module: str, args: list[str], requests: tuple[str, str]) -> dict[str, Any]:
    return {
        "name": name,
        "image": "apollo-stack:0.1.0",
        "command": ["python", "-m", f"apolloctl.workloads.{module}", *args],
        "resources": {"requests": {"cpu": requests[0], "memory": requests[1]}},
    }


def seed_job(
    name: str = JOB_NAME,
    shape: WorkloadShape | None = None,
    *,
    checkpoint: bool = True,
    node_selector: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The seed's AI Job: data-prep, trainer and monitor in one pod, run by the local pod runner.

    With `checkpoint`, the pod opts in (label) and the webhook gives it the workload's claim and
    ``CHECKPOINT_DIR``. Without, it is what plain Kubernetes runs: ``CHECKPOINT_DIR`` on an emptyDir,
    lost with the pod (the benchmark's native baseline). An eviction never counts against the Job
    (pod failure policy on DisruptionTarget), and SIGTERM means "checkpoint, then exit 143".
    """
    s = shape or WorkloadShape()
    containers = [
        _container(
            "data-prep",
            "dataprep",
            ["--samples", str(s.samples), "--signal-length", str(s.signal_length)],
            s.requests["data-prep"],
        ),
        _container(
            "trainer",
            "trainer",
            [
                "--batch",
                str(s.batch),
                "--steps-per-second",
                str(s.steps_per_second),
                "--checkpoint-seconds",
                str(s.checkpoint_seconds),
            ],
            s.requests["trainer"],
        ),
        _container("monitor", "monitor", ["--interval", "5"], s.requests["monitor"]),
    ]
    labels = {APP_LABEL: APP}
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": s.grace_seconds,
        "containers": containers,
    }
    if node_selector:
        spec["nodeSelector"] = dict(node_selector)
    if checkpoint:
        labels[CHECKPOINT_LABEL] = "true"
    else:
        for c in containers:
            c["env"] = [{"name": "CHECKPOINT_DIR", "value": "/scratch"}]
            c["volumeMounts"] = [{"name": "scratch", "mountPath": "/scratch"}]
        spec["volumes"] = [{"name": "scratch", "emptyDir": {}}]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {APP_LABEL: APP}},
        "spec": {
            "backoffLimit": 0,
            "podFailurePolicy": {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]},
            "template": {
                "metadata": {"labels": labels, "annotations": {LOCAL_RUN_ANNOTATION: "true"}},
                "spec": spec,
            },
        },
    }


def checkpoint_volume(core: Any, cluster: LocalCluster, namespace: str, job: str) -> Path:
    """A hostPath PV under the cluster's run directory, reserved for the Job's checkpoint claim.

    The webhook creates the claim (``<job>-ckpt``) at the first pod's admission; the PV names it in
    its claimRef, so the claim binds to it at once and to nothing else.
    """
    claim = checkpoint_claim_name("", "Job", job)
    directory = cluster.volumes_dir / namespace / claim
    core.create_persistent_volume(hostpath_pv(f"{namespace}-{claim}", directory, claim=(namespace, claim)))
    return directory


def pod_requests(pod: Mapping[str, Any]) -> tuple[float, float]:
    """(cpu cores, memory bytes) requested by the pod's containers (what it reserves on its node)."""
    cpu = mem = 0.0
    for c in (pod.get("spec") or {}).get("containers") or []:
        req = (c.get("resources") or {}).get("requests") or {}
        cpu += parse_quantity(req.get("cpu", 0))
        mem += parse_quantity(req.get("memory", 0))
    return cpu, mem


def ensure_namespace(core: Any, name: str) -> None:
    from kubernetes import client

    try:
        core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    except client.ApiException as exc:
        if exc.status != 409:
            raise
    poll(lambda: _default_sa(core, name), 30, f"namespace {name}'s default service account")


def _default_sa(core: Any, namespace: str) -> bool | None:
    from kubernetes import client

    try:
        core.read_namespaced_service_account("default", namespace)
        return True
    except client.ApiException:
        return None


def source_checkpoint(directory: Path, pod: str) -> int | None:
    """The newest checkpoint step `pod` wrote (each checkpoint records its writer)."""
    store = CheckpointStore(directory / TRAINER_DIR)
    for step, path in store.candidates():
        with contextlib.suppress(Exception):
            if decode(path.read_bytes()).extra.get("pod") == pod:
                return step
    return None
