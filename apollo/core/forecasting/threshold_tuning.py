"""Tuning the overload warning against realised outcomes in history. Pure numpy.

The warning fires when the upper forecast stays over the threshold for k consecutive horizon steps.
Too small a k migrates on noise, too large a k warns too late; which is right depends on how bursty
the cluster's load is, so k is chosen from history: the history is replayed through a forecaster
exactly as it runs live, every origin's warning is compared with what actually followed (actuals
over the threshold for `sustained_steps` in a row within the horizon), and the k with the best
F1 on a selection window is adopted only if it also beats the current k on a held-out window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from apollo.core.forecasting.arrays import FloatArray
from apollo.core.forecasting.bank import SeriesBank
from apollo.core.forecasting.early_warning import overload_warning


@dataclass(frozen=True)
class ThresholdResult:
    steps: int
    adopted: bool
    current_steps: int
    selection_f1: dict[int, float]
    holdout_f1_current: float
    holdout_f1_best: float
    events: int
    reason: str


def _runs(over: np.ndarray, k: int) -> np.ndarray:
    """True where `over` [n, H] has k consecutive True values."""
    n, h = over.shape
    if k > h:
        return np.zeros(n, dtype=bool)
    csum = np.zeros((n, h + 1), dtype=np.int64)
    np.cumsum(over, axis=1, out=csum[:, 1:])
    result: np.ndarray = ((csum[:, k:] - csum[:, :-k]) == k).any(axis=1)
    return result


def _f1(pred: np.ndarray, actual: np.ndarray) -> float:
    tp = float(np.sum(pred & actual))
    fp = float(np.sum(pred & ~actual))
    fn = float(np.sum(~pred & actual))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def tune_overload_steps(
    bank: SeriesBank,
    history: FloatArray,
    threshold: float,
    current_steps: int,
    *,
    level: float,
    sustained_steps: int = 2,
    holdout_fraction: float = 0.25,
    warmup: int = 96,
    min_events: int = 5,
    min_improvement: float = 0.02,
) -> ThresholdResult:
    """Replay `history` [n, T] through `bank` (fresh, n series) and pick k in 1..H. See module doc."""
    n, t_total = history.shape
    horizon = bank.horizon
    if len(bank) != n:
        raise ValueError(f"bank has {len(bank)} series, history {n}")
    if t_total <= warmup + 2 * horizon + 4:
        raise ValueError(f"history of {t_total} ticks is too short for warm-up {warmup} and horizon {horizon}")
    candidates = list(range(1, horizon + 1))
    origins = list(range(warmup, t_total - horizon))
    warn = {k: np.zeros((len(origins), n), dtype=bool) for k in candidates}
    actual = np.zeros((len(origins), n), dtype=bool)
    for t in range(t_total - horizon):
        bank.update(history[:, t])
        if t < warmup:
            continue
        i = t - warmup
        upper = bank.forecast().quantile(level)
        for k in candidates:
            warn[k][i] = overload_warning(upper, threshold, k).flags
        future = history[:, t + 1 : t + 1 + horizon]
        actual[i] = _runs(np.nan_to_num(future, nan=0.0) > threshold, sustained_steps)
    split = int(len(origins) * (1 - holdout_fraction))
    sel = {k: _f1(warn[k][:split], actual[:split]) for k in candidates}
    events = int(actual.sum())
    best = max(candidates, key=lambda k: (sel[k], -abs(k - current_steps)))
    cur = min(max(current_steps, 1), horizon)
    hold_best = _f1(warn[best][split:], actual[split:])
    hold_cur = _f1(warn[cur][split:], actual[split:])
    if events < min_events:
        return ThresholdResult(cur, False, cur, sel, hold_cur, hold_best, events, f"only {events} overload events")
    if best != cur and hold_best > hold_cur + min_improvement:
        reason = f"k={best}: holdout F1 {hold_best:.3f} > {hold_cur:.3f} with k={cur}"
        return ThresholdResult(best, True, cur, sel, hold_cur, hold_best, events, reason)
    return ThresholdResult(
        cur, False, cur, sel, hold_cur, hold_best, events, f"keeping k={cur} (holdout F1 {hold_cur:.3f})"
    )
