"""Live forecast accuracy: MASE against seasonal naive and interval coverage, per series and overall.

Why live: the engine must notice when its forecasts stop being useful (a workload changed character, a
metric's units changed) and fall back to reactive mode. Both figures are exponentially weighted with an
effective window of ``accuracy_window`` ticks, so they track the recent past at O(n) cost per tick.

Definitions (the same as the offline :mod:`apollo.core.forecasting.backtest` and ``bench/forecast.py`` use):

* MASE = mean |actual - forecast| over every lead time h = 1..H whose target arrived, divided by the mean
  |y_t - y_{t-m}| of the seasonal naive forecast (naive |y_t - y_{t-1}| when the bank has no season,
  season_length == 1). Below 1 means better than "same time yesterday". The naive errors are accumulated
  over the same window, so the figure adapts when the series gets noisier for both methods.
* Coverage = share of actuals inside the outermost quantile interval (lowest..highest level, e.g. the 90 %
  interval for quantiles 0.05/0.95). The live tracker uses the interval offsets current at the time the
  actual arrives (at most ``refresh_every`` + H ticks newer than the forecast's own), and always before the
  new error enters the error buffer, so it is out of sample.

Aggregates are plain means over the series that have both figures, exported as floats.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from apollo.core.forecasting.arrays import BoolArray, Float32Array, FloatArray, IntArray, grow, select


@dataclass(frozen=True, slots=True)
class AccuracyReport:
    """Accuracy over the recent window; aggregates are NaN until some series has data.

    Attributes:
        mase: mean over series of per-series MASE (lower is better; < 1 beats seasonal naive).
        coverage: mean over series of the share of actuals inside the outermost interval.
        nominal_coverage: what ``coverage`` should be (upper level - lower level).
        series_scored: series contributing to the aggregates.
        keys, series_mase, series_coverage: per-series figures aligned with ``keys`` (NaN = not enough data).
    """

    mase: float
    coverage: float
    nominal_coverage: float
    series_scored: int
    keys: tuple[Hashable, ...]
    series_mase: FloatArray
    series_coverage: FloatArray

    def degraded(self, max_mase: float = 1.0, coverage_tolerance: float = 0.1) -> bool:
        """True when forecasts are worse than seasonal naive or intervals are badly calibrated."""
        if self.series_scored == 0:
            return False
        return bool(self.mase > max_mase or abs(self.coverage - self.nominal_coverage) > coverage_tolerance)


class AccuracyTracker:
    """Exponentially weighted accumulators behind :class:`AccuracyReport`."""

    def __init__(self, n_series: int, season_length: int, window: int) -> None:
        self.season_length = season_length
        self.decay = 1.0 - 1.0 / window
        self.last_season: Float32Array = np.full((season_length, n_series), np.nan, dtype=np.float32)
        self.err_sum: FloatArray = np.zeros(n_series)
        self.err_w: FloatArray = np.zeros(n_series)
        self.naive_sum: FloatArray = np.zeros(n_series)
        self.naive_w: FloatArray = np.zeros(n_series)
        self.cover_sum: FloatArray = np.zeros(n_series)

    def record(
        self,
        tick: int,
        actual: FloatArray,
        errors: FloatArray,
        valid: BoolArray,
        lower_offset: FloatArray,
        upper_offset: FloatArray,
    ) -> None:
        """Score this tick's h-step errors ``[H, n]`` and the seasonal naive error of ``actual``."""
        n_valid = valid.sum(axis=0)
        has = n_valid > 0
        per = 1.0 / np.maximum(n_valid, 1)
        abs_err = np.where(valid, np.abs(errors), 0.0).sum(axis=0) * per
        inside = (errors >= lower_offset) & (errors <= upper_offset)
        inside &= valid
        cover = inside.sum(axis=0) * per
        d = self.decay
        self.err_sum = np.where(has, d * self.err_sum + (1 - d) * abs_err, self.err_sum)
        self.cover_sum = np.where(has, d * self.cover_sum + (1 - d) * cover, self.cover_sum)
        self.err_w = np.where(has, d * self.err_w + (1 - d), self.err_w)

        slot = self.last_season[tick % self.season_length]
        naive_err = np.abs(actual - slot)
        ok = ~np.isnan(naive_err)
        self.naive_sum = np.where(ok, d * self.naive_sum + (1 - d) * naive_err, self.naive_sum)
        self.naive_w = np.where(ok, d * self.naive_w + (1 - d), self.naive_w)
        slot[...] = actual

    def report(self, keys: tuple[Hashable, ...], nominal: float, min_weight: float = 0.05) -> AccuracyReport:
        with np.errstate(invalid="ignore", divide="ignore"):
            mae = self.err_sum / self.err_w
            naive = self.naive_sum / self.naive_w
            mase = np.where((self.err_w > min_weight) & (self.naive_w > min_weight), mae / naive, np.nan)
            coverage = np.where(self.err_w > min_weight, self.cover_sum / self.err_w, np.nan)
        mase = np.where(np.isfinite(mase), mase, np.nan)
        scored = ~np.isnan(mase) & ~np.isnan(coverage)
        count = int(scored.sum())
        return AccuracyReport(
            mase=float(mase[scored].mean()) if count else float("nan"),
            coverage=float(coverage[scored].mean()) if count else float("nan"),
            nominal_coverage=nominal,
            series_scored=count,
            keys=keys,
            series_mase=mase,
            series_coverage=coverage,
        )

    def extend(self, count: int) -> None:
        self.last_season = grow(self.last_season, count, np.nan, axis=1)
        for name in ("err_sum", "err_w", "naive_sum", "naive_w", "cover_sum"):
            setattr(self, name, grow(getattr(self, name), count, 0.0))

    def take(self, rows: IntArray) -> None:
        self.last_season = select(self.last_season, rows, axis=1)
        for name in ("err_sum", "err_w", "naive_sum", "naive_w", "cover_sum"):
            setattr(self, name, select(getattr(self, name), rows))


def seasonal_naive_scale(history: FloatArray, season_length: int) -> FloatArray:
    """Per-series mean |y_t - y_{t-m}| over ``history`` ``[n, T]`` (NaN pairs skipped): the MASE scale."""
    lag = max(season_length, 1)
    diff = np.abs(history[:, lag:] - history[:, :-lag])
    ok = ~np.isnan(diff)
    with np.errstate(invalid="ignore", divide="ignore"):
        result: FloatArray = np.where(ok, diff, 0.0).sum(axis=1) / ok.sum(axis=1)
    return result


def pinball_loss(actual: FloatArray, predicted: FloatArray, level: float) -> FloatArray:
    """Quantile (pinball) loss of ``predicted`` as the ``level`` quantile; NaN where either is NaN."""
    diff = actual - predicted
    return np.maximum(level * diff, (level - 1.0) * diff)


def mean_over_series(per_series: Sequence[float] | FloatArray) -> float:
    """Mean of the finite entries (NaN when none): how every aggregate here is formed."""
    arr = np.asarray(per_series, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else float("nan")
