"""The main job's story: the seed's AI Job, its node heating up, APOLLO's MIGRATE, a resumed replacement.

What it shows, on the local control plane with the whole stack running as local processes:

1. the seed's AI workload: a Job whose pod runs data-prep, a trainer and a monitor as real processes
   (`apolloctl.podrunner`), its checkpoint claim attached by the admission webhook (the pods opt in
   with the ``apollo.io/checkpoint`` label) and backed by a hostPath PV under the cluster's run
   directory;
2. load rises on the node the pod landed on (a simulated exporter, scraped by the real Prometheus:
   the node's background load ramps up, and every scenario pod adds its requests to its node);
3. APOLLO forecasts the overload before it happens and emits MIGRATE for the checkpointed pod;
4. the orchestrator (subscribed to APOLLO) captures the pod, evicts it; the Job controller creates the
   replacement, which the webhook strips of the completed data-prep container and attaches to the
   same claim, and kube-scheduler (with the extender) places it on another node;
5. the replacement's trainer resumes from the checkpoint its predecessor wrote on SIGTERM.

It prints progress as it goes, then the timeline and a table. `run_scenario` builds everything on a
fresh cluster (``python -m apolloctl.scenario``); `run_story` runs the story inside an existing set-up
(the demo's). `seed_job`, `checkpoint_volume`, `LoadModel`, `start_webhook`, `start_orchestrator` and
`start_runner` are shared with the migration benchmark (`bench.migration`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from apollo_api.podmigration import (
    CHECKPOINT_LABEL,
    CHECKPOINT_STEP_ANNOTATION,
    GROUP,
    PLURAL,
    RESUMED_FROM_ANNOTATION,
    VERSION,
    Phase,
    PodMigration,
    checkpoint_claim_name,
)
from apolloctl.cluster import ClusterConfig, ExtenderConfig, LocalCluster, ScrapeTarget, create_kwok_nodes, kwok_node
from apolloctl.cluster.configs import LOCAL_RUN_ANNOTATION
from apolloctl.cluster.process import Process, free_port
from apolloctl.launch import (
    Service,
    Tls,
    apollo_verdicts,
    extender_holds_snapshot,
    launch,
    poll,
    report_node_capacity,
    start_apollo,
    start_extender,
)
from apolloctl.podrunner import PodRunner, RunnerSettings, hostpath_pv
from apolloctl.sim_metrics import CPU_METRIC, MEMORY_METRIC, NodeExporter
from apolloctl.workloads import TRAINER_DIR
from apolloctl.workloads.checkpoint import CheckpointStore, decode
from common.loops import BackgroundLoop
from common.quantity import parse_quantity

Say = Callable[[str], None]
NAMESPACE = "ml"
JOB_NAME = "train"
APP_LABEL = "app.kubernetes.io/name"
APP = "seed-training"
# The story's nodes are big enough that the Job's arrival (2.1 CPU, 0.03 of a node) hardly moves their
# load: APOLLO's intervals come from its recent errors, and a pod that lifts a node by half in one step
# widens them enough to look like overload coming (it then moves the pod on arrival, which the story
# reports as such). What comes is the background ramp: other tenants' load rising on the Job's node.
NODE_CPU = 64.0
NODE_MEMORY = 256 * 2**30
STORY_LABEL = {"apollo.io/scenario": "story"}
OVERLOAD_THRESHOLD = 0.85
WEBHOOK_REGISTRATION = "apollo-webhook-local"
CRD = Path(__file__).resolve().parents[1] / "manifests" / "crds" / "podmigration.yaml"


def _say(message: str) -> None:
    print(message, flush=True)


# ---- the seed's AI workload ---------------------------------------------------------------------


@dataclass(frozen=True)
class WorkloadShape:
    """How big the seed's Job is: the work of each program and what each container requests.

    data-prep is the CPU-heavy step (a full core while it featurises), the trainer a paced numpy loop,
    the monitor almost nothing; the requests say so. Defaults take a few seconds of data-prep and
    train at 20 steps per second, checkpointing every 2 s.
    """

    samples: int = 20_000
    signal_length: int = 1024
    batch: int = 2048
    steps_per_second: float = 20.0
    checkpoint_seconds: float = 2.0
    grace_seconds: int = 30
    requests: Mapping[str, tuple[str, str]] = field(
        default_factory=lambda: {
            "data-prep": ("1", "1Gi"),
            "trainer": ("1", "1Gi"),
            "monitor": ("100m", "128Mi"),
        }
    )


def _container(name: str, module: str, args: list[str], requests: tuple[str, str]) -> dict[str, Any]:
    return {
        "name": name,
        "image": "apollo-stack:0.1.0",
        "command": ["python", "-m", f"apolloctl.workloads.{module}", *args],
        "resources": {"requests": {"cpu": requests[0], "memory": requests[1]}},
    }


def seed_job(
    name: str = JOB_NAME,
    shape: WorkloadShape | None = None,
    *,
    checkpoint: bool = True,
    node_selector: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The seed's AI Job: data-prep, trainer and monitor in one pod, run by the local pod runner.

    With `checkpoint`, the pod opts in (label) and the webhook gives it the workload's claim and
    ``CHECKPOINT_DIR``. Without, it is what plain Kubernetes runs: ``CHECKPOINT_DIR`` on an emptyDir,
    lost with the pod (the benchmark's native baseline). An eviction never counts against the Job
    (pod failure policy on DisruptionTarget), and SIGTERM means "checkpoint, then exit 143".
    """
    s = shape or WorkloadShape()
    containers = [
        _container(
            "data-prep",
            "dataprep",
            ["--samples", str(s.samples), "--signal-length", str(s.signal_length)],
            s.requests["data-prep"],
        ),
        _container(
            "trainer",
            "trainer",
            [
                "--batch",
                str(s.batch),
                "--steps-per-second",
                str(s.steps_per_second),
                "--checkpoint-seconds",
                str(s.checkpoint_seconds),
            ],
            s.requests["trainer"],
        ),
        _container("monitor", "monitor", ["--interval", "5"], s.requests["monitor"]),
    ]
    labels = {APP_LABEL: APP}
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": s.grace_seconds,
        "containers": containers,
    }
    if node_selector:
        spec["nodeSelector"] = dict(node_selector)
    if checkpoint:
        labels[CHECKPOINT_LABEL] = "true"
    else:
        for c in containers:
            c["env"] = [{"name": "CHECKPOINT_DIR", "value": "/scratch"}]
            c["volumeMounts"] = [{"name": "scratch", "mountPath": "/scratch"}]
        spec["volumes"] = [{"name": "scratch", "emptyDir": {}}]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {APP_LABEL: APP}},
        "spec": {
            "backoffLimit": 0,
            "podFailurePolicy": {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]},
            "template": {
                "metadata": {"labels": labels, "annotations": {LOCAL_RUN_ANNOTATION: "true"}},
                "spec": spec,
            },
        },
    }


