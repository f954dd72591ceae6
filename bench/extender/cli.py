"""`python -m bench.extender`: run the parts, print human-readable lines, and one JSON object last."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from apolloctl.launch import loopback_tls
from bench.extender.latency import LatencyCase, measure_latency, measure_noop_latency, print_latency
from bench.extender.scheduling import HEADLINE, measure_scheduling
from bench.extender.stack import WORKERS, start_bench_apollo

Json = dict[str, Any]
DESCRIPTION = "Scheduler-extender benchmark: client-side latency under load, and kube-scheduler throughput."
TARGETS = {
    "prioritize_client_p99_ms": ("<=", 2.0),
    "prioritize_client_p99_ms_5k": ("<=", 6.0),
    "sched_ratio_vs_noop": (">=", 0.95),
    "drain_ratio_vs_noop": (">=", 0.9),
    "policy_lookups": (">", 0),
}


def say(message: str) -> None:
    print(message, flush=True)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def cleanup_on_sigterm() -> Iterator[None]:
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.extender", description=DESCRIPTION)
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--quick", action="store_true", help="shorter loads, 100 kwok nodes, 400 pods per run")
    parser.add_argument(
        "--connections", type=int, default=4, help="keep-alive connections of the concurrent-callers case"
    )
    parser.add_argument("--duration", type=float, help="seconds of measured load per case (default 15, quick 4)")
    parser.add_argument("--sched-nodes", type=int, help="kwok nodes (default 500, quick 100)")
    parser.add_argument("--sched-pods", type=int, help="pods per run (default 1000, quick 400)")
    parser.add_argument("--skip-sched", action="store_true", help="latency part only")
    parser.add_argument("--skip-latency", action="store_true", help="scheduling part only (for iterating on it)")
    parser.add_argument(
        "--sched-repeats", type=int, help="interleaved repeats of the burst and drain runs (default 3, quick 5)"
    )
    parser.add_argument(
        "--apollo-tick-s",
        type=float,
        default=5.0,
        help="APOLLO ticks (and publishes a new snapshot generation) this often during the runs",
    )
    args = parser.parse_args(argv)
    if args.apollo_tick_s <= 0:
        parser.error("--apollo-tick-s must be > 0: APOLLO takes the nodes' capacity in at its next tick")
    return args


def latency_part(args: argparse.Namespace, apollo: Any, workdir: Path, result: Json) -> None:
    duration = args.duration or (4.0 if args.quick else 15.0)
    warmup = 0.5 if args.quick else 2.0
    tls = loopback_tls(workdir / "tls-latency", "apollo-extender")
    cases = [
        LatencyCase(1000),
        LatencyCase(5000),
        LatencyCase(1000, policy_pods=True),
        LatencyCase(1000, tls=tls),
        LatencyCase(1000, connections=args.connections),
    ]
    if not args.quick:
        cases.append(LatencyCase(1000, policy_mode="off"))
    say(
        "part 1: /filter and /prioritize under closed-loop load from a separate process (one keep-alive "
        f"connection as kube-scheduler calls, then {args.connections} concurrent ones; gunicorn, {WORKERS} "
        "worker(s), production settings)"
    )
    by_case: Json = {}
    for case in cases:
        r = measure_latency(apollo, case, workdir, warmup, duration)
        print_latency(r, say)
        by_case[case.label] = r
    for nodes in (1000, 5000):
        floor = by_case[f"{nodes}-noop"] = measure_noop_latency(nodes, workdir, warmup, duration)
        say(
            f"  {nodes}-noop: the no-op Go extender under the same load, {floor['rps']} rps: "
            + "; ".join(f"{v} client p50 {c['p50_ms']} p99 {c['p99_ms']} ms" for v, c in floor["client"].items())
        )
    top, big = by_case["1000"], by_case["5000"]
    result.update(
        nodes=1000,
        prioritize_client_p50_ms=top["client"]["prioritize"]["p50_ms"],
        prioritize_client_p99_ms=top["client"]["prioritize"]["p99_ms"],
        filter_client_p50_ms=top["client"]["filter"]["p50_ms"],
        filter_client_p99_ms=top["client"]["filter"]["p99_ms"],
        prioritize_client_p99_ms_5k=big["client"]["prioritize"]["p99_ms"],
        # The protocol's floor under the same load: the no-op Go extender, socket to socket.
        noop_prioritize_client_p50_ms=by_case["1000-noop"]["client"]["prioritize"]["p50_ms"],
        noop_prioritize_client_p99_ms=by_case["1000-noop"]["client"]["prioritize"]["p99_ms"],
        noop_prioritize_client_p99_ms_5k=by_case["5000-noop"]["client"]["prioritize"]["p99_ms"],
        filter_client_p99_ms_5k=big["client"]["filter"]["p99_ms"],
        prioritize_p50_ms=top["server"]["prioritize"]["p50_ms"],
        prioritize_p99_ms=top["server"]["prioritize"]["p99_ms"],
        prioritize_p99_range_ms=top["server"]["prioritize"]["p99_range_ms"],
        filter_p50_ms=top["server"]["filter"]["p50_ms"],
        filter_p99_ms=top["server"]["filter"]["p99_ms"],
        rps=top["rps"],
        rps_concurrent=by_case[f"1000-x{args.connections}"]["rps"],
        prioritize_client_p99_ms_concurrent=by_case[f"1000-x{args.connections}"]["client"]["prioritize"]["p99_ms"],
        extender_cpu_ms_per_request=top["cpu_ms_per_request"]["extender"],
        policy_lookups=by_case["1000-policy-pods"]["policy_lookups"],
        prioritize_client_p99_ms_policy_pods=by_case["1000-policy-pods"]["client"]["prioritize"]["p99_ms"],
        prioritize_client_p99_ms_https=by_case["1000-https"]["client"]["prioritize"]["p99_ms"],
        latency_by_case=by_case,
    )


def scheduling_part(args: argparse.Namespace, apollo: Any, workdir: Path, result: Json) -> None:
    nodes = args.sched_nodes or (100 if args.quick else 500)
    pods = args.sched_pods or (400 if args.quick else 1000)
    repeats = args.sched_repeats or (5 if args.quick else 3)
    say(f"part 2: kube-scheduler throughput, {nodes} kwok nodes, {pods} pods per run")
    tls = loopback_tls(workdir / "tls-sched", "apollo-extender")
    # The other modes (NodeList, HTTPS, policy-annotated pods) are single runs: in the full run only.
    sched = measure_scheduling(
        apollo, workdir, nodes, pods, repeats=repeats, drain=True, modes=not args.quick, tls=tls, say=say
    )
    rate = {c.name: sched[c.name]["pods_per_s"] for c in HEADLINE}
    drain = {c.name: sched[f"drain_{c.name}"]["bind_window_pods_per_s"] or 0.0 for c in HEADLINE}
    burst_each = {c.name: [r["pods_per_s"] for r in sched["runs"][c.name]] for c in HEADLINE}
    drain_each = {c.name: sched[f"drain_{c.name}"]["bind_window_pods_per_s_each"] for c in HEADLINE}
    modes = {k.removeprefix("mode_"): v for k, v in sched.items() if k.startswith("mode_")}
    burst_vs_noop, burst_vs_noop_each = paired_ratio(burst_each["with"], burst_each["noop"])
    drain_vs_noop, drain_vs_noop_each = paired_ratio(drain_each["with"], drain_each["noop"])
    result.update(
        sched_nodes=nodes,
        sched_pods=pods,
        sched_repeats=repeats,
        sched_pods_per_s_without=rate["without"],
        sched_pods_per_s_noop_extender=rate["noop"],
        sched_pods_per_s_with=rate["with"],
        # Every ratio is the median of per-repetition ratios (each run against the other run of its own
        # repetition, minutes apart at most); the ratio of the medians is kept beside the two headline ones.
        sched_throughput_ratio=paired_ratio(burst_each["with"], burst_each["without"])[0],
        sched_noop_extender_ratio=paired_ratio(burst_each["noop"], burst_each["without"])[0],
        sched_ratio_vs_noop=burst_vs_noop,
        sched_ratio_vs_noop_each=burst_vs_noop_each,
        sched_ratio_vs_noop_of_medians=ratio(rate["with"], rate["noop"]),
        drain_pods_per_s={k: v for k, v in drain.items()},
        drain_throughput_ratio=paired_ratio(drain_each["with"], drain_each["without"])[0],
        drain_noop_extender_ratio=paired_ratio(drain_each["noop"], drain_each["without"])[0],
        drain_ratio_vs_noop=drain_vs_noop,
        drain_ratio_vs_noop_each=drain_vs_noop_each,
        drain_ratio_vs_noop_of_medians=ratio(drain["with"], drain["noop"]),
        cost_model_ms_per_pod=cost_model(sched, pods),
        sched=sched,
    )
    if modes:
        result.update(
            nodelist_ratio_vs_noop=ratio(modes["with-nodelist"]["pods_per_s"], modes["noop-nodelist"]["pods_per_s"]),
            https_ratio_vs_noop=ratio(modes["with-https"]["pods_per_s"], modes["noop-https"]["pods_per_s"]),
            sched_policy_lookups=modes["with-policy-pods"]["extender"]["policy_lookups"],
        )


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def paired_ratio(num: list[float | None], den: list[float | None]) -> tuple[float | None, list[float | None]]:
    """(median, each) of num[i] / den[i]: each repetition's run against the run of the same repetition.

    The machine's load drifts over minutes (other work, the control plane's own state), so a ratio of two
    medians can pair runs from different moments; a missing rate leaves its repetition out, never a run
    chosen by its value.
    """
    each = [ratio(a, b) for a, b in zip(num, den, strict=True)]
    known = [r for r in each if r is not None]
    return (round(statistics.median(known), 3) if known else None), each


def cost_model(sched: Json, pods: int) -> Json:
    """Where one scheduling cycle's time goes, from the drain runs (pod creation off the critical path).

    kube-scheduler binds pods one after another, so 1 / binding rate is the time of one cycle; the no-op
    extender's extra time over no extender is what the protocol costs (two HTTP round trips, kube-scheduler's
    JSON), ours over the no-op is what our extender adds, of which the server-side verb time and the CPU
    our extender burnt per pod are measured directly.
    """
    cycle = {
        c.name: round(1000.0 / rate, 3) if (rate := sched[f"drain_{c.name}"]["bind_window_pods_per_s"]) else None
        for c in HEADLINE
    }
    ours = sched["drain_with"]
    server = ours.get("extender", {}).get("server", {})
    verbs_ms = sum((server.get(v) or {}).get("mean_ms") or 0.0 for v in ("filter", "prioritize"))
    extender_cpu_s = ours["cpu"]["cpu_s_by_process"].get("extender", 0.0)
    out: Json = {f"cycle_{k}": v for k, v in cycle.items()}
    if all(cycle.values()):
        out |= {
            "protocol": round(cycle["noop"] - cycle["without"], 3),  # type: ignore[operator]
            "ours_over_noop": round(cycle["with"] - cycle["noop"], 3),  # type: ignore[operator]
        }
    out |= {
        "extender_server_verbs": round(verbs_ms, 3),
        "extender_cpu_per_pod": round(1000.0 * extender_cpu_s / pods, 3),
        "scheduler_cpu_per_pod": {
            c.name: round(
                1000.0 * sched[f"drain_{c.name}"]["cpu"]["cpu_s_by_process"].get("kube-scheduler", 0.0) / pods, 3
            )
            for c in HEADLINE
        },
    }
    return out


def with_apollo(
    nodes: int,
    tick_s: float,
    workdir: Path,
    result: Json,
    key: str,
    part: Callable[[argparse.Namespace, Any, Path, Json], None],
    args: argparse.Namespace,
) -> None:
    """Run `part` against an APOLLO process that knows `nodes` nodes; stop it afterwards."""
    workdir.mkdir(parents=True, exist_ok=True)
    apollo = start_bench_apollo(nodes, tick_s, workdir)
    try:
        s = result[key] = apollo.summary
        say(
            f"APOLLO: {s['nodes']} nodes, generation {s['generation']}, {s['overloaded']} predicted to overload, "
            f"scores p10/p50/p90 {s['score_p10_p50_p90']}"
        )
        part(args, apollo, workdir, result)
    finally:
        apollo.stop()


def judge(result: Json) -> tuple[Json, dict[str, bool]]:
    targets: Json = {}
    met: dict[str, bool] = {}
    for key, (op, bound) in TARGETS.items():
        value = result.get(key)
        if value is None:
            continue
        targets[key] = f"{op} {bound}"
        met[key] = value <= bound if op == "<=" else value >= bound if op == ">=" else value > bound
    return targets, met


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.monotonic()
    result: Json = {
        "quick": args.quick,
        "cpus": os.cpu_count(),
        "workers": WORKERS,
        "apollo_tick_s": args.apollo_tick_s,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    if result["loadavg_at_start"][0] > 0.5:
        say(f"note: the machine is not idle (load average {result['loadavg_at_start']}); see cpu_s_foreign below")
    with cleanup_on_sigterm(), tempfile.TemporaryDirectory(prefix="apollo-bench-extender-") as tmp:
        workdir = Path(tmp)
        if not args.skip_latency:
            with_apollo(5000, args.apollo_tick_s, workdir / "part1", result, "apollo_snapshot", latency_part, args)
        result["part1_wall_s"] = round(time.monotonic() - t0, 1)
        if not args.skip_sched:
            # APOLLO for the kwok nodes only: its ticks run beside kube-scheduler, at the size they would have.
            nodes = args.sched_nodes or (100 if args.quick else 500)
            with_apollo(
                nodes, args.apollo_tick_s, workdir / "part2", result, "apollo_snapshot_sched", scheduling_part, args
            )
    targets, met = judge(result)
    result.update(targets=targets, targets_met=met, wall_s=round(time.monotonic() - t0, 1))
    say(
        "summary: "
        + "; ".join(f"{k} {result[k]} ({targets[k]}: {'met' if met[k] else 'MISSED'})" for k in targets)
        + "; "
        + "; ".join(
            f"{k} {result[k]}"
            for k in (
                "sched_ratio_vs_noop_each",
                "sched_ratio_vs_noop_of_medians",
                "drain_ratio_vs_noop_each",
                "drain_ratio_vs_noop_of_medians",
                "cost_model_ms_per_pod",
                "sched_throughput_ratio",
                "sched_noop_extender_ratio",
                "drain_throughput_ratio",
                "nodelist_ratio_vs_noop",
                "https_ratio_vs_noop",
                "sched_policy_lookups",
            )
            if k in result
        )
        + f"; wall {result['wall_s']}s"
    )
    if args.json:
        print(json.dumps(result), flush=True)
    return 0


def run() -> None:
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: everything the benchmark started has been stopped", file=sys.stderr)
        sys.exit(130)
