"""Watches pod bindings: feeds the hot-value ledger and reports results to APOLLO.

An I/O adapter around the Kubernetes list+watch API that hands each binding to a `BindingListener`;
the bookkeeping lives in `PlacementLedger` (through `BindingSink`), and `extender.shared_watch` lets
one watch serve every gunicorn worker.
Events are read as raw JSON lines and parsed with orjson into plain dicts: the Python client's
model objects cost about a millisecond per event, which at a burst of thousands of pod updates
would take CPU from the request path. Most events (status updates of pods already counted) are
dropped after reading three fields.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from apollo_api.v1 import apollo_pb2 as pb
from common.loops import BackgroundLoop
from extender.placements import Placement, PlacementLedger
from extender.podspec import pod_demand

log = logging.getLogger("extender.watch")
RELIST_BACKOFF_SECONDS = 2.0  # after a watch ends or fails, before listing again
BOUND = "spec.nodeName!="  # pods bound to a node: the only ones the hot value and the reports need


def bound_at(pod: dict[str, Any]) -> float:
    """When the pod was bound: its PodScheduled condition, else now."""
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "True" and cond.get("lastTransitionTime"):
            stamp = str(cond["lastTransitionTime"]).replace("Z", "+00:00")
            try:
                return dt.datetime.fromisoformat(stamp).timestamp()
            except ValueError:
                break
    return time.time()


@dataclass(frozen=True)
class Binding:
    """A pod seen bound to a node: what the hot value counts and what a SchedulingResult reports."""

    uid: str
    namespace: str
    name: str
    placement: Placement


class BindingListener(Protocol):
    """Where a pod watch sends what it sees (a worker's own sink, or a fan-out to every worker)."""

    def known(self, uid: str) -> bool: ...

    def bound(self, binding: Binding) -> None: ...

    def deleted(self, uid: str) -> None: ...


class BindingSink:
    """One worker's use of bindings: count each once (hot value); report the pods this worker scored."""

    def __init__(
        self,
        ledger: PlacementLedger,
        seen: Callable[[str], float | None],
        report: Callable[[pb.SchedulingResult], None],
    ) -> None:
        self.ledger = ledger
        self.seen = seen
        self.report = report

    def known(self, uid: str) -> bool:
        return uid in self.ledger

    def bound(self, binding: Binding) -> None:
        if not self.ledger.record(binding.uid, binding.placement) or not binding.name:
            return
        first_seen = self.seen(binding.uid)
        if first_seen is not None:
            self.report(
                pb.SchedulingResult(
                    pod_uid=binding.uid,
                    pod_name=binding.name,
                    pod_namespace=binding.namespace,
                    scheduled_node=binding.placement.node,
                    success=True,
                    scheduling_duration_ms=int((time.monotonic() - first_seen) * 1000),
                )
            )

    def deleted(self, uid: str) -> None:
        self.ledger.forget(uid)


class PodWatcher(BackgroundLoop):
    """Sends every newly bound pod, once, and every deletion to a `BindingListener`."""

    def __init__(self, core_v1: Any, listener: BindingListener) -> None:
        super().__init__("pod-binding-watcher", RELIST_BACKOFF_SECONDS)
        self.core = core_v1
        self.listener = listener
        # Set once the first listing is counted: the hot value covers the pods bound so far, and later
        # changes follow as events from the listing's resourceVersion (stays set through relists).
        self.synced = threading.Event()

    def handle(self, event_type: str, pod: dict[str, Any]) -> None:
        meta = pod.get("metadata") or {}
        uid = meta.get("uid") or ""
        if event_type == "DELETED":
            self.listener.deleted(uid)
            return
        node = (pod.get("spec") or {}).get("nodeName")
        if not node or not uid or self.listener.known(uid):
            return  # most events are status updates of pods already counted: the cheap exit first
        try:
            demand = pod_demand(pod)
        except ValueError:
            return
        placement = Placement(node, demand.cpu_cores, demand.memory_bytes, bound_at(pod))
        self.listener.bound(Binding(uid, meta.get("namespace", ""), meta.get("name", ""), placement))

    def _events(self, resource_version: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """Bound pods only (the field selector): a pod enters the watch when it is bound, as ADDED."""
        resp = self.core.list_pod_for_all_namespaces(
            watch=True,
            field_selector=BOUND,
            resource_version=resource_version,
            allow_watch_bookmarks=False,
            timeout_seconds=300,
            _preload_content=False,
        )
        try:
            buffer = b""
            for chunk in resp.stream(65536):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip() and not self.already_counted(line):
                        event = orjson.loads(line)
                        yield event.get("type", ""), event.get("object") or {}
                if self.stopping:
                    return
        finally:
            resp.release_conn()

    def already_counted(self, line: bytes) -> bool:
        """A status update of a pod already counted, told from the raw line without parsing it.

        Most events are such updates (the kubelet's, here kwok's, every phase and condition change), and
        parsing a pod's JSON costs tens of microseconds of the extender's CPU per event, on the cores
        kube-scheduler needs during a burst. The API server writes ObjectMeta in Go field order, so the
        first "uid" of a MODIFIED event is the pod's own (owner references come later); anything else
        (no uid found, a pod not counted yet) is parsed as usual.
        """
        if not line.startswith(b'{"type":"MODIFIED"'):
            return False
        start = line.find(b'"uid":"')
        if start < 0:
            return False
        end = line.find(b'"', start + 7)
        return end > 0 and self.listener.known(line[start + 7 : end].decode())

    def run_once(self) -> None:
        """List, then watch until the watch ends; the loop waits a moment and lists again."""
        try:
            raw = self.core.list_pod_for_all_namespaces(field_selector=BOUND, _preload_content=False)
            listing = orjson.loads(raw.data)
            for pod in listing.get("items") or []:
                # Bound before we started: their binding time decides whether APOLLO's sample
                # already covers them (the ledger prunes what it does).
                self.handle("ADDED", pod)
            self.synced.set()
            for event_type, pod in self._events(listing["metadata"]["resourceVersion"]):
                if event_type == "ERROR":
                    break  # e.g. 410 Gone: list again
                self.handle(event_type, pod)
        except Exception as exc:  # the watch must survive API hiccups
            log.warning("pod watch interrupted; retrying", extra={"error": f"{type(exc).__name__}: {exc}"})
