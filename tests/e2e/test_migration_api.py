"""The migration REST API as deployed, on the local control plane.

`apollo-orchestrator` runs as its console script (gunicorn, TLS from a certificate the cluster's CA
signed, the controller and the REST API in one worker), with the webhook registered with the real
API server so replacements get the target's affinity. Clients authenticate with real service-account
tokens (TokenRequest), checked by real TokenReviews; RBAC Roles decide through real
SubjectAccessReviews. kwok plays kubelet for the nodes.
"""

from __future__ import annotations

import http.client
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from kubernetes import client

from apollo_api.podmigration import CHECKPOINT_LABEL, GROUP, PLURAL, VERSION, Phase, checkpoint_claim_name
from apolloctl.cluster.process import free_port
from apolloctl.launch import Service, Tls, launch, script_path
from bench.webhook_local import LocalWebhook
from tests.conftest import ClusterHandle
from tests.e2e.webhook_setup import PreboundVolumes, claim_bound, registered_webhook, webhook_nodes
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e
REGISTRATION = "apollo-webhook-migration-api-e2e"
IN_PROGRESS = {Phase.CAPTURING, Phase.EVICTING, Phase.RESCHEDULING}


@dataclass
class Api:
    """HTTPS calls to the orchestrator's REST API, as a client outside the cluster makes them."""

    service: Service

    @property
    def url(self) -> str:
        return self.service.url

    @property
    def cafile(self) -> Path:
        assert self.service.tls is not None
        return self.service.tls.ca

    def call(self, method: str, path: str, body: Any = None, token: str = "") -> tuple[int, Any]:
        context = ssl.create_default_context(cafile=str(self.cafile))
        conn = http.client.HTTPSConnection("127.0.0.1", self.service.port, timeout=30, context=context)
        headers = {"Connection": "close", "Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = body if isinstance(body, bytes) or body is None else orjson.dumps(body)
        try:
            conn.request(method, path, data, headers)
            resp = conn.getresponse()
            raw = resp.read()
            return resp.status, orjson.loads(raw) if raw else None
        finally:
            conn.close()


@pytest.fixture(scope="module")
def nodes(cluster: ClusterHandle) -> Iterator[list[str]]:
    with webhook_nodes(cluster, "mapi") as names:
        yield names


@pytest.fixture(scope="module")
def webhook(cluster: ClusterHandle, nodes: list[str]) -> Iterator[LocalWebhook]:
    with registered_webhook(cluster, "webhook-migration-api-e2e.log", REGISTRATION, effective_in="default") as hook:
        yield hook


@pytest.fixture(scope="module")
def api(cluster: ClusterHandle, webhook: LocalWebhook) -> Iterator[Api]:
    local = cluster.local
    assert local.ca is not None
    port = free_port()
    pair = local.ca.issue(
        f"orchestrator-{port}",
        "apollo-orchestrator",
        dns_names=("localhost",),
        ip_addresses=("127.0.0.1",),
        server=True,
    )
    tls = Tls(certfile=pair.cert, keyfile=pair.key, ca=local.ca.pair.cert)
    settings = {
        "kubeconfig": str(local.kubeconfig),
        "log_level": "INFO",
        "server": {"bind": f"127.0.0.1:{port}", "certfile": str(pair.cert), "keyfile": str(pair.key)},
        "leader": {"enabled": False},
        "caps": {"per_node": 2},
        # The test pods report no checkpoint step: no need to wait for a resume report.
        "resume_grace_seconds": 0,
    }
    log_path = local.logs_dir / "orchestrator-migration-api-e2e.log"
    service = launch(
        "apollo-orchestrator",
        "ORCHESTRATOR",
        settings,
        port=port,
        log_path=log_path,
        tls=tls,
        env={"PROMETHEUS_MULTIPROC_DIR": str(local.logs_dir / f"orchestrator-metrics-{port}")},
    )
    try:
        service.wait_ready(path="/healthz", what="apollo-orchestrator")
        yield Api(service)
    finally:
        service.stop()


@dataclass
class Accounts:
    migrator: str  # may create, get, list and delete podmigrations in the namespace
    outsider: str  # authenticated, no grant


def _token(core: Any, namespace: str, name: str) -> str:
    core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
    spec = client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
    request = client.AuthenticationV1TokenRequest(spec=spec)
    token: str = core.create_namespaced_service_account_token(name, namespace, request).status.token
    return token


@pytest.fixture
def accounts(cluster: ClusterHandle, namespace: str) -> Accounts:
    rbac: Any = client.RbacAuthorizationV1Api(cluster.api)  # plain dicts are sent as they are
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "migrator"},
            "rules": [
                {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["create", "get", "list", "delete"]},
            ],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "migrator"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "migrator"},
            "subjects": [{"kind": "ServiceAccount", "name": "migrator", "namespace": namespace}],
        },
    )
    return Accounts(
        migrator=_token(cluster.core, namespace, "migrator"), outsider=_token(cluster.core, namespace, "outsider")
    )


