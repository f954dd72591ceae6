"""One pod watch shared by every gunicorn worker: election, fan-out, replay, and take-over."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson

from extender.placements import Placement, PlacementLedger
from extender.pod_watcher import Binding, BindingSink
from extender.shared_watch import SharedPodWatch, apply_line, encode_bound, encode_deleted
from tests.helpers import wait_for


def _pod(name: str, node: str, cpu: str = "1") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}"},
        "spec": {"nodeName": node, "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]},
        "status": {
            "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": "2030-01-01T00:00:00Z"}]
        },
    }


class _Raw:
    def __init__(
        self, data: bytes = b"", lines: list[bytes] | None = None, gate: threading.Event | None = None
    ) -> None:
        self.data = data
        self.lines = lines or []
        self.gate = gate

    def stream(self, _size: int) -> Iterator[bytes]:
        if self.gate is not None:
            self.gate.wait(10)
        yield from self.lines
        time.sleep(0.2)

    def release_conn(self) -> None:
        pass


class _FakeCore:
    """list + watch of pods as the Python client returns them unparsed (_preload_content=False)."""

    def __init__(
        self, listed: list[dict[str, Any]], events: list[tuple[str, dict[str, Any]]], gate: threading.Event
    ) -> None:
        self.listed = listed
        self.events = events
        self.gate = gate
        self.watches = 0

    def list_pod_for_all_namespaces(self, **kwargs: Any) -> _Raw:
        if kwargs.get("watch"):
            self.watches += 1
            if self.watches > 1:
                return _Raw()  # later watches see nothing new
            lines = [orjson.dumps({"type": t, "object": o}) + b"\n" for t, o in self.events]
            return _Raw(lines=lines, gate=self.gate)
        return _Raw(orjson.dumps({"items": self.listed, "metadata": {"resourceVersion": "1"}}))


def _worker(core: _FakeCore, name: str, scored: set[str]) -> tuple[SharedPodWatch, PlacementLedger, list[Any]]:
    ledger = PlacementLedger()
    reports: list[Any] = []
    sink = BindingSink(ledger, lambda uid: time.monotonic() if uid in scored else None, reports.append)
    return SharedPodWatch(lambda: core, sink, name=name), ledger, reports


def test_one_worker_watches_and_every_worker_counts_and_reports_what_it_scored() -> None:
    name = f"\0apollo-test-watch-{uuid.uuid4().hex}"
    gate = threading.Event()
    core = _FakeCore([_pod("old", "n1")], [("ADDED", _pod("new", "n2", cpu="2")), ("DELETED", _pod("old", "n1"))], gate)
    first, first_ledger, first_reports = _worker(core, name, scored=set())
    second, second_ledger, second_reports = _worker(core, name, scored={"uid-new"})
    first.start()
    try:
        wait_for(lambda: first.role == "publisher" and "uid-old" in first_ledger, timeout=10, what="the publisher")
        wait_for(lambda: first.synced, timeout=10, what="the publisher's first listing counted")
        assert not second.synced  # not started: it holds nothing yet
        second.start()
        # The subscriber starts from the publisher's ledger (told complete by the sync line), then every change.
        wait_for(lambda: second.synced, timeout=10, what="replay")
        assert second.role == "subscriber" and "uid-old" in second_ledger
        gate.set()
        wait_for(lambda: "uid-new" in second_ledger and "uid-old" not in second_ledger, timeout=10, what="fan-out")
        assert core.watches == 1  # one API watch for both workers
        assert second_ledger.usage_since(0) == {"n2": (2.0, 0.0)} == first_ledger.usage_since(0)
        # Only the worker that scored the pod reports it (APOLLO also counts a UID once).
        assert [r.pod_name for r in second_reports] == ["new"] and not first_reports
        # The publisher goes away: the subscriber takes the watch over.
        first.stop()
        wait_for(lambda: second.role == "publisher", timeout=10, what="take-over")
    finally:
        first.stop()
        second.stop()


def test_lines_round_trip_and_bad_lines_are_skipped() -> None:
    ledger = PlacementLedger()
    sink = BindingSink(ledger, lambda _uid: None, lambda _r: None)
    apply_line(encode_bound(Binding("u1", "ns", "p", Placement("n1", 0.5, 1024.0, 100.0))).strip(), sink)
    apply_line(b'["b", "u2"]', sink)  # truncated: skipped
    apply_line(b"not json", sink)
    assert ledger.entries() == [("u1", Placement("n1", 0.5, 1024.0, 100.0))]
    apply_line(encode_deleted("u1").strip(), sink)
    assert len(ledger) == 0


def test_status_updates_of_counted_pods_are_skipped_unparsed() -> None:
    from extender.pod_watcher import PodWatcher

    ledger = PlacementLedger()
    sink = BindingSink(ledger, lambda _uid: None, lambda _r: None)
    watcher = PodWatcher(None, sink)
    ledger.record("uid-a", Placement("n1", 1.0, 0.0, 1.0))
    # As the API server writes it: ObjectMeta in Go field order, the owner's uid after the pod's own.
    update = (
        b'{"type":"MODIFIED","object":{"kind":"Pod","apiVersion":"v1","metadata":{"name":"a","namespace":"ns",'
        b'"uid":"uid-a","resourceVersion":"7","ownerReferences":[{"kind":"ReplicaSet","uid":"uid-rs"}]}}}'
    )
    assert watcher.already_counted(update)
    assert not watcher.already_counted(update.replace(b"uid-a", b"uid-b"))  # not counted yet: parsed
    assert not watcher.already_counted(update.replace(b'"MODIFIED"', b'"DELETED"'))  # deletions always parsed
    assert not watcher.already_counted(b'{"type":"MODIFIED","object":{}}')