def checkpoint_volume(core: Any, cluster: LocalCluster, namespace: str, job: str) -> Path:
    """A hostPath PV under the cluster's run directory, reserved for the Job's checkpoint claim.

    The webhook creates the claim (``<job>-ckpt``) at the first pod's admission; the PV names it in
    its claimRef, so the claim binds to it at once and to nothing else.
    """
    claim = checkpoint_claim_name("", "Job", job)
    directory = cluster.volumes_dir / namespace / claim
    core.create_persistent_volume(hostpath_pv(f"{namespace}-{claim}", directory, claim=(namespace, claim)))
    return directory


def pod_requests(pod: Mapping[str, Any]) -> tuple[float, float]:
    """(cpu cores, memory bytes) requested by the pod's containers (what it reserves on its node)."""
    cpu = mem = 0.0
    for c in (pod.get("spec") or {}).get("containers") or []:
        req = (c.get("resources") or {}).get("requests") or {}
        cpu += parse_quantity(req.get("cpu", 0))
        mem += parse_quantity(req.get("memory", 0))
    return cpu, mem


def ensure_namespace(core: Any, name: str) -> None:
    from kubernetes import client

    try:
        core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    except client.ApiException as exc:
        if exc.status != 409:
            raise
    poll(lambda: _default_sa(core, name), 30, f"namespace {name}'s default service account")


