"""The published mean forecast: a per-series, per-lead mix of the model, the last value and a slow mean.

Why combine: no single forecaster wins on every kind of node metric. On a flat series that moves in
steps (memory, GPU allocation, a replica count) repeating the last value is nearly perfect and any
smoothing lags behind each step; on a noisy series the smoothed level wins; on a series whose bursts
come and go, a slow mean is what it returns to. Each series gets the mix its own recent errors favour,
so APOLLO's forecast is never much worse than the best of the three on that series, and often better
than each, because their errors are not perfectly correlated.

How (Bates & Granger's performance weights): for every series and lead time h, an exponentially
weighted mean squared error of each expert's h-step forecasts (``window`` samples), scored on the same
samples for all three; weights proportional to ``1 / mse ** POWER``. ``POWER`` = 4 rather than the
classic 1 sharpens the weights towards the expert that is clearly better: the three experts' errors are
strongly correlated (they all miss the same job starting), and for correlated experts the best mix is
close to the best expert, which plain inverse-MSE weights underweight. Picking the single best is
brittle, though (a day of errors is a noisy estimate), so the weights stay soft. (Chosen on synthetic
traces with seeds the benchmark does not use: 1 -> 4 cut the pooled error by about 5 %, most of it on
flat and quantised series where last value is hard to beat.)
An expert whose error is not known yet gets no weight; until some error is known the model alone is used.

Everything is O(n * H) per tick. The combined forecast of every origin is kept for H ticks (``float32``,
``[H, H, n]``) so its errors, which the intervals and the accuracy figures are built from, are those of
the forecast that was actually published.
"""

from __future__ import annotations

import numpy as np

from apollo.core.forecasting.arrays import BoolArray, Float32Array, FloatArray, IntArray, column_blocks, grow, select

EXPERTS = ("model", "last_value", "slow_mean")
POWER = 4  # applied as two squarings in weights()
_MSE_FLOOR = 1e-12  # squared units; keeps 1/mse finite on a perfectly flat series
_ALL = slice(None)


