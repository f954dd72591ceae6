"""The orchestrator process: a leader elector that starts the controller and the APOLLO link while it leads.

Every replica campaigns for the Lease and serves HTTP (probes, metrics, the REST API); only the
leader watches, reconciles and subscribes to APOLLO. Losing the lease stops the controller and the
subscription before another replica can take over (see `orchestrator.leader`); regaining it starts
fresh ones, which list everything again, so no state carries over but what is in the API server.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from common.http import Readiness
from orchestrator.apollo_link import ApolloLink
from orchestrator.config import OrchestratorSettings
from orchestrator.controller import Controller
from orchestrator.effects import MachineConfig, Outcome, Report
from orchestrator.kube import Kube, RestKube
from orchestrator.leader import AlwaysLeader, LeaderElector
from orchestrator.machine import Machine
from orchestrator.metrics import OrchestratorMetrics

log = logging.getLogger("orchestrator")


def machine_config(settings: OrchestratorSettings) -> MachineConfig:
    return MachineConfig(
        caps=settings.caps,
        eviction=settings.eviction,
        ttl_seconds_after_finished=settings.ttl_seconds_after_finished,
        resume_grace_seconds=settings.resume_grace_seconds,
        cap_retry_seconds=settings.cap_retry_seconds,
        reports=bool(settings.apollo.address),
    )


class Runtime:
    """Owns the Kubernetes port, the elector, and (while leading) the controller and the APOLLO link."""

    def __init__(
        self,
        settings: OrchestratorSettings,
        *,
        kube: Kube | None = None,
        api_client: Any = None,
        metrics: OrchestratorMetrics | None = None,
        link: ApolloLink | None = None,
    ) -> None:
        self.settings = settings
        self.api_client = api_client
        if kube is None:
            if api_client is None:
                from common.kube import api_client as make_client

                self.api_client = make_client(settings.kubeconfig)
            kube = RestKube(self.api_client, settings.api_timeout_seconds)
        self.kube = kube
        self.metrics = metrics or OrchestratorMetrics.create()
        self.machine = Machine(machine_config(settings))
        self.link = link
        if self.link is None and settings.apollo.address:
            self.link = ApolloLink(settings.apollo, kube, self.metrics)
        self._lock = threading.Lock()
        self.controller: Controller | None = None
        self.elector: LeaderElector | AlwaysLeader
        if settings.leader.enabled:
            self.elector = LeaderElector(kube, settings.leader, self._started_leading, self._stopped_leading)
        else:
            self.elector = AlwaysLeader(self._started_leading, self._stopped_leading)

    @property
    def identity(self) -> str:
        return self.elector.identity

    def is_leader(self) -> bool:
        return self.elector.is_leader()

    def _report(self, report: Report) -> Outcome:
        if self.link is None:
            return Outcome(False, 0, "no APOLLO link configured")
        return self.link.report(report)

    def _started_leading(self) -> None:
        with self._lock:
            self.metrics.leader.set(1)
            self.controller = Controller(
                self.kube,
                self.machine,
                self.metrics,
                is_leader=self.is_leader,
                reporter=self._report if self.link is not None else None,
                identity=lambda: self.identity,
                resync_seconds=self.settings.resync_seconds,
            ).start()
            if self.link is not None:
                self.link.start()
        log.info("controller started", extra={"identity": self.identity, "apollo": self.settings.apollo.address})

    def _stopped_leading(self) -> None:
        with self._lock:
            self.metrics.leader.set(0)
            if self.link is not None:
                self.link.stop()
            if self.controller is not None:
                self.controller.stop()
            self.controller = None
        log.info("controller stopped", extra={"identity": self.identity})

    def start(self) -> Runtime:
        self.elector.start()
        return self

    def stop(self) -> None:
        self.elector.stop()
        if self.link is not None:
            self.link.close()

    def readiness(self) -> Readiness:
        """Ready when this replica can serve: a standby is ready (it serves the API); a leader once synced."""
        controller = self.controller
        leading = self.is_leader()
        synced = controller.synced if controller is not None else False
        detail = {
            "identity": self.identity,
            "leader": leading,
            "lease_holder": self.elector.holder,
            "synced": synced,
            "apollo": (
                ("connected" if self.link.connected else "disconnected") if self.link is not None else "not configured"
            ),
        }
        if leading and not synced:
            return Readiness(False, detail, "leader, listing PodMigrations")
        return Readiness(True, detail)
