"""The Prometheus adapter: instant answers as columns (bad values dropped and counted), history averaged
over each step with avg_over_time and fetched in chunks, and the step-mean accumulator."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np
import pytest

from apollo.adapters.prometheus import CHUNK_POINTS, PrometheusSource
from apollo.config import PrometheusSettings
from apollo.core.forecasting.cadence import StepMeans
from apollo.runtime.sources import SourceError


class Recorder:
    def __init__(self) -> None:
        self.instant: dict[str, list[dict[str, Any]]] = {}
        self.ranges: list[tuple[str, float, float, str]] = []

    def custom_query(self, query: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        if query not in self.instant:
            raise ConnectionError("refused")
        return self.instant[query]

    def custom_query_range(
        self, query: str, start_time: dt.datetime, end_time: dt.datetime, step: str, params: Any = None
    ) -> list[dict[str, Any]]:
        self.ranges.append((query, start_time.timestamp(), end_time.timestamp(), step))
        step_s = float(step.rstrip("s"))
        times = np.arange(start_time.timestamp(), end_time.timestamp() + 1e-6, step_s)
        return [{"metric": {"node": "n1"}, "values": [[t, str(t % 7)] for t in times]}]


def _source(prom: Recorder) -> PrometheusSource:
    return PrometheusSource(
        PrometheusSettings(url="http://127.0.0.1:1", queries={"cpu": "q_cpu", "memory": "q_mem"}), prom
    )


def test_latest_returns_columns_and_counts_what_it_drops() -> None:
    prom = Recorder()
    prom.instant["q_cpu"] = [
        {"metric": {"node": "a"}, "value": [1, "0.5"]},
        {"metric": {"node": "b"}, "value": [1, "NaN"]},
        {"metric": {"node": "c"}, "value": [1, "-1"]},
        {"metric": {"node": "d"}, "value": [1, "+Inf"]},
    ]
    prom.instant["q_mem"] = [
        {"metric": {"instance": "e:9100"}, "value": [1, "0.25"]},  # no node label: host of the instance
        {"metric": {"node": "f"}, "value": [1, "garbage"]},
    ]
    sample = _source(prom).latest()
    assert sample.columns["cpu"][0] == ["a"] and sample.columns["cpu"][1].tolist() == [0.5]
    assert sample.columns["memory"][0] == ["e"] and sample.columns["memory"][1].tolist() == [0.25]
    assert sample.dropped == 4 and sample.items() == {("a", "cpu"): 0.5, ("e", "memory"): 0.25}
    del prom.instant["q_mem"]
    partial = _source(prom).latest()
    assert "memory" in partial.failed_resources and len(partial) == 1
    prom.instant.clear()
    with pytest.raises(SourceError):
        _source(prom).latest()


def test_history_averages_each_step_and_fetches_in_chunks() -> None:
    prom = Recorder()
    end = dt.datetime.fromtimestamp(1_767_225_600, dt.UTC)
    points = CHUNK_POINTS + 10
    start = end - dt.timedelta(seconds=300 * (points - 1))
    history = _source(prom).history(start, end, 300.0, average_seconds=300.0)
    assert history.keys == [("n1", "cpu"), ("n1", "memory")] and history.values.shape == (2, points)
    queries = {q for q, *_ in prom.ranges}
    assert queries == {"avg_over_time((q_cpu)[300s:30s])", "avg_over_time((q_mem)[300s:30s])"}
    cpu_calls = [r for r in prom.ranges if "q_cpu" in r[0]]
    assert len(cpu_calls) == 2 and cpu_calls[0][2] < cpu_calls[1][1]  # two chunks, no overlap
    assert np.isfinite(history.values).all()
    plain = _source(Recorder()).history(start, end, 300.0)
    assert plain.values.shape[1] == points


def test_step_means_close_a_step_when_the_clock_enters_the_next() -> None:
    means = StepMeans(2)
    assert means.add(10, np.array([0.2, np.nan])) is None
    assert means.add(10, np.array([0.4, np.nan])) is None
    assert means.add(9, np.array([0.6, 1.0])) is None  # a clock set back counts towards the open step
    closed = means.add(11, np.array([0.9, 0.1]))
    assert closed is not None and closed[0] == 10
    assert closed[1][0] == pytest.approx(0.4) and closed[1][1] == pytest.approx(1.0)
    means.extend(1)
    closed = means.add(12, np.array([0.0, 0.0, 0.5]))
    assert closed is not None and closed[1].tolist()[:2] == pytest.approx([0.9, 0.1]) and math.isnan(closed[1][2])