@pytest.fixture
def volumes(cluster: ClusterHandle) -> Iterator[PreboundVolumes]:
    """PersistentVolumes made for checkpoint claims (no provisioner runs locally), removed afterwards."""
    made = PreboundVolumes(cluster.core)
    yield made
    made.delete_all()


def checkpointed_pod(cluster: ClusterHandle, namespace: str, name: str, node: str, volumes: PreboundVolumes) -> None:
    """A bare pod opted in to checkpointing: the webhook attaches its claim, pre-bound to a hostPath volume.

    Opted-in pods are what the webhook handles, so their replacements get the target's affinity.
    """
    claim = checkpoint_claim_name(name)
    volumes(namespace, claim)
    bare_pod(cluster, namespace, name, node, labels={CHECKPOINT_LABEL: "true"})
    wait_for(lambda: claim_bound(cluster.core, namespace, claim), 60, what=f"checkpoint claim {claim} Bound")


def bare_pod(
    cluster: ClusterHandle, namespace: str, name: str, node: str, labels: dict[str, str] | None = None
) -> None:
    body = {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "main",
                    "image": "registry.invalid/train:1",
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                }
            ],
        },
    }
    cluster.core.create_namespaced_pod(namespace, body)


def wait_running(cluster: ClusterHandle, namespace: str, name: str) -> None:
    def running() -> bool:
        return bool(cluster.core.read_namespaced_pod(name, namespace).status.phase == "Running")

    wait_for(running, 60, what=f"pod {name} Running")


def podmigrations(cluster: ClusterHandle, namespace: str) -> list[dict[str, Any]]:
    doc: Any = client.CustomObjectsApi(cluster.api).list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
    return list(doc["items"])


def wait_finished(api: Api, token: str, mid: str, timeout: float = 120.0) -> tuple[dict[str, Any], list[str]]:
    """GET until the migration finishes; the phases seen on the way."""
    phases: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        code, view = api.call("GET", f"/api/v1/migrations/{mid}", token=token)
        assert code == 200, view
        if not phases or phases[-1] != view["phase"]:
            phases.append(view["phase"])
        if view["status"] in ("completed", "failed", "cancelled"):
            return view, phases
        assert time.monotonic() < deadline, f"{mid} still {view['phase']}: {view['message']}"
        time.sleep(0.2)


def test_seed_example_body_migrates_and_is_followed_with_get(
    cluster: ClusterHandle, api: Api, accounts: Accounts, namespace: str, nodes: list[str], volumes: PreboundVolumes
) -> None:
    checkpointed_pod(cluster, namespace, "training-job-0", nodes[0], volumes)
    wait_running(cluster, namespace, "training-job-0")
    seed_body = (
        b'{"pod_name": "training-job-0", "pod_namespace": "%s", "source_node": "%s", '
        b'"target_node": "%s", "preserve_pv": true, "timeout": 300}'
    ) % (namespace.encode(), nodes[0].encode(), nodes[1].encode())
    code, created = api.call("POST", "/api/v1/migrations", seed_body, token=accounts.migrator)
    assert code == 202, created
    mid = created["migration_id"]
    assert created["status"] == "pending" and mid.startswith(f"{namespace}.training-job-0-")
    assert len(podmigrations(cluster, namespace)) == 1

    view, phases = wait_finished(api, accounts.migrator, mid)
    assert view["status"] == "completed", view
    assert phases[-1] == Phase.SUCCEEDED and len(phases) >= 2
    details = view["details"]
    assert details["replacement_node"] == nodes[1] and details["new_pod_name"] == "training-job-0"
    steps = [s["step"] for s in details["steps"]]
    assert steps[0] == "accepted" and steps[-1] == "finished"
    assert {"captured", "evicted", "running"} <= set(steps)
    assert details["duration"] is not None and details["duration"] > 0
    assert [c["name"] for c in details["container_states"]] == ["main"]
    assert details["pv_claim_name"] == "training-job-0-ckpt" and details["checkpoint_path"]
    assert details["original_resources"]["cpu_usage"] == pytest.approx(0.1)

    code, short = api.call("GET", f"/api/v1/migrations/{mid}/status", token=accounts.migrator)
    assert code == 200 and short["status"] == "completed" and short["duration_seconds"] == details["duration"]
    code, listed = api.call("GET", f"/api/v1/migrations?namespace={namespace}&phase=completed", token=accounts.migrator)
    assert code == 200 and [m["migration_id"] for m in listed["migrations"]] == [mid]
    code, figures = api.call("GET", f"/api/v1/metrics?namespace={namespace}", token=accounts.migrator)
    assert code == 200 and figures["total_migrations"] == 1 and figures["successful_migrations"] == 1
    assert figures["average_duration"] == details["duration"]
    pod = cluster.core.read_namespaced_pod("training-job-0", namespace)
    assert pod.spec.node_name == nodes[1]


