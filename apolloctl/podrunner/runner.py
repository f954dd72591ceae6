"""The local pod runner: a kubelet for the scenario's pods on kwok nodes, with real processes.

kwok plays kubelet for every simulated node, but runs nothing. For a pod that carries the scenario
annotation (``sim.apollo.io/run-locally: "true"``) and sits on a kwok node, this runner does what a
kubelet and its runtime would do with the containers, as local processes:

* once kwok reports the pod Running, it starts each container's command (see `spec`) with the pod's
  environment and its volumes mapped to local directories: the checkpoint PVC's bound ``hostPath`` or
  ``local`` PV becomes ``$CHECKPOINT_DIR``;
* when a process exits and its restart policy does not restart it, it tells kwok through the
  completion annotation (``sim.apollo.io/complete-containers``: ``name`` for exit code 0,
  ``name=CODE`` otherwise), and kwok's Stage reports the container terminated; restartPolicy
  Always/OnFailure restarts it after the kubelet's doubling back-off instead;
* when the pod is deleted or evicted, it sends SIGTERM to every container's process group, SIGKILL
  after the grace period, writes the terminal status (phase and exit codes) and only then deletes
  the pod with grace 0, as a kubelet confirms a deletion. kwok's Stages leave these pods to it;
* it mirrors what a workload reports on its volume onto the pod, where the orchestrator reads it:
  the step it resumed from (``$CHECKPOINT_DIR/resumed-from.json`` -> ``apollo.io/resumed-from``) and
  the step of its latest checkpoint (``checkpoint-step.json`` -> ``apollo.io/checkpoint-step``), each
  only when written by this pod's current process. Annotations, not conditions, because kwok's Stages
  rewrite the status and because a patch of one annotation cannot clobber anything else;
* it records each process's CPU time in a ledger (`ledger`), in memory and as ``ledger.json``.

Init containers are not run: kwok reports them completed at once, as it always has. The runner is
development tooling for the local cluster only; on a real cluster the kubelet does all of this.
Around this module: `pod_watch` (the list-and-watch thread), `pod_state` (what it keeps per pod),
`references` (volumes, ConfigMaps, Secrets), `pod_reports` (exits and workload reports onto the pod).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from apolloctl.podrunner.config import RunnerSettings
from apolloctl.podrunner.kube_calls import api_status, json_body
from apolloctl.podrunner.ledger import Ledger, RunRecord
from apolloctl.podrunner.pod_reports import mirror_reports, report_exits
from apolloctl.podrunner.pod_state import ContainerRun, PodRun
from apolloctl.podrunner.pod_watch import PodWatch
from apolloctl.podrunner.proc import LocalProcess
from apolloctl.podrunner.references import NotReady, References
from apolloctl.podrunner.spec import PodInfo, SpecError, is_kwok_node, launch_for
from apolloctl.podrunner.status import Exit, terminal_status
from common.loops import BackgroundLoop, ClosableQueue

log = logging.getLogger("apolloctl.podrunner")
# Exit code a runtime reports for a container it could not start (containerd's StartError).
START_ERROR_EXIT_CODE = 128
# A container that ran this long has its restart back-off reset, as the kubelet does.
BACKOFF_RESET_SECONDS = 600.0


class PodRunner:
    """Runs the scenario pods' containers as processes; `start()`, `stop()`, and `ledger` to read."""

    def __init__(
        self,
        core_v1: Any,
        settings: RunnerSettings,
        *,
        die_with_parent: bool = True,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.core = core_v1
        self.settings = settings
        self.state_dir = settings.state_path.resolve()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger(self.state_dir / "ledger.json")
        self.die_with_parent = die_with_parent
        self.base_env = dict(os.environ if environ is None else environ)
        self.python = settings.python or sys.executable
        self.roots = tuple(Path(r).resolve() for r in settings.allowed_volume_roots)
        self._events: ClosableQueue[tuple[str, dict[str, Any]]] = ClosableQueue()
        self._pods: dict[str, PodRun] = {}
        self._finished: set[str] = set()
        self._kwok_nodes: dict[str, bool] = {}
        self._watch = PodWatch(core_v1, settings.namespace, self._events)
        self.refs = References(core_v1, self.state_dir, self.roots)
        self._loop = BackgroundLoop("podrunner", settings.tick_seconds, self.tick)

    # ---- lifecycle -------------------------------------------------------------------------------
    def start(self) -> PodRunner:
        self._watch.start()
        self._loop.start()
        log.info("pod runner started", extra={"state_dir": str(self.state_dir)})
        return self

    def stop(self) -> None:
        """Stop watching, then stop every process (SIGTERM, grace, SIGKILL); pods are left as they are."""
        self._watch.stop()
        self._loop.stop()
        runs = [c for run in self._pods.values() for c in run.running()]
        for c in runs:
            assert c.process is not None
            c.process.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.shutdown_grace_seconds
        while any(c.process is not None and c.process.poll() is None for c in runs):
            if time.monotonic() > deadline:
                for c in runs:
                    if c.process is not None and c.process.running:
                        c.process.signal_group(signal.SIGKILL)
                deadline = float("inf")
            time.sleep(0.05)
        for run in self._pods.values():
            for c in run.containers.values():
                self._close_record(c, reason="runner stopped")
        self.ledger.flush(force=True)
        log.info("pod runner stopped")

    def __enter__(self) -> PodRunner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_path(self, namespace: str, pod: str, container: str) -> Path:
        """Where a container's output goes (as /var/log/containers names them)."""
        return self.state_dir / "logs" / f"{namespace}_{pod}_{container}.log"

    # ---- the loop --------------------------------------------------------------------------------
    def tick(self) -> None:
        """Apply pod events, then move every pod one step; one thread does all of it, so no locks."""
        for event_type, obj in self._events.drain(10_000):
            self._apply(event_type, obj)
        now = time.monotonic()
        for uid, run in list(self._pods.items()):
            try:
                self._reconcile(run, now)
            except Exception:
                log.exception("pod reconcile failed", extra={"pod": run.info.key})
            if run.finalized:
                del self._pods[uid]
                self._finished.add(uid)
        self.ledger.flush()

    def _apply(self, event_type: str, obj: dict[str, Any]) -> None:
        if event_type == "LIST":
            present = set(obj.get("uids") or [])
            for uid, run in self._pods.items():
                if uid not in present:
                    run.gone = True
            return
        info = PodInfo.from_json(obj)
        if not info.uid or info.uid in self._finished or not info.run_locally or not info.node:
            return
        if not self._is_kwok(info.node):
            return
        run = self._pods.setdefault(info.uid, PodRun(info))
        run.info = info
        if event_type == "DELETED":
            run.gone = True

    def _is_kwok(self, node: str) -> bool:
        if node not in self._kwok_nodes:
            try:
                self._kwok_nodes[node] = is_kwok_node(json_body(self.core.read_node(node, _preload_content=False)))
            except Exception as exc:
                log.warning("cannot read node", extra={"node": node, "error": str(exc)})
                return False
        return self._kwok_nodes[node]

    def _reconcile(self, run: PodRun, now: float) -> None:
        for c in run.containers.values():
            if c.process is None or not c.running:
                continue
            if c.process.poll() is not None:
                self._exited(run, c)
            elif c.record is not None:
                c.record.cpu_seconds = c.process.cpu_seconds  # live, from /proc; written out about once a second
        info = run.info
        if info.deleting or run.gone:
            self._terminate(run, now)
            return
        if info.phase != "Running":
            return  # kwok has not started it yet, or it has ended
        volume_dirs: dict[str, Path] | None = None
        volume_error = ""
        try:
            volume_dirs = self.refs.volume_dirs(run.info)
        except NotReady as exc:
            self._warn_once(run, f"waiting: {exc}")
            return
        except SpecError as exc:
            volume_error = str(exc)
        for container in info.containers:
            name = str(container.get("name", ""))
            c = run.container(name)
            if c.done or c.running or now < c.next_start:
                continue
            status = info.statuses.get(name)
            if c.attempts == 0 and status is not None and status.state == "terminated":
                c.done = True  # it finished before this runner saw it (e.g. a runner restart)
                continue
            if volume_dirs is None:
                self._start_failed(run, c, volume_error)
                continue
            self._start(run, c, container, volume_dirs)
        for c in run.containers.values():
            if c.running:
                mirror_reports(self.core, self.ledger, run, c)
        if run.to_report:
            report_exits(self.core, run)

    # ---- containers ------------------------------------------------------------------------------
    def _start(self, run: PodRun, c: ContainerRun, container: Mapping[str, Any], volume_dirs: dict[str, Path]) -> None:
        info = run.info
        c.attempts += 1
        try:
            launch = launch_for(info, container, volume_dirs, self.base_env, self.python, self.refs.resolve)
            if launch.cwd is None:
                launch = replace(launch, cwd=self.state_dir / "pods" / info.uid / c.name)
            proc = LocalProcess(launch, self.log_path(info.namespace, info.name, c.name), self.die_with_parent)
        except (SpecError, OSError) as exc:
            self._start_failed(run, c, str(exc), counted=True)
            return
        c.process = proc
        c.reports.clear()
        c.record = self.ledger.add(
            replace(
                _record(info, c),
                argv=list(launch.argv),
                pid=proc.pid,
                started_at=proc.started_at,
                log=str(proc.log_path),
            )
        )
        log.info(
            "started container",
            extra={"pod": info.key, "container": c.name, "pid": proc.pid, "attempt": c.attempts},
        )

    def _start_failed(self, run: PodRun, c: ContainerRun, reason: str, counted: bool = False) -> None:
        if not counted:
            c.attempts += 1
        info = run.info
        now = time.time()
        self.ledger.add(
            replace(
                _record(info, c),
                state="failed-to-start",
                started_at=now,
                finished_at=now,
                exit_code=START_ERROR_EXIT_CODE,
                reason=reason,
            )
        )
        log.error("cannot start container", extra={"pod": info.key, "container": c.name, "reason": reason})
        c.last_exit = Exit(START_ERROR_EXIT_CODE, now, now)
        self._after_exit(run, c, START_ERROR_EXIT_CODE, ran_for=0.0)

    def _exited(self, run: PodRun, c: ContainerRun) -> None:
        proc = c.process
        assert proc is not None and proc.exit_code is not None and proc.finished_at is not None
        code = proc.exit_code
        c.last_exit = Exit(code, proc.started_at, proc.finished_at)
        if run.terminating:
            reason = "killed" if run.killed else "terminated"
        elif code == 0:
            reason = "completed"
        else:
            reason = "error"
        self._close_record(c, reason)
        log.info(
            "container exited",
            extra={"pod": run.info.key, "container": c.name, "exit_code": code, "cpu_seconds": proc.cpu_seconds},
        )
        if not run.terminating:
            self._after_exit(run, c, code, ran_for=proc.finished_at - proc.started_at)

    def _after_exit(self, run: PodRun, c: ContainerRun, code: int, ran_for: float) -> None:
        if run.terminating:
            c.done = True
        elif run.info.restarts(code):
            s = self.settings
            c.backoff = s.restart_backoff_seconds if ran_for >= BACKOFF_RESET_SECONDS or not c.backoff else c.backoff
            c.next_start = time.monotonic() + c.backoff
            c.backoff = min(c.backoff * 2, s.max_restart_backoff_seconds)
        else:
            c.done = True
            run.to_report[c.name] = code

    def _close_record(self, c: ContainerRun, reason: str) -> None:
        r, proc = c.record, c.process
        if r is None or proc is None or r.state != "running":
            return
        if proc.exit_code is None:
            proc.poll()
        r.state = "exited" if proc.exit_code is not None else "running"
        r.exit_code = proc.exit_code
        r.finished_at = proc.finished_at
        r.cpu_seconds = proc.cpu_seconds
        r.reason = reason
        self.ledger.touch()

    # ---- deletion --------------------------------------------------------------------------------
    def _terminate(self, run: PodRun, now: float) -> None:
        running = run.running()
        if not run.terminating:
            run.terminating = True
            run.kill_at = now + run.info.grace_seconds
            for c in run.containers.values():
                c.next_start = float("inf")
            for c in running:
                assert c.process is not None
                c.process.signal_group(signal.SIGTERM)
            log.info(
                "pod deleted: stopping its containers",
                extra={"pod": run.info.key, "grace_seconds": run.info.grace_seconds, "running": len(running)},
            )
        elif running and now >= run.kill_at and not run.killed:
            run.killed = True
            for c in running:
                assert c.process is not None
                c.process.signal_group(signal.SIGKILL)
            log.warning("grace period over: SIGKILL", extra={"pod": run.info.key})
        if running:
            return
        if run.gone:
            run.finalized = True
            return
        self._finalize(run)

    def _finalize(self, run: PodRun) -> None:
        """Report the terminal status, then confirm the deletion (grace 0, same UID), as a kubelet does."""
        info = run.info
        exits = {name: c.last_exit for name, c in run.containers.items() if c.last_exit is not None}
        try:
            self.core.patch_namespaced_pod_status(info.name, info.namespace, terminal_status(info, exits, time.time()))
            self.core.delete_namespaced_pod(
                info.name, info.namespace, body={"gracePeriodSeconds": 0, "preconditions": {"uid": info.uid}}
            )
        except Exception as exc:
            if api_status(exc) not in (404, 409):  # gone already, or a new pod took the name
                log.warning("cannot finish deleted pod; will retry", extra={"pod": info.key, "error": str(exc)})
                return
        run.finalized = True
        log.info("pod stopped and removed", extra={"pod": info.key})

    def _warn_once(self, run: PodRun, message: str) -> None:
        if message not in run.warned:
            run.warned.add(message)
            log.warning(message, extra={"pod": run.info.key})


def _record(info: PodInfo, c: ContainerRun) -> RunRecord:
    """A ledger record of `c`'s current attempt in the pod `info` (the caller fills in how it started)."""
    return RunRecord(
        namespace=info.namespace, pod=info.name, uid=info.uid, node=info.node, container=c.name, attempt=c.attempts
    )
