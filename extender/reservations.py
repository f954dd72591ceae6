"""Capacity held on migration targets: while a migration is active, its target counts the migrating pod's
requests as taken, for every pod but the replacement (Koordinator's Reservation, done by the extender).

The orchestrator checks the target's room before it evicts, and writes the reservation into the
PodMigration (`PodMigration.reservation`: target node and planned requests, from capture until the
replacement has a node). Between the eviction and the replacement's binding, nothing else would stop
kube-scheduler from giving that room to a pod created meanwhile. So the filter verb drops a reserved
node for any other pod that no longer fits once the reservations on it are counted against what is
free there (allocatable minus the requests of the pods bound to it); the replacement itself
(`is_replacement_of`: the webhook's annotation, the owner's UID and Job index, or a bare pod's name)
passes, and a reservation whose replacement is already bound is spent.

Two parts, like the rest of the extender: `ReservationBook` is pure and immutable (the verb reads
whichever snapshot is current, no lock on the request path, nothing at all to do when no migration
is active), and `ReservationWatcher` is the I/O: a PodMigration list+watch, and while reservations
exist, a refresh of each reserved node's free room every second.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from apollo_api.podmigration import GROUP, PLURAL, VERSION, PodMigration, is_replacement_of
from common.loops import BackgroundLoop
from common.quantity import parse_quantity
from common.watch import watch_events
from extender.podspec import PodDemand, pod_demand
from extender.ranking import FilterOutcome

log = logging.getLogger("extender.reservations")
ROOM_REFRESH_SECONDS = 1.0
_EPS_CPU = 1e-9


@dataclass(frozen=True)
class Reservation:
    migration: PodMigration
    node: str
    cpu_cores: float
    memory_bytes: float

    @property
    def key(self) -> str:
        return f"{self.migration.namespace}/{self.migration.name}"


@dataclass(frozen=True)
class Room:
    """What is free on a node for new pods: allocatable minus the requests of its non-terminal pods."""

    cpu_cores: float
    memory_bytes: float


def reservation_of(obj: Mapping[str, Any]) -> Reservation | None:
    m = PodMigration.from_json(obj)
    held = m.reservation
    if held is None:
        return None
    node, req = held
    return Reservation(m, node, req.cpu_cores, float(req.memory_bytes))


def room_of(node: Mapping[str, Any], bound: Iterable[Mapping[str, Any]]) -> Room:
    alloc = (node.get("status") or {}).get("allocatable") or {}
    cpu, mem = parse_quantity(alloc.get("cpu", 0)), parse_quantity(alloc.get("memory", 0))
    for pod in bound:
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        try:
            demand = pod_demand(dict(pod))
        except ValueError:
            continue
        cpu -= demand.cpu_cores
        mem -= demand.memory_bytes
    return Room(cpu, mem)


@dataclass(frozen=True)
class ReservationBook:
    """An immutable view: the active reservations by node and each reserved node's free room."""

    by_node: Mapping[str, tuple[Reservation, ...]] = field(default_factory=dict)
    rooms: Mapping[str, Room] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.by_node)

    def refusals(self, pod: Mapping[str, Any], demand: PodDemand, names: Iterable[str]) -> dict[str, str]:
        """Candidate nodes this pod must not take because migrations hold their room, with the reason."""
        out: dict[str, str] = {}
        for name in names:
            held = self.by_node.get(name)
            room = self.rooms.get(name)
            if not held or room is None:
                continue  # room not measured yet: kube-scheduler's own fit still applies
            others = [r for r in held if not is_replacement_of(r.migration, pod)]
            if not others:
                continue
            cpu = room.cpu_cores - sum(r.cpu_cores for r in others)
            mem = room.memory_bytes - sum(r.memory_bytes for r in others)
            if demand.cpu_cores > cpu + _EPS_CPU or demand.memory_bytes > mem:
                which = ", ".join(sorted(r.key for r in others))
                out[name] = (
                    f"capacity reserved for migration(s) {which}: {max(cpu, 0.0):.2f} cores and "
                    f"{max(mem, 0.0) / 2**20:.0f}Mi left for other pods"
                )
        return out

    def steering(self, pod: Mapping[str, Any], names: Iterable[str]) -> dict[str, str]:
        """For a migration's replacement: the nodes it must not take, whether or not the webhook saw it.

        The webhook pins only opted-in pods (its registration selects on the opt-in label, so unrelated pods
        are never sent). Here the replacement of any workload is kept to the target the requester named, or
        else off the node it is leaving; never every candidate, so a gone target cannot strand the pod.
        """
        candidates = list(names)
        for held in self.by_node.values():
            for r in held:
                if not is_replacement_of(r.migration, pod):
                    continue
                named = r.migration.spec.target_node
                source = r.migration.status.source_node
                if named and named in candidates:
                    why = f"migration {r.key} moves this pod to node {named}"
                    return {n: why for n in candidates if n != named}
                if source and source in candidates and len(candidates) > 1:
                    return {source: f"migration {r.key} moves this pod off node {source}"}
                return {}
        return {}

    def apply(self, outcome: FilterOutcome, pod: Mapping[str, Any], demand: PodDemand) -> FilterOutcome:
        """The filter outcome with reserved nodes moved from passed to failed (unchanged when none apply)."""
        if not self.by_node or not outcome.passed:
            return outcome
        refused = self.steering(pod, outcome.passed) | self.refusals(pod, demand, outcome.passed)
        if not refused:
            return outcome
        passed = [n for n in outcome.passed if n not in refused]
        failed = {**outcome.failed, **refused}
        return replace(outcome, passed=passed, failed=failed)


