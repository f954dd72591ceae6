"""APOLLO's HTTP port: /metrics, /healthz and /readyz on the shared shell (`common.http`).

Ready means the gRPC services are serving: the tick loop has finished its first round (warm start and
first tick), which is also when gRPC health turns SERVING. A stale or warming-up engine stays ready on
purpose: it still answers every call correctly (neutral scores, no policies), as the fail-open extender
expects, and taking it out of its Service would only turn those answers into connection errors. The body
says how it is doing: `stale`, `stale_reason`, `mode` (predictive or reactive), `mode_reason`,
`skill_vs_last_value` (null while unknown), `generation`, `series`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from flask import Flask
from prometheus_client import generate_latest

from apollo.adapters.metrics import ApolloMetrics
from apollo.runtime.engine import Engine
from common.http import Readiness, install


def create_app(engine: Engine, metrics: ApolloMetrics, serving: Callable[[], bool]) -> Flask:
    """The probe app; `serving()` says whether the gRPC services have started answering."""
    app = Flask("apollo")

    def readiness() -> Readiness:
        view = engine.view
        detail = {
            "stale": view.stale,
            "stale_reason": view.stale_reason,
            "mode": "reactive" if view.reactive else "predictive",
            "mode_reason": view.mode_reason,
            "skill_vs_last_value": view.skill if math.isfinite(view.skill) else None,
            "generation": view.generation,
            "series": engine.stats.series,
        }
        if not serving():
            return Readiness(False, detail, "starting: the first tick has not finished")
        return Readiness(True, detail)

    return install(app, readiness=readiness, metrics=lambda: generate_latest(metrics.registry), service="apollo")
