"""Lease-based leader election (coordination.k8s.io/v1), so two replicas never act twice.

The algorithm is client-go's: the leader renews the Lease every `retry_period`; a standby takes it
over only after it has watched the same record unchanged for `lease_duration` by its *own* clock
(so no two machines' clocks are compared); the leader stops acting as soon as it has failed to renew
for `renew_deadline`, which is shorter than `lease_duration`, so it has stopped before a standby can
start. Writes use the Lease's resourceVersion, so two candidates racing for an expired lease cannot
both win. On a clean stop the leader releases the lease (holder cleared) and a standby takes over at
its next try instead of a full lease duration later.

:func:`decide` is the pure decision (lease record + local observations -> next move), tested with a
fake clock; :class:`LeaderElector` is the loop around it.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from common.loops import BackgroundLoop
from orchestrator.config import LeaderSettings
from orchestrator.kube import ApiError, Kube

log = logging.getLogger("orchestrator.leader")
Obj = dict[str, Any]


def micro_time(epoch: float) -> str:
    """A Lease's acquireTime/renewTime are MicroTime: exactly six fractional digits, or the API server refuses."""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def default_identity() -> str:
    """Unique per process: a restarted worker in the same pod must not assume its predecessor's lease."""
    return f"{socket.gethostname()}_{os.getpid()}_{secrets.token_hex(3)}"


@dataclass(frozen=True)
class Observation:
    """The lease record last seen (holder, renew time, resourceVersion) and when, by the local clock."""

    record: tuple[str, str, str] = ("", "", "")
    seen_at: float = 0.0


@dataclass(frozen=True)
class Move:
    """`action`: create | renew | acquire | wait; `body` the Lease to write (create/renew/acquire)."""

    action: str
    body: Obj | None
    observation: Observation


def _record(lease: Obj) -> tuple[str, str, str]:
    spec = lease.get("spec") or {}
    meta = lease.get("metadata") or {}
    return (
        str(spec.get("holderIdentity") or ""),
        str(spec.get("renewTime") or ""),
        str(meta.get("resourceVersion") or ""),
    )


def decide(
    lease: Obj | None,
    identity: str,
    observed: Observation,
    now_local: float,
    now_wall: float,
    settings: LeaderSettings,
    namespace: str,
    name: str,
) -> Move:
    """The next move of candidate `identity` given the Lease as read (None: it does not exist)."""
    duration = max(1, round(settings.lease_duration_seconds))
    stamp = micro_time(now_wall)
    if lease is None:
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "holderIdentity": identity,
                "leaseDurationSeconds": duration,
                "acquireTime": stamp,
                "renewTime": stamp,
                "leaseTransitions": 0,
            },
        }
        return Move("create", body, Observation(("", "", ""), now_local))
    record = _record(lease)
    observation = observed if observed.record == record else Observation(record, now_local)
    holder = record[0]
    spec = dict(lease.get("spec") or {})
    meta = {
        "name": name,
        "namespace": namespace,
        "resourceVersion": record[2],
    }
    if holder == identity:
        spec.update(renewTime=stamp, leaseDurationSeconds=duration)
        return Move("renew", {**lease, "metadata": meta, "spec": spec}, observation)
    held_for = int(spec.get("leaseDurationSeconds") or duration)
    if holder and now_local < observation.seen_at + held_for:
        return Move("wait", None, observation)
    spec.update(
        holderIdentity=identity,
        leaseDurationSeconds=duration,
        acquireTime=stamp,
        renewTime=stamp,
        leaseTransitions=int(spec.get("leaseTransitions") or 0) + (1 if holder else 0),
    )
    return Move("acquire", {**lease, "metadata": meta, "spec": spec}, observation)


