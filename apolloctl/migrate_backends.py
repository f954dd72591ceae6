"""The two ways `apolloctl migrate` / `migrations` reach the stack, giving the same answers.

* :class:`RestBackend`: the REST API (`--server URL`, or `$APOLLO_API_URL`), with a bearer token
  (`--token`, `--token-file`, `$APOLLO_TOKEN`) and the server's CA (`--cacert`);
* :class:`KubeBackend`: a kubeconfig alone (`--kubeconfig`, `$KUBECONFIG`): the same
  `MigrationService` the REST API runs, acting on PodMigration objects with the user's own
  credentials, so the API server's RBAC decides.

Both return the REST API's JSON and raise :class:`ApiError` with the API's status and message, so the
commands and the printing have one input shape whichever is used. Kept apart from the commands
because this is the I/O: HTTP, TLS and the Kubernetes client.
"""

from __future__ import annotations

import argparse
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from common.errors import DomainError, http_status

if TYPE_CHECKING:
    from orchestrator.api.service import MigrationService

Json = dict[str, Any]


class ApiError(Exception):
    """A refusal from the API (or the same refusal computed locally), with its status and message."""

    def __init__(self, status: int, message: str, field: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


class Backend(Protocol):
    def create(self, body: Json) -> Json: ...

    def batch(self, body: Json) -> Json: ...

    def list(self, params: Mapping[str, str]) -> Json: ...

    def get(self, migration_id: str) -> Json: ...

    def cancel(self, migration_id: str) -> Json: ...


class RestBackend:
    """The REST API over HTTP(S) with a bearer token."""

    def __init__(self, url: str, token: str = "", cafile: str = "", insecure: bool = False, timeout: float = 30.0):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.context: ssl.SSLContext | None = None
        if self.url.startswith("https://"):
            self.context = ssl.create_default_context(cafile=cafile or None)
            if insecure:
                self.context.check_hostname = False
                self.context.verify_mode = ssl.CERT_NONE

    def _call(self, method: str, path: str, body: Json | None = None, params: Mapping[str, str] | None = None) -> Json:
        url = self.url + path + (f"?{urllib.parse.urlencode(dict(params))}" if params else "")
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = orjson.dumps(body)
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.context) as resp:
                return dict(orjson.loads(resp.read()))
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                doc = orjson.loads(raw)
            except orjson.JSONDecodeError:
                doc = {}
            message = str(doc.get("message") or raw[:200].decode(errors="replace") or exc.reason)
            raise ApiError(exc.code, message, str(doc.get("field", ""))) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiError(0, f"cannot reach {self.url}: {reason}") from None

    def create(self, body: Json) -> Json:
        return self._call("POST", "/api/v1/migrations", body)

    def batch(self, body: Json) -> Json:
        return self._call("POST", "/api/v1/migrations/batch", body)

    def list(self, params: Mapping[str, str]) -> Json:
        return self._call("GET", "/api/v1/migrations", params=params)

    def get(self, migration_id: str) -> Json:
        return self._call("GET", f"/api/v1/migrations/{urllib.parse.quote(migration_id)}")

    def cancel(self, migration_id: str) -> Json:
        return self._call("DELETE", f"/api/v1/migrations/{urllib.parse.quote(migration_id)}")


class KubeBackend:
    """The REST API's own service and views, run here over a kubeconfig (the user's RBAC applies)."""

    def __init__(self, service: MigrationService, user: str = "") -> None:
        self.service = service
        self.user = user

    @classmethod
    def from_client(cls, api_client: Any, user: str = "") -> KubeBackend:
        from orchestrator.api.service import KubeCluster, MigrationService

        return cls(MigrationService(KubeCluster(api_client)), user)

    def _run(self, fn: Callable[[], Json]) -> Json:
        try:
            return fn()
        except DomainError as exc:
            raise ApiError(http_status(exc), exc.message, exc.field) from None

    def create(self, body: Json) -> Json:
        from orchestrator.api.request import parse_migration
        from orchestrator.api.views import migration_view

        def run() -> Json:
            created = self.service.create(parse_migration(orjson.dumps(body)), self.user)
            view = migration_view(created.migration, created.pod)
            if created.dry_run:
                view["message"] = "dry run: the request is valid; nothing was created"
            return view

        return self._run(run)

    def batch(self, body: Json) -> Json:
        from orchestrator.api.request import parse_batch

        return self._run(lambda: self.service.batch(parse_batch(orjson.dumps(body)), self.user).to_json())

    def list(self, params: Mapping[str, str]) -> Json:
        from orchestrator.api.request import parse_list_query
        from orchestrator.api.views import summary_view

        def run() -> Json:
            items = self.service.find(parse_list_query(params))
            return {"migrations": [summary_view(m) for m in items], "total": len(items)}

        return self._run(run)

    def get(self, migration_id: str) -> Json:
        from orchestrator.api.request import parse_migration_id
        from orchestrator.api.views import migration_view

        def run() -> Json:
            m = self.service.get(*parse_migration_id(migration_id))
            return migration_view(m, self.service.pod_of(m))

        return self._run(run)

    def cancel(self, migration_id: str) -> Json:
        from orchestrator.api.request import parse_migration_id
        from orchestrator.api.views import migration_view

        return self._run(
            lambda: migration_view(self.service.cancel(*parse_migration_id(migration_id), self.user or "apolloctl"))
        )


def backend_from(args: argparse.Namespace) -> Backend:
    """REST when a server is given, else the kubeconfig; an error when neither is."""
    server = args.server or os.environ.get("APOLLO_API_URL", "")
    if server:
        token = args.token or os.environ.get("APOLLO_TOKEN", "")
        if args.token_file:
            token = Path(args.token_file).read_text().strip()
        return RestBackend(server, token, args.cacert, args.insecure_skip_tls_verify)
    kubeconfig = args.kubeconfig or os.environ.get("KUBECONFIG", "")
    if not kubeconfig:
        raise ApiError(0, "no --server (or $APOLLO_API_URL) and no --kubeconfig (or $KUBECONFIG): nowhere to go")
    from common.kube import api_client

    return KubeBackend.from_client(api_client(kubeconfig.split(os.pathsep)[0]))
