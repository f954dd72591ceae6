"""The whole engine tick at the shipped settings, at 10,000 nodes x 5 resources.

What runs is :class:`apollo.runtime.engine.Engine` with ``ApolloSettings()`` as shipped (30 s ticks,
5-minute model steps, 30-minute horizon = 6 steps, daily season = 288 steps, every default query):

* warm start through the engine's own path: hourly means of three days seed the periodicity test, ten
  hours of 5-minute means are replayed, every series is tested for a season (timed, reported);
* then live ticks every 30 s of (fake) clock, each one ``Engine.run_tick``: the Prometheus adapter
  parsing five instant-query answers (50,000 series, prebuilt as the JSON decoder returns them; the HTTP
  round trips and JSON decoding are not included), the sample aligned to the bank, the step means, on a
  step boundary the forecaster's update and forecast, the node table, snapshot scores, overload flags and
  every planner of the policy over the cluster view;
* the cluster view comes from APOLLO's real Kubernetes reader (its list-then-watch loops and cache, see
  :mod:`bench.forecast.cluster`): first a listing of every node and ``pods_per_node`` pods per node from the
  bytes the API server would send (``kube_initial_sync_s``, and a relist of the unchanged collection,
  ``kube_relist_s``, which the watch does whenever it expires), then before each tick that tick's watch
  stream, ``pod_events_per_tick`` events (pods bound, started, terminating, deleted). Each timed tick
  includes parsing and converting those events, the new view, the pod index update and the policy's
  re-planning on the changed view (``kube_events_ms_p50`` is the events' part alone). The HTTP round trips
  are not included.

Reported: the median and p90 of every tick at the shipped cadence (``tick_ms_p50``: nine ticks in ten
fall between model steps), of the ticks that close a model step alone (``tick_step_ms_p50``, the
expensive ones: forecaster, new forecasts, every planner), of the ticks in between, of the forecaster's
own update + forecast inside the stepping ticks (the figure the old benchmark called "tick") and of the
Prometheus adapter's parsing; the forecaster's state (``state_mb``, the arrays' bytes) and the
process' resident memory growth while the engine was built and run.
"""

from __future__ import annotations

import datetime as dt
import gc
import statistics
import time
import warnings
from typing import Any

import numpy as np

from apollo.adapters.kubernetes import KubeReader
from apollo.adapters.prometheus import PrometheusSource
from apollo.config import ApolloSettings
from apollo.core.forecasting.arrays import FloatArray
from apollo.core.forecasting.synthetic import cluster_traces
from apollo.runtime.engine import Engine
from apollo.runtime.reports import ReportStore
from apollo.runtime.sources import History
from bench.forecast.cluster import PodChurn, SyntheticCluster, WatchResponse
from bench.forecast.common import DAY, SHIPPED, pct, say
from common.watch import watch_events

