"""Pod-agnostic per-node scores from the forecast, for the extender's cached snapshot. Pure numpy.

Computed for every node in one vectorised pass per tick (10,000 nodes in a few milliseconds), so
the extender's hot path is a dictionary lookup. The per-pod refinements (the pod's own use, hot
value, insights) happen in the per-pod scoring and in the extender.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np
import numpy.typing as npt

from apollo.core.domain import MAX_SCORE, NEUTRAL_SCORE
from apollo.core.forecasting.early_warning import overload_warning

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
# A node flagged "overload coming" scores at most this: it sinks to the bottom of every ranking, yet keeps
# an order among flagged nodes for when the extender must place a pod on one of them.
OVERLOAD_SCORE_CAP = 10


class Reasons(Sequence[str]):
    """Each node's one-line reason, formatted only when read: a tick at 10,000 nodes must not build
    10,000 strings that only the few nodes someone asks about (or the overloaded ones) ever need."""

    def __init__(self, known: BoolArray, overload: BoolArray, cpu_peak: FloatArray, memory_peak: FloatArray) -> None:
        self._known, self._overload, self._cpu, self._memory = known, overload, cpu_peak, memory_peak

    def __len__(self) -> int:
        return len(self._known)

    @overload
    def __getitem__(self, i: int) -> str: ...

    @overload
    def __getitem__(self, i: slice) -> list[str]: ...

    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if not self._known[i]:
            return "no forecast yet: neutral"
        head = "overload predicted: " if self._overload[i] else ""
        return f"{head}cpu peak {self._cpu[i]:.0%}, memory peak {self._memory[i]:.0%}"


@dataclass(frozen=True)
class NodeScores:
    """Row i describes `nodes[i]`; NaN where a quantity is unknown."""

    nodes: list[str]
    score: npt.NDArray[np.int64]
    overload: BoolArray
    cpu_peak: FloatArray
    memory_peak: FloatArray
    cpu_headroom_cores: FloatArray
    memory_headroom_bytes: FloatArray
    cpu_allocatable: FloatArray
    memory_allocatable: FloatArray
    reasons: Sequence[str]


def _peak(upper: FloatArray) -> FloatArray:
    finite = np.isfinite(upper)
    out = np.where(finite, upper, -np.inf).max(axis=1) if upper.size else np.empty(0)
    return np.where(finite.any(axis=1), out, np.nan) if upper.size else out


def snapshot_scores(
    nodes: list[str],
    cpu_upper: FloatArray,
    memory_upper: FloatArray,
    cpu_allocatable: FloatArray,
    memory_allocatable: FloatArray,
    threshold: float,
    consecutive: int,
) -> NodeScores:
    """Score = predicted headroom under the decision quantile's peak over the horizon, 0-100.

    A node whose upper forecast stays above `threshold` for `consecutive` steps is flagged overload
    and capped at ``OVERLOAD_SCORE_CAP``: a lone spike only lowers its score. Nodes without forecasts score neutral.
    """
    n = len(nodes)
    if cpu_upper.shape[0] != n or memory_upper.shape[0] != n:
        raise ValueError("forecast rows must match nodes")
    cpu_peak = _peak(cpu_upper)
    mem_peak = _peak(memory_upper)
    worst = np.fmax(cpu_peak, mem_peak)
    known = np.isfinite(worst)
    headroom = np.clip(1.0 - np.nan_to_num(worst, nan=0.5), 0.0, 1.0)
    score = np.where(known, np.rint(MAX_SCORE * headroom), NEUTRAL_SCORE)
    overload = (
        overload_warning(cpu_upper, threshold, consecutive).flags
        | overload_warning(memory_upper, threshold, consecutive).flags
    )
    score = np.where(overload, np.minimum(score, OVERLOAD_SCORE_CAP), score).astype(np.int64)
    cpu_headroom = cpu_allocatable * (1.0 - cpu_peak)
    mem_headroom = memory_allocatable * (1.0 - mem_peak)
    reasons = Reasons(known, overload, cpu_peak, mem_peak)
    return NodeScores(
        nodes,
        score,
        overload,
        cpu_peak,
        mem_peak,
        cpu_headroom,
        mem_headroom,
        cpu_allocatable,
        memory_allocatable,
        reasons,
    )
