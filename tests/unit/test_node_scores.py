"""The pod-agnostic per-node scores APOLLO publishes for the extender's snapshot (pure numpy)."""

from __future__ import annotations

import numpy as np
import pytest

from apollo.core.domain import NEUTRAL_SCORE
from apollo.core.scoring.snapshot import OVERLOAD_SCORE_CAP, snapshot_scores


def _rows(*series: list[float]) -> np.ndarray:
    width = max(len(s) for s in series)
    return np.array([s + [np.nan] * (width - len(s)) for s in series], dtype=np.float64)


def test_sustained_overload_is_flagged_a_lone_spike_only_lowers_the_score() -> None:
    idle = [0.1] * 12
    spike = [0.3] * 5 + [0.97] + [0.3] * 6
    sustained = [0.3] * 4 + [0.95] * 4 + [0.3] * 4
    cpu = _rows(idle, spike, sustained)
    memory = _rows([0.2] * 12, [0.2] * 12, [0.2] * 12)
    alloc = np.full(3, 16.0)
    s = snapshot_scores(["idle", "spike", "sustained"], cpu, memory, alloc, alloc * 2**30, threshold=0.9, consecutive=3)
    assert s.overload.tolist() == [False, False, True]
    assert s.score[1] < s.score[0] and s.score[2] <= OVERLOAD_SCORE_CAP
    assert "overload predicted" in s.reasons[2] and "overload" not in s.reasons[1]
    assert s.cpu_peak[0] == pytest.approx(0.1)
    assert s.cpu_headroom_cores[0] == pytest.approx(16 * 0.9)


def test_nodes_without_a_forecast_score_neutral_and_unknown_headroom() -> None:
    cpu = _rows([np.nan] * 4, [0.5] * 4)
    memory = _rows([np.nan] * 4, [0.5] * 4)
    alloc = np.array([np.nan, 8.0])
    s = snapshot_scores(["new", "known"], cpu, memory, alloc, alloc, threshold=0.85, consecutive=2)
    assert s.score.tolist() == [NEUTRAL_SCORE, 50] and not s.overload.any()
    assert np.isnan(s.cpu_headroom_cores[0]) and s.reasons[0] == "no forecast yet: neutral"


def test_rows_must_match_nodes() -> None:
    with pytest.raises(ValueError, match="rows must match"):
        snapshot_scores(["a"], _rows([0.1], [0.2]), _rows([0.1]), np.ones(1), np.ones(1), 0.85, 1)