def build_book(
    reservations: Iterable[Reservation], rooms: Mapping[str, Room], bound: Mapping[str, list[Any]]
) -> ReservationBook:
    """Group by node, dropping reservations whose replacement is already bound there (its requests are in
    the node's used room now, and counting both would hold the space twice)."""
    by_node: dict[str, list[Reservation]] = {}
    for r in reservations:
        if any(is_replacement_of(r.migration, p) for p in bound.get(r.node, ())):
            continue
        by_node.setdefault(r.node, []).append(r)
    return ReservationBook({n: tuple(rs) for n, rs in by_node.items()}, dict(rooms))


class ReservationWatcher:
    """Keeps a ReservationBook current: PodMigrations by list+watch, reserved nodes' room every second."""

    def __init__(self, api_client: Any, holder: Any, attribute: str = "reservations") -> None:
        from kubernetes import client

        # Raw JSON calls (_preload_content=False): the client's model objects cost a millisecond apiece.
        self.custom: Any = client.CustomObjectsApi(api_client)
        self.core: Any = client.CoreV1Api(api_client)
        self.holder = holder  # the object whose `attribute` the verbs read (ExtenderState)
        self.attribute = attribute
        self._reservations: dict[str, Reservation] = {}
        self._lock = threading.Lock()
        self._last_error = ""
        self.watch = BackgroundLoop("reservation-watch", 2.0, self._list_and_watch)
        self.rooms = BackgroundLoop("reservation-rooms", ROOM_REFRESH_SECONDS, self.refresh)

    def start(self) -> ReservationWatcher:
        self.watch.start()
        self.rooms.start()
        return self

    def stop(self) -> None:
        self.watch.stop(timeout=0)
        self.rooms.stop()

    def _set(self, obj: Mapping[str, Any], deleted: bool = False) -> bool:
        meta = obj.get("metadata") or {}
        key = f"{meta.get('namespace')}/{meta.get('name')}"
        r = None if deleted else reservation_of(obj)
        with self._lock:
            before = self._reservations.get(key)
            if r is None:
                self._reservations.pop(key, None)
            else:
                self._reservations[key] = r
            return (before is None) != (r is None) or (before is not None and r is not None and before.node != r.node)

    def _events(self, version: str) -> Iterator[tuple[str, dict[str, Any]]]:
        resp = self.custom.list_cluster_custom_object(
            GROUP, VERSION, PLURAL, watch=True, resource_version=version, timeout_seconds=300, _preload_content=False
        )
        return watch_events(resp, lambda: self.watch.stopping)

    def _list_and_watch(self) -> None:
        try:
            raw = self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, _preload_content=False)
            listing = orjson.loads(raw.data)
            with self._lock:
                self._reservations = {}
            for obj in listing.get("items") or []:
                self._set(obj)
            self.refresh()
            for kind, obj in self._events(str((listing.get("metadata") or {}).get("resourceVersion", ""))):
                if kind == "ERROR":
                    return
                if kind in ("ADDED", "MODIFIED", "DELETED") and self._set(obj, kind == "DELETED"):
                    self.refresh()  # a new or released reservation applies now, not at the next tick
        except Exception as exc:  # the watch must survive API hiccups (and a missing CRD)
            error = f"{type(exc).__name__}: {exc}"
            # Once per distinct failure: a cluster without the CRD would otherwise log this every round.
            level = logging.WARNING if error != self._last_error else logging.DEBUG
            self._last_error = error
            log.log(level, "PodMigration watch interrupted; retrying", extra={"error": error})

    def refresh(self) -> None:
        """Measure every reserved node's room and publish a new book (an empty one costs nothing)."""
        with self._lock:
            reservations = list(self._reservations.values())
        rooms: dict[str, Room] = {}
        bound: dict[str, list[Any]] = {}
        for node in {r.node for r in reservations}:
            try:
                obj = orjson.loads(self.core.read_node(node, _preload_content=False).data)
                pods = (
                    orjson.loads(
                        self.core.list_pod_for_all_namespaces(
                            field_selector=f"spec.nodeName={node}", _preload_content=False
                        ).data
                    ).get("items")
                    or []
                )
            except Exception as exc:
                log.warning("reserved node unreadable", extra={"node": node, "error": f"{type(exc).__name__}: {exc}"})
                continue
            bound[node] = pods
            rooms[node] = room_of(obj, pods)
        setattr(self.holder, self.attribute, build_book(reservations, rooms, bound))
