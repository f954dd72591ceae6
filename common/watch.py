"""List-then-watch of one Kubernetes collection, on raw JSON: the informer every service shares.

Several components follow a collection (the extender: bound pods and PodMigrations; the webhook:
PodMigrations; the orchestrator; the pod runner). They all need the same client-go discipline: list,
then watch from the list's resourceVersion, list again when the watch expires (an ERROR event, usually
410 Gone) or fails, and stop promptly. Events are read as raw JSON lines and parsed with orjson into
plain dicts: the Python client's model objects cost about a millisecond per event, which a burst of
thousands of pod updates would take from the request path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from common.loops import BackgroundLoop

log = logging.getLogger("common.watch")
Event = tuple[str, dict[str, Any]]


def watch_events(resp: Any, stopping: Callable[[], bool], chunk_bytes: int = 65536) -> Iterator[Event]:
    """(type, object) pairs from a watch response opened with `_preload_content=False`.

    Lines may be split across chunks; the connection is released however the iteration ends.
    """
    try:
        buffer = b""
        for chunk in resp.stream(chunk_bytes):
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if line.strip():
                    event = orjson.loads(line)
                    yield str(event.get("type", "")), event.get("object") or {}
            if stopping():
                return
    finally:
        resp.release_conn()


def list_raw(list_call: Callable[..., Any], **kwargs: Any) -> tuple[list[dict[str, Any]], str]:
    """Items and resourceVersion of a list call made with `_preload_content=False`."""
    raw = list_call(_preload_content=False, **kwargs)
    listing = orjson.loads(raw.data)
    return list(listing.get("items") or []), str((listing.get("metadata") or {}).get("resourceVersion", ""))


class ListWatch(BackgroundLoop):
    """Follows one collection: `on_list` with the full listing, then `on_event` per change.

    `list_call` is a client method that lists the collection and accepts the usual keyword arguments
    (`watch`, `resource_version`, `timeout_seconds`, `_preload_content`, `_request_timeout`), e.g.
    `core.list_pod_for_all_namespaces` or `functools.partial(custom.list_cluster_custom_object, G, V, P)`.
    Override `on_list`, `on_event` and, for errors a subclass understands (a CRD not installed yet),
    `on_error`, which returns True when it handled the error itself.
    """

    def __init__(
        self,
        name: str,
        list_call: Callable[..., Any],
        *,
        relist_backoff_seconds: float = 2.0,
        watch_timeout_seconds: int = 300,
        request_timeout_seconds: float = 10.0,
        list_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(name, relist_backoff_seconds)
        self.list_call = list_call
        self.watch_timeout_seconds = watch_timeout_seconds
        self.request_timeout_seconds = request_timeout_seconds
        self.list_kwargs = dict(list_kwargs or {})
        self.resource_version = ""
        self.last_error = ""

    def on_list(self, items: list[dict[str, Any]]) -> None:
        """The whole collection as of `self.resource_version` (replace what you hold)."""

    def on_event(self, event_type: str, obj: dict[str, Any]) -> None:
        """ADDED, MODIFIED or DELETED."""

    def on_error(self, exc: Exception) -> bool:
        return False

    def run_once(self) -> None:
        """List, then follow the watch until it ends; the loop pauses briefly and lists again."""
        try:
            items, self.resource_version = list_raw(
                self.list_call, _request_timeout=self.request_timeout_seconds, **self.list_kwargs
            )
            self.last_error = ""
            self.on_list(items)
            resp = self.list_call(
                watch=True,
                resource_version=self.resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=self.watch_timeout_seconds,
                _preload_content=False,
                _request_timeout=(
                    self.request_timeout_seconds,
                    self.watch_timeout_seconds + self.request_timeout_seconds,
                ),
                **self.list_kwargs,
            )
            for event_type, obj in watch_events(resp, lambda: self.stopping):
                if event_type == "ERROR":
                    return  # typically 410 Gone: the resourceVersion expired, list again
                version = (obj.get("metadata") or {}).get("resourceVersion")
                if version:
                    self.resource_version = str(version)
                if event_type != "BOOKMARK":
                    self.on_event(event_type, obj)
        except Exception as exc:  # the watch must survive API hiccups and idle read deadlines
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            if not self.on_error(exc):
                log.warning(
                    "list/watch interrupted; listing again", extra={"loop": self.name, "error": self.last_error}
                )
