"""Seeded synthetic node x resource utilisation traces, shared by the unit tests and the benchmark.

Why synthetic: tests and benchmarks must be reproducible and must not need a cluster. Why this much detail:
a generator made of clean sinusoids flatters any seasonal model. These traces carry what real node metrics
carry, drawn per series from wide ranges (the forecaster is never told which):

* a daily pattern for only some series, shaped like a working day (ramps, plateau) mixed with a smooth
  swing, with the cluster's time zone, per-node phase jitter, day-to-day amplitude and phase wobble and a
  weekend dip; disk I/O gets a nightly backup bump;
* slow random-walk drift and linear trends; memory leaks as saw-teeth reset by restarts;
* autocorrelated, heavy-tailed (Student t, 4 d.o.f.) noise that is louder in busy hours;
* bursts (job phases) lasting minutes to an hour, single-sample spikes, persistent level shifts;
* scrape gaps (NaN), mostly short, sometimes hours long;
* everything clipped to the utilisation range [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from apollo.core.domain import RESOURCES as ALL_RESOURCES
from apollo.core.forecasting.arrays import BoolArray, FloatArray, IntArray

# Every forecast resource but GPUs, whose utilisation (jobs holding a device at 0 or 100 %) these
# generators do not model.
RESOURCES: tuple[str, ...] = tuple(r for r in ALL_RESOURCES if r != "gpu")


@dataclass(frozen=True, slots=True)
class KindProfile:
    """Ranges a resource kind's series are drawn from (rates are per day, durations in minutes)."""

    base: tuple[float, float]
    seasonal_share: float
    amplitude: tuple[float, float]
    noise: tuple[float, float]
    ar: tuple[float, float]
    burst_rate: tuple[float, float]
    burst_size: tuple[float, float]
    burst_minutes: float
    shift_rate: float
    shift_size: tuple[float, float]
    spike_rate: float
    leak_share: float = 0.0
    backup_bump: bool = False


