"""What `bench.webhook` sends and creates: pods, AdmissionReviews, active migrations, and its progress line.

The latency part sends the webhook AdmissionReviews of realistic pods (a Deployment's opted-in pod, an
Indexed Job pod that replaces an active migration, a bare pod, a pod already patched); the cluster is
prepared with active PodMigrations for the replacement to match. Both parts and the CLI share these
bodies, the namespace and :func:`say`, so they live in one module the others import.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

from apollo_api.podmigration import API_VERSION, KIND, Phase
from bench.webhook_load import UID_PLACEHOLDER
from bench.webhook_local import LocalWebhook

Json = dict[str, Any]
NAMESPACE = "bench-webhook"
OWNER = "bench-owner"
JOB_UID = "0b9d4c1e-7f3a-4c2b-9e1d-5a6f7e8d9c01"


_T0 = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - _T0:5.1f}s] {message}", flush=True)


def container(name: str, **extra: Any) -> Json:
    """A container as the API server stores it (defaults filled in), requesting half a core and 1 GiB."""
    return {
        "name": name,
        "image": f"registry.example/{name}:1",
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "imagePullPolicy": "IfNotPresent",
        **extra,
    }


def _spec(containers: list[Json], restart: str = "Always") -> Json:
    return {
        "containers": containers,
        "restartPolicy": restart,
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "serviceAccountName": "default",
        "schedulerName": "default-scheduler",
        "enableServiceLinks": True,
        "priority": 0,
        "tolerations": [
            {
                "key": "node.kubernetes.io/not-ready",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
            {
                "key": "node.kubernetes.io/unreachable",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
        ],
        "volumes": [
            {
                "name": "kube-api-access-abcde",
                "projected": {
                    "defaultMode": 420,
                    "sources": [
                        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    ],
                },
            }
        ],
    }


def deployment_pod() -> Json:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "trainer-6f9c7d8b5-",
            "namespace": NAMESPACE,
            "labels": {"app": "trainer", "pod-template-hash": "6f9c7d8b5", "apollo.io/checkpoint": "true"},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "trainer-6f9c7d8b5",
                    "uid": str(uuid.uuid4()),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": _spec([container("trainer", env=[{"name": "EPOCHS", "value": "10"}]), container("monitor")]),
    }


def job_replacement_pod(index: int) -> Json:
    labels = {
        "apollo.io/checkpoint": "true",
        "batch.kubernetes.io/controller-uid": JOB_UID,
        "batch.kubernetes.io/job-name": "prep",
        "batch.kubernetes.io/job-completion-index": str(index),
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": f"prep-{index}-",
            "namespace": NAMESPACE,
            "labels": labels,
            "annotations": {"batch.kubernetes.io/job-completion-index": str(index)},
            "ownerReferences": [
                {"apiVersion": "batch/v1", "kind": "Job", "name": "prep", "uid": JOB_UID, "controller": True}
            ],
        },
        "spec": _spec([container("loader"), container("trainer")], restart="Never"),
    }


def bare_pod() -> Json:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "notebook-0", "namespace": NAMESPACE, "labels": {"apollo.io/checkpoint": "true"}},
        "spec": _spec([container("main")]),
    }


def review_body(pod: Json) -> bytes:
    meta = pod["metadata"]
    return orjson.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": UID_PLACEHOLDER,
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
                "requestResource": {"group": "", "version": "v1", "resource": "pods"},
                "name": meta.get("name", ""),
                "namespace": NAMESPACE,
                "operation": "CREATE",
                "userInfo": {"username": "system:serviceaccount:kube-system:job-controller"},
                "object": pod,
                "oldObject": None,
                "dryRun": False,
                "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
            },
        }
    )


def patched_pod(hook: LocalWebhook, pod: Json) -> Json:
    """`pod` as the webhook patched it (to send again, as on a re-invocation)."""
    import base64

    import jsonpatch

    assert hook.service is not None
    body = review_body(pod).replace(UID_PLACEHOLDER.encode(), str(uuid.uuid4()).encode())
    status, reply, _ = hook.service.request("POST", "/mutate", body)
    assert status == 200, reply
    patch = orjson.loads(base64.b64decode(orjson.loads(reply)["response"]["patch"]))
    result: Json = jsonpatch.JsonPatch(patch).apply(pod)
    return result


def migrations(count: int) -> list[Json]:
    """Active migrations in the namespace: one per Job index (the replacement body matches index 0)."""
    out = []
    for i in range(count):
        out.append(
            {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "metadata": {"name": f"prep-{i}-move"},
                "spec": {"podName": f"prep-{i}-x{i}", "targetNode": f"node-{i % 3}"},
                "status": {
                    "phase": Phase.EVICTING,
                    "sourceNode": "node-hot",
                    "ownerKind": "Job",
                    "ownerName": "prep",
                    "ownerUID": JOB_UID,
                    "jobCompletionIndex": str(i),
                    "checkpointPVC": "prep-ckpt",
                    "containers": [
                        {"name": "loader", "state": "terminated", "exitCode": 0, "migrate": False},
                        {"name": "trainer", "state": "running", "migrate": True},
                    ],
                },
            }
        )
    return out
