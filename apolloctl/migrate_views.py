"""What `apolloctl migrate` / `migrations` print: kubectl-like tables and descriptions, and `--wait`.

Every function here takes the REST API's JSON (which both backends return) and renders it: the
`migrations list` table with kubectl's AGE, the `migrations show` description, and :func:`follow`,
which polls one migration and prints each step as the controller records it until it finishes.
Kept apart from the backends and the argument parsing so the output format reads (and is tested) in
one place.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TextIO

from apolloctl.migrate_backends import Backend

Json = dict[str, Any]
FINISHED = {"completed", "failed", "cancelled"}


def age(start: str | None, now: datetime) -> str:
    """kubectl's AGE: the largest unit, e.g. 45s, 3m, 5h, 2d."""
    if not start:
        return "<unknown>"
    try:
        then = datetime.fromisoformat(start)
    except ValueError:
        return "<unknown>"
    seconds = max(0, int((now - then).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 2 * 3_600:
        return f"{seconds // 60}m"
    if seconds < 2 * 86_400:
        return f"{seconds // 3_600}h"
    return f"{seconds // 86_400}d"


def seconds_text(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.1f}s"
    return f"{int(value // 60)}m{int(value % 60):02d}s"


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    """kubectl's plain table: upper-case header, columns padded, three spaces apart."""
    all_rows = [list(header), *[list(r) for r in rows]]
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(header))]
    lines = ["   ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in all_rows]
    return "\n".join(lines)


LIST_HEADER = ("ID", "POD", "PHASE", "SOURCE", "TARGET", "AGE", "DURATION")


def list_rows(items: Sequence[Json], now: datetime) -> list[list[str]]:
    return [
        [
            m["migration_id"],
            m["pod_name"],
            m["phase"],
            m.get("source_node") or "-",
            m.get("replacement_node") or m.get("target_node") or "<scheduler>",
            age(m.get("start_time"), now),
            seconds_text(m.get("duration")),
        ]
        for m in items
    ]


def describe(view: Json) -> str:
    """`migrations show`: kubectl-describe-like text of one migration."""
    d = view.get("details") or {}
    lines = [
        f"ID:              {view['migration_id']}",
        f"Pod:             {view['pod_namespace']}/{view['pod_name']}",
        f"Status:          {view['status']} ({view['phase']})",
        f"Message:         {view.get('message') or '-'}",
        f"Source:          {d.get('source_node') or '-'}",
        f"Target:          {d.get('target_node') or d.get('suggested_node') or '<scheduler>'}",
        f"Replacement:     {d.get('new_pod_name') or '-'} on {d.get('replacement_node') or '-'}",
        f"Checkpoint PVC:  {d.get('pv_claim_name') or '-'}  path {d.get('checkpoint_path') or '-'}",
        f"Duration:        {seconds_text(d.get('duration'))}",
    ]
    before, after = d.get("original_resources"), d.get("optimized_resources")
    if before:
        lines.append(f"Requests before: {before['cpu_usage']:g} cores, {before['memory_usage']} bytes")
    if after:
        lines.append(f"Requests after:  {after['cpu_usage']:g} cores, {after['memory_usage']} bytes")
    containers = d.get("container_states") or []
    if containers:
        lines.append("Containers:")
        rows = [
            [c["name"], c["state"], str(c["restart_count"]), "yes" if c["should_migrate"] else "no (completed)"]
            for c in containers
        ]
        lines += ["  " + line for line in table(rows, ("NAME", "STATE", "RESTARTS", "MIGRATE")).splitlines()]
    steps = d.get("steps") or []
    if steps:
        lines.append("Steps:")
        rows = [[s["step"], s["time"], _delta(s.get("seconds_since_previous"))] for s in steps]
        lines += ["  " + line for line in table(rows, ("STEP", "TIME", "+")).splitlines()]
    conditions = d.get("conditions") or []
    if conditions:
        lines.append("Conditions:")
        rows = [[c["type"], c["status"], c["reason"], c["message"]] for c in conditions]
        lines += ["  " + line for line in table(rows, ("TYPE", "STATUS", "REASON", "MESSAGE")).splitlines()]
    return "\n".join(lines)


def _delta(value: float | None) -> str:
    return "-" if value is None else f"+{value:.1f}s"


def follow(
    backend: Backend,
    migration_id: str,
    out: TextIO,
    *,
    interval: float = 0.5,
    timeout: float = 3900.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Print each step and phase change until the migration finishes; 0 when it completed, else 1."""
    deadline = clock() + timeout
    shown_steps: set[str] = set()
    last_phase = ""
    while True:
        view = backend.get(migration_id)
        details = view.get("details") or {}
        for step in details.get("steps") or []:
            if step["step"] not in shown_steps:
                shown_steps.add(step["step"])
                print(f"  {step['time']}  {step['step']:<20} {_delta(step.get('seconds_since_previous'))}", file=out)
        if view["phase"] != last_phase:
            last_phase = view["phase"]
            message = f": {view['message']}" if view.get("message") else ""
            print(f"phase {last_phase}{message}", file=out)
        out.flush()
        if view["status"] in FINISHED:
            where = details.get("replacement_node")
            summary = f"{migration_id} {view['status']}"
            if view["status"] == "completed":
                summary += f" in {seconds_text(details.get('duration'))}"
                if details.get("new_pod_name"):
                    summary += f": {details['new_pod_name']} on {where or '-'}"
            print(summary, file=out)
            return 0 if view["status"] == "completed" else 1
        if clock() >= deadline:
            print(f"{migration_id}: still {view['phase']} after {timeout:.0f}s; stopped waiting", file=out)
            return 1
        sleep(interval)
