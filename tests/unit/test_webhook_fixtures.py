"""AdmissionReview documents as kube-apiserver v1.33 sends them for pod CREATE, and PodMigrations to match.

The pods are what the controllers really create: a ReplicaSet's pod has only `generateName` at admission,
its controller owner reference and the `pod-template-hash` label; an Indexed Job's pod carries the
completion index as annotation and label and the Job's controller-uid labels; a bare pod has a name and
no owner. Shared by the webhook's unit tests; it holds no tests itself.
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

from apollo_api.podmigration import PodMigration

Json = dict[str, Any]
RS_UID = "4b7f7f0e-1c1b-4a53-9d9e-7f3e1d2c5a10"
JOB_UID = "9a1f0c3e-5d6b-4e2a-8b7c-0d9e8f7a6b50"


def container(name: str, **extra: Any) -> Json:
    return {
        "name": name,
        "image": f"registry.example/{name}:1",
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "imagePullPolicy": "IfNotPresent",
        **extra,
    }


def _spec(containers: list[Json], init: list[Json] | None = None, restart: str = "Always") -> Json:
    spec: Json = {
        "containers": containers,
        "restartPolicy": restart,
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "serviceAccountName": "default",
        "securityContext": {},
        "schedulerName": "default-scheduler",
        "enableServiceLinks": True,
        "preemptionPolicy": "PreemptLowerPriority",
        "priority": 0,
        "tolerations": [
            {
                "key": "node.kubernetes.io/not-ready",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            }
        ],
        "volumes": [
            {
                "name": "kube-api-access-x7k2p",
                "projected": {"sources": [{"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}]},
            }
        ],
    }
    if init:
        spec["initContainers"] = init
    return spec


def replicaset_pod(namespace: str = "team-a", opted_in: bool = True) -> Json:
    labels = {"app": "trainer", "pod-template-hash": "7d9c5b8f4"}
    if opted_in:
        labels["apollo.io/checkpoint"] = "true"
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "generateName": "trainer-7d9c5b8f4-",
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "trainer-7d9c5b8f4",
                    "uid": RS_UID,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": _spec([container("trainer"), container("monitor")]),
        "status": {},
    }


def job_pod(index: int = 2, namespace: str = "team-a") -> Json:
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "generateName": f"prep-{index}-",
            "namespace": namespace,
            "labels": {
                "apollo.io/checkpoint": "true",
                "batch.kubernetes.io/controller-uid": JOB_UID,
                "batch.kubernetes.io/job-name": "prep",
                "controller-uid": JOB_UID,
                "job-name": "prep",
                "batch.kubernetes.io/job-completion-index": str(index),
            },
            "annotations": {"batch.kubernetes.io/job-completion-index": str(index)},
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": "prep",
                    "uid": JOB_UID,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {**_spec([container("loader"), container("trainer")], restart="Never"), "hostname": f"prep-{index}"},
        "status": {},
    }


def bare_pod(name: str = "notebook", namespace: str = "team-a") -> Json:
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {"name": name, "namespace": namespace, "labels": {"apollo.io/checkpoint": "true"}},
        "spec": _spec([container("main")]),
        "status": {},
    }


def sidecar_pod(namespace: str = "team-a") -> Json:
    """A Job pod with a native sidecar (init container, restartPolicy Always) and a plain init container."""
    pod = job_pod(0, namespace)
    pod["metadata"]["generateName"] = "prep-0-"
    pod["spec"]["initContainers"] = [
        container("fetch"),
        container("log-shipper", restartPolicy="Always"),
    ]
    return pod


def review(pod: Json, *, operation: str = "CREATE", dry_run: bool = False, uid: str | None = None) -> Json:
    meta = pod.get("metadata") or {}
    return {
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": uid or str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": meta.get("name", ""),
            "namespace": meta.get("namespace", ""),
            "operation": operation,
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller", "groups": []},
            "object": copy.deepcopy(pod),
            "oldObject": None,
            "dryRun": dry_run,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
        },
    }


def migration(
    name: str,
    namespace: str = "team-a",
    *,
    pod_name: str,
    phase: str = "Evicting",
    owner: tuple[str, str, str] = ("", "", ""),
    index: str = "",
    target: str = "",
    suggested: str = "",
    source: str = "node-0",
    containers: list[Json] | None = None,
    checkpoint_pvc: str = "",
    replacement_pod: str = "",
    evicted_at: str = "2025-01-01T00:00:00Z",
) -> PodMigration:
    """A PodMigration as the orchestrator leaves it after capture and eviction (JSON, as the watch gives it)."""
    kind, owner_name, owner_uid = owner
    return PodMigration.from_json(
        {
            "apiVersion": "apollo.io/v1alpha1",
            "kind": "PodMigration",
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": "2025-01-01T00:00:00Z"},
            "spec": {"podName": pod_name, "targetNode": target, "timeoutSeconds": 300},
            "status": {
                "phase": phase,
                "sourceNode": source,
                "ownerKind": kind,
                "ownerName": owner_name,
                "ownerUID": owner_uid,
                "jobCompletionIndex": index,
                "containers": containers or [],
                "checkpointPVC": checkpoint_pvc,
                "suggestedNode": suggested,
                "replacementPod": replacement_pod,
                "steps": {"evictionRequested": evicted_at},
            },
        }
    )


def completed(name: str, *, init: bool = False, sidecar: bool = False) -> Json:
    return {"name": name, "init": init, "sidecar": sidecar, "state": "terminated", "exitCode": 0, "migrate": False}


def running(name: str, *, init: bool = False, sidecar: bool = False) -> Json:
    return {"name": name, "init": init, "sidecar": sidecar, "state": "running", "migrate": True}
