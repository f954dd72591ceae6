"""The migration REST API through Flask's test client over an in-memory API server.

Every bad-input case of the issue gets a 4xx naming the field and creates nothing; the happy paths
answer in the seed's shapes; 401/403 come before anything is read; the OpenAPI document matches the
routes and every answer validates against its schema. The real API server is exercised by
`tests/e2e/test_migration_api.py`.
"""

from __future__ import annotations

import copy
import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from flask import Flask
from flask.testing import FlaskClient

from apollo_api.podmigration import (
    BATCH_LABEL,
    CANCEL_ANNOTATION,
    Phase,
    PodMigration,
)
from common.errors import Conflict, NotFound, PermissionDenied, Unauthenticated
from orchestrator.api import ApiSettings, create_app
from orchestrator.api.auth import TtlCache, User, bearer_token
from orchestrator.api.openapi import document
from orchestrator.api.request import BATCH_FIELDS, MIGRATION_FIELDS
from orchestrator.api.service import MigrationService, translate
from orchestrator.api.views import metrics_view, percentile

# ---------------------------------------------------------------------------------------------------------------
# An in-memory API server with the semantics the service relies on


def pod(
    name: str,
    node: str = "node-a",
    namespace: str = "ns",
    *,
    labels: dict[str, str] | None = None,
    owner: tuple[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    phase: str = "Running",
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "uid": f"uid-{name}", "labels": labels or {}}
    if owner:
        meta["ownerReferences"] = [{"kind": owner[0], "name": owner[1], "uid": "o", "controller": True}]
    if annotations:
        meta["annotations"] = annotations
    return {
        "metadata": meta,
        "spec": {"nodeName": node, "containers": [{"name": "main"}]},
        "status": {"phase": phase},
    }


def node(name: str, unschedulable: bool = False) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"unschedulable": True} if unschedulable else {}}