def _default_sa(core: Any, namespace: str) -> bool | None:
    from kubernetes import client

    try:
        core.read_namespaced_service_account("default", namespace)
        return True
    except client.ApiException:
        return None


# ---- simulated node load ------------------------------------------------------------------------


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


# ---- the services around the cluster ------------------------------------------------------------


def install_crd(api_client: Any) -> None:
    """The PodMigration CRD from its manifest, waited for until Established (already installed is fine)."""
    from kubernetes import client

    ext = client.ApiextensionsV1Api(api_client)
    body = yaml.safe_load(CRD.read_text())
    try:
        ext.create_custom_resource_definition(body)
    except client.ApiException as exc:
        if exc.status != 409:
            raise

    def established() -> bool | None:
        status = ext.read_custom_resource_definition(body["metadata"]["name"]).status
        ok = any(c.type == "Established" and c.status == "True" for c in (status.conditions if status else []) or [])
        return True if ok else None

    poll(established, 30, "the PodMigration CRD to be Established")


def _tls(cluster: LocalCluster, name: str) -> Tls:
    assert cluster.ca is not None, "the cluster must have been started here (its CA signs the certificate)"
    pair = cluster.ca.issue(name, name, dns_names=("localhost",), ip_addresses=("127.0.0.1",), server=True)
    return Tls(certfile=pair.cert, keyfile=pair.key, ca=cluster.ca.pair.cert)


def start_webhook(
    cluster: LocalCluster,
    *,
    keep: bool = False,
    registration_name: str = WEBHOOK_REGISTRATION,
    namespace_labels: Mapping[str, str] | None = None,
) -> Service:
    """`apollo-webhook` over TLS (a certificate from the cluster's CA), registered with the API server.

    Registration is the `MutatingWebhookConfiguration` the webhook's own settings produce
    (`webhook.registration`), with a URL instead of a Service; the claim the webhook creates asks
    for no storage class, which binds to `checkpoint_volume`'s PV. `namespace_labels` narrows the
    registration to namespaces carrying them (tests sharing a cluster with other webhooks).
    """
    from kubernetes import client

    from common.settings import build
    from webhook.config import WebhookSettings
    from webhook.registration import url_client_config, webhook_configuration

    port = free_port()
    tls = _tls(cluster, f"webhook-{port}")
    tree: dict[str, Any] = {
        "kubeconfig": str(cluster.kubeconfig),
        "log_level": "INFO",
        "server": {"bind": f"127.0.0.1:{port}", "certfile": str(tls.certfile), "keyfile": str(tls.keyfile)},
    }
    settings = build(WebhookSettings, tree)
    service = launch(
        "apollo-webhook",
        "WEBHOOK",
        tree,
        port=port,
        log_path=cluster.logs_dir / "webhook.log",
        tls=tls,
        env={"PROMETHEUS_MULTIPROC_DIR": str(cluster.logs_dir / f"webhook-metrics-{port}")},
        die_with_parent=not keep,
    )
    service.wait_ready(what="apollo-webhook listing PodMigrations")
    assert cluster.ca is not None
    registration: Any = webhook_configuration(
        settings, url_client_config(f"https://127.0.0.1:{port}/mutate", cluster.ca.pem), name=registration_name
    )
    if namespace_labels:
        for hook in registration["webhooks"]:
            hook.setdefault("namespaceSelector", {}).setdefault("matchLabels", {}).update(namespace_labels)
    unregister_webhook(cluster, registration_name)
    client.AdmissionregistrationV1Api(cluster.api_client()).create_mutating_webhook_configuration(registration)
    return service


def unregister_webhook(cluster: LocalCluster, name: str = WEBHOOK_REGISTRATION) -> None:
    from kubernetes import client

    with contextlib.suppress(client.ApiException):
        client.AdmissionregistrationV1Api(cluster.api_client()).delete_mutating_webhook_configuration(name)


