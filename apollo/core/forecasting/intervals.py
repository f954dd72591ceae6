"""Prediction intervals from the model's own recent multi-step errors.

Why empirical: cluster load is bursty and skewed (a job starting is a jump up, never down), so Gaussian
intervals from a fitted variance are too narrow on one side and too wide on the other. The forecaster keeps,
per series and per lead time h, the last ``window`` realised h-step errors (actual minus the forecast made h
ticks earlier) and reads the requested quantiles off them. Errors are stored in time slots (slot =
tick % window) with NaN for ticks that produced no error (gap, new series), so the window is "the last
``window`` ticks", not "the last ``window`` errors".

Cost control: the buffer is laid out ``[window, horizon, n_series]`` so the per-tick write is one contiguous
slab; sorting is done for a rotating block of series each tick (see ``BankConfig.refresh_every``).

Short history: below ``min_errors`` errors the interval falls back to ``z_q * sigma_1 * sqrt(h)`` (random-walk
growth of the one-step residual scale); above it, half-widths around the error median are multiplied by
``1 + widening / n`` so that quantiles taken from few samples do not under-cover.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np

from apollo.core.forecasting.arrays import BoolArray, Float32Array, FloatArray, IntArray, grow, select

_ALL = slice(None)


class ErrorBuffer:
    """Rolling window of h-step-ahead forecast errors, ``errors[window, horizon, n_series]`` float32."""

    def __init__(self, n_series: int, horizon: int, window: int) -> None:
        self.window = window
        self.horizon = horizon
        self.errors: Float32Array = np.full((window, horizon, n_series), np.nan, dtype=np.float32)
        self.count: IntArray = np.zeros((horizon, n_series), dtype=np.int64)

    def push(self, tick: int, errors: Float32Array, valid: BoolArray, cols: slice = _ALL) -> None:
        """Store this tick's errors of the series ``cols`` (``[horizon, b]``; only where ``valid``),
        evicting the oldest slot's."""
        slot = self.errors[tick % self.window, :, cols]
        count = self.count[:, cols]
        count -= ~np.isnan(slot)
        np.copyto(slot, errors)
        np.copyto(slot, np.nan, where=~valid)
        count += valid

    def sorted_block(self, rows: slice) -> Float32Array:
        """Errors of ``rows`` as ``[horizon, n_rows, window]``, ascending along the last axis, NaN last."""
        block = np.ascontiguousarray(self.errors[:, :, rows].transpose(1, 2, 0))
        block.sort(axis=-1)
        return block

    def extend(self, count: int) -> None:
        self.errors = grow(self.errors, count, np.nan, axis=2)
        self.count = grow(self.count, count, 0, axis=1)

    def take(self, rows: IntArray) -> None:
        self.errors = select(self.errors, rows, axis=2)
        self.count = select(self.count, rows, axis=1)


def empirical_offsets(
    ordered: Float32Array,
    count: IntArray,
    levels: FloatArray,
    *,
    min_errors: int,
    widening: float,
) -> FloatArray:
    """Quantile offsets ``[Q, horizon, n]`` from sorted errors ``[horizon, n, window]`` (NaN last).

    Linear interpolation between order statistics (numpy's default "linear" method) on the ``count``
    valid errors; half-widths around the median are widened by ``1 + widening / count``. Cells with fewer
    than ``min_errors`` errors are NaN so that the caller substitutes the fallback.
    """
    last = np.maximum(count - 1, 0)
    all_levels = np.concatenate([levels, [0.5]])
    pos = last[None] * all_levels[:, None, None]  # [Q+1, H, n], level-major like the result
    lo = pos.astype(np.int64)  # floor: positions are >= 0
    frac = pos - lo
    hi = np.minimum(lo + 1, last[None])
    # Order statistics by flat index into the block (one take each) rather than take_along_axis, which
    # builds broadcast index arrays for every axis.
    horizon, rows, window = ordered.shape
    start = (np.arange(horizon * rows, dtype=np.int64) * window).reshape(horizon, rows)
    lo += start
    hi += start
    flat = ordered.reshape(-1)
    lo_val = flat[lo].astype(np.float64)
    hi_val = flat[hi].astype(np.float64)
    values = lo_val + frac * (hi_val - lo_val)  # [Q+1, H, n]
    median = values[-1]
    factor = 1.0 + widening / np.maximum(count, 1)
    offsets = median[None] + factor[None] * (values[:-1] - median[None])
    result: FloatArray = np.where((count >= min_errors)[None], offsets, np.nan)
    return result


def normal_scores(levels: tuple[float, ...]) -> FloatArray:
    """Standard normal quantiles of ``levels`` (the fallback interval's shape)."""
    dist = NormalDist()
    return np.array([dist.inv_cdf(q) for q in levels], dtype=np.float64)


def fallback_offsets(
    sigma1: FloatArray,
    n_seen: IntArray,
    z: FloatArray,
    sqrt_h: FloatArray,
    widening: float,
) -> FloatArray:
    """Offsets ``[Q, H, n]`` = z_q * sigma_1 * sqrt(h), widened for the few residuals behind sigma_1."""
    factor = 1.0 + widening / np.maximum(n_seen, 1)
    scale = (sigma1 * factor)[None, None, :]
    result: FloatArray = scale * z[:, None, None] * sqrt_h[None, :, None]
    return result
