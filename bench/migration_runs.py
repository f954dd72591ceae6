"""The migration benchmark's stack and its two kinds of run: a checkpointed migration, a native eviction.

`Bench` brings the whole stack up on a fresh local cluster (APOLLO observing only, the extender in
kube-scheduler, the webhook, the orchestrator, the pod runner in this process) and measures each run
from this process's clock, polling every `POLL_S`: see `bench.migration` for what each figure means.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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

NAMESPACE = "bench"
NODES = {f"node-{i}": (0.2 + 0.05 * i, 0.2) for i in range(4)}
NODE_CPU = 4.0
NODE_MEMORY = 16 * 2**30
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
    def _warm_run(self, kind: str, job: str) -> tuple[dict[str, Any], Run]:
        """A fresh Job of `kind`, warmed up (see `warm`), and its Run opened at the trainer's step now."""
        pod = self.warm(kind, job)
        pre = self.step_of(kind, job, pod) or 0
        return pod, Run(kind, job, pod["metadata"]["name"], pod["spec"]["nodeName"], pre)

    def migration(self, i: int) -> Run:
        job = f"mig-{i}"
        pod, run = self._warm_run("migration", job)
        name = run.pod
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
        pod, run = self._warm_run("native", job)
        name = run.pod
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
