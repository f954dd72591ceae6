"""Scheduled tuning fetches history with query_range and adopts better parameters into the live bank."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np

from apollo.adapters.prometheus import PrometheusSource
from apollo.config import ApolloSettings, ForecastSettings, PrometheusSettings, TuningSettings
from apollo.core.forecasting.params import ForecastParams
from apollo.jobs.tuning import TuningJob
from apollo.runtime.engine import Engine
from apollo.runtime.reports import ReportStore


class HistoryProm:
    """query_range answers from a seeded random walk with level shifts: slow smoothing fits it badly."""

    def __init__(self, n_nodes: int, fail: bool = False) -> None:
        self.n_nodes = n_nodes
        self.fail = fail
        self.origin: float | None = None
        self.walks = np.zeros((n_nodes, 0))

    def custom_query(self, query: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return [{"metric": {"node": f"n{i}"}, "value": [0, "0.5"]} for i in range(self.n_nodes)]

    def custom_query_range(
        self, query: str, start_time: dt.datetime, end_time: dt.datetime, step: str, params: Any = None
    ) -> list[dict[str, Any]]:
        """The same walk whichever chunks the adapter asks for: generated once from the first start seen."""
        if self.fail:
            raise ConnectionError("refused")
        step_s = float(step.rstrip("s"))
        if self.origin is None:
            self.origin = start_time.timestamp()
            rng = np.random.default_rng(1)
            length = 5000
            walks = 0.5 + np.cumsum(rng.normal(0, 0.02, (self.n_nodes, length)), axis=1)
            walks[:, 300:] += 0.2  # a level shift the model must follow (mid-way through 10 h of minutes)
            self.walks = np.clip(walks + rng.normal(0, 0.005, walks.shape), 0, 1)
        first = round((start_time.timestamp() - self.origin) / step_s)
        n = int((end_time.timestamp() - start_time.timestamp()) // step_s) + 1
        t0 = start_time.timestamp()
        return [
            {
                "metric": {"node": f"n{i}"},
                "values": [[t0 + j * step_s, str(v)] for j, v in enumerate(self.walks[i, first : first + n])],
            }
            for i in range(self.n_nodes)
        ]


def _engine(prom: HistoryProm) -> Engine:
    settings = ApolloSettings(
        prometheus=PrometheusSettings(url="http://127.0.0.1:1", queries={"cpu": "cpu"}),
        forecast=ForecastSettings(
            step_seconds=60.0, horizon_minutes=5, season_minutes=0, smoothing=ForecastParams(alpha=0.02, beta=0.01)
        ),
        tuning=TuningSettings(lookback_hours=10.0),
    ).validate()
    return Engine(settings, PrometheusSource(settings.prometheus, prom), ReportStore(60))


def test_tuning_adopts_better_parameters_into_the_bank() -> None:
    engine = _engine(HistoryProm(8))
    engine.run_tick()
    job = TuningJob(engine)
    results = job.refit(engine.clock())
    result = results["cpu"]
    assert result.adopted, result.reason
    assert result.best_score < result.current_score
    assert result.params.alpha > 0.02
    assert engine.resource_params["cpu"] == result.params
    # The warning's k was evaluated on the same history against realised overloads and is in force.
    assert job.threshold is not None and job.threshold.events > 0
    assert engine.overload_steps == job.threshold.steps
    assert engine.policy.settings.consecutive_steps == job.threshold.steps


def test_tuning_keeps_parameters_when_history_is_unavailable() -> None:
    engine = _engine(HistoryProm(4, fail=True))
    job = TuningJob(engine)
    assert job.refit(engine.clock()) == {}
    assert "refused" in job.last_error and engine.resource_params == {}


def test_warm_start_replays_history_so_the_first_tick_is_trusted() -> None:
    cold = _engine(HistoryProm(3))
    assert cold.run_tick().stale and "warming up" in cold.view.stale_reason
    warm = _engine(HistoryProm(3))
    assert warm.warm_start() >= warm.warmup_samples
    view = warm.run_tick()
    assert not view.stale and view.scores is not None and len(view.scores.nodes) == 3


def test_warm_start_without_history_warms_up_live() -> None:
    engine = _engine(HistoryProm(2, fail=True))
    assert engine.warm_start() == 0
    assert engine.run_tick().stale
