"""How the story tells itself: progress lines as it goes, then the timeline, a table and a plot.

`Timeline` prints each step with its time since the start; `StoryResult` is what the story found;
`print_result` and `plot_story` render it (the plot is the forecast against the actual load).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from apollo_api.podmigration import PodMigration
from apolloctl.scenario.apollo_setup import OVERLOAD_THRESHOLD

Say = Callable[[str], None]


def say_stdout(message: str) -> None:
    """The default `Say`: a line on stdout, flushed so progress shows as it happens."""
    print(message, flush=True)


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
    """Whether every promise held (and if not, which failed), the final table and what the plot draws."""

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


def migration_rows(m: PodMigration, resumed: str | None, last: int | None, peak: float) -> list[tuple[str, str]]:
    """The final table: what the orchestrator did (from the PodMigration's status), what the trainer resumed
    from against the source's last checkpoint, and how high the source's load went against the threshold."""
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
