"""The webhook's parts on their own: patch builder, settings, claim creator, PodMigration watch."""

from __future__ import annotations

import copy
import threading
from typing import Any

import jsonpatch
import orjson
import pytest

from apollo_api.podmigration import PodMigration
from common.settings import ConfigError, build
from tests.unit.test_webhook_fixtures import migration
from webhook.claims import ClaimCreator, Outcome, claim_manifest
from webhook.config import ClaimSettings, WebhookSettings, load_settings
from webhook.migrations import MigrationIndex, MigrationWatcher
from webhook.mutate import ClaimRequest
from webhook.patch import PatchBuilder, pointer

# ---- patch builder ------------------------------------------------------------------------------------


def test_pointer_escapes_per_rfc6901() -> None:
    assert pointer(["metadata", "annotations", "apollo.io/migration"]) == "/metadata/annotations/apollo.io~1migration"
    assert pointer(["a~b", 0]) == "/a~0b/0"


def test_builder_creates_missing_parents_and_its_ops_reproduce_its_document() -> None:
    doc: dict[str, Any] = {"spec": {"containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}, "metadata": {}}
    b = PatchBuilder(doc)
    b.remove(("spec", "containers", 2))
    b.remove(("spec", "containers", 0))
    b.append(("spec", "containers", 0, "env"), {"name": "X", "value": "1"})
    b.append(("spec", "containers", 0, "env"), {"name": "Y", "value": "2"})
    b.set(("metadata", "annotations", "k/v"), "1")
    b.set(("metadata", "annotations", "k/v"), "1")  # unchanged: no op
    b.set(("metadata", "annotations", "k/v"), "2")  # changed: replace
    b.set(("spec", "affinity", "nodeAffinity", "required"), [1])
    assert doc == {"spec": {"containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}, "metadata": {}}
    assert jsonpatch.JsonPatch(b.ops).apply(copy.deepcopy(doc)) == b.document
    assert b.document["spec"]["containers"] == [
        {"name": "b", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]}
    ]
    assert [op["op"] for op in b.ops] == ["remove", "remove", "add", "add", "add", "replace", "add"]
    assert b.ops[4] == {"op": "add", "path": "/metadata/annotations", "value": {"k/v": "1"}}


def test_builder_treats_null_as_missing() -> None:
    b = PatchBuilder({"metadata": {"annotations": None}})
    b.set(("metadata", "annotations", "a"), "x")
    assert jsonpatch.JsonPatch(b.ops).apply({"metadata": {"annotations": None}}) == {
        "metadata": {"annotations": {"a": "x"}}
    }


# ---- settings ---------------------------------------------------------------------------------------------


def test_settings_from_variables_and_precise_errors() -> None:
    s = load_settings(
        environ={
            "WEBHOOK_CLAIM__SIZE": "5Gi",
            "WEBHOOK_CLAIM__STORAGE_CLASS": "fast-local",
            "WEBHOOK_EXCLUDED_NAMESPACES": "kube-system,apollo-system",
            "WEBHOOK_SERVER__CERTFILE": "/tls/tls.crt",
            "WEBHOOK_SERVER__KEYFILE": "/tls/tls.key",
        }
    )
    assert s.server.bind == "0.0.0.0:8443" and s.server.tls
    assert s.claim.size == "5Gi" and s.excluded_namespaces == ("kube-system", "apollo-system")
    for env, field in [
        ({"WEBHOOK_MOUNT_PATH": "checkpoint"}, "mount_path"),
        ({"WEBHOOK_MOUNT_PATH": "/a/../b"}, "mount_path"),
        ({"WEBHOOK_CLAIM__SIZE": "lots"}, "claim.size"),
        ({"WEBHOOK_CLAIM__ACCESS_MODE": "ReadWriteSometimes"}, "claim.access_mode"),
        ({"WEBHOOK_OPT_IN_LABEL": "bad key!"}, "opt_in_label"),
        ({"WEBHOOK_OPT_IN_VALUE": ""}, "opt_in_value"),
        ({"WEBHOOK_EXCLUDED_NAMESPACES": "Kube_System"}, "excluded_namespaces"),
        ({"WEBHOOK_SERVER__CERTFILE": "/tls/tls.crt"}, "certfile and server.keyfile"),
        ({"WEBHOOK_AFFINITY__SUGGESTED_WEIGHT": "101"}, "affinity.suggested_weight"),
    ]:
        with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
            load_settings(environ=env)


# ---- claims -------------------------------------------------------------------------------------------------


class ApiError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.reason = f"status {status}"


class FakeCore:
    """Answers create calls from a script of statuses (0 = success) and records the bodies."""

    def __init__(self, *script: int) -> None:
        self.script = list(script)
        self.bodies: list[dict[str, Any]] = []

    def create_namespaced_persistent_volume_claim(self, namespace: str, body: dict[str, Any], **_: Any) -> None:
        self.bodies.append(body)
        status = self.script.pop(0) if self.script else 0
        if status:
            raise ApiError(status)


REQUEST = ClaimRequest("team-a", "trainer-ckpt", "Deployment", "trainer")


def _creator(core: FakeCore, outcomes: list[str], **settings: Any) -> ClaimCreator:
    cfg = build(ClaimSettings, {"retry_backoff_seconds": 0.001, **settings})
    return ClaimCreator(core, cfg, outcomes.append)


def test_claim_manifest_uses_settings_and_default_class() -> None:
    body = claim_manifest(REQUEST, ClaimSettings())
    assert body["spec"] == {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    assert body["metadata"]["annotations"] == {"apollo.io/workload": "Deployment/trainer"}
    fast = claim_manifest(
        REQUEST, build(ClaimSettings, {"storage_class": "local-path", "access_mode": "ReadWriteMany"})
    )
    assert fast["spec"]["storageClassName"] == "local-path" and fast["spec"]["accessModes"] == ["ReadWriteMany"]


@pytest.mark.parametrize(
    ("script", "outcome", "calls"),
    [((), Outcome.CREATED, 1), ((409,), Outcome.EXISTS, 1), ((503, 0), Outcome.CREATED, 2), ((403,), Outcome.FAILED, 1),
     ((500, 500, 500, 500), Outcome.FAILED, 4)],
)  # fmt: skip
def test_claim_creation_outcomes(script: tuple[int, ...], outcome: str, calls: int) -> None:
    core, outcomes = FakeCore(*script), list[str]()
    assert _creator(core, outcomes).ensure(REQUEST) == outcome
    assert outcomes == [outcome] and len(core.bodies) == calls


def test_claims_queued_once_remembered_and_dropped_when_full() -> None:
    core, outcomes = FakeCore(), list[str]()
    creator = _creator(core, outcomes, queue_size=1)
    assert creator.submit(REQUEST) and creator.submit(REQUEST)  # second: already queued
    assert not creator.submit(ClaimRequest("team-a", "other-ckpt", "Job", "other"))  # queue full
    assert outcomes == [Outcome.DROPPED]
    creator.start()
    try:
        _wait(lambda: outcomes == [Outcome.DROPPED, Outcome.CREATED])
        assert creator.submit(REQUEST) and creator.queue.qsize() == 0  # known to exist: not asked again
    finally:
        creator.stop()
    assert not creator.is_alive() and len(core.bodies) == 1


def _wait(predicate: Any, timeout: float = 5.0) -> None:
    done = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        done.wait(0.01)
    raise AssertionError("condition not reached")


# ---- PodMigration index and watch -------------------------------------------------------------------------


def _obj(m: PodMigration) -> dict[str, Any]:
    return m.to_json() | {"metadata": {**m.to_json()["metadata"], "creationTimestamp": m.creation_timestamp}}


class Raw:
    def __init__(self, data: bytes = b"", chunks: list[bytes] | None = None) -> None:
        self.data = data
        self.chunks = chunks or []
        self.released = False

    def stream(self, amt: int) -> Any:
        yield from self.chunks

    def release_conn(self) -> None:
        self.released = True


class FakeCustomObjects:
    def __init__(self, listing: dict[str, Any] | Exception, events: list[dict[str, Any]]) -> None:
        self.listing = listing
        self.events = events
        self.watched_from = ""
        self.watch: Raw | None = None

    def list_cluster_custom_object(self, group: str, version: str, plural: str, **kw: Any) -> Raw:
        assert (group, version, plural) == ("apollo.io", "v1alpha1", "podmigrations")
        if kw.get("watch"):
            self.watched_from = kw["resource_version"]
            text = b"".join(orjson.dumps(e) + b"\n" for e in self.events)
            # Events split at arbitrary byte boundaries, as chunked transfer delivers them.
            self.watch = Raw(chunks=[text[i : i + 7] for i in range(0, len(text), 7)])
            return self.watch
        if isinstance(self.listing, Exception):
            raise self.listing
        return Raw(orjson.dumps(self.listing))


def test_index_keeps_active_migrations_only() -> None:
    index = MigrationIndex()
    assert not index.synced
    index.replace([migration("a", pod_name="p"), migration("done", pod_name="q", phase="Succeeded")])
    assert index.synced and [m.name for m in index.in_namespace("team-a")] == ["a"]
    index.apply("MODIFIED", migration("a", pod_name="p", phase="Failed"))
    assert index.in_namespace("team-a") == () and len(index) == 0
    index.apply("ADDED", migration("b", "team-b", pod_name="p"))
    assert [m.name for m in index.in_namespace("team-b")] == ["b"]
    index.apply("DELETED", migration("b", "team-b", pod_name="p"))
    assert len(index) == 0


def test_watcher_lists_then_follows_events() -> None:
    listed = migration("a", pod_name="p", phase="Capturing")
    api = FakeCustomObjects(
        {"metadata": {"resourceVersion": "41"}, "items": [_obj(listed)]},
        [
            {"type": "MODIFIED", "object": _obj(migration("a", pod_name="p", phase="Evicting", target="n2"))},
            {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "50"}}},
            {"type": "ADDED", "object": _obj(migration("b", pod_name="q"))},
            {"type": "ERROR", "object": {"code": 410}},
            {"type": "DELETED", "object": _obj(migration("b", pod_name="q"))},  # after ERROR: never read
        ],
    )
    index = MigrationIndex()
    events: list[int] = []
    MigrationWatcher(
        api,
        index,
        relist_backoff_seconds=1,
        watch_timeout_seconds=60,
        request_timeout_seconds=5,
        on_event=lambda: events.append(1),
    ).run_once()
    assert api.watched_from == "41" and api.watch is not None and api.watch.released
    by_name = {m.name: m for m in index.in_namespace("team-a")}
    assert set(by_name) == {"a", "b"} and by_name["a"].spec.target_node == "n2"
    assert len(events) == 3


def test_watcher_without_crd_is_synced_and_says_so() -> None:
    index = MigrationIndex()
    watcher = MigrationWatcher(
        FakeCustomObjects(ApiError(404), []),
        index,
        relist_backoff_seconds=1,
        watch_timeout_seconds=60,
        request_timeout_seconds=5,
    )
    watcher.run_once()
    assert index.synced and index.crd_missing
    failing = MigrationIndex()
    MigrationWatcher(
        FakeCustomObjects(ApiError(503), []),
        failing,
        relist_backoff_seconds=1,
        watch_timeout_seconds=60,
        request_timeout_seconds=5,
    ).run_once()
    assert not failing.synced and "ApiError" in failing.last_error


def test_settings_tree_builds_in_process() -> None:
    assert build(WebhookSettings, {}).claim == ClaimSettings()


def test_review_response_warnings_are_short_and_few() -> None:
    import base64

    from webhook.review import MAX_WARNING_CHARS, MAX_WARNINGS, review_response

    body = orjson.loads(review_response("u1", [{"op": "add", "path": "/a", "value": 1}], ["x" * 1000] * 40))
    response = body["response"]
    assert response["uid"] == "u1" and response["allowed"] is True and response["patchType"] == "JSONPatch"
    assert orjson.loads(base64.b64decode(response["patch"])) == [{"op": "add", "path": "/a", "value": 1}]
    assert len(response["warnings"]) == MAX_WARNINGS
    assert all(len(w) <= MAX_WARNING_CHARS and w.endswith("...") for w in response["warnings"])
    bare = orjson.loads(review_response("u2"))["response"]
    assert bare == {"uid": "u2", "allowed": True}
