"""The tick loop: warm start once, then one engine tick per `forecast.tick_seconds`, on the shared shell.

After every round (a tick, or a failed one: the last view keeps serving) the metrics are updated and the
gRPC services are marked SERVING, so readiness follows the first finished round.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from apollo.adapters.metrics import ApolloMetrics
from apollo.runtime.engine import Engine
from common.loops import BackgroundLoop

log = logging.getLogger("apollo.tick")


class TickLoop(BackgroundLoop):
    """Drives `Engine.run_tick`; `on_round` is called after every round (health turns SERVING)."""

    def __init__(self, engine: Engine, metrics: ApolloMetrics, on_round: Callable[[], None] = lambda: None) -> None:
        super().__init__("apollo-tick", engine.settings.forecast.tick_interval, on_error=self._failed)
        self.engine = engine
        self.metrics = metrics
        self.on_round = on_round
        self.rounds = 0

    def before_loop(self) -> None:
        try:
            self.engine.warm_start()
        except Exception:
            log.exception("warm start failed; warming up live")

    def run_once(self) -> None:
        failures = self.engine.stats.failures
        try:
            self.engine.run_tick()
            if self.engine.stats.failures > failures:
                self.metrics.tick_failures.inc()
            self.metrics.dropped_values.labels("prometheus").inc(self.engine.stats.dropped)
        finally:
            self._finish_round()

    def _failed(self, exc: BaseException) -> None:
        # A bug in one tick must not end the engine (the shell logged it); the last view keeps serving.
        self.metrics.tick_failures.inc()

    def _finish_round(self) -> None:
        engine, metrics = self.engine, self.metrics
        view = engine.view
        metrics.tick_seconds.observe(engine.stats.duration)
        metrics.series.set(engine.stats.series)
        metrics.stale.set(1 if view.stale else 0)
        metrics.reactive.set(1 if view.reactive else 0)
        metrics.abnormal.set(engine.stats.abnormal)
        if engine.stats.stepped:
            metrics.model_steps.inc()
        if math.isfinite(view.skill):
            metrics.skill.set(view.skill)
        if math.isfinite(view.mase):
            metrics.mase.set(view.mase)
        if math.isfinite(view.coverage):
            metrics.coverage.set(view.coverage)
        self.rounds += 1
        self.on_round()
