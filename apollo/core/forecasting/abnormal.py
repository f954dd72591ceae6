""" "This node is behaving abnormally": rare, reported and penalised, unlike the state gate's outliers.

Two questions are easy to confuse. The gate in :mod:`apollo.core.forecasting.anomaly` asks "should this
sample move the model's state?"; it may say no often and cheaply, because a wrong answer costs one sample
of smoothing. This module asks "is the node misbehaving?", and every yes costs the node score points at
scheduling time, so a false yes is scheduling noise. It must therefore stay quiet on what real node
metrics do all day: sit flat, move in quantised steps, spike now and then.

Why the gate's robust z cannot be used for that: on a flat series the MAD of recent one-step residuals is
close to zero, so the first ordinary step has an enormous z. Here the residual is divided by a scale
that cannot collapse, the largest of:

* the typical residual over a day: an exponentially weighted mean absolute residual whose updates are
  clipped at ``CLIP`` scales, so a burst barely inflates it (a robust M-estimate without a window);
* the series' routine extremes: a running estimate of the ``tail_p`` quantile of |residual| (99 % = the
  largest three samples a day at 5-minute steps), divided by ``tail_z``. A series that spikes every hour
  or steps between GPU counts several times a day does so routinely, and such moves stay below the
  threshold; a series that never moves gets no such allowance;
* ``rel_spread`` times how far the (deseasonalised) series strays from its own day-long mean, so a series
  that steps between levels is judged against the size of its steps, not against its flat stretches;
* ``rel_level`` times the series' level, and an absolute ``floor`` (0.5 percentage point).

A sample is abnormal when ``|residual| >= spike_z * scale``. Chosen on labelled anomalies injected into
synthetic traces with seeds the benchmark does not use (``bench.forecast`` scores it against a rolling
z-score on other seeds): a persistence rule (CUSUM of the excess) and a test of the level against the
day's mean were tried on top and each cost more false flags than the recall they added.

State is O(1) numbers per series, updated in place each tick; nothing is flagged before ``warmup``
samples (a day's statistics need a while to mean anything).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from apollo.core.forecasting.arrays import BoolArray, FloatArray, IntArray, grow, select

ABS_TO_SIGMA = 1.2533  # mean absolute deviation of a normal distribution times this is its sigma
CLIP = 3.0  # a residual moves the typical residual by at most this many current scales


@dataclass(frozen=True, slots=True)
class AbnormalConfig:
    """Thresholds of the abnormal-behaviour test (see the module docstring); validated by BankConfig.

    ``window`` and ``warmup`` are in ticks; ``tail_rate`` is the quantile estimate's step in scales.
    """

    window: int = 288
    warmup: int = 72
    spike_z: float = 4.5
    tail_p: float = 0.99
    tail_z: float = 4.0
    tail_rate: float = 0.5
    rel_spread: float = 0.1
    rel_level: float = 0.02
    floor: float = 0.005


@dataclass(frozen=True, slots=True)
class AbnormalStep:
    """One tick's verdict per series: flags, and ``|residual| / scale`` (NaN while warming up or missing)."""

    abnormal: BoolArray
    score: FloatArray


class AbnormalDetector:
    """Typical residual, routine extreme, base and spread per series."""

    _FIELDS = ("res_abs", "tail", "base", "spread")

    def __init__(self, n_series: int, config: AbnormalConfig) -> None:
        self.config = config
        self.rate = 1.0 / config.window
        self.res_abs: FloatArray = np.full(n_series, np.nan)
        self.tail: FloatArray = np.full(n_series, np.nan)
        self.base: FloatArray = np.full(n_series, np.nan)
        self.spread: FloatArray = np.full(n_series, np.nan)
        self.seen: IntArray = np.zeros(n_series, dtype=np.int64)

    def scale(self) -> FloatArray:
        """The residual scale the test divides by (see the module docstring)."""
        c = self.config
        scale = np.fmax(ABS_TO_SIGMA * self.res_abs, self.tail / c.tail_z)
        scale = np.fmax(scale, np.fmax(c.rel_spread * self.spread, c.rel_level * np.abs(self.base)))
        result: FloatArray = np.fmax(scale, c.floor)
        return result

    def step(self, residual: FloatArray, deseasoned: FloatArray, observed: BoolArray) -> AbnormalStep:
        """Judge this tick's one-step ``residual`` (NaN where not known), then learn from it.

        ``deseasoned`` is the observation minus its seasonal component (NaN-free where ``observed``).
        Missing samples leave everything unchanged.
        """
        c = self.config
        usable = observed & ~np.isnan(residual)
        scale = self.scale()
        with np.errstate(invalid="ignore"):
            score = np.where(usable, np.abs(residual) / scale, np.nan)
        ready = self.seen >= c.warmup
        abnormal = ready & (np.nan_to_num(score) >= c.spike_z)
        self._learn(residual, deseasoned, usable, observed, scale)
        return AbnormalStep(abnormal=abnormal, score=np.where(ready, score, np.nan))

    def _learn(
        self, residual: FloatArray, deseasoned: FloatArray, usable: BoolArray, observed: BoolArray, scale: FloatArray
    ) -> None:
        r, c = self.rate, self.config
        size = np.abs(np.nan_to_num(residual))
        clipped = np.minimum(size, CLIP * scale)
        typical = np.where(np.isnan(self.res_abs), clipped, self.res_abs + r * (clipped - self.res_abs))
        self.res_abs = np.where(usable, typical, self.res_abs)
        # Stochastic approximation of the tail_p quantile: up by tail_p steps on an exceedance, down by
        # 1 - tail_p steps otherwise, so it settles where a 1 - tail_p share of residuals exceed it.
        move = c.tail_rate * scale * np.where(size > self.tail, c.tail_p, -(1.0 - c.tail_p))
        tail = np.where(np.isnan(self.tail), size, np.maximum(self.tail + move, 0.0))
        self.tail = np.where(usable, tail, self.tail)
        first = observed & np.isnan(self.base)
        dev = np.abs(deseasoned - self.base)
        spread = np.where(np.isnan(self.spread), dev, self.spread + r * (dev - self.spread))
        self.spread = np.where(observed & ~first, spread, self.spread)
        self.base = np.where(first, deseasoned, np.where(observed, self.base + r * (deseasoned - self.base), self.base))
        self.seen = self.seen + observed

    def extend(self, count: int) -> None:
        for name in self._FIELDS:
            setattr(self, name, grow(getattr(self, name), count, np.nan))
        self.seen = grow(self.seen, count, 0)

    def take(self, rows: IntArray) -> None:
        for name in self._FIELDS:
            setattr(self, name, select(getattr(self, name), rows))
        self.seen = select(self.seen, rows)
