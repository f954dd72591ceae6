"""The headline benchmark: checkpoint-preserving migration against plain Kubernetes delete-and-recreate.

Run: ``python -m bench.migration --json [--quick] [--runs N] [--plots DIR]``. Progress lines first; with
``--json`` the LAST line is one JSON object. ``--markdown FILE`` prints the README's results table from a
saved JSON object instead of running.

The scenario (the seed's AI Job, `apolloctl.scenario.seed_job`): one pod with data-prep (featurises
signals, exits 0), a numpy trainer (paced, checkpointing every 2 s) and a monitor, all real processes
(`apolloctl.podrunner`), on the local control plane with the whole stack running: APOLLO (scoring from
Prometheus; its own policy capped to observe only, so every move here is the benchmark's), the scheduler
extender in kube-scheduler, the admission webhook, the orchestrator. Nodes: 4 kwok nodes of 4 CPU / 16 GiB.

Each way, N times, interleaved (migration, native, migration, ...), each on a fresh Job:

* migration: the pod opts in (checkpoint claim from the webhook, on a hostPath PV); once data-prep is done
  and the trainer has trained `warm` seconds, a PodMigration asks the orchestrator to move it (target of
  its choice); the replacement comes back without data-prep and resumes from the checkpoint;
* native: the same Job without the opt-in (``CHECKPOINT_DIR`` on an emptyDir, as plain Kubernetes keeps
  scratch state); the pod is evicted through the Eviction API (what ``kubectl drain`` does) and the Job
  controller re-creates it: data-prep runs again and the trainer starts from scratch.

Measured the same way for both (this process's clock, polling every 0.1 s):

* ``evict_to_running``: from the eviction (the orchestrator's ``evictionRequested`` step, or our call)
  until the new pod is first seen Running;
* ``back_to_step``: from the eviction until the new trainer reports the step the old one had reached
  when the eviction started (the cold start a user sees);
* CPU seconds of the new pod's real processes until then (runner ledger: /proc while they run, rusage
  at exit), i.e. what getting back to where it was cost;
* requests of the new pod (a replacement without data-prep reserves less).

Savings are ``1 - migration / native`` of the means (CPU seconds, requests) and of the medians
(back-to-step). ``resumed_from_checkpoint`` counts replacements whose trainer resumed from the last
checkpoint its predecessor wrote; ``lost_checkpoints`` those that resumed from anything older (or from
scratch) although a checkpoint existed; ``lost_pvcs`` checkpoint claims not Bound to their volume after
the move.

The parts: `bench.migration_runs` (the stack and the two kinds of run), `bench.migration_results` (the
figures, the README table, the plot); this module is the command line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from apolloctl.scenario import WorkloadShape
from bench.migration_results import machine, markdown, plots, summarise
from bench.migration_runs import Bench, Run, say

__all__ = ["Bench", "Run", "machine", "main", "markdown", "plots", "summarise"]

T = TypeVar("T")


def _timed(label: str, fn: Callable[[], T]) -> T:
    t0 = time.monotonic()
    out = fn()
    say(f"{label} ({time.monotonic() - t0:.1f}s)")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.migration", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    parser.add_argument("--quick", action="store_true", help="2 runs each way, a smaller workload (< 5 minutes)")
    parser.add_argument("--runs", type=int, default=0, help="runs each way (default 5, or 2 with --quick)")
    parser.add_argument("--run-dir", type=Path, default=Path(".run/bench-migration"))
    parser.add_argument("--plots", type=Path, help="write PNG plots here (needs matplotlib: the bench extra)")
    parser.add_argument("--markdown", type=Path, help="print the README table from a saved JSON result and exit")
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown(json.loads(args.markdown.read_text().strip().splitlines()[-1])))
        return 0
    runs_each = args.runs or (2 if args.quick else 5)
    if runs_each < 1:
        parser.error("--runs must be >= 1")
    shape = WorkloadShape(samples=12_000) if args.quick else WorkloadShape()
    warm = 8.0 if args.quick else 15.0
    t0 = time.monotonic()
    bench = Bench(args.run_dir, shape, warm)
    runs: list[Run] = []
    try:
        _timed("stack up: APOLLO, extender in kube-scheduler, webhook, orchestrator, pod runner", bench.start)
        for i in range(runs_each):
            for kind in ("migration", "native"):
                run = bench.migration(i) if kind == "migration" else bench.native(i)
                runs.append(run)
                say(
                    f"{kind:<9} {run.job}: {run.pod}@{run.source} -> {run.new_pod}@{run.target}; "
                    f"Running after {run.evict_to_running_s:.2f}s, back at step {run.pre_step} after "
                    f"{run.back_to_step_s:.2f}s using {run.cpu_seconds:.2f} CPU-s"
                    + (f"; {run.phase}, resumed from {run.resumed_from} (last checkpoint {run.last_checkpoint})"
                       if kind == "migration" else "")
                )  # fmt: skip
    finally:
        bench.stop()
    result = summarise(runs, shape, args.quick, time.monotonic() - t0)
    say("")
    say(markdown(result))
    if args.plots:
        for path in plots(result, args.plots):
            say(f"plot: {path}")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
