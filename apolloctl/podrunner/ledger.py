"""What the runner ran: one record per container process, with its CPU time, kept in memory and on disk.

The ledger is how a benchmark compares the real cost of a migrated pod with a natively re-created
one (CPU seconds per pod and per container, start and end times, exit codes, the step a trainer
resumed from). It is rewritten atomically as ``ledger.json`` in the runner's state directory
whenever something changes and about once a second while processes run, so another process can
read a consistent copy at any time; in-process callers use `Ledger.records()`.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class RunRecord:
    """One process that stood for one container of one pod (a restart is a new record)."""

    namespace: str
    pod: str
    uid: str
    node: str
    container: str
    attempt: int
    argv: list[str] = field(default_factory=list)
    pid: int | None = None
    state: str = "running"  # running | exited | failed-to-start
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    cpu_seconds: float = 0.0
    reason: str = ""  # why it ended: completed, error, terminated (pod deleted), killed, start error
    resumed_from: int | None = None
    log: str = ""


class Ledger:
    """Thread-safe: the runner's loop writes, benchmark threads read."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._records: list[RunRecord] = []
        self._dirty = False
        self._written = 0.0

    def add(self, record: RunRecord) -> RunRecord:
        with self._lock:
            self._records.append(record)
            self._dirty = True
        return record

    def touch(self) -> None:
        """Mark a change made to a record in place (the runner owns the records it added)."""
        with self._lock:
            self._dirty = True

    def records(self) -> list[dict[str, Any]]:
        with self._lock:
            return [asdict(r) for r in self._records]

    def cpu_seconds(self, uid: str | None = None, container: str | None = None) -> float:
        """CPU seconds of every process so far, optionally of one pod and/or one container."""
        with self._lock:
            return sum(
                r.cpu_seconds
                for r in self._records
                if (uid is None or r.uid == uid) and (container is None or r.container == container)
            )

    def flush(self, force: bool = False, every: float = 1.0) -> None:
        """Rewrite the file when something changed (or live CPU moved and `every` seconds passed)."""
        if self.path is None:
            return
        now = time.monotonic()
        with self._lock:
            if not (self._dirty or force or now - self._written >= every):
                return
            doc = {"updated_at": time.time(), "runs": [asdict(r) for r in self._records]}
            self._dirty = False
            self._written = now
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        os.replace(tmp, self.path)


def read_ledger(path: Path) -> list[dict[str, Any]]:
    """The records of a ledger file another process writes (empty when it does not exist yet)."""
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    runs: list[dict[str, Any]] = doc.get("runs") or []
    return runs
