"""Seeded synthetic node x resource utilisation traces, shared by the unit tests and the benchmark.

Why synthetic: tests and benchmarks must be reproducible and must not need a cluster, and no labelled
cloud traces are available offline. Why this much variety: a generator made of clean sinusoids flatters
any seasonal model, and one made of smooth curves flatters any smoother. Real node metrics come in a
few recognisable shapes, so every series is drawn from an archetype (chosen per resource kind with the
mix in :data:`MIX`, parameters drawn per series from wide ranges; the forecaster is never told which):

* ``diurnal``: a daily pattern shaped like a working day (ramps, plateau) mixed with a smooth swing, with
  the cluster's time zone, per-node phase jitter, day-to-day amplitude and phase wobble and a weekend
  dip (disk I/O gets a nightly backup bump), AR noise that is louder in busy hours, bursts;
* ``noisy``: a steady level under loud measurement noise and short bursts;
* ``flat_steps``: flat for hours, then a step to a new level (a pod placed or gone, a cache filled),
  with almost no noise;
* ``quantised``: GPU utilisation, jobs holding whole devices for hours, so the node's value moves in
  steps of one device's share;
* ``spiky``: a low base with frequent short spikes (batch I/O, cron jobs);
* ``trending``: random-walk drift, linear trends and memory-leak saw-teeth reset by restarts.

On top of every archetype: rare single-sample spikes, persistent level shifts, scrape gaps (NaN, mostly
short, sometimes hours long), everything clipped to the utilisation range [0, 1]. Samples stand for
``step_minutes`` means (what APOLLO forecasts), with AR coefficients given per 5 minutes and converted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from apollo.core.domain import RESOURCES
from apollo.core.forecasting.arrays import BoolArray, FloatArray, IntArray

Range = tuple[float, float]


@dataclass(frozen=True, slots=True)
class Archetype:
    """Ranges an archetype's series are drawn from (rates per day, durations in minutes, AR per 5 min)."""

    base: Range
    seasonal_share: float = 0.0
    amplitude: Range = (0.0, 0.0)
    noise: Range = (0.0, 0.0)
    ar: Range = (0.0, 0.0)
    white: Range = (0.0, 0.0)
    burst_rate: Range = (0.0, 0.0)
    burst_size: Range = (0.05, 0.2)
    burst_minutes: float = 30.0
    shift_rate: float = 0.0
    shift_size: Range = (0.05, 0.15)
    spike_rate: float = 0.0
    spike_size: Range = (0.15, 0.5)
    drift: Range = (0.005, 0.02)
    trend: float = 0.0
    leak_share: float = 0.0
    quantum: float = 0.0


ARCHETYPES: dict[str, Archetype] = {
    "diurnal": Archetype(base=(0.1, 0.4), seasonal_share=1.0, amplitude=(0.05, 0.3), noise=(0.01, 0.04),
                         ar=(0.3, 0.8), white=(0.0, 0.01), burst_rate=(0.5, 3.0), burst_size=(0.08, 0.3),
                         burst_minutes=45.0, shift_rate=0.2, spike_rate=0.5),
    "noisy": Archetype(base=(0.2, 0.6), noise=(0.01, 0.03), ar=(0.2, 0.6), white=(0.02, 0.06),
                       burst_rate=(0.5, 3.0), burst_size=(0.05, 0.2), burst_minutes=20.0, shift_rate=0.2,
                       spike_rate=1.0),
    "flat_steps": Archetype(base=(0.1, 0.7), white=(0.0005, 0.003), shift_rate=4.0, shift_size=(0.02, 0.15),
                            drift=(0.0, 0.002), quantum=0.005),
    "quantised": Archetype(base=(0.0, 0.0), white=(0.005, 0.02), drift=(0.0, 0.0)),
    "spiky": Archetype(base=(0.02, 0.12), noise=(0.005, 0.02), ar=(0.1, 0.5), burst_rate=(2.0, 8.0),
                       burst_size=(0.1, 0.4), burst_minutes=10.0, spike_rate=20.0, spike_size=(0.1, 0.6)),
    "trending": Archetype(base=(0.2, 0.5), noise=(0.003, 0.015), ar=(0.7, 0.95), white=(0.0, 0.005),
                          shift_rate=0.3, drift=(0.02, 0.06), trend=0.05, leak_share=0.5),
}  # fmt: skip

