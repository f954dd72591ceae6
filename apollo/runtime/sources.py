"""What the engine needs from the outside world, as small protocols the adapters implement.

The engine reads node load (`MetricSource`: the latest sample and aligned history, from Prometheus in
production) and, optionally, the cluster (`ClusterReader`: capacity and pods, from the API server's
watch). It only ever sees these plain values, so the runtime and the core never import a client library,
and tests drive the engine with scripted sources.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from apollo.core.domain import ClusterView
from apollo.core.outlooks import PodChange


class SourceError(RuntimeError):
    """The metric source could not be read (unreachable, or it answered with an error)."""


@dataclass
class Sample:
    """The latest value per (node, resource), and what was dropped on the way.

    Either ``values`` (a mapping, convenient for tests and small sources) or ``columns``: per resource the
    node names and a value array in the source's own order, which is how the Prometheus adapter hands
    over 50,000 values without building a dictionary entry per value. :meth:`items` reads either.
    """

    values: dict[tuple[str, str], float] = field(default_factory=dict)
    columns: dict[str, tuple[list[str], npt.NDArray[np.float64]]] = field(default_factory=dict)
    dropped: int = 0
    failed_resources: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.values) + sum(len(nodes) for nodes, _ in self.columns.values())

    def items(self) -> dict[tuple[str, str], float]:
        """Every value as one mapping (slow for large samples: for tests and small sources)."""
        out = dict(self.values)
        for resource, (nodes, values) in self.columns.items():
            out.update(zip(((node, resource) for node in nodes), values.tolist(), strict=True))
        return out


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


@dataclass(frozen=True)
class ClusterRead:
    """The cluster as a reader sees it now, and how it got there from the reader's previous answer.

    ``view`` is the same object for as long as nothing changed, so the engine keeps what it derived from
    it (pod index, plans). When it changed, ``changes`` lists the pods replaced, added or gone (by
    ``(namespace, name)``, in order) since ``base``, the view the reader answered before: the engine
    then updates its pod index instead of rebuilding it. ``base`` None: no such account (rebuild).
    """

    view: ClusterView
    base: ClusterView | None = None
    changes: Sequence[PodChange] = ()


class ClusterReader(Protocol):
    """Nodes and the pods bound to them, with the signature insight agents last reported for each pod."""

    def read(self) -> ClusterRead | None:
        """The cluster now; None until the reader has synced (the engine does not decide meanwhile)."""
        ...