def start_orchestrator(cluster: LocalCluster, apollo_address: str, *, keep: bool = False) -> Service:
    """`apollo-orchestrator` (one replica, no leader election), subscribed to APOLLO's policies."""
    port = free_port()
    settings = {
        "kubeconfig": str(cluster.kubeconfig),
        "log_level": "INFO",
        "server": {"bind": f"127.0.0.1:{port}"},
        "leader": {"enabled": False},
        "apollo": {"address": apollo_address} if apollo_address else {},
        # Finished migrations stay for `kubectl get podmigrations` after the story.
        "ttl_seconds_after_finished": 3600,
    }
    service = launch(
        "apollo-orchestrator",
        "ORCHESTRATOR",
        settings,
        port=port,
        log_path=cluster.logs_dir / "orchestrator.log",
        env={"PROMETHEUS_MULTIPROC_DIR": str(cluster.logs_dir / f"orchestrator-metrics-{port}")},
        die_with_parent=not keep,
    )
    service.wait_ready(lambda body: bool(body.get("synced", True)), what="the orchestrator synced")
    return service


def runner_settings(cluster: LocalCluster) -> RunnerSettings:
    return RunnerSettings(
        kubeconfig=str(cluster.kubeconfig),
        state_dir=str(cluster.run_dir / "podrunner"),
        allowed_volume_roots=(str(cluster.volumes_dir.resolve()),),
        tick_seconds=0.1,
    ).validate()


def start_runner(cluster: LocalCluster, *, keep: bool = False) -> PodRunner | Process:
    """The local pod runner: in this process (its ledger readable at once), or, with `keep`, as its
    own process that outlives this one and stops with `apolloctl cluster down`."""
    settings = runner_settings(cluster)
    if not keep:
        from common.kube import core_v1

        return PodRunner(core_v1(settings.kubeconfig), settings).start()
    env = dict(os.environ)
    env.update(
        {
            "PODRUNNER_KUBECONFIG": settings.kubeconfig,
            "PODRUNNER_STATE_DIR": settings.state_dir,
            "PODRUNNER_ALLOWED_VOLUME_ROOTS": ",".join(settings.allowed_volume_roots),
            "PODRUNNER_TICK_SECONDS": str(settings.tick_seconds),
        }
    )
    proc = Process(
        "podrunner",
        [sys.executable, "-m", "apolloctl.podrunner"],
        cluster.logs_dir / "podrunner.log",
        env=env,
        die_with_parent=False,
    )
    proc.start()
    cluster.adopt("podrunner", proc)
    return proc


# ---- the story ----------------------------------------------------------------------------------


class Timeline:
    """Steps of the story with their time since the start, printed as they happen."""

    def __init__(self, say: Say) -> None:
        self.say = say
        self.t0 = time.monotonic()
        self.wall0 = time.time()
        self.steps: list[tuple[float, str]] = []
        self.marks: dict[str, float] = {}  # short label -> UNIX time, for the plot

    def __call__(self, text: str, mark: str = "") -> None:
        t = time.monotonic() - self.t0
        self.steps.append((t, text))
        if mark:
            self.marks[mark] = self.wall0 + t
        self.say(f"[{t:6.1f}s] {text}")

    def render(self) -> str:
        return "\n".join(f"  {t:6.1f}s  {text}" for t, text in self.steps)


@dataclass
class StoryResult:
    ok: bool
    reason: str
    rows: list[tuple[str, str]] = field(default_factory=list)
    timeline: str = ""
    source: str = ""
    target: str = ""
    # For the plot: the nodes' load each second, APOLLO's forecast for the source when it flagged it
    # (UNIX time, predicted, upper), and the story's marks (label -> UNIX time).
    load: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    forecast: list[tuple[float, float, float]] = field(default_factory=list)
    marks: dict[str, float] = field(default_factory=dict)