# Which archetypes each resource kind is drawn from, with their probabilities.
MIX: dict[str, dict[str, float]] = {
    "cpu": {"diurnal": 0.4, "noisy": 0.25, "trending": 0.15, "flat_steps": 0.1, "spiky": 0.1},
    "memory": {"flat_steps": 0.35, "trending": 0.35, "diurnal": 0.2, "noisy": 0.1},
    "disk_io": {"spiky": 0.4, "diurnal": 0.3, "noisy": 0.3},
    "network": {"diurnal": 0.45, "noisy": 0.3, "spiky": 0.25},
    "gpu": {"quantised": 0.8, "flat_steps": 0.2},
}

# GPU jobs: devices per node, devices per job, hours a job holds them, jobs started per day.
_GPUS = (4, 8)
_JOB_GPUS = np.array([1, 1, 2, 4])
_JOB_HOURS = (1.0, 8.0)
_JOBS_PER_DAY = (2.0, 10.0)


@dataclass(frozen=True, slots=True)
class SyntheticTraces:
    """Traces ``values[n, T]`` (NaN = scrape gap) with their keys and ground truth.

    Attributes:
        keys: ``(node, resource)`` per row.
        kinds: resource name per row.
        archetypes: archetype name per row (see :data:`ARCHETYPES`).
        seasonal: whether the row was generated with a daily pattern.
        step_minutes: sample interval; ``season_length`` samples make one day.
    """

    values: FloatArray
    keys: tuple[tuple[str, str], ...]
    kinds: tuple[str, ...]
    archetypes: tuple[str, ...]
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


def _daily_shape(rng: np.random.Generator, hours: FloatArray, n: int, backup: BoolArray) -> FloatArray:
    """Shapes in [0, 1] evaluated at ``hours`` ``[n, T]`` (local hour of day per series and sample)."""
    start = rng.uniform(7.0, 10.0, n)[:, None]
    end = rng.uniform(17.0, 21.0, n)[:, None]
    width = rng.uniform(0.4, 1.5, n)[:, None]
    rel = (hours - start) % 24.0
    span = end - start
    workday = 1.0 / (1.0 + np.exp(-rel / width)) - 1.0 / (1.0 + np.exp(-(rel - span) / width))
    workday = np.where(rel > 22.0, 0.0, workday)
    swing = 0.5 + 0.5 * np.cos(2 * np.pi * (hours - rng.uniform(12.0, 17.0, n)[:, None]) / 24.0)
    mix = rng.uniform(0.0, 1.0, n)[:, None]
    shape = mix * workday + (1.0 - mix) * swing
    at = rng.uniform(0.0, 5.0, n)[:, None]
    wide = rng.uniform(0.4, 1.5, n)[:, None]
    dist = (hours - at + 12.0) % 24.0 - 12.0
    bump = rng.uniform(0.5, 1.5, n)[:, None] * np.exp(-0.5 * (dist / wide) ** 2)
    shape = shape + np.where(backup[:, None], bump, 0.0)
    lo, hi = shape.min(axis=1, keepdims=True), shape.max(axis=1, keepdims=True)
    result: FloatArray = (shape - lo) / np.maximum(hi - lo, 1e-9)
    return result


