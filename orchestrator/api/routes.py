"""The REST routes as a Flask blueprint, mountable in the orchestrator's app or served on its own.

Each route does the same four things in the same order: authenticate (401 before anything else is
looked at), parse (400/413/422 naming the field), authorize the verb in the namespace concerned
(403), then call `MigrationService`. Errors leave as the shell's Status-shaped body; nothing answers
with a traceback. `/health` (the seed's shape) is not part of the blueprint because the
orchestrator's app serves it already; `create_app` adds it for a standalone API.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib import metadata
from typing import Any

from flask import Blueprint, Flask, Response, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from common.errors import DomainError, InvalidArgument, PayloadTooLarge, Unauthenticated, document_for, http_status
from common.http import Readiness, error_response, install, json_response, metrics_exposition
from orchestrator.api.auth import Access, User, access_for
from orchestrator.api.openapi import OPENAPI_PATH, document
from orchestrator.api.request import (
    ListQuery,
    parse_batch,
    parse_list_query,
    parse_migration,
    parse_migration_id,
)
from orchestrator.api.service import KubeCluster, MigrationService
from orchestrator.api.settings import ApiSettings
from orchestrator.api.views import (
    health_view,
    metrics_view,
    migration_view,
    status_view,
    summary_view,
)

log = logging.getLogger("orchestrator.api")
REALM = 'Bearer realm="apollo-orchestrator"'


def package_version() -> str:
    try:
        return metadata.version("apollo-stack")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def _error(exc: DomainError) -> Response:
    response = json_response(document_for(exc), http_status(exc))
    if isinstance(exc, Unauthenticated):
        response.headers["WWW-Authenticate"] = REALM
    return response


def create_api(settings: ApiSettings, *, service: MigrationService, access: Access, version: str = "") -> Blueprint:
    """The `/api/v1` routes over `service`, guarded by `access`."""
    bp = Blueprint("migration_api", __name__)
    doc = document(version or package_version())

    def caller() -> User:
        return access.authenticate(request.headers.get("Authorization", ""))

    def body() -> bytes:
        request.max_content_length = settings.max_body_bytes
        try:
            return request.get_data(cache=False)
        except RequestEntityTooLarge:
            raise PayloadTooLarge(
                f"request body is larger than {settings.max_body_bytes} bytes (api.max_body_bytes)", field="body"
            ) from None

    def guarded(verb: str, namespace: str, name: str = "") -> User:
        user = caller()
        access.authorize(user, verb, namespace, name)
        return user

    def query(allowed: tuple[str, ...] | None = None) -> ListQuery:
        args = {k: request.args.get(k, "") for k in request.args}
        for k in request.args:
            if len(request.args.getlist(k)) > 1:
                raise InvalidArgument(f"query parameter {k!r} given more than once", field=k)
        return parse_list_query(args, allowed) if allowed else parse_list_query(args)

    @bp.get(OPENAPI_PATH)
    def openapi() -> Response:
        return json_response(doc)

    @bp.post("/api/v1/migrations")
    def create() -> Response:
        user = caller()
        parsed = parse_migration(body())
        access.authorize(user, "create", parsed.namespace)
        created = service.create(parsed, user.name)
        view = migration_view(created.migration, created.pod)
        if created.dry_run:
            view["dry_run"] = True
            view["message"] = "dry run: the request is valid and the API server accepts the object; nothing was created"
            return json_response(view, 200)
        return json_response(view, 202)

    @bp.get("/api/v1/migrations")
    def list_migrations() -> Response:
        user = caller()
        q = query()
        access.authorize(user, "list", q.namespace)
        items = service.find(q)
        return json_response({"migrations": [summary_view(m) for m in items], "total": len(items)})

    @bp.post("/api/v1/migrations/batch")
    def batch() -> Response:
        user = caller()
        parsed = parse_batch(body())
        access.authorize(user, "create", parsed.namespace)
        outcome = service.batch(parsed, user.name)
        return json_response(outcome.to_json(), 200 if parsed.dry_run else 202)

    @bp.get("/api/v1/migrations/<path:mid>")
    def get_migration(mid: str) -> Response:
        short = mid.endswith("/status")
        namespace, name = parse_migration_id(mid.removesuffix("/status"))
        guarded("get", namespace, name)
        m = service.get(namespace, name)
        return json_response(status_view(m) if short else migration_view(m, service.pod_of(m)))

    @bp.delete("/api/v1/migrations/<mid>")
    def cancel(mid: str) -> Response:
        namespace, name = parse_migration_id(mid)
        user = guarded("delete", namespace, name)
        m = service.cancel(namespace, name, user.name)
        return json_response(migration_view(m), 202)

    @bp.get("/api/v1/metrics")
    def metrics() -> Response:
        user = caller()
        q = query(("namespace",))
        access.authorize(user, "list", q.namespace)
        return json_response(metrics_view(service.metrics_source(q.namespace)))

    bp.register_error_handler(DomainError, _error)

    def http_error(exc: HTTPException) -> Response:
        code = exc.code or 400
        return error_response(code, exc.name.replace(" ", ""), str(exc.description or exc.name))

    def unexpected(exc: Exception) -> Response:
        log.exception("unexpected error", extra={"path": request.path})
        return error_response(500, "InternalError", f"internal error: {type(exc).__name__}")

    bp.register_error_handler(HTTPException, http_error)
    bp.register_error_handler(Exception, unexpected)
    return bp


def create_api_from_client(settings: ApiSettings, api_client: Any, version: str = "") -> Blueprint:
    """The blueprint over a real API client: what the orchestrator's app factory mounts."""
    service = MigrationService(KubeCluster(api_client), max_batch_pods=settings.max_batch_pods)
    access = access_for(settings.authentication, api_client, settings.auth_cache_ttl_seconds)
    return create_api(settings, service=service, access=access, version=version)


def create_app(
    settings: ApiSettings,
    *,
    service: MigrationService,
    access: Access,
    version: str = "",
    readiness: Callable[[], Readiness] | None = None,
) -> Flask:
    """A standalone app: the API plus `/health`, `/healthz`, `/readyz`, `/metrics` and the shell's errors."""
    app = Flask("apollo-migration-api")
    version = version or package_version()
    app.register_blueprint(create_api(settings, service=service, access=access, version=version))

    @app.get("/health")
    def health() -> Response:
        return json_response(health_view(version))

    install(
        app,
        readiness=readiness or (lambda: Readiness(True)),
        metrics=lambda: metrics_exposition(None),
        service="apollo-orchestrator",
    )
    return app
