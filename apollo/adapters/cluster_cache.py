"""Nodes and bound pods as the watches last reported them, with pod signatures attached: the cluster view.

The watch threads write (a whole listing, or one event at a time); the engine's tick reads. Each object
is converted once, when its event arrives, and an event that changes nothing the policy sees (a node's
heartbeat, a pod's condition) changes nothing here either. The view handed out is the same object until
something did change; a new one comes with the pods changed since the previous one, in order, so the
engine updates its pod index instead of rebuilding it. Pods keep the order they arrived in (a changed
pod keeps its place, a new one goes last), the order the engine's incremental index reproduces.

Signatures are the insight agents' latest reports (`ReportStore.signatures`, with a TTL). A
`TTLFollower` says which of them changed or expired since the last read, so attaching them costs the
changes, not one lookup per pod per tick.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Iterable
from typing import Any

from apollo.adapters.kube_objects import node_from, nodes_from, running_pod_from, usage_of
from apollo.core.domain import ClusterView, NodeCapacity, PodSignature, RunningPod
from apollo.core.outlooks import PodChange, PodKey
from apollo.runtime.reports import TTLFollower, TTLMap
from apollo.runtime.sources import ClusterRead

log = logging.getLogger("apollo.kubernetes")


def _key(obj: dict[str, Any]) -> tuple[PodKey, str]:
    meta = obj.get("metadata") or {}
    return (meta.get("namespace") or "default", meta.get("name") or ""), str(meta.get("resourceVersion") or "")


def with_signature(pod: RunningPod, signature: PodSignature | None) -> RunningPod:
    """The pod with `signature` attached (and the usage it measured), or the pod itself when already so."""
    if pod.signature is signature:
        return pod
    cpu, memory = usage_of(signature)
    return dataclasses.replace(pod, signature=signature, cpu_usage_cores=cpu, memory_usage_bytes=memory)


class ClusterCache:
    """The cluster as the node and pod watches describe it; `read()` is the engine's `ClusterReader.read`.

    Not synced (`read()` answers None) until both collections have been listed once: an empty view
    would otherwise tell the engine the cluster has no pods.
    """

    def __init__(self, signatures: TTLMap[PodKey, PodSignature]) -> None:
        self._lock = threading.Lock()
        self._signatures = TTLFollower(signatures)
        self._capacity: dict[str, NodeCapacity] = {}
        self._labels: dict[str, dict[str, str]] = {}
        self._nodes_dirty = True
        # Pods: resourceVersion of every pod the watch reported (running or not, so a relist skips
        # unchanged ones), the conversion without signature, and the pod as published.
        self._versions: dict[PodKey, str] = {}
        self._bare: dict[PodKey, RunningPod] = {}
        self._pods: dict[PodKey, RunningPod] = {}
        self._changes: list[PodChange] = []
        self._complete = True  # `_changes` accounts for every change since `_view` (else: no account)
        self._view: ClusterView | None = None
        self._published: tuple[dict[str, NodeCapacity], dict[str, dict[str, str]]] = ({}, {})
        self.nodes_listed = False
        self.pods_listed = False
        self.pod_events = 0
        self.node_events = 0

    @property
    def synced(self) -> bool:
        return self.nodes_listed and self.pods_listed

    # ------------------------------------------------------------------ nodes

    def replace_nodes(self, items: list[dict[str, Any]]) -> None:
        """A whole node listing (at start and after every relist)."""
        capacity, labels = nodes_from(items)
        with self._lock:
            if capacity != self._capacity or labels != self._labels:
                self._capacity, self._labels = capacity, labels
                self._nodes_dirty = True
            self.nodes_listed = True

    def apply_node(self, event_type: str, obj: dict[str, Any]) -> None:
        """One node event: only a change of allocatable or labels changes the view."""
        converted = node_from(obj)
        if converted is None:
            return
        name, capacity, labels = converted
        with self._lock:
            self.node_events += 1
            if event_type == "DELETED":
                if name in self._capacity:
                    del self._capacity[name]
                    self._labels.pop(name, None)
                    self._nodes_dirty = True
            elif self._capacity.get(name) != capacity or self._labels.get(name) != labels:
                self._capacity[name], self._labels[name] = capacity, labels
                self._nodes_dirty = True

    # ------------------------------------------------------------------ pods

    def replace_pods(self, items: list[dict[str, Any]]) -> None:
        """A whole listing of bound pods: converts only those whose resourceVersion moved; forgets the rest."""
        listed: set[PodKey] = set()
        fresh: list[tuple[PodKey, str, RunningPod | None]] = []
        for item in items:
            key, version = _key(item)
            listed.add(key)
            if self._versions.get(key) != version:  # only this thread writes `_versions`
                fresh.append((key, version, running_pod_from(item)))
        with self._lock:
            for key in [k for k in self._versions if k not in listed]:
                self._forget(key)
            for key, version, bare in fresh:
                self._versions[key] = version
                self._store(key, bare)
            self.pods_listed = True

    def apply_pod(self, event_type: str, obj: dict[str, Any]) -> None:
        """One pod event (ADDED, MODIFIED, DELETED), converted here, outside the lock."""
        key, version = _key(obj)
        bare = None if event_type == "DELETED" else running_pod_from(obj)
        with self._lock:
            self.pod_events += 1
            if event_type == "DELETED":
                self._forget(key)
            else:
                self._versions[key] = version
                self._store(key, bare)

    def _forget(self, key: PodKey) -> None:
        self._versions.pop(key, None)
        self._store(key, None)

    def _store(self, key: PodKey, bare: RunningPod | None) -> None:
        """Record the pod's conversion; publish it with its signature unless nothing visible changed."""
        if bare is None:
            self._bare.pop(key, None)
            self._publish(key, None)
        else:
            self._bare[key] = bare
            self._publish(key, with_signature(bare, self._signatures.get(key)))

    def _publish(self, key: PodKey, pod: RunningPod | None) -> None:
        old = self._pods.get(key)
        if pod is None:
            if old is None:
                return
            del self._pods[key]
        elif old == pod:  # RunningPod compares by value (NaN usage is one shared object: equal)
            return
        else:
            self._pods[key] = pod
        self._changes.append((key, pod))
        if len(self._changes) > max(1024, len(self._pods)):  # nobody reading: stop keeping an account
            self._changes.clear()
            self._complete = False

    # ------------------------------------------------------------------ the engine's read

    def read(self) -> ClusterRead | None:
        """None before both listings; else the view, a new object only when something changed."""
        with self._lock:
            if not self.synced:
                return None
            self._attach(self._signatures.changes().items())
            base = self._view
            if base is not None and not self._changes and not self._nodes_dirty and self._complete:
                return ClusterRead(base, base)
            if self._nodes_dirty or base is None:
                self._published = (dict(self._capacity), dict(self._labels))  # label dicts are never mutated
                self._nodes_dirty = False
            view = ClusterView(self._published[0], self._published[1], tuple(self._pods.values()))
            read = ClusterRead(view, base if self._complete else None, tuple(self._changes))
            if base is None:
                log.info("kubernetes synced", extra={"nodes": len(view.nodes), "pods": len(view.pods)})
            self._view = view
            self._changes = []
            self._complete = True
            return read

    def _attach(self, signatures: Iterable[tuple[PodKey, PodSignature | None]]) -> None:
        for key, signature in signatures:
            bare = self._bare.get(key)
            if bare is not None:
                self._publish(key, with_signature(bare, signature))
