""" "This node is behaving abnormally": rare, reported and penalised, unlike the state gate's outliers.

Two questions are easy to confuse. The gate in :mod:`apollo.core.forecasting.anomaly` asks "should this
sample move the model's state?"; it may say no often and cheaply, because a wrong answer costs one sample
of smoothing. This module asks "is the node misbehaving?", and every yes costs the node score points at
scheduling time, so a false yes is scheduling noise. It must therefore stay quiet on what real node
metrics do all day: sit flat, move in quantised steps, spike now and then.

Why the gate's robust z cannot be used for that: on a flat series the MAD of recent one-step residuals is
close to zero, so the first ordinary step has an enormous z. Here the scale cannot collapse:

* ``scale = max(robust residual scale over a day, rel_spread * spread, rel_level * |base|, floor)``,
  where ``spread`` is how far the (deseasonalised) series strays from its own day-long mean: a series
  that steps between levels has a spread of the order of its steps even though its residuals are
  mostly zero. The residual scale is an exponentially weighted mean absolute residual whose updates are
  clipped at ``CLIP`` scales, so a burst cannot inflate it much (a robust M-estimate without a window).
* Evidence must persist or be overwhelming: a CUSUM of ``|z| - k`` (each tick adds at most ``h``)
  flags a single sample only when it is ``k + h`` scales out, and flags sustained moderate excess
  (a variance burst, a level shift before the model re-levels) after a few ticks. A signed CUSUM of the
  residuals catches slow same-sign drift the model keeps chasing.
* A level test compares the model's smoothed, deseasonalised level with the day-long base, in units of
  the spread: a slow drift the residuals barely show still moves the level away from where the node
  spent its day. It must hold for ``level_steps`` ticks in a row.

State is O(n) numbers per series, updated in place each tick; nothing is flagged before ``warmup``
samples (a day's statistics need a while to mean anything).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from apollo.core.forecasting.arrays import BoolArray, FloatArray, IntArray, grow, select

ABS_TO_SIGMA = 1.2533  # mean absolute deviation of a normal distribution times this is its sigma
CLIP = 3.0  # a residual moves the scale by at most this many current scales


@dataclass(frozen=True, slots=True)
class AbnormalConfig:
    """Thresholds of the abnormal-behaviour test (see the module docstring); validated by BankConfig."""

    window: int = 288
    warmup: int = 72
    k: float = 2.5
    h: float = 6.0
    drift_k: float = 1.0
    drift_h: float = 12.0
    level_z: float = 4.0
    level_steps: int = 3
    rel_spread: float = 0.5
    rel_level: float = 0.02
    floor: float = 0.005


@dataclass(frozen=True, slots=True)
class AbnormalStep:
    """One tick's verdict per series: flags and a severity in scale units (NaN where not observed)."""

    abnormal: BoolArray
    score: FloatArray


