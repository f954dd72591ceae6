"""Prediction beats reaction, end to end: a node whose load climbs but is still below the threshold.

Chain: a simulated exporter -> the real Prometheus -> APOLLO -> the extender -> the real kube-scheduler.
Two kwok nodes per run: ``steady`` sits at 78 % CPU; ``rising`` starts at 15 % and climbs 0.8 points a second.
Both are below the 85 % overload threshold when a pod arrives, and ``rising`` is the less loaded of the
two, so a plain threshold on current load would not act and a load-aware scheduler would pick it.

* APOLLO as shipped (predictive): its overload warning fires for ``rising`` while the exporter still
  says well under 85 %, its forecast's upper bound crosses the threshold within the horizon, and the new
  pod is steered to ``steady``.
* The same scenario with the reactive fallback forced (``forecast.mode: reactive``, what APOLLO does
  when its forecast stops beating last value): no warning at the same moment of the climb, and the pod
  lands on ``rising``, the node about to overload.

The clock is seconds instead of minutes (1 s ticks, 2 s steps, a 1-minute horizon), everything else is APOLLO's
default, including the smoothing weights and the overload threshold.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import pytest

from apollo_api.v1 import apollo_pb2 as pb
from apollo_api.v1 import apollo_pb2_grpc as pb_grpc
from apolloctl.cluster import ExtenderConfig, ScrapeTarget
from apolloctl.cluster.process import tail
from apolloctl.demo import extender_settings
from apolloctl.launch import (
    apollo_verdicts,
    extender_holds_snapshot,
    report_node_capacity,
    start_apollo,
    start_extender,
)
from apolloctl.sim_metrics import CPU_METRIC, MEMORY_METRIC, NodeExporter
from tests.conftest import ClusterHandle
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e

THRESHOLD = 0.85
STEADY = 0.78
START, SLOPE = 0.15, 0.008  # rising: utilisation before the climb, and its rise per second
NOISE = 0.03  # measurement noise on the climbing node (a forecast must earn its keep against last value)
STEADY_NOISE = 0.01
# Flat load before APOLLO starts: its warm start replays this from Prometheus, so it begins with intervals
# from its own errors rather than wide start-up priors (a 30-step horizon needs 42 steps of errors).
SETTLE_S = 110.0


@dataclass
class Climb:
    """Drives one pair of nodes on the exporter: flat, then ``rising`` climbs; ``now()`` is its value."""

    exporter: NodeExporter
    rising: str
    steady: str
    seed: int
    started: float = 0.0

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def now(self) -> float:
        climbing = max(0.0, time.monotonic() - self.started) if self.started else 0.0
        return min(START + SLOPE * climbing, 1.0)

    def _run(self) -> None:
        while not self.stop.wait(0.25):
            self.exporter.cpu.update(
                {
                    self.rising: float(np.clip(self.now() + NOISE * self.rng.standard_normal(), 0, 1)),
                    self.steady: float(np.clip(STEADY + STEADY_NOISE * self.rng.standard_normal(), 0, 1)),
                }
            )
            self.exporter.memory.update({self.rising: 0.3, self.steady: 0.3})

    def climb(self) -> None:
        self.started = time.monotonic()


def _apollo_settings(cluster: ClusterHandle, mode: str) -> dict[str, Any]:
    """Seconds instead of minutes (ticks of 1 s averaged into 2 s steps, a 1-minute horizon); else defaults."""
    return {
        "prometheus": {
            "url": cluster.local.prometheus_url,
            "queries": {"cpu": CPU_METRIC, "memory": MEMORY_METRIC},
            "stale_after_seconds": 6,
        },
        "forecast": {
            "step_seconds": 2.0,
            "tick_seconds": 1.0,
            "horizon_minutes": 1,
            "season_minutes": 0,
            "mode": mode,
        },
        "tuning": {"enabled": False},
        "policy": {"overload_threshold": THRESHOLD},
    }


@dataclass
class Pair:
    climb: Climb
    pool: str

    @property
    def rising(self) -> str:
        return self.climb.rising

    @property
    def steady(self) -> str:
        return self.climb.steady


@pytest.fixture
def pairs(cluster: ClusterHandle, namespace: str) -> Iterator[dict[str, Pair]]:
    """Two pairs of nodes (one per run) on one exporter, flat load for SETTLE_S before the test body."""
    exporter = NodeExporter()
    cluster.local.set_scrape_targets("prediction", [ScrapeTarget(exporter.address)])
    out: dict[str, Pair] = {}
    nodes: list[str] = []
    for seed, mode in enumerate(("auto", "reactive")):
        pool = f"{namespace}-{mode}"
        rising, steady = cluster.create_nodes(2, labels={"pool": pool}, cpu="8", memory="32Gi")
        nodes += [rising, steady]
        out[mode] = Pair(Climb(exporter, rising, steady, seed), pool)
    time.sleep(SETTLE_S)
    try:
        yield out
    finally:
        for pair in out.values():
            pair.climb.stop.set()
        cluster.local.set_scrape_targets("prediction", [])
        exporter.close()
        cluster.delete_nodes(nodes)


@contextlib.contextmanager
def _stack(cluster: ClusterHandle, pair: Pair, mode: str) -> Iterator[Any]:
    """APOLLO in `mode` (warm-started from Prometheus), the extender, kube-scheduler calling it."""
    logs = cluster.local.logs_dir
    apollo = start_apollo(_apollo_settings(cluster, mode), logs / f"apollo-prediction-{mode}.log")
    extender = start_extender(
        apollo.address("grpc"),
        logs / f"extender-prediction-{mode}.log",
        settings=extender_settings(cluster.local.kubeconfig, snapshot_max_age_s=5),
    )
    cluster.local.restart_scheduler((ExtenderConfig(url_prefix=extender.url, weight=5, http_timeout="1s"),))
    try:
        report_node_capacity(apollo.address("grpc"), [pair.rising, pair.steady], cpu_cores=8, memory_bytes=32 * 2**30)
        extender.wait_ready(extender_holds_snapshot(), timeout=60, what="APOLLO's first snapshot")
        apollo.extender = extender  # type: ignore[attr-defined]
        yield apollo
    finally:
        cluster.local.restart_scheduler(())
        extender.stop()
        apollo.stop()


def _pod(name: str, pool: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {"pool": pool},
            "containers": [{"name": "main", "image": "registry.invalid/x:1", "resources": {"requests": {"cpu": "1"}}}],
        },
    }


def _place(cluster: ClusterHandle, namespace: str, name: str, pool: str) -> str:
    cluster.core.create_namespaced_pod(namespace, _pod(name, pool))
    pod = wait_for(
        lambda: (p := cluster.core.read_namespaced_pod(name, namespace)).spec.node_name and p, what=f"{name} bound"
    )
    return str(pod.spec.node_name)


def _extender_counts(extender: Any) -> list[str]:
    """The extender's request, fallback and filter counters (what it did with the pod), for failure messages."""
    _, body, _ = extender.request("GET", "/metrics")
    wanted = ("apollo_extender_request_seconds_count", "apollo_extender_fallbacks", "apollo_extender_filtered")
    return [line for line in body.decode().splitlines() if line.startswith(wanted)]


