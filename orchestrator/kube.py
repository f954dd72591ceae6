"""The orchestrator's port to the API server: plain JSON in and out, one error type.

`Kube` is the protocol the controller, the leader elector and the APOLLO link are written against;
`RestKube` implements it over the kubernetes client's transport (its TLS, auth and connection pool)
but speaks raw JSON and parses it with orjson: the generated model classes cost a millisecond per
pod and would hide fields the machine reads (a pod's full spec is copied into a PodMigration).
Every failure surfaces as :class:`ApiError` with the HTTP status and the API server's own message,
so callers decide on codes (404 gone, 409 conflict, 429 budget) and never see a client exception.
The unit tests' fake implements the same protocol in memory.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

import orjson

from apollo_api.podmigration import GROUP, PLURAL, VERSION
from common.watch import watch_events

log = logging.getLogger("orchestrator.kube")
Obj = dict[str, Any]

MIGRATIONS = f"/apis/{GROUP}/{VERSION}"
_APPS = {"Deployment": "deployments", "StatefulSet": "statefulsets", "ReplicaSet": "replicasets"}


class ApiError(Exception):
    """A failed API call: HTTP status (0 for a transport failure) and the server's message."""

    def __init__(self, code: int, message: str, reason: str = "") -> None:
        super().__init__(f"{code} {reason}: {message}" if reason else f"{code}: {message}")
        self.code = code
        self.message = message
        self.reason = reason


def scalable(kind: str) -> bool:
    return kind in _APPS


class Kube(Protocol):
    """The API-server calls the orchestrator makes."""

    # PodMigrations
    def list_migrations(self) -> tuple[list[Obj], str]: ...
    def watch_migrations(self, resource_version: str, stopping: Callable[[], bool]) -> Iterator[tuple[str, Obj]]: ...
    def read_migration(self, namespace: str, name: str) -> Obj | None: ...
    def create_migration(self, namespace: str, body: Obj) -> Obj: ...
    def replace_migration_status(self, namespace: str, name: str, body: Obj) -> Obj: ...
    def patch_migration(self, namespace: str, name: str, patch: Obj) -> Obj: ...
    def delete_migration(self, namespace: str, name: str, uid: str) -> None: ...

    # Pods, nodes, storage, workloads
    def read_pod(self, namespace: str, name: str) -> Obj | None: ...
    def list_pods(self, namespace: str) -> list[Obj]: ...
    def list_bound_pods(self, node: str = "") -> list[Obj]: ...
    def pods_resource_version(self) -> str: ...
    def watch_pods(self, resource_version: str, stopping: Callable[[], bool]) -> Iterator[tuple[str, Obj]]: ...
    def evict(self, namespace: str, name: str, uid: str) -> None: ...
    def create_pod(self, namespace: str, body: Obj) -> Obj: ...
    def read_node(self, name: str) -> Obj | None: ...
    def list_nodes(self) -> list[Obj]: ...
    def read_pvc(self, namespace: str, name: str) -> Obj | None: ...
    def read_pv(self, name: str) -> Obj | None: ...
    def read_job(self, namespace: str, name: str) -> Obj | None: ...
    def read_workload(self, kind: str, namespace: str, name: str) -> Obj | None: ...
    def scale_workload(self, kind: str, namespace: str, name: str, replicas: int) -> Obj: ...
    def create_event(self, namespace: str, body: Obj) -> None: ...

    # Leases
    def read_lease(self, namespace: str, name: str) -> Obj | None: ...
    def create_lease(self, namespace: str, body: Obj) -> Obj: ...
    def replace_lease(self, namespace: str, name: str, body: Obj) -> Obj: ...


def _q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _message(status: int, data: bytes) -> tuple[str, str]:
    """The API server's Status message (with the first cause, e.g. which budget refused), else the body."""
    try:
        doc = orjson.loads(data) if data else {}
    except orjson.JSONDecodeError:
        return data[:300].decode(errors="replace"), ""
    if not isinstance(doc, dict):
        return str(doc)[:300], ""
    message = str(doc.get("message") or "")
    causes = (doc.get("details") or {}).get("causes") or []
    extra = "; ".join(str(c.get("message")) for c in causes if c.get("message") and c.get("message") not in message)
    return (f"{message} ({extra})" if extra else message) or f"HTTP {status}", str(doc.get("reason") or "")


