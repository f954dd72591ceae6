"""Command line of ``python -m bench.forecast``: run the parts, check the targets, print one JSON line."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from bench.forecast import __doc__ as OVERVIEW
from bench.forecast.accuracy import bench_accuracy
from bench.forecast.anomalies import bench_anomalies
from bench.forecast.common import SHIPPED, STEP_MINUTES, say
from bench.forecast.ticks import bench_ticks


def _targets(r: dict[str, Any]) -> dict[str, bool | None]:
    """The issue's targets; None where a figure could not be measured (e.g. statsforecast missing)."""

    def ok(value: Any, test: Callable[[float], bool]) -> bool | None:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        return bool(test(float(value)))

    return {
        "series>=40000": ok(r["series"], lambda v: v >= 40_000),
        "tick_ms_p50<=50": ok(r["tick_ms_p50"], lambda v: v <= 50.0),
        "tick_step_ms_p50<=50": ok(r["tick_step_ms_p50"], lambda v: v <= 50.0),
        "state_mb<=1024": ok(r["state_mb"], lambda v: v <= 1024.0),
        "skill_vs_last_value<=0.9": ok(r["skill_vs_last_value"], lambda v: v <= 0.9),
        "mase<=autoets_seasonal_mase": ok(r.get("mase"), lambda v: v <= r["autoets_seasonal_mase"]),
        "coverage_p90_in_0.87-0.93": ok(r["coverage_p90"], lambda v: 0.87 <= v <= 0.93),
        "anomaly_false_per_series_day<=2": ok(r["anomaly_false_per_series_day"], lambda v: v <= 2.0),
        "anomaly_recall_vs_zscore>=1": ok(r["anomaly_recall_vs_zscore"], lambda v: v >= 1.0),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(OVERVIEW or "").splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--quick", action="store_true", help="fewer timed steps, series and baseline samples")
    parser.add_argument("--nodes", type=int, default=10_000, help="nodes for the tick benchmark (x 5 resources)")
    parser.add_argument("--pods-per-node", type=int, default=4, help="pods in the tick benchmark's cluster view")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--skip", action="append", default=[], choices=("ticks", "accuracy", "anomalies"), help="leave a part out"
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    load_start = os.getloadavg()
    result: dict[str, Any] = {
        "quick": args.quick,
        "step_minutes": STEP_MINUTES,
        "tick_seconds": SHIPPED.forecast.tick_interval,
        "horizon_steps": SHIPPED.forecast.horizon_steps,
        "data": "seeded synthetic traces (apollo.core.forecasting.synthetic), not real cloud traces",
    }
    say(f"[load] load average at start {load_start[0]:.1f} / {load_start[1]:.1f} / {load_start[2]:.1f} "
        f"on {os.cpu_count()} CPUs")  # fmt: skip
    if "ticks" not in args.skip:
        result.update(bench_ticks(args.nodes, 6 if args.quick else 20, args.seed, args.pods_per_node))
    if "accuracy" not in args.skip:
        result.update(bench_accuracy(args.quick, args.seed + 1))
    if "anomalies" not in args.skip:
        result.update(bench_anomalies(args.quick, args.seed + 2))
    if "series" in result and "autoets_forward_ms_per_series" in result:
        per_series_ms = result["bank_update_forecast_ms_p50"] / result["series"]
        result["apollo_update_us_per_series"] = per_series_ms * 1e3
        result["speedup_vs_per_series_forward"] = result["autoets_forward_ms_per_series"] / per_series_ms
        result["speedup_vs_batched"] = result["batched_statsforecast_ms_per_series"] / per_series_ms
        say(
            f"[speed] APOLLO's incremental vectorised update + forecast: {per_series_ms * 1e3:.2f} us per series; "
            f"statsforecast AutoETS forward, one series per call: {result['autoets_forward_ms_per_series']:.2f} ms "
            f"({result['speedup_vs_per_series_forward']:,.0f}x); best batched alternative found, StatsForecast."
            f"forecast over {result['batched_statsforecast_series']} series (refits each call): "
            f"{result['batched_statsforecast_ms_per_series']:.2f} ms per series ({result['speedup_vs_batched']:,.0f}x)"
        )
    if {"series", "skill_vs_last_value", "anomaly_recall_vs_zscore"} <= set(result):
        result["targets_met"] = _targets(result)
        missed = [k for k, v in result["targets_met"].items() if v is False]
        say(f"[targets] {'all met' if not missed else 'MISSED: ' + ', '.join(missed)}")
    result["elapsed_s"] = time.perf_counter() - start
    load_end = os.getloadavg()
    result["load_average_start_end"] = [round(load_start[0], 2), round(load_end[0], 2)]
    say(f"[load] load average at end {load_end[0]:.1f}; {result['elapsed_s']:.0f}s in all")
    if args.json:
        print(json.dumps(result, default=float, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