class AbnormalDetector:
    """EW scale, spread and base per series, plus the CUSUMs and the level-test run length."""

    _FIELDS: tuple[tuple[str, float], ...] = (
        ("res_abs", np.nan),
        ("base", np.nan),
        ("spread", np.nan),
        ("cusum_abs", 0.0),
        ("cusum_pos", 0.0),
        ("cusum_neg", 0.0),
    )

    def __init__(self, n_series: int, config: AbnormalConfig) -> None:
        self.config = config
        self.rate = 1.0 / config.window
        self.res_abs: FloatArray = np.full(n_series, np.nan)
        self.base: FloatArray = np.full(n_series, np.nan)
        self.spread: FloatArray = np.full(n_series, np.nan)
        self.cusum_abs: FloatArray = np.zeros(n_series)
        self.cusum_pos: FloatArray = np.zeros(n_series)
        self.cusum_neg: FloatArray = np.zeros(n_series)
        self.level_run: IntArray = np.zeros(n_series, dtype=np.int64)
        self.seen: IntArray = np.zeros(n_series, dtype=np.int64)

    def scale(self) -> FloatArray:
        """The residual scale the test divides by: never below the spread-, level- and absolute floors."""
        c = self.config
        floor = np.fmax(c.rel_spread * self.spread, c.rel_level * np.abs(self.base))
        result: FloatArray = np.fmax(np.fmax(ABS_TO_SIGMA * self.res_abs, floor), c.floor)
        return result

    def step(
        self, residual: FloatArray, deseasoned: FloatArray, level: FloatArray, observed: BoolArray
    ) -> AbnormalStep:
        """Judge this tick's one-step ``residual`` and move the statistics.

        ``deseasoned`` is the observation minus its seasonal component, ``level`` the model's level after
        this tick; both NaN-free where ``observed``. Missing samples leave everything unchanged.
        """
        c = self.config
        usable = observed & ~np.isnan(residual)
        scale = self.scale()
        with np.errstate(invalid="ignore"):
            z = np.where(usable, residual / scale, np.nan)
        zz = np.nan_to_num(z)
        excess = np.minimum(np.abs(zz) - c.k, c.h)
        self.cusum_abs = np.where(usable, np.maximum(0.0, self.cusum_abs + excess), self.cusum_abs)
        pos = np.minimum(zz - c.drift_k, c.drift_h)
        neg = np.minimum(-zz - c.drift_k, c.drift_h)
        self.cusum_pos = np.where(usable, np.maximum(0.0, self.cusum_pos + pos), self.cusum_pos)
        self.cusum_neg = np.where(usable, np.maximum(0.0, self.cusum_neg + neg), self.cusum_neg)

        spread_scale = np.fmax(np.fmax(ABS_TO_SIGMA * self.spread, c.rel_level * np.abs(self.base)), c.floor)
        with np.errstate(invalid="ignore"):
            level_z = np.where(observed, (level - self.base) / spread_scale, np.nan)
        away = observed & (np.abs(np.nan_to_num(level_z)) >= c.level_z)
        self.level_run = np.where(away, self.level_run + 1, np.where(observed, 0, self.level_run))

        ready = self.seen >= c.warmup
        residual_flag = (self.cusum_abs >= c.h) | (np.maximum(self.cusum_pos, self.cusum_neg) >= c.drift_h)
        abnormal = ready & observed & (residual_flag | (self.level_run >= c.level_steps))
        score = np.fmax(np.abs(z), np.abs(level_z))

        self._learn(residual, deseasoned, usable, observed, scale)
        return AbnormalStep(abnormal=abnormal, score=np.where(ready, score, np.nan))

    def _learn(
        self, residual: FloatArray, deseasoned: FloatArray, usable: BoolArray, observed: BoolArray, scale: FloatArray
    ) -> None:
        r = self.rate
        new = np.isnan(self.res_abs)
        clipped = np.minimum(np.abs(np.nan_to_num(residual)), CLIP * scale)
        moved = np.where(new, clipped, self.res_abs + r * (clipped - self.res_abs))
        self.res_abs = np.where(usable, moved, self.res_abs)
        first = observed & np.isnan(self.base)
        dev = np.abs(deseasoned - self.base)
        spread_now = np.where(np.isnan(self.spread), dev, self.spread)
        dev = np.minimum(dev, CLIP * np.fmax(ABS_TO_SIGMA * spread_now, self.config.floor))
        self.spread = np.where(
            observed & ~first, np.where(np.isnan(self.spread), dev, self.spread + r * (dev - self.spread)), self.spread
        )
        self.base = np.where(first, deseasoned, np.where(observed, self.base + r * (deseasoned - self.base), self.base))
        self.seen = self.seen + observed

    def extend(self, count: int) -> None:
        for name, fill in self._FIELDS:
            setattr(self, name, grow(getattr(self, name), count, fill))
        self.level_run = grow(self.level_run, count, 0)
        self.seen = grow(self.seen, count, 0)

    def take(self, rows: IntArray) -> None:
        for name, _ in self._FIELDS:
            setattr(self, name, select(getattr(self, name), rows))
        self.level_run = select(self.level_run, rows)
        self.seen = select(self.seen, rows)
