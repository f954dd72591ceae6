"""Live forecast accuracy: skill against last value, MASE against seasonal naive, interval coverage.

Why live: the engine must notice when its forecasts stop being useful (a workload changed character, a
metric's units changed) and fall back to reactive mode. All figures are exponentially weighted with an
effective window of ``accuracy_window`` ticks, so they track the recent past at O(n) cost per tick.

Definitions (the same as the offline :mod:`apollo.core.forecasting.backtest` and ``bench.forecast`` use):

* Skill = the published forecast's mean absolute error over every lead time h = 1..H whose target
  arrived, divided by the mean absolute error of repeating the last observed value, **on the same
  samples** (same targets, same lead times). Below 1 the forecast beats doing nothing clever; this is the
  figure the engine's fallback reads, because at a 30-minute horizon last value is the baseline a
  forecast must beat to be worth acting on. Aggregated as a ratio of sums over the series whose
  last-value error is above ``min_error`` (a series that never moves is no evidence either way).
* MASE = the same mean absolute error divided by the mean |y_t - y_{t-m}| of the seasonal naive
  forecast (naive |y_t - y_{t-1}| when the bank has no season, season_length == 1). Kept for
  comparison with the literature; it is a weak yardstick at short horizons, so nothing decides on it.
* Coverage = share of actuals inside the outermost quantile interval (lowest..highest level, e.g. the 90 %
  interval for quantiles 0.05/0.95). The live tracker uses the interval offsets current at the time the
  actual arrives (at most ``refresh_every`` + H ticks newer than the forecast's own), and always before the
  new error enters the error buffer, so it is out of sample.

Unknown stays unknown: every aggregate is NaN until some series has data, never 0.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from apollo.core.forecasting.arrays import BoolArray, Float32Array, FloatArray, IntArray, grow, select

_ALL = slice(None)
MIN_ERROR = 1e-6  # last-value MAE below this (units of the series) = the series did not move: no evidence


@dataclass(frozen=True, slots=True)
class AccuracyReport:
    """Accuracy over the recent window; aggregates are NaN until some series has data.

    Attributes:
        skill: sum over series of the forecast's MAE / sum of last value's MAE on the same samples
            (< 1 beats last value). NaN when no series moved enough to tell.
        mase: mean over series of per-series MASE (lower is better; < 1 beats seasonal naive).
        coverage: mean over series of the share of actuals inside the outermost interval.
        nominal_coverage: what ``coverage`` should be (upper level - lower level).
        series_scored: series contributing to ``mase`` and ``coverage``.
        series_skilled: series contributing to ``skill``.
        keys, series_mase, series_coverage, series_skill: per-series figures aligned with ``keys``
            (NaN = not enough data).
    """

    skill: float
    mase: float
    coverage: float
    nominal_coverage: float
    series_scored: int
    series_skilled: int
    keys: tuple[Hashable, ...]
    series_mase: FloatArray
    series_coverage: FloatArray
    series_skill: FloatArray


class AccuracyTracker:
    """Exponentially weighted accumulators behind :class:`AccuracyReport`."""

    _SUMS = ("err_sum", "err_w", "naive_sum", "naive_w", "cover_sum", "skill_model", "skill_last")

    def __init__(self, n_series: int, season_length: int, window: int) -> None:
        self.season_length = season_length
        self.decay = 1.0 - 1.0 / window
        self.last_season: Float32Array = np.full((season_length, n_series), np.nan, dtype=np.float32)
        self.err_sum: FloatArray = np.zeros(n_series)
        self.err_w: FloatArray = np.zeros(n_series)
        self.naive_sum: FloatArray = np.zeros(n_series)
        self.naive_w: FloatArray = np.zeros(n_series)
        self.cover_sum: FloatArray = np.zeros(n_series)
        self.skill_model: FloatArray = np.zeros(n_series)
        self.skill_last: FloatArray = np.zeros(n_series)

    def record(
        self,
        tick: int,
        actual: FloatArray,
        errors: Float32Array,
        valid: BoolArray,
        lower_offset: Float32Array,
        upper_offset: Float32Array,
        last_errors: Float32Array,
        cols: slice = _ALL,
    ) -> None:
        """Score this tick's h-step errors ``[H, b]``, last value's ``[H, b]`` and the seasonal naive error.

        The arguments hold the series ``cols`` (all by default). Per-series means over the leads are
        summed in float64 from the float32 errors. Each EW mean moves as ``s += g * (x - s)``,
        ``g = 1 - decay`` where the series has a sample and 0 elsewhere (no masked copies).
        """
        g = 1.0 - self.decay
        n_valid = np.count_nonzero(valid, axis=0)
        gain = (n_valid > 0) * g
        per = 1.0 / np.maximum(n_valid, 1)
        magnitude = np.abs(errors)  # read twice: the MAE and the skill's model side
        abs_err = np.where(valid, magnitude, np.float32(0.0)).sum(axis=0, dtype=np.float64) * per
        inside = errors >= lower_offset
        inside &= errors <= upper_offset
        inside &= valid
        cover = np.count_nonzero(inside, axis=0) * per
        err_sum, cover_sum, err_w = self.err_sum[cols], self.cover_sum[cols], self.err_w[cols]
        err_sum += gain * (abs_err - err_sum)
        cover_sum += gain * (cover - cover_sum)
        err_w += gain * (1.0 - err_w)

        # Skill: both errors on exactly the same (target, lead) pairs.
        both = valid & ~np.isnan(last_errors)
        n_both = np.count_nonzero(both, axis=0)
        gain_both = (n_both > 0) * g
        per_both = 1.0 / np.maximum(n_both, 1)
        model = np.where(both, magnitude, np.float32(0.0)).sum(axis=0, dtype=np.float64) * per_both
        last = np.where(both, np.abs(last_errors), np.float32(0.0)).sum(axis=0, dtype=np.float64) * per_both
        skill_model, skill_last = self.skill_model[cols], self.skill_last[cols]
        skill_model += gain_both * (model - skill_model)
        skill_last += gain_both * (last - skill_last)

        slot = self.last_season[tick % self.season_length, cols]
        naive_err = np.abs(actual - slot)
        ok = ~np.isnan(naive_err)
        gain_naive = ok * g
        naive_sum, naive_w = self.naive_sum[cols], self.naive_w[cols]
        naive_sum += gain_naive * (np.where(ok, naive_err, 0.0) - naive_sum)
        naive_w += gain_naive * (1.0 - naive_w)
        slot[...] = actual

    def report(self, keys: tuple[Hashable, ...], nominal: float, min_weight: float = 0.05) -> AccuracyReport:
        with np.errstate(invalid="ignore", divide="ignore"):
            mae = self.err_sum / self.err_w
            naive = self.naive_sum / self.naive_w
            mase = np.where((self.err_w > min_weight) & (self.naive_w > min_weight), mae / naive, np.nan)
            coverage = np.where(self.err_w > min_weight, self.cover_sum / self.err_w, np.nan)
            # The EW weights of the two skill sums are the same, so their ratio needs no normalising.
            moving = (self.err_w > min_weight) & (self.skill_last > MIN_ERROR * self.err_w)
            series_skill = np.where(moving, self.skill_model / self.skill_last, np.nan)
        mase = np.where(np.isfinite(mase), mase, np.nan)
        scored = ~np.isnan(mase) & ~np.isnan(coverage)
        count = int(scored.sum())
        skilled = int(moving.sum())
        skill = float(self.skill_model[moving].sum() / self.skill_last[moving].sum()) if skilled else float("nan")
        return AccuracyReport(
            skill=skill,
            mase=float(mase[scored].mean()) if count else float("nan"),
            coverage=float(coverage[scored].mean()) if count else float("nan"),
            nominal_coverage=nominal,
            series_scored=count,
            series_skilled=skilled,
            keys=keys,
            series_mase=mase,
            series_coverage=coverage,
            series_skill=series_skill,
        )

    def extend(self, count: int) -> None:
        self.last_season = grow(self.last_season, count, np.nan, axis=1)
        for name in self._SUMS:
            setattr(self, name, grow(getattr(self, name), count, 0.0))

    def take(self, rows: IntArray) -> None:
        self.last_season = select(self.last_season, rows, axis=1)
        for name in self._SUMS:
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
