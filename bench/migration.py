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
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from apollo_api.podmigration import (
    API_VERSION,
    GROUP,
    KIND,
    PLURAL,
    RESUMED_FROM_ANNOTATION,
    VERSION,
    Phase,
    PodMigration,
    checkpoint_claim_name,
)
from apolloctl.cluster import ClusterConfig, LocalCluster, ScrapeTarget, create_kwok_nodes, kwok_node
from apolloctl.launch import Service, poll
from apolloctl.podrunner import PodRunner
from apolloctl.scenario import (
    LoadModel,
    WorkloadShape,
    checkpoint_volume,
    ensure_namespace,
    install_crd,
    pod_requests,
    runner_settings,
    seed_job,
    source_checkpoint,
    start_apollo_and_extender,
    start_orchestrator,
    start_webhook,
    story_apollo_settings,
)
from apolloctl.sim_metrics import NodeExporter
from apolloctl.workloads import PROGRESS_FILE, TRAINER_DIR
from common.kube import core_v1

T = TypeVar("T")
NAMESPACE = "bench"
NODES = {f"node-{i}": (0.2 + 0.05 * i, 0.2) for i in range(4)}
NODE_CPU = 4.0
NODE_MEMORY = 16 * 2**30
KOORDINATOR_MIGRATION_TTL_S = 300.0  # Koordinator's default PodMigrationJob TTL: the bound a move must stay well inside
POLL_S = 0.1


def say(text: str) -> None:
    print(text, flush=True)


@dataclass
class Run:
    """One eviction and what it took to get back to where the trainer was."""

    kind: str  # migration | native
    job: str
    pod: str
    source: str
    pre_step: int
    new_pod: str = ""
    target: str = ""
    evict_to_running_s: float = math.nan
    back_to_step_s: float = math.nan
    cpu_seconds: float = math.nan
    cpu_request: float = math.nan
    memory_request: float = math.nan
    phase: str = ""
    message: str = ""
    resumed_from: int | None = None
    last_checkpoint: int | None = None
    claim_bound: bool | None = None
    migration_duration_s: float = math.nan
    steps: dict[str, float] = field(default_factory=dict)


