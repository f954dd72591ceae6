"""The migration benchmark's figures from its runs: savings, quantiles, the README's table, the timeline plot.

Pure arithmetic over `Run`s (the machine's description aside, read from /proc), so that what the README
reports can be recomputed from a saved result (``python -m bench.migration --markdown FILE``).
"""

from __future__ import annotations

import math
import os
import platform
import statistics
from dataclasses import asdict
from pathlib import Path
from typing import Any

from apollo_api.podmigration import Phase
from apolloctl.scenario import WorkloadShape
from bench.migration_runs import NODE_CPU, NODE_MEMORY, NODES, Run

KOORDINATOR_MIGRATION_TTL_S = 300.0  # Koordinator's default PodMigrationJob TTL: the bound a move must stay well inside


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
