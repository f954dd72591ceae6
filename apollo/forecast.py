"""Vectorised online forecaster for every node x resource series: APOLLO's pure forecasting core.

One :class:`SeriesBank` holds the state of all series and advances them together, one numpy pass per
tick, because a Python loop over 40,000 series would cost more than the whole tick budget. No I/O here:
the service feeds it numbers and exports what it returns.

Model (per series): damped-trend additive Holt-Winters, ETS(A,Ad,A) in error-correction form (see
:mod:`apollo.forecast_config`). The seasonal part is only switched on for series whose periodicity test
passes (:mod:`apollo.seasonality`); others have a zero seasonal component. Intervals are empirical
quantiles of the model's own recent h-step errors (:mod:`apollo.intervals`). Robust anomaly flags keep
outliers out of the state and accept persistent level shifts (:mod:`apollo.anomaly`). Accuracy is tracked
live (:mod:`apollo.accuracy`).

Usage, once per sample interval (the "tick")::

    bank = SeriesBank(params=ForecastParams(), horizon=6, quantiles=(0.05, 0.5, 0.95),
                      config=BankConfig(season_length=288), start_tick=unix_seconds // 300)
    bank.ensure(keys)                  # sync membership: nodes come and go; order = bank.keys
    values = np.full(len(bank), np.nan)
    values[bank.positions(sample_keys)] = sample_values
    step = bank.update(values)         # UpdateResult: anomaly flags, z-scores, accepted level shifts
    fc = bank.forecast()               # ForecastResult: mean/lower/upper [n, H], values [n, Q, H]
    warn = overload_warning(fc.upper, threshold=0.85, k=3)   # apollo.early_warning
    acc = bank.accuracy()              # AccuracyReport: mase, coverage (floats) + per-series arrays

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

Memory is about ``n * (12 * season_length + 4 * error_window * horizon + 8 * season_buckets *
season_history)`` bytes, e.g. ~230 MB for 40,000 series at 5-minute samples, daily season, H = 6.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from apollo.accuracy import AccuracyReport, AccuracyTracker
from apollo.anomaly import RunState, advance_runs, robust_center_scale, robust_z
from apollo.forecast_config import BankConfig, ForecastParams, validate_quantiles
from apollo.intervals import ErrorBuffer, empirical_offsets, fallback_offsets, normal_scores
from apollo.seasonality import SeasonDetector
from apollo.series_arrays import BoolArray, FloatArray, IntArray, grow, rotating_block, select

__all__ = [
    "BankConfig",
    "ForecastParams",
    "ForecastResult",
    "Membership",
    "SeriesBank",
    "UpdateResult",
]

_EW_MIN_WEIGHT = 3  # residuals needed before the EW residual variance replaces the prior


@dataclass(frozen=True, slots=True)
class ForecastResult:
    """Forecasts for the next ``horizon`` ticks of every series, rows in ``keys`` order.

    Attributes:
        keys: series keys, row order of every array.
        tick: tick of the first forecast step (``bank.tick`` when it was made).
        quantiles: the levels of ``values``' middle axis.
        mean: point forecast ``[n, H]``. NaN for series never observed.
        values: quantile forecasts ``[n, Q, H]``.
        lower, upper: the lowest and highest quantile, ``[n, H]`` (views into ``values``).
        seasonal: which series currently use a seasonal component.
    """

    keys: tuple[Hashable, ...]
    tick: int
    quantiles: tuple[float, ...]
    mean: FloatArray
    values: FloatArray
    lower: FloatArray
    upper: FloatArray
    seasonal: BoolArray

    def quantile(self, level: float) -> FloatArray:
        """Forecast ``[n, H]`` at one of the configured quantile levels."""
        return self.values[:, self.quantiles.index(level), :]


@dataclass(frozen=True, slots=True)
class UpdateResult:
    """What one ``update`` observed, rows in ``keys`` order.

    Attributes:
        tick: tick of the observation.
        residual: actual minus one-step forecast (NaN where missing or not yet initialised).
        zscore: robust z-score of the residual (NaN where it could not be computed).
        anomaly: flagged observations (kept out of the state).
        level_shift: series whose run of flags was accepted as a new level at this tick.
        missing: series without an observation this tick.
    """

    keys: tuple[Hashable, ...]
    tick: int
    residual: FloatArray
    zscore: FloatArray
    anomaly: BoolArray
    level_shift: BoolArray
    missing: BoolArray

    @property
    def anomalies(self) -> list[Hashable]:
        return [self.keys[i] for i in np.flatnonzero(self.anomaly)]


@dataclass(frozen=True, slots=True)
class Membership:
    """Keys added and removed by :meth:`SeriesBank.ensure`."""

    added: tuple[Hashable, ...]
    removed: tuple[Hashable, ...]


class SeriesBank:
    """State of every series; ``update`` then ``forecast`` once per tick (see module docstring)."""

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
        if not isinstance(horizon, int) or isinstance(horizon, bool) or horizon < 1:
            raise ValueError(f"horizon must be a positive integer, got {horizon!r}")
        if self.config.season_length > 1 and horizon > self.config.season_length:
            raise ValueError(
                f"horizon ({horizon}) must not exceed season_length ({self.config.season_length})"
            )
        if not isinstance(start_tick, int) or start_tick < 0:
            raise ValueError(f"start_tick must be a non-negative integer, got {start_tick!r}")
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
        self._alloc(0)

    # ------------------------------------------------------------------ membership

    def _alloc(self, n: int) -> None:
        cfg, m, H = self.config, self.config.season_length, self.horizon
        self._level: FloatArray = np.full(n, np.nan)
        self._trend: FloatArray = np.zeros(n)
        self._season: FloatArray = np.zeros((n, m))
        self._level_ring: FloatArray = np.full((n, H), np.nan)
        self._trend_ring: FloatArray = np.zeros((n, H))
        self._alpha: FloatArray = np.full(n, self.params.alpha)
        self._beta: FloatArray = np.full(n, self.params.beta)
        self._phi: FloatArray = np.full(n, self.params.phi)
        self._gamma: FloatArray = np.full(n, self.params.gamma)
        self._phi_sum: FloatArray = self._damping_sums(self._phi)
        self._initialised: BoolArray = np.zeros(n, dtype=np.bool_)
        self._valid_since: IntArray = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
        self._seasonal: BoolArray = np.zeros(n, dtype=np.bool_)
        self._res_var: FloatArray = np.zeros(n)
        self._res_n: IntArray = np.zeros(n, dtype=np.int64)
        self._center: FloatArray = np.zeros(n)
        self._scale: FloatArray = np.full(n, np.inf)
        self._runs = RunState.empty(n)
        self._cached: FloatArray = np.full((n, len(self.quantiles), H), np.nan)
        self._offsets: FloatArray = np.zeros((n, len(self.quantiles), H))
        self._errors = ErrorBuffer(n, H, cfg.error_window)
        self._detector = SeasonDetector(n, m, cfg.season_buckets, cfg.season_history, cfg.min_seasons)
        self._accuracy = AccuracyTracker(n, m, cfg.accuracy_window)

    _ROW_ARRAYS: tuple[tuple[str, object], ...] = (
        ("_level", np.nan),
        ("_trend", 0.0),
        ("_season", 0.0),
        ("_level_ring", np.nan),
        ("_trend_ring", 0.0),
        ("_initialised", False),
        ("_valid_since", np.iinfo(np.int64).max),
        ("_seasonal", False),
        ("_res_var", 0.0),
        ("_res_n", 0),
        ("_center", 0.0),
        ("_scale", np.inf),
        ("_cached", np.nan),
        ("_offsets", 0.0),
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
        for name, fill in self._ROW_ARRAYS:
            setattr(self, name, grow(getattr(self, name), count, fill))
        self._alpha = grow(self._alpha, count, self.params.alpha)
        self._beta = grow(self._beta, count, self.params.beta)
        self._phi = grow(self._phi, count, self.params.phi)
        self._gamma = grow(self._gamma, count, self.params.gamma)
        self._phi_sum = self._damping_sums(self._phi)
        self._runs.length = grow(self._runs.length, count, 0)
        self._runs.total = grow(self._runs.total, count, 0.0)
        self._errors.extend(count)
        self._detector.extend(count)
        self._accuracy.extend(count)
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
        for name, _ in self._ROW_ARRAYS:
            setattr(self, name, select(getattr(self, name), rows))
        for name in ("_alpha", "_beta", "_phi", "_gamma", "_phi_sum"):
            setattr(self, name, select(getattr(self, name), rows))
        self._runs.length = select(self._runs.length, rows)
        self._runs.total = select(self._runs.total, rows)
        self._errors.take(rows)
        self._detector.take(rows)
        self._accuracy.take(rows)
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

    # ------------------------------------------------------------------ parameters

    def _damping_sums(self, phi: FloatArray) -> FloatArray:
        """phi + phi^2 + ... + phi^h for h = 1..H, per series ``[n, H]``."""
        return np.cumsum(phi[:, None] ** self._h[None, :], axis=1)

    def set_params(self, params: ForecastParams, keys: Iterable[Hashable] | None = None) -> None:
        """Use ``params`` for ``keys`` (all series, and the default for new ones, when None).

        Only the weights change; level, trend, season and error history are kept, so retuning never
        resets what the model has learnt.
        """
        if keys is None:
            self.params = params
            rows: IntArray | slice = slice(None)
        else:
            rows = self.positions(keys)
        self._alpha[rows] = params.alpha
        self._beta[rows] = params.beta
        self._phi[rows] = params.phi
        self._gamma[rows] = params.gamma
        self._phi_sum = self._damping_sums(self._phi)

    def set_param_arrays(self, alpha: FloatArray, beta: FloatArray, phi: FloatArray, gamma: FloatArray) -> None:
        """Per-series weights in one call (row order = ``keys``). Used by tuning to test many candidates."""
        n = len(self)
        for name, arr in (("alpha", alpha), ("beta", beta), ("phi", phi), ("gamma", gamma)):
            if np.shape(arr) != (n,):
                raise ValueError(f"{name} must have shape ({n},), got {np.shape(arr)}")
        for a, b, p, g in {(float(a), float(b), float(p), float(g)) for a, b, p, g in zip(alpha, beta, phi, gamma, strict=True)}:
            ForecastParams(a, b, p, g)  # validates each distinct combination
        self._alpha = np.array(alpha, dtype=np.float64)
        self._beta = np.array(beta, dtype=np.float64)
        self._phi = np.array(phi, dtype=np.float64)
        self._gamma = np.array(gamma, dtype=np.float64)
        self._phi_sum = self._damping_sums(self._phi)

    # ------------------------------------------------------------------ the tick

    def update(self, values: Sequence[float] | FloatArray, *, tick: int | None = None) -> UpdateResult:
        """Feed one observation per series (``keys`` order, NaN = missing) and advance every state.

        ``tick``, when given, is the tick of this observation; skipped ticks are filled with NaN updates
        first. A tick that is not in the future raises ValueError.
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
        s_now = self._season[:, phase].copy()
        level, trend, phi = self._level, self._trend, self._phi

        # h-step errors of the forecasts made at origins t-1 .. t-H (re-derived from the state ring).
        slots = (t - self._h) % H
        pred = self._level_ring[:, slots] + self._phi_sum * self._trend_ring[:, slots] + s_now[:, None]
        errors = y[:, None] - pred
        valid = (observed[:, None] & ((t - self._h)[None, :] >= self._valid_since[:, None])) & ~np.isnan(errors)

        # Score before the errors enter the buffer, so coverage is out of sample.
        self._accuracy.record(t, y, errors, valid, self._offsets[:, 0, :], self._offsets[:, -1, :])

        # Robust anomaly test on the one-step residual.
        residual = y - (level + phi * trend + s_now)
        z = robust_z(residual, self._center, self._scale)
        anomaly = observed & self._initialised & (np.abs(z) > cfg.anomaly_z)
        accepted, shift = advance_runs(self._runs, anomaly, residual, observed, cfg.shift_run)

        self._errors.push(t, errors, valid)

        # State update; flagged and missing observations move the state by its own forecast only.
        use = observed & self._initialised & ~anomaly
        e = np.where(use, residual, 0.0)
        alpha_e = self._alpha * e
        new_level = level + phi * trend + alpha_e + shift
        new_trend = phi * trend + self._beta * alpha_e
        self._season[:, phase] = s_now + np.where(self._seasonal, self._gamma * e, 0.0)

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

        self._detector.accumulate(t, np.where(anomaly, y - residual, y), observed)
        self._refresh_block(t)
        if m > 1:
            self._test_seasonality(t)

        self._level_ring[:, t % H] = self._level
        self._trend_ring[:, t % H] = self._trend
        self._merge_offsets()
        self._tick = t + 1
        return UpdateResult(
            keys=self._keys_tuple,
            tick=t,
            residual=np.where(self._initialised & ~fresh, residual, np.nan),
            zscore=z,
            anomaly=anomaly,
            level_shift=accepted,
            missing=~observed,
        )

    def _refresh_block(self, t: int) -> None:
        """Recompute quantile offsets and the robust residual scale for this tick's block of series."""
        cfg = self.config
        rows = rotating_block(len(self), cfg.refresh_every, t)
        if rows.start == rows.stop:
            return
        block = self._errors.errors[:, rows, :]
        count = self._errors.count[rows]
        self._cached[rows] = empirical_offsets(
            block, count, self._levels, min_errors=cfg.min_errors, widening=cfg.short_history_widening
        )
        one_step = np.ascontiguousarray(block[:, :, 0])
        center, scale = robust_center_scale(one_step, count[:, 0], cfg.scale_floor)
        trusted = count[:, 0] >= cfg.min_errors
        self._center[rows] = np.where(trusted, center, 0.0)
        self._scale[rows] = np.where(trusted, scale, np.inf)

    def _merge_offsets(self) -> None:
        cfg = self.config
        prior = np.maximum(cfg.scale_floor, cfg.prior_relative_scale * np.abs(np.nan_to_num(self._level)))
        sigma1 = np.where(self._res_n >= _EW_MIN_WEIGHT, np.sqrt(self._res_var), prior)
        sigma1 = np.maximum(sigma1, cfg.scale_floor)
        fallback = fallback_offsets(sigma1, self._res_n, self._z, self._sqrt_h, cfg.short_history_widening)
        self._offsets = np.where(np.isnan(self._cached), fallback, self._cached)

    def _test_seasonality(self, t: int) -> None:
        """Run the periodicity test on this tick's block; switch the seasonal component on or off."""
        cfg = self.config
        rows = rotating_block(len(self), cfg.season_test_every, t)
        if rows.start == rows.stop:
            return
        acf = self._detector.strength(rows, t)
        was = self._seasonal[rows]
        turn_on = ~was & (acf >= cfg.seasonality_on)
        turn_off = was & ~(acf >= cfg.seasonality_off)  # NaN (too little data) also turns it off
        base = rows.start
        phase = t % cfg.season_length
        if turn_on.any():
            idx = base + np.flatnonzero(turn_on)
            profile = self._detector.profile(idx, t)
            # The level so far absorbed the current seasonal value; move that part into the season.
            self._level[idx] -= profile[:, phase]
            self._season[idx] = profile
            self._seasonal[idx] = True
            self._valid_since[idx] = t
        if turn_off.any():
            idx = base + np.flatnonzero(turn_off)
            self._level[idx] += self._season[idx, phase]
            self._season[idx] = 0.0
            self._seasonal[idx] = False
            self._valid_since[idx] = t

    # ------------------------------------------------------------------ outputs

    def forecast(self) -> ForecastResult:
        """Mean and quantile forecasts for the next ``horizon`` ticks of every series."""
        m = self.config.season_length
        phases = (self._tick + self._h - 1) % m
        mean = self._level[:, None] + self._phi_sum * self._trend[:, None] + self._season[:, phases]
        values = mean[:, None, :] + self._offsets
        return ForecastResult(
            keys=self._keys_tuple,
            tick=self._tick,
            quantiles=self.quantiles,
            mean=mean,
            values=values,
            lower=values[:, 0, :],
            upper=values[:, -1, :],
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
