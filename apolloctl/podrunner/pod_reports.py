"""What the pod runner tells the API server about a pod's processes, as annotations on the pod.

Exits go to kwok through its completion annotation (kwok's Stage then reports the container
terminated); what a workload reports on its checkpoint volume goes to the annotations the
orchestrator reads (the step it resumed from, its latest checkpoint). Annotations, not conditions,
because kwok's Stages rewrite the status and because a patch of one annotation cannot clobber
anything else.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from apollo_api.podmigration import CHECKPOINT_ENV, CHECKPOINT_STEP_ANNOTATION, RESUMED_FROM_ANNOTATION
from apolloctl.cluster.configs import COMPLETE_ANNOTATION
from apolloctl.podrunner.kube_calls import api_status
from apolloctl.podrunner.ledger import Ledger
from apolloctl.podrunner.pod_state import ContainerRun, PodRun
from apolloctl.podrunner.spec import format_exits, parse_exits
from apolloctl.workloads import CHECKPOINT_STEP_FILE, RESUMED_FROM_FILE

log = logging.getLogger("apolloctl.podrunner")
# Clock slack when matching a report file to the process that should have written it.
RESUME_CLOCK_SLACK_SECONDS = 2.0
# What a workload reports in $CHECKPOINT_DIR and the pod annotation the orchestrator reads it from:
# (file, annotation, key). A report counts only when written by this pod's current process (its `pod`
# is the pod's host name and its `started_at` is not older than the process), never a predecessor's.
REPORTS = (
    (RESUMED_FROM_FILE, RESUMED_FROM_ANNOTATION, "resumed_from"),
    (CHECKPOINT_STEP_FILE, CHECKPOINT_STEP_ANNOTATION, "step"),
)


def report_exits(core: Any, run: PodRun) -> None:
    """Append the exits to kwok's completion annotation (a strategic merge of one key)."""
    info = run.info
    try:
        current = parse_exits(info.annotations.get(COMPLETE_ANNOTATION, ""))
    except ValueError:
        current = {}
    merged = {**current, **run.reported}
    for name, code in run.to_report.items():
        merged.setdefault(name, code)
    value = format_exits(merged)
    try:
        core.patch_namespaced_pod(
            info.name, info.namespace, {"metadata": {"annotations": {COMPLETE_ANNOTATION: value}}}
        )
    except Exception as exc:
        if api_status(exc) == 404:
            run.to_report.clear()
            return
        log.warning("cannot report container exit; will retry", extra={"pod": info.key, "error": str(exc)})
        return
    run.reported.update(run.to_report)
    run.to_report.clear()


def mirror_reports(core: Any, ledger: Ledger, run: PodRun, c: ContainerRun) -> None:
    """Copy what the running process reported in $CHECKPOINT_DIR onto its pod (see REPORTS)."""
    assert c.process is not None
    directory = c.process.launch.env.get(CHECKPOINT_ENV)
    if not directory:
        return
    for file, annotation, key in REPORTS:
        path = Path(directory) / file
        try:
            mtime = path.stat().st_mtime
        except OSError:
            continue
        seen = c.reports.get(file)
        if seen is not None and seen[0] == mtime:
            continue
        try:
            doc = json.loads(path.read_text())
            ours = (
                doc.get("pod") == run.info.hostname
                and float(doc.get("started_at", 0)) >= c.process.started_at - RESUME_CLOCK_SLACK_SECONDS
            )
            value = str(int(doc[key]))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # mid-replace or not this format: look again next tick
        if not ours:
            c.reports[file] = (mtime, "")  # a predecessor's report: wait for this process to write its own
            continue
        if run.info.annotations.get(annotation) != value:
            try:
                core.patch_namespaced_pod(
                    run.info.name, run.info.namespace, {"metadata": {"annotations": {annotation: value}}}
                )
            except Exception as exc:
                if api_status(exc) != 404:
                    log.warning(
                        "cannot mirror a workload report; will retry",
                        extra={"pod": run.info.key, "error": str(exc)},
                    )
                    continue
        c.reports[file] = (mtime, value)
        if annotation == RESUMED_FROM_ANNOTATION and c.record is not None:
            c.record.resumed_from = int(value)
            ledger.touch()
            log.info("workload resumed", extra={"pod": run.info.key, "container": c.name, "resumed_from": value})
