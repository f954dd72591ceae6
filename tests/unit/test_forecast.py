"""SeriesBank: accuracy on seeded synthetic traces, intervals, gaps, membership, validation, early warning."""

from __future__ import annotations

import math
from collections.abc import Hashable

import numpy as np
import pytest

from apollo.core.forecasting.accuracy import mean_over_series
from apollo.core.forecasting.backtest import BacktestScores, Window, backtest
from apollo.core.forecasting.bank import BankConfig, ForecastParams, SeriesBank
from apollo.core.forecasting.early_warning import overload_warning
from apollo.core.forecasting.synthetic import cluster_traces

DAY = 288  # 5-minute samples

Traces = tuple[np.ndarray, tuple[tuple[str, str], ...], np.ndarray]
Scored = tuple[SeriesBank, BacktestScores]


@pytest.fixture(scope="module")
def traces() -> Traces:
    tr = cluster_traces(40, 6, seed=11)
    return tr.values, tr.keys, tr.seasonal


@pytest.fixture(scope="module")
def scored(traces: Traces) -> Scored:
    values, keys, _ = traces
    bank = SeriesBank(horizon=6)
    bank.ensure(keys)
    [scores] = backtest(bank, values, [Window(5 * DAY, values.shape[1])])
    return bank, scores


def _seasonal_series(n: int, days: int, seed: int) -> np.ndarray:
    """Daily pattern (swing plus a working-day plateau) with AR(1) noise and a few bursts."""
    rng = np.random.default_rng(seed)
    t = np.arange(days * DAY)
    phase = rng.uniform(0, DAY, (n, 1))
    swing = rng.uniform(0.1, 0.2, (n, 1)) * np.sin(2 * np.pi * (t - phase) / DAY)
    plateau = 0.1 * ((((t - phase) % DAY) > 100) & (((t - phase) % DAY) < 190))
    noise = np.zeros((n, t.size))
    for i in range(1, t.size):
        noise[:, i] = 0.5 * noise[:, i - 1] + 0.015 * rng.standard_normal(n)
    bursts = (rng.uniform(size=(n, t.size)) < 0.002) * 0.2
    return 0.4 + swing + plateau + noise + bursts


def _noisy_bursty(n: int, days: int, seed: int) -> np.ndarray:
    """A steady level under measurement noise, AR noise and bursts that end: smoothing should win here.

    Last value repeats each sample's noise into the next half hour and keeps a burst going after it
    ended; a forecaster that cannot beat it by a clear margin on this is not worth its cost.
    """
    rng = np.random.default_rng(seed)
    steps = days * DAY
    level = rng.uniform(0.2, 0.5, (n, 1))
    ar = np.zeros((n, steps))
    for i in range(1, steps):
        ar[:, i] = 0.6 * ar[:, i - 1] + 0.015 * rng.standard_normal(n)
    bursts = np.zeros((n, steps))
    for row in range(n):
        for start in rng.choice(steps - 12, size=4 * days, replace=False):
            bursts[row, start : start + rng.integers(2, 9)] += rng.uniform(0.1, 0.25)
    return np.clip(level + ar + 0.03 * rng.standard_normal((n, steps)) + bursts, 0.0, 1.0)


def test_beats_last_value_by_a_margin_where_it_should() -> None:
    y = _noisy_bursty(16, 4, seed=21)
    bank = SeriesBank(horizon=6)
    bank.add(range(16))
    [scores] = backtest(bank, y, [Window(2 * DAY, y.shape[1])])
    # Same (origin, lead) pairs for both; last value scores exactly 1 here, so this fails for it.
    assert scores.skill() < 0.85
    assert (scores.mae() < scores.last_value_mae()).all()


def test_beats_last_value_on_the_mixed_traces(scored: Scored) -> None:
    bank, scores = scored
    # Flat, stepping and quantised series are in the mix, where last value is hard to beat; still a win.
    assert scores.skill() < 0.95
    live = bank.accuracy()
    assert live.skill < 1.0 and live.series_skilled > 0.5 * len(bank)


def test_season_is_found_and_used() -> None:
    y = _seasonal_series(12, 5, seed=3)
    end = y.shape[1]
    window = [Window(4 * DAY, end)]
    seasonal = SeriesBank(horizon=6)
    seasonal.add(range(12))
    [with_season] = backtest(seasonal, y, window)
    flat = SeriesBank(horizon=6, config=BankConfig(season_length=1))
    flat.add(range(12))
    [without] = backtest(flat, y, window)
    assert seasonal.seasonal.all()  # found ...
    assert with_season.skill() < 0.9 * without.skill()  # ... and used: it pays on the same samples
    assert with_season.skill() < 0.85


