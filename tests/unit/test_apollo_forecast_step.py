"""The forecaster's cheaper step gives what the plain computations give.

Each reference below is the earlier, plainer form of a computation the bank now does in fewer passes
(flat-index order statistics, sparse level-shift runs, blocks of series). Where the rewrite does the same
arithmetic, results are compared for equality; the bank run with tiny blocks must equal the bank run in
one block, since blocking only changes which series a numpy pass covers.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from apollo.core.forecasting import arrays
from apollo.core.forecasting.anomaly import RunState, advance_runs, robust_center_scale
from apollo.core.forecasting.bank import BankConfig, SeriesBank
from apollo.core.forecasting.intervals import empirical_offsets
from apollo.core.forecasting.synthetic import cluster_traces

FloatArray = npt.NDArray[np.float64]
Float32Array = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def _sorted_errors(rng: np.random.Generator, horizon: int, rows: int, window: int) -> tuple[Float32Array, IntArray]:
    """Sorted error windows ``[H, rows, W]`` (NaN last) with counts from empty to full."""
    count = rng.integers(0, window + 1, (horizon, rows))
    count[:, : rows // 3] = window
    errors = rng.standard_t(3, (horizon, rows, window)).astype(np.float32)
    errors[np.arange(window)[None, None, :] >= count[:, :, None]] = np.nan
    errors.sort(axis=-1)
    return errors, count


def _reference_offsets(
    ordered: Float32Array, count: IntArray, levels: FloatArray, min_errors: int, widening: float
) -> FloatArray:
    last = np.maximum(count - 1, 0)
    all_levels = np.concatenate([levels, [0.5]])
    pos = last[:, :, None] * all_levels[None, None, :]
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, last[:, :, None])
    frac = pos - lo
    lo_val = np.take_along_axis(ordered, lo, axis=2).astype(np.float64)
    hi_val = np.take_along_axis(ordered, hi, axis=2).astype(np.float64)
    values = (lo_val + frac * (hi_val - lo_val)).transpose(2, 0, 1)
    median = values[-1]
    factor = 1.0 + widening / np.maximum(count, 1)
    offsets = median[None] + factor[None] * (values[:-1] - median[None])
    result: FloatArray = np.where((count >= min_errors)[None], offsets, np.nan)
    return result


@pytest.mark.parametrize("seed", range(3))
def test_quantile_offsets_match_take_along_axis(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ordered, count = _sorted_errors(rng, 6, 700, 96)
    levels = np.array([0.05, 0.25, 0.95])
    got = empirical_offsets(ordered, count, levels, min_errors=12, widening=20.0)
    assert np.array_equal(got, _reference_offsets(ordered, count, levels, 12, 20.0), equal_nan=True)


@pytest.mark.parametrize("seed", range(3))
def test_robust_center_scale_matches_take_along_axis(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ordered, count = _sorted_errors(rng, 1, 900, 96)
    rows, counts = ordered[0], count[0]

    def median(block: Float32Array) -> FloatArray:
        last = np.maximum(counts - 1, 0)
        a = np.take_along_axis(block, (last // 2)[:, None], axis=1)[:, 0].astype(np.float64)
        b = np.take_along_axis(block, ((last + 1) // 2)[:, None], axis=1)[:, 0].astype(np.float64)
        result: FloatArray = np.where(counts > 0, 0.5 * (a + b), 0.0)
        return result

    center = median(rows)
    deviations = np.abs(rows - center[:, None].astype(np.float32))
    deviations.sort(axis=1)
    scale = np.maximum(1.4826 * median(deviations), 0.01)
    got_center, got_scale = robust_center_scale(rows, counts, 0.01)
    assert np.array_equal(got_center, center) and np.array_equal(got_scale, scale)


def _reference_runs(
    length: IntArray, total: FloatArray, flagged: BoolArray, residual: FloatArray, observed: BoolArray, shift_run: int
) -> tuple[IntArray, FloatArray, BoolArray, FloatArray]:
    """Every series through the same rules, whole-array (the code before it worked on open runs only)."""
    sign = np.sign(np.where(flagged, residual, 0.0))
    continues = flagged & (sign == np.sign(total)) & (length > 0)
    restarts = flagged & ~continues
    ends = observed & ~flagged
    length = np.where(continues, length + 1, np.where(restarts, 1, np.where(ends, 0, length)))
    total = np.where(continues, total + residual, np.where(restarts, residual, np.where(ends, 0.0, total)))
    accepted = length >= shift_run
    shift = np.where(accepted, total / np.maximum(length, 1), 0.0)
    return np.where(accepted, 0, length), np.where(accepted, 0.0, total), accepted, shift


@pytest.mark.parametrize("shift_run", [1, 2, 3])
def test_level_shift_runs_match_the_whole_array_rules(shift_run: int) -> None:
    rng = np.random.default_rng(shift_run)
    n = 400
    runs = RunState.empty(n)
    length, total = runs.length.copy(), runs.total.copy()
    accepted_any = False
    for _ in range(60):
        observed = rng.uniform(size=n) > 0.1
        flagged = observed & (rng.uniform(size=n) < 0.15)
        residual = np.where(observed, rng.normal(0.0, 1.0, n), np.nan)
        accepted, shift = advance_runs(runs, flagged, residual, observed, shift_run)
        length, total, ref_accepted, ref_shift = _reference_runs(length, total, flagged, residual, observed, shift_run)
        assert np.array_equal(accepted, ref_accepted) and np.array_equal(shift, ref_shift)
        assert np.array_equal(runs.length, length) and np.array_equal(runs.total, total)
        accepted_any |= bool(accepted.any())
    assert accepted_any


def test_bank_in_small_blocks_equals_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of 7 series (uneven last block) against one block of all 60: every output the same."""
    traces = cluster_traces(12, 2.0, seed=5)
    values = traces.values.astype(np.float64)
    values[3, 100:130] = np.nan  # a gap
    values[8, :50] = np.nan  # a late starter
    config = BankConfig(season_length=48, season_buckets=12, error_window=24, min_errors=6, refresh_every=5)
    banks = []
    for _ in range(2):
        bank = SeriesBank(horizon=4, quantiles=(0.1, 0.5, 0.9), config=config)
        bank.add(range(values.shape[0]))
        banks.append(bank)
    small, whole = banks
    for column in values.T:
        with monkeypatch.context() as patch:
            patch.setattr(arrays, "BLOCK_SERIES", 7)
            got = small.update(column)
            got_fc = small.forecast()
        want = whole.update(column)
        want_fc = whole.forecast()
        for field in ("residual", "zscore", "outlier", "level_shift", "abnormal", "abnormal_score"):
            assert np.array_equal(getattr(got, field), getattr(want, field), equal_nan=True), field
        assert np.array_equal(got_fc.values, want_fc.values, equal_nan=True)
        assert np.array_equal(got_fc.mean, want_fc.mean, equal_nan=True)
    report, ref = small.accuracy(), whole.accuracy()
    assert report.series_scored > 0 and np.array_equal(report.series_mase, ref.series_mase, equal_nan=True)
    assert np.array_equal(report.series_coverage, ref.series_coverage, equal_nan=True)
    assert np.array_equal(report.series_skill, ref.series_skill, equal_nan=True)


def test_column_blocks_cover_every_series_once() -> None:
    assert arrays.column_blocks(0) == []
    assert arrays.column_blocks(10, 4) == [slice(0, 4), slice(4, 8), slice(8, 10)]
    blocks = arrays.column_blocks(3 * arrays.BLOCK_SERIES + 1)
    assert len(blocks) == 4 and blocks[-1] == slice(3 * arrays.BLOCK_SERIES, 3 * arrays.BLOCK_SERIES + 1)
