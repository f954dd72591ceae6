"""The webhook's /mutate on real AdmissionReview JSON, through the app as served (WSGI fast path, Flask).

Each patch is applied with a JSON Patch library (`jsonpatch`, RFC 6902) to the pod that was sent, and
the result is checked as the API server would store it; then the patched pod is sent again, as on a
re-invocation, and must come back unchanged.
"""

from __future__ import annotations

import base64
import copy
import threading
import time
from typing import Any

import jsonpatch
import orjson
import pytest
from flask.testing import FlaskClient
from werkzeug.test import EnvironBuilder, run_wsgi_app

from apollo_api.podmigration import CHECKPOINT_CONTAINERS_ANNOTATION, MIGRATION_ANNOTATION, PodMigration
from common.settings import build
from tests.unit.test_webhook_fixtures import (
    JOB_UID,
    RS_UID,
    bare_pod,
    completed,
    job_pod,
    migration,
    replicaset_pod,
    review,
    running,
    sidecar_pod,
)
from webhook.admit import WebhookState
from webhook.app import create_app
from webhook.claims import ClaimCreator
from webhook.config import WebhookSettings

Json = dict[str, Any]


class NoCalls:
    """A Kubernetes client that must not be called: admission never talks to the API server."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"admission called the API server ({name})")


class Webhook:
    """The app with its migration index and claim queue in reach, and helpers to post and patch."""

    def __init__(self, **overrides: Any) -> None:
        self.settings = build(WebhookSettings, overrides)
        self.app = create_app(self.settings, start_background=False)
        self.state: WebhookState = self.app.extensions["apollo-webhook"]
        self.state.index.replace([])
        self.state.claims = ClaimCreator(NoCalls(), self.settings.claim)
        self.client: FlaskClient = self.app.test_client()

    def migrations(self, *items: PodMigration) -> None:
        self.state.index.replace(list(items))

    def post(self, body: bytes | Json, **headers: Any) -> tuple[int, Json]:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        resp = self.client.post("/mutate", data=data, content_type="application/json", headers=headers)
        return resp.status_code, orjson.loads(resp.data)

    def admit(self, pod: Json, **kwargs: Any) -> tuple[Json, Json, list[Json]]:
        """(response, patched pod, patch) for a CREATE of `pod`."""
        doc = review(pod, **kwargs)
        status, answer = self.post(doc)
        assert status == 200, answer
        assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
        response = answer["response"]
        assert response["uid"] == doc["request"]["uid"] and response["allowed"] is True
        if "patch" not in response:
            assert "patchType" not in response
            return response, copy.deepcopy(pod), []
        assert response["patchType"] == "JSONPatch"
        patch = orjson.loads(base64.b64decode(response["patch"]))
        patched = jsonpatch.JsonPatch(patch).apply(copy.deepcopy(pod))
        return response, patched, patch

    def admit_twice(self, pod: Json) -> tuple[Json, Json, list[Json]]:
        """Admit, then re-invoke on the result (reinvocationPolicy: IfNeeded): the second pass adds nothing."""
        response, patched, patch = self.admit(pod)
        _again, same, second = self.admit(patched)
        assert second == [] and same == patched, second
        return response, patched, patch

    def queued_claims(self) -> list[Any]:
        assert self.state.claims is not None
        return self.state.claims.queue.drain(100)

    def metric(self, name: str, **labels: str) -> float:
        value = self.state.metrics.registry.get_sample_value(name, labels)
        return value or 0.0


def _volume(pod: Json) -> Json:
    (vol,) = [v for v in pod["spec"]["volumes"] if v["name"] == "apollo-checkpoint"]
    return dict(vol)


def _mounts(container: Json) -> list[Json]:
    return [m for m in container.get("volumeMounts") or [] if m["name"] == "apollo-checkpoint"]


def _env(container: Json) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env") or []}


def _names(pod: Json, group: str = "containers") -> list[str]:
    return [c["name"] for c in pod["spec"].get(group) or []]


@pytest.fixture
def hook() -> Webhook:
    return Webhook()


# ---- opted-in pods get their workload's checkpoint claim ---------------------------------------------


def test_replicaset_pod_gets_the_deployments_claim_mounted_everywhere(hook: Webhook) -> None:
    pod = replicaset_pod()
    response, patched, _ = hook.admit_twice(pod)
    assert "warnings" not in response
    assert _volume(patched) == {"name": "apollo-checkpoint", "persistentVolumeClaim": {"claimName": "trainer-ckpt"}}
    assert patched["spec"]["volumes"][0] == pod["spec"]["volumes"][0]  # the token volume stays first
    for c in patched["spec"]["containers"]:
        assert _mounts(c) == [{"name": "apollo-checkpoint", "mountPath": "/checkpoint"}]
        assert _env(c)["CHECKPOINT_DIR"] == "/checkpoint"
    assert "annotations" not in patched["metadata"]  # not a replacement: no migration annotation
    (claim,) = hook.queued_claims()
    assert (claim.namespace, claim.name, claim.workload_kind, claim.workload_name) == (
        "team-a",
        "trainer-ckpt",
        "Deployment",
        "trainer",
    )
    assert hook.metric("apollo_webhook_mutations_total", kind="checkpoint_volume") == 1
    assert hook.metric("apollo_webhook_skips_total", reason="volume_present") == 1  # the re-invocation


def test_job_and_bare_pods_get_their_own_claims(hook: Webhook) -> None:
    _, job, _ = hook.admit_twice(job_pod())
    assert _volume(job)["persistentVolumeClaim"]["claimName"] == "prep-ckpt"
    _, bare, _ = hook.admit_twice(bare_pod())
    assert _volume(bare)["persistentVolumeClaim"]["claimName"] == "notebook-ckpt"
    assert [c.name for c in hook.queued_claims()] == ["prep-ckpt", "notebook-ckpt"]


def test_dry_run_patches_but_creates_nothing(hook: Webhook) -> None:
    _, patched, patch = hook.admit(replicaset_pod(), dry_run=True)
    assert patch and _volume(patched)
    assert hook.queued_claims() == []


def test_pod_that_already_carries_the_volume_is_left_alone(hook: Webhook) -> None:
    pod = replicaset_pod()
    pod["spec"]["volumes"].append({"name": "apollo-checkpoint", "persistentVolumeClaim": {"claimName": "mine"}})
    response, patched, patch = hook.admit(pod)
    assert patch == [] and patched == pod and "warnings" not in response
    assert hook.queued_claims() == []


def test_chosen_containers_only_and_existing_env_kept(hook: Webhook) -> None:
    pod = replicaset_pod()
    pod["metadata"]["annotations"] = {CHECKPOINT_CONTAINERS_ANNOTATION: "trainer, ghost"}
    pod["spec"]["containers"][0]["env"] = [{"name": "CHECKPOINT_DIR", "value": "/elsewhere"}]
    response, patched, _ = hook.admit_twice(pod)
    trainer, monitor = patched["spec"]["containers"]
    assert _mounts(trainer) and not _mounts(monitor) and "env" not in monitor
    assert _env(trainer) == {"CHECKPOINT_DIR": "/elsewhere"}
    warnings = " ".join(response["warnings"])
    assert "ghost" in warnings and "sets CHECKPOINT_DIR itself" in warnings
    assert all(w.startswith("apollo-webhook: ") for w in response["warnings"])


def test_mount_path_clash_skips_that_container(hook: Webhook) -> None:
    pod = replicaset_pod()
    pod["spec"]["containers"][1]["volumeMounts"] = [{"name": "scratch", "mountPath": "/checkpoint"}]
    response, patched, _ = hook.admit(pod)
    trainer, monitor = patched["spec"]["containers"]
    assert _mounts(trainer) and monitor["volumeMounts"] == [{"name": "scratch", "mountPath": "/checkpoint"}]
    assert "monitor already mounts scratch" in response["warnings"][0]


def test_unselected_and_excluded_pods_are_admitted_unchanged(hook: Webhook) -> None:
    response, _patched, patch = hook.admit(replicaset_pod(opted_in=False))
    assert patch == [] and "warnings" not in response
    _, _, patch = hook.admit(replicaset_pod(namespace="kube-system"))
    assert patch == []
    assert hook.metric("apollo_webhook_skips_total", reason="not_opted_in") == 1
    assert hook.metric("apollo_webhook_skips_total", reason="excluded_namespace") == 1
    assert hook.queued_claims() == []


def test_bare_pod_with_generate_name_only_is_warned_not_guessed(hook: Webhook) -> None:
    pod = bare_pod()
    pod["metadata"]["generateName"] = pod["metadata"].pop("name") + "-"
    response, _, patch = hook.admit(pod)
    assert patch == [] and "no stable checkpoint claim" in response["warnings"][0]


# ---- replacement pods of an active migration --------------------------------------------------------


def test_job_replacement_loses_completed_container_keeps_claim_gets_required_target(hook: Webhook) -> None:
    hook.migrations(
        migration(
            "prep-2-x7",
            pod_name="prep-2-abcde",
            owner=("Job", "prep", JOB_UID),
            index="2",
            target="node-2",
            containers=[completed("loader"), running("trainer")],
            checkpoint_pvc="prep-ckpt",
        )
    )
    pod = job_pod(index=2)
    _, patched, patch = hook.admit_twice(pod)
    assert _names(patched) == ["trainer"]
    assert _mounts(patched["spec"]["containers"][0])
    assert _volume(patched)["persistentVolumeClaim"]["claimName"] == "prep-ckpt"
    required = patched["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert required == {
        "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-2"]}]}]
    }
    assert "preferredDuringSchedulingIgnoredDuringExecution" not in patched["spec"]["affinity"]["nodeAffinity"]
    assert patched["metadata"]["annotations"][MIGRATION_ANNOTATION] == "prep-2-x7"
    # The annotation key holds a "/", escaped as ~1 in the JSON pointer (RFC 6901).
    assert {"op": "add", "path": "/metadata/annotations/apollo.io~1migration", "value": "prep-2-x7"} in patch
    assert patched["metadata"]["labels"] == pod["metadata"]["labels"]
    assert hook.metric("apollo_webhook_mutations_total", kind="strip_containers") == 1
    assert hook.metric("apollo_webhook_mutations_total", kind="required_affinity") == 1


def test_indexed_job_pod_of_another_index_is_not_the_replacement(hook: Webhook) -> None:
    hook.migrations(
        migration("prep-2-x7", pod_name="prep-2-abcde", owner=("Job", "prep", JOB_UID), index="2", target="n2")
    )
    _, patched, _ = hook.admit(job_pod(index=3))
    assert _names(patched) == ["loader", "trainer"] and "affinity" not in patched["spec"]
    assert MIGRATION_ANNOTATION not in patched["metadata"]["annotations"]


def test_replicaset_replacement_gets_annotations_created_and_preferred_affinity(hook: Webhook) -> None:
    hook.migrations(
        migration(
            "trainer-abc-m1",
            pod_name="trainer-7d9c5b8f4-abcde",
            owner=("Deployment", "trainer", RS_UID),
            suggested="node-2",
            source="node-0",
        )
    )
    pod = replicaset_pod()
    _, patched, patch = hook.admit_twice(pod)
    # No annotations on the pod: the whole map is added at once, the parent before the key.
    assert {"op": "add", "path": "/metadata/annotations", "value": {MIGRATION_ANNOTATION: "trainer-abc-m1"}} in patch
    preferred = patched["spec"]["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert preferred == [
        {
            "weight": 100,
            "preference": {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-2"]}]},
        },
        {
            "weight": 50,
            "preference": {"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["node-0"]}]},
        },
    ]
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in patched["spec"]["affinity"]["nodeAffinity"]
    assert _names(patched) == ["trainer", "monitor"]  # a Deployment's pods never have completed containers


def test_not_opted_in_replacement_is_steered_without_a_claim(hook: Webhook) -> None:
    hook.migrations(migration("m1", pod_name="trainer-x", owner=("Deployment", "trainer", RS_UID), target="n3"))
    _, patched, _ = hook.admit(replicaset_pod(opted_in=False))
    assert "apollo-checkpoint" not in [v["name"] for v in patched["spec"]["volumes"]]
    assert patched["metadata"]["annotations"] == {MIGRATION_ANNOTATION: "m1"}
    assert patched["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert hook.queued_claims() == []


def test_bare_pod_replacement_matched_by_name_and_template_volume_kept(hook: Webhook) -> None:
    hook.migrations(
        migration("nb-m1", pod_name="notebook", containers=[running("main")], checkpoint_pvc="notebook-ckpt"),
        migration("other", pod_name="other-pod"),
    )
    pod = bare_pod()
    # Re-created from status.podTemplate: it carries the volume it had.
    pod["spec"]["volumes"].append(
        {"name": "apollo-checkpoint", "persistentVolumeClaim": {"claimName": "notebook-ckpt"}}
    )
    _, patched, _ = hook.admit_twice(pod)
    assert patched["metadata"]["annotations"] == {MIGRATION_ANNOTATION: "nb-m1"}
    assert patched["spec"]["volumes"] == pod["spec"]["volumes"]
    assert patched["spec"]["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0][
        "preference"
    ]["matchFields"] == [{"key": "metadata.name", "operator": "NotIn", "values": ["node-0"]}]


def test_phase_and_annotation_rules(hook: Webhook) -> None:
    hook.migrations(
        migration("early", pod_name="notebook", phase="Capturing"),
        migration("named", pod_name="something-else", target="n9"),
    )
    _, patched, _ = hook.admit(bare_pod())
    assert "annotations" not in patched["metadata"]  # Capturing: the original still runs, no replacement yet
    pod = bare_pod("fresh")
    pod["metadata"]["annotations"] = {MIGRATION_ANNOTATION: "named"}  # the orchestrator named it
    _, patched, _ = hook.admit(pod)
    assert patched["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]


def test_second_replacement_of_one_replicaset_goes_to_the_migration_still_waiting(hook: Webhook) -> None:
    owner = ("Deployment", "trainer", RS_UID)
    hook.migrations(
        migration("first", pod_name="a", owner=owner, target="n1", replacement_pod="trainer-x1"),
        migration("second", pod_name="b", owner=owner, target="n2", evicted_at="2025-01-01T00:00:05Z"),
    )
    _, patched, _ = hook.admit(replicaset_pod())
    assert patched["metadata"]["annotations"][MIGRATION_ANNOTATION] == "second"


def test_sidecar_pod_never_loses_its_sidecar(hook: Webhook) -> None:
    hook = Webhook(strip_completed_init_containers=True)
    hook.migrations(
        migration(
            "prep-0-m",
            pod_name="prep-0-zzz",
            owner=("Job", "prep", JOB_UID),
            index="0",
            # Even a status that wrongly marks the sidecar as not to migrate cannot remove it.
            containers=[
                completed("fetch", init=True),
                completed("log-shipper", init=True),
                completed("loader"),
                running("trainer"),
            ],
        )
    )
    pod = sidecar_pod()
    _, patched, _ = hook.admit_twice(pod)
    assert _names(patched, "initContainers") == ["log-shipper"]
    assert _names(patched) == ["trainer"]
    assert _mounts(patched["spec"]["initContainers"][0]) and _mounts(patched["spec"]["containers"][0])
    assert hook.metric("apollo_webhook_mutations_total", kind="strip_init_containers") == 1

    plain = Webhook()  # default: completed init containers stay
    plain.migrations(*hook.state.index.in_namespace("team-a"))
    _, patched, _ = plain.admit(sidecar_pod())
    assert _names(patched, "initContainers") == ["fetch", "log-shipper"] and _names(patched) == ["trainer"]


def test_never_removes_every_container(hook: Webhook) -> None:
    hook.migrations(
        migration(
            "m",
            pod_name="p",
            owner=("Job", "prep", JOB_UID),
            index="2",
            containers=[completed("loader"), completed("trainer")],
        )
    )
    response, patched, _ = hook.admit(job_pod())
    assert _names(patched) == ["loader", "trainer"]
    assert "none removed" in " ".join(response["warnings"])


def test_required_target_joins_every_existing_term(hook: Webhook) -> None:
    hook.migrations(migration("m", pod_name="notebook", target="gpu-7"))
    pod = bare_pod()
    zone = {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["a"]}
    gpu = {"key": "gpu", "operator": "Exists"}
    pod["spec"]["affinity"] = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [zone]}, {"matchExpressions": [gpu]}]
            }
        }
    }
    _, patched, _ = hook.admit_twice(pod)
    pin = {"key": "metadata.name", "operator": "In", "values": ["gpu-7"]}
    terms = patched["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert terms == [
        {"matchExpressions": [zone], "matchFields": [pin]},
        {"matchExpressions": [gpu], "matchFields": [pin]},
    ]


# ---- bad input, and failures of our own ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda d: b"{not json", "not JSON"),
        (lambda d: orjson.dumps([d]), "must be an AdmissionReview object"),
        (lambda d: orjson.dumps({**d, "kind": "Pod"}), "kind must be AdmissionReview"),
        (lambda d: orjson.dumps({**d, "apiVersion": "admission.k8s.io/v1beta1"}), "apiVersion must be admission"),
        (lambda d: orjson.dumps({k: v for k, v in d.items() if k != "request"}), "request must be an object"),
        (
            lambda d: orjson.dumps(
                {
                    **d,
                    "request": {
                        **d["request"],
                        "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
                    },
                }
            ),
            "only pods are handled, got apps/deployments",
        ),
        (
            lambda d: orjson.dumps(
                {**d, "request": {**d["request"], "object": {**d["request"]["object"], "spec": {"containers": []}}}}
            ),
            "the pod has no containers",
        ),
        (lambda d: orjson.dumps({**d, "request": {**d["request"], "uid": ""}}), "request.uid"),
    ],
)
def test_bad_input_is_a_400_naming_the_problem(hook: Webhook, mutate: Any, needle: str) -> None:
    status, body = hook.post(mutate(review(replicaset_pod())))
    assert status == 400
    assert body["kind"] == "Status" and body["code"] == 400 and needle in body["message"], body
    assert hook.metric("apollo_webhook_errors_total", kind="bad_request") == 1


def test_oversized_body_is_refused_unread() -> None:
    hook = Webhook(max_body_bytes=2048)
    pod = replicaset_pod()
    pod["metadata"]["annotations"] = {"blob": "x" * 4096}
    status, body = hook.post(review(pod))
    assert status == 400 and "exceeds the limit of 2048 bytes" in body["message"]
    # Without a Content-Length (a chunked upload, as gunicorn presents it), Flask's route enforces the limit.
    environ = EnvironBuilder(path="/mutate", method="POST", data=orjson.dumps(review(pod))).get_environ()
    del environ["CONTENT_LENGTH"]
    environ["wsgi.input_terminated"] = True
    chunks, status_line, _headers = run_wsgi_app(hook.app, environ)
    assert status_line.startswith("400") and b"exceeds the limit" in b"".join(chunks)
    # And a small chunked body is served.
    environ = EnvironBuilder(path="/mutate", method="POST", data=orjson.dumps(review(replicaset_pod()))).get_environ()
    del environ["CONTENT_LENGTH"]
    environ["wsgi.input_terminated"] = True
    chunks, status_line, _headers = run_wsgi_app(hook.app, environ)
    assert status_line.startswith("200") and orjson.loads(b"".join(chunks))["response"]["patchType"] == "JSONPatch"


def test_our_own_failure_admits_unchanged_with_a_warning(hook: Webhook, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(namespace: str) -> tuple[PodMigration, ...]:
        raise RuntimeError("index corrupted")

    monkeypatch.setattr(hook.state.index, "in_namespace", broken)
    response, _patched, patch = hook.admit(replicaset_pod())
    assert patch == [] and "internal error (RuntimeError)" in response["warnings"][0]
    assert hook.metric("apollo_webhook_errors_total", kind="internal") == 1
    assert hook.metric("apollo_webhook_admissions_total", result="failed_open") == 1


def test_update_requests_are_admitted_unchanged(hook: Webhook) -> None:
    response, _, patch = hook.admit(replicaset_pod(), operation="UPDATE")
    assert patch == [] and "UPDATE requests are not patched" in response["warnings"][0]


def test_probes_and_metrics(hook: Webhook) -> None:
    assert hook.client.get("/healthz").status_code == 200
    ready = hook.client.get("/readyz")
    assert ready.status_code == 200 and ready.json is not None and ready.json["active_migrations"] == 0
    fresh = create_app(build(WebhookSettings, {}), start_background=False)
    not_ready = fresh.test_client().get("/readyz")
    assert not_ready.status_code == 503 and "not listed yet" in (not_ready.json or {}).get("reason", "")
    hook.admit(replicaset_pod())
    text = hook.client.get("/metrics").data.decode()
    assert "apollo_webhook_admission_seconds_count 1.0" in text
    assert 'apollo_webhook_mutations_total{kind="checkpoint_volume"} 1.0' in text
    assert "apollo_webhook_migrations_synced 1.0" in text


# ---- a replacement admitted before the watch delivered the Evicting phase ---------------------------------


def test_replacement_waits_briefly_for_the_evicting_phase() -> None:
    hook = Webhook(migrations={"phase_wait_ms": 1000})
    owner = ("Job", "prep", JOB_UID)
    capturing = migration("m", pod_name="prep-2-a", owner=owner, index="2", target="n2", phase="Capturing")
    hook.migrations(capturing)
    evicting = migration("m", pod_name="prep-2-a", owner=owner, index="2", target="n2")
    timer = threading.Timer(0.1, hook.state.index.apply, ("MODIFIED", evicting))
    timer.start()
    started = time.monotonic()
    _, patched, _ = hook.admit(job_pod(index=2))
    waited = time.monotonic() - started
    timer.join()
    assert patched["metadata"]["annotations"][MIGRATION_ANNOTATION] == "m"
    assert waited >= 0.05, waited  # it did wait for the event (which came well before the 1 s bound)
    assert hook.metric("apollo_webhook_phase_waits_total", outcome="matched") == 1


def test_phase_wait_is_bounded_and_only_for_the_migrating_workload() -> None:
    hook = Webhook(migrations={"phase_wait_ms": 400})
    owner = ("Job", "prep", JOB_UID)
    hook.migrations(migration("m", pod_name="prep-2-a", owner=owner, index="2", phase="Capturing"))
    started = time.monotonic()
    _, other, _ = hook.admit(job_pod(index=3))  # another index of the Job: not waited for
    assert time.monotonic() - started < 0.3 and "affinity" not in other["spec"]
    started = time.monotonic()
    _, patched, _ = hook.admit(job_pod(index=2))
    assert time.monotonic() - started >= 0.39
    assert MIGRATION_ANNOTATION not in patched["metadata"]["annotations"] and _volume(patched)
    assert hook.metric("apollo_webhook_phase_waits_total", outcome="timeout") == 1