def test_unauthenticated_is_401_and_unauthorized_is_403(
    cluster: ClusterHandle, api: Api, accounts: Accounts, namespace: str, nodes: list[str]
) -> None:
    body = {"pod_name": "p", "pod_namespace": namespace, "target_node": nodes[1]}
    for token in ("", "not-a-token"):
        code, doc = api.call("POST", "/api/v1/migrations", body, token=token)
        assert code == 401 and doc["reason"] == "Unauthorized", doc
        assert api.call("GET", "/api/v1/migrations", token=token)[0] == 401
    code, doc = api.call("POST", "/api/v1/migrations", body, token=accounts.outsider)
    assert code == 403 and f"system:serviceaccount:{namespace}:outsider" in doc["message"], doc
    assert "create" in doc["message"]
    assert api.call("GET", f"/api/v1/migrations?namespace={namespace}", token=accounts.outsider)[0] == 403
    assert api.call("GET", f"/api/v1/migrations/{namespace}.x", token=accounts.outsider)[0] == 403
    assert api.call("DELETE", f"/api/v1/migrations/{namespace}.x", token=accounts.outsider)[0] == 403
    # The migrator's Role is namespaced: other namespaces and the cluster scope stay closed.
    assert api.call("GET", "/api/v1/migrations", token=accounts.migrator)[0] == 403
    assert (
        api.call("POST", "/api/v1/migrations", body | {"pod_namespace": "default"}, token=accounts.migrator)[0] == 403
    )
    assert api.call("GET", f"/api/v1/migrations?namespace={namespace}", token=accounts.migrator)[0] == 200
    assert api.call("GET", "/health")[0] == 200 and api.call("GET", "/api/v1/openapi.json")[0] == 200
    assert podmigrations(cluster, namespace) == []


def test_bad_input_is_refused_by_the_served_api_and_nothing_is_created(
    cluster: ClusterHandle, api: Api, accounts: Accounts, namespace: str, nodes: list[str]
) -> None:
    bare_pod(cluster, namespace, "bad-0", nodes[0])
    good = {"pod_name": "bad-0", "pod_namespace": namespace, "target_node": nodes[1]}
    cases: list[tuple[Any, int, str]] = [
        (b'{"pod_name": ', 400, "body"),
        (good | {"node": "x"}, 400, "node"),
        (good | {"preserve_pv": "true"}, 400, "preserve_pv"),
        ({"pod_namespace": namespace}, 400, "pod_name"),
        (good | {"pod_name": "ghost"}, 404, "pod_name"),
        (good | {"target_node": "no-such-node"}, 404, "target_node"),
        (good | {"source_node": nodes[0], "target_node": nodes[0]}, 422, "target_node"),
        (good | {"timeout": 4000}, 422, "timeout"),
        (good | {"reason": "x" * 70_000}, 413, "body"),
    ]
    for body, status, field_name in cases:
        code, doc = api.call("POST", "/api/v1/migrations", body, token=accounts.migrator)
        assert (code, doc.get("field")) == (status, field_name), doc
        assert "Traceback" not in doc["message"]
    assert podmigrations(cluster, namespace) == []


def test_cancel_before_the_eviction_leaves_the_pod_alone(
    cluster: ClusterHandle, api: Api, accounts: Accounts, namespace: str, nodes: list[str]
) -> None:
    bare_pod(cluster, namespace, "guarded-0", nodes[0], labels={"app": "guarded"})
    cluster.policy.create_namespaced_pod_disruption_budget(
        namespace,
        {"metadata": {"name": "guard"}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "guarded"}}}},
    )
    wait_running(cluster, namespace, "guarded-0")
    body = {"pod_name": "guarded-0", "pod_namespace": namespace, "target_node": nodes[2]}
    code, created = api.call("POST", "/api/v1/migrations", body, token=accounts.migrator)
    assert code == 202, created
    mid = created["migration_id"]

    def refused_by_budget() -> bool:
        view = api.call("GET", f"/api/v1/migrations/{mid}", token=accounts.migrator)[1]
        return bool(view["details"]["eviction_attempts"] >= 1)

    wait_for(refused_by_budget, 60, what="an eviction refused by the PodDisruptionBudget")
    code, cancelled = api.call("DELETE", f"/api/v1/migrations/{mid}", token=accounts.migrator)
    assert code == 202 and cancelled["cancel_requested"], cancelled
    view, _ = wait_finished(api, accounts.migrator, mid, timeout=60)
    assert view["status"] == "cancelled" and view["phase"] == Phase.CANCELLED, view
    pod = cluster.core.read_namespaced_pod("guarded-0", namespace)
    assert pod.spec.node_name == nodes[0] and pod.metadata.deletion_timestamp is None
    code, again = api.call("DELETE", f"/api/v1/migrations/{mid}", token=accounts.migrator)
    assert code == 409 and again["field"] == "id"


