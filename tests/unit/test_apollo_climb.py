"""The e2e climb (tests/e2e/test_apollo_prediction.py) offline: the engine's own logic over many seeds.

A node at 15 % CPU climbs 0.8 points a second under measurement noise, beside a steady node at 78 %;
ticks of 1 s, model steps of 2 s, a 1-minute horizon, everything else as shipped, warm-started from
110 s of flat history as the e2e test does through Prometheus. The end-to-end test runs the chain once;
this runs the engine over several noise draws, which is where a race between the overload warning and
the fallback to reactive mode showed (it fell back in 2 of 8 draws before it warned, then warned only at
0.81-0.85 load, what a plain threshold would do).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from apollo.config import ApolloSettings, ForecastSettings, PolicySettings, PrometheusSettings, TuningSettings
from apollo.core.domain import NodeCapacity, NodeInsight
from apollo.runtime.engine import Engine
from apollo.runtime.reports import ReportStore
from apollo.runtime.sources import History, Sample

EPOCH = 1_767_225_600.0
THRESHOLD, STEADY, START, SLOPE = 0.85, 0.78, 0.15, 0.008
NOISE, STEADY_NOISE, SETTLE_S, SCRAPE_S = 0.03, 0.01, 110.0, 1.0
KEYS = [("rising", "cpu"), ("steady", "cpu"), ("rising", "memory"), ("steady", "memory")]


class ClimbSource:
    """What Prometheus would answer: the last scrape of a noisy exporter, and step means of the past."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.now = EPOCH
        self.climb_at: float | None = None
        self.scrapes: dict[float, tuple[float, float]] = {}

    def load(self, t: float) -> float:
        return START + SLOPE * max(0.0, t - self.climb_at) if self.climb_at is not None else START

    def scrape(self, t: float) -> tuple[float, float]:
        at = np.floor(t / SCRAPE_S) * SCRAPE_S
        if at not in self.scrapes:
            rising = min(self.load(at), 1.0) + NOISE * self.rng.standard_normal()
            steady = STEADY + STEADY_NOISE * self.rng.standard_normal()
            self.scrapes[at] = (float(np.clip(rising, 0, 1)), float(np.clip(steady, 0, 1)))
        return self.scrapes[at]

    def latest(self) -> Sample:
        rising, steady = self.scrape(self.now)
        return Sample(values=dict(zip(KEYS, (rising, steady, 0.3, 0.3), strict=True)))

    def history(
        self, start: dt.datetime, end: dt.datetime, step_seconds: float, average_seconds: float = 0.0
    ) -> History:
        times = np.arange(start.timestamp(), end.timestamp() + 1e-6, step_seconds)
        values = np.full((len(KEYS), times.size), np.nan)
        for i, t in enumerate(times):
            points = [p for p in np.arange(t - (average_seconds or step_seconds) + 0.1, t + 1e-6, SCRAPE_S)]
            points = [p for p in points if EPOCH - SETTLE_S <= p <= self.now]
            if points:
                rising, steady = np.mean([self.scrape(p) for p in points], axis=0)
                values[:, i] = (rising, steady, 0.3, 0.3)
        return History(keys=list(KEYS), times=times, values=values)


def _climb(seed: int, mode: str) -> tuple[float | None, bool]:
    """(load of the rising node when it was first flagged, or None; whether reactive mode was ever on before)."""
    source = ClimbSource(seed)
    settings = ApolloSettings(
        prometheus=PrometheusSettings(
            url="http://127.0.0.1:1", queries={"cpu": "cpu", "memory": "memory"}, stale_after_seconds=6
        ),
        forecast=ForecastSettings(step_seconds=2.0, tick_seconds=1.0, horizon_minutes=1, season_minutes=0, mode=mode),
        tuning=TuningSettings(enabled=False),
        policy=PolicySettings(overload_threshold=THRESHOLD),
    ).validate()
    reports = ReportStore(600.0, clock=lambda: source.now)
    for node in ("rising", "steady"):
        reports.put_insight(NodeInsight(node, allocatable=NodeCapacity(8.0, 32 * 2**30, 0)))
    engine = Engine(settings, source, reports, clock=lambda: source.now)
    assert engine.warm_start() > 40
    for _ in range(8):  # the stack comes up, the extender takes its first snapshot
        source.now += 1.0
        engine.run_tick()
    source.climb_at = source.now
    went_reactive = False
    while source.load(source.now) < 1.0:
        source.now += 1.0
        view = engine.run_tick()
        assert view.scores is not None and not view.stale
        if view.scores.overload[view.scores.nodes.index("rising")]:
            assert not view.scores.overload[view.scores.nodes.index("steady")]
            return source.load(source.now), went_reactive
        went_reactive |= view.reactive
    return None, went_reactive


@pytest.mark.parametrize("seed", range(6))
def test_the_shipped_engine_warns_of_a_climb_well_below_the_threshold_without_falling_back(seed: int) -> None:
    load, went_reactive = _climb(seed, "auto")
    assert not went_reactive
    assert load is not None and load < THRESHOLD - 0.15


@pytest.mark.parametrize("seed", range(3))
def test_forced_reactive_warns_only_once_current_load_is_at_the_threshold(seed: int) -> None:
    load, _ = _climb(seed, "reactive")
    assert load is not None and load > THRESHOLD - 3 * NOISE
