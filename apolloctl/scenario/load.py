"""Simulated node load: each node's utilisation as the node exporter reports it, second by second.

kwok nodes use nothing, so the story makes up their load: a background per node (which a `Ramp` can
drive up), AR(1) noise, and the requests of the seed's pods running there.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from apolloctl.scenario.workload import APP, APP_LABEL, pod_requests
from apolloctl.sim_metrics import NodeExporter
from common.loops import BackgroundLoop

# The story's nodes are big enough that the Job's arrival (2.1 CPU, 0.03 of a node) hardly moves their
# load: APOLLO's intervals come from its recent errors, and a pod that lifts a node by half in one step
# widens them enough to look like overload coming (it then moves the pod on arrival, which the story
# reports as such). What comes is the background ramp: other tenants' load rising on the Job's node.
NODE_CPU = 64.0
NODE_MEMORY = 256 * 2**30


@dataclass
class Ramp:
    """Background load on one node rising linearly from `start` by `per_second` up to `peak`."""

    node: str
    start: float
    per_second: float
    peak: float
    t0: float = field(default_factory=time.monotonic)

    def value(self, now: float) -> float:
        return min(self.peak, self.start + self.per_second * max(0.0, now - self.t0))


class LoadModel(BackgroundLoop):
    """Every second: each node's utilisation = background + noise + the requests of the scenario pods on it.

    kwok nodes report no usage, so this is what the node exporter says; what matters is that it moves
    the way a real node's would: a pod that leaves takes its load with it, a background that ramps
    up is load coming, and no real node's load is a flat line (AR(1) noise, seeded: a flat line is
    one that the naive forecast predicts perfectly, and APOLLO rightly distrusts its own forecasts
    against such a baseline). The background is fixed per node unless a `Ramp` drives it.
    """

    def __init__(
        self,
        core: Any,
        exporter: NodeExporter,
        background: Mapping[str, tuple[float, float]],
        *,
        noise: float = 0.006,
        seed: int = 5,
        capacity: Mapping[str, tuple[float, float]] | None = None,
    ) -> None:
        super().__init__("scenario-load", 1.0)
        self.core = core
        self.exporter = exporter
        self.background = dict(background)
        self.ramps: dict[str, Ramp] = {}
        self.history: list[tuple[float, dict[str, float]]] = []  # (UNIX time, cpu per node) each second
        self.noise = noise
        self._rng = random.Random(seed)
        self._ar = dict.fromkeys(self.background, 0.0)
        # (cpu cores, memory bytes) per node, for a pod's share of it; NODE_CPU / NODE_MEMORY otherwise.
        self.capacity = dict(capacity or {})
        self.run_once()

    def ramp(self, node: str, per_second: float, peak: float) -> Ramp:
        r = Ramp(node, self.background[node][0], per_second, peak)
        self.ramps[node] = r
        return r

    def cpu(self, node: str) -> float:
        return float(self.exporter.cpu.get(node, 0.0))

    def run_once(self) -> None:
        now = time.monotonic()
        for n in self._ar:
            self._ar[n] = 0.7 * self._ar[n] + self._rng.gauss(0.0, self.noise)
        cpu = {
            n: (self.ramps[n].value(now) if n in self.ramps else b[0]) + self._ar[n] for n, b in self.background.items()
        }
        mem = {n: b[1] + self._ar[n] / 2 for n, b in self.background.items()}
        raw = self.core.list_pod_for_all_namespaces(label_selector=f"{APP_LABEL}={APP}", _preload_content=False)
        for pod in json.loads(raw.data).get("items") or []:
            node = (pod.get("spec") or {}).get("nodeName")
            running = (pod.get("status") or {}).get("phase") == "Running"
            if node in cpu and running:
                c, m = pod_requests(pod)
                cap_cpu, cap_mem = self.capacity.get(node, (NODE_CPU, NODE_MEMORY))
                cpu[node] += c / cap_cpu
                mem[node] += m / cap_mem
        for node in cpu:
            self.exporter.cpu[node] = round(min(max(cpu[node], 0.0), 1.0), 4)
            self.exporter.memory[node] = round(min(max(mem[node], 0.0), 1.0), 4)
        self.history.append((time.time(), dict(self.exporter.cpu)))