def test_batch_moves_three_pods_off_a_node_two_at_a_time(
    cluster: ClusterHandle, api: Api, accounts: Accounts, namespace: str, nodes: list[str]
) -> None:
    source = nodes[2]
    for i in range(3):
        bare_pod(cluster, namespace, f"drain-{i}", source, labels={"app": "drain"})
    bare_pod(cluster, namespace, "stay-0", source, labels={"app": "stay"})
    for i in range(3):
        wait_running(cluster, namespace, f"drain-{i}")
    cluster.core.patch_node(source, {"spec": {"unschedulable": True}})  # like drain: nothing new lands here
    try:
        request = {"source_node": source, "label_selector": "app=drain", "namespace": namespace}
        code, plan = api.call("POST", "/api/v1/migrations/batch", request | {"dry_run": True}, token=accounts.migrator)
        assert code == 200, plan
        assert [p["pod_name"] for p in plan["planned"]] == ["drain-0", "drain-1", "drain-2"]
        assert plan["migrations"] == [] and podmigrations(cluster, namespace) == []

        code, batch = api.call("POST", "/api/v1/migrations/batch", request, token=accounts.migrator)
        assert code == 202, batch
        assert sorted(m["pod_name"] for m in batch["migrations"]) == ["drain-0", "drain-1", "drain-2"]
        batch_id = batch["batch_id"]

        most_at_once = 0
        deadline = time.monotonic() + 180
        while True:
            code, listed = api.call(
                "GET", f"/api/v1/migrations?batch={batch_id}&namespace={namespace}", token=accounts.migrator
            )
            assert code == 200 and listed["total"] == 3
            phases = [m["phase"] for m in listed["migrations"]]
            most_at_once = max(most_at_once, sum(p in IN_PROGRESS for p in phases))
            if all(m["status"] in ("completed", "failed", "cancelled") for m in listed["migrations"]):
                break
            assert time.monotonic() < deadline, listed
            time.sleep(0.1)
        assert [m["status"] for m in listed["migrations"]] == ["completed"] * 3, listed
        assert most_at_once == 2, f"at most two at a time, and two did run together (saw {most_at_once})"
        views = [
            api.call("GET", f"/api/v1/migrations/{m['migration_id']}", token=accounts.migrator)[1]
            for m in listed["migrations"]
        ]
        assert all(v["details"]["replacement_node"] in nodes[:2] for v in views)
        # The recorded step times agree: no instant had three between capture and finish.
        intervals = [
            (
                {s["step"]: s["time"] for s in v["details"]["steps"]}["captured"],
                {s["step"]: s["time"] for s in v["details"]["steps"]}["finished"],
            )
            for v in views
        ]
        for start, _ in intervals:
            overlapping = sum(1 for s, e in intervals if s <= start < e)
            assert overlapping <= 2, intervals
        assert cluster.core.read_namespaced_pod("stay-0", namespace).spec.node_name == source
    finally:
        cluster.core.patch_node(source, {"spec": {"unschedulable": False}})


def test_apolloctl_migrate_wait_shows_the_steps_and_exits_0(
    cluster: ClusterHandle,
    api: Api,
    accounts: Accounts,
    namespace: str,
    nodes: list[str],
    volumes: PreboundVolumes,
    tmp_path: Path,
) -> None:
    checkpointed_pod(cluster, namespace, "cli-0", nodes[1], volumes)
    wait_running(cluster, namespace, "cli-0")
    token_file = tmp_path / "token"
    token_file.write_text(accounts.migrator)
    apolloctl = [script_path("apolloctl")]
    connection = ["--server", api.url, "--token-file", str(token_file), "--cacert", str(api.cafile)]
    done = subprocess.run(
        [*apolloctl, "migrate", "cli-0", "-n", namespace, "--to", nodes[0], "--wait", *connection],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for step in ("accepted", "captured", "evicted", "running", "finished"):
        assert f" {step} " in out, out
    assert "phase Succeeded" in out and "completed in " in out and f"cli-0 on {nodes[0]}" in out
    # With a kubeconfig alone the same migration reads the same.
    listed = subprocess.run(
        [*apolloctl, "migrations", "list", "-n", namespace, "--kubeconfig", str(cluster.local.kubeconfig)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split() == ["ID", "POD", "PHASE", "SOURCE", "TARGET", "AGE", "DURATION"]
    assert row.split()[1:5] == ["cli-0", "Succeeded", nodes[1], nodes[0]]
