"""The `apollo` process: gRPC services, gRPC health, an HTTP port for metrics/health, the tick loop."""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from apollo.adapters.grpc.forecast import ForecastServicer
from apollo.adapters.grpc.orchestration import OrchestrationServicer
from apollo.adapters.grpc.scheduling import InsightServicer, SchedulingServicer
from apollo.adapters.kubernetes import KubeReader
from apollo.adapters.metrics import ApolloMetrics
from apollo.adapters.prometheus import PrometheusSource
from apollo.config import ApolloSettings
from apollo.jobs.tuning import TuningJob
from apollo.runtime.engine import Engine
from apollo.runtime.reports import ReportStore
from apollo_api.v1 import apollo_pb2_grpc as pb_grpc

log = logging.getLogger("apollo.server")
_SERVICES = (
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
    http_server: ThreadingHTTPServer
    http_port: int
    health: health.HealthServicer
    tuning: TuningJob
    _stop: threading.Event
    _threads: list[threading.Thread]

    def stop(self, grace: float = 5.0) -> None:
        self._stop.set()
        self.health.enter_graceful_shutdown()
        self.grpc_server.stop(grace).wait()
        self.http_server.shutdown()
        for t in self._threads:
            t.join(timeout=grace)


def _record(metrics: ApolloMetrics, engine: Engine) -> None:
    view = engine.view
    metrics.tick_seconds.observe(engine.stats.duration)
    metrics.series.set(engine.stats.series)
    metrics.stale.set(1 if view.stale else 0)
    metrics.reactive.set(1 if view.reactive else 0)
    if view.mase == view.mase:  # not NaN
        metrics.mase.set(view.mase)
    if view.coverage == view.coverage:
        metrics.coverage.set(view.coverage)


def _tick_loop(engine: Engine, metrics: ApolloMetrics, stop: threading.Event, health_servicer: Any) -> None:
    interval = engine.settings.forecast.step_seconds
    try:
        engine.warm_start()
    except Exception:
        log.exception("warm start failed; warming up live")
    while not stop.is_set():
        started = time.monotonic()
        failures = engine.stats.failures
        try:
            engine.run_tick()
            if engine.stats.failures > failures:
                metrics.tick_failures.inc()
            metrics.dropped_values.labels("prometheus").inc(engine.stats.dropped)
        except Exception:
            # A bug in one tick must not end the engine; the last view keeps serving.
            log.exception("tick failed")
            metrics.tick_failures.inc()
        _record(metrics, engine)
        status = health_pb2.HealthCheckResponse.SERVING
        for name in ("", *_SERVICES):
            health_servicer.set(name, status)
        stop.wait(max(0.0, interval - (time.monotonic() - started)))


def _http_handler(engine: Engine, metrics: ApolloMetrics) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            view = engine.view
            if self.path == "/metrics":
                self._send(200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
            elif self.path in ("/healthz", "/readyz"):
                body = {
                    "status": "ok",
                    "stale": view.stale,
                    "stale_reason": view.stale_reason,
                    "mode": "reactive" if view.reactive else "predictive",
                    "generation": view.generation,
                    "series": engine.stats.series,
                }
                self._send(200, json.dumps(body).encode())
            else:
                self._send(404, json.dumps({"error": f"no such path {self.path}"}).encode())

        def log_message(self, *args: object) -> None:
            pass

    return Handler


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def _kube_reader(settings: ApolloSettings) -> KubeReader | None:
    if not settings.kubernetes.enabled:
        return None
    from kubernetes import client, config

    if settings.kubernetes.kubeconfig:
        api = config.new_client_from_config(config_file=settings.kubernetes.kubeconfig)  # type: ignore[no-untyped-call]
    else:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
        api = client.ApiClient()
    return KubeReader(client.CoreV1Api(api), settings.policy.checkpoint_label)


def serve(settings: ApolloSettings, source: PrometheusSource | None = None, start_ticks: bool = True) -> Apollo:
    """Start everything and return at once; the first tick runs in the background."""
    metrics = ApolloMetrics.create()
    reports = ReportStore(settings.report_ttl_seconds)
    engine = Engine(settings, source or PrometheusSource(settings.prometheus), reports, kube=_kube_reader(settings))
    tuning = TuningJob(engine)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), options=[("grpc.so_reuseport", 0)])
    pb_grpc.add_InsightServiceServicer_to_server(InsightServicer(reports, metrics), server)
    pb_grpc.add_SchedulingPolicyServiceServicer_to_server(SchedulingServicer(engine, metrics), server)
    pb_grpc.add_OrchestrationPolicyServiceServicer_to_server(OrchestrationServicer(engine, metrics), server)
    pb_grpc.add_ForecastServiceServicer_to_server(ForecastServicer(engine), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", *_SERVICES):
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    grpc_port = server.add_insecure_port(settings.grpc_address)
    if grpc_port == 0:
        raise OSError(f"cannot bind gRPC address {settings.grpc_address}")
    server.start()
    http = ThreadingHTTPServer(_split(settings.http_address), _http_handler(engine, metrics))
    stop = threading.Event()
    threads = [threading.Thread(target=http.serve_forever, name="apollo-http", daemon=True)]
    if start_ticks:
        threads.append(
            threading.Thread(
                target=_tick_loop, args=(engine, metrics, stop, health_servicer), name="apollo-tick", daemon=True
            )
        )
        if settings.tuning.enabled:
            threads.append(threading.Thread(target=tuning.run_forever, args=(stop,), name="apollo-tuning", daemon=True))
    for t in threads:
        t.start()
    log.info("apollo serving", extra={"grpc_port": grpc_port, "http_port": http.server_address[1]})
    return Apollo(
        settings,
        engine,
        metrics,
        server,
        grpc_port,
        http,
        int(http.server_address[1]),
        health_servicer,
        tuning,
        stop,
        threads,
    )