def _flagged(address: str, node: str) -> bool:
    _, stale, verdicts = apollo_verdicts(address)
    return not stale and node in verdicts and verdicts[node].overload


def _prediction(address: str, node: str) -> Any:
    with grpc.insecure_channel(address) as channel:
        return pb_grpc.ForecastServiceStub(channel).GetResourcePrediction(pb.PredictionRequest(node_name=node))


def test_prediction_steers_a_pod_away_from_a_climbing_node_that_reaction_would_pick(
    cluster: ClusterHandle, namespace: str, pairs: dict[str, Pair]
) -> None:
    # -- predictive, as shipped ---------------------------------------------------------------------------
    pair = pairs["auto"]
    with _stack(cluster, pair, "auto") as apollo:
        address = apollo.address("grpc")
        assert not _flagged(address, pair.rising), f"flagged before the climb; log: {tail(apollo.log_path, 20)}"
        pair.climb.climb()
        wait_for(lambda: _flagged(address, pair.rising), timeout=90, interval=0.5, what="APOLLO's overload warning")
        warned_after = time.monotonic() - pair.climb.started
        current = pair.climb.now()
        # kube-scheduler asks the extender, which refreshes from APOLLO on its own interval: place the pod once
        # the extender holds a snapshot newer than the warning's, and the warning still stands in it.
        generation = apollo_verdicts(address)[0]
        apollo.extender.wait_ready(extender_holds_snapshot(generation + 1), timeout=30, what="the warning's snapshot")
        # A plain threshold on current load would not act: the node is well under 85 % and under `steady`.
        assert current < THRESHOLD - 0.1 and current < STEADY, (warned_after, current)
        assert not _flagged(address, pair.steady)
        assert _flagged(address, pair.rising), "the warning did not stand for one snapshot refresh"
        pred = _prediction(address, pair.rising)
        assert pred.forecast_mode == pb.FORECAST_MODE_PREDICTIVE, pred.mode_reason
        assert pred.predicted_usage[0].cpu_usage < THRESHOLD
        assert max(p.cpu_usage for p in pred.upper_bound) > THRESHOLD  # the warning comes from the forecast
        before = apollo_verdicts(address)[2]
        placed = _place(cluster, namespace, "predicted", pair.pool)
        after = apollo_verdicts(address)[2]
        assert placed == pair.steady, (
            f"pod on {placed} (rising {pair.rising}); verdicts before {before}, after {after}; "
            f"extender: {_extender_counts(apollo.extender)}"
        )

    # -- the same climb, reactive fallback forced ---------------------------------------------------------
    pair = pairs["reactive"]
    with _stack(cluster, pair, "reactive") as apollo:
        address = apollo.address("grpc")
        pair.climb.climb()
        time.sleep(warned_after)  # the moment of the climb at which APOLLO warned above
        assert not _flagged(address, pair.rising)  # current load is under the threshold: nothing to see
        pred = _prediction(address, pair.rising)
        assert pred.forecast_mode == pb.FORECAST_MODE_REACTIVE and "forced" in pred.mode_reason
        before = apollo_verdicts(address)[2]
        placed = _place(cluster, namespace, "reacted", pair.pool)
        assert placed == pair.rising, (
            f"pod on {placed} (rising {pair.rising} at {pair.climb.now():.2f} vs steady {STEADY}); verdicts "
            f"{before}; extender: {_extender_counts(apollo.extender)}"
        )
        # ... and the node it chose does overload shortly after, which the predictive run saw coming.
        wait_for(lambda: pair.climb.now() > THRESHOLD, timeout=60, what="the climb to pass the threshold")
        wait_for(lambda: _flagged(address, pair.rising), timeout=30, what="the reactive warning, once it is too late")