@dataclass
class StoryContext:
    """What the story needs from whoever set the stack up."""

    cluster: LocalCluster
    apollo_address: str
    load: LoadModel
    say: Say = _say
    namespace: str = NAMESPACE
    shape: WorkloadShape = field(default_factory=WorkloadShape)
    ramp_per_second: float = 0.01
    # The source's background climbs to this level, past the threshold: the node will be overloaded, and
    # the checkpointed pod must leave before it is.
    ramp_peak: float = 0.92
    node_selector: Mapping[str, str] = field(default_factory=lambda: dict(STORY_LABEL))
    timeout: float = 300.0


def _pods(core: Any, namespace: str, job: str) -> list[dict[str, Any]]:
    raw = core.list_namespaced_pod(namespace, label_selector=f"job-name={job}", _preload_content=False)
    items: list[dict[str, Any]] = json.loads(raw.data).get("items") or []
    return items


def _state(pod: Mapping[str, Any], container: str) -> dict[str, Any]:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == container:
            return dict(cs.get("state") or {})
    return {}


def _migrations(custom: Any, namespace: str) -> list[PodMigration]:
    listing = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
    return [PodMigration.from_json(o) for o in listing.get("items") or []]


def source_checkpoint(directory: Path, pod: str) -> int | None:
    """The newest checkpoint step `pod` wrote (each checkpoint records its writer)."""
    store = CheckpointStore(directory / TRAINER_DIR)
    for step, path in store.candidates():
        with contextlib.suppress(Exception):
            if decode(path.read_bytes()).extra.get("pod") == pod:
                return step
    return None