class LeaderElector(BackgroundLoop):
    """Campaigns for the Lease; calls `on_started` when it leads and `on_stopped` when it stops leading."""

    def __init__(
        self,
        kube: Kube,
        settings: LeaderSettings,
        on_started: Callable[[], None],
        on_stopped: Callable[[], None],
        *,
        identity: str = "",
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        super().__init__("leader-election", settings.retry_period_seconds)
        self.kube = kube
        self.settings = settings
        self.identity = identity or settings.identity or default_identity()
        self.on_started = on_started
        self.on_stopped = on_stopped
        self.clock = clock
        self.wall = wall
        self._observed = Observation()
        self._renewed_at: float | None = None
        self._leading = False
        self._lock = threading.Lock()
        self.transitions = 0

    def is_leader(self) -> bool:
        """True only while the last renewal is younger than the renew deadline (checked before every act)."""
        with self._lock:
            return (
                self._leading
                and self._renewed_at is not None
                and self.clock() - self._renewed_at < self.settings.renew_deadline_seconds
            )

    @property
    def holder(self) -> str:
        return self._observed.record[0]

    def run_once(self) -> None:
        ns, name = self.settings.namespace, self.settings.lease_name
        try:
            lease = self.kube.read_lease(ns, name)
            move = decide(lease, self.identity, self._observed, self.clock(), self.wall(), self.settings, ns, name)
            self._observed = move.observation
            if move.action == "create" and move.body is not None:
                written = self.kube.create_lease(ns, move.body)
                self._won(written)
            elif move.action in ("renew", "acquire") and move.body is not None:
                written = self.kube.replace_lease(ns, name, move.body)
                self._won(written)
            else:
                self._lost_if_needed()
        except ApiError as exc:
            # 409: another candidate wrote first; anything else: the API server is unreachable. Either
            # way this round did not renew, and the deadline decides whether we still lead.
            if exc.code != 409:
                log.warning("lease round failed", extra={"error": str(exc), "identity": self.identity})
            self._lost_if_needed()

    def _won(self, written: Obj) -> None:
        self._observed = Observation(_record(written), self.clock())
        with self._lock:
            self._renewed_at = self.clock()
            started = not self._leading
            self._leading = True
        if started:
            self.transitions += 1
            log.info("became leader", extra={"identity": self.identity, "lease": self.settings.lease_name})
            self.on_started()

    def _lost_if_needed(self) -> None:
        with self._lock:
            was = self._leading
            renewed = self._renewed_at
            expired = renewed is None or self.clock() - renewed >= self.settings.renew_deadline_seconds
            if was and expired:
                self._leading = False
        if was and expired:
            log.warning("stopped leading: could not renew the lease in time", extra={"identity": self.identity})
            self.on_stopped()

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop campaigning; a leader stops acting first, then releases the lease for a quick hand-over."""
        super().stop(timeout)
        with self._lock:
            was, self._leading = self._leading, False
        if not was:
            return
        self.on_stopped()
        ns, name = self.settings.namespace, self.settings.lease_name
        try:
            lease = self.kube.read_lease(ns, name)
            if lease is not None and _record(lease)[0] == self.identity:
                spec = dict(lease.get("spec") or {})
                spec.update(holderIdentity="", leaseDurationSeconds=1, renewTime=micro_time(self.wall()))
                self.kube.replace_lease(ns, name, {**lease, "spec": spec})
                log.info("released the lease", extra={"identity": self.identity})
        except ApiError as exc:
            log.warning("could not release the lease", extra={"error": str(exc)})


class AlwaysLeader:
    """Leader election switched off (a single replica by hand): acts at once, says so in the log."""

    def __init__(self, on_started: Callable[[], None], on_stopped: Callable[[], None]) -> None:
        self.identity = "unelected"
        self.on_started = on_started
        self.on_stopped = on_stopped
        self._leading = False
        self.transitions = 0
        self.holder = self.identity

    def is_leader(self) -> bool:
        return self._leading

    def start(self) -> AlwaysLeader:
        log.warning("leader election is off: this replica acts without a lease")
        self._leading = True
        self.transitions = 1
        self.on_started()
        return self

    def stop(self, timeout: float | None = 5.0) -> None:
        if self._leading:
            self._leading = False
            self.on_stopped()
