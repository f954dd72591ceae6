"""Two cadences: the engine ticks every ``tick_seconds``, the model steps every ``step_seconds``.

Why: at 10,000 nodes x 5 resources a model stepping every 30 s would need a 60-step horizon and a
2,880-sample daily season per series (gigabytes, and a tick that no longer fits its budget), while what a
30-minute decision needs is the next half hour in 5-minute means. So the model eats one sample per step,
the mean of the tick samples that fell in it (what Prometheus' ``avg_over_time`` gives for history), and
the engine keeps its short tick for what must be current: the latest load (reactive mode, the view) and
the pods bound since.

:class:`StepMeans` accumulates tick samples per series and closes a step when the clock enters the next
one. Steps are ``floor(epoch / step_seconds)``, the same numbering the bank's ticks use, so the seasonal
phase stays tied to the clock. Rows follow the bank's rows (``extend``/``take`` like every other state).
"""

from __future__ import annotations

import numpy as np

from apollo.core.forecasting.arrays import BoolArray, FloatArray, IntArray, grow, select


class StepMeans:
    """Per-series sum and count of the ticks in the current model step."""

    def __init__(self, n_series: int = 0) -> None:
        self.step: int | None = None
        self.sum: FloatArray = np.zeros(n_series)
        self.count: IntArray = np.zeros(n_series, dtype=np.int64)

    def add(self, step: int, values: FloatArray) -> tuple[int, FloatArray] | None:
        """Add one tick's ``values`` (NaN = missing) taken during ``step``.

        Returns ``(closed_step, means)`` when this tick is the first of a later step: the means of the
        step that just ended (NaN where a series had no sample in it). A tick of an earlier step than
        the open one (a clock set back) counts towards the open step.
        """
        closed: tuple[int, FloatArray] | None = None
        if self.step is None:
            self.step = step
        elif step > self.step:
            closed = (self.step, self.means())
            self.step = step
            self.sum[:] = 0.0
            self.count[:] = 0
        seen: BoolArray = ~np.isnan(values)
        self.sum += np.where(seen, values, 0.0)
        self.count += seen
        return closed

    def means(self) -> FloatArray:
        with np.errstate(invalid="ignore", divide="ignore"):
            result: FloatArray = np.where(self.count > 0, self.sum / self.count, np.nan)
        return result

    def extend(self, count: int) -> None:
        self.sum = grow(self.sum, count, 0.0)
        self.count = grow(self.count, count, 0)

    def take(self, rows: IntArray) -> None:
        self.sum = select(self.sum, rows)
        self.count = select(self.count, rows)