def test_warm_start_replay_keeps_the_season() -> None:
    """After a restart a seasonal series is seasonal at once: two days of hourly means are seeded
    directly and only hours of samples are replayed (what the engine's warm start does)."""
    y = _seasonal_series(6, 4, seed=8)
    hours = y[:, : 3 * DAY].reshape(6, -1, 12).mean(axis=2)  # hourly bucket means of the first 3 days
    seeded = SeriesBank(horizon=6, start_tick=3 * DAY)
    seeded.add(range(6))
    seeded.seed_buckets(hours, last_bucket=hours.shape[1] - 1)
    fresh = SeriesBank(horizon=6, start_tick=3 * DAY)
    fresh.add(range(6))
    for bank in (seeded, fresh):
        bank.replay(y[:, 3 * DAY : 3 * DAY + 120])  # ten hours of samples
    assert seeded.seasonal.all() and not fresh.seasonal.any()
    # The seeded bank forecasts the coming hours' shape; the fresh one extrapolates.
    [warm_scores, cold_scores] = [
        backtest(bank, y[:, 3 * DAY + 120 :], [Window(0, DAY - 120)])[0] for bank in (seeded, fresh)
    ]
    assert warm_scores.skill() < cold_scores.skill()


def test_periodicity_test_rejects_non_seasonal_noise() -> None:
    rng = np.random.default_rng(5)
    y = 0.5 + np.cumsum(0.003 * rng.standard_normal((20, 3 * DAY)), axis=1)
    bank = SeriesBank(horizon=6)
    bank.add(range(20))
    bank.replay(y)
    assert bank.seasonal.mean() <= 0.1


def test_interval_coverage_near_nominal(scored: Scored) -> None:
    bank, scores = scored
    coverage = mean_over_series(scores.coverage())
    assert 0.83 <= coverage <= 0.95
    live = bank.accuracy()
    assert live.nominal_coverage == pytest.approx(0.9)
    assert 0.8 <= live.coverage <= 0.96
    assert 0 < live.mase < 1.0 and 0 < live.skill < 1.0
    assert live.series_scored > 0.9 * len(bank)
    assert live.series_mase.shape == (len(bank),) and live.series_skill.shape == (len(bank),)


def test_forecast_shapes_and_quantile_order(scored: Scored) -> None:
    bank, _ = scored
    fc = bank.forecast()
    n = len(bank)
    assert fc.mean.shape == (n, 6) and fc.lower.shape == (n, 6) and fc.upper.shape == (n, 6)
    assert fc.values.shape == (n, 3, 6)
    assert fc.keys == bank.keys and fc.tick == bank.tick
    ok = np.isfinite(fc.values).all(axis=(1, 2))
    assert ok.mean() > 0.95
    v = fc.values[ok]
    assert (np.diff(v, axis=1) >= 0).all()
    assert np.allclose(fc.quantile(0.95), fc.upper)


def test_gaps_advance_state_without_recording_errors() -> None:
    rng = np.random.default_rng(1)
    bank = SeriesBank(horizon=4, config=BankConfig(season_length=48))
    bank.add(["a", "b"])
    for _ in range(120):
        bank.update(0.5 + 0.01 * rng.standard_normal(2))
    counts = bank.error_counts.copy()
    before = bank.forecast().mean.copy()
    step = bank.update(np.array([np.nan, 0.5]))
    assert step.missing.tolist() == [True, False]
    assert math.isnan(step.residual[0]) and not step.outlier[0]
    # the missing series records nothing new (its window can only lose its oldest errors)
    assert (bank.error_counts[0] <= counts[0]).all()
    assert bank.error_counts[1].sum() >= counts[1].sum() - 4
    after = bank.forecast().mean
    assert np.isfinite(after).all()
    # without a sample the state advances on its own forecast: no news, the forecast barely moves
    assert after[0] == pytest.approx(before[0], abs=0.02)
    for _ in range(30):  # a long outage does not crash or drift away
        bank.update(np.array([np.nan, np.nan]))
    assert np.isfinite(bank.forecast().mean).all()


def test_series_never_observed_forecast_nan_and_start_when_data_arrives() -> None:
    bank = SeriesBank(horizon=3, config=BankConfig(season_length=48))
    bank.add(["x"])
    bank.update([np.nan])
    assert np.isnan(bank.forecast().mean).all()
    bank.update([0.3])
    assert bank.forecast().mean[0] == pytest.approx([0.3, 0.3, 0.3])


def test_add_remove_keeps_other_series_state() -> None:
    cfg = BankConfig(season_length=48, refresh_every=1, season_test_every=1, error_window=32, min_errors=4)
    rng = np.random.default_rng(2)
    data = 0.5 + np.cumsum(0.01 * rng.standard_normal((3, 200)), axis=1)
    steady = SeriesBank(horizon=4, config=cfg)
    churn = SeriesBank(horizon=4, config=cfg)
    steady.add(["a", "b"])
    churn.add(["a", "new", "b"])
    for j in range(200):
        steady.update(data[:2, j])
        if j == 80:
            churn.remove(["new"])
        if j == 120:
            assert churn.ensure(["b", "late", "a"]).added == ("late",)
        row: dict[Hashable, float] = {"a": data[0, j], "b": data[1, j], "new": data[2, j], "late": data[2, j]}
        churn.update([row[k] for k in churn.keys])
    assert churn.keys == ("a", "b", "late")
    a, b = steady.forecast(), churn.forecast()
    pos = churn.positions(["a", "b"])
    np.testing.assert_allclose(b.mean[pos], a.mean, rtol=0, atol=1e-12)
    np.testing.assert_allclose(b.values[pos], a.values, rtol=0, atol=1e-12)
    assert churn.error_counts[2].sum() > 0 and np.isfinite(b.mean[2]).all()