class RestKube:
    """`Kube` over a kubernetes `ApiClient` (kubeconfig or in-cluster), raw JSON, one timeout per call."""

    def __init__(self, api_client: Any, timeout_seconds: float = 10.0, watch_seconds: int = 60) -> None:
        self.client = api_client
        self.timeout = timeout_seconds
        self.watch_seconds = watch_seconds

    # -- transport -------------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: Any = None,
    ) -> Any:
        headers: dict[str, str | None] = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        params = [(k, str(v).lower() if isinstance(v, bool) else v) for k, v in (query or {}).items() if v is not None]
        try:
            request = self.client.param_serialize(
                method=method,
                resource_path=path,
                query_params=params,
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            return self.client.call_api(*request, _request_timeout=timeout or self.timeout)
        except Exception as exc:  # urllib3 / TLS / DNS: the API server could not be reached
            raise ApiError(0, f"{type(exc).__name__}: {exc}", "Unreachable") from exc

    def request(
        self,
        method: str,
        path: str,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        resp = self._call(method, path, query, body, content_type)
        data = resp.read()
        if not 200 <= resp.status <= 299:
            message, reason = _message(resp.status, data)
            raise ApiError(resp.status, message, reason)
        return orjson.loads(data) if data else {}

    def _get_or_none(self, path: str) -> Obj | None:
        try:
            result: Obj = self.request("GET", path)
            return result
        except ApiError as exc:
            if exc.code == 404:
                return None
            raise

    def _list(self, path: str, query: Mapping[str, Any] | None = None) -> tuple[list[Obj], str]:
        doc = self.request("GET", path, query)
        return list(doc.get("items") or []), str((doc.get("metadata") or {}).get("resourceVersion", ""))

    def _watch(
        self, path: str, resource_version: str, stopping: Callable[[], bool], query: Mapping[str, Any] | None = None
    ) -> Iterator[tuple[str, Obj]]:
        """Events of one watch call (ends when the server closes it); ERROR events are yielded as such."""
        params = {
            "watch": True,
            "resourceVersion": resource_version,
            "allowWatchBookmarks": True,
            "timeoutSeconds": self.watch_seconds,
            **(query or {}),
        }
        resp = self._call("GET", path, params, timeout=(self.timeout, self.watch_seconds + self.timeout))
        if not 200 <= resp.status <= 299:
            try:
                message, reason = _message(resp.status, resp.read())
            finally:
                resp.response.release_conn()
            raise ApiError(resp.status, message, reason)
        yield from watch_events(resp.response, stopping)

    # -- PodMigrations ---------------------------------------------------------------------------

    def list_migrations(self) -> tuple[list[Obj], str]:
        return self._list(f"{MIGRATIONS}/{PLURAL}")

    def watch_migrations(self, resource_version: str, stopping: Callable[[], bool]) -> Iterator[tuple[str, Obj]]:
        return self._watch(f"{MIGRATIONS}/{PLURAL}", resource_version, stopping)

    def _migration(self, namespace: str, name: str = "") -> str:
        base = f"{MIGRATIONS}/namespaces/{_q(namespace)}/{PLURAL}"
        return f"{base}/{_q(name)}" if name else base

    def read_migration(self, namespace: str, name: str) -> Obj | None:
        return self._get_or_none(self._migration(namespace, name))

    def create_migration(self, namespace: str, body: Obj) -> Obj:
        result: Obj = self.request("POST", self._migration(namespace), body=body)
        return result

    def replace_migration_status(self, namespace: str, name: str, body: Obj) -> Obj:
        result: Obj = self.request("PUT", self._migration(namespace, name) + "/status", body=body)
        return result

    def patch_migration(self, namespace: str, name: str, patch: Obj) -> Obj:
        result: Obj = self.request(
            "PATCH", self._migration(namespace, name), body=patch, content_type="application/merge-patch+json"
        )
        return result

    def delete_migration(self, namespace: str, name: str, uid: str) -> None:
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": uid} if uid else None}
        try:
            self.request("DELETE", self._migration(namespace, name), body=body)
        except ApiError as exc:
            if exc.code not in (404, 409):
                raise

    # -- pods ------------------------------------------------------------------------------------

    def read_pod(self, namespace: str, name: str) -> Obj | None:
        return self._get_or_none(f"/api/v1/namespaces/{_q(namespace)}/pods/{_q(name)}")

    def list_pods(self, namespace: str) -> list[Obj]:
        return self._list(f"/api/v1/namespaces/{_q(namespace)}/pods")[0]

    def list_bound_pods(self, node: str = "") -> list[Obj]:
        selector = f"spec.nodeName={node}" if node else "spec.nodeName!="
        return self._list("/api/v1/pods", {"fieldSelector": selector})[0]

    def pods_resource_version(self) -> str:
        """Where a pod watch starts: a one-item list's snapshot version (listing every pod would cost the
        same as the synthetic events of a watch from scratch)."""
        return self._list("/api/v1/pods", {"limit": 1})[1]

    def watch_pods(self, resource_version: str, stopping: Callable[[], bool]) -> Iterator[tuple[str, Obj]]:
        return self._watch("/api/v1/pods", resource_version, stopping)

    def evict(self, namespace: str, name: str, uid: str) -> None:
        body = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": namespace},
            "deleteOptions": {"preconditions": {"uid": uid}},
        }
        self.request("POST", f"/api/v1/namespaces/{_q(namespace)}/pods/{_q(name)}/eviction", body=body)

    def create_pod(self, namespace: str, body: Obj) -> Obj:
        result: Obj = self.request("POST", f"/api/v1/namespaces/{_q(namespace)}/pods", body=body)
        return result

    # -- nodes, storage, workloads, events -------------------------------------------------------

    def read_node(self, name: str) -> Obj | None:
        return self._get_or_none(f"/api/v1/nodes/{_q(name)}")

    def list_nodes(self) -> list[Obj]:
        return self._list("/api/v1/nodes")[0]

    def read_pvc(self, namespace: str, name: str) -> Obj | None:
        return self._get_or_none(f"/api/v1/namespaces/{_q(namespace)}/persistentvolumeclaims/{_q(name)}")

    def read_pv(self, name: str) -> Obj | None:
        return self._get_or_none(f"/api/v1/persistentvolumes/{_q(name)}")

    def read_job(self, namespace: str, name: str) -> Obj | None:
        return self._get_or_none(f"/apis/batch/v1/namespaces/{_q(namespace)}/jobs/{_q(name)}")

    def read_workload(self, kind: str, namespace: str, name: str) -> Obj | None:
        if kind not in _APPS:
            raise ApiError(422, f"kind {kind!r} has no scale subresource the orchestrator uses", "Invalid")
        return self._get_or_none(f"/apis/apps/v1/namespaces/{_q(namespace)}/{_APPS[kind]}/{_q(name)}")

    def scale_workload(self, kind: str, namespace: str, name: str, replicas: int) -> Obj:
        if kind not in _APPS:
            raise ApiError(422, f"kind {kind!r} has no scale subresource the orchestrator uses", "Invalid")
        result: Obj = self.request(
            "PATCH",
            f"/apis/apps/v1/namespaces/{_q(namespace)}/{_APPS[kind]}/{_q(name)}/scale",
            body={"spec": {"replicas": replicas}},
            content_type="application/merge-patch+json",
        )
        return result

    def create_event(self, namespace: str, body: Obj) -> None:
        self.request("POST", f"/api/v1/namespaces/{_q(namespace)}/events", body=body)

    # -- leases ----------------------------------------------------------------------------------

    def _lease(self, namespace: str, name: str = "") -> str:
        base = f"/apis/coordination.k8s.io/v1/namespaces/{_q(namespace)}/leases"
        return f"{base}/{_q(name)}" if name else base

    def read_lease(self, namespace: str, name: str) -> Obj | None:
        return self._get_or_none(self._lease(namespace, name))

    def create_lease(self, namespace: str, body: Obj) -> Obj:
        result: Obj = self.request("POST", self._lease(namespace), body=body)
        return result

    def replace_lease(self, namespace: str, name: str, body: Obj) -> Obj:
        result: Obj = self.request("PUT", self._lease(namespace, name), body=body)
        return result
