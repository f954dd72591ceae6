"""APOLLO's per-node scores as the extender holds them: an immutable snapshot swapped atomically.

Requests only read `SnapshotStore.current` (one attribute load, no lock), so the hot path never
waits on the network; a background `Refresher` replaces the snapshot at its own pace.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class NodeEntry:
    """APOLLO's view of one node: pod-agnostic score and the headroom left under its forecast."""

    score: int
    reason: str
    overload: bool
    cpu_headroom_cores: float = math.nan
    memory_headroom_bytes: float = math.nan
    cpu_allocatable_cores: float = math.nan
    memory_allocatable_bytes: float = math.nan


@dataclass(frozen=True)
class Snapshot:
    """Per-node entries plus the same data as arrays (row = `index[name]`), built once per refresh.

    The arrays let a request rank thousands of nodes with a handful of numpy operations instead of
    a Python loop per node.
    """

    generation: int
    # Epoch seconds of the APOLLO sample the scores are based on (pods bound later are not in it).
    created_at: float
    nodes: dict[str, NodeEntry]
    stale: bool = False
    stale_reason: str = ""
    # Local monotonic time the extender received it, for the age check.
    fetched_at: float = field(default_factory=time.monotonic)
    index: dict[str, int] = field(init=False, repr=False)
    score: npt.NDArray[np.float64] = field(init=False, repr=False)
    overload: npt.NDArray[np.bool_] = field(init=False, repr=False)
    cpu_headroom: npt.NDArray[np.float64] = field(init=False, repr=False)
    memory_headroom: npt.NDArray[np.float64] = field(init=False, repr=False)
    cpu_allocatable: npt.NDArray[np.float64] = field(init=False, repr=False)
    memory_allocatable: npt.NDArray[np.float64] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        entries = list(self.nodes.values())
        arrays = {
            "index": {name: i for i, name in enumerate(self.nodes)},
            "score": np.array([e.score for e in entries], dtype=np.float64),
            "overload": np.array([e.overload for e in entries], dtype=np.bool_),
            "cpu_headroom": np.array([e.cpu_headroom_cores for e in entries], dtype=np.float64),
            "memory_headroom": np.array([e.memory_headroom_bytes for e in entries], dtype=np.float64),
            "cpu_allocatable": np.array([e.cpu_allocatable_cores for e in entries], dtype=np.float64),
            "memory_allocatable": np.array([e.memory_allocatable_bytes for e in entries], dtype=np.float64),
        }
        for name, value in arrays.items():
            object.__setattr__(self, name, value)

    def age(self, now: float | None = None) -> float:
        return (time.monotonic() if now is None else now) - self.fetched_at


class SnapshotStore:
    """Holds the latest snapshot; readers take a reference and work on it undisturbed."""

    def __init__(self) -> None:
        self.current: Snapshot | None = None
        self.last_error: str = ""
        self.last_success: float = 0.0

    def replace(self, snapshot: Snapshot) -> None:
        self.current = snapshot
        self.last_error = ""
        self.last_success = time.monotonic()

    def touch(self) -> None:
        """APOLLO answered "not modified": the snapshot we hold is current as of now."""
        snap = self.current
        if snap is not None:
            # Only the receive time changes; rebuilding thousands of rows for that would be waste.
            object.__setattr__(snap, "fetched_at", time.monotonic())
        self.last_error = ""
        self.last_success = time.monotonic()

    def usable(self, max_age: float, now: float | None = None) -> tuple[Snapshot | None, str]:
        """The snapshot if it may steer scheduling, else None and why (the fail-open reason)."""
        snap = self.current
        if snap is None:
            return None, "no-snapshot"
        if snap.age(now) > max_age:
            return None, "snapshot-too-old"
        if snap.stale:
            return None, "apollo-stale"
        return snap, ""
