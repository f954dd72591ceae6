"""Tuning: adopts better parameters, keeps the current ones otherwise, validates its input."""

from __future__ import annotations

import numpy as np
import pytest

from apollo.core.forecasting.bank import BankConfig, ForecastParams
from apollo.core.forecasting.tuning import ParamGrid, tune

CFG = BankConfig(season_length=1, error_window=32, min_errors=8, refresh_every=4)


def _random_walks(n: int, steps: int, seed: int) -> np.ndarray:
    """Levels that wander: the best forecaster follows the data closely (high alpha)."""
    rng = np.random.default_rng(seed)
    y = 0.5 + np.cumsum(0.01 * rng.standard_normal((n, steps)), axis=1)
    y[:, ::37] = np.nan  # gaps are fine
    return y


def test_adopts_better_parameters() -> None:
    poor = ForecastParams(alpha=0.02, beta=0.0, phi=0.8, gamma=0.0)
    grid = ParamGrid(alpha=(0.05, 0.7), beta=(0.0,), phi=(0.9,), gamma=(0.0,))
    res = tune(_random_walks(12, 400, 0), poor, config=CFG, horizon=3, grid=grid)
    assert res.adopted
    assert res.params == res.best and res.params.alpha == 0.7
    assert res.best_score < res.current_score
    assert len(res.candidate_scores) == 3 and res.series_used == 12
    assert "holdout" in res.reason


def test_keeps_current_parameters_when_candidates_are_not_better() -> None:
    good = ForecastParams(alpha=0.7, beta=0.0, phi=0.9, gamma=0.0)
    grid = ParamGrid(alpha=(0.02, 0.05), beta=(0.0,), phi=(0.9,), gamma=(0.0,))
    res = tune(_random_walks(12, 400, 1), good, config=CFG, horizon=3, grid=grid)
    assert not res.adopted
    assert res.params == good
    assert res.current_score <= res.best_score or res.best == good


def test_mse_objective_and_decision_level() -> None:
    poor = ForecastParams(alpha=0.02, beta=0.0, phi=0.8, gamma=0.0)
    grid = ParamGrid(alpha=(0.7,), beta=(0.0,), phi=(0.9,), gamma=(0.0,))
    res = tune(_random_walks(8, 400, 2), poor, config=CFG, horizon=3, grid=grid, objective="mse")
    assert res.adopted and res.objective == "mse"
    res = tune(_random_walks(8, 400, 2), poor, config=CFG, horizon=3, grid=grid, decision_level=0.5)
    assert res.decision_level == 0.5


def test_grid_skips_inadmissible_combinations_and_puts_current_first() -> None:
    current = ForecastParams(alpha=0.3, beta=0.0, phi=0.9, gamma=0.0)
    cands = ParamGrid(alpha=(0.3, 0.9), beta=(0.0,), phi=(0.9,), gamma=(0.0, 0.5)).candidates(current)
    assert cands[0] == current
    assert all(c.gamma <= 1 - c.alpha for c in cands)
    assert len(cands) == 3  # (0.3, g=0.5), (0.9, g=0) plus current; (0.9, 0.5) is inadmissible


def test_invalid_input_raises() -> None:
    p = ForecastParams()
    with pytest.raises(ValueError, match="too short"):
        tune(np.zeros((3, 40)), p, config=CFG)
    with pytest.raises(ValueError, match="n_series, T"):
        tune(np.zeros(400), p, config=CFG)
    with pytest.raises(ValueError, match="objective"):
        tune(np.zeros((3, 400)), p, config=CFG, objective="mae")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="decision_level"):
        tune(np.zeros((3, 400)), p, config=CFG, decision_level=0.7)


def test_no_usable_series_keeps_current() -> None:
    p = ForecastParams()
    res = tune(np.full((3, 400), np.nan), p, config=CFG)
    assert not res.adopted and res.params == p and res.series_used == 0