@dataclass
class FakeCluster:
    pods: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    budgets: list[dict[str, Any]] = field(default_factory=list)
    migrations: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    dry_runs: int = 0
    _rv: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def add_pod(self, p: dict[str, Any]) -> None:
        self.pods[(p["metadata"]["namespace"], p["metadata"]["name"])] = p

    def read_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.pods.get((namespace, name)))

    def read_node(self, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.nodes.get(name))

    def list_pods_on_node(self, node: str, namespace: str) -> list[dict[str, Any]]:
        return [
            copy.deepcopy(p)
            for (ns, _), p in self.pods.items()
            if p["spec"].get("nodeName") == node and (not namespace or ns == namespace)
        ]

    def list_budgets(self, namespace: str) -> list[dict[str, Any]]:
        return [b for b in self.budgets if not namespace or b["metadata"]["namespace"] == namespace]

    def list_migrations(self, namespace: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(m) for (ns, _), m in self.migrations.items() if not namespace or ns == namespace]

    def read_migration(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.migrations.get((namespace, name)))

    def create_migration(self, namespace: str, body: dict[str, Any], *, dry_run: bool) -> dict[str, Any]:
        obj = copy.deepcopy(body)
        key = (namespace, obj["metadata"]["name"])
        if key in self.migrations:
            raise Conflict("already exists")
        obj["metadata"] |= {"resourceVersion": str(next(self._rv)), "creationTimestamp": "2026-01-01T00:00:00Z"}
        obj.pop("status", None)  # the status subresource ignores status on create
        if dry_run:
            self.dry_runs += 1
        else:
            self.migrations[key] = obj
        return copy.deepcopy(obj)

    def patch_migration(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        obj = self.migrations[(namespace, name)]
        obj["metadata"].setdefault("annotations", {}).update(patch["metadata"]["annotations"])
        obj["metadata"]["resourceVersion"] = str(next(self._rv))
        return copy.deepcopy(obj)

    def replace_migration_status(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        obj = self.migrations[(namespace, name)]
        if body["metadata"]["resourceVersion"] != obj["metadata"]["resourceVersion"]:
            raise Conflict("the object has been modified")
        obj["status"] = copy.deepcopy(body["status"])
        obj["metadata"]["resourceVersion"] = str(next(self._rv))
        return copy.deepcopy(obj)

    def set_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """What the controller would write."""
        self.migrations[(namespace, name)]["status"] = status
        self.migrations[(namespace, name)]["metadata"]["resourceVersion"] = str(next(self._rv))


@dataclass
class RecordingAccess:
    """Tokens 'good' and 'viewer' authenticate; 'viewer' may only get and list."""

    calls: list[tuple[str, str, str, str]] = field(default_factory=list)

    def authenticate(self, authorization_header: str) -> User:
        token = bearer_token(authorization_header)
        if token not in ("good", "viewer"):
            raise Unauthenticated("token not accepted by the API server: invalid")
        return User(name=f"user-{token}")

    def authorize(self, user: User, verb: str, namespace: str, name: str = "") -> None:
        self.calls.append((user.name, verb, namespace, name))
        if user.name == "user-viewer" and verb not in ("get", "list"):
            raise PermissionDenied(f"user {user.name!r} cannot {verb} podmigrations in namespace {namespace!r}")


AUTH = {"Authorization": "Bearer good"}


@dataclass
class Harness:
    cluster: FakeCluster
    access: RecordingAccess
    app: Flask
    client: FlaskClient

    def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        return self.client.post(path, data=data, headers=AUTH if headers is None else headers)

    def get(self, path: str, headers: dict[str, str] | None = None) -> Any:
        return self.client.get(path, headers=AUTH if headers is None else headers)

    def delete(self, path: str) -> Any:
        return self.client.delete(path, headers=AUTH)


def make_harness(cluster: FakeCluster, settings: ApiSettings | None = None) -> Harness:
    settings = settings or ApiSettings()
    suffixes = (f"{i:06x}" for i in itertools.count(0xABC000))
    service = MigrationService(
        cluster,
        max_batch_pods=settings.max_batch_pods,
        clock=lambda: datetime(2026, 1, 1, 0, 5, tzinfo=UTC),
        suffix=lambda: next(suffixes),
    )
    access = RecordingAccess()
    app = create_app(settings, service=service, access=access, version="9.9.9")
    return Harness(cluster, access, app, app.test_client())


@pytest.fixture(autouse=True)
def _api_logs_at_info(caplog: pytest.LogCaptureFixture) -> None:
    """Every log call of the API builds its record (an `extra` key clashing with LogRecord's raises)."""
    caplog.set_level(logging.INFO, logger="orchestrator.api")


@pytest.fixture
def world() -> FakeCluster:
    cluster = FakeCluster()
    for name in ("node-a", "node-b"):
        cluster.nodes[name] = node(name)
    cluster.nodes["node-cordoned"] = node("node-cordoned", unschedulable=True)
    cluster.add_pod(pod("train-0", owner=("Job", "train")))
    cluster.add_pod(pod("agent-x", owner=("DaemonSet", "agent")))
    cluster.add_pod(pod("etcd-node-a", annotations={"kubernetes.io/config.mirror": "abc"}, owner=("Node", "node-a")))
    cluster.add_pod(pod("done-0", phase="Succeeded"))
    return cluster


@pytest.fixture
def h(world: FakeCluster) -> Harness:
    return make_harness(world)


SEED_BODY = {
    "pod_name": "train-0",
    "pod_namespace": "ns",
    "source_node": "node-a",
    "target_node": "node-b",
    "preserve_pv": True,
    "timeout": 300,
}


# ---------------------------------------------------------------------------------------------------------------
# Bad input: a 4xx naming the field, nothing created

BAD_BODIES: list[tuple[str, bytes | dict[str, Any], int, str]] = [
    ("invalid JSON", b'{"pod_name": "train-0",', 400, "body"),
    ("empty body", b"", 400, "body"),
    ("not an object", b'["train-0"]', 400, "body"),
    ("unknown field", SEED_BODY | {"podName": "x"}, 400, "podName"),
    ("missing pod_name", {k: v for k, v in SEED_BODY.items() if k != "pod_name"}, 400, "pod_name"),
    ("missing pod_namespace", {k: v for k, v in SEED_BODY.items() if k != "pod_namespace"}, 400, "pod_namespace"),
    ("pod_name not a string", SEED_BODY | {"pod_name": 7}, 400, "pod_name"),
    ("preserve_pv a string", SEED_BODY | {"preserve_pv": "yes"}, 400, "preserve_pv"),
    ("timeout a string", SEED_BODY | {"timeout": "300"}, 400, "timeout"),
    ("timeout a bool", SEED_BODY | {"timeout": True}, 400, "timeout"),
    ("timeout fractional", SEED_BODY | {"timeout": 30.5}, 400, "timeout"),
    ("malformed pod name", SEED_BODY | {"pod_name": "Train_0"}, 400, "pod_name"),
    ("malformed namespace", SEED_BODY | {"pod_namespace": "a.b"}, 400, "pod_namespace"),
    ("timeout too small", SEED_BODY | {"timeout": 5}, 422, "timeout"),
    ("timeout too large", SEED_BODY | {"timeout": 3601}, 422, "timeout"),
    ("source equals target", SEED_BODY | {"target_node": "node-a"}, 422, "target_node"),
    ("pod does not exist", SEED_BODY | {"pod_name": "ghost"}, 404, "pod_name"),
    ("target does not exist", SEED_BODY | {"target_node": "node-z"}, 404, "target_node"),
    ("source does not exist", SEED_BODY | {"source_node": "node-z"}, 404, "source_node"),
    ("pod not on source", SEED_BODY | {"source_node": "node-b", "target_node": ""}, 422, "source_node"),
    ("target is where it runs", SEED_BODY | {"source_node": "", "target_node": "node-a"}, 422, "target_node"),
    ("target cordoned", SEED_BODY | {"target_node": "node-cordoned"}, 422, "target_node"),
    ("DaemonSet pod", SEED_BODY | {"pod_name": "agent-x"}, 422, "pod_name"),
    ("static pod", SEED_BODY | {"pod_name": "etcd-node-a"}, 422, "pod_name"),
    ("finished pod", SEED_BODY | {"pod_name": "done-0"}, 422, "pod_name"),
    ("reason too long", SEED_BODY | {"reason": "x" * 1025}, 400, "reason"),
]


@pytest.mark.parametrize(("case", "body", "code", "field_name"), BAD_BODIES, ids=[c[0] for c in BAD_BODIES])
def test_bad_input_is_a_4xx_naming_the_field_and_creates_nothing(
    h: Harness, case: str, body: bytes | dict[str, Any], code: int, field_name: str
) -> None:
    r = h.post("/api/v1/migrations", body)
    assert r.status_code == code, r.json
    doc = r.json
    assert doc["kind"] == "Status" and doc["code"] == code and doc["field"] == field_name
    assert field_name in doc["message"] or field_name == "body"
    assert "Traceback" not in r.get_data(as_text=True)
    assert h.cluster.migrations == {} and h.cluster.dry_runs == 0


def test_pod_already_migrating_is_409_naming_the_active_migration(h: Harness) -> None:
    first = h.post("/api/v1/migrations", SEED_BODY)
    assert first.status_code == 202
    second = h.post("/api/v1/migrations", SEED_BODY)
    assert second.status_code == 409 and second.json["field"] == "pod_name"
    assert first.json["migration_id"] in second.json["message"]
    assert len(h.cluster.migrations) == 1


def test_a_finished_migration_does_not_block_a_new_one(h: Harness) -> None:
    first = h.post("/api/v1/migrations", SEED_BODY).json
    ns, name = first["migration_id"].split(".", 1)
    h.cluster.set_status(ns, name, {"phase": Phase.FAILED})
    assert h.post("/api/v1/migrations", SEED_BODY).status_code == 202


def test_oversized_body_is_413_before_parsing(world: FakeCluster) -> None:
    h = make_harness(world, ApiSettings(max_body_bytes=1024))
    r = h.post("/api/v1/migrations", SEED_BODY | {"reason": "x" * 2000})
    assert r.status_code == 413 and r.json["field"] == "body" and "1024" in r.json["message"]
    assert world.migrations == {}


def test_wrong_method_and_unknown_path_are_status_bodies(h: Harness) -> None:
    r: Any = h.client.put("/api/v1/migrations", headers=AUTH)
    assert r.status_code == 405 and r.json["kind"] == "Status"
    assert h.get("/api/v1/nothing").json["code"] == 404


@pytest.mark.parametrize("mid", ["nodot", ".x", "ns.", "NS.x", "ns.Bad_Name"])
def test_malformed_migration_id_is_400(h: Harness, mid: str) -> None:
    r = h.get(f"/api/v1/migrations/{mid}")
    assert r.status_code == 400 and r.json["field"] == "id"


def test_list_refuses_unknown_filters_and_phases(h: Harness) -> None:
    r = h.get("/api/v1/migrations?nmespace=ns")
    assert r.status_code == 400 and r.json["field"] == "nmespace"
    r = h.get("/api/v1/migrations?phase=Done")
    assert r.status_code == 400 and r.json["field"] == "phase" and "Succeeded" in r.json["message"]
    r = h.get("/api/v1/migrations?namespace=a&namespace=b")
    assert r.status_code == 400 and r.json["field"] == "namespace"


# ---------------------------------------------------------------------------------------------------------------
# Happy paths in the seed's shapes


def test_seed_body_is_accepted_as_written_and_creates_the_object(h: Harness) -> None:
    r = h.post("/api/v1/migrations", SEED_BODY)
    assert r.status_code == 202
    body = r.json
    assert body["migration_id"] == "ns.train-0-abc000"
    assert body["status"] == "pending" and body["phase"] == Phase.PENDING
    assert set(body["details"]) >= {
        "start_time",
        "end_time",
        "duration",
        "original_resources",
        "optimized_resources",
        "container_states",
        "checkpoint_path",
        "pv_claim_name",
        "new_pod_name",
    }
    obj = h.cluster.migrations[("ns", "train-0-abc000")]
    assert obj["spec"] == {
        "podName": "train-0",
        "sourceNode": "node-a",
        "targetNode": "node-b",
        "preservePV": True,
        "timeoutSeconds": 300,
        "dryRun": False,
    }
    assert obj["metadata"]["annotations"]["apollo.io/requested-by"] == "user-good"
    assert ("user-good", "create", "ns", "") in h.access.calls


def test_empty_nodes_mean_current_node_and_scheduler_choice(h: Harness) -> None:
    r = h.post(
        "/api/v1/migrations", {"pod_name": "train-0", "pod_namespace": "ns", "source_node": "", "target_node": ""}
    )
    assert r.status_code == 202
    spec = h.cluster.migrations[("ns", "train-0-abc000")]["spec"]
    assert "targetNode" not in spec and "sourceNode" not in spec and spec["timeoutSeconds"] == 300


def test_dry_run_validates_with_the_api_server_and_creates_nothing(h: Harness) -> None:
    r = h.post("/api/v1/migrations", SEED_BODY | {"dry_run": True})
    assert r.status_code == 200 and r.json["dry_run"] is True and "nothing was created" in r.json["message"]
    assert h.cluster.migrations == {} and h.cluster.dry_runs == 1


def _finished_status() -> dict[str, Any]:
    return {
        "phase": Phase.SUCCEEDED,
        "message": "replacement running on node-b",
        "sourceNode": "node-a",
        "checkpointPVC": "train-ckpt",
        "replacementPod": "train-1",
        "replacementNode": "node-b",
        "containers": [
            {"name": "loader", "state": "terminated", "exitCode": 0, "migrate": False},
            {"name": "trainer", "state": "running", "restartCount": 2},
            {"name": "bad", "state": "terminated", "exitCode": 3},
        ],
        "steps": {
            "accepted": "2026-01-01T00:00:00Z",
            "captured": "2026-01-01T00:00:01Z",
            "evicted": "2026-01-01T00:00:03.500000Z",
            "running": "2026-01-01T00:00:09Z",
            "finished": "2026-01-01T00:00:10Z",
        },
        "requestsBefore": {"cpuCores": 2.0, "memoryBytes": 4000},
        "requestsAfter": {"cpuCores": 1.5, "memoryBytes": 3000},
    }


def test_get_follows_the_object_with_details(h: Harness) -> None:
    mid = h.post("/api/v1/migrations", SEED_BODY).json["migration_id"]
    h.cluster.add_pod(pod("train-1", node="node-b"))
    h.cluster.pods[("ns", "train-1")]["spec"]["containers"][0]["env"] = [{"name": "CHECKPOINT_DIR", "value": "/ckpt"}]
    ns, name = mid.split(".", 1)
    h.cluster.set_status(ns, name, _finished_status())
    r = h.get(f"/api/v1/migrations/{mid}")
    assert r.status_code == 200
    body = r.json
    assert body["status"] == "completed" and body["message"] == "replacement running on node-b"
    d = body["details"]
    assert d["duration"] == 10.0 and d["end_time"] == "2026-01-01T00:00:10Z"
    assert d["original_resources"] == {"cpu_usage": 2.0, "memory_usage": 4000, "timestamp": "2026-01-01T00:00:01Z"}
    assert d["optimized_resources"]["cpu_usage"] == 1.5
    assert [(c["name"], c["state"], c["should_migrate"]) for c in d["container_states"]] == [
        ("loader", "completed", False),
        ("trainer", "running", True),
        ("bad", "failed", True),
    ]
    assert d["pv_claim_name"] == "train-ckpt" and d["new_pod_name"] == "train-1" and d["checkpoint_path"] == "/ckpt"
    assert [s["step"] for s in d["steps"]] == ["accepted", "captured", "evicted", "running", "finished"]
    assert [s["seconds_since_previous"] for s in d["steps"]] == [None, 1.0, 2.5, 5.5, 1.0]
    short = h.get(f"/api/v1/migrations/{mid}/status").json
    assert short == {
        "migration_id": mid,
        "status": "completed",
        "message": "replacement running on node-b",
        "start_time": "2026-01-01T00:00:00Z",
        "end_time": "2026-01-01T00:00:10Z",
        "duration_seconds": 10.0,
        "phase": Phase.SUCCEEDED,
    }
    assert ("user-good", "get", "ns", name) in h.access.calls


def test_get_of_a_missing_migration_is_404(h: Harness) -> None:
    r = h.get("/api/v1/migrations/ns.nothing-here")
    assert r.status_code == 404 and r.json["field"] == "id"


def test_list_filters_by_namespace_phase_and_node(h: Harness) -> None:
    h.cluster.add_pod(pod("web-0", namespace="other", node="node-b"))
    a = h.post("/api/v1/migrations", SEED_BODY).json["migration_id"]
    b = h.post("/api/v1/migrations", {"pod_name": "web-0", "pod_namespace": "other", "target_node": "node-a"}).json[
        "migration_id"
    ]
    h.cluster.set_status("ns", a.split(".", 1)[1], _finished_status())

    def ids(query: str) -> list[str]:
        r = h.get(f"/api/v1/migrations{query}")
        assert r.status_code == 200, r.json
        assert r.json["total"] == len(r.json["migrations"])
        return [m["migration_id"] for m in r.json["migrations"]]

    assert sorted(ids("")) == sorted([a, b])
    assert ids("?namespace=other") == [b]
    assert ids("?phase=completed") == [a]
    assert ids("?phase=Pending,running") == [b]
    assert sorted(ids("?node=node-a")) == sorted([a, b])
    assert ids("?node=node-b&phase=succeeded") == [a]
    assert ids("?pod=web-0") == [b]
    assert ("user-good", "list", "", "") in h.access.calls
    assert ("user-good", "list", "other", "") in h.access.calls


def test_cancel_of_an_untouched_migration_cancels_it_at_once(h: Harness) -> None:
    mid = h.post("/api/v1/migrations", SEED_BODY).json["migration_id"]
    r = h.delete(f"/api/v1/migrations/{mid}")
    assert r.status_code == 202
    assert r.json["status"] == "cancelled" and "user-good" in r.json["message"]
    obj = h.cluster.migrations[("ns", mid.split(".", 1)[1])]
    assert obj["status"]["phase"] == Phase.CANCELLED
    assert obj["metadata"]["annotations"][CANCEL_ANNOTATION] == "2026-01-01T00:05:00Z"
    again = h.delete(f"/api/v1/migrations/{mid}")
    assert again.status_code == 409 and again.json["field"] == "id"
    assert ("user-good", "delete", "ns", mid.split(".", 1)[1]) in h.access.calls


def test_cancel_of_a_started_migration_is_a_request_to_the_controller(h: Harness) -> None:
    mid = h.post("/api/v1/migrations", SEED_BODY).json["migration_id"]
    ns, name = mid.split(".", 1)
    h.cluster.set_status(ns, name, {"phase": Phase.EVICTING, "steps": {"accepted": "2026-01-01T00:00:00Z"}})
    r = h.delete(f"/api/v1/migrations/{mid}")
    assert r.status_code == 202
    assert r.json["phase"] == Phase.EVICTING and r.json["cancel_requested"] == "2026-01-01T00:05:00Z"
    assert h.cluster.migrations[(ns, name)]["status"]["phase"] == Phase.EVICTING


class _SeenAfterPatch(FakeCluster):
    def patch_migration(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        out = super().patch_migration(namespace, name, patch)
        self.set_status(namespace, name, {"phase": Phase.CAPTURING})  # the controller got there first
        return out


class _SeenBeforeStatusWrite(FakeCluster):
    def replace_migration_status(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        self.set_status(namespace, name, {"phase": Phase.CAPTURING})  # ... between our read and our write
        return super().replace_migration_status(namespace, name, body)


@pytest.mark.parametrize("racing_cls", [_SeenAfterPatch, _SeenBeforeStatusWrite])
def test_cancel_racing_the_controller_leaves_the_request_with_it(
    world: FakeCluster, racing_cls: type[FakeCluster]
) -> None:
    racing = racing_cls(pods=world.pods, nodes=world.nodes)
    h = make_harness(racing)
    mid = h.post("/api/v1/migrations", SEED_BODY).json["migration_id"]
    r = h.delete(f"/api/v1/migrations/{mid}")
    assert r.status_code == 202 and r.json["phase"] == Phase.CAPTURING and r.json["cancel_requested"]


# ---------------------------------------------------------------------------------------------------------------
# Authentication and authorization


def test_no_token_is_401_with_a_challenge_and_nothing_is_read(h: Harness) -> None:
    responses: list[Any] = [
        h.post("/api/v1/migrations", SEED_BODY, headers={}),
        h.get("/api/v1/migrations", headers={}),
        h.get("/api/v1/migrations/ns.x", headers={"Authorization": "Basic dXNlcg=="}),
        h.get("/api/v1/metrics", headers={"Authorization": "Bearer wrong"}),
        h.client.delete("/api/v1/migrations/ns.x"),
        h.post("/api/v1/migrations/batch", {"source_node": "node-a"}, headers={}),
    ]
    for r in responses:
        assert r.status_code == 401, r.json
        assert r.json["reason"] == "Unauthorized" and r.headers["WWW-Authenticate"].startswith("Bearer")
    assert h.access.calls == [] and h.cluster.migrations == {}


def test_401_comes_before_body_validation(h: Harness) -> None:
    assert h.post("/api/v1/migrations", b"not json", headers={}).status_code == 401


def test_no_permission_is_403_and_nothing_is_created(h: Harness) -> None:
    viewer = {"Authorization": "Bearer viewer"}
    r = h.post("/api/v1/migrations", SEED_BODY, headers=viewer)
    assert r.status_code == 403 and r.json["reason"] == "Forbidden" and "create" in r.json["message"]
    assert h.cluster.migrations == {}
    assert h.get("/api/v1/migrations", headers=viewer).status_code == 200


def test_health_and_openapi_need_no_token(h: Harness) -> None:
    assert h.client.get("/health").json == {"status": "healthy", "service": "apollo-orchestrator", "version": "9.9.9"}
    assert h.get("/api/v1/openapi.json", headers={}).json["info"]["version"] == "9.9.9"


def test_bearer_token_parsing() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer  abc ") == "abc"
    for bad in ("", "Bearer", "Bearer   ", "Token abc", "abc"):
        with pytest.raises(Unauthenticated):
            bearer_token(bad)


def test_ttl_cache_expires_and_evicts_least_recent() -> None:
    now = [0.0]
    cache: TtlCache[str, int] = TtlCache(10.0, max_entries=2, clock=lambda: now[0])
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # a is now most recent
    cache.put("c", 3)
    assert cache.get("b") is None and cache.get("a") == 1 and cache.get("c") == 3
    now[0] = 10.0
    assert cache.get("a") is None
    off: TtlCache[str, int] = TtlCache(0.0)
    off.put("a", 1)
    assert off.get("a") is None


# ---------------------------------------------------------------------------------------------------------------
# Batch


@pytest.fixture
def node_a(world: FakeCluster) -> FakeCluster:
    for i in range(3):
        world.add_pod(pod(f"worker-{i}", labels={"app": "train"}, owner=("Job", f"train-{i}")))
    world.add_pod(pod("worker-x", labels={"app": "train"}, node="node-b"))
    world.add_pod(pod("web-0", labels={"app": "web"}))
    world.add_pod(pod("agent-y", labels={"app": "train"}, owner=("DaemonSet", "agent")))
    world.budgets.append(
        {
            "metadata": {"namespace": "ns", "name": "train-pdb"},
            "spec": {"selector": {"matchLabels": {"app": "train"}}},
            "status": {"disruptionsAllowed": 2},
        }
    )
    return world


def test_batch_dry_run_shows_the_plan_and_creates_nothing(node_a: FakeCluster) -> None:
    h = make_harness(node_a)
    r = h.post("/api/v1/migrations/batch", {"source_node": "node-a", "label_selector": "app=train", "dry_run": True})
    assert r.status_code == 200, r.json
    body = r.json
    assert [p["pod_name"] for p in body["planned"]] == ["worker-0", "worker-1", "worker-2"]
    assert body["planned"][0]["disruption_budgets"] == ["train-pdb"]
    assert [p["waits_for"] is not None for p in body["planned"]] == [False, False, True]
    assert "train-pdb (2 allowed now)" in body["planned"][2]["waits_for"]
    assert body["skipped"] == [
        {
            "pod_name": "agent-y",
            "pod_namespace": "ns",
            "reason": "pod belongs to DaemonSet agent, which runs one pod on every node: it cannot move",
        }
    ]
    assert body["migrations"] == [] and body["batch_id"] is None
    assert node_a.migrations == {}


def test_batch_creates_one_migration_per_pod_with_the_batch_label(node_a: FakeCluster) -> None:
    h = make_harness(node_a)
    busy = h.post("/api/v1/migrations", SEED_BODY | {"pod_name": "worker-1", "source_node": ""}).json
    r = h.post(
        "/api/v1/migrations/batch", {"source_node": "node-a", "label_selector": "app in (train)", "timeout": 600}
    )
    assert r.status_code == 202, r.json
    body = r.json
    assert [m["pod_name"] for m in body["migrations"]] == ["worker-0", "worker-2"]
    assert {s["pod_name"]: s["reason"] for s in body["skipped"]}["worker-1"].startswith(
        f"already migrating: {busy['migration_id']}"
    )
    batch_id = body["batch_id"]
    created = [m for m in node_a.migrations.values() if m["metadata"]["labels"].get(BATCH_LABEL) == batch_id]
    assert sorted(m["spec"]["podName"] for m in created) == ["worker-0", "worker-2"]
    assert all(m["spec"]["sourceNode"] == "node-a" and m["spec"]["timeoutSeconds"] == 600 for m in created)
    listed = h.get(f"/api/v1/migrations?batch={batch_id}").json
    assert sorted(m["pod_name"] for m in listed["migrations"]) == ["worker-0", "worker-2"]


BAD_BATCHES: list[tuple[str, dict[str, Any], int, str]] = [
    ("missing source", {"label_selector": "a=b"}, 400, "source_node"),
    ("bad selector", {"source_node": "node-a", "label_selector": "app in (a"}, 400, "label_selector"),
    ("bad selector key", {"source_node": "node-a", "label_selector": "-app=x"}, 400, "label_selector"),
    ("source is target", {"source_node": "node-a", "target_node": "node-a"}, 422, "target_node"),
    ("unknown source", {"source_node": "node-z"}, 404, "source_node"),
    ("unknown target", {"source_node": "node-a", "target_node": "node-z"}, 404, "target_node"),
    ("cordoned target", {"source_node": "node-a", "target_node": "node-cordoned"}, 422, "target_node"),
    ("timeout out of range", {"source_node": "node-a", "timeout": 1}, 422, "timeout"),
]


@pytest.mark.parametrize(("case", "body", "code", "field_name"), BAD_BATCHES, ids=[c[0] for c in BAD_BATCHES])
def test_bad_batch_is_a_4xx_naming_the_field(
    node_a: FakeCluster, case: str, body: dict[str, Any], code: int, field_name: str
) -> None:
    h = make_harness(node_a)
    r = h.post("/api/v1/migrations/batch", body)
    assert r.status_code == code and r.json["field"] == field_name, r.json
    assert node_a.migrations == {}


def test_batch_larger_than_the_limit_is_refused_whole(node_a: FakeCluster) -> None:
    h = make_harness(node_a, ApiSettings(max_batch_pods=2))
    r = h.post("/api/v1/migrations/batch", {"source_node": "node-a", "label_selector": "app=train"})
    assert r.status_code == 422 and "3 pods" in r.json["message"]
    assert node_a.migrations == {}


def test_batch_authorizes_create_in_the_requested_namespace(node_a: FakeCluster) -> None:
    h = make_harness(node_a)
    h.post("/api/v1/migrations/batch", {"source_node": "node-a", "namespace": "ns", "dry_run": True})
    h.post("/api/v1/migrations/batch", {"source_node": "node-a", "dry_run": True})
    assert h.access.calls == [("user-good", "create", "ns", ""), ("user-good", "create", "", "")]


# ---------------------------------------------------------------------------------------------------------------
# Metrics


def _migration(phase: str, duration: float | None, before: tuple[float, int] | None = None) -> PodMigration:
    steps = {"accepted": "2026-01-01T00:00:00Z"}
    if duration is not None:
        steps["finished"] = datetime.fromtimestamp(1767225600 + duration, UTC).isoformat()
    status: dict[str, Any] = {"phase": phase, "steps": steps}
    if before:
        status["requestsBefore"] = {"cpuCores": before[0], "memoryBytes": before[1]}
        status["requestsAfter"] = {"cpuCores": before[0] / 2, "memoryBytes": before[1] // 4}
    return PodMigration.from_json({"metadata": {"name": "m", "namespace": "ns"}, "spec": {}, "status": status})


def test_metrics_are_measured_from_the_objects() -> None:
    items = [
        _migration(Phase.SUCCEEDED, 10.0, (2.0, 1000)),
        _migration(Phase.SUCCEEDED, 20.0, (2.0, 3000)),
        _migration(Phase.SUCCEEDED, 30.0),
        _migration(Phase.FAILED, 5.0),
        _migration(Phase.EVICTING, None),
    ]
    m = metrics_view(items)
    assert m["total_migrations"] == 5 and m["successful_migrations"] == 3 and m["failed_migrations"] == 1
    assert m["average_duration"] == 20.0
    assert m["duration_percentiles"] == {"p50": 20.0, "p90": 28.0, "p99": 29.8}
    assert m["cpu_savings_percentage"] == 50.0 and m["memory_savings_percentage"] == 75.0
    assert m["savings_sample_size"] == 2 and m["active_migrations"] == 1


def test_metrics_without_measurements_are_null_not_assumed() -> None:
    m = metrics_view([_migration(Phase.FAILED, 1.0)])
    assert m["cpu_savings_percentage"] is None and m["average_duration"] is None
    assert m["duration_percentiles"] is None


def test_percentile_matches_linear_interpolation() -> None:
    assert percentile([1.0], 99) == 1.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([4.0, 1.0, 3.0, 2.0], 100) == 4.0


def test_metrics_route_authorizes_list(h: Harness) -> None:
    r = h.get("/api/v1/metrics?namespace=ns")
    assert r.status_code == 200 and r.json["total_migrations"] == 0
    assert ("user-good", "list", "ns", "") in h.access.calls
    assert h.get("/api/v1/metrics?phase=x").status_code == 400


# ---------------------------------------------------------------------------------------------------------------
# API-server failures become precise errors


class _ApiError(Exception):
    def __init__(self, status: int, message: str = "") -> None:
        self.status = status
        self.reason = "Reason"
        self.body = orjson.dumps({"kind": "Status", "message": message}) if message else None


@pytest.mark.parametrize(
    ("status", "code"), [(404, 404), (409, 409), (422, 422), (400, 422), (403, 500), (500, 503), (429, 503)]
)
def test_api_server_errors_are_translated(status: int, code: int) -> None:
    from kubernetes.client.exceptions import ApiException

    from common.errors import http_status

    exc = ApiException(status=status, reason="Reason")
    exc.body = orjson.dumps({"kind": "Status", "message": "spec.timeoutSeconds: must be <= 3600"}).decode()
    err = translate(exc, "create podmigration")
    assert http_status(err) == code
    assert "create podmigration" in err.message
    if status == 422:
        assert "spec.timeoutSeconds" in err.message


def test_unreachable_api_server_is_503(world: FakeCluster) -> None:
    class Down(FakeCluster):
        def read_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
            raise translate(ConnectionRefusedError(), "read pod")

    h = make_harness(Down(nodes=world.nodes))
    r = h.post("/api/v1/migrations", SEED_BODY)
    assert r.status_code == 503 and "ConnectionRefusedError" in r.json["message"]


def test_a_bug_is_a_500_status_without_traceback(world: FakeCluster) -> None:
    class Buggy(FakeCluster):
        def list_migrations(self, namespace: str) -> list[dict[str, Any]]:
            raise KeyError("boom")

    h = make_harness(Buggy(nodes=world.nodes))
    r = h.get("/api/v1/migrations")
    assert r.status_code == 500 and r.json["message"] == "internal error: KeyError"


def test_not_found_errors_from_the_service() -> None:
    service = MigrationService(FakeCluster())
    with pytest.raises(NotFound):
        service.get("ns", "x")


# ---------------------------------------------------------------------------------------------------------------
# The OpenAPI document against the implementation


def _resolve(schema: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        schema = doc["components"]["schemas"][name]
    return schema


def validate(value: Any, schema: dict[str, Any], doc: dict[str, Any], path: str = "$") -> None:
    """The subset of OpenAPI 3.0 schema the document uses; fails naming the path."""
    schema = _resolve(schema, doc)
    if value is None:
        assert schema.get("nullable"), f"{path}: null where the schema does not allow it"
        return
    kind = schema.get("type")
    checks = {
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
    }
    if kind:
        assert checks[kind](value), f"{path}: {value!r} is not {kind}"
    if "enum" in schema:
        assert value in schema["enum"], f"{path}: {value!r} not in {schema['enum']}"
    if kind == "object":
        props = schema.get("properties", {})
        for name in schema.get("required", []):
            assert name in value, f"{path}: missing {name}"
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in props:
                validate(item, props[key], doc, f"{path}.{key}")
            elif extra is False:
                raise AssertionError(f"{path}: undocumented field {key!r}")
            elif isinstance(extra, dict):
                validate(item, extra, doc, f"{path}.{key}")
    if kind == "array":
        for i, item in enumerate(value):
            validate(item, schema["items"], doc, f"{path}[{i}]")


def _response_schema(doc: dict[str, Any], path: str, method: str, code: int) -> dict[str, Any]:
    responses = doc["paths"][path][method]["responses"]
    assert str(code) in responses, f"{method.upper()} {path} answered undocumented {code}"
    schema: dict[str, Any] = responses[str(code)]["content"]["application/json"].get("schema", {})
    return schema


def test_openapi_paths_are_exactly_the_routes(h: Harness) -> None:
    doc = document("1")
    documented = {(p, m.upper()) for p, ops in doc["paths"].items() for m in ops if m != "parameters"}
    served = set()
    for rule in h.app.url_map.iter_rules():
        if rule.endpoint.startswith("migration_api.") or rule.rule == "/health":
            path = rule.rule.replace("<path:mid>", "{id}").replace("<mid>", "{id}")
            for method in rule.methods or ():
                if method not in ("HEAD", "OPTIONS"):
                    served.add((path, method))
                    if path == "/api/v1/migrations/{id}" and method == "GET":
                        served.add(("/api/v1/migrations/{id}/status", "GET"))
    assert documented == served


def test_openapi_request_schemas_are_the_parser_tables() -> None:
    schemas = document("1")["components"]["schemas"]
    assert list(schemas["MigrationRequest"]["properties"]) == [f.name for f in MIGRATION_FIELDS]
    assert schemas["MigrationRequest"]["required"] == ["pod_name", "pod_namespace"]
    assert list(schemas["BatchRequest"]["properties"]) == [f.name for f in BATCH_FIELDS]
    example = document("1")["paths"]["/api/v1/migrations"]["post"]["requestBody"]["content"]["application/json"]
    assert set(example["example"]) == set(SEED_BODY)


def test_every_answer_validates_against_the_document(node_a: FakeCluster) -> None:
    h = make_harness(node_a)
    doc: dict[str, Any] = h.get("/api/v1/openapi.json", headers={}).json
    node_a.add_pod(pod("train-1", node="node-b"))

    def check(method: str, path: str, template: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        hdrs = AUTH if headers is None else headers
        r: Any
        if method == "get":
            r = h.client.get(path, headers=hdrs)
        elif method == "delete":
            r = h.client.delete(path, headers=hdrs)
        else:
            r = h.client.post(path, data=orjson.dumps(body), headers=hdrs)
        validate(r.json, _response_schema(doc, template, method, r.status_code), doc, f"{method} {path}")
        return r

    created = check("post", "/api/v1/migrations", "/api/v1/migrations", SEED_BODY).json
    mid = created["migration_id"]
    ns, name = mid.split(".", 1)
    check("post", "/api/v1/migrations", "/api/v1/migrations", SEED_BODY | {"dry_run": True, "pod_name": "web-0"})
    check("post", "/api/v1/migrations", "/api/v1/migrations", SEED_BODY)  # 409
    check("post", "/api/v1/migrations", "/api/v1/migrations", {"pod_name": 1})  # 400
    check("post", "/api/v1/migrations", "/api/v1/migrations", SEED_BODY, headers={})  # 401
    check("post", "/api/v1/migrations", "/api/v1/migrations", SEED_BODY, headers={"Authorization": "Bearer viewer"})
    check("post", "/api/v1/migrations", "/api/v1/migrations", SEED_BODY | {"timeout": 1})  # 422
    check("post", "/api/v1/migrations", "/api/v1/migrations", SEED_BODY | {"pod_name": "nope"})  # 404
    check("get", f"/api/v1/migrations/{mid}", "/api/v1/migrations/{id}")
    node_a.set_status(ns, name, _finished_status())
    check("get", f"/api/v1/migrations/{mid}", "/api/v1/migrations/{id}")
    check("get", f"/api/v1/migrations/{mid}/status", "/api/v1/migrations/{id}/status")
    check("get", "/api/v1/migrations/ns.missing", "/api/v1/migrations/{id}")
    check("get", "/api/v1/migrations/bad", "/api/v1/migrations/{id}/status")
    check("get", "/api/v1/migrations?phase=completed", "/api/v1/migrations")
    check("get", "/api/v1/migrations?bogus=1", "/api/v1/migrations")
    check("get", "/api/v1/metrics", "/api/v1/metrics")
    check("delete", f"/api/v1/migrations/{mid}", "/api/v1/migrations/{id}")  # 409: finished
    other = check("post", "/api/v1/migrations", "/api/v1/migrations", {"pod_name": "web-0", "pod_namespace": "ns"})
    check("delete", f"/api/v1/migrations/{other.json['migration_id']}", "/api/v1/migrations/{id}")
    batch = {"source_node": "node-a", "label_selector": "app=train"}
    check("post", "/api/v1/migrations/batch", "/api/v1/migrations/batch", batch | {"dry_run": True})
    check("post", "/api/v1/migrations/batch", "/api/v1/migrations/batch", batch)
    check("post", "/api/v1/migrations/batch", "/api/v1/migrations/batch", {"source_node": "node-z"})
    check("get", "/health", "/health")
    big: Any = make_harness(node_a, ApiSettings(max_body_bytes=300)).post("/api/v1/migrations", {"reason": "x" * 400})
    validate(big.json, _response_schema(doc, "/api/v1/migrations", "post", big.status_code), doc)


# ---------------------------------------------------------------------------------------------------------------
# KubernetesAccess against recorded review answers (the real reviews run in tests/e2e/test_migration_api.py)


class _Reviews:
    """Stands in for AuthenticationV1Api and AuthorizationV1Api: records requests, answers as told."""

    def __init__(self, users: dict[str, Any], allowed: set[tuple[str, str, str]], fail: bool = False) -> None:
        self.users = users
        self.allowed = allowed
        self.fail = fail
        self.token_reviews: list[str] = []
        self.access_reviews: list[Any] = []

    def create_token_review(self, body: Any) -> Any:
        from types import SimpleNamespace

        if self.fail:
            raise ConnectionRefusedError()
        self.token_reviews.append(body.spec.token)
        user = self.users.get(body.spec.token)
        status = SimpleNamespace(
            authenticated=user is not None, user=user, error=None if user else "invalid bearer token"
        )
        return SimpleNamespace(status=status)

    def create_subject_access_review(self, body: Any) -> Any:
        from types import SimpleNamespace

        self.access_reviews.append(body.spec)
        attrs = body.spec.resource_attributes
        ok = (body.spec.user, attrs.verb, attrs.namespace or "") in self.allowed
        return SimpleNamespace(status=SimpleNamespace(allowed=ok, reason="" if ok else "no RBAC rule"))


def _access(reviews: _Reviews, now: list[float]) -> Any:
    from types import SimpleNamespace

    from orchestrator.api.auth import KubernetesAccess

    access = KubernetesAccess(api_client=None, ttl_seconds=10.0, clock=lambda: now[0])
    access._authn = reviews  # type: ignore[assignment]
    access._authz = reviews  # type: ignore[assignment]
    reviews.users.setdefault(
        "alice-token", SimpleNamespace(username="alice", uid="u1", groups=["devs"], extra={"scope": ["a"]})
    )
    return access


def test_kubernetes_access_reviews_tokens_and_actions_and_caches_answers() -> None:
    now = [0.0]
    reviews = _Reviews({}, {("alice", "create", "ns")})
    access = _access(reviews, now)
    user = access.authenticate("Bearer alice-token")
    assert user == User(name="alice", uid="u1", groups=("devs",), extra=(("scope", ("a",)),))
    access.authorize(user, "create", "ns")
    with pytest.raises(PermissionDenied) as denied:
        access.authorize(user, "delete", "ns", "m-1")
    assert (
        "alice" in denied.value.message
        and "delete podmigrations.apollo.io 'm-1' in namespace 'ns'" in denied.value.message
    )
    assert "no RBAC rule" in denied.value.message
    spec = reviews.access_reviews[0]
    attrs = spec.resource_attributes
    assert (attrs.group, attrs.resource, attrs.verb, attrs.namespace) == ("apollo.io", "podmigrations", "create", "ns")
    assert spec.groups == ["devs"] and spec.extra == {"scope": ["a"]} and spec.uid == "u1"
    # Within the TTL, neither review is asked again; after it, both are.
    access.authenticate("Bearer alice-token")
    access.authorize(user, "create", "ns")
    assert (len(reviews.token_reviews), len(reviews.access_reviews)) == (1, 2)
    now[0] = 11.0
    access.authorize(access.authenticate("Bearer alice-token"), "create", "ns")
    assert (len(reviews.token_reviews), len(reviews.access_reviews)) == (2, 3)


def test_kubernetes_access_refuses_unknown_tokens_and_reports_an_unreachable_server() -> None:
    from common.errors import Unavailable

    now = [0.0]
    access = _access(_Reviews({}, set()), now)
    with pytest.raises(Unauthenticated, match="invalid bearer token"):
        access.authenticate("Bearer who-knows")
    down = _access(_Reviews({}, set(), fail=True), now)
    with pytest.raises(Unavailable, match="ConnectionRefusedError"):
        down.authenticate("Bearer alice-token")
