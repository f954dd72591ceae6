"""The story itself, on a running stack: the Job, its node heating up, APOLLO's MIGRATE, the resumed replacement.

`run_story` creates the seed's Job, waits for each step and checks each promise as it goes: data-prep
completes, the trainer checkpoints, APOLLO settles on the node's new load, the load rises, APOLLO
forecasts the overload while the load is still under the threshold and emits MIGRATE, the orchestrator
moves the pod, and the replacement runs elsewhere without data-prep, resumed from the last checkpoint.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from apollo_api.podmigration import (
    CHECKPOINT_LABEL,
    CHECKPOINT_STEP_ANNOTATION,
    GROUP,
    PLURAL,
    RESUMED_FROM_ANNOTATION,
    VERSION,
    Phase,
    PodMigration,
)
from apolloctl.cluster import LocalCluster
from apolloctl.launch import apollo_verdicts, poll
from apolloctl.scenario.apollo_setup import OVERLOAD_THRESHOLD, apollo_forecast
from apolloctl.scenario.load import LoadModel
from apolloctl.scenario.report import Say, StoryResult, Timeline, migration_rows, say_stdout
from apolloctl.scenario.workload import (
    JOB_NAME,
    NAMESPACE,
    STORY_LABEL,
    WorkloadShape,
    checkpoint_volume,
    ensure_namespace,
    seed_job,
    source_checkpoint,
)


@dataclass
class StoryContext:
    """What the story needs from whoever set the stack up."""

    cluster: LocalCluster
    apollo_address: str
    load: LoadModel
    say: Say = say_stdout
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
        return story(False, f"migration {st.phase}: {st.message}", migration_rows(final, None, None, peak))
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
    return story(not problems, "; ".join(problems) or "every step held", migration_rows(final, resumed, last, peak))


def _unix(stamp: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
