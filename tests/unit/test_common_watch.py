"""The shared list-then-watch: lines split across chunks, re-list on expiry, errors survive, stop is prompt."""

from __future__ import annotations

import threading
from typing import Any

import orjson

from common.watch import ListWatch, watch_events


class _Resp:
    def __init__(self, chunks: list[bytes], data: bytes = b"") -> None:
        self.chunks = chunks
        self.data = data
        self.released = False

    def stream(self, size: int) -> Any:
        yield from self.chunks

    def release_conn(self) -> None:
        self.released = True


def _line(kind: str, name: str, rv: str) -> bytes:
    return orjson.dumps({"type": kind, "object": {"metadata": {"name": name, "resourceVersion": rv}}}) + b"\n"


def test_events_split_across_chunks_are_joined_and_connection_released() -> None:
    raw = _line("ADDED", "a", "2") + _line("MODIFIED", "a", "3")
    resp = _Resp([raw[:10], raw[10:40], raw[40:]])
    events = list(watch_events(resp, lambda: False))
    assert [(t, o["metadata"]["name"]) for t, o in events] == [("ADDED", "a"), ("MODIFIED", "a")]
    assert resp.released


def test_stopping_ends_the_stream_and_releases() -> None:
    resp = _Resp([_line("ADDED", "a", "2"), _line("ADDED", "b", "3")])
    events = watch_events(resp, lambda: True)
    assert next(events)[0] == "ADDED"
    assert list(events) == []
    assert resp.released


class _Recorder(ListWatch):
    def __init__(self, list_call: Any) -> None:
        super().__init__("test", list_call, relist_backoff_seconds=0.01)
        self.lists: list[list[str]] = []
        self.events: list[tuple[str, str]] = []

    def on_list(self, items: list[dict[str, Any]]) -> None:
        self.lists.append([i["metadata"]["name"] for i in items])

    def on_event(self, event_type: str, obj: dict[str, Any]) -> None:
        self.events.append((event_type, obj["metadata"]["name"]))


def test_lists_then_watches_from_the_list_version_and_relists_after_expiry() -> None:
    calls: list[dict[str, Any]] = []
    listing = orjson.dumps({"metadata": {"resourceVersion": "10"}, "items": [{"metadata": {"name": "x"}}]})

    def list_call(**kw: Any) -> _Resp:
        calls.append(kw)
        if kw.get("watch"):
            bookmark = orjson.dumps({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "12"}}}) + b"\n"
            gone = orjson.dumps({"type": "ERROR", "object": {"code": 410}}) + b"\n"
            return _Resp([_line("ADDED", "y", "11"), bookmark, gone])
        return _Resp([], listing)

    w = _Recorder(list_call)
    w.run_once()
    assert w.lists == [["x"]]
    assert w.events == [("ADDED", "y")]
    assert calls[1]["resource_version"] == "10" and calls[1]["watch"] is True
    assert w.resource_version == "12"  # bookmarks advance the version without an event


def test_a_failing_list_is_recorded_not_raised_and_stop_is_prompt() -> None:
    def list_call(**kw: Any) -> _Resp:
        raise ConnectionError("apiserver down")

    w = _Recorder(list_call)
    w.run_once()
    assert "apiserver down" in w.last_error
    w.start()
    stopper = threading.Thread(target=w.stop)
    stopper.start()
    stopper.join(2.0)
    assert not stopper.is_alive() and not w.is_alive()
