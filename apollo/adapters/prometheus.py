"""Node metrics from Prometheus (the only place APOLLO reads the outside world for load).

The adapter is the engine's `MetricSource` (`apollo.runtime.sources`): it turns PromQL vector / matrix
answers into plain `{(node, resource): value}` data and numpy arrays; it drops NaN, infinities and
negatives (and counts them) so that the pure forecaster never sees them, and it raises `SourceError`
instead of leaking HTTP exceptions to the engine.
Counter resets are absorbed by `rate()` in the default queries, which is why every counter-based
query is written with `rate`.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from apollo.config import PrometheusSettings
from apollo.runtime.sources import History, Sample, SourceError

_INSTANCE_PORT = re.compile(r":\d+$")


class PromClient(Protocol):
    """The two calls APOLLO needs; prometheus_api_client.PrometheusConnect satisfies it."""

    def custom_query(self, query: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]: ...

    def custom_query_range(
        self,
        query: str,
        start_time: dt.datetime,
        end_time: dt.datetime,
        step: str,
        params: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]: ...


def _parse(raw: list[Any]) -> npt.NDArray[np.float64]:
    """Prometheus' value strings as floats; anything unparsable becomes NaN (then dropped and counted)."""
    try:
        return np.array(raw, dtype=np.float64)
    except (TypeError, ValueError):
        return np.array([_float_or_nan(v) for v in raw], dtype=np.float64)


def _float_or_nan(raw: Any) -> float:
    value = clean_value(raw)
    return math.nan if value is None else value


def clean_value(raw: Any) -> float | None:
    """A usable utilisation value, or None for NaN / inf / negative / unparsable input."""
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return value


class PrometheusSource:
    """Reads the configured per-resource PromQL queries and maps series to Kubernetes node names."""

    def __init__(self, settings: PrometheusSettings, client: PromClient | None = None) -> None:
        self.settings = settings
        if client is None:
            from prometheus_api_client import PrometheusConnect

            client = PrometheusConnect(
                url=settings.url, disable_ssl=not settings.verify_tls, timeout=settings.timeout_seconds
            )
        self.client = client

    def node_of(self, labels: Mapping[str, str]) -> str | None:
        node = labels.get(self.settings.node_label)
        if node:
            return node
        instance = labels.get("instance")
        if not instance:
            return None
        return self.settings.instance_to_node.get(instance) or _INSTANCE_PORT.sub("", instance)

    def latest(self) -> Sample:
        """One instant query per resource; a failing resource is reported, the others still count.

        Values come back as columns (node names and a numpy array per resource): at 10,000 nodes a
        dictionary entry per value would cost more than the forecaster's whole update.
        """
        sample = Sample()
        errors = 0
        label = self.settings.node_label
        for resource, query in self.settings.queries.items():
            try:
                result = self.client.custom_query(query)
            except Exception as exc:  # any client/transport failure is a source error
                sample.failed_resources[resource] = f"{type(exc).__name__}: {exc}"[:300]
                errors += 1
                continue
            try:  # the common case: every series carries the node label and a [time, value] pair
                nodes = [series["metric"][label] for series in result]  # two plain passes beat one of tuples
                raw = [series["value"][1] for series in result]
            except (KeyError, IndexError, TypeError):
                nodes, raw = self._slow_columns(result)
            values = _parse(raw)
            keep = np.isfinite(values) & (values >= 0)
            if "" in nodes:  # a series whose node could not be told
                keep &= np.array([bool(node) for node in nodes], dtype=np.bool_)
            if not keep.all():
                sample.dropped += int((~keep).sum())
                nodes = [node for node, ok in zip(nodes, keep.tolist(), strict=True) if ok]
                values = values[keep]
            sample.columns[resource] = (nodes, values)
        if errors and errors == len(self.settings.queries):
            raise SourceError("; ".join(f"{r}: {e}" for r, e in sample.failed_resources.items()))
        return sample

    def _slow_columns(self, result: list[dict[str, Any]]) -> tuple[list[str], list[Any]]:
        """Series without the node label (mapped through the instance) or with a malformed value."""
        nodes: list[str] = []
        raw: list[Any] = []
        for series in result:
            node = self.node_of(series.get("metric", {}))
            ts_value = series.get("value") or [None, None]
            nodes.append(node or "")
            raw.append(ts_value[1] if len(ts_value) > 1 else None)
        return nodes, raw

    def history(
        self, start: dt.datetime, end: dt.datetime, step_seconds: float, average_seconds: float = 0.0
    ) -> History:
        """query_range for every resource, aligned on one time grid (gaps stay NaN).

        With ``average_seconds`` each point is ``avg_over_time`` of the query over the preceding
        ``average_seconds`` (a subquery with ten evaluations per window), the same mean the engine forms
        from its ticks. Long ranges are fetched in chunks of ``CHUNK_POINTS`` points, which keeps each
        answer (and Prometheus' per-query sample budget) small at 10,000 nodes.
        """
        n_steps = int((end - start).total_seconds() // step_seconds) + 1
        times = np.array([start.timestamp() + i * step_seconds for i in range(n_steps)], dtype=np.float64)
        rows: dict[tuple[str, str], npt.NDArray[np.float64]] = {}
        dropped = 0
        step = _duration(step_seconds)
        for resource, query in self.settings.queries.items():
            if average_seconds > 0:
                query = f"avg_over_time(({query})[{_duration(average_seconds)}:{_duration(average_seconds / 10)}])"
            for first in range(0, n_steps, CHUNK_POINTS):
                last = min(n_steps, first + CHUNK_POINTS) - 1
                chunk_start = dt.datetime.fromtimestamp(times[first], dt.UTC)
                chunk_end = dt.datetime.fromtimestamp(times[last], dt.UTC)
                try:
                    result = self.client.custom_query_range(
                        query, start_time=chunk_start, end_time=chunk_end, step=step
                    )
                except Exception as exc:
                    raise SourceError(f"{resource}: {type(exc).__name__}: {exc}") from exc
                for series in result:
                    node = self.node_of(series.get("metric", {}))
                    if node is None:
                        dropped += 1
                        continue
                    row = rows.setdefault((node, resource), np.full(n_steps, np.nan))
                    for ts, raw in series.get("values", []):
                        idx = round((float(ts) - times[0]) / step_seconds)
                        value = clean_value(raw)
                        if value is None:
                            dropped += 1
                        elif 0 <= idx < n_steps:
                            row[idx] = value
        keys = sorted(rows)
        values = np.vstack([rows[k] for k in keys]) if keys else np.empty((0, n_steps))
        return History(keys=keys, times=times, values=values, dropped=dropped)


CHUNK_POINTS = 60  # per query_range call: 10,000 series x 60 points decode to ~70 MB of Python objects


def _duration(seconds: float) -> str:
    """A PromQL duration: whole seconds when exact, else milliseconds (both valid for steps and subqueries)."""
    ms = max(1, round(seconds * 1000))
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"
