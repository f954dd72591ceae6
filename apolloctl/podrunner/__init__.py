"""Local pod runner: real processes for the scenario's pods on kwok nodes (development tooling).

kwok plays kubelet for simulated nodes and runs no containers, so a checkpoint that nobody writes
would prove nothing. The runner starts the containers of pods annotated
``sim.apollo.io/run-locally: "true"`` as local processes, with ``$CHECKPOINT_DIR`` on the directory
behind the pod's checkpoint PV, reports completed containers to kwok, stops the processes as a
kubelet would when the pod is deleted or evicted, and measures their CPU time. See `runner` for the
behaviour, `spec` for how a container spec becomes a process, `hostpath_pv` for the PVs it maps.

Run it beside a local cluster with ``python -m apolloctl.podrunner --kubeconfig <path>`` or embed it
with ``PodRunner(core_v1, RunnerSettings(...)).start()``.
"""

from __future__ import annotations

from apolloctl.cluster.configs import LOCAL_RUN_ANNOTATION
from apolloctl.podrunner.config import RunnerSettings, load_settings
from apolloctl.podrunner.ledger import Ledger, RunRecord, read_ledger
from apolloctl.podrunner.runner import PodRunner
from apolloctl.podrunner.volumes import hostpath_pv

__all__ = [
    "LOCAL_RUN_ANNOTATION",
    "Ledger",
    "PodRunner",
    "RunRecord",
    "RunnerSettings",
    "hostpath_pv",
    "load_settings",
    "read_ledger",
]
