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
from common.quantity import parse_quantity
from extender.placements import Placement, PlacementLedger

log = logging.getLogger("extender.watch")


def _bound_at(pod: Any) -> float:
    for cond in (pod.status.conditions if pod.status else None) or []:
        if cond.type == "PodScheduled" and cond.status == "True" and cond.last_transition_time:
            return float(cond.last_transition_time.timestamp())
    return time.time()


def requests_of(pod: Any) -> tuple[float, float]:
    """Summed container requests of a client V1Pod (init containers: the largest one counts)."""

    def total(containers: Any) -> list[tuple[float, float]]:
        out = []
        for c in containers or []:
            req = (c.resources.requests if c.resources else None) or {}
            try:
                out.append((parse_quantity(req.get("cpu", 0)), parse_quantity(req.get("memory", 0))))
            except ValueError:
                out.append((0.0, 0.0))
        return out

    main = total(pod.spec.containers)
    init = total(pod.spec.init_containers)
    cpu = max([sum(c for c, _ in main), *(c for c, _ in init)])
    memory = max([sum(m for _, m in main), *(m for _, m in init)])
    return cpu, memory


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
        if not node or uid in self.ledger:
            return  # most events are status updates of pods already counted: the cheap exit first
        cpu, memory = requests_of(pod)
        if self.ledger.record(uid, Placement(node, cpu, memory, _bound_at(pod))):
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