def _gpu_busy(rng: np.random.Generator, n: int, steps: int, per_day: int) -> FloatArray:
    """Share of a node's GPUs held by jobs ``[n, T]``: whole devices, held for hours."""
    gpus = rng.choice(np.array(_GPUS), n).astype(np.float64)
    rate = rng.uniform(*_JOBS_PER_DAY, n) / per_day
    hours = rng.uniform(*_JOB_HOURS, n)
    jobs = _events(rng, n, steps, rate, 1.0 / (hours * per_day / 24.0))
    sizes = rng.choice(_JOB_GPUS, jobs[0].size).astype(np.float64)
    held = np.minimum(_hold(jobs, sizes, (n, steps)), gpus[:, None])
    util = rng.uniform(0.85, 1.0, n)[:, None]
    result: FloatArray = held / gpus[:, None] * util
    return result


def _choose_archetypes(rng: np.random.Generator, kinds: tuple[str, ...]) -> tuple[str, ...]:
    out = []
    for kind in kinds:
        names = list(MIX[kind])
        probs = np.array([MIX[kind][a] for a in names])
        out.append(names[int(rng.choice(len(names), p=probs / probs.sum()))])
    return tuple(out)


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
    unknown = [r for r in resources if r not in MIX]
    if unknown:
        raise ValueError(f"unknown resources {unknown}; known: {sorted(MIX)}")
    rng = np.random.default_rng(seed)
    per_day = 1440 // step_minutes
    steps = round(days * per_day)
    n = n_nodes * len(resources)
    kinds = tuple(r for _ in range(n_nodes) for r in resources)
    keys = tuple((f"node-{i:05d}", r) for i in range(n_nodes) for r in resources)
    archetypes = _choose_archetypes(rng, kinds)
    prof = [ARCHETYPES[a] for a in archetypes]

    def draw(field: str) -> FloatArray:
        lows = np.array([getattr(p, field)[0] for p in prof])
        highs = np.array([getattr(p, field)[1] for p in prof])
        return rng.uniform(lows, highs)

    def per(field: str) -> FloatArray:
        return np.array([float(getattr(p, field)) for p in prof])

    base, amp, noise_sd, white_sd = draw("base"), draw("amplitude"), draw("noise"), draw("white")
    ar = draw("ar") ** (step_minutes / 5.0)
    seasonal = rng.uniform(size=n) < per("seasonal_share")
    leaky = rng.uniform(size=n) < per("leak_share")
    t = np.arange(steps)

    # Daily pattern: cluster time zone, node jitter, per-day amplitude/phase wobble and a weekend dip.
    day = t // per_day
    n_days = int(day[-1]) + 1
    tz = rng.uniform(0.0, 24.0)
    node_jitter = np.repeat(rng.normal(0.0, 0.75, n_nodes), len(resources))
    day_phase = rng.normal(0.0, 0.3, (n, n_days))
    hours = (t * step_minutes / 60.0 + tz + node_jitter[:, None] + day_phase[:, day]) % 24.0
    shape = np.zeros((n, steps))
    rows = np.flatnonzero(seasonal)
    if rows.size:
        backup = np.array([kinds[i] == "disk_io" for i in rows])
        shape[rows] = _daily_shape(rng, hours[rows], rows.size, backup)
    weekday0 = int(rng.integers(0, 7))
    weekend = ((np.arange(n_days) + weekday0) % 7) >= 5
    day_amp = 1.0 + rng.normal(0.0, 0.1, (n, n_days))
    day_amp = day_amp * np.where(weekend, rng.uniform(0.6, 0.95, (n, 1)), 1.0)
    daily = np.where(seasonal[:, None], amp[:, None] * day_amp[:, day] * shape, 0.0)
    busy = np.where(seasonal[:, None], shape, 0.5)

    # Slow drift (random walk + linear trend) and persistent level shifts, pushed towards mid-range.
    drift = np.cumsum(rng.normal(0.0, 1.0, (n, steps)), axis=1) * (draw("drift") / np.sqrt(per_day))[:, None]
    drift += np.outer(rng.uniform(-1.0, 1.0, n) * per("trend") / per_day, t)
    level = base[:, None] + drift
    rows, cols = np.nonzero(rng.uniform(size=(n, steps)) < (per("shift_rate") / per_day)[:, None])
    towards_middle = np.where(level[rows, cols] < 0.45, 1.0, -1.0)
    sign = np.where(rng.uniform(size=rows.size) < 0.7, towards_middle, -towards_middle)
    lo, hi = (np.array([p.shift_size[i] for p in prof]) for i in (0, 1))
    jumps = np.zeros((n, steps))
    np.add.at(jumps, (rows, cols), sign * rng.uniform(lo[rows], hi[rows]))
    level = np.clip(level + np.cumsum(jumps, axis=1), 0.02, 0.9)
    gpu_rows = np.array([a == "quantised" for a in archetypes])
    if gpu_rows.any():
        level[gpu_rows] = _gpu_busy(rng, int(gpu_rows.sum()), steps, per_day)

    # Bursts (job phases): random starts, geometric durations, overlapping bursts add up.
    bursts = _events(rng, n, steps, draw("burst_rate") / per_day, step_minutes / per("burst_minutes"))
    b_rows = bursts[0]
    lo, hi = (np.array([p.burst_size[i] for p in prof]) for i in (0, 1))
    sizes = rng.uniform(lo[b_rows], hi[b_rows]) * np.where(rng.uniform(size=b_rows.size) < 0.9, 1.0, -0.5)
    burst = _hold(bursts, sizes, (n, steps))

    # Memory leaks: saw-teeth reset by restarts.
    leaky_slope = np.where(leaky, rng.uniform(0.02, 0.08, n), 0.0) / per_day
    restart = rng.uniform(size=(n, steps)) < 0.3 / per_day
    restart[:, 0] = True
    last_restart = np.maximum.accumulate(np.where(restart, t, 0), axis=1)
    leak = leaky_slope[:, None] * (t - last_restart)

    # AR(1) heavy-tailed noise, louder in busy hours; white measurement noise; single-sample spikes.
    innov = rng.standard_t(4.0, (n, steps)) / np.sqrt(2.0) * noise_sd[:, None] * (0.6 + busy)
    innov *= np.sqrt(1.0 - ar * ar)[:, None]
    noise = np.ascontiguousarray(innov.T)  # time-major so the recursion walks contiguous rows
    for i in range(1, steps):
        noise[i] += ar * noise[i - 1]
    white = rng.standard_normal((n, steps)) * white_sd[:, None]
    spikes = np.zeros((n, steps))
    rows, cols = np.nonzero(rng.uniform(size=(n, steps)) < (per("spike_rate") / per_day)[:, None])
    lo, hi = (np.array([p.spike_size[i] for p in prof]) for i in (0, 1))
    spikes[rows, cols] = rng.uniform(lo[rows], hi[rows])
    values = level + daily + leak + burst + noise.T + white + spikes

    quantum = per("quantum")
    stepped = quantum > 0
    values[stepped] = np.round(values[stepped] / quantum[stepped, None]) * quantum[stepped, None]

    # Scrape gaps: ~1.5 a day, a couple of samples each; a few series lose their exporter for hours.
    gaps = _events(rng, n, steps, np.full(n, 1.5 / per_day), np.full(n, 0.5))
    values[_hold(gaps, np.ones(gaps[0].size), (n, steps)) > 0] = np.nan
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
        archetypes=archetypes,
        seasonal=seasonal,
        step_minutes=step_minutes,
        season_length=per_day,
    )