class Combiner:
    """State of the three experts and their error weights for every series (rows = the bank's series)."""

    def __init__(self, n_series: int, horizon: int, window: int, slow_window: int, enabled: bool = True) -> None:
        self.enabled = enabled
        self.horizon = horizon
        self.decay = 1.0 - 1.0 / window
        self.slow_rate = 1.0 / slow_window
        self.last: FloatArray = np.full(n_series, np.nan)
        self.slow: FloatArray = np.full(n_series, np.nan)
        # What each expert forecast from the last H origins, float32 like every error derived from them:
        # their errors only weight the mix and fill the interval window, where 7 digits are plenty.
        self.last_ring: Float32Array = np.full((horizon, n_series), np.nan, dtype=np.float32)
        self.slow_ring: Float32Array = np.full((horizon, n_series), np.nan, dtype=np.float32)
        self.published: Float32Array = np.full((horizon, horizon, n_series), np.nan, dtype=np.float32)
        # Exponentially weighted sums of squared errors per expert and lead, and their common weight
        # (the same samples score every expert): mse = sq_sum / weight, unknown while weight is 0. Float64:
        # they accumulate, and weights() raises them to the fourth power (float32 would underflow).
        self.sq_sum: FloatArray = np.zeros((len(EXPERTS), horizon, n_series))
        self.weight: FloatArray = np.zeros((horizon, n_series))

    @property
    def mse(self) -> FloatArray:
        """``[K, H, n]`` mean squared error of each expert (NaN where nothing was scored yet)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            result: FloatArray = np.where(self.weight > 0, self.sq_sum / self.weight, np.nan)
        return result

    # ------------------------------------------------------------------ per tick

    def past_published(self, tick: int, actual: FloatArray, cols: slice = _ALL) -> Float32Array:
        """``[H, b]``: row h-1 = ``actual`` minus the combined forecast made at origin ``tick - h`` for ``tick``.

        ``actual`` holds the series ``cols``. Row by row (each origin's slot is one contiguous row), so no
        gathered copy of the ring is made. The difference is taken in float64 and rounded to float32 (what
        the interval window stores): rounding ``actual`` to float32 first would turn the published
        forecast's own float32 rounding on a flat series into exact zeros, and change its intervals.
        """
        errors: Float32Array = np.empty((self.horizon, actual.shape[0]), dtype=np.float32)
        for lead, slot in enumerate(self._slots(tick)):
            np.subtract(actual, self.published[slot, lead, cols], out=errors[lead])
        return errors

    def _slots(self, tick: int) -> list[int]:
        """Ring slot of origin ``tick - h`` for h = 1..H (the forecasts that targeted ``tick``)."""
        return [(tick - 1 - lead) % self.horizon for lead in range(self.horizon)]

    def learn(
        self,
        tick: int,
        actual: Float32Array,
        model_errors: Float32Array,
        valid: BoolArray,
        outlier: BoolArray,
        cols: slice = _ALL,
    ) -> Float32Array:
        """Score each expert's forecasts for ``tick`` (made at origins tick-1..tick-H) on the same samples.

        The arguments hold the series ``cols`` (all by default; the bank passes blocks of
        :data:`~apollo.core.forecasting.arrays.BLOCK_SERIES`). ``model_errors`` is ``actual`` minus the
        model's ``[H, b]`` forecasts from those origins, ``valid`` where an error may be recorded,
        ``outlier`` the samples the state gate rejected: they are left out of the weights, because a spike
        misses every expert by about as much and would level a day of evidence in one sample. Returns the
        last-value errors ``[H, b]`` on every valid sample (NaN elsewhere), the baseline the accuracy
        tracker compares against.

        The errors are float32 (half the memory traffic); their squares and the sums are float64. The
        exponentially weighted sums move as ``s += g * (x - s)`` with ``g = 1 - decay`` where a sample is
        learnt and 0 elsewhere: one multiply-add over every cell instead of a new value for every cell
        copied under a mask (a masked copy costs several plain passes).
        """
        errors = np.empty((len(EXPERTS), *model_errors.shape), dtype=np.float32)
        errors[0] = model_errors
        for lead, slot in enumerate(self._slots(tick)):
            np.subtract(actual, self.last_ring[slot, cols], out=errors[1, lead])
            np.subtract(actual, self.slow_ring[slot, cols], out=errors[2, lead])
        missing = np.isnan(errors)
        ok = valid & ~missing[0]
        ok &= ~missing[1]
        ok &= ~missing[2]
        last_err: Float32Array = np.where(ok, errors[1], np.float32(np.nan))
        learn = ok & ~outlier
        gain = learn * (1.0 - self.decay)  # [H, b]: the EW step where learnt, 0 (no change) elsewhere
        weight = self.weight[:, cols]
        step = 1.0 - weight
        step *= gain
        weight += step
        np.copyto(errors, 0.0, where=~learn)  # NaN errors of unlearnt cells would poison the zero step
        for k in range(len(EXPERTS)):
            sq_sum = self.sq_sum[k, :, cols]
            np.square(errors[k], out=step, dtype=np.float64)  # exact: a float32 product fits a float64
            step -= sq_sum
            step *= gain
            sq_sum += step
        return last_err

    def observe(self, actual: FloatArray, observed: BoolArray) -> None:
        """Carry the last value forward and move the slow mean (missing samples change neither)."""
        self.last = np.where(observed, actual, self.last)
        fresh = observed & np.isnan(self.slow)
        moved = self.slow + self.slow_rate * (actual - self.slow)
        self.slow = np.where(fresh, actual, np.where(observed, moved, self.slow))

    def weights(self) -> FloatArray:
        """``[K, H, n]`` weights summing to 1 over experts; the model alone while no error is known (or when
        mixing is disabled, e.g. to score the model's own parameters in tuning).

        The experts share one weight per (lead, series), so ``1 / mse ** 4`` normalises to the same as
        ``1 / sq_sum ** 4``; the floor keeps a perfectly flat series finite.
        """
        result: FloatArray = np.empty_like(self.sq_sum)
        for cols in column_blocks(self.weight.shape[1]):
            self._weights_block(cols, result[:, :, cols])
        return result

    def _weights_block(self, cols: slice, out: FloatArray) -> None:
        """:meth:`weights` of the series ``cols`` into ``out`` ``[K, H, b]``."""
        weight = self.weight[:, cols]
        known = weight > 0
        if not self.enabled or not known.any():
            out[0] = 1.0
            out[1:] = 0.0
            return
        inverse = out
        np.maximum(self.sq_sum[:, :, cols], _MSE_FLOOR * weight[None], out=inverse)
        inverse *= inverse  # ** 2
        inverse *= inverse  # ** 4 (POWER): two multiplications, far cheaper than a float power
        with np.errstate(divide="ignore", invalid="ignore"):  # unknown cells (weight 0) are replaced below
            np.reciprocal(inverse, out=inverse)
            # The sum over experts as whole-array additions in expert order (what a sum over the outer
            # axis adds too), without reduction machinery over three values.
            total = inverse[0] + inverse[1]
            for k in range(2, len(inverse)):
                total += inverse[k]
            inverse /= total
        unknown = ~known
        np.copyto(inverse[0], 1.0, where=unknown)
        np.copyto(inverse[1:], 0.0, where=unknown)

    def combine(self, tick: int, model_mean: FloatArray) -> FloatArray:
        """Mix the model's ``[H, n]`` forecast from origin ``tick`` with the other experts; remember all three.

        The three forecasts exist for the same series (each starts with the series' first sample), so the
        mix is NaN exactly where the model's is. Weights and mix are formed a block of series at a time,
        so each block's weights are still in cache when they are used.
        """
        result: FloatArray = np.empty_like(model_mean)
        for cols in column_blocks(model_mean.shape[1]):
            wb: FloatArray = np.empty((len(EXPERTS), self.horizon, cols.stop - cols.start))
            self._weights_block(cols, wb)
            mixed = result[:, cols]
            np.multiply(wb[0], model_mean[:, cols], out=mixed)
            wb[1] *= self.last[cols]
            mixed += wb[1]
            wb[2] *= self.slow[cols]
            mixed += wb[2]
        slot = tick % self.horizon
        self.published[slot] = result
        self.last_ring[slot] = self.last
        self.slow_ring[slot] = self.slow
        return result

    # ------------------------------------------------------------------ membership

    def extend(self, count: int) -> None:
        self.last = grow(self.last, count, np.nan)
        self.slow = grow(self.slow, count, np.nan)
        self.last_ring = grow(self.last_ring, count, np.nan, axis=1)
        self.slow_ring = grow(self.slow_ring, count, np.nan, axis=1)
        self.published = grow(self.published, count, np.nan, axis=2)
        self.sq_sum = grow(self.sq_sum, count, 0.0, axis=2)
        self.weight = grow(self.weight, count, 0.0, axis=1)

    def take(self, rows: IntArray) -> None:
        self.last = select(self.last, rows)
        self.slow = select(self.slow, rows)
        self.last_ring = select(self.last_ring, rows, axis=1)
        self.slow_ring = select(self.slow_ring, rows, axis=1)
        self.published = select(self.published, rows, axis=2)
        self.sq_sum = select(self.sq_sum, rows, axis=2)
        self.weight = select(self.weight, rows, axis=1)
