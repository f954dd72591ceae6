"""What the pod runner keeps about each pod it runs and each of its containers (one thread owns it all)."""

from __future__ import annotations

from dataclasses import dataclass, field

from apolloctl.podrunner.ledger import RunRecord
from apolloctl.podrunner.proc import LocalProcess
from apolloctl.podrunner.spec import PodInfo
from apolloctl.podrunner.status import Exit


@dataclass
class ContainerRun:
    """One container of a pod: its current process and ledger record, attempts, restart back-off, reports seen."""

    name: str
    process: LocalProcess | None = None
    record: RunRecord | None = None
    attempts: int = 0
    last_exit: Exit | None = None
    next_start: float = 0.0
    backoff: float = 0.0
    done: bool = False
    # Workload report file -> (mtime seen, value mirrored): each file is read again only when it changes.
    reports: dict[str, tuple[float, str]] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running


@dataclass
class PodRun:
    """One pod: its latest spec and status, its containers, where its deletion stands, exits to report to kwok."""

    info: PodInfo
    containers: dict[str, ContainerRun] = field(default_factory=dict)
    gone: bool = False
    terminating: bool = False
    kill_at: float = 0.0
    killed: bool = False
    finalized: bool = False
    to_report: dict[str, int] = field(default_factory=dict)
    reported: dict[str, int] = field(default_factory=dict)
    warned: set[str] = field(default_factory=set)

    def container(self, name: str) -> ContainerRun:
        if name not in self.containers:
            self.containers[name] = ContainerRun(name)
        return self.containers[name]

    def running(self) -> list[ContainerRun]:
        return [c for c in self.containers.values() if c.running]
