"""APOLLO as the story needs it: its settings on the story's one-second clock, and what the story reads back.

The story's clock runs in seconds (APOLLO steps of 1 s, a 1-minute horizon); the settings below say
why each value differs from what APOLLO ships. `forecasting` and `apollo_forecast` read APOLLO over
gRPC: whether it scores nodes from fresh data, and its forecast for one node (for the plot).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from apolloctl.launch import apollo_verdicts
from apolloctl.sim_metrics import CPU_METRIC, MEMORY_METRIC

OVERLOAD_THRESHOLD = 0.85


def simulated_prometheus(prometheus_url: str) -> dict[str, Any]:
    """APOLLO's `prometheus` settings for the simulated exporter's node gauges (stale 5 s after the last sample)."""
    return {
        "url": prometheus_url,
        "queries": {"cpu": CPU_METRIC, "memory": MEMORY_METRIC},
        "stale_after_seconds": 5,
    }


def story_apollo_settings(prometheus_url: str, kubeconfig: Path) -> dict[str, Any]:
    """APOLLO reading the simulated node gauges every second, seeing pods, acting on checkpointed ones."""
    return {
        "prometheus": simulated_prometheus(prometheus_url),
        # Seconds, not minutes: the story must forecast within a minute of the load starting to rise.
        # In auto mode APOLLO acts on forecasts only while they beat repeating the last value over its
        # recent history (live skill); a story a minute long gives it too little history to judge (five of
        # its six series are flat noise, where both are equally good), so it would stay reactive and act
        # only once the threshold is crossed. The story asks for predictive mode; the timeline and the
        # plot show the load when APOLLO flagged the node, and what it forecast.
        "forecast": {
            "step_seconds": 1.0,
            "tick_seconds": 1.0,
            "horizon_minutes": 1,
            "season_minutes": 0,
            "warmup_samples": 5,
            "mode": "predictive",
        },
        "tuning": {"enabled": False},
        "kubernetes": {"enabled": True, "kubeconfig": str(kubeconfig)},
        # One tick is one second here: a warning must hold for five of them (the default two would
        # act on the forecast's reaction to a pod's arrival, a level shift its trend reads as a ramp).
        "policy": {
            "overload_threshold": OVERLOAD_THRESHOLD,
            "confirm_ticks": 5,
            "require_checkpoint": True,
            "migration_timeout_seconds": 300,
            "workload_cooldown_seconds": 60,
        },
    }


def demo_apollo_settings(settings: Mapping[str, Any], kubeconfig: Path) -> dict[str, Any]:
    """The demo's APOLLO settings with what the story needs (pods from the API server, the policy)."""
    story = story_apollo_settings("", kubeconfig)
    out = dict(settings)
    forecast = dict(settings.get("forecast") or {})
    out["forecast"] = forecast | {
        "mode": story["forecast"]["mode"],
        "warmup_samples": max(int(forecast.get("warmup_samples", 0)), story["forecast"]["warmup_samples"]),
    }
    for key in ("kubernetes", "policy", "tuning"):
        out[key] = dict(settings.get(key) or {}) | story[key]
    return out


def forecasting(address: str) -> int | None:
    """APOLLO's snapshot generation once it scores nodes from fresh data, else None."""
    generation, stale, verdicts = apollo_verdicts(address)
    return generation if verdicts and not stale else None


def apollo_forecast(address: str, node: str) -> list[tuple[float, float, float]]:
    """APOLLO's CPU forecast for `node` now: (UNIX time, predicted, upper bound) per horizon step."""
    import grpc

    from apollo_api.v1 import apollo_pb2 as pb
    from apollo_api.v1 import apollo_pb2_grpc as pb_grpc

    with grpc.insecure_channel(address) as channel:
        p = pb_grpc.ForecastServiceStub(channel).GetResourcePrediction(pb.PredictionRequest(node_name=node), timeout=10)
    return [
        (mid.timestamp.seconds + mid.timestamp.nanos / 1e9, mid.cpu_usage, up.cpu_usage)
        for mid, up in zip(p.predicted_usage, p.upper_bound, strict=False)
    ]
