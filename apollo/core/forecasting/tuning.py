"""Fit smoothing parameters from history, and adopt them only if they beat the current ones out of sample.

Why a grid: the objective (pinball loss of online h-step quantile forecasts with empirical intervals) is
not smooth in the parameters and every evaluation is a full online replay. A grid of a few dozen
candidates costs one vectorised replay: every candidate runs as its own copy of the sampled series inside
one :class:`~apollo.core.forecasting.bank.SeriesBank` (see
:func:`apollo.core.forecasting.backtest.backtest` with ``tile``). Parameters are shared by all series
passed in, so call once per resource kind to get one set per kind.

What is scored: the model's own forecasts (``BankConfig.combine`` off), not the published mix of model, last
value and slow mean, because the weights being tuned act on the model alone.

Why two scoring windows: picking the best of many candidates on one window flatters the winner
(selection bias). The history is split into warm-up | selection | holdout; the best candidate on the
selection window must then beat the current parameters on the holdout window, by ``min_improvement``,
to be adopted. Otherwise the current parameters are kept, and the result says so and why.

Input is what Prometheus ``query_range`` returns, as ``[n_series, T]`` with NaN gaps.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from apollo.core.forecasting.arrays import FloatArray
from apollo.core.forecasting.backtest import BacktestScores, Window, backtest
from apollo.core.forecasting.bank import SeriesBank
from apollo.core.forecasting.params import BankConfig, ForecastParams

Objective = Literal["pinball", "mse"]


@dataclass(frozen=True, slots=True)
class ParamGrid:
    """Candidate values per parameter; combinations violating gamma <= 1 - alpha are skipped."""

    alpha: tuple[float, ...] = (0.1, 0.2, 0.35, 0.5, 0.7)
    beta: tuple[float, ...] = (0.0, 0.1)
    phi: tuple[float, ...] = (0.85, 0.95)
    gamma: tuple[float, ...] = (0.0, 0.05, 0.15)

    def candidates(self, current: ForecastParams) -> list[ForecastParams]:
        """``current`` first, then every valid combination not equal to it."""
        out = [current]
        for a, b, p, g in itertools.product(self.alpha, self.beta, self.phi, self.gamma):
            if g > 1.0 - a:
                continue
            cand = ForecastParams(alpha=a, beta=b, phi=p, gamma=g)
            if cand != current:
                out.append(cand)
        return out


@dataclass(frozen=True, slots=True)
class TuningResult:
    """Outcome of :func:`tune`.

    Attributes:
        params: the parameters to use from now on (``best`` if adopted, else ``current``).
        adopted: whether ``best`` replaced ``current``.
        current, best: the incumbent and the best candidate on the selection window.
        current_score, best_score: their holdout scores (lower is better; NaN when unscorable).
        objective: "pinball" (at ``decision_level``) or "mse" (of the mean).
        reason: one line for the log.
        candidate_scores: selection-window score of every candidate, in :meth:`ParamGrid.candidates` order.
    """

    params: ForecastParams
    adopted: bool
    current: ForecastParams
    best: ForecastParams
    current_score: float
    best_score: float
    objective: Objective
    decision_level: float
    series_used: int
    reason: str
    candidate_scores: tuple[float, ...] = field(default=())


def _candidate_scores(scores: BacktestScores, n: int, n_candidates: int, objective: Objective) -> FloatArray:
    per_series = scores.mean_pinball() if objective == "pinball" else scores.mse()
    table = per_series.reshape(n_candidates, n)
    ok = np.isfinite(table).all(axis=0)  # compare candidates on the same series only
    if not ok.any():
        return np.full(n_candidates, np.nan)
    result: FloatArray = table[:, ok].mean(axis=1)
    return result


def tune(
    history: FloatArray,
    current: ForecastParams,
    *,
    config: BankConfig | None = None,
    horizon: int = 6,
    quantiles: tuple[float, ...] = (0.05, 0.5, 0.95),
    objective: Objective = "pinball",
    decision_level: float | None = None,
    grid: ParamGrid | None = None,
    max_series: int = 64,
    selection_fraction: float = 0.25,
    holdout_fraction: float = 0.25,
    min_improvement: float = 0.01,
    seed: int = 0,
) -> TuningResult:
    """Search ``grid`` on ``history`` ``[n, T]`` and return the parameters to use (see module docstring).

    At most ``max_series`` series (those with at least half their samples present, sampled with
    ``seed``) are replayed, to bound the cost. The warm-up part must be at least ``error_window`` ticks
    so intervals are empirical by the time scoring starts.
    """
    cfg = config or BankConfig()
    data = np.asarray(history, dtype=np.float64)
    if data.ndim != 2:
        raise ValueError(f"history must be [n_series, T], got shape {data.shape}")
    if objective not in ("pinball", "mse"):
        raise ValueError(f"objective must be 'pinball' or 'mse', got {objective!r}")
    if not (0 < selection_fraction < 1 and 0 < holdout_fraction < 1 and selection_fraction + holdout_fraction < 1):
        raise ValueError("selection_fraction and holdout_fraction must be in (0, 1) and sum below 1")
    if max_series < 1:
        raise ValueError(f"max_series must be >= 1, got {max_series}")
    steps = data.shape[1]
    hold_start = int(steps * (1.0 - holdout_fraction))
    sel_start = int(steps * (1.0 - holdout_fraction - selection_fraction))
    if sel_start < cfg.error_window or hold_start - sel_start < horizon or steps - hold_start <= horizon:
        raise ValueError(
            f"history of {steps} ticks is too short: the warm-up ({sel_start} ticks) must cover "
            f"error_window={cfg.error_window} and both scoring windows must exceed the horizon"
        )
    level = quantiles[-1] if decision_level is None else decision_level
    if level not in quantiles:
        raise ValueError(f"decision_level {level} must be one of quantiles {quantiles}")

    usable = np.flatnonzero((~np.isnan(data)).mean(axis=1) >= 0.5)
    if usable.size == 0:
        return TuningResult(current, False, current, current, float("nan"), float("nan"), objective, level, 0,
                            "no series with enough data; keeping current parameters")  # fmt: skip
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(usable, size=min(max_series, usable.size), replace=False))
    sample = data[rows]
    n = rows.size

    cands = (grid or ParamGrid()).candidates(current)
    c = len(cands)
    # Score the model's own forecasts: the smoothing weights act on them, and the published mix with last
    # value and a slow mean would partly hide a poor choice (it leans on the other experts instead).
    bank = SeriesBank(params=current, horizon=horizon, quantiles=quantiles, config=replace(cfg, combine=False))
    bank.add(range(n * c))
    bank.set_param_arrays(
        alpha=np.repeat([p.alpha for p in cands], n),
        beta=np.repeat([p.beta for p in cands], n),
        phi=np.repeat([p.phi for p in cands], n),
        gamma=np.repeat([p.gamma for p in cands], n),
    )
    selection, holdout = backtest(
        bank,
        sample,
        [Window(sel_start, hold_start - horizon), Window(hold_start, steps)],
        decision_level=level,
        tile=c,
    )
    sel_scores = _candidate_scores(selection, n, c, objective)
    hold_scores = _candidate_scores(holdout, n, c, objective)
    if not np.isfinite(sel_scores).any():
        return TuningResult(current, False, current, current, float("nan"), float("nan"), objective, level, n,
                            "no candidate could be scored; keeping current parameters")  # fmt: skip
    best_i = int(np.nanargmin(sel_scores))
    best, cur_score, best_score = cands[best_i], float(hold_scores[0]), float(hold_scores[best_i])
    if best_i == 0:
        adopted, reason = False, "current parameters are the best candidate on the selection window"
    elif not (np.isfinite(best_score) and np.isfinite(cur_score)):
        adopted, reason = False, "holdout window could not be scored; keeping current parameters"
    elif best_score < cur_score * (1.0 - min_improvement):
        adopted = True
        reason = f"holdout {objective} {best_score:.6g} < current {cur_score:.6g} by > {min_improvement:.0%}"
    else:
        adopted = False
        reason = f"best candidate's holdout {objective} {best_score:.6g} does not beat current {cur_score:.6g}"
    return TuningResult(
        params=best if adopted else current,
        adopted=adopted,
        current=current,
        best=best,
        current_score=cur_score,
        best_score=best_score,
        objective=objective,
        decision_level=level,
        series_used=n,
        reason=reason,
        candidate_scores=tuple(float(s) for s in sel_scores),
    )
