"""Active PodMigrations in memory, kept current by a list+watch: admission never asks the API server.

`MigrationIndex` is the in-memory view (thread-safe, per namespace, active migrations only: a finished
one can no longer claim a pod). `MigrationWatcher` is the I/O adapter: a `BackgroundLoop` that lists
`podmigrations.apollo.io` across namespaces, then watches from the listing's resourceVersion, reading raw
JSON lines with orjson (no client model objects), and lists again after the watch ends, expires (410) or
fails. Until the first listing succeeds the index says it is not synced, which `/readyz` reports; when
the CRD is not installed no migration can exist, and the index says so and counts as synced.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from apollo_api.podmigration import GROUP, PLURAL, VERSION, PodMigration
from common.loops import BackgroundLoop

log = logging.getLogger("webhook.migrations")


class MigrationIndex:
    """Active migrations by namespace; replaced whole on a listing, updated per watch event."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._by_ns: dict[str, dict[str, PodMigration]] = {}
        self.version = 0  # bumped on every change, so a reader can wait for the next one
        self.synced = False
        self.crd_missing = False
        self.last_error = ""

    def _bump(self) -> None:
        self.version += 1
        self._changed.notify_all()

    def wait_for_change(self, since: int, timeout: float) -> bool:
        """Block until `version` moves past `since` (True) or `timeout` seconds pass (False)."""
        with self._changed:
            return self._changed.wait_for(lambda: self.version != since, timeout)

    def replace(self, migrations: list[PodMigration]) -> None:
        by_ns: dict[str, dict[str, PodMigration]] = {}
        for m in migrations:
            if m.active:
                by_ns.setdefault(m.namespace, {})[m.name] = m
        with self._lock:
            self._by_ns = by_ns
            self.synced = True
            self.crd_missing = False
            self.last_error = ""
            self._bump()

    def apply(self, event_type: str, migration: PodMigration) -> None:
        with self._lock:
            current = dict(self._by_ns.get(migration.namespace, {}))
            if event_type == "DELETED" or not migration.active:
                current.pop(migration.name, None)
            else:
                current[migration.name] = migration
            if current:
                self._by_ns[migration.namespace] = current
            else:
                self._by_ns.pop(migration.namespace, None)
            self._bump()

    def mark_crd_missing(self) -> None:
        with self._lock:
            self._by_ns = {}
            self.synced = True
            self.crd_missing = True
            self._bump()

    def in_namespace(self, namespace: str) -> tuple[PodMigration, ...]:
        """The namespace's active migrations; each namespace's dict is replaced, never mutated, so no copy."""
        namespace_view = self._by_ns.get(namespace)
        return tuple(namespace_view.values()) if namespace_view else ()

    def __len__(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._by_ns.values())


class MigrationWatcher(BackgroundLoop):
    """Feeds a `MigrationIndex` from the API server (CustomObjectsApi, raw responses)."""

    def __init__(
        self,
        custom_objects: Any,
        index: MigrationIndex,
        *,
        relist_backoff_seconds: float,
        watch_timeout_seconds: int,
        request_timeout_seconds: float,
        on_event: Callable[[], None] | None = None,
    ) -> None:
        super().__init__("podmigration-watch", relist_backoff_seconds)
        self.api = custom_objects
        self.index = index
        self.watch_timeout_seconds = watch_timeout_seconds
        self.request_timeout_seconds = request_timeout_seconds
        self.on_event = on_event or (lambda: None)

    def _list(self) -> tuple[list[PodMigration], str]:
        raw = self.api.list_cluster_custom_object(
            GROUP, VERSION, PLURAL, _preload_content=False, _request_timeout=self.request_timeout_seconds
        )
        listing = orjson.loads(raw.data)
        items = [PodMigration.from_json(item) for item in listing.get("items") or []]
        return items, str((listing.get("metadata") or {}).get("resourceVersion", ""))

    def _events(self, resource_version: str) -> Iterator[tuple[str, dict[str, Any]]]:
        resp = self.api.list_cluster_custom_object(
            GROUP,
            VERSION,
            PLURAL,
            watch=True,
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=self.watch_timeout_seconds,
            _preload_content=False,
            _request_timeout=(self.request_timeout_seconds, self.watch_timeout_seconds + self.request_timeout_seconds),
        )
        try:
            buffer = b""
            for chunk in resp.stream(65536):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        event = orjson.loads(line)
                        yield str(event.get("type", "")), event.get("object") or {}
                if self.stopping:
                    return
        finally:
            resp.release_conn()

    def run_once(self) -> None:
        """List, then follow the watch until it ends; the loop pauses briefly and lists again."""
        try:
            items, version = self._list()
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                if not self.index.crd_missing:
                    log.warning("PodMigration CRD not installed; no pod is treated as a replacement")
                self.index.mark_crd_missing()
                self.on_event()
            else:
                self.index.last_error = f"{type(exc).__name__}: {exc}"[:300]
                log.warning("listing PodMigrations failed; retrying", extra={"error": self.index.last_error})
            return
        self.index.replace(items)
        self.on_event()
        try:
            for event_type, obj in self._events(version):
                if event_type == "ERROR":
                    return  # typically 410 Gone: the resourceVersion expired, list again
                if event_type == "BOOKMARK":
                    continue
                self.index.apply(event_type, PodMigration.from_json(obj))
                self.on_event()
        except Exception as exc:  # the watch must survive API hiccups and idle read deadlines
            log.info("PodMigration watch interrupted; listing again", extra={"error": f"{type(exc).__name__}: {exc}"})
