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

import warnings

import numpy as np

from apollo.core.forecasting.arrays import BoolArray, Float32Array, FloatArray, IntArray, grow, select

WINSOR = 3.0  # bucket outliers beyond this many RMS are clipped before the autocorrelation


def bucket_layout(season_length: int, max_buckets: int) -> tuple[int, int]:
    """(buckets per season, samples per bucket): the most buckets <= max_buckets that tile the season."""
    for buckets in range(min(max_buckets, season_length), 0, -1):
        if season_length % buckets == 0:
            return buckets, season_length // buckets
    return 1, season_length  # pragma: no cover - range always reaches 1


def detrend(buckets: FloatArray, period: int) -> FloatArray:
    """Bucket values ``[L, n]`` (time-major) minus a centred moving average one period long (NaN stays)."""
    ok = ~np.isnan(buckets)
    length, n = buckets.shape
    csum = np.zeros((length + 1, n))
    ccnt = np.zeros((length + 1, n))
    np.cumsum(np.where(ok, buckets, 0.0), axis=0, out=csum[1:])
    np.cumsum(ok, axis=0, out=ccnt[1:])
    idx = np.arange(length)
    lo = np.clip(idx - period // 2, 0, length)
    hi = np.clip(idx - period // 2 + period, 0, length)
    with np.errstate(invalid="ignore", divide="ignore"):
        trend = (csum[hi] - csum[lo]) / (ccnt[hi] - ccnt[lo])
    result: FloatArray = buckets - trend
    return result


def seasonal_autocorrelation(buckets: FloatArray, period: int, min_pairs: int) -> FloatArray:
    """Autocorrelation at lag ``period`` of detrended, winsorised buckets ``[L, n]``.

    NaN for series with fewer than ``min_pairs`` pairs of present buckets one period apart.
    """
    resid = detrend(buckets, period)
    ok = ~np.isnan(resid)
    z = np.where(ok, resid, 0.0)
    cnt = ok.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        rms = np.sqrt((z * z).sum(axis=0) / cnt)
    limit = WINSOR * np.nan_to_num(rms)
    np.clip(z, -limit, limit, out=z)
    pairs = ok[:-period] & ok[period:]
    a = np.where(pairs, z[:-period], 0.0)
    b = np.where(pairs, z[period:], 0.0)
    num = (a * b).sum(axis=0)
    den = np.sqrt((a * a).sum(axis=0) * (b * b).sum(axis=0))
    n_pairs = pairs.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        acf = num / den
    result: FloatArray = np.where((n_pairs >= min_pairs) & (den > 0), acf, np.nan)
    return result


def seasonal_profile(
    buckets: FloatArray, first_phase: int, period: int, season_length: int, bucket_size: int
) -> FloatArray:
    """Zero-mean seasonal component ``[season_length, n]`` from chronological buckets ``[L, n]``.

    ``L`` must be a whole number of periods. ``first_phase`` is the bucket-of-season index of row 0.
    Per bucket phase, the median over seasons of the detrended bucket means; missing buckets are
    ignored and a phase never observed gets 0.
    """
    resid = detrend(buckets, period)
    length, n = resid.shape
    # Reorder rows so row j has bucket phase j % period, then take the median across seasons: a burst
    # on one day must not become part of every following day's forecast.
    by_phase = resid[(np.arange(length) - first_phase) % length].reshape(length // period, period, n)
    seen = ~np.isnan(by_phase).all(axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN phases are handled below
        prof = np.nanmedian(by_phase, axis=0)  # [B, n]
        mean = np.nanmean(np.where(seen, prof, np.nan), axis=0)
    prof = np.where(seen, prof - np.nan_to_num(mean), 0.0)
    # Bucket b covers samples [b*size, (b+1)*size); its mean sits at the bucket's centre.
    centre0 = (bucket_size - 1) / 2.0
    u = (np.arange(season_length) - centre0) / bucket_size
    i0 = np.floor(u).astype(np.int64)
    w = (u - i0)[:, None]
    i0 %= period
    i1 = (i0 + 1) % period
    result: FloatArray = prof[i0] * (1.0 - w) + prof[i1] * w
    return result


class SeasonDetector:
    """Bucket accumulators and a ring of bucket means ``[L, n]`` for every series; runs the test."""

    def __init__(self, n_series: int, season_length: int, max_buckets: int, history: int, min_seasons: int) -> None:
        self.season_length = season_length
        self.period, self.bucket_size = bucket_layout(season_length, max_buckets)
        self.length = self.period * history
        self.min_pairs = self.period * (min_seasons - 1)
        self.acc_sum: FloatArray = np.zeros(n_series)
        self.acc_cnt: IntArray = np.zeros(n_series, dtype=np.int64)
        # Bucket means in float32 (half the memory; the test needs nowhere near 7 digits), read as float64.
        self.ring: Float32Array = np.full((self.length, n_series), np.nan, dtype=np.float32)

    def accumulate(self, tick: int, values: FloatArray, observed: BoolArray) -> None:
        """Add this tick's values; close the bucket when ``tick`` is its last sample."""
        self.acc_sum += np.where(observed, values, 0.0)
        self.acc_cnt += observed
        if (tick + 1) % self.bucket_size == 0:
            bucket = tick // self.bucket_size
            enough = self.acc_cnt * 2 >= self.bucket_size
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = self.acc_sum / self.acc_cnt
            self.ring[bucket % self.length] = np.where(enough, mean, np.nan)
            self.acc_sum[:] = 0.0
            self.acc_cnt[:] = 0

    def seed(self, buckets: FloatArray, last_bucket: int) -> None:
        """Write bucket means ``[n, L]`` for buckets ``last_bucket - L + 1 .. last_bucket`` into the ring."""
        length = buckets.shape[1]
        keep = min(length, self.length)
        ids = np.arange(last_bucket - keep + 1, last_bucket + 1)
        self.ring[ids % self.length] = buckets[:, length - keep :].T

    def chronological(self, rows: slice | IntArray, tick: int) -> tuple[FloatArray, int]:
        """Closed buckets ``[L, k]`` of ``rows``, oldest first, and the bucket phase of the first row."""
        last = (tick + 1) // self.bucket_size - 1  # last closed bucket id after `tick`
        ids = np.arange(last - self.length + 1, last + 1) % self.length
        return self.ring[:, rows][ids].astype(np.float64), int((last - self.length + 1) % self.period)

    def strength(self, rows: slice | IntArray, tick: int) -> FloatArray:
        buckets, _ = self.chronological(rows, tick)
        return seasonal_autocorrelation(buckets, self.period, self.min_pairs)

    def profile(self, rows: IntArray, tick: int) -> FloatArray:
        """Seasonal component ``[season_length, k]`` for ``rows``."""
        buckets, first = self.chronological(rows, tick)
        return seasonal_profile(buckets, first, self.period, self.season_length, self.bucket_size)

    def extend(self, count: int) -> None:
        self.acc_sum = grow(self.acc_sum, count, 0.0)
        self.acc_cnt = grow(self.acc_cnt, count, 0)
        self.ring = grow(self.ring, count, np.nan, axis=1)

    def take(self, rows: IntArray) -> None:
        self.acc_sum = select(self.acc_sum, rows)
        self.acc_cnt = select(self.acc_cnt, rows)
        self.ring = select(self.ring, rows, axis=1)
