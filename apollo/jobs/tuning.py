"""Scheduled self-tuning: refit the smoothing parameters per resource kind from Prometheus history.

The pure searches live in the core (`apollo.core.forecasting.tuning`: pinball loss at the decision
quantile on held-out data, new parameters adopted only when they beat the current ones;
`apollo.core.forecasting.threshold_tuning`: the warning's k against realised overloads). This job, a
`common.loops.BackgroundLoop` that first runs one interval after start, fetches the history through the
engine's metric source, runs the searches and swaps the results into the live engine under its lock,
keeping every series' learnt state.
"""

from __future__ import annotations

import datetime as dt
import logging

import numpy as np

from apollo.core.forecasting.arrays import FloatArray
from apollo.core.forecasting.bank import SeriesBank
from apollo.core.forecasting.threshold_tuning import ThresholdResult, tune_overload_steps
from apollo.core.forecasting.tuning import TuningResult, tune
from apollo.runtime.engine import Engine
from apollo.runtime.sources import SourceError
from common.loops import BackgroundLoop

log = logging.getLogger("apollo.tuning")


class TuningJob(BackgroundLoop):
    """Every `tuning.interval_seconds` (the first time one interval after start): refit from history."""

    def __init__(self, engine: Engine) -> None:
        interval = engine.settings.tuning.interval_seconds
        super().__init__("apollo-tuning", interval, first_delay=interval)
        self.engine = engine
        self.last: dict[str, TuningResult] = {}
        self.last_error = ""
        self.threshold: ThresholdResult | None = None

    def run_once(self) -> None:
        # A failure is logged by the shell and the old parameters stay; the next round tries again.
        self.refit(self.engine.clock())

    def refit(self, now: float) -> dict[str, TuningResult]:
        """One refit of every resource kind; returns the results (adopted or not) by resource."""
        s = self.engine.settings
        end = dt.datetime.fromtimestamp(now, dt.UTC)
        start = end - dt.timedelta(hours=s.tuning.lookback_hours)
        try:
            history = self.engine.source.history(
                start, end, s.forecast.step_seconds, average_seconds=s.forecast.step_seconds
            )
        except SourceError as exc:
            self.last_error = str(exc)
            log.warning("tuning skipped: history unavailable", extra={"error": str(exc)[:300]})
            return {}
        results: dict[str, TuningResult] = {}
        for resource in self.engine.resources:
            rows = [i for i, k in enumerate(history.keys) if k[1] == resource]
            if not rows:
                continue
            current = self.engine.resource_params.get(resource, self.engine.bank.params)
            try:
                result = tune(
                    history.values[rows],
                    current,
                    config=self.engine.bank_config,
                    horizon=self.engine.bank.horizon,
                    quantiles=self.engine.quantiles,
                    objective="pinball",
                    decision_level=self.engine.quantiles[-1],
                    holdout_fraction=s.tuning.holdout_fraction,
                )
            except ValueError as exc:  # e.g. not enough history yet
                log.info("tuning skipped", extra={"resource": resource, "reason": str(exc)})
                continue
            results[resource] = result
            if result.adopted:
                self.engine.set_resource_params(resource, result.params)
            log.info(
                "tuning result",
                extra={"resource": resource, "adopted": result.adopted, "reason": result.reason},
            )
        self.last = results
        self._tune_threshold(history.keys, history.values)
        return results

    def _tune_threshold(self, keys: list[tuple[str, str]], values: FloatArray) -> None:
        """Pick the overload warning's k from realised CPU / memory overloads in the same history."""
        e = self.engine
        rows = [i for i, k in enumerate(keys) if k[1] in ("cpu", "memory")]
        usable = [i for i in rows if np.isfinite(values[i]).mean() >= 0.5][:64]
        if not usable:
            return
        bank = SeriesBank(
            params=e.resource_params.get("cpu", e.bank.params),
            horizon=e.bank.horizon,
            quantiles=e.quantiles,
            config=e.bank_config,
        )
        bank.add(range(len(usable)))
        try:
            result = tune_overload_steps(
                bank,
                values[usable],
                e.settings.policy.overload_threshold,
                e.overload_steps,
                level=e.quantiles[-1],
                warmup=e.bank_config.error_window,
            )
        except ValueError as exc:
            log.info("threshold tuning skipped", extra={"reason": str(exc)})
            return
        self.threshold = result
        if result.adopted:
            e.set_overload_steps(result.steps)
        log.info(
            "threshold tuning", extra={"adopted": result.adopted, "reason": result.reason, "events": result.events}
        )
