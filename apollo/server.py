"""The `apollo` process, assembled: gRPC services and health, the HTTP probe port, the tick loop, tuning.

The composition root: the only module that knows every layer. It builds the engine over its sources
(Prometheus, optionally the API server's node and pod watches through `common.kube`), registers the
servicers, serves the probe app from `apollo.adapters.http` on the shell's `ThreadedServer`, and starts the
watches and the two background loops.
"""

from __future__ import annotations

import logging
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from apollo.adapters.grpc.forecast import ForecastServicer
from apollo.adapters.grpc.insight import InsightServicer
from apollo.adapters.grpc.orchestration import OrchestrationServicer
from apollo.adapters.grpc.scheduling import SchedulingServicer
from apollo.adapters.http import create_app
from apollo.adapters.kubernetes import KubeReader
from apollo.adapters.metrics import ApolloMetrics
from apollo.adapters.prometheus import PrometheusSource
from apollo.config import ApolloSettings
from apollo.jobs.tick import TickLoop
from apollo.jobs.tuning import TuningJob
from apollo.runtime.engine import Engine
from apollo.runtime.reports import ReportStore
from apollo.runtime.sources import MetricSource
from apollo_api.v1 import apollo_pb2_grpc as pb_grpc
from common.http import ThreadedServer
from common.loops import BackgroundLoop

log = logging.getLogger("apollo.server")
SERVICES = (
    "apollo.InsightService",
    "apollo.SchedulingPolicyService",
    "apollo.OrchestrationPolicyService",
    "apollo.ForecastService",
)


@dataclass
class Apollo:
    """A running APOLLO: call `stop()` to shut everything down gracefully."""

    settings: ApolloSettings
    engine: Engine
    metrics: ApolloMetrics
    grpc_server: grpc.Server
    grpc_port: int
    http: ThreadedServer
    health: health.HealthServicer
    ticks: TickLoop
    tuning: TuningJob
    loops: list[BackgroundLoop]
    kube: KubeReader | None = None

    @property
    def http_port(self) -> int:
        return self.http.port

    def stop(self, grace: float = 5.0) -> None:
        self.health.enter_graceful_shutdown()
        if self.kube is not None:
            self.kube.stop()  # returns at once: the watch threads end on their own
        for loop in self.loops:
            loop.stop(grace)
        self.grpc_server.stop(grace).wait()
        self.http.stop()


class _Health:
    """gRPC health of the four services: NOT_SERVING until the tick loop's first round, then SERVING."""

    def __init__(self) -> None:
        self.servicer = health.HealthServicer()
        self.serving = False
        self._set(health_pb2.HealthCheckResponse.NOT_SERVING)

    def mark_serving(self) -> None:
        self.serving = True
        self._set(health_pb2.HealthCheckResponse.SERVING)

    def _set(self, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType) -> None:
        for name in ("", *SERVICES):
            self.servicer.set(name, status)


def serve(settings: ApolloSettings, source: MetricSource | None = None, start_ticks: bool = True) -> Apollo:
    """Start everything and return at once; the first tick runs in the background.

    `start_ticks=False` leaves the tick and tuning loops unstarted (tests drive `engine.run_tick()`).
    """
    metrics = ApolloMetrics.create()
    reports = ReportStore(settings.report_ttl_seconds)
    kube = (
        KubeReader.connect(settings.kubernetes.kubeconfig, reports.signatures) if settings.kubernetes.enabled else None
    )
    engine = Engine(settings, source or PrometheusSource(settings.prometheus), reports, kube=kube)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), options=[("grpc.so_reuseport", 0)])
    pb_grpc.add_InsightServiceServicer_to_server(InsightServicer(reports, metrics), server)
    pb_grpc.add_SchedulingPolicyServiceServicer_to_server(SchedulingServicer(engine, metrics), server)
    pb_grpc.add_OrchestrationPolicyServiceServicer_to_server(OrchestrationServicer(engine, metrics), server)
    pb_grpc.add_ForecastServiceServicer_to_server(ForecastServicer(engine), server)
    grpc_health = _Health()
    health_pb2_grpc.add_HealthServicer_to_server(grpc_health.servicer, server)
    grpc_port = server.add_insecure_port(settings.grpc_address)
    if grpc_port == 0:
        raise OSError(f"cannot bind gRPC address {settings.grpc_address}")
    server.start()
    http = ThreadedServer(create_app(engine, metrics, lambda: grpc_health.serving), settings.http_address).start()
    ticks = TickLoop(engine, metrics, on_round=grpc_health.mark_serving)
    tuning = TuningJob(engine)
    loops: list[BackgroundLoop] = []
    if kube is not None:
        kube.start()  # the engine holds its decisions until both first listings are in
    if start_ticks:
        loops.append(ticks.start())
        if settings.tuning.enabled:
            loops.append(tuning.start())
    log.info("apollo serving", extra={"grpc_port": grpc_port, "http_port": http.port})
    return Apollo(settings, engine, metrics, server, grpc_port, http, grpc_health.servicer, ticks, tuning, loops, kube)
