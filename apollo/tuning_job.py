"""Scheduled self-tuning: refit the smoothing parameters per resource kind from Prometheus history.

The pure search lives in `apollo.tuning` (pinball loss at the decision quantile on held-out data,
new parameters adopted only when they beat the current ones); this adapter fetches the history
with query_range, runs the search per resource kind and swaps parameters into the live bank
under the engine's lock, keeping every series' learnt state.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from dataclasses import dataclass, field

from apollo.engine import Engine
from apollo.prometheus_source import SourceError
from apollo.tuning import TuningResult, tune

log = logging.getLogger("apollo.tuning")


@dataclass
class TuningJob:
    engine: Engine
    last: dict[str, TuningResult] = field(default_factory=dict)
    last_error: str = ""

    def run_once(self, now: float) -> dict[str, TuningResult]:
        """One refit of every resource kind; returns the results (adopted or not) by resource."""
        s = self.engine.settings
        end = dt.datetime.fromtimestamp(now, dt.UTC)
        start = end - dt.timedelta(hours=s.tuning.lookback_hours)
        try:
            history = self.engine.source.history(start, end, s.forecast.step_seconds)
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
        return results

    def run_forever(self, stop: threading.Event) -> None:
        interval = self.engine.settings.tuning.interval_seconds
        while not stop.wait(interval):
            try:
                self.run_once(self.engine.clock())
            except Exception:  # a bug in tuning must not end the service; the old parameters stay
                log.exception("tuning failed")