EPOCH = 1_767_225_600.0  # 2026-01-01T00:00:00Z, a whole day: step and bucket boundaries line up
WARM_DAYS = 3


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class FakeProm:
    """Instant-query answers as prometheus_api_client returns them (decoded JSON), prebuilt per tick."""

    def __init__(self, resources: tuple[str, ...]) -> None:
        self.resources = resources
        self.answers: dict[str, list[dict[str, Any]]] = {}

    def prepare(self, nodes: list[str], values: FloatArray, at: float) -> None:
        """``values`` ``[n_nodes, n_resources]``; one answer per resource query."""
        for j, resource in enumerate(self.resources):
            column = values[:, j].tolist()
            self.answers[SHIPPED.prometheus.queries[resource]] = [
                {"metric": {"node": node}, "value": [at, repr(v)]} for node, v in zip(nodes, column, strict=True)
            ]

    def custom_query(self, query: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return self.answers[query]

    def custom_query_range(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        raise NotImplementedError("history comes from BenchSource")


class BenchSource:
    """The engine's MetricSource: latest() through the real Prometheus adapter, history() from the traces."""

    def __init__(
        self, prom: PrometheusSource, keys: list[tuple[str, str]], values: np.ndarray[Any, Any], t0: float
    ) -> None:
        self.prom = prom
        self.keys = keys
        self.values = values  # [n_series, steps] 5-minute means, column j = the step ending at t0 + (j+1)*step
        self.t0 = t0

    def latest(self) -> Any:
        return self.prom.latest()

    def history(
        self, start: dt.datetime, end: dt.datetime, step_seconds: float, average_seconds: float = 0.0
    ) -> History:
        step = SHIPPED.forecast.step_seconds
        times = np.arange(start.timestamp(), end.timestamp() + 1e-6, step_seconds)
        per = max(1, round(step_seconds / step))
        out = np.full((len(self.keys), times.size), np.nan)
        for i, t in enumerate(times):
            last = round((t - self.t0) / step) - 1  # the step ending at t
            first = last - per + 1
            if first >= 0 and last < self.values.shape[1]:
                with warnings.catch_warnings():  # a gap across a whole bucket is a NaN mean, as in Prometheus
                    warnings.simplefilter("ignore", RuntimeWarning)
                    out[:, i] = (
                        np.nanmean(self.values[:, first : last + 1], axis=1) if per > 1 else self.values[:, last]
                    )
        return History(keys=list(self.keys), times=times, values=out)


def _sync(reader: KubeReader) -> float:
    """Both list-then-watch rounds (the listings' bytes parsed and converted) and the first view; seconds."""
    t0 = time.perf_counter()
    for watch in reader.watches:
        watch.run_once()
    if reader.read() is None:
        raise RuntimeError("the reader did not sync from the listings")
    return time.perf_counter() - t0


def _feed(reader: KubeReader, stream: bytes) -> int:
    """One tick's watch stream through the pod watch, as its thread would take it (parse, convert, cache)."""
    pods = reader.watches[1]
    count = 0
    for event_type, obj in watch_events(WatchResponse(lines=(stream,)), lambda: False):
        pods.on_event(event_type, obj)
        count += 1
    return count


def kube_reader(
    node_names: list[str], pods_per_node: int, seed: int, reports: ReportStore
) -> tuple[KubeReader, SyntheticCluster, dict[str, Any]]:
    """APOLLO's Kubernetes reader synced from a synthetic cluster's listings, and what that cost."""
    cluster = SyntheticCluster(node_names, pods_per_node, seed)
    api = cluster.api()
    reader = KubeReader(api, reports.signatures)
    gc.collect()
    rss0 = _rss_mb()
    sync_s = _sync(reader)
    rss1 = _rss_mb()
    t0 = time.perf_counter()
    reader.watches[1].run_once()  # the watch expired: the same pods listed again, nothing changed
    relist_s = time.perf_counter() - t0
    return (
        reader,
        cluster,
        {
            "kube_listing_mb": (len(api.bodies["nodes"]) + len(api.bodies["pods"])) / 2**20,
            "kube_initial_sync_s": sync_s,
            "kube_relist_s": relist_s,
            "kube_sync_rss_growth_mb": rss1 - rss0,
        },
    )


def bench_ticks(
    nodes: int, steps_timed: int, seed: int, pods_per_node: int, pod_events_per_tick: int = 40
) -> dict[str, Any]:
    settings = ApolloSettings().validate()
    f = settings.forecast
    resources = tuple(settings.prometheus.queries)
    ticks_per_step = round(f.step_seconds / f.tick_interval)
    live_steps = steps_timed + 1
    total_steps = WARM_DAYS * DAY + live_steps
    t0 = time.perf_counter()
    values = np.empty((nodes * len(resources), total_steps), dtype=np.float32)
    chunk = 1000
    for first in range(0, nodes, chunk):
        count = min(chunk, nodes - first)
        tr = cluster_traces(count, total_steps / DAY, resources=resources, seed=seed + first)
        values[first * len(resources) : (first + count) * len(resources)] = tr.values
    gen_s = time.perf_counter() - t0
    node_names = [f"node-{i:05d}" for i in range(nodes)]
    keys = [(node, r) for node in node_names for r in resources]
    start = EPOCH - WARM_DAYS * DAY * f.step_seconds
    now = [EPOCH]

    rss0 = _rss_mb()
    prom = FakeProm(resources)
    source = BenchSource(PrometheusSource(settings.prometheus, prom), keys, values, start)
    reports = ReportStore(600.0, clock=lambda: now[0])
    kube, cluster, kube_figures = kube_reader(node_names, pods_per_node, seed, reports)
    churn = PodChurn(cluster, pod_events_per_tick)
    engine = Engine(settings, source, reports, clock=lambda: now[0], kube=kube)
    t0 = time.perf_counter()
    replayed = engine.warm_start()
    warm_s = time.perf_counter() - t0
    seasonal = float(engine.bank.seasonal.mean())

    # Time the forecaster inside the engine's own stepping ticks (the same run's baseline).
    bank_ms: list[float] = []
    model_step = engine._model_step

    def timed_model_step(step_values: FloatArray, step: int) -> None:
        a = time.perf_counter()
        model_step(step_values, step)
        bank_ms.append((time.perf_counter() - a) * 1e3)

    engine._model_step = timed_model_step  # type: ignore[method-assign,assignment]
    rng = np.random.default_rng(seed + 1)
    stepping: list[float] = []
    between: list[float] = []
    parse_ms: list[float] = []
    events_ms: list[float] = []
    latest = source.prom.latest

    def timed_latest() -> Any:
        a = time.perf_counter()
        out = latest()
        parse_ms.append((time.perf_counter() - a) * 1e3)
        return out

    source.prom.latest = timed_latest  # type: ignore[method-assign]
    gc.collect()
    warm_col = WARM_DAYS * DAY
    for s in range(live_steps):
        means = values[:, warm_col + s].astype(np.float64).reshape(nodes, len(resources))
        for k in range(ticks_per_step):
            now[0] = EPOCH + s * f.step_seconds + k * f.tick_interval + 1.0
            sample = np.clip(means + rng.normal(0.0, 0.01, means.shape), 0.0, 1.0)
            prom.prepare(node_names, np.nan_to_num(sample, nan=0.0), now[0])
            stream = churn.tick()
            a = time.perf_counter()
            _feed(kube, stream)
            b = time.perf_counter()
            engine.run_tick()
            ms = (time.perf_counter() - a) * 1e3
            if s > 0:
                events_ms.append((b - a) * 1e3)
            if engine.stats.stepped and s > 0:
                stepping.append(ms)
            elif s > 0:
                between.append(ms)
    rss1 = _rss_mb()
    view = engine.view
    every = stepping + between
    result = {
        "series": len(engine.bank),
        "nodes": nodes,
        "pods": len(view.cluster.pods),
        "pod_events_per_tick": churn.events_per_tick,
        "tick_ms_p50": statistics.median(every),
        "tick_ms_p90": pct(every, 90),
        "tick_step_ms_p50": statistics.median(stepping),
        "tick_step_ms_p90": pct(stepping, 90),
        "tick_between_steps_ms_p50": statistics.median(between),
        "prometheus_parse_ms_p50": statistics.median(parse_ms),
        "kube_events_ms_p50": statistics.median(events_ms),
        **kube_figures,
        "bank_update_forecast_ms_p50": statistics.median(bank_ms[1:] or bank_ms),
        "stepping_ticks_timed": len(stepping),
        "ticks_timed": len(stepping) + len(between),
        "state_mb": engine.bank.nbytes / 2**20,
        "engine_rss_growth_mb": rss1 - rss0,
        "warm_start_s": warm_s,
        "warm_start_steps_replayed": replayed,
        "seasonal_share_after_warm_start": seasonal,
        "mode": "reactive" if view.reactive else "predictive",
        "overloaded_nodes_last_tick": int(view.scores.overload.sum()) if view.scores is not None else 0,
        "decisions_last_tick": len(engine.stats.decisions.decisions),
    }
    say(
        f"[tick] whole engine tick, shipped settings ({f.tick_interval:g}s ticks, {f.step_seconds:g}s steps, "
        f"H={f.horizon_steps}, season {engine.bank_config.season_length}): {result['series']} series ({nodes} nodes x "
        f"{len(resources)}), {result['pods']} pods from the Kubernetes reader ({result['kube_listing_mb']:.0f} MB of "
        f"listings synced in {result['kube_initial_sync_s']:.1f}s, process grew "
        f"{result['kube_sync_rss_growth_mb']:.0f} MB; a relist {result['kube_relist_s']:.1f}s) with "
        f"{churn.events_per_tick} pod events per tick; generated in {gen_s:.0f}s; warm start {warm_s:.1f}s "
        f"({replayed} steps replayed, {seasonal:.0%} seasonal right after); every tick p50 "
        f"{result['tick_ms_p50']:.1f} ms (p90 {result['tick_ms_p90']:.1f}); the 1 in {ticks_per_step} that closes a "
        f"model step p50 {result['tick_step_ms_p50']:.1f} ms (p90 {result['tick_step_ms_p90']:.1f}; the forecaster's "
        f"update+forecast inside it {result['bank_update_forecast_ms_p50']:.1f} ms, the same run's baseline), the "
        f"others p50 {result['tick_between_steps_ms_p50']:.1f} ms; parsing Prometheus' five answers "
        f"{result['prometheus_parse_ms_p50']:.1f} ms and the pod events {result['kube_events_ms_p50']:.1f} ms of each "
        f"tick; state {result['state_mb']:.0f} MB, process grew "
        f"{result['engine_rss_growth_mb']:.0f} MB"
    )
    return result