KINDS: dict[str, KindProfile] = {
    "cpu": KindProfile((0.15, 0.45), 0.75, (0.05, 0.25), (0.01, 0.04), (0.3, 0.8), (0.5, 4.0),
                       (0.08, 0.3), 45.0, 0.3, (0.05, 0.2), 1.0),
    "memory": KindProfile((0.3, 0.6), 0.35, (0.02, 0.08), (0.003, 0.01), (0.8, 0.95), (0.2, 1.0),
                          (0.05, 0.15), 60.0, 0.4, (0.05, 0.2), 0.3, leak_share=0.4),
    "disk_io": KindProfile((0.05, 0.25), 0.6, (0.04, 0.2), (0.02, 0.06), (0.2, 0.6), (2.0, 8.0),
                           (0.1, 0.4), 20.0, 0.2, (0.05, 0.15), 3.0, backup_bump=True),
    "network": KindProfile((0.1, 0.35), 0.7, (0.05, 0.2), (0.01, 0.04), (0.3, 0.7), (1.0, 5.0),
                           (0.1, 0.3), 30.0, 0.3, (0.05, 0.15), 1.0),
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class SyntheticTraces:
    """Traces ``values[n, T]`` (NaN = scrape gap) with their keys and ground truth.

    Attributes:
        keys: ``(node, resource)`` per row.
        kinds: resource name per row.
        seasonal: whether the row was generated with a daily pattern.
        step_minutes: sample interval; ``season_length`` samples make one day.
    """

    values: FloatArray
    keys: tuple[tuple[str, str], ...]
    kinds: tuple[str, ...]
    seasonal: BoolArray
    step_minutes: int
    season_length: int


def _events(
    rng: np.random.Generator, n: int, steps: int, p_start: FloatArray, p_end: FloatArray
) -> tuple[IntArray, IntArray, IntArray]:
    """Random episodes: (row, start, end) with Bernoulli starts and geometric durations."""
    rows, starts = np.nonzero(rng.uniform(size=(n, steps)) < p_start[:, None])
    durations = rng.geometric(np.clip(p_end[rows], 1e-6, 1.0))
    return rows, starts, np.minimum(starts + durations, steps)


def _hold(episodes: tuple[IntArray, IntArray, IntArray], magnitude: FloatArray, shape: tuple[int, int]) -> FloatArray:
    """Sum over episodes of their magnitude, held from start until the episode ends."""
    rows, starts, ends = episodes
    n, steps = shape
    diff = np.zeros((n, steps + 1))
    np.add.at(diff, (rows, starts), magnitude)
    np.add.at(diff, (rows, ends), -magnitude)
    result: FloatArray = np.cumsum(diff[:, :steps], axis=1)
    return result


def _daily_shape(rng: np.random.Generator, hours: FloatArray, n: int, backup: bool) -> FloatArray:
    """Shapes in [0, 1] evaluated at ``hours`` ``[n, T]`` (local hour of day per series and sample)."""
    start = rng.uniform(7.0, 10.0, n)[:, None]
    end = rng.uniform(17.0, 21.0, n)[:, None]
    width = rng.uniform(0.4, 1.5, n)[:, None]
    rel = (hours - start) % 24.0
    span = end - start
    workday = 1.0 / (1.0 + np.exp(-(rel - 0.0) / width)) - 1.0 / (1.0 + np.exp(-(rel - span) / width))
    workday = np.where(rel > 22.0, 0.0, workday)
    swing = 0.5 + 0.5 * np.cos(2 * np.pi * (hours - rng.uniform(12.0, 17.0, n)[:, None]) / 24.0)
    mix = rng.uniform(0.0, 1.0, n)[:, None]
    shape = mix * workday + (1.0 - mix) * swing
    if backup:
        at = rng.uniform(0.0, 5.0, n)[:, None]
        wide = rng.uniform(0.4, 1.5, n)[:, None]
        dist = (hours - at + 12.0) % 24.0 - 12.0
        shape = shape + rng.uniform(0.5, 1.5, n)[:, None] * np.exp(-0.5 * (dist / wide) ** 2)
    lo, hi = shape.min(axis=1, keepdims=True), shape.max(axis=1, keepdims=True)
    result: FloatArray = (shape - lo) / np.maximum(hi - lo, 1e-9)
    return result


def cluster_traces(
    n_nodes: int,
    days: float,
    *,
    step_minutes: int = 5,
    resources: tuple[str, ...] = RESOURCES,
    seed: int = 0,
) -> SyntheticTraces:
    """Generate ``n_nodes * len(resources)`` traces of ``days`` days (rows node-major)."""
    if n_nodes < 1 or days <= 0 or step_minutes < 1 or 1440 % step_minutes:
        raise ValueError("need n_nodes >= 1, days > 0 and a step that divides a day")
    unknown = [r for r in resources if r not in KINDS]
    if unknown:
        raise ValueError(f"unknown resources {unknown}; known: {sorted(KINDS)}")
    rng = np.random.default_rng(seed)
    per_day = 1440 // step_minutes
    steps = round(days * per_day)
    n = n_nodes * len(resources)
    kinds = tuple(r for _ in range(n_nodes) for r in resources)
    keys = tuple((f"node-{i:05d}", r) for i in range(n_nodes) for r in resources)
    prof = [KINDS[k] for k in kinds]

    def draw(field: str) -> FloatArray:
        lows = np.array([getattr(p, field)[0] for p in prof])
        highs = np.array([getattr(p, field)[1] for p in prof])
        return rng.uniform(lows, highs)

    def per(field: str) -> FloatArray:
        return np.array([float(getattr(p, field)) for p in prof])

    base, amp, noise_sd, ar = draw("base"), draw("amplitude"), draw("noise"), draw("ar")
    burst_rate, burst_lo = draw("burst_rate"), np.array([p.burst_size[0] for p in prof])
    burst_hi = np.array([p.burst_size[1] for p in prof])
    shift_lo, shift_hi = (np.array([p.shift_size[i] for p in prof]) for i in (0, 1))
    seasonal = rng.uniform(size=n) < per("seasonal_share")
    leaky = rng.uniform(size=n) < per("leak_share")

    # Daily pattern: cluster time zone, node jitter, per-day amplitude/phase wobble and a weekend dip.
    t = np.arange(steps)
    day = t // per_day
    n_days = int(day[-1]) + 1
    tz = rng.uniform(0.0, 24.0)
    node_jitter = np.repeat(rng.normal(0.0, 0.75, n_nodes), len(resources))
    day_phase = rng.normal(0.0, 0.3, (n, n_days))
    hours = (t * step_minutes / 60.0 + tz + node_jitter[:, None] + day_phase[:, day]) % 24.0
    backup = np.array([p.backup_bump for p in prof])
    shape = np.zeros((n, steps))
    for flag in (False, True):
        rows = np.flatnonzero((backup == flag) & seasonal)
        if rows.size:
            shape[rows] = _daily_shape(rng, hours[rows], rows.size, flag)
    weekday0 = int(rng.integers(0, 7))
    weekend = ((np.arange(n_days) + weekday0) % 7) >= 5
    day_amp = 1.0 + rng.normal(0.0, 0.1, (n, n_days))
    day_amp = day_amp * np.where(weekend, rng.uniform(0.6, 0.95, (n, 1)), 1.0)
    daily = np.where(seasonal[:, None], amp[:, None] * day_amp[:, day] * shape, 0.0)
    busy = np.where(seasonal[:, None], shape, 0.5)

    # Slow drift (random walk + linear trend) and persistent level shifts, pushed towards mid-range.
    drift = (
        np.cumsum(rng.normal(0.0, 1.0, (n, steps)), axis=1) * (rng.uniform(0.005, 0.03, n) / np.sqrt(per_day))[:, None]
    )
    drift += np.outer(rng.uniform(-0.02, 0.02, n) / per_day, t)
    level = base[:, None] + drift
    rows, cols = np.nonzero(rng.uniform(size=(n, steps)) < (per("shift_rate") / per_day)[:, None])
    towards_middle = np.where(level[rows, cols] < 0.45, 1.0, -1.0)
    sign = np.where(rng.uniform(size=rows.size) < 0.7, towards_middle, -towards_middle)
    jumps = np.zeros((n, steps))
    np.add.at(jumps, (rows, cols), sign * rng.uniform(shift_lo[rows], shift_hi[rows]))
    level = np.clip(level + np.cumsum(jumps, axis=1), 0.02, 0.9)

    # Bursts (job phases): random starts, geometric durations, overlapping bursts add up.
    bursts = _events(rng, n, steps, burst_rate / per_day, step_minutes / per("burst_minutes"))
    b_rows = bursts[0]
    sizes = rng.uniform(burst_lo[b_rows], burst_hi[b_rows])
    sizes *= np.where(rng.uniform(size=b_rows.size) < 0.9, 1.0, -0.5)
    burst = _hold(bursts, sizes, (n, steps))

    # Memory leaks: saw-teeth reset by restarts.
    leaky_slope = np.where(leaky, rng.uniform(0.02, 0.08, n), 0.0) / per_day
    restart = rng.uniform(size=(n, steps)) < 0.3 / per_day
    restart[:, 0] = True
    last_restart = np.maximum.accumulate(np.where(restart, t, 0), axis=1)
    leak = leaky_slope[:, None] * (t - last_restart)

    # AR(1) heavy-tailed noise, louder in busy hours; single-sample spikes.
    innov = rng.standard_t(4.0, (n, steps)) / np.sqrt(2.0) * noise_sd[:, None] * (0.6 + busy)
    innov *= np.sqrt(1.0 - ar * ar)[:, None]
    noise = np.ascontiguousarray(innov.T)  # time-major so the recursion walks contiguous rows
    for i in range(1, steps):
        noise[i] += ar * noise[i - 1]
    spikes = np.zeros((n, steps))
    rows, cols = np.nonzero(rng.uniform(size=(n, steps)) < (per("spike_rate") / per_day)[:, None])
    spikes[rows, cols] = rng.uniform(0.15, 0.5, rows.size)
    values = level + daily + leak + burst + noise.T + spikes

    # Scrape gaps: ~1.5 a day, a couple of samples each.
    gaps = _events(rng, n, steps, np.full(n, 1.5 / per_day), np.full(n, 0.5))
    values[_hold(gaps, np.ones(gaps[0].size), (n, steps)) > 0] = np.nan

    # A few series lose their exporter for hours.
    long_gap = rng.uniform(size=n) < 0.03
    for row in np.flatnonzero(long_gap):
        length = int(rng.uniform(1.0, 6.0) * per_day / 24)
        at = int(rng.integers(0, max(1, steps - length)))
        values[row, at : at + length] = np.nan
    np.clip(values, 0.0, 1.0, out=values)
    return SyntheticTraces(
        values=values,
        keys=keys,
        kinds=kinds,
        seasonal=seasonal,
        step_minutes=step_minutes,
        season_length=per_day,
    )
