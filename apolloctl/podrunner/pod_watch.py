"""The pod runner's watch: list, then watch pods, and hand every event to the runner's queue.

One thread does the I/O; the runner's tick applies the events, so the runner itself needs no locks.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from apolloctl.podrunner.kube_calls import json_body
from common.loops import BackgroundLoop, ClosableQueue
from common.watch import watch_events

log = logging.getLogger("apolloctl.podrunner")
RELIST_BACKOFF_SECONDS = 1.0


class PodWatch(BackgroundLoop):
    """List, then watch pods (raw JSON); every event goes to the runner's queue, a relist as a LIST."""

    def __init__(self, core_v1: Any, namespace: str, out: ClosableQueue[tuple[str, dict[str, Any]]]) -> None:
        super().__init__("podrunner-watch", RELIST_BACKOFF_SECONDS)
        self.core = core_v1
        self.namespace = namespace
        self.out = self.closes(out)

    def _list(self, **kw: Any) -> Any:
        if self.namespace:
            return self.core.list_namespaced_pod(self.namespace, **kw)
        return self.core.list_pod_for_all_namespaces(**kw)

    def _events(self, resource_version: str) -> Iterator[tuple[str, dict[str, Any]]]:
        resp = self._list(watch=True, resource_version=resource_version, timeout_seconds=120, _preload_content=False)
        return watch_events(resp, lambda: self.stopping)

    def run_once(self) -> None:
        try:
            listing = json_body(self._list(_preload_content=False))
            items = listing.get("items") or []
            self.out.put_nowait(("LIST", {"uids": [(p.get("metadata") or {}).get("uid") for p in items]}))
            for pod in items:
                self.out.put_nowait(("ADDED", pod))
            for event_type, pod in self._events(str(listing["metadata"]["resourceVersion"])):
                if event_type == "ERROR":
                    return  # e.g. 410 Gone: list again
                self.out.put_nowait((event_type, pod))
        except Exception as exc:  # the watch must survive API hiccups
            if not self.stopping:
                log.warning("pod watch interrupted; listing again", extra={"error": f"{type(exc).__name__}: {exc}"})
