"""The pod status a kubelet writes when a deleted pod's containers have stopped: pure, tested alone.

Before it removes a deleted pod, a kubelet reports the pod in a terminal phase with each container's
exit code, so that controllers see how it ended: the Job controller in particular creates the
replacement of a pod with a pod failure policy only once the old one is terminal, and decides from
the exit codes and conditions (DisruptionTarget on an eviction) whether the failure counts.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from apolloctl.podrunner.spec import PodInfo

# What the kubelet reports for a container that never ran when its pod was deleted.
UNKNOWN_EXIT_CODE = 137
UNKNOWN_REASON = "ContainerStatusUnknown"


@dataclass(frozen=True)
class Exit:
    """How one container's process ended (wall-clock times, seconds since the epoch)."""

    code: int
    started_at: float
    finished_at: float


def rfc3339(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def exit_code_of(wait_status_code: int) -> int:
    """`os.waitstatus_to_exitcode` result as a container exit code: a signal N becomes 128 + N."""
    return 128 - wait_status_code if wait_status_code < 0 else wait_status_code


def terminal_status(pod: PodInfo, exits: Mapping[str, Exit], now: float) -> dict[str, Any]:
    """A status patch: every container terminated, phase Succeeded only if every one exited 0.

    A container already terminated in the API keeps what it says; one that has an exit here gets it;
    one that never ran is reported as the kubelet does (137, ContainerStatusUnknown).
    """
    statuses = []
    all_zero = True
    for container in pod.containers:
        name = str(container.get("name", ""))
        current = pod.statuses.get(name)
        restart_count = 0
        for cs in (pod.raw.get("status") or {}).get("containerStatuses") or []:
            if cs.get("name") == name:
                restart_count = int(cs.get("restartCount", 0))
        terminated: dict[str, Any]
        if current is not None and current.state == "terminated" and name not in exits:
            code = current.exit_code or 0
            terminated = {
                "exitCode": code,
                "reason": current.reason or ("Completed" if code == 0 else "Error"),
                "startedAt": current.started_at or None,
                "finishedAt": current.finished_at or rfc3339(now),
            }
        elif name in exits:
            e = exits[name]
            code = e.code
            terminated = {
                "exitCode": code,
                "reason": "Completed" if code == 0 else "Error",
                "startedAt": rfc3339(e.started_at),
                "finishedAt": rfc3339(e.finished_at),
            }
        else:
            code = UNKNOWN_EXIT_CODE
            terminated = {
                "exitCode": code,
                "reason": UNKNOWN_REASON,
                "message": "The container was not running when the pod was deleted",
                "finishedAt": rfc3339(now),
            }
        all_zero = all_zero and code == 0
        statuses.append(
            {
                "name": name,
                "image": str(container.get("image", "")),
                "imageID": "",
                "ready": False,
                "started": False,
                "restartCount": restart_count,
                "state": {"terminated": {k: v for k, v in terminated.items() if v is not None}},
            }
        )
    stamp = rfc3339(now)
    return {
        "status": {
            "phase": "Succeeded" if all_zero else "Failed",
            "containerStatuses": statuses,
            # Strategic merge keys conditions by type: Ready/ContainersReady change, the others
            # (PodScheduled, DisruptionTarget from an eviction) stay as they are.
            "conditions": [
                {"type": t, "status": "False", "reason": "PodCompleted", "lastTransitionTime": stamp}
                for t in ("Ready", "ContainersReady")
            ],
        }
    }
