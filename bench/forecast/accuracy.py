"""Held-out accuracy of the shipped forecaster and every baseline, on the same series, origins and targets.

Traces: :func:`apollo.core.forecasting.synthetic.cluster_traces` (every archetype, a seed the defaults
were never chosen on), 7 days of 5-minute means (what the engine forecasts: ``forecast.step_seconds``),
30-minute horizon, daily season of 288: the shipped settings. The first 5 days are for tuning (per
resource kind, as the tuning job does; one shared set with ``--quick``), the model then runs online
through all 7 days and is scored at every origin of the last 2.

Figures (all in the same run; "skill" = MAE / last value's MAE on exactly the same (origin, lead) pairs):

* APOLLO: the published forecast (model mixed with last value and a slow mean), its skill
  (``skill_vs_last_value``, the headline), MASE and 90 % interval coverage;
* last value (skill 1 by definition) and seasonal naive (same time yesterday);
* a tuned damped Holt without season: the same online forecaster with its season and the mix switched
  off, its smoothing weights tuned the same way on the same training days;
* AutoETS with the daily season on hourly means and MSTL (statsforecast, :mod:`bench.forecast.external`)
  on samples of the same series, each compared with APOLLO on its own sample and origins: ``mase`` is
  APOLLO's MASE on AutoETS' sample and origins, ``autoets_seasonal_mase`` AutoETS' own there.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np

from apollo.config import ApolloSettings
from apollo.core.forecasting.accuracy import mean_over_series, seasonal_naive_scale
from apollo.core.forecasting.arrays import FloatArray
from apollo.core.forecasting.backtest import BacktestScores, Window, backtest
from apollo.core.forecasting.bank import BankConfig, ForecastParams, SeriesBank
from apollo.core.forecasting.synthetic import MIX, cluster_traces
from apollo.core.forecasting.tuning import tune
from apollo.runtime.engine import bank_shape
from bench.forecast import external
from bench.forecast.common import DAY, say

TRAIN_DAYS, TEST_DAYS = 5, 2
RESOURCES = tuple(MIX)


def _tune(
    values: FloatArray, kinds: tuple[str, ...], quick: bool, config: BankConfig, horizon: int, q: tuple[float, ...]
) -> dict[str, ForecastParams]:
    """Tune on the training part only: per resource kind, or (quick) one shared set on a small sample."""
    default = ApolloSettings().forecast.smoothing
    groups = {"all": list(RESOURCES)} if quick else {kind: [kind] for kind in RESOURCES}
    out: dict[str, ForecastParams] = {}
    for members in groups.values():
        rows = [i for i, k in enumerate(kinds) if k in members]
        res = tune(values[rows], default, config=config, horizon=horizon, quantiles=q, max_series=24 if quick else 48)
        for kind in members:
            out[kind] = res.params
    return out


def _run(
    values: FloatArray,
    kinds: tuple[str, ...],
    params: dict[str, ForecastParams],
    config: BankConfig,
    horizon: int,
    q: tuple[float, ...],
    windows: list[Window],
) -> list[BacktestScores]:
    bank = SeriesBank(horizon=horizon, quantiles=q, config=config)
    bank.add(range(values.shape[0]))
    for kind, p in params.items():
        bank.set_params(p, [i for i, k in enumerate(kinds) if k == kind])
    return backtest(bank, values, windows)


def bench_accuracy(quick: bool, seed: int) -> dict[str, Any]:
    config, horizon, q = bank_shape(ApolloSettings())
    nodes = 40 if quick else 100
    tr = cluster_traces(nodes, TRAIN_DAYS + TEST_DAYS, seed=seed)
    values = tr.values
    n, steps = values.shape
    train = TRAIN_DAYS * DAY
    scale = seasonal_naive_scale(values[:, :train], DAY)
    hour = DAY // 24

    t0 = time.perf_counter()
    params = _tune(values[:, :train], tr.kinds, quick, config, horizon, q)
    holt_config = replace(config, season_length=1, season_buckets=2, combine=False)
    holt_params = _tune(values[:, :train], tr.kinds, quick, holt_config, horizon, q)
    tune_s = time.perf_counter() - t0

    # Seeded random samples for the slow library baselines (a stride would alias with 5 resources per node).
    order = np.random.default_rng(seed).permutation(n)
    ets_rows = sorted(int(i) for i in order[: 10 if quick else 40])
    mstl_rows = sorted(int(i) for i in order[: 2 if quick else 8])
    fwd_rows = sorted(int(i) for i in order[: 6 if quick else 20])
    mstl_stride, fwd_stride = (72, 6) if quick else (24, 1)
    # Origins that close an hour (the hourly AutoETS can only forecast from there).
    hourly = Window(train + hour - 1, steps, hour)
    windows = [Window(train, steps), hourly, Window(train, steps, mstl_stride), Window(train, steps, fwd_stride)]

    t0 = time.perf_counter()
    full, on_hours, on_mstl, on_fwd = _run(values, tr.kinds, params, config, horizon, q, windows)
    holt_full, holt_hours, *_ = _run(values, tr.kinds, holt_params, holt_config, horizon, q, windows[:2])
    replay_s = time.perf_counter() - t0

    mae, last_mae = full.mae(), full.last_value_mae()
    moved = (mae > 0) & (last_mae > 0)  # a series flat over the whole test has no ratio
    geometric = float(np.exp(np.mean(np.log(mae[moved] / last_mae[moved]))))
    mase_all = full.mase(scale)
    res: dict[str, Any] = {
        "accuracy_series": n,
        "accuracy_origins_per_series": steps - train,
        "skill_vs_last_value": full.skill(),
        "skill_geometric_mean": geometric,
        "share_of_series_beating_last_value": float(np.nanmean(full.mae() < full.last_value_mae())),
        "seasonal_naive_skill_vs_last_value": full.seasonal_naive_skill(),
        "damped_holt_skill_vs_last_value": holt_full.skill(),
        "mase_all_series": mean_over_series(mase_all),
        "coverage_p90": mean_over_series(full.coverage()),
        "tuned_params": {k: [p.alpha, p.beta, p.phi, p.gamma] for k, p in params.items()},
        "damped_holt_params": {k: [p.alpha, p.beta, p.phi] for k, p in holt_params.items()},
    }
    kinds = np.array(tr.kinds)
    archetypes = np.array(tr.archetypes)
    res["skill_by_resource"] = {k: round(full.skill(np.flatnonzero(kinds == k)), 3) for k in RESOURCES}
    res["skill_by_archetype"] = {
        a: round(full.skill(np.flatnonzero(archetypes == a)), 3) for a in sorted(set(tr.archetypes))
    }
    say(
        f"[accuracy] {n} held-out series x {steps - train} origins (5-minute means, H={horizon}): skill vs last "
        f"value {res['skill_vs_last_value']:.3f} (APOLLO MAE / last value's, same pairs; geometric mean over series "
        f"{res['skill_geometric_mean']:.3f}, {res['share_of_series_beating_last_value']:.0%} of series beat it), "
        f"seasonal naive {res['seasonal_naive_skill_vs_last_value']:.3f}, tuned damped Holt without season "
        f"{res['damped_holt_skill_vs_last_value']:.3f}; MASE {res['mase_all_series']:.3f}; 90% coverage "
        f"{res['coverage_p90']:.3f}; tuning {tune_s:.1f}s, replays {replay_s:.1f}s"
    )
    say(f"[accuracy] skill by resource {res['skill_by_resource']}; by archetype {res['skill_by_archetype']}")

    try:
        from statsforecast.models import MSTL, AutoETS
    except ImportError as exc:  # optional [bench] dependency
        res["statsforecast_note"] = f"statsforecast not importable ({exc}); install apollo-stack[bench]"
        say(f"[statsforecast] NOT RUN: {res['statsforecast_note']}; its fields are null")
        res.update(mase=None, autoets_seasonal_mase=None, mstl_mase=None)
        return res

    def on(scores: BacktestScores, rows: list[int]) -> tuple[float, float]:
        mae = scores.mae()[rows]
        return mean_over_series(mae / scale[rows]), float(mae.sum() / scores.last_value_mae()[rows].sum())

    t0 = time.perf_counter()
    ets = external.autoets_hourly(values, ets_rows, train, list(range(hourly.start, steps - 1, hour)), horizon)
    ets_s = time.perf_counter() - t0
    apollo_mase, apollo_skill = on(on_hours, ets_rows)
    last = on_hours.last_value_mae()[ets_rows]
    res.update(
        mase=apollo_mase,
        autoets_seasonal_mase=mean_over_series(ets["mae"] / scale[ets_rows]),
        autoets_seasonal_skill_vs_last_value=float(ets["mae"].sum() / last.sum()),
        apollo_skill_on_autoets_sample=apollo_skill,
        damped_holt_mase_on_autoets_sample=on(holt_hours, ets_rows)[0],
        autoets_series=len(ets_rows),
        autoets_origins_per_series=len(range(hourly.start, steps - 1, hour)),
    )
    say(
        f"[statsforecast] AutoETS(season 24) on hourly means, {len(ets_rows)} series x "
        f"{res['autoets_origins_per_series']} hourly origins in {ets_s:.1f}s: MASE {res['autoets_seasonal_mase']:.3f} "
        f"(skill {res['autoets_seasonal_skill_vs_last_value']:.3f}) | APOLLO same series/origins: MASE "
        f"{apollo_mase:.3f} (skill {apollo_skill:.3f}); damped Holt {res['damped_holt_mase_on_autoets_sample']:.3f}"
    )

    t0 = time.perf_counter()
    mstl_origins = list(range(train, steps - 1, mstl_stride))
    mstl = external.per_series_forward(
        lambda: MSTL(season_length=DAY, trend_forecaster=AutoETS(model="ZZN")),
        values, mstl_rows, train, mstl_origins, horizon,
    )  # fmt: skip
    mstl_s = time.perf_counter() - t0
    apollo_mase, apollo_skill = on(on_mstl, mstl_rows)
    res.update(
        mstl_mase=mean_over_series(mstl["mae"] / scale[mstl_rows]),
        mstl_coverage_p90=mean_over_series(mstl["coverage"]),
        apollo_mase_on_mstl_sample=apollo_mase,
        mstl_series=len(mstl_rows),
        mstl_forward_ms=mstl["forward_ms"],
    )
    say(
        f"[statsforecast] MSTL(288)+AutoETS trend, {len(mstl_rows)} series x {len(mstl_origins)} origins in "
        f"{mstl_s:.1f}s: MASE {res['mstl_mase']:.3f}, 90% coverage {res['mstl_coverage_p90']:.3f} | APOLLO same: "
        f"MASE {apollo_mase:.3f}"
    )

    t0 = time.perf_counter()
    fwd_origins = list(range(train, steps - 1, fwd_stride))
    fwd = external.per_series_forward(lambda: AutoETS(model="ZZN"), values, fwd_rows, train, fwd_origins, horizon)
    fwd_s = time.perf_counter() - t0
    apollo_mase, _ = on(on_fwd, fwd_rows)
    res.update(
        autoets_nonseasonal_mase=mean_over_series(fwd["mae"] / scale[fwd_rows]),
        apollo_mase_on_nonseasonal_sample=apollo_mase,
        autoets_forward_ms_per_series=fwd["forward_ms"],
        autoets_fit_ms_per_series=fwd["fit_ms"],
    )
    say(
        f"[statsforecast] AutoETS without season, {len(fwd_rows)} series x {len(fwd_origins)} origins in {fwd_s:.1f}s: "
        f"MASE {res['autoets_nonseasonal_mase']:.3f} | APOLLO same: {apollo_mase:.3f}; forward "
        f"{fwd['forward_ms']:.2f} ms per series and origin (fit {fwd['fit_ms']:.0f} ms)"
    )
    batch_series = 200 if quick else 1000
    res["batched_statsforecast_ms_per_series"] = external.batched_forecast_ms_per_series(values, batch_series, horizon)
    res["batched_statsforecast_series"] = batch_series
    return res
