"""The seed's Job migrated for real: processes, checkpoint, webhook, orchestrator, and what goes wrong.

The pod runner runs the Job's containers as processes; the webhook (registered for this module's
namespaces only) gives the pod its checkpoint claim; the orchestrator (no APOLLO: migrations are
requested with PodMigration objects, as `kubectl` would) moves it. Every case ends with the trainer
resuming from its last checkpoint and no claim lost:

* a migration: the replacement comes back on another node without data-prep and resumes exactly
  where its predecessor's SIGTERM checkpoint left it;
* a migration whose target is full fails cleanly: nothing is evicted, the pod keeps running (and
  training) where it was;
* the orchestrator killed mid-migration: restarted, it picks the migration up from its status and
  finishes it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

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
from apolloctl.launch import Service
from apolloctl.podrunner import PodRunner
from apolloctl.scenario import (
    WorkloadShape,
    checkpoint_volume,
    install_crd,
    runner_settings,
    seed_job,
    source_checkpoint,
    start_orchestrator,
    start_webhook,
    unregister_webhook,
)
from apolloctl.workloads import PROGRESS_FILE, TRAINER_DIR
from common.kube import core_v1
from tests.conftest import ClusterHandle
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e
SCOPE = {"apollo.io/e2e-scope": uuid.uuid4().hex[:8]}
REGISTRATION = "apollo-webhook-podrunner-e2e"
SHAPE = WorkloadShape(samples=3000, signal_length=256, batch=256, steps_per_second=50.0, checkpoint_seconds=1.0)


@dataclass
class Stack:
    cluster: ClusterHandle
    runner: PodRunner
    orchestrator: Service
    nodes: list[str]
    custom: Any


@pytest.fixture(scope="module")
def stack(cluster: ClusterHandle) -> Iterator[Stack]:
    local = cluster.local
    nodes = cluster.create_nodes(3, prefix=f"mig-{uuid.uuid4().hex[:4]}", labels=SCOPE, cpu="4", memory="16Gi")
    install_crd(cluster.api)
    webhook = start_webhook(local, registration_name=REGISTRATION, namespace_labels=SCOPE)
    orchestrator = start_orchestrator(local, "")
    settings = runner_settings(local)
    runner = PodRunner(core_v1(settings.kubeconfig), settings).start()
    try:
        yield Stack(cluster, runner, orchestrator, nodes, client.CustomObjectsApi(cluster.api))
    finally:
        runner.stop()
        orchestrator.stop()
        unregister_webhook(local, REGISTRATION)
        webhook.stop()
        cluster.delete_nodes(nodes)


@pytest.fixture
def ns(cluster: ClusterHandle, namespace: str) -> str:
    """The test's namespace, labelled so that this module's webhook registration covers it."""
    cluster.core.patch_namespace(namespace, {"metadata": {"labels": SCOPE}})
    return namespace


def _pods(stack: Stack, ns: str, job: str) -> list[Any]:
    return list(stack.cluster.core.list_namespaced_pod(ns, label_selector=f"job-name={job}").items)


def _progress(stack: Stack, ns: str, job: str) -> dict[str, Any]:
    path = stack.cluster.local.volumes_dir / ns / checkpoint_claim_name("", "Job", job) / TRAINER_DIR / PROGRESS_FILE
    try:
        doc: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return doc


def _training(stack: Stack, ns: str, job: str = "train") -> Any:
    """Create the seed's Job (on this module's nodes) and wait until its trainer has checkpointed twice."""
    checkpoint_volume(stack.cluster.core, stack.cluster.local, ns, job)
    manifest = seed_job(job, SHAPE)
    manifest["spec"]["template"]["spec"]["nodeSelector"] = dict(SCOPE)
    stack.cluster.batch.create_namespaced_job(ns, manifest)

    def checkpointed() -> Any:
        pods = [p for p in _pods(stack, ns, job) if p.status.phase == "Running"]
        # data-prep's exit must have reached the API (kwok reports it a second after the runner tells it):
        # the orchestrator captures what the API says, and a container it sees running is re-run.
        done = {c.name for p in pods for c in p.status.container_statuses or [] if c.state.terminated}
        if len(pods) == 1 and "data-prep" in done and _progress(stack, ns, job).get("pod") == pods[0].metadata.name:
            ckpt = stack.cluster.local.volumes_dir / ns / checkpoint_claim_name("", "Job", job)
            return pods[0] if (source_checkpoint(ckpt, pods[0].metadata.name) or 0) > 0 else None
        return None

    return wait_for(checkpointed, timeout=180, what="the Job's trainer checkpointing")


def _request(stack: Stack, ns: str, pod: str, target: str = "") -> str:
    name = f"{pod}-m-{uuid.uuid4().hex[:4]}"
    spec = {"podName": pod, "reason": "e2e"} | ({"targetNode": target} if target else {})
    stack.custom.create_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name}, "spec": spec}
    )
    return name


def _migration(stack: Stack, ns: str, name: str) -> PodMigration:
    return PodMigration.from_json(stack.custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name))


def _finished(stack: Stack, ns: str, name: str, timeout: float = 180) -> PodMigration:
    found: PodMigration = wait_for(
        lambda: m if (m := _migration(stack, ns, name)).status.phase in Phase.FINISHED else None,
        timeout=timeout,
        what=f"PodMigration {name} to finish",
    )
    return found


def _assert_resumed_where_it_left(stack: Stack, ns: str, source: Any, m: PodMigration) -> None:
    st = m.status
    assert st.phase == Phase.SUCCEEDED, st.message
    replacement = stack.cluster.core.read_namespaced_pod(st.replacement_pod, ns)
    assert [c.name for c in replacement.spec.containers] == ["trainer", "monitor"]
    assert replacement.spec.node_name != source.spec.node_name
    ckpt = stack.cluster.local.volumes_dir / ns / checkpoint_claim_name("", "Job", "train")
    last = source_checkpoint(ckpt, source.metadata.name)
    assert last is not None and last > 0
    assert replacement.metadata.annotations[RESUMED_FROM_ANNOTATION] == str(last) == st.resumed_from
    claim = stack.cluster.core.read_namespaced_persistent_volume_claim(checkpoint_claim_name("", "Job", "train"), ns)
    assert claim.status.phase == "Bound"
    assert {v.persistent_volume_claim.claim_name for v in replacement.spec.volumes if v.persistent_volume_claim} == {
        claim.metadata.name
    }
    assert not stack.cluster.batch.read_namespaced_job("train", ns).status.failed
    # the source's processes really stopped: data-prep completed, the trainer checkpointed on SIGTERM
    runs = {r["container"]: r for r in stack.runner.ledger.records() if r["uid"] == source.metadata.uid}
    assert runs["data-prep"]["exit_code"] == 0 and runs["trainer"]["exit_code"] == 143


def _cleanup(stack: Stack, ns: str) -> None:
    stack.cluster.batch.delete_namespaced_job("train", ns, propagation_policy="Background")
    wait_for(lambda: not _pods(stack, ns, "train"), timeout=90, what="the Job's pods gone")
    with contextlib.suppress(client.ApiException):
        stack.cluster.core.delete_persistent_volume(f"{ns}-{checkpoint_claim_name('', 'Job', 'train')}")


def test_migration_resumes_from_the_last_checkpoint_without_data_prep(stack: Stack, ns: str) -> None:
    source = _training(stack, ns)
    m = _finished(stack, ns, _request(stack, ns, source.metadata.name))
    _assert_resumed_where_it_left(stack, ns, source, m)
    assert m.status.completed_containers == {"data-prep"}
    _cleanup(stack, ns)


def test_migration_to_a_full_target_fails_and_the_pod_keeps_running(stack: Stack, ns: str) -> None:
    source = _training(stack, ns)
    full = next(n for n in stack.nodes if n != source.spec.node_name)
    # Fill the target: a pod that takes all but 0.5 CPU of it (the replacement needs 1.1).
    stack.cluster.core.create_namespaced_pod(
        ns,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "filler"},
            "spec": {
                "nodeName": full,
                "containers": [
                    {"name": "c", "image": "registry.invalid/x:1", "resources": {"requests": {"cpu": "3500m"}}}
                ],
            },
        },
    )
    before = _progress(stack, ns, "train").get("step", 0)
    m = _finished(stack, ns, _request(stack, ns, source.metadata.name, target=full))
    assert m.status.phase == Phase.FAILED
    assert full in m.status.message and "evictionRequested" not in m.status.steps
    pod = stack.cluster.core.read_namespaced_pod(source.metadata.name, ns)
    assert (
        pod.metadata.uid == source.metadata.uid
        and pod.status.phase == "Running"
        and not pod.metadata.deletion_timestamp
    )
    wait_for(lambda: _progress(stack, ns, "train").get("step", 0) > before, what="the trainer still training")
    claim = stack.cluster.core.read_namespaced_persistent_volume_claim(checkpoint_claim_name("", "Job", "train"), ns)
    assert claim.status.phase == "Bound"
    stack.cluster.core.delete_namespaced_pod("filler", ns, grace_period_seconds=0)
    _cleanup(stack, ns)


def test_orchestrator_killed_mid_migration_finishes_it_after_restart(stack: Stack, ns: str) -> None:
    source = _training(stack, ns)
    name = _request(stack, ns, source.metadata.name)
    wait_for(
        lambda: "evictionRequested" in _migration(stack, ns, name).status.steps,
        timeout=60,
        what="the eviction to be requested",
    )
    stack.orchestrator.kill()  # SIGKILL mid-migration: nothing gets to clean up or finish
    assert _migration(stack, ns, name).status.phase not in Phase.FINISHED
    time.sleep(2.0)
    stack.orchestrator.process.start()  # the same console script, settings file and port
    stack.orchestrator.wait_ready(what="the orchestrator back")
    m = _finished(stack, ns, name)
    _assert_resumed_where_it_left(stack, ns, source, m)
    _cleanup(stack, ns)


def test_interrupting_the_scenario_stops_every_process_it_started(tmp_path: Path) -> None:
    """Ctrl-C in the middle of the story: every process of the run is gone afterwards."""
    run_dir = tmp_path / "scenario"
    proc = subprocess.Popen(
        [sys.executable, "-m", "apolloctl.scenario", "--run-dir", str(run_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    deadline = time.monotonic() + 400
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if "data-prep completed" in line or time.monotonic() > deadline:
            break
    assert any("data-prep completed" in line for line in lines), "".join(lines[-20:])
    descendants = _descendants(proc.pid)
    assert any("apolloctl.workloads.trainer" in cmd for cmd in descendants.values()), descendants
    os.kill(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "cluster stopped" in out
    time.sleep(1.0)
    alive = {pid: cmd for pid, cmd in descendants.items() if _alive(pid)}
    assert not alive, f"left behind: {alive}"


def _descendants(root: int) -> dict[int, str]:
    """pid -> command line of every process under `root` (by parent pid)."""
    children: dict[int, list[int]] = {}
    cmds: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
            cmds[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    out: dict[int, str] = {}
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            out[child] = cmds.get(child, "")
            stack.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :].split()[0] != "Z"