def _ts(stamp: str) -> float:
    """An RFC 3339 time as a UNIX timestamp (the orchestrator's step times)."""
    import datetime as dt

    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _quantile(values: list[float], q: float) -> float:
    vals = sorted(v for v in values if math.isfinite(v))
    if not vals:
        return math.nan
    pos = (len(vals) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return vals[lo] + (vals[hi] - vals[lo]) * (pos - lo)


def _mean(values: list[float]) -> float:
    vals = [v for v in values if math.isfinite(v)]
    return statistics.fmean(vals) if vals else math.nan


def _saving(ours: float, theirs: float) -> float:
    return round(1.0 - ours / theirs, 3) if math.isfinite(ours) and math.isfinite(theirs) and theirs > 0 else math.nan


class Bench:
    """The stack on a fresh local cluster, and one method per kind of run."""

    def __init__(self, run_dir: Path, shape: WorkloadShape, warm_seconds: float) -> None:
        from kubernetes import client

        self.shape = shape
        self.warm_seconds = warm_seconds
        self.cluster = LocalCluster(ClusterConfig(run_dir=run_dir), log=lambda m: say(f"  {m}"))
        self.exporter = NodeExporter()
        self.services: list[Service] = []
        self.load: LoadModel | None = None
        self.runner: PodRunner | None = None
        self.cluster.start()
        api = self.cluster.api_client()
        self.core: Any = client.CoreV1Api(api)
        self.batch: Any = client.BatchV1Api(api)
        self.custom: Any = client.CustomObjectsApi(api)

    def start(self) -> None:
        c = self.cluster
        nodes = create_kwok_nodes(self.core, [kwok_node(n, cpu=f"{NODE_CPU:g}", memory="16Gi") for n in NODES])
        self.load = LoadModel(self.core, self.exporter, NODES, capacity=dict.fromkeys(NODES, (NODE_CPU, NODE_MEMORY)))
        self.load.start()
        c.set_scrape_targets("simulated-nodes", [ScrapeTarget(self.exporter.address)])
        settings = story_apollo_settings(c.prometheus_url, c.kubeconfig)
        settings["policy"]["max_migrations_cluster"] = 0  # APOLLO observes; every move here is the benchmark's
        apollo, extender = start_apollo_and_extender(c, settings, nodes, NODE_CPU, NODE_MEMORY)
        self.services.extend((apollo, extender))
        install_crd(c.api_client())
        self.services.append(start_webhook(c))
        self.services.append(start_orchestrator(c, apollo.address("grpc")))
        settings_r = runner_settings(c)
        self.runner = PodRunner(core_v1(settings_r.kubeconfig), settings_r).start()
        ensure_namespace(self.core, NAMESPACE)

    def stop(self) -> None:
        if self.runner is not None:
            self.runner.stop()
        for s in reversed(self.services):
            s.stop()
        if self.load is not None:
            self.load.stop()
        self.exporter.close()
        self.cluster.stop()

    # ---- observation helpers -------------------------------------------------------------------
    def pods(self, job: str) -> list[dict[str, Any]]:
        raw = self.core.list_namespaced_pod(NAMESPACE, label_selector=f"job-name={job}", _preload_content=False)
        items: list[dict[str, Any]] = json.loads(raw.data).get("items") or []
        return items

    def _progress_path(self, kind: str, job: str, pod: dict[str, Any]) -> Path:
        if kind == "migration":
            return (
                self.cluster.volumes_dir
                / NAMESPACE
                / checkpoint_claim_name("", "Job", job)
                / TRAINER_DIR
                / PROGRESS_FILE
            )
        assert self.runner is not None
        uid = str(pod["metadata"]["uid"])
        path: Path = self.runner.state_dir / "pods" / uid / "volumes" / "scratch" / TRAINER_DIR / PROGRESS_FILE
        return path

    def step_of(self, kind: str, job: str, pod: dict[str, Any]) -> int | None:
        """The trainer's step as this pod's trainer last reported it (None before it reported any)."""
        try:
            doc = json.loads(self._progress_path(kind, job, pod).read_text())
        except (OSError, ValueError):
            return None
        return int(doc["step"]) if doc.get("pod") == pod["metadata"]["name"] else None

    def warm(self, kind: str, job: str) -> dict[str, Any]:
        """Create the Job and wait until data-prep is done and the trainer has trained `warm_seconds`."""
        if kind == "migration":
            checkpoint_volume(self.core, self.cluster, NAMESPACE, job)
        self.batch.create_namespaced_job(NAMESPACE, seed_job(job, self.shape, checkpoint=kind == "migration"))
        target_step = int(self.shape.steps_per_second * self.warm_seconds)

        def warmed() -> dict[str, Any] | None:
            running = [p for p in self.pods(job) if (p.get("status") or {}).get("phase") == "Running"]
            if len(running) != 1 or not _terminated(running[0], "data-prep"):
                return None  # data-prep's exit must be in the API: the orchestrator captures what it says
            step = self.step_of(kind, job, running[0])
            return running[0] if step is not None and step >= target_step else None

        return poll(warmed, 300, f"{job}: data-prep done and the trainer at step {target_step}", interval=0.5)

    def follow(self, kind: str, job: str, run: Run, old_uid: str, evicted_at: float) -> dict[str, Any]:
        """Poll until the new pod runs and its trainer is back at `pre_step`; fills run timings and CPU."""
        assert self.runner is not None
        deadline = time.monotonic() + 300
        new: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            now = time.time()
            fresh = [p for p in self.pods(job) if p["metadata"]["uid"] != old_uid]
            if fresh:
                new = fresh[0]
                if math.isnan(run.evict_to_running_s) and (new.get("status") or {}).get("phase") == "Running":
                    run.evict_to_running_s = now - evicted_at
                step = self.step_of(kind, job, new)
                if step is not None and step >= run.pre_step:
                    run.back_to_step_s = now - evicted_at
                    run.cpu_seconds = self.runner.ledger.cpu_seconds(uid=new["metadata"]["uid"])
                    return new
            time.sleep(POLL_S)
        raise TimeoutError(f"{job}: the new pod's trainer did not get back to step {run.pre_step} in 300 s")

    def cleanup(self, job: str) -> None:
        self.batch.delete_namespaced_job(job, NAMESPACE, propagation_policy="Background")
        poll(lambda: True if not self.pods(job) else None, 120, f"{job}'s pods to go away")

    # ---- the two kinds of run --------------------------------------------------------------------
    def migration(self, i: int) -> Run:
        job = f"mig-{i}"
        pod = self.warm("migration", job)
        name = pod["metadata"]["name"]
        pre = self.step_of("migration", job, pod) or 0
        run = Run("migration", job, name, pod["spec"]["nodeName"], pre)
        mig_name = f"{name}-bench"
        started = time.time()
        self.custom.create_namespaced_custom_object(
            GROUP,
            VERSION,
            NAMESPACE,
            PLURAL,
            {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "metadata": {"name": mig_name},
                "spec": {"podName": name, "reason": "bench.migration"},
            },
        )

        def eviction_requested() -> float | None:
            m = self._migration(mig_name)
            stamp = m.status.steps.get("evictionRequested") or m.status.steps.get("evicted")
            if m.status.phase in Phase.FINISHED and not stamp:
                raise RuntimeError(f"{mig_name} {m.status.phase} before evicting: {m.status.message}")
            return _ts(stamp) if stamp else None

        evicted_at = poll(eviction_requested, 120, f"{mig_name} to evict", interval=POLL_S)
        # The step the trainer had reached when the move started: what it must get back to.
        run.pre_step = max(run.pre_step, self.step_of("migration", job, pod) or 0)
        new = self.follow("migration", job, run, pod["metadata"]["uid"], evicted_at)
        final = poll(
            lambda: m if (m := self._migration(mig_name)).status.phase in Phase.FINISHED else None,
            300,
            f"{mig_name} to finish",
            interval=0.3,
        )
        st = final.status
        run.phase, run.message = st.phase, st.message
        run.new_pod, run.target = new["metadata"]["name"], new["spec"].get("nodeName", "")
        run.cpu_request, run.memory_request = pod_requests(new)
        annotations = self.core.read_namespaced_pod(run.new_pod, NAMESPACE).metadata.annotations or {}
        resumed = st.resumed_from or annotations.get(RESUMED_FROM_ANNOTATION, "")
        run.resumed_from = int(resumed) if resumed.lstrip("-").isdigit() else None
        run.last_checkpoint = source_checkpoint(
            self.cluster.volumes_dir / NAMESPACE / checkpoint_claim_name("", "Job", job), name
        )
        claim = self.core.read_namespaced_persistent_volume_claim(checkpoint_claim_name("", "Job", job), NAMESPACE)
        run.claim_bound = (
            claim.status.phase == "Bound" and claim.spec.volume_name == f"{NAMESPACE}-{claim.metadata.name}"
        )
        run.migration_duration_s = time.time() - started if not st.duration else _duration(st.duration)
        run.steps = {k: round(_ts(v) - started, 3) for k, v in st.steps.items() if v}
        self.cleanup(job)
        self.core.delete_persistent_volume(f"{NAMESPACE}-{checkpoint_claim_name('', 'Job', job)}")
        return run

    def native(self, i: int) -> Run:
        job = f"nat-{i}"
        pod = self.warm("native", job)
        name = pod["metadata"]["name"]
        pre = self.step_of("native", job, pod) or 0
        run = Run("native", job, name, pod["spec"]["nodeName"], pre)
        from kubernetes import client

        evicted_at = time.time()
        self.core.create_namespaced_pod_eviction(
            name, NAMESPACE, client.V1Eviction(metadata=client.V1ObjectMeta(name=name, namespace=NAMESPACE))
        )
        new = self.follow("native", job, run, pod["metadata"]["uid"], evicted_at)
        run.new_pod, run.target = new["metadata"]["name"], new["spec"].get("nodeName", "")
        run.cpu_request, run.memory_request = pod_requests(new)
        run.phase = "Recreated"
        self.cleanup(job)
        return run

    def _migration(self, name: str) -> PodMigration:
        return PodMigration.from_json(self.custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name))


