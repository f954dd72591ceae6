"""Who used the machine's cores during a phase: CPU seconds per component of the benchmark's process tree.

Everything shares 2 cores here (load generator, gunicorn, APOLLO, the control plane), so every figure
comes with what each process used meanwhile and what the rest of the machine used (other sessions'
work: contention the benchmark did not cause).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

Json = dict[str, Any]

_TICK = os.sysconf("SC_CLK_TCK")
_COMPONENTS = ("etcd", "kube-apiserver", "kube-scheduler", "kube-controller", "kwok", "prometheus")


def _proc_table() -> dict[int, tuple[int, str, float]]:
    """pid -> (ppid, comm, CPU seconds including reaped children), from /proc."""
    table: dict[int, tuple[int, str, float]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        table[int(entry.name)] = (int(fields[1]), comm, sum(int(x) for x in fields[11:15]) / _TICK)
    return table


def _machine_busy_s() -> float:
    with open("/proc/stat") as f:
        values = [int(x) for x in f.readline().split()[1:9]]
    return (sum(values) - values[3] - values[4]) / _TICK  # all but idle and iowait


@dataclass
class CpuMeter:
    """CPU seconds per component of this benchmark's process tree, and what the rest of the machine used.

    `roots` names subtrees by their root pid (APOLLO, the extender's gunicorn, the load generator); control
    plane components are named by their command; the benchmark process itself is "bench".
    """

    roots: dict[int, str] = field(default_factory=dict)

    def sample(self) -> tuple[float, float, dict[str, float]]:
        busy = _machine_busy_s()
        table = _proc_table()
        me = os.getpid()
        labels: dict[int, str] = {me: "bench"}

        def label(pid: int) -> str | None:
            # Walk up to a known ancestor; only processes under this benchmark get a name (never other
            # sessions' clusters, whose commands look the same).
            chain: list[int] = []
            p = pid
            while p not in labels and p > 1 and p in table:
                chain.append(p)
                p = table[p][0]
            inherited = labels.get(p, "")
            for q in reversed(chain):
                if q in self.roots:
                    inherited = self.roots[q]
                elif inherited and table[q][1] in _COMPONENTS:
                    inherited = table[q][1]
                labels[q] = inherited
            return labels.get(pid, inherited) or None

        per: dict[str, float] = {}
        for pid, (_ppid, _comm, cpu) in table.items():
            name = label(pid)
            if name:
                per[name] = per.get(name, 0.0) + cpu
        return time.monotonic(), busy, per

    @staticmethod
    def delta(before: tuple[float, float, dict[str, float]], after: tuple[float, float, dict[str, float]]) -> Json:
        wall = after[0] - before[0]
        per = {k: max(0.0, v - before[2].get(k, 0.0)) for k, v in after[2].items()}
        ours = sum(per.values())
        busy = after[1] - before[1]
        return {
            "wall_s": round(wall, 2),
            "cpu_s_by_process": {k: round(v, 2) for k, v in sorted(per.items(), key=lambda kv: -kv[1]) if v >= 0.01},
            "cpu_s_ours": round(ours, 2),
            # CPU the rest of the machine used meanwhile (other sessions, system): contention we did not cause.
            "cpu_s_foreign": round(max(0.0, busy - ours), 2),
            "cpu_s_available": round(wall * (os.cpu_count() or 1), 2),
        }


def cpu_line(c: Json) -> str:
    parts = ", ".join(f"{k} {v}" for k, v in c["cpu_s_by_process"].items())
    return (
        f"CPU-s over {c['wall_s']}s (of {c['cpu_s_available']} available): {parts}; "
        f"other processes on the machine {c['cpu_s_foreign']}"
    )
