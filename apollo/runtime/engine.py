"""The engine's tick: Prometheus sample -> step means -> forecaster -> node table -> scores and policies.

The engine owns mutable state (the series bank, the step accumulator, the latest view) and is driven by
one thread (`run_tick`); gRPC threads only read the immutable `EngineView` it publishes, so no request
ever waits for a tick. Outside-world failures never stop it: a failed Prometheus query keeps the last
view, and once it is older than the configured age the view turns stale (neutral scores, no
migrations), which health, logs and metrics all report.

Two cadences (see :mod:`apollo.core.forecasting.cadence`): every `forecast.tick_seconds` the latest load
is read, and the scores, the overload flags and the policies are recomputed from the latest forecast
and the cluster as it is now; every `forecast.step_seconds` the step's mean goes into the forecaster,
which then publishes new forecasts, accuracy and abnormal-behaviour flags.

Mode: predictive while the published forecast beats repeating the last value on the same samples (live
skill below `forecast.reactive_skill_above`); otherwise reactive, deciding on current load held flat,
until the skill drops below `forecast.predictive_skill_below`; either way only once the skill has stayed
past the threshold for `forecast.mode_confirm_horizons` horizons. `forecast.mode` can force either. Every
switch is logged; the view, the snapshot, the metrics and every ResourcePrediction carry the mode and
why.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from apollo.config import ApolloSettings
from apollo.core.decisions import PolicyOutput
from apollo.core.domain import ClusterView, NodeInsight, PodSignature, WorkloadOutlook
from apollo.core.forecasting.accuracy import AccuracyReport
from apollo.core.forecasting.arrays import FloatArray, IntArray
from apollo.core.forecasting.bank import BankConfig, ForecastResult, SeriesBank
from apollo.core.forecasting.cadence import StepMeans
from apollo.core.forecasting.mode import ModeSwitch
from apollo.core.forecasting.params import ForecastParams
from apollo.core.outlooks import NodeLayout, PodIndex, PodIndexer, node_table, workload_outlooks
from apollo.core.policy import PolicyEngine
from apollo.core.scoring.snapshot import NodeScores, snapshot_scores
from apollo.core.scoring.table import NodeTable
from apollo.runtime.broker import PolicyBroker
from apollo.runtime.reports import ReportStore
from apollo.runtime.sources import ClusterRead, ClusterReader, History, MetricSource, Sample, SourceError

log = logging.getLogger("apollo.engine")

_EMPTY_LAYOUT = NodeLayout.of(())
_NO_CLUSTER = ClusterView()  # one object: without a Kubernetes reader every tick sees the same (empty) view


def _keyed(nodes: list[str], resource: str) -> list[Hashable]:
    return [(node, resource) for node in nodes]


def bank_shape(settings: ApolloSettings) -> tuple[BankConfig, int, tuple[float, float, float]]:
    """The forecaster's structure the settings imply: config (season in steps), horizon, quantile levels.

    One place, so the engine and ``bench.forecast`` run exactly the shipped forecaster.
    """
    f = settings.forecast
    season = max(1, round(f.season_minutes * 60 / f.step_seconds)) if f.season_minutes else 1
    config = BankConfig(season_length=season, season_buckets=max(2, min(BankConfig().season_buckets, season)))
    q = f.decision_quantile
    return config, f.horizon_steps, (round(1 - q, 6), 0.5, q)


@dataclass(frozen=True)
class EngineView:
    """Everything readers need from one tick, never mutated after publication.

    ``forecast`` is the forecaster's latest output (rows = ``layout``'s keys); ``current`` the latest
    observed value per row (NaN unknown). ``skill``, ``mase`` and ``coverage`` are NaN until known.
    """

    generation: int
    created_at: float
    scores: NodeScores | None
    forecast: ForecastResult | None
    step_seconds: float
    stale: bool
    stale_reason: str
    reactive: bool
    mode_reason: str = ""
    skill: float = math.nan
    mase: float = math.nan
    coverage: float = math.nan
    index: dict[str, int] = field(default_factory=dict)
    table: NodeTable | None = None
    cluster: ClusterView = field(default_factory=ClusterView)
    insights: dict[str, NodeInsight] = field(default_factory=dict)
    layout: NodeLayout = _EMPTY_LAYOUT
    current: FloatArray = field(default_factory=lambda: np.zeros(0))


@dataclass(frozen=True)
class _HeldOutlooks:
    """Workload outlooks as last computed, and what they were computed from (see `Engine._outlooks`)."""

    forecast: ForecastResult | None  # None: decided on current load held flat (redone every tick)
    layout: NodeLayout
    cpu_capacity: FloatArray
    memory_capacity: FloatArray
    pods: PodIndex
    by_workload: dict[tuple[str, str, str], WorkloadOutlook]
    outlooks: list[WorkloadOutlook]


@dataclass
class TickStats:
    series: int = 0
    dropped: int = 0
    duration: float = 0.0
    failures: int = 0
    stepped: bool = False
    abnormal: int = 0
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
        self.step_seconds = f.step_seconds
        self.tick_seconds = f.tick_interval
        # With one tick per step there is nothing to average: each tick is a model step, keyed to the clock
        # (a second manual tick within one step simply advances by one).
        self.aggregating = self.tick_seconds < self.step_seconds
        self.bank_config, _, self.quantiles = bank_shape(settings)
        self._params: ForecastParams = f.smoothing
        self.bank = self._new_bank(int(clock() // f.step_seconds))
        self.steps = StepMeans()
        # Model steps seen; below `warmup_samples` the intervals rest on priors, so the view stays stale
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
        self.reactive = f.mode == "reactive"
        self._switch = ModeSwitch(f.reactive_skill_above, f.predictive_skill_below, f.mode_confirm_steps)
        self.mode_reason = "forced by forecast.mode" if self.reactive else ""
        self.forecast: ForecastResult | None = None
        self.accuracy: AccuracyReport | None = None
        self._abnormal = np.zeros(0, dtype=np.bool_)
        self._abnormal_score = np.zeros(0)
        self._current = np.zeros(0)
        self._current_at = np.zeros(0)
        # Per resource (or per key set, for mapping samples): node list, bank rows, the bank keys they index.
        self._rows: dict[str, tuple[list[Hashable], IntArray, tuple[Hashable, ...]]] = {}
        self._layout = _EMPTY_LAYOUT
        self._layout_keys: tuple[Hashable, ...] = ()
        # Pod-derived arrays, kept while the cluster view is the same object and the layout unchanged, and
        # updated from the reader's account of what changed when it is not.
        self._pods: tuple[ClusterView, NodeLayout, PodIndexer, PodIndex] | None = None
        self._workloads: _HeldOutlooks | None = None
        # Workloads whose pods changed since the outlooks held were computed (None: unknown, redo all).
        self._touched: set[tuple[str, str, str]] | None = None
        self._planned_cluster: ClusterView | None = None
        self._unknown: tuple[object, NodeLayout, npt.NDArray[np.bool_]] | None = None
        self._generation = 0
        self._last_success = 0.0
        self._last_decisions = PolicyOutput()
        self.stats = TickStats()
        self.view = EngineView(0, clock(), None, None, f.step_seconds, True, "no sample yet", self.reactive)
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

    # ------------------------------------------------------------------ membership

    def _add_series(self, keys: Sequence[Hashable], now: float) -> None:
        self.bank.add(keys)
        count = len(keys)
        self.steps.extend(count)
        self._current = np.concatenate([self._current, np.full(count, np.nan)])
        self._current_at = np.concatenate([self._current_at, np.full(count, now)])
        self._abnormal = np.concatenate([self._abnormal, np.zeros(count, dtype=np.bool_)])
        self._abnormal_score = np.concatenate([self._abnormal_score, np.full(count, np.nan)])
        for resource, params in self.resource_params.items():
            fresh = [k for k in keys if k[1] == resource]  # type: ignore[index]
            if fresh:
                self.bank.set_params(params, keys=fresh)

    def _forget(self, now: float) -> IntArray | None:
        """Drop series Prometheus has not returned for `forget_after_minutes` (nodes that left).

        Returns the rows kept (positions before the removal), or None when nothing was dropped.
        """
        cutoff = now - self.settings.forecast.forget_after_minutes * 60
        gone = self._current_at < cutoff
        if not gone.any():
            return None
        keys = self.bank.keys
        rows = np.flatnonzero(~gone)
        self.bank.remove([keys[i] for i in np.flatnonzero(gone)])
        self.steps.take(rows)
        self._current, self._current_at = self._current[rows], self._current_at[rows]
        self._abnormal, self._abnormal_score = self._abnormal[rows], self._abnormal_score[rows]
        self._rows.clear()
        if self.forecast is not None:
            self.forecast = self.bank.forecast()
        log.info("series forgotten", extra={"series": int(gone.sum()), "left": len(self.bank)})
        return rows

    def _align(self, sample: Sample, now: float) -> FloatArray:
        """This tick's sample as a vector in bank order (NaN where a series has no sample).

        The rows of each resource's node list are cached: Prometheus answers in a stable order, so a tick
        usually costs one list comparison per resource instead of a lookup per value.
        """
        placed: list[tuple[IntArray, FloatArray]] = []
        for resource, (nodes, values) in sample.columns.items():
            keys = functools.partial(_keyed, nodes, resource)
            placed.append((self._rows_for(resource, nodes, keys, now), values))
        if sample.values:
            mapped: list[Hashable] = list(sample.values)
            rows = self._rows_for("", mapped, lambda: mapped, now)
            placed.append((rows, np.fromiter(sample.values.values(), dtype=np.float64, count=len(mapped))))
        out = np.full(len(self.bank), np.nan)
        for rows, values in placed:
            out[rows] = values
        return out

    def _rows_for(
        self, tag: str, ident: Sequence[Hashable], make_keys: Callable[[], list[Hashable]], now: float
    ) -> IntArray:
        """Bank rows of the keys (adding series never seen), cached under ``tag`` while ``ident`` repeats."""
        cached = self._rows.get(tag)
        if cached is not None and cached[2] is self.bank.keys and cached[0] == ident:
            return cached[1]
        keys = make_keys()
        missing = [k for k in keys if k not in self.bank]
        if missing:
            self._add_series(missing, now)
        rows = self.bank.positions(keys)
        self._rows[tag] = (list(ident), rows, self.bank.keys)
        return rows

    # ------------------------------------------------------------------ warm start

    def warm_start(self) -> int:
        """Replay recent Prometheus history so forecasts, intervals and seasons hold from the first tick.

        Two reads: the periodicity test's bucket means (hourly for a daily season) over the days it
        needs, then `warm_start_steps` of step means replayed through the forecaster. Returns the
        number of steps replayed (0 when history is unavailable: the engine then warms up live, serving
        neutral scores meanwhile).
        """
        f = self.settings.forecast
        now = self.clock()
        step = f.step_seconds
        last_step = int(now // step) - 1  # the current step is still open: the live ticks fill it
        if f.warm_start_steps <= 0 or last_step < 0:
            return 0
        end = dt.datetime.fromtimestamp((last_step + 1) * step, dt.UTC)
        buckets: History | None = None
        try:
            if self.bank_config.season_length > 1:
                # Whole buckets only: the open one is filled by the replay below.
                bucket_s = step * self.bank.bucket_size
                bucket_end = dt.datetime.fromtimestamp((end.timestamp() // bucket_s) * bucket_s, dt.UTC)
                days = self.bank_config.season_history * self.bank_config.season_length * step
                start = bucket_end - dt.timedelta(seconds=days - bucket_s)
                buckets = self.source.history(start, bucket_end, bucket_s, average_seconds=bucket_s)
            start = end - dt.timedelta(seconds=(f.warm_start_steps - 1) * step)
            recent = self.source.history(start, end, step, average_seconds=step)
        except SourceError as exc:
            log.warning("warm start skipped: history unavailable", extra={"error": str(exc)[:300]})
            return 0
        if not recent.keys:
            return 0
        with self.lock:
            first_tick = round(recent.times[0] / step) - 1  # a point at time T is the mean of the step ending at T
            self.bank = self._new_bank(first_tick)
            self.steps = StepMeans()
            self._current = self._current_at = np.zeros(0)
            self._abnormal, self._abnormal_score = np.zeros(0, dtype=np.bool_), np.zeros(0)
            self._rows.clear()
            keys: list[Hashable] = list(recent.keys)
            if buckets is not None:
                known = set(recent.keys)
                keys += [k for k in buckets.keys if k not in known]
            self._add_series(keys, now)
            if buckets is not None and buckets.keys:
                rows = self.bank.positions(buckets.keys)
                seeded = np.full((len(self.bank), buckets.values.shape[1]), np.nan)
                seeded[rows] = buckets.values
                last_bucket = round(buckets.times[-1] / (step * self.bank.bucket_size)) - 1
                self.bank.seed_buckets(seeded, last_bucket)
            values = np.full((len(self.bank), recent.values.shape[1]), np.nan)
            values[self.bank.positions(recent.keys)] = recent.values
            self.bank.replay(values)
            seen = int(np.isfinite(values).any(axis=0).sum())
            self.samples_seen += seen
            self.forecast = self.bank.forecast()
            self.accuracy = self.bank.accuracy()
            self._update_mode(self.accuracy, settled=True)
        log.info(
            "warm start from Prometheus history",
            extra={
                "series": len(self.bank),
                "steps": seen,
                "seasonal": int(self.forecast.seasonal.sum()),
                "season_buckets": 0 if buckets is None else buckets.values.shape[1],
            },
        )
        return seen

    def signature(self, namespace: str, name: str) -> PodSignature | None:
        return self.reports.signature(namespace, name)

    # ------------------------------------------------------------------ the tick

    def run_tick(self) -> EngineView:
        """One sample; a model step when one ended; scores and policies; publishes and returns the view."""
        t0 = time.perf_counter()
        now = self.clock()
        f = self.settings.forecast
        try:
            sample = self.source.latest()
        except SourceError as exc:
            self.stats.failures += 1
            return self._age_view(now, f"prometheus unavailable: {exc}"[:300])
        if not len(sample):
            return self._age_view(now, "prometheus returned no node series")
        self._last_success = now
        read, unread = self._read_cluster()
        insights = self.reports.live_insights()
        stepped = False
        with self.lock:
            values = self._align(sample, now)
            seen = ~np.isnan(values)
            self._current = np.where(seen, values, self._current)
            self._current_at = np.where(seen, now, self._current_at)
            kept = self._forget(now)
            if kept is not None:
                values = values[kept]
            step = int(now // f.step_seconds)
            if self.aggregating:
                closed = self.steps.add(step, values)
                if closed is not None:
                    self._model_step(closed[1], closed[0])
                    stepped = True
            else:
                self._model_step(values, step)
                stepped = True
            current = self._current_now(now)
            view = self._decide(now, current, read, unread, insights, stepped)
        self.stats = TickStats(
            len(self.bank), sample.dropped, time.perf_counter() - t0, self.stats.failures, stepped,
            int(self._abnormal.sum()), self._last_decisions,
        )  # fmt: skip
        return view

    def _read_cluster(self) -> tuple[ClusterRead | None, str]:
        """The reader's answer, or None and why the engine must not decide on pods this tick.

        Without a reader there is nothing to wait for (capacity then comes from insight agents). With one,
        an empty view before the first listing would say the cluster has no pods: the tick holds its
        decisions instead (stale view, neutral scores) and says why.
        """
        if self.kube is None:
            return ClusterRead(_NO_CLUSTER, _NO_CLUSTER), ""
        try:
            read = self.kube.read()
        except Exception as exc:  # a reader bug must not stop forecasting
            log.warning("kubernetes read failed; holding decisions", extra={"error": str(exc)[:300]})
            return None, f"kubernetes read failed: {exc}"[:300]
        return read, "" if read is not None else "kubernetes not synced"

    def _pod_index(self, read: ClusterRead | None) -> PodIndex:
        """The pod index for this tick's view: kept, updated with the reader's changes, or rebuilt.

        Rebuilt only when there is no account of the changes (first view, a layout change, a reader
        that starts over); otherwise only the pods that changed since the indexed view are applied.
        """
        cluster = _NO_CLUSTER if read is None else read.view
        held = self._pods
        if held is not None and held[1] is self._layout:
            indexed, _, indexer, index = held
            if indexed is cluster:
                return index
            if read is not None and read.base is indexed:
                if cluster.nodes is not indexed.nodes:
                    indexer.set_capacity(cluster.nodes)
                indexer.apply(read.changes)
                return self._indexed(cluster, indexer)
        return self._indexed(cluster, PodIndexer(self._layout.index, cluster.pods, cluster.nodes))

    def _indexed(self, cluster: ClusterView, indexer: PodIndexer) -> PodIndex:
        index = indexer.index()
        self._pods = (cluster, self._layout, indexer, index)
        if self._touched is not None and indexer.touched is not None:
            self._touched |= indexer.touched
        else:
            self._touched = None
        return index

    def _outlooks(
        self, fc: ForecastResult | None, table: NodeTable, pods: PodIndex, by_forecast: bool
    ) -> list[WorkloadOutlook]:
        """Workload outlooks for this tick: kept, updated for the workloads whose pods changed, or redone.

        Between model steps a predictive engine's outlooks depend only on each workload's own pods (who,
        on which node, their share of its load) and on capacity: after a few pod events only the workloads
        they touched are recomputed, the same values as a full pass. Deciding on current load (reactive,
        or no forecast yet: ``by_forecast`` False) redoes them every tick.
        """
        held = self._workloads
        reusable = (
            by_forecast
            and held is not None
            and held.forecast is fc
            and held.layout is self._layout
            and np.array_equal(held.cpu_capacity, table.cpu_capacity, equal_nan=True)
            and np.array_equal(held.memory_capacity, table.memory_capacity, equal_nan=True)
        )
        if reusable and held is not None and held.pods is pods:
            return held.outlooks
        if reusable and held is not None and self._touched is not None:
            by_workload = {k: w for k, w in held.by_workload.items() if k not in self._touched}
            by_workload.update(
                ((w.namespace, w.kind, w.name), w) for w in workload_outlooks(table, pods, self._touched)
            )
        else:
            by_workload = {(w.namespace, w.kind, w.name): w for w in workload_outlooks(table, pods)}
        outlooks = [by_workload[g] for g in pods.groups if g in by_workload]  # in workload order, as a full pass
        self._workloads = _HeldOutlooks(
            fc if by_forecast else None, self._layout, table.cpu_capacity, table.memory_capacity, pods,
            by_workload, outlooks,
        )  # fmt: skip
        self._touched = set()
        return outlooks

    def _current_now(self, now: float) -> FloatArray:
        """Latest value per series, unknown once older than the staleness budget."""
        fresh = self._current_at >= now - self.settings.prometheus.stale_after_seconds
        result: FloatArray = np.where(fresh, self._current, np.nan)
        return result

    def _model_step(self, values: FloatArray, step: int) -> None:
        """Feed one step's means to the forecaster; refresh forecast, accuracy, flags and mode."""
        result = self.bank.update(values, tick=step if step >= self.bank.tick else None)
        if not np.isnan(values).all():
            self.samples_seen += 1
        self._abnormal, self._abnormal_score = result.abnormal, result.abnormal_score
        self.forecast = self.bank.forecast()
        self.accuracy = self.bank.accuracy()
        self._update_mode(self.accuracy)

    def _update_mode(self, acc: AccuracyReport, *, settled: bool = False) -> None:
        """Predictive while the forecast beats last value; reactive otherwise (see :class:`ModeSwitch`)."""
        f = self.settings.forecast
        before = self.reactive
        if f.mode != "auto":
            self.reactive = f.mode == "reactive"
            self.mode_reason = "forced by forecast.mode" if self.reactive else ""
        else:
            self._switch.observe(acc.skill, settled=settled)
            self.reactive = self._switch.reactive
            if not self.reactive:
                self.mode_reason = ""
            elif not math.isnan(acc.skill):
                self.mode_reason = (
                    f"forecast error {acc.skill:.2f}x last value's over {acc.series_skilled} series "
                    f"(predictive again below {f.predictive_skill_below:g})"
                )
        if self.reactive != before:
            log.warning(
                "forecast mode changed",
                extra={
                    "mode": "reactive" if self.reactive else "predictive",
                    "skill": acc.skill,
                    "mase": acc.mase,
                    "reason": self.mode_reason or "forecast beats last value",
                },
            )

    def _decide(
        self,
        now: float,
        current: FloatArray,
        read: ClusterRead | None,
        unread: str,
        insights: dict[str, NodeInsight],
        stepped: bool,
    ) -> EngineView:
        """Node table and snapshot every tick; policies on each new forecast (or current load when reactive).

        Between model steps a predictive engine has no new forecast, so the planners are not asked again
        unless the cluster view changed: their confirmations (``policy.confirm_ticks``) then count
        consecutive forecasts, not repeated readings of the same one. Reactive mode decides on current
        load, which every tick brings anew. While the cluster cannot be read (``unread`` says why) nothing
        is decided and the view is stale, as while warming up.
        """
        f = self.settings.forecast
        warming = self.samples_seen < self.warmup_samples
        cluster = _NO_CLUSTER if read is None else read.view
        fc = self.forecast
        if self.bank.keys is not self._layout_keys:
            self._layout = NodeLayout.of(self.bank.keys)
            self._layout_keys = self.bank.keys
        horizon = self.bank.horizon
        by_forecast = not self.reactive and fc is not None and len(fc.keys) == len(current)
        if by_forecast and fc is not None:
            mean, upper = fc.mean, fc.quantile(f.decision_quantile)
        else:
            # Forecasts not trusted (or none yet): decide on the latest observation held flat.
            mean = upper = np.repeat(current[:, None], horizon, axis=1)
        pods = self._pod_index(read)
        table = node_table(
            self._layout,
            mean=mean,
            upper=upper,
            pods=pods,
            insights=insights,
            anomaly=self._abnormal,
            anomaly_score=self._abnormal_score,
            stale=self._unknown_to_kubernetes(cluster),
            step_seconds=self.step_seconds,
        )
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
        self._last_decisions = PolicyOutput()
        plan = stepped or self.reactive or cluster is not self._planned_cluster
        if not warming and not unread and plan:
            self._planned_cluster = cluster
            workloads = self._outlooks(fc, table, pods, by_forecast)
            self._last_decisions = self.policy.evaluate(now, table, cluster.pods, insights, (), workloads)
            self._publish(self._last_decisions)
        acc = self.accuracy
        self._generation += 1
        view = EngineView(
            generation=self._generation,
            created_at=now,
            scores=scores,
            forecast=fc,
            step_seconds=f.step_seconds,
            stale=warming or bool(unread),
            stale_reason=(
                f"warming up: {self.samples_seen}/{self.warmup_samples} steps"
                if warming
                else unread
                if unread
                else f"reactive: {self.mode_reason}"
                if self.reactive
                else ""
            ),
            reactive=self.reactive,
            mode_reason=self.mode_reason,
            skill=acc.skill if acc is not None else math.nan,
            mase=acc.mase if acc is not None else math.nan,
            coverage=acc.coverage if acc is not None else math.nan,
            index=dict(table.index),
            table=table,
            cluster=cluster,
            insights=insights,
            layout=self._layout,
            current=current,
        )
        self.view = view
        return view

    # ------------------------------------------------------------------ tuning and feedback

    def _unknown_to_kubernetes(self, cluster: ClusterView) -> bool | npt.NDArray[np.bool_]:
        """Nodes Prometheus still reports but the API server does not know (gone, or only in history).

        They are marked stale, so they score neutral and are never chosen as a migration target: a pod
        cannot be sent to a node that does not exist. Without a Kubernetes reader nothing is known either
        way, and every node with data counts.
        """
        if self.kube is None or not cluster.nodes:
            return False
        cached = self._unknown
        if cached is None or cached[0] is not cluster.nodes or cached[1] is not self._layout:
            # Once per node list and layout: a per-node membership test over 10,000 names each tick is not free.
            unknown = np.array([node not in cluster.nodes for node in self._layout.nodes], dtype=np.bool_)
            cached = self._unknown = (cluster.nodes, self._layout, unknown)
        return cached[2]

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
