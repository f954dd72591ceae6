"""The engine's tick: Prometheus sample -> forecaster -> node scores -> snapshot, with staleness.

The engine owns mutable state (the series bank, the latest snapshot) and is driven by one thread
(`run_tick`); gRPC threads only read the immutable `EngineView` it publishes, so no request ever
waits for a tick. Outside-world failures never stop it: a failed Prometheus query keeps the last
view, and once it is older than the configured age the view turns stale (neutral scores, no
migrations), which health, logs and metrics all report.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from apollo.config import ApolloSettings
from apollo.forecast import BankConfig, ForecastParams, ForecastResult, SeriesBank
from apollo.node_scores import FloatArray, NodeScores, score_nodes
from apollo.prometheus_source import PrometheusSource, SourceError
from apollo.reports import ReportStore

log = logging.getLogger("apollo.engine")


@dataclass(frozen=True)
class EngineView:
    """Everything readers need from one tick, never mutated after publication."""

    generation: int
    created_at: float
    scores: NodeScores | None
    forecast: ForecastResult | None
    step_seconds: float
    stale: bool
    stale_reason: str
    reactive: bool
    mase: float = math.nan
    coverage: float = math.nan
    index: dict[str, int] = field(default_factory=dict)


@dataclass
class TickStats:
    series: int = 0
    dropped: int = 0
    duration: float = 0.0
    failures: int = 0


class Engine:
    def __init__(
        self,
        settings: ApolloSettings,
        source: PrometheusSource,
        reports: ReportStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.source = source
        self.reports = reports
        self.clock = clock
        f = settings.forecast
        season = max(1, round(f.season_minutes * 60 / f.step_seconds)) if f.season_minutes else 1
        q = f.decision_quantile
        self.bank = SeriesBank(
            params=ForecastParams(alpha=f.alpha, beta=f.beta, phi=f.phi, gamma=min(f.gamma, 1 - f.alpha)),
            horizon=f.horizon_steps,
            quantiles=(round(1 - q, 6), 0.5, q),
            config=BankConfig(season_length=season, season_buckets=max(2, min(BankConfig().season_buckets, season))),
            start_tick=int(clock() // f.step_seconds),
        )
        self.resources = tuple(settings.prometheus.queries)
        self._generation = 0
        self._last_success = 0.0
        self.stats = TickStats()
        self.view = EngineView(0, clock(), None, None, f.step_seconds, True, "no sample yet", False)
        self._lock = threading.Lock()

    # ---- capacity from insight agents --------------------------------------------------------
    def _allocatable(self, nodes: list[str]) -> tuple[FloatArray, FloatArray]:
        cpu = np.full(len(nodes), np.nan)
        mem = np.full(len(nodes), np.nan)
        for i, node in enumerate(nodes):
            insight = self.reports.insight(node)
            if insight is not None and insight.HasField("node_resources"):
                r = insight.node_resources
                cpu[i] = r.cpu_allocatable_cores or np.nan
                mem[i] = float(r.memory_allocatable_bytes) or np.nan
        return cpu, mem

    def run_tick(self) -> EngineView:
        """One sample + update + forecast + scores; publishes and returns the new view."""
        t0 = time.perf_counter()
        now = self.clock()
        f = self.settings.forecast
        try:
            sample = self.source.latest()
        except SourceError as exc:
            self.stats.failures += 1
            return self._age_view(now, f"prometheus unavailable: {exc}"[:300])
        if not sample.values:
            return self._age_view(now, "prometheus returned no node series")
        self._last_success = now
        keys = sorted(sample.values)
        with self._lock:
            self.bank.ensure(keys)
            values = np.full(len(self.bank), np.nan)
            values[self.bank.positions(keys)] = [sample.values[k] for k in keys]
            tick = int(now // f.step_seconds)
            # Keyed to the clock so missed ticks become gaps; a second sample within one step
            # (a manual tick) simply advances by one.
            self.bank.update(values, tick=tick if tick >= self.bank.tick else None)
            fc = self.bank.forecast()
            acc = self.bank.accuracy()
        upper = fc.quantile(f.decision_quantile)
        nodes = sorted({str(k[0]) for k in fc.keys})  # type: ignore[index]
        index = {n: i for i, n in enumerate(nodes)}
        h = fc.mean.shape[1]
        per_resource = {r: np.full((len(nodes), h), np.nan) for r in ("cpu", "memory")}
        reactive = bool(acc.series_scored and acc.mase > f.reactive_mase_above)
        for row, key in enumerate(fc.keys):
            node, resource = str(key[0]), str(key[1])  # type: ignore[index]
            if resource in per_resource:
                per_resource[resource][index[node]] = (
                    sample.values.get((node, resource), np.nan) if reactive else upper[row]
                )
        cpu_alloc, mem_alloc = self._allocatable(nodes)
        scores = score_nodes(
            nodes,
            np.clip(per_resource["cpu"], 0, None),
            np.clip(per_resource["memory"], 0, None),
            cpu_alloc,
            mem_alloc,
            f.overload_threshold,
            min(f.overload_consecutive_steps, h),
        )
        self._generation += 1
        view = EngineView(
            generation=self._generation,
            created_at=now,
            scores=scores,
            forecast=fc,
            step_seconds=f.step_seconds,
            stale=False,
            stale_reason="reactive: forecast accuracy degraded" if reactive else "",
            reactive=reactive,
            mase=acc.mase,
            coverage=acc.coverage,
            index=index,
        )
        if reactive != self.view.reactive:
            log.warning("forecast mode changed", extra={"reactive": reactive, "mase": acc.mase})
        self.view = view
        self.stats = TickStats(len(fc.keys), sample.dropped, time.perf_counter() - t0, self.stats.failures)
        return view

    def _age_view(self, now: float, reason: str) -> EngineView:
        """No new data: keep the last view until it is too old, then mark it stale (fail-open)."""
        old = self.view
        too_old = now - self._last_success > self.settings.prometheus.stale_after_seconds
        if too_old and not old.stale:
            log.warning("engine data stale; serving neutral scores", extra={"reason": reason})
            self._generation += 1
            self.view = EngineView(
                self._generation, old.created_at, old.scores, old.forecast, old.step_seconds, True, reason,
                old.reactive, old.mase, old.coverage, old.index,
            )  # fmt: skip
        elif not too_old:
            log.info("tick without new data; keeping last view", extra={"reason": reason})
        return self.view
