"""Abnormal-behaviour flags scored on labelled anomalies, beside a rolling z-score run the same way.

Held-out synthetic traces (every archetype, a seed of their own) get labelled anomalies injected from
day 2 on (:func:`apollo.core.forecasting.synthetic.inject_anomalies`: spikes, level shifts, slow drifts,
variance bursts, sized by each series' own variability). Both detectors see the same series sample by
sample:

* APOLLO: the shipped forecaster's ``abnormal`` flag (what is reported and penalised);
* the baseline: ``|y - mean| / sd`` over the previous day of samples, flagged above a threshold.

Scored per labelled window (detected = a flag anywhere in it) and per flag outside every window (a false
flag; counted per flagged sample, since each one costs the node score points at that tick), from day 2.
The baseline's threshold is swept and the best recall it reaches at no more false flags than APOLLO's is
the comparison (``recall at the same false-flag rate``); its figures at the customary threshold of 3 are
reported too. The state gate's outliers (kept out of the model's state, never reported) are counted to
show how much more often that cheaper question says yes.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from apollo.config import ApolloSettings
from apollo.core.forecasting.arrays import BoolArray, FloatArray
from apollo.core.forecasting.bank import SeriesBank
from apollo.core.forecasting.synthetic import ANOMALY_KINDS, LabelledAnomalies, cluster_traces, inject_anomalies
from apollo.runtime.engine import bank_shape
from bench.forecast.common import DAY, say

THRESHOLDS = np.round(np.arange(2.0, 15.0001, 0.05), 2)


def rolling_zscore(values: FloatArray, window: int) -> FloatArray:
    """``|y_t - mean| / sd`` of the previous ``window`` samples (gaps skipped); NaN for the first window."""
    n, steps = values.shape
    ok = ~np.isnan(values)
    x = np.where(ok, values, 0.0)
    zeros = np.zeros((n, 1))
    c1 = np.concatenate([zeros, np.cumsum(x, axis=1)], axis=1)
    c2 = np.concatenate([zeros, np.cumsum(x * x, axis=1)], axis=1)
    cn = np.concatenate([zeros, np.cumsum(ok, axis=1)], axis=1)
    t = np.arange(steps)
    lo = np.maximum(t - window, 0)
    count = cn[:, t] - cn[:, lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (c1[:, t] - c1[:, lo]) / count
        sd = np.sqrt(np.maximum((c2[:, t] - c2[:, lo]) / count - mean * mean, 1e-12))
        z: FloatArray = np.abs(values - mean) / sd
    z[:, :window] = np.nan
    return z


def score_flags(flags: BoolArray, labels: LabelledAnomalies, first: int) -> tuple[float, BoolArray]:
    """(false flags per series-day from column ``first``, detected per labelled window)."""
    outside = flags & ~labels.window_mask()
    days = (flags.shape[1] - first) / DAY
    false = float(outside[:, first:].sum()) / (flags.shape[0] * days)
    detected = np.array(
        [
            flags[r, a:b].any()
            for r, a, b in zip(labels.row.tolist(), labels.start.tolist(), labels.end.tolist(), strict=True)
        ],
        dtype=np.bool_,
    )
    return false, detected


def bench_anomalies(quick: bool, seed: int) -> dict[str, Any]:
    settings = ApolloSettings()
    config, horizon, quantiles = bank_shape(settings)
    nodes, days = (40, 5) if quick else (100, 7)
    traces = cluster_traces(nodes, days, seed=seed)
    first = 2 * DAY
    labels = inject_anomalies(traces.values, first=first, seed=seed + 1)
    values = labels.values
    bank = SeriesBank(params=settings.forecast.smoothing, horizon=horizon, quantiles=quantiles, config=config)
    bank.add(range(values.shape[0]))
    flags = np.zeros(values.shape, dtype=np.bool_)
    outliers = np.zeros(values.shape, dtype=np.bool_)
    t0 = time.perf_counter()
    for j in range(values.shape[1]):
        step = bank.update(values[:, j])
        flags[:, j] = step.abnormal
        outliers[:, j] = step.outlier
    run_s = time.perf_counter() - t0
    false, detected = score_flags(flags, labels, first)
    z = np.nan_to_num(rolling_zscore(values, DAY))
    best_threshold, best_recall, best_false = float("nan"), 0.0, float("nan")
    for threshold in THRESHOLDS:
        z_false, z_detected = score_flags(z >= threshold, labels, first)
        if z_false <= false and z_detected.mean() > best_recall:
            best_threshold, best_recall, best_false = float(threshold), float(z_detected.mean()), z_false
    z3_false, z3_detected = score_flags(z >= 3.0, labels, first)
    _, z_best_detected = score_flags(z >= (best_threshold if best_recall else np.inf), labels, first)
    recall = float(detected.mean())
    kinds = np.array(labels.kind)
    archetypes = np.array(traces.archetypes)[labels.row]
    days_scored = (values.shape[1] - first) / DAY
    gate = float(outliers[:, first:].sum()) / (values.shape[0] * days_scored)
    result: dict[str, Any] = {
        "anomaly_series": values.shape[0],
        "anomaly_windows": int(detected.size),
        "anomaly_false_per_series_day": false,
        "anomaly_recall": recall,
        "anomaly_zscore_threshold": best_threshold,
        "anomaly_zscore_false_per_series_day": best_false,
        "anomaly_zscore_recall_same_false_rate": best_recall,
        "anomaly_recall_vs_zscore": recall / best_recall if best_recall > 0 else float("inf"),
        "anomaly_zscore3_false_per_series_day": z3_false,
        "anomaly_zscore3_recall": float(z3_detected.mean()),
        "anomaly_gate_outliers_per_series_day": gate,
        "anomaly_recall_by_kind": {k: round(float(detected[kinds == k].mean()), 3) for k in ANOMALY_KINDS},
        "anomaly_zscore_recall_by_kind": {
            k: round(float(z_best_detected[kinds == k].mean()), 3) for k in ANOMALY_KINDS
        },
        "anomaly_recall_by_archetype": {
            a: round(float(detected[archetypes == a].mean()), 3) for a in sorted(set(traces.archetypes))
        },
    }
    say(
        f"[anomaly] {values.shape[0]} held-out series x {days_scored:.0f} days scored, {detected.size} labelled "
        f"windows ({', '.join(ANOMALY_KINDS)}): APOLLO {false:.2f} false flags per series-day, recall "
        f"{recall:.3f}; rolling z-score at the same false-flag rate (threshold {best_threshold:g}, "
        f"{best_false:.2f}/series-day) recall {best_recall:.3f} -> ratio {result['anomaly_recall_vs_zscore']:.2f}; "
        f"z-score at 3: {z3_false:.1f} false/series-day, recall {z3_detected.mean():.3f}; state gate kept "
        f"{gate:.1f} samples/series-day out of the state; {run_s:.1f}s"
    )
    say(
        f"[anomaly] recall by kind: APOLLO {result['anomaly_recall_by_kind']}, "
        f"z-score {result['anomaly_zscore_recall_by_kind']}"
    )
    return result