def test_membership_errors_and_positions() -> None:
    bank = SeriesBank(horizon=2, config=BankConfig(season_length=24))
    bank.add([("n1", "cpu"), ("n1", "memory")])
    with pytest.raises(ValueError, match="already present"):
        bank.add([("n1", "cpu")])
    with pytest.raises(KeyError):
        bank.remove([("n9", "cpu")])
    assert bank.positions([("n1", "memory")]).tolist() == [1]
    change = bank.ensure([("n2", "cpu"), ("n1", "memory")])
    assert change.removed == (("n1", "cpu"),) and change.added == (("n2", "cpu"),)
    assert bank.keys == (("n1", "memory"), ("n2", "cpu"))
    with pytest.raises(ValueError, match="shape"):
        bank.update([0.1])


def test_update_with_tick_inserts_missing_ticks() -> None:
    bank = SeriesBank(horizon=2, config=BankConfig(season_length=24), start_tick=100)
    bank.add(["s"])
    bank.update([0.2])
    step = bank.update([0.2], tick=105)
    assert step.tick == 105 and bank.tick == 106
    with pytest.raises(ValueError, match="past"):
        bank.update([0.2], tick=50)


def test_set_params_per_key_keeps_state() -> None:
    bank = SeriesBank(horizon=2, config=BankConfig(season_length=24))
    bank.add(["a", "b"])
    for v in (0.1, 0.2, 0.3):
        bank.update([v, v])
    before = bank.forecast().mean.copy()
    bank.set_params(ForecastParams(alpha=0.9, beta=0.0, phi=0.8, gamma=0.0), ["b"])
    after = bank.forecast().mean
    assert after[0] == pytest.approx(before[0])
    bank.update([1.0, 1.0])
    fc = bank.forecast().mean
    assert fc[1, 0] > fc[0, 0]  # the high-alpha series follows the jump faster


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": 1.5}, "alpha"),
        ({"beta": -0.1}, "beta"),
        ({"phi": 0.0}, "phi"),
        ({"phi": 1.01}, "phi"),
        ({"alpha": 0.8, "gamma": 0.3}, "gamma"),
        ({"alpha": float("nan")}, "finite"),
    ],
)
def test_invalid_params_raise(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ForecastParams(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"season_length": 0}, "season_length"),
        ({"min_errors": 200}, "min_errors"),
        ({"anomaly_z": 0.5}, "anomaly_z"),
        ({"seasonality_off": 0.9}, "seasonality_off"),
        ({"shift_run": 0}, "shift_run"),
        ({"scale_floor": 0.0}, "scale_floor"),
    ],
)
def test_invalid_config_raises(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BankConfig(**kwargs)  # type: ignore[arg-type]


def test_invalid_bank_arguments_raise() -> None:
    with pytest.raises(ValueError, match="horizon"):
        SeriesBank(horizon=0)
    with pytest.raises(ValueError, match="season_length"):
        SeriesBank(horizon=50, config=BankConfig(season_length=24))
    with pytest.raises(ValueError, match="increasing"):
        SeriesBank(quantiles=(0.9, 0.1))
    with pytest.raises(ValueError, match="at least two"):
        SeriesBank(quantiles=(0.5,))
    with pytest.raises(ValueError, match="< 1"):
        SeriesBank(quantiles=(0.1, 1.0))


def test_overload_warning_needs_k_consecutive_steps() -> None:
    upper = np.array(
        [
            [0.5, 0.9, 0.5, 0.9, 0.5, 0.9],  # lone spikes: no warning
            [0.5, 0.9, 0.9, 0.9, 0.5, 0.5],  # three in a row from step 2
            [0.9, 0.9, 0.5, 0.9, 0.9, 0.5],  # two runs of two
            [np.nan, 0.9, 0.9, 0.9, 0.9, 0.9],
        ]
    )
    w = overload_warning(upper, 0.85, 3)
    assert w.flags.tolist() == [False, True, False, True]
    assert w.first_step.tolist() == [-1, 2, -1, 2]
    assert w.steps_over.tolist() == [3, 3, 4, 5]
    assert overload_warning(upper, 0.85, 2).flags.tolist() == [False, True, True, True]
    per_series = overload_warning(upper, np.array([0.95, 0.95, 0.1, 0.95]), 3)
    assert per_series.flags.tolist() == [False, False, True, False]
    with pytest.raises(ValueError, match="k must"):
        overload_warning(upper, 0.85, 7)
    with pytest.raises(ValueError, match="threshold"):
        overload_warning(upper, np.array([0.1, 0.2]), 2)
