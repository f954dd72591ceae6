"""Watches pod bindings: feeds the hot-value ledger and reports results to APOLLO.

An I/O adapter around the Kubernetes watch API; the bookkeeping itself lives in `PlacementLedger`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from apollo.v1 import apollo_pb2 as pb
from extender.placements import Placement, PlacementLedger
from extender.podspec import pod_demand

log = logging.getLogger("extender.watch")


def _bound_at(pod: Any) -> float:
    for cond in (pod.status.conditions if pod.status else None) or []:
        if cond.type == "PodScheduled" and cond.status == "True" and cond.last_transition_time:
            return float(cond.last_transition_time.timestamp())
    return time.time()


class PodWatcher(threading.Thread):
    """Records every newly bound pod once; reports those this extender had scored."""

    def __init__(
        self,
        core_v1: Any,
        ledger: PlacementLedger,
        seen: Callable[[str], float | None],
        report: Callable[[pb.SchedulingResult], None],
    ) -> None:
        super().__init__(name="pod-binding-watcher", daemon=True)
        self.core = core_v1
        self.ledger = ledger
        self.seen = seen
        self.report = report
        self._stop_event = threading.Event()

    def handle(self, event_type: str, pod: Any, api_client: Any) -> None:
        uid = pod.metadata.uid
        if event_type == "DELETED":
            self.ledger.forget(uid)
            return
        node = pod.spec.node_name
        if not node:
            return
        demand = pod_demand(api_client.sanitize_for_serialization(pod))
        if self.ledger.record(uid, Placement(node, demand.cpu_cores, demand.memory_bytes, _bound_at(pod))):
            first_seen = self.seen(uid)
            if first_seen is not None:
                self.report(
                    pb.SchedulingResult(
                        pod_name=pod.metadata.name,
                        pod_namespace=pod.metadata.namespace,
                        scheduled_node=node,
                        success=True,
                        scheduling_duration_ms=int((time.monotonic() - first_seen) * 1000),
                    )
                )

    def run(self) -> None:
        from kubernetes import watch

        while not self._stop_event.is_set():
            try:
                listing = self.core.list_pod_for_all_namespaces(field_selector="spec.nodeName!=")
                for pod in listing.items:
                    # Already bound before we started: APOLLO's sample may or may not include them,
                    # their binding time decides (the ledger prunes what the sample covers).
                    self.handle("ADDED", pod, self.core.api_client)
                w = watch.Watch()  # type: ignore[no-untyped-call]
                for event in w.stream(  # type: ignore[no-untyped-call]
                    self.core.list_pod_for_all_namespaces,
                    resource_version=listing.metadata.resource_version,
                    timeout_seconds=300,
                ):
                    if self._stop_event.is_set():
                        w.stop()  # type: ignore[no-untyped-call]
                        break
                    self.handle(event["type"], event["object"], self.core.api_client)
            except Exception as exc:  # the watch must survive API hiccups
                log.warning("pod watch interrupted; retrying", extra={"error": f"{type(exc).__name__}: {exc}"})
                self._stop_event.wait(2.0)

    def stop(self) -> None:
        self._stop_event.set()
