"""What the series bank returns each tick: the forecast, what one update observed, membership changes.

Plain frozen values, rows in the bank's key order, so the engine and the benchmark read them without
touching the bank's internal (horizon-major) layout.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np

from apollo.core.forecasting.arrays import BoolArray, FloatArray


@dataclass(frozen=True, slots=True)
class ForecastResult:
    """Forecasts for the next ``horizon`` ticks of every series, rows in ``keys`` order.

    Attributes:
        keys: series keys, row order of every array.
        tick: tick of the first forecast step (``bank.tick`` when it was made).
        quantiles: the levels of ``values``' middle axis.
        mean: point forecast ``[n, H]``. NaN for series never observed.
        values: quantile forecasts ``[n, Q, H]``.
        lower, upper: the lowest and highest quantile, ``[n, H]`` (views into ``values``).
        seasonal: which series currently use a seasonal component.
    """

    keys: tuple[Hashable, ...]
    tick: int
    quantiles: tuple[float, ...]
    mean: FloatArray
    values: FloatArray
    lower: FloatArray
    upper: FloatArray
    seasonal: BoolArray

    def quantile(self, level: float) -> FloatArray:
        """Forecast ``[n, H]`` at one of the configured quantile levels."""
        return self.values[:, self.quantiles.index(level), :]


@dataclass(frozen=True, slots=True)
class UpdateResult:
    """What one ``update`` observed, rows in ``keys`` order.

    Attributes:
        tick: tick of the observation.
        residual: actual minus the model's one-step forecast (NaN where missing or not yet initialised).
        zscore: the state gate's robust z-score of the residual (NaN where it could not be computed).
        outlier: observations the gate kept out of the state (cheap, may be frequent; not reported).
        level_shift: series whose run of outliers was accepted as a new level at this tick.
        missing: series without an observation this tick.
        abnormal: series behaving abnormally (rare; what is reported and penalised).
        abnormal_score: severity of the abnormal test in scale units, >= 0 (NaN while it warms up or
            where the sample is missing).
    """

    keys: tuple[Hashable, ...]
    tick: int
    residual: FloatArray
    zscore: FloatArray
    outlier: BoolArray
    level_shift: BoolArray
    missing: BoolArray
    abnormal: BoolArray
    abnormal_score: FloatArray

    @property
    def outliers(self) -> list[Hashable]:
        return [self.keys[i] for i in np.flatnonzero(self.outlier)]

    @property
    def abnormals(self) -> list[Hashable]:
        return [self.keys[i] for i in np.flatnonzero(self.abnormal)]


@dataclass(frozen=True, slots=True)
class Membership:
    """Keys added and removed by :meth:`SeriesBank.ensure`."""

    added: tuple[Hashable, ...]
    removed: tuple[Hashable, ...]
