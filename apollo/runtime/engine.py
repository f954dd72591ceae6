"""The engine's tick: Prometheus sample -> forecaster -> node scores -> snapshot, with staleness.

The engine owns mutable state (the series bank, the latest snapshot) and is driven by one thread
(`run_tick`); gRPC threads only read the immutable `EngineView` it publishes, so no request ever
waits for a tick. Outside-world failures never stop it: a failed Prometheus query keeps the last
view, and once it is older than the configured age the view turns stale (neutral scores, no
migrations), which health, logs and metrics all report.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from apollo.config import ApolloSettings
from apollo.core.decisions import PolicyOutput
from apollo.core.domain import ClusterView, NodeCapacity, NodeInsight, PodSignature
from apollo.core.forecasting.bank import BankConfig, ForecastResult, SeriesBank
from apollo.core.forecasting.params import ForecastParams
from apollo.core.outlooks import node_outlooks, workload_outlooks
from apollo.core.policy import PolicyEngine
from apollo.core.scoring.snapshot import NodeScores, snapshot_scores
from apollo.core.scoring.table import NodeTable
from apollo.runtime.broker import PolicyBroker
from apollo.runtime.reports import ReportStore
from apollo.runtime.sources import ClusterReader, MetricSource, SourceError

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
    table: NodeTable | None = None
    cluster: ClusterView = field(default_factory=ClusterView)
    insights: dict[str, NodeInsight] = field(default_factory=dict)
    anomaly_z: dict[str, float] = field(default_factory=dict)


@dataclass
class TickStats:
    series: int = 0
    dropped: int = 0
    duration: float = 0.0
    failures: int = 0
    decisions: PolicyOutput = field(default_factory=PolicyOutput)


class Engine:
    """The tick's owner: the series bank, the policy and the view every reader shares."""

    def __init__(
        self,
        settings: ApolloSettings,
        source: MetricSource,
        reports: ReportStore,
        clock: Callable[[], float] = time.time,
        kube: ClusterReader | None = None,
        broker: PolicyBroker | None = None,
    ) -> None:
        self.settings = settings
        self.source = source
        self.reports = reports
        self.clock = clock
        self.kube = kube
        self.broker = broker or PolicyBroker(clock)
        f = settings.forecast
        season = max(1, round(f.season_minutes * 60 / f.step_seconds)) if f.season_minutes else 1
        q = f.decision_quantile
        self.quantiles = (round(1 - q, 6), 0.5, q)
        self.bank_config = BankConfig(
            season_length=season, season_buckets=max(2, min(BankConfig().season_buckets, season))
        )
        self._params: ForecastParams = f.smoothing
        self.bank = self._new_bank(int(clock() // f.step_seconds))
        # Samples seen; below `warmup_samples` the intervals rest on priors, so the view stays stale
        # (neutral scores, no migrations) instead of calling every node overloaded at start-up.
        self.samples_seen = 0
        self.warmup_samples = f.warmup_samples
        self.policy = PolicyEngine(settings.policy, settings.scoring)
        # The warning's k: configured, then tuned against realised overloads (tuning job); the policy's
        # settings follow it (set_overload_steps), so snapshot flags and migrations agree.
        self.overload_steps = settings.policy.consecutive_steps
        # Tuned parameters per resource kind; series that appear later start with them too.
        self.resource_params: dict[str, ForecastParams] = {}
        self.resources = tuple(settings.prometheus.queries)
        self._generation = 0
        self._last_success = 0.0
        self.stats = TickStats()
        self.view = EngineView(0, clock(), None, None, f.step_seconds, True, "no sample yet", False)
        # Guards the bank and the policy state: the tick thread, tuning and gRPC feedback share them.
        self.lock = threading.Lock()

    def _new_bank(self, start_tick: int) -> SeriesBank:
        return SeriesBank(
            params=self._params,
            horizon=self.settings.forecast.horizon_steps,
            quantiles=self.quantiles,
            config=self.bank_config,
            start_tick=start_tick,
        )

    def warm_start(self) -> int:
        """Replay recent Prometheus history so forecasts and intervals are trustworthy from the first tick.

        Returns the number of samples replayed (0 when history is unavailable: the engine then warms
        up live, serving neutral scores meanwhile).
        """
        f = self.settings.forecast
        now = self.clock()
        lookback = max(self.bank_config.error_window, self.warmup_samples) * 2
        end = dt.datetime.fromtimestamp(now, dt.UTC)
        start = end - dt.timedelta(seconds=lookback * f.step_seconds)
        try:
            history = self.source.history(start, end, f.step_seconds)
        except SourceError as exc:
            log.warning("warm start skipped: history unavailable", extra={"error": str(exc)[:300]})
            return 0
        if not history.keys or history.values.shape[1] < 2:
            return 0
        # Replay all but the last column; the first live tick supplies the newest sample.
        values = history.values[:, :-1]
        with self.lock:
            self.bank = self._new_bank(int(history.times[0] // f.step_seconds))
            self.bank.add(history.keys)
            self.bank.replay(values)
            seen = int(np.isfinite(values).any(axis=0).sum())
            self.samples_seen += seen
        log.info("warm start from Prometheus history", extra={"series": len(history.keys), "samples": seen})
        return seen

    def signature(self, namespace: str, name: str) -> PodSignature | None:
        return self.reports.signature(namespace, name)

    @staticmethod
    def _capacity(nodes: list[str], cluster: ClusterView, insights: dict[str, NodeInsight]) -> dict[str, NodeCapacity]:
        """Kubernetes' allocatable wins; an insight agent's report fills in where it is unknown."""
        out = dict(cluster.nodes)
        for node in nodes:
            if node in out and out[node].cpu_cores > 0:
                continue
            insight = insights.get(node)
            if insight is not None and insight.allocatable is not None:
                out[node] = insight.allocatable
        return out

    def run_tick(self) -> EngineView:
        """One sample + update + forecast + scores + policies; publishes and returns the new view."""
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
        self.samples_seen += 1
        warming = self.samples_seen < self.warmup_samples
        cluster = ClusterView()
        if self.kube is not None:
            try:
                cluster = self.kube.read(self.signature)
            except Exception as exc:  # the API server being away must not stop forecasting
                log.warning("kubernetes read failed; deciding without pods", extra={"error": str(exc)[:300]})
        insights = self.reports.live_insights()
        keys = sorted(sample.values)
        with self.lock:
            added = self.bank.ensure(keys).added
            for resource, params in self.resource_params.items():
                fresh = [k for k in added if k[1] == resource]  # type: ignore[index]
                if fresh:
                    self.bank.set_params(params, keys=fresh)
            values = np.full(len(self.bank), np.nan)
            values[self.bank.positions(keys)] = [sample.values[k] for k in keys]
            tick = int(now // f.step_seconds)
            # Keyed to the clock so missed ticks become gaps; a second sample within one step
            # (a manual tick) simply advances by one.
            step = self.bank.update(values, tick=tick if tick >= self.bank.tick else None)
            fc = self.bank.forecast()
            acc = self.bank.accuracy()
        fc_keys = [(str(k[0]), str(k[1])) for k in fc.keys]  # type: ignore[index]
        reactive = bool(acc.series_scored and acc.mase > f.reactive_mase_above)
        upper = fc.quantile(f.decision_quantile)
        mean, lower = fc.mean, fc.lower
        if reactive:
            # Forecasts are not trusted: decide on the latest observation held flat over the horizon.
            latest = np.array([sample.values.get(k, np.nan) for k in fc_keys])
            mean = lower = upper = np.repeat(latest[:, None], fc.mean.shape[1], axis=1)
        anomaly_z: dict[str, float] = {}
        for i, (node, _res) in enumerate(fc_keys):
            z = abs(float(step.zscore[i])) if np.isfinite(step.zscore[i]) else 0.0
            anomaly_z[node] = max(anomaly_z.get(node, 0.0), z)
        nodes = sorted({k[0] for k in fc_keys})
        capacity = self._capacity(nodes, cluster, insights)
        outlooks = node_outlooks(
            fc_keys, mean, lower, upper, capacity, cluster.pods, anomaly_z, cluster.node_labels,
            f.step_seconds, self.bank_config.anomaly_z,
        )  # fmt: skip
        table = NodeTable.build(outlooks, insights)
        # The snapshot reads the same per-node matrices the per-pod scoring uses (built once per tick).
        scores = snapshot_scores(
            list(table.nodes),
            np.clip(table.cpu_upper, 0, None),
            np.clip(table.memory_upper, 0, None),
            table.cpu_capacity,
            table.memory_capacity,
            self.settings.policy.overload_threshold,
            min(self.overload_steps, table.horizon),
        )
        decisions = PolicyOutput()
        if not warming:
            with self.lock:
                decisions = self.policy.evaluate(
                    now, table, cluster.pods, insights, (), workload_outlooks(outlooks, cluster.pods)
                )
            self._publish(decisions)
        self._generation += 1
        view = EngineView(
            generation=self._generation,
            created_at=now,
            scores=scores,
            forecast=fc,
            step_seconds=f.step_seconds,
            stale=warming,
            stale_reason=(
                f"warming up: {self.samples_seen}/{self.warmup_samples} samples"
                if warming
                else "reactive: forecast accuracy degraded"
                if reactive
                else ""
            ),
            reactive=reactive,
            mase=acc.mase,
            coverage=acc.coverage,
            index=dict(table.index),
            table=table,
            cluster=cluster,
            insights=insights,
            anomaly_z=anomaly_z,
        )
        if reactive != self.view.reactive:
            log.warning("forecast mode changed", extra={"reactive": reactive, "mase": acc.mase})
        self.view = view
        self.stats = TickStats(len(fc.keys), sample.dropped, time.perf_counter() - t0, self.stats.failures, decisions)
        return view

    def set_resource_params(self, resource: str, params: ForecastParams) -> None:
        with self.lock:
            keys = [k for k in self.bank.keys if isinstance(k, tuple) and k[1] == resource]
            self.bank.set_params(params, keys=keys)
            self.resource_params[resource] = params

    def set_overload_steps(self, steps: int) -> None:
        with self.lock:
            self.overload_steps = steps
            self.policy.settings = replace(self.policy.settings, consecutive_steps=steps)

    def _publish(self, output: PolicyOutput) -> None:
        for decision in output.decisions:
            if decision.dry_run:
                log.info(
                    "dry-run decision (not published)",
                    extra={"action": decision.action.name, "reason": decision.reason, "id": decision.request_id},
                )
                continue
            if self.broker.publish(decision):
                log.info(
                    "policy published",
                    extra={"action": decision.action.name, "reason": decision.reason, "id": decision.request_id},
                )

    def record_result(self, request_id: str, success: bool) -> bool:
        """ExecutionResult feedback: frees caps and starts cool-downs; the policy is never resent."""
        self.broker.ack(request_id)
        with self.lock:
            return self.policy.record_result(request_id, success, self.clock())

    def _age_view(self, now: float, reason: str) -> EngineView:
        """No new data: keep the last view until it is too old, then mark it stale (fail-open)."""
        old = self.view
        too_old = now - self._last_success > self.settings.prometheus.stale_after_seconds
        if too_old and not old.stale:
            log.warning("engine data stale; serving neutral scores", extra={"reason": reason})
            self._generation += 1
            self.view = replace(old, generation=self._generation, stale=True, stale_reason=reason)
        elif not too_old:
            log.info("tick without new data; keeping last view", extra={"reason": reason})
        return self.view
