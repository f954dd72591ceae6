"""The engine with a scripted metric source: fallback on skill (both ways), forced modes, step means,
warm start that keeps the season, forgotten series, and unknowns that stay unknown on the wire."""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from apollo.adapters.grpc.forecast import ForecastServicer, node_prediction
from apollo.adapters.grpc.wire import snapshot_message
from apollo.adapters.metrics import ApolloMetrics
from apollo.config import ApolloSettings, ForecastSettings, PrometheusSettings, TuningSettings
from apollo.jobs.tick import TickLoop
from apollo.runtime.engine import Engine
from apollo.runtime.reports import ReportStore
from apollo.runtime.sources import History, Sample, SourceError
from apollo_api.v1 import apollo_pb2 as pb

EPOCH = 1_767_225_600.0  # midnight UTC: steps and hourly buckets line up


class Script:
    """A MetricSource: `values` is the latest sample, `history` an optional function of the time grid."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], float] = {}
        self.history_fn: Callable[[np.ndarray, float], tuple[list[tuple[str, str]], np.ndarray]] | None = None

    def latest(self) -> Sample:
        return Sample(values=dict(self.values))

    def history(
        self, start: dt.datetime, end: dt.datetime, step_seconds: float, average_seconds: float = 0.0
    ) -> History:
        if self.history_fn is None:
            raise SourceError("no history")
        times = np.arange(start.timestamp(), end.timestamp() + 1e-6, step_seconds)
        keys, values = self.history_fn(times, average_seconds)
        return History(keys=keys, times=times, values=values)


class Clock:
    def __init__(self, at: float = EPOCH + 1.0) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at


def _engine(forecast: ForecastSettings, source: Script, clock: Clock, queries: tuple[str, ...] = ("cpu",)) -> Engine:
    settings = ApolloSettings(
        prometheus=PrometheusSettings(url="http://127.0.0.1:1", queries={q: q for q in queries}),
        forecast=forecast,
        tuning=TuningSettings(enabled=False),
    ).validate()
    return Engine(settings, source, ReportStore(600.0, clock=clock), clock=clock)


MINUTE_STEPS = ForecastSettings(
    step_seconds=60.0, tick_seconds=60.0, horizon_minutes=5, season_minutes=0, warmup_samples=0
)


def test_falls_back_when_the_forecast_does_not_beat_last_value_and_comes_back_when_it_does(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source, clock = Script(), Clock()
    engine = _engine(MINUTE_STEPS, source, clock)
    metrics = ApolloMetrics.create()
    loop = TickLoop(engine, metrics)
    rng = np.random.default_rng(3)
    nodes = [f"n{i}" for i in range(8)]
    level = rng.uniform(0.2, 0.6, len(nodes))

    def tick(values: np.ndarray) -> None:
        source.values = {(n, "cpu"): float(v) for n, v in zip(nodes, values, strict=True)}
        loop.run_once()
        clock.at += 60.0

    # Flat stretches and sudden steps: last value is right everywhere but at the steps, no forecast can win.
    caplog.set_level(logging.WARNING, logger="apollo.engine")
    for t in range(240):
        if t % 7 == 0:
            level = np.clip(level + rng.choice([-0.3, 0.3], len(nodes)), 0.05, 0.95)
        tick(level)
    view = engine.view
    assert view.reactive and view.skill >= 1.0
    assert "last value" in view.mode_reason and view.stale_reason.startswith("reactive:")
    assert metrics.registry.get_sample_value("apollo_reactive_mode") == 1.0
    assert metrics.registry.get_sample_value("apollo_forecast_skill_vs_last_value") == pytest.approx(view.skill)
    assert any("forecast mode changed" in r.message and getattr(r, "mode", "") == "reactive" for r in caplog.records)
    snapshot = snapshot_message(view, pb.NodeScoreSnapshotRequest(), 5)
    assert snapshot.mode == pb.FORECAST_MODE_REACTIVE and "last value" in snapshot.stale_reason
    cluster = ForecastServicer(engine).GetClusterPrediction(pb.ClusterPredictionRequest(), None)  # type: ignore[arg-type]
    assert cluster.aggregated_prediction.forecast_mode == pb.FORECAST_MODE_REACTIVE
    assert "last value" in cluster.aggregated_prediction.mode_reason
    assert cluster.aggregated_prediction.model_accuracy <= 0.0  # 1 - skill: no better than last value
    # Reactive decisions read current load held flat.
    table = view.table
    assert table is not None
    current = {n: source.values[(n, "cpu")] for n in nodes}
    assert all(np.allclose(table.cpu_upper[table.index[n]], current[n]) for n in nodes)

    # A steady level under noise: smoothing beats repeating each sample's noise; the engine comes back.
    caplog.clear()
    steady = rng.uniform(0.2, 0.6, len(nodes))
    for _ in range(500):
        tick(steady + 0.05 * rng.standard_normal(len(nodes)))
        if not engine.view.reactive:
            break
    view = engine.view
    assert not view.reactive and view.skill < 0.95 and view.mode_reason == ""
    assert metrics.registry.get_sample_value("apollo_reactive_mode") == 0.0
    assert any(getattr(r, "mode", "") == "predictive" for r in caplog.records)
    pred = node_prediction(engine, view, "n0", 5, 0.9)
    assert pred is not None and pred.forecast_mode == pb.FORECAST_MODE_PREDICTIVE and 0 < pred.model_accuracy < 1


def test_forced_reactive_decides_on_current_load_from_the_start() -> None:
    source, clock = Script(), Clock()
    forced = ForecastSettings(
        step_seconds=60.0, tick_seconds=60.0, horizon_minutes=5, season_minutes=0, warmup_samples=0, mode="reactive"
    )
    engine = _engine(forced, source, clock)
    for value in (0.2, 0.3, 0.9):
        source.values = {("a", "cpu"): value}
        engine.run_tick()
        clock.at += 60.0
    view = engine.view
    assert view.reactive and view.mode_reason == "forced by forecast.mode"
    assert view.table is not None and np.allclose(view.table.cpu_upper[0], 0.9)


def test_ticks_between_steps_feed_the_step_mean() -> None:
    source, clock = Script(), Clock(EPOCH + 1.0)
    five = ForecastSettings(tick_seconds=30.0, step_seconds=300.0, horizon_minutes=30, season_minutes=0)
    engine = _engine(five, source, clock)
    assert engine.aggregating and engine.bank.horizon == 6
    for k in range(10):  # one step's ticks: no model step yet
        source.values = {("a", "cpu"): 0.1 * (k + 1)}
        engine.run_tick()
        assert not engine.stats.stepped
        clock.at += 30.0
    source.values = {("a", "cpu"): 0.9}
    engine.run_tick()  # the first tick of the next step closes the previous one
    assert engine.stats.stepped and engine.samples_seen == 1
    assert engine.forecast is not None and engine.forecast.mean[0, 0] == pytest.approx(0.55)
    assert engine.view.current[0] == pytest.approx(0.9)  # the view still shows the latest sample


def _daily(times: np.ndarray, average: float, seasonal: bool, rng: np.random.Generator) -> np.ndarray:
    centre = times - average / 2 if average else times
    base = 0.4 + (0.2 * np.sin(2 * np.pi * centre / 86400.0) if seasonal else 0.0)
    return base + 0.01 * rng.standard_normal(times.size)


def test_warm_start_keeps_the_season_at_the_shipped_settings() -> None:
    source, clock = Script(), Clock(EPOCH + 3 * 86400.0 + 1.0)
    rng = np.random.default_rng(5)
    keys = [(f"s{i}", "cpu") for i in range(4)] + [(f"f{i}", "cpu") for i in range(4)]

    def history(times: np.ndarray, average: float) -> tuple[list[tuple[str, str]], np.ndarray]:
        return keys, np.vstack([_daily(times, average, key[0].startswith("s"), rng) for key in keys])

    source.history_fn = history
    warm = _engine(ForecastSettings(), source, clock)
    replayed = warm.warm_start()
    assert replayed == warm.settings.forecast.warm_start_steps
    seasonal = dict(zip(warm.bank.keys, warm.bank.seasonal.tolist(), strict=True))
    assert all(seasonal[k] for k in keys[:4]) and not any(seasonal[k] for k in keys[4:])
    # The season is used: the forecast bends with the day (rising in the morning: t = 0 is midnight).
    fc = warm.forecast
    assert fc is not None
    rows = [warm.bank.keys.index(k) for k in keys[:4]]
    assert (np.diff(fc.mean[rows], axis=1) > 0).all()
    cold = _engine(ForecastSettings(), Script(), clock)
    assert cold.warm_start() == 0 and not cold.bank.seasonal.any()


def test_missing_series_keep_their_state_then_are_forgotten() -> None:
    source, clock = Script(), Clock()
    forgetful = ForecastSettings(
        step_seconds=60.0, tick_seconds=60.0, horizon_minutes=5, season_minutes=0, forget_after_minutes=3
    )
    engine = _engine(forgetful, source, clock)
    source.values = {("a", "cpu"): 0.5, ("b", "cpu"): 0.4}
    engine.run_tick()
    source.values = {("a", "cpu"): 0.5}
    for _ in range(3):
        clock.at += 60.0
        engine.run_tick()
        assert ("b", "cpu") in engine.bank  # a gap, not a departure
    clock.at += 61.0
    engine.run_tick()
    assert ("b", "cpu") not in engine.bank and len(engine.bank) == 1


def test_unknown_resources_are_nan_on_the_wire_and_left_out_of_cluster_means() -> None:
    source, clock = Script(), Clock()
    engine = _engine(MINUTE_STEPS, source, clock, queries=("cpu", "memory"))
    for _ in range(4):
        source.values = {("a", "cpu"): 0.2, ("a", "memory"): 0.3, ("b", "cpu"): 0.6, ("b", "memory"): 0.5}
        source.values[("c", "memory")] = 0.7  # c reports no CPU at all
        engine.run_tick()
        clock.at += 60.0
    c = node_prediction(engine, engine.view, "c", 5, 0.9)
    assert c is not None
    assert all(math.isnan(p.cpu_usage) and p.memory_usage == pytest.approx(0.7) for p in c.predicted_usage)
    reply: Any = ForecastServicer(engine).GetClusterPrediction(pb.ClusterPredictionRequest(), None)  # type: ignore[arg-type]
    first = reply.aggregated_prediction.predicted_usage[0]
    assert first.cpu_usage == pytest.approx(0.4)  # (0.2 + 0.6) / 2: c's unknown CPU is not a zero
    assert first.memory_usage == pytest.approx(0.5)
    assert math.isnan(first.io_usage)


def test_workload_outlooks_follow_each_new_forecast_with_pods_on_the_nodes() -> None:
    from apollo.core.domain import ClusterView, NodeCapacity, RunningPod
    from apollo.runtime.sources import ClusterRead

    class Cluster:
        def __init__(self) -> None:
            pods = (RunningPod("ml", "w-1", "a", "Deployment", "w", cpu_request_cores=1.0),)
            self.view = ClusterView(nodes={"a": NodeCapacity(8.0, 32 * 2**30)}, pods=pods)

        def read(self) -> ClusterRead:
            return ClusterRead(self.view)

    source, clock = Script(), Clock()
    settings = ApolloSettings(
        prometheus=PrometheusSettings(url="http://127.0.0.1:1", queries={"cpu": "cpu", "memory": "memory"}),
        forecast=MINUTE_STEPS,
        tuning=TuningSettings(enabled=False),
    ).validate()
    engine = Engine(settings, source, ReportStore(600.0, clock=clock), clock=clock, kube=Cluster())
    rng = np.random.default_rng(2)
    uppers = []
    for _ in range(30):
        source.values = {("a", "cpu"): 0.5 + 0.05 * rng.standard_normal(), ("a", "memory"): 0.4}
        engine.run_tick()
        clock.at += 60.0
        assert engine._workloads is not None
        uppers.append(engine._workloads.outlooks[0].cpu_upper.copy())
    # Each model step brings a new forecast, and the workload's apportioned use follows it.
    assert len({round(float(u[0]), 6) for u in uppers[-10:]}) > 1
