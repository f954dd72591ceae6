"""Active PodMigrations in memory, kept current by a list+watch: admission never asks the API server.

`MigrationIndex` is the in-memory view (thread-safe, per namespace, active migrations only: a finished
one can no longer claim a pod). `MigrationWatcher` is the I/O adapter: the shell's list-then-watch
(`common.watch.ListWatch`: raw JSON, re-list on expiry or failure) over `podmigrations.apollo.io` across
namespaces. Until the first listing succeeds the index says it is not synced, which `/readyz` reports; when
the CRD is not installed no migration can exist, and the index says so and counts as synced.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

from apollo_api.podmigration import GROUP, PLURAL, VERSION, PodMigration
from common.watch import ListWatch

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


class MigrationWatcher(ListWatch):
    """Feeds a `MigrationIndex` from the API server: `common.watch.ListWatch` over podmigrations.apollo.io."""

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
        super().__init__(
            "podmigration-watch",
            partial(custom_objects.list_cluster_custom_object, GROUP, VERSION, PLURAL),
            relist_backoff_seconds=relist_backoff_seconds,
            watch_timeout_seconds=watch_timeout_seconds,
            request_timeout_seconds=request_timeout_seconds,
        )
        self.index = index
        self.changed = on_event or (lambda: None)

    def on_list(self, items: list[dict[str, Any]]) -> None:
        self.index.replace([PodMigration.from_json(item) for item in items])
        self.changed()

    def on_event(self, event_type: str, obj: dict[str, Any]) -> None:
        self.index.apply(event_type, PodMigration.from_json(obj))
        self.changed()

    def on_error(self, exc: Exception) -> bool:
        if getattr(exc, "status", None) == 404:
            if not self.index.crd_missing:
                log.warning("PodMigration CRD not installed; no pod is treated as a replacement")
            self.index.mark_crd_missing()
            self.changed()
            return True
        self.index.last_error = self.last_error
        return False
