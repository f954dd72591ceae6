"""Periodicity test and seasonal-profile initialisation, vectorised over series.

Why a test at all: a seasonal component on a series without a season only adds noise (each of the m
seasonal slots is learnt from one sample a day), so Holt-Winters is only switched on where the data shows a
repeating pattern.

How: observations are averaged into buckets (e.g. half-hours for a daily season). Averaging removes most
sample noise so even a modest daily swing stands out, and the test works on ``n x (history * buckets)``
numbers instead of ``n x (history * season_length)``. The bucket series is detrended with a centred moving
average one season long (edges use the part of the window that exists), which removes slow drifts, trends
and level shifts but keeps the seasonal shape; outliers are winsorised; the statistic is the
autocorrelation at a lag of one season. A series with a daily pattern scores near
``var(season) / (var(season) + var(noise))``; white noise scores near zero.

When a series turns seasonal its seasonal component is initialised from the mean detrended bucket profile,
linearly interpolated to every phase of the season, so the model does not spend days learning it.
"""

from __future__ import annotations

import numpy as np

from apollo.series_arrays import BoolArray, FloatArray, IntArray, grow, select

WINSOR = 3.0  # bucket outliers beyond this many RMS are clipped before the autocorrelation


def bucket_layout(season_length: int, max_buckets: int) -> tuple[int, int]:
    """(buckets per season, samples per bucket): the most buckets <= max_buckets that tile the season."""
    for buckets in range(min(max_buckets, season_length), 0, -1):
        if season_length % buckets == 0:
            return buckets, season_length // buckets
    return 1, season_length  # pragma: no cover - range always reaches 1


def detrend(buckets: FloatArray, period: int) -> FloatArray:
    """Bucket values minus a centred moving average one period long (NaN stays NaN)."""
    ok = ~np.isnan(buckets)
    values = np.where(ok, buckets, 0.0)
    n, length = buckets.shape
    csum = np.zeros((n, length + 1))
    ccnt = np.zeros((n, length + 1))
    np.cumsum(values, axis=1, out=csum[:, 1:])
    np.cumsum(ok, axis=1, out=ccnt[:, 1:])
    idx = np.arange(length)
    lo = np.clip(idx - period // 2, 0, length)
    hi = np.clip(idx - period // 2 + period, 0, length)
    total = csum[:, hi] - csum[:, lo]
    cnt = ccnt[:, hi] - ccnt[:, lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        trend = total / cnt
    return np.where(ok, buckets - trend, np.nan)


def seasonal_autocorrelation(buckets: FloatArray, period: int, min_pairs: int) -> FloatArray:
    """Autocorrelation at lag ``period`` of detrended, winsorised buckets; NaN with < min_pairs pairs."""
    resid = detrend(buckets, period)
    ok = ~np.isnan(resid)
    z = np.where(ok, resid, 0.0)
    cnt = ok.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rms = np.sqrt((z * z).sum(axis=1) / cnt)
    limit = (WINSOR * np.nan_to_num(rms))[:, None]
    z = np.clip(z, -limit, limit)
    a, b = z[:, :-period], z[:, period:]
    pairs = ok[:, :-period] & ok[:, period:]
    a = np.where(pairs, a, 0.0)
    b = np.where(pairs, b, 0.0)
    num = (a * b).sum(axis=1)
    den = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    n_pairs = pairs.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        acf = num / den
    return np.where((n_pairs >= min_pairs) & (den > 0), acf, np.nan)


def seasonal_profile(
    buckets: FloatArray, first_phase: int, period: int, season_length: int, bucket_size: int
) -> FloatArray:
    """Zero-mean seasonal component ``[n, season_length]`` from chronological buckets ``[n, L]``.

    ``first_phase`` is the bucket-of-season index of column 0. Missing buckets are ignored; a bucket
    phase never observed gets 0.
    """
    resid = detrend(buckets, period)
    n, length = resid.shape
    phase_of_col = (first_phase + np.arange(length)) % period
    onehot = (phase_of_col[:, None] == np.arange(period)[None, :]).astype(np.float64)  # [L, B]
    ok = ~np.isnan(resid)
    sums = np.where(ok, resid, 0.0) @ onehot
    cnts = ok.astype(np.float64) @ onehot
    with np.errstate(invalid="ignore", divide="ignore"):
        prof = np.where(cnts > 0, sums / cnts, np.nan)
    prof = prof - np.nanmean(np.where(np.isnan(prof).all(axis=1, keepdims=True), 0.0, prof), axis=1)[:, None]
    prof = np.nan_to_num(prof)
    # Bucket b covers samples [b*size, (b+1)*size); its mean sits at the bucket's centre.
    centre0 = (bucket_size - 1) / 2.0
    u = (np.arange(season_length) - centre0) / bucket_size
    i0 = np.floor(u).astype(np.int64)
    w = u - i0
    i0 %= period
    i1 = (i0 + 1) % period
    return prof[:, i0] * (1.0 - w) + prof[:, i1] * w


class SeasonDetector:
    """Bucket accumulators and ring of bucket means for every series; runs the test on request."""

    def __init__(
        self, n_series: int, season_length: int, max_buckets: int, history: int, min_seasons: int
    ) -> None:
        self.season_length = season_length
        self.period, self.bucket_size = bucket_layout(season_length, max_buckets)
        self.length = self.period * history
        self.min_pairs = self.period * (min_seasons - 1)
        self.acc_sum: FloatArray = np.zeros(n_series)
        self.acc_cnt: IntArray = np.zeros(n_series, dtype=np.int64)
        self.ring: FloatArray = np.full((n_series, self.length), np.nan)

    def accumulate(self, tick: int, values: FloatArray, observed: BoolArray) -> None:
        """Add this tick's values; close the bucket when ``tick`` is its last sample."""
        self.acc_sum += np.where(observed, values, 0.0)
        self.acc_cnt += observed
        if (tick + 1) % self.bucket_size == 0:
            bucket = tick // self.bucket_size
            enough = self.acc_cnt * 2 >= self.bucket_size
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = self.acc_sum / self.acc_cnt
            self.ring[:, bucket % self.length] = np.where(enough, mean, np.nan)
            self.acc_sum[:] = 0.0
            self.acc_cnt[:] = 0

    def chronological(self, rows: slice | IntArray, tick: int) -> tuple[FloatArray, int]:
        """Closed buckets of ``rows`` oldest first, and the bucket phase of the first column."""
        last = (tick + 1) // self.bucket_size - 1  # last closed bucket id after `tick`
        ids = np.arange(last - self.length + 1, last + 1)
        return self.ring[rows][:, ids % self.length], int((last - self.length + 1) % self.period)

    def strength(self, rows: slice | IntArray, tick: int) -> FloatArray:
        buckets, _ = self.chronological(rows, tick)
        return seasonal_autocorrelation(buckets, self.period, self.min_pairs)

    def profile(self, rows: IntArray, tick: int) -> FloatArray:
        buckets, first = self.chronological(rows, tick)
        return seasonal_profile(buckets, first, self.period, self.season_length, self.bucket_size)

    def extend(self, count: int) -> None:
        self.acc_sum = grow(self.acc_sum, count, 0.0)
        self.acc_cnt = grow(self.acc_cnt, count, 0)
        self.ring = grow(self.ring, count, np.nan)

    def take(self, rows: IntArray) -> None:
        self.acc_sum = select(self.acc_sum, rows)
        self.acc_cnt = select(self.acc_cnt, rows)
        self.ring = select(self.ring, rows)