def _terminated(pod: dict[str, Any], container: str) -> bool:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == container:
            return bool((cs.get("state") or {}).get("terminated"))
    return False


def _duration(text: str) -> float:
    """The orchestrator's duration string ("13.8s", "1m2.5s") in seconds."""
    total, number = 0.0, ""
    for ch in text:
        if ch.isdigit() or ch == ".":
            number += ch
        elif ch in "hms" and number:
            total += float(number) * {"h": 3600, "m": 60, "s": 1}[ch]
            number = ""
    return total if total or not number else float(number)


def summarise(runs: list[Run], shape: WorkloadShape, quick: bool, wall_s: float) -> dict[str, Any]:
    mig = [r for r in runs if r.kind == "migration"]
    nat = [r for r in runs if r.kind == "native"]
    resumed_last = [r for r in mig if r.resumed_from is not None and r.resumed_from == r.last_checkpoint]
    lost_ckpt = [
        r
        for r in mig
        if r.last_checkpoint is not None and (r.resumed_from is None or r.resumed_from < r.last_checkpoint)
    ]
    out: dict[str, Any] = {
        "migrations": len(mig),
        "succeeded": sum(r.phase == Phase.SUCCEEDED for r in mig),
        "evict_to_running_p50_s": round(_quantile([r.evict_to_running_s for r in mig], 0.5), 2),
        "evict_to_running_p95_s": round(_quantile([r.evict_to_running_s for r in mig], 0.95), 2),
        "native_evict_to_running_p50_s": round(_quantile([r.evict_to_running_s for r in nat], 0.5), 2),
        "native_evict_to_running_p95_s": round(_quantile([r.evict_to_running_s for r in nat], 0.95), 2),
        "cpu_request_saving": _saving(_mean([r.cpu_request for r in mig]), _mean([r.cpu_request for r in nat])),
        "memory_request_saving": _saving(
            _mean([r.memory_request for r in mig]), _mean([r.memory_request for r in nat])
        ),
        "cpu_seconds_saving": _saving(_mean([r.cpu_seconds for r in mig]), _mean([r.cpu_seconds for r in nat])),
        "cold_start_reduction": _saving(
            _quantile([r.back_to_step_s for r in mig], 0.5), _quantile([r.back_to_step_s for r in nat], 0.5)
        ),
        "resumed_from_checkpoint": len(resumed_last),
        "lost_pvcs": sum(r.claim_bound is not True for r in mig),
        "lost_checkpoints": len(lost_ckpt),
        "max_migration_duration_s": round(max((r.migration_duration_s for r in mig), default=math.nan), 2),
        "migration_ttl_s": KOORDINATOR_MIGRATION_TTL_S,
        "back_to_step_p50_s": round(_quantile([r.back_to_step_s for r in mig], 0.5), 2),
        "native_back_to_step_p50_s": round(_quantile([r.back_to_step_s for r in nat], 0.5), 2),
        "cpu_seconds_mean": round(_mean([r.cpu_seconds for r in mig]), 2),
        "native_cpu_seconds_mean": round(_mean([r.cpu_seconds for r in nat]), 2),
        "quick": quick,
        "wall_seconds": round(wall_s, 1),
        "scenario": {
            "workload": "Job: data-prep + trainer + monitor (apolloctl.scenario.seed_job), real local processes",
            "requests": {k: {"cpu": v[0], "memory": v[1]} for k, v in shape.requests.items()},
            "data_prep_samples": shape.samples,
            "trainer_steps_per_second": shape.steps_per_second,
            "checkpoint_seconds": shape.checkpoint_seconds,
            "nodes": f"{len(NODES)} kwok nodes, {NODE_CPU:g} CPU / {NODE_MEMORY // 2**30} GiB",
        },
        "machine": machine(),
        "runs": [asdict(r) for r in runs],
    }
    return out


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "python": platform.python_version(), "os": platform.platform()}


