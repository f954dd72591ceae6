"""Robust anomaly flags on one-step residuals, and level-shift acceptance.

Why robust: the residual scale is estimated from the residuals themselves, and bursts are exactly what we
want to detect, so mean/std would be inflated by the very spikes they should flag. Median and MAD of the
recent one-step residuals ignore up to half of the window being outliers.

Why flags feed back into the model: a flagged observation does not update level, trend or season (the
forecaster uses its own forecast in its place), so one 30-second spike cannot drag the next half hour of
forecasts up. But a real regime change (a job placed on the node, a memory limit raised) also starts as a
run of flags; after ``shift_run`` consecutive flags in the same direction the run is accepted as a level
shift and the level jumps by the mean excess of the run, after which residuals are normal again.

All functions are pure and vectorised over series.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from apollo.core.forecasting.arrays import BoolArray, Float32Array, FloatArray, IntArray

MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution times this is its standard deviation


def robust_center_scale(ordered: Float32Array, count: IntArray, floor: float) -> tuple[FloatArray, FloatArray]:
    """Median and MAD-based sigma from sorted residuals ``[n, window]`` (ascending, NaN last).

    ``count`` is the number of non-NaN entries per series. The scale is never below ``floor``.
    """
    center = _sorted_median(ordered, count)
    deviations = np.abs(ordered - center[:, None].astype(np.float32))
    deviations.sort(axis=1)
    mad = _sorted_median(deviations, count)
    scale = np.maximum(MAD_TO_SIGMA * mad, floor)
    return center, scale


def _sorted_median(ordered: Float32Array, count: IntArray) -> FloatArray:
    last = np.maximum(count - 1, 0)
    start = np.arange(len(count), dtype=np.int64) * ordered.shape[1]
    flat = ordered.reshape(-1)  # the two middle order statistics by flat index (one take each)
    a = flat[start + last // 2].astype(np.float64)
    b = flat[start + (last + 1) // 2].astype(np.float64)
    result: FloatArray = np.where(count > 0, 0.5 * (a + b), 0.0)
    return result


def robust_z(residual: FloatArray, center: FloatArray, scale: FloatArray) -> FloatArray:
    """Robust z-score; NaN where the residual is missing."""
    return (residual - center) / scale


@dataclass(slots=True)
class RunState:
    """Consecutive same-direction flags per series (the evidence for a level shift)."""

    length: IntArray
    total: FloatArray

    @classmethod
    def empty(cls, n: int) -> RunState:
        return cls(np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.float64))


def advance_runs(
    runs: RunState, flagged: BoolArray, residual: FloatArray, observed: BoolArray, shift_run: int
) -> tuple[BoolArray, FloatArray]:
    """Update runs in place with this tick's flags; return (accepted, shift) for accepted level shifts.

    A run continues while flags keep the same sign, restarts on a flag of the other sign and ends on an
    unflagged observation. Missing observations leave the run as it is (a scrape gap is no evidence either
    way). ``shift`` is the mean residual of the accepted run: the distance from the old level to the new.
    """
    # Only series with a flag now or a run open change (a closed run is length 0 and total 0.0, and an
    # unflagged sample leaves it so); flags are a few percent of samples, so work on those rows alone.
    rows = np.flatnonzero(flagged | (runs.length > 0))
    accepted = np.zeros(flagged.shape, dtype=np.bool_)
    shift = np.zeros(flagged.shape)
    if rows.size == 0:
        return accepted, shift
    flag, res, length, total = flagged[rows], residual[rows], runs.length[rows], runs.total[rows]
    sign = np.sign(np.where(flag, res, 0.0))
    continues = flag & (sign == np.sign(total)) & (length > 0)
    restarts = flag & ~continues
    ends = observed[rows] & ~flag
    length = np.where(continues, length + 1, np.where(restarts, 1, np.where(ends, 0, length)))
    total = np.where(continues, total + res, np.where(restarts, res, np.where(ends, 0.0, total)))
    done = length >= shift_run
    accepted[rows] = done
    shift[rows] = np.where(done, total / np.maximum(length, 1), 0.0)
    runs.length[rows] = np.where(done, 0, length)
    runs.total[rows] = np.where(done, 0.0, total)
    return accepted, shift