def run_story(ctx: StoryContext) -> StoryResult:
    """Steps 2-6 of the story on a running stack; returns whether every promise held."""
    from kubernetes import client

    cluster, say = ctx.cluster, ctx.say
    api = cluster.api_client()
    core: Any = client.CoreV1Api(api)
    batch: Any = client.BatchV1Api(api)
    custom: Any = client.CustomObjectsApi(api)
    tl = Timeline(say)
    ns, job = ctx.namespace, JOB_NAME
    ensure_namespace(core, ns)
    ckpt_dir = checkpoint_volume(core, cluster, ns, job)
    batch.create_namespaced_job(ns, seed_job(job, ctx.shape, node_selector=ctx.node_selector))
    tl(f"Job {ns}/{job} created: data-prep, trainer, monitor; checkpoint claim opted in ({CHECKPOINT_LABEL})")

    def scheduled() -> dict[str, Any] | None:
        pods = [p for p in _pods(core, ns, job) if (p.get("spec") or {}).get("nodeName")]
        return pods[0] if pods else None

    pod = poll(scheduled, 120, "the Job's pod to be scheduled")
    source, pod_name = pod["spec"]["nodeName"], pod["metadata"]["name"]
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in pod["spec"].get("volumes") or []
        if v.get("persistentVolumeClaim")
    ]
    tl(
        f"pod {pod_name} placed on {source} by kube-scheduler + extender; "
        f"webhook attached claim {', '.join(claims) or '-'}"
    )

    def prep_done() -> dict[str, Any] | None:
        current = next((p for p in _pods(core, ns, job) if p["metadata"]["name"] == pod_name), None)
        return current if current is not None and _state(current, "data-prep").get("terminated") else None

    pod = poll(prep_done, 180, "data-prep to complete")
    code = _state(pod, "data-prep")["terminated"].get("exitCode")
    tl(f"data-prep completed (exit {code}) as a real process; trainer and monitor keep running")

    def early() -> StoryResult | None:
        """APOLLO moved the pod before the load rose (its arrival alone looked like load coming)."""
        found = [m for m in _migrations(custom, ns) if m.spec.pod_name == pod_name]
        if not found:
            return None
        tl(f"APOLLO moved {pod_name} before its load rose ({found[0].name}: {found[0].spec.reason})")
        return StoryResult(False, "APOLLO migrated the pod on its arrival, not on load coming", [], tl.render())

    def checkpointed() -> int | None:
        current = json.loads(core.read_namespaced_pod(pod_name, ns, _preload_content=False).data)
        annotations = current["metadata"].get("annotations") or {}
        value = annotations.get(CHECKPOINT_STEP_ANNOTATION)
        return int(value) if value and int(value) > 0 and annotations.get(RESUMED_FROM_ANNOTATION) else None

    try:
        step = poll(checkpointed, 120, "the trainer's first checkpoint")
    except client.ApiException as exc:
        if exc.status == 404 and (result := early()) is not None:
            return result
        raise
    tl(
        f"trainer started from scratch (resumed-from -1), checkpoints every {ctx.shape.checkpoint_seconds:g}s: "
        f"step {step}"
    )

    # The pod's arrival is itself a jump in its node's load; start the ramp once APOLLO has settled on
    # the new level (no overload predicted for a few ticks), so what it forecasts next is the ramp.
    calm: list[float] = []

    def settled() -> float | None:
        if any(m.spec.pod_name == pod_name for m in _migrations(custom, ns)):
            return -1.0
        _, stale, verdicts = apollo_verdicts(ctx.apollo_address)
        v = verdicts.get(source)
        if v is not None and not v.overload and not stale:
            calm.append(time.monotonic())
        else:
            calm.clear()
        return ctx.load.cpu(source) if len(calm) >= 5 else None

    level = poll(settled, 120, f"APOLLO to settle on {source}'s new load", interval=1.0)
    if level < 0 and (result := early()) is not None:
        return result
    tl(f"APOLLO sees {source} at {level:.2f} with the pod on it: no overload predicted")
    ctx.load.ramp(source, ctx.ramp_per_second, ctx.ramp_peak)
    tl.marks["load starts rising"] = time.time()
    tl(f"load rising on {source}: {ctx.load.cpu(source):.2f} of its CPU and climbing {ctx.ramp_per_second:.2f}/s")

    def flagged() -> float | None:
        _, stale, verdicts = apollo_verdicts(ctx.apollo_address)
        v = verdicts.get(source)
        return ctx.load.cpu(source) if v is not None and v.overload and not stale else None

    actual_at_forecast = poll(flagged, ctx.timeout, f"APOLLO to forecast overload on {source}", interval=0.5)
    forecast = apollo_forecast(ctx.apollo_address, source)
    tl(
        f"APOLLO forecasts overload on {source} while its load is {actual_at_forecast:.2f} "
        f"(threshold {OVERLOAD_THRESHOLD})",
        mark="overload forecast",
    )

    def issued() -> PodMigration | None:
        found = [m for m in _migrations(custom, ns) if m.spec.pod_name == pod_name]
        return found[0] if found else None

    migration = poll(issued, ctx.timeout, "APOLLO's MIGRATE to reach the orchestrator", interval=0.5)
    load_at_migrate = ctx.load.cpu(source)
    tl(
        f"APOLLO: MIGRATE {pod_name} while {source}'s load is {load_at_migrate:.2f}; the orchestrator created "
        f"PodMigration {migration.name} ({migration.spec.reason or 'policy'})",
        mark="MIGRATE",
    )

    seen = {migration.status.phase}
    peak = ctx.load.cpu(source)

    def finished() -> PodMigration | None:
        nonlocal peak
        peak = max(peak, ctx.load.cpu(source))
        m = PodMigration.from_json(custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, migration.name))
        if m.status.phase not in seen:
            seen.add(m.status.phase)
            tl(f"migration {m.status.phase}: {m.status.message}")
        return m if m.status.phase in Phase.FINISHED else None

    final = poll(finished, ctx.timeout, f"PodMigration {migration.name} to finish", interval=0.3)
    st = final.status
    evicted = st.steps.get("evicted")
    if evicted:
        tl.marks["evicted"] = _unix(evicted)

    def story(ok: bool, reason: str, rows: list[tuple[str, str]]) -> StoryResult:
        t_end = time.time()
        load = [(t, cpu) for t, cpu in ctx.load.history if tl.wall0 - 5 <= t <= t_end]
        return StoryResult(ok, reason, rows, tl.render(), source, st.replacement_node, load, forecast, tl.marks)

    if st.phase != Phase.SUCCEEDED:
        return story(False, f"migration {st.phase}: {st.message}", _rows(final, None, None, peak))
    replacement = core.read_namespaced_pod(st.replacement_pod, ns)
    names = [c.name for c in replacement.spec.containers]
    resumed = (replacement.metadata.annotations or {}).get(RESUMED_FROM_ANNOTATION, "")
    last = source_checkpoint(ckpt_dir, pod_name)
    tl(
        f"replacement {st.replacement_pod} Running on {st.replacement_node} with {', '.join(names)} "
        f"(data-prep not re-run); trainer resumed from step {resumed} (last checkpoint of {pod_name}: {last})",
        mark="replacement running",
    )
    problems = []
    if st.replacement_node == source:
        problems.append("the replacement runs on the source node")
    if "data-prep" in names:
        problems.append("the completed data-prep container came back")
    if last is None or resumed != str(last):
        problems.append(f"resumed from {resumed!r}, not from the last checkpoint {last}")
    if load_at_migrate >= OVERLOAD_THRESHOLD:
        problems.append(f"MIGRATE came only once {source}'s load ({load_at_migrate:.2f}) had crossed the threshold")
    return story(not problems, "; ".join(problems) or "every step held", _rows(final, resumed, last, peak))


