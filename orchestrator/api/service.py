"""What the REST API and `apolloctl` do, over the Kubernetes API: create, read, list, cancel, batch.

No state of its own: every operation reads the PodMigrations, pods, nodes and budgets it needs from
the API server and writes PodMigration objects; the controller carries them out. Requests are
checked with the same pre-flight as the controller (`orchestrator.preflight`) before anything is
created, and creations go through the API server's own validation (a server-side dry run when the
caller asked for one), so a request refused here would also have been refused there.

`Cluster` is the narrow port to the API server (plain JSON in and out); `KubeCluster` implements it
with the kubernetes client and turns its failures into `common.errors` kinds, so no caller sees an
ApiException, and a dependency that is down is a 503, not a 500.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from apollo_api.podmigration import (
    API_VERSION,
    BATCH_LABEL,
    CANCEL_ANNOTATION,
    CANCEL_BY_ANNOTATION,
    GROUP,
    KIND,
    PLURAL,
    POD_NAME_LABEL,
    VERSION,
    Phase,
    PodMigration,
    PodMigrationSpec,
    migration_name,
)
from common.errors import Conflict, DomainError, InvalidArgument, NotFound, Unavailable, Unprocessable
from orchestrator.api.batch import BatchPlan, Budget, plan_batch
from orchestrator.api.request import BatchRequest, ListQuery, MigrationRequest, migration_id
from orchestrator.api.views import matches, sort_key
from orchestrator.preflight import preflight

log = logging.getLogger("orchestrator.api")

# Who asked for a migration through the API (the authenticated user), for events and audits.
REQUESTED_BY_ANNOTATION = "apollo.io/requested-by"


class Cluster(Protocol):
    """The API-server calls the migration API makes; plain JSON objects in and out."""

    def read_pod(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def read_node(self, name: str) -> dict[str, Any] | None: ...

    def list_pods_on_node(self, node: str, namespace: str) -> list[dict[str, Any]]: ...

    def list_budgets(self, namespace: str) -> list[dict[str, Any]]: ...

    def list_migrations(self, namespace: str) -> list[dict[str, Any]]: ...

    def read_migration(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def create_migration(self, namespace: str, body: dict[str, Any], *, dry_run: bool) -> dict[str, Any]: ...

    def patch_migration(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]: ...

    def replace_migration_status(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]: ...


def _now() -> datetime:
    return datetime.now(UTC)


def rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Created:
    """A migration the API created (or validated, on a dry run), with the pod it was checked against."""

    migration: PodMigration
    pod: dict[str, Any] | None
    dry_run: bool


@dataclass(frozen=True)
class BatchOutcome:
    batch_id: str
    request: BatchRequest
    plan: BatchPlan
    created: tuple[PodMigration, ...]
    failed: tuple[tuple[str, str, str], ...]  # namespace, pod, reason

    def to_json(self) -> dict[str, Any]:
        created = {(m.namespace, m.spec.pod_name): m for m in self.created}
        migrations = []
        for move in self.plan.moves:
            m = created.get((move.namespace, move.pod_name))
            if m is not None:
                migrations.append(
                    {
                        "migration_id": migration_id(m.namespace, m.name),
                        "pod_name": move.pod_name,
                        "pod_namespace": move.namespace,
                        "status": "pending",
                        "waits_for": move.waits_for or None,
                    }
                )
        skipped = [s.to_json() for s in self.plan.skipped]
        skipped += [{"pod_name": p, "pod_namespace": ns, "reason": r} for ns, p, r in self.failed]
        dry = self.request.dry_run
        verb = "would move" if dry else "moving"
        return {
            "batch_id": None if dry else self.batch_id,
            "dry_run": dry,
            "source_node": self.request.source_node,
            "target_node": self.request.target_node or None,
            "label_selector": self.request.selector.text,
            "namespace": self.request.namespace or None,
            "planned": [m.to_json() for m in self.plan.moves],
            "migrations": migrations,
            "skipped": skipped,
            "message": f"{verb} {len(self.plan.moves)} pod(s) off {self.request.source_node}; "
            f"{len(skipped)} skipped" + ("; nothing was created" if dry else ""),
        }


class MigrationService:
    """The operations behind the REST routes and `apolloctl` (with a kubeconfig alone)."""

    def __init__(
        self,
        cluster: Cluster,
        *,
        max_batch_pods: int = 500,
        clock: Callable[[], datetime] = _now,
        suffix: Callable[[], str] = lambda: secrets.token_hex(3),
    ) -> None:
        self.cluster = cluster
        self.max_batch_pods = max_batch_pods
        self._clock = clock
        self._suffix = suffix

    # -- one migration -----------------------------------------------------------------------------------------

    def _nodes(self, *names: str) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name in names:
            if name and name not in out:
                node = self.cluster.read_node(name)
                if node is not None:
                    out[name] = node
        return out

    def _migrations(self, namespace: str) -> list[PodMigration]:
        return [PodMigration.from_json(o) for o in self.cluster.list_migrations(namespace)]

    def _body(self, namespace: str, spec: PodMigrationSpec, user: str, batch_id: str = "") -> dict[str, Any]:
        labels = {}
        if len(spec.pod_name) <= 63:
            labels[POD_NAME_LABEL] = spec.pod_name
        if batch_id:
            labels[BATCH_LABEL] = batch_id
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {
                "name": migration_name(spec.pod_name, self._suffix()),
                "namespace": namespace,
                "labels": labels,
                "annotations": {REQUESTED_BY_ANNOTATION: user} if user else {},
            },
            "spec": spec.to_json() | {"preservePV": spec.preserve_pv, "dryRun": False},
        }

    def _create(self, namespace: str, body: dict[str, Any], dry_run: bool) -> PodMigration:
        """Create, retrying once with a new suffix if the generated name is taken."""
        try:
            return PodMigration.from_json(self.cluster.create_migration(namespace, body, dry_run=dry_run))
        except Conflict:
            spec = PodMigrationSpec.from_json(body["spec"])
            body["metadata"]["name"] = migration_name(spec.pod_name, self._suffix())
            return PodMigration.from_json(self.cluster.create_migration(namespace, body, dry_run=dry_run))

    def create(self, request: MigrationRequest, user: str = "") -> Created:
        """Check the request against the cluster, then create its PodMigration (or only validate it)."""
        spec, namespace = request.spec, request.namespace
        pod = self.cluster.read_pod(namespace, spec.pod_name)
        nodes = self._nodes(spec.source_node, spec.target_node)
        migrations = self._migrations(namespace) if pod is not None else []
        refusal = preflight(spec, namespace, pod, nodes, migrations)
        if refusal is not None:
            raise refusal
        migration = self._create(namespace, self._body(namespace, spec, user), spec.dry_run)
        log.info(
            "migration requested",
            extra={
                "migration": migration_id(namespace, migration.name),
                "pod": f"{namespace}/{spec.pod_name}",
                "target": spec.target_node,
                "user": user,
                "dry_run": spec.dry_run,
            },
        )
        return Created(migration, pod, spec.dry_run)

    def get(self, namespace: str, name: str) -> PodMigration:
        obj = self.cluster.read_migration(namespace, name)
        if obj is None:
            raise NotFound(f"migration {migration_id(namespace, name)} not found", field="id")
        return PodMigration.from_json(obj)

    def pod_of(self, m: PodMigration) -> dict[str, Any] | None:
        """The pod that carries the checkpoint mount now (replacement, else original); None if unreadable."""
        if not m.status.checkpoint_pvc or m.status.pod_template:
            return None
        try:
            return self.cluster.read_pod(m.namespace, m.status.replacement_pod or m.spec.pod_name)
        except DomainError:
            return None  # an auxiliary detail must not fail the whole answer

    def find(self, query: ListQuery) -> list[PodMigration]:
        items = [m for m in self._migrations(query.namespace) if matches(m, query)]
        return sorted(items, key=sort_key)

    def cancel(self, namespace: str, name: str, user: str = "") -> PodMigration:
        """Ask the controller to cancel; an object it never touched is cancelled here and now.

        Once the controller has started, only it knows whether the eviction has happened, so the API
        records the request (CANCEL_ANNOTATION) and the controller honours it before the eviction.
        An object with no status at all has not been seen by the controller: nothing has been done,
        so its status is set to Cancelled with the read resourceVersion (if the controller got there
        first, the write conflicts and the request stays with the controller).
        """
        m = self.get(namespace, name)
        if m.status.phase in Phase.FINISHED:
            raise Conflict(
                f"migration {migration_id(namespace, name)} has already finished ({m.status.phase}); "
                "there is nothing to cancel",
                field="id",
            )
        now = rfc3339(self._clock())
        if not m.annotations.get(CANCEL_ANNOTATION):
            annotations = {CANCEL_ANNOTATION: now}
            if user:
                annotations[CANCEL_BY_ANNOTATION] = user
            m = PodMigration.from_json(
                self.cluster.patch_migration(namespace, name, {"metadata": {"annotations": annotations}})
            )
        raw = self.cluster.read_migration(namespace, name)
        if raw is None:
            raise NotFound(f"migration {migration_id(namespace, name)} not found", field="id")
        m = PodMigration.from_json(raw)
        if not raw.get("status"):
            body = {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "resourceVersion": raw["metadata"]["resourceVersion"],
                },
                "spec": raw.get("spec") or {},
                "status": {
                    "phase": Phase.CANCELLED,
                    "message": f"cancelled by {user or 'a user'} before the controller started it; nothing was touched",
                    "steps": {"accepted": m.creation_timestamp or now, "finished": now},
                },
            }
            try:
                m = PodMigration.from_json(self.cluster.replace_migration_status(namespace, name, body))
            except Conflict:
                m = self.get(namespace, name)
        log.info("migration cancellation requested", extra={"migration": migration_id(namespace, name), "user": user})
        return m

    # -- batch -------------------------------------------------------------------------------------------------

    def batch(self, request: BatchRequest, user: str = "") -> BatchOutcome:
        """Plan (and unless it is a dry run, create) one migration per pod to move off the node."""
        nodes = self._nodes(request.source_node, request.target_node)
        if request.source_node not in nodes:
            raise NotFound(f"node {request.source_node!r} does not exist", field="source_node")
        if request.target_node:
            target = nodes.get(request.target_node)
            if target is None:
                raise NotFound(f"node {request.target_node!r} does not exist", field="target_node")
            if (target.get("spec") or {}).get("unschedulable"):
                raise Unprocessable(
                    f"node {request.target_node!r} is cordoned (spec.unschedulable)", field="target_node"
                )
        pods = self.cluster.list_pods_on_node(request.source_node, request.namespace)
        migrations = self._migrations(request.namespace)
        budgets = [Budget.from_json(b) for b in self.cluster.list_budgets(request.namespace)]
        plan = plan_batch(request, pods, migrations, budgets, max_pods=self.max_batch_pods)
        batch_id = f"batch-{self._suffix()}{self._suffix()}"
        created: list[PodMigration] = []
        failed: list[tuple[str, str, str]] = []
        if not request.dry_run:
            for move in plan.moves:
                spec = PodMigrationSpec(
                    pod_name=move.pod_name,
                    source_node=request.source_node,
                    target_node=request.target_node,
                    preserve_pv=request.preserve_pv,
                    timeout_seconds=request.timeout_seconds,
                    reason=request.reason or f"batch {batch_id}: move off {request.source_node}",
                )
                try:
                    created.append(
                        self._create(move.namespace, self._body(move.namespace, spec, user, batch_id), False)
                    )
                except (Conflict, Unprocessable, InvalidArgument, NotFound) as exc:
                    failed.append((move.namespace, move.pod_name, f"not created: {exc.message}"))
            log.info(
                "batch requested",
                extra={
                    "batch": batch_id,
                    "node": request.source_node,
                    "migrations_created": len(created),
                    "user": user,
                },
            )
        return BatchOutcome(batch_id, request, plan, tuple(created), tuple(failed))

    def metrics_source(self, namespace: str) -> list[PodMigration]:
        return self._migrations(namespace)


# ---------------------------------------------------------------------------------------------------------------
# The kubernetes-client adapter


def _message(exc: Any) -> str:
    """The API server's own message from an ApiException body (a Status), else its reason."""
    body = getattr(exc, "body", None)
    if body:
        try:
            doc = orjson.loads(body)
            if isinstance(doc, dict) and doc.get("message"):
                return str(doc["message"])
        except orjson.JSONDecodeError:
            pass
    return f"HTTP {getattr(exc, 'status', '?')} {getattr(exc, 'reason', '') or ''}".strip()


