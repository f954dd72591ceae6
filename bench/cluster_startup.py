"""Warm start-up time of the whole local control plane (binaries cached), median of N runs.

    python -m bench.cluster_startup [--runs 5] [--json]

Each run starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok and Prometheus in a
fresh run directory, waits until every one is ready and then until one kwok node is Ready (the first
moment a test can schedule), and stops them. The baseline printed beside it is the apiserver alone
(etcd + kube-apiserver ready), the floor any Kubernetes test environment pays.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from apolloctl.cluster import ClusterConfig, LocalCluster, create_kwok_nodes, kwok_node
from apolloctl.cluster.build import ensure_binaries


def one_run(base: Path, index: int) -> tuple[float, float]:
    cluster = LocalCluster(ClusterConfig(run_dir=base / f"run-{index}"), log=lambda _m: None)
    marks: dict[str, float] = {}
    original = cluster._start_apiserver

    def timed_apiserver() -> None:
        original()
        marks["apiserver"] = time.monotonic()

    cluster._start_apiserver = timed_apiserver  # type: ignore[method-assign]
    t0 = time.monotonic()
    cluster.start()
    try:
        from kubernetes import client

        create_kwok_nodes(client.CoreV1Api(cluster.api_client()), [kwok_node("bench-0")])
        total = time.monotonic() - t0
    finally:
        cluster.stop()
    return total, marks["apiserver"] - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    ensure_binaries(lambda _m: None)
    totals, apis = [], []
    with tempfile.TemporaryDirectory(prefix="apollo-bench-") as tmp:
        for i in range(args.runs):
            total, api = one_run(Path(tmp), i)
            totals.append(total)
            apis.append(api)
            print(f"run {i + 1}: whole cluster + first node Ready {total:.2f}s (etcd+apiserver {api:.2f}s)")
    result = {
        "runs": args.runs,
        "cluster_ready_s_p50": round(statistics.median(totals), 2),
        "apiserver_ready_s_p50": round(statistics.median(apis), 2),
        "ratio_vs_apiserver_only": round(statistics.median(totals) / statistics.median(apis), 2),
    }
    print(
        f"median whole cluster {result['cluster_ready_s_p50']}s vs etcd+apiserver alone "
        f"{result['apiserver_ready_s_p50']}s (x{result['ratio_vs_apiserver_only']})"
    )
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
