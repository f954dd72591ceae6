"""APOLLO's Prometheus metrics on an injectable registry."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class ApolloMetrics:
    registry: CollectorRegistry
    tick_seconds: Histogram
    tick_failures: Counter
    series: Gauge
    stale: Gauge
    reactive: Gauge
    mase: Gauge
    skill: Gauge
    coverage: Gauge
    abnormal: Gauge
    model_steps: Counter
    dropped_values: Counter
    reports: Counter
    rejected: Counter
    scheduling_results: Counter
    policies_emitted: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> ApolloMetrics:
        r = registry or CollectorRegistry()
        return cls(
            registry=r,
            tick_seconds=Histogram(
                "apollo_tick_seconds", "Duration of one sample+update+forecast+score tick",
                buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=r,
            ),
            tick_failures=Counter("apollo_tick_failures_total", "Ticks without fresh Prometheus data", registry=r),
            series=Gauge("apollo_series", "Node x resource series forecast", registry=r),
            stale=Gauge("apollo_data_stale", "1 when scores are neutral because data are stale", registry=r),
            reactive=Gauge(
                "apollo_reactive_mode", "1 when deciding on current load: the forecast does not beat last value",
                registry=r,
            ),
            mase=Gauge("apollo_forecast_mase", "Live MASE vs seasonal naive (lower is better)", registry=r),
            skill=Gauge(
                "apollo_forecast_skill_vs_last_value",
                "Live forecast MAE / last value's MAE on the same samples (< 1: the forecast wins)", registry=r,
            ),
            abnormal=Gauge("apollo_abnormal_series", "Series flagged as behaving abnormally at the last step",
                           registry=r),
            model_steps=Counter("apollo_model_steps_total", "Model steps (step means fed to the forecaster)",
                                registry=r),
            coverage=Gauge("apollo_forecast_interval_coverage", "Share of actuals inside the interval", registry=r),
            dropped_values=Counter(
                "apollo_dropped_values_total", "NaN/inf/negative metric values dropped", ["source"], registry=r
            ),
            reports=Counter("apollo_reports_total", "Insight reports accepted", ["kind"], registry=r),
            rejected=Counter("apollo_reports_rejected_total", "Insight reports rejected", ["kind"], registry=r),
            scheduling_results=Counter(
                "apollo_scheduling_results_total", "Scheduling results reported", ["outcome"], registry=r
            ),
            policies_emitted=Counter(
                "apollo_policies_emitted_total", "Orchestration policies emitted", ["action"], registry=r
            ),
        )  # fmt: skip