ANOMALY_KINDS = ("spike", "level_shift", "drift", "variance_burst")


@dataclass(frozen=True, slots=True)
class LabelledAnomalies:
    """Anomalies injected into traces: ``values`` with them, and one labelled window per anomaly.

    A detection anywhere in ``[start, end)`` of a window counts for it; ``end`` includes a short
    tolerance after the anomaly itself (a detector may need a sample or two to be sure).
    """

    values: FloatArray
    row: IntArray
    start: IntArray
    end: IntArray
    kind: tuple[str, ...]

    def window_mask(self) -> BoolArray:
        """``[n, T]``: True inside some labelled window (flags there are not false flags)."""
        mask = np.zeros(self.values.shape, dtype=np.bool_)
        for r, a, b in zip(self.row.tolist(), self.start.tolist(), self.end.tolist(), strict=True):
            mask[r, a:b] = True
        return mask


def _local_sigma(values: FloatArray, per_hour: int) -> FloatArray:
    """Per series: the standard deviation of values around their centred one-hour mean (floored)."""
    filled = np.where(np.isnan(values), np.nanmean(values, axis=1, keepdims=True), values)
    kernel = np.ones(per_hour) / per_hour
    smooth = np.apply_along_axis(lambda v: np.convolve(v, kernel, mode="same"), 1, filled)
    result: FloatArray = np.maximum(np.nanstd(values - smooth, axis=1), 0.01)
    return result