def _unix(stamp: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


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


def plot_story(result: StoryResult, path: Path) -> Path:
    """forecast-vs-actual: the source's load, APOLLO's forecast when it flagged it, and the migration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = result.load[0][0] if result.load else time.time()
    fig, ax = plt.subplots(figsize=(9, 4.2))
    for node, style in ((result.source, "-"), (result.target, "--")):
        if node:
            pts = [(t - t0, cpu[node]) for t, cpu in result.load if node in cpu]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=f"{node} actual load", linewidth=1.6)
    if result.forecast:
        ax.plot(
            [f[0] - t0 for f in result.forecast],
            [f[1] for f in result.forecast],
            color="tab:red",
            label=f"APOLLO forecast for {result.source} (when flagged)",
        )
        ax.plot([f[0] - t0 for f in result.forecast], [f[2] for f in result.forecast], ":", color="tab:red",
                label="upper bound (decision quantile)")  # fmt: skip
    ax.axhline(OVERLOAD_THRESHOLD, color="black", linewidth=0.8, label=f"overload threshold {OVERLOAD_THRESHOLD}")
    for label, t in result.marks.items():
        ax.axvline(t - t0, color="gray", linewidth=0.6)
        ax.text(t - t0, 0.02, f" {label}", rotation=90, va="bottom", fontsize=7, color="dimgray")
    ax.set_ylim(0, 1.1)
    ax.set_xlim(left=0)
    ax.set_xlabel("seconds")
    ax.set_ylabel("CPU utilisation")
    ax.set_title("Load coming: APOLLO's forecast against the actual load, and the migration it triggered")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _rows(m: PodMigration, resumed: str | None, last: int | None, peak: float) -> list[tuple[str, str]]:
    st = m.status

    def at(step: str) -> str:
        return st.steps.get(step, "-")

    before, after = st.requests_before, st.requests_after
    rows = [
        ("migration", f"{m.name} ({st.phase})"),
        ("pod", f"{m.spec.pod_name} -> {st.replacement_pod or '-'}"),
        ("nodes", f"{st.source_node} -> {st.replacement_node or '-'}"),
        ("containers not re-run", ", ".join(sorted(st.completed_containers)) or "-"),
        ("checkpoint claim", st.checkpoint_pvc or "-"),
        ("evicted at", at("evicted")),
        ("replacement running at", at("running")),
        ("duration", st.duration or "-"),
        ("last checkpoint / resumed from", f"{last if last is not None else '-'} / {resumed or '-'}"),
        ("source peak load (threshold)", f"{peak:.2f} ({OVERLOAD_THRESHOLD})"),
    ]
    if before is not None and after is not None:
        rows.append(
            (
                "requests before -> after",
                f"{before.cpu_cores:g} CPU, {before.memory_bytes / 2**30:.2f} GiB -> "
                f"{after.cpu_cores:g} CPU, {after.memory_bytes / 2**30:.2f} GiB",
            )
        )
    return rows


def print_result(result: StoryResult, say: Say) -> None:
    say("\ntimeline:\n" + result.timeline)
    width = max((len(k) for k, _ in result.rows), default=0)
    say("\n" + "\n".join(f"  {k:<{width}}  {v}" for k, v in result.rows))
    say(("\nOK: " if result.ok else "\nFAILED: ") + result.reason)


# ---- the whole thing on a fresh cluster ---------------------------------------------------------

# Background (cpu, memory) per node. The Job lands on the idlest (node-2), whose background then climbs
# from 0.30 to 0.92 (StoryContext.ramp_peak).
BACKGROUND = {"node-0": (0.45, 0.30), "node-1": (0.40, 0.30), "node-2": (0.30, 0.25)}


def story_apollo_settings(prometheus_url: str, kubeconfig: Path) -> dict[str, Any]:
    """APOLLO reading the simulated node gauges every second, seeing pods, acting on checkpointed ones."""
    return {
        "prometheus": {
            "url": prometheus_url,
            "queries": {"cpu": CPU_METRIC, "memory": MEMORY_METRIC},
            "stale_after_seconds": 5,
        },
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


def forecasting(address: str) -> int | None:
    """APOLLO's snapshot generation once it scores nodes from fresh data, else None."""
    generation, stale, verdicts = apollo_verdicts(address)
    return generation if verdicts and not stale else None


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


def start_story_services(cluster: LocalCluster, apollo_address: str, *, keep: bool = False) -> list[Any]:
    """What the story adds to a cluster that runs APOLLO: the CRD, the webhook, the orchestrator, the pod
    runner. Returns them in start order (each has `stop()`); with `keep` they outlive this process."""
    install_crd(cluster.api_client())
    started: list[Any] = [start_webhook(cluster, keep=keep)]
    started.append(start_orchestrator(cluster, apollo_address, keep=keep))
    if keep:
        cluster.adopt("apollo-webhook", started[0].process)
        cluster.adopt("apollo-orchestrator", started[1].process)
    started.append(start_runner(cluster, keep=keep))
    return started


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
    say: Say = _say,
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


def run_scenario(run_dir: Path, *, keep: bool = False, say: Say = _say, plot: Path | None = None) -> int:
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
            apollo = start_apollo(
                story_apollo_settings(cluster.prometheus_url, cluster.kubeconfig),
                cluster.logs_dir / "apollo.log",
                die_with_parent=not keep,
            )
            started.append(apollo)
            report_node_capacity(apollo.address("grpc"), nodes, NODE_CPU, NODE_MEMORY)
            generation = poll(lambda: forecasting(apollo.address("grpc")), 90, "APOLLO's first forecast")
            extender = start_extender(
                apollo.address("grpc"),
                cluster.logs_dir / "extender.log",
                settings={
                    "kubeconfig": str(cluster.kubeconfig),
                    "refresh_interval_seconds": 0.5,
                    "snapshot_max_age_seconds": 5.0,
                },
                die_with_parent=not keep,
            )
            started.append(extender)
            extender.wait_ready(extender_holds_snapshot(generation), what="holding APOLLO's snapshot")
            cluster.restart_scheduler((ExtenderConfig(url_prefix=extender.url, weight=5, http_timeout="1s"),))
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
    parser = argparse.ArgumentParser(prog="python -m apolloctl.scenario", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, default=Path(".run/scenario"))
    parser.add_argument("--keep", action="store_true", help="leave the cluster and the stack running")
    parser.add_argument("--plot", type=Path, help="write the forecast-vs-actual PNG here (needs matplotlib)")
    args = parser.parse_args(argv)
    try:
        return run_scenario(args.run_dir, keep=args.keep, plot=args.plot)
    except KeyboardInterrupt:
        print("interrupted: every process started was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
