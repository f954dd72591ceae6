"""Forecaster benchmark: APOLLO measured at the settings it ships with, beside every baseline in one run.

Run: ``python -m bench.forecast --json [--quick]``. Human-readable lines first; with ``--json`` the LAST line
is one JSON object. Every figure comes from seeded synthetic traces (no labelled cloud traces are available
offline): :mod:`apollo.core.forecasting.synthetic` draws each series from an archetype (diurnal, noisy, flat
with steps, quantised GPU, spiky, trending) with per-series parameters, gaps, spikes and level shifts; the
defaults were chosen on other seeds than the ones used here.

Parts (each module says exactly what it measures):

* :mod:`bench.forecast.ticks`: the whole engine tick at 10,000 nodes x 5 resources, shipped settings,
  after the engine's own warm start; state size and memory growth;
* :mod:`bench.forecast.accuracy`: held-out skill against last value (the headline), seasonal naive, a tuned
  damped Holt without season, statsforecast AutoETS with the daily season (hourly means) and MSTL, each on
  the same series and origins as APOLLO; interval coverage;
* :mod:`bench.forecast.external`: the statsforecast calls, and the speed comparisons: APOLLO's incremental
  vectorised update per series against the per-series library call (``forward``), and against the best
  batched alternative found (``StatsForecast.forecast`` over many series, which refits);
* :mod:`bench.forecast.anomalies`: abnormal-behaviour flags on labelled injected anomalies, false flags per
  series-day, and recall against a rolling z-score at the same false-flag rate.

The machine it ran on is shared: timing figures are medians within one run, next to that run's own
baseline, and the load average at start and end is printed.
"""
