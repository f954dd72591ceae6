"""What the engine needs from the outside world, as small protocols the adapters implement.

The engine reads node load (`MetricSource`: the latest sample and aligned history, from Prometheus in
production) and, optionally, the cluster (`ClusterReader`: capacity and pods, from the API server). It
only ever sees these plain values, so the runtime and the core never import a client library, and tests
drive the engine with scripted sources.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from apollo.core.domain import ClusterView, PodSignature


class SourceError(RuntimeError):
    """The metric source could not be read (unreachable, or it answered with an error)."""


@dataclass
class Sample:
    """The latest value per (node, resource), with its timestamp and what was dropped on the way."""

    values: dict[tuple[str, str], float] = field(default_factory=dict)
    timestamps: dict[tuple[str, str], float] = field(default_factory=dict)
    dropped: int = 0
    failed_resources: dict[str, str] = field(default_factory=dict)


@dataclass
class History:
    """Aligned history: one row per (node, resource) key on one time grid, NaN where no sample exists."""

    keys: list[tuple[str, str]]
    times: npt.NDArray[np.float64]
    values: npt.NDArray[np.float64]
    dropped: int = 0


class MetricSource(Protocol):
    """Node utilisation per resource; raises SourceError when it cannot answer at all.

    ``history`` returns points every ``step_seconds`` from ``start`` to ``end``; with ``average_seconds``
    each point is the mean over the ``average_seconds`` before it (Prometheus ``avg_over_time``), which
    is how the engine's model steps and the periodicity test's buckets are made; without, the sampled
    value at that time.
    """

    def latest(self) -> Sample: ...

    def history(
        self, start: dt.datetime, end: dt.datetime, step_seconds: float, average_seconds: float = 0.0
    ) -> History: ...


class ClusterReader(Protocol):
    """Nodes and the pods bound to them; `signature_of(namespace, name)` adds what insight agents said."""

    def read(self, signature_of: Callable[[str, str], PodSignature | None]) -> ClusterView: ...
