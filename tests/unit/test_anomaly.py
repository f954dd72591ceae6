"""Robust anomaly flags: spikes do not poison the model, level shifts are accepted, helpers are exact."""

from __future__ import annotations

import numpy as np
import pytest

from apollo.core.forecasting.anomaly import MAD_TO_SIGMA, RunState, advance_runs, robust_center_scale
from apollo.core.forecasting.bank import BankConfig, SeriesBank

CFG = BankConfig(season_length=48)


def _warm(bank: SeriesBank, rng: np.random.Generator, ticks: int = 200, level: float = 0.4) -> None:
    for _ in range(ticks):
        bank.update(level + 0.01 * rng.standard_normal(len(bank)))


def test_spike_is_flagged_and_does_not_poison_forecasts() -> None:
    rng = np.random.default_rng(0)
    guarded = SeriesBank(horizon=6, config=CFG)
    naive = SeriesBank(horizon=6, config=BankConfig(season_length=48, anomaly_z=1e6))
    for bank in (guarded, naive):
        bank.add(["n"])
        _warm(bank, np.random.default_rng(0))
    noise = 0.01 * rng.standard_normal()
    step = guarded.update([0.4 + 0.5 + noise])
    naive.update([0.4 + 0.5 + noise])
    assert step.outlier[0] and step.zscore[0] > 5 and not step.level_shift[0]
    assert step.outliers == ["n"]
    # Only the last-value expert, weighted by its poor record on this noisy series, sees the spike; the
    # model's state does not move. Without the gate the model absorbs alpha * 0.5 of it.
    moved = np.abs(guarded.forecast().mean[0] - 0.4)
    assert moved.max() < 0.1 and moved.mean() < 0.5 * np.abs(naive.forecast().mean[0] - 0.4).mean()
    assert naive.forecast().mean[0, 0] > 0.5  # without the guard the spike drags the level up
    step = guarded.update([0.4])
    assert not step.outlier[0]
    assert abs(guarded.forecast().mean[0] - 0.4).max() < 0.03


def test_downward_spike_is_flagged_too() -> None:
    bank = SeriesBank(horizon=3, config=CFG)
    bank.add(["n"])
    _warm(bank, np.random.default_rng(4))
    step = bank.update([0.0])
    assert step.outlier[0] and step.zscore[0] < -5


def test_persistent_level_shift_is_accepted() -> None:
    rng = np.random.default_rng(1)
    bank = SeriesBank(horizon=6, config=CFG)
    bank.add(["n"])
    _warm(bank, rng)
    flags, shifts = [], []
    for _ in range(20):
        step = bank.update([0.75 + 0.01 * rng.standard_normal()])
        flags.append(bool(step.outlier[0]))
        shifts.append(bool(step.level_shift[0]))
    assert flags[0]  # the jump is first seen as an anomaly ...
    assert any(shifts[: CFG.shift_run + 1])  # ... then accepted as the new level
    assert not any(flags[CFG.shift_run + 1 :])  # and not flagged forever
    assert abs(bank.forecast().mean[0] - 0.75).max() < 0.05


def test_flagged_gap_mixture_keeps_runs() -> None:
    runs = RunState.empty(3)
    flagged = np.array([True, True, False])
    residual = np.array([1.0, -1.0, 0.0])
    observed = np.array([True, True, True])
    accepted, _ = advance_runs(runs, flagged, residual, observed, shift_run=3)
    assert runs.length.tolist() == [1, 1, 0] and not accepted.any()
    # series 0: missing sample keeps the run; series 1: opposite sign restarts it
    accepted, _ = advance_runs(
        runs, np.array([False, True, False]), np.array([np.nan, 2.0, 0.0]), np.array([False, True, True]), 3
    )
    assert runs.length.tolist() == [1, 1, 0]
    accepted, shift = advance_runs(runs, np.array([True, True, False]), np.array([3.0, 2.0, 0.0]), observed, 2)
    assert accepted.tolist() == [True, True, False]
    assert shift.tolist() == pytest.approx([2.0, 2.0, 0.0])
    assert runs.length.tolist() == [0, 0, 0]


def test_robust_center_scale_matches_numpy() -> None:
    rng = np.random.default_rng(3)
    data = rng.standard_normal((5, 40)).astype(np.float32)
    data[:, :3] += 50.0  # outliers barely move median / MAD
    data[2, 30:] = np.nan
    count = (~np.isnan(data)).sum(axis=1)
    center, scale = robust_center_scale(np.sort(data, axis=1), count, floor=1e-6)
    for i in range(5):
        row = data[i][~np.isnan(data[i])].astype(np.float64)
        med = np.median(row)
        assert center[i] == pytest.approx(med, abs=1e-5)
        assert scale[i] == pytest.approx(MAD_TO_SIGMA * np.median(np.abs(row - med)), abs=1e-5)
    _, floored = robust_center_scale(np.zeros((1, 10), dtype=np.float32), np.array([10]), floor=0.01)
    assert floored[0] == 0.01


def test_abnormal_stays_quiet_on_flat_stepping_series_where_the_gate_says_no_often() -> None:
    """Flat for hours, small quantised steps: the state gate rejects every step (MAD near zero), the
    abnormal test does not, since its scale cannot collapse; a real spike is still abnormal."""
    rng = np.random.default_rng(12)
    steps = 3 * 288
    level = 0.3 + np.cumsum(
        np.where(rng.uniform(size=(6, steps)) < 1 / 24, rng.choice([-0.03, 0.03], (6, steps)), 0.0), axis=1
    )
    y = np.round(level / 0.005) * 0.005
    bank = SeriesBank(horizon=6, config=BankConfig())
    bank.add(range(6))
    outliers = abnormal = 0
    for j in range(steps):
        step = bank.update(y[:, j])
        if j >= 288:
            outliers += int(step.outlier.sum())
            abnormal += int(step.abnormal.sum())
    assert outliers >= 10 * max(abnormal, 1)
    assert abnormal / (6 * 2) <= 1.0  # at most one flag per series-day on ordinary behaviour
    spike = y[:, -1].copy()
    spike[0] += 0.4
    step = bank.update(spike)
    assert step.abnormal[0] and not step.abnormal[1:].any() and step.abnormal_score[0] > 4.5


def test_abnormal_finds_more_labelled_anomalies_than_a_rolling_zscore_at_the_same_false_flag_rate() -> None:
    from apollo.core.forecasting.synthetic import cluster_traces, inject_anomalies
    from bench.forecast.anomalies import THRESHOLDS, rolling_zscore, score_flags

    traces = cluster_traces(16, 5, seed=31)
    labels = inject_anomalies(traces.values, first=2 * 288, seed=32)
    bank = SeriesBank(horizon=6, config=BankConfig())
    bank.add(range(labels.values.shape[0]))
    flags = np.zeros(labels.values.shape, dtype=np.bool_)
    for j in range(labels.values.shape[1]):
        flags[:, j] = bank.update(labels.values[:, j]).abnormal
    false, detected = score_flags(flags, labels, 2 * 288)
    assert false <= 2.0
    z = np.nan_to_num(rolling_zscore(labels.values, 288))
    best = max(
        (float(hit.mean()) for f, hit in (score_flags(z >= t, labels, 2 * 288) for t in THRESHOLDS) if f <= false),
        default=0.0,
    )
    assert detected.mean() >= best
