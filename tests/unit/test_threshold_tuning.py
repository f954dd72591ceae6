"""Overload warning k chosen from realised outcomes: lone spikes must not win over sustained overloads."""

from __future__ import annotations

import numpy as np
import pytest

from apollo.core.forecasting.bank import BankConfig, SeriesBank
from apollo.core.forecasting.threshold_tuning import tune_overload_steps


def _history(n: int = 12, t: int = 1500, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h = 0.55 + rng.normal(0, 0.02, (n, t))
    spikes = rng.random((n, t)) < 0.03  # lone one-tick spikes over the threshold
    h[spikes] = 0.97
    for i in range(n):
        for start in rng.choice(np.arange(150, t - 40), size=6, replace=False):
            ramp = np.linspace(0.55, 0.95, 8)
            h[i, start : start + 8] = ramp
            h[i, start + 8 : start + 20] = 0.95 + rng.normal(0, 0.01, 12)
    return np.clip(h, 0, 1)


def _bank(n: int) -> SeriesBank:
    bank = SeriesBank(horizon=6, quantiles=(0.05, 0.5, 0.95), config=BankConfig(season_length=1, season_buckets=2))
    bank.add(range(n))
    return bank


def test_spiky_history_moves_k_off_one() -> None:
    history = _history()
    result = tune_overload_steps(_bank(len(history)), history, 0.85, 1, level=0.95)
    assert result.events >= 5
    # With frequent lone spikes, warning on one step is mostly false alarms: a longer run wins.
    assert result.adopted and result.steps >= 3, result.reason
    assert result.holdout_f1_best > result.holdout_f1_current
    assert result.selection_f1[result.steps] >= max(result.selection_f1.values()) - 1e-12


def test_short_history_and_mismatch_raise() -> None:
    with pytest.raises(ValueError, match="too short"):
        tune_overload_steps(_bank(2), np.zeros((2, 50)), 0.85, 3, level=0.95)
    with pytest.raises(ValueError, match="bank has"):
        tune_overload_steps(_bank(3), np.zeros((2, 500)), 0.85, 3, level=0.95)


def test_quiet_history_keeps_current_k() -> None:
    quiet = np.full((4, 400), 0.3) + np.random.default_rng(0).normal(0, 0.01, (4, 400))
    result = tune_overload_steps(_bank(4), quiet, 0.85, 3, level=0.95)
    assert not result.adopted and result.steps == 3 and "overload events" in result.reason
