"""Rolling-origin backtest of a :class:`~apollo.core.forecasting.bank.SeriesBank` over a history matrix.

Why: tuning and the benchmark must score the model exactly as it runs in production, online, one tick
at a time, every forecast made before its actual is seen. This replays ``history`` through the bank and,
for every origin in the requested windows, scores the H forecasts it made against the actuals that arrive
later. Scoring uses the intervals as they were at the origin (exact, unlike the live tracker). Every
scored (origin, lead) pair is also scored for last value (the last observed value at the origin) and, with a
season, for seasonal naive (the value one season before the target), so :meth:`BacktestScores.skill`
compares them on exactly the same samples.

``tile`` runs the same history through ``tile`` copies of the series, laid out copy-major
(row = copy * n + series), which is how :mod:`apollo.core.forecasting.tuning` scores many parameter candidates in one
vectorised pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from apollo.core.forecasting.accuracy import pinball_loss
from apollo.core.forecasting.arrays import FloatArray, IntArray
from apollo.core.forecasting.bank import SeriesBank


@dataclass(frozen=True, slots=True)
class Window:
    """Forecast origins ``start <= o < end`` with ``(o - start) % stride == 0`` (tick offsets)."""

    start: int
    end: int
    stride: int = 1

    def __post_init__(self) -> None:
        if self.start < 0 or self.end <= self.start or self.stride < 1:
            raise ValueError(f"invalid window {self}")

    def contains(self, origin: int) -> bool:
        return self.start <= origin < self.end and (origin - self.start) % self.stride == 0


@dataclass(frozen=True, slots=True)
class BacktestScores:
    """Sums per series and lead time ``[n, H]`` over the scored (origin, lead) pairs of one window."""

    count: FloatArray
    abs_error: FloatArray
    sq_error: FloatArray
    pinball: FloatArray
    inside: FloatArray
    decision_level: float
    last_abs_error: FloatArray
    seasonal_abs_error: FloatArray

    def _per_series(self, total: FloatArray) -> FloatArray:
        with np.errstate(invalid="ignore", divide="ignore"):
            result: FloatArray = total.sum(axis=1) / self.count.sum(axis=1)
        return result

    def mae(self) -> FloatArray:
        return self._per_series(self.abs_error)

    def mse(self) -> FloatArray:
        return self._per_series(self.sq_error)

    def mean_pinball(self) -> FloatArray:
        return self._per_series(self.pinball)

    def coverage(self) -> FloatArray:
        return self._per_series(self.inside)

    def last_value_mae(self) -> FloatArray:
        """Per-series MAE of repeating the last observed value, on exactly the same (origin, lead) pairs."""
        return self._per_series(self.last_abs_error)

    def seasonal_naive_skill(self, rows: IntArray | slice = slice(None)) -> float:
        """Pooled MAE of "same time one season ago" / last value's, on the same pairs (NaN without a season)."""
        last = float(self.last_abs_error[rows].sum())
        seasonal = float(self.seasonal_abs_error[rows].sum())
        return seasonal / last if last > 0 and seasonal > 0 else float("nan")

    def skill(self, rows: IntArray | slice = slice(None)) -> float:
        """Pooled skill of ``rows``: sum of absolute errors / sum of last value's on the same pairs (< 1 wins)."""
        last = float(self.last_abs_error[rows].sum())
        return float(self.abs_error[rows].sum()) / last if last > 0 else float("nan")

    def mase(self, scale: FloatArray) -> FloatArray:
        """Per-series MASE given the per-series seasonal naive scale (NaN where the scale is 0 or NaN)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            result: FloatArray = np.where(scale > 0, self.mae() / scale, np.nan)
        return result


def backtest(
    bank: SeriesBank,
    history: FloatArray,
    windows: Sequence[Window],
    *,
    decision_level: float | None = None,
    tile: int = 1,
) -> list[BacktestScores]:
    """Replay ``history`` ``[n, T]`` (column j = tick ``bank.tick + j``) and score each window.

    ``bank`` must hold ``n * tile`` series. Origins are column offsets into ``history``; targets past
    the end of the history are not scored. ``decision_level`` (default: the highest quantile) is the
    level whose pinball loss is reported.
    """
    data = np.asarray(history, dtype=np.float64)
    n, steps = data.shape
    if len(bank) != n * tile:
        raise ValueError(f"bank holds {len(bank)} series, expected {n} * tile {tile}")
    level = bank.quantiles[-1] if decision_level is None else decision_level
    q_index = bank.quantiles.index(level)
    H, rows = bank.horizon, n * tile
    m = bank.config.season_length
    ring = np.full((H, 5, rows, H), np.nan)  # origin slot, (mean, lower, upper, decision, last), series, lead
    sums = [{k: np.zeros((rows, H)) for k in ("count", "abs", "sq", "pin", "in", "last", "season")} for _ in windows]
    leads = np.arange(1, H + 1)
    last = np.full(rows, np.nan)
    for j in range(steps):
        column = data[:, j]
        y = np.tile(column, tile) if tile > 1 else column
        bank.update(y)
        origins = j - leads
        active = [np.array([w.contains(int(o)) for o in origins]) for w in windows]
        if any(a.any() for a in active):
            past = ring[origins % H, :, :, leads - 1]  # [H lead, 4, rows]
            err = y[None, :] - past[:, 0]
            last_err = y[None, :] - past[:, 4]
            ok = ~np.isnan(err) & ~np.isnan(past[:, 3]) & ~np.isnan(last_err)
            pin = pinball_loss(y[None, :], past[:, 3], level)
            inside = (y[None, :] >= past[:, 1]) & (y[None, :] <= past[:, 2])
            for acc, mask in zip(sums, active, strict=True):
                use = (ok & mask[:, None]).T  # [rows, H]
                acc["count"] += use
                acc["abs"] += np.where(use, np.abs(err.T), 0.0)
                acc["sq"] += np.where(use, err.T**2, 0.0)
                acc["pin"] += np.where(use, pin.T, 0.0)
                acc["in"] += use & inside.T
                acc["last"] += np.where(use, np.abs(last_err.T), 0.0)
                if m > 1 and j >= m:
                    seasonal = data[:, j - m]
                    season_err = np.abs(y - (np.tile(seasonal, tile) if tile > 1 else seasonal))
                    acc["season"] += np.where(use & ~np.isnan(season_err)[:, None], season_err[:, None], 0.0)
        last = np.where(np.isnan(y), last, y)
        if any(w.start <= j < w.end for w in windows):
            fc = bank.forecast()
            slot = ring[j % H]
            slot[0] = fc.mean
            slot[1] = fc.lower
            slot[2] = fc.upper
            slot[3] = fc.values[:, q_index, :]
            slot[4] = last[:, None]
    return [
        BacktestScores(
            count=acc["count"],
            abs_error=acc["abs"],
            sq_error=acc["sq"],
            pinball=acc["pin"],
            inside=acc["in"].astype(np.float64),
            decision_level=level,
            last_abs_error=acc["last"],
            seasonal_abs_error=acc["season"],
        )
        for acc in sums
    ]