def translate(exc: Exception, what: str) -> DomainError:
    """An API-server failure as the DomainError the caller of the REST API should see."""
    from kubernetes.client.exceptions import ApiException

    if not isinstance(exc, ApiException):
        return Unavailable(f"cannot reach the API server to {what}: {type(exc).__name__}")
    status = exc.status or 0
    message = _message(exc)
    if status == 404:
        return NotFound(f"{what}: {message}")
    if status == 409:
        return Conflict(f"{what}: {message}")
    if status in (400, 422):
        return Unprocessable(f"{what}: the API server refused it: {message}")
    if status in (401, 403):
        # The orchestrator's own credentials lack a grant: an operator's problem, said plainly.
        return DomainError(f"{what}: the orchestrator is not permitted ({message}); check its RBAC")
    return Unavailable(f"{what}: the API server answered {status}: {message}")


class KubeCluster:
    """`Cluster` over the kubernetes client, reading raw JSON (no model objects to convert back)."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(api_client)
        self.policy = client.PolicyV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

    @staticmethod
    def _json(response: Any) -> Any:
        return orjson.loads(response.data)

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, missing_ok: bool = False, **kw: Any) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            return fn(*args, **kw)
        except ApiException as exc:
            if missing_ok and exc.status == 404:
                return None
            raise translate(exc, what) from None
        except Exception as exc:  # connection refused, TLS, timeouts: the API server is unavailable
            raise translate(exc, what) from None

    def read_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        r = self._call(
            f"read pod {namespace}/{name}",
            self.core.read_namespaced_pod,
            name,
            namespace,
            missing_ok=True,
            _preload_content=False,
        )
        return None if r is None else dict(self._json(r))

    def read_node(self, name: str) -> dict[str, Any] | None:
        r = self._call(f"read node {name}", self.core.read_node, name, missing_ok=True, _preload_content=False)
        return None if r is None else dict(self._json(r))

    def list_pods_on_node(self, node: str, namespace: str) -> list[dict[str, Any]]:
        selector = f"spec.nodeName={node}"
        if namespace:
            r = self._call(
                "list pods",
                self.core.list_namespaced_pod,
                namespace,
                field_selector=selector,
                _preload_content=False,
            )
        else:
            r = self._call(
                "list pods", self.core.list_pod_for_all_namespaces, field_selector=selector, _preload_content=False
            )
        return list(self._json(r).get("items") or [])

    def list_budgets(self, namespace: str) -> list[dict[str, Any]]:
        if namespace:
            r = self._call(
                "list PodDisruptionBudgets",
                self.policy.list_namespaced_pod_disruption_budget,
                namespace,
                _preload_content=False,
            )
        else:
            r = self._call(
                "list PodDisruptionBudgets",
                self.policy.list_pod_disruption_budget_for_all_namespaces,
                _preload_content=False,
            )
        return list(self._json(r).get("items") or [])

    def list_migrations(self, namespace: str) -> list[dict[str, Any]]:
        if namespace:
            doc = self._call(
                "list podmigrations", self.custom.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL
            )
        else:
            doc = self._call("list podmigrations", self.custom.list_cluster_custom_object, GROUP, VERSION, PLURAL)
        return list(doc.get("items") or [])

    def read_migration(self, namespace: str, name: str) -> dict[str, Any] | None:
        doc = self._call(
            f"read podmigration {namespace}/{name}",
            self.custom.get_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            missing_ok=True,
        )
        return None if doc is None else dict(doc)

    def create_migration(self, namespace: str, body: dict[str, Any], *, dry_run: bool) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"dry_run": "All"} if dry_run else {}
        return dict(
            self._call(
                "create podmigration",
                self.custom.create_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                body,
                **kwargs,
            )
        )

    def patch_migration(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return dict(
            self._call(
                f"update podmigration {namespace}/{name}",
                self.custom.patch_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                patch,
            )
        )

    def replace_migration_status(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(
            self._call(
                f"update podmigration {namespace}/{name} status",
                self.custom.replace_namespaced_custom_object_status,
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                body,
            )
        )
