"""statsforecast baselines on the same series, origins and targets as APOLLO (optional ``bench`` extra).

* AutoETS with the daily season. statsforecast's ETS cannot hold a season longer than 24 (its C core
  caps the seasonal state), so it runs on hourly means (season 24): fitted once on the training days,
  then at every origin that closes an hour ``forward`` applies the fitted model to the hourly means so
  far and forecasts two hours. The 5-minute targets of the next half hour get a linear interpolation
  between the last hour's mean (at its centre) and the first forecast hour (at its centre): the
  tractable cadence, said so, and generous to it (the interpolation leans on the last observed hour).
* MSTL (season 288 at 5-minute steps, AutoETS trend), statsforecast's own answer to long seasons, on
  fewer series and origins: ``forward`` re-decomposes the whole history (a quarter of a second a call).
* AutoETS without season at 5-minute steps: the per-series library call an online forecaster replaces
  (``forward`` re-runs the fitted model over the history at every origin); its median time per call is
  the per-series cost the speed-up is stated against.
* The best batched alternative found: ``StatsForecast.forecast`` over many series at once with a damped
  Holt (AutoETS "AAN", damped), one call per tick on the last two days, which refits every series each
  time (statsforecast has no incremental batched path); its time per series is the second speed figure.

Gaps are forward-filled for statsforecast (causal: no future value leaks into the past).
"""

from __future__ import annotations

import contextlib
import statistics
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from apollo.core.forecasting.arrays import FloatArray
from bench.forecast.common import DAY

HOUR = DAY // 24


def causal_fill(y: FloatArray) -> FloatArray:
    """Forward-fill gaps (backward-fill only a leading gap) so no future value leaks into the past."""
    out = y.copy()
    idx = np.where(~np.isnan(out), np.arange(out.size), 0)
    np.maximum.accumulate(idx, out=idx)
    out = out[idx]
    if np.isnan(out[0]):
        first = np.flatnonzero(~np.isnan(out))
        out[: first[0] if first.size else out.size] = out[first[0]] if first.size else 0.0
    return out


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """statsforecast warns about every short or flat series; the figures say what happened."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


class Sums:
    """Absolute errors, interval hits and counts per series, over the scored (origin, lead) pairs."""

    def __init__(self) -> None:
        self.abs: list[float] = []
        self.inside: list[float] = []
        self.count: list[int] = []

    def add(self, actual: FloatArray, mean: FloatArray, lo: FloatArray | None, hi: FloatArray | None) -> None:
        ok = ~np.isnan(actual) & ~np.isnan(mean)
        self.abs[-1] += float(np.abs(actual[ok] - mean[ok]).sum())
        if lo is not None and hi is not None:
            self.inside[-1] += float(((actual[ok] >= lo[ok]) & (actual[ok] <= hi[ok])).sum())
        self.count[-1] += int(ok.sum())

    def start(self) -> None:
        self.abs.append(0.0)
        self.inside.append(0.0)
        self.count.append(0)

    def mae(self) -> FloatArray:
        result: FloatArray = np.array(self.abs) / np.maximum(np.array(self.count), 1)
        return result

    def coverage(self) -> FloatArray:
        result: FloatArray = np.array(self.inside) / np.maximum(np.array(self.count), 1)
        return result


def autoets_hourly(values: FloatArray, rows: list[int], train: int, origins: list[int], horizon: int) -> dict[str, Any]:
    """Seasonal AutoETS on hourly means; 5-minute targets by interpolation (see the module docstring)."""
    from statsforecast.models import AutoETS

    sums = Sums()
    fit_ms: list[float] = []
    fwd_ms: list[float] = []
    for row in rows:
        y = causal_fill(values[row])
        hourly = y[: y.size // HOUR * HOUR].reshape(-1, HOUR).mean(axis=1)
        model = AutoETS(season_length=24)
        t0 = time.perf_counter()
        with _quiet():
            model.fit(hourly[: train // HOUR])
        fit_ms.append((time.perf_counter() - t0) * 1e3)
        sums.start()
        for o in origins:
            hours = (o + 1) // HOUR
            t0 = time.perf_counter()
            with _quiet():
                fc = model.forward(y=hourly[:hours], h=2)
            fwd_ms.append((time.perf_counter() - t0) * 1e3)
            last_mean, first = hourly[hours - 1], float(fc["mean"][0])
            lead = np.arange(1, horizon + 1)
            weight = np.clip((lead + (HOUR - 1) / 2.0) / HOUR, 0.0, 1.0)  # from the last hour's centre
            mean = last_mean + (first - last_mean) * weight
            sums.add(values[row, o + 1 : o + 1 + horizon], mean[: values.shape[1] - o - 1], None, None)
    return {"mae": sums.mae(), "fit_ms": statistics.median(fit_ms), "forward_ms": statistics.median(fwd_ms)}


def per_series_forward(
    make: Callable[[], Any], values: FloatArray, rows: list[int], train: int, origins: list[int], horizon: int
) -> dict[str, Any]:
    """Fit once on the training part, ``forward`` at every origin on the 5-minute data (90 % interval)."""
    sums = Sums()
    fit_ms: list[float] = []
    fwd_ms: list[float] = []
    for row in rows:
        y = values[row]
        filled = causal_fill(y)
        model = make()
        t0 = time.perf_counter()
        with _quiet():
            model.fit(filled[:train])
        fit_ms.append((time.perf_counter() - t0) * 1e3)
        sums.start()
        for o in origins:
            t0 = time.perf_counter()
            with _quiet():
                fc = model.forward(y=filled[: o + 1], h=horizon, level=[90])
            fwd_ms.append((time.perf_counter() - t0) * 1e3)
            actual = y[o + 1 : o + 1 + horizon]
            k = actual.size
            sums.add(actual, fc["mean"][:k], fc["lo-90"][:k], fc["hi-90"][:k])
    return {
        "mae": sums.mae(),
        "coverage": sums.coverage(),
        "fit_ms": statistics.median(fit_ms),
        "forward_ms": statistics.median(fwd_ms),
    }


def batched_forecast_ms_per_series(values: FloatArray, series: int, horizon: int) -> float:
    """One ``StatsForecast.forecast`` call over ``series`` series (last two days each), per series, in ms."""
    import pandas as pd  # type: ignore[import-untyped]
    from statsforecast import StatsForecast
    from statsforecast.models import AutoETS

    window = 2 * DAY
    rows = np.arange(series) % values.shape[0]
    frames = [
        pd.DataFrame({"unique_id": i, "ds": np.arange(window), "y": causal_fill(values[r])[-window:]})
        for i, r in enumerate(rows)
    ]
    df = pd.concat(frames, ignore_index=True)
    sf = StatsForecast(models=[AutoETS(model="AAN", damped=True)], freq=1, n_jobs=1)
    with _quiet():
        sf.forecast(h=horizon, df=df.head(window * 2))  # warm-up (imports, numba)
        t0 = time.perf_counter()
        sf.forecast(h=horizon, df=df)
        return (time.perf_counter() - t0) * 1e3 / series
