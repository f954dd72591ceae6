"""Vectorised online forecaster for every node x resource series: APOLLO's pure forecasting core.

One :class:`SeriesBank` holds the state of all series and advances them together, one numpy pass per
tick, because a Python loop over 50,000 series would cost more than the whole tick budget. No I/O here:
the service feeds it numbers and exports what it returns.

Model (per series): damped-trend additive Holt-Winters, ETS(A,Ad,A) in error-correction form (see
:mod:`apollo.core.forecasting.params`). The seasonal part is only switched on for series whose
periodicity test passes (:mod:`apollo.core.forecasting.seasonality`); others have a zero seasonal
component. The published mean forecast mixes that model with the last value and a slow mean, weighted
per series and lead time by their recent errors (:mod:`apollo.core.forecasting.combine`). Intervals are
empirical quantiles of the published forecast's own recent h-step errors
(:mod:`apollo.core.forecasting.intervals`). Two separate outlier notions: a robust gate keeps single
outliers out of the state and accepts persistent level shifts (:mod:`apollo.core.forecasting.anomaly`);
a residual test against a scale that cannot collapse decides when a series behaves abnormally
(:mod:`apollo.core.forecasting.abnormal`). Accuracy, including skill against last value on the same
samples, is tracked live (:mod:`apollo.core.forecasting.accuracy`).

Usage, once per sample interval (the "tick")::

    bank = SeriesBank(params=ForecastParams(), horizon=6, quantiles=(0.05, 0.5, 0.95),
                      config=BankConfig(season_length=288), start_tick=unix_seconds // 300)
    bank.ensure(keys)                  # sync membership: nodes come and go; order = bank.keys
    values = np.full(len(bank), np.nan)
    values[bank.positions(sample_keys)] = sample_values
    step = bank.update(values)         # UpdateResult: outliers, abnormal flags, accepted level shifts
    fc = bank.forecast()               # ForecastResult: mean/lower/upper [n, H], values [n, Q, H]
    warn = overload_warning(fc.upper, threshold=0.85, k=3)   # apollo.core.forecasting.early_warning
    acc = bank.accuracy()              # AccuracyReport: skill, mase, coverage + per-series arrays

Contract details the adapter must respect:

* ``update`` takes one value per series in ``bank.keys`` order. NaN means "no sample this tick": the state
  advances on its own forecast and no error is recorded. A missed tick must be fed as an all-NaN update
  (or pass ``tick=`` and the bank inserts the NaN ticks itself) so the seasonal phase stays aligned with
  the clock; ``start_tick`` should be ``epoch_seconds // step_seconds`` for the same reason.
* Values must be gauges on a stable scale (e.g. utilisation fraction 0..1). Counters must be turned into
  rates by the adapter, and counter resets handled there (a reset looks like a level shift to this code).
* Forecasts are for ticks ``bank.tick .. bank.tick + H - 1`` (the next H samples).
* Adding or removing series copies the state arrays (O(total state)); batch membership changes through
  ``ensure``. Other series' state is untouched.

* ``forecast`` returns ``[n, H]`` / ``[n, Q, H]`` views of horizon-major buffers (not C-contiguous).
* To start with history (e.g. from Prometheus ``query_range``), ``bank.replay(history)`` before the first
  live tick; it ends by testing every series for a season and refreshing every interval, so a seasonal
  series is seasonal again at once. Older history only matters to the periodicity test, which reads
  bucket means: :meth:`SeriesBank.seed_buckets` takes them directly (e.g. hourly means for two days),
  so a restart needs hours of full-resolution history, not days.

Cost per tick is O(n * H) plus a rotating block of n / refresh_every series whose error windows are
sorted (quantiles) and n / season_test_every series whose periodicity is re-tested. Memory is about
``n * (8 * season_length + 4 * error_window * horizon + 4 * horizon**2 + 4 * season_buckets *
season_history + 8 * quantiles * horizon + 80 * horizon + 240)`` bytes: ~280 MiB for 50,000 series at
5-minute steps, daily season, H = 6 (``bench.forecast`` measures it). The big arrays (season, the last
season of actuals, error window, bucket means, interval offsets, past forecasts) are float32; what
accumulates or is published (level, trend, the mix's squared-error sums, the mean forecast) is float64.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence

import numpy as np

from apollo.core.forecasting.abnormal import AbnormalDetector
from apollo.core.forecasting.accuracy import AccuracyReport, AccuracyTracker
from apollo.core.forecasting.anomaly import RunState, advance_runs, robust_center_scale, robust_z
from apollo.core.forecasting.arrays import (
    BoolArray,
    Float32Array,
    FloatArray,
    IntArray,
    column_blocks,
    grow,
    rotating_block,
    select,
)
from apollo.core.forecasting.combine import Combiner
from apollo.core.forecasting.intervals import ErrorBuffer, empirical_offsets, fallback_offsets, normal_scores
from apollo.core.forecasting.params import BankConfig, ForecastParams, validate_quantiles
from apollo.core.forecasting.results import ForecastResult, Membership, UpdateResult
from apollo.core.forecasting.seasonality import SeasonDetector
from common.settings import ConfigError, int_range

__all__ = [
    "BankConfig",
    "ForecastParams",
    "ForecastResult",
    "Membership",
    "SeriesBank",
    "UpdateResult",
]

_EW_MIN_WEIGHT = 3  # residuals needed before the EW residual variance replaces the prior


def _array_attrs(obj: object) -> list[np.ndarray[tuple[int, ...], np.dtype[np.generic]]]:
    names = list(getattr(obj, "__dict__", {})) + list(getattr(type(obj), "__slots__", ()))
    found = (getattr(obj, name, None) for name in names)
    return [v for v in found if isinstance(v, np.ndarray)]


class SeriesBank:
    """State of every series; ``update`` then ``forecast`` once per tick (see module docstring).

    Internally arrays are horizon-major (``[H, n]``, ``[season_length, n]``) so that per-tick work is on
    contiguous rows; results are returned as ``[n, H]`` views of them.
    """

    def __init__(
        self,
        params: ForecastParams | None = None,
        horizon: int = 6,
        quantiles: Sequence[float] = (0.05, 0.5, 0.95),
        config: BankConfig | None = None,
        start_tick: int = 0,
    ) -> None:
        self.config = config or BankConfig()
        self.params = params or ForecastParams()
        int_range(1, 10**6)("horizon", horizon)
        if self.config.season_length > 1 and horizon > self.config.season_length:
            raise ConfigError(f"horizon ({horizon}) must not exceed season_length ({self.config.season_length})")
        int_range(0, 2**62)("start_tick", start_tick)
        self.horizon = horizon
        self.quantiles = validate_quantiles(tuple(quantiles))
        self._levels = np.array(self.quantiles)
        self._z = normal_scores(self.quantiles)
        self._h = np.arange(1, horizon + 1)
        self._sqrt_h = np.sqrt(self._h.astype(np.float64))
        self._tick = start_tick
        self._keys: list[Hashable] = []
        self._index: dict[Hashable, int] = {}
        self._keys_tuple: tuple[Hashable, ...] = ()
        self._alloc()

    # ------------------------------------------------------------------ membership

    def _alloc(self) -> None:
        cfg, m, H, Q = self.config, self.config.season_length, self.horizon, len(self.quantiles)
        self._level: FloatArray = np.full(0, np.nan)
        self._trend: FloatArray = np.zeros(0)
        # The seasonal component is the largest array ([season_length, n]); float32 halves it, and a value
        # that moves by gamma * e once a season needs no more than 7 digits. Arithmetic on it is float64.
        self._season: Float32Array = np.zeros((m, 0), dtype=np.float32)
        self._level_ring: FloatArray = np.full((H, 0), np.nan)
        self._trend_ring: FloatArray = np.zeros((H, 0))
        self._alpha: FloatArray = np.zeros(0)
        self._beta: FloatArray = np.zeros(0)
        self._phi: FloatArray = np.zeros(0)
        self._gamma: FloatArray = np.zeros(0)
        self._phi_sum: FloatArray = np.zeros((H, 0))
        self._initialised: BoolArray = np.zeros(0, dtype=np.bool_)
        self._valid_since: IntArray = np.zeros(0, dtype=np.int64)
        self._seasonal: BoolArray = np.zeros(0, dtype=np.bool_)
        self._res_var: FloatArray = np.zeros(0)
        self._res_n: IntArray = np.zeros(0, dtype=np.int64)
        self._center: FloatArray = np.zeros(0)
        self._scale: FloatArray = np.zeros(0)
        # Interval offsets: quantiles of float32 errors, kept in float32.
        self._cached: Float32Array = np.zeros((Q, H, 0), dtype=np.float32)
        self._offsets: Float32Array = np.zeros((Q, H, 0), dtype=np.float32)
        self._needs_fallback: BoolArray = np.zeros(0, dtype=np.bool_)
        self._runs = RunState.empty(0)
        self._errors = ErrorBuffer(0, H, cfg.error_window)
        self._detector = SeasonDetector(0, m, cfg.season_buckets, cfg.season_history, cfg.min_seasons)
        self._accuracy = AccuracyTracker(0, m, cfg.accuracy_window)
        self._combiner = Combiner(0, H, cfg.combine_window, cfg.slow_window, cfg.combine)
        self._abnormal = AbnormalDetector(0, cfg.abnormal)
        self._mean: FloatArray = np.full((H, 0), np.nan)

    # (attribute, fill for new series, series axis)
    _ROW_ARRAYS: tuple[tuple[str, object, int], ...] = (
        ("_level", np.nan, 0),
        ("_trend", 0.0, 0),
        ("_season", 0.0, 1),
        ("_level_ring", np.nan, 1),
        ("_trend_ring", 0.0, 1),
        ("_initialised", False, 0),
        ("_valid_since", np.iinfo(np.int64).max, 0),
        ("_seasonal", False, 0),
        ("_res_var", 0.0, 0),
        ("_res_n", 0, 0),
        ("_center", 0.0, 0),
        ("_scale", np.inf, 0),
        ("_cached", np.nan, 2),
        ("_offsets", 0.0, 2),
        ("_needs_fallback", True, 0),
        ("_mean", np.nan, 1),
    )

    def add(self, keys: Iterable[Hashable]) -> None:
        """Append new series (state starts empty). Raises ValueError on a key already present."""
        new = list(keys)
        dupes = [k for k in new if k in self._index]
        if dupes or len(set(new)) != len(new):
            raise ValueError(f"keys already present or repeated: {dupes[:5] or new[:5]}")
        if not new:
            return
        count = len(new)
        for name, fill, axis in self._ROW_ARRAYS:
            setattr(self, name, grow(getattr(self, name), count, fill, axis))
        p = self.params
        self._alpha = grow(self._alpha, count, p.alpha)
        self._beta = grow(self._beta, count, p.beta)
        self._phi = grow(self._phi, count, p.phi)
        self._gamma = grow(self._gamma, count, p.gamma)
        self._phi_sum = self._damping_sums(self._phi)
        self._runs.length = grow(self._runs.length, count, 0)
        self._runs.total = grow(self._runs.total, count, 0.0)
        self._errors.extend(count)
        self._detector.extend(count)
        self._accuracy.extend(count)
        self._combiner.extend(count)
        self._abnormal.extend(count)
        for k in new:
            self._index[k] = len(self._keys)
            self._keys.append(k)
        self._keys_tuple = tuple(self._keys)

    def remove(self, keys: Iterable[Hashable]) -> None:
        """Drop series; the others keep their state and relative order. Raises KeyError on unknown keys."""
        gone = set(keys)
        unknown = [k for k in gone if k not in self._index]
        if unknown:
            raise KeyError(f"unknown series keys: {unknown[:5]}")
        if not gone:
            return
        rows = np.array([i for i, k in enumerate(self._keys) if k not in gone], dtype=np.int64)
        for name, _, axis in self._ROW_ARRAYS:
            setattr(self, name, select(getattr(self, name), rows, axis))
        for name in ("_alpha", "_beta", "_phi", "_gamma"):
            setattr(self, name, select(getattr(self, name), rows))
        self._phi_sum = self._damping_sums(self._phi)
        self._runs.length = select(self._runs.length, rows)
        self._runs.total = select(self._runs.total, rows)
        self._errors.take(rows)
        self._detector.take(rows)
        self._accuracy.take(rows)
        self._combiner.take(rows)
        self._abnormal.take(rows)
        self._keys = [self._keys[i] for i in rows]
        self._index = {k: i for i, k in enumerate(self._keys)}
        self._keys_tuple = tuple(self._keys)

    def ensure(self, keys: Iterable[Hashable]) -> Membership:
        """Make the bank hold exactly ``keys``: remove the others, append the missing (in given order)."""
        wanted = list(dict.fromkeys(keys))
        wanted_set = set(wanted)
        removed = tuple(k for k in self._keys if k not in wanted_set)
        added = tuple(k for k in wanted if k not in self._index)
        self.remove(removed)
        self.add(added)
        return Membership(added=added, removed=removed)

    def positions(self, keys: Iterable[Hashable]) -> IntArray:
        """Row of each key (KeyError if unknown): scatter samples into ``update``'s vector with it."""
        return np.fromiter((self._index[k] for k in keys), dtype=np.int64)

    @property
    def keys(self) -> tuple[Hashable, ...]:
        return self._keys_tuple

    @property
    def tick(self) -> int:
        """Tick of the next observation ``update`` expects."""
        return self._tick

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    @property
    def seasonal(self) -> BoolArray:
        """Which series currently use a seasonal component (the periodicity test passed)."""
        return self._seasonal.copy()

    @property
    def nbytes(self) -> int:
        """Bytes held in state arrays (for the service's memory metric)."""
        parts = (self, self._errors, self._detector, self._accuracy, self._runs, self._combiner, self._abnormal)
        return sum(v.nbytes for obj in parts for v in _array_attrs(obj))

    @property
    def error_counts(self) -> IntArray:
        """``[n, H]`` h-step errors currently in each series' window (how empirical its intervals are)."""
        return np.ascontiguousarray(self._errors.count.T)

    # ------------------------------------------------------------------ parameters

    def _damping_sums(self, phi: FloatArray) -> FloatArray:
        """phi + phi^2 + ... + phi^h for h = 1..H, per series ``[H, n]``."""
        result: FloatArray = np.cumsum(phi[None, :] ** self._h[:, None], axis=0)
        return result

    def set_params(self, params: ForecastParams, keys: Iterable[Hashable] | None = None) -> None:
        """Use ``params`` for ``keys`` (all series, and the default for new ones, when None).

        Only the weights change; level, trend, season and error history are kept, so retuning never
        resets what the model has learnt.
        """
        rows: IntArray | slice
        if keys is None:
            self.params = params
            rows = slice(None)
        else:
            rows = self.positions(keys)
        self._alpha[rows] = params.alpha
        self._beta[rows] = params.beta
        self._phi[rows] = params.phi
        self._gamma[rows] = params.gamma
        self._phi_sum = self._damping_sums(self._phi)
        self._publish(self._tick - 1)

    def set_param_arrays(self, alpha: FloatArray, beta: FloatArray, phi: FloatArray, gamma: FloatArray) -> None:
        """Per-series weights in one call (row order = ``keys``). Used by tuning to test many candidates."""
        n = len(self)
        arrays = [np.asarray(a, dtype=np.float64) for a in (alpha, beta, phi, gamma)]
        for name, arr in zip(("alpha", "beta", "phi", "gamma"), arrays, strict=True):
            if arr.shape != (n,):
                raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
        for combo in set(zip(*(a.tolist() for a in arrays), strict=True)):
            ForecastParams(*combo)  # validates each distinct combination
        self._alpha, self._beta, self._phi, self._gamma = (a.copy() for a in arrays)
        self._phi_sum = self._damping_sums(self._phi)
        self._publish(self._tick - 1)

    # ------------------------------------------------------------------ the tick

    def update(self, values: Sequence[float] | FloatArray, *, tick: int | None = None) -> UpdateResult:
        """Feed one observation per series (``keys`` order, NaN = missing) and advance every state.

        ``tick``, when given, is the tick of this observation; skipped ticks are filled with NaN updates
        first. A tick in the past raises ValueError.
        """
        y = np.asarray(values, dtype=np.float64)
        n = len(self)
        if y.shape != (n,):
            raise ValueError(f"values must have shape ({n},) in bank.keys order, got {y.shape}")
        if tick is not None:
            if tick < self._tick:
                raise ValueError(f"tick {tick} is in the past (next expected tick is {self._tick})")
            gap = np.full(n, np.nan)
            while self._tick < tick:
                self._step(gap)
        return self._step(y)

    def _step(self, y: FloatArray) -> UpdateResult:
        cfg, H, m, t = self.config, self.horizon, self.config.season_length, self._tick
        observed = ~np.isnan(y)
        phase = t % m
        s_now = self._season[phase].astype(np.float64)
        level, trend, phi = self._level, self._trend, self._phi

        # The state gate: a robust test on the one-step residual keeps outliers out of the state.
        deseasoned = y - s_now
        residual = y - (level + phi * trend + s_now)
        z = robust_z(residual, self._center, self._scale)
        outlier = observed & self._initialised & (np.abs(z) > cfg.anomaly_z)

        # The h-step errors of this sample, a block of series at a time (see BLOCK_SERIES).
        y32 = y.astype(np.float32)
        slots = ((t - self._h) % H).tolist()
        for cols in column_blocks(len(y)):
            self._score_block(t, cols, slots, y[cols], y32[cols], deseasoned[cols], observed[cols], outlier[cols])

        accepted, shift = advance_runs(self._runs, outlier, residual, observed, cfg.shift_run)

        # State update; outliers and missing observations move the state by its own forecast only.
        use = observed & self._initialised & ~outlier
        e = np.where(use, residual, 0.0)
        alpha_e = self._alpha * e
        new_level = level + phi * trend + alpha_e + shift
        new_trend = phi * trend + self._beta * alpha_e
        self._season[phase] = s_now + np.where(self._seasonal, self._gamma * e, 0.0)

        scored = self._initialised.copy()
        fresh = observed & ~self._initialised
        if fresh.any():
            new_level = np.where(fresh, y, new_level)
            new_trend = np.where(fresh, 0.0, new_trend)
            self._initialised = self._initialised | fresh
            self._valid_since = np.where(fresh, t, self._valid_since)
        self._level, self._trend = new_level, new_trend

        # Residual variance for the fallback interval (unflagged residuals only).
        self._res_n = self._res_n + use
        weight = np.maximum(1.0 / np.maximum(self._res_n, 1), 1.0 / cfg.error_window)
        self._res_var = np.where(use, (1 - weight) * self._res_var + weight * residual * residual, self._res_var)

        model_residual = np.where(scored, residual, np.nan)
        verdict = self._abnormal.step(model_residual, deseasoned, observed)
        self._combiner.observe(y, observed)

        self._detector.accumulate(t, np.where(outlier, y - residual, y), observed)
        self._refresh_block(rotating_block(len(self), cfg.refresh_every, t))
        if m > 1:
            self._test_seasonality(rotating_block(len(self), cfg.season_test_every, t), t)

        self._level_ring[t % H] = self._level
        self._trend_ring[t % H] = self._trend
        self._publish(t)
        self._merge_fallback()
        self._tick = t + 1
        return UpdateResult(
            keys=self._keys_tuple,
            tick=t,
            residual=model_residual,
            zscore=z,
            outlier=outlier,
            level_shift=accepted,
            missing=~observed,
            abnormal=verdict.abnormal,
            abnormal_score=verdict.score,
        )

    def _score_block(
        self,
        t: int,
        cols: slice,
        slots: list[int],
        y: FloatArray,
        y32: Float32Array,
        deseasoned: FloatArray,
        observed: BoolArray,
        outlier: BoolArray,
    ) -> None:
        """The h-step errors of sample ``t`` for the series ``cols`` (the arrays hold only them).

        The model's errors (re-derived from the state rings row by row: each origin is one contiguous
        row, so no gathered copies) train the mix's weights; the published forecast's errors are scored
        for accuracy, then enter the interval window. Float32 like every h-step error (see combine.py).
        """
        model_errors: Float32Array = np.empty((self.horizon, len(y)), dtype=np.float32)
        row = np.empty(len(y))
        for lead, slot in enumerate(slots):
            np.multiply(self._phi_sum[lead, cols], self._trend_ring[slot, cols], out=row)
            row += self._level_ring[slot, cols]
            np.subtract(deseasoned, row, out=model_errors[lead])
        valid = (t - self._h)[:, None] >= self._valid_since[cols]  # origins t-1 .. t-H
        valid &= observed
        last_errors = self._combiner.learn(t, y32, model_errors, valid, outlier, cols)
        # Errors of what was published (the mix), which intervals and accuracy are about.
        errors = self._combiner.past_published(t, y, cols)
        valid &= ~np.isnan(errors)
        # Score before the errors enter the buffer, so coverage is out of sample.
        lower, upper = self._offsets[0, :, cols], self._offsets[-1, :, cols]
        self._accuracy.record(t, y, errors, valid, lower, upper, last_errors, cols)
        self._errors.push(t, errors, valid, cols)

    def _publish(self, origin: int) -> None:
        """The mean forecast for ticks origin+1 .. origin+H: the model's, mixed with the other experts."""
        if len(self) == 0:
            return
        phases = ((origin + self._h) % self.config.season_length).tolist()
        model_mean = self._phi_sum * self._trend
        model_mean += self._level
        for lead, phase in enumerate(phases):  # row by row: no gathered copy of the season
            model_mean[lead] += self._season[phase]
        self._mean = self._combiner.combine(origin, model_mean)

    def _refresh_block(self, rows: slice) -> None:
        """Recompute quantile offsets and the robust residual scale for a block of series."""
        cfg = self.config
        if rows.start == rows.stop:
            return
        ordered = self._errors.sorted_block(rows)  # [H, nb, W]
        count = self._errors.count[:, rows]
        cached = empirical_offsets(
            ordered, count, self._levels, min_errors=cfg.min_errors, widening=cfg.short_history_widening
        )
        self._cached[:, :, rows] = cached
        self._offsets[:, :, rows] = cached
        self._needs_fallback[rows] = np.isnan(cached).any(axis=(0, 1))
        center, scale = robust_center_scale(ordered[0], count[0], cfg.scale_floor)
        trusted = count[0] >= cfg.min_errors
        self._center[rows] = np.where(trusted, center, 0.0)
        self._scale[rows] = np.where(trusted, scale, np.inf)

    def _merge_fallback(self) -> None:
        """Offsets of series whose error history is too short: normal-theory fallback where needed."""
        idx = np.flatnonzero(self._needs_fallback)
        if idx.size == 0:
            return
        cfg = self.config
        level = np.nan_to_num(self._level[idx])
        prior = np.maximum(cfg.scale_floor, cfg.prior_relative_scale * np.abs(level))
        res_n = self._res_n[idx]
        sigma1 = np.where(res_n >= _EW_MIN_WEIGHT, np.sqrt(self._res_var[idx]), prior)
        sigma1 = np.maximum(sigma1, cfg.scale_floor)
        fallback = fallback_offsets(sigma1, res_n, self._z, self._sqrt_h, cfg.short_history_widening)
        cached = self._cached[:, :, idx]
        self._offsets[:, :, idx] = np.where(np.isnan(cached), fallback, cached)

    def _test_seasonality(self, rows: slice, t: int) -> None:
        """Run the periodicity test on a block of series; switch the seasonal component on or off."""
        cfg = self.config
        if rows.start == rows.stop:
            return
        acf = self._detector.strength(rows, t)
        was = self._seasonal[rows]
        turn_on = ~was & (acf >= cfg.seasonality_on)
        turn_off = was & ~(acf >= cfg.seasonality_off)  # NaN (too little data) also turns it off
        phase = t % cfg.season_length
        if turn_on.any():
            idx = rows.start + np.flatnonzero(turn_on)
            profile = self._detector.profile(idx, t)  # [m, k]
            # The level so far absorbed the current seasonal value; move that part into the season.
            self._level[idx] -= profile[phase]
            self._season[:, idx] = profile
            self._seasonal[idx] = True
            self._valid_since[idx] = t
        if turn_off.any():
            idx = rows.start + np.flatnonzero(turn_off)
            self._level[idx] += self._season[phase, idx]
            self._season[:, idx] = 0.0
            self._seasonal[idx] = False
            self._valid_since[idx] = t

    # ------------------------------------------------------------------ outputs

    def forecast(self) -> ForecastResult:
        """Mean and quantile forecasts for the next ``horizon`` ticks of every series.

        The arrays are ``[n, H]`` / ``[n, Q, H]`` views of horizon-major buffers (not C-contiguous); use
        ``np.ascontiguousarray`` if a consumer needs that.
        """
        mean = self._mean
        values = self._offsets + mean  # [Q, H, n]
        by_series = values.transpose(2, 0, 1)
        return ForecastResult(
            keys=self._keys_tuple,
            tick=self._tick,
            quantiles=self.quantiles,
            mean=mean.T,
            values=by_series,
            lower=by_series[:, 0, :],
            upper=by_series[:, -1, :],
            seasonal=self._seasonal.copy(),
        )

    def accuracy(self) -> AccuracyReport:
        """Live MASE and interval coverage, aggregated and per series."""
        nominal = self.quantiles[-1] - self.quantiles[0]
        return self._accuracy.report(self._keys_tuple, nominal)

    def replay(self, history: FloatArray) -> None:
        """Feed ``history`` ``[n, T]`` (columns = consecutive ticks, keys order) to warm the state up."""
        data = np.asarray(history, dtype=np.float64)
        if data.ndim != 2 or data.shape[0] != len(self):
            raise ValueError(f"history must have shape ({len(self)}, T), got {data.shape}")
        for column in data.T:
            self._step(np.ascontiguousarray(column))
        self.settle()

    def settle(self) -> None:
        """Test every series for a season and refresh every interval now, not over the next rotations.

        Called after a replay (a restart), so a seasonal series uses its season from the first live tick
        and every interval reflects the replayed errors. Works in blocks to bound the temporary memory.
        """
        n, cfg, t = len(self), self.config, self._tick - 1
        if n == 0 or t < 0:
            return
        size = max(1, -(-n // max(cfg.refresh_every, 1)))
        for start in range(0, n, size):
            block = slice(start, min(n, start + size))
            self._refresh_block(block)
            if cfg.season_length > 1:
                self._test_seasonality(block, t)
        self._merge_fallback()
        self._publish(t)

    def seed_buckets(self, buckets: FloatArray, last_bucket: int) -> None:
        """Fill the periodicity test's bucket history directly: ``buckets`` ``[n, L]`` (keys order).

        Column j holds the mean of bucket ``last_bucket - L + 1 + j`` (bucket b covers ticks
        ``b * bucket_size .. (b + 1) * bucket_size - 1``; see :attr:`bucket_seconds`). Used before a
        replay so that days of history can come in as a few dozen means per series instead of
        thousands of samples.
        """
        data = np.asarray(buckets, dtype=np.float64)
        if data.ndim != 2 or data.shape[0] != len(self):
            raise ValueError(f"buckets must have shape ({len(self)}, L), got {data.shape}")
        self._detector.seed(data, last_bucket)

    @property
    def bucket_size(self) -> int:
        """Ticks per bucket of the periodicity test (e.g. 12 five-minute ticks = hourly buckets)."""
        return self._detector.bucket_size