def inject_anomalies(
    values: FloatArray, *, first: int, per_day: float = 1.0, step_minutes: int = 5, seed: int = 0
) -> LabelledAnomalies:
    """Inject labelled anomalies into copies of ``values`` ``[n, T]`` from column ``first`` on.

    Kinds, sizes relative to each series' own short-term variability (``sigma``) so a noisy series gets
    proportionally larger ones: a spike (one sample, +4..10 sigma), a level shift (persistent, +-3..6
    sigma), a slow drift (a ramp of 3..6 sigma over 2-6 hours, then held), a variance burst (noise of
    3..6 sigma for 1-3 hours). About ``per_day`` anomalies per series and day, at least six hours apart.
    Windows: the anomaly plus three samples (spike, burst); the first hour (level shift: afterwards it is
    the series' new normal); the ramp plus an hour (drift). Values stay clipped to [0, 1].
    """
    rng = np.random.default_rng(seed)
    out = values.copy()
    n, steps = out.shape
    per_step_day = 1440 // step_minutes
    hour = 60 // step_minutes
    sigma = _local_sigma(values[:, :first] if first > hour else values, hour)
    rows: list[int] = []
    starts: list[int] = []
    ends: list[int] = []
    kinds: list[str] = []
    gap = 6 * hour
    count = max(1, round(per_day * (steps - first) / per_step_day))
    for r in range(n):
        at = first + hour
        for _ in range(count):
            at += int(rng.integers(gap, max(gap + 1, (steps - first) // count)))
            if at >= steps - 4 * hour:
                break
            kind = ANOMALY_KINDS[int(rng.integers(len(ANOMALY_KINDS)))]
            s = sigma[r]
            sign = 1.0 if out[r, at - 1] < 0.5 or np.isnan(out[r, at - 1]) else -1.0
            if kind == "spike":
                out[r, at] += sign * rng.uniform(4.0, 10.0) * s
                end = at + 1 + 3
            elif kind == "level_shift":
                out[r, at:] += sign * rng.uniform(3.0, 6.0) * s
                end = at + hour
            elif kind == "drift":
                length = int(rng.uniform(2.0, 6.0) * hour)
                ramp = np.minimum(np.arange(steps - at) / length, 1.0)
                out[r, at:] += sign * rng.uniform(3.0, 6.0) * s * ramp
                end = at + length + hour
            else:
                length = int(rng.uniform(1.0, 3.0) * hour)
                stop = min(steps, at + length)
                out[r, at:stop] += rng.normal(0.0, rng.uniform(3.0, 6.0) * s, stop - at)
                end = stop + 3
            rows.append(r)
            starts.append(at)
            ends.append(min(steps, end))
            kinds.append(kind)
            at = end
    np.clip(out, 0.0, 1.0, out=out)
    return LabelledAnomalies(
        values=out,
        row=np.array(rows, dtype=np.int64),
        start=np.array(starts, dtype=np.int64),
        end=np.array(ends, dtype=np.int64),
        kind=tuple(kinds),
    )