def markdown(result: dict[str, Any]) -> str:
    """The README's results table, generated from one benchmark result."""
    m = result["machine"]
    r = result
    rows = [
        ("migrations succeeded", f"{r['succeeded']} / {r['migrations']}"),
        ("eviction to Running, p50 / p95", f"{r['evict_to_running_p50_s']} s / {r['evict_to_running_p95_s']} s"),
        (
            "native delete-and-recreate, p50 / p95",
            f"{r['native_evict_to_running_p50_s']} s / {r['native_evict_to_running_p95_s']} s",
        ),
        (
            "back at the pre-eviction step, p50",
            f"{r['back_to_step_p50_s']} s (native {r['native_back_to_step_p50_s']} s)",
        ),
        ("cold_start_reduction", str(r["cold_start_reduction"])),
        ("CPU seconds to get back there, mean", f"{r['cpu_seconds_mean']} (native {r['native_cpu_seconds_mean']})"),
        ("cpu_seconds_saving", str(r["cpu_seconds_saving"])),
        ("cpu_request_saving / memory_request_saving", f"{r['cpu_request_saving']} / {r['memory_request_saving']}"),
        ("resumed_from_checkpoint", f"{r['resumed_from_checkpoint']} / {r['migrations']}"),
        ("lost_pvcs / lost_checkpoints", f"{r['lost_pvcs']} / {r['lost_checkpoints']}"),
        ("longest migration (Koordinator's TTL)", f"{r['max_migration_duration_s']} s ({r['migration_ttl_s']:g} s)"),
    ]
    lines = [
        f"`python -m bench.migration --json{' --quick' if result['quick'] else ''}`: {result['migrations']} migrations "
        f"each way; {result['scenario']['nodes']}; {result['scenario']['workload']}.",
        f"Machine: {m['cpus']} CPUs ({m['cpu_model'] or 'unknown model'}), Python {m['python']}, shared by the "
        "control plane, the stack and the workload processes.",
        "",
        "| measure | value |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in rows],
    ]
    return "\n".join(lines)


def plots(result: dict[str, Any], directory: Path) -> list[Path]:
    """migration-timeline.png: per run, eviction -> Running -> back at the step, migration vs native."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    runs = result["runs"]
    fig, ax = plt.subplots(figsize=(9, 0.5 + 0.45 * len(runs)))
    for y, r in enumerate(runs):
        color = "tab:blue" if r["kind"] == "migration" else "tab:gray"
        ax.barh(y, r["evict_to_running_s"], color=color, alpha=0.9)
        ax.barh(y, r["back_to_step_s"] - r["evict_to_running_s"], left=r["evict_to_running_s"], color=color, alpha=0.4)
    ax.set_yticks(range(len(runs)), [f"{r['kind']} {r['job']}" for r in runs])
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the eviction (dark: until Running; light: until back at the pre-eviction step)")
    ax.set_title("Migration with checkpoint vs plain delete-and-recreate")
    fig.tight_layout()
    path = directory / "migration-timeline.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [path]


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
