"""The OpenAPI 3.0 document of the migration API, served at `/api/v1/openapi.json`.

Request schemas are rendered from the parser's own field tables (`orchestrator.api.request`), so
what is documented is what is accepted; response schemas are written here and a unit test validates
real answers of the app against them (every route, every documented status), and checks that the
document's paths and methods are exactly the app's routes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from apollo_api.podmigration import Phase
from orchestrator.api.request import BATCH_FIELDS, LIST_PARAMETERS, MIGRATION_FIELDS, STATUS_OF_PHASE, Field

OPENAPI_PATH = "/api/v1/openapi.json"

_STATUS_WORDS = sorted(set(STATUS_OF_PHASE.values()))


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return schema | {"nullable": True}


def _str(description: str = "", nullable: bool = False) -> dict[str, Any]:
    s: dict[str, Any] = {"type": "string"}
    if description:
        s["description"] = description
    return _nullable(s) if nullable else s


def _num(nullable: bool = False, description: str = "") -> dict[str, Any]:
    s: dict[str, Any] = {"type": "number"}
    if description:
        s["description"] = description
    return _nullable(s) if nullable else s


def _int(nullable: bool = False) -> dict[str, Any]:
    s: dict[str, Any] = {"type": "integer"}
    return _nullable(s) if nullable else s


def _obj(properties: dict[str, Any], description: str = "", nullable: bool = False) -> dict[str, Any]:
    s: dict[str, Any] = {
        "type": "object",
        "required": sorted(properties),
        "additionalProperties": False,
        "properties": properties,
    }
    if description:
        s["description"] = description
    return _nullable(s) if nullable else s


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def request_schema(fields: Sequence[Field], description: str) -> dict[str, Any]:
    return {
        "type": "object",
        "description": description,
        "additionalProperties": False,
        "required": [f.name for f in fields if f.required],
        "properties": {f.name: f.json_schema() for f in fields},
    }


_ID = (
    "Migration id: `<namespace>.<name>` of the PodMigration object (a namespace has no dots, so the first dot "
    "separates them); `kubectl get podmigration <name> -n <namespace>` shows the same object."
)

_RESOURCES = _obj(
    {
        "cpu_usage": _num(description="Requested CPU cores of the containers that run."),
        "memory_usage": _int(),
        "timestamp": _str("When these requests were recorded (RFC 3339).", nullable=True),
    },
    "Requests summed over the containers that run (cores, bytes).",
    nullable=True,
)

_DETAILS = _obj(
    {
        "start_time": _str("RFC 3339; when the migration was accepted.", nullable=True),
        "end_time": _str("RFC 3339; when it finished (null while active).", nullable=True),
        "duration": _num(nullable=True, description="Seconds from start to end (null while active)."),
        "original_resources": _RESOURCES,
        "optimized_resources": _RESOURCES,
        "container_states": {
            "type": "array",
            "items": _obj(
                {
                    "name": _str(),
                    "state": {"type": "string", "enum": ["waiting", "running", "completed", "failed"]},
                    "restart_count": _int(),
                    "should_migrate": {"type": "boolean", "description": "False: completed, not re-run."},
                    "init": {"type": "boolean"},
                    "exit_code": _int(nullable=True),
                }
            ),
        },
        "checkpoint_path": _str("Where the application writes checkpoints (CHECKPOINT_DIR).", nullable=True),
        "pv_claim_name": _str("The checkpoint PersistentVolumeClaim.", nullable=True),
        "new_pod_name": _str("The replacement pod.", nullable=True),
        "steps": {
            "type": "array",
            "description": "Extension: recorded steps in order, with the seconds since the previous one.",
            "items": _obj(
                {"step": _str(), "time": _str(), "seconds_since_previous": _num(nullable=True)},
            ),
        },
        "source_node": _str(nullable=True),
        "target_node": _str("The requested (required) target.", nullable=True),
        "suggested_node": _str("A preferred target chosen by APOLLO or the orchestrator.", nullable=True),
        "replacement_node": _str(nullable=True),
        "owner": _obj({"kind": _str(), "name": _str()}, nullable=True),
        "resumed_from": _str("The checkpoint step the replacement resumed from.", nullable=True),
        "eviction_attempts": _int(),
        "conditions": {
            "type": "array",
            "items": _obj({"type": _str(), "status": _str(), "reason": _str(), "message": _str()}),
        },
    }
)

_PHASE = {"type": "string", "enum": list(Phase.ALL), "description": "Extension: the exact PodMigration phase."}
_STATUS = {
    "type": "string",
    "enum": _STATUS_WORDS,
    "description": "The seed's status: pending; running (Capturing, Evicting, Rescheduling); completed; failed; "
    "cancelled.",
}

_MIGRATION = _obj(
    {
        "migration_id": _str(_ID),
        "status": _STATUS,
        "message": _str(),
        "details": _ref("MigrationDetails"),
        "phase": _PHASE,
        "name": _str("Name of the PodMigration object."),
        "pod_name": _str(),
        "pod_namespace": _str(),
        "preserve_pv": {"type": "boolean"},
        "timeout": _int(),
        "dry_run": {"type": "boolean", "description": "True: validated only, nothing was created."},
        "reason": _str(nullable=True),
        "batch_id": _str(nullable=True),
        "cancel_requested": _str("RFC 3339 time of a cancellation request.", nullable=True),
        "created": _str(nullable=True),
    },
    "The seed's MigrationResponse; fields after `details` are extensions.",
)

_SUMMARY = _obj(
    {
        "migration_id": _str(_ID),
        "status": _STATUS,
        "phase": _PHASE,
        "message": _str(),
        "pod_name": _str(),
        "pod_namespace": _str(),
        "source_node": _str(nullable=True),
        "target_node": _str(nullable=True),
        "replacement_node": _str(nullable=True),
        "new_pod_name": _str(nullable=True),
        "start_time": _str(nullable=True),
        "end_time": _str(nullable=True),
        "duration": _num(nullable=True),
        "batch_id": _str(nullable=True),
    }
)

_STATUS_RESPONSE = _obj(
    {
        "migration_id": _str(_ID),
        "status": _STATUS,
        "message": _str(),
        "start_time": _str(nullable=True),
        "end_time": _str(nullable=True),
        "duration_seconds": _num(nullable=True),
        "phase": _PHASE,
    },
    "The seed's MigrationStatusResponse; `phase` is an extension.",
)

_PLANNED = _obj(
    {
        "pod_name": _str(),
        "pod_namespace": _str(),
        "owner": _obj({"kind": _str(), "name": _str()}, nullable=True),
        "disruption_budgets": {"type": "array", "items": _str()},
        "waits_for": _str("Why this pod's eviction will wait (a PodDisruptionBudget).", nullable=True),
    }
)
_SKIPPED = _obj({"pod_name": _str(), "pod_namespace": _str(), "reason": _str()})

_BATCH = _obj(
    {
        "batch_id": _str("Label apollo.io/batch on every migration of the batch (null on a dry run).", nullable=True),
        "dry_run": {"type": "boolean"},
        "source_node": _str(),
        "target_node": _str(nullable=True),
        "label_selector": _str(),
        "namespace": _str(nullable=True),
        "planned": {"type": "array", "items": _PLANNED},
        "migrations": {
            "type": "array",
            "items": _obj(
                {
                    "migration_id": _str(_ID),
                    "pod_name": _str(),
                    "pod_namespace": _str(),
                    "status": _STATUS,
                    "waits_for": _str(nullable=True),
                }
            ),
        },
        "skipped": {"type": "array", "items": _SKIPPED},
        "message": _str(),
    }
)

_METRICS = _obj(
    {
        "total_migrations": _int(),
        "successful_migrations": _int(),
        "failed_migrations": _int(),
        "average_duration": _num(nullable=True, description="Mean seconds of succeeded migrations."),
        "cpu_savings_percentage": _num(
            nullable=True,
            description="Measured: 100 x (requests before - after) / before, over succeeded migrations that "
            "recorded both (status.requestsBefore/After); null when none did.",
        ),
        "memory_savings_percentage": _num(nullable=True),
        "cancelled_migrations": _int(),
        "active_migrations": _int(),
        "by_phase": {"type": "object", "additionalProperties": {"type": "integer"}},
        "duration_percentiles": _obj({"p50": _num(), "p90": _num(), "p99": _num()}, nullable=True),
        "savings_sample_size": _int(),
        "cpu_cores_saved": _num(nullable=True),
        "memory_bytes_saved": _int(nullable=True),
    },
    "The seed's MetricsResponse; fields after memory_savings_percentage are extensions.",
)

_ERROR = {
    "type": "object",
    "description": "Every error: a trimmed Kubernetes Status naming the offending field when there is one.",
    "required": ["kind", "status", "code", "reason", "message"],
    "additionalProperties": False,
    "properties": {
        "kind": {"type": "string", "enum": ["Status"]},
        "status": {"type": "string", "enum": ["Failure"]},
        "code": {"type": "integer"},
        "reason": {"type": "string"},
        "message": {"type": "string"},
        "field": {"type": "string"},
    },
}

_HEALTH = _obj({"status": _str(), "service": _str(), "version": _str()})


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Malformed request: not JSON, unknown or missing field, wrong type, malformed name or id.",
        401: "No bearer token, or the API server did not accept it (TokenReview).",
        403: "The user may not do this on podmigrations in that namespace (SubjectAccessReview).",
        404: "The pod, node or migration does not exist.",
        409: "The pod is already migrating, or the migration has already finished.",
        413: "The body is larger than api.max_body_bytes.",
        422: "Well-formed but not actionable: timeout out of range, source equal to target, DaemonSet or static "
        "pod, pod not on source_node, cordoned target, too many pods for one batch.",
        503: "The API server is unreachable.",
    }
    return {str(c): _json(_ref("Status"), text[c]) for c in codes}


_AUTH = (401, 403, 503)
_ID_PARAM = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}, "description": _ID}


def _query(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": {"type": "string"}, "description": description}


def document(version: str) -> dict[str, Any]:
    """The whole OpenAPI document."""
    migration_body = {
        "required": True,
        "content": {
            "application/json": {
                "schema": _ref("MigrationRequest"),
                "example": {
                    "pod_name": "training-job-0",
                    "pod_namespace": "default",
                    "source_node": "node-1",
                    "target_node": "node-2",
                    "preserve_pv": True,
                    "timeout": 300,
                },
            }
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "APOLLO migration API",
            "version": version,
            "description": "Checkpoint-preserving pod migrations, fronting apollo.io/v1alpha1 PodMigration "
            "objects (the API keeps no state of its own). Compatible with the seed's REST shapes; additions are "
            "marked as extensions. Every call under /api/v1 except this document needs a bearer token that the "
            "Kubernetes API server accepts (TokenReview) and RBAC on podmigrations.apollo.io in the namespace "
            "concerned (SubjectAccessReview): create for POST, get for GET by id, list for lists and metrics, "
            "delete for cancellation.",
        },
        "security": [{"bearer": []}],
        "paths": {
            "/health": {
                "get": {
                    "summary": "Liveness in the seed's shape.",
                    "security": [],
                    "responses": {"200": _json(_ref("Health"), "The service answers.")},
                }
            },
            OPENAPI_PATH: {
                "get": {
                    "summary": "This document.",
                    "security": [],
                    "responses": {"200": {"description": "OpenAPI 3.0 document.", "content": {"application/json": {}}}},
                }
            },
            "/api/v1/migrations": {
                "post": {
                    "summary": "Start a migration (verb create).",
                    "requestBody": migration_body,
                    "responses": {
                        "202": _json(_ref("Migration"), "Accepted: the PodMigration exists; follow it with GET."),
                        "200": _json(_ref("Migration"), "dry_run: the request is valid; nothing was created."),
                        **_errors(400, 404, 409, 413, 422, *_AUTH),
                    },
                },
                "get": {
                    "summary": "List migrations, oldest first (verb list).",
                    "parameters": [_query(k, v) for k, v in LIST_PARAMETERS.items()],
                    "responses": {
                        "200": _json(_ref("MigrationList"), "The migrations that pass every filter."),
                        **_errors(400, *_AUTH),
                    },
                },
            },
            "/api/v1/migrations/batch": {
                "post": {
                    "summary": "Move every pod matching a selector off a node, like a drain (verb create).",
                    "description": "One PodMigration per pod; DaemonSet, static, finished and already migrating "
                    "pods are skipped with the reason. Evictions honour PodDisruptionBudgets (retried until "
                    "the timeout) and the orchestrator's concurrency caps decide how many move at once. "
                    "dry_run returns the plan and creates nothing.",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("BatchRequest")}},
                    },
                    "responses": {
                        "202": _json(_ref("BatchResponse"), "Accepted: one migration per planned pod."),
                        "200": _json(_ref("BatchResponse"), "dry_run: the plan; nothing was created."),
                        **_errors(400, 404, 413, 422, *_AUTH),
                    },
                }
            },
            "/api/v1/migrations/{id}": {
                "parameters": [_ID_PARAM],
                "get": {
                    "summary": "A migration in full (verb get).",
                    "responses": {"200": _json(_ref("Migration"), "The migration."), **_errors(400, 404, *_AUTH)},
                },
                "delete": {
                    "summary": "Cancel a migration (verb delete).",
                    "description": "Before the eviction the controller stops and marks it Cancelled (one it never "
                    "started is cancelled at once); after the eviction the move completes and its message says "
                    "the cancellation came too late. The object is kept.",
                    "responses": {
                        "202": _json(_ref("Migration"), "Cancellation requested (or done)."),
                        **_errors(400, 404, 409, *_AUTH),
                    },
                },
            },
            "/api/v1/migrations/{id}/status": {
                "parameters": [_ID_PARAM],
                "get": {
                    "summary": "A migration's status in short (verb get).",
                    "responses": {
                        "200": _json(_ref("MigrationStatus"), "The status."),
                        **_errors(400, 404, *_AUTH),
                    },
                },
            },
            "/api/v1/metrics": {
                "get": {
                    "summary": "Totals, durations and measured request savings (verb list).",
                    "parameters": [_query("namespace", LIST_PARAMETERS["namespace"])],
                    "responses": {"200": _json(_ref("Metrics"), "Figures."), **_errors(400, *_AUTH)},
                }
            },
        },
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A Kubernetes token (service-account or user) the API server accepts.",
                }
            },
            "schemas": {
                "MigrationRequest": request_schema(MIGRATION_FIELDS, "The seed's MigrationRequest, extended."),
                "BatchRequest": request_schema(BATCH_FIELDS, "Move pods off a node."),
                "Migration": _MIGRATION,
                "MigrationDetails": _DETAILS,
                "MigrationStatus": _STATUS_RESPONSE,
                "MigrationList": _obj(
                    {"migrations": {"type": "array", "items": _SUMMARY}, "total": _int()},
                ),
                "BatchResponse": _BATCH,
                "Metrics": _METRICS,
                "Health": _HEALTH,
                "Status": _ERROR,
            },
        },
    }
