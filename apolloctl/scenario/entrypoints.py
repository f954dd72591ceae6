"""The story's two ways in: on a cluster of its own (`run_scenario`, ``python -m apolloctl.scenario``), or
after the demo's first part on the demo's cluster and APOLLO (`continue_demo`, ``apolloctl demo``).

Each adds what the story needs (nodes, the load model, the webhook, the orchestrator, the pod runner),
runs `run_story`, tells the result and stops what it started, unless `keep` leaves it all running.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from apolloctl.cluster import ClusterConfig, LocalCluster, ScrapeTarget, create_kwok_nodes, kwok_node
from apolloctl.launch import apollo_verdicts, poll, report_node_capacity
from apolloctl.scenario.apollo_setup import story_apollo_settings
from apolloctl.scenario.load import NODE_CPU, NODE_MEMORY, LoadModel
from apolloctl.scenario.report import Say, StoryResult, plot_story, print_result, say_stdout
from apolloctl.scenario.services import start_apollo_and_extender, start_story_services
from apolloctl.scenario.story import StoryContext, run_story
from apolloctl.scenario.workload import NAMESPACE, STORY_LABEL
from apolloctl.sim_metrics import NodeExporter

# Background (cpu, memory) per node. The Job lands on the idlest (node-2), whose background then climbs
# from 0.30 to 0.92 (StoryContext.ramp_peak).
BACKGROUND = {"node-0": (0.45, 0.30), "node-1": (0.40, 0.30), "node-2": (0.30, 0.25)}


@contextlib.contextmanager
def _stopping(items: list[Any]) -> Iterator[list[Any]]:
    try:
        yield items
    finally:
        for item in reversed(items):
            with contextlib.suppress(Exception):
                item.stop()


def _story_node(name: str) -> dict[str, Any]:
    return kwok_node(name, cpu=f"{NODE_CPU:g}", memory=f"{NODE_MEMORY // 2**30}Gi", labels=STORY_LABEL)


def _tell(result: StoryResult, cluster: LocalCluster, keep: bool, plot: Path | None, say: Say) -> int:
    print_result(result, say)
    if plot is not None:
        say(f"plot: {plot_story(result, plot)}")
    if keep:
        say(
            "the cluster and the whole stack are left running (the simulated node metrics stop with this "
            "process, so APOLLO turns stale and scores neutral); "
            f"export KUBECONFIG={cluster.kubeconfig}\n"
            f"try: kubectl get podmigrations -A; kubectl get pods -n {NAMESPACE} -o wide; "
            f"ls {cluster.run_dir / 'podrunner' / 'logs'}\n`apolloctl cluster down` stops everything"
        )
    return 0 if result.ok else 1


# The demo's nodes (4 CPU) keep the load it gave them; the story brings two big nodes of its own (its
# Job selects them), one to heat up and one for the pod to move to.
DEMO_STORY_NODES = {"node-3": (0.30, 0.25), "node-4": (0.40, 0.30)}
DEMO_NODE_CAPACITY = (4.0, 16 * 2**30)
DEMO_DEPLOYMENT = "trainer"
NEW_NODE_CALM_TICKS = 20


def continue_demo(
    cluster: LocalCluster,
    exporter: NodeExporter,
    apollo_address: str,
    *,
    keep: bool = False,
    say: Say = say_stdout,
    plot: Path | None = None,
) -> int:
    """The story after the demo's first part, on its cluster, exporter and APOLLO (see `demo_apollo_settings`).

    The demo's gauges become the background of a `LoadModel` (noise added, scenario pods' requests on
    top), one idle node joins, and the story runs. Returns 0 when every promise held.
    """
    from kubernetes import client

    api = cluster.api_client()
    core: Any = client.CoreV1Api(api)
    # The Deployment has made its point (and its pods would crowd the nodes the Job can move to).
    client.AppsV1Api(api).delete_namespaced_deployment(DEMO_DEPLOYMENT, "default", propagation_policy="Background")
    names = create_kwok_nodes(core, [_story_node(n) for n in DEMO_STORY_NODES])
    report_node_capacity(apollo_address, names, NODE_CPU, NODE_MEMORY)
    base = {n: (exporter.cpu[n], exporter.memory.get(n, 0.0)) for n in exporter.cpu}
    capacity = dict.fromkeys(base, DEMO_NODE_CAPACITY)
    load = LoadModel(core, exporter, base | DEMO_STORY_NODES, capacity=capacity)
    started: list[Any] = [load.start()]
    with _stopping([] if keep else started):
        started.extend(start_story_services(cluster, apollo_address, keep=keep))
        say(
            f"\nthe main job: {', '.join(names)} join; webhook, orchestrator (subscribed to APOLLO) and pod runner "
            "started"
        )
        # A node APOLLO has seen for a few seconds only has a forecast as wide as its ignorance: let it
        # learn the new node before a pod lands there.
        seen: list[int] = []

        def learnt() -> bool | None:
            _, stale, verdicts = apollo_verdicts(apollo_address)
            if all((v := verdicts.get(n)) is not None and not v.overload for n in names) and not stale:
                seen.append(1)
            else:
                seen.clear()
            return True if len(seen) >= NEW_NODE_CALM_TICKS else None

        poll(learnt, 180, "APOLLO to learn the new nodes' load", interval=1.0)
        return _tell(run_story(StoryContext(cluster, apollo_address, load, say=say)), cluster, keep, plot, say)


def run_scenario(run_dir: Path, *, keep: bool = False, say: Say = say_stdout, plot: Path | None = None) -> int:
    """A fresh cluster, the whole stack, then the story; 0 when every promise held."""
    from kubernetes import client

    cluster = LocalCluster(ClusterConfig(run_dir=run_dir, die_with_parent=not keep), log=say)
    cluster.start()
    exporter = NodeExporter()
    started: list[Any] = []
    try:
        with _stopping([] if keep else started):
            core: Any = client.CoreV1Api(cluster.api_client())
            nodes = create_kwok_nodes(core, [_story_node(n) for n in BACKGROUND])
            load = LoadModel(core, exporter, BACKGROUND)
            load.start()
            started.append(load)
            cluster.set_scrape_targets("simulated-nodes", [ScrapeTarget(exporter.address)])
            say(
                f"kwok nodes Ready: {', '.join(nodes)}; background load "
                + ", ".join(f"{n} {c[0]:.2f}" for n, c in BACKGROUND.items())
            )
            apollo, extender = start_apollo_and_extender(
                cluster,
                story_apollo_settings(cluster.prometheus_url, cluster.kubeconfig),
                nodes,
                NODE_CPU,
                NODE_MEMORY,
                keep=keep,
            )
            started.extend((apollo, extender))
            started.extend(start_story_services(cluster, apollo.address("grpc"), keep=keep))
            if keep:
                cluster.adopt("apollo", apollo.process)
                cluster.adopt("apollo-extender", extender.process)
            say("stack up: APOLLO, extender (kube-scheduler restarted with it), webhook, orchestrator, pod runner")
            return _tell(
                run_story(StoryContext(cluster, apollo.address("grpc"), load, say=say)), cluster, keep, plot, say
            )
    finally:
        exporter.close()
        if not keep:
            cluster.stop()
            say("cluster stopped")


def main(argv: list[str] | None = None) -> int:
    from apolloctl import scenario

    description = (scenario.__doc__ or "").split("\n\n")[0]
    parser = argparse.ArgumentParser(prog="python -m apolloctl.scenario", description=description)
    parser.add_argument("--run-dir", type=Path, default=Path(".run/scenario"))
    parser.add_argument("--keep", action="store_true", help="leave the cluster and the stack running")
    parser.add_argument("--plot", type=Path, help="write the forecast-vs-actual PNG here (needs matplotlib)")
    args = parser.parse_args(argv)
    try:
        return run_scenario(args.run_dir, keep=args.keep, plot=args.plot)
    except KeyboardInterrupt:
        print("interrupted: every process started was stopped", file=sys.stderr)
        return 130
